"""The `scorestream` command: worker, topics, demo, replay, evaluate, generate, load, tail,
scorecard, erase.

Each subcommand lives in the module named for it; this file only parses arguments, sets up
logging and dispatches, so `scorestream --help` stays fast (Faust is imported on demand).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streams.settings import Settings, SettingsError

__all__ = ["COMMANDS", "build_parser", "main"]

log = logging.getLogger("scorestream")

# subcommand -> (module, one-line help); each module has add_arguments(parser) and run(args).
COMMANDS = {
    "worker": ("streams.cli.worker", "run a scoring worker (joins the consumer group)"),
    "topics": ("streams.cli.worker", "create the topics scorestream uses, then exit"),
    "demo": ("streams.cli.demo", "watch a worker score a steady stream of generated events, live"),
    "replay": ("streams.cli.replay", "replay a JSON-lines event file through the core, no Kafka"),
    "evaluate": ("streams.cli.evaluate",
                 "score a history up to a split, judge it by what came after"),
    "generate": ("streams.cli.generate", "write a deterministic synthetic event history"),
    "load": ("streams.cli.load", "produce a JSON-lines event history to the source topics"),
    "tail": ("streams.cli.tail", "follow alerts, score changes or dead letters in the console"),
    "scorecard": ("streams.cli.scorecard", "print one customer's scorecard from a worker's API"),
    "erase": ("streams.cli.erase", "right to erasure: request that a customer be forgotten"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="scorestream",
        description="Live customer scorecards from Kafka event streams.",
        epilog="Configuration comes from SCORESTREAM_* environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"scorestream: configuration error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.settings = settings
    module = importlib.import_module(COMMANDS[args.command][0])
    runner = getattr(module, f"run_{args.command}", None) or module.run
    try:
        return int(runner(args) or 0)
    except SettingsError as err:  # found on start, against the cluster (partition counts)
        print(f"scorestream: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
