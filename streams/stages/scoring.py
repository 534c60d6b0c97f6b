"""The scoring stage: customer-events in; state, score changes, alerts, attributions and
training examples out.

Runs on the transactional `BatchProcessor`. Per batch and partition it groups the records by
customer; each customer's events are applied and scored one by one in event-time order (the
alert rules see each scorecard), and its state is written to the changelog and its score
change emitted once per batch. Then it resolves, at their due times, the delayed labels that
the partition's event-time watermark passed for customers who sent nothing. The pure work is
`ScoringEngine` and `AlertRules` from models/; this module only decodes, looks up and emits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Message

from models.ingest.routing import MERGE_TICK_KEY
from models.scoring.aggregates import WHOLE_BASE, Aggregates, Segment
from models.scoring.alerts import AlertRules
from models.scoring.engine import BatchOutcome, ScoringEngine, event_order, timeline_time
from models.scoring.live import LiveStates, ScoringPartition
from models.scoring.merge import Merge
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from schemas.decode import Reason
from schemas.errors import ScorestreamError
from schemas.units import DAY_MS
from streams.metrics import Metrics
from streams.runtime.stage import Output, StageHandler, dead_letter
from streams.runtime.stores import StoreClosed
from streams.runtime.tables import Table
from streams.stages.erasure import ErasureConfirmations
from streams.stages.learner import BASE_PREFIX, HISTOGRAM_PREFIX, RISK_PREFIX

__all__ = ["SYSTEMIC_FAILURES", "CoreError", "ScoringHandler", "ScoringTopics"]

log = logging.getLogger(__name__)


SYSTEMIC_FAILURES = 20
"""Customers of one batch the core may fail on before the stage stops instead: when it fails
for more than this many and for more than half of them, the fault is the core's or a model's
(a bad published bundle, say), not the data's, and dead-lettering the batch would only hide it."""


@dataclass
class AggregatesRequest:
    """One reader's wait for a copy of the aggregates (`ScoringHandler.request_aggregates`)."""

    done: threading.Event = field(default_factory=threading.Event)
    result: dict[int, tuple[Aggregates, int]] | None = None


def _of_customer(customer_id: str) -> Callable[[tuple[dict[str, Any], Message]], bool]:
    """Whether a held (event, record) is the customer's."""
    return lambda item: item[0]["customer_id"] == customer_id


class CoreError(ScorestreamError):
    """The pure scoring core (state, engine, alert rules, serialisation) raised on one
    customer's data; the store and Kafka are not involved."""


@dataclass(frozen=True)
class ScoringTopics:
    """Where the scoring stage writes."""

    score_changes: str
    alerts: str
    training_examples: str
    dead_letters: str
    attributions: str


class ScoringHandler(StageHandler):
    """StageHandler of the scoring stage (one per worker; state per owned partition)."""

    def __init__(self, engine: ScoringEngine, rules: AlertRules, topics: ScoringTopics,
                 metrics: Metrics | None = None, histogram_interval_s: float = 10.0,
                 allowed_lateness_ms: int = 400 * DAY_MS,
                 live_states: int = 0, live_states_bytes: int = 0,
                 merge_partitions: int = 0, merge_max_held: int = 200_000) -> None:
        self.engine = engine
        self.merge_partitions = merge_partitions
        """With the identity merge: how many identity partitions tick (0: no merge)."""
        self.merge_max_held = merge_max_held
        self._moved: dict[int, str] = {}
        """Partitions read since the last `positions` (with the merge), and their topic."""
        self._merge_warned = -1e9
        self._held_before: dict[int, list[list[int]]] = {}
        """With the identity merge, per event let out (by id) in this batch: the positions of
        its identity partition's releases of the customer still held before it."""
        self.live = LiveStates(live_states, live_states_bytes)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.metrics = metrics or Metrics()
        self.rules = rules
        self.topics = topics
        self.histogram_interval_s = histogram_interval_s
        self.partitions: dict[int, ScoringPartition] = {}
        self._examples: dict[str, Any] = {}
        """What is derived from each owned partition (rebuilt when it is assigned)."""
        self.erasures: ErasureConfirmations | None = None
        """Confirms erasures (streams/stages/erasure.py); set by the pipeline."""
        self._changes = 0
        """Score changes of the batch being handled (counted in the metric once per batch)."""
        self._oldest_ingest = 0
        self._watermarks: list[int] = []
        """Of the batch in hand (all its partitions), observed once it has committed."""
        self._requests: list[AggregatesRequest] = []
        """Readers waiting for a copy of the aggregates (`request_aggregates`)."""
        self._requests_lock = threading.Lock()

    # -- partition lifecycle ---------------------------------------------------------------

    def on_assigned(self, partition: int, table: Table) -> None:
        """Rebuild what is derived from the partition from its restored states."""
        config = self.engine.config
        self.partitions[partition] = ScoringPartition.rebuild(
            (CustomerState.restore(raw, config) for _key, raw in table.items(partition)),
            self.rules.budget())

    def on_revoked(self, partition: int) -> None:
        """Forget what was derived from a partition this worker no longer owns (also when a
        transaction aborted: the batch in hand is then read again)."""
        self._oldest_ingest, self._watermarks = 0, []
        self.partitions.pop(partition, None)
        self.live.drop_partition(partition)
        self._moved.pop(partition, None)

    # -- processing ------------------------------------------------------------------------

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Group the batch per customer, score each customer's events, then resolve due
        labels. With the identity merge, the batch's events join the partition's held ones
        and those the identity stage's ticks let out are scored (`models/scoring/merge.py`)."""
        part = self._partition(partition)
        merge = self._merge(part)
        arrived: list[tuple[dict[str, Any], Message]] = []
        for msg in messages:
            if msg.key() == MERGE_TICK_KEY and self._merge_tick(msg, merge):
                continue
            try:
                event = orjson.loads(msg.value() or b"")
                customer_id = event["customer_id"]
                occurred_at = event["occurred_at"]
                if not isinstance(occurred_at, int) or isinstance(occurred_at, bool):
                    raise TypeError("occurred_at is not an integer (epoch ms)")
                if not isinstance(customer_id, str):
                    raise TypeError(f"customer_id is {type(customer_id).__name__}, not a string")
                if not isinstance(event.get("linked_at", 0), int):
                    raise TypeError("linked_at is not an integer")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                self._dead_letter(msg, out, Reason.SCHEMA_VIOLATION,
                                  f"undecodable customer event: {err}")
                continue
            # An event the identity stage released is exempt: its delay behind the watermark
            # is the identity detour's (in a backfill, ingest runs far ahead of it), not the
            # source's, and the identity stage bounds how long it holds an event.
            detoured = "identity_position" in event
            if occurred_at < part.watermark - self.allowed_lateness_ms and not detoured:
                self._dead_letter(msg, out, Reason.TOO_LATE,
                                  f"event time is {(part.watermark - occurred_at) // DAY_MS} days "
                                  f"behind the partition's watermark (allowed lateness "
                                  f"{self.allowed_lateness_ms // DAY_MS} days)")
                continue
            arrived.append((event, msg))
        if merge is not None:
            self._moved[partition] = messages[-1].topic() or ""
            merge.next_offset = (messages[-1].offset() or 0) + 1
            ready = self._hold(partition, merge, arrived)
        else:
            ready = arrived
        try:
            self._score_ready(partition, part, ready, table, out)
        finally:
            self._held_before.clear()

    # -- the identity merge (SCORESTREAM_IDENTITY_MERGE) -------------------------------------

    def _merge(self, part: ScoringPartition) -> Merge | None:
        """The partition's merge (None without the identity merge)."""
        if not self.merge_partitions:
            return None
        if part.merge is None:
            part.merge = Merge(self.merge_partitions)
        return part.merge

    @staticmethod
    def _merge_tick(msg: Message, merge: Merge | None) -> bool:
        """A record under the merge ticks' key: True when it is one (taken in when merging,
        skipped otherwise: a worker without the merge next to workers with it)."""
        try:
            tick = orjson.loads(msg.value() or b"")
            if not isinstance(tick, dict) or tick.get("op") != "tick":
                return False
            identity_partition, watermark = int(tick["identity_partition"]), int(tick["watermark"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        if merge is not None:
            merge.tick(identity_partition, watermark)
        return True

    def _hold(self, partition: int, merge: Merge, arrived: list[tuple[dict[str, Any], Message]]
              ) -> list[tuple[dict[str, Any], Message]]:
        """The arrived events join the held ones; what may go now, in order. An erasure goes
        at once, with the customer's held events before it (it erases them as well)."""
        early: list[tuple[dict[str, Any], Message]] = []
        for event, msg in arrived:
            if event.get("event_type") == "customer_erased":
                early += merge.take(_of_customer(event["customer_id"]))
                early.append((event, msg))
                continue
            position = event.get("identity_position")
            lane = (position[0] if isinstance(position, list) and position else None,
                    event["customer_id"])
            merge.add(lane, timeline_time(event), msg.offset() or 0, (event, msg),
                      position if lane[0] is not None else None)
        forced = merge.forced
        ready = early
        for item, before in merge.release(self.merge_max_held):
            ready.append(item)
            if before:
                self._held_before[id(item[0])] = before
        if merge.forced > forced:
            now = time.monotonic()
            if now - self._merge_warned >= 60:
                self._merge_warned = now
                log.warning("scoring partition %d holds more than %d events waiting for the "
                            "identity stage (its ticks say %s); %d went out without waiting "
                            "(SCORESTREAM_IDENTITY_MERGE_MAX_HELD)", partition,
                            self.merge_max_held, merge.marks, merge.forced)
        return ready

    def positions(self) -> dict[tuple[str, int], int] | None:
        """With the identity merge: per partition that moved, the offset of its first held
        event (the next to read when none is). None without: past every record."""
        if not self.merge_partitions:
            return None
        moved, self._moved = self._moved, {}
        out = {}
        for partition, topic in moved.items():
            part = self.partitions.get(partition)
            if part is None or part.merge is None or part.merge.next_offset is None:
                continue
            held = part.merge.position()
            out[(topic, partition)] = held if held is not None else part.merge.next_offset
        return out

    def _score_ready(self, partition: int, part: ScoringPartition,
                     ready: list[tuple[dict[str, Any], Message]], table: Table,
                     out: Output) -> None:
        """Score the events that may go (in order), and resolve the labels come due."""
        by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
        messages_of: dict[str, list[Message]] = defaultdict(list)
        watermark = part.watermark
        merged = part.merge is not None
        oldest_ingest = self._oldest_ingest  # over the whole batch, all its partitions
        for event, msg in ready:
            customer_id = event["customer_id"]
            by_customer[customer_id].append(event)
            messages_of[customer_id].append(msg)
            # Only ingest's own records move the clock. This partition's records from ingest
            # come from one worker, which merges the sources in event-time order; the identity
            # stage's come from every ingest worker, and one that reads further ahead than
            # this partition's would run the clock past events ingest has still to send
            # here: labels would resolve before them (docs/operations.md, "How alerts are
            # decided"). With the identity merge they come in order too, and move it.
            at = timeline_time(event)
            if at > watermark and (merged or "identity_position" not in event):
                watermark = at
            ingested_at = event.get("ingested_at", 0)
            if (ingested_at and isinstance(ingested_at, int)
                    and (not oldest_ingest or ingested_at < oldest_ingest)):
                oldest_ingest = ingested_at
        part.watermark = watermark
        self._changes = 0
        duplicates = failed = dead = 0
        for customer_id, events in by_customer.items():
            try:
                duplicates += self._score(partition, customer_id, events, watermark, table, out,
                                          messages_of[customer_id] if merged else None)
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
        # Scored work only: dead letters, redeliveries and held events are not.
        out.count(self.metrics.events_processed, len(ready) - dead - duplicates)
        if duplicates:
            out.count(self.metrics.duplicates.labels("customer-events"), duplicates)
        self._resolve_due(partition, watermark, table, out, skip=by_customer.keys())
        if self._changes:
            out.count(self.metrics.score_changes, self._changes)
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
        if self._requests:
            self._answer_requests()

    def idle(self, table: Table, out: Output) -> None:
        """Nothing arrived, so no event time passed; only keep the learner's tiers fresh."""
        if self._requests:  # nothing handled since the last commit: the state is committed
            self._answer_requests()
        for partition in list(self.partitions):
            self._send_histogram(partition, out)

    def request_aggregates(self, timeout_s: float) -> dict[int, tuple[Aggregates, int]] | None:
        """A copy of each owned partition's aggregates and watermark, as committed.

        Called from another thread (the web server's): the processing thread makes the copy
        between two batches, when what it holds is what was committed, so the figures never
        include a batch that may still abort. None when it did not get there within
        `timeout_s` (a long batch, a restore, a broker outage).
        """
        request = AggregatesRequest()
        with self._requests_lock:
            self._requests.append(request)
        if not request.done.wait(timeout_s):
            with self._requests_lock:
                if request in self._requests:
                    self._requests.remove(request)
            return None
        return request.result

    def _answer_requests(self) -> None:
        with self._requests_lock:
            requests, self._requests = self._requests, []
        copies: dict[int, tuple[Aggregates, int]] = {}
        for partition, part in self.partitions.items():
            copy = Aggregates()
            copy.merge(part.aggregates)
            copies[partition] = (copy, part.watermark)
        for request in requests:
            request.result = copies
            request.done.set()

    def _send_histogram(self, partition: int, out: Output) -> None:
        """Share this partition's predicted-value histograms with the learner (for the tiers
        and the churn alerts' cut), and its whole-base segment (for the KPI history)."""
        now = time.monotonic()
        part = self.partitions.get(partition)
        if part is None or now - part.histogram_sent < self.histogram_interval_s:
            return
        part.histogram_sent = now
        out.send(self.topics.training_examples, HISTOGRAM_PREFIX + str(partition).encode(),
                 part.values.snapshot())
        out.send(self.topics.training_examples, RISK_PREFIX + str(partition).encode(),
                 part.risks.snapshot())
        whole = part.aggregates.segments.get(WHOLE_BASE) or Segment()
        out.send(self.topics.training_examples, BASE_PREFIX + str(partition).encode(),
                 orjson.dumps({"watermark": part.watermark, "segment": whole.to_raw()}))

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
        part = self.partitions.get(partition)
        as_of = max(part.watermark if part is not None else 0, state.last_ms or 0)
        return self.engine.score(state, as_of)

    # -- internals -------------------------------------------------------------------------

    def _score(self, partition: int, customer_id: str, events: list[dict[str, Any]],
               watermark: int, table: Table, out: Output,
               records: list[Message] | None = None, checked: bool = False) -> int:
        """Apply, score and emit one customer's events of the batch; returns how many of them
        were redeliveries of events the state already holds. Raises `CoreError` when the pure
        core fails on them (the store and the outputs are then untouched); anything else
        (the store, Kafka) propagates and stops the stage. `records`: with the identity
        merge, the events' records, whose offsets tell one read again after a handover
        (`CustomerState.merged_before`; `checked`: already told)."""
        state = self._load(table, partition, customer_id)
        offsets: list[int] = []
        again = 0
        if records is not None:
            offsets = [m.offset() or 0 for m in records]
            if state is not None and state.merged is not None and not checked:
                fresh = [k for k, offset in enumerate(offsets) if not state.merged_before(offset)]
                again = len(events) - len(fresh)
                if again:  # (none left: the engine still resolves the labels come due)
                    events, offsets = [events[k] for k in fresh], [offsets[k] for k in fresh]
        try:
            due = state.next_due() if state is not None else None
            held = self._held_before
            if held:
                outcome = self.engine.apply_batch(
                    state, events, watermark, customer_id,
                    held_before={k: held[id(e)] for k, e in enumerate(events) if id(e) in held})
            else:
                outcome = self.engine.apply_batch(state, events, watermark, customer_id)
            merge = self.partitions[partition].merge if offsets else None
            if merge is not None and outcome.state is not None:
                outcome.state.merge_out(max(offsets), merge.held_offsets(customer_id),
                                        merge.next_offset or 0)
        except Exception as err:
            raise CoreError(f"{type(err).__name__}: {err}") from err
        self._emit(partition, outcome, table, out, due)
        if outcome.erased and self.erasures is not None:
            self.erasures.confirm(customer_id, events, state is not None, out)
        return again + outcome.duplicates

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
        # In event-time order, each resolving labels only up to its own time (the last up to
        # the batch's watermark), as the whole batch would have: the timeline stays the same.
        pairs = sorted(zip(events, messages, strict=True),
                       key=lambda pair: (*event_order({**pair[0], "event_id": ""}),
                                         str(pair[0].get("event_id"))))
        merged = self._partition(partition).merge is not None
        if merged:  # redeliveries told once, against the state before the batch
            stored = self._load(table, partition, customer_id)
            if stored is not None and stored.merged is not None:
                kept = [pair for pair in pairs if not stored.merged_before(pair[1].offset() or 0)]
                duplicates += len(pairs) - len(kept)
                pairs = kept
        for k, (event, msg) in enumerate(pairs):
            until = (watermark if k == len(pairs) - 1
                     else min(watermark, timeline_time(event)))
            try:
                duplicates += self._score(partition, customer_id, [event], until, table, out,
                                          [msg] if merged else None, checked=True)
            except CoreError as err:
                self.live.discard(customer_id)
                out.count(self.metrics.processing_errors.labels("scoring"))
                log.error("scoring: event at %s[%d]@%s of customer %r quarantined: %s",
                          msg.topic(), msg.partition(), msg.offset(), customer_id, err)
                self._dead_letter(msg, out, Reason.PROCESSING_ERROR, f"scoring stage: {err}")
                dead += 1
        return dead, duplicates

    def _resolve_due(self, partition: int, watermark: int, table: Table, out: Output,
                     skip: Any) -> None:
        part = self.partitions.get(partition)
        if part is None:
            return
        for customer_id in part.due.pop_due(watermark):
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
                out.count(self.metrics.processing_errors.labels("scoring"))
                log.error("scoring: resolving due labels of customer %r failed (%s); its "
                          "state stays as it was", customer_id, err)

    def _emit(self, partition: int, outcome: BatchOutcome, table: Table, out: Output,
              due_before: int | None) -> None:
        """Write the outcome's state and records; `due_before` is the customer's next due
        time before this batch (already in the due index). Raises `CoreError`, with nothing
        written or sent, when the alert rules or the serialisation fail."""
        key = outcome.customer_id.encode()
        now_ms = int(time.time() * 1000)
        part = self._partition(partition)
        if outcome.erased or outcome.state is None:
            # Tombstones: compaction then forgets the customer on both compacted topics.
            part.replace(outcome.previous_scorecard, None)
            table.delete(partition, key)
            self.live.discard(outcome.customer_id)
            out.send(self.topics.score_changes, key, None)
            return
        # Every record is serialised before anything is written or sent, so a customer whose
        # outcome cannot be serialised leaves the store and the batch's outputs untouched.
        try:
            # Both keep their memory (alert arming, the last reported values) in the state.
            alerts = self.rules.on_outcome(outcome, self.engine.bundle.tiers.at_risk_from,
                                           part.budget, max(part.aggregates.customers, 1))
            changed = self.rules.score_changes(outcome)
            outcome.state.clock = part.watermark
            snapshot = outcome.state.snapshot()
            dumps = orjson.dumps
            examples = [(example.model, dumps(example.to_dict()))
                        for example in outcome.training_examples]
            attributions = [dumps(a.to_record(emitted_at=now_ms))
                            for a in outcome.attributions]
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
            part.due.push(outcome.next_due, outcome.customer_id)
        for model, value in examples:
            out.send(self.topics.training_examples, key, value)
            out.count(self._examples_counter(model))
        for value in attributions:
            out.send(self.topics.attributions, key, value)
        if attributions:
            out.count(self.metrics.attributions, len(attributions))
        if card is None:
            return
        part.replace(outcome.previous_scorecard, card)
        if change is not None:
            out.send(self.topics.score_changes, key, change)
            self._changes += 1
        for alert_type, value in alert_records or ():
            out.send(self.topics.alerts, key, value)
            out.count(self.metrics.alerts.labels(alert_type))

    def _examples_counter(self, model: str) -> Any:
        """The training-examples counter of one model (label children looked up once)."""
        counter = self._examples.get(model)
        if counter is None:
            counter = self._examples[model] = self.metrics.examples.labels(model)
        return counter

    def _partition(self, partition: int) -> ScoringPartition:
        """The partition's derived state (fresh when it was never assigned: handler tests)."""
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = ScoringPartition(self.rules.budget())
        return part

    def _dead_letter(self, msg: Message, out: Output, reason: Reason, message: str) -> None:
        out.send(self.topics.dead_letters, msg.key(),
                 orjson.dumps(dead_letter(msg, reason, message)))
        out.count(self.metrics.dead_letters.labels(reason.value))
