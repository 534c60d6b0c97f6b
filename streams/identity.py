"""Identity agent (stage 2): alias-keyed identity messages in; resolved events and dead letters out.

The ingest agent sends every alias-only event, identity link and erasure to the identity topic
keyed by its alias key (`email:ann@example.com`). This agent consumes that topic, so partition
*p* of it, partition *p* of both tables below and the `IdentityPartition` that handles it
always sit on the same worker, and a link meets the events waiting for it whichever worker
produced them. Faust moves all three together on a rebalance.

State, all of it in changelog-backed tables (nothing is lost on a crash, a restart or a
rebalance):

- `identity-links`: alias key -> link record. The source of truth: each message adopts its
  key's link from the table before it is handled, and link changes are written back.
- `identity-held`: held-event key -> the event waiting for its alias's link, with its original
  source record (for a faithful `unresolved_identity` dead letter) and its identity partition.
- `identity-customers`: customer key -> every alias key linked to the customer, and the erasure
  in flight, if any. Records keyed `customer:<id>` on the identity topic go to the
  `ErasureCoordinator` instead (models/erasure.py): alias partitions keep this index up to date
  as links are made, and an erasure fans out from it to every alias of the customer.

Why held events are persisted rather than left uncommitted: Faust commits a partition's offset
up to the oldest unacknowledged event, so an event held for hours would pin the offset and a
restart would replay (and re-emit) everything after it; and Faust acknowledges take_events
batches itself. A held event is instead written to `identity-held` in the same batch whose
offsets then commit after the producer flush, so it is in the changelog before its offset is.
When a partition is (re)assigned its `IdentityPartition` is rebuilt lazily from the recovered
table (Faust recovers tables before streams resume), giving back the count and time bounds'
order. A held record redelivered after a crash is recognised by its key (alias, source,
event id) and not held twice; released and resolved events are at least once, and carry their
release position so that the scoring stage can drop a redelivered one (see
`IdentityPartition._position`; the gaps that remain are in docs/operations.md, Delivery
guarantees).

Table writes need the current event's partition (the changelog partition, and RocksDB's
per-partition store), which `take_events` does not set per event; the loop sets it before
handling each event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, cast

import faust
import orjson
from faust.types import TP

from models.erasure import ErasureCoordinator, is_customer_key
from models.ingestion import IdentityPartition
from streams.ingest import ingestion_config
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import Topics

log = logging.getLogger(__name__)

LINKS_TABLE = "identity-links"
HELD_TABLE = "identity-held"
CUSTOMERS_TABLE = "identity-customers"


def register_identity(app: faust.App, settings: Settings, topics: Topics) -> None:
    """Register the identity agent and its three tables on app."""
    links = app.Table(
        LINKS_TABLE, key_type=str, partitions=settings.partitions,
        help="alias key -> identity link (customer id, event time, linking event)",
    )
    held = app.Table(
        HELD_TABLE, key_type=str, partitions=settings.partitions,
        help="alias-only events waiting for their alias's link",
    )
    customers = app.Table(
        CUSTOMERS_TABLE, key_type=str, partitions=settings.partitions,
        help="customer key -> its alias keys and the erasure in flight",
    )
    coordinator = ErasureCoordinator()
    config = ingestion_config(settings)
    identity_topic = settings.topics["identity"]
    owned: dict[int, IdentityPartition] = {}

    def partition_state(partition: int) -> IdentityPartition:
        state = owned.get(partition)
        if state is None:
            records = [r for r in held.values() if r.get("partition") == partition]
            state = owned[partition] = IdentityPartition(partition, config, records)
            if records:
                log.info("identity partition %d: %d held events recovered", partition,
                         len(records))
        return state

    async def drop_revoked(sender: faust.App, revoked: set[TP], **_: object) -> None:
        # Whoever gets a partition next rebuilds it from the table; a stale copy must not
        # survive here in case it comes back.
        for tp in revoked:
            if tp.topic == identity_topic:
                owned.pop(tp.partition, None)

    # mode types receivers as (sender, *Any); ours names the revoked set.
    app.on_partitions_revoked.connect(drop_revoked)  # type: ignore[arg-type]

    @app.agent(topics.identity, name="identity")
    async def resolve(stream: faust.StreamT) -> None:
        concrete = cast(faust.Stream, stream)
        async for batch in concrete.take_events(settings.batch_size, settings.batch_within_s):
            now_ms = int(time.time() * 1000)
            for event in batch:
                concrete._set_current_event(event)
                message = event.message
                if is_customer_key(message.key):
                    erasure = coordinator.handle(
                        message.value, message.key, customers, now_ms, topic=message.topic,
                        partition=message.partition, offset=message.offset)
                    _apply(customers, erasure.index_changes)
                    accepted, dead, follow = erasure.accepted, erasure.dead, erasure.identity
                    recorded: tuple[tuple[MutableMapping[str, Any], Changes], ...] = ()
                else:
                    result = partition_state(message.partition).handle(
                        message.value,
                        message.key,
                        links,
                        now_ms,
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                    )
                    accepted, dead, follow = result.accepted, result.dead, result.identity
                    recorded = ((links, result.link_changes), (held, result.held_changes))
                # Releases are queued before the table writes that record them, so a crash
                # rarely leaves the tables ahead of lost releases (see operations.md).
                for record in accepted:
                    topics.customer_events.send_soon(
                        key=record["customer_id"].encode(), value=orjson.dumps(record)
                    )
                for record in dead:
                    topics.dead_letters.send_soon(key=message.key, value=orjson.dumps(record))
                for key, follow_up in follow:
                    topics.identity.send_soon(key=key.encode(), value=orjson.dumps(follow_up))
                for table, changes in recorded:
                    _apply(table, changes)


Changes = list[tuple[str, dict[str, Any] | None]]
"""Table writes as (key, record), None deleting the key."""


def _apply(table: MutableMapping[str, Any], changes: Changes) -> None:
    """Write (key, record) changes to a table; None deletes the key."""
    for key, record in changes:
        if record is None:
            table.pop(key, None)
        else:
            table[key] = record
