"""Whole histories without Kafka: generate one, replay it, evaluate scores on it.

- `generate`: deterministic synthetic histories (the `stories` and `retail` profiles).
- `replay`: the scoring core over a recorded history, in event-time order.
- `backtest`: scorecards frozen at a split, judged by what followed.
- `metrics`: ranking, calibration and error metrics of the evaluation.
"""

__all__ = [
    "backtest",
    "generate",
    "metrics",
    "replay",
]
