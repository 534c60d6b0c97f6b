"""Decode + validate cost per event, per source, on a realistic mix (a script, not a test).

Usage:
    python bench/bench_decode.py [--events 200000] [--invalid 0.03] [--seed 7] [--repeat 3]

Builds the records first (serialised bytes, like Kafka hands them over), then times
`decode_source_event` alone and the whole `Ingestion.process` path (decode, dedupe, identity)
over the same records, and prints microseconds per event and events per second.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.ingest.routing import Ingestion, IngestionConfig
from schemas.decode import DeadLetter, Origin, compile_validators, decode_source_event
from schemas.registry import SOURCES, examples

T0 = 1_767_225_600_000
MIX = {"web": 0.5, "email": 0.25, "crm": 0.15, "support": 0.10}
BROKEN = [b"", b"{", b"[]", b"\xff\xfe", b'{"event_id": "x"}']


def build(count: int, invalid_share: float, seed: int) -> list[tuple[str, bytes]]:
    """`count` (source, value) records: examples re-stamped with fresh ids, times and ids."""
    rng = random.Random(seed)
    by_source = {source: examples(source) for source in SOURCES}
    sources = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    records = []
    for n, source in enumerate(sources):
        if rng.random() < invalid_share:
            records.append((source, rng.choice(BROKEN)))
            continue
        event: dict[str, Any] = copy.deepcopy(rng.choice(by_source[source]))
        event["event_id"] = f"{source[0]}-{n}"
        at = T0 + n * 50
        event["occurred_at"] = at if rng.random() < 0.5 else _rfc3339(at)
        if "customer_id" in event and event["event_type"] not in ("login", "profile_updated"):
            event["customer_id"] = f"C{rng.randrange(50_000)}"
        if rng.random() < 0.2:
            event["user_agent"] = "Mozilla/5.0 (X11; Linux x86_64)"
        records.append((source, orjson.dumps(event)))
    return records


def _rfc3339(millis: int) -> str:
    seconds, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def bench_decode(records: list[tuple[str, bytes]], now_ms: int) -> dict[str, tuple[int, float]]:
    """Per source: (events, seconds) spent in decode_source_event, in one pass."""
    spent: dict[str, float] = defaultdict(float)
    counted: dict[str, int] = defaultdict(int)
    clock = time.perf_counter
    for source, value in records:
        start = clock()
        decode_source_event(value, source, now_ms)
        spent[source] += clock() - start
        counted[source] += 1
    return {source: (counted[source], spent[source]) for source in spent}


def bench_ingestion(records: list[tuple[str, bytes]], now_ms: int) -> tuple[int, float, Ingestion]:
    """(events, seconds, the Ingestion) for one pass of the whole ingest path."""
    ingestion = Ingestion(IngestionConfig())
    start = time.perf_counter()
    for offset, (source, value) in enumerate(records):
        ingestion.process(Origin(source, 0, offset, None, value), source, now_ms)
    return len(records), time.perf_counter() - start, ingestion


@dataclass(frozen=True)
class DecodeFigures:
    """Decode + validate cost: (events, seconds) per source, for all, and for the whole ingest."""

    records: int
    mean_bytes: float
    rejected: int
    by_source: dict[str, tuple[int, float]]
    ingest: tuple[int, float]
    counters: str

    @property
    def decode_us(self) -> float:
        """Microseconds per event to decode and validate, all sources together."""
        events = sum(n for n, _ in self.by_source.values())
        return sum(s for _, s in self.by_source.values()) / events * 1e6

    @property
    def ingest_us(self) -> float:
        """Microseconds per event through the whole ingest path (decode, dedupe, identity)."""
        return self.ingest[1] / self.ingest[0] * 1e6


def measure(events: int = 200_000, invalid: float = 0.03, seed: int = 7,
            repeat: int = 3) -> DecodeFigures:
    """Build the records, then time decoding and ingestion over them; the fastest pass wins."""
    records = build(events, invalid, seed)
    now_ms = T0 + events * 50 + 60_000
    compile_validators()
    rejected = sum(isinstance(decode_source_event(v, s, now_ms), DeadLetter) for s, v in records)
    passes = [bench_decode(records, now_ms) for _ in range(repeat)]
    by_source = {source: min(p[source] for p in passes) for source in SOURCES}
    n, seconds, ingestion = min(
        (bench_ingestion(records, now_ms) for _ in range(repeat)), key=lambda r: r[1]
    )
    c = ingestion.counters
    counters = (f"accepted {c.accepted:,}, dead {c.dead:,}, duplicates {c.duplicates:,}, "
                f"held {c.held:,}, balanced {c.balanced()}")
    return DecodeFigures(len(records), sum(len(v) for _, v in records) / len(records), rejected,
                         by_source, (n, seconds), counters)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--invalid", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest is shown")
    args = parser.parse_args()
    figures = measure(args.events, args.invalid, args.seed, args.repeat)
    print(f"{figures.records:,} records, mean {figures.mean_bytes:.0f} bytes, "
          f"{figures.rejected:,} rejected; fastest of {args.repeat} passes")
    print()
    print(f"{'stage':<22}{'events':>10}{'us/event':>11}{'events/s':>12}")
    for source in SOURCES:
        _row(f"decode {source}", *figures.by_source[source])
    _row("decode all", sum(n for n, _ in figures.by_source.values()),
         sum(s for _, s in figures.by_source.values()))
    _row("ingest (all stages)", *figures.ingest)
    print()
    print(f"ingest: {figures.counters}")


def _row(stage: str, events: int, seconds: float) -> None:
    print(f"{stage:<22}{events:>10,}{seconds / events * 1e6:>11.2f}{events / seconds:>12,.0f}")


if __name__ == "__main__":
    main()
