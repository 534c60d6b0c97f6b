"""Value tiers (VIP / Premium / Standard / Basic) from percentiles of predicted 12-month value.

Method: a fixed-bucket histogram on a log scale with per-customer replace. Bucket 0 holds
values <= 0; bucket i >= 1 covers [lo * r**(i-1), lo * r**i) with lo = 0.01 and r = 1.01, up
to 1e9 (about 2,500 buckets, 20 KB of counts). When a customer's predicted value changes the
caller removes the old value and adds the new one, so the histogram always describes the
current population exactly up to bucket resolution, and it never needs a rescan. Histograms of
different partitions merge by adding counts (each partition tracks its own customers; the
learner merges them and publishes the thresholds in the model bundle).

Accuracy: a threshold is interpolated inside the bucket where the cumulative count crosses the
cut, so the share of customers below it is off from the cut by at most the share of customers
in that one bucket. Buckets are 1 % wide in value, so for any population whose values are not
piled into a 1 %-wide band this is far below 1 percentile point; values exactly equal (e.g.
many customers at 0) are ties for exact percentiles too, and the tests accept any threshold
consistent with the tie.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import orjson

__all__ = [
    "BASIC",
    "PREMIUM",
    "STANDARD",
    "TIERS",
    "TIER_MARGIN",
    "VIP",
    "TierThresholds",
    "ValueHistogram",
]

BASIC = "Basic"
STANDARD = "Standard"
PREMIUM = "Premium"
VIP = "VIP"
TIERS = (BASIC, STANDARD, PREMIUM, VIP)
"""Every tier, lowest first."""

_LO = 0.01
_RATIO = 1.01
_LOG_R = math.log(_RATIO)
_N = 2 + math.ceil(math.log(1e9 / _LO) / _LOG_R)


def _index(value: float) -> int:
    if not value > 0:  # also catches NaN
        return 0
    if value < _LO:
        return 1
    i = 1 + int(math.log(value / _LO) / _LOG_R)
    return i if i < _N - 1 else _N - 1


def _lower(i: int) -> float:
    return 0.0 if i <= 1 else _LO * _RATIO ** (i - 1)


def _upper(i: int) -> float:
    return 0.0 if i == 0 else _LO * _RATIO**i


TIER_MARGIN = 1 / 3
"""Hysteresis of tier moves: a customer enters a higher tier once its value clears the cut by
this share, and leaves a tier once its value falls this share below the tier's cut."""
_RANK = {tier: rank for rank, tier in enumerate(TIERS)}


@dataclass(frozen=True, slots=True)
class TierThresholds:
    """Cut values: Basic below `standard_from`, Premium from `premium_from`, VIP from `vip_from`.

    A customer with value <= 0 is Basic and never VIP or Premium, whatever the thresholds;
    with no thresholds yet (empty population) everyone is Standard. `at_risk_from` is the
    value at risk (churn probability x predicted value) above which churn alerts may fire,
    set where the alert budget's share of customers lies above it (None: no cut yet).

    >>> t = TierThresholds(standard_from=10.0, premium_from=100.0, vip_from=500.0, version="t1")
    >>> [t.tier(v) for v in (0.0, 5.0, 10.0, 150.0, 900.0)]
    ['Basic', 'Basic', 'Standard', 'Premium', 'VIP']
    >>> t.tier(600.0, previous="Premium"), t.tier(700.0, previous="Premium")  # a third up
    ('Premium', 'VIP')
    >>> t.tier(350.0, previous="VIP"), t.tier(320.0, previous="VIP")  # ... or down
    ('VIP', 'Premium')
    """

    standard_from: float | None = None
    premium_from: float | None = None
    vip_from: float | None = None
    version: str = "tiers-00000"
    at_risk_from: float | None = None

    def with_risk_cut(self, risk: ValueHistogram, share: float) -> TierThresholds:
        """These thresholds with `at_risk_from` where a `share` of the customers' values at
        risk (`risk`) lies above it (unchanged while `risk` is empty)."""
        if not risk.total:
            return self
        return dataclasses.replace(self, at_risk_from=risk.quantile(1.0 - share))

    def tier(self, value: float, previous: str | None = None) -> str:
        """The tier of a predicted 12-month value; with the customer's `previous` tier, moves
        need the `TIER_MARGIN` beyond the cut (so a value wobbling at a cut, or thresholds
        republished a little higher or lower, do not flip the tier)."""
        raw = self._tier(value)
        if previous is None or raw == previous or previous not in _RANK or not value > 0:
            return raw
        if _RANK[raw] > _RANK[previous]:
            up = self._tier(value / (1.0 + TIER_MARGIN))
            return up if _RANK[up] > _RANK[previous] else previous
        down = self._tier(value / (1.0 - TIER_MARGIN))
        return down if _RANK[down] < _RANK[previous] else previous

    def _tier(self, value: float) -> str:
        if self.vip_from is None or self.premium_from is None or self.standard_from is None:
            return STANDARD
        if not value > 0:
            return BASIC
        if value >= self.vip_from:
            return VIP
        if value >= self.premium_from:
            return PREMIUM
        if value >= self.standard_from:
            return STANDARD
        return BASIC

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "standard_from": self.standard_from,
            "premium_from": self.premium_from,
            "vip_from": self.vip_from,
            "version": self.version,
            "at_risk_from": self.at_risk_from,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TierThresholds:
        """Inverse of `to_dict`."""
        return cls(**d)  # type: ignore[arg-type]


class ValueHistogram:
    """Mergeable log-bucket histogram of predicted values with per-customer replace.

    >>> h = ValueHistogram()
    >>> for v in range(1, 101):
    ...     h.add(float(v))
    >>> h.replace(100.0, 1000.0)
    >>> t = h.thresholds()
    >>> round(t.standard_from), round(t.premium_from), round(t.vip_from)
    (10, 70, 91)
    >>> t.tier(1000.0), t.tier(50.0), t.tier(1.0)
    ('VIP', 'Standard', 'Basic')
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * _N
        self.total = 0

    def add(self, value: float) -> None:
        """Count one customer's value."""
        self.counts[_index(value)] += 1
        self.total += 1

    def remove(self, value: float) -> None:
        """Forget one customer's value (the exact value previously added)."""
        i = _index(value)
        if self.counts[i] > 0:
            self.counts[i] -= 1
            self.total -= 1

    def replace(self, old: float | None, new: float | None) -> None:
        """A customer's value changed from `old` to `new` (None = absent before / erased)."""
        if old is not None and new is not None and (old == new or _index(old) == _index(new)):
            return
        if old is not None:
            self.remove(old)
        if new is not None:
            self.add(new)

    def merge(self, other: ValueHistogram) -> None:
        """Add another partition's counts into this one."""
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.total += other.total

    def quantile(self, q: float) -> float:
        """Value below which a share `q` of customers lies (log-interpolated in its bucket)."""
        if self.total == 0:
            return 0.0
        target = q * self.total
        cum = 0
        for i, c in enumerate(self.counts):
            if c and cum + c >= target:
                if i == 0:
                    return 0.0
                frac = (target - cum) / c
                lo, hi = max(_lower(i), _LO / _RATIO), _upper(i)
                return lo * (hi / lo) ** frac
            cum += c
        return _upper(_N - 1)

    def thresholds(
        self, cuts: tuple[float, float, float] = (0.10, 0.70, 0.90), version: str = "tiers-00000"
    ) -> TierThresholds:
        """Thresholds at the configured cuts (shares of customers below each tier)."""
        if self.total == 0:
            return TierThresholds(version=version)
        return TierThresholds(
            standard_from=self.quantile(cuts[0]),
            premium_from=self.quantile(cuts[1]),
            vip_from=self.quantile(cuts[2]),
            version=version,
        )

    def snapshot(self) -> bytes:
        """Sparse JSON bytes: [[bucket, count], ...]."""
        return orjson.dumps([[i, c] for i, c in enumerate(self.counts) if c])

    @classmethod
    def restore(cls, b: bytes) -> ValueHistogram:
        """Inverse of `snapshot`."""
        h = cls()
        for i, c in orjson.loads(b):
            h.counts[i] = c
            h.total += c
        return h
