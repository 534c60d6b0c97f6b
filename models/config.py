"""Typed configuration of the scoring core, with documented defaults.

One frozen object travels everywhere (engine, models, replay) so that two workers configured
the same way compute byte-identical scorecards; nothing in `models/` reads the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.units import DAY_MS

__all__ = [
    "CONVERSION",
    "CONVERSION_EVENTS",
    "DEFAULT_FX_RATES",
    "DEFAULT_INTERACTION_TYPES",
    "DEFAULT_PROFILE_WEIGHTS",
    "DEFAULT_TOUCH_TYPES",
    "TOUCH",
    "VIEW_TYPES",
    "AttributionConfig",
    "ScoringConfig",
]

#: Profile fields that matter for data completeness, and how much each weighs.
DEFAULT_PROFILE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "first_name": 1.0,
        "last_name": 1.0,
        "email": 2.0,
        "phone": 1.0,
        "street": 0.5,
        "city": 1.0,
        "postal_code": 0.5,
        "country": 1.0,
        "birth_date": 0.5,
        "company": 0.5,
        "job_title": 0.5,
        "consent_marketing": 1.0,
    }
)

#: Units of base currency (EUR) per unit of each currency. Ingestion dead-letters the rest.
DEFAULT_FX_RATES: Mapping[str, float] = MappingProxyType(
    {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "SEK": 0.087, "DKK": 0.134}
)

#: (source, event_type) pairs that the customer did themselves: they count as interactions.
#: Messages we send (email sent/delivered), our own actions (refund, ticket resolved) and
#: bad news (bounce, late payment, cancellation) are events but not interactions.
DEFAULT_INTERACTION_TYPES: frozenset[tuple[str, str]] = frozenset(
    {
        ("web", "page_view"),
        ("web", "session_started"),
        ("web", "search"),
        ("web", "login"),
        ("web", "goal_completed"),
        ("email", "opened"),
        ("email", "clicked"),
        ("crm", "order_placed"),
        ("crm", "subscription_started"),
        ("support", "ticket_opened"),
        ("support", "satisfaction_rated"),
        ("support", "survey_answered"),
    }
)


#: (source, event_type) pairs that are marketing touches: a web session (its `channel`) and a
#: click in an email (its campaign).
DEFAULT_TOUCH_TYPES: frozenset[tuple[str, str]] = frozenset(
    {("web", "session_started"), ("email", "clicked")}
)

#: Views: touches that only count when `AttributionConfig.views` says so (an opened email).
VIEW_TYPES: frozenset[tuple[str, str]] = frozenset({("email", "opened")})

#: The events that can be conversions, by name: (source, event_type).
CONVERSION_EVENTS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "order_placed": ("crm", "order_placed"),
        "goal_completed": ("web", "goal_completed"),
        "subscription_started": ("crm", "subscription_started"),
    }
)

TOUCH = "touch"
"""`AttributionConfig.kind` of a touch."""
CONVERSION = "conversion"
"""`AttributionConfig.kind` of a conversion."""


@dataclass(frozen=True, slots=True)
class AttributionConfig:
    """Which events are touches and conversions, and how attribution weighs them.

    `conversions` names events of `CONVERSION_EVENTS`; `goal_completed:<goal>` limits the goal
    conversions to one goal (the web goals include `purchase`, which the order that follows
    it would count a second time). A touch's channel is its payload's `channel`, or else
    its source's name; its campaign is the payload's `campaign` or `campaign_id`.

    >>> cfg = AttributionConfig(enabled=True,
    ...                         conversions=frozenset({"order_placed", "goal_completed:signup"}))
    >>> cfg.kind("web", "session_started"), cfg.kind("email", "opened")
    ('touch', None)
    >>> cfg.kind("web", "goal_completed"), cfg.kind("web", "page_view")
    ('conversion', None)
    >>> cfg.converts("goal_completed", "signup"), cfg.converts("goal_completed", "purchase")
    (True, False)
    >>> AttributionConfig(conversions=frozenset({"page_view"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown conversion 'page_view'; known: order_placed, goal_completed, ...
    """

    #: On: touches are kept and conversions attributed (off by default: on multi-channel
    #: traffic it costs about a quarter of the scoring CPU per event, docs/performance.md).
    enabled: bool = False
    #: Touches up to this many days before a conversion share its value.
    lookback_days: int = 90
    #: Time decay: a touch this many days older than another earns half its credit.
    half_life_days: float = 7.0
    #: Most recent touches kept per customer.
    max_touches: int = 50
    #: Whether views (an opened email) count as touches.
    views: bool = False
    #: (source, event_type) pairs that are touches (views aside).
    touch_types: frozenset[tuple[str, str]] = DEFAULT_TOUCH_TYPES
    #: Conversions: names of `CONVERSION_EVENTS`, or `goal_completed:<goal>`.
    conversions: frozenset[str] = frozenset({"order_placed"})
    #: Channels that are direct visits, which last click passes over.
    direct_channels: frozenset[str] = frozenset({"direct"})
    #: Closed paths the data-driven model must rest on before conversions get its credit.
    data_driven_min_paths: int = 200
    #: Funnel: goals (`goal_completed` events' `goal`) a customer completes in this order.
    funnel: tuple[str, ...] = ()
    #: Funnel: days from its first goal within which an attempt may reach the next goals.
    funnel_window_days: int = 30
    #: (source, event_type) -> TOUCH or CONVERSION (derived).
    kinds: Mapping[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lookback_days < 0:
            raise ValueError(f"lookback_days must be >= 0, not {self.lookback_days}")
        if not 0 < self.half_life_days < math.inf:
            raise ValueError(f"half_life_days must be a number > 0, not {self.half_life_days}")
        if self.max_touches < 1:
            raise ValueError(f"max_touches must be >= 1, not {self.max_touches}")
        if self.data_driven_min_paths < 1:
            raise ValueError(f"data_driven_min_paths must be >= 1, not "
                             f"{self.data_driven_min_paths}")
        if len(set(self.funnel)) != len(self.funnel) or not all(self.funnel):
            raise ValueError(f"funnel goals must be distinct names: {list(self.funnel)}")
        if self.funnel_window_days < 1:
            raise ValueError(f"funnel_window_days must be >= 1, not {self.funnel_window_days}")
        # Checked when off too, so a mistake shows before the day it is switched on.
        kinds: dict[tuple[str, str], str] = {}
        for pair in self.touch_types | (VIEW_TYPES if self.views else frozenset()):
            kinds[pair] = TOUCH
        for name in self.conversions:
            event = CONVERSION_EVENTS.get(name.partition(":")[0])
            if event is None or name == "goal_completed:" or (
                    ":" in name and not name.startswith("goal_completed:")):
                raise ValueError(
                    f"unknown conversion {name!r}; known: {', '.join(CONVERSION_EVENTS)} "
                    "(goal_completed:<goal> for one goal)")
            if event in kinds and kinds[event] == TOUCH:
                raise ValueError(f"{event[0]}:{event[1]} cannot be a touch and a conversion")
            kinds[event] = CONVERSION
        object.__setattr__(self, "kinds", MappingProxyType(kinds if self.enabled else {}))

    def kind(self, source: str, event_type: str) -> str | None:
        """TOUCH, CONVERSION or None for an event of this source and type."""
        return self.kinds.get((source, event_type))

    def converts(self, event_type: str, goal: object = None) -> bool:
        """Whether an event of this type (a goal_completed: of this goal) is a conversion."""
        if event_type in self.conversions:
            return True
        return event_type == "goal_completed" and f"goal_completed:{goal}" in self.conversions

    @property
    def lookback_ms(self) -> int:
        """The lookback window in milliseconds."""
        return self.lookback_days * DAY_MS

    @property
    def funnel_window_ms(self) -> int:
        """The funnel window in milliseconds."""
        return self.funnel_window_days * DAY_MS

    @property
    def half_life_ms(self) -> int:
        """Time decay's half-life in milliseconds."""
        return int(self.half_life_days * DAY_MS)


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Everything the scoring core needs to know besides events and time.

    Defaults are the product's documented defaults; horizons are in days of event time.

    >>> cfg = ScoringConfig()
    >>> cfg.churn_horizon_days, cfg.base_currency, cfg.profile_weights["email"]
    (90, 'EUR', 2.0)
    """

    #: Weight of each profile field in data completeness (0-100 = known weight / total).
    profile_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_PROFILE_WEIGHTS)
    #: Currency every amount is converted to, and the rate table (base units per unit).
    base_currency: str = "EUR"
    fx_rates: Mapping[str, float] = field(default_factory=lambda: DEFAULT_FX_RATES)
    #: Which events are interactions (recency, frequency, churn-by-silence).
    interaction_types: frozenset[tuple[str, str]] = DEFAULT_INTERACTION_TYPES
    #: Rolling window of revenue_12m and interactions_12m: the N UTC days ending on as_of's day.
    window_days: int = 365
    #: Churn = cancellation or no interaction within this many days after a snapshot.
    churn_horizon_days: int = 90
    #: Engagement model target: interactions in this many days after a snapshot.
    engagement_horizon_days: int = 30
    #: Value model horizon (predicted value and its progressive check).
    value_horizon_days: int = 365
    #: Recent event ids (48-bit hashes) kept per customer to drop redeliveries.
    dedupe_window: int = 32
    #: Distinct order days remembered exactly for repeat-purchase frequency.
    order_days_cap: int = 512
    #: Expected 30-day interactions that map to engagement 63 (100 * (1 - 1/e)).
    engagement_scale: float = 8.0
    #: Labels the engagement regressor needs before it replaces the recency/frequency heuristic.
    engagement_min_labels: int = 200
    #: Labels the churn classifier needs before its probabilities are used (prior before).
    churn_min_labels: int = 50
    #: Upsell = a first order in a product category or a subscription upgrade within this
    #: many days after a snapshot.
    upsell_horizon_days: int = 30
    #: Labels the upsell classifier needs before it replaces its frequency heuristic.
    upsell_min_labels: int = 200
    #: NPS answers the P(promoter) model needs before it answers for non-respondents.
    advocacy_min_labels: int = 100
    #: Share of customers (by stable hash of id) whose examples are never learned: honest AUC.
    holdout_fraction: float = 0.1
    #: Score a customer after each of its events (True), or once per batch, after the last
    #: (False: a backfill runs faster, but which alerts fire then depends on the batches).
    score_every_event: bool = True
    #: Tier cut points as fractions of customers below: Basic | Standard | Premium | VIP.
    tier_cuts: tuple[float, float, float] = (0.10, 0.70, 0.90)
    #: Churn probability used before the model has learned anything.
    churn_prior: float = 0.2
    #: Multi-touch attribution: touches, conversions, lookback, time decay's half-life.
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    #: Sum of profile weights (derived, for data completeness).
    profile_total: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile_total", float(sum(self.profile_weights.values())))

    @property
    def window_ms(self) -> int:
        """Length of the rolling window in milliseconds."""
        return self.window_days * DAY_MS

    def fx(self, currency: str | None) -> float:
        """Base-currency units per unit of `currency` (1.0 for the base or a missing code).

        Ingestion dead-letters unknown currencies, so a miss here means a config drift between
        ingestion and scoring; counting the amount at face value beats dropping revenue.
        """
        if currency is None or currency == self.base_currency:
            return 1.0
        return self.fx_rates.get(currency, 1.0)
