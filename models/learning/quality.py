"""Progressive model quality on predictions logged before their label was known.

Every number here is computed from (logged prediction, later label) pairs, so it measures how
the model did on data it had not seen: ROC AUC (exact over a rolling window via River's
RollingROCAUC, and exact over everything seen when `keep_all`), log loss, Brier score and a
calibration table with its expected calibration error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from river import metrics

__all__ = ["BinaryQuality", "RegressionQuality", "exact_auc"]

_EPS = 1e-15


def exact_auc(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); None if one class is absent.

    >>> exact_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    pairs = sorted(zip(scores, labels, strict=True))
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j) / 2 + 1
        rank_sum += avg_rank * sum(1 for k in range(i, j + 1) if pairs[k][1])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class BinaryQuality:
    """Progressive quality of a probabilistic binary classifier.

    >>> q = BinaryQuality(keep_all=True)
    >>> for y, p in [(1, 0.9), (0, 0.2), (1, 0.6), (0, 0.7)]:
    ...     q.update(y, p)
    >>> r = q.report()
    >>> r["auc"], r["auc_window"], r["n"], round(r["brier"], 3)
    (0.75, 0.75, 4, 0.175)
    """

    def __init__(self, window: int = 10_000, keep_all: bool = False, bins: int = 10) -> None:
        self.rolling = metrics.RollingROCAUC(window_size=window)
        self.keep_all = keep_all
        self.labels: list[float] = []
        self.scores: list[float] = []
        self.n = 0
        self.positives = 0
        self.log_loss_sum = 0.0
        self.brier_sum = 0.0
        self.bins = bins
        self.cal = [[0, 0.0, 0.0] for _ in range(bins)]  # n, sum p, sum y

    def update(self, label: float, p: float) -> None:
        """Record one logged probability and its resolved label."""
        y = 1.0 if label else 0.0
        self.rolling.update(bool(y), p)
        if self.keep_all:
            self.labels.append(y)
            self.scores.append(p)
        self.n += 1
        self.positives += int(y)
        pc = min(1 - _EPS, max(_EPS, p))
        self.log_loss_sum -= y * math.log(pc) + (1 - y) * math.log(1 - pc)
        self.brier_sum += (p - y) ** 2
        b = self.cal[min(self.bins - 1, int(p * self.bins))]
        b[0] += 1
        b[1] += p
        b[2] += y

    def report(self) -> dict[str, Any]:
        """Metrics as a JSON-friendly dict (None where undefined)."""
        n = self.n
        table = []
        ece = 0.0
        for i, (c, sp, sy) in enumerate(self.cal):
            if not c:
                continue
            mean_p, observed = sp / c, sy / c
            ece += c / n * abs(mean_p - observed)
            table.append(
                {
                    "bin": f"{i / self.bins:.1f}-{(i + 1) / self.bins:.1f}",
                    "n": c,
                    "mean_predicted": round(mean_p, 4),
                    "observed": round(observed, 4),
                }
            )
        auc_window = self.rolling.get() if 0 < self.positives < n else None
        return {
            "n": n,
            "positives": self.positives,
            "base_rate": round(self.positives / n, 4) if n else None,
            "auc": _r(exact_auc(self.labels, self.scores)) if self.keep_all else None,
            "auc_window": _r(auc_window),
            "log_loss": _r(self.log_loss_sum / n) if n else None,
            "brier": _r(self.brier_sum / n) if n else None,
            "ece": _r(ece) if n else None,
            "calibration": table,
        }


class RegressionQuality:
    """Progressive quality of a count forecast: MAE, RMSE, bias, and ranking of who is > 0.

    >>> q = RegressionQuality(keep_all=True)
    >>> for y, p in [(0, 0.1), (2, 1.5), (0, 0.3), (1, 0.9)]:
    ...     q.update(y, p)
    >>> r = q.report()
    >>> r["mae"], r["auc_positive"]
    (0.25, 1.0)
    """

    def __init__(self, keep_all: bool = False) -> None:
        self.keep_all = keep_all
        self.labels: list[float] = []
        self.scores: list[float] = []
        self.n = 0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.sum_pred = 0.0
        self.sum_actual = 0.0

    def update(self, label: float, prediction: float) -> None:
        """Record one logged prediction and its resolved outcome."""
        self.n += 1
        self.abs_sum += abs(prediction - label)
        self.sq_sum += (prediction - label) ** 2
        self.sum_pred += prediction
        self.sum_actual += label
        if self.keep_all:
            self.labels.append(label)
            self.scores.append(prediction)

    def report(self) -> dict[str, Any]:
        """Metrics as a JSON-friendly dict (None where undefined)."""
        n = self.n
        auc = exact_auc([1.0 if y > 0 else 0.0 for y in self.labels], self.scores)
        return {
            "n": n,
            "mae": _r(self.abs_sum / n) if n else None,
            "rmse": _r(math.sqrt(self.sq_sum / n)) if n else None,
            "mean_predicted": _r(self.sum_pred / n) if n else None,
            "mean_actual": _r(self.sum_actual / n) if n else None,
            "auc_positive": _r(auc) if self.keep_all else None,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
