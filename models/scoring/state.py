"""Compact per-customer state, updated by applying canonical customer events.

Money is kept in integer cents of the base currency and windowed counters in per-UTC-day
buckets, so applying the same events in any order gives exactly the same state (integer sums
commute; floats would not), and a late event lands in the bucket of its own day.

Day buckets and their serialised rows are tuples of ints, replaced when an event changes
them: the cyclic garbage collector stops tracking such tuples after their first collection,
so a worker keeping thousands of live states in memory does not make every full collection
walk a year of buckets per customer.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right, insort
from collections.abc import Iterable, Iterator
from operator import add, sub
from typing import Any

import orjson

from models.attribution.journey import Journey
from models.config import ScoringConfig
from models.scoring.labels import PendingLabel
from schemas.units import DAY_MS

__all__ = [
    "ACTIVE_OLD_CAP",
    "CATEGORIES_CAP",
    "CSAT_COUNT",
    "CSAT_SUM",
    "DEFAULT_CONFIG",
    "EMAIL_ENGAGED",
    "ESCALATIONS",
    "INTERACTIONS",
    "LATE_PAYMENTS",
    "MAX_CENTS",
    "MAX_EVENT_CENTS",
    "NEGATIVE_SENTIMENT",
    "N_SLOTS",
    "ORDERS",
    "REVENUE_CENTS",
    "TICKETS",
    "CustomerState",
    "event_hash",
]

# Slots of a day bucket (a list of ints); trailing zeros are trimmed when serialised.
INTERACTIONS = 0
REVENUE_CENTS = 1
ORDERS = 2
TICKETS = 3
LATE_PAYMENTS = 4
EMAIL_ENGAGED = 5
CSAT_SUM = 6
CSAT_COUNT = 7
ESCALATIONS = 8
NEGATIVE_SENTIMENT = 9
N_SLOTS = 10
_EMPTY = (0,) * N_SLOTS
_TAIL_ZEROS = _EMPTY[1:]
_PADDING = tuple(_EMPTY[n - 1:] if n else () for n in range(N_SLOTS + 2))
"""Zeros that complete a serialised day row of length n (day + n - 1 slots) to a bucket."""

_FORMAT = 1
DEFAULT_CONFIG = ScoringConfig()


def event_hash(event_id: str) -> int:
    """48-bit stable hash of an event id: 6 bytes instead of the id, same answer everywhere.

    Python's `hash()` is salted per process, so it would differ between two workers.
    """
    return int.from_bytes(_blake2b(event_id.encode(), digest_size=6).digest(), "big")


_blake2b = hashlib.blake2b

ACTIVE_OLD_CAP = 64
"""Active days older than the day buckets remembered exactly (against double counting)."""
MAX_EVENT_CENTS = 10**16
"""Largest money amount of one event in cents (the contract's 10^12 at any sane rate)."""
MAX_CENTS = 2**62
"""Money sums saturate here: a snapshot holds 64-bit integers, and a window sum of many
saturated days must still fit."""


def _saturate(cents: int) -> int:
    """`cents` clamped to +-`MAX_CENTS`."""
    return cents if -MAX_CENTS <= cents <= MAX_CENTS else (MAX_CENTS if cents > 0 else -MAX_CENTS)
_NUMBER = (int, float)
CATEGORIES_CAP = 64
"""Product categories remembered per customer (beyond them, new ones still count as upsells)."""
SURVEYS = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
"""The surveys whose latest answer a state keeps, with their scales."""


class CustomerState:
    """Everything scorestream remembers about one customer, in a few hundred bytes.

    `apply` is idempotent for redeliveries (a bounded window of recent event-id hashes) and
    order-insensitive: counters are integer sums per event-time day, profile fields and the
    subscription are last-writer-wins by event time. Erasure is dropping the object.

    >>> s = CustomerState("C1")
    >>> e = {"event_id": "o-1", "event_type": "order_placed", "source": "crm",
    ...      "occurred_at": 1_767_225_600_000, "customer_id": "C1",
    ...      "payload": {"order_id": "o-1", "amount": 120.0, "currency": "EUR"}}
    >>> s.apply(e), s.apply(e)
    (True, False)
    >>> s.ltv_cents, s.n_orders, s.last_interaction_ms == e["occurred_at"]
    (12000, 1, True)
    >>> CustomerState.restore(s.snapshot()).snapshot() == s.snapshot()
    True
    """

    __slots__ = (
        "_anchor",
        "_completeness",
        "_dirty",
        "_entered",
        "_keys",
        "_left",
        "_rows",
        "_sums",
        "acquired",
        "active_days",
        "active_old",
        "alerts",
        "cancelled_ms",
        "card",
        "categories",
        "clock",
        "config",
        "customer_id",
        "days",
        "first_interaction_ms",
        "first_ms",
        "first_order_ms",
        "gross_cents",
        "journey",
        "last",
        "last_interaction_ms",
        "last_ms",
        "last_order_ms",
        "ltv_cents",
        "max_day",
        "merged",
        "n_events",
        "n_orders",
        "n_refunds",
        "order_days",
        "order_days_dropped",
        "pending",
        "plan",
        "profile",
        "release_gaps",
        "released",
        "reported",
        "seen",
        "subscription",
        "surveys",
        "unsubscribed",
    )

    def __init__(self, customer_id: str, config: ScoringConfig | None = None) -> None:
        self.customer_id = customer_id
        self.config = config or DEFAULT_CONFIG
        self.seen: list[int] = []
        # identity partition -> [offset, own offset] of the last alias-only event released
        # from it to this customer (see models.ingest.routing.IdentityPartition._position)
        self.released: dict[int, list[int]] = {}
        # identity partition -> positions below `released` not applied yet: releases that came
        # before the last one applied but sit later on the timeline (still held by the merge)
        self.release_gaps: dict[int, list[list[int]]] = {}
        # with the identity merge: [highest offset applied, [offsets below it still held]]
        self.merged: list[Any] | None = None
        self.n_events = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.clock: int | None = None
        """The partition's event-time watermark when the scoring stage last wrote this state
        (it rebuilds the partition's clock from them on assignment; None: never written by
        it, or written before it was kept)."""
        self.last_interaction_ms: int | None = None
        self.profile: dict[str, list[int]] = {}  # field -> [updated_at, known 0/1]
        self.days: dict[int, tuple[int, ...]] = {}  # utc day -> slot counters
        self.max_day = -(10**9)
        self.ltv_cents = 0  # orders minus refunds, base currency
        self.gross_cents = 0  # orders only (average order value)
        self.n_orders = 0
        self.n_refunds = 0
        self.order_days: set[int] = set()
        self.order_days_dropped = 0
        self.first_order_ms: int | None = None
        self.last_order_ms: int | None = None
        self.subscription: list[int] | None = None  # [updated_at, active 0/1]
        self.unsubscribed: list[int] | None = None  # [updated_at, 1]
        self.cancelled_ms: int | None = None
        # Product categories the customer has bought (orders that named them), at most
        # `CATEGORIES_CAP`; None until an order names one.
        self.categories: set[str] | None = None
        # The latest subscription start: [started_at, monthly fee in base cents].
        self.plan: list[int] | None = None
        # The latest answer to each survey (nps, csat, ces): survey -> [answered_at, score];
        # a support rating counts as a CSAT answer. None until the first answer.
        self.surveys: dict[str, list[int]] | None = None
        # How the customer first came: [started_at, channel] of the earliest web session
        # with a channel (the earliest wins, ties by channel name). None until then.
        self.acquired: list[Any] | None = None
        # Active days (a UTC day with an interaction): the customer's activity history in
        # the shape BG/NBD reads (one visit is many events). `active_days` counts them all:
        # the day buckets with interactions, and `active_old`, the older active days (pruned
        # from the buckets, or reached late), kept exactly up to `config.order_days_cap` of
        # them so that a late event on one is not counted twice.
        self.active_days = 0
        self.active_old: set[int] = set()
        self.first_interaction_ms: int | None = None
        self.pending: dict[str, PendingLabel] = {}
        # Recent marketing touches and attributed conversions (models.attribution.journey);
        # None until the first touch or conversion, so states without any stay as they were.
        self.journey: Journey | None = None
        self.last: list[Any] | None = None  # compact row of the last scorecard computed
        self.card: Any = None  # that scorecard as an object, when this object made it (derived)
        self.alerts: dict[str, Any] | None = None  # models.scoring.alerts.AlertMemory.to_dict()
        # The tracked values of the last score change emitted, while `last` was not one
        # (models.scoring.alerts.AlertRules.score_changes); None: `last` was.
        self.reported: list[Any] | None = None
        # Running window sums as of day `_anchor` (derived, never serialised; see window_sums)
        self._anchor: int | None = None
        self._sums: dict[int, list[int]] = {}
        self._keys: list[int] = []  # bucket days, ascending (valid while _anchor is set)
        self._entered = 0  # how many of _keys are <= _anchor (inside the sums)
        self._left: list[int] = []  # per window: how many of _keys are <= _anchor - w
        self._completeness: float | None = None  # derived, reset when the profile changes
        # Serialised day rows (see to_dict) and the days touched since they were made
        self._rows: dict[int, tuple[int, ...]] = {}
        self._dirty: set[int] = set()

    # -- applying events -------------------------------------------------------------------

    def first_release(self, event: dict[str, Any], before: list[list[int]] | None = None) -> bool:
        """False for an alias-only event the identity stage released again (after a crash or
        a handover), however long ago it was first applied; True for every other event.

        Release positions increase in the order the identity stage released the events, so
        call this in the order they arrived on the topic, or, with the identity merge, in
        the order it lets them out: `before` then names the positions of the same identity
        partition's releases of this customer that came before this one and are still held
        (they sit later on the timeline); they stay first releases once this one is applied.
        """
        position = event.get("identity_position")
        if position is None:
            return True
        partition = position[0]
        at = position[1:]
        last = self.released.get(partition)
        if last is not None and at <= last:
            gaps = self.release_gaps.get(partition)
            if gaps is None or at not in gaps:
                return False
            gaps.remove(at)
            if not gaps:
                del self.release_gaps[partition]
            return True
        self.released[partition] = at
        if before:
            gaps = self.release_gaps.setdefault(partition, [])
            for p in before:
                held = p[1:]
                if (last is None or held > last) and held not in gaps:
                    gaps.append(held)
        return True

    def merged_before(self, offset: int) -> bool:
        """With the identity merge: whether the event at `offset` of the customer's partition
        was applied already, read again after a handover (offsets are committed only up to
        the first event held): at or below the highest offset applied, and not one of the
        customer's events still held then."""
        merged = self.merged
        return merged is not None and offset <= merged[0] and offset not in merged[1]

    def merge_out(self, offset: int, held: Iterable[int], read_to: int) -> None:
        """The merge let out events up to `offset` to this state; `held`, the offsets of the
        customer's events it still holds, and `read_to`, the offset after the last record it
        read (held events recorded before, further on, stay recorded until read again)."""
        merged = self.merged
        top = offset if merged is None else max(merged[0], offset)
        gaps = {o for o in held if o < top}
        if merged is not None:
            gaps.update(o for o in merged[1] if o >= read_to)
        self.merged = [top, sorted(gaps)]

    def apply(self, event: dict[str, Any]) -> bool:
        """Fold one canonical customer event into the state; False for a redelivery
        (recognised by event id among the last `dedupe_window` events)."""
        # event_hash inlined: this is the hottest line of the state path
        h = int.from_bytes(_blake2b(event["event_id"].encode(), digest_size=6).digest(), "big")
        seen = self.seen
        if h in seen:
            return False
        seen.append(h)
        cfg = self.config
        if len(seen) > cfg.dedupe_window:
            del seen[0]
        ts: int = event["occurred_at"]
        etype: str = event["event_type"]
        source: str = event["source"]
        payload = event.get("payload") or {}
        self.n_events += 1
        first, last = self.first_ms, self.last_ms
        if first is None or ts < first:
            self.first_ms = ts
        if last is None or ts > last:
            self.last_ms = ts
        interaction = (source, etype) in cfg.interaction_types
        day = ts // DAY_MS
        stored = self.days.get(day)
        if stored is None:
            stored = self._bucket(day)
        bucket: list[int] | None = None
        anchor = self._anchor
        before = None
        if stored is not None:
            self._dirty.add(day)
            bucket = list(stored)
            if anchor is not None and day <= anchor:
                before = stored
        if interaction:
            last_int = self.last_interaction_ms
            if last_int is None or ts > last_int:
                self.last_interaction_ms = ts
            first_int = self.first_interaction_ms
            if first_int is None or ts < first_int:
                self.first_interaction_ms = ts
            if bucket is not None:
                if not bucket[INTERACTIONS]:
                    self.active_days += 1
                bucket[INTERACTIONS] += 1
            elif day not in self.active_old:  # a day older than every window
                self.active_days += 1
                self._active_old(day)
        order_cents = 0
        cancelled = False
        upsold = False
        if source == "web":
            if etype == "session_started":
                channel = payload.get("channel")
                if isinstance(channel, str):
                    acquired = self.acquired
                    if acquired is None or (ts, channel) < (acquired[0], acquired[1]):
                        self.acquired = [ts, channel]
            # page views and the like: only the interaction counter above
        elif source == "crm":
            if etype == "order_placed":
                order_cents = self._cents(payload)
                categories = payload.get("categories")
                if categories:
                    upsold = self._categories(categories)
                self._order(ts, day, order_cents, bucket)
            elif etype == "order_refunded":
                cents = self._cents(payload)
                self.ltv_cents = _saturate(self.ltv_cents - cents)
                self.n_refunds += 1
                if bucket is not None:
                    bucket[REVENUE_CENTS] = _saturate(bucket[REVENUE_CENTS] - cents)
            elif etype == "profile_updated":
                self._profile(ts, payload.get("fields") or {}, event.get("email"))
            elif etype == "payment_late":
                if bucket is not None:
                    bucket[LATE_PAYMENTS] += 1
            elif etype == "subscription_started":
                upsold = self._plan(ts, payload)
                self.subscription = _lww(self.subscription, ts, 1)
            elif etype == "subscription_cancelled":
                self.subscription = _lww(self.subscription, ts, 0)
                if self.cancelled_ms is None or ts > self.cancelled_ms:
                    self.cancelled_ms = ts
                cancelled = True
        elif source == "email":
            if etype in ("opened", "clicked"):
                if bucket is not None:
                    bucket[EMAIL_ENGAGED] += 1
            elif etype == "unsubscribed":
                self.unsubscribed = _lww(self.unsubscribed, ts, 1)
        elif source == "support":
            self._survey(etype, payload, ts)
        if source == "support" and bucket is not None:
            if etype == "ticket_opened":
                bucket[TICKETS] += 1
            elif etype == "escalated":
                bucket[ESCALATIONS] += 1
            elif etype == "satisfaction_rated" or (etype == "survey_answered"
                                                   and payload.get("survey") == "csat"):
                csat = payload.get("csat" if etype == "satisfaction_rated" else "score")
                if isinstance(csat, _NUMBER):
                    bucket[CSAT_SUM] += int(csat)
                    bucket[CSAT_COUNT] += 1
            sentiment = payload.get("sentiment")
            if isinstance(sentiment, _NUMBER) and sentiment <= -0.3:
                bucket[NEGATIVE_SENTIMENT] += 1
        if bucket is not None:
            after = self.days[day] = tuple(bucket)
            if before is not None and anchor is not None:
                self._late(day, anchor, before, after)
        if self.pending:
            for p in self.pending.values():
                p.observe(ts, interaction=interaction, order_cents=order_cents, cancelled=cancelled,
                          upsold=upsold)
        return True

    def _categories(self, categories: list[Any]) -> bool:
        """Remember an order's product categories; True if a customer who had bought before
        bought a category for the first time (an upsell). Judged in arrival order: an older
        order that arrives late counts as new to it."""
        known = self.categories
        if known is None:
            known = self.categories = set()
        new = False
        for c in categories:
            if isinstance(c, str) and c not in known:
                new = True
                if len(known) < CATEGORIES_CAP:
                    known.add(c)
        return new and self.n_orders > 0

    def _plan(self, ts: int, payload: dict[str, Any]) -> bool:
        """Remember a subscription start's monthly fee; True for an upgrade: a start, while a
        subscription is active, at a higher fee than the latest earlier start's."""
        mrr = payload.get("mrr")
        if not isinstance(mrr, _NUMBER):
            return False
        cents = self._cents({"amount": mrr, "currency": payload.get("currency")})
        plan = self.plan
        if plan is not None and ts < plan[0]:
            return False  # an older start, arrived late: neither the plan nor an upgrade
        upgrade = plan is not None and cents > plan[1] and self.subscription_active
        self.plan = [ts, cents]
        return upgrade

    @property
    def upsell_eligible(self) -> bool:
        """Whether an upsell can be observed for this customer: it bought in a named product
        category, or has an active subscription with a known fee."""
        return bool(self.categories) or (self.plan is not None and self.subscription_active)

    def _late(self, day: int, anchor: int, before: tuple[int, ...],
              after: tuple[int, ...]) -> None:
        """An event on a day the running sums already cover: add its delta where it belongs.

        Every event of the current day takes this path, so the vector adds run in C, and an
        interaction alone (most events) adds to one slot only.
        """
        if after[1:] == before[1:]:
            step = after[INTERACTIONS] - before[INTERACTIONS]
            for w, sums in self._sums.items():
                if day > anchor - w:
                    sums[INTERACTIONS] += step
            return
        delta = list(map(sub, after, before))
        for w, sums in self._sums.items():
            if day > anchor - w:
                sums[:] = map(add, sums, delta)

    def window_sums(self, now_day: int) -> dict[int, list[int]]:
        """Slot sums over the last w days ending on `now_day`, for w in 30, 90, 365, window.

        Kept incrementally: the bucket days are kept in order with one pointer for "entered"
        and one per window for "left", so moving the anchor forward adds exactly the buckets
        that entered and removes exactly those that left each window (no pass over empty
        calendar days), and late events add their delta. Scoring a customer then costs a
        few list operations instead of a pass over a year of daily buckets. Going back in
        time or pruning rebuilds from the buckets.
        """
        anchor = self._anchor
        if anchor == now_day:
            return self._sums
        days = self.days
        if anchor is None or now_day < anchor:
            # Rebuild (a restored state, or time went back). The windows nest, so each
            # bucket is added once, into the band between its window and the next smaller
            # one, by column sums in C; the bands then accumulate outwards.
            windows = _windows(self.config.window_days)
            keys = self._keys = sorted(days)
            entered = bisect_right(keys, now_day)
            left = [bisect_right(keys, now_day - w, 0, entered) for w in windows]
            sums = {}
            acc = list(_EMPTY)
            inner = entered
            for w, start in zip(windows, left, strict=True):
                if start < inner:
                    band = [days[d] for d in keys[start:inner]]
                    acc = list(map(add, acc, map(sum, zip(*band, strict=True))))
                    inner = start
                sums[w] = acc[:]
            self._sums = sums
            self._entered = entered
            self._left = left
        else:
            sums = self._sums
            keys = self._keys
            n = len(keys)
            i = self._entered
            # Most buckets are empty (messages we sent) or hold interactions only: those two
            # shapes skip the 10-slot vector add (b.count(0) is one C call).
            while i < n and keys[i] <= now_day:
                b = days[keys[i]]
                zeros = b.count(0)
                if zeros == N_SLOTS - 1 and b[0]:
                    for acc in sums.values():
                        acc[0] += b[0]
                elif zeros != N_SLOTS:
                    for acc in sums.values():
                        acc[:] = map(add, acc, b)
                i += 1
            self._entered = i
            left = self._left
            for k, (w, acc) in enumerate(sums.items()):
                j = left[k]
                cut = now_day - w
                while j < i and keys[j] <= cut:
                    b = days[keys[j]]
                    zeros = b.count(0)
                    if zeros == N_SLOTS - 1 and b[0]:
                        acc[0] -= b[0]
                    elif zeros != N_SLOTS:
                        acc[:] = map(sub, acc, b)
                    j += 1
                left[k] = j
        self._anchor = now_day
        return self._sums

    def _bucket(self, day: int) -> tuple[int, ...] | None:
        """The day's (empty) counters, or None when the day is already outside every window."""
        b = self.days.get(day)
        if b is not None:
            return b
        if day > self.max_day:
            self.max_day = day
        elif day <= self.max_day - max(self.config.window_days, 365):
            return None
        b = _EMPTY
        self.days[day] = b
        anchor = self._anchor
        if anchor is not None:
            keys = self._keys
            if not keys or day > keys[-1]:
                keys.append(day)
            else:
                insort(keys, day)
            if day <= anchor:  # a late day: already "entered", maybe already "left" too
                self._entered += 1
                left = self._left
                for k, w in enumerate(self._sums):
                    if day <= anchor - w:
                        left[k] += 1
        if len(self.days) > max(self.config.window_days, 365) + 32:
            self.prune()
        return b

    def _cents(self, payload: dict[str, Any]) -> int:
        """The amount in integer cents of the base currency, within +-`MAX_EVENT_CENTS`.

        The contract bounds amounts (schemas: 10^12), so the clamp only ever bites for an
        event that bypassed the decoder; it keeps every sum inside 64 bits regardless.
        """
        cents = float(payload.get("amount") or 0.0) * self.config.fx(payload.get("currency")) * 100
        if not -MAX_EVENT_CENTS <= cents <= MAX_EVENT_CENTS:  # also NaN
            cents = MAX_EVENT_CENTS if cents > 0 else (-MAX_EVENT_CENTS if cents < 0 else 0.0)
        return round(cents)

    def _order(self, ts: int, day: int, cents: int, bucket: list[int] | None) -> None:
        self.ltv_cents = _saturate(self.ltv_cents + cents)
        self.gross_cents = _saturate(self.gross_cents + cents)
        self.n_orders += 1
        if bucket is not None:
            bucket[REVENUE_CENTS] = _saturate(bucket[REVENUE_CENTS] + cents)
            bucket[ORDERS] += 1
        if self.first_order_ms is None or ts < self.first_order_ms:
            self.first_order_ms = ts
        if self.last_order_ms is None or ts > self.last_order_ms:
            self.last_order_ms = ts
        days = self.order_days
        if day not in days:
            days.add(day)
            if len(days) > self.config.order_days_cap:
                # Forget the oldest remembered day but keep counting it, so frequency stays
                # right; only a redelivered order on a forgotten day could count twice.
                days.remove(min(days))
                self.order_days_dropped += 1

    def _profile(self, ts: int, fields: dict[str, Any], envelope_email: Any) -> None:
        self._completeness = None
        weights = self.config.profile_weights
        profile = self.profile
        for name, value in fields.items():
            if name in weights:
                profile[name] = _lww(profile.get(name), ts, 0 if value in (None, "") else 1)
        if envelope_email and "email" not in fields and "email" in weights:
            profile["email"] = _lww(profile.get("email"), ts, 1)

    def prune(self) -> None:
        """Drop day buckets that no window can reach any more (older than the window).

        When the running sums are anchored at or after the newest bucket, every prunable day
        has already left every window, so the sums stay valid and only the pointers shift;
        otherwise the sums are rebuilt on the next `window_sums`.
        """
        cutoff = self.max_day - max(self.config.window_days, 365)
        days = self.days
        if not days:
            return
        # While the sums are anchored, `_keys` holds the bucket days in order.
        keys = self._keys
        if (keys[0] if self._anchor is not None else min(days)) > cutoff:
            return
        for d, b in days.items():
            if d <= cutoff and b[INTERACTIONS]:
                self._active_old(d)  # counted already
        anchor = self._anchor
        if anchor is not None and anchor >= self.max_day:
            k = bisect_right(keys, cutoff)
            rows = self._rows
            for d in keys[:k]:
                del days[d]
                rows.pop(d, None)
            del keys[:k]
            self._entered -= k
            self._left = [j - k for j in self._left]
            return
        self.days = {d: b for d, b in days.items() if d > cutoff}
        self._anchor = None  # running sums may still include dropped days
        self._keys = []

    def _active_old(self, day: int) -> None:
        old = self.active_old
        old.add(day)
        if len(old) > ACTIVE_OLD_CAP:
            # Forget the oldest day (it stays counted): only a late event on it could count
            # it twice, and one that late is past any sane allowed lateness.
            old.remove(min(old))

    # -- derived facts -----------------------------------------------------------------------

    @property
    def purchase_days(self) -> int:
        """Distinct UTC days with at least one order (BG/NBD counts transactions per day)."""
        return len(self.order_days) + self.order_days_dropped

    @property
    def orders_only(self) -> bool:
        """Whether every day the customer was active was a purchase day (none: True)."""
        return self.active_days <= self.purchase_days

    @property
    def subscription_active(self) -> bool:
        """True if the last subscription event (by event time) was a start."""
        return bool(self.subscription and self.subscription[1])

    def completeness(self) -> float:
        """Data completeness 0-100: known profile weight / total weight, one decimal.

        Cached until the next profile event: scoring asks on every batch, profiles rarely change.
        """
        c = self._completeness
        if c is None:
            cfg = self.config
            weights, total = cfg.profile_weights, cfg.profile_total
            known = sum(weights[k] for k, (_, v) in self.profile.items() if v and k in weights)
            c = self._completeness = round(100.0 * known / total, 1) if total and known else 0.0
        return c

    def known_fields(self) -> list[str]:
        """Profile fields currently known (set and not cleared)."""
        return sorted(name for name, (_, known) in self.profile.items() if known)

    def due_times(self) -> Iterator[int]:
        """Due times of pending labels (to rebuild a `DueIndex` after recovery)."""
        for p in self.pending.values():
            yield p.resolved_at()

    def next_due(self) -> int | None:
        """Earliest time a pending label of this customer becomes due, if any."""
        due = None
        for p in self.pending.values():
            at = p.resolved_at()
            if due is None or at < due:
                due = at
        return due

    def _survey(self, etype: str, payload: dict[str, Any], ts: int) -> None:
        """Keep the latest answer per survey (last writer wins by event time)."""
        if etype == "survey_answered":
            survey, score = payload.get("survey"), payload.get("score")
        elif etype == "satisfaction_rated":
            survey, score = "csat", payload.get("csat")
        else:
            return
        if not isinstance(survey, str) or survey not in SURVEYS:
            return  # the contract guarantees a known survey and a score on its scale;
        low, high = SURVEYS[survey]  # a hand-made event may not
        if not isinstance(score, int) or isinstance(score, bool) or not low <= score <= high:
            return
        surveys = self.surveys
        if surveys is None:
            surveys = self.surveys = {}
        surveys[survey] = _lww(surveys.get(survey), ts, score)

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form with short keys; day buckets lose their trailing zeros.

        The rows of untouched days are reused from the previous call: a live customer's
        snapshot then costs a few rows, not a year of them.
        """
        buckets, rows = self.days, self._rows
        for d in self._dirty:
            b = buckets.get(d)
            if b is not None:
                rows[d] = _row(d, b)
        self._dirty.clear()
        if len(rows) != len(buckets):  # pruned days linger, or rows were never made
            rows = self._rows = {d: rows.get(d) or _row(d, b) for d, b in buckets.items()}
        days = [rows[d] for d in (self._keys if self._anchor is not None else sorted(buckets))]
        out: dict[str, Any] = {
            "v": _FORMAT,
            "c": self.customer_id,
            "s": self.seen,
            "n": self.n_events,
            "f": self.first_ms,
            "l": self.last_ms,
            "li": self.last_interaction_ms,
            "d": days,
            "md": self.max_day,
        }
        if self.profile:
            out["p"] = self.profile
        if self.n_orders or self.n_refunds:
            out["o"] = [
                self.ltv_cents,
                self.gross_cents,
                self.n_orders,
                self.n_refunds,
                self.first_order_ms,
                self.last_order_ms,
                self.order_days_dropped,
                sorted(self.order_days),
            ]
        if self.subscription is not None:
            out["sub"] = self.subscription
        if self.unsubscribed is not None:
            out["un"] = self.unsubscribed
        if self.cancelled_ms is not None:
            out["cx"] = self.cancelled_ms
        if self.surveys:
            out["sv"] = self.surveys
        if self.acquired is not None:
            out["ac"] = self.acquired
        if self.categories:
            out["ct"] = sorted(self.categories)
        if self.plan is not None:
            out["pm"] = self.plan
        if self.first_interaction_ms is not None:
            out["ad"] = [self.first_interaction_ms, self.active_days, sorted(self.active_old)]
        if self.pending:
            out["pl"] = [self.pending[k].to_list() for k in sorted(self.pending)]
        if self.last is not None:
            out["last"] = self.last
        if self.alerts:
            out["al"] = self.alerts
        if self.reported is not None:
            out["rp"] = self.reported
        if self.released:
            out["ip"] = {str(p): at for p, at in self.released.items()}
        if self.release_gaps:
            out["ig"] = {str(p): gaps for p, gaps in self.release_gaps.items()}
        if self.merged is not None:
            out["mg"] = self.merged
        if self.clock is not None:
            out["pw"] = self.clock
        if self.journey:
            out["j"] = self.journey.to_list()
            progress = self.journey.progress()
            if progress is not None:  # a key of its own: code from before ignores it
                out["jp"] = progress
        return out

    def snapshot(self) -> bytes:
        """Serialise to compact JSON bytes (the changelog value); prunes unreachable days."""
        self.prune()
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: ScoringConfig | None = None) -> CustomerState:
        """Inverse of `to_dict`."""
        s = cls(d["c"], config)
        s.seen = list(d["s"])
        s.n_events = d["n"]
        s.first_ms = d["f"]
        s.last_ms = d["l"]
        s.last_interaction_ms = d["li"]
        s.max_day = d["md"]
        # Comprehensions, not a loop: a year of daily rows is most of a restore's work.
        rows = s._rows = {row[0]: tuple(row) for row in d["d"]}
        s.days = {day: row[1:] + _PADDING[len(row)] for day, row in rows.items()}
        if "p" in d:
            s.profile = {k: list(v) for k, v in d["p"].items()}
        if "o" in d:
            o = d["o"]
            s.ltv_cents, s.gross_cents, s.n_orders, s.n_refunds = o[0], o[1], o[2], o[3]
            s.first_order_ms, s.last_order_ms, s.order_days_dropped = o[4], o[5], o[6]
            s.order_days = set(o[7])
        s.subscription = d.get("sub")
        s.unsubscribed = d.get("un")
        s.cancelled_ms = d.get("cx")
        if "sv" in d:  # states written before survey answers were kept have none
            s.surveys = {k: list(v) for k, v in d["sv"].items()}
        acquired = d.get("ac")  # states written before acquisition channels were kept: None
        s.acquired = list(acquired) if acquired is not None else None
        if "ct" in d:
            s.categories = set(d["ct"])
        plan = d.get("pm")
        s.plan = list(plan) if plan is not None else None
        if "ad" in d:
            s.first_interaction_ms, s.active_days, old = d["ad"]
            s.active_old = set(old)
        elif s.last_interaction_ms is not None:  # written before active days were kept
            # The buckets cover the last year; order days (interactions too) go further back.
            active = {day for day, b in s.days.items() if b[INTERACTIONS]}
            s.active_old = {day for day in s.order_days if day not in s.days}
            s.active_days = max(len(active | s.order_days), s.purchase_days)
            known = [ms for ms in (s.first_order_ms,
                                   min(active) * DAY_MS if active else None) if ms is not None]
            s.first_interaction_ms = min(known) if known else s.first_ms
        for row in d.get("pl", []):
            p = PendingLabel.from_list(row)
            s.pending[p.model] = p
        last = d.get("last")
        if last is not None and len(last) < _SEGMENTED_ROW:  # written by an earlier version
            # (imported here: the scorecard's module imports this one through its features)
            from models.scoring.scorecard import cohort_of, upgraded_row

            acquired = s.acquired
            last = upgraded_row(last, s.n_orders, cohort_of(s.first_order_ms),
                                acquired[1] if acquired is not None else None)
        s.last = last
        s.alerts = d.get("al")
        s.reported = d.get("rp")
        s.clock = d.get("pw")
        if "ip" in d:
            s.released = {int(p): list(at) for p, at in d["ip"].items()}
        if "ig" in d:
            s.release_gaps = {int(p): [list(at) for at in gaps] for p, gaps in d["ig"].items()}
        if "mg" in d:
            s.merged = list(d["mg"])
        if "j" in d:  # states written before attribution have none
            s.journey = Journey.from_list(d["j"], d.get("jp"))
        return s

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> CustomerState:
        """Rebuild a state from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b), config)

    def __repr__(self) -> str:
        return f"CustomerState({self.customer_id!r}, events={self.n_events})"


_SEGMENTED_ROW = 21
"""Items of the first scorecard rows with orders, cohort and acquisition channel (shorter ones
are upgraded; longer ones restore with the defaults of what they lack)."""

_WINDOWS: dict[int, list[int]] = {}


def _windows(window_days: int) -> list[int]:
    """The running-sum windows in days, ascending: 30, 90, 180, 365 and the configured one
    (180 less 90: the quarter before the last, for revenue retention)."""
    windows = _WINDOWS.get(window_days)
    if windows is None:
        windows = _WINDOWS[window_days] = sorted({30, 90, 180, 365, window_days})
    return windows


def _row(day: int, bucket: tuple[int, ...]) -> tuple[int, ...]:
    """A day bucket as serialised: the day, then its slots without trailing zeros."""
    if bucket[1:] == _TAIL_ZEROS:  # most days: interactions only, or nothing at all
        return (day, bucket[0]) if bucket[0] else (day,)
    n = N_SLOTS
    while n and not bucket[n - 1]:
        n -= 1
    return (day, *bucket[:n])


def _lww(current: list[int] | None, ts: int, value: int) -> list[int]:
    """Last-writer-wins register by event time; a tie goes to the larger value (order-free)."""
    if current is None or ts > current[0] or (ts == current[0] and value > current[1]):
        return [ts, value]
    return current
