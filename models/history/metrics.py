"""Offline evaluation metrics: ranking, probability quality, errors, lift, and a small classifier.

Pure functions over sequences of labels and scores (numpy inside), used by the backtest
(`models.history.backtest`, `scorestream evaluate`) to compare the engine's frozen scorecards with
what customers did afterwards. Undefined figures (an empty input, a single class) are None,
never NaN, so reports stay valid JSON.

* `roc_auc` is `models.learning.quality.exact_auc` (Mann-Whitney U, average ranks for ties), so the
  offline and the progressive AUC are the same number for the same pairs.
* `pr_auc` is average precision: sum over score thresholds (ties form one threshold) of the
  recall gained times the precision there; no interpolation.
* `reliability` bins probabilities in equal-width bins exactly like `BinaryQuality` does
  (a probability p goes to bin min(bins - 1, floor(p * bins))) and returns the expected
  calibration error with the table.
* `fit_logistic` / `cross_validated_logistic`: L2-regularised logistic regression on
  standardised features (scipy L-BFGS), with folds given by the caller, e.g. `fold_of`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from models.learning.quality import exact_auc

__all__ = [
    "LogisticModel",
    "brier",
    "cross_validated_logistic",
    "cumulative_gain",
    "ece",
    "fit_logistic",
    "fold_of",
    "lift_table",
    "log_loss",
    "mae",
    "pr_auc",
    "precision_lift",
    "ranking",
    "reliability",
    "rmse",
    "roc_auc",
]

_EPS = 1e-15

Values = Sequence[float] | Sequence[bool] | Sequence[int] | np.ndarray
"""Labels, scores or flags: a sequence or a one-dimensional numpy array."""


def roc_auc(labels: Values, scores: Values) -> float | None:
    """ROC AUC: the probability a random positive scores above a random negative (ties 1/2).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([1, 1], [0.2, 0.3]) is None
    True
    """
    y = np.asarray(labels, dtype=float).tolist()
    return exact_auc(y, np.asarray(scores, dtype=float).tolist())


def pr_auc(labels: Values, scores: Values) -> float | None:
    """Average precision (area under the precision-recall steps); None without positives.

    >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y = np.asarray(labels, dtype=float) > 0
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    # the last position of each run of equal scores is one threshold
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp_at = tp[last].astype(float)
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    gained = np.diff(np.r_[0.0, recall])
    return float((gained * precision).sum())


def log_loss(labels: Values, probs: Values) -> float | None:
    """Mean negative log-likelihood of the labels, probabilities clipped to [1e-15, 1 - 1e-15].

    >>> round(log_loss([1, 0], [0.8, 0.4]), 4)
    0.367
    """
    y = np.asarray(labels, dtype=float)
    if len(y) == 0:
        return None
    p = np.clip(np.asarray(probs, dtype=float), _EPS, 1 - _EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def brier(labels: Values, probs: Values) -> float | None:
    """Mean squared difference between probability and 0/1 outcome.

    >>> round(brier([1, 0], [0.8, 0.4]), 4)
    0.1
    """
    y = np.asarray(labels, dtype=float)
    if len(y) == 0:
        return None
    p = np.asarray(probs, dtype=float)
    return float(((p - y) ** 2).mean())


def reliability(
    labels: Values, probs: Values, bins: int = 10
) -> tuple[float | None, list[dict[str, Any]]]:
    """Expected calibration error and the reliability table over `bins` equal-width bins.

    ECE = sum over bins of (share of customers in the bin) x |mean predicted - observed rate|.
    Every bin is listed; an empty one has n = 0 and None for its means.

    >>> e, table = reliability([0, 1, 1], [0.05, 0.15, 0.95], bins=2)
    >>> round(e, 4), [(row["n"], row["observed"]) for row in table]
    (0.2833, [(2, 0.5), (1, 1.0)])
    """
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probs, dtype=float)
    n = len(y)
    idx = np.minimum(bins - 1, np.floor(p * bins).astype(int)) if n else np.zeros(0, int)
    idx = np.maximum(idx, 0)
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        count = int(mask.sum())
        mean_p = float(p[mask].mean()) if count else None
        observed = float(y[mask].mean()) if count else None
        if mean_p is not None and observed is not None:
            ece += count / n * abs(mean_p - observed)
        table.append(
            {
                "lower": round(b / bins, 6),
                "upper": round((b + 1) / bins, 6),
                "n": count,
                "mean_predicted": mean_p,
                "observed": observed,
            }
        )
    return (ece if n else None), table


def ece(labels: Values, probs: Values, bins: int = 10) -> float | None:
    """Expected calibration error (see `reliability`).

    >>> round(ece([0, 1], [0.2, 0.8]) or 0.0, 4)
    0.2
    """
    return reliability(labels, probs, bins)[0]


def mae(actual: Values, predicted: Values) -> float | None:
    """Mean absolute error.

    >>> mae([0, 2, 1], [1, 1, 1])
    0.6666666666666666
    """
    a = np.asarray(actual, dtype=float)
    if len(a) == 0:
        return None
    return float(np.abs(np.asarray(predicted, dtype=float) - a).mean())


def rmse(actual: Values, predicted: Values) -> float | None:
    """Root mean squared error.

    >>> rmse([0, 2], [1, 1])
    1.0
    """
    a = np.asarray(actual, dtype=float)
    if len(a) == 0:
        return None
    return float(math.sqrt(((np.asarray(predicted, dtype=float) - a) ** 2).mean()))


def ranking(scores: Values) -> np.ndarray:
    """Positions from the highest score down; ties keep input order (deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def cumulative_gain(labels: Values, scores: Values) -> np.ndarray:
    """Share of all positives among the top k customers by score, for k = 0..n (n + 1 values).

    >>> cumulative_gain([0, 1, 0, 1], [0.1, 0.9, 0.5, 0.3]).tolist()
    [0.0, 0.5, 0.5, 1.0, 1.0]
    """
    y = np.asarray(labels, dtype=float)[ranking(scores)] > 0
    total = y.sum()
    cum = np.r_[0.0, np.cumsum(y)]
    return cum / total if total else cum


def lift_table(
    labels: Values, scores: Values, groups: int = 10
) -> list[dict[str, Any]]:
    """Customers ranked by score, cut in `groups` near-equal groups (deciles by default).

    Per group: n, positives, rate, lift = rate / overall rate, and the cumulative share of
    customers, of positives (the gain) and the cumulative lift. Ties are ranked in input order.

    >>> t = lift_table([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], groups=2)
    >>> [(row["positives"], row["lift"], row["cumulative_gain"]) for row in t]
    [(1, 1.0, 0.5), (1, 1.0, 1.0)]
    """
    y = np.asarray(labels, dtype=float)[ranking(scores)] > 0
    n = len(y)
    total = int(y.sum())
    base = total / n if n else 0.0
    rows: list[dict[str, Any]] = []
    cum_n = cum_pos = 0
    for g in range(groups):
        lo, hi = g * n // groups, (g + 1) * n // groups
        count, pos = hi - lo, int(y[lo:hi].sum())
        cum_n += count
        cum_pos += pos
        rate = pos / count if count else None
        cum_rate = cum_pos / cum_n if cum_n else None
        rows.append(
            {
                "group": g + 1,
                "n": count,
                "positives": pos,
                "rate": rate,
                "lift": rate / base if rate is not None and base else None,
                "cumulative_share": cum_n / n if n else None,
                "cumulative_gain": cum_pos / total if total else None,
                "cumulative_lift": cum_rate / base if cum_rate is not None and base else None,
            }
        )
    return rows


def precision_lift(flagged: Values, labels: Values) -> dict[str, Any]:
    """How good a flag (an alert) is at finding positives, against the base rate of the group.

    >>> precision_lift([True, True, False, False], [1, 0, 0, 0])
    {'n': 4, 'flagged': 2, 'hits': 1, 'precision': 0.5, 'base_rate': 0.25, 'lift': 2.0}
    """
    f = np.asarray(flagged, dtype=bool)
    y = np.asarray(labels, dtype=float) > 0
    n, k, hits = len(y), int(f.sum()), int((f & y).sum())
    base = float(y.mean()) if n else None
    precision = hits / k if k else None
    lift = precision / base if precision is not None and base else None
    return {"n": n, "flagged": k, "hits": hits, "precision": precision, "base_rate": base,
            "lift": lift}


# -- a small supervised classifier -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogisticModel:
    """Weights on standardised features: p = sigmoid(bias + w . (x - mean) / scale)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for the rows of `x` (n x features)."""
        z = (np.asarray(x, dtype=float) - np.asarray(self.mean)) / np.asarray(self.scale)
        return _sigmoid(self.bias + z @ np.asarray(self.weights))


def fit_logistic(x: np.ndarray, y: Values, l2: float = 1.0) -> LogisticModel:
    """Maximum a posteriori logistic regression: log loss summed + l2/2 x |w|^2 (bias free).

    Features are standardised on these rows first, so one l2 suits every feature.

    >>> m = fit_logistic(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1], l2=0.1)
    >>> p = m.predict(np.array([[0.0], [3.0]]))
    >>> bool(p[0] < 0.2 and p[1] > 0.8)
    True
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    mean = xs.mean(axis=0)
    scale = xs.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (xs - mean) / scale
    k = z.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k]
        t = b + z @ w
        loss = float((np.logaddexp(0.0, t) - ys * t).sum() + 0.5 * l2 * (w @ w))
        err = _sigmoid(t) - ys
        grad = np.r_[z.T @ err + l2 * w, err.sum()]
        return loss, grad

    res = optimize.minimize(
        objective, np.zeros(k + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}
    )
    theta = res.x
    return LogisticModel(
        tuple(float(v) for v in theta[:k]),
        float(theta[k]),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
    )


def cross_validated_logistic(
    x: np.ndarray, y: Values, folds: Values, l2: float = 1.0
) -> np.ndarray:
    """Out-of-fold probabilities: each row is predicted by a model fitted on the other folds.

    >>> x = np.array([[v] for v in range(8)], dtype=float)
    >>> p = cross_validated_logistic(x, [0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 0, 1, 0, 1])
    >>> [round(float(v), 2) for v in p]
    [0.16, 0.3, 0.3, 0.5, 0.5, 0.7, 0.7, 0.84]
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    f = np.asarray(folds)
    out = np.zeros(len(ys))
    for fold in sorted(set(f.tolist())):
        test = f == fold
        train = ~test
        if not train.any() or len(set(ys[train].tolist())) < 2:
            out[test] = ys[train].mean() if train.any() else 0.5
            continue
        out[test] = fit_logistic(xs[train], ys[train], l2).predict(xs[test])
    return out


def fold_of(key: str, k: int = 5) -> int:
    """Stable fold number 0..k-1 of a key (BLAKE2b of its UTF-8 bytes, not Python's hash).

    >>> fold_of("C1") == fold_of("C1"), 0 <= fold_of("C1") < 5
    (True, True)
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % k


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -t))
