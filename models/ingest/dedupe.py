"""Remember recently seen (source, event_id) pairs so a redelivered event counts once.

Memory is bounded twice: at most `max_entries` pairs, and none older than `horizon_ms` of
event time. Each entry is stamped with the dedupe's event-time clock (the highest event time
seen so far), which never decreases, so the oldest entries always sit at the front of the
ordered map and both bounds evict from there in O(1) each.

A redelivery that arrives after its entry was evicted is not recognised; size the horizon to
cover the sources' redelivery window (retries, replays of a partition after a crash).

>>> seen = Dedupe(max_entries=2, horizon_ms=60_000)
>>> seen.seen("web", "w-1", event_time=1_000), seen.seen("web", "w-1", event_time=2_000)
(False, True)
>>> seen.seen("crm", "w-1", event_time=3_000)  # ids are unique per source only
False
>>> seen.seen("web", "w-2", event_time=4_000), len(seen), ("web", "w-1") in seen
(False, 2, False)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from schemas.units import DAY_MS

__all__ = ["Dedupe"]


class Dedupe:
    """Bounded set of (source, event_id) pairs seen recently, in event time."""

    def __init__(self, max_entries: int = 200_000, horizon_ms: int = DAY_MS) -> None:
        if max_entries < 1 or horizon_ms < 0:
            raise ValueError("max_entries must be >= 1 and horizon_ms >= 0")
        self.max_entries = max_entries
        self.horizon_ms = horizon_ms
        self._entries: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._clock = 0

    def seen(self, source: str, event_id: str, event_time: int) -> bool:
        """Record the pair; True when it was already present (a duplicate).

        A duplicate refreshes its entry, so a pair redelivered again and again stays known.
        """
        entries = self._entries
        advanced = event_time > self._clock
        if advanced:
            self._clock = event_time
        pair = (source, event_id)
        duplicate = pair in entries
        entries[pair] = self._clock
        if duplicate:
            entries.move_to_end(pair)  # a new pair is at the end already
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
        if advanced:  # the horizon moved: entries may have aged out at the front
            self._evict()
        return duplicate

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        cutoff = self._clock - self.horizon_ms
        while entries and next(iter(entries.values())) < cutoff:
            entries.popitem(last=False)

    def __contains__(self, pair: object) -> bool:
        return pair in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def clock(self) -> int:
        """Highest event time seen (epoch ms)."""
        return self._clock

    def snapshot(self) -> bytes:
        """The window as bytes (JSON); `restore` is its inverse."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, max_entries: int = 200_000, horizon_ms: int = DAY_MS) -> Dedupe:
        """Rebuild from `snapshot()` bytes (bounds may differ; they apply at once)."""
        return cls.from_dict(orjson.loads(b), max_entries, horizon_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state, oldest entry first; `from_dict` is its inverse."""
        return {
            "clock": self._clock,
            "entries": [
                [source, event_id, stamp] for (source, event_id), stamp in self._entries.items()
            ],
        }

    @classmethod
    def from_dict(
        cls, snapshot: dict[str, Any], max_entries: int = 200_000, horizon_ms: int = DAY_MS
    ) -> Dedupe:
        """Rebuild from `to_dict()` output (bounds may differ; they apply at once)."""
        dedupe = cls(max_entries, horizon_ms)
        dedupe._clock = int(snapshot["clock"])
        for source, event_id, stamp in snapshot["entries"]:
            dedupe._entries[(source, event_id)] = int(stamp)
        dedupe._evict()
        return dedupe
