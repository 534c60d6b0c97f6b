"""End-to-end throughput of one worker against the bare-consumer ceiling, on one broker.

    python bench/bench_throughput.py --customers 1000 [--bootstrap HOST:PORT]

1. Produces a generated history (cached under .run/bench/events; valid source events with a
   customer id, each event id once) to fresh source topics, so neither generating nor
   producing events is what is measured.
2. Ceiling: a bare confluent-kafka consumer that only decodes every record with orjson.
3. Worker: starts `scorestream worker` on those topics and times, from the first record it
   scores to the last one, how fast events go from source topics to scores out
   (polling /metrics). Prints both rates and their ratio.

Without --bootstrap (or SCORESTREAM_KAFKA_BOOTSTRAP) it starts a local broker of its own.
A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    SOURCES,
    Worker,
    broker,
    create_topics,
    history_file,
    produce_history,
    read_lines,
    run_topics,
)


@dataclass(frozen=True)
class History:
    """A history produced to a run's own source topics, ready to be consumed."""

    bootstrap: str
    topics: dict[str, str]
    partitions: int
    customers: int
    events: int
    produce_seconds: float


@dataclass(frozen=True)
class ThroughputFigures:
    """Ceiling and worker rates (events/s) over the same produced history."""

    history: History
    ceiling: float
    worker: float
    worker_seconds: float
    app_id: str
    """The worker's app id: its state changelog is what `bench_state` restores."""
    worker_env: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Worker rate as a share of the ceiling."""
        return self.worker / self.ceiling


def prepare(bootstrap: str, customers: int, seed: int = 11, days: int = 730,
            partitions: int = 8) -> History:
    """Produce the cached history of `customers` to fresh topics."""
    lines = read_lines(history_file(customers, seed, days))
    topics = run_topics("bench")
    create_topics(bootstrap, [topics[s] for s in SOURCES], partitions)
    began = time.perf_counter()
    count = produce_history(bootstrap, topics, lines)
    return History(bootstrap, topics, partitions, customers, count,
                   time.perf_counter() - began)


def ceiling(history: History) -> float:
    """Events/s of a bare consumer that only decodes (the ceiling), from its first record."""
    consumer = Consumer({"bootstrap.servers": history.bootstrap,
                         "group.id": f"ceiling-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([history.topics[s] for s in SOURCES])
    n, began = 0, None
    while n < history.events:
        for msg in consumer.consume(5000, 1.0):
            if msg.error() is None:
                began = began or time.perf_counter()
                orjson.loads(msg.value() or b"")
                n += 1
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return n / elapsed


def worker_rate(history: History, timeout: float = 900.0,
                batch_size: int | None = None) -> tuple[float, float, str, dict[str, str]]:
    """(events/s, seconds, app id, extra env) of one worker processing the whole history."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"SCORESTREAM_PARTITIONS": str(history.partitions)}
    if batch_size:
        extra["SCORESTREAM_BATCH_SIZE"] = str(batch_size)
    worker = Worker.start(history.bootstrap, history.topics, app_id, **extra)
    done = 0.0
    try:
        began = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited; log: {worker.log_path}")
            done = worker.metric("scorestream_events_processed_total")
            if began is None and done > 0:
                began = time.perf_counter()
            if done >= history.events:
                elapsed = time.perf_counter() - (began or time.perf_counter())
                return history.events / elapsed, elapsed, app_id, extra
            time.sleep(0.25)  # scraping /metrics costs the worker CPU: not too often
        raise RuntimeError(f"worker processed {done:.0f} of {history.events} within "
                           f"{timeout:.0f}s; log: {worker.log_path}")
    finally:
        worker.stop()


def measure(bootstrap: str, customers: int = 1000, seed: int = 11, partitions: int = 8,
            timeout: float = 900.0, batch_size: int | None = None) -> ThroughputFigures:
    """Produce the history, then measure the ceiling and one worker over it."""
    history = prepare(bootstrap, customers, seed, partitions=partitions)
    top = ceiling(history)
    rate, seconds, app_id, env = worker_rate(history, timeout, batch_size)
    return ThroughputFigures(history, top, rate, seconds, app_id, env)


def main() -> int:
    """Run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"),
                        help="an existing broker (default: start a local one)")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="SCORESTREAM_BATCH_SIZE for the worker (default: its own)")
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        f = measure(bootstrap, args.customers, args.seed, args.partitions, args.timeout,
                    args.batch_size)
    print(f"produced {f.history.events:,} events for {args.customers:,} customers to "
          f"{args.partitions} partitions per source topic")
    print(f"{'measure':<44}{'events/s':>12}")
    print(f"{'bare confluent-kafka consumer (ceiling)':<44}{f.ceiling:>12,.0f}")
    print(f"{'one scorestream worker, source -> scores':<44}{f.worker:>12,.0f}")
    print(f"{'ratio worker / ceiling':<44}{f.ratio:>12.1%}")
    print(f"(worker took {f.worker_seconds:.1f}s for {f.history.events:,} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
