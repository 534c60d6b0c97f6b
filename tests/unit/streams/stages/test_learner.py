"""The learner stage and the bundle watcher without a broker: what the learner publishes, and
that frozen models (`SCORESTREAM_MODEL_FROZEN`) keep the scoring engine on its initial bundle."""

from __future__ import annotations

import orjson
import pytest

from models.learning.bundle import ModelBundle
from models.scoring.aggregates import WHOLE_BASE, Segment, kpi_values
from models.scoring.alerts import AlertRules
from models.scoring.engine import VALUE_POPULATION, ScoringEngine
from models.scoring.labels import TrainingExample
from models.scoring.trend import KpiHistory
from streams.runtime.pipeline import ScoringPipeline
from streams.runtime.stage import Output
from streams.settings import Settings, SettingsError
from streams.stages.learner import (
    BASE_PREFIX,
    BUNDLE_KEY,
    KPI_HISTORY_KEY,
    BundleWatcher,
    LearnerHandler,
)
from streams.stages.scoring import ScoringHandler
from tests.kit import DAY_MS, SCORING_TOPICS, T0, assign, ev, feed

INITIAL = ModelBundle.initial().versions()


def examples(n: int) -> list[tuple[bytes, bytes]]:
    """`n` resolved churn examples, as the scorers send them to the training topic."""
    out = []
    for i in range(n):
        example = TrainingExample("churn", f"C{i}", {"recency_days": float(i % 40)},
                                  float(i % 3 == 0), 0.3, "churn-00000", T0, T0 + 90 * DAY_MS)
        out.append((f"C{i}".encode(), orjson.dumps(example.to_dict())))
    return out


def published_bundle() -> bytes:
    """The bundle a learner publishes after learning a batch of examples."""
    learner = LearnerHandler(ScoringEngine().config, "model-snapshots", publish_every=10)
    table = assign(learner, "learner")
    out = feed(learner, table, examples(40), topic="training")
    [(topic, key, value, _partition)] = out.records
    assert topic == "model-snapshots" and key == BUNDLE_KEY and value is not None
    assert ModelBundle.restore(value).versions()["churn"] != INITIAL["churn"]
    return value


def test_a_watcher_loads_what_the_learner_publishes() -> None:
    engine = ScoringEngine()
    watcher = BundleWatcher({}, "model-snapshots", engine)
    bundle = published_bundle()
    assert watcher.offer(BUNDLE_KEY, bundle, 7)
    assert engine.bundle.snapshot() == bundle and watcher.loaded == 1
    # Not a bundle: the histograms' keys, a tombstone, an unreadable value.
    assert not watcher.offer(b"histogram:0", bundle)
    assert not watcher.offer(BUNDLE_KEY, None)
    assert not watcher.offer(BUNDLE_KEY, b"{not json", 8)
    assert engine.bundle.snapshot() == bundle


def test_frozen_models_keep_the_initial_bundle_while_the_learner_still_learns(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = ScoringEngine()
    initial = engine.bundle.snapshot()
    watcher = BundleWatcher({}, "model-snapshots", engine, frozen=True)
    assert not watcher.offer(BUNDLE_KEY, published_bundle(), 7)
    assert engine.bundle.snapshot() == initial and engine.bundle.versions() == INITIAL
    assert (watcher.loaded, watcher.ignored) == (0, 1)
    monkeypatch.setattr(watcher, "_run", lambda: None)  # no broker to follow
    with caplog.at_level("INFO", logger="streams.stages.learner"):
        watcher.start()
        watcher.stop()
    assert [r.getMessage() for r in caplog.records] == [
        f"models frozen: scoring keeps model bundle {INITIAL} and loads none the learner "
        "publishes"]


def test_the_frozen_setting_reaches_the_worker_s_watcher() -> None:
    assert "SCORESTREAM_MODEL_FROZEN" in Settings.env_names()
    assert Settings.from_env({}).model.frozen is False
    for raw, frozen in (("true", True), ("1", True), ("off", False)):
        settings = Settings.from_env({"SCORESTREAM_MODEL_FROZEN": raw})
        assert settings.model.frozen is frozen
        assert ScoringPipeline(settings).watcher.frozen is frozen
    with pytest.raises(SettingsError, match="SCORESTREAM_MODEL_FROZEN"):
        Settings.from_env({"SCORESTREAM_MODEL_FROZEN": "sometimes"})


def test_the_learner_records_the_whole_base_of_every_partition_and_workers_read_it() -> None:
    """Scorers send their whole-base segments with the histograms; the learner records the
    KPIs of their sum under the newest watermark's day once every partition has reported, and
    publishes the history, which even a frozen worker's watcher takes."""
    scorers = []
    for first in (0, 1):
        handler = ScoringHandler(ScoringEngine(), AlertRules(), SCORING_TOPICS,
                                 histogram_interval_s=0.0)
        table = assign(handler, "customer-state")
        days = (10, 40) if first == 0 else (20, 30, 45)
        feed(handler, table, [orjson.dumps(ev(f"e{first}{n}", "order_placed", day,
                                              customer_id=f"C{first}{n}", ingested_at=1,
                                              order_id=f"o{first}{n}", amount=10.0 + n,
                                              currency="EUR"))
                              for n, day in enumerate(days)])
        out = Output()
        handler._send_histogram(0, out)
        [(key, value)] = [(k, v) for _t, k, v, _p in out.records if k.startswith(BASE_PREFIX)]
        assert key == b"base:0" and value is not None
        scorers.append((f"base:{first}".encode(), value, handler.partitions[0]))

    learner = LearnerHandler(ScoringEngine().config, "model-snapshots", publish_every=10,
                             partitions=2)
    table = assign(learner, "learner")
    out = feed(learner, table, [scorers[0][:2], *examples(20)], topic="training")
    assert [k for _t, k, _v, _p in out.records] == [BUNDLE_KEY]  # partition 1 not yet in
    out = feed(learner, table, [scorers[1][:2], *examples(20)], topic="training")
    [history] = [v for _t, k, v, _p in out.records if k == KPI_HISTORY_KEY]
    assert history is not None
    whole = Segment()
    for _key, _value, part in scorers:
        whole.merge(part.aggregates.segments[WHOLE_BASE])
    newest = max(part.watermark for _k, _v, part in scorers)
    assert KpiHistory.restore(history).days == {newest // DAY_MS: kpi_values(whole.report())}
    assert kpi_values(whole.report())["customers"] == 5
    # nothing changed: no new history on the next publish; a learner taking over resumes it
    out = feed(learner, table, examples(20), topic="training")
    assert [k for _t, k, _v, _p in out.records] == [BUNDLE_KEY]
    successor = LearnerHandler(ScoringEngine().config, "model-snapshots", partitions=2)
    successor.on_assigned(0, table)
    assert successor.history == KpiHistory.restore(history)

    watcher = BundleWatcher({}, "model-snapshots", ScoringEngine(), frozen=True)
    assert not watcher.offer(KPI_HISTORY_KEY, history, 3)
    assert watcher.kpi_history == KpiHistory.restore(history)
    assert not watcher.offer(KPI_HISTORY_KEY, b"[broken", 4)  # logged, the last one stays
    assert watcher.kpi_history == KpiHistory.restore(history)


def test_a_customer_whose_id_looks_like_a_scorer_key_is_learned_from_and_forgotten() -> None:
    """Customer ids are any text: a training example keyed `histogram:…`, `risk:…` or
    `base:…` that does not read as the scorers' record is an example, and a tombstone under
    such a key is an erasure (the scorers send no tombstones)."""
    learner = LearnerHandler(ScoringEngine().config, "model-snapshots", publish_every=10_000)
    table = assign(learner, "learner")
    ids = ["histogram:0", "risk:x", "base:1"]
    records = []
    for customer in ids:
        for model in ("churn", VALUE_POPULATION):  # a learned one; one kept per customer
            example = TrainingExample(model, customer, {"recency_days": 3.0}, 1.0, 0.3,
                                      "churn-00000", T0, T0 + 90 * DAY_MS)
            records.append((customer.encode(), orjson.dumps(example.to_dict())))
    feed(learner, table, records, topic="training")
    assert learner.learner is not None
    assert learner.unpublished == 3 and set(ids) <= set(learner.learner.population)
    assert not learner.histograms and not learner.risks and not learner.bases
    feed(learner, table, [(b"histogram:0", None), (b"base:1", None)], topic="training")
    assert set(learner.learner.population) & set(ids) == {"risk:x"}


def test_the_share_interval_reaches_the_scorers_and_must_be_positive() -> None:
    settings = Settings.from_env({"SCORESTREAM_MODEL_SHARE_INTERVAL_S": "2.5"})
    assert ScoringPipeline(settings).handler.histogram_interval_s == 2.5
    assert ScoringPipeline(Settings.from_env({})).handler.histogram_interval_s == 10.0
    for raw in ("0", "-1", "nan"):
        with pytest.raises(SettingsError, match="SHARE_INTERVAL_S"):
            Settings.from_env({"SCORESTREAM_MODEL_SHARE_INTERVAL_S": raw})
