"""State size per customer: bytes in the changelog and worker memory, memory vs RocksDB store.

    python bench/bench_state.py --customers 1000 [--bootstrap HOST:PORT]

1. Runs one worker over a generated history (as bench_throughput does), which leaves every
   customer's state in the app's compacted changelog.
2. Reads that changelog: bytes of each customer's latest state record.
3. Resident memory: the RSS of an idle worker on empty topics is the baseline; then a worker
   of the same app restores the changelog into its table, once with the memory store and once
   with RocksDB, and its RSS growth over the baseline, divided by the customers restored, is
   the resident memory per customer (the state table plus what is derived from it: due
   index, tier histogram, aggregates, and the learner's state on the worker that runs it).

A script, not a test: it prints figures and never asserts on time or size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_throughput
from bench.harness import Worker, broker, latest_values, run_topics


@dataclass(frozen=True)
class StateFigures:
    """Changelog bytes and resident memory per customer."""

    customers: int
    changelog_bytes: tuple[float, float, int]
    """median / mean / p95 of a customer's latest changelog record (key + value)."""
    baseline_rss: int
    memory_rss: int
    rocksdb_rss: int
    memory_restore_s: float
    """Seconds from starting the worker until every customer was restored."""
    rocksdb_restore_s: float

    @property
    def memory_per_customer(self) -> float:
        """Resident bytes per customer with the memory store."""
        return (self.memory_rss - self.baseline_rss) / self.customers

    @property
    def rocksdb_per_customer(self) -> float:
        """Resident bytes per customer with the RocksDB store."""
        return (self.rocksdb_rss - self.baseline_rss) / self.customers


def idle_rss(bootstrap: str, settle_s: float = 5.0) -> int:
    """RSS of a worker that owns its partitions but holds no customer."""
    worker = Worker.start(bootstrap, run_topics("bench-idle"), f"bench-idle-{uuid.uuid4().hex[:8]}")
    try:
        worker.wait_ready()
        time.sleep(settle_s)  # joins its groups and assigns its (empty) partitions meanwhile
        return worker.rss_bytes()
    finally:
        worker.stop()


def restored_rss(run: bench_throughput.ThroughputFigures, store: str, customers: int,
                 timeout: float = 300.0, settle_s: float = 3.0) -> tuple[int, float]:
    """(RSS, seconds to restore) of a worker of the run's app that restored every customer."""
    worker = Worker.start(run.history.bootstrap, run.history.topics, run.app_id, store=store,
                          **run.worker_env)
    try:
        began = time.monotonic()
        deadline = began + timeout
        while worker.metric("scorestream_customers") < customers:
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not restore {customers} customers; "
                                   f"log: {worker.log_path}")
            time.sleep(0.2)
        restore_s = time.monotonic() - began
        time.sleep(settle_s)
        return worker.rss_bytes(), restore_s
    finally:
        worker.stop()


def measure(run: bench_throughput.ThroughputFigures) -> StateFigures:
    """Changelog sizes and RSS per customer for the state a throughput run left behind."""
    changelog = f"{run.app_id}-customer-state-changelog"
    sizes = latest_values(run.history.bootstrap, changelog)
    if not sizes:
        raise RuntimeError(f"{changelog} is empty")
    per_key = sorted(len(k) + v for k, v in sizes.items())
    customers = len(per_key)
    baseline = idle_rss(run.history.bootstrap)
    memory, memory_s = restored_rss(run, "memory://", customers)
    rocksdb, rocksdb_s = restored_rss(run, "rocksdb://", customers)
    return StateFigures(
        customers=customers,
        changelog_bytes=(statistics.median(per_key), statistics.mean(per_key),
                         per_key[int(0.95 * (len(per_key) - 1))]),
        baseline_rss=baseline, memory_rss=memory, rocksdb_rss=rocksdb,
        memory_restore_s=memory_s, rocksdb_restore_s=rocksdb_s,
    )


def main() -> int:
    """Run a worker over a history, then measure its state; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"),
                        help="an existing broker (default: start a local one)")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        run = bench_throughput.measure(bootstrap, args.customers, args.seed)
        f = measure(run)
    mib = 1024 * 1024
    median, mean, p95 = f.changelog_bytes
    print(f"{f.customers:,} customers restored from {run.app_id}-customer-state-changelog")
    print(f"  changelog bytes/customer (median / mean / p95)  "
          f"{median:,.0f} / {mean:,.0f} / {p95:,}")
    print(f"  idle worker RSS                                  {f.baseline_rss / mib:,.1f} MiB")
    print(f"  memory store: RSS, per customer, start->restored {f.memory_rss / mib:,.1f} MiB, "
          f"{f.memory_per_customer / 1024:,.1f} KiB, {f.memory_restore_s:.1f}s")
    print(f"  RocksDB store: RSS, per customer, same           {f.rocksdb_rss / mib:,.1f} MiB, "
          f"{f.rocksdb_per_customer / 1024:,.1f} KiB, {f.rocksdb_restore_s:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
