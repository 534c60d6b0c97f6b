"""The parent's side of the ingest child process: its reports become the worker's metrics and
stage status (the child itself runs in the integration tests, as every worker's ingest)."""

from __future__ import annotations

from pathlib import Path

from streams.metrics import Metrics
from streams.runtime.stage import ProcessorConfig
from streams.settings import Settings
from streams.stages.ingest import ingestion_config
from streams.stages.ingest_process import SILENT_AFTER_S, IngestProcess, Report


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make() -> tuple[IngestProcess, Metrics, list[tuple[int, float, float]]]:
    settings = Settings()
    metrics = Metrics()
    batches: list[tuple[int, float, float]] = []
    config = ProcessorConfig("ingest", "g-ingest", ("web",), None, {}, data_dir=Path("."))
    stage = IngestProcess(settings, config, ingestion_config(settings), metrics,
                          on_batch=lambda *batch: batches.append(batch))
    return stage, metrics, batches


def test_counter_totals_become_increments_and_batches_are_observed() -> None:
    stage, metrics, batches = make()
    consumed = ("scorestream_events_consumed_total", (("source", "web"),))
    dead = ("scorestream_dead_letters_total", (("reason", "invalid_json"),))
    stage._apply(Report(counters={consumed: 100.0}, batches=[(100, 0.02, 0.01)],
                        lag={("web", 0): 7}, ready=True))
    stage._apply(Report(counters={consumed: 250.0, dead: 2.0}, batches=[(150, 0.03, 0.02)],
                        committing_for=1.5, committing="commit_transaction"))
    assert (stage.committing_for(), stage.committing) == (1.5, "commit_transaction")
    stage._apply(Report(counters={consumed: 250.0, dead: 2.0}))  # nothing new
    assert metric(metrics, "scorestream_events_consumed_total", source="web") == 250.0
    assert metric(metrics, "scorestream_dead_letters_total", reason="invalid_json") == 2.0
    assert batches == [(100, 0.02, 0.01), (150, 0.03, 0.02)]
    assert stage.ready.is_set() and stage.lag == {}  # as last reported
    assert (stage.committing_for(), stage.committing) == (0.0, "")
    assert stage.error is None


def test_a_reported_error_fails_the_stage() -> None:
    stage, _metrics, _batches = make()
    stage._apply(Report(error="KafkaException('boom')"))
    assert isinstance(stage.error, RuntimeError) and "boom" in str(stage.error)
    assert not stage.alive and not stage.ready.is_set()


def test_a_silent_child_counts_as_stalled_since_its_last_report() -> None:
    stage, _metrics, _batches = make()
    stage._apply(Report(committing_for=0.5, committing="commit_transaction", ready=True))
    assert (stage.committing_for(), stage.committing) == (0.5, "commit_transaction")
    stage._heard_at -= SILENT_AFTER_S + 60  # a report overdue by a minute
    assert stage.committing_for() >= SILENT_AFTER_S + 60
    assert stage.committing.startswith("no report from the ingest process for 6")
    stage._apply(Report())  # it speaks again
    assert (stage.committing_for(), stage.committing) == (0.0, "")
