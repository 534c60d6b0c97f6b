"""`scorestream generate`: write a deterministic synthetic event history (and ground truth).

Thin shell around `models.history.generate`: JSON lines to --out (gzipped when it ends in .gz), the
ground truth beside it (--truth, default <out>.truth.jsonl). Same arguments, same bytes.
`--profile retail` draws customers from the Pareto/NBD retail profile instead of the default
hand-made stories (see `models.history.generate.RetailParams`).
Sending straight to Kafka is the streaming layer's job (it can reuse `models.history.generate`).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import orjson

from models.history.generate import PROFILES, generate, iter_lines

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream generate`."""
    parser.add_argument("--customers", type=int, default=1000, help="number of customers")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--days", type=int, default=730, help="days of history (from 2024-01-01)")
    parser.add_argument("--out", type=Path, required=True, help="output file (.jsonl or .jsonl.gz)")
    parser.add_argument("--truth", type=Path, default=None, help="ground-truth file")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=PROFILES[0],
        help="customer behaviour: hand-made stories (default) or Pareto/NBD retail",
    )


def run(args: argparse.Namespace) -> int:
    """Generate and write; returns the process exit code."""
    events, truth = generate(args.customers, args.seed, days=args.days, profile=args.profile)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps gzip output byte-identical across runs
    with gzip.GzipFile(out, "wb", mtime=0) if out.suffix == ".gz" else out.open("wb") as f:
        for line in iter_lines(events):
            f.write(line)
    truth_path = args.truth or out.with_name(out.name.removesuffix(".gz") + ".truth.jsonl")
    with truth_path.open("wb") as f:
        for t in truth:
            f.write(orjson.dumps(t.to_dict()) + b"\n")
    print(f"{len(events)} events for {len(truth)} customers -> {out} (truth: {truth_path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m streams.cli.generate`)."""
    parser = argparse.ArgumentParser(prog="scorestream generate", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
