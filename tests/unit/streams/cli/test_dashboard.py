"""The demo's view: parsing a worker's real /metrics exposition, rates, which alert's customer is
spotlighted, and what the live view, the plain lines and the summary say."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console

from models.learning.prediction import Factor
from models.scoring.scorecard import Scorecard
from streams.cli.dashboard import (
    DemoStatus,
    Rates,
    WorkerMetrics,
    plain_line,
    render,
    scorecard_lines,
    summary,
)
from streams.metrics import Metrics
from tests.kit import T0


def _status() -> DemoStatus:
    return DemoStatus("127.0.0.1:9092", "http://127.0.0.1:6066", 4321, "worker.log",
                      "topics as configured", target_rate=500)


def _alert(kind: str, customer: str, reason: str = "a reason") -> dict[str, Any]:
    return {"alert_type": kind, "customer_id": customer, "reason": reason,
            "event_time": T0}


def test_metrics_of_a_real_registry_are_summed_per_label() -> None:
    metrics = Metrics()
    metrics.events_consumed.labels("web").inc(7)
    metrics.events_consumed.labels("crm").inc(2)
    metrics.events_processed.inc(8)
    metrics.score_changes.inc(3)
    metrics.alerts.labels("churn_risk").inc(1)
    parsed = WorkerMetrics.parse(metrics.exposition().decode())

    assert parsed.by_label("scorestream_events_consumed_total", "source") == {"web": 7.0,
                                                                              "crm": 2.0}
    assert parsed.total("scorestream_events_processed_total") == 8.0
    # `_created` samples carry timestamps: they must not be summed into the counter
    assert parsed.total("scorestream_score_changes_total") == 3.0

    status = _status()
    status.apply_metrics(parsed)
    assert (status.consumed, status.scored, status.score_changes) == (
        {"web": 7.0, "crm": 2.0}, 8.0, 3.0)
    assert status.worker_up


def test_rates_are_per_second_over_the_window() -> None:
    rates = Rates(window_s=2.0)
    assert rates.update({"web": 0}, now=10.0) == {"web": 0.0}
    assert rates.update({"web": 100}, now=11.0) == {"web": 100.0}
    assert rates.update({"web": 400}, now=12.0) == {"web": 200.0}   # (400 - 0) / 2 s
    assert rates.update({"web": 500}, now=13.0) == {"web": 200.0}   # (500 - 100) / 2 s


def test_the_most_telling_recent_alert_gets_the_spotlight() -> None:
    status = _status()
    assert status.add_alert(_alert("vip_upgrade", "C1"))
    status.spotlight_alert = _alert("vip_upgrade", "C1")
    assert status.add_alert(_alert("churn_risk", "C2"))
    status.spotlight_alert = _alert("churn_risk", "C2")
    assert not status.add_alert(_alert("tier_downgrade", "C3"))
    assert status.add_alert(_alert("churn_risk", "C4"))
    assert status.alerts == Counter(vip_upgrade=1, churn_risk=2, tier_downgrade=1)
    assert [a["customer_id"] for a in status.latest_alerts] == ["C4", "C3", "C2", "C1"]


def _card() -> dict[str, Any]:
    return Scorecard("C000042", as_of=0, data_completeness=60.0, ltv_historic=1234.5,
                     ltv_predicted_12m=320.0, engagement=23.0, revenue_12m=400.0,
                     interactions_12m=12, days_since_last_interaction=45,
                     churn_probability=0.74, tier="Premium",
                     churn_factors=(Factor("recency", "days since last interaction: high", 0.4),
                                    )).to_dict()


def test_a_scorecard_from_the_api_reads_as_a_few_lines() -> None:
    lines = scorecard_lines(_card())
    assert lines[0] == ("tier Premium · churn risk 0.74 · engagement 23/100 · "
                        "data completeness 60 %")
    assert "lifetime value 1,234.50 EUR (next 12 months 320.00)" in lines[1]
    assert "45 days since the last" in lines[1]
    assert lines[2:] == ["why: days since last interaction: high (+0.40)"]


def test_the_live_view_shows_sources_tiers_totals_alerts_and_the_spotlight() -> None:
    status = _status()
    status.phase, status.event_time_ms = "live", T0
    status.produced = Counter(web=4000, email=2500, crm=300, support=200, malformed=3)
    status.produced_rate = {"web": 280.0}
    status.consumed = {"web": 4003.0, "email": 2500.0, "crm": 300.0, "support": 200.0}
    status.tiers = {"VIP": 5.0, "Premium": 10.0, "Standard": 28.0, "Basic": 5.0}
    status.scored, status.customers = 6900.0, 48.0
    alert = _alert("churn_risk", "C000042", "churn risk rose from 0.52 to 0.74")
    status.add_alert(alert)
    status.spotlight_alert, status.spotlight_card = alert, _card()
    console = Console(width=130, record=True, force_terminal=False)
    console.print(render(status))
    text = console.export_text()

    assert "live: 500 events/s · event time 2026-01-01" in text
    for expected in ("web", "280", "4,003", "Premium", "events sent", "7,003",
                     "events scored", "6,900", "churn risk rose from 0.52 to 0.74",
                     "C000042 just crossed a threshold: churn_risk",
                     "GET http://127.0.0.1:6066/customers/C000042/scorecard",
                     "tier Premium · churn risk 0.74"):
        assert expected in text, expected


def test_plain_line_and_summary_report_the_counts() -> None:
    status = _status()
    status.phase = "live"
    status.produced = Counter(web=10, crm=5, malformed=1)
    status.consumed = {"web": 11.0, "crm": 5.0}
    status.alerts = Counter(churn_risk=2)
    status.dead_letters = Counter(invalid_json=1)
    line = plain_line(status)
    assert "live: sent 16 " in line and "alerts 2" in line and "dead letters 1" in line

    report = "\n".join(summary(status, worker_exit=0))
    assert "sent:           16  crm 5, malformed 1, web 10" in report
    assert "alerts:         2  churn_risk 2" in report
    assert "dead letters:   1  invalid_json 1" in report
    assert "exit code 0" in report
