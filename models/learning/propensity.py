"""Propensity models: calibrated online probabilities of a yes/no outcome, with factors.

Two questions share the shape of the churn classifier (a River LogisticRegression on
standard-scaled features, an isotonic calibrator on its most recent held predictions, the
features that pushed the score as factors) and its honesty (a prediction is logged before
its label exists):

* **upsell** (`UpsellModel`): P(the customer buys a product category it never bought, or
  upgrades its subscription, within `upsell_horizon_days`), from delayed labels like churn's,
  for customers with something to upsell from (`CustomerState.upsell_eligible`). Until it has
  `upsell_min_labels` labels a purchase-frequency heuristic answers, so no customer gets a
  constant.
* **advocacy** (`AdvocacyModel`): P(promoter), the chance that a customer would answer 9-10
  to the NPS question, for customers without a recent answer. Its labels are the answers
  themselves: when a customer answers, its features from just before the answer and whether
  it was a promoter make one example. It answers nothing (None) before it has learned
  `advocacy_min_labels` answers: an unknown is better than an invented one. Respondents
  choose to answer, so the model describes customers like those who answer.

Each prediction also carries a 95 % interval (`Propensity.low`, `.high`): the Wilson interval
of the probability as a rate observed on one calibration block, the average number of
labels the isotonic calibrator pools into one step of its map (window / steps). It says how
many resolved customers a probability rests on, not how wrong the model's ranking can be.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Self

import orjson

from models.config import ScoringConfig
from models.learning.calibration import IsotonicCalibrator
from models.learning.linear import ScaledLinear
from models.learning.prediction import Factor, top_factors
from models.scoring.features import FEATURE_LABELS

__all__ = [
    "AdvocacyModel",
    "Propensity",
    "PropensityModel",
    "UpsellModel",
    "upsell_heuristic",
    "wilson",
]

_Z95 = 1.959964


class Propensity(NamedTuple):
    """A calibrated probability, its 95 % interval, the factors raising it and the version."""

    value: float
    low: float
    high: float
    factors: tuple[Factor, ...]
    version: str


def wilson(positives: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (0, 1 for no data).

    >>> [round(v, 3) for v in wilson(10, 100)]
    [0.055, 0.174]
    """
    if n <= 0:
        return 0.0, 1.0
    p = positives / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def upsell_heuristic(x: dict[str, float], horizon_days: float = 30.0) -> float:
    """P(an upsell within the horizon) before the classifier has learned: the expected orders
    in the horizon at the customer's 12-month pace, damped by the time since its last order
    (half-life of 90 days), each one a new category with probability 0.25, plus a 2 % monthly
    chance of a plan upgrade for a subscriber.

    >>> round(upsell_heuristic({"orders_365d": math.log1p(12), "days_since_last_order": 0.0}), 3)
    0.219
    """
    orders = math.expm1(x.get("orders_365d", 0.0)) * horizon_days / 365.0
    damp = math.exp(-math.expm1(x.get("days_since_last_order", 0.0)) * math.log(2) / 90.0)
    subscribed = 0.02 * horizon_days / 30.0 if x.get("plan_fee", 0.0) > 0 else 0.0
    return 1.0 - math.exp(-0.25 * orders * damp - subscribed)


class PropensityModel:
    """A calibrated online classifier; subclasses name it and say what it answers before it
    has learned `min_labels` labels (`prior`).

    >>> m = UpsellModel(ScoringConfig(upsell_min_labels=50))
    >>> hot, cold = {"orders_365d": 2.0}, {"orders_365d": 0.0}
    >>> for i in range(600):
    ...     m.learn(hot, float(i % 4 != 0))   # 75 % of hot customers convert ...
    ...     m.learn(cold, float(i % 10 == 0))  # ... 10 % of cold ones
    >>> p_hot, p_cold = m.predict(hot), m.predict(cold)
    >>> round(p_hot.value, 1), round(p_cold.value, 1), p_hot.low < p_hot.value < p_hot.high
    (0.8, 0.1, True)
    >>> UpsellModel.restore(m.snapshot()).predict(hot) == p_hot
    True
    """

    name = "propensity"
    lr = 0.02

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self.linear = ScaledLinear(classifier=True, lr=self.lr, l2=1e-4)
        self.calibrator = IsotonicCalibrator()
        self.n_learned = 0
        self.n_positive = 0
        self.version = f"{self.name}-00000"
        self._block: int | None = None
        self._intervals: dict[float, tuple[float, float]] = {}

    @property
    def min_labels(self) -> int:
        """Labels needed before the classifier answers."""
        return 200

    @property
    def ready(self) -> bool:
        """Whether the classifier has learned enough labels to be used."""
        return self.n_learned >= self.min_labels

    def prior(self, features: dict[str, float]) -> float | None:
        """What the model answers before it is ready (None: nothing)."""
        return None

    def predict(self, features: dict[str, float]) -> Propensity | None:
        """The probability for one customer with its interval and factors (None when the
        model has nothing to say yet)."""
        if not self.ready:
            p = self.prior(features)
            if p is None:
                return None
            return Propensity(round(p, 4), 0.0, 1.0, (), self.version)  # a guess: no interval
        logit, contrib, z = self.linear.explain(features)
        p = round(self.calibrator.probability(logit), 4)
        low, high = self._interval(p)
        return Propensity(p, low, high,
                          top_factors(contrib, FEATURE_LABELS, z), self.version)

    def probability(self, features: dict[str, float]) -> float | None:
        """Just the probability (None when `predict` gives None)."""
        answer = self.predict(features)
        return None if answer is None else answer.value

    def _interval(self, p: float) -> tuple[float, float]:
        """Wilson interval of `p` (rounded to 4 digits) as the rate of one calibration block
        (see module doc), rounded to 4 digits; kept per probability until the next label."""
        found = self._intervals.get(p)
        if found is not None:
            return found
        n = self._block
        if n is None:
            calibrator = self.calibrator
            blocks = (len(calibrator.knots) + 1) // 2  # a pooled block: one or two knots
            n = self._block = len(calibrator.labels) // max(1, blocks)
        low, high = wilson(round(p * n), n)
        found = self._intervals[p] = (round(low, 4), round(high, 4))
        return found

    def learn(self, features: dict[str, float], label: float) -> None:
        """Learn one resolved label (its held score feeds the calibrator first)."""
        self.calibrator.update(self.linear.score(features), label)
        self.linear.learn(features, label)
        self._block = None
        self._intervals.clear()
        self.n_learned += 1
        self.n_positive += 1 if label else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state."""
        return {
            "version": self.version,
            "n_learned": self.n_learned,
            "n_positive": self.n_positive,
            "linear": self.linear.to_dict(),
            "calibrator": self.calibrator.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, config: ScoringConfig | None = None) -> Self:
        """Inverse of `to_dict` (None, from a bundle without this model: a new one)."""
        m = cls(config)
        if d is None:
            return m
        m.version = d["version"]
        m.n_learned = d["n_learned"]
        m.n_positive = d["n_positive"]
        m.linear = ScaledLinear.from_dict(d["linear"])
        m.calibrator = IsotonicCalibrator.from_dict(d["calibrator"])
        return m

    def snapshot(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> Self:
        """Rebuild from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b), config)


class UpsellModel(PropensityModel):
    """P(upsell within the horizon): features `features.UPSELL_NAMES`."""

    name = "upsell"

    @property
    def min_labels(self) -> int:
        return self.config.upsell_min_labels

    def prior(self, features: dict[str, float]) -> float | None:
        return upsell_heuristic(features, self.config.upsell_horizon_days)


class AdvocacyModel(PropensityModel):
    """P(promoter) for customers without a recent NPS answer: features `FEATURE_NAMES`."""

    name = "advocacy"

    @property
    def min_labels(self) -> int:
        return self.config.advocacy_min_labels
