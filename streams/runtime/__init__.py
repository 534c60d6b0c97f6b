"""The runtime every stage runs on: Kafka clients, the batch loop, tables and stores.

- `stage`: the stage contract (`StageHandler`), what a batch produces (`Output`), a
  stage's configuration (`ProcessorConfig`).
- `processor`: `BatchProcessor`, one stage's consume -> handle -> transaction loop.
- `tables`: changelog-backed tables and their restore.
- `stores`: the per-partition key/value stores behind a table (memory, RocksDB).
- `kafka`: topic names, client configuration and topic creation.
- `pipeline`: the stages wired together for one worker.
- `alignment`, `partitioning`, `collector`, `localkafka`: event-time pacing of sources,
  the producer's partitioner, garbage-collector tuning, a local broker for the demo.
"""

__all__ = [
    "alignment",
    "collector",
    "kafka",
    "localkafka",
    "partitioning",
    "pipeline",
    "processor",
    "stage",
    "stores",
    "tables",
]
