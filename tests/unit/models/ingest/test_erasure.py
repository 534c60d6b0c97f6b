"""The erasure coordinator (customer -> aliases index, erasures in flight), the confirmation
record, the scoring stage's confirmation output and the learner forgetting a customer."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ingest.erasure import (
    ErasureCoordinator,
    confirmation_record,
    customer_key,
    erase_customer_message,
    erased_alias_message,
    index_message,
    unindex_message,
)
from models.learning.learner import Learner
from schemas.decode import DecodedEvent, Origin, decode_source_event
from schemas.registry import validator
from streams.cli.erase import erasure_event
from streams.metrics import Metrics
from streams.runtime.stage import Output
from streams.stages.erasure import ErasureConfirmations
from tests.kit import T0, ev

NOW = T0


def erasure(event_id: str, customer: str = "C1") -> dict[str, Any]:
    return ev(event_id, "customer_erased", customer_id=customer, ingested_at=NOW)


class Index:
    """A coordinator with a dict for its table, fed the way the identity stage feeds it."""

    def __init__(self) -> None:
        self.coordinator = ErasureCoordinator()
        self.table: dict[str, dict[str, Any]] = {}

    def send(self, message: dict[str, Any], customer: str = "C1") -> Any:
        origin = Origin("identity", 0, 1, customer_key(customer).encode(), orjson.dumps(message))
        out = self.coordinator.handle(origin, self.table, NOW)
        for key, record in out.index_changes:
            if record is None:
                self.table.pop(key, None)
            else:
                self.table[key] = record
        for record in out.accepted:
            validator("customer-events")(record)
        return out


def test_index_follows_links_made_and_moved() -> None:
    index = Index()
    index.send(index_message("C1", "email:a@x.org"))
    index.send(index_message("C1", "anonymous_id:a-1"))
    again = index.send(index_message("C1", "email:a@x.org"))
    assert again.index_changes == []  # a redelivered index message changes nothing
    assert index.table["customer:C1"]["aliases"] == ["anonymous_id:a-1", "email:a@x.org"]
    index.send(unindex_message("C1", "anonymous_id:a-1"))
    index.send(unindex_message("C1", "email:a@x.org"))
    assert index.table == {}  # nothing left: the record is deleted (a tombstone)


def test_an_erasure_without_aliases_is_released_at_once() -> None:
    out = Index().send(erase_customer_message(erasure("c-1"), [], watermark=NOW))
    assert out.identity == [] and out.index_changes == [("customer:C1", None)]
    [event] = out.accepted
    assert event["payload"]["erasure"] == {
        "identity_links_removed": 0, "held_events_discarded": 0, "aliases_erased": 0}


def test_redeliveries_resend_pending_erases_and_stale_answers_are_ignored() -> None:
    index = Index()
    index.send(index_message("C1", "email:a@x.org"))
    index.send(index_message("C1", "anonymous_id:a-1"))
    first = index.send(erase_customer_message(erasure("c-1"), [], watermark=NOW))
    assert [(k, m["erasure_id"]) for k, m in first.identity] == [
        ("anonymous_id:a-1", "c-1"), ("email:a@x.org", "c-1")]
    index.send(erased_alias_message("C1", "c-1", "email:a@x.org", True, 0))
    repeat = index.send(erase_customer_message(erasure("c-1"), [], watermark=NOW))
    assert [k for k, _ in repeat.identity] == ["anonymous_id:a-1"]  # only what is pending
    assert index.send(erased_alias_message("C1", "c-1", "email:a@x.org", True, 0)).accepted == []
    assert index.send(erased_alias_message("C1", "c-0", "anonymous_id:a-1", True, 0)).accepted \
        == []
    done = index.send(erased_alias_message("C1", "c-1", "anonymous_id:a-1", True, 2))
    assert [e["payload"]["erasure"] for e in done.accepted] == [
        {"identity_links_removed": 2, "held_events_discarded": 2, "aliases_erased": 2}]
    assert index.table == {}
    counters = index.coordinator.counters
    assert (counters.started, counters.completed, counters.stale) == (1, 1, 3)


def test_a_second_request_joins_the_one_in_flight_and_both_are_confirmed() -> None:
    index = Index()
    index.send(index_message("C1", "email:a@x.org"))
    index.send(erase_customer_message(erasure("c-1"), [], watermark=NOW))
    joined = index.send(erase_customer_message(erasure("c-2"), ["anonymous_id:a-9"], NOW))
    assert [(k, m["erasure_id"]) for k, m in joined.identity] == [("anonymous_id:a-9", "c-1")]
    # A link made while the erasure runs is new data: indexed for a later erasure.
    index.send(index_message("C1", "anonymous_id:new"))
    index.send(erased_alias_message("C1", "c-1", "email:a@x.org", True, 0))
    done = index.send(erased_alias_message("C1", "c-1", "anonymous_id:a-9", False, 1))
    assert [e["event_id"] for e in done.accepted] == ["c-1", "c-2"]
    assert index.table == {"customer:C1": {
        "customer_id": "C1", "aliases": ["anonymous_id:new"], "erasure": None}}


def test_bad_messages_become_internal_error_dead_letters() -> None:
    coordinator = ErasureCoordinator()
    good = erase_customer_message(erasure("c-1"), [], NOW)
    cases = [
        (b"customer:C1", b"{"),
        (b"customer:C1", None),
        (b"customer:C1", orjson.dumps({"op": "erase", "customer_id": "C1"})),
        (b"customer:C2", orjson.dumps(good)),  # keyed by another customer
        (b"customer:C1", orjson.dumps({**good, "event": {**good["event"], "customer_id": "C2"}})),
        (b"customer:C1", orjson.dumps(index_message("C1", "phone:123"))),
        (b"customer:C1", orjson.dumps({"op": "erased_alias", "customer_id": "C1"})),
    ]
    for key, value in cases:
        [record] = coordinator.handle(Origin("identity", 0, 3, key, value), {}, NOW).dead
        assert record["reason"] == "internal_error"
        assert record["message"].startswith("bad customer-index message")
        validator("dead-letters")(record)
    assert coordinator.counters.invalid == len(cases)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=200)))
def test_the_coordinator_never_raises_on_arbitrary_bytes(value: bytes | None) -> None:
    out = ErasureCoordinator().handle(Origin("t", 0, 0, b"customer:C1", value), {}, NOW)
    assert len(out.dead) <= 1


def test_confirmation_records_carry_counts_only_and_match_the_schema() -> None:
    event = {**erasure("c-7"), "email": "a@x.org",
             "payload": {"erasure": {"identity_links_removed": 2, "held_events_discarded": 1,
                                     "aliases_erased": 3}}}
    record = confirmation_record(event, True, NOW + 5)
    validator("erasure-confirmations")(record)
    assert "a@x.org" not in orjson.dumps(record).decode()
    assert (record["identity_links_removed"], record["held_events_discarded"],
            record["requested_at"], record["confirmed_at"]) == (2, 1, NOW, NOW + 5)


def test_the_scoring_stage_confirms_and_tells_the_learner_to_forget() -> None:
    confirmations = ErasureConfirmations("erasure-confirmations", "training-examples", Metrics())
    out = Output()
    events = [{**erasure("c-1"), "event_type": "page_view"}, erasure("c-2"), erasure("c-3")]
    confirmations.confirm("C1", events, True, out)
    assert [(topic, key) for topic, key, _, _ in out.records] == [
        ("erasure-confirmations", b"C1"), ("erasure-confirmations", b"C1"),
        ("training-examples", b"C1")]
    first, second = (orjson.loads(value or b"") for _, _, value, _ in out.records[:2])
    assert (first["erasure_event_id"], first["customer_state_removed"]) == ("c-2", True)
    assert (second["erasure_event_id"], second["customer_state_removed"]) == ("c-3", False)
    assert out.records[2][2] is None
    assert confirmations.erasures._value.get() == 0  # counted once the batch commits
    out.tally()
    assert confirmations.erasures._value.get() == 2


def test_learner_forgets_an_erased_customer_sample() -> None:
    learner = Learner()
    learner._remember(learner.population, "C1", {"x": 1.0})
    learner._remember(learner.population, "C2", {"x": 2.0})
    learner._remember(learner.activity, "C1", {"x": 1.0, "t_x": 1.0, "T": 2.0})
    assert learner.forget("C1") and not learner.forget("C1")
    assert set(learner.population) == {"C2"} and not learner.activity


def test_the_erase_command_builds_a_valid_crm_erasure() -> None:
    event = erasure_event("C42", ["Ann@Example.com"], ["cookie-1"], NOW)
    decoded = decode_source_event(orjson.dumps(event), "crm", NOW)
    assert isinstance(decoded, DecodedEvent)
    assert decoded.event_type == "customer_erased" and decoded.customer_id == "C42"
    assert sorted(decoded.aliases()) == [("anonymous_id", "cookie-1"),
                                         ("email", "Ann@Example.com")]
