"""Key values by hand: completeness, LTV, rolling 12-month revenue and interactions, recency."""

from __future__ import annotations

from models.config import ScoringConfig
from models.scoring.features import key_values
from models.scoring.state import CustomerState
from tests.kit import at, ev


def test_data_completeness_is_weighted() -> None:
    # default weights total 10.5: email 2 + first_name 1 + consent 1 = 4 -> 38.1 %
    s = CustomerState("C1")
    s.apply(ev("p1", "profile_updated", 0,
               fields={"email": "a@b.c", "first_name": "A", "consent_marketing": False}))
    assert key_values(s, at(0)).data_completeness == 38.1
    s.apply(ev("p2", "profile_updated", 1, fields={"first_name": None}))
    assert key_values(s, at(1)).data_completeness == 28.6


def test_completeness_uses_configured_weights() -> None:
    cfg = ScoringConfig(profile_weights={"email": 1.0, "phone": 3.0})
    s = CustomerState("C1", cfg)
    s.apply(ev("p1", "profile_updated", 0, fields={"phone": "+1", "city": "X"}))
    assert key_values(s, at(0)).data_completeness == 75.0


def test_ltv_historic_is_orders_minus_refunds() -> None:
    s = CustomerState("C1")
    s.apply(ev("o1", "order_placed", 0, amount=100.0))
    s.apply(ev("o2", "order_placed", 400, amount=50.0))
    s.apply(ev("r1", "order_refunded", 401, order_id="o2", amount=50.0, currency="EUR"))
    assert key_values(s, at(401)).ltv_historic == 100.0


def test_revenue_12m_window_expiry() -> None:
    # window = the 365 UTC days ending on as_of's day: an order on day 0 counts through day 364
    s = CustomerState("C1")
    s.apply(ev("o1", "order_placed", 0.5, amount=100.0))
    s.apply(ev("o2", "order_placed", 200.25, amount=40.0))
    assert key_values(s, at(0.9)).revenue_12m == 100.0
    assert key_values(s, at(364.99)).revenue_12m == 140.0
    assert key_values(s, at(365)).revenue_12m == 40.0
    assert key_values(s, at(564.99)).revenue_12m == 40.0
    assert key_values(s, at(565)).revenue_12m == 0.0
    assert key_values(s, at(565)).ltv_historic == 140.0


def test_refund_reduces_revenue_in_the_refund_day() -> None:
    s = CustomerState("C1")
    s.apply(ev("o1", "order_placed", 0, amount=100.0))
    s.apply(ev("r1", "order_refunded", 10, order_id="o1", amount=30.0, currency="EUR"))
    assert key_values(s, at(10)).revenue_12m == 70.0
    assert key_values(s, at(365)).revenue_12m == -30.0  # the order left, the refund not yet


def test_interactions_12m_and_what_counts() -> None:
    s = CustomerState("C1")
    s.apply(ev("w1", "page_view", 1, url="/"))
    s.apply(ev("e1", "sent", 2))  # we sent it: not an interaction
    s.apply(ev("e2", "opened", 3))
    s.apply(ev("t1", "ticket_opened", 4, ticket_id="t"))
    s.apply(ev("t2", "ticket_resolved", 5, ticket_id="t", resolution_hours=1))
    kv = key_values(s, at(5))
    assert kv.interactions_12m == 3
    assert kv.days_since_last_interaction == 1
    assert key_values(s, at(366)).interactions_12m == 2  # day 1 left the window
    assert key_values(s, at(369)).interactions_12m == 0


def test_recency_ages_with_as_of_only() -> None:
    s = CustomerState("C1")
    s.apply(ev("w1", "page_view", 10.5, url="/"))
    assert key_values(s, at(10.5)).days_since_last_interaction == 0
    assert key_values(s, at(11.49)).days_since_last_interaction == 0
    assert key_values(s, at(11.5)).days_since_last_interaction == 1
    assert key_values(s, at(100.5)).days_since_last_interaction == 90
    assert key_values(CustomerState("C2"), at(0)).days_since_last_interaction is None


def test_late_event_within_window_counts_in_its_day() -> None:
    s = CustomerState("C1")
    s.apply(ev("o2", "order_placed", 300, amount=10.0))
    assert key_values(s, at(300)).revenue_12m == 10.0  # anchors the running sums at day 300
    s.apply(ev("o1", "order_placed", 100, amount=5.0))  # late, inside the window
    s.apply(ev("w0", "page_view", 50, url="/"))  # late, inside the window
    kv = key_values(s, at(300))
    assert (kv.revenue_12m, kv.interactions_12m) == (15.0, 3)
    assert key_values(s, at(465)).revenue_12m == 10.0  # day 100 left at day 465
    assert key_values(s, at(415)).interactions_12m == 2  # day 50 left at day 415
