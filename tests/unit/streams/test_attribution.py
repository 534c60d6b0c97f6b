"""Attribution in the worker's shell: its settings, its topic, the reader's totals, the gauges
and the API's query parameters (no broker)."""

from __future__ import annotations

import orjson
import pytest

from models.attribution.markov import DataDrivenModel
from models.config import AttributionConfig, ScoringConfig
from models.scoring.engine import ScoringEngine
from streams.runtime.kafka import topic_specs
from streams.runtime.pipeline import ScoringPipeline
from streams.settings import Settings, SettingsError
from streams.stages.attribution import AttributionReader
from streams.web import attribution_query, data_driven_report
from tests.kit import DAY_MS, T0, ev


def test_default_settings_give_the_cores_default_config() -> None:
    assert Settings.from_env({}).scoring_config() == ScoringConfig()


def test_attribution_variables() -> None:
    settings = Settings.from_env({
        "SCORESTREAM_ATTRIBUTION_ENABLED": "true",
        "SCORESTREAM_ATTRIBUTION_LOOKBACK_DAYS": "30",
        "SCORESTREAM_ATTRIBUTION_HALF_LIFE_DAYS": "3.5",
        "SCORESTREAM_ATTRIBUTION_VIEWS": "true",
        "SCORESTREAM_ATTRIBUTION_TOUCHES": "web:session_started, support:ticket_opened",
        "SCORESTREAM_ATTRIBUTION_CONVERSIONS": "order_placed,goal_completed:signup",
        "SCORESTREAM_ATTRIBUTION_DIRECT_CHANNELS": "direct,typed",
    })
    assert settings.scoring_config().attribution == AttributionConfig(
        enabled=True, lookback_days=30, half_life_days=3.5, views=True,
        touch_types=frozenset({("web", "session_started"), ("support", "ticket_opened")}),
        conversions=frozenset({"order_placed", "goal_completed:signup"}),
        direct_channels=frozenset({"direct", "typed"}))
    funnel = Settings.from_env({
        "SCORESTREAM_ATTRIBUTION_FUNNEL": " information_found, signup ,purchase",
        "SCORESTREAM_ATTRIBUTION_FUNNEL_WINDOW_DAYS": "7",
        "SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_MIN_PATHS": "50"})
    assert funnel.scoring_config().attribution == AttributionConfig(
        funnel=("information_found", "signup", "purchase"), funnel_window_days=7,
        data_driven_min_paths=50)
    off = Settings.from_env({"SCORESTREAM_ATTRIBUTION_ENABLED": "false"}).scoring_config()
    assert not off.attribution.enabled and not off.attribution.kinds


@pytest.mark.parametrize(("variable", "value"), [
    ("SCORESTREAM_ATTRIBUTION_LOOKBACK_DAYS", "-1"),
    ("SCORESTREAM_ATTRIBUTION_HALF_LIFE_DAYS", "0"),
    ("SCORESTREAM_ATTRIBUTION_HALF_LIFE_DAYS", "inf"),
    ("SCORESTREAM_ATTRIBUTION_MAX_TOUCHES", "0"),
    ("SCORESTREAM_ATTRIBUTION_TOUCHES", "web:visit"),
    ("SCORESTREAM_ATTRIBUTION_TOUCHES", "shop:session_started"),
    ("SCORESTREAM_ATTRIBUTION_CONVERSIONS", "page_view"),
    ("SCORESTREAM_ATTRIBUTION_CONVERSIONS", "order_placed:big"),
    ("SCORESTREAM_ATTRIBUTION_RETENTION_DAYS", "0"),
    ("SCORESTREAM_ATTRIBUTION_RETENTION_DAYS", "nan"),
    ("SCORESTREAM_ATTRIBUTION_GAUGE_CHANNELS", "-1"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_MIN_PATHS", "0"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_REFIT_PATHS", "0"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_REFIT_S", "0"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_DRAWS", "-1"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_LEVEL", "1"),
    ("SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_CHANNELS", "0"),
    ("SCORESTREAM_ATTRIBUTION_JOURNEYS_STEPS", "0"),
    ("SCORESTREAM_ATTRIBUTION_JOURNEYS_TOP", "51"),
    ("SCORESTREAM_ATTRIBUTION_FUNNEL", "signup,purchase,signup"),
    ("SCORESTREAM_ATTRIBUTION_FUNNEL", "signup,cart"),
    ("SCORESTREAM_ATTRIBUTION_FUNNEL_WINDOW_DAYS", "0"),
])
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable.removeprefix("SCORESTREAM_ATTRIBUTION_")):
        Settings.from_env({variable: value})


def test_an_event_cannot_be_a_touch_and_a_conversion() -> None:
    with pytest.raises(SettingsError, match="TOUCHES and _CONVERSIONS"):
        Settings.from_env({"SCORESTREAM_ATTRIBUTION_TOUCHES": "crm:order_placed"})


def test_the_attributions_topic_keeps_its_own_retention() -> None:
    settings = Settings.from_env({"SCORESTREAM_ATTRIBUTION_RETENTION_DAYS": "2"})
    [spec] = [s for s in topic_specs(settings) if s.name == "attributions"]
    assert spec.partitions == settings.partitions
    assert spec.config == {"cleanup.policy": "delete", "retention.ms": str(2 * DAY_MS)}


def _records() -> list[bytes]:
    engine = ScoringEngine(ScoringConfig(attribution=AttributionConfig(enabled=True)))
    events = [ev("w1", "session_started", 1, channel="paid"),
              ev("w2", "session_started", 2, channel="social"),
              ev("w3", "session_started", 3, channel="email"),
              ev("o1", "order_placed", 4, amount=90.0),
              ev("o2", "order_placed", 5, customer_id="C2", amount=5.0)]
    out = []
    for customer in ("C1", "C2"):
        mine = [e for e in events if e["customer_id"] == customer]
        outcome = engine.apply_batch(None, mine, mine[-1]["occurred_at"], customer)
        out += [orjson.dumps(a.to_record(emitted_at=0)) for a in outcome.attributions]
    return out


def test_the_reader_folds_records_and_skips_what_is_not_one() -> None:
    reader = AttributionReader({"bootstrap.servers": "127.0.0.1:9"}, "attributions", "g")
    assert not reader.caught_up
    assert [reader.offer(value) for value in _records()] == [True, True]
    assert reader.offer(b"not json") is False
    assert reader.offer(orjson.dumps({"value": 1})) is False
    assert reader.offer(None) is False
    assert reader.skipped == 2
    report = reader.report("linear")
    assert (report["conversions"], report["value"]) == (2, 95.0)
    assert report["models"]["linear"]["channels"][0] == {
        "channel": "email", "conversions": 0.3333, "value": 30.0}
    day4 = T0 // DAY_MS + 4
    assert reader.report(first_day=day4, last_day=day4)["value"] == 90.0


def _gauges(pipeline: ScoringPipeline) -> dict[tuple[str, str, str], float]:
    found = {}
    for family in pipeline.metrics.registry.collect():
        if family.name.startswith("scorestream_attributed_"):
            for sample in family.samples:
                found[(sample.name, sample.labels["model"], sample.labels["channel"])] = (
                    sample.value)
    return found


def test_gauges_come_from_the_learners_worker_with_bounded_channels() -> None:
    settings = Settings.from_env({"SCORESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
                                  "SCORESTREAM_ATTRIBUTION_ENABLED": "true",
                                  "SCORESTREAM_ATTRIBUTION_GAUGE_CHANNELS": "2"})
    pipeline = ScoringPipeline(settings)
    assert pipeline.attribution is not None
    for value in _records():
        pipeline.attribution.offer(value)
    assert _gauges(pipeline) == {}  # another worker runs the learner: it reports them
    pipeline.learner.on_assigned(0, _EmptyTable())
    gauges = _gauges(pipeline)
    # The two channels credited most over all models, the third one as other.
    assert {channel for _name, _model, channel in gauges} == {"email", "paid", "(other)",
                                                               "(none)"}
    assert gauges[("scorestream_attributed_value", "last_click", "email")] == 90.0
    assert gauges[("scorestream_attributed_value", "first_click", "paid")] == 90.0
    assert gauges[("scorestream_attributed_value", "linear", "(other)")] == 30.0
    assert gauges[("scorestream_attributed_conversions", "linear", "(none)")] == 1.0


class _EmptyTable:
    """A learner's table with no bundle yet."""

    def get(self, partition: int, key: bytes) -> bytes | None:
        return None


def test_attribution_off_means_no_reader() -> None:
    settings = Settings.from_env({"SCORESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
                                  "SCORESTREAM_ATTRIBUTION_ENABLED": "false"})
    pipeline = ScoringPipeline(settings)
    assert pipeline.attribution is None and pipeline.engine.config.attribution.kinds == {}


@pytest.mark.parametrize(("query", "error"), [
    ({"model": "markov"}, "model must be one of last_click, first_click.*, data_driven"),
    ({"from": "yesterday"}, "from and to must be dates"),
    ({"to": "2026-1-5"}, "from and to must be dates"),
    ({"from": "2026-03-01", "to": "2026-02-01"}, "from must not be after to"),
])
def test_attribution_query_errors_do_not_quote_the_request(query: dict[str, str],
                                                           error: str) -> None:
    with pytest.raises(ValueError, match=error) as caught:
        attribution_query(query)
    assert not any(value in str(caught.value) for value in query.values())


def _journey_records() -> list[bytes]:
    """Three customers' records: two converted paths and a null one, a goal of the funnel."""
    config = ScoringConfig(attribution=AttributionConfig(enabled=True, funnel=("signup",)))
    engine = ScoringEngine(config)
    batches = {
        "C1": [ev("w1", "session_started", 1, channel="paid"),
               ev("w2", "session_started", 2, channel="email"),
               ev("o1", "order_placed", 3, amount=60.0)],
        "C2": [ev("w3", "session_started", 1, customer_id="C2", channel="email"),
               ev("g1", "goal_completed", 1.5, customer_id="C2", goal="signup"),
               ev("o2", "order_placed", 2, customer_id="C2", amount=20.0)],
        "C3": [ev("w4", "session_started", 1, customer_id="C3", channel="paid"),
               ev("w5", "session_started", 100, customer_id="C3", channel="social")],
    }
    out = []
    for customer, events in batches.items():
        outcome = engine.apply_batch(None, events, events[-1]["occurred_at"], customer)
        out += [orjson.dumps(r.to_record(emitted_at=0)) for r in outcome.attributions]
    return out


def test_the_reader_folds_closed_journeys_and_fits_the_model_now_and_then() -> None:
    models: list[DataDrivenModel] = []
    reader = AttributionReader({"bootstrap.servers": "127.0.0.1:9"}, "attributions", "g",
                               funnel=("signup",), refit_paths=3, refit_s=3600.0, draws=20,
                               on_model=models.append)
    records = _journey_records()
    assert [orjson.loads(r)["kind"] for r in records] == [
        "conversion", "goal", "conversion", "null_journey"]
    for value in records[:2]:
        assert reader.offer(value)
    assert reader.refit() is None and models == []  # 1 closed path: not due yet
    assert reader.refit(force=True) is not None and models[-1].paths == 1
    for value in records[2:]:
        assert reader.offer(value)
    assert reader.refit() is None  # 2 new paths of 3
    assert reader.offer(orjson.dumps({"kind": "null_journey", "path": [], "x": 1})) is False
    assert reader.offer(orjson.dumps({"kind": "conversion", "path": ["(null)"],
                                      "occurred_at": 1, "value": 1.0, "touches": []})) is False
    assert reader.report()["conversions"] == 2  # the refused conversion counted nowhere
    report = reader.journeys_report(top=5)
    assert report["closed"] == {"paths": 3, "converted": 2, "null": 1,
                                "conversions_without_path": 0, "conversions_before_paths": 0}
    assert report["funnel"]["steps"][0]["reached"] == 1
    assert [(n.get("channel") or n["terminal"], n["value"]) for n in
            report["sankey"]["nodes"]] == [("paid", 2), ("email", 1), ("email", 1),
                                           ("conversion", 2), ("drop-off", 1)]
    assert reader.offer(records[-1])  # one more closed path: 3 since the last fit
    reader.fit_seconds = 0.0  # no spacing after the last fit (another test's subject)
    model = reader.refit()
    assert model is models[-1] and model.paths == 4 and model.conversions == 2
    assert model.version == f"4-{reader.journeys.counts.digest()}"
    assert data_driven_report(model, 4)["ready"] and not data_driven_report(model, 5)["ready"]
    assert data_driven_report(model, 4)["model"]["channels"][0]["channel"] == "email"


def test_the_pipeline_hands_new_models_to_the_scoring_engine_and_reports_them() -> None:
    settings = Settings.from_env({"SCORESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
                                  "SCORESTREAM_ATTRIBUTION_ENABLED": "true",
                                  "SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_DRAWS": "10"})
    pipeline = ScoringPipeline(settings)
    reader = pipeline.attribution
    assert reader is not None and pipeline.engine.data_driven is None
    for value in _journey_records():
        reader.offer(value)
    model = reader.refit(force=True)
    assert model is not None and pipeline.engine.data_driven is model
    gauges = {(f.name, tuple(sorted(s.labels.items()))): s.value
              for f in pipeline.metrics.registry.collect()
              if f.name.startswith("scorestream_data_driven_") for s in f.samples}
    assert gauges[("scorestream_data_driven_paths", ())] == 3.0
    assert gauges[("scorestream_data_driven_weight",
                   (("bound", "point"), ("channel", "email")))] == model.weights["email"]
    # C3's null path is its paid touch; its social touch opened the next path
    assert {dict(labels)["channel"] for _name, labels in gauges if labels} == {"email", "paid"}


def test_channels_named_like_the_journeys_own_states_stay_channels() -> None:
    """A session's channel is any text: one named like a state of the chain or a node of the
    Sankey ((null), (drop-off), ...) is kept in quotes, counted and reported like any."""
    config = ScoringConfig(attribution=AttributionConfig(enabled=True))
    engine = ScoringEngine(config)
    names = ["(null)", "(drop-off)", "(more)", "(start)", "(conversion)"]
    events = [ev(f"w{n}", "session_started", 1 + n / 10, channel=name)
              for n, name in enumerate(names)] + [ev("o1", "order_placed", 2, amount=50.0)]
    outcome = engine.apply_batch(None, events, events[-1]["occurred_at"], "C1")
    [record] = [orjson.dumps(r.to_record(emitted_at=0)) for r in outcome.attributions]
    reader = AttributionReader({"bootstrap.servers": "127.0.0.1:9"}, "attributions", "g")
    assert reader.offer(record)
    assert reader.report()["conversions"] == 1
    sankey = reader.journeys_report(top=5)["sankey"]
    assert [n["channel"] for n in sankey["nodes"] if n["step"] is not None] == [
        f'"{name}"' for name in names]
    assert [f["inflow"] for f in sankey["flow"]] == [1] * len(names)
    model = reader.refit(force=True)
    assert model is not None and set(model.weights) == {f'"{name}"' for name in names}


def test_the_reader_fits_once_caught_up_and_never_more_than_a_fiftieth_of_its_time(
) -> None:
    models: list[DataDrivenModel] = []
    reader = AttributionReader({"bootstrap.servers": "127.0.0.1:9"}, "attributions", "g",
                               refit_paths=1, refit_s=3600.0, draws=20,
                               on_model=models.append)
    records = _journey_records()
    reader._behind = {0}  # still reading the topic from its start
    for value in records:
        reader.offer(value)
    assert reader.refit() is None and models == []
    reader._behind = set()  # caught up: due
    assert reader.refit() is not None and len(models) == 1
    reader.fit_seconds = 1.0  # as if that fit had taken a second: the next not for 50
    reader.offer(records[0])
    assert reader.refit() is None
    reader._fitted_at -= 49.0
    assert reader.refit() is None
    reader._fitted_at -= 1.5
    assert reader.refit() is not None and len(models) == 2
    reader.fit_seconds = 1.0  # the real fit took milliseconds: the next not for 50 s again
    reader.offer(records[0])
    assert reader.refit() is None and reader.refit(force=True) is not None and len(models) == 3
