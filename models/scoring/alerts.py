"""Alert rules and score-change detection: what, in a new scorecard, someone should hear about.

Pure functions of (previous scorecard, new scorecard, the customer's alert memory), so the
scoring stage and the replay command raise exactly the same alerts for the same history.

Storms are prevented two ways. *Hysteresis*: a threshold alert fires when its score crosses
the "on" level upward and re-arms only after the score falls below a lower "off" level, so a
customer hovering around the threshold fires once. *Cooldown*: the same alert type never fires
twice for one customer within `cooldown_ms` of event time. A threshold crossing inside the
cooldown stays armed, so a new episode is delayed to the cooldown's end, not lost. Both live
in `AlertMemory`, a small per-customer value kept inside the customer's state (and so in its
changelog).

Score changes compare a new scorecard with the last one *reported* (emitted as a score
change), not with the previous one computed, so a value that drifts by small steps is
reported once the steps add up to its threshold.

Every alert's `alert_id` is derived from the customer (with the event time of its first event,
so a customer id erased and seen again starts afresh), the alert type and the alert's episode:
how many alerts of that type the customer has had, counted in its alert memory. The count
lives in the customer's state, so an alert raised again after a crash or a takeover (the state
restored as committed, the events read again) or by a replay that batches events differently
carries the same id, and consumers can drop it.

>>> from models.scoring.scorecard import Scorecard
>>> def card(p, tier="Standard", t=0):
...     return Scorecard("C1", as_of=t, data_completeness=50.0, ltv_historic=900.0,
...                      ltv_predicted_12m=300.0, engagement=40.0, revenue_12m=500.0,
...                      interactions_12m=12, days_since_last_interaction=3,
...                      churn_probability=p, tier=tier)
>>> rules, memory = AlertRules(), AlertMemory()
>>> [a.alert_type for a in rules.evaluate(card(0.2), card(0.8, t=1), memory, None)]
['churn_risk']
>>> rules.evaluate(card(0.8, t=1), card(0.6, t=2), memory, None)   # still armed off: no storm
[]
>>> [a.alert_type for a in rules.evaluate(None, card(0.1, "VIP", t=3), AlertMemory(), None)]
['vip_upgrade']
>>> vip = AlertMemory(disarmed={"vip_upgrade"})   # welcomed to VIP before
>>> [a.alert_type for a in rules.evaluate(card(0.2, "VIP"), card(0.8, "VIP", t=4), vip, None)]
['high_value_at_risk']
"""

from __future__ import annotations

import bisect
import hashlib
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.learning.prediction import Factor
from models.scoring.scorecard import Scorecard
from models.scoring.tiers import TIERS
from schemas.units import DAY_MS

if TYPE_CHECKING:
    from models.scoring.engine import BatchOutcome

__all__ = ["TIER_RANK", "Alert", "AlertBudget", "AlertConfig", "AlertMemory", "AlertRules"]

TIER_RANK = {tier: rank for rank, tier in enumerate(TIERS)}


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Thresholds of the alert rules and of score-change emission (documented defaults)."""

    churn_risk_on: float = 0.7
    """churn_risk fires when the churn probability rises to this or above ..."""
    churn_risk_off: float = 0.55
    """... and re-arms once it has fallen below this."""
    high_value_tiers: frozenset[str] = frozenset({"VIP", "Premium"})
    high_value_churn_on: float = 0.5
    """high_value_at_risk: a customer in a high-value tier whose churn risk reaches this."""
    high_value_churn_off: float = 0.4
    cooldown_ms: int = 7 * DAY_MS
    """The same alert type fires at most once per customer within this much event time."""
    tier_cooldown_ms: int = 30 * DAY_MS
    """vip_upgrade / tier_downgrade fire at most once per customer within this much time."""
    change_churn: float = 0.05
    """score-changes: smallest churn-probability change worth emitting (absolute)."""
    change_points: float = 5.0
    """... for 0-100 scores (data completeness, engagement), in points."""
    change_money_rel: float = 0.05
    """... for money values (LTV, predicted value, 12-month revenue), relative (5 %)."""
    change_money_abs: float = 1.0
    """... and never for less than this absolute amount in the base currency."""
    change_interactions: float = 5.0
    """... for the 12-month interaction count (one page view is not news)."""
    churn_rise: float = 0.15
    """churn_risk / high_value_at_risk fire only once the churn probability has risen this much
    above its lowest level since the customer's last churn alert (a material rise, not a
    customer who has looked this risky all along)."""
    budget_share: float = 0.02
    """Alert budget: each alert type fires for at most this share of the customers per
    `budget_window_ms` of event time (1: no limit); the value-at-risk cut
    (`TierThresholds.at_risk_from`) is set so that this share lies above it."""
    budget_window_ms: int = 30 * DAY_MS
    upsell_on: float = 0.5
    """upsell_opportunity fires when the upsell probability rises to this or above, for a
    customer of Standard tier or higher (predicted value worth a sales contact) ..."""
    upsell_off: float = 0.35
    """... and re-arms once it has fallen below this."""
    upsell_cooldown_ms: int = 30 * DAY_MS
    """upsell_opportunity fires at most once per customer within this much event time."""


@dataclass(slots=True)
class AlertMemory:
    """Per-customer alert state: which threshold alerts are armed, when each type last fired.

    >>> m = AlertMemory(disarmed={"churn_risk"}, last_fired={"churn_risk": 5},
    ...                 episodes={"churn_risk": 2}, window={"churn_risk": [1, 5]})
    >>> AlertMemory.from_dict(m.to_dict()) == m
    True
    """

    disarmed: set[str] = field(default_factory=set)
    last_fired: dict[str, int] = field(default_factory=dict)
    low: float | None = None
    """Lowest churn probability since the last churn alert (the reference of a rise)."""
    episodes: dict[str, int] = field(default_factory=dict)
    """Alerts fired so far per type (the episode number in each alert's id)."""
    window: dict[str, list[int]] = field(default_factory=dict)
    """When each type fired within the alert budget's window, oldest first: what this customer
    spent of its partition's budget, so a worker that takes the partition over rebuilds the
    budget as committed (`AlertBudget.spend`) instead of starting it afresh."""

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-friendly form for the customer state (empty parts left out)."""
        out: dict[str, Any] = {}
        if self.disarmed:
            out["d"] = sorted(self.disarmed)
        if self.last_fired:
            out["f"] = dict(sorted(self.last_fired.items()))
        if self.low is not None:
            out["l"] = self.low
        if self.episodes:
            out["n"] = dict(sorted(self.episodes.items()))
        if self.window:
            out["w"] = dict(sorted(self.window.items()))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AlertMemory:
        """Inverse of `to_dict` (None gives a fresh memory)."""
        if not d:
            return cls()
        disarmed, fired, episodes, window = d.get("d"), d.get("f"), d.get("n"), d.get("w")
        return cls(set(disarmed) if disarmed else set(), dict(fired) if fired else {},
                   d.get("l"), dict(episodes) if episodes else {},
                   {kind: list(times) for kind, times in window.items()} if window else {})

    def fired(self, kind: str, at: int, window_ms: int) -> None:
        """Record a `kind` alert fired at `at`, forgetting fire times out of the window."""
        self.last_fired[kind] = at
        kept = [t for t in self.window.get(kind, ()) if t > at - window_ms]
        kept.append(at)
        self.window[kind] = kept


class AlertBudget:
    """How many alerts of each type fired in the last window of event time, against the
    budget: `share` of the customers. One per partition in a worker, one for a replay.

    >>> b = AlertBudget(share=0.02, window_ms=30 * DAY_MS)
    >>> [b.allow("churn_risk", t * DAY_MS, customers=100) for t in range(4)]
    [True, True, False, False]
    >>> b.allow("churn_risk", 31 * DAY_MS, customers=100), b.allow("vip_upgrade", 0, 100)
    (True, True)

    Rebuilt from what the customers' alert memories recorded, it allows what it did before:

    >>> again = AlertBudget(share=0.02, window_ms=30 * DAY_MS)
    >>> again.spend("churn_risk", [1 * DAY_MS]); again.spend("churn_risk", [0])
    >>> again.allow("churn_risk", 2 * DAY_MS, customers=100), again.fired["churn_risk"]
    (False, [0, 86400000])

    A share of 1 (every customer) sets no limit: a customer re-armed within the window, or
    more alerts than the partition knew customers early in a backfill, are not held back.

    >>> whole = AlertBudget(share=1.0, window_ms=30 * DAY_MS)
    >>> [whole.allow("churn_risk", t * DAY_MS, customers=1) for t in range(3)]
    [True, True, True]
    """

    __slots__ = ("fired", "share", "window_ms")

    def __init__(self, share: float, window_ms: int) -> None:
        self.share = share
        self.window_ms = window_ms
        self.fired: dict[str, list[int]] = {}
        """Per alert type, the event times of the alerts counted, in time order."""

    def allow(self, kind: str, at: int, customers: int) -> bool:
        """Whether one more `kind` alert fits at event time `at`; if so, it is counted."""
        if self.share >= 1.0:
            return True
        times = self.fired.get(kind)
        if times is None:
            times = self.fired[kind] = []
        if times and times[0] <= at - self.window_ms:
            del times[:bisect.bisect_right(times, at - self.window_ms)]
        if len(times) >= max(1.0, self.share * customers):
            return False
        bisect.insort(times, at)
        return True

    def spend(self, kind: str, times: Iterable[int]) -> None:
        """Count alerts fired before (the customers' `AlertMemory.window`s, on assignment:
        best all of a partition's at once, one sort)."""
        fired = self.fired.setdefault(kind, [])
        fired.extend(times)
        fired.sort()


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for one customer (see schemas/alerts.json)."""

    alert_type: str
    severity: str
    customer_id: str
    reason: str
    scorecard: Scorecard
    event_time: int
    trigger_event_id: str | None = None
    episode: int = 0
    """The customer's how-many-th alert of this type this is (1 for the first)."""
    customer_since: int = 0
    """Event time of the customer's first event (tells a re-created customer id apart)."""

    @property
    def alert_id(self) -> str:
        """Idempotency key: the same alert always yields the same id, however the events were
        batched (see module docstring)."""
        raw = (f"{self.customer_id}\x1f{self.customer_since}\x1f{self.alert_type}"
               f"\x1f{self.episode}")
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()

    def to_record(self, emitted_at: int) -> dict[str, Any]:
        """The alerts-topic record (`factors`: what raised the upsell propensity for an
        upsell opportunity, the churn risk for any other alert)."""
        card = self.scorecard
        factors = card.upsell_factors if self.alert_type == "upsell_opportunity" else (
            card.churn_factors)
        return {
            "alert_id": self.alert_id,
            "alert_type": self.alert_type,
            "severity": self.severity,
            "customer_id": self.customer_id,
            "reason": self.reason,
            "factors": [f.to_dict() for f in factors],
            "scorecard": self.scorecard.to_dict(),
            "event_time": self.event_time,
            "emitted_at": emitted_at,
            "model_versions": dict(sorted(self.scorecard.model_versions.items())),
            "trigger_event_id": self.trigger_event_id,
        }


class AlertRules:
    """The alert rules: churn_risk, high_value_at_risk, vip_upgrade, tier_downgrade,
    upsell_opportunity."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = cfg = config or AlertConfig()
        # The fields `changes` tracks, how each is compared, and its threshold.
        self._tracked: tuple[tuple[str, str, float], ...] = (
            ("churn_probability", "abs", cfg.change_churn),
            ("engagement", "abs", cfg.change_points),
            ("data_completeness", "abs", cfg.change_points),
            ("ltv_historic", "money", 0.0),
            ("ltv_predicted_12m", "money", 0.0),
            ("revenue_12m", "money", 0.0),
            ("interactions_12m", "abs", cfg.change_interactions),
            ("tier", "any", 0.0),
        )
        self._values = operator.attrgetter(*(name for name, _kind, _t in self._tracked))
        """A scorecard's tracked values, in `_tracked` order, in one call."""

    def evaluate(
        self,
        previous: Scorecard | None,
        current: Scorecard,
        memory: AlertMemory,
        trigger_event_id: str | None,
        at_risk_from: float | None = None,
        budget: AlertBudget | None = None,
        customers: int = 0,
        customer_since: int = 0,
    ) -> list[Alert]:
        """Alerts raised by the move from `previous` to `current`; updates `memory` in place.

        A customer in a high-value tier gets `high_value_at_risk` (for an adviser), any other
        customer `churn_risk` (for win-back flows): one alert per episode, never both. Both
        need a high churn probability that has risen materially (`churn_rise` above its
        lowest level since the last churn alert) and, once the learner has set it, a value at
        risk (probability x predicted value) at or above `at_risk_from`, the cut above which
        the budget's share of all customers lies. With a
        `budget` (and the number of `customers` it is shared by), an alert the budget has
        no room for stays armed and fires once there is room, if it still holds.
        `customer_since` (the event time of the customer's first event) goes into the
        alerts' ids.
        """
        cfg = self.config
        alerts: list[Alert] = []
        p = current.churn_probability
        if memory.low is None:  # a first scorecard, or a memory kept before lows were
            memory.low = previous.churn_probability if previous is not None else p
        low = memory.low = p if p < memory.low else memory.low  # min(), without the call

        def fire(kind: str, severity: str, reason: str, cooldown_ms: int = cfg.cooldown_ms,
                 rearm: bool = False) -> bool:
            last = memory.last_fired.get(kind)
            if last is not None and current.as_of - last < cooldown_ms:
                if rearm:  # a threshold alert stays armed: it fires once it may
                    memory.disarmed.discard(kind)
                return False
            if budget is not None and not budget.allow(kind, current.as_of, customers):
                # A churn alert stays armed and fires once there is room, if it still holds;
                # a tier move is news when it happens or not at all.
                if rearm:
                    memory.disarmed.discard(kind)
                return False
            memory.fired(kind, current.as_of, cfg.budget_window_ms)
            episode = memory.episodes[kind] = memory.episodes.get(kind, 0) + 1
            alerts.append(Alert(kind, severity, current.customer_id, reason, current,
                                current.as_of, trigger_event_id, episode, customer_since))
            return True

        at_risk = current.value_at_risk
        material = p - low >= cfg.churn_rise and (at_risk_from is None or at_risk >= at_risk_from)
        high_value = current.tier in cfg.high_value_tiers
        # One churn alert per customer and episode: a high-value customer's is
        # high_value_at_risk (an adviser calls), anyone else's churn_risk (a win-back flow).
        if self._crossed("churn_risk", p, cfg.churn_risk_on, cfg.churn_risk_off, memory,
                         material and not high_value) and fire(
                "churn_risk", "warning",
                f"churn risk rose from {low:.2f} to {p:.2f} (value at risk "
                f"{at_risk:,.0f} {current.currency}){_factor_phrase(current.churn_factors)}",
                rearm=True):
            memory.low = p

        hv_p = p if high_value else 0.0
        # Kept armed through the cooldown only when churn rose, not when the tier came back:
        # tiers flap at a boundary as thresholds are republished.
        if self._crossed("high_value_at_risk", hv_p, cfg.high_value_churn_on,
                         cfg.high_value_churn_off, memory, material) and fire(
                "high_value_at_risk", "critical",
                f"{current.tier} customer (predicted 12-month value "
                f"{current.ltv_predicted_12m:,.0f} {current.currency}) has churn risk {p:.2f}, "
                f"up from {low:.2f}{_factor_phrase(current.churn_factors)}: route to a senior "
                "adviser",
                rearm=previous is not None and previous.tier in cfg.high_value_tiers):
            memory.low = p

        # Tier moves near a boundary flap as thresholds are republished: vip_upgrade re-arms
        # only once the customer has fallen below Premium, and tier_downgrade speaks only of
        # leaving the high-value tiers; both also respect the (longer) tier cooldown.
        old_tier = previous.tier if previous else None
        rank = TIER_RANK.get(current.tier, 0)
        if rank <= TIER_RANK["Standard"]:
            memory.disarmed.discard("vip_upgrade")
        if current.tier in cfg.high_value_tiers:
            memory.disarmed.discard("tier_downgrade")
        if current.tier == "VIP" and "vip_upgrade" not in memory.disarmed:
            memory.disarmed.add("vip_upgrade")  # not re-armed by the budget: once per stay
            fire("vip_upgrade", "info",
                 f"upgraded to VIP from {old_tier or 'new customer'} (predicted 12-month "
                 f"value {current.ltv_predicted_12m:,.0f} {current.currency})",
                 cfg.tier_cooldown_ms)
        elif (old_tier in cfg.high_value_tiers and current.tier not in cfg.high_value_tiers
              and "tier_downgrade" not in memory.disarmed):
            memory.disarmed.add("tier_downgrade")
            fire("tier_downgrade", "warning",
                 f"tier fell from {old_tier} to {current.tier} (predicted 12-month value "
                 f"{current.ltv_predicted_12m:,.0f} {current.currency})", cfg.tier_cooldown_ms)

        # Propensity x value: a likely upsell of a customer worth a sales contact (Standard
        # tier or higher), inside the same budget as every other alert type.
        up = current.upsell_probability
        if up is not None and self._crossed(
                "upsell_opportunity", up, cfg.upsell_on, cfg.upsell_off, memory,
                rank >= TIER_RANK["Standard"]):
            fire("upsell_opportunity", "info",
                 f"upsell propensity {up:.2f} for a {current.tier} customer (predicted "
                 f"12-month value {current.ltv_predicted_12m:,.0f} {current.currency})"
                 f"{_factor_phrase(current.upsell_factors)}", cfg.upsell_cooldown_ms, rearm=True)
        return alerts

    def on_outcome(self, out: BatchOutcome, at_risk_from: float | None = None,
                   budget: AlertBudget | None = None, customers: int = 0) -> list[Alert]:
        """Alerts for one engine outcome, keeping the customer's AlertMemory in its state.

        The rules see each scorecard of the outcome's timeline in turn (`BatchOutcome.points`),
        each as the move from the one before, so the alerts do not depend on how the
        customer's events were batched."""
        if out.scorecard is None or out.state is None:
            return []
        memory = AlertMemory.from_dict(out.state.alerts)
        since = out.state.first_ms or 0
        previous = out.previous_scorecard
        points = out.points or ((out.scorecard, out.last_event_id),)
        alerts: list[Alert] = []
        for card, trigger in points:
            alerts += self.evaluate(previous, card, memory, trigger, at_risk_from, budget,
                                    customers, since)
            previous = card
        out.state.alerts = memory.to_dict()
        return alerts

    def budget(self) -> AlertBudget:
        """A fresh alert budget with this configuration's share and window."""
        return AlertBudget(self.config.budget_share, self.config.budget_window_ms)

    def score_changes(self, out: BatchOutcome) -> dict[str, dict[str, Any]]:
        """The fields to report in a score change for one engine outcome ({} for none): those
        that moved past their threshold since the last score change reported for this
        customer. Keeps that baseline in the state (`reported`) while it differs from the
        previous scorecard."""
        card, state = out.scorecard, out.state
        if card is None or state is None:
            return {}
        reported = state.reported
        if reported is not None and len(reported) != len(self._tracked):
            reported = None  # kept by a version that tracked other fields: start afresh
        baseline: Scorecard | list[Any] | None = (
            reported if reported is not None else out.previous_scorecard)
        changed = self.changes(baseline, card)
        if changed:
            state.reported = None  # this scorecard is reported, and becomes `last`
        elif reported is None and isinstance(baseline, Scorecard):
            state.reported = list(self._values(baseline))
        return changed

    @staticmethod
    def _crossed(kind: str, value: float, on: float, off: float, memory: AlertMemory,
                 eligible: bool = True) -> bool:
        """Hysteresis: True once when value reaches `on` (while `eligible`); re-armed when it
        falls below `off`."""
        if kind in memory.disarmed:
            if value < off:
                memory.disarmed.discard(kind)
            return False
        if value >= on and eligible:
            memory.disarmed.add(kind)
            return True
        return False

    def changes(self, previous: Scorecard | Sequence[Any] | None,
                current: Scorecard) -> dict[str, dict[str, Any]]:
        """Scorecard fields that moved by more than their threshold: {field: {old, new}}.

        `previous` is a scorecard or its tracked values (as kept in `CustomerState.reported`).
        A first scorecard reports every tracked field with old = None.
        """
        values = self._values(current)
        if previous is None:
            return {name: {"old": None, "new": new}
                    for (name, _kind, _threshold), new in zip(self._tracked, values, strict=True)}
        cfg = self.config
        olds = self._values(previous) if isinstance(previous, Scorecard) else previous
        out: dict[str, dict[str, Any]] = {}
        for (name, kind, threshold), new, old in zip(self._tracked, values, olds, strict=True):
            if new == old:  # most fields, most of the time; a zero threshold never reports them
                continue
            if old is None or kind == "any":
                out[name] = {"old": old, "new": new}
            elif kind == "abs":
                if abs(new - old) >= threshold:
                    out[name] = {"old": old, "new": new}
            elif abs(new - old) >= max(cfg.change_money_abs, cfg.change_money_rel * abs(old)):
                out[name] = {"old": old, "new": new}
        return out


def _factor_phrase(factors: tuple[Factor, ...]) -> str:
    """', mainly <top factor>' for the one-line reason, or nothing."""
    if not factors:
        return ""
    return f", mainly {factors[0].label}"
