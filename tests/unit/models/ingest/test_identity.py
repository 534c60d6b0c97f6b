"""IdentityResolver: links, hold/release, bounds, erasure, persistence."""

from __future__ import annotations

import orjson
import pytest

from models.ingest.identity import (
    IdentityResolver,
    Link,
    alias_key,
    routing_alias,
)

EMAIL = ("email", "ann@example.com")
ANON = ("anonymous_id", "a-1")


def test_alias_keys_normalise_emails_only() -> None:
    assert alias_key("email", "  Ann@Example.COM ") == "email:ann@example.com"
    assert alias_key("anonymous_id", "AbC") == "anonymous_id:AbC"
    with pytest.raises(ValueError):
        alias_key("phone", "123")


def test_routing_alias_prefers_email() -> None:
    assert routing_alias([ANON, EMAIL]) == EMAIL
    assert routing_alias([ANON]) == ANON
    assert routing_alias([]) is None


def test_link_and_lookup() -> None:
    resolver = IdentityResolver()
    assert resolver.lookup(*EMAIL) is None
    assert resolver.link(*EMAIL, "C1", event_time=10, event_id="c-1") == []
    assert resolver.lookup("email", "ANN@example.com") == "C1"
    assert resolver.resolve([ANON, EMAIL]) == "C1"
    assert resolver.resolve([ANON]) is None
    assert resolver.aliases_of("C1") == ["email:ann@example.com"]


def test_latest_link_wins_whatever_the_arrival_order() -> None:
    forward, backward = IdentityResolver(), IdentityResolver()
    links = [("C1", 10), ("C2", 20), ("C3", 20), ("C0", 5)]
    for customer_id, time in links:
        forward.link(*EMAIL, customer_id, event_time=time)
    for customer_id, time in reversed(links):
        backward.link(*EMAIL, customer_id, event_time=time)
    assert forward.lookup(*EMAIL) == backward.lookup(*EMAIL) == "C3"
    assert forward.aliases_of("C1") == forward.aliases_of("C2") == []
    assert forward.aliases_of("C3") == ["email:ann@example.com"]


def test_held_events_are_released_in_order_when_linked() -> None:
    resolver = IdentityResolver()
    for n in range(3):
        assert resolver.hold([ANON], {"id": f"e{n}"}, now=100 + n) == []
    resolver.hold([EMAIL], {"id": "other"}, now=104)
    assert resolver.held_count == 4
    released = resolver.link(*ANON, "C9", event_time=110)
    assert [(r.customer_id, r.event.item["id"]) for r in released] == [
        ("C9", "e0"),
        ("C9", "e1"),
        ("C9", "e2"),
    ]
    assert resolver.held_count == 1
    assert resolver.link(*ANON, "C9", event_time=111) == []


def test_an_event_with_two_aliases_is_released_once_by_either() -> None:
    resolver = IdentityResolver()
    resolver.hold([EMAIL, ANON], {"id": "both"}, now=1)
    resolver.hold([EMAIL], {"id": "email-only"}, now=2)
    released = resolver.link(*ANON, "C1", event_time=3)
    assert [r.event.item["id"] for r in released] == ["both"]
    released = resolver.link(*EMAIL, "C2", event_time=4)
    assert [r.event.item["id"] for r in released] == ["email-only"]
    assert resolver.held_count == 0
    assert resolver.to_dict()["held"] == []


def test_count_bound_evicts_oldest_first() -> None:
    resolver = IdentityResolver(max_held=2)
    assert resolver.hold([ANON], {"id": "e0"}, now=1) == []
    assert resolver.hold([EMAIL], {"id": "e1"}, now=2) == []
    evicted = resolver.hold([ANON], {"id": "e2"}, now=3)
    assert [(e.event.item["id"], "bound" in e.why) for e in evicted] == [("e0", True)]
    assert [r.event.item["id"] for r in resolver.link(*ANON, "C1", event_time=4)] == ["e2"]


def test_time_bound_runs_on_event_time_since_holding() -> None:
    resolver = IdentityResolver(max_hold_ms=100)
    resolver.hold([ANON], {"id": "e0"}, now=1_000)
    resolver.hold([EMAIL], {"id": "e1"}, now=1_050)
    assert resolver.evict(1_100) == []  # exactly the bound: still waiting
    evicted = resolver.evict(1_101)
    assert [e.event.item["id"] for e in evicted] == ["e0"]
    assert "100 ms" in evicted[0].why
    # An older clock reading never moves deadlines back.
    assert resolver.evict(0) == []
    assert [e.event.item["id"] for e in resolver.evict(1_151)] == ["e1"]


def test_hold_clock_never_decreases() -> None:
    resolver = IdentityResolver(max_hold_ms=100)
    resolver.hold([ANON], {"id": "late"}, now=5_000)
    resolver.hold([ANON], {"id": "older"}, now=10)  # late-arriving event: stamped 5_000
    assert [held.held_at for held in resolver.held()] == [5_000, 5_000]


def test_flush_gives_up_on_everything_in_order() -> None:
    resolver = IdentityResolver()
    resolver.hold([ANON], {"id": "e0"}, now=1)
    resolver.hold([EMAIL], {"id": "e1"}, now=1)
    assert [e.event.item["id"] for e in resolver.flush()] == ["e0", "e1"]
    assert resolver.held_count == 0


def test_hold_needs_an_alias() -> None:
    with pytest.raises(ValueError):
        IdentityResolver().hold([], {"id": "x"}, now=1)


def test_forget_removes_links_and_held_events_of_given_aliases() -> None:
    resolver = IdentityResolver(track_changes=True)
    resolver.link(*EMAIL, "C1", event_time=1)
    resolver.link(*ANON, "C1", event_time=2)
    resolver.link("anonymous_id", "b-2", "C2", event_time=3)
    resolver.hold([("email", "new@example.com")], {"id": "pending"}, now=4)
    resolver.hold([("email", "else@example.com")], {"id": "kept"}, now=5)
    resolver.drain_changes()
    forgotten = resolver.forget("C1", [("email", "NEW@example.com")])
    assert forgotten.link_keys == ["anonymous_id:a-1", "email:ann@example.com"]
    assert [held.item["id"] for held in forgotten.held] == ["pending"]
    assert resolver.lookup(*EMAIL) is None
    assert resolver.lookup("anonymous_id", "b-2") == "C2"
    assert resolver.held_count == 1
    assert sorted(resolver.drain_changes()) == [
        ("anonymous_id:a-1", None),
        ("email:ann@example.com", None),
    ]


def test_unlink_one_alias() -> None:
    resolver = IdentityResolver()
    resolver.link(*EMAIL, "C1", event_time=1)
    assert resolver.unlink(*EMAIL) is True
    assert resolver.unlink(*EMAIL) is False
    assert resolver.aliases_of("C1") == []


def test_changes_are_tracked_only_when_asked_and_drain_once() -> None:
    quiet = IdentityResolver()
    quiet.link(*EMAIL, "C1", event_time=1)
    assert quiet.drain_changes() == []
    tracked = IdentityResolver(track_changes=True)
    tracked.link(*EMAIL, "C1", event_time=1, event_id="c-1")
    tracked.link(*EMAIL, "C0", event_time=0)  # superseded: no change
    assert tracked.drain_changes() == [
        (
            "email:ann@example.com",
            {
                "alias_kind": "email",
                "alias": "ann@example.com",
                "customer_id": "C1",
                "linked_at": 1,
                "event_id": "c-1",
            },
        )
    ]
    assert tracked.drain_changes() == []


def test_links_restore_from_table_records() -> None:
    source = IdentityResolver(track_changes=True)
    source.link(*EMAIL, "C1", event_time=1)
    source.link(*ANON, "C2", event_time=2)
    table = {key: record for key, record in source.drain_changes() if record is not None}
    restored = IdentityResolver(track_changes=True)
    restored.load_links(orjson.loads(orjson.dumps(list(table.values()))))
    assert restored.lookup(*EMAIL) == "C1"
    assert restored.lookup(*ANON) == "C2"
    assert restored.drain_changes() == []  # recovery is not a change
    assert {link.key for link in restored.links()} == set(table)
    assert Link.from_record(table["email:ann@example.com"]).customer_id == "C1"


def test_snapshot_round_trip_keeps_links_held_events_and_order() -> None:
    resolver = IdentityResolver(max_hold_ms=1_000)
    resolver.link(*EMAIL, "C1", event_time=1)
    resolver.hold([ANON], {"id": "e0"}, now=10)
    resolver.hold([("anonymous_id", "z"), ANON], {"id": "e1"}, now=20)
    snapshot = resolver.snapshot()
    restored = IdentityResolver.restore(snapshot, max_hold_ms=1_000)
    assert restored.snapshot() == resolver.snapshot()
    restored.hold([ANON], {"id": "e2"}, now=30)
    released = restored.link(*ANON, "C2", event_time=40)
    assert [r.event.item["id"] for r in released] == ["e0", "e1", "e2"]
    assert restored.held_count == 0


def test_adopt_makes_the_table_the_source_of_truth() -> None:
    resolver = IdentityResolver(track_changes=True)
    resolver.link(*EMAIL, "C1", event_time=10)
    resolver.drain_changes()
    table_record = Link("email", "ann@example.com", "C2", linked_at=5).to_record()
    resolver.adopt(alias_key(*EMAIL), table_record)  # older, but the table says so
    assert resolver.lookup(*EMAIL) == "C2"
    assert resolver.aliases_of("C1") == [] and resolver.aliases_of("C2") == [alias_key(*EMAIL)]
    resolver.adopt(alias_key(*EMAIL), None)
    assert resolver.lookup(*EMAIL) is None
    assert resolver.drain_changes() == []  # adopting is not a change to write back


def test_clear_links_keeps_held_events() -> None:
    resolver = IdentityResolver()
    resolver.link(*ANON, "C1", event_time=1)
    resolver.hold([EMAIL], {"event_id": "e-1"}, now=2)
    resolver.clear_links()
    assert resolver.lookup(*ANON) is None and resolver.aliases_of("C1") == []
    assert resolver.held_count == 1
    last = resolver.last_held
    assert last is not None and last.item == {"event_id": "e-1"}
    assert IdentityResolver().last_held is None


def test_a_link_remembers_since_when_the_alias_has_been_the_customers() -> None:
    """Linked again to the same customer later, or an earlier link arriving late: the alias
    has been the customer's since the earliest (what places an overtaken event); linked to
    another customer, since that link."""
    r = IdentityResolver()
    r.link("anonymous_id", "a-1", "C1", event_time=100)
    r.link("anonymous_id", "a-1", "C1", event_time=300)
    first = r.resolve_link([("anonymous_id", "a-1")])
    assert first is not None and (first.linked_at, first.first) == (300, 100)
    r.link("anonymous_id", "a-1", "C1", event_time=50)  # an earlier one, arriving late
    again = r.resolve_link([("anonymous_id", "a-1")])
    assert again is not None and (again.linked_at, again.first) == (300, 50)
    assert Link.from_record(again.to_record()) == again
    r.link("anonymous_id", "a-1", "C2", event_time=400)
    other = r.resolve_link([("anonymous_id", "a-1")])
    assert other is not None and (other.customer_id, other.first) == ("C2", 400)
