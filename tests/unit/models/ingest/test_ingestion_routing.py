"""The partitioned pipeline's pure halves: `Ingestion.route` (stage 1) and `IdentityPartition`
(stage 2), driven the way the two agents drive them, with dicts standing in for the tables."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ingest.erasure import ErasureCoordinator, is_customer_key
from models.ingest.identity import alias_key
from models.ingest.routing import (
    IdentityPartition,
    Ingestion,
    IngestionConfig,
    held_key,
    tick_message,
)
from schemas.decode import Origin
from schemas.registry import validator
from tests.kit import T0, at, raw_ev

NOW = at(365)


class Pipeline:
    """Stage 1, the identity topic as a list per partition, and stage 2 with dict tables."""

    def __init__(self, partitions: int = 4, config: IngestionConfig | None = None) -> None:
        self.config = config or IngestionConfig()
        self.stage1 = Ingestion(self.config)
        self.partitions = partitions
        self.stage2 = {p: IdentityPartition(p, self.config) for p in range(partitions)}
        self.links: dict[str, dict[str, Any]] = {}
        self.held: dict[str, dict[str, Any]] = {}
        self.index: dict[str, dict[str, Any]] = {}
        self.coordinator = ErasureCoordinator()
        self.accepted: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.offset = 0

    def partition_of(self, key: str) -> int:
        return sum(key.encode()) % self.partitions

    def send(self, value: bytes | None, source: str = "web") -> None:
        routed = self.stage1.route(Origin(source, 0, self.offset, b"k", value), source, NOW)
        self.offset += 1
        assert self.stage1.counters.balanced()
        self.accepted += routed.accepted
        self.dead += routed.dead
        for key, message in routed.identity:
            self.deliver(self.partition_of(key), key.encode(), orjson.dumps(message))

    def deliver(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        if is_customer_key(key):  # the customer index (models/ingest/erasure.py)
            origin = Origin("identity", partition, None, key, value)
            out = self.coordinator.handle(origin, self.index, NOW)
            tables: Any = ((self.index, out.index_changes),)
            accepted, dead, follow = out.accepted, out.dead, out.identity
        else:
            origin = Origin("identity", partition, None, key, value)
            result = self.stage2[partition].handle(origin, self.links, NOW)
            tables = ((self.links, result.link_changes), (self.held, result.held_changes))
            accepted, dead, follow = result.accepted, result.dead, result.identity
            assert self.stage2[partition].counters.balanced()
        for table, changes in tables:
            for k, record in changes:
                if record is None:
                    table.pop(k, None)
                else:
                    table[k] = record
        self.accepted += accepted
        self.dead += dead
        for next_key, message in follow:
            self.deliver(self.partition_of(next_key), next_key.encode(), orjson.dumps(message))
        for record in accepted:
            validator("customer-events")(record)
        for record in dead:
            validator("dead-letters")(record)

    def tick(self, watermark: int) -> None:
        for partition in range(self.partitions):
            self.deliver(partition, None, orjson.dumps(tick_message(watermark)))

    def restart(self) -> None:
        """A new incarnation: stage 2 rebuilt from the held table, links only in the table."""
        self.stage2 = {
            p: IdentityPartition(
                p, self.config, [r for r in self.held.values() if r["partition"] == p]
            )
            for p in range(self.partitions)
        }

    def owners(self) -> list[tuple[str, str]]:
        return [(e["event_id"], e["customer_id"]) for e in self.accepted]


def test_route_sends_known_customers_straight_on_and_links_to_their_alias_key() -> None:
    ingestion = Ingestion()
    login = raw_ev("w-1", "login", customer_id="C1", anonymous_id="a-1")
    routed = ingestion.route(Origin("web", 0, 0, None, login), "web", NOW)
    assert [(e["event_id"], e["customer_id"]) for e in routed.accepted] == [("w-1", "C1")]
    [(key, message)] = routed.identity
    assert key == "anonymous_id:a-1"
    assert (message["op"], message["customer_id"], message["event_time"]) == ("link", "C1", T0)
    # Envelope and fields email normalising to one key make one link message.
    profile = raw_ev("c-1", "profile_updated", customer_id="C2", email="Bo@X.org",
                    payload={"fields": {"email": "bo@x.ORG"}})
    routed = ingestion.route(Origin("crm", 0, 1, None, profile), "crm", NOW)
    assert [key for key, _ in routed.identity] == ["email:bo@x.org"]
    page = raw_ev("w-2", "page_view", customer_id="C1", anonymous_id="a-9")
    assert ingestion.route(Origin("web", 0, 2, None, page), "web", NOW).identity == []  # not a link


def test_route_forwards_alias_only_events_by_routing_alias_with_their_origin() -> None:
    ingestion = Ingestion()
    page = raw_ev("w-1", "page_view", email="Ann@X.org", anonymous_id="a-1")
    routed = ingestion.route(Origin("web-topic", 3, 17, b"key", page), "web", NOW)
    assert routed.forwarded and routed.accepted == [] and routed.dead == []
    [(key, message)] = routed.identity
    assert key == "email:ann@x.org"
    origin = message["origin"]
    assert (origin["topic"], origin["partition"], origin["offset"]) == ("web-topic", 3, 17)
    assert base64.b64decode(origin["value_b64"]) == page
    assert message["watermark"] == T0
    assert ingestion.route(Origin("web-topic", 3, 18, b"key", page), "web", NOW).duplicate
    assert ingestion.route(Origin("web-topic", 3, 19, b"key", b"nope"), "web", NOW).dead
    counters = ingestion.counters
    assert (counters.forwarded, counters.duplicates, counters.dead) == (1, 1, 1)
    assert counters.balanced()


def test_route_sends_an_erasure_to_the_customer_index_with_the_aliases_it_names() -> None:
    erase = raw_ev("c-9", "customer_erased", customer_id="C1", email="A@x.org",
                  anonymous_id="a-1")
    ingestion = Ingestion()
    routed = ingestion.route(Origin("crm", 0, 0, None, erase), "crm", NOW)
    assert routed.accepted == [] and routed.forwarded
    [(key, message)] = routed.identity
    assert (key, message["op"], message["erasure_id"]) == ("customer:C1", "erase_customer", "c-9")
    assert message["aliases"] == ["anonymous_id:a-1", "email:a@x.org"]
    assert message["event"]["event_type"] == "customer_erased"
    assert ingestion.counters.balanced()


def test_held_events_are_released_to_their_link_in_arrival_order() -> None:
    pipe = Pipeline()
    pipe.send(raw_ev("w-1", "page_view", anonymous_id="a-1"))
    pipe.send(raw_ev("w-2", "search", occurred_at=T0 + 1, anonymous_id="a-1",
                    payload={"query": "q"}))
    assert pipe.accepted == [] and len(pipe.held) == 2
    assert {r["partition"] for r in pipe.held.values()} == {pipe.partition_of("anonymous_id:a-1")}
    pipe.send(raw_ev("w-3", "login", occurred_at=T0 + 2, customer_id="C1", anonymous_id="a-1"))
    assert pipe.owners() == [("w-3", "C1"), ("w-1", "C1"), ("w-2", "C1")]
    assert pipe.held == {} and pipe.links["anonymous_id:a-1"]["customer_id"] == "C1"
    pipe.send(raw_ev("w-4", "page_view", occurred_at=T0 + 3, anonymous_id="a-1"))
    assert pipe.owners()[-1] == ("w-4", "C1")


def test_the_latest_link_wins_whatever_order_links_arrive_in() -> None:
    pipe = Pipeline()
    pipe.send(raw_ev("c-2", "profile_updated", occurred_at=T0 + 10, customer_id="C2",
                    payload={"fields": {"email": "ann@x.org"}}), "crm")
    pipe.send(raw_ev("c-1", "profile_updated", occurred_at=T0 + 5, customer_id="C1",
                    payload={"fields": {"email": "ann@x.org"}}), "crm")
    pipe.send(raw_ev("e-1", "opened", occurred_at=T0 + 20, email="ANN@x.org"), "email")
    assert pipe.owners()[-1] == ("e-1", "C2")


def test_links_and_held_events_survive_a_restart() -> None:
    pipe = Pipeline(config=IngestionConfig(max_held=2))
    pipe.send(raw_ev("w-0", "login", customer_id="C1", anonymous_id="a-1"))
    for n in (1, 2):
        pipe.send(raw_ev(f"w-{n}", "page_view", occurred_at=T0 + n, anonymous_id="a-2"))
    pipe.restart()
    pipe.send(raw_ev("w-3", "page_view", occurred_at=T0 + 3, anonymous_id="a-1"))
    assert pipe.owners()[-1] == ("w-3", "C1")  # the link came from the table
    # The restored held events keep their order: the count bound pushes out the oldest.
    pipe.send(raw_ev("w-4", "page_view", occurred_at=T0 + 4, anonymous_id="a-2"))
    assert [(r["reason"], r["event_id"]) for r in pipe.dead] == [("unresolved_identity", "w-1")]
    pipe.send(raw_ev("w-5", "login", occurred_at=T0 + 5, customer_id="C2", anonymous_id="a-2"))
    assert pipe.owners()[-3:] == [("w-5", "C2"), ("w-2", "C2"), ("w-4", "C2")]
    assert pipe.held == {}


def test_a_redelivered_held_event_is_held_once() -> None:
    pipe = Pipeline()
    page = raw_ev("w-1", "page_view", anonymous_id="a-1")
    key, message = Ingestion().route(Origin("web", 0, 0, None, page), "web", NOW).identity[0]
    partition = pipe.partition_of(key)
    pipe.deliver(partition, key.encode(), orjson.dumps(message))
    pipe.restart()  # crashed before the offset was committed: the record comes again
    pipe.deliver(partition, key.encode(), orjson.dumps(message))
    stage = pipe.stage2[partition]
    assert (stage.counters.duplicates, stage.counters.held) == (1, 1)
    assert list(pipe.held) == [held_key(key, "web", "w-1")]


def test_ticks_age_held_events_out_on_a_quiet_partition() -> None:
    pipe = Pipeline(config=IngestionConfig(max_hold_ms=60_000))
    ghost = raw_ev("w-1", "page_view", anonymous_id="ghost")
    pipe.send(ghost)
    pipe.tick(T0 + 60_000)
    assert pipe.dead == []
    pipe.tick(T0 + 60_001)
    [record] = pipe.dead
    assert (record["reason"], record["event_id"], record["offset"]) == (
        "unresolved_identity", "w-1", 0)
    assert base64.b64decode(record["value_b64"]) == ghost
    assert "60000 ms" in record["message"]
    assert pipe.held == {}


def test_erasure_discards_held_events_and_drops_only_its_own_links() -> None:
    pipe = Pipeline()
    pipe.send(raw_ev("w-1", "login", customer_id="C1", anonymous_id="a-1"))
    pipe.send(raw_ev("c-1", "profile_updated", customer_id="C2", email="b@x.org",
                    payload={"fields": {}}), "crm")
    pipe.send(raw_ev("e-1", "opened", email="d@x.org"), "email")
    erase = raw_ev("c-9", "customer_erased", occurred_at=T0 + 1, customer_id="C1",
                  email="d@x.org", anonymous_id="a-1")
    pipe.send(erase, "crm")
    pipe.send(raw_ev("c-10", "customer_erased", occurred_at=T0 + 2, customer_id="C1",
                    email="b@x.org"), "crm")  # b@x.org belongs to C2: kept
    assert set(pipe.links) == {"email:b@x.org"}
    assert pipe.held == {} and pipe.dead == [] and pipe.index == {"customer:C2": {
        "customer_id": "C2", "aliases": ["email:b@x.org"], "erasure": None}}
    assert sum(stage.counters.erased for stage in pipe.stage2.values()) == 1
    erasures = [e for e in pipe.accepted if e["event_type"] == "customer_erased"]
    assert [(e["event_id"], e["payload"]["erasure"]) for e in erasures] == [
        ("c-9", {"identity_links_removed": 1, "held_events_discarded": 1, "aliases_erased": 2}),
        ("c-10", {"identity_links_removed": 0, "held_events_discarded": 0, "aliases_erased": 1}),
    ]


def test_erasure_removes_every_link_of_the_customer_even_unnamed_ones() -> None:
    pipe = Pipeline()
    pipe.send(raw_ev("w-1", "login", customer_id="C1", anonymous_id="a-1"))
    pipe.send(raw_ev("w-2", "login", occurred_at=T0 + 1, customer_id="C1", anonymous_id="a-2"))
    pipe.send(raw_ev("c-1", "profile_updated", occurred_at=T0 + 2, customer_id="C1",
                    payload={"fields": {"email": "ann@x.org"}}), "crm")
    # a-2 moves to C2 later: C1's erasure must leave it alone.
    pipe.send(raw_ev("w-3", "login", occurred_at=T0 + 3, customer_id="C2", anonymous_id="a-2"))
    assert pipe.index["customer:C1"]["aliases"] == ["anonymous_id:a-1", "email:ann@x.org"]
    pipe.send(raw_ev("c-9", "customer_erased", occurred_at=T0 + 4, customer_id="C1"), "crm")
    assert set(pipe.links) == {"anonymous_id:a-2"}
    assert pipe.links["anonymous_id:a-2"]["customer_id"] == "C2"
    assert set(pipe.index) == {"customer:C2"}
    [erased] = [e for e in pipe.accepted if e["event_type"] == "customer_erased"]
    assert erased["payload"]["erasure"] == {
        "identity_links_removed": 2, "held_events_discarded": 0, "aliases_erased": 2}
    pipe.send(raw_ev("e-1", "opened", occurred_at=T0 + 5, email="ann@x.org"), "email")
    assert len(pipe.held) == 1  # the erased link no longer resolves the alias


def test_bad_identity_messages_become_internal_error_dead_letters() -> None:
    stage = IdentityPartition(0)
    page = raw_ev("w-1", "page_view", anonymous_id="a-1")
    good = Ingestion().route(Origin("web", 0, 0, None, page), "web", NOW).identity[0][1]
    cases = [
        (b"k", b"not json"),
        (b"k", None),
        (b"k", b'{"op": "launch"}'),
        (b"email:someone-else", orjson.dumps(good)),
        (b"anonymous_id:a-1", orjson.dumps({**good, "event": {"event_id": 1}})),
        (b"email:x", orjson.dumps({"op": "link", "alias_kind": "email", "alias": "x"})),
    ]
    for key, value in cases:
        [record] = stage.handle(Origin("identity", 0, 5, key, value), {}, NOW).dead
        assert record["reason"] == "internal_error"
        assert record["message"].startswith("bad identity-topic message")
        validator("dead-letters")(record)
    assert stage.counters.invalid == len(cases)


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=40)),
       value=st.one_of(st.none(), st.binary(max_size=200)))
def test_stage_two_never_raises_on_arbitrary_bytes(key: bytes | None, value: bytes | None) -> None:
    result = IdentityPartition(0).handle(Origin("t", 0, 0, key, value), {}, NOW)
    assert len(result.dead) <= 1


ALIASES = ["a-1", "a-2", "a-3"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ALIASES), st.one_of(st.none(),
                                                             st.sampled_from(["C1", "C2"]))),
                max_size=30))
def test_two_stages_attribute_like_the_single_process_ingestion(
    steps: list[tuple[str, str | None]],
) -> None:
    """Split across partitions, every event still reaches the customer that the single-process
    `Ingestion.process` gives it (events carrying one alias kind; release order may differ)."""
    single, pipe = Ingestion(), Pipeline(partitions=3)
    single_out: list[dict[str, Any]] = []
    for n, (alias, customer) in enumerate(steps):
        fields = {"anonymous_id": alias} if customer is None else {
            "anonymous_id": alias, "customer_id": customer}
        value = raw_ev(f"w-{n}", "login" if customer else "page_view", occurred_at=T0 + n,
                      **fields)
        single_out += single.process(Origin("web", 0, n, None, value), "web", NOW).accepted
        pipe.send(value)
    assert sorted(pipe.owners()) == sorted(
        (e["event_id"], e["customer_id"]) for e in single_out)
    assert len(pipe.held) == single.counters.held
    assert {alias_key("anonymous_id", a) for a in ALIASES} >= set(pipe.links)


def test_route_remembers_duplicates_per_source_partition() -> None:
    """A fast partition days ahead in event time must not age out a slow one's ids."""
    ingestion = Ingestion(IngestionConfig(dedupe_horizon_ms=3_600_000))
    slow = raw_ev("w-1", "page_view", customer_id="C1")
    assert not ingestion.route(Origin("web", 0, 0, None, slow), "web", NOW).duplicate
    fast = raw_ev("w-2", "page_view", occurred_at=at(1), customer_id="C2")
    ingestion.route(Origin("web", 1, 0, None, fast), "web", NOW)
    assert ingestion.route(Origin("web", 0, 1, None, slow), "web", NOW).duplicate


def test_identity_messages_carry_their_own_event_time_when_released_later() -> None:
    """A shell that releases routed records later, in event-time order, stamps each identity
    message with its own event's time: the watermark at routing time may run months ahead of
    what has gone out, and the identity stage's clock would age held events out too early."""
    ahead = raw_ev("o-1", "order_placed", occurred_at=T0 + 200 * 86_400_000, customer_id="C1",
                   payload={"amount": 5.0})
    page = raw_ev("w-1", "page_view", email="ann@x.org", anonymous_id="a-1")
    for stamp_event_time, expected in ((False, T0 + 200 * 86_400_000), (True, T0)):
        ingestion = Ingestion()
        ingestion.stamp_event_time = stamp_event_time
        ingestion.route(Origin("crm", 0, 0, None, ahead), "crm", NOW)
        [(_key, message)] = ingestion.route(Origin("web", 0, 0, None, page), "web", NOW).identity
        assert message["watermark"] == expected
        assert ingestion.watermark == T0 + 200 * 86_400_000
