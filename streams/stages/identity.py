"""Identity stage (stage 2): alias-keyed identity messages in; resolved events and dead letters out.

The ingest stage sends every alias-only event, identity link and erasure to the identity topic
keyed by its alias key (`email:ann@example.com`). This stage consumes that topic on the
transactional `BatchProcessor`, so partition *p* of it, partition *p* of its table and the
`IdentityPartition` that handles it always sit on the same worker, and a link meets the events
waiting for it whichever worker produced them.

Its table (changelog `<app id>-identity-changelog`) holds three kinds of record, told apart by
a key prefix:

- `link/<alias key>`: the alias's link record. The source of truth: each message adopts its
  key's link from the table before it is handled, and link changes are written back.
- `held/<held key>`: an event waiting for its alias's link, with its original source record
  (for a faithful `unresolved_identity` dead letter).
- `index/customer:<id>`: every alias key linked to the customer, and the erasure in flight, if
  any. Records keyed `customer:<id>` on the identity topic go to the `ErasureCoordinator`
  (models/ingest/erasure.py): alias partitions keep this index up to date as links are made, and an
  erasure fans out from it to every alias of the customer.

A batch's table writes, releases, dead letters, follow-up identity messages and consumed
offsets commit in one Kafka transaction, and the stage reads its input `read_committed`: a
crash neither loses a release nor emits one twice, and an aborted ingest batch is never seen.
A held event is in the table (and its changelog) before the offset that delivered it is
committed, so holding an event for hours never pins the offset. When a partition is assigned,
or rebuilt after an aborted transaction, its `IdentityPartition` is rebuilt from the held
records of the restored store.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from confluent_kafka import Message

from models.ingest.erasure import ErasureCoordinator, is_customer_key
from models.ingest.routing import (
    MERGE_TICK_KEY,
    IdentityPartition,
    IngestionConfig,
    merge_tick_message,
)
from schemas.decode import Origin, Reason
from streams.metrics import Metrics
from streams.runtime.stage import Output, StageHandler, dead_letter
from streams.runtime.tables import Table

__all__ = ["HELD", "INDEX", "LINK", "MARKS", "IdentityHandler", "MergeTicks", "TableView"]

log = logging.getLogger(__name__)

LINK = b"link/"
HELD = b"held/"
INDEX = b"index/"
"""Key prefixes of the identity table's three kinds of record."""
MARKS = b"merge/marks"
"""With the identity merge: the table record of how far each source partition has gone
(`MergeTicks`), so that the partition's next owner starts from it."""

Changes = list[tuple[str, dict[str, Any] | None]]
"""Table writes as (key, record), None deleting the key."""

MERGE_REPEAT_S = 5.0
"""A partition's merge tick goes out at least this often, moved or not: a scoring partition
taken over by another worker learns every identity partition's progress from them."""


class MergeTicks:
    """The identity merge's clock (`SCORESTREAM_IDENTITY_MERGE`): per identity partition, how
    far each source partition has gone out of ingest, and the slowest of them passed on to
    every customer-events partition after the releases it covers.

    Ingest's ticks say, per source partition, up to which event time its records have all
    gone out, and which have had nothing left to read for a while (`routing.tick_message`);
    on each identity partition they follow every message those records sent. So once every
    source partition has been heard of, the slowest one's time is a time up to which this
    identity partition has received, and so released (before the tick it sends now), every
    event it will release, but for events held for a link that comes later. When every source
    is idle, everything sent has been received: the clock is the latest time heard of. Scoring holds
    each event until every identity partition has passed its time (`models/scoring/merge.py`).

    >>> m = MergeTicks({("web", 0), ("crm", 0)}, customer_partitions=2)
    >>> m.assigned(0)
    >>> m.heard(0, {"op": "tick", "inputs": [["web", 0, 50]], "idle": []})
    >>> m.due(0, now=10.0)  # crm has not been heard of: no clock yet
    []
    >>> m.heard(0, {"op": "tick", "inputs": [["crm", 0, 40], ["web", 0, 60]], "idle": []})
    >>> [(p, r["watermark"]) for p, r in m.due(0, now=10.0)]
    [(0, 40), (1, 40)]
    >>> m.due(0, now=11.0), len(m.due(0, now=15.0))  # unmoved: again after MERGE_REPEAT_S
    ([], 2)
    >>> m.heard(0, {"op": "tick", "inputs": [["crm", 0, 45]], "idle": [["crm", 0]]})
    >>> m.clock(0)  # crm is idle, but web is not: crm's 45 still binds
    45
    >>> m.heard(0, {"op": "tick", "inputs": [["web", 0, 60]], "idle": [["web", 0]]})
    >>> m.clock(0)  # both idle: everything sent has been received
    60
    """

    def __init__(self, inputs: set[tuple[str, int]] | frozenset[tuple[str, int]],
                 customer_partitions: int) -> None:
        self.inputs = frozenset(inputs)
        self.customer_partitions = customer_partitions
        self.marks: dict[int, dict[tuple[str, int], int]] = {}
        self.idle: dict[int, set[tuple[str, int]]] = {}
        self.sent: dict[int, tuple[int, float]] = {}
        self.changed: set[int] = set()
        """Partitions whose marks changed since their table record was written."""

    def assigned(self, partition: int, stored: bytes | None = None) -> None:
        """A partition starts from what its table kept (`snapshot`), else with no clock:
        it learns every source's from the next ticks."""
        marks: dict[tuple[str, int], int] = {}
        idle: set[tuple[str, int]] = set()
        if stored:
            record = orjson.loads(stored)
            for topic, source_partition, mark in record.get("marks", ()):
                if (topic, source_partition) in self.inputs:
                    marks[(topic, source_partition)] = mark
            idle = {(t, p) for t, p in record.get("idle", ()) if (t, p) in marks}
        self.marks[partition], self.idle[partition] = marks, idle
        self.sent.pop(partition, None)
        self.changed.discard(partition)

    def snapshot(self, partition: int) -> bytes:
        """The partition's marks as its table keeps them."""
        return orjson.dumps({
            "marks": sorted([t, p, mark] for (t, p), mark in self.marks.get(partition, {}).items()),
            "idle": sorted([t, p] for t, p in self.idle.get(partition, ()))})

    def revoked(self, partition: int) -> None:
        for table in (self.marks, self.idle, self.sent):
            table.pop(partition, None)
        self.changed.discard(partition)

    def heard(self, partition: int, tick: dict[str, Any]) -> None:
        """An ingest tick on `partition` (malformed entries are ignored)."""
        marks = self.marks.setdefault(partition, {})
        idle = self.idle.setdefault(partition, set())
        before = (dict(marks), set(idle))
        self._heard(tick, marks, idle)
        if (marks, idle) != before:
            self.changed.add(partition)

    def _heard(self, tick: dict[str, Any], marks: dict[tuple[str, int], int],
               idle: set[tuple[str, int]]) -> None:
        for item in tick.get("inputs") or ():
            try:
                tp, mark = (str(item[0]), int(item[1])), int(item[2])
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if tp in self.inputs:
                marks[tp] = max(mark, marks.get(tp, mark))
                idle.discard(tp)
        for item in tick.get("waiting") or ():
            try:
                idle.discard((str(item[0]), int(item[1])))
            except (TypeError, ValueError, IndexError, KeyError):
                continue
        for item in tick.get("idle") or ():
            try:
                tp = (str(item[0]), int(item[1]))
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            if tp in marks:
                idle.add(tp)

    def clock(self, partition: int) -> int | None:
        """The slowest source's time; once all of them are idle, the latest (None until every
        source has been heard of). One idle source next to busy ones still holds them back:
        its worker may only not have seen the records on their way to it yet."""
        marks = self.marks.get(partition, {})
        if len(marks) < len(self.inputs):
            return None
        if len(self.idle.get(partition, ())) == len(marks):
            return max(marks.values())
        return min(marks.values())

    def due(self, partition: int, now: float) -> list[tuple[int, dict[str, Any]]]:
        """(customer-events partition, tick) to send now: when the clock moved, or
        `MERGE_REPEAT_S` after the last."""
        clock = self.clock(partition)
        if clock is None:
            return []
        last = self.sent.get(partition)
        if last is not None and clock <= last[0] and now - last[1] < MERGE_REPEAT_S:
            return []
        self.sent[partition] = (max(clock, last[0]) if last else clock, now)
        tick = merge_tick_message(partition, clock)
        return [(p, tick) for p in range(self.customer_partitions)]


class TableView(Mapping[str, dict[str, Any]]):
    """One kind of record of one partition of the identity table, as a read-only mapping of
    str keys to decoded records (what the pure identity core reads), plus `apply` to write."""

    def __init__(self, table: Table, partition: int, prefix: bytes) -> None:
        self.table = table
        self.partition = partition
        self.prefix = prefix

    def __getitem__(self, key: str) -> dict[str, Any]:
        raw = self.table.get(self.partition, self.prefix + key.encode())
        if raw is None:
            raise KeyError(key)
        record: dict[str, Any] = orjson.loads(raw)
        return record

    def __iter__(self) -> Iterator[str]:
        cut = len(self.prefix)
        for key, _value in self.table.items(self.partition):
            if key.startswith(self.prefix):
                yield key[cut:].decode()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of this kind in the partition (a scan: for rebuilding only)."""
        for key, value in self.table.items(self.partition):
            if key.startswith(self.prefix):
                yield orjson.loads(value)

    def apply(self, changes: Changes) -> None:
        """Write (key, record) changes; None deletes the key (a changelog tombstone)."""
        self.write(self.encode(changes))

    def encode(self, changes: Changes) -> list[tuple[bytes, bytes | None]]:
        """The changes as the table's (key, value) bytes: what can fail on a record's content,
        done before anything is written."""
        return [(self.prefix + key.encode(), None if record is None else orjson.dumps(record))
                for key, record in changes]

    def write(self, encoded: list[tuple[bytes, bytes | None]]) -> None:
        """Write `encode`d changes (the store: its failures stop the stage)."""
        for raw_key, value in encoded:
            if value is None:
                if self.table.get(self.partition, raw_key) is not None:
                    self.table.delete(self.partition, raw_key)
            else:
                self.table.put(self.partition, raw_key, value)


class IdentityHandler(StageHandler):
    """StageHandler of the identity stage: the pure `IdentityPartition` and
    `ErasureCoordinator` over the stage's table, their outputs sent in the batch."""

    def __init__(self, config: IngestionConfig, topics: Mapping[str, str],
                 metrics: Metrics | None = None, merge: MergeTicks | None = None) -> None:
        self.config = config
        self.merge = merge
        self.metrics = metrics or Metrics()
        self.customer_events = topics["customer_events"]
        self.dead_letters = topics["dead_letters"]
        self.identity = topics["identity"]
        self.coordinator = ErasureCoordinator()
        self.partitions: dict[int, IdentityPartition] = {}

    def on_assigned(self, partition: int, table: Table) -> None:
        """Rebuild the partition's waiting events from the held records of its store."""
        records = list(TableView(table, partition, HELD).records())
        self.partitions[partition] = IdentityPartition(partition, self.config, records)
        if self.merge is not None:
            self.merge.assigned(partition, table.get(partition, MARKS))
        if records:
            log.info("identity partition %d: %d held events recovered", partition, len(records))

    def on_revoked(self, partition: int) -> None:
        """Whoever owns the partition next rebuilds it from the table."""
        self.partitions.pop(partition, None)
        if self.merge is not None:
            self.merge.revoked(partition)

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Handle one identity partition's records of a batch, in offset order."""
        now_ms = int(time.time() * 1000)
        state = self.partitions[partition]
        links = TableView(table, partition, LINK)
        held = TableView(table, partition, HELD)
        index = TableView(table, partition, INDEX)
        send = out.records.append  # (topic, key, value, partition), as Output.send queues it
        dumps = orjson.dumps
        dead_reasons: Counter[str] = Counter()
        duplicates = 0
        merge = self.merge
        for msg in messages:
            origin = Origin(msg.topic() or "", partition, msg.offset(), msg.key(), msg.value())
            key = origin.key
            try:
                if key is None and merge is not None:
                    merge.heard(partition, self._tick(origin.value))
                if is_customer_key(key):
                    erasure = self.coordinator.handle(origin, index, now_ms)
                    writes = [(index, index.encode(erasure.index_changes))]
                    accepted, dead, follow = erasure.accepted, erasure.dead, erasure.identity
                    duplicate = False
                else:
                    result = state.handle(origin, links, now_ms)
                    writes = [(links, links.encode(result.link_changes)),
                              (held, held.encode(result.held_changes))]
                    accepted, dead, follow = result.accepted, result.dead, result.identity
                    duplicate = result.duplicate
                # Serialised before anything is written or queued: a record the core cannot
                # handle leaves the table and the outputs as they were.
                records = [(self.customer_events, r["customer_id"].encode(), dumps(r), None)
                           for r in accepted]
                records += [(self.dead_letters, key, dumps(r), None) for r in dead]
                records += [(self.identity, k.encode(), dumps(m), None) for k, m in follow]
            except Exception as err:  # one record's content must never stop the worker
                state = self._quarantine(partition, table, msg, out, err)
                dead_reasons[Reason.PROCESSING_ERROR] += 1
                continue
            for view, encoded in writes:  # the store: its failures stop the stage
                view.write(encoded)
            duplicates += duplicate
            for queued in records:
                send(queued)
            for letter in dead:
                dead_reasons[letter["reason"]] += 1
        for reason, count in dead_reasons.items():
            out.count(self.metrics.dead_letters.labels(reason), count)
        if duplicates:
            out.count(self.metrics.duplicates.labels("identity"), duplicates)
        if merge is not None and partition in merge.changed:
            merge.changed.discard(partition)
            table.put(partition, MARKS, merge.snapshot(partition))
        self._merge_ticks(partition, out)

    @staticmethod
    def _tick(value: bytes | None) -> dict[str, Any]:
        """An unkeyed record's value, when it is an ingest tick (else an empty dict: the core
        dead-letters what is not)."""
        try:
            message = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return {}
        return message if isinstance(message, dict) and message.get("op") == "tick" else {}

    def _merge_ticks(self, partition: int, out: Output) -> None:
        """The partition's merge tick to every customer-events partition, when due: after
        the batch's releases, which it covers."""
        if self.merge is None:
            return
        for target, tick in self.merge.due(partition, time.monotonic()):
            out.send(self.customer_events, MERGE_TICK_KEY, orjson.dumps(tick), target)

    def _quarantine(self, partition: int, table: Table, msg: Message, out: Output,
                    error: Exception) -> IdentityPartition:
        """Dead-letter one identity record the core raised on, as `processing_error`, and
        rebuild the partition's waiting events from the table (which has every change of the
        records before it, and none of this one's)."""
        out.count(self.metrics.processing_errors.labels("identity"))
        log.error("identity: record at %s[%d]@%s quarantined: %s: %s", msg.topic(), partition,
                  msg.offset(), type(error).__name__, error)
        out.send(self.dead_letters, msg.key(), orjson.dumps(dead_letter(
            msg, Reason.PROCESSING_ERROR, f"identity stage: {type(error).__name__}: {error}")))
        self.on_assigned(partition, table)
        return self.partitions[partition]

    def idle(self, table: Table, out: Output) -> None:
        """Ingest's ticks age held events out; only the merge ticks repeat while idle."""
        for partition in list(self.partitions):
            self._merge_ticks(partition, out)
