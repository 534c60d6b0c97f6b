"""Attribution totals: per conversion day, reconciled with the conversions' value, bounded
for gauges."""

from __future__ import annotations

import math
from typing import Any

import pytest

from models.attribution.rules import MODELS
from models.attribution.totals import OTHER, UNATTRIBUTED, AttributionTotals
from models.config import AttributionConfig, ScoringConfig
from models.scoring.engine import ScoringEngine
from tests.kit import DAY_MS, T0, ev

DAY0 = T0 // DAY_MS


def records() -> list[dict[str, Any]]:
    """Attribution records of three customers' journeys over a few days, by the engine."""
    engine = ScoringEngine(ScoringConfig(attribution=AttributionConfig(enabled=True)))
    batches = {
        "A": [ev("a1", "session_started", 1, customer_id="A", channel="paid", campaign="w"),
              ev("a2", "clicked", 2, customer_id="A", campaign_id="jan"),
              ev("a3", "order_placed", 2.5, customer_id="A", amount=100.0),
              ev("a4", "order_placed", 5, customer_id="A", amount=30.0)],
        "B": [ev("b1", "session_started", 4, customer_id="B", channel="direct"),
              ev("b2", "order_placed", 4.5, customer_id="B", amount=20.0, currency="GBP")],
        "C": [ev("c1", "order_placed", 5, customer_id="C", amount=7.5)],
    }
    out = []
    for customer, events in batches.items():
        outcome = engine.apply_batch(None, events, events[-1]["occurred_at"], customer)
        out += [a.to_record(emitted_at=0) for a in outcome.attributions]
    return out


def totals() -> AttributionTotals:
    t = AttributionTotals()
    for record in records():
        t.add(record)
    return t


def test_every_model_credits_the_whole_value_over_channels_and_campaigns() -> None:
    report = totals().report()
    assert report["conversions"] == 4
    assert report["value"] == pytest.approx(100.0 + 30.0 + 23.4 + 7.5)  # 20 GBP = 23.40 EUR
    assert report["unattributed"] == {"conversions": 1, "value": 7.5}
    assert sorted(report["models"]) == sorted(MODELS)
    for model, tables in report["models"].items():
        for table in ("channels", "campaigns"):
            rows = tables[table]
            credited = math.fsum(r["value"] for r in rows) + report["unattributed"]["value"]
            assert credited == pytest.approx(report["value"], abs=0.02), (model, table)
            assert math.fsum(r["conversions"] for r in rows) == pytest.approx(3.0, abs=1e-3)


def test_hand_computed_channels_of_one_model() -> None:
    channels = totals().report("last_click")["models"]["last_click"]["channels"]
    # A's orders: the email click (day 2) is the last click of both; B's only touch is direct.
    # Paid touched both of A's orders and earned nothing: it stays listed, at 0.
    assert channels == [{"channel": "email", "conversions": 2.0, "value": 130.0},
                        {"channel": "direct", "conversions": 1.0, "value": 23.4},
                        {"channel": "paid", "conversions": 0.0, "value": 0.0}]
    campaigns = totals().report("first_click")["models"]["first_click"]["campaigns"]
    assert campaigns == [{"campaign": "w", "conversions": 2.0, "value": 130.0},
                         {"campaign": None, "conversions": 1.0, "value": 23.4},
                         {"campaign": "jan", "conversions": 0.0, "value": 0.0}]


def test_a_limit_keeps_the_largest_rows_and_adds_up_the_rest() -> None:
    """Campaign names come from the sources (utm tags): a report lists at most `limit` of
    them and of the channels, and says how many more there were and what they earned."""
    last = totals().report("last_click", limit=1)["models"]["last_click"]
    assert last["channels"] == [{"channel": "email", "conversions": 2.0, "value": 130.0}]
    assert last["channels_other"] == {"channels": 2, "conversions": 1.0, "value": 23.4}
    every = totals().report("last_click")["models"]["last_click"]
    assert len(every["channels"]) == 3
    assert every["channels_other"] == {"channels": 0, "conversions": 0, "value": 0}


def test_a_range_of_conversion_days() -> None:
    t = totals()
    day5 = t.report("linear", first_day=DAY0 + 5, last_day=DAY0 + 5)
    assert (day5["conversions"], day5["value"]) == (2, 37.5)
    assert day5["models"]["linear"]["channels"] == [
        {"channel": "email", "conversions": 0.5, "value": 15.0},
        {"channel": "paid", "conversions": 0.5, "value": 15.0}]
    assert t.report(first_day=DAY0 + 6)["conversions"] == 0
    assert t.report(last_day=DAY0 + 2)["conversions"] == 1


def test_gauge_rows_keep_the_top_channels_and_add_up_the_rest() -> None:
    t = totals()
    rows = {(m, c): (n, v) for m, c, n, v in t.by_channel(top=1)}
    assert {c for _m, c in rows} == {"email", OTHER, UNATTRIBUTED}
    assert rows[("last_click", OTHER)] == (1.0, pytest.approx(23.4))
    assert rows[("linear", UNATTRIBUTED)] == (1, 7.5)
    everything = {(m, c) for m, c, _n, _v in t.by_channel(top=10)}
    assert {c for _m, c in everything} == {"email", "paid", "direct", UNATTRIBUTED}
    assert AttributionTotals().by_channel(10) == []


def test_a_malformed_record_raises_and_counts_nothing() -> None:
    t = totals()
    before = t.report()
    bad = {**records()[0], "touches": [{"channel": "x", "campaign": None, "credit": {"linear": 1}}]}
    with pytest.raises(KeyError):
        t.add(bad)
    assert t.report() == before and t.records == 4
    # a campaign that is not a string (it would be a key of the report) fails as early
    touch = {"channel": "x", "campaign": ["a"], "share": {"linear": 1.0},
             "credit": {"linear": 1.0}}
    with pytest.raises(TypeError):
        t.add({**records()[0], "touches": [touch]})
    assert t.report() == before and t.records == 4
