"""Right to erasure end to end on the real broker, through `scorestream erase` and a real worker.

A customer with two linked aliases (one email, one anonymous id) has events that arrived with
its id and through each alias, plus an event held for a third alias that the erasure request
names. After the erasure every trace is tombstoned on the changelog topics, the confirmation
is emitted, the scorecard API answers 404, and it still does after a worker restart on an empty
state directory (state and links rebuilt from the changelogs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.registry import validator
from tests.integration.kafka_tools import (
    WorkerProcess,
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import ROOT, raw_ev

pytestmark = pytest.mark.integration

# Event times an hour back: the erasure request is stamped with the wall clock, and a history
# far older would age the held event out (the hold bound runs on event time) before the
# erasure reaches it.
BASE_MS = int(time.time() * 1000) - 3_600_000
CUSTOMER = "ERASE-ME-1"
EMAIL_KEY, COOKIE_KEY, OTHER_KEY = (
    "email:eve@example.com", "anonymous_id:eve-cookie", "anonymous_id:eve-other")


def _ev(source: str, event_type: str, event_id: str, at_s: int, **fields: Any) -> bytes:
    return raw_ev(event_id, event_type, source=source, occurred_at=BASE_MS + at_s * 1000, **fields)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _wait(predicate: Any, timeout: float, what: str, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log_tail()}")


def _changelog(bootstrap: str, topic: str, kind: str = "") -> dict[str, list[bytes | None]]:
    """Every value each key had on a changelog topic, in order (None: a tombstone); with a
    kind, only the identity table's records of that kind (`kind/...` keys, prefix cut)."""
    history: dict[str, list[bytes | None]] = {}
    for msg in read_topic(bootstrap, topic, 1, timeout=30, settle=1.5):
        key = msg.key()
        assert key is not None
        history.setdefault(key.decode(), []).append(msg.value())
    return _of_kind(history, kind) if kind else history


def _of_kind(history: dict[str, list[bytes | None]], kind: str) -> dict[str, list[bytes | None]]:
    """The identity table's records of one kind (`kind/...` keys, prefix cut)."""
    prefix = f"{kind}/"
    return {key[len(prefix):]: values for key, values in history.items()
            if key.startswith(prefix)}


def _puts(bootstrap: str, topic: str, kind: str) -> int:
    """Records (not tombstones) of one kind of the identity table on its changelog."""
    return sum(value is not None for history in _changelog(bootstrap, topic, kind).values()
               for value in history)


def test_erasure_removes_every_trace_and_survives_a_restart(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    app_id = f"erasure-{unique_name}"
    changelog = {name: f"{app_id}-{name}-changelog" for name in ("customer-state", "identity")}
    env = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "state", free_port())
    with running_worker(env, tmp_path / "worker.log") as worker:
        # Two links, then events by id and through each alias, then one held event.
        produce(kafka_bootstrap, topics["crm"], [(CUSTOMER.encode(), _ev(
            "crm", "profile_updated", "p-1", 1, customer_id=CUSTOMER,
            payload={"fields": {"email": "Eve@Example.com", "city": "Oslo"}}))])
        produce(kafka_bootstrap, topics["web"], [(CUSTOMER.encode(), _ev(
            "web", "login", "l-1", 2, customer_id=CUSTOMER, anonymous_id="eve-cookie"))])
        _wait(lambda: _puts(kafka_bootstrap, changelog["identity"], "index") >= 2, 60,
              "both links indexed", worker)
        produce(kafka_bootstrap, topics["web"], [
            (b"x", _ev("web", "page_view", "v-1", 3, customer_id=CUSTOMER,
                       payload={"url": "/"})),
            (b"x", _ev("web", "page_view", "v-2", 4, anonymous_id="eve-cookie",
                       payload={"url": "/shop"})),
            (b"x", _ev("web", "page_view", "v-3", 5, anonymous_id="eve-other",
                       payload={"url": "/hidden"}))])
        produce(kafka_bootstrap, topics["email"], [
            (b"x", _ev("email", "opened", "e-1", 6, email="eve@example.com"))])
        _wait(lambda: _puts(kafka_bootstrap, changelog["identity"], "held") == 1, 60,
              "the held event", worker)
        card_url = f"{worker.web_url}/customers/{CUSTOMER}/scorecard"
        events = read_topic(kafka_bootstrap, topics["customer_events"], 5, settle=1.0)
        assert sorted(orjson.loads(m.value())["event_id"] for m in events) == [
            "e-1", "l-1", "p-1", "v-1", "v-2"]
        _wait(lambda: _status(card_url) == 200, 60, "the scorecard", worker)

        began = time.monotonic()
        erase = subprocess.run(
            [sys.executable, "-m", "streams.cli", "erase", CUSTOMER,
             "--anonymous-id", "eve-other", "--wait", "90"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=150, check=False)
        assert erase.returncode == 0, erase.stderr + worker.log_tail()
        confirmed_in = time.monotonic() - began
        printed = json.loads(erase.stdout.strip().splitlines()[-1])
        _wait(lambda: _status(card_url) == 404, 30, "the scorecard's 404", worker)
        assert worker.stop() == 0, worker.log_tail()

    [message] = read_topic(kafka_bootstrap, topics["erasure_confirmations"], 1, settle=1.0)
    confirmation = orjson.loads(message.value())
    validator("erasure-confirmations")(confirmation)
    assert message.key() == CUSTOMER.encode() and confirmation == printed
    assert {k: v for k, v in confirmation.items() if k not in ("confirmed_at", "requested_at")
            } == {"customer_id": CUSTOMER, "erasure_event_id": printed["erasure_event_id"],
                  "source": "crm", "customer_state_removed": True,
                  "identity_links_removed": 2, "held_events_discarded": 1, "aliases_erased": 3}
    # Tombstones: the state, the score changes, both links, the held event and the index.
    state = _changelog(kafka_bootstrap, changelog["customer-state"])
    assert state[CUSTOMER][0] is not None and state[CUSTOMER][-1] is None
    changes = _changelog(kafka_bootstrap, topics["score_changes"])
    assert changes[CUSTOMER][-1] is None
    identity = _changelog(kafka_bootstrap, changelog["identity"])
    links = _of_kind(identity, "link")
    assert set(links) == {EMAIL_KEY, COOKIE_KEY}
    assert all(history[0] is not None and history[-1] is None for history in links.values())
    [(held_key, held_history)] = _of_kind(identity, "held").items()
    assert held_key.startswith(OTHER_KEY) and held_history[-1] is None
    index = _of_kind(identity, "index")
    assert list(index) == [f"customer:{CUSTOMER}"] and index[f"customer:{CUSTOMER}"][-1] is None
    print(f"erasure confirmed {confirmed_in:.1f}s after the request")

    # A new worker on an empty state directory rebuilds everything from the changelogs.
    env = worker_env(kafka_bootstrap, app_id, topics, tmp_path / "fresh", free_port())
    with running_worker(env, tmp_path / "restarted.log") as worker:
        card_url = f"{worker.web_url}/customers/{CUSTOMER}/scorecard"
        status = _wait(lambda: (s := _status(card_url)) in (200, 404) and s, 90,
                       "the partition's owner", worker)
        assert status == 404
        # The erased link resolves nothing any more: an event through the alias is held.
        produce(kafka_bootstrap, topics["email"], [
            (b"x", _ev("email", "opened", "e-2", 7, email="eve@example.com"))])
        _wait(lambda: _puts(kafka_bootstrap, changelog["identity"], "held") == 2, 60,
              "the alias-only event to be held", worker)
        assert _status(card_url) == 404
        assert worker.stop() == 0, worker.log_tail()
