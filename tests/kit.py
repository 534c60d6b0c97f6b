"""The test kit: one moment, one way to build events, one way to drive a stage without a broker.

Time: tests count in days from `T0` (2026-01-01T00:00:00Z, a UTC day boundary) with `at(day)`.

Events, in the two shapes the pipeline knows:

- `ev(...)` is a canonical customer event (the customer-events contract) as a dict: what the
  scoring engine applies and the scoring stage consumes. It always names a customer.
- `raw_ev(...)` is a source-topic record as a producer sends it, as JSON bytes: it carries only
  the identity and other top-level fields a test gives it (alias-only events have no customer).

Both take the event type and derive the source from the contract. A page view and an order get
the minimal payload their schema requires (url "/"; the event id as order id, 10.00 EUR), which
the payload fields a test gives update; other event types get only what the test gives.

A stage without a broker: `assign` gives a handler its table on a memory store, `feed` hands it
one batch of `FakeMessage`s the way `BatchProcessor` does, `recording` collects a table's writes
into an `Output`, and `sent` decodes what a batch sent to a topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

from schemas.registry import SOURCES, event_types
from schemas.units import DAY_MS
from streams.runtime.stage import Output, StageHandler
from streams.runtime.stores import MemoryStore
from streams.runtime.tables import Table
from streams.stages.scoring import ScoringTopics

if TYPE_CHECKING:
    from confluent_kafka import Message

__all__ = [
    "DAY_MS",
    "DEV_SET",
    "ROOT",
    "SCORING_TOPICS",
    "T0",
    "FakeMessage",
    "assign",
    "at",
    "ev",
    "feed",
    "raw_ev",
    "recording",
    "sent",
]

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root directory."""
DEV_SET = ROOT / "tests" / "data" / "retail-orders-sample.jsonl.gz"
"""The dev set: a real public order history as crm events (see tests/data/README.md)."""

T0 = 1_767_225_600_000
"""2026-01-01T00:00:00Z in epoch milliseconds: a UTC day boundary, the tests' day 0."""

SCORING_TOPICS = ScoringTopics("score-changes", "alerts", "training", "dead", "attributions")
"""Where a scoring handler under test writes (the topic names `sent` reads back)."""

_SOURCE_OF = {event_type: source for source in SOURCES for event_type in event_types(source)}
_MINIMAL: dict[str, Any] = {}
"""`raw_ev`'s default payload: the event type's minimal one, left out when that is empty."""


def at(day: float) -> int:
    """Epoch milliseconds `day` days after T0 (a fraction is part of a day)."""
    return T0 + int(day * DAY_MS)


def _source(event_type: str, source: str | None) -> str:
    if source is not None:
        return source
    try:
        return _SOURCE_OF[event_type]
    except KeyError:
        raise ValueError(f"no source has event type {event_type!r}: pass source=") from None


def _payload(event_type: str, event_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` over the minimal payload of a page view or an order (for other types, `fields`
    alone)."""
    minimal: dict[str, Any] = {}
    if event_type == "page_view":
        minimal = {"url": "/"}
    elif event_type == "order_placed":
        minimal = {"order_id": event_id, "amount": 10.0, "currency": "EUR"}
    return {**minimal, **fields}


def ev(event_id: str, event_type: str, day: float = 0, *, customer_id: str = "C1",
       source: str | None = None, occurred_at: int | None = None,
       ingested_at: int | None = None, **payload: Any) -> dict[str, Any]:
    """A canonical customer event of `customer_id`, `day` days after T0 (or at `occurred_at`).

    Keywords other than the named ones are payload fields: a page view's url defaults to "/",
    an order is `order_id` = the event id, 10.00 EUR unless given. `source` defaults to the
    event type's; `ingested_at` is left out unless given.
    """
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "source": _source(event_type, source),
        "occurred_at": at(day) if occurred_at is None else occurred_at,
        "customer_id": customer_id,
        "payload": _payload(event_type, event_id, payload),
    }
    if ingested_at is not None:
        event["ingested_at"] = ingested_at
    return event


def raw_ev(event_id: str, event_type: str, day: float = 0, *, source: str | None = None,
           occurred_at: int | str | None = None, payload: dict[str, Any] | None = _MINIMAL,
           **fields: Any) -> bytes:
    """A source-topic record, as JSON bytes, `day` days after T0 (or at `occurred_at`).

    Keywords other than the named ones are top-level fields (customer_id, email,
    anonymous_id, anything else); there are none by default. `payload` updates the event
    type's minimal payload (see `ev`); without it the record has that minimal payload, or no
    payload field when it is empty, and None leaves the field out. `source` defaults to the
    event type's.
    """
    record = {
        "event_id": event_id,
        "event_type": event_type,
        "source": _source(event_type, source),
        "occurred_at": at(day) if occurred_at is None else occurred_at,
        **fields,
    }
    if payload is not None:
        body = _payload(event_type, event_id, payload)
        if body or payload is not _MINIMAL:
            record["payload"] = body
    return orjson.dumps(record)


class FakeMessage:
    """A consumed record: the confluent_kafka.Message methods the stage handlers read."""

    def __init__(self, value: bytes, offset: int = 0, *, key: bytes | None = b"k",
                 topic: str = "customer-events", partition: int = 0) -> None:
        self._value, self._offset, self._key = value, offset, key
        self._topic, self._partition = topic, partition

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def assign(handler: StageHandler, table: str) -> Table:
    """A table named `table` with a memory store for partition 0, which `handler` is assigned
    (as after a restore)."""
    assigned = Table(table, "memory://", Path())
    assigned.stores[0] = MemoryStore()
    handler.on_assigned(0, assigned)
    return assigned


@contextmanager
def recording(table: Table) -> Iterator[Output]:
    """A fresh Output that collects the table's writes while the block runs, as a batch's
    does, and applies its counts after the block, as a committed batch's are."""
    out = Output()
    table._out = out
    try:
        yield out
    finally:
        table._out = None
    out.tally()  # as BatchProcessor does once the batch has committed


def feed(handler: StageHandler, table: Table, records: Iterable[bytes | tuple[bytes, bytes]],
         *, first_offset: int = 0, topic: str = "customer-events") -> Output:
    """Hand the handler one batch of partition 0 as `BatchProcessor` does; the batch's Output.

    A record is a value (keyed b"k") or a (key, value) pair; offsets count from
    `first_offset`.
    """
    messages = []
    for n, record in enumerate(records):
        key, value = record if isinstance(record, tuple) else (b"k", record)
        messages.append(FakeMessage(value, first_offset + n, key=key, topic=topic))
    with recording(table) as out:
        handler.handle(0, cast("list[Message]", messages), table, out)
    return out


def sent(out: Output, topic: str) -> list[Any]:
    """The values a batch sent to `topic`, decoded (None for a tombstone)."""
    return [None if value is None else orjson.loads(value)
            for to, _key, value, _partition in out.records if to == topic]
