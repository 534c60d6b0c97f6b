"""`scorestream replay FILE`: run the scoring core over a recorded history, without Kafka.

Thin shell around `models.history.replay`: reads JSON lines (gzip detected by magic bytes), shows a
progress bar, and writes scorecards.jsonl (sorted by customer id, byte-identical across runs),
alerts.jsonl, dead-letters.jsonl, quality.json and aggregates.json (the management scorecard of
the final scorecards, as `GET /aggregates` reports a live base) into --out. `--frozen-models`
scores with the initial models throughout, as a worker with `SCORESTREAM_MODEL_FROZEN` does.
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.config import ScoringConfig
from models.history.replay import ReplayResult, ingest, parse_time, replay, sort_raw
from models.scoring.aggregates import SEGMENT_ROWS, Aggregates
from schemas.units import HOUR_MS

__all__ = ["add_arguments", "main", "read_lines", "replay_with_progress", "run"]

_ORJSON = orjson.OPT_SORT_KEYS


def read_lines(path: Path) -> Iterator[bytes]:
    """Lines of a JSON-lines file, gunzipped when it starts with the gzip magic bytes."""
    with path.open("rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        yield from f


def replay_with_progress(label: str, events: Iterable[dict[str, Any]], total: int,
                         args: argparse.Namespace, **options: Any) -> ReplayResult:
    """`models.history.replay.replay` of `total` records under a progress bar (none with --quiet),
    with the alert rules of the worker's settings (SCORESTREAM_ALERT_*) when the command has
    them, so replay and evaluate raise what a worker with the same environment raises."""
    settings = getattr(args, "settings", None)
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # the report on stdout stays clean when redirected
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("events", total=total)
        result = replay(
            events,
            ScoringConfig(),
            progress=lambda n: bar.advance(task, n),
            alert_config=settings.alert_config() if settings is not None else None,
            **options,
        )
        bar.update(task, completed=total)  # duplicates and dead letters count as done
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream replay`."""
    parser.add_argument("file", type=Path, help="JSON lines of source events (.gz allowed)")
    parser.add_argument(
        "--as-of",
        dest="as_of",
        default=None,
        help="stop at this event time (RFC 3339 or epoch ms) and dump scorecards as of then",
    )
    parser.add_argument("--out", type=Path, default=Path("out/replay"), help="output directory")
    parser.add_argument(
        "--batch-hours", type=float, default=24.0, help="event-time batch length (default 24)"
    )
    parser.add_argument(
        "--frozen-models",
        dest="frozen_models",
        action="store_true",
        help="score with the initial models and tiers throughout: the learner learns and "
        "measures but publishes no bundle (as a worker with SCORESTREAM_MODEL_FROZEN=true)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Replay the file and write the outputs; returns the process exit code."""
    as_of = parse_time(args.as_of) if args.as_of is not None else None
    records = sort_raw(read_lines(args.file))
    dead: list[dict] = []
    result = replay_with_progress("replay", ingest(records, dead=dead), len(records), args,
                                  as_of_ms=as_of, batch_ms=int(args.batch_hours * HOUR_MS),
                                  publish=not args.frozen_models)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with (out / "scorecards.jsonl").open("wb") as f:
        for sc in result.scorecards:
            f.write(orjson.dumps(sc.to_dict(), option=_ORJSON) + b"\n")
    with (out / "alerts.jsonl").open("wb") as f:
        for alert in result.alerts:
            f.write(orjson.dumps(alert, option=_ORJSON) + b"\n")
    with (out / "dead-letters.jsonl").open("wb") as f:
        for d in dead:
            f.write(orjson.dumps(d, option=_ORJSON) + b"\n")
    stats = dict(result.stats, records=len(records), dead_letters=len(dead))
    report = {"stats": stats, "quality": result.quality}
    (out / "quality.json").write_bytes(
        orjson.dumps(report, option=_ORJSON | orjson.OPT_INDENT_2) + b"\n"
    )
    base = Aggregates.of(result.scorecards).report(limit=SEGMENT_ROWS)
    (out / "aggregates.json").write_bytes(orjson.dumps(
        {"as_of": max((sc.as_of for sc in result.scorecards), default=None),
         "currency": ScoringConfig().base_currency, **base},
        option=_ORJSON | orjson.OPT_INDENT_2) + b"\n")
    holdout = result.quality["churn_holdout"]
    print(
        f"{stats['customers']} customers, {stats['events']} events, {len(dead)} dead letters, "
        f"{len(result.alerts)} alerts; churn AUC on held-back customers "
        f"{holdout['auc']} (n={holdout['n']}); outputs in {out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m streams.cli.replay`)."""
    parser = argparse.ArgumentParser(prog="scorestream replay", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
