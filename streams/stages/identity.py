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
from models.ingest.routing import IdentityPartition, IngestionConfig
from schemas.decode import Origin, Reason
from streams.metrics import Metrics
from streams.runtime.stage import Output, StageHandler, dead_letter
from streams.runtime.tables import Table

__all__ = ["HELD", "INDEX", "LINK", "IdentityHandler", "TableView"]

log = logging.getLogger(__name__)

LINK = b"link/"
HELD = b"held/"
INDEX = b"index/"
"""Key prefixes of the identity table's three kinds of record."""

Changes = list[tuple[str, dict[str, Any] | None]]
"""Table writes as (key, record), None deleting the key."""


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
                 metrics: Metrics | None = None) -> None:
        self.config = config
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
        if records:
            log.info("identity partition %d: %d held events recovered", partition, len(records))

    def on_revoked(self, partition: int) -> None:
        """Whoever owns the partition next rebuilds it from the table."""
        self.partitions.pop(partition, None)

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
        for msg in messages:
            origin = Origin(msg.topic() or "", partition, msg.offset(), msg.key(), msg.value())
            key = origin.key
            try:
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
        """Nothing is time-driven here: ingest's ticks age held events out."""
