"""The readiness probe on a real worker: 503 until its scoring stage owns its partitions and
has restored their state, 200 from then on.

The worker's web server answers before its consumer groups have settled (joining, assigning
and restoring take seconds), so polling from the moment the process starts sees both answers
in order. The state to restore is made non-trivial first, by a worker of the same app that
scored events and stopped."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.alerting_script import metric_value, wait_until
from tests.integration.kafka_tools import (
    WorkerProcess,
    free_port,
    produce,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import ROOT, raw_ev

pytestmark = pytest.mark.integration

CUSTOMERS = [f"RDY{n}" for n in range(40)]


def _status(url: str) -> int | None:
    """The HTTP status of a GET, None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def test_readyz_is_503_until_the_partitions_are_restored_then_200(
        kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"ready-{unique_name}", topics, tmp_path / "state",
                     free_port())
    produce(kafka_bootstrap, topics["crm"], [
        (cid.encode(), raw_ev(f"o-{cid}", "order_placed", customer_id=cid,
                              payload={"amount": 10.0})) for cid in CUSTOMERS])
    with running_worker(env, tmp_path / "first.log") as first:
        wait_until(lambda: metric_value(first.web_url, "scorestream_events_processed_total")
                   == len(CUSTOMERS), 60, "every order scored", first.log_tail)

    log_path = tmp_path / "second.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(process, f"http://127.0.0.1:{env['SCORESTREAM_WEB_PORT']}", log_path)
    try:
        seen: list[tuple[int | None, int | None]] = []  # (readyz, healthz), changes only
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, f"worker exited:\n{worker.log_tail()}"
            answer = (_status(f"{worker.web_url}/readyz"), _status(f"{worker.web_url}/healthz"))
            if not seen or seen[-1] != answer:
                seen.append(answer)
            if answer[0] == 200:
                break
            time.sleep(0.02)
        ready = [r for r, _ in seen if r is not None]
        assert ready and ready[-1] == 200, (seen, worker.log_tail())
        # 503 from its first answer until ready, never back; alive once ready.
        assert [r for i, r in enumerate(ready) if i == 0 or ready[i - 1] != r] == [503, 200], seen
        assert seen[-1] == (200, 200), seen
        # Ready means it serves what it restored: every customer's scorecard, none moving.
        for cid in CUSTOMERS:
            assert _status(f"{worker.web_url}/customers/{cid}/scorecard") == 200, cid
        assert _status(f"{worker.web_url}/readyz") == 200
    finally:
        worker.stop()
