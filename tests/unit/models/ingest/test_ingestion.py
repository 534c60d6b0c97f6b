"""Ingestion: decode + dedupe + identity, and the no-silent-drop counting invariant."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.ingest.routing import Ingestion, IngestionConfig, IngestResult
from schemas.decode import Origin
from schemas.registry import validator
from tests.kit import T0, at, raw_ev

NOW = at(365)  # wall clock well after every event time


class Feed:
    """Drives an Ingestion like a consumer would: one offset per record, outputs collected."""

    def __init__(self, ingestion: Ingestion | None = None) -> None:
        self.ingestion = ingestion or Ingestion()
        self.offset = 0
        self.accepted: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        self.duplicates: list[int] = []
        self.table: dict[str, dict[str, Any]] = {}

    def send(
        self, value: bytes | None, source: str = "web", key: bytes | None = None
    ) -> IngestResult:
        result = self.ingestion.process(Origin(source, 0, self.offset, key, value), source, NOW)
        if result.duplicate:
            self.duplicates.append(self.offset)
        self.offset += 1
        return self.collect(result)

    def collect(self, result: IngestResult) -> IngestResult:
        self.accepted += result.accepted
        self.dead += result.dead
        for alias_key, record in result.link_changes:
            if record is None:
                self.table.pop(alias_key, None)
            else:
                self.table[alias_key] = record
        for event in result.accepted:
            validator("customer-events")(event)
        for record in result.dead:
            validator("dead-letters")(record)
        assert self.ingestion.counters.balanced()
        return result


def test_known_customer_events_pass_straight_through() -> None:
    feed = Feed()
    result = feed.send(raw_ev("w-1", "page_view", customer_id="C1", note="x"))
    assert [(e["event_id"], e["customer_id"], e["extra"]) for e in result.accepted] == [
        ("w-1", "C1", {"note": "x"})
    ]
    assert result.accepted[0]["ingested_at"] == NOW
    assert not (result.dead or result.duplicate or result.held)


def test_alias_only_events_wait_for_a_login_then_come_first() -> None:
    feed = Feed()
    assert feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1", occurred_at=T0)).held
    assert feed.send(raw_ev("w-2", "page_view", anonymous_id="a-1", occurred_at=T0 + 1)).held
    result = feed.send(raw_ev("w-3", "login", occurred_at=T0 + 2, customer_id="C1",
                           anonymous_id="a-1"))
    assert [(e["event_id"], e["customer_id"]) for e in result.accepted] == [
        ("w-1", "C1"),
        ("w-2", "C1"),
        ("w-3", "C1"),
    ]
    assert list(feed.table) == ["anonymous_id:a-1"]
    accepted = feed.send(raw_ev("w-4", "page_view", anonymous_id="a-1")).accepted
    assert accepted[0]["customer_id"] == "C1"
    counters = feed.ingestion.counters
    assert (counters.consumed, counters.accepted, counters.held) == (4, 4, 0)


def test_profile_updates_link_emails_case_insensitively() -> None:
    feed = Feed()
    ticket = raw_ev("s-1", "escalated", email="Ann@Example.com", payload={"ticket_id": "t"})
    assert feed.send(ticket, "support").held
    profile = raw_ev("c-1", "profile_updated", customer_id="C1",
                  payload={"fields": {"email": "ann@example.COM"}})
    result = feed.send(profile, "crm")
    assert [(e["event_id"], e["customer_id"]) for e in result.accepted] == [
        ("s-1", "C1"),
        ("c-1", "C1"),
    ]
    envelope_email = raw_ev("c-2", "profile_updated", customer_id="C2", email="bob@example.org",
                         payload={"fields": {"city": "Utrecht"}})
    feed.send(envelope_email, "crm")
    assert feed.ingestion.resolver.lookup("email", "bob@example.org") == "C2"
    assert set(feed.table) == {"email:ann@example.com", "email:bob@example.org"}


def test_duplicates_count_once_even_while_held() -> None:
    feed = Feed()
    feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1"))
    assert feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1")).duplicate
    assert feed.send(raw_ev("w-1", "page_view", customer_id="C1")).duplicate  # same id, same source
    assert not feed.send(raw_ev("w-1", "customer_erased", customer_id="C9"), "crm").duplicate
    counters = feed.ingestion.counters
    assert (counters.duplicates, counters.held, counters.accepted) == (2, 1, 1)


def test_rejects_become_dead_letters_with_origin_and_bytes() -> None:
    feed = Feed()
    result = feed.send(b"\x00garbage", key=b"k1")
    [record] = result.dead
    assert record["reason"] == "invalid_json"
    assert (record["topic"], record["partition"], record["offset"]) == ("web", 0, 0)
    assert base64.b64decode(record["key_b64"]) == b"k1"
    assert base64.b64decode(record["value_b64"]) == b"\x00garbage"
    assert feed.send(None).dead[0]["reason"] == "empty_value"
    assert feed.ingestion.counters.dead == 2


def test_count_bound_dead_letters_the_oldest_held_event_with_its_bytes() -> None:
    feed = Feed(Ingestion(IngestionConfig(max_held=2)))
    values = [raw_ev(f"w-{n}", "page_view", anonymous_id=f"a-{n}", occurred_at=T0 + n)
              for n in range(3)]
    for value in values[:2]:
        feed.send(value, key=b"anon")
    result = feed.send(values[2])
    [record] = result.dead
    assert record["reason"] == "unresolved_identity"
    assert (record["offset"], record["event_id"]) == (0, "w-0")
    assert base64.b64decode(record["value_b64"]) == values[0]
    assert base64.b64decode(record["key_b64"]) == b"anon"
    assert record["dead_lettered_at"] == NOW
    assert feed.ingestion.counters.held == 2


def test_time_bound_runs_on_event_time() -> None:
    feed = Feed(Ingestion(IngestionConfig(max_hold_ms=60_000)))
    feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1", occurred_at=T0))
    assert feed.send(raw_ev("w-2", "page_view", customer_id="C1",
                         occurred_at=T0 + 60_000)).dead == []
    result = feed.send(raw_ev("w-3", "page_view", customer_id="C1", occurred_at=T0 + 60_001))
    assert [(r["reason"], r["event_id"]) for r in result.dead] == [("unresolved_identity", "w-1")]


def test_evict_lets_a_quiet_stream_age_out_and_flush_empties() -> None:
    feed = Feed(Ingestion(IngestionConfig(max_hold_ms=1_000)))
    feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1", occurred_at=T0))
    feed.send(raw_ev("w-2", "page_view", anonymous_id="a-2", occurred_at=T0 + 500))
    assert [r["event_id"] for r in feed.collect(feed.ingestion.evict(T0 + 1_001, NOW)).dead] == [
        "w-1"
    ]
    assert [r["event_id"] for r in feed.collect(feed.ingestion.flush(NOW)).dead] == ["w-2"]
    counters = feed.ingestion.counters
    assert (counters.consumed, counters.dead, counters.held) == (2, 2, 0)


def test_erasure_forgets_links_and_discards_held_events() -> None:
    feed = Feed()
    feed.send(raw_ev("w-1", "login", customer_id="C1", anonymous_id="a-1"))
    # never linked, erasure names it below
    feed.send(raw_ev("w-2", "page_view", anonymous_id="a-2"))
    feed.send(raw_ev("w-3", "page_view", anonymous_id="a-3"))  # someone else's
    assert list(feed.table) == ["anonymous_id:a-1"]
    erase = raw_ev("c-1", "customer_erased", customer_id="C1", anonymous_id="a-2")
    result = feed.send(erase, "crm")
    assert [e["event_type"] for e in result.accepted] == ["customer_erased"]
    assert result.link_changes == [("anonymous_id:a-1", None)]
    assert feed.table == {}
    counters = feed.ingestion.counters
    assert (counters.erased, counters.held, counters.processed) == (1, 1, 3)
    assert feed.send(raw_ev("w-4", "page_view", anonymous_id="a-1")).held  # the link is gone


def test_unknown_currency_uses_the_configured_rate_table() -> None:
    config = IngestionConfig(currencies=frozenset({"EUR"}))
    feed = Feed(Ingestion(config))
    order = {"order_id": "o-1", "amount": 5.0, "currency": "JPY"}
    result = feed.send(raw_ev("c-1", "order_placed", customer_id="C1", payload=order), "crm")
    assert result.dead[0]["reason"] == "unknown_currency"


def test_snapshot_restore_continues_where_it_left_off() -> None:
    feed = Feed()
    feed.send(raw_ev("w-1", "page_view", anonymous_id="a-1"))
    feed.send(raw_ev("w-2", "login", customer_id="C1", anonymous_id="a-2"))
    snapshot = feed.ingestion.snapshot()
    restored = Feed(Ingestion.restore(snapshot))
    assert restored.ingestion.counters.balanced()
    assert restored.send(raw_ev("w-2", "page_view", customer_id="C1")).duplicate
    accepted = restored.send(raw_ev("w-3", "page_view", anonymous_id="a-2")).accepted
    assert accepted[0]["customer_id"] == "C1"
    result = restored.send(raw_ev("w-4", "login", customer_id="C7", anonymous_id="a-1"))
    assert [(e["event_id"], e["customer_id"]) for e in result.accepted] == [
        ("w-1", "C7"),
        ("w-4", "C7"),
    ]


# -- the counting invariant, over arbitrary streams ------------------------------------------

CUSTOMERS = {"C1": ("ann@example.com", "a-1"), "C2": ("bob@example.org", "b-2")}
OWNER = {alias: cid for cid, aliases in CUSTOMERS.items() for alias in aliases}


@st.composite
def records(draw: st.DrawFn) -> tuple[str, bytes | None]:
    """One record of a messy stream: valid, alias-only, linking, erasing, broken, duplicate."""
    kind = draw(st.sampled_from(["view", "alias", "login", "profile", "erase", "broken", "tick"]))
    number = draw(st.integers(min_value=0, max_value=12))  # small id space: duplicates happen
    when = T0 + draw(st.integers(min_value=0, max_value=20)) * 1_000
    customer_id = draw(st.sampled_from(sorted(CUSTOMERS)))
    email, anonymous_id = CUSTOMERS[customer_id]
    if kind == "view":
        return "web", raw_ev(f"w-{number}", "page_view", occurred_at=when, customer_id=customer_id)
    if kind == "alias":
        use_email = draw(st.booleans())
        if use_email:
            return "email", raw_ev(f"e-{number}", "opened", occurred_at=when, email=email)
        return "web", raw_ev(f"w-{number}", "page_view", occurred_at=when,
                             anonymous_id=anonymous_id)
    if kind == "login":
        return "web", raw_ev(f"w-{number}", "login", occurred_at=when, customer_id=customer_id,
                          anonymous_id=anonymous_id)
    if kind == "profile":
        fields = {"email": email.upper()}
        return "crm", raw_ev(f"c-{number}", "profile_updated", occurred_at=when,
                          customer_id=customer_id, payload={"fields": fields})
    if kind == "erase":
        return "crm", raw_ev(f"c-{number}", "customer_erased", occurred_at=when,
                          customer_id=customer_id)
    if kind == "tick":
        return "tick", None
    broken = [None, b"", b"{", b"[]", b"\xff", raw_ev("", "page_view", occurred_at=when)]
    return "web", draw(st.sampled_from(broken))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(records(), max_size=60),
    max_held=st.integers(min_value=0, max_value=4),
    max_hold_ms=st.sampled_from([0, 3_000, 60_000]),
)
def test_every_consumed_record_is_accounted_for_exactly_once(
    stream: list[tuple[str, bytes | None]], max_held: int, max_hold_ms: int
) -> None:
    feed = Feed(Ingestion(IngestionConfig(max_held=max_held, max_hold_ms=max_hold_ms)))
    first_offset: dict[tuple[str, str], int] = {}
    for source, value in stream:
        if source == "tick":
            feed.collect(feed.ingestion.evict(feed.ingestion.watermark + 1_000, NOW))
            continue
        offset = feed.offset
        result = feed.send(value, source)
        if not (result.duplicate or value is None):
            decoded = orjson.loads(value) if value.startswith(b"{") and len(value) > 1 else {}
            if decoded.get("event_id"):
                first_offset.setdefault((source, decoded["event_id"]), offset)
    feed.collect(feed.ingestion.flush(NOW))

    counters = feed.ingestion.counters
    assert counters.held == 0
    assert counters.consumed == feed.offset
    assert counters.consumed == counters.processed + counters.dead + counters.duplicates
    assert (counters.accepted, counters.dead) == (len(feed.accepted), len(feed.dead))
    accounted = Counter(feed.duplicates)
    accounted.update(record["offset"] for record in feed.dead)
    accounted.update(first_offset[(e["source"], e["event_id"])] for e in feed.accepted)
    assert all(n == 1 for n in accounted.values()), accounted
    assert sum(accounted.values()) + counters.erased == feed.offset
    for event in feed.accepted:  # alias-only events reached the customer owning the alias
        alias = event.get("email", "").lower() or event.get("anonymous_id")
        if alias and event["event_type"] not in ("login", "profile_updated"):
            assert OWNER[alias] == event["customer_id"]
