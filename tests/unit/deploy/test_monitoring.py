"""The Grafana dashboard and the Prometheus alerting rules speak only of series a worker really
exports: every metric name, label matcher, grouping label and legend label they use is checked
against the registry of a worker's pipeline (the same objects `/metrics` serves)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from streams.runtime.pipeline import ScoringPipeline
from streams.settings import KafkaSettings, Settings
from tests.kit import ROOT

DASHBOARD = ROOT / "deploy/grafana/dashboards/scorestream.json"
RULES = ROOT / "deploy/prometheus/rules.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"

TARGET_LABELS = {"instance", "job"}
"""Labels Prometheus adds to every scraped series."""
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}
METRIC = re.compile(r"\b(scorestream_[a-z0-9_]+|up)\b(?!\s*\()")
SELECTOR = re.compile(r"\b(scorestream_[a-z0-9_]+|up)\s*\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
RULE_LABEL = re.compile(r"\$labels\.(\w+)")


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample name -> its label names, for every series a worker's /metrics can contain."""
    # Building the pipeline creates its clients but connects nowhere until it is started.
    pipeline = ScoringPipeline(Settings(kafka=KafkaSettings(bootstrap="127.0.0.1:9")))
    families: list[tuple[str, str, tuple[str, ...]]] = [
        (m._name, m._type, tuple(m._labelnames))
        for m in vars(pipeline.metrics).values() if isinstance(m, MetricWrapperBase)
    ]
    families += [(f.name, f.type, tuple(f._labelnames)) for f in pipeline._collect()]
    names: dict[str, set[str]] = {"up": set()}
    for name, kind, labels in families:
        for suffix in SUFFIXES[kind]:
            sample = name + suffix
            names[sample] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    assert "scorestream_events_processed_total" in names
    assert "scorestream_model_quality" in names
    return names


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _dashboard_targets() -> Iterator[tuple[str, str, str]]:
    """(panel title, expression, legend format) of every query on the dashboard."""
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target.get("legendFormat", "")


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def _problems(expr: str, exported: dict[str, set[str]], used_labels: set[str]) -> list[str]:
    """What in one PromQL expression does not exist in the worker's registry."""
    problems = []
    metrics = set(METRIC.findall(expr))
    if not metrics:
        problems.append("no metric")
    unknown = metrics - set(exported)
    problems += [f"unknown metric {name}" for name in sorted(unknown)]
    job = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"][0]["job_name"]
    for name, matchers in SELECTOR.findall(expr):
        for label, value in MATCHER.findall(matchers):
            if label not in exported.get(name, set()) | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
            if label == "job" and value != job:
                problems.append(f"job {value!r} is not the scrape job {job!r}")
    available = TARGET_LABELS.union(*(exported.get(m, set()) for m in metrics))
    for group in GROUPING.findall(expr):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in available:
                problems.append(f"grouping by {label}, which none of {sorted(metrics)} has")
    problems += [f"uses label {label}, which none of {sorted(metrics)} has"
                 for label in sorted(used_labels - available)]
    return problems


def test_every_dashboard_query_uses_exported_metrics_and_labels(
    exported: dict[str, set[str]],
) -> None:
    problems = {}
    for title, expr, legend in _dashboard_targets():
        found = _problems(expr, exported, set(LEGEND.findall(legend)))
        if found:
            problems[f"{title}: {expr}"] = found
    assert problems == {}


def test_every_alerting_rule_uses_exported_metrics_and_labels(
    exported: dict[str, set[str]],
) -> None:
    problems = {}
    for rule in _rules():
        annotations = " ".join(rule.get("annotations", {}).values())
        found = _problems(rule["expr"], exported, set(RULE_LABEL.findall(annotations)))
        if found:
            problems[rule["alert"]] = found
    assert problems == {}


def test_metric_names_follow_the_prometheus_conventions() -> None:
    """Only counters end in _total (what `promtool check metrics` checks), all snake_case."""
    pipeline = ScoringPipeline(Settings(kafka=KafkaSettings(bootstrap="127.0.0.1:9")))
    kinds = {}
    for family in pipeline.metrics.registry.collect():
        for sample in family.samples:
            kinds[sample.name] = family.type
    assert len(kinds) > 20
    assert [n for n in kinds if not re.fullmatch(r"scorestream_[a-z0-9]+(_[a-z0-9]+)*", n)] == []
    assert [n for n, kind in kinds.items() if n.endswith("_total") and kind != "counter"] == []


def test_dashboard_covers_what_ops_watch() -> None:
    exprs = [expr for _, expr, _ in _dashboard_targets()]

    def shown(metric: str, grouped_by: str | None = None) -> bool:
        return any(metric in e and (grouped_by is None or re.search(
            rf"\bby \([^)]*\b{grouped_by}\b", e)) for e in exprs)

    assert shown("scorestream_events_consumed_total", "source")
    assert shown("scorestream_consumer_lag_records", "topic")
    assert shown("scorestream_processing_latency_seconds_bucket")
    assert shown("scorestream_dead_letters_total", "reason")
    assert shown("scorestream_alerts_total", "alert_type")
    assert shown("scorestream_customers_by_tier", "tier")
    assert any('metric="auc_window"' in e for e in exprs)
    assert any('metric="log_loss"' in e for e in exprs)
    for aggregate in ("scorestream_customers", "scorestream_revenue_12m",
                      "scorestream_data_completeness_average_percent"):
        assert shown(aggregate), aggregate


def test_dashboard_is_well_formed_and_uses_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref == {"type": source["type"], "uid": source["uid"]}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_grafana_loads_the_dashboard_directory_compose_mounts() -> None:
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/scorestream.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert (ROOT / "deploy/grafana/dashboards" / DASHBOARD.name).is_file()


def test_rules_cover_the_ops_alerts_and_prometheus_loads_them() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert {"ScorestreamWorkerDown", "ScorestreamConsumerLagGrowing",
            "ScorestreamDeadLetterRateHigh", "ScorestreamProcessingLatencyHigh",
            "ScorestreamModelAucDropped"} <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert RULES.name in config["rule_files"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus/rules.yml"] == f"/etc/prometheus/{RULES.name}"
