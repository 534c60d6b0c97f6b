"""Ingestion: raw source records in, canonical customer events and dead letters out.

Composes the decoder (`schemas.decode`), `Dedupe` and `IdentityResolver` for one stream of
records, synchronously and without I/O, so the streaming agent, the replay command and the
tests run the same code. Every consumed record ends in exactly one bucket, and the counters
prove it: ``consumed == processed + dead + duplicates + held`` at every step, where held
events count as processed when released (or erased) and as dead when evicted; after
`flush()` nothing is held.

Time: `now_ms` is the wall clock passed in (for `ingested_at`, `dead_lettered_at` and the
future-skew check); the dedupe horizon and identity hold bound run on event time, advanced
by the highest `occurred_at` accepted so far (the ingestion watermark).

>>> ingestion = Ingestion()
>>> page = (b'{"event_id":"w-1","event_type":"page_view","source":"web",'
...         b'"occurred_at":1767225600000,"anonymous_id":"a-1","payload":{"url":"/"}}')
>>> ingestion.process(page, "web", "web", 0, 7, None, now_ms=1767225601000).held
True
>>> login = (b'{"event_id":"w-2","event_type":"login","source":"web",'
...          b'"occurred_at":1767225660000,"customer_id":"C42","anonymous_id":"a-1"}')
>>> result = ingestion.process(login, "web", "web", 0, 8, None, now_ms=1767225661000)
>>> [(e["event_id"], e["customer_id"]) for e in result.accepted]
[('w-1', 'C42'), ('w-2', 'C42')]
>>> ingestion.counters.balanced(), ingestion.counters.processed
(True, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.dedupe import Dedupe
from models.identity import Eviction, HeldEvent, IdentityResolver
from schemas.decode import (
    DeadLetter,
    DecodedEvent,
    DecoderConfig,
    Reason,
    decode_source_event,
)


@dataclass(frozen=True, slots=True)
class IngestionConfig:
    """Bounds of the ingestion stage: decoder limits, dedupe memory and identity holding.

    From the scoring core's rate table: ``currencies=frozenset(cfg.fx_rates) | {base}``.
    """

    max_event_bytes: int = 64 * 1024
    """Larger record values are dead-lettered as `oversized` before decoding."""
    max_depth: int = 16
    """Deepest allowed JSON nesting (`too_deep` beyond)."""
    max_future_skew_ms: int = 3_600_000
    """How far past the wall clock an event time may lie (`bad_timestamp` beyond)."""
    currencies: frozenset[str] | None = None
    """Currencies with an exchange rate; None accepts any ISO 4217-shaped code."""
    dedupe_max_entries: int = 200_000
    """(source, event_id) pairs remembered for duplicate detection."""
    dedupe_horizon_ms: int = 86_400_000
    """How long, in event time, a seen pair is remembered."""
    max_held: int = 10_000
    """Alias-only events waiting for an identity link, at most."""
    max_hold_ms: int = 86_400_000
    """How long, in event time, an alias-only event waits for its link."""
    max_dead_letter_value_bytes: int = 256 * 1024
    """Original bytes kept in a dead letter (the rest is cut, `value_truncated`)."""

    def decoder_config(self) -> DecoderConfig:
        """The decoder's share of these settings."""
        return DecoderConfig(
            max_bytes=self.max_event_bytes,
            max_depth=self.max_depth,
            max_future_skew_ms=self.max_future_skew_ms,
            currencies=self.currencies,
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
class IngestCounters:
    """Running totals; `balanced()` is the no-silent-drop invariant."""

    consumed: int = 0
    accepted: int = 0
    erased: int = 0
    dead: int = 0
    duplicates: int = 0
    held: int = 0

    @property
    def processed(self) -> int:
        """Records that reached customer-events, plus held ones discarded by an erasure."""
        return self.accepted + self.erased

    def balanced(self) -> bool:
        """True when every consumed record is accounted for exactly once."""
        return self.consumed == self.processed + self.dead + self.duplicates + self.held


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

    def process(
        self,
        value: bytes | None,
        source: str,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        now_ms: int,
    ) -> IngestResult:
        """Ingest one consumed record. Never raises for any value bytes."""
        self.counters.consumed += 1
        result = IngestResult()
        decoded = decode_source_event(value, source, now_ms, self._decoder_config)
        if isinstance(decoded, DeadLetter):
            result.dead.append(
                self._dead_record(decoded, topic, partition, offset, key, value, now_ms)
            )
            return self._finish(result, now_ms)

        self.watermark = max(self.watermark, decoded.occurred_at)
        if self.dedupe.seen(source, decoded.event_id, decoded.occurred_at):
            result.duplicate = True
            self.counters.duplicates += 1
            return self._finish(result, now_ms)

        customer_id = decoded.customer_id
        if customer_id is None:
            customer_id = self.resolver.resolve(decoded.aliases())
            if customer_id is None:
                item = {
                    "event": decoded.to_record(),
                    "origin": self._dead_record(
                        _UNRESOLVED, topic, partition, offset, key, value, 0
                    ),
                }
                evicted = self.resolver.hold(decoded.aliases(), item, now=self.watermark)
                result.held = True
                self._dead_evictions(result, evicted, now_ms)
                return self._finish(result, now_ms)
            result.accepted.append(decoded.to_canonical(customer_id, now_ms))
            return self._finish(result, now_ms)

        # Released events were consumed earlier, so they go out before the linking event.
        for kind, alias in _links_in(decoded):
            for release in self.resolver.link(
                kind, alias, customer_id, event_time=decoded.occurred_at, event_id=decoded.event_id
            ):
                event = DecodedEvent.from_record(release.event.item["event"])
                result.accepted.append(event.to_canonical(release.customer_id, now_ms))
        result.accepted.append(decoded.to_canonical(customer_id, now_ms))
        if decoded.event_type == "customer_erased":
            forgotten = self.resolver.forget(customer_id, decoded.aliases())
            self.counters.erased += len(forgotten.held)
        return self._finish(result, now_ms)

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

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state of the stage: identity, dedupe and watermark."""
        return {
            "identity": self.resolver.snapshot(),
            "dedupe": self.dedupe.snapshot(),
            "watermark": self.watermark,
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any], config: IngestionConfig | None = None) -> Ingestion:
        """Rebuild from `snapshot()` output (counters start again at zero, held included)."""
        config = config or IngestionConfig()
        resolver = IdentityResolver.restore(
            snapshot["identity"],
            max_held=config.max_held,
            max_hold_ms=config.max_hold_ms,
            track_changes=True,
        )
        dedupe = Dedupe.restore(
            snapshot["dedupe"], config.dedupe_max_entries, config.dedupe_horizon_ms
        )
        ingestion = cls(config, resolver=resolver, dedupe=dedupe)
        ingestion.watermark = max(ingestion.watermark, int(snapshot["watermark"]))
        # Restored held events were consumed by an earlier incarnation: count them as consumed
        # here too, so the invariant keeps holding when they are released or evicted.
        ingestion.counters.consumed = ingestion.counters.held
        return ingestion

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
        """Dead letter of an evicted event, from the origin captured when it was held."""
        record = dict(held.item["origin"])
        record.update(
            reason=str(Reason.UNRESOLVED_IDENTITY),
            message=why,
            event_id=held.item["event"]["event_id"],
            dead_lettered_at=now_ms,
        )
        return record

    def _dead_record(
        self,
        letter: DeadLetter,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        now_ms: int,
    ) -> dict[str, Any]:
        return letter.to_record(
            topic,
            partition,
            offset,
            key,
            value,
            now_ms,
            max_value_bytes=self.config.max_dead_letter_value_bytes,
        )


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
