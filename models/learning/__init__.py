"""Learning: the online models, their calibration and quality, and the learner.

- `churn`, `engagement`, `value`: the three models a scorecard asks.
- `linear`, `calibration`, `prediction`: what they are built from.
- `quality`: delayed-label quality of every model.
- `learner`: `Learner`, which learns from resolved labels and publishes bundles.
- `bundle`: `ModelBundle`, the versioned set of models every scorer loads.
"""

__all__ = [
    "bundle",
    "calibration",
    "churn",
    "engagement",
    "learner",
    "linear",
    "prediction",
    "quality",
    "value",
]
