"""Online Platt scaling: turn a classifier's raw logit into a probability that means what it says.

River has no calibration step. Held predictions (the raw logit computed *before* the model
learns from an example) are binned by logit; a two-parameter logistic map p = sigma(a*s + b) is
refitted by a few Newton steps on the bins, with a weak prior pulling towards the identity
(a=1, b=0) so it is sensible from the first label. Binning keeps the state tiny and the fit
O(bins) however many labels have been seen.
"""

from __future__ import annotations

import math
from typing import Any

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
        a, b = self._a, self._b
        lam = self.prior
        for _ in range(30):
            ga = lam * (a - 1.0)
            gb = lam * b
            haa, hab, hbb = lam, 0.0, lam
            for n, k, ss in zip(self.n, self.pos, self.sum_s, strict=True):
                if not n:
                    continue
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
            # Damped Newton: from a far start on saturated bins a full step can overshoot.
            da = max(-0.5, min(0.5, (hbb * ga - hab * gb) / det))
            db = max(-0.5, min(0.5, (haa * gb - hab * ga) / det))
            a, b = a - da, b - db
            if abs(da) + abs(db) < 1e-9:
                break
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
