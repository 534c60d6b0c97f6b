"""Identity resolution end to end on the real broker, through real `scorestream worker`s.

Alias-only events travel source topic -> ingest stage -> identity topic (keyed by alias) ->
identity stage, which owns the alias's link in a changelog-backed table and holds the event
until the link arrives. The tests sync on the held-events changelog to know an event is held
before its link is produced, so every expectation below is exact.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Message

from tests.integration.kafka_tools import (
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import T0, raw_ev

pytestmark = pytest.mark.integration


def _ev(source: str, event_type: str, event_id: str, at_s: float, **fields: Any) -> bytes:
    return raw_ev(event_id, event_type, source=source, occurred_at=T0 + int(at_s * 1000), **fields)


def _wait_held(bootstrap: str, app_id: str, expected: int, worker: Any) -> None:
    """Wait until the identity stage has written `expected` held-event records (keys
    `held/...` on its table's changelog)."""
    changelog = f"{app_id}-identity-changelog"
    deadline = time.monotonic() + 60
    puts = 0
    while puts < expected and time.monotonic() < deadline:
        records = read_topic(bootstrap, changelog, expected, timeout=5, settle=0.5)
        puts = sum(m.value() is not None and (m.key() or b"").startswith(b"held/")
                   for m in records)
    assert puts == expected, worker.log_tail()


def _events(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """Customer events by event id; fails on a key that is not the customer, and on a repeated
    id (the identity stage is exactly once)."""
    by_id: dict[str, dict[str, Any]] = {}
    for msg in messages:
        event = orjson.loads(msg.value())
        assert msg.key() == event["customer_id"].encode()
        assert event["event_id"] not in by_id, f"emitted twice: {event['event_id']}"
        by_id[event["event_id"]] = event
    return by_id


def test_mixed_sources_alias_only_events_reach_their_customer(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    app_id = f"identity-{unique_name}"
    # Customer events across the four sources; w-5..w-7 arrive out of event-time order.
    known = [
        *[_ev("web", "page_view", f"w-{n}", 10 + n, customer_id=f"C{n % 3}",
              payload={"url": f"/p/{n}"}) for n in range(5)],
        *[_ev("web", "page_view", f"w-{n}", 20 - n, customer_id="C1",
              payload={"url": "/late"}) for n in range(5, 8)],
    ]
    email_known = [_ev("email", "opened", f"e-{n}", 10 + n, customer_id="C2") for n in range(4)]
    crm_known = [_ev("crm", "order_placed", f"o-{n}", 10 + n, customer_id="C1",
                     payload={"order_id": f"o-{n}", "amount": 10.0 * n,
                              "currency": "USD" if n % 2 else "EUR"}) for n in range(4)]
    support_known = [_ev("support", "ticket_opened", f"t-{n}", 10 + n, customer_id="C0",
                         payload={"ticket_id": f"t-{n}"}) for n in range(3)]
    # Alias-only events: none of their aliases is linked yet, so all are held.
    ann = [_ev("email", "opened", f"ann-{n}", 30 + n, email="Ann@Example.com") for n in range(2)]
    bob = [_ev("email", "clicked", "bob-0", 32, email="bob@example.com",
               payload={"url": "/offer"})]
    dan = [_ev("email", "opened", "dan-0", 33, email="dan@example.com")]
    anon = [_ev("web", "page_view", f"anon-{n}", 34 + n, anonymous_id="a-1",
                payload={"url": "/shop"}) for n in range(2)]
    ghost = _ev("web", "page_view", "ghost-0", 36, anonymous_id="never-linked",
                payload={"url": "/"})
    invalid_web = [_ev("web", "page_view", "bad-schema", 37, customer_id="C1", payload=None),
                   raw_ev("bad-time", "page_view", occurred_at=12345, customer_id="C1")]
    invalid_email = [b"{not json"]
    invalid_crm = [
        _ev("crm", "order_placed", "no-id", 38,
            payload={"order_id": "x", "amount": 1.0, "currency": "EUR"}),
        _ev("crm", "order_placed", "bad-currency", 39, customer_id="C1",
            payload={"order_id": "y", "amount": 1.0, "currency": "XYZ"}),
    ]
    invalid_support = [b"\xff\xfe\x00"]
    invalid = [*invalid_web, *invalid_email, *invalid_crm, *invalid_support]
    redelivered_known, redelivered_alias_only = known[0], ann[0]  # duplicates: count once

    # Links and an erasure, produced only once the alias-only events are held.
    links = [
        _ev("crm", "profile_updated", "p-ann", 50, customer_id="C1",
            payload={"fields": {"email": "ann@example.com", "city": "Bern"}}),
        _ev("crm", "profile_updated", "p-bob", 51, customer_id="C2", email="bob@example.com",
            payload={"fields": {"first_name": "Bob"}}),
        _ev("crm", "customer_erased", "erase-dan", 53, customer_id="C4",
            email="dan@example.com"),
    ]
    login = _ev("web", "login", "login-a-1", 52, customer_id="C3", anonymous_id="a-1")
    # Then: an older link for ann (loses: latest event time wins), an alias-only event that
    # resolves at once, and an event far ahead in event time that ages the ghost out.
    stale_link = _ev("crm", "profile_updated", "p-ann-old", 40, customer_id="C9",
                     payload={"fields": {"email": "ANN@example.com"}})
    ann_later = _ev("email", "opened", "ann-later", 60, email="ann@example.com")
    pusher = _ev("support", "ticket_opened", "t-pusher", 3600, customer_id="C0",
                 payload={"ticket_id": "t-pusher"})

    env = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state", free_port(),
                     SCORESTREAM_IDENTITY_MAX_HOLD_MS="600000")
    with running_worker(env, tmp_path / "worker.log") as worker:
        produce(kafka_bootstrap, topics["web"],
                [(b"w", v) for v in [*known, *anon, ghost, *invalid_web, redelivered_known]])
        produce(kafka_bootstrap, topics["email"],
                [(b"e", v) for v in [*email_known, *ann, *bob, *dan, *invalid_email,
                                     redelivered_alias_only]])
        produce(kafka_bootstrap, topics["crm"], [(None, v) for v in [*crm_known, *invalid_crm]])
        produce(kafka_bootstrap, topics["support"],
                [(b"s", v) for v in [*support_known, *invalid_support]])
        held = [*ann, *bob, *dan, *anon, ghost]
        _wait_held(kafka_bootstrap, app_id, len(held), worker)

        produce(kafka_bootstrap, topics["crm"], [(b"c", v) for v in links])
        produce(kafka_bootstrap, topics["web"], [(b"w", login)])
        direct = [*known, *email_known, *crm_known, *support_known, *links, login]
        released = [*ann, *bob, *anon]
        read_topic(kafka_bootstrap, topics["customer_events"], len(direct) + len(released),
                   settle=0.5)

        produce(kafka_bootstrap, topics["crm"], [(b"c", stale_link)])
        produce(kafka_bootstrap, topics["email"], [(b"e", ann_later)])
        produce(kafka_bootstrap, topics["support"], [(b"s", pusher)])
        expected_events = [*direct, *released, stale_link, ann_later, pusher]
        events = read_topic(kafka_bootstrap, topics["customer_events"], len(expected_events),
                            settle=3.0)
        dead = read_topic(kafka_bootstrap, topics["dead_letters"], len(invalid) + 1, settle=1.0)
        assert worker.stop() == 0, worker.log_tail()

    by_id = _events(events)
    assert sorted(by_id) == sorted(orjson.loads(v)["event_id"] for v in expected_events), (
        worker.log_tail())
    owner = {event_id: event["customer_id"] for event_id, event in by_id.items()}
    assert [owner[f"ann-{n}"] for n in range(2)] == ["C1", "C1"]
    assert owner["ann-later"] == "C1"  # the older link to C9 did not take the alias over
    assert owner["bob-0"] == "C2"
    assert [owner[f"anon-{n}"] for n in range(2)] == ["C3", "C3"]
    assert "dan-0" not in owner  # held for an alias that the erasure named: discarded
    assert [by_id[f"w-{n}"]["occurred_at"] for n in range(5, 8)] == [
        T0 + s * 1000 for s in (15, 14, 13)]
    assert by_id["ann-0"]["email"] == "Ann@Example.com"  # aliases travel as they arrived
    assert Counter(e["source"] for e in by_id.values()) == {
        "web": len(known) + 1 + len(anon), "email": len(email_known) + 2 + 1 + 1,
        "crm": len(crm_known) + len(links) + 1, "support": len(support_known) + 1}

    letters = [orjson.loads(m.value()) for m in dead]
    assert len(letters) == len(invalid) + 1, worker.log_tail()
    assert Counter(letter["reason"] for letter in letters) == {
        "schema_violation": 1, "bad_timestamp": 1, "invalid_json": 1, "missing_identity": 1,
        "unknown_currency": 1, "invalid_utf8": 1, "unresolved_identity": 1}
    unresolved = next(x for x in letters if x["reason"] == "unresolved_identity")
    assert unresolved["event_id"] == "ghost-0"
    assert unresolved["topic"] == topics["web"]
    assert base64.b64decode(unresolved["value_b64"]) == ghost
    assert {base64.b64decode(x["value_b64"]) for x in letters} == {*invalid, ghost}


def test_held_event_count_bound_dead_letters_the_oldest(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    app_id = f"identity-bound-{unique_name}"
    crowd = [_ev("email", "opened", f"crowd-{n}", 10 + n, email="crowd@example.com")
             for n in range(3)]
    link = _ev("crm", "profile_updated", "p-crowd", 20, customer_id="C5",
               payload={"fields": {"email": "crowd@example.com"}})

    env = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state", free_port(),
                     SCORESTREAM_IDENTITY_MAX_HELD="2")
    with running_worker(env, tmp_path / "worker.log") as worker:
        produce(kafka_bootstrap, topics["email"], [(b"crowd", v) for v in crowd])
        _wait_held(kafka_bootstrap, app_id, len(crowd), worker)
        produce(kafka_bootstrap, topics["crm"], [(b"c", link)])
        events = read_topic(kafka_bootstrap, topics["customer_events"], 3, settle=2.0)
        dead = read_topic(kafka_bootstrap, topics["dead_letters"], 1, settle=0.5)
        assert worker.stop() == 0, worker.log_tail()

    owner = {e["event_id"]: e["customer_id"] for e in _events(events).values()}
    assert owner == {"crowd-1": "C5", "crowd-2": "C5", "p-crowd": "C5"}, worker.log_tail()
    letters = [orjson.loads(m.value()) for m in dead]
    assert [(x["reason"], x["event_id"]) for x in letters] == [
        ("unresolved_identity", "crowd-0")]
    assert "bound of 2" in letters[0]["message"]
    assert base64.b64decode(letters[0]["value_b64"]) == crowd[0]


def test_links_and_held_events_survive_a_worker_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    app_id = f"identity-restart-{unique_name}"
    before = [
        _ev("crm", "profile_updated", "p-eve", 10, customer_id="C7",
            payload={"fields": {"email": "eve@example.com"}}),
        _ev("web", "login", "login-8", 11, customer_id="C8", anonymous_id="a-8"),
    ]
    waiting = _ev("email", "opened", "late-0", 12, email="late@example.com")
    after = [
        _ev("email", "opened", "eve-0", 20, email="EVE@example.com"),
        _ev("web", "search", "a8-0", 21, anonymous_id="a-8", payload={"query": "shoes"}),
    ]
    late_link = _ev("crm", "profile_updated", "p-late", 22, customer_id="C6",
                    payload={"fields": {"email": "late@example.com"}})

    first = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state-1", free_port())
    with running_worker(first, tmp_path / "worker-1.log") as worker:
        produce(kafka_bootstrap, topics["crm"], [(b"c", before[0])])
        produce(kafka_bootstrap, topics["web"], [(b"w", before[1])])
        produce(kafka_bootstrap, topics["email"], [(b"e", waiting)])
        _wait_held(kafka_bootstrap, app_id, 1, worker)
        read_topic(kafka_bootstrap, topics["customer_events"], len(before), settle=1.0)
        assert worker.stop() == 0, worker.log_tail()

    # A new process with the same app id and an empty state directory: everything it knows
    # comes back from the changelogs.
    second = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state-2", free_port())
    with running_worker(second, tmp_path / "worker-2.log") as worker:
        produce(kafka_bootstrap, topics["email"], [(b"e", after[0])])
        produce(kafka_bootstrap, topics["web"], [(b"w", after[1])])
        produce(kafka_bootstrap, topics["crm"], [(b"c", late_link)])
        expected = [*before, *after, waiting, late_link]
        events = read_topic(kafka_bootstrap, topics["customer_events"], len(expected),
                            settle=3.0)
        dead = read_topic(kafka_bootstrap, topics["dead_letters"], 1, timeout=5.0)
        assert worker.stop() == 0, worker.log_tail()

    owner = {e["event_id"]: e["customer_id"] for e in _events(events).values()}
    assert owner == {"p-eve": "C7", "login-8": "C8", "eve-0": "C7", "a8-0": "C8",
                     "late-0": "C6", "p-late": "C6"}, worker.log_tail()
    assert dead == []


def _identity_owners(bootstrap: str, group: str, identity_topic: str) -> list[set[int]]:
    """Identity-topic partitions of each member of the identity stage's group."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return [{tp.partition for tp in member.assignment.topic_partitions
             if tp.topic == identity_topic} for member in description.members]


def test_two_workers_split_identity_partitions_and_a_survivor_takes_over_held_events(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    import time

    topics = topic_names(unique_name)
    app_id = f"identity-pair-{unique_name}"
    customers = range(12)
    waiting = [
        _ev("web" if n % 2 else "email", "page_view" if n % 2 else "opened", f"wait-{n}-{k}",
            10 + k, payload={"url": "/"} if n % 2 else {},
            **({"anonymous_id": f"a-{n}"} if n % 2 else {"email": f"u{n}@example.com"}))
        for n in customers for k in range(2)
    ]
    links = [
        _ev("web", "login", f"link-{n}", 30, customer_id=f"C{n}", anonymous_id=f"a-{n}")
        if n % 2 else
        _ev("crm", "profile_updated", f"link-{n}", 30, customer_id=f"C{n}",
            payload={"fields": {"email": f"U{n}@example.com"}})
        for n in customers
    ]

    env_a = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state-a", free_port())
    env_b = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state-b", free_port())
    with running_worker(env_a, tmp_path / "worker-a.log") as worker_a, \
            running_worker(env_b, tmp_path / "worker-b.log") as worker_b:
        deadline = time.monotonic() + 90
        owners: list[set[int]] = []
        while time.monotonic() < deadline:
            owners = _identity_owners(kafka_bootstrap, f"{app_id}-identity",
                                      topics["identity"])
            if len(owners) == 2 and all(owners):
                break
            time.sleep(1.0)
        assert len(owners) == 2 and all(owners), (owners, worker_b.log_tail())

        for n, value in enumerate(waiting):
            topic = topics["web"] if (n // 2) % 2 else topics["email"]
            produce(kafka_bootstrap, topic, [(f"k{n}".encode(), value)])
        _wait_held(kafka_bootstrap, app_id, len(waiting), worker_a)
        # Worker b leaves with some of the held events; worker a must recover them from the
        # held-events changelog when its partitions come over.
        assert worker_b.stop() == 0, worker_b.log_tail()
        produce(kafka_bootstrap, topics["web"],
                [(b"w", v) for n, v in zip(customers, links, strict=True) if n % 2])
        produce(kafka_bootstrap, topics["crm"],
                [(b"c", v) for n, v in zip(customers, links, strict=True) if not n % 2])
        expected = len(waiting) + len(links)
        events = read_topic(kafka_bootstrap, topics["customer_events"], expected, timeout=120,
                            settle=3.0)
        dead = read_topic(kafka_bootstrap, topics["dead_letters"], 1, timeout=3.0)
        assert worker_a.stop() == 0, worker_a.log_tail()

    # Exactly once: a partition handed over mid-stream releases each event once.
    owner = {e["event_id"]: e["customer_id"] for e in _events(events).values()}
    assert owner == {
        **{f"wait-{n}-{k}": f"C{n}" for n in customers for k in range(2)},
        **{f"link-{n}": f"C{n}" for n in customers},
    }, worker_a.log_tail()
    assert dead == []
