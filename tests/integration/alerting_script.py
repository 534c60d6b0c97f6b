"""A small scripted history that makes a worker emit a known set of alerts, for the tests of
downstream clients (kcat, `scorestream tail`, `scorestream scorecard`) and of monitoring.

The worker scores with a model bundle whose tier thresholds are fixed before it starts. The
script comes in two phases: first the customers buy (VIP-sized orders raise `vip_upgrade`),
then three of them pay late and cancel their subscription, which takes their churn probability
to 0.9 or more, far above its level after their orders: a material rise, so each raises
`churn_risk`, or `high_value_at_risk` for the Premium and VIP ones. The phases are scored
apart (the second is sent once the first is scored), so the rise is seen whatever the
batching; the alert budget is opened to every customer, and no model is published meanwhile.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from models.learning.bundle import ModelBundle
from models.scoring.tiers import TierThresholds
from tests.integration.kafka_tools import produce
from tests.kit import raw_ev

ALERT_ENV = {
    "SCORESTREAM_ALERT_BUDGET_SHARE": "1.0",
    "SCORESTREAM_MODEL_PUBLISH_INTERVAL_S": "3600",
}
"""Worker settings of the script: no alert budget (a share of 1 sets no limit), no model
published meanwhile."""

TIERS = TierThresholds(standard_from=50.0, premium_from=500.0, vip_from=2000.0,
                       version="tiers-downstream")


def _event(customer: str, n: int, source: str, event_type: str, day: int,
           **payload: Any) -> tuple[str, bytes, bytes]:
    return source, customer.encode(), raw_ev(f"{customer}-{n}", event_type, day, source=source,
                                          customer_id=customer, payload=payload)


def _buyer(customer: str, amount: float, orders: int) -> list[tuple[str, bytes, bytes]]:
    events = [_event(customer, 1, "crm", "profile_updated", 0,
                     fields={"first_name": "Ada", "email": f"{customer.lower()}@example.com"})]
    events += [_event(customer, 2 + k, "crm", "order_placed", 2 + k,
                      order_id=f"{customer}-o{k}", amount=amount, currency="EUR")
               for k in range(orders)]
    return events


def _leaving(customer: str, day: int) -> list[tuple[str, bytes, bytes]]:
    return [_event(customer, 12, "crm", "payment_late", day, days_late=20),
            _event(customer, 13, "crm", "subscription_cancelled", day + 1)]


FIRST: list[tuple[str, bytes, bytes]] = [
    *_buyer("C-VIP", 500.0, 6),       # predicted value about 8,000: VIP
    *_buyer("C-PREMIUM", 300.0, 3),   # about 1,900: Premium
    *_buyer("C-SMALL", 20.0, 2),      # about 100: Standard
    *_buyer("C-UNHAPPY", 20.0, 3),    # about 180: Standard
]
THEN: list[tuple[str, bytes, bytes]] = [
    *_leaving("C-VIP", 12), *_leaving("C-PREMIUM", 10), *_leaving("C-UNHAPPY", 10)]
EVENTS: list[tuple[str, bytes, bytes]] = [*FIRST, *THEN]
"""(source, key, value) of every event, in the order they are produced (two phases)."""

EXPECTED_ALERTS: set[tuple[str, str]] = {
    ("C-VIP", "high_value_at_risk"), ("C-VIP", "vip_upgrade"),
    ("C-PREMIUM", "high_value_at_risk"),
    ("C-UNHAPPY", "churn_risk"),
}
"""(customer id, alert type) of every alert the worker emits for EVENTS, each exactly once."""

INVALID_RECORD = (b"broken-1", b'{"event_id": "x-1", "event_type": ')
"""A record every worker dead-letters as invalid_json."""


def publish_bundle(bootstrap: str, topics: dict[str, str]) -> None:
    """Publish the script's model bundle before the worker starts, so it scores with TIERS."""
    initial = ModelBundle.initial()
    bundle = ModelBundle(initial.churn, initial.engagement, initial.value, tiers=TIERS,
                         sequence=1)
    produce(bootstrap, topics["model_snapshots"], [(b"bundle", bundle.snapshot())])


def metric_value(web_url: str, sample: str) -> float | None:
    """The value of one sample (name with its labels, as exposed) on a worker's /metrics."""
    try:
        with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               log: Callable[[], str]) -> None:
    """Poll until `predicate` holds; fail with the worker's log tail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log()}")
        time.sleep(0.2)


def run_script(bootstrap: str, topics: dict[str, str], web_url: str,
               log: Callable[[], str]) -> None:
    """Produce the script to a running worker and wait until it scored and alerted on all of it."""
    bundle = f'scorestream_model_info{{model="tiers",version="{TIERS.version}"}}'
    wait_until(lambda: metric_value(web_url, bundle) == 1.0, 60, "the script's bundle", log)
    for phase, done in ((FIRST, len(FIRST)), (THEN, len(EVENTS))):
        for source in ("crm", "support"):
            produce(bootstrap, topics[source],
                    [(key, value) for s, key, value in phase if s == source])
        wait_until(lambda n=done: metric_value(web_url, "scorestream_events_processed_total")
                   == n, 90, f"{done} scripted events scored", log)
    produce(bootstrap, topics["web"], [INVALID_RECORD])
    expected = len(EXPECTED_ALERTS)
    wait_until(lambda: alerts_emitted(web_url) >= expected, 30, f"{expected} alerts", log)
    wait_until(lambda: metric_value(
        web_url, 'scorestream_dead_letters_total{reason="invalid_json"}') == 1.0,
        30, "the broken record dead-lettered", log)
    emitted = {kind: metric_value(web_url, f'scorestream_alerts_total{{alert_type="{kind}"}}')
               for kind in {kind for _, kind in EXPECTED_ALERTS}}
    expected_by_type = {kind: float(sum(1 for _, k in EXPECTED_ALERTS if k == kind))
                        for kind in emitted}
    assert emitted == expected_by_type, log()


def alerts_emitted(web_url: str) -> float:
    """Alerts a worker has emitted so far, every type."""
    total = 0.0
    for kind in ("churn_risk", "vip_upgrade", "tier_downgrade", "high_value_at_risk"):
        total += metric_value(web_url, f'scorestream_alerts_total{{alert_type="{kind}"}}') or 0.0
    return total
