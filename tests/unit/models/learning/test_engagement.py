"""Engagement: heuristic before labels, learned afterwards, always 0-100."""

from __future__ import annotations

import math

from models.config import ScoringConfig
from models.learning.engagement import EngagementModel, heuristic_interactions


def x(i30: int, i90: int, recency: float) -> dict[str, float]:
    return {
        "interactions_30d": math.log1p(i30),
        "interactions_90d": math.log1p(i90),
        "recency_days": math.log1p(recency),
    }


def test_heuristic_by_hand() -> None:
    # (0.5 * 10 + 0.5 * 30 / 3) * exp(-0/45) = 10 -> 100 * (1 - e^(-10/8)) = 71.3
    assert abs(heuristic_interactions(x(10, 30, 0)) - 10.0) < 1e-9
    m = EngagementModel()
    assert m.predict(x(10, 30, 0)).value == 71.3
    assert m.predict(x(0, 0, 200)).value == 0.0
    assert m.predict(x(10, 30, 0)).value > m.predict(x(10, 30, 40)).value


def test_learned_model_takes_over_and_stays_in_range() -> None:
    m = EngagementModel(ScoringConfig(engagement_min_labels=50))
    for i in range(2000):
        busy = i % 2 == 0
        m.learn(x(20 if busy else 1, 60 if busy else 2, 1 if busy else 60), 25.0 if busy else 0.0)
    hi, lo = m.predict(x(20, 60, 1)).value, m.predict(x(1, 2, 60)).value
    assert 0.0 <= lo < 20.0 < 80.0 < hi <= 100.0
    assert EngagementModel.restore(m.snapshot()).predict(x(5, 9, 3)) == m.predict(x(5, 9, 3))
