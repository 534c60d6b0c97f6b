"""Every benchmark figure in one run, against one broker, as a table (and JSON, and Markdown).

    python bench/run_all.py                       # starts a local broker of its own
    python bench/run_all.py --bootstrap HOST:PORT # or SCORESTREAM_KAFKA_BOOTSTRAP
    python bench/run_all.py --quick               # small sizes: a smoke run of every figure
    python bench/run_all.py --markdown            # also print the table as Markdown
    python bench/run_all.py --from-json .run/bench/results.json --markdown   # re-render only

Runs, in order: decode/validate cost (in process), replay rates (in process), resident memory
of the stores alone with many customers (bench_memory.py), the bare consumer ceiling and one
worker end to end over the same pre-produced history, the state that worker left (changelog
bytes, whole-worker resident memory per customer with the memory and RocksDB stores), then
send -> score-change latency at fixed rates and the scorecard API on one more worker.
Generated histories are cached under .run/bench/events. Results go to .run/bench/results.json
(with the machine they were measured on).

A script, not a test: it prints figures and never asserts on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    bench_decode,
    bench_latency,
    bench_memory,
    bench_replay,
    bench_state,
    bench_throughput,
)
from bench.harness import RUN_DIR, broker, check_reachable, machine

SECTIONS = ("decode", "replay", "store", "throughput", "state", "latency")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each measurement is (full run or --quick)."""

    decode_events: int
    decode_repeat: int
    replay_customers: int
    replay_days: int
    store_customers: int
    throughput_customers: int
    rates: tuple[int, ...]
    rate_seconds: float
    latency_customers: int
    api_requests: int


FULL = Sizes(200_000, 3, 1000, 730, 200_000, 1000, (1000, 2000, 5000), 20.0, 20_000, 2000)
QUICK = Sizes(20_000, 1, 150, 365, 20_000, 150, (1000, 2000, 5000), 3.0, 3000, 300)


def measure(bootstrap: str | None, sizes: Sizes, sections: tuple[str, ...],
            progress: Any = print) -> dict[str, Any]:
    """Run the chosen sections; returns the results (flat `figures` plus `details`)."""
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    started = time.monotonic()

    def step(name: str) -> None:
        progress(f"[{time.monotonic() - started:6.1f}s] {name} ...")

    if "decode" in sections:
        step(f"decode + validate, {sizes.decode_events:,} records")
        d = bench_decode.measure(sizes.decode_events, repeat=sizes.decode_repeat)
        figures.update(decode_us=d.decode_us, ingest_us=d.ingest_us)
        details["decode"] = d
    if "replay" in sections:
        step(f"replay, {sizes.replay_customers:,} customers x {sizes.replay_days} days")
        r = bench_replay.measure(sizes.replay_customers, sizes.replay_days)
        figures.update(replay_events=r.events, replay_kpi_rate=r.kpi_rate,
                       replay_engine_rate=r.engine_rate)
        details["replay"] = r
    if "store" in sections:
        step(f"stores alone, {sizes.store_customers:,} customers, memory and RocksDB")
        stores = {name: bench_memory.run_one(name, sizes.store_customers, None)
                  for name in ("memory", "rocksdb")}
        figures.update(
            store_state_bytes=stores["memory"]["state_bytes_per_customer"],
            store_rss_memory=stores["memory"]["rss_per_customer"],
            store_rss_rocksdb=stores["rocksdb"]["rss_per_customer"],
            store_disk_rocksdb=stores["rocksdb"]["disk_bytes"] / sizes.store_customers)
        details["store"] = stores
    kafka = {"throughput", "state", "latency"} & set(sections)
    if kafka:
        with broker(bootstrap) as address:
            check_reachable(address)
            if {"throughput", "state"} & kafka:
                step(f"ceiling and one worker, {sizes.throughput_customers:,} customers")
                t = bench_throughput.measure(address, sizes.throughput_customers)
                figures.update(history_events=t.history.events, ceiling_rate=t.ceiling,
                               worker_rate=t.worker, worker_ratio=t.ratio,
                               worker_scored=t.run.scored, worker_lost=t.run.dead)
                details["throughput"] = t
                if "state" in kafka:
                    step("state: changelog bytes, resident memory (memory, RocksDB)")
                    s = bench_state.measure(t)
                    figures.update(
                        state_customers=s.customers,
                        changelog_bytes_median=s.changelog_bytes[0],
                        changelog_bytes_mean=s.changelog_bytes[1],
                        changelog_bytes_p95=s.changelog_bytes[2],
                        rss_per_customer_memory=s.memory_per_customer,
                        rss_per_customer_rocksdb=s.rocksdb_per_customer,
                        rss_idle_worker=s.baseline_rss)
                    details["state"] = s
            if "latency" in kafka:
                rates = ", ".join(f"{r:,}" for r in sizes.rates)
                step(f"latency at {rates} events/s, {sizes.rate_seconds:.0f}s each; API")
                lat = bench_latency.measure(address, list(sizes.rates), sizes.rate_seconds,
                                            sizes.latency_customers, sizes.api_requests)
                figures["latency"] = {
                    str(r.rate): {"achieved": r.achieved, "count": r.latency.count,
                                  "p50": r.latency.p50, "p95": r.latency.p95,
                                  "p99": r.latency.p99}
                    for r in lat.rates}
                figures.update(api_p50=lat.api.p50, api_p95=lat.api.p95, api_p99=lat.api.p99)
                details["latency"] = lat
    step("done")
    return {"machine": machine(bootstrap_started_here=not bootstrap),
            "sizes": dataclasses.asdict(sizes), "figures": figures,
            "details": {k: v if isinstance(v, dict) else dataclasses.asdict(v)
                        for k, v in details.items()}}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, how) rows of whatever the results hold."""
    f = results["figures"]
    sizes = results["sizes"]
    out = []
    if "ceiling_rate" in f:
        n = f"{f['history_events']:,} events, {sizes['throughput_customers']:,} customers"
        out.append(("bare consumer ceiling (confluent-kafka, decode only)",
                    f"{f['ceiling_rate']:,.0f} events/s", n))
        lost = f.get("worker_lost") or {}
        lost_text = ", ".join(f"{reason} {n:,}" for reason, n in sorted(lost.items())) or "none"
        scored = f.get("worker_scored", f["history_events"])
        out.append(("one worker end to end (source topics -> scores), scored events",
                    f"{f['worker_rate']:,.0f} events/s",
                    f"{f['worker_ratio']:.1%} of the ceiling; {scored:,} of "
                    f"{f['history_events']:,} scored, dead letters: {lost_text}"))
    for rate, lat in f.get("latency", {}).items():
        out.append((f"send -> score change at {int(rate):,} events/s (p50 / p95 / p99)",
                    f"{lat['p50']:,.0f} / {lat['p95']:,.0f} / {lat['p99']:,.0f} ms",
                    f"{lat['count']:,} changes, {lat['achieved']:,.0f} events/s sent"))
    if "decode_us" in f:
        out.append(("decode + validate, per event", f"{f['decode_us']:.1f} us",
                    f"{1e6 / f['decode_us']:,.0f} events/s on one core"))
        out.append(("whole ingest path (+ dedupe, identity), per event",
                    f"{f['ingest_us']:.1f} us", f"{1e6 / f['ingest_us']:,.0f} events/s"))
    if "replay_kpi_rate" in f:
        n = (f"{f['replay_events']:,} events, {sizes['replay_customers']:,} customers x "
             f"{sizes['replay_days']} days")
        out.append(("replay, state + KPI path", f"{f['replay_kpi_rate']:,.0f} events/s", n))
        out.append(("replay, full engine (+ features, models, labels, learner)",
                    f"{f['replay_engine_rate']:,.0f} events/s", n))
    if "changelog_bytes_mean" in f:
        out.append(("changelog bytes per customer (median / mean / p95)",
                    f"{f['changelog_bytes_median']:,.0f} / {f['changelog_bytes_mean']:,.0f} / "
                    f"{f['changelog_bytes_p95']:,.0f} B",
                    f"{f['state_customers']:,} customers after the end-to-end run"))
        idle = f"idle worker {f['rss_idle_worker'] / 2**20:,.0f} MiB"
        out.append(("resident memory per customer, whole worker, memory store",
                    f"{f['rss_per_customer_memory'] / 1024:,.1f} KiB",
                    f"RSS after restoring them over an {idle}"))
        out.append(("resident memory per customer, whole worker, RocksDB store",
                    f"{f['rss_per_customer_rocksdb'] / 1024:,.1f} KiB",
                    "same, RocksDB with its default options"))
    if "store_rss_memory" in f:
        n = (f"{sizes['store_customers']:,} cloned scored states in the stores alone, "
             f"{f['store_state_bytes']:,.0f} B each")
        out.append(("resident memory per customer, stores alone: memory / RocksDB",
                     f"{f['store_rss_memory'] / 1024:,.1f} / {f['store_rss_rocksdb'] / 1024:,.1f}"
                     " KiB", n))
        out.append(("RocksDB files on disk per customer", f"{f['store_disk_rocksdb']:,.0f} B",
                    "WAL and tables right after the writes"))
    if "api_p50" in f:
        out.append(("scorecard API, GET one customer (p50 / p99)",
                    f"{f['api_p50']:.1f} / {f['api_p99']:.1f} ms",
                    f"{sizes['api_requests']:,} sequential local requests"))
    return out


def text_table(results: dict[str, Any]) -> str:
    """The figures as an aligned plain-text table."""
    table = rows(results)
    w0 = max(len(r[0]) for r in table)
    w1 = max(len(r[1]) for r in table)
    lines = [f"{'figure':<{w0}}  {'value':>{w1}}  how"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in table]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The figures and the machine as Markdown, ready for bench/README.md."""
    m = results["machine"]
    lines = [
        f"Measured {m['date']}: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['os']}, "
        f"Python {m['python']}, Kafka {m['kafka']}, librdkafka {m['librdkafka']}; "
        f"load average at the end {m['load_average']}.",
        "",
        "| figure | value | how |",
        "|---|---:|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows(results)]
    return "\n".join(lines)


def main() -> int:
    """Parse options, measure (or load), print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"),
                        help="an existing broker (default: start a local one in .run/bench/kafka)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--json", type=Path, default=RUN_DIR / "results.json",
                        help="where to write the results (default .run/bench/results.json)")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="print the table of an earlier results file; measure nothing")
    args = parser.parse_args()
    if args.from_json:
        results = orjson.loads(args.from_json.read_bytes())
    else:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
        results = measure(args.bootstrap, QUICK if args.quick else FULL, sections)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print(f"results written to {args.json}")
    print()
    print(text_table(results))
    if args.markdown:
        print()
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
