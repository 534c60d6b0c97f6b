"""A client written by others reads the alerts topic: `kcat` (Debian package, librdkafka in C)
consumes what a worker emitted, transactionally committed, and every alert matches the published
schema, is keyed by its customer id and sits on that key's partition."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas.registry import load_schema, validator
from streams.runtime.partitioning import partition_for
from tests.integration.alerting_script import (
    ALERT_ENV,
    EXPECTED_ALERTS,
    publish_bundle,
    run_script,
)
from tests.integration.kafka_tools import (
    free_port,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("`kcat` is not installed: run `make system-deps` (Debian package kcat)",
                    pytrace=False)
    return path


def test_kcat_reads_schema_valid_alerts_keyed_by_customer(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    publish_bundle(kafka_bootstrap, topics)
    env = worker_env(kafka_bootstrap, f"kcat-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_PARTITIONS=str(PARTITIONS), **ALERT_ENV)
    with running_worker(env, tmp_path / "worker.log") as worker:
        run_script(kafka_bootstrap, topics, worker.web_url, worker.log_tail)
        # -e: exit at the end of every partition; read_committed: only committed
        # transactions, the end being the last stable offset.
        consumed = subprocess.run(
            [_kcat(), "-C", "-b", kafka_bootstrap, "-t", topics["alerts"], "-o", "beginning",
             "-e", "-q", "-J", "-X", "isolation.level=read_committed"],
            capture_output=True, text=True, timeout=60, check=False)
        assert consumed.returncode == 0, consumed.stderr
        reference = read_topic(kafka_bootstrap, topics["alerts"], len(EXPECTED_ALERTS))
        assert worker.stop() == 0, worker.log_tail()

    envelopes = [json.loads(line) for line in consumed.stdout.splitlines() if line.strip()]
    check_fast = validator("alerts")
    published = load_schema("alerts")
    check_published = jsonschema.Draft202012Validator(published)
    jsonschema.Draft202012Validator.check_schema(published)
    alerts = []
    for envelope in envelopes:
        alert = orjson.loads(envelope["payload"])
        check_fast(alert)
        assert list(check_published.iter_errors(alert)) == []
        assert envelope["key"] == alert["customer_id"]
        assert envelope["partition"] == partition_for(envelope["key"].encode(), PARTITIONS)
        alerts.append(alert)

    assert sorted((a["customer_id"], a["alert_type"]) for a in alerts) == sorted(EXPECTED_ALERTS)
    ids = [a["alert_id"] for a in alerts]
    assert len(set(ids)) == len(ids)
    # kcat and the project's own client (confluent-kafka) see the same committed alerts.
    assert sorted(ids) == sorted(orjson.loads(m.value())["alert_id"] for m in reference)
    severities = {a["alert_type"]: a["severity"] for a in alerts}
    assert severities == {"churn_risk": "warning", "high_value_at_risk": "critical",
                          "vip_upgrade": "info"}
