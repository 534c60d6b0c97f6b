"""Recovery time of a worker started on an empty disk (its whole customer table rebuilt from
the state changelog), and takeover time after a kill -9 under live load.

    python bench/bench_recovery.py                          # 100,000 customers, both stores
    python bench/bench_recovery.py --customers 20000 --store rocksdb [--bootstrap HOST:PORT]
    python bench/bench_recovery.py --takeover [--repeat 3] [--rate 500]
        [--variant NAME:VAR=value,...] [--worker-root DIR]

Takeover: two workers score a live stream (new customers' page views and orders at --rate
events/s, event time = send time); the first is killed with SIGKILL, its whole process group
(ingest child included), while batches commit. Reported: seconds from the kill until the
survivor is the scoring group's only member and owns every partition ("owned"), and until it
has committed ingest and scoring offsets past the dead worker's on every partition the dead
worker owned ("resumed": events flow through every one of them again). The dead worker's open
transactions hold its partitions until they are aborted, so "resumed" includes that wait.
`--variant` runs the workers with extra environment (e.g. other timeouts), `--worker-root`
with another checkout's code (to compare with an older commit on the same broker).

1. Fills the customer-state changelog of a fresh app id with N customer states, cloned from
   scored generated histories as bench_memory.py does (about 2.4 KB each, what a live state
   weighs: day buckets, profile, orders, pending label snapshots, last scorecard), produced
   straight to the partition each key hashes to. Filling it through a worker would only add
   the time to score N customers first.
2. Starts one `scorestream worker` on an empty state directory and reports the restore time
   the scoring stage logs ("restored N keys ... in S s": reading the changelog into the
   stores), and the time from process start until /readyz answers 200 and a scorecard of the
   last customer is served.

Without --bootstrap (or SCORESTREAM_KAFKA_BOOTSTRAP) it starts a local broker of its own.
A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_memory import template_states
from streams.runtime.kafka import ensure_topics
from streams.runtime.partitioning import partition_for
from streams.settings import KafkaSettings, Settings
from tests.integration.kafka_tools import free_port, topic_names, worker_env

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "deploy" / "kafka" / "kafka_local.py"


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given broker, or a local one started (and stopped) for this run."""
    if bootstrap:
        yield bootstrap
        return
    run_dir = Path(tempfile.mkdtemp(prefix="bench-recovery-kafka-"))
    started = subprocess.run([sys.executable, str(LAUNCHER), "start", "--run-dir", str(run_dir)],
                             capture_output=True, text=True, check=True)
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([sys.executable, str(LAUNCHER), "stop", "--run-dir", str(run_dir)],
                       capture_output=True, check=False)


def fill_changelog(bootstrap: str, topic: str, customers: int, partitions: int) -> int:
    """Produce N cloned states to the changelog; returns their total bytes."""
    templates = template_states()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})
    total = 0
    for i in range(customers):
        cid = f"R{i:08d}"
        key = cid.encode()
        value = orjson.dumps({**templates[i % len(templates)], "c": cid})
        total += len(key) + len(value)
        while True:
            try:
                producer.produce(topic, key=key, value=value,
                                 partition=partition_for(key, partitions))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    return total


def _ready(url: str, last_customer: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as reply:
            if reply.status != 200:
                return False
        with urllib.request.urlopen(f"{url}/customers/{last_customer}/scorecard",
                                    timeout=5) as reply:
            return reply.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def recover(bootstrap: str, store: str, customers: int, partitions: int) -> dict[str, float]:
    """One run: fill a fresh app's changelog, start a worker on an empty disk, time it."""
    name = uuid.uuid4().hex[:8]
    topics = topic_names(name)
    app_id = f"bench-recovery-{name}"
    settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap), app_id=app_id,
                        topics=topics, partitions=partitions)
    ensure_topics(settings)
    state_bytes = fill_changelog(bootstrap, settings.changelog_topic("customer-state"),
                                 customers, partitions)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        port = free_port()
        env = worker_env(bootstrap, app_id, topics, Path(tmp) / "state", port,
                         SCORESTREAM_PARTITIONS=str(partitions), SCORESTREAM_STORE=f"{store}://")
        log_path = Path(tmp) / "worker.log"
        began = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT,
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            last = f"R{customers - 1:08d}"
            while not _ready(url, last):
                if process.poll() is not None or time.monotonic() - began > 1800:
                    raise RuntimeError(f"worker did not recover:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            ready_s = time.monotonic() - began
            pattern = r"customer-state: restored (\d+) keys .* in ([0-9.]+)s"
            found = re.findall(pattern, log_path.read_text(errors="replace"))
            while not found and time.monotonic() - began < ready_s + 60:
                time.sleep(0.5)  # the worker's log reaches the file in blocks
                found = re.findall(pattern, log_path.read_text(errors="replace"))
            keys, restore_s = int(found[-1][0]), float(found[-1][1])
            rss = _rss_kib(process.pid)
        finally:
            process.terminate()
            process.wait(60)
    return {"customers": customers, "keys": keys, "restore_s": restore_s, "ready_s": ready_s,
            "state_mib": state_bytes / 2**20, "rss_mib": rss / 1024}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


Groups = dict[str, list[str]]
"""Consumer group -> the topics whose partitions the takeover watches in it."""


def takeover(bootstrap: str, partitions: int, rate: int, extra: dict[str, str],
             worker_root: Path) -> dict[str, float]:
    """One run: two workers under load, kill -9 of one, seconds until the other owns its
    partitions and until events flow through all of them again."""
    name = uuid.uuid4().hex[:8]
    topics = topic_names(name)
    app_id = f"bench-takeover-{name}"
    settings = Settings(kafka=KafkaSettings(bootstrap=bootstrap), app_id=app_id,
                        topics=topics, partitions=partitions)
    ensure_topics(settings)
    groups: Groups = {f"{app_id}-ingest": [topics["web"], topics["crm"]],
                      f"{app_id}-scoring": [topics["customer_events"]]}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    stop = threading.Event()
    sender = threading.Thread(target=_send_live, args=(bootstrap, topics, rate, stop),
                              daemon=True)
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as tmp, \
            contextlib.ExitStack() as stack:
        workers = [stack.enter_context(_worker(bootstrap, app_id, topics, Path(tmp), tag,
                                               partitions, extra, worker_root))
                   for tag in "ab"]
        sender.start()
        stack.callback(stop.set)
        victim, survivor = workers
        _until(lambda: all(_owners(admin, group, victim[1]) for group in groups), 180,
               "both workers to own partitions", victim[2])
        time.sleep(5.0)  # both score for a while
        lost = {group: [tp for tp in _owners(admin, group, victim[1]) if tp[0] in watched]
                for group, watched in groups.items()}
        before = {group: _committed(admin, group, parts) for group, parts in lost.items()}
        os.killpg(victim[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        victim[0].wait(10)
        _until(lambda: _owners(admin, f"{app_id}-scoring", survivor[1]) == [
            (topics["customer_events"], p) for p in range(partitions)], 300,
            "the survivor to own every partition", survivor[2])
        owned = time.monotonic() - killed
        _until(lambda: all(
            all(now > before[group].get(tp, -1)
                for tp, now in _committed(admin, group, parts).items())
            and len(_committed(admin, group, parts)) == len(parts)
            for group, parts in lost.items()), 300, "events to flow again", survivor[2])
        resumed = time.monotonic() - killed
    return {"owned_s": owned, "resumed_s": resumed,
            "partitions": sum(len(parts) for parts in lost.values())}


@contextlib.contextmanager
def _worker(bootstrap: str, app_id: str, topics: dict[str, str], tmp: Path, tag: str,
            partitions: int, extra: dict[str, str], root: Path
            ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A worker in its own process group (a kill -9 reaches its ingest child too)."""
    port = free_port()
    env = worker_env(bootstrap, app_id, topics, tmp / f"state-{tag}", port,
                     SCORESTREAM_PARTITIONS=str(partitions), PYTHONPATH=str(root), **extra)
    log_path = tmp / f"{tag}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=root,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _send_live(bootstrap: str, topics: dict[str, str], rate: int, stop: threading.Event,
               customers: int = 2000) -> None:
    """Page views and orders of `customers` new customers at `rate` events/s until stopped."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    began, n = time.time(), 0
    while not stop.is_set():
        due = int((time.time() - began) * rate)
        for i in range(n, due):
            customer = f"T-{i % customers}"
            order = i % 10 == 0
            source = "crm" if order else "web"
            event = {"event_id": f"{customer}-{i}", "source": source,
                     "event_type": "order_placed" if order else "page_view",
                     "occurred_at": int(time.time() * 1000), "customer_id": customer,
                     "payload": ({"order_id": f"o{i}", "amount": 25.0, "currency": "EUR"}
                                 if order else {"url": "/"})}
            while True:
                try:
                    producer.produce(topics[source], key=customer.encode(),
                                     value=orjson.dumps(event))
                    break
                except BufferError:
                    producer.poll(0.01)
        n = max(n, due)
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)


def _owners(admin: AdminClient, group: str, client_id: str) -> list[tuple[str, int]]:
    """The partitions a worker (by its client id, its URL) owns in a group."""
    try:
        description = admin.describe_consumer_groups([group])[group].result(15)
    except (TimeoutError, KafkaException):  # a fresh broker's coordinator still loading
        return []
    return sorted((tp.topic, tp.partition) for member in description.members
                  if member.client_id == client_id
                  for tp in member.assignment.topic_partitions)


def _committed(admin: AdminClient, group: str, parts: list[tuple[str, int]]
               ) -> dict[tuple[str, int], int]:
    """A group's committed offsets of `parts` (absent where none)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in parts])
    found = admin.list_consumer_group_offsets([request])[group].result(15)
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions
            if tp.offset >= 0}


def _until(check: Callable[[], bool], timeout: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"timed out waiting for {what}; {log_path.name}:\n{tail}")
        time.sleep(0.1)


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """NAME or NAME:VAR=value,VAR=value."""
    name, _, assignments = text.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, env


def main_takeover(args: argparse.Namespace) -> int:
    """Alternate the variants on one broker, --repeat times, and print each run."""
    variants = args.variant or [("default", {})]
    root = Path(args.worker_root).resolve() if args.worker_root else ROOT
    with broker(args.bootstrap) as bootstrap:
        print(f"worker code: {root}; {args.rate} events/s; {args.partitions} partitions")
        print(f"{'variant':<24} {'run':>3} {'owned s':>8} {'resumed s':>10}")
        for run in range(1, args.repeat + 1):
            for name, env in variants:
                r = takeover(bootstrap, args.partitions, args.rate, env, root)
                print(f"{name:<24} {run:>3} {r['owned_s']:>8.1f} {r['resumed_s']:>10.1f}",
                      flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the recovery measurement for each store and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--store", choices=["memory", "rocksdb"], action="append")
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"))
    parser.add_argument("--takeover", action="store_true",
                        help="measure takeover after a kill -9 under load instead")
    parser.add_argument("--rate", type=int, default=500, help="takeover: events/s")
    parser.add_argument("--repeat", type=int, default=1, help="takeover: runs per variant")
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        help="takeover: NAME:VAR=value,... (repeatable; alternated)")
    parser.add_argument("--worker-root", help="takeover: run the workers from this checkout")
    args = parser.parse_args(argv)
    if args.takeover:
        return main_takeover(args)
    stores = args.store or ["rocksdb", "memory"]
    with broker(args.bootstrap) as bootstrap:
        print(f"{'store':<8} {'customers':>10} {'restored':>9} {'state MiB':>10} "
              f"{'restore s':>10} {'start->ready s':>15} {'RSS MiB':>8}")
        for store in stores:
            r = recover(bootstrap, store, args.customers, args.partitions)
            print(f"{store:<8} {r['customers']:>10,} {r['keys']:>9,} {r['state_mib']:>10.0f} "
                  f"{r['restore_s']:>10.1f} {r['ready_s']:>15.1f} {r['rss_mib']:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
