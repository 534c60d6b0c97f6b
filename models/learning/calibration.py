"""Online calibration: turn a classifier's raw logit into a probability that means what it says.

River has no calibration step. Both calibrators here learn from held predictions: the raw logit
computed *before* the model learns from an example, paired with the example's label.

`IsotonicCalibrator` (what `ChurnModel` uses) keeps only the most recent resolved predictions,
so it follows the online model as its logits move and the base rate drifts, and fits a
monotone map to them without assuming a sigmoid shape. `PlattCalibrator` is the original
two-parameter fit on every label ever seen; it stays for bundles published before format 2.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = [
    "CALIBRATOR_FORMAT",
    "Calibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "fit_isotonic",
    "sigmoid",
]

_BINS = 40
_LO, _HI = -10.0, 10.0
_WIDTH = (_HI - _LO) / _BINS


def sigmoid(s: float) -> float:
    """Numerically safe logistic function."""
    if s >= 0:
        return 1.0 / (1.0 + math.exp(-s))
    e = math.exp(s)
    return e / (1.0 + e)


class PlattCalibrator:
    """Binned online Platt scaling of logits.

    >>> c = PlattCalibrator()
    >>> for i in range(2000):  # raw logit 2.0 is right only half the time
    ...     c.update(2.0, float(i % 2))
    >>> round(c.probability(2.0), 2)
    0.5
    """

    __slots__ = ("_a", "_b", "_dirty", "n", "pos", "prior", "sum_s")

    def __init__(self, prior: float = 1.0) -> None:
        self.prior = prior
        self.n = [0.0] * _BINS
        self.pos = [0.0] * _BINS
        self.sum_s = [0.0] * _BINS
        self._a, self._b = 1.0, 0.0
        self._dirty = False

    def update(self, logit: float, label: float) -> None:
        """Record one held prediction and its resolved label."""
        s = min(_HI, max(_LO, logit))
        i = min(_BINS - 1, int((s - _LO) / _WIDTH))
        self.n[i] += 1.0
        self.pos[i] += 1.0 if label else 0.0
        self.sum_s[i] += s
        self._dirty = True

    def _fit(self) -> None:
        groups = [(n, ss, k) for n, k, ss in zip(self.n, self.pos, self.sum_s, strict=True) if n]
        a, b = _platt(groups, self.prior, start=(self._a, self._b))
        self._a, self._b = a, b
        self._dirty = False

    @property
    def params(self) -> tuple[float, float]:
        """Current (a, b) of p = sigmoid(a * logit + b)."""
        if self._dirty:
            self._fit()
        return self._a, self._b

    def probability(self, logit: float) -> float:
        """Calibrated probability of a raw logit."""
        a, b = self.params
        return sigmoid(a * logit + b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state (sparse bins)."""
        a, b = self.params
        bins = [[i, self.n[i], self.pos[i], self.sum_s[i]] for i in range(_BINS) if self.n[i]]
        return {"prior": self.prior, "a": a, "b": b, "bins": bins}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlattCalibrator:
        """Inverse of `to_dict`."""
        c = cls(prior=d["prior"])
        for i, n, k, s in d["bins"]:
            c.n[i], c.pos[i], c.sum_s[i] = n, k, s
        c._a, c._b = d["a"], d["b"]
        return c


class Calibrator(Protocol):
    """What `ChurnModel` needs from a calibrator."""

    def update(self, logit: float, label: float) -> None: ...

    def probability(self, logit: float) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...


#: Snapshot format of `IsotonicCalibrator` (format 1, implicit, is `PlattCalibrator`).
CALIBRATOR_FORMAT = 2
_P_MIN, _P_MAX = 1e-4, 1.0 - 1e-4


class IsotonicCalibrator:
    """Isotonic calibration of logits on a sliding window of the most recent resolved predictions.

    Fit (lazily, after new labels): sort the window by logit, pool it into consecutive groups
    of at least `min_group` predictions (half that while the window is still filling; never
    splitting tied logits), shrink each group's
    churn rate towards the window's base rate by `prior` pseudo-labels, and pool adjacent
    violators (PAV) until the rates strictly increase. Each pooled block then answers its own
    rate, tilted slightly across its logit range (a tenth of the gap to its neighbours), so the
    map is strictly increasing: the model's ranking and AUC survive, the steps stay close to
    what was observed. Beyond the outermost logits it continues in logit space with the slope
    of a Platt fit on the same window, capped at 0.25, so a handful of extreme labels never
    pins a probability to 0 or 1.

    Why a window and not all history: the online model moves (its logit scale grows as SGD
    runs, the base rate drifts), so old (logit, label) pairs describe a model that no longer
    exists. Why isotonic: a linear churn model's raw scores are often well ranked but far from
    sigmoid-shaped (a bulk of clearly active customers, then a plateau), which two Platt
    parameters cannot follow.

    >>> c = IsotonicCalibrator(window=2000)
    >>> for i in range(4000):  # raw logit 2.0 is right only half the time
    ...     c.update(2.0, float(i % 2))
    ...     c.update(-2.0, float(i % 10 == 0))
    >>> round(c.probability(2.0), 2), round(c.probability(-2.0), 2)
    (0.5, 0.1)
    >>> IsotonicCalibrator.from_dict(c.to_dict()).probability(0.3) == c.probability(0.3)
    True
    """

    __slots__ = ("_knots_p", "_knots_s", "_slope", "labels", "logits", "min_group", "prior")

    def __init__(self, window: int = 1000, min_group: int = 40, prior: float = 2.0) -> None:
        self.logits: deque[float] = deque(maxlen=window)
        self.labels: deque[int] = deque(maxlen=window)
        self.min_group = min_group
        self.prior = prior
        self._knots_s: list[float] | None = None
        self._knots_p: list[float] = []
        self._slope = 0.0

    @property
    def window(self) -> int:
        """How many recent resolved predictions the fit uses."""
        return self.logits.maxlen or 0

    def update(self, logit: float, label: float) -> None:
        """Record one held prediction and its resolved label (the oldest one leaves the window)."""
        self.logits.append(float(logit))
        self.labels.append(1 if label else 0)
        self._knots_s = None

    def _fit(self) -> None:
        knots_s, knots_p, slope = fit_isotonic(self.logits, self.labels, self.min_group, self.prior)
        self._knots_s, self._knots_p, self._slope = knots_s, knots_p, slope

    @property
    def knots(self) -> list[tuple[float, float]]:
        """The fitted (logit, probability) knots of the piecewise-linear map."""
        if self._knots_s is None:
            self._fit()
        return list(zip(self._knots_s or [], self._knots_p, strict=True))

    def probability(self, logit: float) -> float:
        """Calibrated probability of a raw logit (0.5 before any label)."""
        if self._knots_s is None:
            self._fit()
        xs, ps = self._knots_s or [], self._knots_p
        if not xs:
            return 0.5
        if logit <= xs[0]:
            return _clip(sigmoid(_logit(ps[0]) + self._slope * (logit - xs[0])))
        if logit >= xs[-1]:
            return _clip(sigmoid(_logit(ps[-1]) + self._slope * (logit - xs[-1])))
        i = bisect_right(xs, logit)
        x0, x1 = xs[i - 1], xs[i]
        t = (logit - x0) / (x1 - x0)
        return ps[i - 1] + t * (ps[i] - ps[i - 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state: the window itself (the fit is recomputed, deterministically)."""
        return {
            "format": CALIBRATOR_FORMAT,
            "kind": "isotonic",
            "window": self.window,
            "min_group": self.min_group,
            "prior": self.prior,
            "logits": list(self.logits),
            "labels": list(self.labels),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IsotonicCalibrator:
        """Inverse of `to_dict`."""
        c = cls(window=d["window"], min_group=d["min_group"], prior=d["prior"])
        c.logits.extend(d["logits"])
        c.labels.extend(d["labels"])
        return c


def fit_isotonic(
    logits: Iterable[float],
    labels: Iterable[int],
    min_group: int,
    prior: float,
    tilt: float = 0.1,
    tail_slope: float = 0.25,
) -> tuple[list[float], list[float], float]:
    """Knots (logits ascending, probabilities strictly ascending) and the tail slope.

    >>> xs, ps, _ = fit_isotonic([0.0, 1.0, 2.0, 3.0], [0, 1, 0, 1], min_group=1, prior=0.0)
    >>> xs, ps
    ([0.0, 1.0, 2.0, 3.0], [0.0001, 0.45, 0.55, 0.9999])
    """
    pairs = sorted(zip(logits, labels, strict=True))
    n = len(pairs)
    if not n:
        return [], [], 0.0
    base = (sum(y for _, y in pairs) + 1.0) / (n + 2.0)  # Laplace: never exactly 0 or 1
    # Consecutive groups of >= min_group that never split tied logits (the last one absorbs
    # a short remainder), so equal raw scores always get one probability.
    # While the window is still filling, smaller groups (down to half) keep some resolution.
    size = max(1, min_group // 2, min(min_group, n // 25))
    groups: list[list[float]] = []  # [weight, sum logit, sum label, lowest, highest]
    i = 0
    while i < n:
        j = min(n, i + size)
        while j < n and pairs[j][0] == pairs[j - 1][0]:
            j += 1
        if n - j < size:
            j = n
        chunk = pairs[i:j]
        groups.append(
            [
                float(j - i),
                sum(s for s, _ in chunk),
                float(sum(y for _, y in chunk)),
                chunk[0][0],
                chunk[-1][0],
            ]
        )
        i = j
    slope = min(tail_slope, max(0.0, _platt(groups, max(prior, 1e-3))[0]))
    # PAV on shrunk rates; a block is [weight, sum logit, sum label, rate, lowest, highest].
    blocks: list[list[float]] = []
    for w, ss, k, lo, hi in groups:
        blocks.append([w, ss, k, (k + prior * base) / (w + prior), lo, hi])
        while len(blocks) > 1 and blocks[-2][3] >= blocks[-1][3]:
            b = blocks.pop()
            a = blocks[-1]
            a[0] += b[0]
            a[1] += b[1]
            a[2] += b[2]
            a[3] = (a[2] + prior * base) / (a[0] + prior)
            a[5] = b[5]
    # Knots: each pooled block spans [lowest, highest] logit of its members and tilts by
    # `tilt` of the gap to its neighbours' rates across that span, so the map is strictly
    # increasing (the model's ranking, hence AUC, survives) but stays close to the block rate.
    xs: list[float] = []
    ps: list[float] = []
    rates = [b[3] for b in blocks]
    for k, b in enumerate(blocks):
        lo, hi, r = b[4], b[5], rates[k]
        down = tilt * (r - (rates[k - 1] if k else 0.0))
        up = tilt * ((rates[k + 1] if k + 1 < len(rates) else 1.0) - r)
        if hi > lo:
            xs.extend((lo, hi))
            ps.extend((_clip(r - down), _clip(r + up)))
        else:
            xs.append(lo)
            ps.append(_clip(r))
    return xs, ps, slope


def _platt(
    groups: Sequence[Sequence[float]], lam: float, start: tuple[float, float] = (1.0, 0.0)
) -> tuple[float, float]:
    """Weighted Platt fit (a, b) of p = sigmoid(a * s + b) on groups (weight, sum s, sum y, ..),
    by damped Newton steps from `start`, regularised by `lam` toward (1, 0)."""
    a, b = start
    for _ in range(30):
        ga, gb = lam * (a - 1.0), lam * b
        haa, hab, hbb = lam, 0.0, lam
        for n, ss, k, *_ in groups:
            s = ss / n
            p = sigmoid(a * s + b)
            r = n * p - k
            w = n * p * (1.0 - p)
            ga += r * s
            gb += r
            haa += w * s * s
            hab += w * s
            hbb += w
        det = haa * hbb - hab * hab
        if det <= 1e-12:
            break
        da = max(-0.5, min(0.5, (hbb * ga - hab * gb) / det))
        db = max(-0.5, min(0.5, (haa * gb - hab * ga) / det))
        a, b = a - da, b - db
        if abs(da) + abs(db) < 1e-9:
            break
    return a, b


def _clip(p: float) -> float:
    return _P_MIN if p < _P_MIN else (_P_MAX if p > _P_MAX else p)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))
