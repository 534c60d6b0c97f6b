"""Quarantine: when the core raises on one customer's events, only the culprits are lost to
dead letters; the customer's state stays as it was before them and the batch goes on."""

from __future__ import annotations

import base64
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Message

from models.ingest.routing import IngestionConfig
from models.scoring.alerts import AlertRules
from models.scoring.engine import BatchOutcome, ScoringEngine
from models.scoring.state import CustomerState
from streams.metrics import Metrics
from streams.runtime.stage import Output
from streams.runtime.tables import Table
from streams.stages.identity import IdentityHandler
from streams.stages.scoring import ScoringHandler
from tests.kit import SCORING_TOPICS, FakeMessage, assign, ev, feed, sent


def order(n: int, customer: str, day: float) -> bytes:
    """Order e<n> as the scoring stage consumes it."""
    return orjson.dumps(ev(f"e{n}", "order_placed", day, customer_id=customer, ingested_at=1))


class PickyEngine(ScoringEngine):
    """The real engine, except that it raises on any event whose id is in `poison`."""

    def __init__(self, poison: set[str]) -> None:
        super().__init__()
        self.poison = poison

    def apply_batch(self, state: CustomerState | None, events: list[dict[str, Any]],
                    watermark_ms: int, customer_id: str | None = None) -> BatchOutcome:
        outcome = super().apply_batch(state, events, watermark_ms, customer_id)
        if any(e["event_id"] in self.poison for e in events):
            raise OverflowError("cannot convert float infinity to integer")
        return outcome


def setup(poison: set[str]) -> tuple[ScoringHandler, Table, Metrics]:
    metrics = Metrics()
    handler = ScoringHandler(PickyEngine(poison), AlertRules(), SCORING_TOPICS, metrics=metrics,
                             live_states=100)
    return handler, assign(handler, "customer-state"), metrics


def stored(table: Table, customer: str) -> CustomerState:
    raw = table.get(0, customer.encode())
    assert raw is not None
    return CustomerState.restore(raw)


def test_only_the_poison_event_is_dead_lettered_and_the_rest_is_scored() -> None:
    handler, table, metrics = setup({"e3"})
    batch = [order(n, "A" if n < 6 else "B", n / 10) for n in range(10)]
    out = feed(handler, table, batch)
    dead = sent(out, "dead")
    assert [d["reason"] for d in dead] == ["processing_error"]
    assert orjson.loads(base64.b64decode(dead[0]["value_b64"]))["event_id"] == "e3"
    assert "OverflowError" in dead[0]["message"] and dead[0]["offset"] == 3
    # A kept its five good orders, B all four; both have scorecards out.
    assert stored(table, "A").n_orders == 5 and stored(table, "B").n_orders == 4
    assert {c["customer_id"] for c in sent(out, "score-changes")} == {"A", "B"}
    assert metrics.events_processed._value.get() == 9
    assert metrics.dead_letters.labels("processing_error")._value.get() == 1
    assert metrics.processing_errors.labels("scoring")._value.get() == 1


def test_the_state_before_the_batch_survives_a_poison_event() -> None:
    handler, table, _metrics = setup({"e9"})
    feed(handler, table, [order(1, "A", 0.1)])
    before = stored(table, "A").snapshot()
    out = feed(handler, table, [order(9, "A", 0.2)])
    assert [d["reason"] for d in sent(out, "dead")] == ["processing_error"]
    assert stored(table, "A").snapshot() == before
    assert sent(out, "score-changes") == []
    # The next good event scores on top of the state as it was.
    feed(handler, table, [order(2, "A", 0.3)])
    assert stored(table, "A").n_orders == 2


def test_an_unserialisable_outcome_leaves_store_and_outputs_untouched() -> None:
    handler, table, metrics = setup(set())
    feed(handler, table, [order(1, "A", 0.1)])
    before = stored(table, "A").snapshot()
    real = CustomerState.snapshot

    def exploding(self: CustomerState) -> bytes:
        if self.n_orders > 1:
            raise TypeError("Integer exceeds 64-bit range")
        return real(self)

    CustomerState.snapshot = exploding  # type: ignore[method-assign]
    try:
        out = feed(handler, table, [order(2, "A", 0.2), order(3, "B", 0.2)])
    finally:
        CustomerState.snapshot = real  # type: ignore[method-assign]
    assert [d["reason"] for d in sent(out, "dead")] == ["processing_error"]
    assert stored(table, "A").snapshot() == before
    assert {c["customer_id"] for c in sent(out, "score-changes")} == {"B"}
    assert all(t != "alerts" or k != b"A" for t, k, _v, _p in out.records)
    assert metrics.events_processed._value.get() == 1 + 1


class ExplodingPartition:
    """An identity partition whose core raises on every record."""

    def handle(self, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("op")


def test_the_identity_stage_quarantines_a_record_and_counts_every_dead_letter() -> None:
    metrics = Metrics()
    handler = IdentityHandler(IngestionConfig(), {
        "customer_events": "ce", "dead_letters": "dead", "identity": "id"}, metrics)
    table = assign(handler, "identity")
    handler.partitions[0] = ExplodingPartition()  # type: ignore[assignment]
    out = feed(handler, table, [(b"anonymous_id:a-1", b'{"op":"event"}')], first_offset=7,
               topic="identity-events")
    dead = sent(out, "dead")
    assert [(d["reason"], d["offset"]) for d in dead] == [("processing_error", 7)]
    assert "KeyError" in dead[0]["message"]
    assert metrics.dead_letters.labels("processing_error")._value.get() == 1
    # The partition was rebuilt from its table: the stage goes on with a working core.
    assert not isinstance(handler.partitions[0], ExplodingPartition)


def test_a_store_failure_is_not_quarantined_it_stops_the_stage() -> None:
    handler, table, metrics = setup(set())

    def broken(partition: int, key: bytes, value: bytes) -> None:
        raise OSError("No space left on device")

    table.put = broken  # type: ignore[method-assign]
    out = Output()
    with pytest.raises(OSError):
        handler.handle(0, cast("list[Message]", [FakeMessage(order(1, "A", 0.1), 0)]), table,
                       out)
    assert sent(out, "dead") == [] and out.counts == []  # nothing dead-lettered or counted
    assert metrics.dead_letters.labels("processing_error")._value.get() == 0


def test_a_core_failing_for_most_of_a_batch_stops_the_stage_instead() -> None:
    poison = {f"e{n}" for n in range(40)}
    handler, table, _metrics = setup(poison)
    with pytest.raises(RuntimeError, match="not of the data"):
        feed(handler, table, [order(n, f"C{n}", 0.1) for n in range(40)])
