"""Churn model: probability that a customer churns within the horizon, with its top factors.

Churn means an explicit cancellation (crm subscription_cancelled) or no interaction for the
whole horizon (default 90 days) after the snapshot. Two models answer it, side by side:

* **the baseline**, from the customer's first event: BG/NBD over *active days* (a day with at
  least one interaction; one visit is many events, and on orders-only data an active day is a
  purchase day). P(churn) = P(no active day in the next horizon | x, t_x, T) (see
  `models.learning.value.p_no_transaction`), with population parameters the learner fits on a
  sample of customers' activity summaries; a cancelled subscription makes it at least
  `CANCELLED_CHURN`. A principled answer for everyone, never one constant for all.
* **the classifier**, a River LogisticRegression on standard-scaled behavioural features
  (the baseline's own answer among them, about 20 us per predict + learn) with an isotonic
  calibrator on the most recent held predictions (`models.learning.calibration`).

Champion/challenger, per segment (customers whose active days are all purchase days, and the
others): every resolved label scores both models on what they said before it existed (the
baseline's answer is in the snapshot; the classifier predicts before it learns), and an
exponentially weighted log loss (about the last `ARENA_WINDOW` labels) picks the champion.
The classifier serves a segment only once it has `churn_min_labels` labels and beats the
baseline there by `ARENA_MARGIN`. Bundles published before calibrator format 2 restore with
their original Platt calibrator.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from models.config import ScoringConfig
from models.learning.calibration import (
    CALIBRATOR_FORMAT,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    sigmoid,
)
from models.learning.linear import ScaledLinear
from models.learning.prediction import Factor, Prediction, top_factors
from models.learning.value import BGNBDParams, p_alive
from models.scoring.features import FEATURE_LABELS

__all__ = [
    "ACTIVITY_PRIOR",
    "ARENA_MARGIN",
    "ARENA_WINDOW",
    "BASELINE",
    "CANCELLED_CHURN",
    "CLASSIFIER",
    "MULTICHANNEL",
    "ORDERS_ONLY",
    "SEGMENTS",
    "Arena",
    "ChurnModel",
    "logit",
    "segment_of",
]

ORDERS_ONLY = "orders_only"
MULTICHANNEL = "multichannel"
SEGMENTS: tuple[str, ...] = (ORDERS_ONLY, MULTICHANNEL)
BASELINE = "bgnbd"
CLASSIFIER = "classifier"
ARENA_WINDOW = 1000
"""Labels the champion/challenger log losses average over (exponential weights)."""
ARENA_MARGIN = 0.02
"""Relative log-loss improvement the classifier needs to take over a segment."""
CANCELLED_CHURN = 0.9
"""Least churn probability of a customer whose subscription was cancelled and not restarted."""
ACTIVITY_PRIOR = BGNBDParams(r=0.3, alpha=15.0, a=0.8, b=2.5)
"""Activity-day BG/NBD parameters until the learner has fitted its own (days)."""
_EPS = 1e-6
_ONE_LESS_EPS = 1.0 - _EPS
_SILENCE = ("silence_vs_cadence", f"{FEATURE_LABELS['silence_vs_cadence']}: high")
_FEW_DAYS = ("active_days", f"{FEATURE_LABELS['active_days']}: low")


def logit(p: float) -> float:
    """log(p / (1 - p)), with p kept 1e-6 away from 0 and 1 (the baseline as a feature)."""
    p = _clip(p)
    return math.log(p / (1.0 - p))


def _clip(p: float) -> float:
    """min(1 - 1e-6, max(1e-6, p)) in two comparisons (NaN gives 1e-6, as there)."""
    p = p if p > _EPS else _EPS
    return p if p < _ONE_LESS_EPS else _ONE_LESS_EPS


def segment_of(orders_only: float) -> str:
    """The segment of a customer with feature `orders_only` (1.0: only ever ordered)."""
    return ORDERS_ONLY if orders_only >= 0.5 else MULTICHANNEL


def _log_loss(label: float, p: float) -> float:
    p = _clip(p)
    return -math.log(p if label else 1.0 - p)


class Arena:
    """Exponentially weighted log loss of the baseline and the classifier on one segment."""

    __slots__ = ("baseline", "classifier", "n")

    def __init__(self, n: int = 0, baseline: float = 0.0, classifier: float = 0.0) -> None:
        self.n = n
        self.baseline = baseline
        self.classifier = classifier

    def update(self, label: float, p_baseline: float, p_classifier: float) -> None:
        """One resolved label and what each model said before it."""
        self.n += 1
        w = max(1.0 / self.n, 1.0 / ARENA_WINDOW)
        self.baseline += w * (_log_loss(label, p_baseline) - self.baseline)
        self.classifier += w * (_log_loss(label, p_classifier) - self.classifier)

    def to_list(self) -> list[float]:
        """JSON-friendly form."""
        return [self.n, round(self.baseline, 6), round(self.classifier, 6)]


class ChurnModel:
    """The churn baseline and classifier, and which of them serves each segment.

    Features are `features.FEATURE_NAMES`; `baseline_churn` among them is the baseline's
    answer as a logit (the engine computes it with `baseline`), so a snapshot carries both
    models' inputs. Factors name what raises the risk.

    >>> m = ChurnModel()
    >>> silent = {"recency_days": 4.5, "interactions_30d": 0.0, "baseline_churn": 2.0}
    >>> active = {"recency_days": 0.7, "interactions_30d": 2.5, "baseline_churn": -2.0}
    >>> round(m.predict(silent, ORDERS_ONLY).value, 3), m.champion[ORDERS_ONLY]
    (0.881, 'bgnbd')
    >>> for _ in range(400):  # with what the classifier said at each snapshot
    ...     m.learn(silent, 1.0, MULTICHANNEL, m.classifier_probability(silent))
    ...     m.learn(active, 0.0, MULTICHANNEL, m.classifier_probability(active))
    >>> p = m.predict(silent, MULTICHANNEL)
    >>> m.champion[MULTICHANNEL], p.value > 0.95 > 0.05 > m.predict(active, MULTICHANNEL).value
    ('classifier', True)
    >>> ChurnModel.restore(m.snapshot()).predict(silent, MULTICHANNEL) == p
    True
    """

    name = "churn"

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self.linear = ScaledLinear(classifier=True, lr=0.02, l2=1e-4)
        self.calibrator: Calibrator = IsotonicCalibrator()
        self.n_learned = 0
        self.n_positive = 0
        self.version = "churn-00000"
        self.activity: dict[str, BGNBDParams] = dict.fromkeys(SEGMENTS, ACTIVITY_PRIOR)
        """Activity-day BG/NBD parameters per segment: a customer who only ever orders and
        one who visits every week follow different activity processes."""
        self.activity_fitted_on: dict[str, int] = dict.fromkeys(SEGMENTS, 0)
        self.champion: dict[str, str] = dict.fromkeys(SEGMENTS, BASELINE)
        self.arena: dict[str, Arena] = {segment: Arena() for segment in SEGMENTS}

    # -- the baseline ------------------------------------------------------------------------

    def baseline(self, activity: tuple[float, float, float] | None, cancelled: bool,
                 segment: str = ORDERS_ONLY) -> tuple[float, float, float]:
        """P(no active day within the horizon | x, t_x, T of active days), with its two
        parts: P(alive) and P(no activity in the horizon | alive), under the segment's
        parameters. No activity yet reads as a customer seen today for the first time."""
        x, t_x, big_t = activity if activity is not None else (0.0, 0.0, 0.0)
        a = self.activity.get(segment, ACTIVITY_PRIOR)
        alive = p_alive(a, x, t_x, big_t)
        quiet = math.exp((a.r + x) * (math.log(a.alpha + big_t) - math.log(
            a.alpha + big_t + self.config.churn_horizon_days)))
        p = 1.0 - alive * (1.0 - quiet)  # models.learning.value.p_no_transaction
        return (max(p, CANCELLED_CHURN) if cancelled else p), alive, quiet

    @staticmethod
    def baseline_factors(alive: float, quiet: float) -> tuple[Factor, ...]:
        """Why the baseline says what it says, in the two parts of its answer: evidence that
        the customer stopped (silence against their own cadence: -log P(alive)) and a low
        activity rate (-log P(some activity in the horizon | alive)). Labels have the
        classifier's shape, so a scorecard's factors read the same after a round trip."""
        stopped = -math.log(alive if alive > _EPS else _EPS)
        stopped = round(stopped, 4) if stopped else stopped  # alive == 1: no costly round()
        slow = round(-math.log(1.0 - quiet if quiet < 1.0 - _EPS else _EPS), 4)
        # Only the positive parts are factors: most scores build one Factor, not two.
        if stopped >= slow:
            if slow > 0:
                return (Factor(_SILENCE[0], _SILENCE[1], stopped),
                        Factor(_FEW_DAYS[0], _FEW_DAYS[1], slow))
            return (Factor(_SILENCE[0], _SILENCE[1], stopped),) if stopped > 0 else ()
        if stopped > 0:
            return (Factor(_FEW_DAYS[0], _FEW_DAYS[1], slow),
                    Factor(_SILENCE[0], _SILENCE[1], stopped))
        return (Factor(_FEW_DAYS[0], _FEW_DAYS[1], slow),) if slow > 0 else ()

    # -- serving -----------------------------------------------------------------------------

    def predict(self, features: dict[str, float], segment: str = ORDERS_ONLY,
                baseline: float | None = None) -> Prediction:
        """The serving model's churn probability for a customer of `segment`, with factors;
        `baseline`: the baseline's probability when the caller has it (the feature
        `baseline_churn` is its logit)."""
        if self.champion.get(segment) == CLASSIFIER and self.ready:
            logit, contrib, z = self.linear.explain(features)
            p = self.calibrator.probability(logit)
            return Prediction(round(p, 4), top_factors(contrib, FEATURE_LABELS, z),
                              self.version)
        p = sigmoid(features.get("baseline_churn", 0.0)) if baseline is None else _clip(baseline)
        return Prediction(round(p, 4), (), self.version)

    @property
    def ready(self) -> bool:
        """Whether the classifier has learned enough labels to be used at all."""
        return self.n_learned >= self.config.churn_min_labels

    def classifier_probability(self, features: dict[str, float]) -> float | None:
        """The calibrated classifier's answer (None before it is ready)."""
        if not self.ready:
            return None
        return self.calibrator.probability(self.linear.score(features))

    # -- learning ----------------------------------------------------------------------------

    def learn(self, features: dict[str, float], label: float,
              segment: str = ORDERS_ONLY, challenger: float | None = None) -> None:
        """Learn one resolved label: first score both models on what each said when the
        snapshot was taken (`challenger`: the classifier's logged answer; without it the
        label is learned but not scored), then update the classifier and the champion.

        The classifier takes a segment over once it beats the baseline by `ARENA_MARGIN`
        and hands it back only once the baseline is better again (not at the margin's edge,
        where every label would flip a whole segment's probabilities)."""
        held = self.linear.score(features)
        if challenger is not None:
            arena = self.arena.setdefault(segment, Arena())
            p_base = sigmoid(features.get("baseline_churn", 0.0))
            arena.update(label, p_base, challenger)
            if self.champion.get(segment) == CLASSIFIER:
                keep = arena.classifier < arena.baseline
            else:
                keep = arena.classifier < arena.baseline * (1.0 - ARENA_MARGIN) and arena.n >= 50
            self.champion[segment] = CLASSIFIER if keep else BASELINE
        self.calibrator.update(held, label)
        self.linear.learn(features, label)
        self.n_learned += 1
        self.n_positive += 1 if label else 0

    def fit_activity(self, segment: str, params: BGNBDParams, rows: int) -> None:
        """Adopt a segment's activity-day BG/NBD parameters, fitted on `rows` customers."""
        self.activity[segment] = params
        self.activity_fitted_on[segment] = rows

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly state."""
        return {
            "version": self.version,
            "n_learned": self.n_learned,
            "n_positive": self.n_positive,
            "linear": self.linear.to_dict(),
            "calibrator": self.calibrator.to_dict(),
            "activity": {k: [a.r, a.alpha, a.a, a.b] for k, a in sorted(self.activity.items())},
            "activity_fitted_on": dict(sorted(self.activity_fitted_on.items())),
            "champion": dict(sorted(self.champion.items())),
            "arena": {k: v.to_list() for k, v in sorted(self.arena.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: ScoringConfig | None = None) -> ChurnModel:
        """Inverse of `to_dict` (bundles from before the baseline restore with its prior)."""
        m = cls(config)
        m.version = d["version"]
        m.n_learned = d["n_learned"]
        m.n_positive = d["n_positive"]
        m.linear = ScaledLinear.from_dict(d["linear"])
        cal = d["calibrator"]
        if cal.get("format", 1) >= CALIBRATOR_FORMAT:
            m.calibrator = IsotonicCalibrator.from_dict(cal)
        else:
            m.calibrator = PlattCalibrator.from_dict(cal)
        if "activity" in d:
            m.activity.update({k: BGNBDParams(*v) for k, v in d["activity"].items()})
            m.activity_fitted_on.update(d["activity_fitted_on"])
            m.champion.update(d["champion"])
            m.arena.update({k: Arena(*v) for k, v in d["arena"].items()})
        return m

    def snapshot(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> ChurnModel:
        """Rebuild from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b), config)
