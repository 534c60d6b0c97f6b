"""`scorestream worker` and `scorestream topics`: run a worker, or only create the topics."""

from __future__ import annotations

import argparse
import logging

from streams.runtime import collector
from streams.runtime.kafka import check_partitions, ensure_topics
from streams.settings import Settings, redact_logs

__all__ = ["add_topics_arguments", "add_worker_arguments", "run_topics", "run_worker"]

log = logging.getLogger(__name__)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Worker options (most configuration comes from SCORESTREAM_* variables)."""
    parser.add_argument(
        "--no-create-topics", action="store_true",
        help="do not create missing topics on start (for clusters where topics are managed)",
    )


def add_topics_arguments(parser: argparse.ArgumentParser) -> None:
    """`topics` takes no options: everything comes from SCORESTREAM_* variables."""


def run_topics(args: argparse.Namespace) -> int:
    """Create missing topics and say which."""
    settings: Settings = args.settings
    created = ensure_topics(settings)
    print(f"created: {', '.join(created) if created else 'none (all topics exist)'}")
    check_partitions(settings)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Start a Faust worker for the configured app; blocks until SIGTERM or SIGINT."""
    import faust

    from streams.app import create_app

    settings: Settings = args.settings
    redact_logs(settings.secret_values())
    if not args.no_create_topics:
        created = ensure_topics(settings)
        if created:
            log.info("created topics %s", created)
    check_partitions(settings)
    app = create_app(settings)
    log.info(
        "starting worker app=%s broker=%s store=%s web=http://%s:%d",
        settings.app_id, settings.kafka.bootstrap, settings.store,
        settings.web.host, settings.web.port,
    )
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # At a log level of warn or above Faust adds a terminal start-up spinner that spins on
    # every log record, and sets the root logger to DEBUG to see them all: every debug call
    # of aiokafka and Faust then builds a record (~8 % of a busy worker's CPU).
    worker.spinner = None
    # What is imported and built by now (Faust, River, SciPy: ~140,000 objects) lives as long
    # as the process: keep it out of the cyclic collector's full passes (~80 ms each), and
    # let each batch's objects die young (streams/runtime/collector.py).
    collector.settle()
    worker.execute_from_commandline()
    return 0
