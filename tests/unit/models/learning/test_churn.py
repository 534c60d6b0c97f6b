"""Churn model: learns, explains with people's words, calibrates, round-trips."""

from __future__ import annotations

import math
import random

from models.config import ScoringConfig
from models.learning.calibration import PlattCalibrator, sigmoid
from models.learning.churn import (
    BASELINE,
    CANCELLED_CHURN,
    CLASSIFIER,
    MULTICHANNEL,
    ORDERS_ONLY,
    ChurnModel,
)
from models.learning.value import p_no_transaction


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
        m.learn(x, y, ORDERS_ONLY, m.classifier_probability(x))
    assert m.champion[ORDERS_ONLY] == CLASSIFIER  # the baseline knows nothing here
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


def test_baseline_before_enough_labels_and_snapshot_roundtrip() -> None:
    cfg = ScoringConfig(churn_min_labels=5)
    m = ChurnModel(cfg)
    m.champion[MULTICHANNEL] = CLASSIFIER  # even as champion, not before min labels
    p = m.baseline((0.0, 0.0, 0.0), cancelled=False)[0]
    assert m.predict({"recency_days": 3.0, "baseline_churn": math.log(p / (1 - p))},
                     MULTICHANNEL).value == round(p, 4)
    for i in range(5):
        m.learn({"recency_days": float(i)}, float(i > 2))
    r = ChurnModel.restore(m.snapshot(), cfg)  # the config is not part of a snapshot
    assert r.predict({"recency_days": 4.0}) == m.predict({"recency_days": 4.0})
    assert not math.isnan(r.predict({"never_seen": 1.0}).value)


def test_the_baseline_reads_silence_against_cadence_and_cancellations() -> None:
    m = ChurnModel()
    regular = m.baseline((20.0, 200.0, 205.0), cancelled=False)  # every ~10 days, seen lately
    lapsed = m.baseline((20.0, 100.0, 205.0), cancelled=False)  # same cadence, 105 days quiet
    newcomer = m.baseline((0.0, 0.0, 0.0), cancelled=False)
    assert 0 < regular[0] < newcomer[0] < lapsed[0] < 1
    assert m.baseline((20.0, 200.0, 205.0), cancelled=True)[0] >= CANCELLED_CHURN
    exact = p_no_transaction(m.activity[ORDERS_ONLY], 90, 20.0, 100.0, 205.0)
    assert abs(lapsed[0] - exact) < 1e-12
    factors = m.baseline_factors(*lapsed[1:])
    assert factors[0].name == "silence_vs_cadence" and factors[0].label.endswith(": high")
    assert m.baseline_factors(*newcomer[1:])[0].name == "active_days"  # nothing to miss yet


def test_the_classifier_serves_a_segment_only_where_it_beats_the_baseline() -> None:
    rng = random.Random(3)
    m = ChurnModel(ScoringConfig(churn_min_labels=50))
    for _ in range(3000):
        # Orders only: the baseline knows the truth, the other features are noise.
        p = rng.uniform(0.05, 0.95)
        x = {"baseline_churn": math.log(p / (1 - p)), "tickets_90d": rng.random()}
        m.learn(x, float(rng.random() < p), ORDERS_ONLY, m.classifier_probability(x))
        # Multichannel: the baseline says nothing, tickets tell it all.
        t = rng.uniform(0, 2)
        q = sigmoid(3.0 * t - 3.0)
        y = {"baseline_churn": 0.0, "tickets_90d": t}
        m.learn(y, float(rng.random() < q), MULTICHANNEL, m.classifier_probability(y))
    assert m.champion == {ORDERS_ONLY: BASELINE, MULTICHANNEL: CLASSIFIER}
    assert m.arena[MULTICHANNEL].classifier < m.arena[MULTICHANNEL].baseline
    served = m.predict({"baseline_churn": 0.0, "tickets_90d": 1.9}, MULTICHANNEL)
    assert served.value > 0.8 and served.factors[0].name == "tickets_90d"
    assert m.predict({"baseline_churn": 0.0, "tickets_90d": 1.9}, ORDERS_ONLY).value == 0.5
    restored = ChurnModel.restore(m.snapshot())
    assert restored.champion == m.champion
    assert restored.arena[MULTICHANNEL].to_list() == m.arena[MULTICHANNEL].to_list()


def test_baseline_factors_are_the_positive_parts_largest_first() -> None:
    rng = random.Random(5)
    parts = [0.0, 1e-7, 1e-6, 0.3, 0.5, 0.99999, 1.0 - 1e-6, 1.0]
    parts += [rng.random() for _ in range(300)]
    for alive in parts:
        for quiet in parts:
            stopped = round(-math.log(max(alive, 1e-6)), 4)
            slow = round(-math.log(max(1.0 - quiet, 1e-6)), 4)
            ranked = sorted([(stopped, "silence_vs_cadence"), (slow, "active_days")],
                            key=lambda part: -part[0])  # stable: silence first on a tie
            expected = [(name, c) for c, name in ranked if c > 0]
            got = ChurnModel.baseline_factors(alive, quiet)
            assert [(f.name, f.contribution) for f in got] == expected, (alive, quiet)
    assert ChurnModel.baseline_factors(1.0, 0.0) == ()  # nothing to say, nothing built
