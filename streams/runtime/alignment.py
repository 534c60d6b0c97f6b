"""Event-time alignment of source partitions: release records in step, not each at its own pace.

One consumer reads many source partitions, and each advances by records, not by time: a crm
partition with ten events a day runs years ahead of a web partition with a thousand while a
backlog is read, and one fetch of a sparse partition can span months. The scoring stage keeps
one event-time clock per customer partition, so the slow source's events would arrive "late"
behind the fast one's (dead-lettered as too_late once past the allowed lateness), and labels
would resolve before the events that should count in them.

So ingest routes every record at once but holds its outputs in a per-partition buffer, and
releases them in offset order only while their event time is at most `max_skew_ms` past the
slowest partition that still has records to read (Kafka Streams does the same with its
per-task record buffers). A caught-up partition (live, or a quiet source) holds nobody back,
so live streams never wait; a newly assigned one does until its first records arrive, for at
most `wait_s` seconds. Offsets are
committed only up to the first record still held, so a crash re-reads held records, never
loses them; a partition running ahead is paused until the others catch up, which bounds the
buffers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Aligner", "Held"]

Partition = tuple[str, int]
Record = tuple[str, bytes | None, bytes | None, int | None]
"""An output record as `Output.send` takes it: topic, key, value, partition."""


@dataclass
class Held:
    """Outputs of one source record waiting for the other partitions to catch up."""

    offset: int
    event_time: int | None
    records: list[Record]


@dataclass
class Aligner:
    """Per-partition buffers of routed records, released in event-time step.

    >>> a = Aligner(max_skew_ms=1000, wait_s=5.0, max_held=0)
    >>> a.assigned([("crm", 0), ("web", 0)], now=0.0)
    >>> a.add(("crm", 0), Held(0, 10_000, [("out", None, b"crm", None)]))
    >>> a.release(now=0.1, caught_up=set())  # web has not delivered yet: wait for it
    []
    >>> a.add(("web", 0), Held(0, 2_000, [("out", None, b"web", None)]))
    >>> [r[2] for r in a.release(now=0.2, caught_up=set())], a.positions()
    ([b'web'], {('web', 0): 1})
    >>> a.pause_resume()  # crm is 8 s of event time ahead
    ([('crm', 0)], [])
    >>> [r[2] for r in a.release(now=0.3, caught_up={("web", 0)})]  # web read to its end
    [b'crm']
    >>> a.positions(), a.pause_resume()
    ({('crm', 0): 1}, ([], [('crm', 0)]))
    """

    max_skew_ms: int
    wait_s: float = 10.0
    max_held: int = 2000
    held: dict[Partition, deque[Held]] = field(default_factory=dict)
    newest: dict[Partition, int] = field(default_factory=dict)
    assigned_at: dict[Partition, float] = field(default_factory=dict)
    paused: set[Partition] = field(default_factory=set)
    _next: dict[Partition, int] = field(default_factory=dict)
    _moved: dict[Partition, int] = field(default_factory=dict)

    def assigned(self, partitions: list[Partition], now: float) -> None:
        """New partitions: each holds the others back until it delivers or idles."""
        for tp in partitions:
            self.held.setdefault(tp, deque())
            self.assigned_at[tp] = now

    def forget(self, tp: Partition) -> None:
        """The partition left this consumer (or will be re-read): drop what it held."""
        for table in (self.held, self.newest, self.assigned_at, self._next, self._moved):
            table.pop(tp, None)
        self.paused.discard(tp)

    def add(self, tp: Partition, item: Held) -> None:
        """One routed source record, in offset order per partition."""
        self.held.setdefault(tp, deque()).append(item)
        self._next[tp] = item.offset + 1
        t = item.event_time
        if t is not None and t > self.newest.get(tp, t - 1):
            self.newest[tp] = t

    def bound(self, now: float, caught_up: set[Partition]) -> int | None:
        """Latest event time that may go out now (None: no limit).

        Each partition's frontier is its oldest held record, or, with nothing held, the newest
        record it delivered (what it delivers next is later); the slowest frontier plus the
        skew is the bound. A caught-up partition holding nothing has no frontier.
        """
        slowest = None
        for tp, queue in self.held.items():
            t = next((h.event_time for h in queue if h.event_time is not None), None)
            if t is None:
                if tp in caught_up:
                    continue
                t = self.newest.get(tp)
                if t is None:
                    if tp not in self._next and now - self.assigned_at.get(tp, now) <= self.wait_s:
                        return -1  # assigned, nothing read yet: its time is unknown
                    continue
            slowest = t if slowest is None else min(slowest, t)
        return None if slowest is None else slowest + self.max_skew_ms

    def release(self, now: float, caught_up: set[Partition]) -> list[Record]:
        """The outputs that may go out now, partition by partition in offset order.

        `caught_up`: partitions with nothing left to read, which hold nobody back."""
        limit = self.bound(now, caught_up)
        out: list[Record] = []
        for tp, queue in self.held.items():
            released = False
            while queue:
                head = queue[0]
                if limit is not None and head.event_time is not None and head.event_time > limit:
                    break
                queue.popleft()
                out.extend(head.records)
                released = True
            if released:
                self._moved[tp] = queue[0].offset if queue else self._next[tp]
        return out

    def positions(self) -> dict[Partition, int]:
        """Offsets to commit (the first record not released) of partitions that moved."""
        moved, self._moved = self._moved, {}
        return moved

    def pause_resume(self) -> tuple[list[Partition], list[Partition]]:
        """(partitions to pause, to resume), after `release`: one holding more than
        `max_held` records runs ahead, so it stops fetching until it holds a quarter of that
        (hysteresis: pausing drops the partition's prefetched records, resuming fetches them
        again, so flapping would cost more than it saves)."""
        pause = sorted(tp for tp, q in self.held.items()
                       if len(q) > self.max_held and tp not in self.paused)
        low = self.max_held // 4
        resume = sorted(tp for tp in self.paused if len(self.held.get(tp, ())) <= low)
        self.paused.update(pause)
        self.paused.difference_update(resume)
        return pause, resume
