"""Ingest stage (stage 1): raw source records in; customer events, identity messages and dead
letters out.

The handler is thin on purpose: it hands each record's bytes to `Ingestion.route` (decode,
validate, de-duplicate) and sends what comes back. Events that carry a customer id go straight
to customer-events keyed by that id. Alias-only events, and every identity link or erasure an
event carries, go to the identity topic keyed by their alias key, where the identity stage
(`streams/stages/identity.py`, stage 2) owns that alias's link and the events waiting for it.

It runs on the transactional `BatchProcessor` (not a Faust stream: see docs/architecture.md),
so a batch's outputs and its consumed offsets commit together: a crash neither loses nor
re-emits ingested events. De-duplication memory is per worker and in memory; a redelivery that
reaches another worker after a rebalance is dropped by the scoring stage's per-customer check.

Event time for the identity stage's hold bound: every identity message carries this worker's
watermark (highest accepted `occurred_at`), and once a second, when it advanced, a `tick` goes
to every identity partition so events held on a quiet partition still age out.
"""

from __future__ import annotations

import logging
import time

import orjson
from confluent_kafka import Message

from models.config import ScoringConfig
from models.ingest.routing import Ingestion, IngestionConfig, Routed, tick_message
from schemas.decode import Origin, Reason
from streams.metrics import Metrics
from streams.runtime.alignment import Aligner, Held, Record
from streams.runtime.stage import CaughtUp, Counting, Output, StageHandler, dead_letter
from streams.runtime.tables import Table
from streams.settings import Settings

__all__ = ["TICK_INTERVAL_S", "IngestHandler", "ingestion_config"]

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0
"""Wall-clock interval of the watermark ticks to the identity partitions."""

IDLE_AFTER_S = 2.0
"""With the identity merge: how long a source partition with nothing left to read is not
taken for done after this worker's sources came to life or were assigned (its records may
still be on their way from the producer: `max.task.idle.ms` in Kafka Streams), and how long
all of them must have had nothing to read before the ticks call them idle (they then hold
nobody back: the end of a backfill goes out)."""



def ingestion_config(settings: Settings, scoring: ScoringConfig | None = None) -> IngestionConfig:
    """Ingestion bounds from the worker's settings; currencies from the scoring core's rates.

    An amount in a currency without a rate could not be converted to the base currency, so it
    is dead-lettered as `unknown_currency` here rather than miscounted later. Pass the scoring
    stage's own `ScoringConfig` once it is configurable, so both stages use one rate table.
    """
    scoring = scoring or ScoringConfig()
    return IngestionConfig(
        max_event_bytes=settings.max_event_bytes,
        max_amount=settings.max_amount,
        currencies=frozenset(scoring.fx_rates) | {scoring.base_currency},
        max_held=settings.identity.max_held,
        max_hold_ms=settings.identity.max_hold_ms,
    )


class IngestHandler(StageHandler):
    """StageHandler of the ingest stage (stateless but for de-duplication memory)."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 scoring: ScoringConfig | None = None,
                 config: IngestionConfig | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ingestion = Ingestion(config or ingestion_config(settings, scoring))
        self.source_of = {topic: source for source, topic in settings.source_topics.items()}
        self.customer_events = settings.topics["customer_events"]
        self.identity = settings.topics["identity"]
        self.dead_letters = settings.topics["dead_letters"]
        self._ticked_watermark = 0
        self._ticked_at = 0.0
        self._ticked_progress: tuple[dict[tuple[str, int], int], set[tuple[str, int]]] | None = (
            None)
        self._quiet_since: float | None = time.monotonic()
        """Since when every source partition has had nothing left to read (monotonic s)."""
        self._busy_since = time.monotonic()
        """Since when the sources have had records to read after a quiet spell."""
        self._children: dict[tuple[str, ...], Counting] = {}
        self.aligner = Aligner(int(settings.max_source_skew_s * 1000),
                               wait_s=settings.source_idle_s,
                               max_held=settings.align_max_held) if settings.align_sources else None
        # Identity messages go out when released: stamped with their own event time, and
        # ticks carry the released watermark, so the identity stage's clock follows what has
        # gone out, not what has been read ahead.
        self.ingestion.stamp_event_time = self.aligner is not None

    def on_assigned(self, partition: int, table: Table) -> None:
        """Nothing to restore: ingest keeps no table."""

    def on_revoked(self, partition: int) -> None:
        """Forget the partition's de-duplication memory (it is also called before records are
        read again after an aborted transaction, which must not count them as duplicates)."""
        self.ingestion.forget_partition(partition)

    # -- event-time alignment (streams/runtime/alignment.py): optional StageHandler hooks --

    def pace_inputs(self, inputs: list[tuple[str, int]]) -> None:
        """New source partitions hold the others back until they deliver (or the aligner's
        `wait_s` passes)."""
        if self.aligner is not None:
            now = time.monotonic()
            self.aligner.assigned(inputs, now)
            self._busy_since = now  # the new partitions' records may be on their way

    def release_input(self, topic: str, partition: int) -> None:
        """A source partition left (or will be re-read): drop the records it held."""
        if self.aligner is not None:
            self.aligner.forget((topic, partition))

    def finish(self, table: Table, out: Output,
               caught_up: CaughtUp) -> None:
        """After a batch: send what the slowest partition with a backlog allows
        (`caught_up()`: the partitions with nothing left to read). A caught-up partition
        that would hold records back otherwise is confirmed caught up with the broker first:
        records produced to it before the others' were may not have reached the client's
        view of its end yet. Then the identity partitions' tick, after what went out."""
        if self.aligner is not None:
            now = time.monotonic()
            done = caught_up()
            # With the identity merge every caught-up partition binds: its tick says it has
            # gone out up to the release (`_tick`), which must not rest on a stale end.
            binding = done if self.settings.identity.merge else self.aligner.binding(now, done)
            if binding:
                done = caught_up(binding)
            out.records.extend(self.aligner.release(now, done))
            for counter, amount in self.aligner.take_counts():
                out.count(counter, amount)
            self._tick(out, done)

    def positions(self) -> dict[tuple[str, int], int] | None:
        """Offsets to commit: up to the first record still held, per partition that moved
        (None without alignment: everything handled is done)."""
        return self.aligner.positions() if self.aligner is not None else None

    def pause_resume(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Partitions to pause (holding many records: running ahead) and to resume (their
        held records went out)."""
        return self.aligner.pause_resume() if self.aligner is not None else ([], [])

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Route every record of one source partition's batch."""
        now_ms = int(time.time() * 1000)
        topic = messages[0].topic() or ""
        source = self.source_of[topic]
        route = self.ingestion.route
        dumps = orjson.dumps
        send = out.records.append  # (topic, key, value, partition), as Output.send queues it
        aligner = self.aligner
        if aligner is not None:
            tp = (topic, partition)
            records: list[Record] = []
            send = records.append
        batch: dict[Counting, float] = {}  # without alignment the batch's counts, summed
        for msg in messages:
            key = msg.key()
            quarantined = False
            try:
                routed = route(Origin(topic, partition, msg.offset(), key, msg.value()), source,
                               now_ms)
            except Exception as err:  # route never raises by contract; if it does, quarantine
                routed = self._quarantine(msg, source, now_ms, err)
                quarantined = True
            for event in routed.accepted:
                send((self.customer_events, event["customer_id"].encode(), dumps(event), None))
            for alias_key, message in routed.identity:
                send((self.identity, alias_key.encode(), dumps(message), None))
            for dead in routed.dead:
                send((self.dead_letters, key, dumps(dead), None))
            counts = self._record_counts(source, routed, quarantined)
            if aligner is not None:
                # An alias-only event goes to the identity stage with its own event time:
                # it must wait its turn like any other, or it would overtake its link. Its
                # counts wait with it, so they count once its offset commits.
                aligner.add(tp, Held(msg.offset() or 0, routed.event_time, records, counts))
                records = []
                send = records.append
            else:
                for counter, amount in counts:
                    batch[counter] = batch.get(counter, 0) + amount
        for counter, amount in batch.items():
            out.count(counter, amount)
        if aligner is None:  # else after the release (`finish`)
            self._tick(out)

    def _record_counts(self, source: str, routed: Routed, quarantined: bool
                       ) -> list[tuple[Counting, float]]:
        """What one routed record counts: consumed, ingested by type, dead letters by reason,
        duplicates, quarantined."""
        child = self._child
        counts: list[tuple[Counting, float]] = [(child("consumed", source), 1)]
        counts += [(child("ingested", source, e["event_type"]), 1) for e in routed.accepted]
        counts += [(child("dead", dead["reason"]), 1) for dead in routed.dead]
        if routed.duplicate:
            counts.append((child("duplicates", source), routed.duplicate))
        if quarantined:
            counts.append((child("errors", "ingest"), 1))
        return counts

    def _child(self, kind: str, *labels: str) -> Counting:
        """The labelled counter of one kind of count (looked up once, then kept)."""
        key = (kind, *labels)
        child = self._children.get(key)
        if child is None:
            m = self.metrics
            counter = {"consumed": m.events_consumed, "ingested": m.events_ingested,
                       "dead": m.dead_letters, "duplicates": m.duplicates,
                       "errors": m.processing_errors}[kind]
            child = self._children[key] = counter.labels(*labels)
        return child

    def _quarantine(self, msg: Message, source: str, now_ms: int, error: Exception) -> Routed:
        """A record the routing core raised on: its `processing_error` dead letter."""
        log.error("ingest: record at %s[%d]@%s quarantined: %s: %s", msg.topic(),
                  msg.partition(), msg.offset(), type(error).__name__, error)
        routed = Routed()
        routed.dead.append(dead_letter(msg, Reason.PROCESSING_ERROR,
                                       f"ingest stage: {type(error).__name__}: {error}", now_ms))
        return routed

    def idle(self, table: Table, out: Output) -> None:
        """Keep the identity partitions' clocks moving while sources are quiet (with
        alignment, `finish` does)."""
        if self.aligner is None:
            self._tick(out)

    def _tick(self, out: Output, caught_up: set[tuple[str, int]] | None = None) -> None:
        """Tick every identity partition: once a second when the watermark moved; with the
        identity merge, also in the batch whose release moved a source partition on (so no
        progress is lost to a rebalance before the next interval), and every second
        regardless (an identity partition taken over learns from it)."""
        aligner = self.aligner
        watermark = aligner.released_time if aligner is not None else self.ingestion.watermark
        now = time.monotonic()
        marks: dict[tuple[str, int], int] | None = None
        idle: set[tuple[str, int]] = set()
        waiting: set[tuple[str, int]] = set()
        if self.settings.identity.merge and aligner is not None:
            # How far each source partition has gone out, before this tick. One with nothing
            # left to read is taken to be as far as the release only once the sources have
            # been busy for IDLE_AFTER_S; once all of them have had nothing to read that
            # long, they are idle: they hold nobody back (the end of a backfill).
            done = caught_up or set()
            if aligner.count or set(aligner.held) - done:
                if self._quiet_since is not None:
                    self._busy_since = now
                    self._quiet_since = None
            elif self._quiet_since is None:
                self._quiet_since = now
            quiet = self._quiet_since is not None and now - self._quiet_since >= IDLE_AFTER_S
            marks = aligner.progress(done, quiet or now - self._busy_since >= IDLE_AFTER_S)
            if quiet:
                idle = set(marks)
            waiting = set(aligner.held) - set(marks)
            if (marks, idle) == self._ticked_progress and now - self._ticked_at < TICK_INTERVAL_S:
                return
            self._ticked_progress = (marks, idle)
        elif now - self._ticked_at < TICK_INTERVAL_S or watermark <= self._ticked_watermark:
            return
        tick = orjson.dumps(tick_message(watermark, marks, idle, waiting))
        for partition in range(self.settings.partitions):
            out.send(self.identity, None, tick, partition)
        self._ticked_watermark, self._ticked_at = watermark, now
