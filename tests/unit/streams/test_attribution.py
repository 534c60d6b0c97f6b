"""Attribution in the worker's shell: its settings, its topic, the reader's totals, the gauges
and the API's query parameters (no broker)."""

from __future__ import annotations

import orjson
import pytest

from models.config import AttributionConfig, ScoringConfig
from models.scoring.engine import ScoringEngine
from streams.runtime.kafka import topic_specs
from streams.runtime.pipeline import ScoringPipeline
from streams.settings import Settings, SettingsError
from streams.stages.attribution import AttributionReader
from streams.web import attribution_query
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
    assert {channel for _name, _model, channel in gauges} == {"email", "paid", "other",
                                                               "(none)"}
    assert gauges[("scorestream_attributed_value", "last_click", "email")] == 90.0
    assert gauges[("scorestream_attributed_value", "first_click", "paid")] == 90.0
    assert gauges[("scorestream_attributed_value", "linear", "other")] == 30.0
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
    ({"model": "markov"}, "model must be one of last_click, first_click"),
    ({"from": "yesterday"}, "from and to must be dates"),
    ({"to": "2026-1-5"}, "from and to must be dates"),
    ({"from": "2026-03-01", "to": "2026-02-01"}, "from must not be after to"),
])
def test_attribution_query_errors_do_not_quote_the_request(query: dict[str, str],
                                                           error: str) -> None:
    with pytest.raises(ValueError, match=error) as caught:
        attribution_query(query)
    assert not any(value in str(caught.value) for value in query.values())
