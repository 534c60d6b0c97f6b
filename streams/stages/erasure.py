"""Right to erasure in the scoring stage: the confirmation.

An erasure reaches the scoring stage last (models/ingest/erasure.py describes the way there,
through the identity stage's customer index). The scoring stage deletes the customer's state (a
tombstone on its changelog and on score-changes, in `streams/stages/scoring.py`) and, in the
same transaction, `ErasureConfirmations` emits one record per erasure event to the
erasure-confirmations topic and tells the learner to drop the customer from its population
sample. The confirmation carries the customer id and counts, never the erased aliases.
`scorestream erase` (streams/cli/erase.py) asks for one.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from prometheus_client import Counter

from models.ingest.erasure import ERASED_EVENT, confirmation_record
from streams.metrics import Metrics
from streams.runtime.stage import Output

__all__ = ["ErasureConfirmations"]


class ErasureConfirmations:
    """Scoring-stage side of an erasure: confirmation records and the learner's forget record."""

    def __init__(self, confirmations_topic: str, training_topic: str, metrics: Metrics) -> None:
        self.confirmations_topic = confirmations_topic
        self.training_topic = training_topic
        self.erasures = Counter(
            "scorestream_erasures_total",
            "Erasures confirmed by the scoring stage (customer state and identity links gone).",
            registry=metrics.registry)

    def confirm(self, customer_id: str, events: list[dict[str, Any]], state_removed: bool,
                out: Output) -> None:
        """Emit the confirmation of every erasure event among one customer's batch events.

        Called after the state's tombstone was written to `out`, so both commit together.
        """
        key = customer_id.encode()
        now_ms = int(time.time() * 1000)
        erasures = [e for e in events if e.get("event_type") == ERASED_EVENT]
        for event in erasures:
            record = confirmation_record(event, state_removed, now_ms)
            out.send(self.confirmations_topic, key, orjson.dumps(record))
            state_removed = False  # the state went with the first one
        if erasures:
            # A null value for the customer's key: the learner forgets its population sample.
            out.send(self.training_topic, key, None)
            out.count(self.erasures, len(erasures))
