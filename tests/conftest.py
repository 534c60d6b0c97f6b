"""Shared fixtures: one real Kafka broker per test session.

The broker comes from the project's own launcher (deploy/kafka/kafka_local.py), or from
SCORESTREAM_KAFKA_BOOTSTRAP when that is set. If it cannot start, every test that needs it
fails with the broker log's tail: integration tests never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.kit import ROOT

LAUNCHER = ROOT / "deploy" / "kafka" / "kafka_local.py"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker that serves requests, for the whole session."""
    external = os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP")
    if external:
        _check_reachable(external)
        yield external
        return
    run_dir = tmp_path_factory.mktemp("kafka")
    started = subprocess.run(
        [sys.executable, str(LAUNCHER), "start", "--run-dir", str(run_dir)],
        capture_output=True, text=True, check=False,
    )
    if started.returncode != 0:
        pytest.fail(f"local Kafka broker did not start:\n{started.stderr}", pytrace=False)
    bootstrap = started.stdout.strip().splitlines()[-1]
    try:
        _check_reachable(bootstrap)
        yield bootstrap
    finally:
        subprocess.run(
            [sys.executable, str(LAUNCHER), "stop", "--run-dir", str(run_dir)],
            capture_output=True, text=True, check=False,
        )


def _check_reachable(bootstrap: str) -> None:
    """Fail (never skip) unless an admin call on the broker succeeds."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.list_topics(timeout=15)
    except Exception as err:  # KafkaException; any failure here means no usable broker
        pytest.fail(f"Kafka broker at {bootstrap} is not reachable: {err}", pytrace=False)


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix, so tests sharing one broker never share topics or groups."""
    return uuid.uuid4().hex[:10]
