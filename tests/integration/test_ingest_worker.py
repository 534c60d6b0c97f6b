"""The ingest slice end to end on the real broker: source topics in, customer-events and
dead-letters out, through a real `scorestream worker` process."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

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


def _event(source: str, event_type: str, n: int, **fields: Any) -> bytes:
    return raw_ev(f"{source}-{n}", event_type, source=source, occurred_at=T0 + n * 1000,
               customer_id=f"C{n % 7}", **fields)


def test_worker_routes_valid_events_and_dead_letters_bad_ones(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    web = [_event("web", "page_view", n, payload={"url": f"/p/{n}"}) for n in range(40)]
    crm = [_event("crm", "order_placed", n,
                  payload={"order_id": f"o{n}", "amount": 10.0 + n, "currency": "EUR"})
           for n in range(40, 60)]
    email = [_event("email", "opened", n) for n in range(60, 80)]
    support = [_event("support", "ticket_opened", n, payload={"ticket_id": f"t{n}"})
               for n in range(80, 90)]
    bad = [b"not json", b"\xff\xfe\x00", b"[1,2,3]", _event("web", "no_such_type", 999)]
    duplicate = web[0]

    env = worker_env(kafka_bootstrap, f"ingest-{unique_name}", topics, tmp_path / "state",
                     free_port())
    with running_worker(env, tmp_path / "worker.log") as worker:
        produce(kafka_bootstrap, topics["web"], [(b"k", v) for v in [*web, *bad, duplicate]])
        produce(kafka_bootstrap, topics["crm"], [(None, v) for v in crm])
        produce(kafka_bootstrap, topics["email"], [(b"e", v) for v in email])
        produce(kafka_bootstrap, topics["support"], [(b"s", v) for v in support])
        valid = len(web) + len(crm) + len(email) + len(support)
        events = read_topic(kafka_bootstrap, topics["customer_events"], valid, settle=3.0)
        dead = read_topic(kafka_bootstrap, topics["dead_letters"], len(bad), settle=1.0)
        assert worker.stop() == 0, worker.log_tail()

    decoded = [orjson.loads(m.value()) for m in events]
    assert len(decoded) == valid, worker.log_tail()
    assert sorted(e["event_id"] for e in decoded) == sorted(
        orjson.loads(v)["event_id"] for v in [*web, *crm, *email, *support])
    for msg, event in zip(events, decoded, strict=True):
        assert msg.key() == event["customer_id"].encode()
    assert Counter(e["source"] for e in decoded) == {"web": 40, "crm": 20, "email": 20,
                                                     "support": 10}

    letters = [orjson.loads(m.value()) for m in dead]
    assert len(letters) == len(bad)
    originals = {base64.b64decode(letter["value_b64"]) for letter in letters}
    assert originals == set(bad)
    assert all(letter["reason"] and letter["message"] for letter in letters)
    assert {letter["topic"] for letter in letters} == {topics["web"]}
