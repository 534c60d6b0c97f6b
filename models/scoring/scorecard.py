"""The per-customer scorecard: the five key values, predictive scores and their provenance."""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass, field, fields
from typing import Any

from models.kpi.surveys import Advocacy, advocacy
from models.learning.prediction import Factor
from models.scoring.features import FEATURE_LABELS
from schemas.units import DAY_MS

__all__ = ["ADVOCACY_WINDOW_DAYS", "ROW_LENGTH", "Scorecard", "cohort_of", "recent_nps",
           "upgraded_row"]

ADVOCACY_WINDOW_DAYS = 365
"""An NPS answer older than this says nothing about advocacy any more."""


@dataclass(frozen=True, slots=True)
class Scorecard:
    """Who this customer is to us, as of an event time (epoch ms).

    Money is in the configured base currency. `days_since_last_interaction` is None for a
    customer who never interacted. Windowed values and recency are computed as of `as_of`, so
    they change when only time advances.

    >>> sc = Scorecard("C1", as_of=0, data_completeness=50.0, ltv_historic=10.0,
    ...                ltv_predicted_12m=4.2, engagement=12.5, revenue_12m=10.0,
    ...                interactions_12m=3, days_since_last_interaction=2)
    >>> sc.to_dict()["churn"]["probability"], Scorecard.from_row(sc.to_row()) == sc
    (0.0, True)
    """

    customer_id: str
    as_of: int
    data_completeness: float
    ltv_historic: float
    ltv_predicted_12m: float
    engagement: float
    revenue_12m: float
    interactions_12m: int
    days_since_last_interaction: int | None
    churn_probability: float = 0.0
    churn_factors: tuple[Factor, ...] = ()
    engagement_factors: tuple[Factor, ...] = ()
    expected_orders_12m: float = 0.0
    p_alive: float = 0.0
    tier: str = "Standard"
    model_versions: dict[str, str] = field(default_factory=dict)
    currency: str = "EUR"
    surveys: tuple[tuple[str, int, int], ...] = ()
    """The latest answer to each survey the customer answered: (survey, score, answered_at),
    by survey name (nps, csat, ces; a support rating is a CSAT answer)."""
    orders: int = 0
    """Orders placed so far (refunds do not take one back)."""
    cohort: str | None = None
    """The month of the first order, "YYYY-MM" (UTC); None before any order."""
    acquisition_channel: str | None = None
    """The channel of the customer's earliest web session that named one; None if none did."""
    upsell_probability: float | None = None
    """P(a first order in a product category, or a subscription upgrade, within the upsell
    horizon); None for a customer with nothing to upsell from."""
    upsell_factors: tuple[Factor, ...] = ()
    promoter_probability: float | None = None
    """Predicted P(promoter) for a customer without an NPS answer of the last
    `ADVOCACY_WINDOW_DAYS` (None for one with an answer, or while the model has not learned),
    on scorecards that are read (API, page, replay's final scorecards); the scorecards of
    score changes and alerts leave it out."""
    promoter_interval: tuple[float, float] | None = None
    """The 95 % interval of `promoter_probability`."""
    promoter_factors: tuple[Factor, ...] = ()
    revenue_90d: float = 0.0
    """Revenue of the last 90 days (the UTC days ending on as_of's day) ..."""
    revenue_prior_90d: float = 0.0
    """... and of the 90 days before them: revenue retention (NRR, GRR) compares the two."""

    @property
    def advocacy(self) -> Advocacy | None:
        """Promoter, passive or detractor by the last NPS answer, if it is at most
        `ADVOCACY_WINDOW_DAYS` old; None without one."""
        score = recent_nps(self.surveys, self.as_of)
        return None if score is None else advocacy(score)

    @property
    def value_at_risk(self) -> float:
        """Churn probability x predicted 12-month value (what churn alerts rank by)."""
        value = self.ltv_predicted_12m
        return self.churn_probability * (0.0 if value < 0.0 else value)  # max(value, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly nested form (the API and score-change payloads)."""
        return {
            "customer_id": self.customer_id,
            "as_of": self.as_of,
            "currency": self.currency,
            "data_completeness": self.data_completeness,
            "ltv": {
                "historic": self.ltv_historic,
                "predicted_12m": self.ltv_predicted_12m,
                "expected_orders_12m": self.expected_orders_12m,
                "p_alive": self.p_alive,
            },
            "engagement": {
                "score": self.engagement,
                "factors": list(map(Factor.to_dict, self.engagement_factors)),
            },
            "revenue_12m": self.revenue_12m,
            "orders": self.orders,
            "cohort": self.cohort,
            "acquisition_channel": self.acquisition_channel,
            "interactions_12m": self.interactions_12m,
            "days_since_last_interaction": self.days_since_last_interaction,
            "churn": {
                "probability": self.churn_probability,
                "factors": list(map(Factor.to_dict, self.churn_factors)),
            },
            "tier": self.tier,
            "model_versions": dict(sorted(self.model_versions.items())),
            "surveys": {name: {"score": score, "answered_at": at,
                               "days_ago": max(0, (self.as_of - at) // DAY_MS)}
                        for name, score, at in self.surveys},
            "advocacy": self.advocacy,
            "promoter": None if self.promoter_probability is None else {
                "probability": self.promoter_probability,
                "interval": list(self.promoter_interval or (0.0, 1.0)),
                "factors": list(map(Factor.to_dict, self.promoter_factors)),
            },
            "upsell": None if self.upsell_probability is None else {
                "probability": self.upsell_probability,
                "factors": list(map(Factor.to_dict, self.upsell_factors)),
            },
            "revenue_90d": self.revenue_90d,
            "revenue_prior_90d": self.revenue_prior_90d,
        }

    def to_row(self) -> list[Any]:
        """Compact positional form kept in the customer state (the previous scorecard)."""
        return [
            self.customer_id,
            self.as_of,
            self.data_completeness,
            self.ltv_historic,
            self.ltv_predicted_12m,
            self.engagement,
            self.revenue_12m,
            self.interactions_12m,
            self.days_since_last_interaction,
            self.churn_probability,
            list(map(_compact, self.churn_factors)),
            list(map(_compact, self.engagement_factors)),
            self.expected_orders_12m,
            self.p_alive,
            self.tier,
            self.model_versions,
            self.currency,
            list(map(list, self.surveys)),
            self.orders,
            self.cohort,
            self.acquisition_channel,
            self.upsell_probability,
            list(map(_compact, self.upsell_factors)) if self.upsell_factors else [],
            self.promoter_probability,
            None if self.promoter_interval is None else list(self.promoter_interval),
            list(map(_compact, self.promoter_factors)) if self.promoter_factors else [],
            self.revenue_90d,
            self.revenue_prior_90d,
        ]

    @classmethod
    def of(cls, *values: Any) -> Scorecard:
        """Every field positionally, in field order, straight into the slots (the scoring hot
        path: the dataclass's keyword `__init__` costs more than the scorecard's values)."""
        card = _new(cls)
        for set_slot, value in zip(_SLOT_SETTERS, values, strict=True):
            set_slot(card, value)
        return card

    @classmethod
    def from_row(cls, row: list[Any]) -> Scorecard:
        """Inverse of `to_row`.

        A whole row fills the slots directly: the frozen dataclass's `__init__` sets each
        field through `object.__setattr__`, about 1.6 times the cost of a slot's own setter,
        and every customer restored from the store needs its previous scorecard back.
        """
        r = list(row)
        churn, engagement = r[10], r[11]
        r[10] = tuple([_expand(f) for f in churn]) if churn else ()
        r[11] = tuple([_expand(f) for f in engagement]) if engagement else ()
        r[15] = dict(r[15])
        if len(r) > 17:
            r[17] = tuple([(a[0], a[1], a[2]) for a in r[17]])
        if len(r) > _BEFORE_PROPENSITIES:  # rows from before the propensities lack these
            upsell, interval, promoter = r[22], r[24], r[25]
            r[22] = tuple([_expand(f) for f in upsell]) if upsell else ()
            r[24] = None if interval is None else (interval[0], interval[1])
            r[25] = tuple([_expand(f) for f in promoter]) if promoter else ()
        if len(r) != len(_SLOT_SETTERS):  # a shorter row: the defaults fill the rest
            return cls(*r)
        return cls.of(*r)


ROW_LENGTH = len(fields(Scorecard))
"""Items of a row `to_row` writes now."""


def upgraded_row(row: list[Any], orders: int, cohort: str | None,
                 channel: str | None) -> list[Any]:
    """A row written before orders, cohort and acquisition channel were on the scorecard,
    with them filled in from the customer's state (and no survey answers when it predates
    those too), so that the card it restores counts in the right segments of the management
    scorecard. Rows of any other length come back as they are.

    >>> len(upgraded_row(list(range(17)), 2, "2026-01", None)), ROW_LENGTH
    (21, 28)
    """
    if len(row) == _BEFORE_SURVEYS:
        return [*row, [], orders, cohort, channel]
    if len(row) == _BEFORE_SEGMENTS:
        return [*row, orders, cohort, channel]
    return row


_BEFORE_SURVEYS, _BEFORE_SEGMENTS, _BEFORE_PROPENSITIES = 17, 18, 21


def recent_nps(surveys: tuple[tuple[str, int, int], ...], as_of: int) -> int | None:
    """The score of the latest NPS answer among a scorecard's `surveys` (survey, score,
    answered_at), if it is at most `ADVOCACY_WINDOW_DAYS` old as of `as_of`; else None.

    >>> recent_nps((("csat", 5, 0), ("nps", 9, 0)), 365 * DAY_MS), recent_nps((), 0)
    (9, None)
    """
    for name, score, at in surveys:
        if name == "nps" and as_of - at <= ADVOCACY_WINDOW_DAYS * DAY_MS:
            return score
    return None


@functools.lru_cache(maxsize=4096)
def _month(day: int) -> str:
    """The UTC month "YYYY-MM" of an epoch day."""
    return (_EPOCH + datetime.timedelta(days=day)).strftime("%Y-%m")


_EPOCH = datetime.date(1970, 1, 1)


def cohort_of(first_order_ms: int | None) -> str | None:
    """A customer's cohort: the UTC month of its first order, "YYYY-MM" (None before any).

    >>> cohort_of(1_767_225_600_000), cohort_of(None)
    ('2026-01', None)
    """
    return None if first_order_ms is None else _month(first_order_ms // DAY_MS)


_new = object.__new__
_SLOT_SETTERS = tuple(getattr(Scorecard, f.name).__set__ for f in fields(Scorecard))
"""Each field's slot setter, in field (and row) order."""


def _compact(f: Factor) -> list[Any]:
    """[name, "h"|"l", contribution]: the label is rebuilt from FEATURE_LABELS (saves bytes)."""
    return [f.name, "h" if f.label.endswith(": high") else "l", f.contribution]


def _expand(row: list[Any]) -> Factor:
    name, direction, contribution = row
    label = _LABELS.get((name, direction))
    if label is None:
        word = "high" if direction == "h" else "low"
        label = f"{FEATURE_LABELS.get(name, name)}: {word}"
    return Factor(name, label, contribution)


_LABELS = {(name, d): f"{text}: {'high' if d == 'h' else 'low'}"
           for name, text in FEATURE_LABELS.items() for d in ("h", "l")}
"""Each known feature's label per direction, made once (restored scorecards need them)."""
