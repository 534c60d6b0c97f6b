"""The learner: turns resolved training examples into new, versioned model bundles.

Scorers are partitioned; learning examples are few (one per customer per horizon), so a single
learner trains the global models and publishes bundles that every scorer loads. Quality does
then not depend on how many scorers run. Quality is measured here too, on the predictions the
scorers logged when they took each snapshot (before the label existed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.learning.calibration import sigmoid
from models.learning.churn import SEGMENTS, segment_of
from models.learning.quality import BinaryQuality, RegressionQuality
from models.learning.value import fit_bgnbd
from models.scoring.engine import ACTIVITY_POPULATION, VALUE_POPULATION
from models.scoring.labels import ADVOCACY, CHURN, ENGAGEMENT, UPSELL, VALUE, TrainingExample
from models.scoring.tiers import TierThresholds

__all__ = ["ACTIVITY_MIN_AGE_DAYS", "Learner"]

ACTIVITY_MIN_AGE_DAYS = 30
"""Days since the first activity before a customer's summary joins the activity fit."""


class Learner:
    """Consumes training examples, learns, measures and publishes `ModelBundle`s.

    Held-back customers' examples are measured but never learned, so `quality["churn_holdout"]`
    is an honest estimate on customers the model never saw. RFM summaries for the value model's
    population fit are kept as a bottom-k hash sample (deterministic, unbiased, bounded).

    >>> from models.scoring.labels import TrainingExample
    >>> learner = Learner()
    >>> ex = TrainingExample("churn", "C1", {"recency_days": 4.0}, 1.0, 0.2, "churn-00000", 0, 1)
    >>> learner.learn([ex])
    1
    >>> bundle = learner.publish()
    >>> bundle.versions()["churn"], bundle.churn.n_learned
    ('churn-00001', 1)
    """

    def __init__(
        self,
        config: ScoringConfig | None = None,
        bundle: ModelBundle | None = None,
        *,
        population_cap: int = 50_000,
        keep_predictions: bool = True,
    ) -> None:
        self.config = config or ScoringConfig()
        start = bundle or ModelBundle.initial(self.config)
        self.models = ModelBundle.restore(start.snapshot(), self.config)
        self.population_cap = population_cap
        self.population: dict[str, tuple[int, dict[str, float]]] = {}
        self.activity: dict[str, tuple[int, dict[str, float]]] = {}
        """Active-day summaries (x, t_x, T), the same kind of sample, for the churn baseline."""
        self.activity_seen = 0
        self._activity_fitted_seen = 0
        self.changed: set[str] = set()
        self.quality: dict[str, Any] = {
            "churn": BinaryQuality(keep_all=keep_predictions),
            "churn_holdout": BinaryQuality(keep_all=keep_predictions),
            # Both churn models on every resolved label, whichever served: the snapshot holds
            # the baseline's answer among its features and the classifier's beside them.
            "churn_baseline": BinaryQuality(keep_all=keep_predictions),
            "churn_classifier": BinaryQuality(keep_all=keep_predictions),
            "engagement": RegressionQuality(keep_all=keep_predictions),
            "value": RegressionQuality(keep_all=keep_predictions),
            # Served upsell probabilities (the heuristic's until the classifier is ready) and
            # the P(promoter) the advocacy model answered before each NPS answer it learned.
            "upsell": BinaryQuality(keep_all=keep_predictions),
            "advocacy": BinaryQuality(keep_all=keep_predictions),
        }
        self.examples_seen = 0

    def learn(self, examples: Iterable[TrainingExample]) -> int:
        """Measure, then learn each example (not held-back ones); returns how many were learned."""
        learned = 0
        m = self.models
        for ex in examples:
            self.examples_seen += 1
            if ex.model == VALUE_POPULATION:
                self._remember(self.population, ex.customer_id, ex.features)
                continue
            if ex.model == ACTIVITY_POPULATION:
                self._remember(self.activity, ex.customer_id, ex.features)
                self.activity_seen += 1
                continue
            if ex.model == CHURN:
                self.quality["churn_holdout" if ex.holdout else "churn"].update(
                    ex.label, ex.prediction
                )
                self.quality["churn_baseline"].update(
                    ex.label, sigmoid(ex.features.get("baseline_churn", 0.0)))
                if ex.challenger is not None:
                    self.quality["churn_classifier"].update(ex.label, ex.challenger)
            elif ex.model in (ENGAGEMENT, VALUE, UPSELL):
                self.quality[ex.model].update(ex.label, ex.prediction)
            elif ex.model == ADVOCACY and ex.challenger is not None:
                self.quality[ADVOCACY].update(ex.label, ex.challenger)
            if ex.holdout:
                continue
            if ex.model == CHURN:
                m.churn.learn(ex.features, ex.label,
                              segment_of(ex.features.get("orders_only", 1.0)), ex.challenger)
            elif ex.model == ENGAGEMENT:
                m.engagement.learn(ex.features, ex.label)
            elif ex.model == VALUE:
                m.value.learn(ex.features, ex.label)
            elif ex.model == UPSELL:
                m.upsell.learn(ex.features, ex.label)
            elif ex.model == ADVOCACY:
                m.advocacy.learn(ex.features, ex.label)
            else:
                continue
            self.changed.add(ex.model)
            learned += 1
        return learned

    def forget(self, customer_id: str) -> bool:
        """Drop an erased customer from the population sample; True if it was in it.

        The models keep only aggregate weights; the sample is the one per-customer record.
        """
        in_activity = self.activity.pop(customer_id, None) is not None
        return self.population.pop(customer_id, None) is not None or in_activity

    def _remember(self, pop: dict[str, tuple[int, dict[str, float]]], customer_id: str,
                  summary: dict[str, float]) -> None:
        h = int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=8).digest(), "big")
        if customer_id in pop or len(pop) < self.population_cap:
            pop[customer_id] = (h, summary)
            return
        worst = max(pop, key=lambda c: pop[c][0])  # rare: only once the sample is full
        if h < pop[worst][0]:
            del pop[worst]
            pop[customer_id] = (h, summary)

    def refit_value(self, rows: Iterable[dict[str, float]] | None = None) -> bool:
        """Refit BG/NBD + Gamma-Gamma on `rows` (default: the population sample)."""
        data = list(rows) if rows is not None else [s for _, s in self.population.values()]
        if self.models.value.fit(data):
            self.changed.add(VALUE)
            return True
        return False

    def activity_due(self, min_rows: int = 50) -> bool:
        """Whether the activity sample changed enough since the last fit to refit it: a
        quarter of it renewed (summaries are replaced as customers live on, so the sample
        moves even once it stops growing)."""
        renewed = self.activity_seen - self._activity_fitted_seen
        return len(self.activity) >= min_rows and renewed >= max(min_rows,
                                                                 len(self.activity) // 4)

    def refit_activity(self, rows: Iterable[dict[str, float]] | None = None,
                       min_rows: int = 50) -> bool:
        """Refit the churn baseline's activity-day BG/NBD on `rows` (default: the sample)."""
        data = list(rows) if rows is not None else [s for _, s in self.activity.values()]
        # Customers of a few days say nothing about dropping out yet, and a sample of only
        # such rows fits degenerate parameters (every churn probability near 0).
        data = [r for r in data if r["T"] >= ACTIVITY_MIN_AGE_DAYS]
        churn, fitted = self.models.churn, False
        for segment in SEGMENTS:
            rows = [r for r in data if segment_of(r.get("orders_only", 1.0)) == segment]
            if len(rows) < min_rows:
                continue
            churn.fit_activity(segment, fit_bgnbd(
                [r["x"] for r in rows], [r["t_x"] for r in rows], [r["T"] for r in rows],
                initial=churn.activity[segment]), len(rows))
            fitted = True
        if fitted:
            self._activity_fitted_seen = self.activity_seen
            self.changed.add(CHURN)
        return fitted

    def publish(self, tiers: TierThresholds | None = None) -> ModelBundle:
        """A new independent bundle; models that changed since the last publish get new versions."""
        m = self.models
        m.sequence += 1
        seq = m.sequence
        if CHURN in self.changed:
            m.churn.version = f"churn-{seq:05d}"
        if ENGAGEMENT in self.changed:
            m.engagement.version = f"engagement-{seq:05d}"
        if VALUE in self.changed:
            m.value.version = f"value-{seq:05d}"
        if UPSELL in self.changed:
            m.upsell.version = f"upsell-{seq:05d}"
        if ADVOCACY in self.changed:
            m.advocacy.version = f"advocacy-{seq:05d}"
        if tiers is not None:
            m.tiers = tiers
        self.changed.clear()
        return ModelBundle.restore(m.snapshot(), self.config)

    def report(self) -> dict[str, Any]:
        """Quality of every model, JSON-friendly."""
        return {name: q.report() for name, q in self.quality.items()}
