"""The identity stage's handler without a broker: its one table, what each batch writes and
sends, and a rebuild from the store (what follows a reassignment or an aborted transaction)."""

from __future__ import annotations

import orjson

from models.ingest.routing import MERGE_TICK_KEY, Ingestion, IngestionConfig, tick_message
from schemas.decode import Origin
from streams.runtime.tables import Table
from streams.stages.identity import HELD, INDEX, LINK, IdentityHandler, MergeTicks, TableView
from tests.kit import T0, assign, feed, raw_ev, recording, sent

TOPICS = {"customer_events": "customer-events", "dead_letters": "dead-letters",
          "identity": "identity-events"}


def identity_messages(*events: bytes) -> list[tuple[bytes, bytes]]:
    """What the ingest stage sends to the identity topic for these web events."""
    stage1 = Ingestion()
    out = []
    for n, event in enumerate(events):
        routed = stage1.route(Origin("web", 0, n, None, event), "web", T0)
        out += [(key.encode(), orjson.dumps(message)) for key, message in routed.identity]
    return out


def setup() -> tuple[IdentityHandler, Table]:
    handler = IdentityHandler(IngestionConfig(), TOPICS)
    return handler, assign(handler, "identity")


VISIT = raw_ev("w-1", "page_view", occurred_at=T0 - 60_000, anonymous_id="a-1")
LOGIN = raw_ev("w-2", "login", customer_id="C42", anonymous_id="a-1")


def test_a_held_event_is_in_the_table_and_released_by_its_link_after_a_rebuild() -> None:
    handler, table = setup()
    [visit] = identity_messages(VISIT)
    out = feed(handler, table, [visit], topic=TOPICS["identity"])
    assert out.records == []
    [(partition, key, value)] = out.writes
    assert partition == 0 and key.startswith(HELD + b"anonymous_id:a-1|web|w-1")
    assert value is not None and table.get(0, key) == value

    # Reassigned (or rebuilt after an abort): the waiting event comes back from the store.
    handler.on_revoked(0)
    handler.on_assigned(0, table)
    [login] = [m for m in identity_messages(LOGIN) if m[0] == b"anonymous_id:a-1"]
    out = feed(handler, table, [login], first_offset=1, topic=TOPICS["identity"])

    released = sent(out, "customer-events")
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
    out = feed(handler, table, [(follow_key, orjson.dumps(follow))], first_offset=2,
               topic=TOPICS["identity"])
    index = TableView(table, 0, INDEX)
    assert dict(index) == {"customer:C42": {"customer_id": "C42", "aliases": [
        "anonymous_id:a-1"], "erasure": None}}
    assert [k for _, k, _ in out.writes] == [INDEX + b"customer:C42"]


def test_a_message_the_stage_did_not_write_is_dead_lettered_with_its_key() -> None:
    handler, table = setup()
    out = feed(handler, table, [(b"anonymous_id:a-1", b"not json"),
                                (b"customer:C1", b'{"op": "index"}')], topic=TOPICS["identity"])
    dead = [(topic, k, orjson.loads(v)["reason"]) for topic, k, v, _ in out.records]
    assert dead == [("dead-letters", b"anonymous_id:a-1", "internal_error"),
                    ("dead-letters", b"customer:C1", "internal_error")]
    assert out.writes == []


def test_deleting_an_absent_record_writes_no_tombstone() -> None:
    _handler, table = setup()
    links = TableView(table, 0, LINK)
    with recording(table) as out:
        links.apply([("email:a@example.com", None)])
        links.apply([("email:b@example.com", {"customer_id": "C1"})])
        links.apply([("email:b@example.com", None)])
    assert out.writes == [(0, LINK + b"email:b@example.com", b'{"customer_id":"C1"}'),
                          (0, LINK + b"email:b@example.com", None)]
    assert len(links) == 0


def test_with_the_merge_a_partition_ticks_every_customer_partition_after_its_releases() -> None:
    """Once every source partition has been heard of, the slowest one's time goes to every
    customer-events partition, after the releases of the same batch (which it covers)."""
    handler = IdentityHandler(IngestionConfig(), TOPICS,
                              merge=MergeTicks({("web", 0), ("crm", 0)}, customer_partitions=2))
    table = assign(handler, "identity")
    [visit] = identity_messages(VISIT)
    web_only = orjson.dumps(tick_message(T0, {("web", 0): T0}))
    out = feed(handler, table, [visit, (None, web_only)], topic=TOPICS["identity"])
    assert out.records == []  # crm not heard of yet: no clock to pass on
    [login] = [m for m in identity_messages(LOGIN) if m[0] == b"anonymous_id:a-1"]
    both = orjson.dumps(tick_message(T0, {("web", 0): T0, ("crm", 0): T0 - 5},
                                     idle=[("web", 0)]))
    out = feed(handler, table, [login, (None, both)], first_offset=2, topic=TOPICS["identity"])
    to_scoring = [(k, p, orjson.loads(v)) for topic, k, v, p in out.records
                  if topic == "customer-events"]
    assert [k for k, _p, _v in to_scoring] == [b"C42", MERGE_TICK_KEY, MERGE_TICK_KEY]
    assert [(p, v) for _k, p, v in to_scoring[1:]] == [
        (target, {"op": "tick", "identity_partition": 0, "watermark": T0 - 5})
        for target in (0, 1)]
    # Unmoved, the next batch sends none (they repeat only every few seconds).
    out = feed(handler, table, [(None, both)], first_offset=4, topic=TOPICS["identity"])
    assert [r for r in out.records if r[0] == "customer-events"] == []
