"""The scoring stage: customer-events in; state, score changes, alerts, training examples out.

Runs on the transactional `BatchProcessor`. Per batch and partition it groups the records by
customer, so each customer is updated, scored, written to the changelog and emitted at most
once per batch (coalescing), then resolves the delayed labels that the partition's event-time
watermark made due for customers who sent nothing. The pure work is `ScoringEngine` and
`AlertRules` from models/; this module only decodes, looks up and emits.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Message

from models.scoring.alerts import AlertBudget, AlertRules
from models.scoring.engine import BatchOutcome, ScoringEngine
from models.scoring.labels import DueIndex
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from models.scoring.tiers import ValueHistogram
from schemas.decode import Reason
from streams.metrics import Metrics
from streams.runtime.stage import Output, StageHandler, dead_letter
from streams.runtime.stores import StoreClosed
from streams.runtime.tables import Table
from streams.stages.erasure import ErasureConfirmations
from streams.stages.learner import HISTOGRAM_PREFIX, RISK_PREFIX

log = logging.getLogger(__name__)


SYSTEMIC_FAILURES = 20
"""Customers of one batch the core may fail on before the stage stops instead: when it fails
for more than this many and for more than half of them, the fault is the core's or a model's
(a bad published bundle, say), not the data's, and dead-lettering the batch would only hide it."""


class CoreError(Exception):
    """The pure scoring core (state, engine, alert rules, serialisation) raised on one
    customer's data; the store and Kafka are not involved."""


def _at_risk(card: Scorecard | None) -> float | None:
    """A scorecard's value at risk, None for none."""
    return None if card is None else card.value_at_risk


@dataclass(frozen=True)
class ScoringTopics:
    """Where the scoring stage writes."""

    score_changes: str
    alerts: str
    training_examples: str
    dead_letters: str


@dataclass
class Aggregates:
    """Running totals over one partition's latest scorecards (for management's gauges)."""

    customers: int = 0
    completeness_sum: float = 0.0
    revenue_12m_sum: float = 0.0
    tiers: dict[str, int] = field(default_factory=dict)

    def replace(self, old: Scorecard | None, new: Scorecard | None) -> None:
        """Swap one customer's previous scorecard for its new one (None = absent)."""
        tiers = self.tiers
        if old is not None:
            self.customers -= 1
            self.completeness_sum -= old.data_completeness
            self.revenue_12m_sum -= old.revenue_12m
            tiers[old.tier] = tiers.get(old.tier, 0) - 1
        if new is not None:
            self.customers += 1
            self.completeness_sum += new.data_completeness
            self.revenue_12m_sum += new.revenue_12m
            tiers[new.tier] = tiers.get(new.tier, 0) + 1


LIVE_BYTES_PER_SNAPSHOT_BYTE = 24
"""Resident bytes of a live state per byte of its snapshot, rounded up from what was
measured: ~14 for customers with a few events a week, ~23 for one active every day."""


class LiveStates:
    """The most recently used customers' live `CustomerState` objects, beside the store.

    Restoring a state from its bytes costs more than scoring it, and a restored state has to
    rebuild its running window sums; a customer seen again soon skips both. The store stays
    the source of truth: entries are only ever the state as last written to it in this
    batch or an earlier one, and a partition's entries go when the partition does (also
    after an aborted transaction, which rebuilds the stores).

    Bounded by count and by an estimate of their memory (snapshot bytes times
    `LIVE_BYTES_PER_SNAPSHOT_BYTE`): a customer with a year of daily activity costs several times
    one who visits weekly.

    Once full, only every `ADMIT_EVERY`-th miss (whoever it belongs to) is admitted
    (bimodal insertion), while hits always stay. Plain LRU thrashes when more customers come
    back than it holds (a campaign reaching every customer, a steady round of 20,000 with
    room for 10,000): every lookup misses and every miss evicts, so the cache keeps states
    alive just long enough for the garbage collector to scan them, and scoring cost more than
    with no cache at all (~180 against ~145 us per event, in process). With bimodal
    insertion the cache keeps part of such a round (~47 % hits when twice as many come back
    as fit, ~20 % at four times) and still fills with a hot set, more slowly. A state larger
    than the whole memory budget is never admitted.
    """

    ADMIT_EVERY = 16

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        """0: bounded by count only."""
        self.bytes = 0
        self._declined = 0  # misses not admitted since the last admission while full
        self.hits = 0
        self.misses = 0
        # customer id -> (partition, state, estimated bytes), least recently used first
        self._states: OrderedDict[str, tuple[int, CustomerState, int]] = OrderedDict()

    def get(self, partition: int, customer_id: str) -> CustomerState | None:
        """The live state of a customer of `partition`, or None when it is not cached."""
        entry = self._states.get(customer_id)
        if entry is None or entry[0] != partition:
            if self.capacity > 0:
                self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end(customer_id)
        return entry[1]

    def put(self, partition: int, state: CustomerState, snapshot_bytes: int) -> None:
        """Remember a state just written to the store as `snapshot_bytes` bytes; when full,
        admit only every `ADMIT_EVERY`-th miss, evicting the least recently used."""
        if self.capacity <= 0:
            return
        cid = state.customer_id
        size = snapshot_bytes * LIVE_BYTES_PER_SNAPSHOT_BYTE
        if self.max_bytes and size > self.max_bytes:
            self.discard(cid)
            return
        if cid not in self._states and (len(self._states) >= self.capacity or (
                self.max_bytes and self.bytes + size > self.max_bytes)):
            self._declined += 1
            if self._declined < self.ADMIT_EVERY:
                return
            self._declined = 0
        self.discard(cid)
        self._states[cid] = (partition, state, size)
        self.bytes += size
        limit = self.max_bytes or float("inf")
        while len(self._states) > self.capacity or (self.bytes > limit and self._states):
            self.discard(next(iter(self._states)))

    def discard(self, customer_id: str) -> None:
        """Forget one customer (erased)."""
        entry = self._states.pop(customer_id, None)
        if entry is not None:
            self.bytes -= entry[2]

    def drop_partition(self, partition: int) -> None:
        """Forget every customer of a partition that left this worker."""
        for cid in [c for c, entry in self._states.items() if entry[0] == partition]:
            self.discard(cid)

    def __len__(self) -> int:
        return len(self._states)


class ScoringHandler(StageHandler):
    """StageHandler of the scoring stage (one per worker; state per owned partition)."""

    def __init__(self, engine: ScoringEngine, rules: AlertRules, topics: ScoringTopics,
                 metrics: Metrics | None = None, histogram_interval_s: float = 10.0,
                 allowed_lateness_ms: int = 400 * 86_400_000,
                 live_states: int = 0, live_states_bytes: int = 0) -> None:
        self.engine = engine
        self.live = LiveStates(live_states, live_states_bytes)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.metrics = metrics or Metrics()
        self.aggregates: dict[int, Aggregates] = {}
        self.rules = rules
        self.topics = topics
        self.histogram_interval_s = histogram_interval_s
        self.due: dict[int, DueIndex] = {}
        self.watermark: dict[int, int] = {}
        self.histograms: dict[int, ValueHistogram] = {}
        self.risks: dict[int, ValueHistogram] = {}
        """Per partition: the customers' values at risk (for the learner's alert cut)."""
        self.budgets: dict[int, AlertBudget] = {}
        """Per partition: alerts fired in the budget's window (derived: starts afresh when a
        partition is assigned)."""
        self._histogram_sent: dict[int, float] = {}
        self.erasures: ErasureConfirmations | None = None
        """Confirms erasures (streams/stages/erasure.py); set by the pipeline."""
        self._changes = 0
        """Score changes of the batch being handled (counted in the metric once per batch)."""
        self._oldest_ingest = 0
        self._watermarks: list[int] = []
        """Of the batch in hand (all its partitions), observed once it has committed."""

    # -- partition lifecycle ---------------------------------------------------------------

    def on_assigned(self, partition: int, table: Table) -> None:
        """Rebuild the partition's due index and watermark from its restored states."""
        index, watermark, items, histogram = DueIndex(), 0, [], ValueHistogram()
        risk = ValueHistogram()
        aggregates = Aggregates()
        for _key, raw in table.items(partition):
            state = CustomerState.restore(raw, self.engine.config)
            items.append((state.customer_id, list(state.due_times())))
            if state.last_ms is not None:
                watermark = max(watermark, state.last_ms)
            if state.last:
                card = Scorecard.from_row(state.last)
                histogram.add(card.ltv_predicted_12m)
                risk.replace(None, _at_risk(card))
                aggregates.replace(None, card)
        index.rebuild(items)
        self.due[partition] = index
        self.watermark[partition] = watermark
        self.histograms[partition] = histogram
        self.risks[partition] = risk
        self.budgets[partition] = self.rules.budget()
        self.aggregates[partition] = aggregates
        self._histogram_sent[partition] = 0.0

    def on_revoked(self, partition: int) -> None:
        """Forget what was derived from a partition this worker no longer owns (also when a
        transaction aborted: the batch in hand is then read again)."""
        self._oldest_ingest, self._watermarks = 0, []
        self.due.pop(partition, None)
        self.watermark.pop(partition, None)
        self.histograms.pop(partition, None)
        self.risks.pop(partition, None)
        self.budgets.pop(partition, None)
        self.aggregates.pop(partition, None)
        self._histogram_sent.pop(partition, None)
        self.live.drop_partition(partition)

    # -- processing ------------------------------------------------------------------------

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Coalesce the batch per customer, score each once, then resolve due labels."""
        by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        messages_of: dict[str, list[Message]] = defaultdict(list)
        watermark = self.watermark.get(partition, 0)
        oldest_ingest = self._oldest_ingest  # over the whole batch, all its partitions
        dead = 0
        for msg in messages:
            try:
                event = orjson.loads(msg.value() or b"")
                customer_id = event["customer_id"]
                occurred_at = int(event["occurred_at"])
                if not isinstance(customer_id, str):
                    raise TypeError(f"customer_id is {type(customer_id).__name__}, not a string")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                self._dead_letter(msg, out, Reason.SCHEMA_VIOLATION,
                                  f"undecodable customer event: {err}")
                dead += 1
                continue
            if occurred_at < watermark - self.allowed_lateness_ms:
                dead += 1
                self._dead_letter(msg, out, Reason.TOO_LATE,
                                  f"event time is {(watermark - occurred_at) // 86_400_000} days "
                                  f"behind the partition's watermark (allowed lateness "
                                  f"{self.allowed_lateness_ms // 86_400_000} days)")
                continue
            by_customer[customer_id].append(event)
            messages_of[customer_id].append(msg)
            if occurred_at > watermark:
                watermark = occurred_at
            ingested_at = event.get("ingested_at", 0)
            if (ingested_at and isinstance(ingested_at, int)
                    and (not oldest_ingest or ingested_at < oldest_ingest)):
                oldest_ingest = ingested_at
        self.watermark[partition] = watermark
        self._changes = 0
        duplicates = failed = 0
        for customer_id, events in by_customer.items():
            try:
                duplicates += self._score(partition, customer_id, events, watermark, table, out)
            except CoreError as err:  # one customer's content must never stop the worker
                failed += 1
                if failed > SYSTEMIC_FAILURES and failed * 2 > len(by_customer):
                    raise RuntimeError(
                        f"scoring core failed for {failed} of {len(by_customer)} customers of "
                        f"one batch (last: {err}): a fault of the core or its models, not of "
                        f"the data; stopping without committing") from err
                dead_now, duplicates_now = self._quarantine(
                    partition, customer_id, events, messages_of[customer_id], watermark, table,
                    out, err)
                dead += dead_now
                duplicates += duplicates_now
        self._oldest_ingest = oldest_ingest
        self._watermarks.append(watermark)
        # Scored work only: dead letters and redeliveries are counted as such.
        self.metrics.events_processed.inc(len(messages) - dead - duplicates)
        if duplicates:
            self.metrics.duplicates.labels("customer-events").inc(duplicates)
        self._resolve_due(partition, watermark, table, out, skip=by_customer.keys())
        if self._changes:
            self.metrics.score_changes.inc(self._changes)
        self._send_histogram(partition, out)

    def committed(self) -> None:
        """The batch's transaction committed: its outputs are visible downstream now.

        Observed once per batch (per-event observations would cost more than a customer's
        scoring): the batch's oldest event bounds the ingest-to-commit latency of all of them,
        and each partition's watermark gives its event-time lag.
        """
        now = time.time()
        if self._oldest_ingest:
            self.metrics.processing_latency.observe(max(0.0, now - self._oldest_ingest / 1000))
        for watermark in self._watermarks:
            self.metrics.event_time_lag.observe(max(0.0, now - watermark / 1000))
        self._oldest_ingest, self._watermarks = 0, []

    def idle(self, table: Table, out: Output) -> None:
        """Nothing arrived, so no event time passed; only keep the learner's tiers fresh."""
        for partition in list(self.histograms):
            self._send_histogram(partition, out)

    def _send_histogram(self, partition: int, out: Output) -> None:
        """Share this partition's predicted-value histogram with the learner (for tiers)."""
        now = time.monotonic()
        histogram = self.histograms.get(partition)
        if histogram is None or now - self._histogram_sent.get(partition, 0.0) < (
                self.histogram_interval_s):
            return
        self._histogram_sent[partition] = now
        out.send(self.topics.training_examples, HISTOGRAM_PREFIX + str(partition).encode(),
                 histogram.snapshot())
        out.send(self.topics.training_examples, RISK_PREFIX + str(partition).encode(),
                 self._risk(partition).snapshot())

    def scorecard(self, table: Table, partition: int, customer_id: str) -> Scorecard | None:
        """The customer's scorecard as of the partition's watermark (None if unknown here).

        Called from the web thread while the processing thread may drop the partition:
        raises `StoreClosed` when the store went away before or during the read.
        """
        store = table.stores.get(partition)
        if store is None:
            raise StoreClosed(f"partition {partition} is not restored here")
        raw = store.get(customer_id.encode())
        if raw is None:
            if table.stores.get(partition) is not store:  # dropped (and emptied) meanwhile
                raise StoreClosed(f"partition {partition} left while being read")
            return None
        state = CustomerState.restore(raw, self.engine.config)
        as_of = max(self.watermark.get(partition, 0), state.last_ms or 0)
        return self.engine.score(state, as_of)

    # -- internals -------------------------------------------------------------------------

    def _score(self, partition: int, customer_id: str, events: list[dict[str, Any]],
               watermark: int, table: Table, out: Output) -> int:
        """Apply, score and emit one customer's events of the batch; returns how many of them
        were redeliveries of events the state already holds. Raises `CoreError` when the pure
        core fails on them (the store and the outputs are then untouched); anything else
        (the store, Kafka) propagates and stops the stage."""
        state = self._load(table, partition, customer_id)
        try:
            due = state.next_due() if state is not None else None
            outcome = self.engine.apply_batch(state, events, watermark, customer_id)
        except Exception as err:
            raise CoreError(f"{type(err).__name__}: {err}") from err
        self._emit(partition, outcome, table, out, due)
        if outcome.erased and self.erasures is not None:
            self.erasures.confirm(customer_id, events, state is not None, out)
        return outcome.duplicates

    def _load(self, table: Table, partition: int, customer_id: str) -> CustomerState | None:
        """The customer's live state, else restored from the store (None: unknown). A store
        failure propagates; a snapshot the core cannot restore raises `CoreError`."""
        state = self.live.get(partition, customer_id)
        if state is not None:
            return state
        raw = table.get(partition, customer_id.encode())
        if raw is None:
            return None
        try:
            return CustomerState.restore(raw, self.engine.config)
        except Exception as err:
            raise CoreError(f"{type(err).__name__}: {err}") from err

    def _quarantine(self, partition: int, customer_id: str, events: list[dict[str, Any]],
                    messages: list[Message], watermark: int, table: Table, out: Output,
                    error: CoreError) -> tuple[int, int]:
        """The core raised on one customer's events: find the culprits, dead-letter them.

        The live object may be half-updated, so it goes; the store still holds the state as
        it was before the batch. Each event is then tried alone on the stored state: those
        that score are kept (written like any batch), those that raise are dead-lettered as
        `processing_error` with the exception and their own original bytes. Returns how many
        events were dead-lettered, and how many were redeliveries.
        """
        self.live.discard(customer_id)
        log.error("scoring: customer %r: %s; trying its %d events one by one",
                  customer_id, error, len(events))
        dead = duplicates = 0
        for event, msg in zip(events, messages, strict=True):
            try:
                duplicates += self._score(partition, customer_id, [event], watermark, table, out)
            except CoreError as err:
                self.live.discard(customer_id)
                self.metrics.processing_errors.labels("scoring").inc()
                log.error("scoring: event at %s[%d]@%s of customer %r quarantined: %s",
                          msg.topic(), msg.partition(), msg.offset(), customer_id, err)
                self._dead_letter(msg, out, Reason.PROCESSING_ERROR, f"scoring stage: {err}")
                dead += 1
        return dead, duplicates

    def _resolve_due(self, partition: int, watermark: int, table: Table, out: Output,
                     skip: Any) -> None:
        index = self.due.get(partition)
        if index is None:
            return
        for customer_id in index.pop_due(watermark):
            if customer_id in skip:
                continue
            try:
                state = self._load(table, partition, customer_id)
                if state is None:
                    continue
                try:
                    due = state.next_due()
                    outcome = self.engine.resolve_due(state, watermark)
                except Exception as err:
                    raise CoreError(f"{type(err).__name__}: {err}") from err
                self._emit(partition, outcome, table, out, due)
            except CoreError as err:  # no event to quarantine: keep the stored state
                self.live.discard(customer_id)
                self.metrics.processing_errors.labels("scoring").inc()
                log.error("scoring: resolving due labels of customer %r failed (%s); its "
                          "state stays as it was", customer_id, err)

    def _emit(self, partition: int, outcome: BatchOutcome, table: Table, out: Output,
              due_before: int | None) -> None:
        """Write the outcome's state and records; `due_before` is the customer's next due
        time before this batch (already in the due index). Raises `CoreError`, with nothing
        written or sent, when the alert rules or the serialisation fail."""
        key = outcome.customer_id.encode()
        now_ms = int(time.time() * 1000)
        if outcome.erased or outcome.state is None:
            # Tombstones: compaction then forgets the customer on both compacted topics.
            previous = outcome.previous_scorecard
            self._histogram(partition).replace(
                previous.ltv_predicted_12m if previous else None, None)
            self._risk(partition).replace(_at_risk(previous), None)
            self._aggregates(partition).replace(previous, None)
            table.delete(partition, key)
            self.live.discard(outcome.customer_id)
            out.send(self.topics.score_changes, key, None)
            return
        # Every record is serialised before anything is written or sent, so a customer whose
        # outcome cannot be serialised leaves the store and the batch's outputs untouched.
        try:
            # Both keep their memory (alert arming, the last reported values) in the state.
            aggregates = self._aggregates(partition)
            budget = self.budgets.get(partition)
            if budget is None:
                budget = self.budgets[partition] = self.rules.budget()
            alerts = self.rules.on_outcome(outcome, self.engine.bundle.tiers.at_risk_from,
                                           budget, max(aggregates.customers, 1))
            changed = self.rules.score_changes(outcome)
            snapshot = outcome.state.snapshot()
            dumps = orjson.dumps
            examples = [(example.model, dumps(example.to_dict()))
                        for example in outcome.training_examples]
            card = outcome.scorecard
            change = alert_records = None
            if card is not None:
                if changed:
                    body = card.to_dict()
                    change = dumps({
                        "customer_id": card.customer_id, "changed": changed, "scorecard": body,
                        "trigger_event_id": outcome.last_event_id,
                        "model_versions": body["model_versions"],
                        "event_time": card.as_of, "emitted_at": now_ms,
                    })
                alert_records = [(alert.alert_type, dumps(alert.to_record(emitted_at=now_ms)))
                                 for alert in alerts]
        except Exception as err:
            raise CoreError(f"{type(err).__name__}: {err}") from err
        table.put(partition, key, snapshot)
        self.live.put(partition, outcome.state, len(snapshot))
        if outcome.next_due is not None and outcome.next_due != due_before:
            # Only a new due time: pushing an unchanged one on every batch would grow the index
            # by one entry per customer and batch until the label resolves (30+ days).
            self.due.setdefault(partition, DueIndex()).push(outcome.next_due, outcome.customer_id)
        for model, value in examples:
            out.send(self.topics.training_examples, key, value)
            self.metrics.examples.labels(model).inc()
        if card is None:
            return
        previous = outcome.previous_scorecard
        self._histogram(partition).replace(
            previous.ltv_predicted_12m if previous else None, card.ltv_predicted_12m)
        before, at_risk = _at_risk(previous), card.value_at_risk
        if before != at_risk:
            self._risk(partition).replace(before, at_risk)
        aggregates.replace(previous, card)
        if change is not None:
            out.send(self.topics.score_changes, key, change)
            self._changes += 1
        for alert_type, value in alert_records or ():
            out.send(self.topics.alerts, key, value)
            self.metrics.alerts.labels(alert_type).inc()

    def _risk(self, partition: int) -> ValueHistogram:
        risk = self.risks.get(partition)
        if risk is None:
            risk = self.risks[partition] = ValueHistogram()
        return risk

    def _histogram(self, partition: int) -> ValueHistogram:
        histogram = self.histograms.get(partition)
        if histogram is None:
            histogram = self.histograms[partition] = ValueHistogram()
        return histogram

    def _aggregates(self, partition: int) -> Aggregates:
        aggregates = self.aggregates.get(partition)
        if aggregates is None:
            aggregates = self.aggregates[partition] = Aggregates()
        return aggregates

    def _dead_letter(self, msg: Message, out: Output, reason: Reason, message: str) -> None:
        out.send(self.topics.dead_letters, msg.key(),
                 orjson.dumps(dead_letter(msg, reason, message)))
        self.metrics.dead_letters.labels(reason.value).inc()
