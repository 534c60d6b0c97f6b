"""The management scorecard's aggregates: hand-computed segments, and kept by deltas they
equal a batch computation after any sequence of scorecards and erasures."""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.scoring.aggregates import (
    Aggregates,
    AggregatesError,
    Target,
    parse_targets,
)
from models.scoring.engine import ScoringEngine
from models.scoring.scorecard import ROW_LENGTH, Scorecard
from models.scoring.state import CustomerState
from schemas.units import DAY_MS
from tests.kit import at, ev


def card(cid: str, *, p: float = 0.1, tier: str = "Standard", cohort: str | None = "2026-01",
         channel: str | None = None, ltv: float = 0.0, predicted: float = 0.0,
         orders: int = 0, completeness: float = 0.0, surveys: tuple = (), as_of: int = 0,
         revenue: float = 0.0, engagement: float = 0.0, interactions: int = 0) -> Scorecard:
    return Scorecard(cid, as_of=as_of, data_completeness=completeness, ltv_historic=ltv,
                     ltv_predicted_12m=predicted, engagement=engagement, revenue_12m=revenue,
                     interactions_12m=interactions, days_since_last_interaction=0,
                     churn_probability=p, tier=tier, orders=orders, cohort=cohort,
                     acquisition_channel=channel, surveys=surveys)


def segment(report: dict, kind: str, name: str | None) -> dict:
    found = [s for s in report["segments"] if s["kind"] == kind and s["name"] == name
             and not s["other"]]
    assert len(found) == 1, (kind, name, [(s["kind"], s["name"]) for s in report["segments"]])
    return found[0]


def test_a_small_base_by_hand() -> None:
    cards = [
        card("A", p=0.2, tier="VIP", cohort="2026-01", channel="paid", ltv=300.0,
             predicted=500.0, orders=3, completeness=80.0,
             surveys=(("csat", 5, 0), ("nps", 10, 0))),
        card("B", p=0.6, tier="Standard", cohort="2026-01", channel="organic", ltv=50.0,
             predicted=100.0, orders=1, completeness=40.0,
             surveys=(("ces", 6, 0), ("csat", 2, 0), ("nps", 3, 0))),
        card("C", p=0.5, tier="Standard", cohort="2026-02", channel="paid", ltv=70.0,
             predicted=-10.0, orders=1, completeness=60.0, surveys=(("nps", 8, 0),)),
        card("D", p=0.9, tier="Standard", cohort=None, channel=None),
    ]
    agg = Aggregates()
    for c in cards:
        agg.replace(None, c)
    report = agg.report([Target("nps", 10.0), Target("churn_rate", 0.5)])
    whole = segment(report, "all", None)
    assert whole["customers"] == 4
    # expected churners 0.2 + 0.6 + 0.5 + 0.9; at risk 0.2*500 + 0.6*100 + 0.5*max(-10, 0)
    assert whole["totals"]["expected_churners"] == pytest.approx(2.2)
    assert whole["totals"]["revenue_at_risk"] == pytest.approx(160.0)
    assert whole["churn_rate"] == pytest.approx(0.55)
    assert whole["aov"] == pytest.approx(420.0 / 5)
    assert whole["averages"]["data_completeness"] == pytest.approx(45.0)
    # NPS: 10 promoter, 3 detractor, 8 passive -> (1 - 1) / 3 = 0, SE sqrt((2/3 - 0) / 3)
    assert whole["nps"]["value"] == 0.0
    assert whole["nps"]["standard_error"] == pytest.approx(100 * math.sqrt((2 / 3) / 3))
    assert (whole["nps"]["promoters"], whole["nps"]["passives"],
            whole["nps"]["detractors"]) == (1, 1, 1)
    # CSAT: 5 and 2 -> 50 % satisfied, mean 3.5; CES: one answer 6
    assert (whole["csat"]["value"], whole["csat"]["mean"]) == (50.0, 3.5)
    assert (whole["ces"]["value"], whole["ces"]["answers"], whole["ces"]["share_easy"]) == (
        6.0, 1, 100.0)
    vip, standard = segment(report, "tier", "VIP"), segment(report, "tier", "Standard")
    assert (vip["customers"], standard["customers"]) == (1, 3)
    assert vip["nps"]["value"] == 100.0 and standard["nps"]["value"] == -50.0
    assert segment(report, "cohort", "2026-01")["customers"] == 2
    assert segment(report, "cohort", None)["aov"] is None  # no orders
    paid = segment(report, "channel", "paid")
    assert paid["customers"] == 2 and paid["totals"]["ltv_historic"] == 370.0
    # targets: NPS 0 < 10 missed; churn rate 0.55 > 0.5 missed (lower is better)
    assert [(t["kpi"], t["actual"], t["met"]) for t in report["targets"]] == [
        ("nps", 0.0, False), ("churn_rate", pytest.approx(0.55), False)]
    kinds = [s["kind"] for s in report["segments"]]
    assert kinds == sorted(kinds, key=["all", "tier", "cohort", "channel"].index)


def test_answers_older_than_a_year_do_not_count() -> None:
    old = card("A", surveys=(("nps", 10, 0),), as_of=366 * DAY_MS)
    recent = card("A", surveys=(("nps", 10, 0),), as_of=365 * DAY_MS)
    assert Aggregates.of([old]).report()["segments"][0]["nps"]["answers"] == 0
    assert Aggregates.of([recent]).report()["segments"][0]["nps"]["answers"] == 1


def test_more_channels_than_the_limit_add_up_in_one_row() -> None:
    agg = Aggregates.of([card(f"C{i}", channel=f"ch{i % 5}") for i in range(12)])
    rows = [s for s in agg.report(limit=2)["segments"] if s["kind"] == "channel"]
    assert [(r["name"], r["customers"], r["other"]) for r in rows] == [
        ("ch0", 3, False), ("ch1", 3, False), (None, 6, True)]
    assert rows[-1]["segments"] == 3


def test_more_cohorts_than_the_limit_keep_the_newest_and_no_order() -> None:
    cohorts = ["2025-11", "2025-12", "2026-01", None]
    agg = Aggregates.of([card(f"C{i}", cohort=cohorts[i % 4]) for i in range(8)])
    rows = [s for s in agg.report(limit=2)["segments"] if s["kind"] == "cohort"]
    assert [(r["name"], r["customers"], r["other"]) for r in rows] == [
        ("2026-01", 2, False), (None, 2, False), (None, 4, True)]


def test_targets_parse_with_clear_errors() -> None:
    assert parse_targets("") == ()
    assert parse_targets(" nps = 30 ,revenue_at_risk=1e5") == (
        Target("nps", 30.0), Target("revenue_at_risk", 1e5))
    for text, message in [("nps", "kpi=value"), ("nps=abc", "no number"),
                          ("nps=nan", "finite"), ("nps=1,nps=2", "twice"),
                          ("joy=1", "unknown KPI")]:
        with pytest.raises(AggregatesError, match=message):
            parse_targets(text)


def test_a_target_without_answers_is_neither_met_nor_missed() -> None:
    report = Aggregates().report([Target("csat", 80.0)])
    assert report["segments"] == []
    assert report["targets"][0]["actual"] is None and report["targets"][0]["met"] is None


def test_raw_form_round_trips_through_json_and_merges() -> None:
    a = Aggregates.of([card("A", channel="x", surveys=(("nps", 9, 0),), ltv=1.25, orders=1)])
    b = Aggregates.of([card("B", tier="VIP", surveys=(("ces", 2, 0),), p=0.3333)])
    raw = orjson.loads(orjson.dumps(a.to_raw()))
    merged = Aggregates.from_raw(raw)
    merged.merge(Aggregates.from_raw(orjson.loads(orjson.dumps(b.to_raw()))))
    assert merged == Aggregates.of([card("A", channel="x", surveys=(("nps", 9, 0),), ltv=1.25,
                                         orders=1),
                                    card("B", tier="VIP", surveys=(("ces", 2, 0),), p=0.3333)])
    with pytest.raises(AggregatesError):
        Aggregates.from_raw([{"kind": "planet", "name": "x", "customers": 1, "sums": [0] * 9,
                              "answers": [[], [], []]}])
    with pytest.raises(AggregatesError):
        Aggregates.from_raw([{"kind": "all", "name": None, "customers": 1, "sums": [0],
                              "answers": [[], [], []]}])


# -- kept by deltas == a batch computation -----------------------------------------------

_money = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False).map(lambda x: round(x, 2))
_cards = st.builds(
    lambda cid, p, tier, cohort, channel, ltv, predicted, orders, completeness, nps, csat,
    ces, day, engagement: card(
        cid, p=p, tier=tier, cohort=cohort, channel=channel, ltv=ltv, predicted=predicted,
        orders=orders, completeness=completeness, engagement=engagement, as_of=day * DAY_MS,
        revenue=ltv, interactions=orders * 3,
        surveys=tuple(s for s in (("ces", ces, 0) if ces else None,
                                  ("csat", csat, 0) if csat else None,
                                  ("nps", nps, 0) if nps is not None else None) if s)),
    st.sampled_from(["A", "B", "C", "D"]),
    st.floats(min_value=0, max_value=1).map(lambda x: round(x, 4)),
    st.sampled_from(["Standard", "Premium", "VIP"]),
    st.sampled_from([None, "2025-12", "2026-01"]),
    st.sampled_from([None, "paid", "organic", "<b>x</b>"]),
    _money, _money,
    st.integers(0, 50),
    st.floats(min_value=0, max_value=100).map(lambda x: round(x, 1)),
    st.one_of(st.none(), st.integers(0, 10)),
    st.one_of(st.none(), st.integers(1, 5)),
    st.one_of(st.none(), st.integers(1, 7)),
    st.integers(0, 400),
    st.floats(min_value=0, max_value=100).map(lambda x: round(x, 2)),
)
_steps = st.lists(st.one_of(_cards, st.sampled_from(["A", "B", "C", "D"])), max_size=40)


def _played(steps: list) -> tuple[Aggregates, dict[str, Scorecard]]:
    """Each step is a customer's new scorecard, or (a bare id) its erasure: the aggregates
    kept by deltas, checked against a batch computation after every step, and each
    customer's latest scorecard."""
    agg: Aggregates = Aggregates()
    latest: dict[str, Scorecard] = {}
    for step in steps:
        if isinstance(step, str):
            agg.replace(latest.pop(step, None), None)
        else:
            agg.replace(latest.get(step.customer_id), step)
            latest[step.customer_id] = step
        assert agg == Aggregates.of(latest.values())
    return agg, latest


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_kept_by_deltas_equals_a_batch_computation(steps: list) -> None:
    agg, latest = _played(steps)
    assert agg.report() == Aggregates.of(latest.values()).report()
    # two partitions merged equal the whole
    left = Aggregates.of(c for cid, c in latest.items() if cid in "AB")
    left.merge(Aggregates.of(c for cid, c in latest.items() if cid not in "AB"))
    assert left == agg


# -- the engine's scorecard carries the segments ------------------------------------------

def test_the_scorecard_names_the_cohort_channel_and_orders() -> None:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    events = [
        ev("s2", "session_started", 3, channel="email"),
        ev("s1", "session_started", 2, channel="paid"),
        ev("s0", "session_started", 1),  # no channel: not an acquisition
        ev("o1", "order_placed", 40, amount=20.0),
        ev("o2", "order_placed", 45, amount=30.0),
    ]
    out = engine.apply_batch(None, events, watermark_ms=at(45))
    sc = out.scorecard
    assert (sc.orders, sc.acquisition_channel) == (2, "paid")
    assert sc.cohort == "2026-02"  # T0 + 40 days
    body = sc.to_dict()
    assert (body["orders"], body["cohort"], body["acquisition_channel"]) == (2, "2026-02", "paid")
    assert Scorecard.from_row(orjson.loads(orjson.dumps(sc.to_row()))) == sc
    state = CustomerState.restore(out.state.snapshot())
    assert state.acquired == [at(2), "paid"]
    assert state.snapshot() == out.state.snapshot()


_plain = st.builds(
    lambda cid, p, tier, ltv, orders, day: card(
        cid, p=p, tier=tier, cohort="2026-01" if cid in "AB" else None,
        channel="paid" if cid in "AC" else None, ltv=ltv, predicted=ltv * 2, orders=orders,
        revenue=ltv, as_of=day * DAY_MS),
    st.sampled_from(["A", "B", "C", "D"]),
    st.sampled_from([0.1, 0.25, 0.5]),
    st.sampled_from(["Standard", "VIP"]),
    st.sampled_from([0.0, 10.0, 12.34]),
    st.integers(0, 3),
    st.integers(0, 10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_plain, _plain, _plain, st.sampled_from(["A", "B", "C", "D"])),
                max_size=60))
def test_the_usual_update_equals_a_batch_computation(steps: list) -> None:
    """Cards without answers and few segments: most updates keep a customer's segments (the
    unrolled path), between erasures that empty a segment and customers that bring it back."""
    _played(steps)


def test_raw_tallies_are_checked() -> None:
    raw = Aggregates.of([card("A", surveys=(("nps", 9, 0),))]).to_raw()
    raw[0]["answers"][0] = [[9, -1]]
    with pytest.raises(AggregatesError):
        Aggregates.from_raw(raw)
    raw[0]["answers"][0] = [[9, 10**9]]  # a large count is one addition, not 10**9
    assert Aggregates.from_raw(raw).report()["segments"][0]["nps"]["answers"] == 10**9
    raw[0]["sums"][0] = math.inf
    with pytest.raises(AggregatesError):
        Aggregates.from_raw(raw)


def test_a_row_written_before_the_segments_counts_in_them_once_restored() -> None:
    """A state whose last scorecard predates orders, cohort and channel restores with them
    taken from the state, so the card counted on assignment is the one taken out when the
    customer is scored next."""
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    events = [ev("s1", "session_started", 1, channel="paid"),
              ev("o1", "order_placed", 2, amount=20.0)]
    out = engine.apply_batch(None, events, watermark_ms=at(2))
    stored = orjson.loads(out.state.snapshot())
    assert len(stored["last"]) == ROW_LENGTH
    # as written before the propensities, before the segments, and before survey answers too
    for cut in (21, 18, 17):
        old = dict(stored, last=stored["last"][:cut])
        restored = CustomerState.from_dict(old)
        counted = Scorecard.from_row(restored.last)
        assert (counted.orders, counted.cohort, counted.acquisition_channel) == (
            1, "2026-01", "paid")
        agg = Aggregates.of([counted])
        later = engine.apply_batch(restored, [ev("o2", "order_placed", 9, amount=5.0)],
                                   watermark_ms=at(9))
        agg.replace(later.previous_scorecard, later.scorecard)
        assert agg == Aggregates.of([later.scorecard])


def test_revenue_retention_by_hand() -> None:
    """NRR and GRR over the customers who bought in the prior 90 days, per segment."""
    def buyer(cid: str, before: float, now: float, cohort: str) -> Scorecard:
        return dataclasses.replace(card(cid, cohort=cohort), revenue_prior_90d=before,
                                   revenue_90d=now)
    cards = [buyer("A", 20.0, 30.0, "2026-01"),   # expanded by 10
             buyer("B", 20.0, 0.0, "2026-01"),    # churned 20
             buyer("C", 40.0, 10.0, "2026-02"),   # contracted by 30
             buyer("D", 0.0, 50.0, "2026-02")]    # new revenue: not in the cohort
    agg = Aggregates()
    for c in cards:
        agg.replace(None, c)
    report = agg.report()
    whole = segment(report, "all", None)["retention"]
    assert whole == {"period_days": 90, "start": 80.0, "end": 40.0, "expansion": 10.0,
                     "contraction": 30.0, "churned": 20.0, "nrr": 0.5, "grr": 0.375}
    assert segment(report, "cohort", "2026-01")["retention"]["nrr"] == pytest.approx(30 / 40)
    assert segment(report, "cohort", "2026-02")["retention"]["grr"] == pytest.approx(10 / 40)
    # the unrolled update moves the retention sums too
    agg.replace(cards[1], buyer("B", 20.0, 25.0, "2026-01"))
    assert segment(agg.report(), "all", None)["retention"]["nrr"] == pytest.approx(65 / 80)
    assert agg == Aggregates.of([*cards[:1], buyer("B", 20.0, 25.0, "2026-01"), *cards[2:]])
    assert agg.report([Target("nrr", 0.9)])["targets"][0]["met"] is False
