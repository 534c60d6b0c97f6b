"""Progressive quality metrics against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from models.learning.quality import BinaryQuality, RegressionQuality, exact_auc


def brute_auc(labels: list[float], scores: list[float]) -> float | None:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9])),
        min_size=1,
        max_size=60,
    )
)
def test_exact_auc_matches_pairwise_count_with_ties(pairs) -> None:
    labels = [float(y) for y, _ in pairs]
    scores = [s for _, s in pairs]
    expected = brute_auc(labels, scores)
    got = exact_auc(labels, scores)
    assert (got is None) == (expected is None)
    if got is not None:
        assert abs(got - expected) < 1e-12


def test_binary_quality_by_hand() -> None:
    q = BinaryQuality(keep_all=True)
    q.update(1, 0.8)
    q.update(0, 0.4)
    r = q.report()
    assert r["brier"] == round((0.2**2 + 0.4**2) / 2, 4)
    assert r["log_loss"] == round(-(math.log(0.8) + math.log(0.6)) / 2, 4)
    assert r["auc"] == 1.0
    assert r["ece"] == round(0.5 * 0.2 + 0.5 * 0.4, 4)
    assert [b["bin"] for b in r["calibration"]] == ["0.4-0.5", "0.8-0.9"]


def test_regression_quality() -> None:
    q = RegressionQuality(keep_all=True)
    for y, p in [(0, 1.0), (3, 2.0)]:
        q.update(y, p)
    r = q.report()
    assert (r["mae"], r["rmse"], r["auc_positive"]) == (1.0, 1.0, 1.0)
