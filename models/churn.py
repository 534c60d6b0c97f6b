"""Churn model: probability that a customer churns within the horizon, with its top factors.

Churn means an explicit cancellation (crm subscription_cancelled) or no interaction for the
whole horizon (default 90 days) after the snapshot. A River LogisticRegression on
standard-scaled features (about 20 us per predict + learn) learns once per resolved label;
an isotonic calibrator on the most recent held predictions (`models.calibration`) makes 0.3
mean about 30 % while the model underneath keeps moving. Bundles published before calibrator
format 2 restore with their original Platt calibrator and keep working as they did.
"""

from __future__ import annotations

from typing import Any

import orjson

from models.calibration import (
    CALIBRATOR_FORMAT,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
)
from models.config import ScoringConfig
from models.features import FEATURE_LABELS
from models.linear import ScaledLinear
from models.prediction import Prediction, top_factors


class ChurnModel:
    """Calibrated online churn classifier over `features.FEATURE_NAMES`.

    Before `churn_min_labels` labels it answers the configured prior; factors come from the
    linear model (weight x standardised value) and name what raises the risk.

    >>> m = ChurnModel()
    >>> silent = {"recency_days": 4.5, "interactions_30d": 0.0}
    >>> active = {"recency_days": 0.7, "interactions_30d": 2.5}
    >>> for _ in range(300):
    ...     m.learn(silent, 1.0)
    ...     m.learn(active, 0.0)
    >>> p = m.predict(silent)
    >>> p.value > 0.9 > 0.1 > m.predict(active).value
    True
    >>> sorted(f.label for f in p.factors)
    ['days since last interaction: high', 'interactions in the last 30 days: low']
    >>> ChurnModel.restore(m.snapshot()).predict(silent) == p
    True
    """

    name = "churn"

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self.linear = ScaledLinear(classifier=True, lr=0.02, l2=1e-4)
        self.calibrator: Calibrator = IsotonicCalibrator()
        self.n_learned = 0
        self.n_positive = 0
        self.version = "churn-00000"

    def predict(self, features: dict[str, float]) -> Prediction:
        """Calibrated churn probability with the top 3 risk-raising factors."""
        logit, contrib, z = self.linear.explain(features)
        if self.n_learned < self.config.churn_min_labels:
            p = self.config.churn_prior
        else:
            p = self.calibrator.probability(logit)
        return Prediction(round(p, 4), top_factors(contrib, FEATURE_LABELS, z), self.version)

    def learn(self, features: dict[str, float], label: float) -> None:
        """Learn one resolved label; the calibrator first sees the held (pre-learning) logit."""
        self.calibrator.update(self.linear.score(features), label)
        self.linear.learn(features, label)
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
    def from_dict(cls, d: dict[str, Any], config: ScoringConfig | None = None) -> ChurnModel:
        """Inverse of `to_dict`."""
        m = cls(config)
        m.version = d["version"]
        m.n_learned = d["n_learned"]
        m.n_positive = d["n_positive"]
        m.linear = ScaledLinear.from_dict(d["linear"])
        cal = d["calibrator"]
        if cal.get("format", 1) >= CALIBRATOR_FORMAT:
            m.calibrator = IsotonicCalibrator.from_dict(cal)
        else:
            m.calibrator = PlattCalibrator.from_dict(cal)
        return m

    def snapshot(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> ChurnModel:
        """Rebuild from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b), config)
