"""Resident memory per customer of the scoring table's stores: dict (memory://) and RocksDB.

    python bench/bench_memory.py                      # 1,000,000 customers, both stores
    python bench/bench_memory.py --customers 200000
    python bench/bench_memory.py --store rocksdb --customers 40000 --json   # one measurement

What is measured, in a fresh process per store and size:

1. Templates: 200 generated customers' histories (models/history/generate.py, one year)
   scored by the `ScoringEngine` in weekly batches, so each state carries what a live one
   does (day buckets, profile, orders, pending label snapshots, the last scorecard, alert memory).
2. N customer states, cloned from the templates under new customer ids (serialised exactly as
   the changelog carries them), written to one store per partition of customer-events (4),
   each to the partition its key hashes to, as `BatchProcessor` restore does.
3. A read of every state back (`get`), as scoring and the API do.
4. Resident set size (VmRSS) after that, minus VmRSS before the first write: the memory the
   store holds for N customers. The worker's own per-customer structures (due index,
   aggregates) are not included; they are measured nowhere here.

Each measurement runs in its own process so RSS is not inflated by an earlier one.
A script, not a test: it prints a table and never asserts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from schemas.units import DAY_MS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import ScoringConfig
from models.history.generate import generate, iter_lines
from models.history.replay import ingest, sort_raw
from models.ingest.routing import Ingestion
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from streams.runtime.partitioning import partition_for
from streams.runtime.stores import open_store

PARTITIONS = 4


def template_states(customers: int = 200, seed: int = 3, days: int = 365) -> list[dict]:
    """Scored customer states (as changelog dicts) from a generated history."""
    raw, _ = generate(customers, seed=seed, days=days)
    events = list(ingest(sort_raw(iter_lines(raw)), Ingestion()))
    engine = ScoringEngine(ScoringConfig())
    by_customer: dict[str, dict[int, list[dict]]] = {}
    for event in events:
        weeks = by_customer.setdefault(event["customer_id"], {})
        weeks.setdefault(event["occurred_at"] // (7 * DAY_MS), []).append(event)
    out = []
    for cid, weeks in sorted(by_customer.items()):
        state: CustomerState | None = None
        for week in sorted(weeks):
            outcome = engine.apply_batch(state, weeks[week], (week + 1) * 7 * DAY_MS - 1, cid)
            state = outcome.state
        assert state is not None
        out.append(orjson.loads(state.snapshot()))
    return out


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(store_url: str, customers: int, data_dir: Path) -> dict[str, float]:
    """Write `customers` cloned states to per-partition stores; RSS they add, and sizes."""
    templates = template_states()
    stores = [open_store(store_url, data_dir, "customer-state", p) for p in range(PARTITIONS)]
    base = rss_bytes()
    state_bytes = 0
    began = time.perf_counter()
    for i in range(customers):
        template = templates[i % len(templates)]
        cid = f"M{i:08d}"
        value = orjson.dumps({**template, "c": cid})
        key = cid.encode()
        stores[partition_for(key, PARTITIONS)].put(key, value)
        state_bytes += len(key) + len(value)
    wrote = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(customers):
        key = f"M{i:08d}".encode()
        assert stores[partition_for(key, PARTITIONS)].get(key) is not None
    read = time.perf_counter() - began
    rss = rss_bytes() - base
    on_disk = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
    assert sum(len(s) for s in stores) == customers
    return {"store": store_url, "customers": customers, "state_bytes": state_bytes,
            "rss_bytes": rss, "rss_per_customer": rss / customers,
            "state_bytes_per_customer": state_bytes / customers, "disk_bytes": on_disk,
            "write_s": round(wrote, 2), "read_s": round(read, 2)}


def run_one(store: str, customers: int, data_dir: Path | None) -> dict[str, float]:
    """One measurement in a fresh process (so RSS holds nothing from another)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-")) if data_dir is None else data_dir
    try:
        run = subprocess.run(
            [sys.executable, __file__, "--store", store, "--customers", str(customers),
             "--json", "--dir", str(workdir)], capture_output=True, text=True, check=True)
        return dict(json.loads(run.stdout.strip().splitlines()[-1]))
    finally:
        if data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Measure one store and size (--store), or print the table for both stores."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--store", choices=["memory", "rocksdb"])
    parser.add_argument("--dir", type=Path, help="state directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.store is not None:
        workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
        if workdir.exists():
            shutil.rmtree(workdir)
        try:
            result = measure(f"{args.store}://", args.customers, workdir)
        finally:
            if args.dir is None:
                shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(result) if args.json else result)
        return 0
    print(f"{'store':<10} {'customers':>10} {'state MiB':>10} {'RSS MiB':>9} "
          f"{'RSS B/customer':>15} {'disk MiB':>9} {'write s':>8} {'read s':>7}")
    for store in ("memory", "rocksdb"):
        for customers in sorted({args.customers // 2, args.customers}):
            r = run_one(store, customers, None)
            print(f"{store:<10} {customers:>10,} {r['state_bytes'] / 2**20:>10.0f} "
                  f"{r['rss_bytes'] / 2**20:>9.0f} {r['rss_per_customer']:>15.0f} "
                  f"{r['disk_bytes'] / 2**20:>9.0f} {r['write_s']:>8} {r['read_s']:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
