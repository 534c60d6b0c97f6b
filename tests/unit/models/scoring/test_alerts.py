"""Alert rules: thresholds with hysteresis and cooldown, tier moves, score-change detection."""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given
from hypothesis import strategies as st

from models.learning.prediction import Factor
from models.scoring.alerts import Alert, AlertConfig, AlertMemory, AlertRules
from models.scoring.engine import BatchOutcome
from models.scoring.live import ScoringPartition
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from schemas.registry import validator
from tests.kit import DAY_MS


def card(p: float = 0.1, tier: str = "Standard", t: int = 0, **values: float) -> Scorecard:
    base = dict(data_completeness=50.0, ltv_historic=900.0, ltv_predicted_12m=300.0,
                engagement=40.0, revenue_12m=500.0, interactions_12m=12,
                days_since_last_interaction=3)
    base.update(values)
    return Scorecard("C1", as_of=t, churn_probability=p, tier=tier,
                     churn_factors=(Factor("tickets_90d", "support tickets (90 days): high", 0.4),),
                     model_versions={"churn": "churn-00003"}, **base)  # type: ignore[arg-type]


def timeline(steps: list[tuple[int, float, str]], rules: AlertRules,
             step_ms: int = DAY_MS) -> list[tuple[int, Alert]]:
    """(step, alert) for one customer scored at each (step, churn probability, tier)."""
    memory, previous, fired = AlertMemory(), None, []
    for i, p, tier in steps:
        current = card(p, tier, t=i * step_ms)
        fired += [(i, a) for a in rules.evaluate(previous, current, memory, f"e{i}")]
        previous = current
    return fired


def run(probabilities: list[float], rules: AlertRules, tier: str = "Standard",
        step_ms: int = DAY_MS) -> list[tuple[int, str]]:
    steps = [(i, p, tier) for i, p in enumerate(probabilities)]
    return [(i, a.alert_type) for i, a in timeline(steps, rules, step_ms)]


def test_churn_risk_fires_once_while_hovering_at_the_threshold() -> None:
    rules = AlertRules(AlertConfig(churn_risk_on=0.7, churn_risk_off=0.55, cooldown_ms=0))
    fired = run([0.2, 0.71, 0.69, 0.72, 0.68, 0.71, 0.56, 0.75], rules)
    assert fired == [(1, "churn_risk")]


def test_churn_risk_rearms_below_the_off_level() -> None:
    rules = AlertRules(AlertConfig(churn_risk_on=0.7, churn_risk_off=0.55, cooldown_ms=0))
    fired = run([0.2, 0.8, 0.5, 0.8], rules)
    assert fired == [(1, "churn_risk"), (3, "churn_risk")]


def test_cooldown_suppresses_a_second_alert_of_the_same_type() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=7 * DAY_MS))
    assert run([0.2, 0.8, 0.5, 0.8], rules, step_ms=DAY_MS) == [(1, "churn_risk")]
    assert run([0.2, 0.8, 0.5, 0.8], rules, step_ms=8 * DAY_MS) == [
        (1, "churn_risk"), (3, "churn_risk")]


def test_a_crossing_inside_the_cooldown_fires_when_the_cooldown_ends() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=7 * DAY_MS))
    # Alerted on day 1, re-armed on day 2, back above the threshold from day 3 on: the new
    # episode is alerted once, on day 8, when the cooldown of day 1's alert has passed.
    assert run([0.2, 0.8, 0.5] + [0.8] * 8, rules) == [(1, "churn_risk"), (8, "churn_risk")]


def test_a_high_value_customer_at_risk_again_within_the_cooldown_is_still_routed() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=7 * DAY_MS))
    steps = [(day, p, "VIP") for day, p in [(0, 0.3), (1, 0.75), (2, 0.3), (4, 0.8),
                                             (120, 0.95)]]
    fired = [(day, a.alert_type) for day, a in timeline(steps, rules)
             if a.alert_type == "high_value_at_risk"]
    assert fired == [(1, "high_value_at_risk"), (120, "high_value_at_risk")]


def test_a_held_back_alert_names_the_rise_from_the_customers_low() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=7 * DAY_MS))
    probabilities = [0.2, 0.8, 0.5, 0.9, 0.85, 0.8, 0.78, 0.76, 0.76, 0.74]
    steps = [(day, p, "Standard") for day, p in enumerate(probabilities)]
    reasons = [(day, a.reason) for day, a in timeline(steps, rules)]
    assert [(day, reason.split(" (")[0]) for day, reason in reasons] == [
        (1, "churn risk rose from 0.20 to 0.80"), (8, "churn risk rose from 0.50 to 0.76")]


def test_a_tier_flap_inside_the_cooldown_does_not_repeat_high_value_at_risk() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=7 * DAY_MS))
    tiers = ["Premium", "Premium", "Premium", "Standard"] + ["Premium"] * 6
    steps = [(day, 0.2 if day == 0 else 0.6, tier) for day, tier in enumerate(tiers)]
    fired = [(day, a.alert_type) for day, a in timeline(steps, rules)
             if a.alert_type == "high_value_at_risk"]
    assert fired == [(1, "high_value_at_risk")]


def test_a_risk_that_was_always_high_is_not_news() -> None:
    """One-time buyers drifting into expected dormancy: high from the start, never a rise."""
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    assert run([0.8, 0.82, 0.85, 0.88, 0.9], rules) == []
    assert run([0.6, 0.7, 0.76, 0.8], rules) == [(2, "churn_risk")]  # 0.16 above its low


def test_churn_alerts_need_value_at_risk_above_the_learned_cut() -> None:
    rules, steps = AlertRules(AlertConfig(cooldown_ms=0)), [(0, 0.2), (1, 0.9)]
    fired = []
    for cut in (None, 200.0, 300.0):
        memory, previous = AlertMemory(), None
        for t, p in steps:  # predicted value 300, so value at risk 0.9 x 300 = 270 at t=1
            current = card(p, t=t * DAY_MS)
            alerts = rules.evaluate(previous, current, memory, None, at_risk_from=cut)
            fired.append((cut, [a.alert_type for a in alerts]))
            previous = current
    assert [kinds for cut, kinds in fired if kinds] == [["churn_risk"], ["churn_risk"]]
    assert (300.0, []) in fired


def test_the_budget_holds_back_alerts_beyond_its_share() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0, budget_share=0.02))
    budget, fired = rules.budget(), 0
    for _customer in range(200):  # 200 customers, all crossing on the same day: 4 may fire
        memory = AlertMemory()
        alerts = rules.evaluate(card(0.1), card(0.9, t=DAY_MS), memory, None,
                                budget=budget, customers=200)
        fired += len(alerts)
        if not alerts:  # held back, still armed: fires once the window has room
            assert "churn_risk" not in memory.disarmed
    assert fired == 4
    later = rules.evaluate(card(0.1), card(0.9, t=32 * DAY_MS), AlertMemory(), None,
                           budget=budget, customers=200)
    assert [a.alert_type for a in later] == ["churn_risk"]


def test_a_partition_taken_over_remembers_the_budget_its_customers_spent() -> None:
    """The budget is rebuilt from the alert memories in the committed states, so a worker
    that takes a partition over does not fire a second window's worth of alerts."""
    rules = AlertRules(AlertConfig(cooldown_ms=0, budget_share=0.02))
    budget, states = rules.budget(), []
    for k in range(200):
        state = CustomerState(f"C{k}")
        state.alerts = {}
        outcome = BatchOutcome(f"C{k}", state, card(0.9, t=(1 + k % 2) * DAY_MS), card(0.1))
        rules.on_outcome(outcome, budget=budget, customers=200)
        states.append(state)
    assert sum(bool(s.alerts and s.alerts.get("w")) for s in states) == 4
    again = ScoringPartition.rebuild(states, rules.budget())
    assert again.budget.fired == budget.fired
    assert not again.budget.allow("churn_risk", 3 * DAY_MS, customers=200)
    # The window moves on: the first day's two alerts leave it, two more fit.
    assert [again.budget.allow("churn_risk", 31 * DAY_MS, 200) for _ in range(3)] == [
        True, True, False]


def test_a_memory_keeps_only_the_fire_times_inside_the_budget_window() -> None:
    memory = AlertMemory()
    for day in (0, 10, 29, 45):
        memory.fired("churn_risk", day * DAY_MS, 30 * DAY_MS)
    assert memory.window == {"churn_risk": [29 * DAY_MS, 45 * DAY_MS]}
    assert memory.last_fired == {"churn_risk": 45 * DAY_MS}
    assert AlertMemory.from_dict(memory.to_dict()) == memory


def test_score_changes_report_a_slow_drift_once_it_adds_up() -> None:
    rules = AlertRules()  # money moves by 5 %
    state, previous, reported = CustomerState("C1"), None, []
    for day, revenue in enumerate([1000.0, 1020.0, 1040.0, 1060.0, 1080.0]):
        current = card(t=day * DAY_MS, revenue_12m=revenue)
        changed = rules.score_changes(BatchOutcome("C1", state, current, previous))
        reported.append(changed.get("revenue_12m"))
        state = CustomerState.restore(state.snapshot())  # the baseline lives in the changelog
        previous = current
    # Each step is 2 %: compared step by step, nothing after the first card would be news.
    assert reported == [{"old": None, "new": 1000.0}, None, None,
                        {"old": 1000.0, "new": 1060.0}, None]


def test_a_reported_baseline_of_other_fields_is_dropped_not_fatal() -> None:
    rules, state = AlertRules(), CustomerState("C1")
    state.reported = [0.1, 40.0]  # kept by a version that tracked two fields
    changed = rules.score_changes(BatchOutcome("C1", state, card(0.3), card(0.1)))
    assert changed == {"churn_probability": {"old": 0.1, "new": 0.3}}
    assert state.reported is None


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60))
def test_alerts_only_on_a_material_rise_and_rearmed_in_between(probabilities: list[float]) -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    fired = [i for i, kind in run(probabilities, rules) if kind == "churn_risk"]
    for i in fired:
        assert probabilities[i] >= 0.7
        assert probabilities[i] - min(probabilities[:i + 1]) >= 0.15 - 1e-12
    for a, b in itertools.pairwise(fired):
        assert min(probabilities[a:b]) < 0.55  # re-armed in between
        assert probabilities[b] - min(probabilities[a:b + 1]) >= 0.15 - 1e-12


def test_high_value_at_risk_needs_a_high_value_tier() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    assert [k for _, k in run([0.1, 0.6], rules, tier="Standard")] == []
    assert [k for _, k in run([0.1, 0.6], rules, tier="Premium")] == ["high_value_at_risk"]
    # A first scorecard already in VIP counts as an upgrade (the VIP welcome).
    # One churn alert per episode: a VIP's is high_value_at_risk, never churn_risk too.
    assert run([0.1, 0.75], rules, tier="VIP") == [
        (0, "vip_upgrade"), (1, "high_value_at_risk")]
    assert run([0.1, 0.75], rules, tier="Standard") == [(1, "churn_risk")]


def tier_run(tiers: list[str], rules: AlertRules, step_ms: int = DAY_MS) -> list[tuple[int, str]]:
    steps = [(i, 0.1, tier) for i, tier in enumerate(tiers)]
    return [(i, a.alert_type) for i, a in timeline(steps, rules, step_ms)]


def test_tier_moves() -> None:
    rules, memory = AlertRules(), AlertMemory()
    up = rules.evaluate(card(tier="Premium"), card(tier="VIP", t=1), memory, "e1")
    assert [(a.alert_type, a.severity) for a in up] == [("vip_upgrade", "info")]
    down = rules.evaluate(card(tier="VIP", t=1), card(tier="Standard", t=2), memory, "e2")
    assert [(a.alert_type, a.severity) for a in down] == [("tier_downgrade", "warning")]
    assert rules.evaluate(card(tier="Basic"), card(tier="Standard", t=3), memory, "e3") == []
    assert rules.evaluate(card(tier="Standard"), card(tier="Basic", t=4), memory, "e4") == []


def test_tier_flapping_at_a_boundary_alerts_once() -> None:
    rules = AlertRules(AlertConfig(tier_cooldown_ms=0))
    flapping = ["Premium", "VIP", "Premium", "VIP", "Premium", "VIP"]
    assert tier_run(flapping, rules) == [(1, "vip_upgrade")]
    leaving = ["Premium", "Standard", "Premium", "Standard"]
    assert tier_run(leaving, rules) == [(1, "tier_downgrade"), (3, "tier_downgrade")]
    slow = AlertRules(AlertConfig(tier_cooldown_ms=30 * DAY_MS))
    assert tier_run(leaving, slow) == [(1, "tier_downgrade")]
    # Falling below Premium re-arms the VIP welcome.
    assert tier_run(["VIP", "Standard", "VIP"], rules) == [
        (0, "vip_upgrade"), (1, "tier_downgrade"), (2, "vip_upgrade")]


def test_alert_record_matches_the_published_schema_and_id_is_stable() -> None:
    rules = AlertRules()
    first = rules.evaluate(card(0.1), card(0.9, t=5), AlertMemory(), "e9")[0]
    again = rules.evaluate(card(0.1), card(0.9, t=5), AlertMemory(), "e9")[0]
    assert first.alert_id == again.alert_id
    record = orjson.loads(orjson.dumps(first.to_record(emitted_at=123)))
    validator("alerts")(record)
    assert record["reason"].startswith("churn risk rose from 0.10 to 0.90")
    assert record["factors"][0]["name"] == "tickets_90d"


def test_changes_respect_thresholds() -> None:
    rules = AlertRules(AlertConfig(change_churn=0.05, change_points=5.0, change_money_rel=0.05,
                                   change_money_abs=1.0))
    assert set(rules.changes(None, card())) >= {"churn_probability", "tier", "revenue_12m"}
    assert rules.changes(card(0.10), card(0.14)) == {}
    assert rules.changes(card(0.10), card(0.16)) == {
        "churn_probability": {"old": 0.10, "new": 0.16}}
    assert rules.changes(card(revenue_12m=500.0), card(revenue_12m=520.0)) == {}
    assert rules.changes(card(revenue_12m=500.0), card(revenue_12m=530.0)) == {
        "revenue_12m": {"old": 500.0, "new": 530.0}}
    assert rules.changes(card(tier="Basic"), card(tier="Standard"))["tier"] == {
        "old": "Basic", "new": "Standard"}


def test_zero_thresholds_report_every_move_and_never_a_field_that_did_not_move() -> None:
    rules = AlertRules(AlertConfig(change_churn=0.0, change_points=0.0, change_money_rel=0.0,
                                   change_money_abs=0.0, change_interactions=0.0))
    assert rules.changes(card(0.10), card(0.10)) == {}
    assert rules.changes(card(0.10, revenue_12m=500.0), card(0.11, revenue_12m=500.01)) == {
        "churn_probability": {"old": 0.10, "new": 0.11},
        "revenue_12m": {"old": 500.0, "new": 500.01}}


def test_alert_ids_follow_the_episode_not_the_time_the_batch_was_scored() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    # The same customer story scored at different times (batches closing at other moments).
    early = timeline([(0, 0.2, "Standard"), (1, 0.8, "Standard"), (2, 0.4, "Standard"),
                      (3, 0.9, "Standard")], rules, step_ms=DAY_MS)
    late = timeline([(0, 0.2, "Standard"), (1, 0.8, "Standard"), (2, 0.4, "Standard"),
                     (3, 0.9, "Standard")], rules, step_ms=DAY_MS + 3_600_000)
    assert [a.event_time for _, a in early] != [a.event_time for _, a in late]
    assert [a.alert_id for _, a in early] == [a.alert_id for _, a in late]
    assert [a.episode for _, a in early] == [1, 2]
    assert len({a.alert_id for _, a in early}) == 2  # each episode its own id


def test_an_alert_raised_again_from_the_restored_memory_keeps_its_id() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    memory = AlertMemory()
    [first] = rules.evaluate(card(0.2), card(0.8, t=DAY_MS), memory, "e1", customer_since=5)
    committed = AlertMemory.from_dict(orjson.loads(orjson.dumps(AlertMemory().to_dict())))
    # A crash before the commit: the state (and its alert memory) is read back as it was,
    # and the same events raise the alert again, in a batch that closed later.
    [again] = rules.evaluate(card(0.2), card(0.8, t=DAY_MS + 999), committed, "e1",
                             customer_since=5)
    assert again.alert_id == first.alert_id
    # The memory counts it, so the customer's next churn_risk is a new id.
    assert AlertMemory.from_dict(memory.to_dict()).episodes == {"churn_risk": 1}


def test_a_customer_id_seen_again_after_erasure_gets_new_alert_ids() -> None:
    rules = AlertRules(AlertConfig(cooldown_ms=0))
    before = rules.evaluate(card(0.2), card(0.8, t=DAY_MS), AlertMemory(), None,
                            customer_since=0)
    after = rules.evaluate(card(0.2), card(0.8, t=DAY_MS), AlertMemory(), None,
                           customer_since=400 * DAY_MS)
    assert before[0].episode == after[0].episode == 1
    assert before[0].alert_id != after[0].alert_id
