"""Feature vectors and key values computed from a `CustomerState` as of an event time.

Pure functions of (state, as_of): the same state and the same as_of always give the same
numbers, and values that age (windows, recency) move when only as_of advances.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from models.scoring.state import (
    CSAT_COUNT,
    CSAT_SUM,
    EMAIL_ENGAGED,
    ESCALATIONS,
    INTERACTIONS,
    LATE_PAYMENTS,
    NEGATIVE_SENTIMENT,
    ORDERS,
    REVENUE_CENTS,
    TICKETS,
    CustomerState,
)
from schemas.units import DAY_MS

__all__ = [
    "FEATURE_LABELS",
    "FEATURE_NAMES",
    "RFM_NAMES",
    "UPSELL_NAMES",
    "KeyValues",
    "activity",
    "activity_row",
    "features",
    "key_values",
    "observe",
    "rfm",
    "summary_row",
    "unvector",
    "upsell_features",
    "vector",
]

#: Behavioural features shared by the churn and engagement models (order is the wire order).
FEATURE_NAMES: tuple[str, ...] = (
    "recency_days",
    "interactions_30d",
    "interactions_90d",
    "activity_trend",
    "orders_365d",
    "revenue_365d",
    "days_since_last_order",
    "tickets_90d",
    "escalations_90d",
    "late_payments_90d",
    "csat_90d",
    "negative_sentiment_90d",
    "email_engagement_90d",
    "tenure_days",
    "subscription_active",
    "unsubscribed",
    "active_days",
    "silence_vs_cadence",
    "orders_only",
    "baseline_churn",
)

#: Names people understand, for "why is this customer at risk?".
FEATURE_LABELS: dict[str, str] = {
    "recency_days": "days since last interaction",
    "interactions_30d": "interactions in the last 30 days",
    "interactions_90d": "interactions in the last 90 days",
    "activity_trend": "activity trend (last 30 days vs. 90-day average)",
    "orders_365d": "orders in the last 12 months",
    "revenue_365d": "revenue in the last 12 months",
    "days_since_last_order": "days since last order",
    "tickets_90d": "support tickets in the last 90 days",
    "escalations_90d": "escalated tickets in the last 90 days",
    "late_payments_90d": "late payments in the last 90 days",
    "csat_90d": "satisfaction rating in the last 90 days",
    "negative_sentiment_90d": "negative support conversations in the last 90 days",
    "email_engagement_90d": "email opens and clicks in the last 90 days",
    "tenure_days": "customer for (days)",
    "subscription_active": "active subscription",
    "unsubscribed": "unsubscribed from email",
    "active_days": "days with any activity, ever",
    "silence_vs_cadence": "days since last active, against the customer's usual gap",
    "orders_only": "orders are the customer's only activity",
    "baseline_churn": "repeat-activity model (BG/NBD) churn risk",
    "categories_bought": "product categories bought",
    "plan_fee": "subscription's monthly fee",
}

#: Features of the upsell model: the behavioural ones and what there is to upsell from.
UPSELL_NAMES: tuple[str, ...] = (*FEATURE_NAMES, "categories_bought", "plan_fee")

#: Repeat-purchase summary used by the value model (BG/NBD + Gamma-Gamma), days and base money.
RFM_NAMES: tuple[str, ...] = ("x", "t_x", "T", "n", "m")

_CAP_DAYS = 365.0


class KeyValues(NamedTuple):
    """The directly observed key values of a scorecard (no model involved)."""

    data_completeness: float
    ltv_historic: float
    revenue_12m: float
    interactions_12m: int
    days_since_last_interaction: int | None


def key_values(state: CustomerState, as_of_ms: int) -> KeyValues:
    """Data completeness, historic LTV, 12-month revenue and interactions, recency at as_of.

    The window is the `window_days` UTC days ending on as_of's day (inclusive), by event time.

    >>> from models.scoring.state import CustomerState
    >>> s = CustomerState("C1")
    >>> _ = s.apply({"event_id": "o1", "event_type": "order_placed", "source": "crm",
    ...              "occurred_at": 0, "payload": {"amount": 10.0, "currency": "EUR"}})
    >>> key_values(s, 364 * 86_400_000).revenue_12m, key_values(s, 365 * 86_400_000).revenue_12m
    (10.0, 0.0)
    """
    w = state.window_sums(as_of_ms // DAY_MS)[state.config.window_days]
    last = state.last_interaction_ms
    recency = None if last is None else max(0, (as_of_ms - last) // DAY_MS)
    return KeyValues(
        state.completeness(),
        state.ltv_cents / 100,
        w[REVENUE_CENTS] / 100,
        w[INTERACTIONS],
        recency,
    )


def features(state: CustomerState, as_of_ms: int) -> dict[str, float]:
    """Behavioural feature dict (FEATURE_NAMES) as of `as_of_ms`.

    Counts and money are log1p-transformed so that heavy tails do not dominate a linear model.
    """
    return observe(state, as_of_ms)[1]


def observe(state: CustomerState, as_of_ms: int) -> tuple[KeyValues, dict[str, float]]:
    """Key values and features in one pass over the day buckets (what scoring needs).

    Called for every score: two-way minima and maxima are comparisons here, not calls to
    min() and max() (whose argument parsing costs more than the comparison).
    """
    now_day = as_of_ms // DAY_MS
    sums = state.window_sums(now_day)
    w = sums[state.config.window_days]
    y, q = sums[365], sums[90]
    i_win, r_win = w[INTERACTIONS], w[REVENUE_CENTS]
    o365, r365 = y[ORDERS], y[REVENUE_CENTS]
    i90, t90, e90, l90 = q[INTERACTIONS], q[TICKETS], q[ESCALATIONS], q[LATE_PAYMENTS]
    em90, cs, cn, neg = q[EMAIL_ENGAGED], q[CSAT_SUM], q[CSAT_COUNT], q[NEGATIVE_SENTIMENT]
    i30 = sums[30][INTERACTIONS]
    last = state.last_interaction_ms
    days = None if last is None else (as_of_ms - last) // DAY_MS
    kv = KeyValues(
        state.completeness(),
        state.ltv_cents / 100,
        r_win / 100,
        i_win,
        days if days is None or days > 0 else 0,
    )
    recency = _days_since(last, as_of_ms)
    since_order = _days_since(state.last_order_ms, as_of_ms)
    tenure = _days_since(state.first_ms, as_of_ms)
    unsub = state.unsubscribed
    log1p = math.log1p
    active = state.active_days
    first_int = state.first_interaction_ms
    if active and first_int is not None and last is not None:
        gap = (last - first_int) / DAY_MS / (active - 1) if active > 1 else 30.0
        quiet = (as_of_ms - last) / DAY_MS
        silence = log1p((quiet if quiet > 0.0 else 0.0) / (gap + 1.0))
    else:
        silence = 0.0
    x = {
        "recency_days": log1p(recency),
        "interactions_30d": log1p(i30),
        "interactions_90d": log1p(i90),
        "activity_trend": math.log((i30 + 1) / (i90 / 3 + 1)),
        "orders_365d": log1p(o365),
        "revenue_365d": log1p((r365 if r365 > 0 else 0) / 100),
        "days_since_last_order": log1p(since_order),
        "tickets_90d": log1p(t90),
        "escalations_90d": log1p(e90),
        "late_payments_90d": log1p(l90),
        "csat_90d": round(cs / cn - 3.0, 6) if cn else 0.0,
        "negative_sentiment_90d": log1p(neg),
        "email_engagement_90d": log1p(em90),
        "tenure_days": log1p(tenure),
        "subscription_active": 1.0 if state.subscription_active else 0.0,
        "unsubscribed": 1.0 if unsub and unsub[1] else 0.0,
        "active_days": log1p(active),
        "silence_vs_cadence": silence,
        "orders_only": 1.0 if state.orders_only else 0.0,
    }
    return kv, x


def upsell_features(state: CustomerState, x: dict[str, float]) -> dict[str, float] | None:
    """The upsell model's features (`UPSELL_NAMES`) from the behavioural ones just scored
    (`x`, with `baseline_churn`), or None for a customer with nothing to upsell from (no
    product category bought, no active subscription with a known fee)."""
    if not state.upsell_eligible:
        return None
    plan = state.plan
    fee = plan[1] / 100 if plan is not None and state.subscription_active else 0.0
    return {**x, "categories_bought": math.log1p(len(state.categories or ())),
            "plan_fee": math.log1p(fee if fee > 0 else 0.0)}


def activity_row(state: CustomerState, as_of_ms: int) -> dict[str, float] | None:
    """The customer's row of the churn baseline's population fit: `activity` as x, t_x, T,
    and `orders_only` (which segment's fit it joins); None before the first interaction."""
    return summary_row(activity(state, as_of_ms), state.orders_only)


def summary_row(summary: tuple[float, float, float] | None,
                orders_only: bool) -> dict[str, float] | None:
    """`activity_row` from an `activity` summary already computed, and `orders_only`."""
    if summary is None:
        return None
    x, t_x, big_t = summary
    return {"x": x, "t_x": t_x, "T": big_t, "orders_only": 1.0 if orders_only else 0.0}


def activity(state: CustomerState, as_of_ms: int) -> tuple[float, float, float] | None:
    """Active-day summary in days (x, t_x, T), or None before the first interaction.

    x = distinct active days - 1, t_x = last - first active day, T = as_of day - first active
    day: the repeat-purchase summary of `rfm`, with every interaction day as a "purchase".
    """
    first, last = state.first_interaction_ms, state.last_interaction_ms
    active = state.active_days
    if first is None or last is None or not active:
        return None
    first_day = first // DAY_MS
    t_x = float(last // DAY_MS - first_day)
    x = float(t_x if t_x < active - 1 else active - 1)
    big_t = as_of_ms // DAY_MS - first_day
    return x, t_x, float(t_x if t_x > big_t else big_t)


def rfm(state: CustomerState, as_of_ms: int) -> dict[str, float] | None:
    """Repeat-purchase summary in days (x, t_x, T, n, m), or None for a customer with no order.

    x = distinct purchase days - 1, t_x = last - first purchase day, T = as_of day - first
    purchase day (lifetimes' daily convention), m = mean gross spend per purchase day.
    """
    if state.first_order_ms is None or state.last_order_ms is None:
        return None
    n = state.purchase_days
    first_day = state.first_order_ms // DAY_MS
    t_x = state.last_order_ms // DAY_MS - first_day
    big_t = as_of_ms // DAY_MS - first_day
    if t_x > big_t:
        big_t = t_x
    gross = state.gross_cents
    m = (gross if gross > 1 else 1) / 100 / (n if n > 1 else 1)
    return {
        "x": float(n - 1),
        "t_x": float(t_x),
        "T": float(big_t),
        "n": float(n),
        "m": round(m, 4),
    }


def _days_since(ts: int | None, as_of_ms: int) -> float:
    """Days from `ts` to as_of, within [0, a year]; a year when there is no `ts`."""
    if ts is None:
        return _CAP_DAYS
    days = (as_of_ms - ts) / DAY_MS
    if not days > 0.0:  # as max(0.0, days), NaN included
        return 0.0
    return days if days < _CAP_DAYS else _CAP_DAYS


def vector(x: dict[str, float], names: tuple[str, ...]) -> tuple[float, ...]:
    """Dict features to a tuple in `names` order, rounded to 6 decimals (compact snapshots);
    zeros, many of any customer's features, skip the costly round()."""
    return tuple([round(v, 6) if v else v for v in map(x.__getitem__, names)])


def unvector(v: tuple[float, ...] | list[float], names: tuple[str, ...]) -> dict[str, float]:
    """Inverse of `vector`."""
    return dict(zip(names, v, strict=True))
