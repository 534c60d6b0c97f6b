"""Event-time alignment of source partitions: release records in event-time order, not each
partition at its own pace.

One consumer reads many source partitions, and each advances by records, not by time: a crm
partition with ten events a day runs years ahead of a web partition with a thousand while a
backlog is read, and one fetch of a sparse partition can span months. The scoring stage keeps
one event-time clock per customer partition, so the slow source's events would arrive "late"
behind the fast one's (dead-lettered as too_late once past the allowed lateness), and labels
would resolve before the events that should count in them.

So ingest routes every record at once but holds its outputs in a per-partition buffer, and
releases them as a merge of the partitions' buffers: always the held record with the lowest
event time next, as long as no partition that may still deliver something earlier is empty.
Kafka Streams picks records the same way inside a task. A partition with nothing held
constrains the others only while it still has records to read (a caught-up partition, live or
quiet, holds nobody back, so live streams never wait) and only for `wait_s` seconds after it
last delivered or had nothing to read (`max.task.idle.ms` in Kafka Streams): then the others
go on without it. While it constrains them, records up to `max_skew_ms` past the newest record
it delivered may go out, so a backfill does not stop and start at every fetch.

Offsets are committed only up to the first record still held, so a crash re-reads held
records, never loses them. The buffers are bounded: once more than `max_held` records are held
in all, partitions that hold records (all of them waiting for a slower one) are paused until
they hold few again. Pausing drops what the consumer prefetched for a partition, so the bound
is generous and the hysteresis wide: in a backfill the partitions that run ahead are the sparse
ones, which hold few records per day of event time.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = ["Aligner", "Held"]

Partition = tuple[str, int]
Record = tuple[str, bytes | None, bytes | None, int | None]
"""An output record as `Output.send` takes it: topic, key, value, partition."""

_NONE: frozenset[Partition] = frozenset()

_UNKNOWN = -(1 << 62)
"""The limit while a partition that has not delivered yet is still awaited: nothing goes."""


@dataclass
class Held:
    """Outputs of one source record waiting for the other partitions to catch up, and what
    it counts (counter, amount: opaque here), counted when it goes out."""

    offset: int
    event_time: int | None
    records: list[Record]
    counts: list[tuple[Any, float]] = field(default_factory=list)


@dataclass
class Aligner:
    """Per-partition buffers of routed records, released as an event-time merge.

    >>> a = Aligner(max_skew_ms=1000, wait_s=5.0, max_held=0)
    >>> a.assigned([("crm", 0), ("web", 0)], now=0.0)
    >>> a.add(("crm", 0), Held(0, 10_000, [("out", None, b"crm", None)]))
    >>> a.release(now=0.1, caught_up=set())  # web has not delivered yet: wait for it
    []
    >>> a.add(("web", 0), Held(0, 2_000, [("out", None, b"web", None)]))
    >>> [r[2] for r in a.release(now=0.2, caught_up=set())], a.positions()
    ([b'web'], {('web', 0): 1})
    >>> a.pause_resume()  # crm holds a record 8 s of event time ahead: it waits unfetched
    ([('crm', 0)], [])
    >>> [r[2] for r in a.release(now=0.3, caught_up={("web", 0)})]  # web read to its end
    [b'crm']
    >>> a.positions(), a.pause_resume()
    ({('crm', 0): 1}, ([], [('crm', 0)]))
    """

    max_skew_ms: int
    wait_s: float = 10.0
    max_held: int = 100_000
    held: dict[Partition, deque[Held]] = field(default_factory=dict)
    newest: dict[Partition, int] = field(default_factory=dict)
    delivered_at: dict[Partition, float] = field(default_factory=dict)
    """When each partition last delivered a record, was assigned or was seen with nothing to
    read, monotonic seconds."""
    paused: set[Partition] = field(default_factory=set)
    count: int = 0
    """Records held in all partitions."""
    released_time: int = 0
    """The latest event time that has gone out (the stage's watermark downstream)."""
    _next: dict[Partition, int] = field(default_factory=dict)
    _moved: dict[Partition, int] = field(default_factory=dict)
    _fresh: set[Partition] = field(default_factory=set)
    _counts: dict[Any, float] = field(default_factory=dict)
    """Counts of the records released since `take_counts`, summed per counter."""

    def assigned(self, partitions: list[Partition], now: float) -> None:
        """New partitions: each holds the others back until it delivers or idles."""
        for tp in partitions:
            self.held.setdefault(tp, deque())
            self.delivered_at[tp] = now

    def forget(self, tp: Partition) -> None:
        """The partition left this consumer (or will be re-read): drop what it held."""
        self.count -= len(self.held.get(tp, ()))
        for table in (self.held, self.newest, self.delivered_at, self._next, self._moved):
            table.pop(tp, None)
        self.paused.discard(tp)
        self._fresh.discard(tp)

    def add(self, tp: Partition, item: Held) -> None:
        """One routed source record, in offset order per partition."""
        queue = self.held.get(tp)
        if queue is None:
            queue = self.held[tp] = deque()
        queue.append(item)
        self.count += 1
        self._next[tp] = item.offset + 1
        self._fresh.add(tp)
        t = item.event_time
        if t is not None and t > self.newest.get(tp, t - 1):
            self.newest[tp] = t

    def _constraint(self, tp: Partition, now: float,
                    caught_up: set[Partition] | frozenset[Partition]) -> int | None:
        """How far an empty partition lets the others go (None: no limit from it)."""
        if tp in caught_up or now - self.delivered_at.get(tp, now) > self.wait_s:
            return None
        newest = self.newest.get(tp)
        if newest is None:
            return None if tp in self._next else _UNKNOWN
        return newest + self.max_skew_ms

    def release(self, now: float, caught_up: set[Partition]) -> list[Record]:
        """The outputs that may go out now, lowest event time first (offset order within each
        partition; a record without an event time goes with the one before it).

        `caught_up`: partitions with nothing left to read, which hold nobody back."""
        for tp in self._fresh:
            self.delivered_at[tp] = now
        self._fresh.clear()
        # A partition's wait counts from when it last delivered or had nothing to read: one
        # that was quiet (caught up) when a producer's next burst reached the others holds
        # them back until its own share of the burst arrives, as a slow one would.
        for tp in caught_up:
            if tp in self.delivered_at:
                self.delivered_at[tp] = now
        out: list[Record] = []
        moved: set[Partition] = set()
        released = 0
        for tp, queue in self.held.items():
            while queue and queue[0].event_time is None:
                self._release(queue.popleft(), out)
                released += 1
                moved.add(tp)
        limit = self.bound(now, caught_up)
        heap = [(cast(int, queue[0].event_time), i, tp)
                for i, (tp, queue) in enumerate(self.held.items()) if queue]
        heapq.heapify(heap)
        while heap:
            t, i, tp = heap[0]
            if limit is not None and t > limit:
                break
            if t > self.released_time:
                self.released_time = t
            queue = self.held[tp]
            self._release(queue.popleft(), out)
            released += 1
            while queue and queue[0].event_time is None:
                self._release(queue.popleft(), out)
                released += 1
            moved.add(tp)
            if queue:
                heapq.heapreplace(heap, (cast(int, queue[0].event_time), i, tp))
                continue
            heapq.heappop(heap)
            bound = self._constraint(tp, now, caught_up)  # drained: now it may constrain
            if bound is not None and (limit is None or bound < limit):
                limit = bound
        self.count -= released
        for tp in moved:
            queue = self.held[tp]
            self._moved[tp] = queue[0].offset if queue else self._next[tp]
        return out

    def binding(self, now: float, caught_up: set[Partition]) -> set[Partition]:
        """The partitions of `caught_up` that would hold held records back if they still had
        records to read: the ones whose being caught up must be confirmed with the broker
        before `release` relies on it (the others' records were read after the end the
        client knows of them, so it may be stale)."""
        newest = sorted(((self.newest[tp], tp) for tp, queue in self.held.items()
                         if queue and tp in self.newest), reverse=True)[:2]
        if not newest:
            return set()
        out = set()
        for tp in caught_up:
            if tp not in self.held:
                continue
            bound = self._constraint(tp, now, _NONE)
            if bound is None:
                continue
            ahead = newest[0] if newest[0][1] != tp else newest[1] if len(newest) > 1 else None
            if ahead is not None and ahead[0] > bound:
                out.add(tp)
        return out

    def bound(self, now: float, caught_up: set[Partition]) -> int | None:
        """The latest event time the empty partitions allow to go out now (None: no limit);
        held records go out in event-time order up to it."""
        limit = None
        for tp, queue in self.held.items():
            if not queue:
                bound = self._constraint(tp, now, caught_up)
                if bound is not None and (limit is None or bound < limit):
                    limit = bound
        return limit

    def progress(self, caught_up: set[Partition], trusted: bool = True) -> dict[Partition, int]:
        """How far each partition has gone out, after `release`: the event time up to which
        its records have all gone out. A partition with held records: up to its first one;
        one with nothing left to read: up to `released_time` when `trusted` (it held nobody
        back, so a record that reaches it later and is older went out late, here too), else
        as one with more to read; one that has delivered: up to its newest record. A
        partition that has not delivered since it was assigned is left out: its first
        records may be older than anything here. Assumes a partition's records come in
        event-time order.

        >>> a = Aligner(max_skew_ms=0, wait_s=5.0)
        >>> a.assigned([("crm", 0), ("web", 0), ("email", 0)], now=0.0)
        >>> out = [("out", None, b"x", None)]
        >>> a.add(("web", 0), Held(0, 2_000, out)); a.add(("web", 0), Held(1, 9_000, out))
        >>> a.add(("crm", 0), Held(0, 5_000, out))
        >>> len(a.release(now=0.1, caught_up={("email", 0)}))  # crm has more to read
        2
        >>> a.assigned([("support", 0)], now=0.2)  # has not delivered yet
        >>> a.progress({("email", 0)})  # web's 9000 waits
        {('crm', 0): 5000, ('web', 0): 8999, ('email', 0): 5000}
        >>> a.progress({("email", 0)}, trusted=False)  # email's records may be on their way
        {('crm', 0): 5000, ('web', 0): 8999}
        """
        marks: dict[Partition, int] = {}
        for tp, queue in self.held.items():
            if queue and queue[0].event_time is not None:
                marks[tp] = queue[0].event_time - 1
            elif not queue and trusted and tp in caught_up:
                marks[tp] = max(self.released_time, self.newest.get(tp, 0))
            elif not queue and tp in self.newest:
                marks[tp] = self.newest[tp]
        return marks

    def _release(self, item: Held, out: list[Record]) -> None:
        """One held record goes out: its outputs to `out`, its counts to the running sums."""
        out.extend(item.records)
        counts = self._counts
        for counter, amount in item.counts:
            counts[counter] = counts.get(counter, 0) + amount

    def take_counts(self) -> list[tuple[Any, float]]:
        """What the records released since the last call count, summed per counter (a held
        record's counts go out with it, and are dropped with it by `forget`)."""
        counts, self._counts = self._counts, {}
        return list(counts.items())

    def positions(self) -> dict[Partition, int]:
        """Offsets to commit (the first record not released) of partitions that moved."""
        moved, self._moved = self._moved, {}
        return moved

    def pause_resume(self) -> tuple[list[Partition], list[Partition]]:
        """(partitions to pause, to resume), after `release`. Once more than `max_held`
        records are held, every partition still holding some (each waits for a slower one)
        stops fetching; a paused partition fetches again once it holds less than a quarter
        of its share of the bound (hysteresis: pausing drops the partition's prefetched
        records and resuming fetches them again, so flapping would cost more than it
        saves)."""
        pause: list[Partition] = []
        if self.count > self.max_held:
            pause = sorted(tp for tp, q in self.held.items() if q and tp not in self.paused)
        low = self.max_held // (4 * max(1, len(self.held)))
        resume = sorted(tp for tp in self.paused if len(self.held.get(tp, ())) <= low)
        self.paused.update(pause)
        self.paused.difference_update(resume)
        return pause, resume
