"""Calibrators against streams whose true probabilities are known."""

from __future__ import annotations

import itertools
import random

from models.config import ScoringConfig
from models.learning.calibration import IsotonicCalibrator, PlattCalibrator, sigmoid
from models.learning.churn import ChurnModel
from models.learning.quality import BinaryQuality


def stream(rng: random.Random, n: int, a: float, b: float) -> list[tuple[float, float]]:
    """(raw logit x, label) with true P(label) = sigmoid(a * x + b); the model says sigmoid(x)."""
    out = []
    for _ in range(n):
        x = rng.gauss(0.0, 2.0)
        out.append((x, float(rng.random() < sigmoid(a * x + b))))
    return out


def ece(cal: IsotonicCalibrator | PlattCalibrator | None, data: list[tuple[float, float]]) -> float:
    q = BinaryQuality()
    for x, y in data:
        q.update(y, sigmoid(x) if cal is None else cal.probability(x))
    r = q.report()["ece"]
    assert r is not None
    return float(r)


def test_miscalibrated_stream_ends_within_ece_bound() -> None:
    # the model is under-confident: true p = sigmoid(2x) while it says sigmoid(x)
    rng = random.Random(3)
    cal = IsotonicCalibrator()
    for x, y in stream(rng, 5000, 2.0, 0.0):
        cal.update(x, y)
    fresh = stream(rng, 20_000, 2.0, 0.0)
    assert ece(None, fresh) > 0.08  # the raw model really is off
    assert ece(cal, fresh) < 0.04  # stated bound (seeds 3-7 give 0.016-0.031), 10-bin ECE


def test_calibrator_follows_a_relationship_that_changes_halfway() -> None:
    rng = random.Random(4)
    moving = IsotonicCalibrator()
    forever = PlattCalibrator()  # every label since the start, no decay
    for x, y in stream(rng, 10_000, 2.0, 0.0) + stream(rng, 10_000, 0.5, -1.5):
        moving.update(x, y)
        forever.update(x, y)
    after = stream(rng, 20_000, 0.5, -1.5)
    assert ece(moving, after) < 0.04  # seeds 3-7: 0.014-0.027; never-forgetting Platt: 0.14
    assert ece(forever, after) > 2 * ece(moving, after)


def test_map_is_strictly_increasing_so_ranking_and_auc_survive() -> None:
    rng = random.Random(5)
    cal = IsotonicCalibrator()
    for x, y in stream(rng, 3000, 1.5, -0.5):
        cal.update(x, y)
    grid = [i / 10 for i in range(-120, 121)]
    ps = [cal.probability(x) for x in grid]
    assert all(p1 < p2 for p1, p2 in itertools.pairwise(ps))
    assert ps[0] > 0.0 and ps[-1] < 1.0
    # a handful of labels never pins a probability to 0 or 1
    few = IsotonicCalibrator()
    for x in (3.0, 4.0, 5.0):
        few.update(x, 1.0)
    assert few.probability(9.0) < 0.99


def test_ties_get_one_probability_and_window_forgets() -> None:
    cal = IsotonicCalibrator(window=100, min_group=10)
    for i in range(100):
        cal.update(1.0, float(i % 4 == 0))
    assert abs(cal.probability(1.0) - 0.25) < 0.01
    for _ in range(100):  # a full window later the old labels are gone
        cal.update(1.0, 1.0)
    assert cal.probability(1.0) > 0.97
    assert len(cal.logits) == cal.window == 100


def test_churn_bundle_from_before_format_2_still_restores() -> None:
    cfg = ScoringConfig(churn_min_labels=5)
    m = ChurnModel(cfg)
    for i in range(40):
        m.learn({"recency_days": float(i % 5)}, float(i % 5 > 2))
    old = m.to_dict()
    legacy = PlattCalibrator()
    for i in range(40):
        legacy.update(float(i % 5) - 2.0, float(i % 5 > 2))
    old["calibrator"] = legacy.to_dict()  # what a format-1 bundle carries
    r = ChurnModel.from_dict(old, cfg)
    assert isinstance(r.calibrator, PlattCalibrator)
    p = r.predict({"recency_days": 4.0}).value
    assert p == ChurnModel.from_dict(r.to_dict(), cfg).predict({"recency_days": 4.0}).value
    new = ChurnModel.restore(m.snapshot(), cfg)
    assert isinstance(new.calibrator, IsotonicCalibrator)
    assert new.predict({"recency_days": 4.0}) == m.predict({"recency_days": 4.0})
