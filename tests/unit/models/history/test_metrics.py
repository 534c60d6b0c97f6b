"""Offline evaluation metrics against small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.history import metrics as ev
from models.learning.quality import exact_auc


def test_roc_auc_counts_pairs_and_halves_ties() -> None:
    # 4 positive-negative pairs: (0.35 vs 0.1) yes, (0.35 vs 0.4) no, 0.8 beats both: 3/4
    assert ev.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # one pair, tied: 1/2
    assert ev.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # 2 x 2 pairs: pos 0.9 beats both; pos 0.3 ties neg 0.3 (1/2) and loses to 0.7: 2.5 / 4
    assert ev.roc_auc([1, 0, 1, 0], [0.9, 0.3, 0.3, 0.7]) == 0.625
    assert ev.roc_auc([1, 1], [0.1, 0.2]) is None
    assert ev.roc_auc(np.array([0.0, 1.0]), np.array([0.2, 0.1])) == 0.0


def test_roc_auc_is_the_progressive_exact_auc() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.3).astype(float)
    s = np.round(rng.random(300) + 0.3 * y, 2)  # rounded: many ties
    assert ev.roc_auc(y, s) == exact_auc(y.tolist(), s.tolist())


def test_pr_auc_is_average_precision_with_ties_as_one_threshold() -> None:
    # ranked 0.8(+) 0.4(-) 0.35(+) 0.1(-): recall 1/2 at precision 1, then 1/2 at precision 2/3
    assert ev.pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.5 + 1 / 3)
    # 0.5 holds one positive and one negative: recall 1/2 at precision 1/2, then 1/2 at 2/3
    assert ev.pr_auc([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)
    assert ev.pr_auc([0, 1, 1], [0.1, 0.8, 0.9]) == 1.0
    assert ev.pr_auc([0, 0], [0.1, 0.2]) is None


def test_log_loss_and_brier() -> None:
    assert ev.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # a certain, wrong prediction is clipped at 1e-15, not infinite
    assert ev.log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))
    assert ev.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert ev.brier([1, 0, 1], [1.0, 0.0, 1.0]) == 0.0
    assert ev.log_loss([], []) is None and ev.brier([], []) is None


def test_reliability_table_and_ece() -> None:
    # bin [0, 0.5): p 0.05, 0.15 -> mean 0.1, observed 1/2; bin [0.5, 1]: p 0.95, 1.0 (the
    # top edge joins the last bin) -> mean 0.975, observed 1/2.
    # ECE = 2/4 x |0.1 - 0.5| + 2/4 x |0.975 - 0.5| = 0.2 + 0.2375
    e, table = ev.reliability([0, 1, 1, 0], [0.05, 0.15, 0.95, 1.0], bins=2)
    assert e == pytest.approx(0.4375)
    assert [(b["lower"], b["upper"], b["n"]) for b in table] == [(0.0, 0.5, 2), (0.5, 1.0, 2)]
    assert table[0]["mean_predicted"] == pytest.approx(0.1)
    assert table[1]["mean_predicted"] == pytest.approx(0.975)
    assert [b["observed"] for b in table] == [0.5, 0.5]
    # ten bins: every bin listed, empty ones with n = 0 and no means
    e10, table10 = ev.reliability([0, 1], [0.2, 0.8])
    assert e10 == pytest.approx(0.2) and ev.ece([0, 1], [0.2, 0.8]) == e10
    assert len(table10) == 10 and sum(b["n"] for b in table10) == 2
    assert table10[0] == {"lower": 0.0, "upper": 0.1, "n": 0, "mean_predicted": None,
                          "observed": None}
    assert ev.reliability([], [])[0] is None


def test_mae_and_rmse() -> None:
    assert ev.mae([0, 2, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    assert ev.rmse([0, 2, 1], [1, 1, 1]) == pytest.approx(math.sqrt(2 / 3))
    assert ev.rmse([3, 3], [1, 5]) == 2.0
    assert ev.mae([], []) is None and ev.rmse([], []) is None


def test_lift_table_and_cumulative_gain() -> None:
    labels = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]  # base rate 0.3
    scores = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    t = ev.lift_table(labels, scores, groups=5)
    assert [r["positives"] for r in t] == [2, 0, 1, 0, 0]
    assert [r["lift"] for r in t] == pytest.approx([1 / 0.3, 0.0, 0.5 / 0.3, 0.0, 0.0])
    assert [r["cumulative_gain"] for r in t] == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert [r["cumulative_lift"] for r in t][:3] == pytest.approx([1 / 0.3, 0.5 / 0.3, 0.5 / 0.3])
    assert t[-1]["cumulative_share"] == 1.0 and t[-1]["cumulative_lift"] == pytest.approx(1.0)
    gain = ev.cumulative_gain(labels, scores)
    assert gain.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1, 1, 1])
    # ties keep input order: the first of the tied customers counts first
    assert ev.cumulative_gain([0, 1], [0.5, 0.5]).tolist() == [0.0, 0.0, 1.0]


def test_precision_lift() -> None:
    # 2 of 3 flagged are positive (2/3); 2 of 6 positive overall (1/3): lift 2
    r = ev.precision_lift([True, True, True, False, False, False], [1, 1, 0, 0, 0, 0])
    assert (r["flagged"], r["hits"]) == (3, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["base_rate"] == pytest.approx(1 / 3)
    assert r["lift"] == pytest.approx(2.0)
    none = ev.precision_lift([False, False], [1, 0])
    assert none["precision"] is None and none["lift"] is None
    assert ev.precision_lift([], [])["base_rate"] is None


def test_logistic_regression_bias_only_is_the_observed_rate() -> None:
    # a constant feature carries nothing: the unpenalised bias fits the rate exactly, 3/4
    m = ev.fit_logistic(np.ones((4, 1)), [1, 1, 1, 0])
    assert m.predict(np.ones((1, 1)))[0] == pytest.approx(0.75, abs=1e-6)


def test_logistic_regression_reaches_the_penalised_optimum() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = (x @ [1.5, -1.0, 0.0] + rng.normal(size=200) > 0).astype(float)
    m = ev.fit_logistic(x, y, l2=2.0)
    z = (x - np.array(m.mean)) / np.array(m.scale)
    err = m.predict(x) - y
    # gradient of sum log loss + l2/2 |w|^2 vanishes: z'err + l2 w = 0 and sum(err) = 0
    assert np.allclose(z.T @ err + 2.0 * np.array(m.weights), 0.0, atol=1e-3)
    assert abs(err.sum()) < 1e-3
    assert m.weights[0] > 0 > m.weights[1]


def test_cross_validated_predictions_never_see_their_own_label() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] + rng.normal(size=60) > 0).astype(float)
    folds = [i % 3 for i in range(60)]
    p = ev.cross_validated_logistic(x, y, folds)
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]  # row 0 is in fold 0
    q = ev.cross_validated_logistic(x, flipped, folds)
    in_fold = np.array(folds) == 0
    assert np.array_equal(p[in_fold], q[in_fold])
    assert not np.array_equal(p[~in_fold], q[~in_fold])


def test_fold_of_is_stable_and_balanced() -> None:
    # BLAKE2b, not Python's salted hash: the same folds in every process and on every machine
    assert [ev.fold_of(c) for c in ("R00004", "C000001", "C000042")] == [2, 1, 3]
    counts = np.bincount([ev.fold_of(f"C{i:06d}") for i in range(5000)], minlength=5)
    assert counts.min() > 900 and counts.max() < 1100
    assert {ev.fold_of(f"x{i}", 3) for i in range(30)} == {0, 1, 2}
