"""Deterministic synthetic event history (raw source events) with ground truth.

Customers follow one of four stories: one-time buyers who drift away after their first order,
steady regulars, churners who drift (fewer sessions and email opens, more support tickets,
late payments, lower CSAT and sentiment) for a couple of months before they cancel or go
silent, and growers who become VIPs. Purchases are heterogeneous Poisson processes with
heavy-tailed (log-normal) order values in several currencies. Some events carry only an alias:
email events with only `email`, web sessions with only `anonymous_id` until a `login` links it.
Everything derives from one seed, so the same arguments always give the same bytes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.config import DAY_MS

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

SEGMENTS = (("one_time", 0.40), ("regular", 0.35), ("churner", 0.17), ("vip_grower", 0.08))
_CURRENCIES = (("EUR", 0.8), ("USD", 0.15), ("GBP", 0.05))
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
        self.events: list[dict[str, Any]] = []
        self.orders = 0
        self.revenue = 0.0

    def emit(
        self,
        source: str,
        etype: str,
        ts: int,
        payload: dict[str, Any] | None = None,
        *,
        alias_only: bool = False,
        anonymous: bool = False,
    ) -> None:
        self.n += 1
        e: dict[str, Any] = {
            "event_id": f"{source[0]}-{self.cid}-{self.n}",
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

        base_sessions = rng.lognormvariate(math.log(0.12), 0.6)  # per day
        purchase_rate = rng.gammavariate(0.8, 1 / 0.8) / 45.0  # per day, heterogeneous
        spend_scale = rng.lognormvariate(math.log(40.0), 0.7)
        currency = _pick(rng, _CURRENCIES)
        # signup: anonymous browsing, login that links the cookie, profile, subscription
        t = d0 + rng.randrange(8 * 3600_000, 20 * 3600_000)
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
                ts = ds + 9 * 3600_000 + rng.randrange(3600_000)
                alias = rng.random() < 0.5
                self.emit("email", "sent", ts, {"campaign_id": f"w{day // 7}"}, alias_only=alias)
                if rng.random() < 0.01:
                    self.emit("email", "bounced", ts + 60_000, {"kind": "soft"}, alias_only=alias)
                else:
                    self.emit("email", "delivered", ts + 60_000, {}, alias_only=alias)
                    p_open = 0.03 if churned else 0.35 * (1 - 0.8 * drift) * min(growth, 1.5)
                    if rng.random() < p_open:
                        to = ts + rng.randrange(3600_000, 30 * 3600_000)
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
                ts = ds + rng.randrange(6 * 3600_000, 23 * 3600_000)
                self.emit("web", "session_started", ts, {"device": "mobile"})
                for k in range(rng.randrange(1, 5)):
                    self.emit("web", "page_view", ts + (k + 1) * 40_000, {"url": f"/p/{k}"})
                if rng.random() < 0.3:
                    self.emit("web", "search", ts + 10_000, {"query": "shoes", "results": 12})
            if rng.random() < purchase_rate * growth * (1.0 - 0.7 * drift):
                ts = ds + rng.randrange(8 * 3600_000, 22 * 3600_000)
                self._order(
                    ts, spend_scale * (growth if segment == "vip_grower" else 1.0), currency
                )
            if subscribed and (day - signup_day) % 30 == 0 and rng.random() < 0.02 + 0.5 * drift:
                self.emit("crm", "payment_late", ds + 3600_000, {"days_late": rng.randrange(1, 20)})
            if rng.random() < 1 / 150 + drift / 12:
                ticket += 1
                tid = f"T-{self.cid}-{ticket}"
                ts = ds + rng.randrange(8 * 3600_000, 18 * 3600_000)
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
                    self.emit("support", "escalated", ts + 3600_000, {"ticket_id": tid})
                hours = round(rng.uniform(1, 30) * (1 + 3 * drift), 1)
                self.emit(
                    "support",
                    "ticket_resolved",
                    ts + int(hours * 3600_000),
                    {"ticket_id": tid, "resolution_hours": hours},
                )
                if rng.random() < 0.5:
                    csat = max(1, min(5, round(rng.gauss(4.3 - 2.5 * drift, 0.7))))
                    self.emit(
                        "support",
                        "satisfaction_rated",
                        ts + int(hours * 3600_000) + 60_000,
                        {"ticket_id": tid, "csat": csat},
                    )
            if rng.random() < 0.002:
                self.emit("crm", "profile_updated", ds + 3600_000, {"fields": {"phone": "+1"}})
        return Truth(
            self.cid,
            segment,
            d0,
            None if churn_day is None else self.start_ms + churn_day * DAY_MS,
            churn_kind,
            self.orders,
            self.revenue,
        )

    def _order(self, ts: int, scale: float, currency: str) -> None:
        rng = self.rng
        amount = round(scale * rng.lognormvariate(0.0, 0.8), 2)
        oid = f"O-{self.cid}-{self.orders + 1}"
        self.emit(
            "crm", "order_placed", ts, {"order_id": oid, "amount": amount, "currency": currency}
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


def generate(
    customers: int,
    seed: int = 42,
    *,
    days: int = 730,
    start_ms: int = START_MS,
    redelivery_rate: float = 0.003,
) -> tuple[list[dict[str, Any]], list[Truth]]:
    """Raw source events (sorted by event time) and ground truth for `customers` customers.

    A small share of events is repeated verbatim (same event id) to exercise deduplication.

    >>> events, truth = generate(3, seed=1, days=60)
    >>> len(truth), truth[0].customer_id, events == generate(3, seed=1, days=60)[0]
    (3, 'C000000', True)
    """
    rng = random.Random(f"{seed}:redeliveries")
    out: list[tuple[int, str, int, dict[str, Any]]] = []
    truth = []
    for i in range(customers):
        c = _Customer(i, seed, days, start_ms)
        truth.append(c.run())
        for e in c.events:
            ts = _ms(e["occurred_at"])
            if ts >= start_ms + days * DAY_MS:
                continue
            out.append((ts, e["event_id"], 0, e))
            if rng.random() < redelivery_rate:
                out.append((ts, e["event_id"], 1, e))
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return [e for *_, e in out], truth


def iter_lines(events: list[dict[str, Any]]) -> Iterator[bytes]:
    """Events as JSON lines (bytes, newline-terminated)."""
    import orjson

    for e in events:
        yield orjson.dumps(e) + b"\n"


def _ms(v: int | str) -> int:
    if isinstance(v, int):
        return v
    return int(datetime.fromisoformat(v).timestamp() * 1000)
