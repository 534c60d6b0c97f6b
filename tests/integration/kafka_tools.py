"""Helpers for tests on the real broker: produce, read a topic back, run a worker process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from streams.settings import TOPIC_ROLES
from tests.kit import ROOT


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Produce (key, value) records and wait until the broker acknowledged every one."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": True})  # retries keep each partition's order
    failures: list[str] = []

    def on_delivery(err: object, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        count += 1
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, f"produce failed: {remaining} left, {failures[:3]}"
    return count


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0,
               settle: float = 1.0) -> list[Message]:
    """Read a topic from the start until `expected` records arrived and the reader has reached
    the end of every partition (then `settle` seconds more, to catch extras), or the timeout
    passes; returns what was read. The end is judged only once the reader has its partitions
    (every partition of the topic, assigned as soon as the topic exists: no group to join),
    so a check that nothing arrived (`expected=0`) cannot conclude before it could read."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-reader-{os.getpid()}-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # The end of a partition is asked of the broker on the connection that fetches, and
        # waits behind a pending fetch: a short fetch wait keeps each question short.
        "fetch.wait.max.ms": 50,
    })
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    assigned = False
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            if not assigned:
                assigned = _assign_all(consumer, topic)
                if not assigned:
                    time.sleep(0.2)
                    continue
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    messages.append(msg)
            if settle_until is None and len(messages) >= expected and _at_end(consumer):
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return messages


def _assign_all(consumer: Consumer, topic: str) -> bool:
    """Assign every partition of `topic` from its start; False while the topic is unknown."""
    found = consumer.list_topics(topic, timeout=5).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return False
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(found.partitions)])
    return True


def _at_end(consumer: Consumer) -> bool:
    """Whether the consumer has partitions and has read each to its end (as of now)."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in consumer.position(assigned):
        low, high = consumer.get_watermark_offsets(tp, timeout=5)
        # Nothing consumed yet: only an empty partition is read. Otherwise a transaction
        # marker may be the last offset, which the position does not pass.
        if (high > low) if tp.offset < 0 else (tp.offset < high - 1):
            return False
    return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """A `scorestream worker` subprocess and where to reach it."""

    process: subprocess.Popen[bytes]
    web_url: str
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for a clean exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"worker ignored SIGTERM:\n{self.log_tail()}") from None
        return int(self.process.returncode)


def http_get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET, with a bearer token when given: (status, body), also for HTTP errors; (0, b"")
    when the server is unreachable."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def topic_names(unique_name: str) -> dict[str, str]:
    """Every topic role's name for one test, so tests sharing a broker share no topic."""
    return {role: f"{role.replace('_', '-')}-{unique_name}" for role in TOPIC_ROLES}


def worker_env(bootstrap: str, app_id: str, topics: dict[str, str], data_dir: Path,
               port: int, **extra: str) -> dict[str, str]:
    """Environment for a worker with its own group, topics, state dir and web port."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORESTREAM_KAFKA_BOOTSTRAP": bootstrap,
           "SCORESTREAM_APP_ID": app_id, "SCORESTREAM_DATA_DIR": str(data_dir),
           "SCORESTREAM_WEB_PORT": str(port), "SCORESTREAM_PARTITIONS": "4",
           "SCORESTREAM_BATCH_WITHIN_S": "0.02"}
    env.update({f"SCORESTREAM_TOPIC_{role.upper()}": name for role, name in topics.items()})
    env.update(extra)
    return env


@contextmanager
def running_worker(env: dict[str, str], log_path: Path,
                   ready_timeout: float = 60.0) -> Iterator[WorkerProcess]:
    """Start `scorestream worker`, wait until its web server answers, stop it on exit."""
    port = env["SCORESTREAM_WEB_PORT"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test can kill it whole
        )
    worker = WorkerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.log_tail()}")
            try:
                with urllib.request.urlopen(f"{worker.web_url}/healthz", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not up after {ready_timeout}s:\n{worker.log_tail()}")
            time.sleep(0.2)
        yield worker
    finally:
        # Its own process group: a test may have stopped it (SIGSTOP), and what is left of
        # it (an ingest child whose parent was killed) is reached through the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
        try:
            worker.stop()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
