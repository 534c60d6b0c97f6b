"""Deterministic synthetic event history (raw source events) with ground truth.

Customers follow one of four stories: one-time buyers who drift away after their first order,
steady regulars, churners who drift (fewer sessions and email opens, more support tickets,
late payments, lower CSAT and sentiment) for a couple of months before they cancel or go
silent, and growers who become VIPs. Purchases are heterogeneous Poisson processes with
heavy-tailed (log-normal) order values in several currencies. Some events carry only an alias:
email events with only `email`, web sessions with only `anonymous_id` until a `login` links it.
Orders name product categories: a customer mostly buys again in categories it knows and
sometimes tries a new one (growers more often, drifting customers hardly), growers on a
subscription upgrade their plan, and a customer asked about once a quarter may answer the NPS
question (promoters among growers, detractors among drifting customers and after bad support).
Everything derives from one seed, so the same arguments always give the same bytes.

That default profile ("stories") was written together with the churn model, so the model's
quality on it says little about real behaviour. The "retail" profile (`RetailParams`) draws
customers from the Pareto/NBD process with the heterogeneity of real retail data: most buy
once or twice and a few often, lifetimes end unobserved, half the customers are only ever
seen through their orders, the others browse in multi-event visits on the days they shop.

The "journeys" profile (`JourneyParams`) is for attribution: customers reach the shop in
episodes of touches through marketing channels and campaigns, each channel with a known
probability of leading to an order, so that a data-driven model can be judged by whether it
ranks the channels as their true effects do.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.config import DEFAULT_FX_RATES
from schemas.units import DAY_MS, HOUR_MS

__all__ = [
    "FUNNEL_GOALS",
    "JOURNEYS",
    "PROFILES",
    "RETAIL",
    "SEGMENTS",
    "START_MS",
    "JourneyParams",
    "RetailParams",
    "Truth",
    "generate",
    "iter_lines",
    "without_extras",
]

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

SEGMENTS = (("one_time", 0.40), ("regular", 0.35), ("churner", 0.17), ("vip_grower", 0.08))
_CURRENCIES = (("EUR", 0.8), ("USD", 0.15), ("GBP", 0.05))
_CATEGORIES = ("books", "music", "film", "games", "electronics", "home", "garden", "toys",
               "sports", "fashion")
#: Chance that an order opens a category the customer never bought, per story.
_EXPLORE = {"one_time": 0.10, "regular": 0.15, "churner": 0.12, "vip_grower": 0.35}
_PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "phone",
    "street",
    "city",
    "postal_code",
    "country",
    "birth_date",
    "company",
    "job_title",
)


@dataclass(frozen=True, slots=True)
class Truth:
    """Ground truth for one customer."""

    customer_id: str
    segment: str
    signup_ms: int
    churn_ms: int | None
    churn_kind: str | None  # "cancelled" | "silent" | None
    orders: int
    revenue_eur: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "customer_id": self.customer_id,
            "segment": self.segment,
            "signup_ms": self.signup_ms,
            "churn_ms": self.churn_ms,
            "churn_kind": self.churn_kind,
            "orders": self.orders,
            "revenue_eur": round(self.revenue_eur, 2),
        }


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    u = rng.random()
    acc = 0.0
    for name, p in table:
        acc += p
        if u < acc:
            return name
    return table[-1][0]


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class _Customer:
    """Generates one customer's events; all randomness from its own seeded stream."""

    def __init__(self, index: int, seed: int, days: int, start_ms: int) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.cid = f"C{index:06d}"
        self.email = f"c{index}@example.com"
        self.anon = f"anon-{index}-{self.rng.randrange(10**9)}"
        self.days = days
        self.start_ms = start_ms
        self.n = 0
        self.n_extra = 0
        self.events: list[dict[str, Any]] = []
        self.orders = 0
        self.revenue = 0.0
        # Categories, plans and survey answers draw from a stream of their own, so the rest
        # of a customer's history is the same as before they existed.
        self.extra = random.Random(f"{seed}:{index}:extra")
        self.bought: list[str] = []
        self.explore = 0.0
        self.bad_support = 0.0

    def emit(
        self,
        source: str,
        etype: str,
        ts: int,
        payload: dict[str, Any] | None = None,
        *,
        alias_only: bool = False,
        anonymous: bool = False,
        extra: bool = False,
    ) -> None:
        if extra:  # an upgrade or a survey answer: ids of their own, the others' stay as they were
            self.n_extra += 1
            event_id = f"{source[0]}-{self.cid}-x{self.n_extra}"
        else:
            self.n += 1
            event_id = f"{source[0]}-{self.cid}-{self.n}"
        e: dict[str, Any] = {
            "event_id": event_id,
            "event_type": etype,
            "source": source,
            # web uses RFC 3339 strings, the other sources epoch milliseconds: both are legal
            "occurred_at": _iso(ts) if source == "web" else ts,
        }
        if anonymous:
            e["anonymous_id"] = self.anon
        elif alias_only:
            e["email"] = self.email
        else:
            e["customer_id"] = self.cid
        if payload is not None:
            e["payload"] = payload
        self.events.append(e)

    def run(self) -> Truth:
        rng = self.rng
        segment = _pick(rng, SEGMENTS)
        signup_day = rng.randrange(0, int(self.days * 0.6))
        d0 = self.start_ms + signup_day * DAY_MS
        subscribed = rng.random() < 0.5 or segment == "vip_grower"
        churn_day: int | None = None
        churn_kind: str | None = None
        if segment == "churner":
            churn_day = signup_day + rng.randrange(90, max(91, self.days - signup_day))
            churn_kind = "cancelled" if subscribed and rng.random() < 0.6 else "silent"
        elif segment == "one_time":
            churn_day = signup_day + rng.randrange(20, 150)
            churn_kind = "silent"
        if churn_day is not None and churn_day >= self.days:
            churn_day, churn_kind = None, None

        self.explore = _EXPLORE[segment]
        extra = self.extra
        upgrade_day = (signup_day + extra.randrange(60, 300)
                       if subscribed and segment in ("vip_grower", "regular")
                       and extra.random() < (0.6 if segment == "vip_grower" else 0.1) else None)
        base_sessions = rng.lognormvariate(math.log(0.12), 0.6)  # per day
        purchase_rate = rng.gammavariate(0.8, 1 / 0.8) / 45.0  # per day, heterogeneous
        spend_scale = rng.lognormvariate(math.log(40.0), 0.7)
        currency = _pick(rng, _CURRENCIES)
        # signup: anonymous browsing, login that links the cookie, profile, subscription
        t = d0 + rng.randrange(8 * HOUR_MS, 20 * HOUR_MS)
        self.emit("web", "session_started", t, {"channel": "organic"}, anonymous=True)
        self.emit("web", "page_view", t + 30_000, {"url": "/", "duration_s": 12.5}, anonymous=True)
        self.emit("web", "login", t + 90_000, {})
        self.events[-1]["anonymous_id"] = self.anon
        fields: dict[str, Any] = {"email": self.email}
        for f in _PROFILE_FIELDS:
            if rng.random() < 0.55:
                fields[f] = "x" if f != "birth_date" else "1990-01-01"
        fields["consent_marketing"] = rng.random() < 0.7
        self.emit("crm", "profile_updated", t + 120_000, {"fields": fields})
        if subscribed:
            self.emit("crm", "subscription_started", t + 150_000, {"plan": "basic", "mrr": 9.0})
        self._order(t + 200_000, spend_scale, currency)
        unsubscribed = False
        ticket = 0
        for day in range(signup_day + 1, self.days):
            ds = self.start_ms + day * DAY_MS
            churned = churn_day is not None and day >= churn_day
            drift = 0.0
            if churn_day is not None and not churned:
                drift = max(0.0, 1.0 - (churn_day - day) / 75.0)  # 0 -> 1 over the last 75 days
            if segment == "vip_grower":
                growth = 1.0 + 3.0 * min(1.0, (day - signup_day) / 300.0)
            else:
                growth = 1.0
            if churn_day is not None and day == churn_day and churn_kind == "cancelled":
                self.emit(
                    "crm",
                    "subscription_cancelled",
                    ds + rng.randrange(DAY_MS),
                    {"reason": "too_expensive"},
                )
            # weekly campaign email to everyone not unsubscribed
            if (day - signup_day) % 7 == 3 and not unsubscribed:
                ts = ds + 9 * HOUR_MS + rng.randrange(HOUR_MS)
                alias = rng.random() < 0.5
                self.emit("email", "sent", ts, {"campaign_id": f"w{day // 7}"}, alias_only=alias)
                if rng.random() < 0.01:
                    self.emit("email", "bounced", ts + 60_000, {"kind": "soft"}, alias_only=alias)
                else:
                    self.emit("email", "delivered", ts + 60_000, {}, alias_only=alias)
                    p_open = 0.03 if churned else 0.35 * (1 - 0.8 * drift) * min(growth, 1.5)
                    if rng.random() < p_open:
                        to = ts + rng.randrange(HOUR_MS, 30 * HOUR_MS)
                        self.emit("email", "opened", to, {}, alias_only=alias)
                        if rng.random() < 0.3:
                            self.emit(
                                "email", "clicked", to + 20_000, {"url": "/offer"}, alias_only=alias
                            )
                    if rng.random() < 0.004 + 0.02 * drift:
                        self.emit("email", "unsubscribed", ts + 7200_000, {}, alias_only=alias)
                        unsubscribed = True
            if churned:
                continue
            rate = base_sessions * growth * (1.0 - 0.85 * drift)
            if rng.random() < rate:
                ts = ds + rng.randrange(6 * HOUR_MS, 23 * HOUR_MS)
                self.emit("web", "session_started", ts, {"device": "mobile"})
                for k in range(rng.randrange(1, 5)):
                    self.emit("web", "page_view", ts + (k + 1) * 40_000, {"url": f"/p/{k}"})
                if rng.random() < 0.3:
                    self.emit("web", "search", ts + 10_000, {"query": "shoes", "results": 12})
            if rng.random() < purchase_rate * growth * (1.0 - 0.7 * drift):
                ts = ds + rng.randrange(8 * HOUR_MS, 22 * HOUR_MS)
                self.explore = _EXPLORE[segment] * (1.0 - 0.9 * drift)
                self._order(
                    ts, spend_scale * (growth if segment == "vip_grower" else 1.0), currency
                )
            if day == upgrade_day and not (churn_day is not None and day >= churn_day - 75):
                self.emit("crm", "subscription_started", ds + 10 * HOUR_MS,
                          {"plan": "plus", "mrr": 19.0}, extra=True)
            if (day - signup_day) % 91 == 45 and extra.random() < 0.25:
                self._nps(ds + 11 * HOUR_MS, segment, drift)
            if subscribed and (day - signup_day) % 30 == 0 and rng.random() < 0.02 + 0.5 * drift:
                self.emit("crm", "payment_late", ds + HOUR_MS, {"days_late": rng.randrange(1, 20)})
            if rng.random() < 1 / 150 + drift / 12:
                ticket += 1
                tid = f"T-{self.cid}-{ticket}"
                ts = ds + rng.randrange(8 * HOUR_MS, 18 * HOUR_MS)
                low, high = (-0.9, -0.2) if drift > 0.3 else (-0.3, 0.8)
                sentiment = round(rng.uniform(low, high), 2)
                prio = "high" if drift > 0.5 else "normal"
                self.emit(
                    "support",
                    "ticket_opened",
                    ts,
                    {"ticket_id": tid, "priority": prio, "sentiment": sentiment},
                )
                if drift > 0.5 and rng.random() < 0.4:
                    self.emit("support", "escalated", ts + HOUR_MS, {"ticket_id": tid})
                hours = round(rng.uniform(1, 30) * (1 + 3 * drift), 1)
                self.emit(
                    "support",
                    "ticket_resolved",
                    ts + int(hours * HOUR_MS),
                    {"ticket_id": tid, "resolution_hours": hours},
                )
                if rng.random() < 0.5:
                    csat = max(1, min(5, round(rng.gauss(4.3 - 2.5 * drift, 0.7))))
                    self.bad_support = max(self.bad_support, 1.0 if csat <= 2 else 0.0)
                    self.emit(
                        "support",
                        "satisfaction_rated",
                        ts + int(hours * HOUR_MS) + 60_000,
                        {"ticket_id": tid, "csat": csat},
                    )
            if rng.random() < 0.002:
                self.emit("crm", "profile_updated", ds + HOUR_MS, {"fields": {"phone": "+1"}})
        return Truth(
            self.cid,
            segment,
            d0,
            None if churn_day is None else self.start_ms + churn_day * DAY_MS,
            churn_kind,
            self.orders,
            self.revenue,
        )

    def _nps(self, ts: int, segment: str, drift: float) -> None:
        """One answer to the quarterly NPS question."""
        mood = {"one_time": 6.5, "regular": 8.0, "churner": 7.5, "vip_grower": 9.0}[segment]
        mood -= 4.0 * drift + 2.0 * self.bad_support
        score = max(0, min(10, round(self.extra.gauss(mood, 1.5))))
        self.emit("support", "survey_answered", ts, {"survey": "nps", "score": score},
                  extra=True)
        self.bad_support *= 0.5

    def _categories(self) -> list[str]:
        """The categories of one order: a known one, or (sometimes, always for a first
        order) one the customer never bought."""
        extra, bought = self.extra, self.bought
        fresh = [c for c in _CATEGORIES if c not in bought]
        if fresh and (not bought or extra.random() < self.explore):
            bought.append(extra.choice(fresh))
            return [bought[-1]]
        return [extra.choice(bought)]

    def _order(self, ts: int, scale: float, currency: str) -> None:
        rng = self.rng
        amount = round(scale * rng.lognormvariate(0.0, 0.8), 2)
        oid = f"O-{self.cid}-{self.orders + 1}"
        self.emit(
            "crm", "order_placed", ts, {"order_id": oid, "amount": amount, "currency": currency,
                                        "categories": self._categories()}
        )
        self.emit("web", "goal_completed", ts - 5_000, {"goal": "purchase", "value": amount})
        self.orders += 1
        rate = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}[currency]
        self.revenue += amount * rate
        if rng.random() < 0.04:
            ts_r = ts + rng.randrange(3, 20) * DAY_MS
            self.emit(
                "crm",
                "order_refunded",
                ts_r,
                {"order_id": oid, "amount": amount, "currency": currency},
            )
            self.revenue -= amount * rate


PROFILES = ("stories", "retail", "journeys")
"""Generator profiles: the hand-made customer stories (default), Pareto/NBD retail, and
marketing journeys with a known effect per channel."""


@dataclass(frozen=True, slots=True)
class RetailParams:
    """Parameters of the "retail" profile; time unit days, money in EUR.

    Purchases follow the Pareto/NBD process (Schmittlein, Morrison and Colombo 1987) with
    heterogeneity of the order of fits on CDNOW-like retail data: while alive a customer buys
    as a Poisson process of rate lambda ~ Gamma(shape `r`, rate `alpha_days`) per day (mean
    r / alpha = one purchase every 160 days, but most customers far slower), and stays alive
    for an exponential lifetime of rate mu ~ Gamma(shape `s`, rate `beta_days`) per day. The
    first order is the acquisition; customers are acquired uniformly over the first
    `acquisition_share` of the history. Order values follow the Gamma-Gamma model (Fader,
    Hardie and Lee 2005): a customer's orders are Gamma(shape `p`, rate nu) with nu ~
    Gamma(shape `q`, rate `gamma_eur`), a mean spend of p * gamma / (q - 1) EUR on average.

    A share `orders_only_share` of customers (shop or phone buyers) are seen only through
    crm `order_placed` (and the odd refund). The others are web customers: they visit on
    Poisson days at rate lambda * (1 + browse ratio) + a baseline browsing rate, every
    purchase happens in one of these visits (each visit is a purchase with probability lambda
    / visit rate, which keeps purchases Poisson(lambda)), a visit day holds one or more
    sessions of several page views, they receive campaign emails (opening some) and now and
    then open a support ticket. After the (unobserved) death all activity stops, except
    campaign mail that still goes out and a few residual opens.
    """

    r: float = 0.25
    """Shape of the Gamma heterogeneity of the purchase rate lambda."""
    alpha_days: float = 40.0
    """Rate parameter (in days) of that Gamma: mean lambda = r / alpha_days per day."""
    s: float = 0.6
    """Shape of the Gamma heterogeneity of the dropout rate mu."""
    beta_days: float = 180.0
    """Rate parameter (in days) of that Gamma: mean mu = s / beta_days per day."""
    acquisition_share: float = 0.25
    """First orders fall uniformly over this leading share of the history (a cohort)."""
    p: float = 6.0
    """Gamma-Gamma: shape of the order value distribution around a customer's mean."""
    q: float = 3.8
    """Gamma-Gamma: shape of the heterogeneity of the per-customer rate nu."""
    gamma_eur: float = 20.0
    """Gamma-Gamma: rate parameter (in EUR) of nu's Gamma; mean spend p * gamma / (q - 1)."""
    currencies: tuple[tuple[str, float], ...] = (("EUR", 0.9), ("GBP", 0.06), ("USD", 0.04))
    """Currency of a customer's orders, with probabilities (amounts are in that currency)."""
    refund_rate: float = 0.03
    """Probability that an order is refunded 3-20 days later."""
    orders_only_share: float = 0.5
    """Share of customers with orders only: no web, email or support events."""
    browse_ratio: float = 3.0
    """Median of the log-normal number of extra (non-buying) visits per purchase."""
    browse_days: float = 60.0
    """Median days between visits of the baseline browsing that does not depend on lambda."""
    page_views: float = 5.0
    """Mean number of page views in a session (at least one)."""
    extra_session_rate: float = 0.3
    """Probability of one more session on a visit day (repeated: geometric)."""
    search_rate: float = 0.35
    """Probability that a session holds a search."""
    login_rate: float = 0.2
    """Probability that a visit without purchase logs in (first and buying visits always do)."""
    consent_share: float = 0.7
    """Share of web customers who get the campaign emails."""
    campaign_days: int = 14
    """Days between campaign emails."""
    open_a: float = 1.5
    """Beta(open_a, open_b) of a customer's probability to open a campaign while alive."""
    open_b: float = 4.0
    """See `open_a` (mean open rate 0.27)."""
    click_rate: float = 0.25
    """Probability that an opened campaign is clicked (alive customers only)."""
    residual_open_rate: float = 0.02
    """Probability that a dead customer's mailbox still opens a campaign (previews, proxies)."""
    unsubscribe_rate: float = 0.003
    """Probability of unsubscribing on a campaign."""
    ticket_days: float = 700.0
    """Mean alive days between spontaneous support tickets of a web customer."""
    order_ticket_rate: float = 0.04
    """Probability that a web customer's order leads to a support ticket within ten days."""


RETAIL = RetailParams()
"""Default parameters of the "retail" profile."""

_DEVICES = (("mobile", 0.6), ("desktop", 0.35), ("tablet", 0.05))
_CHANNELS = (("direct", 0.35), ("organic", 0.3), ("email", 0.15), ("paid", 0.12), ("social", 0.08))


class _RetailCustomer(_Customer):
    """One customer of the "retail" profile (Pareto/NBD purchases, visits around them)."""

    def __init__(
        self, index: int, seed: int, days: int, start_ms: int, params: RetailParams
    ) -> None:
        super().__init__(index, seed, days, start_ms)
        # a stream of its own, apart from the stories profile's customer streams
        self.rng = random.Random(f"{seed}:retail:{index}")
        self.anon = f"anon-{index}-{self.rng.randrange(10**9)}"
        self.p = params
        self.end_ms = self.alive_end = start_ms + days * DAY_MS

    def run(self) -> Truth:
        rng, p = self.rng, self.p
        orders_only = rng.random() < p.orders_only_share
        lam = rng.gammavariate(p.r, 1 / p.alpha_days)  # purchases per day while alive
        mu = max(rng.gammavariate(p.s, 1 / p.beta_days), 1e-12)  # dropout rate per day
        self.nu = rng.gammavariate(p.q, 1 / p.gamma_eur)  # Gamma-Gamma: mean spend p / nu
        currency = _pick(rng, p.currencies)
        self.hour = rng.uniform(9.0, 21.0)  # preferred time of day for visits
        day0 = int(rng.random() * max(1.0, p.acquisition_share * self.days))
        t0 = (
            self._shop_hours(self.start_ms + day0 * DAY_MS)
            if orders_only
            else self._visit_start(self.start_ms + day0 * DAY_MS)
        )
        death = t0 + int(rng.expovariate(mu) * DAY_MS)
        alive_end = self.alive_end = min(death, self.end_ms)
        if orders_only:
            self._retail_order(t0, self._spend(), currency, web=False)
            t = t0
            while lam > 0:
                t += int(rng.expovariate(lam) * DAY_MS)
                ts = self._shop_hours(self._day_start(t))
                if t >= alive_end or ts >= alive_end:
                    break
                self._retail_order(max(ts, t0 + 1), self._spend(), currency, web=False)
        else:
            self._web_customer(t0, alive_end, death, lam, currency)
        churned = death < self.end_ms
        return Truth(
            self.cid,
            "retail_orders_only" if orders_only else "retail_multichannel",
            t0,
            death if churned else None,
            "silent" if churned else None,
            self.orders,
            self.revenue,
        )

    def _day_start(self, ts: int) -> int:
        return ts - (ts - self.start_ms) % DAY_MS

    def _shop_hours(self, day: int) -> int:
        return day + int(self.rng.uniform(9.0, 19.0) * HOUR_MS)

    def _visit_start(self, day: int) -> int:
        """A session start around the customer's preferred hour, between 06:00 and 22:00.

        A session lasts under two hours, so a visit and its order stay on the same day.
        """
        hour = min(21.0, max(6.0, self.rng.gauss(self.hour, 2.5)))
        return day + int(hour * HOUR_MS) + self.rng.randrange(HOUR_MS)

    def _spend(self) -> float:
        """One order's value: Gamma(p, nu) around the customer's mean p / nu."""
        return round(self.rng.gammavariate(self.p.p, 1 / self.nu), 2)

    def _web_customer(self, t0: int, alive_end: int, death: int, lam: float, currency: str) -> None:
        rng, p = self.rng, self.p
        self.device = _pick(rng, _DEVICES)
        browse = lam * rng.lognormvariate(math.log(p.browse_ratio), 0.5)
        visit_rate = lam + browse + 1 / rng.lognormvariate(math.log(p.browse_days), 0.7)
        consent = rng.random() < p.consent_share
        p_open = rng.betavariate(p.open_a, p.open_b)
        # acquisition: anonymous browsing, login that links the cookie, profile, first order
        self._visit(t0, buy=self._spend(), currency=currency, signup=True, consent=consent)
        t = t0
        while True:
            t += int(rng.expovariate(visit_rate) * DAY_MS)
            if t >= alive_end:
                break
            day = self._day_start(t)
            ts = self._visit_start(day)
            if ts >= alive_end or ts <= t0:
                continue
            # a visit day: one or more sessions; a purchase (if any) in the last one
            buy = rng.random() < lam / visit_rate
            starts = [ts]
            while len(starts) < 4 and rng.random() < p.extra_session_rate:
                nxt = starts[-1] + rng.randrange(HOUR_MS // 2, 4 * HOUR_MS)
                if nxt >= min(day + 22 * HOUR_MS, alive_end):
                    break
                starts.append(nxt)
            for k, start in enumerate(starts):
                spend = self._spend() if buy and k == len(starts) - 1 else None
                self._visit(start, buy=spend, currency=currency)
        # spontaneous support tickets while alive
        t = t0
        while True:
            t += int(rng.expovariate(1 / p.ticket_days) * DAY_MS)
            if t >= alive_end:
                break
            self._ticket(t)
        if consent:
            self._campaigns(t0, death, p_open)

    def _visit(
        self,
        ts: int,
        *,
        buy: float | None,
        currency: str,
        signup: bool = False,
        consent: bool = False,
    ) -> None:
        """One session: session_started, page views (a search), a login, maybe an order.

        Events before the login carry only the cookie (`anonymous_id`), which the signup
        visit's login links to the customer; the login carries both, later events the id.
        """
        rng, p = self.rng, self.p
        login = signup or buy is not None or rng.random() < p.login_rate
        views = 1
        while rng.random() < 1 - 1 / p.page_views and views < 40:
            views += 1
        login_after = rng.randrange(views) if login else views  # page views before the login
        search_at = rng.randrange(views) if rng.random() < p.search_rate else -1
        channel = _pick(rng, _CHANNELS)
        self.emit(
            "web",
            "session_started",
            ts,
            {"channel": channel, "device": self.device},
            anonymous=True,
        )
        known = False
        for k in range(views):
            ts += rng.randrange(15_000, 150_000)
            if k == login_after:
                self.emit("web", "login", ts, {})
                self.events[-1]["anonymous_id"] = self.anon
                known = True
                ts += 5_000
                if signup:
                    fields: dict[str, Any] = {"email": self.email}
                    for f in _PROFILE_FIELDS:
                        if rng.random() < 0.5:
                            fields[f] = "x" if f != "birth_date" else "1985-06-01"
                    fields["consent_marketing"] = consent
                    self.emit("crm", "profile_updated", ts, {"fields": fields})
            if k == search_at:
                self.emit(
                    "web",
                    "search",
                    ts,
                    {"query": "q", "results": rng.randrange(0, 200)},
                    anonymous=not known,
                )
                ts += rng.randrange(5_000, 30_000)
            url = "/" if k == 0 else f"/p/{rng.randrange(500)}"
            duration = round(rng.lognormvariate(math.log(25.0), 0.8), 1)
            self.emit(
                "web", "page_view", ts, {"url": url, "duration_s": duration}, anonymous=not known
            )
        if buy is not None:
            for url in ("/cart", "/checkout"):
                ts += rng.randrange(20_000, 90_000)
                self.emit("web", "page_view", ts, {"url": url}, anonymous=not known)
            ts += rng.randrange(30_000, 120_000)
            self.emit("web", "goal_completed", ts, {"goal": "purchase", "value": buy})
            self._retail_order(ts + 5_000, buy, currency, web=True)

    def _retail_order(self, ts: int, amount: float, currency: str, *, web: bool) -> None:
        rng, p = self.rng, self.p
        self.orders += 1
        oid = f"O-{self.cid}-{self.orders}"
        payload = {"order_id": oid, "amount": amount, "currency": currency}
        self.emit("crm", "order_placed", ts, payload)
        rate = DEFAULT_FX_RATES[currency]
        self.revenue += amount * rate
        if rng.random() < p.refund_rate:
            ts_r = ts + rng.randrange(3, 20) * DAY_MS
            if ts_r < self.end_ms:
                self.emit("crm", "order_refunded", ts_r, dict(payload))
                self.revenue -= amount * rate
        if web and rng.random() < p.order_ticket_rate:
            self._ticket(ts + rng.randrange(1, 10) * DAY_MS)

    def _ticket(self, ts: int) -> None:
        rng = self.rng
        tid = f"T-{self.cid}-{self.n}"
        day = self._day_start(ts)
        ts = day + rng.randrange(8 * HOUR_MS, 18 * HOUR_MS)
        if ts >= self.alive_end:  # the dead open no tickets
            return
        sentiment = round(rng.uniform(-0.6, 0.7), 2)
        self.emit(
            "support",
            "ticket_opened",
            ts,
            {"ticket_id": tid, "priority": "normal", "sentiment": sentiment},
        )
        hours = round(rng.lognormvariate(math.log(8.0), 1.0), 1)
        done = ts + int(hours * HOUR_MS)
        self.emit("support", "ticket_resolved", done, {"ticket_id": tid, "resolution_hours": hours})
        if rng.random() < 0.4:
            csat = max(1, min(5, round(rng.gauss(4.2, 0.9))))
            self.emit(
                "support", "satisfaction_rated", done + 60_000, {"ticket_id": tid, "csat": csat}
            )

    def _campaigns(self, t0: int, death: int, p_open: float) -> None:
        """Campaign mail every `campaign_days` (calendar-aligned) from after acquisition."""
        rng, p = self.rng, self.p
        first_day = (t0 - self.start_ms) // DAY_MS + 1
        for day in range(first_day, self.days):
            if day % p.campaign_days != 1:
                continue
            ts = self.start_ms + day * DAY_MS + 9 * HOUR_MS + rng.randrange(HOUR_MS)
            alive = ts < death
            alias = rng.random() < 0.5
            camp = {"campaign_id": f"r{day // p.campaign_days}"}
            self.emit("email", "sent", ts, dict(camp), alias_only=alias)
            if rng.random() < 0.01:
                self.emit("email", "bounced", ts + 60_000, {"kind": "soft"}, alias_only=alias)
                continue
            self.emit("email", "delivered", ts + 60_000, dict(camp), alias_only=alias)
            if rng.random() < (p_open if alive else p.residual_open_rate):
                to = ts + rng.randrange(HOUR_MS, 30 * HOUR_MS)
                self.emit("email", "opened", to, dict(camp), alias_only=alias)
                if to + 20_000 < death and rng.random() < p.click_rate:
                    clicked = {**camp, "url": "/offer"}
                    self.emit("email", "clicked", to + 20_000, clicked, alias_only=alias)
            if alive and rng.random() < p.unsubscribe_rate:
                self.emit("email", "unsubscribed", ts + 2 * HOUR_MS, dict(camp), alias_only=alias)
                return


@dataclass(frozen=True, slots=True)
class JourneyParams:
    """Parameters of the "journeys" profile: marketing touches whose channels have a known
    effect on conversion.

    A customer's history is a run of episodes. An episode is up to `max_touches` touches
    `touch_gap_days` apart (1 to that many days), each through a channel drawn uniformly
    from `effects` (so that every channel is as frequent as the others): a web session with
    the channel and a campaign, or, for `email`, a click in a campaign email. A touch of
    channel c leads to an order a few hours later with probability `effects[c]`, its true
    effect, which ends the episode; an episode whose touches all fail ends without one.
    Either way the customer goes quiet for `quiet_days` (from its low to its high bound,
    longer than the default lookback of 90 days, so that the next touch closes a failed
    episode as a null path) and starts another while the history lasts.

    Web sessions complete funnel goals (`FUNNEL_GOALS`): `information_found` (probability
    0.6), then `signup` on the way to an order (or, without one, with probability 0.2), then
    `purchase` just before the order.
    """

    effects: tuple[tuple[str, float], ...] = (
        ("paid", 0.40), ("email", 0.24), ("social", 0.12), ("display", 0.05),
        ("affiliate", 0.01))
    """Each channel's probability that a touch through it converts (its true effect)."""
    max_touches: int = 5
    """Most touches of one episode."""
    touch_gap_days: int = 6
    """Touches of an episode are 1 to this many days apart."""
    quiet_days: tuple[int, int] = (100, 200)
    """Days of quiet after an episode, uniform between these bounds."""
    first_day_share: float = 0.3
    """A customer's first episode starts within this leading share of the history."""


JOURNEYS = JourneyParams()
"""Default parameters of the "journeys" profile."""

FUNNEL_GOALS = ("information_found", "signup", "purchase")
"""The goals the "journeys" profile's sessions complete, in funnel order."""


class _JourneyCustomer(_Customer):
    """One customer of the "journeys" profile (episodes of touches, some converting)."""

    def __init__(self, index: int, seed: int, days: int, start_ms: int,
                 params: JourneyParams) -> None:
        super().__init__(index, seed, days, start_ms)
        self.rng = random.Random(f"{seed}:journeys:{index}")
        self.p = params
        self.end_ms = start_ms + days * DAY_MS

    def run(self) -> Truth:
        rng, p = self.rng, self.p
        channels = [c for c, _e in p.effects]
        effect = dict(p.effects)
        day = rng.randrange(max(1, int(self.days * p.first_day_share)))
        signup = self.start_ms + day * DAY_MS
        while day < self.days:
            for _touch in range(p.max_touches):
                if day >= self.days:  # the history ends here
                    break
                ts = self.start_ms + day * DAY_MS + rng.randrange(8 * HOUR_MS, 20 * HOUR_MS)
                channel = rng.choice(channels)
                converts = rng.random() < effect[channel]
                self._touch(ts, channel, day, converts)
                if converts:
                    amount = round(rng.lognormvariate(math.log(50.0), 0.6), 2)
                    at = ts + rng.randrange(HOUR_MS, 3 * HOUR_MS)
                    self.emit("web", "goal_completed", at - 60_000,
                              {"goal": "purchase", "value": amount})
                    self.orders += 1
                    self.revenue += amount
                    self.emit("crm", "order_placed", at,
                              {"order_id": f"O-{self.cid}-{self.orders}", "amount": amount,
                               "currency": "EUR"})
                    break
                day += rng.randrange(1, p.touch_gap_days + 1)
            day += rng.randrange(p.quiet_days[0], p.quiet_days[1] + 1)
        return Truth(self.cid, "journeys", signup, None, None, self.orders, self.revenue)

    def _touch(self, ts: int, channel: str, day: int, converts: bool) -> None:
        """One touch: a click in a campaign email, or a web session with its goals."""
        rng = self.rng
        campaign = f"{channel}-{day // 30}"
        if channel == "email":
            self.emit("email", "clicked", ts, {"campaign_id": campaign, "url": "/offer"})
            return
        self.emit("web", "session_started", ts,
                  {"channel": channel, "campaign": campaign, "device": "mobile"})
        if rng.random() < 0.6:
            self.emit("web", "goal_completed", ts + 60_000, {"goal": "information_found"})
        if converts or rng.random() < 0.2:
            self.emit("web", "goal_completed", ts + 120_000, {"goal": "signup"})


def generate(
    customers: int,
    seed: int = 42,
    *,
    days: int = 730,
    start_ms: int = START_MS,
    redelivery_rate: float = 0.003,
    profile: str = "stories",
    retail: RetailParams = RETAIL,
    journeys: JourneyParams = JOURNEYS,
) -> tuple[list[dict[str, Any]], list[Truth]]:
    """Raw source events (sorted by event time) and ground truth for `customers` customers.

    `profile` is one of PROFILES: "stories" (default), "retail" (parameters `retail`) or
    "journeys" (parameters `journeys`).
    A small share of events is repeated verbatim (same event id) to exercise deduplication.

    >>> events, truth = generate(3, seed=1, days=60)
    >>> len(truth), truth[0].customer_id, events == generate(3, seed=1, days=60)[0]
    (3, 'C000000', True)
    >>> sorted({t.segment for t in generate(20, seed=1, days=60, profile="retail")[1]})
    ['retail_multichannel', 'retail_orders_only']
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    rng = random.Random(f"{seed}:redeliveries")
    # upgrades and survey answers (ids "...-x<n>") draw theirs apart, so that every other
    # event is redelivered as it was before they existed
    rng_extra = random.Random(f"{seed}:redeliveries:extra")
    out: list[tuple[int, str, int, dict[str, Any]]] = []
    truth = []
    for i in range(customers):
        c = (
            _Customer(i, seed, days, start_ms)
            if profile == "stories"
            else _RetailCustomer(i, seed, days, start_ms, retail)
            if profile == "retail"
            else _JourneyCustomer(i, seed, days, start_ms, journeys)
        )
        truth.append(c.run())
        for e in c.events:
            ts = _ms(e["occurred_at"])
            if ts >= start_ms + days * DAY_MS:
                continue
            out.append((ts, e["event_id"], 0, e))
            draw = rng_extra if "-x" in e["event_id"] else rng
            if draw.random() < redelivery_rate:
                out.append((ts, e["event_id"], 1, e))
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return [e for *_, e in out], truth


def without_extras(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stories profile's events as it made them before orders named categories and
    customers upgraded plans and answered NPS: those events dropped (ids "...-x<n>"), the
    categories taken off the orders. The rest is byte-identical."""
    out = []
    for e in events:
        if "-x" in e["event_id"]:
            continue
        payload = e.get("payload")
        if payload and "categories" in payload:
            e = {**e, "payload": {k: v for k, v in payload.items() if k != "categories"}}
        out.append(e)
    return out


def iter_lines(events: list[dict[str, Any]]) -> Iterator[bytes]:
    """Events as JSON lines (bytes, newline-terminated)."""
    import orjson

    for e in events:
        yield orjson.dumps(e) + b"\n"


def _ms(v: int | str) -> int:
    if isinstance(v, int):
        return v
    return int(datetime.fromisoformat(v).timestamp() * 1000)
