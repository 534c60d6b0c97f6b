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

from models.scoring.aggregates import SUMS, Aggregates
from models.scoring.tiers import TIERS

__all__ = ["BATCH_BUCKETS", "LAG_BUCKETS", "LATENCY_BUCKETS", "Metrics", "gauge", "segment_gauges"]

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
            "Records written to the attributions topic: conversions attributed, null paths "
            "closed, funnel goals completed.", registry=r)
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


def segment_gauges(aggregates: Aggregates, currency: str) -> Iterator[GaugeMetricFamily]:
    """The management scorecard's gauges from this worker's aggregates.

    Every family is a count or a sum, so the deployment's figure is the sum over workers
    (`sum(...)` in PromQL); ratios (NPS, averages) are taken after summing. Labels are bounded:
    tiers, surveys and answer classes only (cohorts and channels are in `GET /aggregates`).
    Every tier appears, 0 included: a series that comes and goes as the last customer leaves
    a tier reads as "no data" instead of 0.
    """
    tiers = {tier: aggregates.segments.get(("tier", tier)) for tier in TIERS}
    for (kind, name), seg in aggregates.segments.items():  # tiers of an older configuration
        if kind == "tier" and name is not None and name not in tiers:
            tiers[name] = seg
    money = {"currency": currency}
    per_tier = sorted(tiers.items())

    def sums(field: str, *, is_money: bool) -> list[tuple[dict[str, str], float]]:
        i, labels = _SUM_INDEX[field], money if is_money else {}
        return [({"tier": t, **labels}, seg.sums[i] / SUMS[i][1] if seg is not None else 0.0)
                for t, seg in per_tier]

    yield gauge("scorestream_customers_by_tier", "Customers per value tier (latest scores).",
                [({"tier": t}, float(seg.customers if seg is not None else 0))
                 for t, seg in per_tier], ("tier",))
    yield gauge("scorestream_expected_churners",
                "Sum of the customers' churn probabilities, per tier.",
                sums("expected_churners", is_money=False), ("tier",))
    yield gauge("scorestream_revenue_at_risk",
                "Sum of churn probability x predicted 12-month value, per tier.",
                sums("revenue_at_risk", is_money=True), ("tier", "currency"))
    yield gauge("scorestream_ltv_predicted_12m",
                "Sum of the customers' predicted 12-month values, per tier.",
                sums("ltv_predicted_12m", is_money=True), ("tier", "currency"))
    whole = aggregates.segments.get(("all", None))
    customers = whole.customers if whole is not None else 0
    completeness = whole.sums[_SUM_INDEX["data_completeness"]] / 10 if whole else 0.0
    yield gauge("scorestream_data_completeness_average_percent",
                "Average data completeness of this worker's customers.",
                [({}, completeness / customers if customers else 0.0)])
    revenue = whole.sums[_SUM_INDEX["revenue_12m"]] / 100 if whole else 0.0
    yield gauge("scorestream_revenue_12m",
                "Sum of this worker's customers' 12-month revenue, in the base currency.",
                [(money, revenue)], ("currency",))
    answers = []
    for survey, classes in _ANSWER_CLASSES.items():
        tally = getattr(whole, survey) if whole is not None else None
        counts = tally.counts if tally is not None else {}
        for answer, (lo, hi) in classes.items():
            n = sum(c for score, c in counts.items() if lo <= score <= hi)
            answers.append(({"survey": survey, "answer": answer}, float(n)))
    yield gauge("scorestream_survey_answers",
                "Customers whose latest answer of the past year is in this class, per survey "
                "(NPS = 100 x (promoter - detractor) / all nps answers).",
                answers, ("survey", "answer"))


_SUM_INDEX = {name: i for i, (name, _scale) in enumerate(SUMS)}
_ANSWER_CLASSES = {
    "nps": {"detractor": (0, 6), "passive": (7, 8), "promoter": (9, 10)},
    "csat": {"unsatisfied": (1, 3), "satisfied": (4, 5)},
    "ces": {"hard": (1, 4), "easy": (5, 7)},
}
