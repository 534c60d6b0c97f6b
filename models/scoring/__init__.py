"""Scoring's pure logic: a customer's events in, a scorecard and alerts out.

- `state`: the per-customer state (day buckets, money, labels pending), snapshot and restore.
- `features`: key values and model features of a state as of an event time.
- `engine`: `ScoringEngine`, which applies a batch of events and scores the customer.
- `scorecard`: the `Scorecard` value the API, score changes and alerts carry.
- `alerts`: the alert rules, alert memory and budget; score-change detection.
- `tiers`: tier thresholds and the value histograms they are cut from.
- `labels`: delayed labels (`PendingLabel`, `TrainingExample`) and the due index.
- `live`: the scoring stage's in-memory parts that hold no Kafka: live states, aggregates.
"""

__all__ = [
    "alerts",
    "engine",
    "features",
    "labels",
    "live",
    "scorecard",
    "state",
    "tiers",
]
