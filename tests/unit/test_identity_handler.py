"""The identity stage's handler without a broker: its one table, what each batch writes and
sends, and a rebuild from the store (what follows a reassignment or an aborted transaction)."""

from __future__ import annotations

from typing import Any

import orjson

from models.ingest.routing import Ingestion, IngestionConfig
from streams.runtime.stage import Output
from streams.runtime.stores import MemoryStore
from streams.runtime.tables import Table
from streams.stages.identity import HELD, INDEX, LINK, IdentityHandler, TableView

NOW = 1_767_225_600_000
TOPICS = {"customer_events": "customer-events", "dead_letters": "dead-letters",
          "identity": "identity-events"}


class FakeMessage:
    """The few confluent_kafka.Message methods the handler reads."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "identity-events"

    def offset(self) -> int:
        return self._offset


def identity_messages(*events: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """What the ingest stage sends to the identity topic for these web events."""
    stage1 = Ingestion()
    out = []
    for n, event in enumerate(events):
        routed = stage1.route(orjson.dumps(event), "web", "web", 0, n, None, NOW)
        out += [(key.encode(), orjson.dumps(message)) for key, message in routed.identity]
    return out


def setup() -> tuple[IdentityHandler, Table]:
    handler = IdentityHandler(IngestionConfig(), TOPICS)
    table = Table("identity", "memory://", None)  # type: ignore[arg-type]
    table.stores[0] = MemoryStore()
    handler.on_assigned(0, table)
    return handler, table


def run(handler: IdentityHandler, table: Table, messages: list[tuple[bytes, bytes]],
        first_offset: int = 0) -> Output:
    out = Output()
    table._out = out
    handler.handle(0, [FakeMessage(k, v, first_offset + n) for n, (k, v) in enumerate(messages)],
                   table, out)
    table._out = None
    return out


VISIT = {"event_id": "w-1", "event_type": "page_view", "source": "web",
         "occurred_at": NOW - 60_000, "anonymous_id": "a-1", "payload": {"url": "/"}}
LOGIN = {"event_id": "w-2", "event_type": "login", "source": "web", "occurred_at": NOW,
         "customer_id": "C42", "anonymous_id": "a-1"}


def test_a_held_event_is_in_the_table_and_released_by_its_link_after_a_rebuild() -> None:
    handler, table = setup()
    [visit] = identity_messages(VISIT)
    out = run(handler, table, [visit])
    assert out.records == []
    [(partition, key, value)] = out.writes
    assert partition == 0 and key.startswith(HELD + b"anonymous_id:a-1|web|w-1")
    assert value is not None and table.get(0, key) == value

    # Reassigned (or rebuilt after an abort): the waiting event comes back from the store.
    handler.on_revoked(0)
    handler.on_assigned(0, table)
    [login] = [m for m in identity_messages(LOGIN) if m[0] == b"anonymous_id:a-1"]
    out = run(handler, table, [login], first_offset=1)

    released = [orjson.loads(v) for topic, k, v, _ in out.records if topic == "customer-events"]
    assert [(e["event_id"], e["customer_id"]) for e in released] == [("w-1", "C42")]
    assert released[0]["identity_position"] == [0, 1, 0]
    assert all(k == b"C42" for topic, k, _, _ in out.records if topic == "customer-events")
    # The link is written, the held event tombstoned, and the customer index told.
    writes = {k: v for _, k, v in out.writes}
    assert writes[key] is None and table.get(0, key) is None
    assert orjson.loads(writes[LINK + b"anonymous_id:a-1"])["customer_id"] == "C42"
    [(follow_key, follow)] = [(k, orjson.loads(v)) for topic, k, v, _ in out.records
                              if topic == "identity-events"]
    assert follow_key == b"customer:C42" and follow["op"] == "index"

    # The index message, handled where its key lives, records the alias under the customer.
    out = run(handler, table, [(follow_key, orjson.dumps(follow))], first_offset=2)
    index = TableView(table, 0, INDEX)
    assert dict(index) == {"customer:C42": {"customer_id": "C42", "aliases": [
        "anonymous_id:a-1"], "erasure": None}}
    assert [k for _, k, _ in out.writes] == [INDEX + b"customer:C42"]


def test_a_message_the_stage_did_not_write_is_dead_lettered_with_its_key() -> None:
    handler, table = setup()
    out = run(handler, table, [(b"anonymous_id:a-1", b"not json"),
                               (b"customer:C1", b'{"op": "index"}')])
    dead = [(topic, k, orjson.loads(v)["reason"]) for topic, k, v, _ in out.records]
    assert dead == [("dead-letters", b"anonymous_id:a-1", "internal_error"),
                    ("dead-letters", b"customer:C1", "internal_error")]
    assert out.writes == []


def test_deleting_an_absent_record_writes_no_tombstone() -> None:
    _handler, table = setup()
    out = Output()
    table._out = out
    links = TableView(table, 0, LINK)
    links.apply([("email:a@example.com", None)])
    links.apply([("email:b@example.com", {"customer_id": "C1"})])
    links.apply([("email:b@example.com", None)])
    table._out = None
    assert out.writes == [(0, LINK + b"email:b@example.com", b'{"customer_id":"C1"}'),
                          (0, LINK + b"email:b@example.com", None)]
    assert len(links) == 0
