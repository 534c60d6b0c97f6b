"""The learner stage and the model-bundle watcher.

Scorers emit training examples (a feature snapshot with its resolved label) and, now and then,
their partition's histogram of predicted values and its whole-base segment of the management
scorecard. The training topic has ONE partition, so exactly one worker in the group runs the
learner: it learns the global models, merges the histograms into tier thresholds, and
publishes versioned `ModelBundle` snapshots to the compacted model-snapshots topic. Every
worker's `BundleWatcher` loads the newest bundle into its scoring engine, so model quality
does not depend on how many workers run.

With the bundle the learner publishes the whole base's KPI history (`KpiHistory`, key
`KPI_HISTORY_KEY`): the sum of every partition's latest segment, one record per event-time
day, from which `/aggregates` reports the change against 30 days before.

With frozen models (`SCORESTREAM_MODEL_FROZEN`) a worker's watcher loads no bundle: its scoring
engine keeps the bundle it started with, whichever worker runs the learner and whatever the
topic already holds. The learner itself is untouched (it learns, measures and publishes), so
the setting of one worker never changes what the others score with.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.learning.learner import Learner
from models.scoring.aggregates import Segment, kpi_values
from models.scoring.engine import ScoringEngine
from models.scoring.labels import TrainingExample
from models.scoring.tiers import ValueHistogram
from models.scoring.trend import KpiHistory, TrendError
from schemas.units import DAY_MS
from streams.runtime.stage import Output, StageHandler
from streams.runtime.tables import Table

__all__ = ["BASE_PREFIX", "BUNDLE_KEY", "HISTOGRAM_PREFIX", "KPI_HISTORY_KEY", "RISK_PREFIX",
           "BundleWatcher", "LearnerHandler"]

log = logging.getLogger(__name__)

BUNDLE_KEY = b"bundle"
HISTOGRAM_PREFIX = b"histogram:"
RISK_PREFIX = b"risk:"
"""Key prefixes of the scorers' per-partition histograms: predicted values (for the tiers)
and values at risk (for the churn alerts' cut)."""
BASE_PREFIX = b"base:"
"""Key prefix of the scorers' per-partition whole-base segments: {"watermark", "segment"}."""
KPI_HISTORY_KEY = b"kpi-history"
"""Key of the KPI history, in the learner's table and on the model-snapshots topic."""
_PREFIXES = (HISTOGRAM_PREFIX, RISK_PREFIX, BASE_PREFIX)


class LearnerHandler(StageHandler):
    """StageHandler of the learner stage: learn, and publish a bundle every so often."""

    def __init__(self, config: ScoringConfig, snapshots_topic: str, *,
                 publish_every: int = 500, publish_interval_s: float = 10.0,
                 refit_min_population: int = 50, alert_share: float = 0.02,
                 partitions: int = 1) -> None:
        self.config = config
        self.alert_share = alert_share
        """Share of customers the churn alerts' value-at-risk cut leaves above it."""
        self.risks: dict[bytes, ValueHistogram] = {}
        self.snapshots_topic = snapshots_topic
        self.publish_every = publish_every
        self.publish_interval_s = publish_interval_s
        self.refit_min_population = refit_min_population
        self.learner: Learner | None = None
        self.histograms: dict[bytes, ValueHistogram] = {}
        self.unpublished = 0
        self.last_publish = time.monotonic()
        self.fitted_population = 0
        self.partitions = partitions
        """Partitions of the scorers' input: the KPI history records only a sum over all."""
        self.bases: dict[int, tuple[int, Segment]] = {}
        """Per scorer partition: its latest watermark and whole-base segment."""
        self.history = KpiHistory()
        self._lock = threading.Lock()
        """Held while the learner learns and while /metrics reads its quality: River's rolling
        metrics buffer updates and flush them when read, and a read racing an update
        corrupted their buffers (every later scrape failed)."""

    def on_assigned(self, partition: int, table: Table) -> None:
        """Resume from the last published bundle, kept in the learner's own table."""
        raw = table.get(partition, BUNDLE_KEY)
        bundle = ModelBundle.restore(raw, self.config) if raw is not None else None
        self.learner = Learner(self.config, bundle, keep_predictions=False)
        raw = table.get(partition, KPI_HISTORY_KEY)
        try:
            self.history = KpiHistory.restore(raw) if raw is not None else KpiHistory()
        except TrendError as err:
            log.error("learner: starting a new KPI history: %s", err)
            self.history = KpiHistory()
        log.info("learner active on partition %d (bundle %s)", partition,
                 bundle.versions() if bundle else "initial")

    def on_revoked(self, partition: int) -> None:
        """Another worker owns learning now."""
        self.learner = None
        self.bases.clear()

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Learn from the batch's examples; keep the newest histogram of each scorer partition."""
        learner = self.learner
        if learner is None:
            return
        examples = []
        for msg in messages:
            key, value = msg.key() or b"", msg.value()
            if value is None:  # the scorers send no tombstone of their own records
                if key:
                    with self._lock:  # the customer was erased
                        learner.forget(key.decode(errors="replace"))
                continue
            # A customer id may start like a scorer's key: what does not read as the
            # scorer's record is a training example.
            if key.startswith(_PREFIXES) and self._keep_scorer_record(key, value):
                continue
            try:
                examples.append(TrainingExample.from_dict(orjson.loads(value)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                log.warning("learner: skipping malformed training example at offset %s: %s",
                            msg.offset(), err)
        with self._lock:
            learned = learner.learn(examples)
        self.unpublished += learned
        if not self._maybe_publish(partition, table, out) and learned:
            # The batch's offsets commit with this write, so what was learned survives a crash
            # even before the next publish.
            table.put(partition, BUNDLE_KEY, learner.models.snapshot())

    def idle(self, table: Table, out: Output) -> None:
        """Publish pending learning even when no new examples arrive."""
        for partition in list(table.stores):
            self._maybe_publish(partition, table, out)

    def _maybe_publish(self, partition: int, table: Table, out: Output) -> bool:
        """Publish a bundle when enough was learned or enough time passed; True if it did."""
        learner = self.learner
        if learner is None or not (self.unpublished or self.histograms):
            return False
        due = time.monotonic() - self.last_publish >= self.publish_interval_s
        if self.unpublished < self.publish_every and not due:
            return False
        population = len(learner.population)
        if population >= self.refit_min_population and population >= 1.25 * max(
                self.fitted_population, 1):
            with self._lock:
                learner.refit_value()
            self.fitted_population = population
        if learner.activity_due(self.refit_min_population):
            with self._lock:
                learner.refit_activity()
        merged = ValueHistogram()
        for histogram in self.histograms.values():
            merged.merge(histogram)
        tiers = None
        if merged.total:
            tiers = merged.thresholds(self.config.tier_cuts,
                                      version=f"tiers-{learner.models.sequence + 1:05d}")
            risk = ValueHistogram()
            for histogram in self.risks.values():
                risk.merge(histogram)
            tiers = tiers.with_risk_cut(risk, self.alert_share)
        with self._lock:
            bundle = learner.publish(tiers)
        snapshot = bundle.snapshot()
        table.put(partition, BUNDLE_KEY, snapshot)
        out.send(self.snapshots_topic, BUNDLE_KEY, snapshot)
        log.info("published model bundle %s after %d examples", bundle.versions(),
                 self.unpublished)
        self._record_history(partition, table, out)
        self.unpublished = 0
        self.last_publish = time.monotonic()
        return True

    def _keep_scorer_record(self, key: bytes, value: bytes) -> bool:
        """Keep a scorer partition's histogram or whole-base segment; False when the record
        is none of those (a training example of a customer whose id looks like such a key)."""
        try:
            if key.startswith(BASE_PREFIX):
                partition = int(key[len(BASE_PREFIX):])
                raw = orjson.loads(value)
                self.bases[partition] = (int(raw["watermark"]),
                                         Segment.from_raw(raw["segment"]))
                return True
            prefix = HISTOGRAM_PREFIX if key.startswith(HISTOGRAM_PREFIX) else RISK_PREFIX
            int(key[len(prefix):])
            histogram = ValueHistogram.restore(value)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return False
        (self.histograms if prefix == HISTOGRAM_PREFIX else self.risks)[key] = histogram
        return True

    def _record_history(self, partition: int, table: Table, out: Output) -> None:
        """Record the whole base's KPIs (the sum of every scorer partition's latest segment)
        under the newest watermark's day; publish the history when that changed it."""
        if any(p not in self.bases for p in range(self.partitions)):
            return  # not every partition reported yet: a part of the base is no base
        whole, newest = Segment(), 0
        for p in range(self.partitions):
            watermark, segment = self.bases[p]
            whole.merge(segment)
            newest = max(newest, watermark)
        if newest <= 0 or not whole.customers:
            return
        if self.history.record(newest // DAY_MS, kpi_values(whole.report())):
            snapshot = self.history.snapshot()
            table.put(partition, KPI_HISTORY_KEY, snapshot)
            out.send(self.snapshots_topic, KPI_HISTORY_KEY, snapshot)

    def report(self) -> dict[str, Any]:
        """Model quality measured by the learner (empty when not the active learner)."""
        learner = self.learner
        if learner is None:
            return {}
        with self._lock:
            return learner.report()


class BundleWatcher:
    """Loads every newly published model bundle into a scoring engine (a background thread).

    `frozen`: load none, so the engine keeps the bundle it has (`SCORESTREAM_MODEL_FROZEN`).
    """

    def __init__(self, client: dict[str, Any], topic: str, engine: ScoringEngine, *,
                 frozen: bool = False) -> None:
        self.client = client
        self.topic = topic
        self.engine = engine
        self.frozen = frozen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded = 0
        self.ignored = 0
        """Bundles not loaded because the models are frozen."""
        self.kpi_history = KpiHistory()
        """The newest KPI history the learner published (frozen models or not: it is no
        model)."""

    def start(self) -> None:
        """Start following the snapshots topic from its beginning (it is compacted)."""
        if self.frozen:
            log.info("models frozen: scoring keeps model bundle %s and loads none the learner "
                     "publishes", self.engine.bundle.versions())
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the watcher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def offer(self, key: bytes | None, value: bytes | None, offset: int | None = None) -> bool:
        """One record of the snapshots topic: load the bundle it carries into the engine,
        unless the models are frozen; True if the engine now scores with it. A KPI history
        replaces the one kept for `/aggregates`."""
        if key == KPI_HISTORY_KEY and value is not None:
            try:
                self.kpi_history = KpiHistory.restore(value)
            except TrendError as err:
                log.error("bundle watcher: unreadable KPI history at offset %s: %s", offset, err)
            return False
        if key != BUNDLE_KEY or value is None:
            return False
        if self.frozen:
            self.ignored += 1
            log.debug("models frozen: not loading the bundle at offset %s", offset)
            return False
        try:
            bundle = ModelBundle.restore(value, self.engine.config)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            log.error("bundle watcher: unreadable bundle at offset %s: %s", offset, err)
            return False
        self.engine.bundle = bundle
        self.loaded += 1
        log.info("loaded model bundle %s", bundle.versions())
        return True

    def _run(self) -> None:
        consumer = Consumer({**self.client, "group.id": "scorestream-bundle-watcher",
                             "enable.auto.commit": False, "isolation.level": "read_committed"})
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("bundle watcher: %s", err)
                    continue
                self.offer(msg.key(), msg.value(), msg.offset())
        finally:
            consumer.close()
