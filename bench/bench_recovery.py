"""Recovery time of a worker started on an empty disk: its whole customer table rebuilt from
the state changelog.

    python bench/bench_recovery.py                          # 100,000 customers, both stores
    python bench/bench_recovery.py --customers 20000 --store rocksdb [--bootstrap HOST:PORT]

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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
from confluent_kafka import Producer

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


def main(argv: list[str] | None = None) -> int:
    """Run the recovery measurement for each store and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--store", choices=["memory", "rocksdb"], action="append")
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"))
    args = parser.parse_args(argv)
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
