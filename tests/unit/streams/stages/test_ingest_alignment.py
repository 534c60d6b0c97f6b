"""The ingest handler with event-time alignment, without a broker: what it sends, in which
order, for records of several source partitions."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import cast

import orjson
from confluent_kafka import Message

from streams.metrics import Metrics
from streams.runtime.stage import CaughtUp, Output
from streams.runtime.tables import Table
from streams.settings import IdentitySettings, Settings
from streams.stages.ingest import IDLE_AFTER_S, IngestHandler
from tests.kit import DAY_MS, T0, FakeMessage, raw_ev

SETTINGS = Settings()
EMAIL, CRM = SETTINGS.topics["email"], SETTINGS.topics["crm"]


def _batch(handler: IngestHandler, topic: str, values: list[bytes],
           caught_up: set[tuple[str, int]] | CaughtUp) -> list[tuple[str, dict[str, object]]]:
    """One batch of partition 0 of `topic`; the (topic, message) pairs sent, in order.
    `caught_up`: the partitions read to their end, or what the processor would answer."""
    out = Output()
    messages = [FakeMessage(v, n, key=None, topic=topic) for n, v in enumerate(values)]
    table = Table("ingest", "memory://", None)  # type: ignore[arg-type]
    handler.handle(0, cast("list[Message]", messages), table, out)
    if isinstance(caught_up, set):
        done = caught_up
        caught_up = lambda confirm=(): done  # noqa: E731
    handler.finish(table, out, caught_up)
    return [(topic, orjson.loads(value)) for topic, _key, value, _p in out.records
            if value is not None and b'"tick"' not in value]


def test_an_alias_only_event_waits_its_turn_behind_the_link_that_resolves_it() -> None:
    """The email partition delivers a campaign email of day 3 that names only an address
    first; the crm profile update that links the address to its customer (day 1) comes later
    from another partition. The email must not go out before the link, or the identity stage
    holds it waiting for a link it has already missed."""
    handler = IngestHandler(SETTINGS, Metrics())
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])
    email = raw_ev("e-1", "opened", source="email", occurred_at=T0 + 3 * DAY_MS,
                   email="c1@example.com", payload={})
    profile = raw_ev("c-1", "profile_updated", source="crm", occurred_at=T0 + DAY_MS,
                     customer_id="C1", payload={"fields": {"email": "c1@example.com"}})
    assert _batch(handler, EMAIL, [email], caught_up=set()) == []  # crm may deliver earlier
    sent = _batch(handler, CRM, [profile], caught_up={(EMAIL, 0), (CRM, 0)})
    ops = [(message.get("op"), message.get("event_id") or message.get("event", {}).get(
        "event_id")) for _topic, message in sent if "op" in message]
    assert ops == [("link", "c-1"), ("event", "e-1")]
    # and the identity messages carry their own event time, not the newest read
    stamps = [message["watermark"] for _topic, message in sent if "op" in message]
    assert stamps == [T0 + DAY_MS, T0 + 3 * DAY_MS]


def test_a_partition_caught_up_by_the_clients_stale_end_is_asked_of_the_broker() -> None:
    """The client's view of the email partition's end is from before the producer wrote a
    day-2 email, which the broker has: the crm partition's day-3 record must wait for it. A
    caught-up partition that holds nobody back is not asked about."""
    handler = IngestHandler(SETTINGS, Metrics())
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])
    email = raw_ev("e-1", "opened", source="email", occurred_at=T0 + DAY_MS,
                   customer_id="C1", payload={})
    assert [m["event_id"] for _t, m in _batch(handler, EMAIL, [email], caught_up=set())
            if "event_id" in m] == []  # crm has not delivered yet
    asked: list[set[tuple[str, int]]] = []
    behind = {(EMAIL, 0)}  # the broker has a record the client has not fetched

    def caught_up(confirm: Collection[tuple[str, int]] = ()) -> set[tuple[str, int]]:
        asked.append(set(confirm))
        return {(EMAIL, 0), (CRM, 0)} - (behind & set(confirm))

    def batch(topic: str, values: list[bytes]) -> list[object]:
        return [m["event_id"] for _t, m in _batch(handler, topic, values, caught_up)
                if "event_id" in m]

    crm = raw_ev("c-1", "payment_late", source="crm", occurred_at=T0 + 3 * DAY_MS,
                 customer_id="C1", payload={})
    # the day-1 email goes (crm's day 3 is after it); crm's record waits for email's day 2
    assert batch(CRM, [crm]) == ["e-1"]
    assert asked[-1] == {(EMAIL, 0)}
    late = raw_ev("e-2", "clicked", source="email", occurred_at=T0 + 2 * DAY_MS,
                  customer_id="C1", payload={})
    behind.clear()  # fetched now: the email partition is caught up, by the broker too
    assert batch(EMAIL, [late]) == ["e-2", "c-1"]
    asked.clear()
    out = Output()
    handler.finish(Table("ingest", "memory://", None), out,  # type: ignore[arg-type]
                   caught_up)
    assert out.records == [] and asked == [set()]  # nothing held: nobody to confirm


def _consumed(metrics: Metrics, source: str) -> float:
    return float(metrics.events_consumed.labels(source)._value.get())


def test_a_held_record_counts_when_it_goes_out_once_however_often_it_is_read() -> None:
    """Records the aligner holds are not done: their offsets are not committed, and after an
    abort or a rebalance they are read again. They count when they are released with the
    batch that commits them, so a record read twice counts once."""
    metrics = Metrics()
    handler = IngestHandler(SETTINGS, metrics)
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])
    opened = [raw_ev(f"e-{n}", "opened", source="email", occurred_at=T0 + n * DAY_MS,
                     customer_id="C1", payload={}) for n in range(3)]
    bad = b"not json"
    table = Table("ingest", "memory://", None)  # type: ignore[arg-type]

    def batch(values: list[bytes], caught_up: set[tuple[str, int]]) -> Output:
        out = Output()
        messages = [FakeMessage(v, n, key=None, topic=EMAIL) for n, v in enumerate(values)]
        handler.handle(0, cast("list[Message]", messages), table, out)
        handler.finish(table, out, lambda confirm=(): caught_up)
        out.tally()  # the batch commits
        return out

    held = batch([*opened, bad], caught_up=set())  # crm has not delivered: all of it waits
    assert [r for r in held.records if b'"tick"' not in (r[2] or b"")] == []
    assert _consumed(metrics, "email") == 0
    assert metrics.dead_letters.labels("invalid_json")._value.get() == 0
    # The transaction aborted: as BatchProcessor rewinds, the partition is dropped (its held
    # records with it) and assigned again, and its records are read again.
    handler.release_input(EMAIL, 0)
    handler.on_revoked(0)
    handler.pace_inputs([(EMAIL, 0)])
    batch([*opened, bad], caught_up={(EMAIL, 0), (CRM, 0)})
    assert _consumed(metrics, "email") == 4
    assert metrics.events_ingested.labels("email", "opened")._value.get() == 3
    assert metrics.dead_letters.labels("invalid_json")._value.get() == 1


def test_with_the_identity_merge_a_tick_says_how_far_each_source_partition_has_gone() -> None:
    """After the batch's release, every identity partition gets a tick naming, per source
    partition, the time up to which its records have gone out before it: a partition that
    has not delivered yet is not named, one with nothing left to read is as far as the
    release, and once all have had nothing to read for a while they are idle."""
    handler = IngestHandler(replace(SETTINGS, identity=IdentitySettings(merge=True)), Metrics())
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])

    def ticks(topic: str, values: list[bytes], caught_up: set[tuple[str, int]]
              ) -> list[tuple[int | None, dict[str, object]]]:
        out = Output()
        messages = [FakeMessage(v, n, key=None, topic=topic) for n, v in enumerate(values)]
        table = Table("ingest", "memory://", None)  # type: ignore[arg-type]
        if messages:
            handler.handle(0, cast("list[Message]", messages), table, out)
        else:
            handler.idle(table, out)
        handler.finish(table, out, lambda confirm=(): caught_up)
        sent = [(p, orjson.loads(v)) for _t, _k, v, p in out.records if v is not None]
        assert all(m.get("op") == "tick" for _p, m in sent[len(sent) - SETTINGS.partitions:])
        return [(p, m) for p, m in sent if m.get("op") == "tick"]

    email = raw_ev("e-1", "opened", source="email", occurred_at=T0 + DAY_MS,
                   customer_id="C1", payload={})
    first = ticks(EMAIL, [email], caught_up=set())  # crm has not delivered: e-1 waits
    assert [p for p, _m in first] == list(range(SETTINGS.partitions))
    assert first[0][1]["inputs"] == [[EMAIL, 0, T0 + DAY_MS - 1]]
    assert first[0][1]["idle"] == []
    assert ticks(EMAIL, [], caught_up=set()) == []  # nothing moved, within the interval
    crm = raw_ev("c-1", "payment_late", source="crm", occurred_at=T0 + 3 * DAY_MS,
                 customer_id="C1", payload={})
    both = {(EMAIL, 0), (CRM, 0)}
    [(_p, tick), *_] = ticks(CRM, [crm], caught_up=both)  # moved: a tick at once
    # Just busy: a partition with nothing left to read may still have records on their way,
    # so it is only as far as its own newest record.
    assert tick["inputs"] == [[CRM, 0, T0 + 3 * DAY_MS], [EMAIL, 0, T0 + DAY_MS]]
    assert tick["idle"] == []
    handler._busy_since -= IDLE_AFTER_S  # busy for a while: as far as the release
    [(_p, tick), *_] = ticks(CRM, [], caught_up=both)
    assert tick["inputs"] == [[CRM, 0, T0 + 3 * DAY_MS], [EMAIL, 0, T0 + 3 * DAY_MS]]
    assert tick["idle"] == []
    assert handler._quiet_since is not None
    handler._quiet_since -= IDLE_AFTER_S  # nothing to read for a while
    [(_p, tick), *_] = ticks(CRM, [], caught_up=both)
    assert tick["idle"] == [[CRM, 0], [EMAIL, 0]]
