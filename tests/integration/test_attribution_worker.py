"""Attribution on the real broker: a worker's attributions topic holds what a batch
recomputation of the same events holds, and its API and gauges add them up.

A generated history of customers with web sessions (channels, some campaigns), email clicks
and opens, orders (two currencies) and page views, over 150 days so that some touches fall out
of the 90-day lookback, is produced to the source topics before the worker starts; one order
is delivered twice and one is sent again under another event id. The worker's attributions
topic must then hold exactly the records `models.history.replay` makes from the same lines:
one per order id, every credit equal. `GET /attribution` (behind the API token) must report
the totals of those records, and `/metrics` the gauges per model and channel.

Every touch comes at least an hour before the next conversion of its customer, so that the
order in which the sources' records reach the scoring stage cannot change which touches a
conversion sees.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.attribution.rules import MODELS
from models.attribution.totals import AttributionTotals
from models.config import AttributionConfig, ScoringConfig
from models.history.replay import ingest, replay, sort_raw
from schemas.registry import validator
from tests.integration.alerting_script import wait_until
from tests.integration.fault_tools import read_all
from tests.integration.kafka_tools import (
    free_port,
    http_get,
    produce,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import DAY_MS, T0

pytestmark = pytest.mark.integration

CUSTOMERS, DAYS, SEED = 30, 150, 11
TOKEN = "attribution-test-token-0123"
ON = ScoringConfig(attribution=AttributionConfig(enabled=True))
"""Attribution is off by default: the worker and the replay both switch it on."""
HOUR_MS = DAY_MS // 24
CHANNELS = ("direct", "organic", "paid", "social", "email")


def _event(customer: str, n: int, source: str, event_type: str, at: int,
           payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"{customer}-{n}", "source": source, "event_type": event_type,
            "occurred_at": at, "customer_id": customer, "payload": payload}


def history() -> list[dict[str, Any]]:
    """Source records of every customer, each with its customer id, in no particular order."""
    rng = random.Random(SEED)
    records: list[dict[str, Any]] = []
    for c in range(CUSTOMERS):
        customer = f"A{c:03d}"
        orders = 0
        for day in range(DAYS):
            if rng.random() > 0.25:
                continue
            start = T0 + day * DAY_MS + rng.randrange(6, 12) * HOUR_MS + rng.randrange(HOUR_MS)
            visit: list[tuple[str, str, int, dict[str, Any]]] = []
            kind = rng.random()
            if kind < 0.5:
                session: dict[str, Any] = {"channel": rng.choice(CHANNELS), "device": "mobile"}
                if rng.random() < 0.3:
                    session["campaign"] = f"c{day // 30}"
                visit += [("web", "session_started", start, session),
                          ("web", "page_view", start + 60_000, {"url": "/"})]
            elif kind < 0.8:
                campaign = {"campaign_id": f"mail-{day // 14}"}
                visit.append(("email", "opened", start, dict(campaign)))
                if rng.random() < 0.5:
                    visit.append(("email", "clicked", start + 30_000, {**campaign, "url": "/o"}))
            if rng.random() < 0.35:  # a conversion, hours after the day's touch
                orders += 1
                visit.append(("crm", "order_placed",
                              T0 + day * DAY_MS + 15 * HOUR_MS + rng.randrange(HOUR_MS),
                              {"order_id": f"{customer}-o{orders}",
                               "amount": round(rng.uniform(5, 300), 2),
                               "currency": "USD" if rng.random() < 0.2 else "EUR"}))
            for source, event_type, at, payload in visit:
                records.append(_event(customer, len(records), source, event_type, at, payload))
    orders = [r for r in records if r["event_type"] == "order_placed"]
    records.append(dict(orders[3]))  # delivered twice: the same event id
    records.append({**orders[7], "event_id": f"{orders[7]['event_id']}-resent"})
    return records


def _get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    """GET with the API token (or none): (status, body); (0, b"") when unreachable."""
    return http_get(url, token)


def _report(url: str) -> tuple[int, dict[str, Any]]:
    status, body = _get(url)
    return status, (orjson.loads(body) if status else {})


def test_stream_attributions_equal_a_batch_recomputation(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    records = history()
    lines = [orjson.dumps(r) for r in records]
    expected = {a.conversion.conversion_id: a
                for a in replay(ingest(sort_raw(lines), dead=[]), config=ON).attributions}
    expected_records = {cid: {k: v for k, v in a.to_record(0).items() if k != "emitted_at"}
                        for cid, a in expected.items()}
    with_touches = [r for r in expected_records.values() if r["touches"]]
    assert len(expected) > 100 and len(with_touches) > len(expected) // 2
    assert any(not r["touches"] for r in expected_records.values())

    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"attr-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_PARTITIONS="2", SCORESTREAM_API_TOKEN=TOKEN,
                     SCORESTREAM_ATTRIBUTION_ENABLED="true")
    for source in ("web", "email", "crm"):
        produce(kafka_bootstrap, topics[source],
                [(r["customer_id"].encode(), orjson.dumps(r)) for r in records
                 if r["source"] == source])
    with running_worker(env, tmp_path / "worker.log") as worker:
        url = f"{worker.web_url}/attribution"

        def reported_all() -> bool:
            status, body = _report(url)
            return status == 200 and body["caught_up"] and body["conversions"] == len(expected)

        wait_until(reported_all, 120, "the API reporting every conversion", worker.log_tail)
        assert _get(url, token=None)[0] == 401
        status, report = _report(f"{url}?model=linear&from=2026-01-15&to=2026-03-31")
        assert status == 200
        assert _get(f"{url}?model=nonsense")[0] == 400
        assert _get(f"{url}?limit=0")[0] == 400
        status, top = _report(f"{url}?model=linear&from=2026-01-15&to=2026-03-31&limit=1")
        assert status == 200
        wait_until(lambda: b"scorestream_attributed_value{" in _get(
            f"{worker.web_url}/metrics")[1], 60, "the attribution gauges", worker.log_tail)
        metrics = _get(f"{worker.web_url}/metrics")[1].decode()
        assert worker.stop() == 0, worker.log_tail()

    messages = read_all(kafka_bootstrap, topics["attributions"])
    check = validator("attributions")
    stream: dict[str, dict[str, Any]] = {}
    for msg in messages:
        record = orjson.loads(msg.value())
        check(record)
        assert msg.key() == record["customer_id"].encode()
        record.pop("emitted_at")
        assert record["conversion_id"] not in stream, record["conversion_id"]
        stream[record["conversion_id"]] = record
    assert sorted(stream) == sorted(expected_records)
    different = [cid for cid in stream if stream[cid] != expected_records[cid]]
    assert different == [], (different[:3], [stream[c] for c in different[:1]],
                             [expected_records[c] for c in different[:1]])

    totals = AttributionTotals()
    for record in expected_records.values():
        totals.add(record)
    first, last = (T0 // DAY_MS + 14, T0 // DAY_MS + 89)  # 2026-01-15 .. 2026-03-31
    want = totals.report("linear", first, last)
    assert (report["from"], report["to"], report["currency"]) == (
        "2026-01-15", "2026-03-31", "EUR")
    assert report["conversions"] == want["conversions"] > 0
    assert report["value"] == pytest.approx(want["value"], abs=0.01)
    assert list(report["models"]) == ["linear"]
    for table, key in (("channels", "channel"), ("campaigns", "campaign")):
        got = {row[key]: row for row in report["models"]["linear"][table]}
        assert got.keys() == {row[key] for row in want["models"]["linear"][table]}
        for row in want["models"]["linear"][table]:
            assert got[row[key]]["value"] == pytest.approx(row["value"], abs=0.01)
            assert got[row[key]]["conversions"] == pytest.approx(row["conversions"], abs=1e-3)
    # limit=1: the largest channel, and the others added up
    top_linear, all_linear = top["models"]["linear"], want["models"]["linear"]
    [largest] = top_linear["channels"]
    assert largest["channel"] == all_linear["channels"][0]["channel"]
    assert largest["value"] == pytest.approx(all_linear["channels"][0]["value"], abs=0.01)
    assert top_linear["channels_other"]["channels"] == len(all_linear["channels"]) - 1 > 0
    assert top_linear["channels_other"]["value"] == pytest.approx(
        sum(row["value"] for row in all_linear["channels"][1:]), abs=0.05)
    gauge_lines = [line for line in metrics.splitlines()
                   if line.startswith("scorestream_attributed_value{")]
    assert {line.split('model="')[1].split('"')[0] for line in gauge_lines} == set(MODELS)
