"""Multi-touch attribution: which marketing touches earned a conversion's value.

- `touches`: the `Touch` and `Conversion` values and the lookback window that picks a
  conversion's touches.
- `rules`: the rule-based models (last click, first click, linear, time decay,
  position-based), each a split of one conversion's value over its touches.
- `markov`: data-driven attribution, the removal effects of an absorbing Markov chain of
  channel paths (`TransitionCounts`), and a conversion's value split by them.
"""

__all__ = [
    "markov",
    "rules",
    "touches",
]
