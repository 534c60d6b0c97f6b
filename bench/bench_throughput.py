"""End-to-end throughput of one worker against the bare-consumer ceiling, on one broker.

    python bench/bench_throughput.py --customers 1000 [--bootstrap HOST:PORT]
        [--variant NAME:VAR=value,... ...] [--repeat N]

1. Produces a generated history (cached under .run/bench/events; valid source events with a
   customer id, each event id once) to fresh source topics, so neither generating nor
   producing events is what is measured.
2. Ceiling: a bare confluent-kafka consumer that only decodes every record with orjson.
3. Worker: starts `scorestream worker` on those topics and times, from the first event it
   scores until every produced event is accounted for, how fast events go from source topics
   to scores out (polling /metrics). The rate counts scored events only: every produced event
   is valid, so each dead letter (printed by reason, `too_late` for one) is an event the worker
   lost, not work it did. Prints the rate and its ratio to the ceiling. `--variant` compares
   worker configurations (environment variables) on the same history, runs alternating.

Without --bootstrap (or SCORESTREAM_KAFKA_BOOTSTRAP) it starts a local broker of its own.
A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
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
    metric_samples,
    metrics_text,
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


def dead_letters(text: str) -> dict[str, float]:
    """Dead letters per reason in a worker's /metrics exposition (reasons with none left out)."""
    samples = metric_samples(text, "scorestream_dead_letters_total")
    return {labels.removeprefix('{reason="').removesuffix('"}'): n
            for labels, n in samples.items() if n}


@dataclass(frozen=True)
class WorkerRun:
    """One worker over a whole history: what it scored, what it dead-lettered, how fast."""

    scored: int
    dead: dict[str, int]
    seconds: float
    app_id: str
    env: dict[str, str]

    @property
    def rate(self) -> float:
        """Scored events per second (dead letters are not scored work)."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ThroughputFigures:
    """Ceiling and worker rates (events/s) over the same produced history."""

    history: History
    ceiling: float
    run: WorkerRun

    @property
    def worker(self) -> float:
        """Scored events per second of the worker."""
        return self.run.rate

    @property
    def worker_seconds(self) -> float:
        return self.run.seconds

    @property
    def app_id(self) -> str:
        """The worker's app id: its state changelog is what `bench_state` restores."""
        return self.run.app_id

    @property
    def worker_env(self) -> dict[str, str]:
        return self.run.env

    @property
    def lost(self) -> int:
        """Events the worker dead-lettered instead of scoring."""
        return sum(self.run.dead.values())

    @property
    def ratio(self) -> float:
        """Scored events/s as a share of the ceiling."""
        return self.worker / self.ceiling


def worker_rate(history: History, timeout: float = 900.0, batch_size: int | None = None,
                **env: str) -> WorkerRun:
    """One worker over the whole history: from the first event it scores until every event is
    accounted for (scored, or dead-lettered: every produced event is valid, so a dead letter
    here is an event the worker lost, `too_late` for one)."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    extra = {"SCORESTREAM_PARTITIONS": str(history.partitions), **env}
    if batch_size:
        extra["SCORESTREAM_BATCH_SIZE"] = str(batch_size)
    # The sources are the history's; every other topic is the run's own, so runs over the same
    # history never read each other's customer events or count each other's dead letters.
    topics = {**run_topics("bench"), **{s: history.topics[s] for s in SOURCES}}
    worker = Worker.start(history.bootstrap, topics, app_id, **extra)
    scored = 0.0
    try:
        began = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited; log: {worker.log_path}")
            text = metrics_text(worker.url)  # one scrape: it costs the worker CPU
            scored = sum(metric_samples(text, "scorestream_events_processed_total").values())
            if began is None and scored > 0:
                began = time.perf_counter()
            dead = dead_letters(text)
            if scored + sum(dead.values()) >= history.events:
                elapsed = time.perf_counter() - (began or time.perf_counter())
                return WorkerRun(int(scored), {k: int(v) for k, v in dead.items()}, elapsed,
                                 app_id, extra)
            time.sleep(0.25)  # scraping /metrics costs the worker CPU: not too often
        raise RuntimeError(f"worker scored {scored:.0f} of {history.events} within "
                           f"{timeout:.0f}s; log: {worker.log_path}")
    finally:
        worker.stop()


def measure(bootstrap: str, customers: int = 1000, seed: int = 11, partitions: int = 8,
            timeout: float = 900.0, batch_size: int | None = None,
            **env: str) -> ThroughputFigures:
    """Produce the history, then measure the ceiling and one worker over it."""
    history = prepare(bootstrap, customers, seed, partitions=partitions)
    top = ceiling(history)
    return ThroughputFigures(history, top, worker_rate(history, timeout, batch_size, **env))


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`name:VAR=value,VAR=value` (or just `name`) -> (name, environment)."""
    name, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        var, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected VAR=value, got {item!r}")
        env[var.strip()] = value.strip()
    return name, env


def row(label: str, run: WorkerRun, ceiling_rate: float) -> str:
    """One worker run as a table row."""
    lost = ", ".join(f"{reason} {n:,}" for reason, n in sorted(run.dead.items())) or "none"
    return (f"{label:<26}{run.scored:>10,}{run.seconds:>9.1f}{run.rate:>11,.0f}"
            f"{run.rate / ceiling_rate:>8.1%}  {lost}")


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
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        metavar="NAME[:VAR=value,...]",
                        help="a worker configuration to compare (repeatable; runs alternate); "
                             "default: one worker with its default settings")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant")
    args = parser.parse_args()
    variants = args.variant or [("default", {})]
    with broker(args.bootstrap) as bootstrap:
        history = prepare(bootstrap, args.customers, args.seed, partitions=args.partitions)
        top = ceiling(history)
        print(f"produced {history.events:,} events for {args.customers:,} customers to "
              f"{args.partitions} partitions per source topic")
        print(f"{'bare confluent-kafka consumer (ceiling)':<44}{top:>12,.0f} events/s")
        print(f"{'worker':<26}{'scored':>10}{'seconds':>9}{'scored/s':>11}{'/ceil':>8}  "
              f"lost (dead letters)")
        for _ in range(args.repeat):
            for name, env in variants:
                run = worker_rate(history, args.timeout, args.batch_size, **env)
                print(row(name, run, top), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
