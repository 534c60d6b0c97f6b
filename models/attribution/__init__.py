"""Multi-touch attribution: which marketing touches earned a conversion's value.

- `touches`: the `Touch` and `Conversion` values and the lookback window that picks a
  conversion's touches.
- `rules`: the rule-based models (last click, first click, linear, time decay,
  position-based), each a split of one conversion's value over its touches.
- `markov`: data-driven attribution, the removal effects of an absorbing Markov chain of
  channel paths (`TransitionCounts`), and a conversion's value split by them.
- `journey`: what the scoring engine keeps and makes: a customer's recent touches (in its
  state), which events are touches and conversions, and `Attribution`, one conversion under
  every rule-based model (the attributions topic's record).
- `totals`: running totals of attributions per conversion day, per model, channel and
  campaign (the API's report, the gauges).
"""

__all__ = [
    "journey",
    "markov",
    "rules",
    "totals",
    "touches",
]
