"""The scoring stage's handler without a broker: coalescing, lateness, erasure, dead letters."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from models.alerts import AlertRules
from models.engine import ScoringEngine
from streams.processor import Output, Table
from streams.scoring import ScoringHandler, ScoringTopics
from streams.stores import MemoryStore

DAY = 86_400_000
BASE = 1_767_225_600_000
TOPICS = ScoringTopics("score-changes", "alerts", "training", "dead")


class FakeMessage:
    """The few confluent_kafka.Message methods the handler reads."""

    def __init__(self, value: bytes, offset: int = 0) -> None:
        self._value = value
        self._offset = offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def topic(self) -> str:
        return "customer-events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def event(n: int, customer: str, day: float, kind: str = "page_view", **fields: Any) -> bytes:
    source = "crm" if kind in ("order_placed", "customer_erased") else "web"
    payload = {"order_id": f"o{n}", "amount": 10.0, "currency": "EUR"} if kind == "order_placed" \
        else {"url": "/"} if kind == "page_view" else {}
    return orjson.dumps({"event_id": f"e{n}", "event_type": kind, "source": source,
                         "occurred_at": BASE + int(day * DAY), "customer_id": customer,
                         "payload": payload, "ingested_at": 1, **fields})


def setup(lateness_days: int = 30) -> tuple[ScoringHandler, Table]:
    handler = ScoringHandler(ScoringEngine(), AlertRules(), TOPICS,
                             allowed_lateness_ms=lateness_days * DAY)
    table = Table("customer-state", "memory://", None)
    table.stores[0] = MemoryStore()
    handler.on_assigned(0, table)
    return handler, table


def run(handler: ScoringHandler, table: Table, values: list[bytes]) -> Output:
    out = Output()
    table._out = out
    handler.handle(0, [FakeMessage(v, i) for i, v in enumerate(values)], table, out)
    table._out = None
    return out


def records(out: Output, topic: str) -> list[Any]:
    return [orjson.loads(v) if v is not None else None for t, _k, v, _p in out.records
            if t == topic]


def test_a_batch_writes_and_emits_once_per_customer() -> None:
    handler, table = setup()
    out = run(handler, table, [event(n, "A" if n % 2 else "B", n / 10) for n in range(10)])
    assert sorted(key for _p, key, _v in out.writes) == [b"A", b"B"]
    changes = records(out, "score-changes")
    assert sorted(c["customer_id"] for c in changes) == ["A", "B"]
    assert {c["scorecard"]["interactions_12m"] for c in changes} == {5}


def test_redelivered_events_count_once() -> None:
    handler, table = setup()
    run(handler, table, [event(1, "A", 0), event(2, "A", 1)])
    out = run(handler, table, [event(1, "A", 0), event(2, "A", 1)])
    assert records(out, "score-changes") == []
    assert handler.scorecard(table, 0, "A").interactions_12m == 2


def test_late_events_within_the_bound_apply_and_beyond_it_are_dead_lettered() -> None:
    handler, table = setup(lateness_days=30)
    run(handler, table, [event(1, "A", 100, "order_placed")])
    out = run(handler, table, [event(2, "A", 80, "order_placed"), event(3, "A", 60)])
    dead = records(out, "dead")
    assert [d["reason"] for d in dead] == ["too_late"]
    assert orjson.loads(base64.b64decode(dead[0]["value_b64"]))["event_id"] == "e3"
    card = handler.scorecard(table, 0, "A")
    assert card is not None and card.ltv_historic == 20.0


def test_undecodable_customer_event_is_dead_lettered_not_raised() -> None:
    handler, table = setup()
    out = run(handler, table, [b"\xff not json", event(1, "A", 0)])
    assert [d["reason"] for d in records(out, "dead")] == ["schema_violation"]
    assert handler.scorecard(table, 0, "A") is not None


def test_erasure_deletes_the_state_and_tombstones_score_changes() -> None:
    handler, table = setup()
    run(handler, table, [event(1, "A", 0, "order_placed")])
    out = run(handler, table, [event(2, "A", 1, "customer_erased")])
    assert out.writes == [(0, b"A", None)]
    assert records(out, "score-changes") == [None]
    assert handler.scorecard(table, 0, "A") is None
    assert handler.aggregates[0].customers == 0
