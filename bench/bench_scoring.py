"""Scoring-stage CPU per event in process, on live traffic (a script, not a test).

Usage:
    python bench/bench_scoring.py [--customers 20000] [--rate 5000] [--seconds 16]
                                  [--live 0,10000] [--repeat 2] [--models initial|trained]
                                  [--attribution on|off|off,on] [--touches 0.0]
                                  [--data-driven]

Builds the records first (page views and one order in ten for `--customers` customers in a
steady round, as `bench_latency.py` sends them, and each order names a product category, so
upsell is scored; with `--touches`, that share of the page views are web sessions with a
channel instead, so that orders have touches to attribute), then feeds them to a
`ScoringHandler` on in-memory stores in the batches a worker would take at `--rate`
(`--batch-ms` of traffic, split by partition), and prints the handler's CPU per event, the
live states' hit share and the garbage collector's share, for each live-state capacity and
attribution on or off. With `--data-driven`, attribution also credits each conversion by
a data-driven model (fitted once on 1,000 paths over the bench's channels, as a worker's
attribution reader hands one to the engine). The first half of the run warms the states up
(every customer seen at least once) and is not timed. No broker, no producer: what the
worker's scoring thread spends beside the Kafka calls.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.attribution.markov import DataDrivenModel, TransitionCounts, fit
from models.config import AttributionConfig, ScoringConfig
from models.learning.bundle import ModelBundle
from models.scoring.alerts import AlertRules
from models.scoring.engine import ScoringEngine
from streams.runtime import collector
from streams.runtime.partitioning import partition_for
from streams.runtime.stage import Output
from streams.runtime.stores import MemoryStore
from streams.runtime.tables import Table
from streams.stages.scoring import ScoringHandler, ScoringTopics

T0 = 1_767_225_600_000
TOPICS = ScoringTopics("score-changes", "alerts", "training-examples", "dead-letters",
                       "attributions")


class Record:
    """The few confluent_kafka.Message methods the handler reads."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def topic(self) -> str:
        return "customer-events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


CHANNELS = ("direct", "organic", "paid", "social", "email")
CATEGORIES = ("books", "music", "film", "games", "toys", "home", "garden")


def build(customers: int, rate: int, seconds: float,
          touches: float = 0.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of every event, as the ingest stage writes them to customer-events; a
    share `touches` of the page views are sessions with a channel instead."""
    out = []
    every = round(1 / touches) if touches > 0 else 0
    for n in range(int(rate * seconds)):
        customer = f"L-{n % customers}"
        order = n % 10 == 0
        session = not order and every and (n // 10) % every == 0
        event = {"event_id": f"{customer}-{n}",
                 "event_type": ("order_placed" if order else
                                "session_started" if session else "page_view"),
                 "source": "crm" if order else "web", "occurred_at": T0 + n * 1000 // rate,
                 "customer_id": customer,
                 "payload": ({"order_id": f"o{n}", "amount": 25.0, "currency": "EUR",
                              "categories": [CATEGORIES[n // 10 % len(CATEGORIES)]]}
                             if order else
                             {"channel": CHANNELS[n % len(CHANNELS)], "device": "mobile"}
                             if session else {"url": "/"}),
                 "ingested_at": T0}
        out.append((customer.encode(), orjson.dumps(event)))
    return out


@dataclass(frozen=True)
class Figures:
    """One timed pass."""

    live: int
    attribution: bool
    us_per_event: float
    hit_share: float
    gc_us_per_event: float


def trained_bundle(customers: int = 500, days: int = 365) -> ModelBundle:
    """The bundle a learner has published after a year of a generated history: what a
    worker past its first horizon scores with (the classifiers serve, factors explain)."""
    from models.history.generate import generate, iter_lines
    from models.history.replay import ingest, replay, sort_raw

    events, _truth = generate(customers, seed=11, days=days)
    result = replay(ingest(sort_raw(iter_lines(events)), dead=[]))
    assert result.bundle is not None
    return result.bundle


def bench_model() -> DataDrivenModel:
    """A data-driven model of 1,000 paths over the bench's channels."""
    paths = [([CHANNELS[i % len(CHANNELS)], CHANNELS[i * 7 // 3 % len(CHANNELS)]], i % 3 == 0)
             for i in range(1000)]
    return fit(TransitionCounts.from_paths(paths))


def run(records: list[tuple[bytes, bytes]], live: int, batch: int, partitions: int,
        bundle: ModelBundle | None = None, attribution: bool = False,
        model: DataDrivenModel | None = None) -> Figures:
    """Feed every record in batches; time the second half."""
    config = ScoringConfig(attribution=AttributionConfig(enabled=attribution))
    engine = ScoringEngine(config, bundle)
    engine.data_driven = model
    handler = ScoringHandler(engine, AlertRules(), TOPICS,
                             live_states=live, live_states_bytes=256 << 20)
    table = Table("customer-state", "memory://", Path("."))
    for p in range(partitions):
        table.stores[p] = MemoryStore()
        handler.on_assigned(p, table)
    by_partition = [partition_for(key, partitions) for key, _ in records]
    gc_spent = [0.0, 0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_spent[1] = time.perf_counter()
        else:
            gc_spent[0] += time.perf_counter() - gc_spent[1]

    def feed(lo: int, hi: int) -> None:
        for start in range(lo, hi, batch):
            groups: dict[int, list[Record]] = defaultdict(list)
            for i in range(start, min(start + batch, hi)):
                groups[by_partition[i]].append(Record(*records[i]))
            for p, messages in groups.items():
                out = Output()
                table._out = out
                handler.handle(p, messages, table, out)
                table._out = None
            handler.committed()  # what the processor calls once the batch has committed

    half = len(records) // 2
    feed(0, half)
    hits, misses = handler.live.hits, handler.live.misses
    gc.callbacks.append(on_gc)
    try:
        began = time.process_time()
        feed(half, len(records))
        spent = time.process_time() - began
    finally:
        gc.callbacks.remove(on_gc)
    timed = len(records) - half
    lookups = handler.live.hits - hits + handler.live.misses - misses
    return Figures(live, attribution, spent / timed * 1e6,
                   (handler.live.hits - hits) / lookups if lookups else 0.0,
                   gc_spent[0] / timed * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=5000, help="events per second of traffic")
    parser.add_argument("--seconds", type=float, default=16.0, help="of traffic; half warms up")
    parser.add_argument("--batch-ms", type=float, default=50.0,
                        help="traffic per batch (SCORESTREAM_BATCH_WITHIN_S)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--live", default="0,10000", help="live-state capacities to compare")
    parser.add_argument("--repeat", type=int, default=2, help="alternating passes of each")
    parser.add_argument("--models", choices=("initial", "trained"), default="initial",
                        help="score with untrained models, or with the bundle learned from "
                             "a year of a generated history (as a worker past its first "
                             "horizon does)")
    parser.add_argument("--attribution", default="off",
                        help="attribution on, off, or both (off,on) compared in alternation")
    parser.add_argument("--touches", type=float, default=0.0,
                        help="share of the page views that are sessions with a channel")
    parser.add_argument("--data-driven", action="store_true",
                        help="attribution also credits conversions by a data-driven model")
    args = parser.parse_args()
    flags = []
    for value in args.attribution.split(","):
        if value not in ("on", "off"):
            parser.error("--attribution takes on, off or both, comma-separated")
        flags.append(value == "on")
    bundle = trained_bundle() if args.models == "trained" else None
    model = bench_model() if args.data_driven else None
    records = build(args.customers, args.rate, args.seconds, args.touches)
    # The collector's settings of a worker; the records built above are frozen with the
    # rest, as a worker's input is not in its heap until its batch.
    collector.settle()
    batch = max(1, int(args.rate * args.batch_ms / 1000))
    print(f"{len(records):,} events, {args.customers:,} customers in a round, batches of "
          f"{batch} over {args.partitions} partitions; second half timed")
    print(f"{'live states':>12} {'attribution':>12} {'us/event':>9} {'hits':>6} "
          f"{'gc us/event':>12}")
    for _ in range(args.repeat):
        for live in (int(v) for v in args.live.split(",")):
            for attribution in flags:
                f = run(records, live, batch, args.partitions, bundle, attribution, model)
                print(f"{f.live:>12,} {'on' if f.attribution else 'off':>12} "
                      f"{f.us_per_event:>9.1f} {f.hit_share:>6.0%} {f.gc_us_per_event:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
