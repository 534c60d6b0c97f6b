"""A customer's journey as the scoring engine sees it: touches kept, conversions attributed.

`Journey` holds a customer's recent touches (inside the lookback window of the newest one, at
most `AttributionConfig.max_touches`) and the ids of its last attributed conversions, so that
a conversion is attributed once however often it arrives. `touch_of` and `conversion_of`
read them from canonical customer events; `attribute` splits one conversion's value over its
touches with every rule-based model at once, and `Attribution.to_record` is the record of
the attributions topic.

>>> from models.config import ScoringConfig
>>> config = ScoringConfig()
>>> day = 86_400_000
>>> journey = Journey()
>>> for n, (channel, d) in enumerate([("paid", 1), ("email", 3), ("direct", 7)]):
...     event = {"event_id": f"w{n}", "event_type": "session_started", "source": "web",
...              "occurred_at": d * day, "customer_id": "C1", "payload": {"channel": channel}}
...     journey.add(touch_of(event, config.attribution), config.attribution)
>>> order = {"event_id": "c1", "event_type": "order_placed", "source": "crm",
...          "occurred_at": 7 * day, "customer_id": "C1",
...          "payload": {"order_id": "o-1", "amount": 90.0, "currency": "EUR"}}
>>> attribution = journey.attribute(conversion_of(order, config), order, config.attribution)
>>> [t.channel for t in attribution.touches]
['paid', 'email', 'direct']
>>> {model: [round(c, 2) for c in credits] for model, credits in attribution.credits.items()}
... # doctest: +NORMALIZE_WHITESPACE
{'last_click': [0.0, 90.0, 0.0], 'first_click': [90.0, 0.0, 0.0], 'linear': [30.0, 30.0, 30.0],
 'time_decay': [22.33, 27.22, 40.45], 'position_based': [36.0, 18.0, 36.0]}
>>> journey.attribute(conversion_of(order, config), order, config.attribution) is None  # again
True
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.attribution.markov import CONVERSION, NULL, OTHER, START, DataDrivenModel
from models.attribution.paths import DROP_OFF, MORE
from models.attribution.rules import MODELS, all_shares
from models.attribution.totals import UNATTRIBUTED
from models.attribution.touches import Conversion, Touch
from models.config import AttributionConfig, ScoringConfig

__all__ = [
    "ATTRIBUTED_IDS",
    "Attribution",
    "ClosedJourney",
    "DataDrivenCredit",
    "GoalReached",
    "Journey",
    "conversion_of",
    "touch_of",
]

ATTRIBUTED_IDS = 16
"""Conversion ids remembered per customer: a conversion arriving again (the same order id
under another event id) among the customer's last this many conversions is not attributed
twice."""


def _id_hash(conversion_id: str) -> int:
    """48-bit stable hash of a conversion id (the same on every worker)."""
    return int.from_bytes(hashlib.blake2b(conversion_id.encode(), digest_size=6).digest(),
                          "big")


RESERVED_CHANNELS = frozenset({START, CONVERSION, NULL, DROP_OFF, MORE, OTHER, UNATTRIBUTED})
"""Names of the journeys' own states, Sankey nodes and report rows (`(other)`, the channels
lumped together; `(none)`, the conversions without a touch): a channel sent under one of them
is kept in quotes (`"(null)"`), so that it stays a channel."""


def touch_of(event: Mapping[str, Any], config: AttributionConfig) -> Touch:
    """The touch a touch event is: its payload's `channel` (else its source's name), its
    `campaign` or `campaign_id` (else none), and whether the channel is a direct one.

    >>> touch = touch_of({"source": "web", "occurred_at": 5, "payload": {"channel": "(null)"}},
    ...                  AttributionConfig())
    >>> touch.channel
    '"(null)"'
    """
    payload = event.get("payload") or {}
    channel = payload.get("channel")
    if not isinstance(channel, str) or not channel:
        channel = str(event["source"])
    elif channel in RESERVED_CHANNELS:
        channel = f'"{channel}"'
    campaign = payload.get("campaign") or payload.get("campaign_id")
    if not isinstance(campaign, str) or not campaign:
        campaign = None
    return Touch(channel, campaign, int(event["occurred_at"]), channel in config.direct_channels)


def _money(amount: object, rate: float) -> float:
    """An amount in the base currency, rounded to cents (0.0 for anything but a number)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return 0.0
    value = round(float(amount) * rate, 2)
    return value if math.isfinite(value) and value > 0.0 else 0.0


def conversion_of(event: Mapping[str, Any], config: ScoringConfig) -> Conversion | None:
    """The conversion an event is under `config.attribution` (None: it is not one).

    An order's id is its `order_id` and its value the amount in the base currency; a goal's
    id is its event id and its value the goal's `value` (already in the base currency); a
    started subscription's id is its event id, and its value 0 (a subscription is worth
    its payments, which are orders).
    """
    attribution = config.attribution
    event_type = event["event_type"]
    payload = event.get("payload") or {}
    event_id = str(event["event_id"])
    if event_type == "order_placed" and attribution.converts(event_type):
        order_id = payload.get("order_id")
        conversion_id = order_id if isinstance(order_id, str) and order_id else event_id
        currency = payload.get("currency")
        value = _money(payload.get("amount"),
                       config.fx(currency if isinstance(currency, str) else None))
    elif event_type == "goal_completed" and attribution.converts(event_type,
                                                                 payload.get("goal")):
        conversion_id, value = event_id, _money(payload.get("value"), 1.0)
    elif event_type == "subscription_started" and attribution.converts(event_type):
        conversion_id, value = event_id, 0.0
    else:
        return None
    return Conversion(conversion_id, str(event["customer_id"]), int(event["occurred_at"]),
                      value, config.base_currency)


def _touch_dict(t: Touch) -> dict[str, Any]:
    return {"channel": t.channel, "campaign": t.campaign, "at": t.at_ms, "direct": t.direct}


@dataclass(frozen=True, slots=True)
class DataDrivenCredit:
    """A conversion's credit under the data-driven model, or why it has none.

    `version` and `paths` name the model the credit comes from (`DataDrivenModel.version`,
    the closed paths it rests on; None and 0 before any); `shares` and `credits` go with the
    attribution's touches (0 for the touches before the path), or are None with a `reason`.
    """

    version: str | None
    paths: int
    shares: tuple[float, ...] | None
    credits: tuple[float, ...] | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `data_driven` object of an attributions record."""
        return {"version": self.version, "paths": self.paths,
                "shares": None if self.shares is None else list(self.shares),
                "credits": None if self.credits is None else list(self.credits),
                "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Attribution:
    """One conversion's value split over its touches by every rule-based model.

    `shares[model]` are the touches' fractions of the conversion (adding up to 1) and
    `credits[model]` their parts of its value (adding up to the value), in the order of
    `touches` (time order). No touch in the lookback: both are empty lists.

    The conversion closes the customer's open path: `touches[path_from:]`, the touches
    after its previous conversion (an empty path when there are none). `data_driven` is its
    credit under the data-driven model the engine had when it attributed it.
    """

    conversion: Conversion
    conversion_type: str
    event_id: str
    touches: tuple[Touch, ...]
    shares: Mapping[str, Sequence[float]]
    credits: Mapping[str, Sequence[float]]
    path_from: int = 0
    data_driven: DataDrivenCredit | None = None

    @property
    def path(self) -> list[str]:
        """The channels of the path this conversion closes, in time order."""
        return [t.channel for t in self.touches[self.path_from:]]

    def to_record(self, emitted_at: int) -> dict[str, Any]:
        """The record of the attributions topic (schemas/attributions.json)."""
        c = self.conversion
        shares, credits = self.shares, self.credits
        return {
            "kind": "conversion",
            "customer_id": c.customer_id,
            "conversion_id": c.conversion_id,
            "conversion_type": self.conversion_type,
            "event_id": self.event_id,
            "occurred_at": c.at_ms,
            "value": c.value,
            "currency": c.currency,
            "models": list(MODELS),
            "touches": [
                {"channel": t.channel, "campaign": t.campaign, "at": t.at_ms, "direct": t.direct,
                 "credit": dict(zip(MODELS, credit, strict=True)),
                 "share": dict(zip(MODELS, share, strict=True))}
                for t, credit, share in zip(
                    self.touches, zip(*(credits[m] for m in MODELS), strict=True),
                    zip(*(shares[m] for m in MODELS), strict=True), strict=True)
            ],
            "path": self.path,
            "data_driven": (self.data_driven or _NO_MODEL).to_dict(),
            "emitted_at": emitted_at,
        }


_NO_MODEL = DataDrivenCredit(None, 0, None, None, "no data-driven model yet")


@dataclass(frozen=True, slots=True)
class ClosedJourney:
    """A null path: a customer's open touches that passed the lookback without a conversion,
    found when the customer's next touch or conversion (`event_id`, at `at_ms`) came more
    than the lookback after the last of them."""

    customer_id: str
    event_id: str
    at_ms: int
    touches: tuple[Touch, ...]

    @property
    def path(self) -> list[str]:
        """The path's channels, in time order."""
        return [t.channel for t in self.touches]

    def to_record(self, emitted_at: int) -> dict[str, Any]:
        """The `null_journey` record of the attributions topic."""
        return {"kind": "null_journey", "customer_id": self.customer_id,
                "event_id": self.event_id, "occurred_at": self.at_ms, "path": self.path,
                "touches": [_touch_dict(t) for t in self.touches], "emitted_at": emitted_at}


@dataclass(frozen=True, slots=True)
class GoalReached:
    """A completed goal of the configured funnel: whether it is the customer's first of this
    goal and its first of any funnel goal, and the funnel step it reached (None: it reached
    none: not the next goal of an attempt in its window), with the attempt's start and the
    time since the attempt's previous step (0 for its first)."""

    customer_id: str
    event_id: str
    goal: str
    at_ms: int
    first: bool
    first_any: bool
    step: int | None
    started_at: int | None
    elapsed_ms: int | None

    def to_record(self, emitted_at: int) -> dict[str, Any]:
        """The `goal` record of the attributions topic."""
        return {"kind": "goal", "customer_id": self.customer_id, "event_id": self.event_id,
                "goal": self.goal, "occurred_at": self.at_ms, "first": self.first,
                "first_any": self.first_any, "funnel_step": self.step,
                "funnel_started_at": self.started_at, "elapsed_ms": self.elapsed_ms,
                "emitted_at": emitted_at}


class Journey:
    """A customer's recent touches, in time order, its last attributed conversion ids, where
    its open path starts, and its progress through the funnel.

    Touches older than the lookback window before the newest touch are dropped as touches
    arrive, and only the newest `max_touches` are kept. Both depend on the touches alone,
    not on when the state is saved, so a replay and a stream keep the same ones.

    The open path is the touches after `closed` (the time of the last conversion, or of the
    last touch of the last null path). A conversion closes it as a converted path; a touch
    or conversion that comes more than the lookback after the open path's last touch first
    closes it as a null path (`close_stale`). Closing is lazy: the open path of a customer
    who never comes back is never closed.
    """

    __slots__ = ("_flat", "attributed", "closed", "goals")

    def __init__(self) -> None:
        self._flat: list[Any] = []
        """The touches as one flat list, [at_ms, channel, campaign, direct 0/1] after another:
        one object for the garbage collector to track, not one per touch (a state is kept
        live for every active customer, and the collector's passes cost what they track)."""
        self.attributed: list[int] = []
        """48-bit hashes of the last `ATTRIBUTED_IDS` conversion ids, oldest first."""
        self.closed: int | None = None
        """Touches at or before this time belong to closed paths (None: none closed yet)."""
        self.goals: list[Any] | None = None
        """Funnel progress, None until a funnel goal (no list for the garbage collector to
        track on every live state): [goals done (a bit per funnel goal), the attempt's
        start (None: no attempt), steps reached, the last step's time]."""

    @property
    def touches(self) -> list[Touch]:
        """The touches kept, in time order."""
        return list(self._made(0, len(self._flat) // 4))

    def _made(self, lo: int, hi: int) -> tuple[Touch, ...]:
        """The kept touches from the `lo`-th to before the `hi`-th, made into objects."""
        f = self._flat
        return tuple(Touch(f[i + 1], f[i + 2], f[i], bool(f[i + 3]))
                     for i in range(lo * 4, hi * 4, 4))

    def _within(self, since: int, until: int) -> tuple[Touch, ...]:
        """The touches kept from `since` to `until` (both included), in time order: what
        `select_touches` picks from `touches`, without making the others."""
        if since > until:
            raise ValueError(f"lookback must be >= 0, not {until - since} ms")
        times = self._flat[0::4]
        return self._made(bisect_left(times, since), bisect_right(times, until))

    def add(self, touch: Touch, config: AttributionConfig) -> None:
        """Keep one more touch (a late one goes where its time puts it, after its equals)."""
        flat = self._flat
        row = (touch.at_ms, touch.channel, touch.campaign, int(touch.direct))
        if flat and touch.at_ms < flat[-4]:
            at = bisect_right(flat[0::4], touch.at_ms) * 4
            flat[at:at] = row
        else:
            flat.extend(row)
        since = flat[-4] - config.lookback_ms
        count = len(flat) // 4
        old = 0
        while old < count and flat[old * 4] < since:
            old += 1
        old = max(old, count - config.max_touches)
        if old:
            del flat[:old * 4]

    def close_stale(self, event: Mapping[str, Any],
                    config: AttributionConfig) -> ClosedJourney | None:
        """The open path as a null path when `event` (the customer's next touch or
        conversion) comes more than the lookback after its last touch; else None."""
        flat = self._flat
        if not flat:
            return None
        last = flat[-4]
        closed = self.closed
        at = int(event["occurred_at"])
        if (closed is not None and last <= closed) or at - last <= config.lookback_ms:
            return None
        touches = [t for t in self.touches if closed is None or t.at_ms > closed]
        self.closed = last
        return ClosedJourney(str(event["customer_id"]), str(event["event_id"]), at,
                             tuple(touches))

    def attribute(self, conversion: Conversion | None, event: Mapping[str, Any],
                  config: AttributionConfig,
                  model: DataDrivenModel | None = None) -> Attribution | None:
        """The conversion's attribution over the touches kept, with its data-driven credit
        by `model` (None: no model yet); None when there is no conversion, or when this
        conversion id was attributed already."""
        if conversion is None:
            return None
        h = _id_hash(conversion.conversion_id)
        if h in self.attributed:
            return None
        self.attributed.append(h)
        if len(self.attributed) > ATTRIBUTED_IDS:
            del self.attributed[0]
        touches = self._within(conversion.at_ms - config.lookback_ms, conversion.at_ms)
        closed = self.closed
        path_from = 0 if closed is None else sum(1 for t in touches if t.at_ms <= closed)
        if closed is None or conversion.at_ms > closed:
            self.closed = conversion.at_ms
        shares, credits = all_shares(touches, conversion, half_life_ms=config.half_life_ms)
        credit = _data_driven(touches, path_from, conversion, model,
                              config.data_driven_min_paths)
        return Attribution(conversion, str(event["event_type"]), str(event["event_id"]),
                           touches, shares, credits, path_from, credit)

    def goal(self, event: Mapping[str, Any], config: AttributionConfig) -> GoalReached | None:
        """A `goal_completed` event's place in the funnel (None: not a funnel goal).

        An attempt starts with the funnel's first goal (when no attempt runs: none yet, the
        last one complete, or its window over) and reaches its next step when the next
        goal comes within the window of its start; other goals only count as completed.
        """
        funnel = config.funnel
        goal = (event.get("payload") or {}).get("goal")
        if goal not in funnel:
            return None
        at = int(event["occurred_at"])
        goals = self.goals
        if goals is None:
            goals = self.goals = [0, None, 0, None]
        done, started, reached, last = goals
        bit = 1 << funnel.index(goal)
        first, first_any = not done & bit, not done
        goals[0] = done | bit
        step = elapsed = None
        running = (started is not None and reached < len(funnel)
                   and at - started <= config.funnel_window_ms)
        if goal == funnel[0] and not running:
            goals[1:] = [at, 1, at]
            step, elapsed, started = 0, 0, at
        elif running and goal == funnel[reached]:
            goals[2:] = [reached + 1, at]
            step, elapsed = reached, at - last
        return GoalReached(str(event["customer_id"]), str(event["event_id"]), str(goal), at,
                           bool(first), first_any, step, started if step is not None else None,
                           elapsed)

    def __bool__(self) -> bool:
        return bool(self._flat or self.attributed or self.goals)

    def to_list(self) -> list[Any]:
        """JSON-friendly form: the flat touches [at, channel, campaign, direct 0/1, ...] and
        the id hashes (the journey's own lists, for encoding at once: do not modify them)."""
        return [self._flat, self.attributed]

    def progress(self) -> list[Any] | None:
        """Where the open path starts and the funnel progress, JSON-friendly (None: neither
        set yet). Kept apart from `to_list`, which code from before paths reads as it is."""
        if self.closed is None and not self.goals:
            return None
        return [self.closed, self.goals or []]

    @classmethod
    def from_list(cls, data: Sequence[Any], progress: Sequence[Any] | None = None) -> Journey:
        """Inverse of `to_list` and `progress` (touches as [[at, channel, campaign, direct],
        ...] read too)."""
        journey = cls()
        touches, attributed = data
        if touches and isinstance(touches[0], list):
            journey._flat = [value for touch in touches for value in touch]
        else:
            journey._flat = list(touches)
        journey.attributed = list(attributed)
        if progress is not None:
            journey.closed = progress[0]
            journey.goals = list(progress[1]) if progress[1] else None
        return journey


def _data_driven(touches: tuple[Touch, ...], path_from: int, conversion: Conversion,
                 model: DataDrivenModel | None, min_paths: int) -> DataDrivenCredit:
    """The data-driven credit of a conversion over the path `touches[path_from:]`."""
    if model is None:
        return _NO_MODEL
    version, paths = model.version, model.paths
    if paths < min_paths:
        return DataDrivenCredit(version, paths, None, None,
                                f"the model rests on fewer than {min_paths} closed paths")
    if not touches:
        return DataDrivenCredit(version, paths, None, None, "no touch in the lookback")
    path = touches[path_from:]
    if not path:
        return DataDrivenCredit(version, paths, None, None,
                                "no touch since the previous conversion")
    shares, credits = model.split(path, conversion.value)
    pad = [0.0] * path_from
    return DataDrivenCredit(version, paths, tuple(pad + shares), tuple(pad + credits))
