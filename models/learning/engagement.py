"""Engagement model: expected interactions in the next 30 days, mapped to a 0-100 score.

Learned with the same delayed-label mechanism as churn (horizon 30 days): a River
LinearRegression on standard-scaled features predicts log1p(interactions). Until it has seen
enough labels a recency/frequency heuristic answers instead, so day-one scores are sensible.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from models.config import ScoringConfig
from models.learning.linear import ScaledLinear
from models.learning.prediction import Prediction, top_factors
from models.scoring.features import FEATURE_LABELS

__all__ = ["EngagementModel", "heuristic_interactions"]


def heuristic_interactions(features: dict[str, float]) -> float:
    """Recency/frequency guess of next-30-day interactions from the feature dict.

    Recent pace (half last 30 days, half the 90-day monthly average), damped by silence.
    """
    i30 = math.expm1(features.get("interactions_30d", 0.0))
    i90 = math.expm1(features.get("interactions_90d", 0.0))
    recency = math.expm1(features.get("recency_days", 0.0))
    return (0.5 * i30 + 0.5 * i90 / 3.0) * math.exp(-recency / 45.0)


class EngagementModel:
    """Online regression of next-30-day interactions; `predict` returns the 0-100 score.

    >>> m = EngagementModel(ScoringConfig(engagement_min_labels=10))
    >>> busy, quiet = {"interactions_30d": 3.0}, {"interactions_30d": 0.0}
    >>> for _ in range(200):
    ...     m.learn(busy, 20.0)
    ...     m.learn(quiet, 0.0)
    >>> m.predict(busy).value > 80 > 5 > m.predict(quiet).value
    True
    """

    name = "engagement"

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self.linear = ScaledLinear(classifier=False, lr=0.005, l2=1e-4)
        self.n_learned = 0
        self.version = "engagement-00000"

    def expected_interactions(
        self, features: dict[str, float]
    ) -> tuple[float, dict[str, float], dict[str, float]]:
        """Expected interactions in the horizon, contributions (log scale), standardised x."""
        if self.n_learned < self.config.engagement_min_labels:
            return heuristic_interactions(features), {}, {}
        raw, contrib, z = self.linear.explain(features)
        return math.expm1(min(10.0, max(0.0, raw))), contrib, z

    def predict(self, features: dict[str, float]) -> Prediction:
        """Engagement 0-100 = 100 * (1 - exp(-expected / scale)), with top factors."""
        y, contrib, z = self.expected_interactions(features)
        score = 100.0 * (1.0 - math.exp(-y / self.config.engagement_scale))
        factors = top_factors(contrib, FEATURE_LABELS, z) if contrib else ()
        # round() goes through a decimal string: not for a silent customer's zero
        return Prediction(round(score, 1) if score else score, factors, self.version)

    def learn(self, features: dict[str, float], label: float) -> None:
        """Learn one resolved label (interactions counted in the horizon after the snapshot)."""
        self.linear.learn(features, math.log1p(max(0.0, label)))
        self.n_learned += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state."""
        return {
            "version": self.version,
            "n_learned": self.n_learned,
            "linear": self.linear.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: ScoringConfig | None = None) -> EngagementModel:
        """Inverse of `to_dict`."""
        m = cls(config)
        m.version = d["version"]
        m.n_learned = d["n_learned"]
        m.linear = ScaledLinear.from_dict(d["linear"])
        return m

    def snapshot(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> EngagementModel:
        """Rebuild from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b), config)
