"""Backtest: freeze every scorecard at a split time, then compare with what customers did next.

Pure over canonical customer events (what `models.history.replay.ingest` yields) and the
`ReplayResult` of a replay stopped at the split (`as_of_ms=split`). Events up to the split
give each customer's calibration summary (for the baselines); events after it, up to the end
of the history, are the truth. Customer ids match because both halves went through the same
ingestion. Nothing here reads files or clocks: the same input gives the same report.

Who is evaluated: every customer with a scorecard at the split (at least one event at or
before it). Labels, for a horizon of H days after the split:

* churned: no interaction in (split, split + H], or a subscription cancellation in it (the
  engine's own churn label, `models.scoring.labels`);
* bought again: at least one order in (split, split + H];
* orders and spend: orders placed, and their gross amount in the base currency, in
  (split, end] (the evaluation period).

Baselines are computed on the same customers: recency (days since the last order, or since
the first event for a customer who never ordered), recency of interaction (days since the last
interaction in the engine's sense, `ScoringConfig.interaction_types`, or since the first event;
on orders-only histories the same as recency), purchase rate (orders per day of age),
BG/NBD P(alive) and expected orders fitted on these customers' calibration RFM (days, as
`models.learning.value`), and a supervised ceiling that cheats on purpose: a logistic regression on
log1p(recency, orders, age, spend) fitted on the evaluation period's own outcome, scored out
of fold (5 folds by a stable hash of the customer id).

Upsell and advocacy (`propensities`) are judged the same way, each beside the recency and
frequency baselines: the upsell probability at the split of every customer it was given for,
against a first order in a category the customer had not bought, or a subscription upgrade,
within `upsell_horizon_days` after the split; the predicted P(promoter) of customers without a
recent NPS answer at the split, against their first NPS answer within the horizon (a
promoter answers 9-10). A history without categories, plans or NPS answers says so.

Progressive quality (`progressive`) is the other view: the learner's own delayed-label
quality during the replay, before the split (`ReplayResult.quality`), and the ROC AUC of the
logged churn predictions per calendar month (UTC) in which their labels resolved.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.config import ScoringConfig
from models.history import metrics as ev
from models.history.replay import ReplayResult
from models.learning.value import (
    expected_orders,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
)
from models.scoring.tiers import TIERS
from schemas.units import DAY_MS

__all__ = [
    "ALERT_TYPES",
    "CHURN_ALERTS",
    "FOLDS",
    "LIFT_SCORERS",
    "PROBABILISTIC",
    "PROGRESSIVE_MIN_N",
    "PROGRESSIVE_MODELS",
    "SCORERS",
    "Backtest",
    "Calibration",
    "Outcome",
    "backtest",
    "check_window",
    "history_end",
    "iso",
    "months_before",
    "progressive",
    "rfm_at",
    "summarize",
]

#: Alert types the engine raises; churn-type ones are judged by who churned afterwards.
ALERT_TYPES: tuple[str, ...] = ("churn_risk", "high_value_at_risk", "vip_upgrade", "tier_downgrade",
                                "upsell_opportunity")
CHURN_ALERTS: tuple[str, ...] = ("churn_risk", "high_value_at_risk")

#: Ranking scorers in report order: name -> what it is. Scores are oriented towards churn
#: (higher = more likely to churn); "bought again" uses the opposite orientation.
SCORERS: dict[str, str] = {
    "model_churn_probability": "model: churn probability",
    "model_expected_orders": "model: expected orders 12m",
    "model_p_alive": "model: P(alive)",
    "recency": "baseline: days since last order",
    "recency_interaction": "baseline: days since last interaction",
    "purchase_rate": "baseline: orders per day of age",
    "bgnbd_p_alive": "baseline: BG/NBD P(alive)",
    "bgnbd_expected_orders": "baseline: BG/NBD expected orders",
    "supervised_ceiling": "ceiling: logistic regression, 5-fold CV",
}
#: Scorers whose churn score is a probability (log loss, Brier and ECE make sense).
PROBABILISTIC: tuple[str, ...] = ("model_churn_probability", "supervised_ceiling")
#: Scorers whose churn lift by decile is reported (and charted).
LIFT_SCORERS: tuple[str, ...] = (
    "model_churn_probability", "recency", "bgnbd_expected_orders", "supervised_ceiling"
)

FOLDS = 5

#: Learner quality entries reported by `progressive` (`models.learning.learner.Learner.report`).
PROGRESSIVE_MODELS: dict[str, str] = {
    "churn": "served predictions",
    "churn_holdout": "served, held-back customers",
    "churn_baseline": "BG/NBD baseline, every label",
    "churn_classifier": "classifier, every label",
}
#: A month of resolved churn labels with fewer examples than this is marked "fewer than 30".
PROGRESSIVE_MIN_N = 30


@dataclass(slots=True)
class Calibration:
    """One customer's history up to the split (what the baselines see)."""

    first_ms: int
    last_interaction_ms: int | None = None
    orders: int = 0
    order_days: set[int] = field(default_factory=set)
    spend_cents: int = 0
    first_order_ms: int | None = None
    last_order_ms: int | None = None
    categories: set[str] = field(default_factory=set)
    plan_cents: int | None = None
    """Monthly fee of the latest subscription start (None: none, or cancelled since)."""


@dataclass(slots=True)
class Outcome:
    """What one customer did after the split."""

    interactions_h: int = 0
    orders_h: int = 0
    cancelled_h: bool = False
    orders: int = 0
    spend_cents: int = 0
    upsold_u: bool = False
    """A first order in a new category, or a plan upgrade, within the upsell horizon."""
    nps_h: int | None = None
    """The first NPS answer within the horizon."""


@dataclass(slots=True)
class Backtest:
    """The report, plus the per-customer arrays the charts are drawn from."""

    report: dict[str, Any]
    customers: list[str]
    churned: np.ndarray
    bought: np.ndarray
    churn_scores: dict[str, np.ndarray]
    """Scorer name -> churn-oriented score per customer (probabilities for PROBABILISTIC)."""


def iso(ms: int) -> str:
    """RFC 3339 UTC text of an epoch-ms time, to the second.

    >>> iso(1759276799000)
    '2025-09-30T23:59:59Z'
    """
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def months_before(ms: int, months: int) -> int:
    """The same UTC wall time `months` calendar months earlier (day clamped to the month).

    >>> iso(months_before(1759276799000, 6))
    '2025-03-30T23:59:59Z'
    >>> iso(months_before(1759276799000, 7))
    '2025-02-28T23:59:59Z'
    """
    t = datetime.fromtimestamp(ms / 1000, UTC)
    index = t.year * 12 + (t.month - 1) - months
    year, month = divmod(index, 12)
    day = min(t.day, calendar.monthrange(year, month + 1)[1])
    back = t.replace(year=year, month=month + 1, day=day)
    return int(back.timestamp() * 1000)


def history_end(events: Iterable[dict[str, Any]]) -> int | None:
    """Last second of the UTC day of the latest event (the history is kept in whole days)."""
    last = max((e["occurred_at"] for e in events), default=None)
    return None if last is None else (last // DAY_MS + 1) * DAY_MS - 1000


def check_window(split_ms: int, end_ms: int | None, horizon_days: int) -> None:
    """Raise ValueError unless the history runs at least `horizon_days` past the split."""
    if end_ms is None:
        raise ValueError("the history has no valid events")
    days = (end_ms - split_ms) / DAY_MS
    if days < horizon_days:
        raise ValueError(
            f"the history ends {iso(end_ms)}, {max(days, 0.0):.1f} days after the split "
            f"{iso(split_ms)}, but a {horizon_days}-day horizon needs at least {horizon_days}: "
            "choose an earlier --split or a shorter --horizon-days"
        )


def summarize(
    events: Iterable[dict[str, Any]],
    split_ms: int,
    end_ms: int,
    horizon_days: int,
    config: ScoringConfig | None = None,
) -> tuple[dict[str, Calibration], dict[str, Outcome], dict[str, int]]:
    """Calibration summaries (events <= split), outcomes (split < event <= end) and counts."""
    cfg = config or ScoringConfig()
    horizon_end = split_ms + horizon_days * DAY_MS
    upsell_end = split_ms + cfg.upsell_horizon_days * DAY_MS
    before: dict[str, Calibration] = {}
    after: dict[str, Outcome] = {}
    counts = {"events_before_split": 0, "events_after_split": 0, "events_after_end": 0}
    for e in events:
        ts, cid = e["occurred_at"], e["customer_id"]
        etype, source = e["event_type"], e["source"]
        order = source == "crm" and etype == "order_placed"
        cents = 0
        payload = e.get("payload") or {}
        if order:
            amount = float(payload.get("amount") or 0.0)
            cents = round(amount * cfg.fx(payload.get("currency")) * 100)
        if ts <= split_ms and cid not in before:
            before[cid] = Calibration(ts)
        upsold = _upsell(before, cid, source, etype, payload, cfg) if source == "crm" else False
        if ts <= split_ms:
            counts["events_before_split"] += 1
            c = before[cid]
            c.first_ms = min(c.first_ms, ts)
            if (source, etype) in cfg.interaction_types:
                last = c.last_interaction_ms
                c.last_interaction_ms = ts if last is None else max(last, ts)
            if order:
                c.orders += 1
                c.order_days.add(ts // DAY_MS)
                c.spend_cents += cents
                c.first_order_ms = ts if c.first_order_ms is None else min(c.first_order_ms, ts)
                c.last_order_ms = ts if c.last_order_ms is None else max(c.last_order_ms, ts)
            continue
        if ts > end_ms:
            counts["events_after_end"] += 1
            continue
        counts["events_after_split"] += 1
        o = after.setdefault(cid, Outcome())
        if order:
            o.orders += 1
            o.spend_cents += cents
        if ts <= horizon_end:
            if (source, etype) in cfg.interaction_types:
                o.interactions_h += 1
            if order:
                o.orders_h += 1
            if source == "crm" and etype == "subscription_cancelled":
                o.cancelled_h = True
            if (o.nps_h is None and etype == "survey_answered"
                    and payload.get("survey") == "nps"):
                o.nps_h = payload.get("score")
        if upsold and ts <= upsell_end:
            o.upsold_u = True
    return before, after, counts


def _upsell(before: dict[str, Calibration], cid: str, source: str, etype: str,
            payload: dict[str, Any], cfg: ScoringConfig) -> bool:
    """Keep a customer's categories and plan (in `before`, whatever the time, as the engine
    does in arrival order) and say whether this crm event is an upsell: an order in a
    category it never bought after an earlier order, or a start at a higher fee while
    subscribed."""
    c = before.get(cid)
    if c is None:
        return False  # a customer first seen after the split: not evaluated
    if etype == "order_placed":
        cats = [x for x in payload.get("categories") or () if isinstance(x, str)]
        new = any(x not in c.categories for x in cats) and c.orders > 0
        c.categories.update(cats)
        return new
    if etype == "subscription_started":
        mrr = payload.get("mrr")
        if not isinstance(mrr, int | float):
            return False
        cents = round(mrr * cfg.fx(payload.get("currency")) * 100)
        upgrade = c.plan_cents is not None and cents > c.plan_cents
        c.plan_cents = cents
        return upgrade
    if etype == "subscription_cancelled":
        c.plan_cents = None
    return False


def rfm_at(c: Calibration, split_ms: int) -> tuple[float, float, float, float, float] | None:
    """(x, t_x, T, n, m) in days as `models.scoring.features.rfm` computes it; None without
    orders."""
    if c.first_order_ms is None or c.last_order_ms is None:
        return None
    n = len(c.order_days)
    first_day = c.first_order_ms // DAY_MS
    t_x = c.last_order_ms // DAY_MS - first_day
    big_t = max(split_ms // DAY_MS - first_day, t_x)
    m = max(c.spend_cents, 1) / 100 / max(n, 1)
    return float(n - 1), float(t_x), float(big_t), float(n), m


def backtest(
    events: list[dict[str, Any]],
    result: ReplayResult,
    *,
    split_ms: int,
    end_ms: int,
    horizon_days: int = 90,
    alert_months: int = 6,
    config: ScoringConfig | None = None,
) -> Backtest:
    """Compare the scorecards frozen at `split_ms` with the events after it (see module doc)."""
    cfg = config or ScoringConfig()
    check_window(split_ms, end_ms, horizon_days)
    before, after, counts = summarize(events, split_ms, end_ms, horizon_days, cfg)
    cards = [sc for sc in result.scorecards if sc.customer_id in before]
    ids = [sc.customer_id for sc in cards]
    if not cards:
        raise ValueError(f"no customer has an event at or before the split {iso(split_ms)}")
    outcomes = [after.get(cid, Outcome()) for cid in ids]
    churned = np.array([float(o.interactions_h == 0 or o.cancelled_h) for o in outcomes])
    bought = np.array([float(o.orders_h > 0) for o in outcomes])
    eval_days = (end_ms - split_ms) / DAY_MS

    # calibration features of the same customers
    calib = [before[cid] for cid in ids]
    age = np.array([max(1.0, (split_ms - c.first_ms) / DAY_MS) for c in calib])
    recency = np.array(
        [
            (split_ms - (c.last_order_ms if c.last_order_ms is not None else c.first_ms)) / DAY_MS
            for c in calib
        ]
    )
    recency_interaction = np.array(
        [
            (split_ms - (c.last_interaction_ms if c.last_interaction_ms is not None
                         else c.first_ms)) / DAY_MS
            for c in calib
        ]
    )
    n_orders = np.array([float(c.orders) for c in calib])
    spend = np.array([c.spend_cents / 100 for c in calib])
    rfms = [rfm_at(c, split_ms) for c in calib]
    buyers = [r for r in rfms if r is not None]

    # BG/NBD and Gamma-Gamma fitted on the calibration period of these customers
    bg = fit_bgnbd([r[0] for r in buyers], [r[1] for r in buyers], [r[2] for r in buyers])
    gg = fit_gamma_gamma([r[3] for r in buyers], [r[4] for r in buyers])
    bg_alive = np.array([p_alive(bg, r[0], r[1], r[2]) if r else 0.0 for r in rfms])
    bg_orders_h = np.array(
        [expected_orders(bg, float(horizon_days), r[0], r[1], r[2]) if r else 0.0 for r in rfms]
    )
    bg_orders_eval = np.array(
        [expected_orders(bg, eval_days, r[0], r[1], r[2]) if r else 0.0 for r in rfms]
    )
    gg_spend = np.array([expected_spend(gg, r[3], r[4]) if r else 0.0 for r in rfms])

    # supervised ceiling: fitted on the outcome it is scored on, out of fold
    x = np.log1p(np.column_stack([recency, n_orders, age, spend]))
    folds = [ev.fold_of(cid, FOLDS) for cid in ids]
    ceiling_churn = ev.cross_validated_logistic(x, churned, folds)
    ceiling_bought = ev.cross_validated_logistic(x, bought, folds)

    churn_p = np.array([sc.churn_probability for sc in cards])
    model_orders = np.array([sc.expected_orders_12m for sc in cards])
    churn_scores: dict[str, np.ndarray] = {
        "model_churn_probability": churn_p,
        "model_expected_orders": -model_orders,
        "model_p_alive": 1.0 - np.array([sc.p_alive for sc in cards]),
        "recency": recency,
        "recency_interaction": recency_interaction,
        "purchase_rate": -(n_orders / age),
        "bgnbd_p_alive": 1.0 - bg_alive,
        "bgnbd_expected_orders": -bg_orders_h,
        "supervised_ceiling": ceiling_churn,
    }
    bought_scores = {name: -s for name, s in churn_scores.items()}
    bought_scores["supervised_ceiling"] = ceiling_bought

    ranking = {
        name: {
            "what": SCORERS[name],
            "churn_roc_auc": ev.roc_auc(churned, churn_scores[name]),
            "churn_pr_auc": ev.pr_auc(churned, churn_scores[name]),
            "bought_again_roc_auc": ev.roc_auc(bought, bought_scores[name]),
            "bought_again_pr_auc": ev.pr_auc(bought, bought_scores[name]),
        }
        for name in SCORERS
    }
    probability = {}
    for name in PROBABILISTIC:
        e, table = ev.reliability(churned, churn_scores[name], bins=10)
        probability[name] = {
            "log_loss": ev.log_loss(churned, churn_scores[name]),
            "brier": ev.brier(churned, churn_scores[name]),
            "ece": e,
            "mean_predicted": float(churn_scores[name].mean()),
            "std_predicted": float(churn_scores[name].std()),
            "distinct_predicted": len(np.unique(churn_scores[name])),
            "reliability": table,
        }
    lift = {
        name: ev.lift_table(churned, churn_scores[name], groups=10)
        for name in LIFT_SCORERS
    }

    # value over the evaluation period: 12-month predictions scaled to its length
    scale = eval_days / 365.0
    # naive: repeat orders so far per day since the first order, at the same average spend
    repeat_rate = np.array(
        [
            (c.orders - 1) / max(1.0, (split_ms - c.first_order_ms) / DAY_MS)
            if c.first_order_ms is not None else 0.0
            for c in calib
        ]
    )
    actual_orders = np.array([float(o.orders) for o in outcomes])
    actual_spend = np.array([o.spend_cents / 100 for o in outcomes])
    value_predictions = {
        "orders": {
            "model": model_orders * scale,
            "bgnbd": bg_orders_eval,
            "past_rate": repeat_rate * eval_days,
        },
        "spend": {
            "model": np.array([sc.ltv_predicted_12m for sc in cards]) * scale,
            "bgnbd": bg_orders_eval * gg_spend,
            "past_rate": repeat_rate * eval_days * spend / np.maximum(n_orders, 1.0),
        },
    }
    value: dict[str, Any] = {"days": eval_days, "scale_of_12m": scale}
    for what, actual in (("orders", actual_orders), ("spend", actual_spend)):
        value[what] = {"actual_mean": float(actual.mean()), "actual_total": float(actual.sum())}
        for name, pred in value_predictions[what].items():
            value[what][name] = {
                "mean_predicted": float(pred.mean()),
                "mae": ev.mae(actual, pred),
                "rmse": ev.rmse(actual, pred),
            }

    tiers = [sc.tier for sc in cards]
    report: dict[str, Any] = {
        "history": {
            "split": iso(split_ms),
            "end": iso(end_ms),
            "evaluation_days": eval_days,
            "horizon_days": horizon_days,
            "customers": len(ids),
            "customers_without_orders": len(rfms) - len(buyers),
            "new_customers_after_split": len(set(after) - set(before)),
            **counts,
            "model_versions": result.stats.get("model_versions", {}),
            "tiers_at_split": {t: tiers.count(t) for t in TIERS},
        },
        "labels": {
            "churned": {"positives": int(churned.sum()), "rate": float(churned.mean())},
            "bought_again": {"positives": int(bought.sum()), "rate": float(bought.mean())},
        },
        "ranking": ranking,
        "probability": probability,
        "lift": lift,
        "value": value,
        "baseline_params": {
            "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v},
            "fitted_on": len(buyers),
        },
        "alerts": _alerts(result, ids, tiers, churned, split_ms, alert_months),
        "propensities": propensities(cards, outcomes, recency, n_orders / age,
                                     cfg.upsell_horizon_days, horizon_days),
        "progressive": progressive(result),
    }
    return Backtest(_rounded(report), ids, churned, bought, churn_scores)


def propensities(cards: list[Any], outcomes: list[Outcome], recency: np.ndarray,
                 frequency: np.ndarray, upsell_days: int, horizon_days: int) -> dict[str, Any]:
    """Upsell and advocacy at the split against what followed, beside recency (days since
    the last order: fewer, likelier) and frequency (orders per day of age: more, likelier)."""
    up = [i for i, sc in enumerate(cards) if sc.upsell_probability is not None]
    answered = [i for i, sc in enumerate(cards)
                if outcomes[i].nps_h is not None and sc.advocacy is None]
    said = [i for i in answered if cards[i].promoter_probability is not None]
    return {
        "upsell": _judged(
            [outcomes[i].upsold_u for i in up],
            {"model": [cards[i].upsell_probability for i in up]},
            -recency[up], frequency[up], upsell_days,
            "no product category or plan at the split"),
        "advocacy": {
            **_judged(
                [(outcomes[i].nps_h or 0) >= 9 for i in answered],
                {"model": [cards[i].promoter_probability for i in said]} if said and len(
                    said) == len(answered) else {},
                -recency[answered], frequency[answered], horizon_days,
                "no NPS answer after the split"),
            "predicted_for": len(said),
        },
    }


def _judged(labels: list[bool], models: dict[str, list[Any]], recency: np.ndarray,
            frequency: np.ndarray, days: int, empty: str) -> dict[str, Any]:
    """Ranking (ROC AUC) of the model and the two baselines, and the model's probability
    quality, on one outcome."""
    y = np.array(labels, dtype=float)
    out: dict[str, Any] = {"days": days, "n": len(labels), "positives": int(y.sum()),
                           "rate": float(y.mean()) if len(y) else None}
    if not len(y):
        return {**out, "status": empty}
    scores = {**{k: np.array(v, dtype=float) for k, v in models.items()},
              "recency": recency, "frequency": frequency}
    out["roc_auc"] = {name: ev.roc_auc(y, v) for name, v in scores.items()}
    if "model" in models:
        p = scores["model"]
        out["probability"] = {"log_loss": ev.log_loss(y, p), "brier": ev.brier(y, p),
                              "ece": ev.reliability(y, p, bins=10)[0],
                              "mean_predicted": float(p.mean())}
    out["status"] = ("ok" if 0 < y.sum() < len(y) and "model" in models else
                     "one class" if not 0 < y.sum() < len(y) else "the model did not answer yet")
    return out


def _alerts(
    result: ReplayResult,
    ids: list[str],
    tiers: list[str],
    churned: np.ndarray,
    split_ms: int,
    months: int,
) -> dict[str, Any]:
    """Alert rates in the `months` before the split, and how churn alerts did afterwards."""
    start = months_before(split_ms, months)
    known = set(ids)
    window = [
        a for a in result.alerts
        if start < a["event_time"] <= split_ms and a["customer_id"] in known
    ]
    n = len(ids)
    per_k = 1000.0 / n / months
    types = sorted(set(ALERT_TYPES) | {a["alert_type"] for a in window})
    counts = {t: sum(1 for a in window if a["alert_type"] == t) for t in types}
    years = (split_ms - start) / DAY_MS / 365.0
    tier_changes = [
        c for c in result.tier_changes
        if start < c["event_time"] <= split_ms and c["customer_id"] in known
    ]
    churn: dict[str, Any] = {}
    for kind in (*CHURN_ALERTS, "any"):
        kinds = CHURN_ALERTS if kind == "any" else (kind,)
        alerted = {a["customer_id"] for a in window if a["alert_type"] in kinds}
        flagged = [cid in alerted for cid in ids]
        by_tier = {}
        for t in TIERS:
            mask = [tier == t for tier in tiers]
            by_tier[t] = ev.precision_lift(
                [f for f, m in zip(flagged, mask, strict=True) if m], churned[np.array(mask)]
            )
        churn[kind] = {"overall": ev.precision_lift(flagged, churned), "by_tier": by_tier}
    return {
        "months": months,
        "from": iso(start),
        "to": iso(split_ms),
        "counts": counts,
        "per_1000_customers_per_month": {
            **{t: c * per_k for t, c in counts.items()},
            "total": len(window) * per_k,
        },
        "churn_alert_precision": churn,
        "tier_changes": {
            "count": len(tier_changes),
            "per_customer_per_year": len(tier_changes) / n / years,
            "tier_alerts_per_customer_per_year": {
                t: counts.get(t, 0) / n / years for t in ("vip_upgrade", "tier_downgrade")
            },
        },
    }


def progressive(result: ReplayResult, min_n: int = PROGRESSIVE_MIN_N) -> dict[str, Any]:
    """The learner's delayed-label churn quality before the split, and churn AUC by month.

    `quality` holds the learner's figures (`PROGRESSIVE_MODELS`, without calibration tables);
    `by_month` the ROC AUC of the logged prediction of every resolved churn example (held-back
    customers' included), per UTC calendar month in which its label resolved, with a status:
    "ok", "fewer than {min_n}" or "one class" (AUC undefined). `first_month` is the first
    month with labels, `min_auc_month` the "ok" month with the lowest AUC (None if none).
    """
    quality = {
        name: {k: v for k, v in result.quality[name].items() if k != "calibration"}
        for name in PROGRESSIVE_MODELS
        if name in result.quality
    }
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for resolved_at, label, prediction in result.churn_examples:
        labels, predictions = groups.setdefault(iso(resolved_at)[:7], ([], []))
        labels.append(label)
        predictions.append(prediction)
    by_month: list[dict[str, Any]] = []
    for month in sorted(groups):
        y, p = groups[month]
        auc = ev.roc_auc(y, p)
        status = "ok" if len(y) >= min_n else f"fewer than {min_n}"
        if auc is None:
            status = "one class"
        by_month.append(
            {
                "month": month,
                "n": len(y),
                "churn_rate": float(np.mean(y)),
                "mean_predicted": float(np.mean(p)),
                "auc": auc,
                "status": status,
            }
        )
    full = [m for m in by_month if m["status"] == "ok"]
    lowest = min(full, key=lambda m: m["auc"], default=None)
    return {
        "quality": quality,
        "by_month": by_month,
        "min_examples": min_n,
        "first_month": by_month[0]["month"] if by_month else None,
        "min_auc_month": lowest["month"] if lowest else None,
    }


def _rounded(obj: Any, digits: int = 4) -> Any:
    """Floats rounded (NaN and infinities to None), recursively: a stable, readable report."""
    if isinstance(obj, float | np.floating):
        return round(float(obj), digits) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v, digits) for v in obj]
    return obj
