"""Ingestion: raw source records in, canonical customer events and dead letters out.

Composes the decoder (`schemas.decode`), `Dedupe` and `IdentityResolver` for one stream of
records, synchronously and without I/O, so the streaming stages, the replay command and the
tests run the same code. Every consumed record ends in exactly one bucket, and the counters
prove it: ``consumed == processed + dead + duplicates + held`` at every step, where held
events count as processed when released (or erased) and as dead when evicted; after
`flush()` nothing is held.

Time: `now_ms` is the wall clock passed in (for `ingested_at`, `dead_lettered_at` and the
future-skew check); the dedupe horizon and identity hold bound run on event time, advanced
by the highest `occurred_at` accepted so far (the ingestion watermark).

Two ways to run it:

- `Ingestion.process` does everything in one place (replay, tests, a single process).
- Partitioned, for several workers: `Ingestion.route` (stage 1, on the source topics) decodes
  and de-duplicates, sends events with a customer id straight on, and turns alias-only events
  and identity links into messages for an internal identity topic keyed by alias key
  (`event_message`, `link_message`; `tick_message` carries the watermark to quiet partitions).
  `IdentityPartition` (stage 2, one per identity-topic partition) resolves, holds, releases and
  evicts, with links and held events in the caller's tables. Released events then reach
  customer-events after the event that linked them, not before it. An erasure goes to the
  identity topic keyed by customer, where `models.ingest.erasure.ErasureCoordinator` erases every
  alias of the customer before the event continues to customer-events.

>>> ingestion = Ingestion()
>>> page = (b'{"event_id":"w-1","event_type":"page_view","source":"web",'
...         b'"occurred_at":1767225600000,"anonymous_id":"a-1","payload":{"url":"/"}}')
>>> ingestion.process(Origin("web", 0, 7, None, page), "web", now_ms=1767225601000).held
True
>>> login = (b'{"event_id":"w-2","event_type":"login","source":"web",'
...          b'"occurred_at":1767225660000,"customer_id":"C42","anonymous_id":"a-1"}')
>>> result = ingestion.process(Origin("web", 0, 8, None, login), "web", now_ms=1767225661000)
>>> [(e["event_id"], e["customer_id"]) for e in result.accepted]
[('w-1', 'C42'), ('w-2', 'C42')]
>>> ingestion.counters.balanced(), ingestion.counters.processed
(True, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.ingest.dedupe import Dedupe
from models.ingest.erasure import (
    customer_key,
    erase_customer_message,
    erased_alias_message,
    index_message,
    unindex_message,
)
from models.ingest.identity import (
    Eviction,
    HeldEvent,
    IdentityResolver,
    alias_key,
    routing_alias,
)
from schemas.decode import (
    DEFAULT_MAX_AMOUNT,
    DeadLetter,
    DecodedEvent,
    DecoderConfig,
    Origin,
    Reason,
    decode_source_event,
)
from schemas.errors import ScorestreamError
from schemas.units import DAY_MS, HOUR_MS

__all__ = [
    "IDENTITY_OPS",
    "MERGE_TICK_KEY",
    "IdentityCounters",
    "IdentityMessageError",
    "IdentityPartition",
    "IdentityResult",
    "IngestCounters",
    "IngestResult",
    "Ingestion",
    "IngestionConfig",
    "Routed",
    "event_message",
    "held_key",
    "link_message",
    "merge_tick_message",
    "tick_message",
]


@dataclass(frozen=True, slots=True)
class IngestionConfig:
    """Bounds of the ingestion stage: decoder limits, dedupe memory and identity holding.

    From the scoring core's rate table: ``currencies=frozenset(cfg.fx_rates) | {base}``.
    """

    max_event_bytes: int = 64 * 1024
    """Larger record values are dead-lettered as `oversized` before decoding."""
    max_depth: int = 16
    """Deepest allowed JSON nesting (`too_deep` beyond)."""
    max_future_skew_ms: int = HOUR_MS
    """How far past the wall clock an event time may lie (`bad_timestamp` beyond)."""
    currencies: frozenset[str] | None = None
    """Currencies with an exchange rate; None accepts any ISO 4217-shaped code."""
    dedupe_max_entries: int = 200_000
    """(source, event_id) pairs remembered for duplicate detection."""
    dedupe_horizon_ms: int = DAY_MS
    """How long, in event time, a seen pair is remembered."""
    max_held: int = 10_000
    """Alias-only events waiting for an identity link, at most."""
    max_hold_ms: int = DAY_MS
    """How long, in event time, an alias-only event waits for its link."""
    max_dead_letter_value_bytes: int = 256 * 1024
    """Original bytes kept in a dead letter (the rest is cut, `value_truncated`)."""
    max_amount: float = DEFAULT_MAX_AMOUNT
    """Largest money amount of one event (`schema_violation` beyond)."""

    def decoder_config(self) -> DecoderConfig:
        """The decoder's share of these settings."""
        return DecoderConfig(
            max_bytes=self.max_event_bytes,
            max_depth=self.max_depth,
            max_future_skew_ms=self.max_future_skew_ms,
            currencies=self.currencies,
            max_amount=self.max_amount,
        )


@dataclass(slots=True)
class IngestResult:
    """What one call produced: records for customer-events and dead-letters, in emit order.

    `link_changes` are identity table updates (alias key -> link record, None = delete).
    """

    accepted: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False
    held: bool = False
    link_changes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)


@dataclass(slots=True)
class Routed:
    """Stage 1's output for one record (`Ingestion.route`), each list in emit order.

    `accepted` go to customer-events keyed by customer id; `identity` are (alias key, message)
    pairs for the identity topic, keyed by that alias key; `dead` go to dead-letters.
    `event_time` is the admitted event's `occurred_at` (None when it was not admitted), also
    when it went to the identity stage only.
    """

    accepted: list[dict[str, Any]] = field(default_factory=list)
    identity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False
    forwarded: bool = False
    event_time: int | None = None


@dataclass(slots=True)
class IngestCounters:
    """Running totals; `balanced()` is the no-silent-drop invariant."""

    consumed: int = 0
    accepted: int = 0
    erased: int = 0
    dead: int = 0
    duplicates: int = 0
    held: int = 0
    forwarded: int = 0
    """Alias-only records handed to the identity stage (`route` only)."""

    @property
    def processed(self) -> int:
        """Records that reached customer-events, plus held ones discarded by an erasure."""
        return self.accepted + self.erased

    def balanced(self) -> bool:
        """True when every consumed record is accounted for exactly once."""
        return self.consumed == (
            self.processed + self.dead + self.duplicates + self.held + self.forwarded
        )


class Ingestion:
    """Decode, de-duplicate and identity-resolve source records (see module docstring)."""

    def __init__(
        self,
        config: IngestionConfig | None = None,
        *,
        resolver: IdentityResolver | None = None,
        dedupe: Dedupe | None = None,
    ) -> None:
        self.config = config or IngestionConfig()
        self._decoder_config = self.config.decoder_config()
        self.resolver = resolver or IdentityResolver(
            max_held=self.config.max_held,
            max_hold_ms=self.config.max_hold_ms,
            track_changes=True,
        )
        self.dedupe = dedupe or Dedupe(
            self.config.dedupe_max_entries, self.config.dedupe_horizon_ms
        )
        self.counters = IngestCounters(held=self.resolver.held_count)
        self.watermark = max(self.dedupe.clock, 0)
        self.stamp_event_time = False
        """Stamp identity messages with their own event's time instead of the watermark: for
        a shell that releases routed records later, in event-time order (the ingest stage's
        alignment), where the watermark at routing time runs ahead of what has gone out and
        would age held events out on the identity stage before their links arrive."""
        self._partition_dedupes: dict[tuple[str, int | None], Dedupe] = {}

    def process(self, origin: Origin, source: str, now_ms: int) -> IngestResult:
        """Ingest one consumed record. Never raises for any value bytes."""
        self.counters.consumed += 1
        result = IngestResult()
        decoded = self._admit(origin, source, now_ms, self.dedupe)
        if isinstance(decoded, dict):
            result.dead.append(decoded)
            return self._finish(result, now_ms)
        if decoded is None:
            result.duplicate = True
            self.counters.duplicates += 1
            return self._finish(result, now_ms)

        customer_id = decoded.customer_id
        if customer_id is None:
            link = self.resolver.resolve_link(decoded.aliases())
            customer_id = None if link is None else link.customer_id
            if customer_id is None:
                item = {
                    "event": decoded.to_record(),
                    "origin": self._dead_record(_UNRESOLVED, origin, 0),
                }
                evicted = self.resolver.hold(decoded.aliases(), item, now=self.watermark)
                result.held = True
                self._dead_evictions(result, evicted, now_ms)
                return self._finish(result, now_ms)
            assert link is not None
            result.accepted.append(_linked(decoded.to_canonical(customer_id, now_ms),
                                           link.first))
            return self._finish(result, now_ms)

        # Released events were consumed earlier, so they go out before the linking event.
        for kind, alias in _links_in(decoded):
            for release in self.resolver.link(
                kind, alias, customer_id, event_time=decoded.occurred_at, event_id=decoded.event_id
            ):
                event = DecodedEvent.from_record(release.event.item["event"])
                result.accepted.append(_linked(event.to_canonical(release.customer_id, now_ms),
                                               decoded.occurred_at))
        result.accepted.append(decoded.to_canonical(customer_id, now_ms))
        if decoded.event_type == "customer_erased":
            forgotten = self.resolver.forget(customer_id, decoded.aliases())
            self.counters.erased += len(forgotten.held)
        return self._finish(result, now_ms)

    def forget_partition(self, partition: int) -> None:
        """Drop the de-duplication memory of a partition number (of every source topic).

        Called when the partition leaves this worker, or when its uncommitted records will be
        read again after an aborted transaction: remembering them would drop them as
        duplicates.
        """
        for key in [k for k in self._partition_dedupes if k[1] == partition]:
            del self._partition_dedupes[key]

    def route(self, origin: Origin, source: str, now_ms: int) -> Routed:
        """Stage 1 of the partitioned pipeline: decode, de-duplicate, and say where things go.

        Unlike `process`, this resolves nothing: an event with a customer id goes straight to
        customer-events; an alias-only event, and every link or erasure an event carries, goes
        to the identity topic keyed by its alias key, where `IdentityPartition` (stage 2) owns
        the links and the waiting events of that key. Never raises for any value bytes.

        Duplicates are remembered per source partition: a consumer reads its partitions at
        different event times (one can be days ahead while catching up), and a clock shared by
        all of them would age a slow partition's entries out before its redeliveries arrive.
        A redelivery lands on the original's partition when the producer keeps its key; one
        that does not is left to the scoring stage's per-customer event-id check.
        """
        self.counters.consumed += 1
        routed = Routed()
        dedupe = self._partition_dedupes.get((origin.topic, origin.partition))
        if dedupe is None:
            dedupe = self._partition_dedupes[(origin.topic, origin.partition)] = Dedupe(
                self.config.dedupe_max_entries, self.config.dedupe_horizon_ms
            )
        decoded = self._admit(origin, source, now_ms, dedupe)
        if isinstance(decoded, dict):
            routed.dead.append(decoded)
            self.counters.dead += 1
            return routed
        if decoded is None:
            routed.duplicate = True
            self.counters.duplicates += 1
            return routed

        routed.event_time = decoded.occurred_at
        watermark = decoded.occurred_at if self.stamp_event_time else self.watermark
        customer_id = decoded.customer_id
        if customer_id is None:
            # The decoder guarantees at least one identity field, so an alias is there.
            kind, alias = routing_alias(decoded.aliases()) or ("", "")
            held_origin = self._dead_record(_UNRESOLVED, origin, 0)
            message = event_message(decoded, held_origin, watermark)
            routed.identity.append((alias_key(kind, alias), message))
            routed.forwarded = True
            self.counters.forwarded += 1
            return routed

        if decoded.event_type == "customer_erased":
            # Through the identity stage first: the customer's index there knows every alias
            # (this event may name none), and it releases the event to customer-events only
            # once every link is gone (see models/ingest/erasure.py).
            named = [alias_key(kind, alias) for kind, alias in decoded.aliases()]
            message = erase_customer_message(
                decoded.to_canonical(customer_id, now_ms), named, watermark)
            routed.identity.append((customer_key(customer_id), message))
            routed.forwarded = True
            self.counters.forwarded += 1
            return routed
        routed.accepted.append(decoded.to_canonical(customer_id, now_ms))
        self.counters.accepted += 1
        links = {alias_key(kind, alias): (kind, alias) for kind, alias in _links_in(decoded)}
        for link_key, (kind, alias) in links.items():
            routed.identity.append(
                (link_key, link_message(kind, alias, decoded, customer_id, watermark))
            )
        return routed

    def evict(self, event_time: int, now_ms: int) -> IngestResult:
        """Dead-letter events held longer than the hold bound as of `event_time`.

        `process` already does this as event time advances; call it when a partition goes
        quiet and the shell wants held events to age out on a clock of its choosing.
        """
        self.watermark = max(self.watermark, event_time)
        return self._finish(IngestResult(), now_ms)

    def flush(self, now_ms: int) -> IngestResult:
        """Dead-letter every held event (end of a replay or of a test's input)."""
        result = IngestResult()
        self._dead_evictions(result, self.resolver.flush(), now_ms)
        return self._finish(result, now_ms)

    def snapshot(self) -> bytes:
        """The stage's state as bytes (JSON): identity, dedupe and watermark."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, config: IngestionConfig | None = None) -> Ingestion:
        """Rebuild from `snapshot()` bytes (counters start again at zero, held included)."""
        return cls.from_dict(orjson.loads(b), config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state of the stage: identity, dedupe and watermark."""
        return {
            "identity": self.resolver.to_dict(),
            "dedupe": self.dedupe.to_dict(),
            "watermark": self.watermark,
        }

    @classmethod
    def from_dict(cls, snapshot: dict[str, Any], config: IngestionConfig | None = None
                  ) -> Ingestion:
        """Rebuild from `to_dict()` output (counters start again at zero, held included)."""
        config = config or IngestionConfig()
        resolver = IdentityResolver.from_dict(
            snapshot["identity"],
            max_held=config.max_held,
            max_hold_ms=config.max_hold_ms,
            track_changes=True,
        )
        dedupe = Dedupe.from_dict(
            snapshot["dedupe"], config.dedupe_max_entries, config.dedupe_horizon_ms
        )
        ingestion = cls(config, resolver=resolver, dedupe=dedupe)
        ingestion.watermark = max(ingestion.watermark, int(snapshot["watermark"]))
        # Restored held events were consumed by an earlier incarnation: count them as consumed
        # here too, so the invariant keeps holding when they are released or evicted.
        ingestion.counters.consumed = ingestion.counters.held
        return ingestion

    def _admit(self, origin: Origin, source: str, now_ms: int, dedupe: Dedupe
               ) -> DecodedEvent | dict[str, Any] | None:
        """Decode and de-duplicate: the event, its dead-letter record, or None for a duplicate."""
        decoded = decode_source_event(origin.value, source, now_ms, self._decoder_config)
        if isinstance(decoded, DeadLetter):
            return self._dead_record(decoded, origin, now_ms)
        self.watermark = max(self.watermark, decoded.occurred_at)
        if dedupe.seen(source, decoded.event_id, decoded.occurred_at):
            return None
        return decoded

    def _finish(self, result: IngestResult, now_ms: int) -> IngestResult:
        """Apply the time bound, update counters, collect table changes."""
        self._dead_evictions(result, self.resolver.evict(self.watermark), now_ms)
        self.counters.accepted += len(result.accepted)
        self.counters.dead += len(result.dead)
        self.counters.held = self.resolver.held_count
        result.link_changes = self.resolver.drain_changes()
        return result

    def _dead_evictions(self, result: IngestResult, evicted: list[Eviction], now_ms: int) -> None:
        for held, why in evicted:
            result.dead.append(self._evicted_record(held, why, now_ms))

    def _evicted_record(self, held: HeldEvent, why: str, now_ms: int) -> dict[str, Any]:
        return _evicted_record(held, why, now_ms)

    def _dead_record(self, letter: DeadLetter, origin: Origin, now_ms: int) -> dict[str, Any]:
        return letter.to_record(
            origin, now_ms, max_value_bytes=self.config.max_dead_letter_value_bytes)


def _evicted_record(held: HeldEvent, why: str, now_ms: int) -> dict[str, Any]:
    """Dead letter of an evicted event, from the origin captured when it was held."""
    record = dict(held.item["origin"])
    record.update(
        reason=str(Reason.UNRESOLVED_IDENTITY),
        message=why,
        event_id=held.item["event"]["event_id"],
        dead_lettered_at=now_ms,
    )
    return record


_UNRESOLVED = DeadLetter(Reason.UNRESOLVED_IDENTITY, "")
"""Template capturing a held record's origin (topic, offset, base64 bytes) when it is held."""


def _links_in(event: DecodedEvent) -> list[tuple[str, str]]:
    """(alias kind, alias) pairs an event links to its customer id, per the contract."""
    if event.source == "web" and event.event_type == "login" and event.anonymous_id:
        return [("anonymous_id", event.anonymous_id)]
    if event.source == "crm" and event.event_type == "profile_updated":
        found = []
        if event.email:
            found.append(("email", event.email))
        fields = event.payload.get("fields", {})
        field_email = fields.get("email") if isinstance(fields, dict) else None
        if isinstance(field_email, str) and field_email.strip():
            found.append(("email", field_email))
        return found
    return []


# -- stage 2: the identity topic ------------------------------------------------------------

IDENTITY_OPS = ("event", "link", "erase", "tick")
"""Kinds of identity-topic message (field `op`)."""


def event_message(event: DecodedEvent, origin: dict[str, Any], watermark: int) -> dict[str, Any]:
    """Identity-topic message for an alias-only event: the event and its source record.

    `origin` is the dead-letter record of the source record (topic, offset, original bytes), so
    the identity stage can still dead-letter it faithfully if its link never arrives.
    """
    return {"op": "event", "event": event.to_record(), "origin": origin, "watermark": watermark}


def link_message(
    alias_kind: str, alias: str, event: DecodedEvent, customer_id: str, watermark: int
) -> dict[str, Any]:
    """Identity-topic message for one alias -> customer id link carried by `event`."""
    return {
        "op": "link",
        "alias_kind": alias_kind,
        "alias": alias,
        "customer_id": customer_id,
        "event_time": event.occurred_at,
        "event_id": event.event_id,
        "watermark": watermark,
    }


def tick_message(watermark: int, marks: Mapping[tuple[str, int], int] | None = None,
                 idle: Iterable[tuple[str, int]] = (),
                 waiting: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    """Identity-topic message that only advances a partition's event-time clock (so events held
    on a quiet partition still age out). With the identity merge (`MergeTicks`), per source
    partition (topic, partition) of the sender: `marks`, the event time up to which its
    records have all gone out before this tick; `idle`, those of them with nothing left to
    read for a while (they hold nobody back); `waiting`, those it cannot say yet (not idle)."""
    message: dict[str, Any] = {"op": "tick", "watermark": watermark}
    if marks is not None:
        message["inputs"] = sorted([topic, partition, mark]
                                   for (topic, partition), mark in marks.items())
        message["idle"] = sorted([topic, partition] for topic, partition in idle)
        message["waiting"] = sorted([topic, partition] for topic, partition in waiting)
    return message


MERGE_TICK_KEY = b"\x00identity-tick"
"""Key of the identity stage's ticks on customer-events (`merge_tick_message`): no customer
id starts with a NUL byte, and scoring looks at the value only under this key."""


def merge_tick_message(identity_partition: int, watermark: int) -> dict[str, Any]:
    """Customer-events message of the identity stage's merge: partition `identity_partition`
    of the identity topic has released, before it, every event it will release that ingest
    sent at or before `watermark` (but the events a link released late)."""
    return {"op": "tick", "identity_partition": identity_partition, "watermark": watermark}


def held_key(alias: str, source: str, event_id: str) -> str:
    """Held-events table key of one waiting event: unique, and the same on a redelivery."""
    return f"{alias}|{source}|{event_id}"


class IdentityMessageError(ScorestreamError, ValueError):
    """An identity-topic message that this stage did not write (malformed or mis-keyed)."""


@dataclass(slots=True)
class IdentityResult:
    """What one identity-topic message produced.

    `accepted` go to customer-events keyed by customer id, `dead` to dead-letters. The table
    changes are (key, record) pairs, None meaning delete: `link_changes` for the links table
    (keyed by alias key), `held_changes` for the held-events table (keyed by `held_key`).
    """

    accepted: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    link_changes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    held_changes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    duplicate: bool = False
    identity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(key, message) for the identity topic itself: customer-index updates and answers to
    erasures, keyed by customer key (models/ingest/erasure.py)."""


@dataclass(slots=True)
class IdentityCounters:
    """Running totals of one identity partition; `balanced()` is its no-silent-drop invariant.

    `consumed` counts alias-only events (link, erase and tick messages are not events).
    """

    consumed: int = 0
    resolved: int = 0
    """Emitted at once: their alias was already linked."""
    released: int = 0
    """Emitted when their link arrived."""
    dead: int = 0
    """Evicted by a hold bound: dead-lettered as `unresolved_identity`."""
    erased: int = 0
    duplicates: int = 0
    """Already waiting (a redelivery after a crash)."""
    held: int = 0
    invalid: int = 0
    """Malformed identity-topic messages, dead-lettered as `internal_error` (not events)."""

    def balanced(self) -> bool:
        """True when every alias-only event received is accounted for exactly once."""
        return self.consumed == (
            self.resolved + self.released + self.dead + self.erased + self.duplicates + self.held
        )


class IdentityPartition:
    """Stage 2 for one partition of the identity topic: links, and events waiting for one.

    Links live in the caller's table (a `Mapping` of alias key -> `Link` record, the source of
    truth): each message's key is adopted from it before handling, and `link_changes` say what
    to write back. Waiting events live in this object's `IdentityResolver` *and* in the
    caller's held-events table (`held_changes`); construct with that table's records for this
    partition to pick up after a restart or a rebalance. Resolving and holding use the routing
    alias only (the message key), since only that alias's link lives on this partition.

    >>> stage1, stage2, links = Ingestion(), IdentityPartition(0), {}
    >>> def run(raw):  # what the two stages do, identity topic in between
    ...     routed = stage1.route(Origin("web", 0, None, None, raw), "web", 1767225700000)
    ...     out = list(routed.accepted)
    ...     for key, message in routed.identity:
    ...         origin = Origin("identity-events", 0, None, key.encode(), orjson.dumps(message))
    ...         result = stage2.handle(origin, links, 1767225700000)
    ...         links.update((k, v) for k, v in result.link_changes if v is not None)
    ...         out += result.accepted
    ...     return [(e["event_id"], e["customer_id"]) for e in out]
    >>> run(b'{"event_id":"w-1","event_type":"page_view","source":"web",'
    ...     b'"occurred_at":1767225600000,"anonymous_id":"a-1","payload":{"url":"/"}}')
    []
    >>> run(b'{"event_id":"w-2","event_type":"login","source":"web",'
    ...     b'"occurred_at":1767225660000,"customer_id":"C42","anonymous_id":"a-1"}')
    [('w-2', 'C42'), ('w-1', 'C42')]
    >>> links["anonymous_id:a-1"]["customer_id"], stage2.counters.released
    ('C42', 1)
    """

    def __init__(
        self,
        partition: int,
        config: IngestionConfig | None = None,
        held: Iterable[dict[str, Any]] = (),
    ) -> None:
        self.partition = partition
        self.config = config or IngestionConfig()
        records = sorted(held, key=lambda record: int(record["seq"]))
        self.resolver = IdentityResolver.from_dict(
            {
                "links": [],
                "held": records,
                "seq": max((int(r["seq"]) for r in records), default=0),
                "clock": max((int(r["held_at"]) for r in records), default=0),
            },
            max_held=self.config.max_held,
            max_hold_ms=self.config.max_hold_ms,
            track_changes=True,
        )
        self._held_keys = {held.item["held_key"] for held in self.resolver.held()}
        self.clock = max((int(r["held_at"]) for r in records), default=0)
        """Event-time clock: the highest stage-1 watermark seen on this partition."""
        # Restored events were consumed by an earlier incarnation: count them in, so the
        # invariant holds when they are released or evicted.
        self.counters = IdentityCounters(consumed=len(records), held=len(records))

    def handle(self, origin: Origin, links: Mapping[str, dict[str, Any]], now_ms: int
               ) -> IdentityResult:
        """Handle one identity-topic record. Never raises for any bytes."""
        value, key, offset = origin.value, origin.key, origin.offset
        result = IdentityResult()
        try:
            alias, message = _parse_identity_message(value, key)
        except IdentityMessageError as err:
            self.counters.invalid += 1
            letter = DeadLetter(Reason.INTERNAL_ERROR, f"bad identity-topic message: {err}")
            result.dead.append(letter.to_record(origin, now_ms))
            return result

        self.clock = max(self.clock, int(message.get("watermark", 0)))
        if alias is not None:
            self.resolver.adopt(alias_key(*alias), links.get(alias_key(*alias)))
        op = message["op"]
        if op == "event":
            self._on_event(alias, message, result, now_ms, offset)
        elif op == "link":
            self._on_link(message, result, now_ms, offset)
        elif op == "erase":
            forgotten = self.resolver.forget(message["customer_id"], [alias] if alias else [])
            self.counters.erased += len(forgotten.held)
            for held in forgotten.held:
                self._unhold(held, result)
            if alias is not None and message.get("erasure_id"):
                result.identity.append((customer_key(message["customer_id"]), erased_alias_message(
                    message["customer_id"], str(message["erasure_id"]), alias_key(*alias),
                    bool(forgotten.link_keys), len(forgotten.held))))
        self._dead_evictions(self.resolver.evict(self.clock), result, now_ms)
        result.link_changes = self.resolver.drain_changes()
        self.resolver.clear_links()
        self.counters.held = self.resolver.held_count
        return result

    def _position(self, offset: int | None, own: int | None) -> list[int] | None:
        """Where a release happens: [this partition, offset of the record being handled,
        offset of the released event's own identity record]. Strictly increasing over a
        partition's releases, and the same when a record is handled again after a crash, so
        the scoring stage can drop a release it has already applied (see
        `CustomerState.first_release`)."""
        if offset is None or own is None:
            return None
        return [self.partition, offset, own]

    def _on_event(
        self, alias: tuple[str, str] | None, message: dict[str, Any], result: IdentityResult,
        now_ms: int, offset: int | None,
    ) -> None:
        assert alias is not None
        self.counters.consumed += 1
        event = DecodedEvent.from_record(message["event"])
        key = held_key(alias_key(*alias), event.source, event.event_id)
        if key in self._held_keys:
            result.duplicate = True
            self.counters.duplicates += 1
            return
        link = self.resolver.resolve_link([alias])
        if link is not None:
            # Linked at a later time than the event's own (its link overtook it on the way
            # here): the event is the customer's from the link on, as if it had waited.
            result.accepted.append(_released(
                _linked(event.to_canonical(link.customer_id, now_ms), link.first),
                self._position(offset, offset)))
            self.counters.resolved += 1
            return
        item = {"event": message["event"], "origin": message["origin"], "held_key": key,
                "offset": offset}
        evicted = self.resolver.hold([alias], item, now=self.clock)
        newest = self.resolver.last_held
        if newest is not None and newest.item is item:
            self._held_keys.add(key)
            result.held_changes.append((key, {**newest.to_record(), "partition": self.partition}))
        self._dead_evictions(evicted, result, now_ms)

    def _on_link(self, message: dict[str, Any], result: IdentityResult, now_ms: int,
                 offset: int | None) -> None:
        kind, alias = message["alias_kind"], message["alias"]
        before = self.resolver.lookup(kind, alias)
        releases = self.resolver.link(
            kind,
            alias,
            message["customer_id"],
            event_time=int(message["event_time"]),
            event_id=message.get("event_id"),
        )
        after = self.resolver.lookup(kind, alias)
        if after is not None and after != before:
            # Keep the customer -> aliases index (another partition) in step, for erasure.
            key = alias_key(kind, alias)
            result.identity.append((customer_key(after), index_message(after, key)))
            if before is not None:
                result.identity.append((customer_key(before), unindex_message(before, key)))
        # In the order the held events arrived, so their release positions increase.
        releases.sort(key=lambda release: release[1].item.get("offset") or 0)
        for customer_id, held in releases:
            event = DecodedEvent.from_record(held.item["event"])
            result.accepted.append(_released(
                _linked(event.to_canonical(customer_id, now_ms), int(message["event_time"])),
                self._position(offset, held.item.get("offset"))))
            self._unhold(held, result)
        self.counters.released += len(releases)

    def _dead_evictions(
        self, evicted: list[Eviction], result: IdentityResult, now_ms: int
    ) -> None:
        for held, why in evicted:
            result.dead.append(_evicted_record(held, why, now_ms))
            self._unhold(held, result)
        self.counters.dead += len(evicted)

    def _unhold(self, held: HeldEvent, result: IdentityResult) -> None:
        key = held.item["held_key"]
        if key in self._held_keys:
            self._held_keys.discard(key)
            result.held_changes.append((key, None))


def _linked(record: dict[str, Any], link_time: int) -> dict[str, Any]:
    """An alias-only event resolved by a link made after it (in event time), whether it waited
    for the link or the link overtook it: it is the customer's from the link's time on
    (`linked_at`, where the scoring core places it: `engine.timeline_time`)."""
    if link_time > record["occurred_at"]:
        record["linked_at"] = link_time
    return record


def _released(record: dict[str, Any], position: list[int] | None) -> dict[str, Any]:
    """A canonical event released by the identity stage, with its release position."""
    if position is not None:
        record["identity_position"] = position
    return record


def _parse_identity_message(
    value: bytes | None, key: bytes | None
) -> tuple[tuple[str, str] | None, dict[str, Any]]:
    """The (kind, alias) a message is about (None for a tick) and the message, checked."""
    if not value:
        raise IdentityMessageError("empty value")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise IdentityMessageError(f"not valid JSON: {err}") from err
    if not isinstance(message, dict) or message.get("op") not in IDENTITY_OPS:
        raise IdentityMessageError(f"not an object with op in {', '.join(IDENTITY_OPS)}")
    op = message["op"]
    try:
        int(message.get("watermark", 0))
        if op == "tick":
            return None, message
        if op == "event":
            event = DecodedEvent.from_record(message["event"])
            if event.customer_id is not None or not isinstance(message["origin"], dict):
                raise IdentityMessageError("event message without origin, or not alias-only")
            alias = routing_alias(event.aliases())
            if alias is None:
                raise IdentityMessageError("event carries no alias")
        else:
            alias = (str(message["alias_kind"]), str(message["alias"]))
            if not isinstance(message["customer_id"], str):
                raise IdentityMessageError("customer_id is not a string")
            if op == "link":
                int(message["event_time"])
        expected = alias_key(*alias)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, IdentityMessageError):
            raise
        raise IdentityMessageError(f"{op} message: {type(err).__name__}: {err}") from err
    if key != expected.encode():
        raise IdentityMessageError(
            f"keyed {key!r}, but its alias key is {expected!r} (sent to the wrong partition?)"
        )
    return alias, message
