"""Attribution in the scoring engine: which events are touches and conversions, the credits of
every model on hand-computed journeys, the lookback edge, idempotence per conversion id, and
the journey kept in the customer's state."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from models.attribution.journey import (
    ATTRIBUTED_IDS,
    Attribution,
    ClosedJourney,
    Journey,
    conversion_of,
    touch_of,
)
from models.attribution.markov import DataDrivenModel, TransitionCounts, fit
from models.attribution.paths import JourneyTotals
from models.attribution.rules import MODELS
from models.attribution.touches import Touch
from models.config import AttributionConfig, ScoringConfig
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from schemas.registry import validator
from tests.kit import DAY_MS, at, ev


def on(**settings: Any) -> AttributionConfig:
    """Attribution switched on (it is off by default), with these settings."""
    return AttributionConfig(enabled=True, **settings)


CONFIG = ScoringConfig(attribution=on())


def session(event_id: str, day: float, channel: str | None, **payload: Any) -> dict[str, Any]:
    fields = {"channel": channel} if channel is not None else {}
    return ev(event_id, "session_started", day, **fields, **payload)


def order(event_id: str, day: float, amount: float = 90.0, **payload: Any) -> dict[str, Any]:
    return ev(event_id, "order_placed", day, amount=amount, **payload)


def attribute(events: list[dict[str, Any]], config: ScoringConfig = CONFIG,
              state: CustomerState | None = None) -> list[Attribution]:
    """The attributions of one batch of the customer's events."""
    engine = ScoringEngine(config)
    return engine.apply_batch(state, events, max(e["occurred_at"] for e in events)).attributions


def credits(attribution: Attribution) -> dict[str, list[float]]:
    return {model: list(c) for model, c in attribution.credits.items()}


def sums_to_value(attribution: Attribution) -> bool:
    value = attribution.conversion.value
    return all(math.fsum(attribution.credits[m]) == pytest.approx(value, abs=1e-9)
               and math.fsum(attribution.shares[m]) == pytest.approx(1.0, abs=1e-12)
               for m in MODELS)


def test_three_touches_hand_computed() -> None:
    """Paid on day 1, an email click on day 3, a direct visit on day 7 and a 90 EUR order the
    same day: last click passes over the direct visit to the email; time decay weighs ages of
    6, 4 and 0 days by 2^(-age/7)."""
    [done] = attribute([session("w1", 1, "paid"), ev("e1", "clicked", 3, campaign_id="spring"),
                        session("w2", 7, "direct"), order("o1", 7.5)])
    assert [(t.channel, t.campaign, t.direct) for t in done.touches] == [
        ("paid", None, False), ("email", "spring", False), ("direct", None, True)]
    weights = [2 ** (-6 / 7), 2 ** (-4 / 7), 1.0]
    expected = {
        "last_click": [0.0, 90.0, 0.0],
        "first_click": [90.0, 0.0, 0.0],
        "linear": [30.0, 30.0, 30.0],
        "time_decay": [90.0 * w / sum(weights) for w in weights],
        "position_based": [36.0, 18.0, 36.0],
    }
    got = credits(done)
    assert set(got) == set(MODELS)
    for model in MODELS:
        assert got[model] == pytest.approx(expected[model], abs=1e-9), model
    assert [round(c, 2) for c in got["time_decay"]] == [22.33, 27.22, 40.45]
    assert sums_to_value(done)
    assert (done.conversion.conversion_id, done.conversion.value, done.conversion.currency,
            done.conversion_type, done.event_id) == ("o1", 90.0, "EUR", "order_placed", "o1")


def test_one_and_two_touches() -> None:
    [one] = attribute([session("w1", 2, "social"), order("o1", 5, 40.0)])
    assert credits(one) == {model: [40.0] for model in MODELS}
    [two] = attribute([session("w1", 2, "social"), session("w2", 4, "paid"),
                       order("o1", 5, 40.0)])
    got = credits(two)
    assert got["last_click"] == [0.0, 40.0] and got["first_click"] == [40.0, 0.0]
    assert got["linear"] == [20.0, 20.0] and got["position_based"] == [20.0, 20.0]
    old, young = 2 ** (-3 / 7), 2 ** (-1 / 7)  # ages 3 and 1 days
    assert got["time_decay"] == pytest.approx([40 * old / (old + young),
                                               40 * young / (old + young)], abs=1e-9)
    assert sums_to_value(two)


def test_last_click_passes_over_direct_visits_unless_every_touch_is_one() -> None:
    [mixed] = attribute([session("w1", 1, "organic"), session("w2", 2, "direct"),
                         session("w3", 3, "direct"), order("o1", 3.5)])
    assert credits(mixed)["last_click"] == [90.0, 0.0, 0.0]
    [direct] = attribute([session("w1", 1, "direct"), session("w2", 2, "direct"), order("o1", 3)])
    assert credits(direct)["last_click"] == [0.0, 90.0]
    assert credits(direct)["first_click"] == [90.0, 0.0]


def test_lookback_edge_is_included_and_one_millisecond_more_is_not() -> None:
    buy = order("o1", 100)
    edge = ev("w1", "session_started", occurred_at=buy["occurred_at"] - 90 * DAY_MS,
              channel="paid")
    too_old = ev("w0", "session_started", occurred_at=edge["occurred_at"] - 1, channel="social")
    [done] = attribute([too_old, edge, buy])
    assert [t.channel for t in done.touches] == ["paid"]
    shorter = dataclasses.replace(CONFIG, attribution=on(lookback_days=89))
    [stale, none] = attribute([too_old, edge, buy], shorter)
    assert none.touches == () and none.credits == {model: [] for model in MODELS}
    # the order came more than the lookback after both touches: they were a null path
    assert isinstance(stale, ClosedJourney) and stale.path == ["social", "paid"]


def test_a_touch_after_the_conversion_does_not_count_and_one_at_its_millisecond_does() -> None:
    """A batch is applied in event-time order, simultaneous events by event id: a touch at
    the conversion's millisecond counts when it was applied before it."""
    buy = order("o1", 10)
    same = ev("a1", "session_started", occurred_at=buy["occurred_at"], channel="paid")
    later = ev("a2", "session_started", occurred_at=buy["occurred_at"] + 1, channel="social")
    [done] = attribute([later, buy, same])
    assert [t.channel for t in done.touches] == ["paid"]


def test_a_conversion_without_touches_is_attributed_to_none() -> None:
    [done] = attribute([ev("w1", "page_view", 1), order("o1", 2, 25.0)])
    assert done.touches == () and done.conversion.value == 25.0
    record = done.to_record(emitted_at=1)
    assert record["touches"] == []
    validator("attributions")(record)


def test_values_are_in_the_base_currency_rounded_to_cents() -> None:
    [done] = attribute([session("w1", 1, "paid"), order("o1", 2, 10.01, currency="USD")])
    assert done.conversion.value == 9.21 and done.conversion.currency == "EUR"  # 10.01 * 0.92
    assert credits(done)["linear"] == [9.21]


def test_a_conversion_is_attributed_once_per_conversion_id() -> None:
    engine = ScoringEngine(CONFIG)
    first = engine.apply_batch(None, [session("w1", 1, "paid"), order("o1", 2)], at(2))
    assert len(first.attributions) == 1
    state = CustomerState.restore(first.state.snapshot(), CONFIG)  # as stored, then reloaded
    again = engine.apply_batch(state, [order("o1", 2)], at(2))  # redelivered: same event id
    assert again.duplicates == 1 and again.attributions == []
    # The same order under another event id (a source that sent it twice) is not counted again.
    resent = engine.apply_batch(state, [order("o1-again", 2, order_id="o1")], at(2))
    assert resent.applied == 1 and resent.attributions == []
    other = engine.apply_batch(state, [order("o2", 3)], at(3))
    assert [a.conversion.conversion_id for a in other.attributions] == ["o2"]


def test_conversion_ids_remembered_are_bounded() -> None:
    journey = Journey()
    cfg = CONFIG.attribution
    for n in range(ATTRIBUTED_IDS + 1):
        event = order(f"o{n}", n)
        assert journey.attribute(conversion_of(event, CONFIG), event, cfg) is not None
    assert len(journey.attributed) == ATTRIBUTED_IDS
    oldest = order("o0", 0)
    assert journey.attribute(conversion_of(oldest, CONFIG), oldest, cfg) is not None


def test_goals_and_subscriptions_convert_only_when_configured() -> None:
    events = [session("w1", 1, "paid"), ev("g1", "goal_completed", 2, goal="signup", value=5.0),
              ev("g2", "goal_completed", 3, goal="purchase", value=50.0),
              ev("s1", "subscription_started", 4, plan="plus", mrr=9.0)]
    assert attribute(events) == []
    goals = dataclasses.replace(CONFIG, attribution=on(
        conversions=frozenset({"goal_completed:signup", "subscription_started"})))
    signup, subscription = attribute(events, goals)
    assert (signup.conversion.conversion_id, signup.conversion.value,
            signup.conversion_type) == ("g1", 5.0, "goal_completed")
    assert (subscription.conversion.conversion_id, subscription.conversion.value) == ("s1", 0.0)
    # Worth nothing, still one conversion: the shares say how it is split.
    assert credits(subscription) == {model: [0.0] for model in MODELS}
    assert subscription.shares["linear"] == [1.0]
    every_goal = dataclasses.replace(CONFIG, attribution=on(
        conversions=frozenset({"goal_completed"})))
    assert [a.conversion.value for a in attribute(events, every_goal)] == [5.0, 50.0]


def test_touch_channels_and_campaigns() -> None:
    cfg = CONFIG.attribution
    assert touch_of(session("w1", 1, "paid", campaign="winter"), cfg) == Touch(
        "paid", "winter", at(1), False)
    assert touch_of(session("w2", 1, None), cfg).channel == "web"  # no channel: its source
    # the name of the reports' lump is kept in quotes; a channel named "other" is a channel
    assert touch_of(session("w3", 1, "(other)"), cfg).channel == '"(other)"'
    assert touch_of(session("w5", 1, "(none)"), cfg).channel == '"(none)"'  # the gauges' own
    assert touch_of(session("w4", 1, "other"), cfg).channel == "other"
    clicked = touch_of(ev("e1", "clicked", 2, campaign_id="jan", url="/sale"), cfg)
    assert (clicked.channel, clicked.campaign) == ("email", "jan")
    opened = [ev("e2", "opened", 1, campaign_id="jan"), order("o1", 2)]
    assert attribute(opened)[0].touches == ()  # views do not count by default
    views = dataclasses.replace(CONFIG, attribution=on(views=True))
    assert [t.channel for t in attribute(opened, views)[0].touches] == ["email"]


def test_attribution_off_keeps_no_journey() -> None:
    off = dataclasses.replace(CONFIG, attribution=AttributionConfig(enabled=False))
    engine = ScoringEngine(off)
    out = engine.apply_batch(None, [session("w1", 1, "paid"), order("o1", 2)], at(2))
    assert out.attributions == [] and out.state.journey is None
    assert "j" not in out.state.to_dict()


def test_the_journey_keeps_the_newest_touches_within_the_lookback_in_time_order() -> None:
    cfg = on(lookback_days=10, max_touches=3)
    journey = Journey()
    for channel, day in [("a", 1), ("b", 5), ("c", 3), ("d", 12)]:  # c arrives late
        journey.add(Touch(channel, None, at(day)), cfg)
    assert [t.channel for t in journey.touches] == ["c", "b", "d"]  # a: older than 12 - 10
    journey.add(Touch("e", None, at(12)), cfg)
    assert [t.channel for t in journey.touches] == ["b", "d", "e"]  # at most 3
    journey.add(Touch("f", None, at(30)), cfg)
    assert [t.channel for t in journey.touches] == ["f"]


def test_the_journey_round_trips_through_the_state_snapshot() -> None:
    out = ScoringEngine(CONFIG).apply_batch(None, [
        session("w1", 1, "paid", campaign="winter"), session("w2", 2, "direct"),
        order("o1", 3)], at(3))
    state = out.state
    assert state.to_dict()["j"] == [
        [at(1), "paid", "winter", 0, at(2), "direct", None, 1], state.journey.attributed]
    # the open path starts after the order: kept under a key of its own, which code from
    # before paths ignores (it reads "j" as two items)
    assert state.to_dict()["jp"] == [at(3), []]
    again = CustomerState.restore(state.snapshot(), CONFIG)
    assert again.journey.touches == state.journey.touches
    assert again.journey.attributed == state.journey.attributed
    assert again.journey.closed == at(3)
    assert again.snapshot() == state.snapshot()


def test_touches_in_the_nested_form_restore_as_well() -> None:
    nested = Journey.from_list([[[at(1), "paid", "winter", 0], [at(2), "direct", None, 1]],
                                [7]])
    assert [(t.at_ms, t.channel, t.campaign, t.direct) for t in nested.touches] == [
        (at(1), "paid", "winter", False), (at(2), "direct", None, True)]
    assert nested.to_list() == [[at(1), "paid", "winter", 0, at(2), "direct", None, 1], [7]]


def test_a_state_written_before_attribution_restores_without_a_journey() -> None:
    state = CustomerState("C1", CONFIG)
    state.apply(ev("w1", "page_view", 1))
    old = state.to_dict()
    assert "j" not in old
    restored = CustomerState.from_dict(old, CONFIG)
    assert restored.journey is None
    [done] = attribute([session("w2", 2, "paid"), order("o1", 3)], state=restored)
    assert [t.channel for t in done.touches] == ["paid"]


def test_records_validate_against_the_schema() -> None:
    [done] = attribute([session("w1", 1, "paid", campaign="winter"),
                        ev("e1", "clicked", 3, campaign_id="spring"), order("o1", 4)])
    record = done.to_record(emitted_at=123)
    validator("attributions")(record)
    assert record["touches"][0]["credit"] == {m: credits(done)[m][0] for m in MODELS}
    assert record["models"] == list(MODELS)


def outcome_records(events: list[dict[str, Any]], config: ScoringConfig = CONFIG,
                    model: DataDrivenModel | None = None) -> list[dict[str, Any]]:
    """The attributions records one batch makes, each checked against the schema."""
    engine = ScoringEngine(config)
    engine.data_driven = model
    out = engine.apply_batch(None, events, max(e["occurred_at"] for e in events))
    records = [r.to_record(emitted_at=0) for r in out.attributions]
    for record in records:
        validator("attributions")(record)
    return records


def test_a_conversion_closes_the_path_of_the_touches_since_the_previous_one() -> None:
    first, second, third = [r for r in outcome_records([
        session("w1", 1, "paid"), session("w2", 2, "email"), order("o1", 3),
        session("w3", 4, "social"), order("o2", 5),
        order("o3", 6)]) if r["kind"] == "conversion"]
    assert first["path"] == ["paid", "email"]
    # the rule-based models still credit every touch in the lookback
    assert [t["channel"] for t in second["touches"]] == ["paid", "email", "social"]
    assert second["path"] == ["social"]
    assert third["path"] == [] and len(third["touches"]) == 3
    assert first["data_driven"] == {"version": None, "paths": 0, "shares": None,
                                    "credits": None, "reason": "no data-driven model yet"}


def test_touches_that_pass_the_lookback_without_a_conversion_close_as_a_null_path() -> None:
    records = outcome_records([
        session("w1", 1, "paid", campaign="spring"), session("w2", 30, "email"),
        session("w3", 121, "social"),  # 91 days after the last touch: the first two were a path
        order("o1", 122), session("w4", 300, "display"), order("o2", 400)])
    assert [r["kind"] for r in records] == [
        "null_journey", "conversion", "null_journey", "conversion"]
    null, bought, late, nothing = records
    assert null["path"] == ["paid", "email"] and null["event_id"] == "w3"
    assert null["occurred_at"] == at(121)
    assert null["touches"][0] == {"channel": "paid", "campaign": "spring", "at": at(1),
                                  "direct": False}
    assert bought["path"] == ["social"]
    # the display touch was a path of its own, closed by the order 100 days later
    assert late["path"] == ["display"] and late["event_id"] == "o2"
    assert nothing["touches"] == [] and nothing["path"] == []


def test_a_touch_within_the_lookback_keeps_the_path_open() -> None:
    records = outcome_records([session("w1", 1, "paid"), session("w2", 60, "email"),
                               session("w3", 120, "social"), order("o1", 121)])
    # each touch came within 90 days of the one before: one path, whose head fell out
    assert [(r["kind"], r["path"]) for r in records] == [("conversion", ["email", "social"])]


def test_conversions_get_data_driven_credit_over_their_path_once_the_model_is_ready() -> None:
    counts = TransitionCounts.from_paths([(["paid", "email"], True), (["paid"], False),
                                          (["email"], True)] * 10)
    model = fit(counts, draws=20)
    events = [session("w1", 1, "social"), order("o0", 1.5), session("w2", 2, "paid"),
              session("w3", 3, "email"), session("w4", 3.5, "email"), order("o1", 4)]
    config = dataclasses.replace(CONFIG, attribution=on(data_driven_min_paths=30))
    _first, record = outcome_records(events, config, model)
    driven = record["data_driven"]
    assert driven["version"] == model.version and driven["paths"] == 30
    assert driven["reason"] is None
    # paid 1/3, email 2/3 of the weight, shared by email's two touches; social is before
    # the path (its conversion was o0)
    assert driven["shares"] == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3])
    assert driven["credits"] == pytest.approx([0.0, 30.0, 30.0, 30.0])
    assert math.fsum(driven["credits"]) == pytest.approx(record["value"], abs=1e-9)
    not_yet = dataclasses.replace(CONFIG, attribution=on(data_driven_min_paths=31))
    driven = outcome_records(events, not_yet, model)[1]["data_driven"]
    assert driven["credits"] is None and driven["paths"] == 30
    assert driven["reason"] == "the model rests on fewer than 31 closed paths"
    repeat = outcome_records([*events, order("o2", 5)], config, model)[-1]["data_driven"]
    assert repeat["reason"] == "no touch since the previous conversion"


FUNNEL = ScoringConfig(attribution=on(funnel=("signup", "cart", "purchase"),
                                      funnel_window_days=10))


def goal(event_id: str, day: float, name: str) -> dict[str, Any]:
    return ev(event_id, "goal_completed", day, goal=name)


def test_the_funnel_follows_a_customer_through_its_goals_within_the_window() -> None:
    records = outcome_records([
        goal("g1", 1, "cart"),       # no attempt yet: completed, no step
        goal("g2", 2, "signup"),     # attempt 1, step 0
        goal("g3", 3, "purchase"),   # not the next goal
        goal("g4", 4, "cart"),       # step 1, two days after step 0
        goal("g5", 13, "purchase"),  # 11 days after the start: past the window
        goal("g6", 14, "signup"),    # the last attempt's window is over: attempt 2
        goal("g7", 15, "signup"),    # a running attempt's first goal again: no step
        goal("g8", 16, "other")],    # not a funnel goal: no record
        FUNNEL)
    rows = [(r["goal"], r["funnel_step"], r["elapsed_ms"], r["first"], r["first_any"],
             r["funnel_started_at"]) for r in records]
    assert rows == [
        ("cart", None, None, True, True, None),
        ("signup", 0, 0, True, False, at(2)),
        ("purchase", None, None, True, False, None),
        ("cart", 1, 2 * DAY_MS, False, False, at(2)),
        ("purchase", None, None, False, False, None),
        ("signup", 0, 0, False, False, at(14)),
        ("signup", None, None, False, False, None)]
    funnel = JourneyTotals(funnel=FUNNEL.attribution.funnel)
    for record in records:
        funnel.add(record)
    report = funnel.funnel.report()
    assert [s["reached"] for s in report["steps"]] == [2, 1, 0]
    assert report["steps"][1]["median_ms_from_previous"] == pytest.approx(2 * DAY_MS,
                                                                         rel=0.022)
    assert report["customers"] == 1


def test_a_finished_attempt_lets_the_next_start_and_the_funnel_survives_a_snapshot() -> None:
    engine = ScoringEngine(FUNNEL)
    out = engine.apply_batch(None, [goal("g1", 1, "signup"), goal("g2", 2, "cart")], at(2))
    state = CustomerState.restore(out.state.snapshot(), FUNNEL)
    later = engine.apply_batch(state, [goal("g3", 3, "purchase"), goal("g4", 4, "signup")],
                               at(4))
    assert [(r.goal, r.step, r.started_at) for r in later.attributions] == [
        ("purchase", 2, at(1)), ("signup", 0, at(4))]
