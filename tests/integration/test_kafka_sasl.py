"""Kafka SASL on a real broker: a worker authenticates with SASL/PLAIN, and a wrong password
stops it at start-up with a message that names the cause but not the secret.

The broker is the project's launcher with its optional SASL_PLAINTEXT listener (its own
broker, since the session broker has no SASL listener).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.integration.kafka_tools import (
    free_port,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import ROOT, raw_ev

pytestmark = pytest.mark.integration

LAUNCHER = ROOT / "deploy" / "kafka" / "kafka_local.py"
USER, PASSWORD = "scorer", "s3cret-sasl-password-4711"


@pytest.fixture(scope="module")
def sasl_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a broker's SASL_PLAINTEXT listener that knows USER / PASSWORD."""
    run_dir = tmp_path_factory.mktemp("kafka-sasl")
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", "--run-dir", str(run_dir),
         "--sasl-user", f"{USER}:{PASSWORD}"],
        capture_output=True, text=True, check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"SASL broker did not start:\n{started.stderr}", pytrace=False)
    try:
        yield (run_dir / "sasl_bootstrap").read_text().strip()
    finally:
        subprocess.run([sys.executable, str(LAUNCHER), "stop", "--run-dir", str(run_dir)],
                       capture_output=True, text=True, check=False)


def _sasl_env(password: str) -> dict[str, str]:
    return {"SCORESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SCORESTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
            "SCORESTREAM_KAFKA_SASL_USERNAME": USER,
            "SCORESTREAM_KAFKA_SASL_PASSWORD": password}


def test_worker_scores_through_a_sasl_listener(
    sasl_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    env = worker_env(sasl_bootstrap, f"sasl-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_LOG_LEVEL="debug", **_sasl_env(PASSWORD))
    event = raw_ev("s-1", "page_view", customer_id="S1")
    with running_worker(env, tmp_path / "worker.log", ready_timeout=120) as worker:
        producer = Producer({"bootstrap.servers": sasl_bootstrap,
                             "security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN",
                             "sasl.username": USER, "sasl.password": PASSWORD})
        producer.produce(topics["web"], key=b"S1", value=event)
        assert producer.flush(30) == 0
        url = f"{worker.web_url}/customers/S1/scorecard"
        deadline, status, body = time.monotonic() + 90, 0, {}
        while time.monotonic() < deadline and status != 200:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    status, body = reply.status, json.loads(reply.read())
            except urllib.error.HTTPError as err:
                status = err.code
            time.sleep(0.3)
        assert status == 200, worker.log_tail()
        assert body["interactions_12m"] == 1
        assert worker.stop() == 0, worker.log_tail()
    # Debug logging included: the password never reaches the log.
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert PASSWORD not in log and len(log) > 10_000  # a real debug log, without the secret


def test_wrong_password_stops_the_worker_with_a_clear_message(
    sasl_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    wrong = "not-the-password-0815"
    env = worker_env(sasl_bootstrap, f"sasl-bad-{unique_name}", topic_names(unique_name),
                     tmp_path / "state", free_port(), **_sasl_env(wrong))
    began = time.monotonic()
    finished = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    output = finished.stdout + finished.stderr
    assert finished.returncode != 0
    assert "refused our credentials" in output, output[-3000:]
    assert "Invalid username or password" in output
    assert wrong not in output and PASSWORD not in output
    assert time.monotonic() - began < 25  # refused at once, not after the 30 s timeout
