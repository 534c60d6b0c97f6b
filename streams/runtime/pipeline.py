"""The worker's pipeline: ingest, identity, scoring and learner stages, the model-bundle
watcher and the attribution reader.

One object per worker, created by `create_app`, started when Faust has started and stopped
before Faust shuts down, so a SIGTERM finishes the current batch, commits its transaction and
leaves the consumer groups cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from models.attribution.markov import DataDrivenModel
from models.config import ScoringConfig
from models.scoring.aggregates import Aggregates
from models.scoring.alerts import AlertConfig, AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.scorecard import Scorecard
from schemas.units import DAY_MS
from streams.metrics import Metrics, gauge, segment_gauges
from streams.runtime.kafka import client_config
from streams.runtime.partitioning import partition_for
from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import ProcessorConfig, Stage
from streams.runtime.stores import StoreClosed
from streams.settings import Settings
from streams.stages.attribution import AttributionReader
from streams.stages.erasure import ErasureConfirmations
from streams.stages.identity import IdentityHandler, MergeTicks
from streams.stages.ingest import IngestHandler, ingestion_config
from streams.stages.ingest_process import IngestProcess
from streams.stages.learner import BundleWatcher, LearnerHandler
from streams.stages.scoring import ScoringHandler, ScoringTopics

__all__ = ["METRICS_WAIT_S", "ScoringPipeline"]

log = logging.getLogger(__name__)

METRICS_WAIT_S = 2.0
"""How long a scrape waits for the scoring thread's copy of the aggregates (between batches)."""


class ScoringPipeline:
    """Every stage of one worker, from the source topics to the learner."""

    def __init__(self, settings: Settings, config: ScoringConfig | None = None,
                 alert_config: AlertConfig | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.engine = ScoringEngine(config or settings.scoring_config())
        topics = settings.topics
        client = client_config(settings)
        common = dict(client=client, store_url=settings.store, data_dir=settings.data_dir,
                      batch_size=settings.batch_size, batch_within_s=settings.batch_within_s,
                      client_id=settings.canonical_url,
                      session_timeout_ms=int(settings.group_session_timeout_s * 1000),
                      transaction_timeout_ms=int(settings.transaction_timeout_s * 1000))
        self.handler = ScoringHandler(
            self.engine, AlertRules(alert_config or settings.alert_config()),
            ScoringTopics(score_changes=topics["score_changes"], alerts=topics["alerts"],
                          training_examples=topics["training_examples"],
                          dead_letters=topics["dead_letters"],
                          attributions=topics["attributions"]),
            self.metrics, allowed_lateness_ms=int(settings.allowed_lateness_days * DAY_MS),
            live_states=settings.live_states, live_states_bytes=settings.live_states_mb << 20,
            histogram_interval_s=settings.model.share_interval_s,
            merge_partitions=settings.partitions if settings.identity.merge else 0,
            merge_max_held=settings.identity.merge_max_held)
        self.handler.erasures = ErasureConfirmations(
            topics["erasure_confirmations"], topics["training_examples"], self.metrics)
        self.scoring = BatchProcessor(
            ProcessorConfig(name="customer-state", group_id=f"{settings.app_id}-scoring",
                            input_topics=(topics["customer_events"],),
                            changelog_topic=settings.changelog_topic("customer-state"),
                            **common),  # type: ignore[arg-type]
            self.handler, on_batch=self._observe("scoring"))
        # Co-partitioned: a customer's records on every source topic (keyed by its id, the
        # same partition on each) reach one ingest, which merges them in event-time order
        # (streams/runtime/alignment.py). Split between workers, each source would reach the
        # scoring stage at its own pace, months apart in a backfill.
        ingest = ProcessorConfig(
            name="ingest", group_id=f"{settings.app_id}-ingest",
            input_topics=tuple(settings.source_topics.values()), changelog_topic=None,
            co_partitioned=True, **common)  # type: ignore[arg-type]
        ingestion = ingestion_config(settings, self.engine.config)
        self.ingest: Stage = (
            IngestProcess(settings, ingest, ingestion, self.metrics, self._observe("ingest"))
            if settings.ingest_process else
            BatchProcessor(ingest, IngestHandler(settings, self.metrics, config=ingestion),
                           on_batch=self._observe("ingest")))
        self.identity = BatchProcessor(
            ProcessorConfig(name="identity", group_id=f"{settings.app_id}-identity",
                            input_topics=(topics["identity"],),
                            changelog_topic=settings.changelog_topic("identity"),
                            **common),  # type: ignore[arg-type]
            IdentityHandler(ingestion, topics, self.metrics, merge=MergeTicks(
                {(topic, p) for topic in settings.source_topics.values()
                 for p in range(settings.partitions)}, settings.partitions)
                if settings.identity.merge else None),
            on_batch=self._observe("identity"))
        self.learner = LearnerHandler(self.engine.config, topics["model_snapshots"],
                                      publish_every=settings.model.publish_every,
                                      publish_interval_s=settings.model.publish_interval_s,
                                      alert_share=self.handler.rules.config.budget_share,
                                      partitions=settings.partitions)
        self.learning = BatchProcessor(
            ProcessorConfig(name="learner", group_id=f"{settings.app_id}-learner",
                            input_topics=(topics["training_examples"],),
                            changelog_topic=settings.changelog_topic("learner"),
                            **common),  # type: ignore[arg-type]
            self.learner, on_batch=self._observe("learner"))
        self.watcher = BundleWatcher(client, topics["model_snapshots"], self.engine,
                                     frozen=settings.model.frozen)
        attribution = settings.attribution
        self.attribution = (
            AttributionReader(client, topics["attributions"],
                              f"{settings.app_id}-attribution-reader",
                              funnel=self.engine.config.attribution.funnel,
                              max_steps=attribution.journeys_steps,
                              refit_paths=attribution.data_driven_refit_paths,
                              refit_s=attribution.data_driven_refit_s,
                              draws=attribution.data_driven_draws,
                              level=attribution.data_driven_level,
                              max_channels=attribution.data_driven_channels,
                              on_model=self._use_model)
            if self.engine.config.attribution.enabled else None)
        """Totals of the attributions topic (None: attribution is off)."""
        self._aggregates = Aggregates()
        """The management scorecard's last copy the gauges were read from."""
        self.metrics.add_collector(self._collect)

    def _use_model(self, model: DataDrivenModel) -> None:
        """Credit the conversions scored from now on by a new data-driven model (one
        reference, swapped: the scoring thread reads it once per conversion)."""
        self.engine.data_driven = model
        log.info("data-driven attribution model %s (%.2f s to fit)", model.version,
                 self.attribution.fit_seconds if self.attribution is not None else 0.0)

    def _observe(self, stage: str) -> Callable[[int, float, float], None]:
        size = self.metrics.batch_size.labels(stage)
        seconds = self.metrics.batch_seconds.labels(stage)
        commit = self.metrics.commit_seconds.labels(stage)

        def observe(records: int, elapsed: float, committing: float) -> None:
            size.observe(records)
            seconds.observe(elapsed)
            commit.observe(committing)

        return observe

    def _collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """State-derived gauges and the live states' lookup counters, read at scrape time."""
        # The processing thread's committed copy (it changes the live aggregates as it goes);
        # while it is busy for long (a restore), the last copy it made.
        copies = self.handler.request_aggregates(METRICS_WAIT_S)
        if copies is not None:
            self._aggregates = Aggregates()
            for aggregates, _watermark in copies.values():
                self._aggregates.merge(aggregates)
        merged = self._aggregates
        yield gauge("scorestream_customers", "Customers in this worker's state.",
                    [({}, float(len(self.scoring.table)))])
        yield from segment_gauges(merged, self.engine.config.base_currency)
        live = self.handler.live
        yield gauge("scorestream_live_states", "Customer states kept live beside the store.",
                    [({}, float(len(live)))])
        lookups = CounterMetricFamily(
            "scorestream_live_state_lookups", "Scoring's lookups of a live state, by result.",
            labels=["result"])
        lookups.add_metric(["hit"], live.hits)
        lookups.add_metric(["miss"], live.misses)
        yield lookups
        yield gauge("scorestream_consumer_lag_records", "Records behind the end, per partition.",
                    [({"topic": topic, "partition": str(p)}, float(lag))
                     for stage in self.stages for (topic, p), lag in sorted(stage.lag.items())],
                    ("topic", "partition"))
        versions = self.engine.bundle.versions()
        yield gauge("scorestream_model_info", "Model versions the scorer uses (value is 1).",
                    [({"model": m, "version": v}, 1.0) for m, v in sorted(versions.items())],
                    ("model", "version"))
        quality = self.learner.report()
        samples = []
        for model, report in sorted(quality.items()):
            version = versions.get(model.removesuffix("_holdout"), "")
            for name in ("auc_window", "log_loss", "brier", "ece", "mae", "n"):
                value = report.get(name)
                if value is not None:
                    samples.append(({"model": model, "version": version, "metric": name},
                                    float(value)))
        yield gauge("scorestream_model_quality",
                    "Progressive model quality measured by the learner (only on its worker).",
                    samples, ("model", "version", "metric"))
        yield from self._attribution_gauges()

    def _attribution_gauges(self) -> Iterator[GaugeMetricFamily]:
        """Credited value and conversions per model and channel, read from the whole
        attributions topic. Every worker reads all of it, so only the worker that runs the
        learner (exactly one) reports them: a sum over workers counts each conversion once."""
        reader = self.attribution
        rows = (reader.by_channel(self.settings.attribution.gauge_channels)
                if reader is not None and self.learner.learner is not None else [])
        labels = ("model", "channel")
        yield gauge("scorestream_attributed_value",
                    "Conversion value credited to each channel by each attribution model, in "
                    "the base currency (only on the learner's worker).",
                    [({"model": m, "channel": c}, value) for m, c, _n, value in rows], labels)
        yield gauge("scorestream_attributed_conversions",
                    "Conversions credited to each channel by each attribution model, in "
                    "fractions of conversions (only on the learner's worker).",
                    [({"model": m, "channel": c}, n) for m, c, n, _value in rows], labels)
        yield from self._data_driven_gauges()

    def _data_driven_gauges(self) -> Iterator[GaugeMetricFamily]:
        """The data-driven model's weights and removal effects with their intervals, and
        the closed paths it rests on. Every worker fits the same model from the same
        records, so each reports it (labels: at most SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_
        CHANNELS channels and `other`)."""
        reader = self.attribution
        model = reader.model if reader is not None else None
        weights: list[tuple[dict[str, str], float]] = []
        effects: list[tuple[dict[str, str], float]] = []
        if model is not None:
            for channel, weight in sorted(model.weights.items()):
                low, high = model.weight_intervals[channel]
                weights += [({"channel": channel, "bound": b}, v)
                            for b, v in (("point", weight), ("low", low), ("high", high))]
                low, high = model.effect_intervals[channel]
                effects += [({"channel": channel, "bound": b}, v) for b, v in (
                    ("point", model.removal_effects[channel]), ("low", low), ("high", high))]
        yield gauge("scorestream_data_driven_weight",
                    "Data-driven attribution: each channel's weight (removal effects "
                    "normalised), with the bounds of its interval.", weights,
                    ("channel", "bound"))
        yield gauge("scorestream_data_driven_removal_effect",
                    "Data-driven attribution: each channel's removal effect (the share of "
                    "conversions lost without it), with the bounds of its interval.",
                    effects, ("channel", "bound"))
        yield gauge("scorestream_data_driven_paths",
                    "Closed paths the data-driven model rests on.",
                    [({}, float(model.paths))] if model is not None else [])

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The batch stages, upstream first."""
        return (self.ingest, self.identity, self.scoring, self.learning)

    def start(self) -> None:
        """Start the bundle watcher and the attribution reader, then every stage."""
        self.watcher.start()
        if self.attribution is not None:
            self.attribution.start()
        for stage in reversed(self.stages):
            stage.start()

    def stop(self) -> None:
        """Stop the stages upstream first (each commits its last batch), then the watcher
        and the attribution reader."""
        for stage in self.stages:
            stage.stop()
        self.watcher.stop()
        if self.attribution is not None:
            self.attribution.stop()
        log.info("pipeline stopped")

    @property
    def healthy(self) -> bool:
        """True while every stage, the bundle watcher and the attribution reader run."""
        return (all(stage.alive for stage in self.stages) and self.watcher.alive
                and (self.attribution is None or self.attribution.alive))

    def owns(self, customer_id: str) -> tuple[int, bool]:
        """The customer's partition of customer-events, and whether this worker owns it."""
        partition = partition_for(customer_id.encode(), self.settings.partitions)
        return partition, self.scoring.owns(partition)

    def scorecard(self, customer_id: str) -> Scorecard | None:
        """The scorecard of a customer owned here, as of its partition's watermark (None for
        an unknown customer); raises `StoreClosed` when the partition is not, or no longer,
        owned here."""
        partition, owned = self.owns(customer_id)
        if not owned:
            raise StoreClosed(f"partition {partition} is not owned here")
        return self.handler.scorecard(self.scoring.table, partition, customer_id)
