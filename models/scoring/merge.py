"""The identity merge of one customer-events partition: its events in event-time order,
whichever way they came (`SCORESTREAM_IDENTITY_MERGE`).

A customer's events reach its customer-events partition by two ways. Ingest sends the events
that name the customer itself, from one worker, in event-time order. The identity stage
releases the alias-only ones once it knows whose they are, from every identity partition, and
in a backfill it runs far behind ingest (it reads what ingest wrote). Scored as they arrive, a
customer's alias-only events come after its later events: labels resolve and alerts fire
before events that belong before them, and how many depends on how far behind the identity
stage ran, so on the machine's speed.

So the scoring stage holds every event. The identity stage's ticks (`merge_tick_message`)
tell how far each identity partition has released everything it will release (but events
held for a link that came later); an event goes out once every identity partition has passed
its time, lowest time first (arrival order among equal times). Ingest's events up to that
time are all there by then: ingest sent them before the ticks the identity stage's clock came
from.

One identity partition's releases of a customer need not come in event-time order: it hears
from every ingest worker, and one runs ahead of another. So they go out of their arrival
order too, and a release is told from a redelivery by its release position together with the
positions still held before it from the same identity partition (`release`'s `before`,
`CustomerState.first_release`).

Offsets are committed only up to the first event still held; after a crash the events read
again that had gone out are recognised as redeliveries: each state keeps the highest offset
applied to it and the offsets of its events still held below it (`held_offsets`,
`CustomerState.merged_before`).

>>> m = Merge(identity_partitions=2)
>>> m.add((None, "C1"), 10, 0, "direct@10")
>>> m.add((1, "C1"), 5, 1, "alias@5", position=[1, 3, 3])
>>> m.release()  # no identity partition has ticked: nothing may go yet
[]
>>> m.tick(0, 20); m.tick(1, 7)
>>> m.release(), m.position()
([('alias@5', [])], 0)
>>> m.tick(1, 30)
>>> m.release(), m.position()
([('direct@10', [])], None)

An identity partition released a customer's day-30 event before its day-10 one: the day-10
one goes first, naming the earlier release still held before it.

>>> m.add((1, "C1"), 30, 2, "alias@30", position=[1, 4, 4])
>>> m.add((1, "C1"), 10, 3, "alias@10", position=[1, 5, 5])
>>> m.tick(0, 40); m.tick(1, 40)
>>> m.release()
[('alias@10', [[1, 4, 4]]), ('alias@30', [])]
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Merge"]

Lane = tuple[int | None, str]
"""(the identity partition an event was released by, None for ingest's own; its customer)."""


@dataclass
class _Held:
    time: int
    offset: int
    item: Any
    lane: Lane
    position: list[int] | None
    seq: int = 0


@dataclass
class Merge:
    """Held events of one customer-events partition, released in event-time order up to the
    slowest identity partition's tick."""

    identity_partitions: int
    marks: dict[int, int] = field(default_factory=dict)
    """Per identity partition, the latest time its ticks passed."""
    count: int = 0
    """Events held."""
    forced: int = 0
    """Events let out early (`release(max_held=...)`) since the partition was assigned."""
    next_offset: int | None = None
    """The offset after the last record read (what to commit when nothing is held)."""
    _held: dict[int, _Held] = field(default_factory=dict)
    """The held events by sequence number."""
    _order: list[tuple[int, int, int]] = field(default_factory=list)
    """Min-heap of the held events: (time, offset, seq)."""
    _lanes: dict[Lane, list[int]] = field(default_factory=dict)
    """Per customer and identity partition, the seqs of its held releases in arrival order."""
    _offsets: list[tuple[int, int]] = field(default_factory=list)
    """Min-heap of the held events' (offset, seq), released ones removed lazily."""
    _customers: dict[str, set[int]] = field(default_factory=dict)
    """Per customer, the offsets of its held events."""
    _seq: int = 0

    def tick(self, identity_partition: int, watermark: int) -> None:
        """An identity partition's tick: it has released everything up to `watermark`."""
        if watermark > self.marks.get(identity_partition, -1):
            self.marks[identity_partition] = watermark

    def bound(self) -> int | None:
        """The time up to which events may go (None: an identity partition has not ticked
        since the partition was assigned, so none may)."""
        if len(self.marks) < self.identity_partitions:
            return None
        return min(self.marks.values())

    def add(self, lane: Lane, time: int, offset: int, item: Any,
            position: list[int] | None = None) -> None:
        """One arrived event (in offset order); `position`, an identity release's."""
        self._seq += 1
        seq = self._seq
        self._held[seq] = _Held(time, offset, item, lane, position, seq)
        heapq.heappush(self._order, (time, offset, seq))
        heapq.heappush(self._offsets, (offset, seq))
        if lane[0] is not None:
            self._lanes.setdefault(lane, []).append(seq)
        self._customers.setdefault(lane[1], set()).add(offset)
        self.count += 1

    def release(self, max_held: int | None = None) -> list[tuple[Any, list[list[int]]]]:
        """The events that may go now, lowest time first, up to `bound`; then, while more
        than `max_held` are held, the next ones regardless (counted in `forced`). Each with
        `before`: the release positions of its identity partition's releases of the same
        customer that came before it and are still held."""
        limit = self.bound()
        out: list[tuple[Any, list[list[int]]]] = []
        order = self._order
        while order:
            time = order[0][0]
            if limit is None or time > limit:
                if max_held is None or self.count <= max_held:
                    break
                self.forced += 1
            held = self._held.pop(heapq.heappop(order)[2])
            self._unheld(held)
            self.count -= 1
            out.append((held.item, self._leave_lane(held)))
        return out

    def _leave_lane(self, held: _Held, positions: bool = True) -> list[list[int]]:
        """Take a held release out of its lane: the positions of those held before it."""
        seqs = self._lanes.get(held.lane)
        if seqs is None:
            return []
        k = seqs.index(held.seq)
        before = [self._held[s].position for s in seqs[:k]] if positions else []
        del seqs[k]
        if not seqs:
            del self._lanes[held.lane]
        return [p for p in before if p is not None]

    def take(self, belongs: Callable[[Any], bool]) -> list[Any]:
        """Every held event `belongs` accepts, out now (in arrival order): a customer's held
        events go out with its erasure, which erases them too."""
        taken = [held for held in self._held.values() if belongs(held.item)]
        if not taken:
            return []
        for held in taken:
            self._leave_lane(held, positions=False)
            self._unheld(held)
            del self._held[held.seq]
        self._order = [entry for entry in self._order if entry[2] in self._held]
        heapq.heapify(self._order)
        self.count -= len(taken)
        return [held.item for held in sorted(taken, key=lambda h: h.offset)]

    def _unheld(self, held: _Held) -> None:
        offsets = self._customers[held.lane[1]]
        offsets.discard(held.offset)
        if not offsets:
            del self._customers[held.lane[1]]

    def held_offsets(self, customer: str) -> set[int]:
        """The offsets of the customer's events still held."""
        return self._customers.get(customer, set())

    def position(self) -> int | None:
        """The offset of the first event still held (None: none is)."""
        offsets, held = self._offsets, self._held
        while offsets and offsets[0][1] not in held:
            heapq.heappop(offsets)
        return offsets[0][0] if offsets else None
