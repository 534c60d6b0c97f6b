"""Synthetic history: deterministic, per the contract, with aliases, churn drift and VIPs."""

from __future__ import annotations

from collections import Counter

from models.synthetic import generate, iter_lines


def test_deterministic_and_contract_shaped() -> None:
    a, truth = generate(80, seed=5, days=300)
    b, _ = generate(80, seed=5, days=300)
    assert list(iter_lines(a)) == list(iter_lines(b))
    assert generate(80, seed=6, days=300)[0] != a
    for e in a:
        assert {"event_id", "event_type", "source", "occurred_at"} <= e.keys()
        assert e.keys() & {"customer_id", "email", "anonymous_id"}
    kinds = Counter((e["source"], e["event_type"]) for e in a)
    assert kinds[("web", "login")] == 80
    assert any("customer_id" not in e and "email" in e for e in a)  # alias-only email events
    assert any("customer_id" not in e and "anonymous_id" in e for e in a)
    assert {t.segment for t in truth} >= {"one_time", "regular", "churner", "vip_grower"}


def test_heavy_tails_one_time_buyers_and_churn_drift() -> None:
    events, truth = generate(400, seed=9, days=600)
    amounts = sorted(e["payload"]["amount"] for e in events if e["event_type"] == "order_placed")
    assert amounts[-len(amounts) // 100] > 5 * amounts[len(amounts) // 2]  # top 1 % >> median
    assert sum(1 for t in truth if t.orders == 1) > 0.15 * len(truth)
    churners = {t.customer_id: t for t in truth if t.segment == "churner" and t.churn_ms}
    tickets_before, tickets_early = 0, 0
    for e in events:
        if e["event_type"] != "ticket_opened":
            continue
        t = churners.get(e["customer_id"])
        if t is None:
            continue
        assert t.churn_ms is not None
        if t.churn_ms - 60 * 86_400_000 <= e["occurred_at"] < t.churn_ms:
            tickets_before += 1
        elif t.signup_ms <= e["occurred_at"] < t.signup_ms + 60 * 86_400_000:
            tickets_early += 1
    assert tickets_before > 2 * tickets_early
