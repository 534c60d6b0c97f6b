"""Hostile input on the real broker: no record's content stops a worker, nothing is lost.

A schema-valid order of 2e17 once stopped the scoring stage on every start (the worker read it
again after each restart). Here it arrives among 200 good events, beside a mix of other hostile
records: it is dead-lettered, the 200 are scored, the worker stays up and so does a restart,
and the counters add up: consumed == scored + dead letters + duplicates.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.fault_tools import get_json, metric, wait_for
from tests.integration.kafka_tools import (
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import raw_ev

pytestmark = pytest.mark.integration

POISON = (b'{"event_id":"p1","event_type":"order_placed","source":"crm",'
          b'"occurred_at":"2026-01-21T12:00:00Z","customer_id":"X1",'
          b'"payload":{"order_id":"o1","amount":2e17,"currency":"EUR"}}')


def _order(n: int, customer: str, day: float, amount: float = 25.0) -> tuple[bytes, bytes]:
    return customer.encode(), raw_ev(f"g{n}", "order_placed", day, customer_id=customer,
                                  payload={"order_id": f"o{n}", "amount": amount})


def test_a_poison_order_among_good_ones_is_dead_lettered_and_the_worker_stays_up(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"hostile-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_IDENTITY_MAX_HOLD_MS="60000")
    good = [_order(n, f"G{n % 40}", 20 + n / 100) for n in range(200)]
    crm = [*good[:100], (b"X1", POISON), *good[100:]]
    hostile_crm = [
        (b"X2", b'{"event_id": "bad-json", '),  # invalid JSON
        (b"X3", _order(900, "X3", 20, amount=5e9)[1]),  # beyond the configured bound (1e9)
        (b"X4", _order(901, "X4", 20, amount=-5)[1]),  # negative
        (b"X5", None),  # tombstone
        (b"G1", good[1][1]),  # a redelivery of a good order
    ]
    web = [
        (b"anon-1", raw_ev("w1", "page_view", 20, anonymous_id="anon-1")),
        # never linked: unresolved
        (b"anon-2", raw_ev("w3", "page_view", 20, anonymous_id="anon-2")),
        (b"G8", raw_ev("w4", "page_view", 21, customer_id="G8")),
    ]
    # The anonymous page view w1 waits for its login, ~90 s of event time later.
    login = [(b"anon-1", raw_ev("w2", "login", 20.001, anonymous_id="anon-1",
                                customer_id="G7"))]
    # event time past the hold bound
    later = [(b"G9", raw_ev("w5", "page_view", 30, customer_id="G9"))]
    phases = [("crm", [*crm, *hostile_crm]), ("web", web), ("web", login), ("web", later)]
    sent = sum(len(records) for _topic, records in phases)
    with running_worker(env, tmp_path / "worker.log") as worker:
        produced = 0
        for role, records in phases:
            produced += produce(kafka_bootstrap, topics[role], records)
            wait_for(lambda n=produced: metric(
                worker.web_url, "scorestream_events_consumed_total") == n,
                60, f"{produced} records consumed", worker.log_tail, every=0.3)
            time.sleep(1.5)  # a watermark tick or two reaches the identity stage

        seen: dict[str, float] = {}

        def settled() -> bool:
            for name in ("consumed", "processed", "dead_letters", "duplicate_events"):
                seen[name] = metric(worker.web_url, f"scorestream_{name}_total"
                                    if name != "consumed" and name != "processed" else
                                    f"scorestream_events_{name}_total")
            return seen["consumed"] == sent and (
                seen["processed"] + seen["dead_letters"] + seen["duplicate_events"] == sent)

        wait_for(settled, 90, "consumed == scored + dead letters + duplicates",
                 lambda: f"{seen} of {sent} sent\n{worker.log_tail(15)}", every=0.3)
        assert worker.process.poll() is None, worker.log_tail()
        # 200 orders, w1 (released by the login), w2, w4 and w5; G1's redelivery counted once.
        assert seen["processed"] == 200 + 4 and seen["duplicate_events"] == 1, seen
        status, card = get_json(f"{worker.web_url}/customers/G0/scorecard")
        assert status == 200 and card["ltv"]["historic"] == pytest.approx(5 * 25.0)
        status, _body = get_json(f"{worker.web_url}/customers/X1/scorecard")
        assert status == 404  # the poison order never reached the state
        assert worker.stop() == 0, worker.log_tail()

    letters = read_topic(kafka_bootstrap, topics["dead_letters"], 6, settle=2.0)
    by_event: dict[str | None, str] = {}
    for message in letters:
        letter = orjson.loads(message.value())
        original = base64.b64decode(letter["value_b64"]) if letter["value_b64"] else None
        if original == POISON:  # beyond the contract's own bound (10^12)
            assert "amount must be smaller than or equal to" in letter["message"]
        if letter["event_id"] == "g900":
            assert "exceeds the configured maximum 1e+09" in letter["message"]
        by_event[letter["event_id"]] = letter["reason"]
    assert by_event == {"p1": "schema_violation", "g900": "schema_violation",
                        "g901": "schema_violation", "w3": "unresolved_identity",
                        None: by_event.get(None)}
    assert sorted(orjson.loads(m.value())["reason"] for m in letters
                  if orjson.loads(m.value())["event_id"] is None) == ["empty_value",
                                                                       "invalid_json"]

    # A restart reads nothing it cannot handle and stays up.
    with running_worker(env, tmp_path / "worker2.log") as again:
        time.sleep(5)
        assert again.process.poll() is None, again.log_tail()
        status, card = get_json(f"{again.web_url}/customers/G0/scorecard")
        assert status == 200 and card["ltv"]["historic"] == pytest.approx(5 * 25.0)
        assert again.stop() == 0, again.log_tail()
