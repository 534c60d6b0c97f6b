"""A River standard-scaler + linear model pair with explainable contributions and JSON state.

Churn and engagement both need the same three things from River: learn one example, score one
customer, and say which features pushed the score (weight x standardised value). Snapshots are
plain JSON of the fitted numbers, not pickles, so a published model is safe to load and diff.
"""

from __future__ import annotations

import math
from typing import Any

from river import linear_model, optim, preprocessing, utils

__all__ = ["ScaledLinear"]


class ScaledLinear:
    """StandardScaler followed by LogisticRegression (classifier) or LinearRegression.

    >>> m = ScaledLinear(classifier=True)
    >>> for i in range(200):
    ...     m.learn({"a": float(i % 2)}, float(i % 2))
    >>> m.score({"a": 1.0}) > 0 > m.score({"a": 0.0})
    True
    """

    __slots__ = ("_cache", "classifier", "lr", "model", "scaler")

    def __init__(self, *, classifier: bool, lr: float = 0.02, l2: float = 1e-4) -> None:
        self.classifier = classifier
        self.lr = lr
        self.scaler = preprocessing.StandardScaler()
        cls = linear_model.LogisticRegression if classifier else linear_model.LinearRegression
        self.model: Any = cls(optimizer=optim.SGD(lr), l2=l2)
        self._cache: dict[str, tuple[float, float, float]] | None = None

    def _params(self) -> dict[str, tuple[float, float, float]]:
        """(mean, 1/std, weight) per feature, rebuilt lazily after learning.

        Scorers only predict between bundle publications, so this turns four dict lookups and
        a square root per feature into one lookup.
        """
        if self._cache is None:
            means, var, w = self.scaler.means, self.scaler.vars, self.model._weights
            self._cache = {
                k: (means[k], 1.0 / math.sqrt(var[k]) if var[k] > 0 else 0.0, w.get(k, 0.0))
                for k in self.scaler.counts
            }
        return self._cache

    def standardise(self, x: dict[str, float]) -> dict[str, float]:
        """Features scaled by running mean and std (0 before any data), clipped to +-5.

        Clipping keeps one outlier (or a feature that was constant until now) from blowing
        up an SGD step, the usual way online linear models diverge.
        """
        params = self._params()
        out = {}
        for k, v in x.items():
            t = params.get(k)
            if t is None:
                out[k] = 0.0
                continue
            zk = (v - t[0]) * t[1]
            out[k] = 5.0 if zk > 5.0 else (-5.0 if zk < -5.0 else zk)
        return out

    def explain(self, x: dict[str, float]) -> tuple[float, dict[str, float], dict[str, float]]:
        """Raw score, each feature's weight x standardised value, and the standardised values."""
        params = self._params()
        z = {}
        contrib = {}
        total = self.model.intercept
        for k, v in x.items():
            t = params.get(k)
            if t is None:
                z[k] = contrib[k] = 0.0
                continue
            zk = (v - t[0]) * t[1]
            zk = 5.0 if zk > 5.0 else (-5.0 if zk < -5.0 else zk)
            z[k] = zk
            c = t[2] * zk
            contrib[k] = c
            total += c
        return total, contrib, z

    def score(self, x: dict[str, float]) -> float:
        """Raw score: logit for the classifier, prediction for the regressor."""
        return self.explain(x)[0]

    def learn(self, x: dict[str, float], y: float) -> None:
        """One SGD step on (x, y), after updating the scaler (River pipeline order)."""
        self.scaler.learn_one(x)
        self._cache = None
        z = self.standardise(x)
        self.model.learn_one(z, bool(y) if self.classifier else float(y))
        self._cache = None  # the weights moved too

    def to_dict(self) -> dict[str, Any]:
        """Fitted numbers as JSON-friendly data."""
        return {
            "classifier": self.classifier,
            "lr": self.lr,
            "l2": self.model.l2,
            "counts": dict(sorted(self.scaler.counts.items())),
            "means": dict(sorted(self.scaler.means.items())),
            "vars": dict(sorted(self.scaler.vars.items())),
            "weights": dict(sorted(self.model._weights.items())),
            "intercept": self.model.intercept,
            "n_iterations": self.model.optimizer.n_iterations,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScaledLinear:
        """Inverse of `to_dict`."""
        m = cls(classifier=d["classifier"], lr=d["lr"], l2=d["l2"])
        m.scaler.counts.update(d["counts"])
        m.scaler.means.update(d["means"])
        m.scaler.vars.update(d["vars"])
        m.model._weights = utils.VectorDict(dict(d["weights"]))
        m.model.intercept = d["intercept"]
        m.model.optimizer.n_iterations = d["n_iterations"]
        m._cache = None
        return m
