"""Scoring-stage CPU per event in process, on live traffic (a script, not a test).

Usage:
    python bench/bench_scoring.py [--customers 20000] [--rate 5000] [--seconds 16]
                                  [--live 0,10000] [--repeat 2] [--models initial|trained]
                                  [--attribution on|off|off,on] [--touches 0.0]
                                  [--data-driven] [--history stories|journeys]
                                  [--merge] [--paired | --instructions]

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

With `--history PROFILE`, the records are instead a generated history's canonical events
(`--customers` customers over `--days` days of the generator's "stories" or "journeys"
profile, in event-time order, as the ingest stage writes them), fed in batches of
`--batch-events`: real multi-channel journeys, where a conversion has up to the lookback's
touches to attribute.

With `--merge`, the handler runs the identity merge (`SCORESTREAM_IDENTITY_MERGE`): every
event is held until the identity partitions' ticks, which arrive once per second of traffic
(as ingest sends them), let it go; the ticks are in the figures too.

With `--paired`, attribution off and on are compared in one process, fed the same batches in
turn (alternating which goes first), so that a noisy neighbour slows both alike: the
closest a timed comparison gets on a shared machine. With `--instructions`, each
configuration runs once in its own process under valgrind's
callgrind, which counts the instructions of the timed half alone (instrumentation switched
on and off around it): a figure the machine's other load does not move, where CPU time on
a shared machine varies by tens of percent from run to run.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.attribution.markov import DataDrivenModel, TransitionCounts, fit
from models.config import AttributionConfig, ScoringConfig
from models.ingest.routing import MERGE_TICK_KEY, merge_tick_message
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
UNDER_CALLGRIND = "SCORESTREAM_BENCH_UNDER_CALLGRIND"
"""Set in the child processes of `--instructions`, which switch instrumentation on and off."""
TOPICS = ScoringTopics("score-changes", "alerts", "training-examples", "dead-letters",
                       "attributions")


class Record:
    """The few confluent_kafka.Message methods the handler reads."""

    __slots__ = ("_key", "_offset", "_value")

    def __init__(self, key: bytes, value: bytes, offset: int = 0) -> None:
        self._key, self._value, self._offset = key, value, offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def topic(self) -> str:
        return "customer-events"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


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


def history(profile: str, customers: int, days: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of a generated history's canonical customer events, in event-time order."""
    from models.history.generate import generate, iter_lines
    from models.history.replay import ingest, sort_raw

    events, _truth = generate(customers, seed=7, days=days, profile=profile)
    return [(str(e["customer_id"]).encode(), orjson.dumps(e))
            for e in ingest(sort_raw(iter_lines(events)), dead=[])]


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


class Pass:
    """One handler on in-memory stores, fed the records batch by batch."""

    def __init__(self, records: list[tuple[bytes, bytes]], live: int, partitions: int,
                 bundle: ModelBundle | None = None, attribution: bool = False,
                 model: DataDrivenModel | None = None, merge_every: int = 0) -> None:
        config = ScoringConfig(attribution=AttributionConfig(enabled=attribution))
        engine = ScoringEngine(config, bundle)
        engine.data_driven = model
        self.handler = ScoringHandler(engine, AlertRules(), TOPICS,
                                      live_states=live, live_states_bytes=256 << 20,
                                      merge_partitions=partitions if merge_every else 0)
        self.partitions = partitions
        self.merge_every = merge_every
        """With the identity merge: every this many records, each identity partition ticks
        each customer-events partition up to the last record's time (0: no merge)."""
        self.times = ([orjson.loads(value)["occurred_at"] for _key, value in records]
                      if merge_every else [])
        self.table = Table("customer-state", "memory://", Path("."))
        for p in range(partitions):
            self.table.stores[p] = MemoryStore()
            self.handler.on_assigned(p, self.table)
        self.records = records
        self.by_partition = [partition_for(key, partitions) for key, _ in records]

    def feed(self, lo: int, hi: int) -> None:
        """Score records[lo:hi] as one batch of the worker."""
        groups: dict[int, list[Record]] = defaultdict(list)
        for i in range(lo, hi):
            # Offsets increase per partition as on the topic (the merge tells a redelivery by
            # them): a record's is twice its index, a tick's the odd one after the batch's last.
            groups[self.by_partition[i]].append(Record(*self.records[i], 2 * i))
        every = self.merge_every
        if every and lo // every != hi // every:  # a second of traffic: the ticks arrive
            for p in range(self.partitions):
                groups[p] += [Record(MERGE_TICK_KEY, orjson.dumps(
                    merge_tick_message(q, self.times[hi - 1])), 2 * hi - 1)
                    for q in range(self.partitions)]
        table, handler = self.table, self.handler
        for p, messages in groups.items():
            out = Output()
            table._out = out
            handler.handle(p, messages, table, out)
            table._out = None
        handler.committed()  # what the processor calls once the batch has committed


def run(records: list[tuple[bytes, bytes]], live: int, batch: int, partitions: int,
        bundle: ModelBundle | None = None, attribution: bool = False,
        model: DataDrivenModel | None = None, merge_every: int = 0) -> Figures:
    """Feed every record in batches; time the second half."""
    one = Pass(records, live, partitions, bundle, attribution, model, merge_every)
    handler = one.handler
    gc_spent = [0.0, 0.0]

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_spent[1] = time.perf_counter()
        else:
            gc_spent[0] += time.perf_counter() - gc_spent[1]

    def feed(lo: int, hi: int) -> None:
        for start in range(lo, hi, batch):
            one.feed(start, min(start + batch, hi))

    half = len(records) // 2
    feed(0, half)
    hits, misses = handler.live.hits, handler.live.misses
    gc.callbacks.append(on_gc)
    counting = os.environ.get(UNDER_CALLGRIND) == "1"
    try:
        if counting:
            _instrument("on")
        began = time.process_time()
        feed(half, len(records))
        spent = time.process_time() - began
    finally:
        if counting:
            _instrument("off")
        gc.callbacks.remove(on_gc)
    timed = len(records) - half
    lookups = handler.live.hits - hits + handler.live.misses - misses
    return Figures(live, attribution, spent / timed * 1e6,
                   (handler.live.hits - hits) / lookups if lookups else 0.0,
                   gc_spent[0] / timed * 1e6)


def paired(records: list[tuple[bytes, bytes]], live: int, batch: int, partitions: int,
           bundle: ModelBundle | None, model: DataDrivenModel | None) -> tuple[float, float]:
    """CPU per event of attribution off and on, the two handlers fed the same batches in
    turn (which goes first alternating), so that the machine's other load falls on both
    alike; the second half timed."""
    passes = [Pass(records, live, partitions, bundle, on, model) for on in (False, True)]
    spent = [0.0, 0.0]
    half = len(records) // 2
    for n, start in enumerate(range(0, len(records), batch)):
        for which in ((0, 1) if n % 2 else (1, 0)):
            began = time.thread_time()
            passes[which].feed(start, min(start + batch, len(records)))
            if start >= half:
                spent[which] += time.thread_time() - began
    timed = len(records) - (half + -half % batch)
    return spent[0] / timed * 1e6, spent[1] / timed * 1e6


def _instrument(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True,
                   capture_output=True)


def count_instructions(argv: list[str], live: int, attribution: bool) -> tuple[float, int]:
    """Instructions per timed event of one configuration, and the timed events, counted by
    running this script once under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt install valgrind)")
    args = [a for a in argv if a != "--instructions"]
    cmd = [valgrind, "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
           sys.executable, __file__, *args, "--live", str(live),
           "--attribution", "on" if attribution else "off", "--repeat", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, UNDER_CALLGRIND: "1"})
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    timed = re.search(r"^timed events: (\d+)$", done.stdout, re.M)
    if done.returncode != 0 or refs is None or timed is None:
        raise SystemExit(f"the callgrind run failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    events = int(timed.group(1))
    return int(refs.group(1).replace(",", "")) / events, events


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
    parser.add_argument("--history", choices=("stories", "journeys"),
                        help="score a generated history of this profile instead of the "
                             "steady round (--customers, --days; batches of --batch-events)")
    parser.add_argument("--days", type=int, default=730, help="of the --history")
    parser.add_argument("--batch-events", type=int, default=250,
                        help="events per batch with --history")
    parser.add_argument("--paired", action="store_true",
                        help="attribution off and on fed the same batches in turn, in one "
                             "process (CPU per event of each and their ratio, per pass)")
    parser.add_argument("--merge", action="store_true",
                        help="with the identity merge: every event held until the identity "
                             "partitions' ticks, which arrive once per second of traffic")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per event under callgrind instead of timing "
                             "(each configuration once, in its own process)")
    args = parser.parse_args()
    flags = []
    for value in args.attribution.split(","):
        if value not in ("on", "off"):
            parser.error("--attribution takes on, off or both, comma-separated")
        flags.append(value == "on")
    if args.instructions:
        print(f"{'live states':>12} {'attribution':>12} {'instructions/event':>19}")
        base: float | None = None
        for live in (int(v) for v in args.live.split(",")):
            for attribution in flags:
                per_event, events = count_instructions(sys.argv[1:], live, attribution)
                ratio = "" if base is None else f"  {per_event / base - 1:+.1%} against the first"
                base = per_event if base is None else base
                print(f"{live:>12,} {'on' if attribution else 'off':>12} {per_event:>19,.0f}"
                      f"{ratio}   ({events:,} events timed)")
        return 0
    bundle = trained_bundle() if args.models == "trained" else None
    model = bench_model() if args.data_driven else None
    if args.history:
        records = history(args.history, args.customers, args.days)
    else:
        records = build(args.customers, args.rate, args.seconds, args.touches)
    # The collector's settings of a worker; the records built above are frozen with the
    # rest, as a worker's input is not in its heap until its batch.
    collector.settle()
    if args.history:
        batch = args.batch_events
        print(f"{len(records):,} events of a {args.days}-day {args.history} history of "
              f"{args.customers:,} customers, batches of {batch} over {args.partitions} "
              "partitions; second half timed")
    else:
        batch = max(1, int(args.rate * args.batch_ms / 1000))
        print(f"{len(records):,} events, {args.customers:,} customers in a round, batches of "
              f"{batch} over {args.partitions} partitions; second half timed"
              + ("; identity merge on" if args.merge else ""))
    if args.paired:
        print(f"{'live states':>12} {'off us/event':>13} {'on us/event':>12} {'on/off':>8}")
        for _ in range(args.repeat):
            for live in (int(v) for v in args.live.split(",")):
                off, on = paired(records, live, batch, args.partitions, bundle, model)
                print(f"{live:>12,} {off:>13.1f} {on:>12.1f} {on / off - 1:>+8.1%}")
        return 0
    print(f"{'live states':>12} {'attribution':>12} {'us/event':>9} {'hits':>6} "
          f"{'gc us/event':>12}")
    for _ in range(args.repeat):
        for live in (int(v) for v in args.live.split(",")):
            for attribution in flags:
                f = run(records, live, batch, args.partitions, bundle, attribution, model,
                        args.rate if args.merge else 0)
                if os.environ.get(UNDER_CALLGRIND) == "1":
                    print(f"timed events: {len(records) - len(records) // 2}")
                print(f"{f.live:>12,} {'on' if f.attribution else 'off':>12} "
                      f"{f.us_per_event:>9.1f} {f.hit_share:>6.0%} {f.gc_us_per_event:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
