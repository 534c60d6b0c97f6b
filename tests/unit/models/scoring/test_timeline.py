"""A customer's scorecards, labels and alerts depend on its own events, not on batching.

The scoring stage takes a customer's events in batches, and batches fall differently
after a crash, a takeover, a restart or in a replay. The engine walks each customer's timeline
(each event, each due label at its due time) whatever the batch holds, so the same history
gives the same alerts (with the same ids), the same training examples and the same states
however it was cut, as long as no watermark passes an event that has not arrived yet.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from models.history.generate import generate, iter_lines
from models.history.replay import ReplayResult, ingest, replay, sort_raw
from models.learning.bundle import ModelBundle
from models.scoring.alerts import AlertConfig, AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.tiers import TierThresholds
from tests.kit import DAY_MS, at, ev

TIERS = TierThresholds(standard_from=50.0, premium_from=300.0, vip_from=1000.0,
                       version="tiers-fixed")
OPEN_BUDGET = AlertConfig(budget_share=1.0)
"""Every alert a rule raises is sent: the budget, a storm guard, is spent in arrival order."""


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    raw = generate(60, seed=3, days=240)[0]
    return list(ingest(sort_raw(iter_lines(raw))))


def _bundle() -> ModelBundle:
    initial = ModelBundle.initial()
    return ModelBundle(initial.churn, initial.engagement, initial.value, tiers=TIERS,
                       upsell=initial.upsell, advocacy=initial.advocacy, sequence=1)


def _run(events: list[dict[str, Any]], batch_ms: int) -> ReplayResult:
    return replay(events, publish=False, bundle=_bundle(), alert_config=OPEN_BUDGET,
                  batch_ms=batch_ms)


def _alerts(result: ReplayResult) -> list[bytes]:
    """Every alert record whole (ids, triggers, scorecards), in a canonical order."""
    return sorted(orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in result.alerts)


def _states(result: ReplayResult) -> dict[str, Any]:
    """Every customer's whole state but the score-change baseline ("rp"): score changes are
    reported per batch, by design, so a customer scored in more batches reports more."""
    out = {}
    for cid, state in result.states.items():
        d = orjson.loads(state.snapshot())
        d.pop("rp", None)
        out[cid] = d
    return out


def test_alerts_labels_and_states_are_the_same_however_the_history_is_batched(
        events: list[dict[str, Any]]) -> None:
    daily = _run(events, DAY_MS)
    kinds = Counter(a["alert_type"] for a in daily.alerts)
    # The history raises alerts of several types, so there is something to compare.
    assert kinds["churn_risk"] >= 5 and len(kinds) >= 4, kinds
    examples = daily.stats["training_examples"]
    for batch_ms in (60_000, 3_600_000, 7 * DAY_MS, 37 * DAY_MS):
        other = _run(events, batch_ms)
        assert other.stats["batches"] != daily.stats["batches"]
        assert _alerts(other) == _alerts(daily), f"batches of {batch_ms} ms"
        assert other.stats["training_examples"] == examples
        assert sorted(other.churn_examples) == sorted(daily.churn_examples)
        assert _states(other) == _states(daily), f"batches of {batch_ms} ms"


def test_labels_due_before_an_event_resolve_at_their_due_time_not_after_it() -> None:
    """An engagement label (30 days) due on day 31 is resolved as of day 31 even when the
    customer's next event (day 45) comes in the batch that passes it, and the rescoring at
    the due time is a point of its own."""
    engine = ScoringEngine(bundle=_bundle())
    first = engine.apply_batch(None, [ev("a", "page_view", 1)], watermark_ms=at(1))
    assert first.state is not None and first.next_due == at(31)
    late = engine.apply_batch(first.state, [ev("b", "page_view", 45)], watermark_ms=at(45))
    engagement = [x for x in late.training_examples if x.model == "engagement"]
    assert [(x.label, x.resolved_at) for x in engagement] == [(0.0, at(31))]
    assert [(card.as_of, trigger) for card, trigger in late.points] == [
        (at(31), None), (at(45), "b")]
    assert late.scorecard is late.points[-1][0]


def test_each_event_of_a_batch_is_a_point_the_alert_rules_see() -> None:
    """A churn probability that rises above the alert level and falls back inside one batch
    still raises its alert: the rules see the scorecard after each event."""
    engine = ScoringEngine(bundle=_bundle())
    buy = [ev(f"o{k}", "order_placed", k, amount=40.0) for k in range(1, 4)]
    start = engine.apply_batch(None, buy, watermark_ms=at(3))
    cancel = ev("c", "subscription_cancelled", 10)
    back = ev("r", "subscription_started", 11, plan="basic")
    assert start.state is not None
    together = engine.apply_batch(start.state, [cancel, back], watermark_ms=at(11))
    probabilities = [card.churn_probability for card, _trigger in together.points]
    assert [trigger for _card, trigger in together.points] == ["c", "r"]
    assert probabilities[0] >= AlertConfig().churn_risk_on > probabilities[1]
    alerts = AlertRules(OPEN_BUDGET).on_outcome(together)
    assert [(a.alert_type, a.trigger_event_id) for a in alerts] == [("churn_risk", "c")]


def test_a_late_event_is_scored_as_of_the_customers_present_not_back_in_its_past() -> None:
    """Labels resolved to day 181, then an event of day 50 arrives late (released by the
    identity stage, say): its scorecard is not dated back to day 50."""
    engine = ScoringEngine(bundle=_bundle())
    first = engine.apply_batch(None, [ev("a", "page_view", 1)], watermark_ms=at(1))
    assert first.state is not None
    silent = engine.resolve_due(first.state, watermark_ms=at(200))
    assert silent.scorecard is not None
    times = [card.as_of for card, _trigger in silent.points]
    assert times == sorted(times) and times[-1] >= at(181)
    late = engine.apply_batch(silent.state, [ev("b", "page_view", 50)], watermark_ms=at(200))
    assert [card.as_of for card, _trigger in late.points] == [times[-1]]


def test_scoring_once_per_batch_scores_after_the_last_event_only() -> None:
    """`score_every_event=False` (SCORESTREAM_SCORE_EVERY_EVENT=false): one point per batch,
    after the customer's last event."""
    from models.config import ScoringConfig
    from streams.settings import Settings

    config = Settings.from_env({"SCORESTREAM_SCORE_EVERY_EVENT": "false"}).scoring_config()
    assert not config.score_every_event and ScoringConfig().score_every_event
    events = [ev("a", "page_view", 1), ev("b", "page_view", 2), ev("c", "page_view", 45)]
    once = ScoringEngine(config, _bundle()).apply_batch(None, events, watermark_ms=at(45))
    every = ScoringEngine(bundle=_bundle()).apply_batch(None, events, watermark_ms=at(45))
    assert [(card.as_of, trigger) for card, trigger in every.points] == [
        (at(1), "a"), (at(2), "b"), (at(31), None), (at(45), "c")]
    # Scored after each event, the customer's first engagement label (taken on day 1) came
    # due on day 31; scored once, its first snapshot is taken after c.
    assert [(card.as_of, trigger) for card, trigger in once.points] == [(at(45), "c")]
    assert once.scorecard is not None and every.scorecard is not None
    assert once.scorecard.interactions_12m == every.scorecard.interactions_12m == 3
