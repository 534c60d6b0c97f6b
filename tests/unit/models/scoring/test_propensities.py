"""Upsell and advocacy from events to labels, scorecards, alerts and the backtest."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from models.config import ScoringConfig
from models.history.backtest import propensities, summarize
from models.learning.bundle import ModelBundle
from models.learning.learner import Learner
from models.learning.prediction import Factor
from models.learning.propensity import AdvocacyModel, UpsellModel, upsell_heuristic, wilson
from models.scoring.alerts import AlertMemory, AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.features import FEATURE_NAMES, UPSELL_NAMES
from models.scoring.labels import ADVOCACY, UPSELL, PendingLabel
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from tests.kit import at, ev


def order(event_id: str, day: float, *categories: str, **kw: object) -> dict:
    return ev(event_id, "order_placed", day, categories=list(categories), **kw)


def start(event_id: str, day: float, mrr: float) -> dict:
    return ev(event_id, "subscription_started", day, plan="p", mrr=mrr, currency="EUR")


def nps(event_id: str, day: float, score: int, customer_id: str = "C1") -> dict:
    return ev(event_id, "survey_answered", day, customer_id=customer_id, survey="nps",
              score=score)


# -- what counts as an upsell --------------------------------------------------------------


def test_a_new_category_after_a_first_order_is_an_upsell_and_nothing_else_is() -> None:
    state = CustomerState("C1")
    probe = state.pending[UPSELL] = PendingLabel(UPSELL, 0, at(1000), (), 0.0, "v")
    steps = [
        (order("o1", 1, "books"), 0),           # a first order: nothing to upsell from yet
        (order("o2", 2, "books"), 0),           # the same category again
        (order("o3", 3, "books", "music"), 1),  # music is new
        (order("o4", 4, "music"), 1),           # known by now
        (ev("o5", "order_placed", 5), 1),       # an order naming no category
        (start("s1", 6, 9.0), 1),               # a first plan is a start, not an upgrade
        (start("s2", 7, 19.0), 2),              # a dearer plan while subscribed: an upgrade
        (start("s3", 6.5, 29.0), 2),            # an older start, arrived late: neither
        (ev("x1", "subscription_cancelled", 8), 2),
        (start("s4", 9, 39.0), 2),              # a restart after a cancellation
    ]
    for event, expected in steps:
        state.apply(event)
        assert probe.upsold == expected, event["event_id"]
    assert probe.label() == 1.0
    assert state.categories == {"books", "music"} and state.plan == [at(9), 3900]
    again = CustomerState.restore(state.snapshot())
    assert again.categories == state.categories and again.plan == state.plan
    assert again.pending[UPSELL].upsold == 2


def test_only_customers_with_something_to_upsell_from_get_a_probability() -> None:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    plain = engine.apply_batch(None, [ev("o1", "order_placed", 1)], at(1))
    assert plain.scorecard.upsell_probability is None and UPSELL not in plain.state.pending
    shopper = engine.apply_batch(None, [order("o1", 1, "books", customer_id="C2")], at(1))
    p = shopper.scorecard.upsell_probability
    pending = shopper.state.pending[UPSELL]
    assert p is not None and 0 < p < 1 and pending.prediction == p
    assert len(pending.features) == len(UPSELL_NAMES)
    assert pending.due_at == at(1) + 30 * 86_400_000
    # the heuristic answers from the 12-month pace: one order in a year, just now
    x = dict(zip(UPSELL_NAMES, pending.features, strict=True))
    assert p == pytest.approx(upsell_heuristic(x), abs=1e-4)
    assert upsell_heuristic(x) == pytest.approx(1 - math.exp(-0.25 * 30 / 365), abs=1e-6)


def test_an_upsell_label_resolves_from_what_the_next_30_days_brought() -> None:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    out = engine.apply_batch(None, [order("o1", 1, "books")], at(1))
    out = engine.apply_batch(out.state, [order("o2", 10, "music")], at(10))
    assert not [e for e in out.training_examples if e.model == UPSELL]  # not due yet
    out = engine.resolve_due(out.state, at(31))
    [example] = [e for e in out.training_examples if e.model == UPSELL]
    assert example.label == 1.0 and set(example.features) == set(UPSELL_NAMES)
    assert example.taken_at == at(1) and example.resolved_at == at(31)
    # one pending label per model at a time: the customer was active within the horizon, so
    # a fresh one starts as this one resolves, and without a new category it resolves to 0
    out = engine.apply_batch(out.state, [order("o3", 40, "books")], at(40))
    out = engine.resolve_due(out.state, at(80))
    assert [e.label for e in out.training_examples if e.model == UPSELL] == [0.0]


def test_an_nps_answer_is_a_label_with_the_features_from_just_before_it() -> None:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    out = engine.apply_batch(None, [ev("t1", "ticket_opened", 1, ticket_id="t", priority="high",
                                       sentiment=-0.8)], at(1))
    out = engine.apply_batch(out.state, [nps("n1", 2, 10), ev("t2", "ticket_opened", 2.5,
                                                              ticket_id="u", priority="high")],
                             at(3))
    [example] = [e for e in out.training_examples if e.model == ADVOCACY]
    assert example.label == 1.0 and example.taken_at == at(2)
    assert set(example.features) == set(FEATURE_NAMES)
    # one ticket before the answer, not the one after it
    assert example.features["tickets_90d"] == pytest.approx(math.log1p(1))
    assert example.challenger is None  # the model said nothing yet
    again = engine.apply_batch(out.state, [nps("n1", 2, 10)], at(3))  # a redelivery
    assert not [e for e in again.training_examples if e.model == ADVOCACY]
    first = engine.apply_batch(None, [nps("n9", 1, 3, customer_id="C9")], at(1))
    # a first event says nothing about the customer before it
    assert not [e for e in first.training_examples if e.model == ADVOCACY]
    detractor = engine.apply_batch(out.state, [nps("n2", 5, 6)], at(5))
    assert [e.label for e in detractor.training_examples if e.model == ADVOCACY] == [0.0]


def test_the_learner_learns_both_and_the_scorecard_shows_them() -> None:
    cfg = ScoringConfig(upsell_min_labels=40, advocacy_min_labels=40)
    learner = Learner(cfg)
    engine = ScoringEngine(cfg, learner.publish())
    # promoters order often, detractors have tickets: the models must tell them apart
    examples = []
    for i in range(120):
        cid, happy = f"C{i}", i % 2 == 0
        events = [order(f"o{i}-{k}", k * 5, "books", customer_id=cid)
                  for k in range(6 if happy else 1)]
        if not happy:
            events += [ev(f"t{i}-{k}", "ticket_opened", 20 + k, customer_id=cid, ticket_id="t",
                          priority="high") for k in range(3)]
        out = engine.apply_batch(None, events, at(30), cid)
        out = engine.apply_batch(out.state, [nps(f"n{i}", 31, 10 if happy else 2, cid),
                                             order(f"x{i}", 40, "music" if happy else "books",
                                                   customer_id=cid)], at(40), cid)
        examples += out.training_examples
        examples += engine.resolve_due(out.state, at(75)).training_examples
    assert learner.learn(examples) > 0
    bundle = learner.publish()
    assert bundle.upsell.version != "upsell-00000" and bundle.upsell.ready
    assert bundle.advocacy.version != "advocacy-00000" and bundle.advocacy.ready
    report = learner.report()
    assert report["upsell"]["n"] > 0 and report["advocacy"]["n"] == 0  # said nothing before
    engine = ScoringEngine(cfg, bundle)
    scored = engine.apply_batch(None, [order(f"k{k}", k * 5, "books", customer_id="K")
                                       for k in range(6)], at(30), "K")
    assert scored.scorecard.promoter_probability is None  # only scorecards that are read
    keen = engine.score(scored.state, at(30))
    sour = engine.score(engine.apply_batch(None, [order("s0", 0, "books", customer_id="S")] + [
        ev(f"st{k}", "ticket_opened", 20 + k, customer_id="S", ticket_id="t", priority="high")
        for k in range(3)], at(30), "S").state, at(30))
    assert keen.promoter_probability > sour.promoter_probability
    low, high = keen.promoter_interval
    assert low <= keen.promoter_probability <= high
    assert keen.upsell_probability > sour.upsell_probability
    assert keen.upsell_factors and keen.promoter_factors
    shown = keen.to_dict()
    assert shown["upsell"]["probability"] == keen.upsell_probability
    assert shown["promoter"]["interval"] == [low, high] and shown["advocacy"] is None
    assert Scorecard.from_row(orjson.loads(orjson.dumps(keen.to_row()))) == keen
    # an answer of the past year is the customer's advocacy: no prediction beside it
    answered = engine.score(engine.apply_batch(None, [order("a0", 0, "books", customer_id="A"),
                                                      nps("an", 10, 9, "A")], at(30), "A").state,
                            at(30))
    assert answered.advocacy == "promoter" and answered.promoter_probability is None


def test_a_row_from_before_the_propensities_restores_without_them() -> None:
    card = Scorecard("C1", as_of=0, data_completeness=1.0, ltv_historic=2.0,
                     ltv_predicted_12m=3.0, engagement=4.0, revenue_12m=5.0,
                     interactions_12m=6, days_since_last_interaction=7,
                     upsell_probability=0.3, upsell_factors=(Factor("orders_365d",
                     "orders in the last 12 months: high", 0.5),))
    old = card.to_row()[:21]
    restored = Scorecard.from_row(old)
    assert restored.upsell_probability is None and restored.upsell_factors == ()
    assert restored.promoter_interval is None


# -- the model -------------------------------------------------------------------------------


def test_the_interval_narrows_as_the_model_learns() -> None:
    def trained(n: int) -> tuple[float, float]:
        model = AdvocacyModel(ScoringConfig(advocacy_min_labels=10))
        for i in range(n):
            model.learn({"orders_365d": float(i % 2)}, float(i % 4 == 0))
        answer = model.predict({"orders_365d": 1.0})
        assert answer is not None
        return answer.low, answer.high
    narrow, wide = trained(1000), trained(60)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert AdvocacyModel().predict({"orders_365d": 1.0}) is None  # nothing learned: no answer
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(5, 10)
    assert low < 0.5 < high and high - low == pytest.approx(2 * 0.2630, abs=1e-3)


def test_a_bundle_from_before_the_propensities_restores_them_untrained() -> None:
    old = orjson.loads(ModelBundle.initial().snapshot())
    del old["upsell"], old["advocacy"]
    bundle = ModelBundle.restore(orjson.dumps(old))
    assert isinstance(bundle.upsell, UpsellModel) and bundle.upsell.n_learned == 0
    assert isinstance(bundle.advocacy, AdvocacyModel)


# -- the alert -------------------------------------------------------------------------------


def scored(p: float | None, tier: str = "Standard", t: int = 0) -> Scorecard:
    return Scorecard("C1", as_of=t, data_completeness=0.0, ltv_historic=100.0,
                     ltv_predicted_12m=400.0, engagement=0.0, revenue_12m=100.0,
                     interactions_12m=1, days_since_last_interaction=0, tier=tier,
                     upsell_probability=p,
                     upsell_factors=(Factor("categories_bought",
                                            "product categories bought: high", 0.7),))


def test_upsell_opportunity_fires_once_per_episode_for_customers_worth_a_contact() -> None:
    rules, memory = AlertRules(), AlertMemory()
    day = 86_400_000

    def fired(prev: Scorecard | None, cur: Scorecard) -> list[str]:
        return [a.alert_type for a in rules.evaluate(prev, cur, memory, None)]

    assert fired(None, scored(0.2)) == []
    [alert] = rules.evaluate(scored(0.2), scored(0.6, t=day), memory, None)
    assert alert.alert_type == "upsell_opportunity" and "0.60" in alert.reason
    record = alert.to_record(0)
    assert record["factors"][0]["name"] == "categories_bought"
    assert fired(scored(0.6, t=day), scored(0.7, t=2 * day)) == []  # still the same episode
    assert fired(scored(0.7), scored(0.3, t=40 * day)) == []  # re-armed below 0.35
    assert fired(scored(0.3), scored(0.55, t=41 * day)) == ["upsell_opportunity"]
    basic = AlertMemory()
    assert [a.alert_type for a in rules.evaluate(scored(0.2, "Basic"), scored(0.9, "Basic"),
                                                 basic, None)] == []
    assert fired(scored(0.55), scored(None, t=90 * day)) == []


def test_the_alert_budget_holds_upsell_opportunities_too() -> None:
    rules = AlertRules()
    budget = rules.budget()
    fired = 0
    for i in range(300):
        memory = AlertMemory()
        card = Scorecard(f"C{i}", as_of=0, data_completeness=0.0, ltv_historic=1.0,
                         ltv_predicted_12m=400.0, engagement=0.0, revenue_12m=1.0,
                         interactions_12m=1, days_since_last_interaction=0,
                         upsell_probability=0.9)
        fired += len(rules.evaluate(None, card, memory, None, budget=budget, customers=300))
    assert fired == 6  # 2 % of 300


# -- the backtest ----------------------------------------------------------------------------


def test_the_backtest_labels_upsells_and_nps_answers_after_the_split() -> None:
    split = at(100)
    events = [
        order("a1", 10, "books", customer_id="A"), order("a2", 110, "music", customer_id="A"),
        order("b1", 10, "books", customer_id="B"), order("b2", 120, "books", customer_id="B"),
        order("c1", 10, "books", customer_id="C"), order("c2", 150, "toys", customer_id="C"),
        start("d1", 10, 9.0) | {"customer_id": "D"}, start("d2", 105, 19.0) | {"customer_id": "D"},
        nps("n1", 101, 10, "A"), nps("n2", 102, 3, "B"), nps("n3", 103, 9, "B"),
    ]
    events.sort(key=lambda e: e["occurred_at"])
    _, after, _ = summarize(events, split, at(200), 90, ScoringConfig())
    upsold_ = {cid: after[cid].upsold_u for cid in "ABCD"}
    assert upsold_ == {"A": True, "B": False, "C": False, "D": True}  # C's came after 30 days
    assert {cid: after[cid].nps_h for cid in "AB"} == {"A": 10, "B": 3}
    cards = [Scorecard(cid, as_of=split, data_completeness=0.0, ltv_historic=0.0,
                       ltv_predicted_12m=0.0, engagement=0.0, revenue_12m=0.0,
                       interactions_12m=0, days_since_last_interaction=0,
                       upsell_probability=p, promoter_probability=q)
             for cid, p, q in (("A", 0.9, 0.8), ("B", 0.1, 0.3), ("C", 0.2, None),
                               ("D", 0.8, None))]
    outcomes = [after[c.customer_id] for c in cards]
    report = propensities(cards, outcomes, np.array([90.0, 90.0, 90.0, 90.0]),
                          np.array([0.01, 0.01, 0.01, 0.0]), 30, 90)
    up, adv = report["upsell"], report["advocacy"]
    assert (up["n"], up["positives"], up["status"]) == (4, 2, "ok")
    assert up["roc_auc"]["model"] == 1.0 and up["roc_auc"]["recency"] == 0.5
    assert (adv["n"], adv["positives"], adv["predicted_for"]) == (2, 1, 2)
    assert adv["roc_auc"]["model"] == 1.0
    empty = propensities(cards[2:3], [after["C"]], np.array([1.0]), np.array([1.0]), 30, 90)
    assert empty["advocacy"]["status"] == "no NPS answer after the split"
