"""Touches and conversions, and the lookback window that ties them together.

A `Touch` is one marketing contact of a customer (a click from an email, an ad, a search
result, or a direct visit); a `Conversion` is the valuable act (an order) whose value the
attribution models split over the touches that preceded it. Times are epoch milliseconds.

`select_touches` picks a conversion's touches: those at or after `lookback_ms` before the
conversion and not after it (a touch at the conversion's very millisecond counts), in time
order; touches at the same instant keep the order they were given in.

>>> from schemas.units import DAY_MS
>>> buy = Conversion("o-1", "C1", at_ms=100 * DAY_MS, value=50.0, currency="EUR")
>>> seen = [Touch("email", "spring", 99 * DAY_MS, direct=False),
...         Touch("search", None, 5 * DAY_MS, direct=False),    # 95 days before: too old
...         Touch("direct", None, 100 * DAY_MS, direct=True),
...         Touch("social", None, 101 * DAY_MS, direct=False),  # after the order
...         Touch("display", None, 40 * DAY_MS, direct=False)]
>>> [t.channel for t in select_touches(seen, buy)]
['display', 'email', 'direct']
>>> [t.channel for t in select_touches(seen, buy, lookback_ms=30 * DAY_MS)]
['email', 'direct']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.units import DAY_MS

__all__ = ["LOOKBACK_MS", "Conversion", "Touch", "select_touches"]

LOOKBACK_MS = 90 * DAY_MS
"""Default lookback window: touches up to 90 days before a conversion count."""


@dataclass(frozen=True, slots=True)
class Touch:
    """One marketing contact: its channel, campaign (if any), time, and whether it was a
    direct visit (typed address, bookmark), which last click passes over."""

    channel: str
    campaign: str | None
    at_ms: int
    direct: bool = False


@dataclass(frozen=True, slots=True)
class Conversion:
    """One conversion of a customer: the value its touches share, in its currency."""

    conversion_id: str
    customer_id: str
    at_ms: int
    value: float
    currency: str


def select_touches(
    touches: Iterable[Touch], conversion: Conversion, *, lookback_ms: int = LOOKBACK_MS
) -> list[Touch]:
    """The touches within `lookback_ms` before `conversion` (both ends included), in time
    order (stable: simultaneous touches keep their given order)."""
    if lookback_ms < 0:
        raise ValueError(f"lookback_ms must be >= 0, not {lookback_ms}")
    since = conversion.at_ms - lookback_ms
    chosen = [t for t in touches if since <= t.at_ms <= conversion.at_ms]
    chosen.sort(key=lambda t: t.at_ms)
    return chosen
