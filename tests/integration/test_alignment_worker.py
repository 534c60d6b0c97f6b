"""Event-time alignment on the real broker: a backfill of a dense and a sparse source is read in
step, so no event of the dense one arrives too late behind the sparse one."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.integration.alerting_script import metric_value, wait_until
from tests.integration.kafka_tools import (
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import DAY_MS, raw_ev

pytestmark = pytest.mark.integration

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DAYS = 300
CUSTOMERS = [f"C{n}" for n in range(8)]


def _backfill() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Web: twenty page views a day over 300 days; crm: one order every ten days."""
    web, crm = [], []
    for day in range(DAYS):
        for n in range(20):
            cid = CUSTOMERS[n % len(CUSTOMERS)]
            web.append((cid.encode(), raw_ev(
                f"w-{day}-{n}", "page_view", occurred_at=START_MS + day * DAY_MS + n * 60_000,
                customer_id=cid, payload={"url": f"/p/{n}"})))
        if day % 10 == 0:
            cid = CUSTOMERS[day // 10 % len(CUSTOMERS)]
            crm.append((cid.encode(), raw_ev(
                f"o-{day}", "order_placed", occurred_at=START_MS + day * DAY_MS + 3_600_000,
                customer_id=cid, payload={"amount": 25.0})))
    return web, crm


def test_a_backfill_of_two_sources_is_read_in_step(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    web, crm = _backfill()
    # The whole backlog is there before the worker starts: crm's fits in one fetch and would
    # run 300 days ahead of web, far beyond the 20 days of allowed lateness. Alignment is on
    # by default.
    produce(kafka_bootstrap, topics["web"], web)
    produce(kafka_bootstrap, topics["crm"], crm)
    env = worker_env(kafka_bootstrap, f"app-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_ALLOWED_LATENESS_DAYS="20",
                     SCORESTREAM_BATCH_SIZE="500")
    total = len(web) + len(crm)
    with running_worker(env, tmp_path / "worker.log") as worker:
        wait_until(lambda: metric_value(worker.web_url, "scorestream_events_processed_total")
                   == total, 120, "every event scored", worker.log_tail)
        too_late = metric_value(worker.web_url, 'scorestream_dead_letters_total{reason="too_late"}')
        assert not too_late, worker.log_tail()
    events = read_topic(kafka_bootstrap, topics["customer_events"], total, timeout=30)
    assert len(events) == total
    assert read_topic(kafka_bootstrap, topics["dead_letters"], 0, timeout=3) == []
    # Released merged by event time: within each customer-events partition, no event is more
    # than the default skew (60 s) behind the newest before it.
    newest: dict[int, int] = {}
    for msg in events:
        t = orjson.loads(msg.value())["occurred_at"]
        p = msg.partition()
        assert t >= newest.get(p, 0) - 60_000
        newest[p] = max(newest.get(p, 0), t)
