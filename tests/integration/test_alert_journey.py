"""A scripted journey through a real worker emits exactly the score changes and alerts that the
pure core computes for the same events, in order, with no duplicates.

The worker scores with a model bundle published to its model-snapshots topic before it starts:
tier thresholds chosen so the journey crosses into VIP and back, and a churn model that has
learned that support trouble precedes churn. The events are sent one at a time so every batch
holds one event, as in the reference run.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.learning.churn import CLASSIFIER, MULTICHANNEL, ChurnModel
from models.scoring.alerts import AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.features import observe
from models.scoring.tiers import TierThresholds
from schemas.decode import DecodedEvent, decode_source_event
from streams.settings import Settings
from tests.integration.kafka_tools import (
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import DAY_MS, raw_ev

pytestmark = pytest.mark.integration

BASE = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the whole journey lies in the past
NOW = BASE + 400 * DAY_MS


def _ev(n: int, source: str, event_type: str, day: int, **payload: Any) -> tuple[str, bytes]:
    return source, raw_ev(f"J-{n}", event_type, source=source, occurred_at=BASE + day * DAY_MS,
                       customer_id="J", payload=payload)


JOURNEY = [
    _ev(1, "crm", "profile_updated", 0, fields={"first_name": "Jo", "email": "jo@example.com"}),
    _ev(2, "web", "page_view", 1, url="/"),
    *[_ev(3 + k, "crm", "order_placed", 5 + 20 * k, order_id=f"o{k}", amount=300.0,
          currency="EUR") for k in range(6)],
    _ev(9, "support", "ticket_opened", 130, ticket_id="t1"),
    _ev(10, "support", "escalated", 131, ticket_id="t1"),
    _ev(11, "support", "satisfaction_rated", 140, ticket_id="t1", csat=1),
    _ev(12, "crm", "payment_late", 150, days_late=20),
    _ev(13, "crm", "subscription_cancelled", 160),
    _ev(14, "web", "page_view", 330, url="/bye"),
]


def _outcomes(bundle: ModelBundle, rules: AlertRules) -> list[tuple[Any, list[Any], Any]]:
    """The pure core's outcome, alerts and score change for each journey event, one event per
    batch (in the worker's order: both rules keep their memory in the state)."""
    engine = ScoringEngine(ScoringConfig(), bundle)
    state, watermark, results = None, 0, []
    for source, raw in JOURNEY:
        decoded = decode_source_event(raw, source, NOW)
        assert isinstance(decoded, DecodedEvent)
        event = decoded.to_canonical("J", NOW)
        watermark = max(watermark, event["occurred_at"])
        outcome = engine.apply_batch(state, [event], watermark, "J")
        results.append((outcome, rules.on_outcome(outcome), rules.score_changes(outcome)))
        state = outcome.state
    return results


def _churn_model(initial: ModelBundle) -> ChurnModel:
    """A churn model past its cold start that has learned that support trouble precedes churn:
    the journey's own features after each event, labelled churned from the first ticket to the
    cancellation (events 9-13) and not churned before."""
    outcomes = _outcomes(initial, AlertRules())[:13]
    examples = [(observe(o.state, o.scorecard.as_of)[1], 1.0 if n >= 9 else 0.0)
                for n, (o, _, _) in enumerate(outcomes, start=1)]
    model = ChurnModel()
    for _ in range(60):
        for features, label in examples:
            # web and support, not orders only; scored on what it said before learning
            model.learn(features, label, MULTICHANNEL, model.classifier_probability(features))
    assert model.champion[MULTICHANNEL] == CLASSIFIER
    return model


def _reference(bundle: ModelBundle, rules: AlertRules) -> tuple[list[Any], list[Any]]:
    """Score changes and alerts the worker must emit, in order."""
    changes: list[Any] = []
    alerts: list[Any] = []
    for _outcome, fired, changed in _outcomes(bundle, rules):
        if changed:
            changes.append(orjson.loads(orjson.dumps(changed)))
        alerts += [(a.alert_id, a.alert_type, a.event_time, a.reason) for a in fired]
    return changes, alerts


def _metric(url: str, pattern: str) -> float:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return -1.0
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else -1.0


def test_journey_emits_exactly_the_reference_changes_and_alerts(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    initial = ModelBundle.initial()
    values = [o.scorecard.ltv_predicted_12m for o, _, _ in _outcomes(initial, AlertRules())
              if o.scorecard is not None]
    low, high = min(values), max(values)
    assert high > low, values
    # VIP from the middle of the journey's value range: the customer crosses it both ways.
    vip = (low + high) / 2
    tiers = TierThresholds(standard_from=low / 10, premium_from=vip * 0.9, vip_from=vip,
                           version="tiers-journey")
    bundle = ModelBundle(_churn_model(initial), initial.engagement, initial.value, tiers=tiers,
                         sequence=1)
    rules = AlertRules(Settings().alert_config())
    expected_changes, expected_alerts = _reference(ModelBundle.restore(bundle.snapshot()), rules)
    # The story: VIP after the fourth order (the third takes its value past the cut, but not
    # by the tiers' margin); at risk from the first ticket, as a VIP; and, three months into
    # its silence, out of the high-value tiers: rescored when a label comes due on day 250,
    # not only at its next event (day 330).
    assert [(kind, (at - BASE) // DAY_MS) for _, kind, at, _ in expected_alerts] == [
        ("vip_upgrade", 65), ("high_value_at_risk", 130),
        ("tier_downgrade", 250)]

    topics = topic_names(unique_name)
    produce(kafka_bootstrap, topics["model_snapshots"], [(b"bundle", bundle.snapshot())])
    env = worker_env(kafka_bootstrap, f"journey-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_PARTITIONS="1",
                     SCORESTREAM_MODEL_PUBLISH_INTERVAL_S="3600")
    with running_worker(env, tmp_path / "worker.log") as worker:
        loaded = r'^scorestream_model_info\{model="tiers",version="tiers-journey"\} ([0-9.]+)$'
        deadline = time.monotonic() + 60
        while _metric(worker.web_url, loaded) != 1.0:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        processed = r"^scorestream_events_processed_total ([0-9.e+]+)$"
        for n, (source, raw) in enumerate(JOURNEY, start=1):
            produce(kafka_bootstrap, topics[source], [(b"J", raw)])
            deadline = time.monotonic() + 30
            while _metric(worker.web_url, processed) < n:
                assert time.monotonic() < deadline, f"event {n} not scored\n{worker.log_tail()}"
                time.sleep(0.05)
        changes = read_topic(kafka_bootstrap, topics["score_changes"], len(expected_changes),
                             settle=2.0)
        alerts = read_topic(kafka_bootstrap, topics["alerts"], len(expected_alerts), settle=1.0)
        assert worker.stop() == 0, worker.log_tail()

    got_changes = [orjson.loads(m.value())["changed"] for m in changes]
    assert got_changes == expected_changes
    got_alerts = []
    for message in alerts:
        alert = orjson.loads(message.value())
        got_alerts.append((alert["alert_id"], alert["alert_type"], alert["event_time"],
                           alert["reason"]))
    assert got_alerts == expected_alerts
    assert len({a[0] for a in got_alerts}) == len(got_alerts)
