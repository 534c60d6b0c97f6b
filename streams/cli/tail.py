"""`scorestream tail alerts|score-changes|dead-letters`: a console consumer for people.

Reads one of scorestream's output topics with read_committed isolation, so it shows only what a
scoring transaction committed (what every downstream consumer sees), filters it, and prints one
readable line per record, or the record's JSON with `--json` for piping into jq. It assigns
itself every partition instead of joining a consumer group and commits nothing, so any number
of people can tail a topic without moving the workers' or anyone else's offsets.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import uuid
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from schemas.errors import ScorestreamError
from streams.settings import Settings

__all__ = [
    "POLL_S",
    "SEVERITY_STYLES",
    "TOPICS",
    "TailError",
    "TailFilter",
    "add_arguments",
    "consume",
    "render",
    "run",
]

TOPICS = {"alerts": "alerts", "score-changes": "score_changes", "dead-letters": "dead_letters"}
"""`tail` argument -> topic role in the settings."""
SEVERITY_STYLES = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
POLL_S = 0.5


class TailError(ScorestreamError, RuntimeError):
    """The topic cannot be tailed (missing topic, unreachable broker)."""


@dataclass(frozen=True)
class TailFilter:
    """Which records to show; an empty tuple lets everything through.

    >>> alert = {"alert_type": "churn_risk", "severity": "warning", "customer_id": "C1"}
    >>> TailFilter(types=("churn_risk",), customers=("C1",)).matches("alerts", b"C1", alert)
    True
    >>> TailFilter(severities=("critical",)).matches("alerts", b"C1", alert)
    False
    >>> change = {"customer_id": "C1", "changed": {"tier": {"old": "Standard", "new": "VIP"}}}
    >>> TailFilter(fields=("tier",)).matches("score-changes", b"C1", change)
    True
    >>> TailFilter(reasons=("invalid_json",)).matches("dead-letters", b"k", {"reason": "oversized"})
    False
    """

    types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def matches(self, topic: str, key: bytes | None, record: dict[str, Any] | None) -> bool:
        """Whether one record of `topic` (None: a tombstone) passes every filter given."""
        if self.customers:
            ids = {key.decode(errors="replace") if key is not None else None}
            if record is not None:
                ids.add(record.get("customer_id"))
            if not ids & set(self.customers):
                return False
        if record is None:  # an erased customer's score-change tombstone has no fields
            return not (self.types or self.severities or self.reasons or self.fields)
        if self.types and record.get("alert_type") not in self.types:
            return False
        if self.severities and record.get("severity") not in self.severities:
            return False
        if self.reasons and record.get("reason") not in self.reasons:
            return False
        return not self.fields or any(f in record.get("changed", {}) for f in self.fields)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream tail`."""
    parser.add_argument("topic", choices=list(TOPICS), help="which output topic to follow")
    parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                        help="alerts of this type only: churn_risk, vip_upgrade, "
                             "tier_downgrade, high_value_at_risk (repeatable)")
    parser.add_argument("--severity", dest="severities", action="append", default=[],
                        choices=list(SEVERITY_STYLES), help="alerts of this severity only")
    parser.add_argument("--customer", dest="customers", action="append", default=[],
                        metavar="ID", help="records of this customer (or record key) only")
    parser.add_argument("--reason", dest="reasons", action="append", default=[],
                        metavar="REASON", help="dead letters with this reason code only")
    parser.add_argument("--field", dest="fields", action="append", default=[], metavar="FIELD",
                        help="score changes that moved this scorecard field only (e.g. tier)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="start at the oldest retained record instead of new ones")
    parser.add_argument("--max", type=int, default=None, metavar="N",
                        help="exit after showing N records")
    parser.add_argument("-e", "--exit-at-end", action="store_true",
                        help="exit once every partition has been read to its end")
    parser.add_argument("--json", action="store_true",
                        help="print each record's JSON on one line (for jq and scripts)")


def run(args: argparse.Namespace) -> int:
    """Follow the topic until Ctrl-C, SIGTERM, --max or --exit-at-end; returns the exit code."""
    settings: Settings = args.settings
    misplaced = {"--type": args.types and args.topic != "alerts",
                 "--severity": args.severities and args.topic != "alerts",
                 "--reason": args.reasons and args.topic != "dead-letters",
                 "--field": args.fields and args.topic != "score-changes"}
    for option, wrong in misplaced.items():
        if wrong:
            print(f"scorestream tail: {option} does not apply to {args.topic}", file=sys.stderr)
            return 2
    if args.max is not None and args.max < 1:
        print("scorestream tail: --max must be at least 1", file=sys.stderr)
        return 2
    filt = TailFilter(tuple(args.types), tuple(args.severities), tuple(args.customers),
                      tuple(args.reasons), tuple(args.fields))
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    topic = settings.topics[TOPICS[args.topic]]
    shown = 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        where = "from the beginning" if args.from_beginning else "from now on"
        until = "to the end" if args.exit_at_end else "(Ctrl-C to stop)"

        def ready() -> None:
            errors.print(f"reading {topic} {where} {until}", style="dim", soft_wrap=True,
                         markup=False)

        records = consume(settings, topic, from_beginning=args.from_beginning,
                          exit_at_end=args.exit_at_end, on_ready=ready)
        with closing(records):  # close the consumer at once, also after --max
            for key, value in records:
                record = orjson.loads(value) if value is not None else None
                if not filt.matches(args.topic, key, record):
                    continue
                if args.json:
                    sys.stdout.write((value or b"null").decode() + "\n")
                else:
                    console.print(render(args.topic, key, record), soft_wrap=True)
                sys.stdout.flush()  # one record at a time to whoever reads the pipe
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # about the unflushable stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TailError as err:
        errors.print(f"scorestream tail: {err}", soft_wrap=True, markup=False)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    errors.print(f"{shown} record{'s' if shown != 1 else ''} shown from {topic}", style="dim",
                 soft_wrap=True, markup=False)
    return 0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM ends a tail like Ctrl-C does."""
    raise KeyboardInterrupt


def consume(settings: Settings, topic: str, *, from_beginning: bool = False,
            exit_at_end: bool = False, on_ready: Callable[[], None] | None = None,
            ) -> Generator[tuple[bytes | None, bytes | None], None, None]:
    """(key, value) of every committed record of `topic`, from the start or from now on.

    Stops at the end of every partition when `exit_at_end`, otherwise waits for more;
    `on_ready` is called once the start of every partition is fixed.
    """
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    from streams.runtime.kafka import client_config

    consumer = Consumer({
        **client_config(settings),
        # A group id is required by the client, but assign() never joins the group and
        # nothing is committed under it.
        "group.id": f"{settings.app_id}-tail-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    })
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=15)
        except KafkaException as err:
            raise TailError(f"cannot reach Kafka at {settings.kafka.bootstrap}: {err}") from err
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise TailError(f"topic {topic} does not exist (run `scorestream topics`, or check "
                            "the SCORESTREAM_TOPIC_* settings)")
        partitions = sorted(described.partitions)
        if from_beginning:
            starts = {p: OFFSET_BEGINNING for p in partitions}
        else:
            # The end as of now, resolved before reading: with read_committed this is the
            # last stable offset, so a transaction committing after it is shown whole.
            starts = {p: consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=15, cached=False)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in partitions])
        if on_ready is not None:
            on_ready()
        at_end: set[int] = set()
        while True:
            message = consumer.poll(POLL_S)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise TailError(f"reading {topic}: {error.str()}")
                at_end.add(message.partition() or 0)
                if exit_at_end and len(at_end) == len(partitions):
                    return
                continue
            at_end.discard(message.partition() or 0)
            yield message.key(), message.value()
    finally:
        consumer.close()


def render(topic: str, key: bytes | None, record: dict[str, Any] | None) -> Text:
    """One line for a person: what happened, to whom, why.

    >>> card = {"tier": "VIP", "churn": {"probability": 0.72}}
    >>> alert = {"alert_type": "churn_risk", "severity": "warning", "customer_id": "C1",
    ...          "event_time": 1767225600000, "reason": "churn risk rose", "scorecard": card}
    >>> render("alerts", b"C1", alert).plain
    '2026-01-01 00:00  WARNING   churn_risk          C1  VIP, churn 0.72  churn risk rose'
    """
    return _RENDERERS[topic](key, record)


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-" * 16
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _render_alert(key: bytes | None, alert: dict[str, Any] | None) -> Text:
    assert alert is not None, "alerts are never tombstones"
    severity = str(alert.get("severity", ""))
    card = alert.get("scorecard") or {}
    churn = (card.get("churn") or {}).get("probability")
    summary = f"{card.get('tier', '?')}, churn {churn:.2f}" if churn is not None else ""
    return Text.assemble(
        (_when(alert.get("event_time")), "dim"), "  ",
        (f"{severity.upper():<8}", SEVERITY_STYLES.get(severity, "")), "  ",
        (f"{alert.get('alert_type', ''):<18}", "bold"), "  ",
        (str(alert.get("customer_id", "")), "magenta"), "  ",
        (summary, "dim"), "  ",
        str(alert.get("reason", "")),
    )


def _render_change(key: bytes | None, change: dict[str, Any] | None) -> Text:
    customer = key.decode(errors="replace") if key is not None else "?"
    if change is None:
        return Text.assemble(("-" * 16, "dim"), "  ", (customer, "magenta"), "  ",
                             ("erased: scorecard deleted", "bold red"))
    moves = ", ".join(f"{name} {_value(move.get('old'))} -> {_value(move.get('new'))}"
                      for name, move in change.get("changed", {}).items())
    return Text.assemble(
        (_when(change.get("event_time")), "dim"), "  ",
        (str(change.get("customer_id", customer)), "magenta"), "  ", moves,
    )


def _render_dead_letter(key: bytes | None, letter: dict[str, Any] | None) -> Text:
    assert letter is not None, "dead letters are never tombstones"
    where = f"{letter.get('topic')}[{letter.get('partition')}]@{letter.get('offset')}"
    event = f"  event {letter['event_id']}" if letter.get("event_id") else ""
    return Text.assemble(
        (_when(letter.get("dead_lettered_at")), "dim"), "  ",
        (f"{letter.get('reason', '')}", "bold yellow"), "  ", (where, "dim"), event, "  ",
        str(letter.get("message", "")),
    )


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


_RENDERERS: dict[str, Callable[[bytes | None, dict[str, Any] | None], Text]] = {
    "alerts": _render_alert,
    "score-changes": _render_change,
    "dead-letters": _render_dead_letter,
}
