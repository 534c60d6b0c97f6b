"""`scorestream demo` against the real broker, non-interactively: it runs for --duration, prints
plain status lines, stops its worker cleanly, and its summary matches what the topics hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError

from tests.integration.kafka_tools import free_port, read_topic
from tests.kit import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MALFORMED_REASONS = ("invalid_json", "invalid_utf8", "not_an_object", "missing_identity")


def _counts(line: str) -> dict[str, int]:
    """'  label:   12  a 3, b 9' -> {'total': 12, 'a': 3, 'b': 9}."""
    _label, rest = line.split(":", 1)
    numbers = re.findall(r"(?:^|, |  )([a-z][a-z_0-9]*) (\d{1,3}(?:,\d{3})*)", rest)
    total = int(rest.split()[0].replace(",", ""))
    return {"total": total, **{k: int(v.replace(",", "")) for k, v in numbers}}


def _committed(bootstrap: str, topic: str, timeout: float = 60.0) -> list[bytes]:
    """Every committed value of a topic (what a read_committed consumer sees), to its end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-test-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    partitions = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
    consumer.subscribe([topic])
    values: list[bytes] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                elif err is None and msg.value():
                    values.append(msg.value() or b"")
    finally:
        consumer.close()
    assert len(at_end) == partitions, f"{topic}: not read to its end"
    return values


def test_demo_runs_for_its_duration_and_reports_what_the_topics_hold(
        kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    namespace = f"demo-{unique_name}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORESTREAM_WEB_PORT": str(free_port()),
           "SCORESTREAM_DATA_DIR": str(tmp_path / "worker"), "SCORESTREAM_PARTITIONS": "4",
           "SCORESTREAM_LOG_LEVEL": "warn"}
    env.pop("SCORESTREAM_KAFKA_BOOTSTRAP", None)
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--bootstrap", kafka_bootstrap,
         "--namespace", namespace, "--duration", "30", "--customers", "150", "--days", "400",
         "--warmup-days", "200", "--rate", "300"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    out = run.stdout
    worker_log = tmp_path / "demo" / "worker.log"
    assert run.returncode == 0, f"{out}\n{run.stderr}\n{worker_log.read_text()[-3000:]}"

    # Not a terminal: periodic plain lines instead of the live view, then the summary.
    status_lines = [line for line in out.splitlines() if re.match(r"\[\d\d:\d\d\] ", line)]
    assert len(status_lines) >= 5, out
    assert "stopped with SIGTERM, exit code 0" in out
    worker_pid = re.search(r"worker pid (\d+) on", out)
    assert worker_pid is not None and not Path(f"/proc/{worker_pid.group(1)}").exists()
    summary = {line.split(":", 1)[0].strip(): line for line in out.splitlines()
               if line.startswith("  ") and ":" in line}
    sent = _counts(summary["sent"])
    read = _counts(summary["read by ingest"])
    alerts = _counts(summary["alerts"])
    dead = _counts(summary["dead letters"])

    # Every record the generator sent is on the run's source topics, per source...
    topic = {role: f"{namespace}.{role}" for role in ("web", "email", "crm", "support")}
    for source in ("email", "crm", "support"):
        assert len(read_topic(kafka_bootstrap, topic[source], sent[source], settle=0.5)) == (
            sent[source])
    assert len(read_topic(kafka_bootstrap, topic["web"], sent["web"] + sent["malformed"],
                          settle=0.5)) == sent["web"] + sent["malformed"]
    # ... the worker read all of them before it was stopped ...
    assert read["total"] == sent["total"] > 1000
    # ... and every malformed one became a dead letter with its reason.
    assert sum(dead.get(reason, 0) for reason in MALFORMED_REASONS) == sent["malformed"] > 0, out

    # The alerts and dead letters the demo counted are exactly those committed on the topics.
    committed = _committed(kafka_bootstrap, f"{namespace}.alerts")
    assert len(committed) == alerts["total"] > 0
    kinds = [orjson.loads(value)["alert_type"] for value in committed]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        k: v for k, v in alerts.items() if k != "total"}
    assert len(_committed(kafka_bootstrap, f"{namespace}.dead-letters")) == dead["total"]

    # An alert's customer had its scorecard fetched from the worker's API and printed.
    assert re.search(r"scorecard of C\d+ \(\w+\), from http://127\.0\.0\.1:\d+:\n    tier ",
                     out), out
