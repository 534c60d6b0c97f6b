"""Churn model: learns, explains with people's words, calibrates, round-trips."""

from __future__ import annotations

import math
import random

from models.calibration import PlattCalibrator, sigmoid
from models.churn import ChurnModel
from models.config import ScoringConfig


def test_calibration_makes_probabilities_mean_what_they_say() -> None:
    # a raw score that is systematically over-confident: true p = sigmoid(0.4 * s - 1)
    rng = random.Random(2)
    cal = PlattCalibrator()
    for _ in range(20_000):
        s = rng.uniform(-8, 8)
        cal.update(s, float(rng.random() < sigmoid(0.4 * s - 1.0)))
    a, b = cal.params
    assert abs(a - 0.4) < 0.05 and abs(b + 1.0) < 0.1
    for s in (-5.0, 0.0, 3.0):
        assert abs(cal.probability(s) - sigmoid(0.4 * s - 1.0)) < 0.03


def test_churn_model_learns_ranks_and_is_calibrated() -> None:
    rng = random.Random(1)
    m = ChurnModel(ScoringConfig(churn_min_labels=10))

    def draw() -> tuple[dict[str, float], float]:
        recency = rng.uniform(0, 5)
        tickets = rng.uniform(0, 2)
        p = sigmoid(1.2 * recency + 0.8 * tickets - 4.0)
        return {"recency_days": recency, "tickets_90d": tickets}, float(rng.random() < p)

    for _ in range(6000):
        x, y = draw()
        m.learn(x, y)
    bins: dict[int, list[float]] = {}
    for _ in range(6000):
        x, y = draw()
        p = m.predict(x).value
        bins.setdefault(min(9, int(p * 10)), []).extend([p, y])
    for vals in bins.values():
        ps, ys = vals[0::2], vals[1::2]
        if len(ps) > 300:
            assert abs(sum(ps) / len(ps) - sum(ys) / len(ys)) < 0.06
    risky = m.predict({"recency_days": 4.8, "tickets_90d": 1.9})
    assert risky.value > 0.8
    assert [f.name for f in risky.factors] == ["recency_days", "tickets_90d"] or [
        f.name for f in risky.factors
    ] == ["tickets_90d", "recency_days"]
    assert all(f.label.endswith(": high") for f in risky.factors)
    assert m.predict({"recency_days": 0.1, "tickets_90d": 0.0}).value < 0.1


def test_prior_before_enough_labels_and_snapshot_roundtrip() -> None:
    cfg = ScoringConfig(churn_min_labels=5, churn_prior=0.25)
    m = ChurnModel(cfg)
    assert m.predict({"recency_days": 3.0}).value == 0.25
    for i in range(5):
        m.learn({"recency_days": float(i)}, float(i > 2))
    r = ChurnModel.restore(m.snapshot(), cfg)  # the config is not part of a snapshot
    assert r.predict({"recency_days": 4.0}) == m.predict({"recency_days": 4.0})
    assert not math.isnan(r.predict({"never_seen": 1.0}).value)
