"""Prometheus metrics of one worker, in a registry of its own (no process-global state).

Names follow Prometheus conventions: `scorestream_` prefix, base units (seconds), `_total`
for counters. Counters are updated where the work happens; gauges that summarise state
(customers, tiers, aggregates, model quality, consumer lag) are computed when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BATCH_BUCKETS", "LAG_BUCKETS", "LATENCY_BUCKETS", "Metrics", "gauge"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)


class Metrics:
    """Every metric a worker exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_consumed = Counter(
            "scorestream_events_consumed_total", "Source records consumed by ingestion.",
            ["source"], registry=r)
        self.events_ingested = Counter(
            "scorestream_events_ingested_total",
            "Valid source events accepted by ingestion, by source and event type.",
            ["source", "event_type"], registry=r)
        self.duplicates = Counter(
            "scorestream_duplicate_events_total",
            "Redelivered events counted once: by source where ingestion caught them, "
            "`identity` or `customer-events` where a later stage did.",
            ["source"], registry=r)
        self.dead_letters = Counter(
            "scorestream_dead_letters_total", "Records sent to the dead-letter topic.",
            ["reason"], registry=r)
        self.events_processed = Counter(
            "scorestream_events_processed_total",
            "Customer events scored by the scoring stage (its dead letters not included).",
            registry=r)
        self.processing_errors = Counter(
            "scorestream_processing_errors_total",
            "Times a stage's core raised on one customer's or record's data; the records are "
            "quarantined as `processing_error` dead letters and the stage carries on.",
            ["stage"], registry=r)
        self.batch_size = Histogram(
            "scorestream_batch_size", "Records per processed batch.", ["stage"],
            buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "scorestream_batch_duration_seconds", "Time to process one batch.", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram(
            "scorestream_commit_duration_seconds",
            "Time to produce one batch's records and commit its transaction (part of the "
            "batch duration; after an aborted transaction, the rebuild of the stage's state "
            "too).", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.processing_latency = Histogram(
            "scorestream_processing_latency_seconds",
            "Wall time from ingestion of a batch's oldest event to the commit of its "
            "results (one observation per batch).",
            buckets=LATENCY_BUCKETS, registry=r)
        self.event_time_lag = Histogram(
            "scorestream_event_time_lag_seconds",
            "Wall time at commit minus the newest event time, per batch and partition.",
            buckets=LAG_BUCKETS, registry=r)
        self.score_changes = Counter(
            "scorestream_score_changes_total", "Score-change events emitted.", registry=r)
        self.alerts = Counter(
            "scorestream_alerts_total", "Alerts emitted, by type.", ["alert_type"], registry=r)
        self.attributions = Counter(
            "scorestream_attributions_total",
            "Conversions attributed (records written to the attributions topic).", registry=r)
        self.examples = Counter(
            "scorestream_training_examples_total", "Training examples emitted, by model.",
            ["model"], registry=r)

    def add_collector(self, collect: Callable[[], Iterable[Any]]) -> None:
        """Register a callable that yields metric families when scraped."""
        self.registry.register(_CallableCollector(collect))

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class _CallableCollector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        yield from self._collect()


def gauge(name: str, documentation: str, samples: Iterable[tuple[dict[str, str], float]],
          labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    """A gauge family from (labels, value) samples."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in samples:
        family.add_metric([label_values[k] for k in labels], value)
    return family
