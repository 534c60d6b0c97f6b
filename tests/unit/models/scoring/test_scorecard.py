"""Scorecards from the engine: values age with as_of alone; JSON form; redeliveries."""

from __future__ import annotations

import orjson

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.scoring.engine import ScoringEngine
from models.scoring.scorecard import Scorecard
from tests.kit import at, ev


def journey() -> list[dict]:
    return [
        ev("p1", "profile_updated", 0, fields={"email": "a@b.c", "first_name": "A"}),
        ev("o1", "order_placed", 0, order_id="o1", amount=100.0, currency="EUR"),
        ev("w1", "page_view", 1, url="/"),
        ev("o2", "order_placed", 30, order_id="o2", amount=50.0, currency="GBP"),
    ]


def test_engine_scorecard_key_values_by_hand() -> None:
    eng = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    out = eng.apply_batch(None, journey(), at(30))
    sc = out.scorecard
    assert sc is not None and out.previous_scorecard is None
    assert sc.data_completeness == 28.6  # (2 + 1) / 10.5
    assert sc.ltv_historic == 158.5  # 100 + 50 * 1.17
    assert sc.revenue_12m == 158.5
    assert sc.interactions_12m == 3  # two orders and a page view
    assert sc.days_since_last_interaction == 0
    assert sc.as_of == at(30)
    assert sc.model_versions["churn"] == "churn-00000"
    assert sc.ltv_predicted_12m > 0 and 0 < sc.p_alive <= 1
    assert 0 <= sc.engagement <= 100


def test_values_that_age_change_when_only_as_of_advances() -> None:
    eng = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    state = eng.apply_batch(None, journey(), at(30)).state
    a, b = eng.score(state, at(100)), eng.score(state, at(380))
    assert (a.days_since_last_interaction, b.days_since_last_interaction) == (70, 350)
    assert (a.revenue_12m, b.revenue_12m) == (158.5, 58.5)  # o1 (day 0) left at day 365
    assert (a.interactions_12m, b.interactions_12m) == (3, 1)
    assert a.engagement > b.engagement
    assert a.ltv_predicted_12m > b.ltv_predicted_12m  # P(alive) decays with silence


def test_redelivered_batch_changes_nothing_and_previous_scorecard_is_kept() -> None:
    eng = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    first = eng.apply_batch(None, journey(), at(30))
    again = eng.apply_batch(first.state, journey(), at(30))
    assert again.scorecard is None and again.duplicates == 4 and again.applied == 0
    nxt = eng.apply_batch(first.state, [ev("w2", "page_view", 31, url="/")], at(31))
    assert nxt.previous_scorecard == first.scorecard


def test_to_dict_is_json_and_row_roundtrip() -> None:
    eng = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    sc = eng.apply_batch(None, journey(), at(30)).scorecard
    assert sc is not None
    d = orjson.loads(orjson.dumps(sc.to_dict()))
    assert d["ltv"]["historic"] == 158.5 and d["tier"] == "Standard"
    assert Scorecard.from_row(orjson.loads(orjson.dumps(sc.to_row()))) == sc
