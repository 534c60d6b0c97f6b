"""Shared pieces of the benchmark scripts: broker, cached event files, topics, worker processes.

Every script in bench/ measures one thing and returns its figures as a dataclass, so
`run_all.py` and the stand-alone scripts run the same code. Generated histories are cached as
JSON-lines files under `.run/bench/events/`, keyed by their parameters and by the generator's
source, so generating events is never part of what a benchmark times.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import libversion as librdkafka_version
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.runtime.localkafka import launcher, local_broker  # noqa: E402

RUN_DIR = ROOT / ".run" / "bench"
SOURCES = ("web", "email", "crm", "support")
ROLES = ("web", "email", "crm", "support", "customer_events", "score_changes", "alerts",
         "dead_letters", "training_examples", "model_snapshots", "identity")


# -- broker ---------------------------------------------------------------------------------

@contextmanager
def broker(bootstrap: str | None, run_dir: Path = RUN_DIR / "kafka") -> Iterator[str]:
    """`bootstrap` when given; otherwise a fresh local broker in `run_dir`, stopped on exit."""
    if bootstrap:
        yield bootstrap
        return
    with local_broker(run_dir) as started:
        yield started


def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create fresh topics (each benchmark run uses names of its own)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    for future in futures.values():
        future.result()


def run_topics(prefix: str) -> dict[str, str]:
    """Every topic role's name for one run: `<prefix>-<role>-<random>`."""
    run = uuid.uuid4().hex[:8]
    return {role: f"{prefix}-{role.replace('_', '-')}-{run}" for role in ROLES}


# -- event files ----------------------------------------------------------------------------

def history_file(customers: int, seed: int, days: int) -> Path:
    """A generated history as JSON lines, generated once per parameters and generator version."""
    generator = ROOT / "models" / "history" / "generate.py"
    digest = hashlib.sha256(generator.read_bytes()).hexdigest()[:10]
    path = RUN_DIR / "events" / f"history-c{customers}-s{seed}-d{days}-{digest}.jsonl"
    if path.exists():
        return path
    from models.history.generate import generate, iter_lines

    events, _truth = generate(customers, seed, days=days)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with partial.open("wb") as out:
        for line in iter_lines(events):
            out.write(line)
    partial.rename(path)
    return path


def read_lines(path: Path) -> list[bytes]:
    """The non-empty lines of a JSON-lines file."""
    with path.open("rb") as f:
        return [line for line in f if line.strip()]


def produce_history(bootstrap: str, topics: dict[str, str], lines: list[bytes]) -> int:
    """Produce a history's events that carry a customer id, each event id once, keyed by
    customer; returns the count. Alias-only events and redeliveries are left out so that the
    number of events the scoring stage must process is known exactly."""
    # Idempotent: without it a retried batch can land behind the next one, and the history
    # reaches the worker out of order (measured: ~10 % of a 150-customer history behind by
    # up to two years on fresh topics), so events are lost as too late through no fault of
    # the worker.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "enable.idempotence": True, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 2_000_000, "compression.type": "lz4"})
    seen: set[tuple[str, str]] = set()
    count = 0
    for line in lines:
        event = orjson.loads(line)
        ident = (event["source"], event["event_id"])
        if "customer_id" not in event or ident in seen:
            continue
        seen.add(ident)
        send(producer, topics[event["source"]], event["customer_id"].encode(), line.rstrip())
        count += 1
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} records not acknowledged by the broker")
    return count


def send(producer: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    """Produce one record, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def latest_values(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[bytes, int]:
    """Key -> size of its latest value, read from the start to the end of a topic (a
    tombstone removes the key): what a compacted changelog holds once compaction has run."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    metadata = consumer.list_topics(topic, timeout=30).topics[topic]
    ends = {}
    for p in metadata.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    sizes: dict[bytes, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends.pop(msg.partition() or 0, None)
                    continue
                key, value = msg.key(), msg.value()
                if key is not None:
                    if value is None:
                        sizes.pop(key, None)
                    else:
                        sizes[key] = len(value)
    finally:
        consumer.close()
    return sizes


# -- worker processes -----------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    """A `scorestream worker` subprocess on a run's own topics, group and web port."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def start(cls, bootstrap: str, topics: dict[str, str], app_id: str,
              store: str = "memory://", **extra: str) -> Worker:
        """Start a worker (it creates its internal topics) and return without waiting."""
        port = free_port()
        data_dir = RUN_DIR / "workers" / app_id
        data_dir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORESTREAM_KAFKA_BOOTSTRAP": bootstrap,
               "SCORESTREAM_APP_ID": app_id, "SCORESTREAM_WEB_PORT": str(port),
               "SCORESTREAM_LOG_LEVEL": "warn", "SCORESTREAM_STORE": store,
               "SCORESTREAM_DATA_DIR": str(data_dir), **extra}
        env.update({f"SCORESTREAM_TOPIC_{role.upper()}": name for role, name in topics.items()})
        log_path = RUN_DIR / "logs" / f"{app_id}-{store.split(':')[0]}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        return cls(process, f"http://127.0.0.1:{port}", log_path)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until /readyz answers 200 (stages run and own their partitions)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout:.0f}s; log: {self.log_path}")

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on the worker's /metrics (0 while it does not answer)."""
        return metric(self.url, name)

    def rss_bytes(self) -> int:
        """Resident set size of the worker process."""
        return rss_bytes(self.process.pid)

    def stop(self) -> int:
        """SIGTERM and wait for the clean exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def metrics_text(url: str) -> str:
    """A worker's /metrics exposition ("" while it does not answer)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def metric_samples(text: str, name: str) -> dict[str, float]:
    """A metric's samples in an exposition, by their label text (`{reason="too_late"}`,
    or "" for a sample without labels)."""
    pattern = re.compile(rf"^{name}({{[^}}]*}})? ([0-9.e+]+)$", re.M)
    return {labels: float(value) for labels, value in pattern.findall(text)}


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples from a worker's /metrics."""
    return sum(metric_samples(metrics_text(url), name).values())


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- figures --------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine(bootstrap_started_here: bool) -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        kafka = launcher().kafka_version()
        kafka += " (local single-node KRaft)" if bootstrap_started_here else " (launcher's pin)"
    except (OSError, RuntimeError):
        kafka = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kafka": kafka,
        "librdkafka": librdkafka_version()[0],
        "load_average": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def check_reachable(bootstrap: str) -> None:
    """Fail with a clear message unless the broker answers an admin call."""
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    except KafkaException as err:
        raise SystemExit(f"Kafka at {bootstrap} is not reachable: {err}") from err
