"""The scoring stage end to end on the real broker: a scripted customer journey through a real
worker process, checked through the scorecard API, the output topics and /metrics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.registry import validator
from tests.integration.kafka_tools import (
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import at, raw_ev

pytestmark = pytest.mark.integration


def _ev(n: int, source: str, event_type: str, day: float, customer: str = "J1",
        **payload: Any) -> tuple[bytes, bytes]:
    return customer.encode(), raw_ev(f"{customer}-{n}", event_type, day, source=source,
                                  customer_id=customer, payload=payload)


JOURNEY = [
    ("crm", _ev(1, "crm", "profile_updated", 0, fields={
        "first_name": "Jo", "last_name": "Doe", "email": "jo@example.com", "city": "Lyon",
        "country": "FR"})),
    ("web", _ev(2, "web", "page_view", 1, url="/pricing")),
    ("crm", _ev(3, "crm", "order_placed", 2, order_id="o1", amount=120.0, currency="EUR")),
    ("crm", _ev(4, "crm", "order_placed", 40, order_id="o2", amount=80.0, currency="USD")),
    ("crm", _ev(5, "crm", "order_refunded", 45, order_id="o1", amount=20.0, currency="EUR")),
    ("support", _ev(6, "support", "ticket_opened", 50, ticket_id="t1")),
    ("email", _ev(7, "email", "opened", 55)),
    ("support", _ev(8, "support", "satisfaction_rated", 60, ticket_id="t1", csat=2)),
    ("crm", _ev(9, "crm", "subscription_cancelled", 70, reason="price")),
]
OTHERS = [("web", _ev(100 + i, "web", "page_view", 10 + i, customer=f"K{i % 5}", url="/"))
          for i in range(25)]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _wait_for(predicate: Any, timeout: float, what: str, log: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{log()}")


def test_journey_scorecard_outputs_metrics_and_erasure(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"score-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_PARTITIONS="1")
    with running_worker(env, tmp_path / "worker.log") as worker:
        for source, (key, value) in [*JOURNEY, *OTHERS]:
            produce(kafka_bootstrap, topics[source], [(key, value)])
        url = f"{worker.web_url}/customers/J1/scorecard"

        def journey_scored() -> dict[str, Any] | None:
            status, body = _get(url)
            done = status == 200 and body["days_since_last_interaction"] == 10
            return body if done else None

        card = _wait_for(journey_scored, 90, "the journey's scorecard", worker.log_tail)
        # Hand-computed: 120 EUR + 80 USD (x0.92) - 20 EUR refund.
        assert card["ltv"]["historic"] == pytest.approx(173.6)
        assert card["revenue_12m"] == pytest.approx(173.6)
        # page view, 2 orders, ticket opened, email opened, satisfaction rated.
        assert card["interactions_12m"] == 6
        # first/last name 1+1, email 2, city 1, country 1 of total weight 10.5.
        assert card["data_completeness"] == pytest.approx(6 / 10.5 * 100, abs=0.05)
        assert card["as_of"] == at(70)
        assert set(card["model_versions"]) >= {"churn", "engagement", "value"}
        assert 0.0 <= card["churn"]["probability"] <= 1.0

        status, body = _get(f"{worker.web_url}/customers/NOBODY/scorecard")
        assert status == 404 and "NOBODY" not in json.dumps(body)

        changes = read_topic(kafka_bootstrap, topics["score_changes"], 6, settle=2.0)
        alerts = read_topic(kafka_bootstrap, topics["alerts"], 0, settle=1.0)
        with urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=10) as reply:
            metrics = reply.read().decode()

        erase = raw_ev("J1-erase", "customer_erased", 71, customer_id="J1")
        produce(kafka_bootstrap, topics["crm"], [(b"J1", erase)])
        _wait_for(lambda: _get(url)[0] == 404, 60, "erasure", worker.log_tail)
        assert worker.stop() == 0, worker.log_tail()

    records = [orjson.loads(m.value()) for m in changes if m.value() is not None]
    check_change = validator("score-changes")
    for record in records:
        check_change(record)
    by_customer = {r["customer_id"] for r in records}
    assert by_customer == {"J1", "K0", "K1", "K2", "K3", "K4"}
    last_j1 = [r for r in records if r["customer_id"] == "J1"][-1]
    assert last_j1["scorecard"]["ltv"]["historic"] == pytest.approx(173.6)
    # Sources arrive in any interleaving, so the last change may come from any J1 event.
    assert last_j1["trigger_event_id"] in {f"J1-{n}" for n in range(1, 10)}

    check_alert = validator("alerts")
    alert_ids = [orjson.loads(m.value())["alert_id"] for m in alerts]
    for m in alerts:
        check_alert(orjson.loads(m.value()))
    assert len(alert_ids) == len(set(alert_ids))

    processed = [line for line in metrics.splitlines()
                 if line.startswith("scorestream_events_processed_total ")]
    assert processed == [f"scorestream_events_processed_total {float(len(JOURNEY) + len(OTHERS))}"]
    # Observed after each committed batch: at least one batch, and never more than events.
    latency = [float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("scorestream_processing_latency_seconds_count ")]
    assert len(latency) == 1 and 1 <= latency[0] <= len(JOURNEY) + len(OTHERS), latency
