"""Rule-based attribution: each model splits one conversion's value over its touches.

Every model takes a conversion's touches (as `select_touches` picks them) and the
conversion, and returns one credit per touch, in the order the touches were given. "First"
and "last" mean earliest and latest in time (simultaneous touches in their given order), so
an unsorted list gets the same credits, in its own order. No touches, no credits: `[]`.

- `last_click`: all to the last touch that is not direct; to the last touch when every
  touch is direct.
- `first_click`: all to the first touch, direct or not.
- `linear`: equal shares.
- `time_decay`: shares proportional to 2^(-age / half-life) (7 days by default), the age
  counted in whole calendar days (see `time_decay`).
- `position_based` (U-shaped): 40 % each to the first and the last touch, 20 % split evenly
  over the ones between; one touch gets everything, two get half each.

Credits are non-negative for a non-negative value and add up to the value: `split` gives
each touch value x share, except the touch with the largest share (the first of equals),
which takes the value minus the others' exact sum, so the rounding always lands on the
same touch and the credits' sum is the value up to one rounding. (Only for amounts near
the smallest floats, some 1e-300 and far below any currency's unit, can that remainder
round below zero.)

>>> from schemas.units import DAY_MS
>>> journey = [Touch("search", None, 1 * DAY_MS), Touch("email", "spring", 3 * DAY_MS),
...            Touch("direct", None, 7 * DAY_MS, direct=True)]
>>> order = Conversion("o-1", "C1", 7 * DAY_MS, value=90.0, currency="EUR")
>>> for name, credits in all_models(journey, order).items():
...     print(f"{name:15}", [round(c, 2) for c in credits])
last_click      [0.0, 90.0, 0.0]
first_click     [90.0, 0.0, 0.0]
linear          [30.0, 30.0, 30.0]
time_decay      [22.33, 27.22, 40.45]
position_based  [36.0, 18.0, 36.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from models.attribution.touches import Conversion, Touch
from schemas.units import DAY_MS

__all__ = [
    "HALF_LIFE_MS",
    "MODELS",
    "all_models",
    "all_shares",
    "first_click",
    "last_click",
    "linear",
    "position_based",
    "split",
    "time_decay",
]

HALF_LIFE_MS = 7 * DAY_MS
"""Default half-life of time decay: a touch a week older earns half the credit."""

MODELS = ("last_click", "first_click", "linear", "time_decay", "position_based")
"""The rule-based models, in the order `all_models` returns them."""


def split(value: float, weights: Sequence[float]) -> list[float]:
    """`value` split in proportion to non-negative `weights` (not all zero), adding up to it.

    The largest weight's share (the first of equals) is the value minus the others' exact
    sum, so the rounding is deterministic and the credits add up to `value`.

    >>> split(100.0, [1, 1, 1])
    [33.33333333333334, 33.33333333333333, 33.33333333333333]
    >>> split(10.0, [0, 3, 1]), split(5.0, [])
    ([0.0, 7.5, 2.5], [])
    """
    if not weights:
        return []
    if not all(w >= 0 and math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite and >= 0: {list(weights)}")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError("weights must not all be zero")
    return _scaled(value, weights, total)


def _scaled(value: float, weights: Sequence[float], total: float) -> list[float]:
    """`split` of weights already checked, whose sum is `total`."""
    credits = [value * (w / total) for w in weights]
    largest = max(range(len(weights)), key=weights.__getitem__)
    credits[largest] = 0.0
    credits[largest] = value - math.fsum(credits)
    return credits


def _time_order(touches: Sequence[Touch]) -> list[int]:
    """Indices of `touches` from the earliest to the latest (stable for equal times)."""
    return sorted(range(len(touches)), key=[t.at_ms for t in touches].__getitem__)


def _last_paid(touches: Sequence[Touch], order: Sequence[int]) -> int:
    """The index of the last touch that is not direct (the last touch if every one is), given
    the touches' time order."""
    return next((i for i in reversed(order) if not touches[i].direct), order[-1])


def _decay_weights(touches: Sequence[Touch], conversion: Conversion,
                   half_life_ms: int) -> list[float]:
    """Time decay's weights, 2^(-age / half_life) with the age in calendar days (see
    `time_decay`), relative to the youngest touch: no underflow to all-zero."""
    day = conversion.at_ms // DAY_MS
    ages = [max(0, day - t.at_ms // DAY_MS) for t in touches]
    youngest = min(ages)
    return [2.0 ** (-(age - youngest) * DAY_MS / half_life_ms) for age in ages]


def _end_weights(n: int, order: Sequence[int], end_share: float) -> list[float]:
    """Position-based weights of `n` > 2 touches: `end_share` to the first and the last in
    `order`, the rest evenly between."""
    weights = [(1.0 - 2.0 * end_share) / (n - 2)] * n
    weights[order[0]] = weights[order[-1]] = end_share
    return weights


def _all_to(touches: Sequence[Touch], conversion: Conversion, index: int) -> list[float]:
    return split(conversion.value, [1.0 if i == index else 0.0 for i in range(len(touches))])


def last_click(touches: Sequence[Touch], conversion: Conversion) -> list[float]:
    """All credit to the last non-direct touch (the last touch if every one is direct).

    >>> visits = [Touch("email", None, 1), Touch("ad", None, 2), Touch("direct", None, 3, True)]
    >>> last_click(visits, Conversion("o-1", "C1", 3, 10.0, "EUR"))
    [0.0, 10.0, 0.0]
    """
    if not touches:
        return []
    return _all_to(touches, conversion, _last_paid(touches, _time_order(touches)))


def first_click(touches: Sequence[Touch], conversion: Conversion) -> list[float]:
    """All credit to the first touch (a direct one too: it is where the journey began).

    >>> first_click([Touch("ad", None, 2), Touch("email", None, 1)],
    ...             Conversion("o-1", "C1", 3, 10.0, "EUR"))
    [0.0, 10.0]
    """
    if not touches:
        return []
    return _all_to(touches, conversion, _time_order(touches)[0])


def linear(touches: Sequence[Touch], conversion: Conversion) -> list[float]:
    """Equal credit for every touch.

    >>> linear([Touch("ad", None, 1), Touch("email", None, 2)],
    ...        Conversion("o-1", "C1", 3, 10.0, "EUR"))
    [5.0, 5.0]
    """
    return split(conversion.value, [1.0] * len(touches))


def time_decay(
    touches: Sequence[Touch], conversion: Conversion, *, half_life_ms: int = HALF_LIFE_MS
) -> list[float]:
    """Credit proportional to 2^(-age / half_life), normalised over the touches.

    The age is the number of calendar days (UTC) from the touch's day to the conversion's
    day: `conversion.at_ms // DAY_MS - touch.at_ms // DAY_MS`, not the exact time elapsed.
    That is the convention of Adobe's worked example: a visitor comes from paid search on
    September 15, from social on September 18, and on September 24 from an email and then a
    display ad before buying for $50. Adobe counts gaps of 9, 6, 0 and 0 days and gives
    13.8 %, 18.6 %, 33.8 % and 33.8 % ($6.92, $9.32, $16.88, $16.88). With exact elapsed
    time those figures cannot come out: the email, clicked hours before the display ad on
    the purchase day, would earn less than it, and a September 15 evening click would be
    less than 9 days old. A touch dated after the conversion counts as age 0.

    >>> day = lambda d: int(d * DAY_MS)   # days since some UTC midnight (September 15)
    >>> adobe = [Touch("paid_search", None, day(0.4)), Touch("social", None, day(3.7)),
    ...          Touch("email", None, day(9.3)), Touch("display", None, day(9.6))]
    >>> buy = Conversion("o-1", "C1", day(9.65), 50.0, "USD")
    >>> [round(c, 2) for c in time_decay(adobe, buy)]
    [6.92, 9.32, 16.88, 16.88]
    >>> [round(c, 2) for c in time_decay(adobe, buy, half_life_ms=3 * DAY_MS)]  # 1/8 1/4 1 1
    [2.63, 5.26, 21.05, 21.05]
    """
    if half_life_ms <= 0:
        raise ValueError(f"half_life_ms must be > 0, not {half_life_ms}")
    if not touches:
        return []
    return split(conversion.value, _decay_weights(touches, conversion, half_life_ms))


def position_based(
    touches: Sequence[Touch], conversion: Conversion, *, end_share: float = 0.4
) -> list[float]:
    """U-shaped: `end_share` each to the first and last touch, the rest evenly between.

    One touch takes everything and two take half each, whatever `end_share` is.

    >>> buy = Conversion("o-1", "C1", 9, 100.0, "EUR")
    >>> [round(c, 2) for c in position_based([Touch(c, None, t) for t, c in enumerate("abcde")],
    ...                                      buy)]
    [40.0, 6.67, 6.67, 6.67, 40.0]
    """
    if not 0.0 <= end_share <= 0.5:
        raise ValueError(f"end_share must be within [0, 0.5], not {end_share}")
    n = len(touches)
    if n <= 2:
        return split(conversion.value, [1.0] * n)
    return split(conversion.value, _end_weights(n, _time_order(touches), end_share))


def all_models(
    touches: Sequence[Touch],
    conversion: Conversion,
    *,
    half_life_ms: int = HALF_LIFE_MS,
    end_share: float = 0.4,
) -> dict[str, list[float]]:
    """Every rule-based model's credits for one conversion, by name (in `MODELS` order)."""
    return {
        "last_click": last_click(touches, conversion),
        "first_click": first_click(touches, conversion),
        "linear": linear(touches, conversion),
        "time_decay": time_decay(touches, conversion, half_life_ms=half_life_ms),
        "position_based": position_based(touches, conversion, end_share=end_share),
    }


def all_shares(
    touches: Sequence[Touch],
    conversion: Conversion,
    *,
    half_life_ms: int = HALF_LIFE_MS,
    end_share: float = 0.4,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every rule-based model's shares of one conversion (adding up to 1) and credits of its
    value, by name (in `MODELS` order), from one pass: what `all_models` gives for the
    conversion at a value of 1, and `split(value, shares)` of each, to the last bit.

    >>> from schemas.units import DAY_MS
    >>> journey = [Touch("search", None, 1 * DAY_MS), Touch("email", None, 3 * DAY_MS),
    ...            Touch("direct", None, 7 * DAY_MS, direct=True)]
    >>> order = Conversion("o-1", "C1", 7 * DAY_MS, 90.0, "EUR")
    >>> shares, credits = all_shares(journey, order)
    >>> [round(c, 2) for c in credits["time_decay"]], [round(s, 3) for s in shares["linear"]]
    ([22.33, 27.22, 40.45], [0.333, 0.333, 0.333])
    >>> all_shares([], order)[1]["linear"]
    []
    """
    n = len(touches)
    if not n:
        return {m: [] for m in MODELS}, {m: [] for m in MODELS}
    if half_life_ms <= 0:
        raise ValueError(f"half_life_ms must be > 0, not {half_life_ms}")
    if not 0.0 <= end_share <= 0.5:
        raise ValueError(f"end_share must be within [0, 0.5], not {end_share}")
    order = _time_order(touches)
    last = _last_paid(touches, order)
    ones = [1.0] * n
    value = conversion.value
    decay = _decay_weights(touches, conversion, half_life_ms)
    ends = ones if n <= 2 else _end_weights(n, order, end_share)
    shares = {
        "last_click": _one_hot(n, last, 1.0),
        "first_click": _one_hot(n, order[0], 1.0),
        "linear": _scaled(1.0, ones, math.fsum(ones)),
        "time_decay": _scaled(1.0, decay, math.fsum(decay)),
        "position_based": _scaled(1.0, ends, math.fsum(ends)),
    }
    credits = {
        "last_click": _one_hot(n, last, value),
        "first_click": _one_hot(n, order[0], value),
    }
    for m in ("linear", "time_decay", "position_based"):
        s = shares[m]
        credits[m] = _scaled(value, s, math.fsum(s))
    return shares, credits


def _one_hot(n: int, index: int, value: float) -> list[float]:
    """`split(value, [1 at index, 0 elsewhere])` (all of it to one touch)."""
    credits = [0.0] * n
    credits[index] = value
    return credits
