"""Event-time alignment of source partitions: what goes out, in which order, and what commits."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.alignment import Aligner, Held

WEB, CRM = ("web", 0), ("crm", 0)


def held(offset: int, t: int | None) -> Held:
    return Held(offset, t, [("out", None, f"{offset}@{t}".encode(), None)])


def test_a_sparse_partition_waits_for_the_dense_one_and_commits_only_what_went_out() -> None:
    a = Aligner(max_skew_ms=10, wait_s=60.0, max_held=1)
    a.assigned([WEB, CRM], now=0.0)
    for i, t in enumerate((100, 500, 900)):  # crm: months apart
        a.add(CRM, held(i, t))
    for i in range(5):  # web: densely, still at the start
        a.add(WEB, held(i, 100 + i))
    out = [r[2] for r in a.release(now=1.0, caught_up=set())]
    # merged by event time (a tie goes to the partition assigned first)
    assert out == [b"0@100", b"0@100", b"1@101", b"2@102", b"3@103", b"4@104"]
    assert a.positions() == {CRM: 1, WEB: 5}
    assert a.pause_resume() == ([CRM], [])
    # web catches up to crm's next record: it goes out, the one after still waits
    a.add(WEB, held(5, 495))
    out = [r[2] for r in a.release(now=2.0, caught_up=set())]
    assert out == [b"5@495", b"1@500"]
    assert a.positions() == {CRM: 2, WEB: 6}
    assert a.pause_resume() == ([], [])  # still holds one: stays paused (hysteresis)
    # web reaches its end: nothing holds crm back any more
    out = [r[2] for r in a.release(now=3.0, caught_up={WEB})]
    assert out == [b"2@900"]
    assert a.positions() == {CRM: 3}
    assert a.pause_resume() == ([], [CRM])


def test_records_without_event_time_keep_their_place() -> None:
    a = Aligner(max_skew_ms=0)
    a.add(CRM, held(0, 50))
    a.add(CRM, held(1, None))  # a dead letter behind a held record waits with it
    a.add(WEB, held(0, 10))
    assert [r[2] for r in a.release(now=0.0, caught_up=set())] == [b"0@10"]
    a.add(WEB, held(1, 60))
    assert [r[2] for r in a.release(now=0.0, caught_up=set())] == [b"0@50", b"1@None"]


def test_records_without_event_time_leave_the_count_when_they_go_out() -> None:
    """Dead letters carry no event time; the bound on held records must not count them once
    they went out, or a stream with many would end up pausing every partition."""
    a = Aligner(max_skew_ms=0, max_held=1)
    for i in range(3):
        a.add(WEB, held(i, None))
    assert len(a.release(now=0.0, caught_up=set())) == 3
    assert a.count == 0
    a.add(CRM, held(0, 50))
    a.add(CRM, held(1, None))
    a.add(WEB, held(3, 60))
    a.add(WEB, held(4, None))
    assert len(a.release(now=0.0, caught_up={CRM, WEB})) == 4
    assert a.count == 0 and a.pause_resume() == ([], [])


def test_a_new_partition_holds_everything_until_it_delivers_or_the_wait_ends() -> None:
    a = Aligner(max_skew_ms=1000, wait_s=5.0)
    a.assigned([WEB, CRM], now=0.0)
    a.add(CRM, held(0, 10))
    assert a.release(now=1.0, caught_up=set()) == []
    assert a.release(now=1.0, caught_up={WEB}) != []  # an empty partition is caught up
    a.add(CRM, held(1, 99_999))
    # Web had nothing to read at 1.0; with records to read since, it holds the others back
    # for 5 s from then, and not a moment longer.
    assert a.release(now=6.0, caught_up=set()) == []
    assert a.release(now=6.1, caught_up=set()) != []


def test_a_partition_that_was_quiet_holds_back_the_others_burst_until_its_own_arrives() -> None:
    """A producer writes a backlog in bursts: between them, every partition is caught up.
    When the next burst reaches web's fetch first, crm (quiet for longer than the wait, but
    with records to read now) holds web's burst back until its own share arrives; released
    in time order, nothing of crm's comes out behind web's."""
    a = Aligner(max_skew_ms=1000, wait_s=5.0)
    a.assigned([WEB, CRM], now=0.0)
    a.add(WEB, held(0, 10))
    a.add(CRM, held(0, 20))
    assert len(a.release(now=0.1, caught_up=set())) == 2
    for now in (1.0, 10.0, 30.0):  # quiet: both read to their ends
        assert a.release(now=now, caught_up={WEB, CRM}) == []
    a.add(WEB, held(1, 100_000))
    a.add(WEB, held(2, 200_000))
    assert a.release(now=30.5, caught_up={WEB}) == []  # crm's burst is not fetched yet
    a.add(CRM, held(1, 150_000))
    out = a.release(now=31.0, caught_up={WEB, CRM})
    assert [r[2] for r in out] == [b"1@100000", b"1@150000", b"2@200000"]


def test_forgetting_a_partition_drops_what_it_held() -> None:
    a = Aligner(max_skew_ms=0)
    a.add(CRM, held(0, 50))
    a.add(WEB, held(0, 10))
    a.forget(WEB)
    assert [r[2] for r in a.release(now=0.0, caught_up=set())] == [b"0@50"]
    assert WEB not in a.positions()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 50))
def test_released_streams_stay_within_the_skew_and_lose_nothing(seed: int, skew: int) -> None:
    """Whatever the arrival pattern, every record goes out exactly once, in offset order per
    partition, never more than the skew ahead of a partition that still had records to read,
    and committed positions never pass a record that has not gone out."""
    rnd = random.Random(seed)
    streams = {("s", p): sorted(rnd.randrange(0, 1000) for _ in range(rnd.randrange(1, 40)))
               for p in range(rnd.randrange(1, 5))}
    a = Aligner(max_skew_ms=skew, wait_s=0.0)
    a.assigned(list(streams), now=0.0)
    read = dict.fromkeys(streams, 0)
    out: list[tuple[tuple[str, int], int, int]] = []
    committed = dict.fromkeys(streams, 0)
    now = 0.0
    while len(out) < sum(map(len, streams.values())):
        now += 1.0
        for tp, times in streams.items():  # each partition delivers at its own pace
            if tp in a.paused:
                continue
            for _ in range(rnd.randrange(0, 4)):
                if read[tp] < len(times):
                    a.add(tp, Held(read[tp], times[read[tp]], [(str(tp), None, None, read[tp])]))
                    read[tp] += 1
        caught_up = {tp for tp in streams if read[tp] == len(streams[tp])}
        limit = a.bound(now, caught_up)
        for topic, _key, _value, offset in a.release(now, caught_up):
            tp = ("s", int(topic.split(",")[1].strip(" )")))
            t = streams[tp][offset]
            assert limit is None or t <= limit
            out.append((tp, offset, t))
        for tp, position in a.positions().items():
            assert position >= committed[tp]
            gone = {o for p, o, _ in out if p == tp}
            assert set(range(position)) <= gone
            committed[tp] = position
        a.pause_resume()
    for tp, times in streams.items():
        offsets = [o for p, o, _ in out if p == tp]
        assert offsets == list(range(len(times)))
        assert committed[tp] == len(times)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 50), st.integers(0, 60))
def test_nothing_goes_out_more_than_the_skew_ahead_of_what_comes_later(
        seed: int, skew: int, max_held: int) -> None:
    """With partitions each in event-time order and no idle timeout, the released stream is
    a merge: a record never goes out after one more than `skew` later than itself, however
    the partitions deliver and whatever the buffer bound pauses."""
    rnd = random.Random(seed)
    streams = {("s", p): sorted(rnd.randrange(0, 1000) for _ in range(rnd.randrange(0, 40)))
               for p in range(rnd.randrange(1, 6))}
    a = Aligner(max_skew_ms=skew, wait_s=float("inf"), max_held=max_held)
    a.assigned(list(streams), now=0.0)
    read = dict.fromkeys(streams, 0)
    times: list[int] = []
    total = sum(map(len, streams.values()))
    for step in range(1, 10 * total + 100):
        if len(times) == total:
            break
        for tp, ts in streams.items():
            if tp in a.paused:
                continue
            for _ in range(rnd.randrange(0, 4)):
                if read[tp] < len(ts):
                    a.add(tp, Held(read[tp], ts[read[tp]], [(str(tp), None, None, read[tp])]))
                    read[tp] += 1
        caught_up = {tp for tp in streams if read[tp] == len(streams[tp])}
        for _topic, _key, _value, offset in a.release(float(step), caught_up):
            times.append(streams[("s", int(_topic.split(",")[1].strip(" )")))][offset])
        a.pause_resume()
        assert a.count == sum(read.values()) - len(times)
    assert len(times) == total
    latest = -1
    for t in times:
        assert t + skew >= latest
        latest = max(latest, t)
