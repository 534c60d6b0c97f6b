"""The worker's stages, each a `StageHandler` run by a `BatchProcessor`.

- `ingest` (in its own process, `ingest_process`): source topics -> customer-events.
- `identity`: alias-only events, links and erasures -> customer-events.
- `scoring`: customer-events -> customer state, score changes, alerts, training examples.
- `learner`: training examples -> model bundles.
- `erasure`: confirmations of the right to erasure.
"""

__all__ = [
    "erasure",
    "identity",
    "ingest",
    "ingest_process",
    "learner",
    "scoring",
]
