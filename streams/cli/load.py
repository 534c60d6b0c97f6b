"""`scorestream load FILE`: produce a JSON-lines event history to the source topics.

Reads what `scorestream generate` writes, or an export in the event contract's format (one
source event per line, docs/contract.md; gzip detected by the `.gz` suffix or the magic bytes),
and produces every line, its bytes as read (without the line break), to the topic of its
`source` (`SCORESTREAM_TOPIC_WEB` and the like), keyed by its `customer_id`, else `email`, else
`anonymous_id`: the same records a live source system would send. Missing topics are created
first, as `scorestream topics` does.

Each line is checked cheaply before it is sent: a JSON object, a `source` among the configured
sources, an identity to key it by. A line that fails is rejected and never sent, and the summary
names it by line number and reason. Full validation is the worker's: its ingest stage checks
every event against the contract and dead-letters what fails (`scorestream tail
dead-letters`). `--dry-run` only checks and counts.

A progress bar on stderr; at the end a summary on stdout: records sent per source, counted on
the broker's acknowledgements, lines rejected, records not delivered. `--rate N` paces the
sending at N events per second. Ctrl-C (or SIGTERM) stops reading, waits for the delivery
reports of what was sent and prints the summary; a second one stops waiting.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import logging
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from streams.runtime.kafka import client_config, ensure_topics, producer_config
from streams.settings import Settings

__all__ = [
    "EXIT_INTERRUPTED",
    "FIRST_SHOWN",
    "KEY_FIELDS",
    "REASONS",
    "Accepted",
    "History",
    "Rejected",
    "Tally",
    "add_arguments",
    "check_line",
    "is_gzip",
    "run",
    "summary",
]

KEY_FIELDS = ("customer_id", "email", "anonymous_id")
"""The record key: the first of these fields that is a non-empty string."""
REASONS = {
    "invalid_json": "not JSON (or not UTF-8)",
    "not_an_object": "JSON, but not an object",
    "missing_source": "no source field",
    "unknown_source": "source not among the configured sources",
    "no_key": "none of customer_id, email, anonymous_id is a non-empty string",
}
"""Why a line is rejected: reason code -> what it means."""
FIRST_SHOWN = 20
"""How many rejected lines (and undelivered records) the summary lists one by one."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as a shell reports it)."""

_GZIP_MAGIC = b"\x1f\x8b"
_PROGRESS_EVERY = 512  # lines between two progress bar updates
_POLL_S = 0.1  # longest wait between two looks at the stop flag


@dataclass(frozen=True)
class Accepted:
    """A line to send: to the topic of `source`, with this key and value."""

    source: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Rejected:
    """A line not to send: a reason code of `REASONS` and the particulars."""

    reason: str
    detail: str


def check_line(line: bytes, sources: Collection[str]) -> Accepted | Rejected | None:
    """What to do with one line of a history (None: a blank line, no event).

    The value is the line as read without its line break; it is parsed only to find the
    source and the key, never written back.

    >>> check_line(b'{"source": "crm", "email": "a@b.example"}\\n', ("web", "crm"))
    Accepted(source='crm', key=b'a@b.example', value=b'{"source": "crm", "email": "a@b.example"}')
    >>> check_line(b'{"source": "pos", "customer_id": "C1"}', ("web", "crm"))
    Rejected(reason='unknown_source', detail='source "pos" is not one of web, crm')
    >>> check_line(b'{"source": "web", "customer_id": null}', ("web",)).reason
    'no_key'
    >>> check_line(b'  \\r\\n', ("web",)) is None
    True
    """
    value = line[:-1] if line.endswith(b"\n") else line
    value = value[:-1] if value.endswith(b"\r") else value
    if not value.strip():
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        return Rejected("invalid_json", str(err))
    if not isinstance(record, dict):
        kind = "array" if isinstance(record, list) else type(record).__name__
        return Rejected("not_an_object", f"a JSON {'null' if record is None else kind}")
    source = record.get("source")
    if source is None:
        return Rejected("missing_source", "no source field (or null)")
    if not isinstance(source, str) or source not in sources:
        shown = orjson.dumps(source).decode()
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return Rejected("unknown_source", f"source {shown} is not one of {', '.join(sources)}")
    for name in KEY_FIELDS:
        key = record.get(name)
        if isinstance(key, str) and key:
            return Accepted(source, key.encode(), value)
    return Rejected("no_key", f"no {', '.join(KEY_FIELDS)} to key the record by")


def is_gzip(path: Path) -> bool:
    """Whether to read `path` gunzipped: its name ends in .gz or it starts with gzip's magic."""
    if path.suffix == ".gz":
        return True
    with path.open("rb") as probe:
        return probe.read(2) == _GZIP_MAGIC


class History:
    """The lines of a JSON-lines file, gzip or plain, and how far reading has got.

    `size` and `position` are bytes of the file as stored (compressed for gzip), for a
    progress bar that needs no first pass to count lines.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._raw: IO[bytes] = path.open("rb")
        self._lines: gzip.GzipFile | IO[bytes] = self._raw
        if is_gzip(path):
            self._lines = gzip.GzipFile(fileobj=self._raw, mode="rb")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._lines)

    @property
    def position(self) -> int:
        """Bytes of the stored file read so far (all of them once closed)."""
        return self.size if self._raw.closed else self._raw.tell()

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._lines.close()
        self._raw.close()


@dataclass
class Tally:
    """What became of the lines of one file, and of the records sent."""

    lines: int = 0
    blank: int = 0
    blank_lines: list[int] = field(default_factory=list)
    """The first blank lines (no events: not sent, not an error)."""
    accepted: Counter[str] = field(default_factory=Counter)
    """Per source: records handed to the producer (in a dry run: that would be)."""
    sent: Counter[str] = field(default_factory=Counter)
    """Per source: records the broker acknowledged."""
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_lines: list[tuple[int, Rejected]] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    """Per error: records not delivered."""
    failed_lines: list[tuple[int, str, str]] = field(default_factory=list)
    """(line, source, error) of the first records not delivered."""
    unconfirmed: int = 0
    """Records without a delivery report when waiting for them was cut short."""
    stopped_at: int | None = None
    """Interrupted: the first line not sent (None: read to the end)."""
    read_error: str | None = None
    seconds: float = 0.0

    def reject(self, number: int, rejected: Rejected) -> None:
        """Count a rejected line."""
        self.rejected[rejected.reason] += 1
        if len(self.rejected_lines) < FIRST_SHOWN:
            self.rejected_lines.append((number, rejected))

    def fail(self, number: int, source: str, error: str) -> None:
        """Count a record that was not delivered."""
        self.failed[error] += 1
        if len(self.failed_lines) < FIRST_SHOWN:
            self.failed_lines.append((number, source, error))

    def delivered(self, number: int, source: str, err: KafkaError | None,
                  _msg: Message) -> None:
        """Delivery report of the record of line `number` (a producer callback)."""
        if err is None:
            self.sent[source] += 1
        elif err.code() == KafkaError._PURGE_QUEUE:
            self.fail(number, source, "not sent: still queued when waiting was cut short")
        else:
            self.fail(number, source, str(err.str()))

    def exit_code(self) -> int:
        """0: every line sent; 1: a line rejected or a record not delivered (or unconfirmed,
        or the file unreadable to its end); EXIT_INTERRUPTED after Ctrl-C or SIGTERM."""
        if self.stopped_at is not None:
            return EXIT_INTERRUPTED
        if self.rejected or self.failed or self.unconfirmed or self.read_error is not None:
            return 1
        return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream load`."""
    parser.description = (
        "Produce a JSON-lines event history (what `scorestream generate` writes, or an export "
        "in the event contract's format; .gz allowed) to the source topics, each line to the "
        "topic of its source, keyed by customer_id, else email, else anonymous_id. Lines are "
        "checked cheaply (a JSON object, a configured source, a key); the worker's ingest "
        "stage validates every event and dead-letters what fails. Missing topics are "
        "created first, as `scorestream topics` does."
    )
    parser.epilog = (
        "Exit code 0 when every line was sent, 1 when a line was rejected or a record not "
        f"delivered, 2 for a usage error, {EXIT_INTERRUPTED} after Ctrl-C."
    )
    parser.add_argument("file", type=Path, help="JSON lines of source events (.gz allowed)")
    parser.add_argument("--rate", type=float, default=None, metavar="N",
                        help="events per second (default: as fast as the broker takes them)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check and count the lines, send nothing (no Kafka needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Send the file's lines (or only check them); print the summary; returns the exit code."""
    settings: Settings = args.settings
    path: Path = args.file
    usage = _usage_error(path, args.rate)
    if usage is not None:
        print(f"scorestream load: {usage}", file=sys.stderr)
        return 2
    errors = Console(stderr=True, highlight=False)
    topics = settings.source_topics
    tally = Tally()
    if args.dry_run:
        _load(path, tally, topics, None, args.rate, args.quiet, errors)
    else:
        try:
            producer = _connect(settings, errors)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        if producer is None:
            return 1
        _load(path, tally, topics, producer, args.rate, args.quiet, errors)
    where = None if args.dry_run else settings.kafka.bootstrap
    print("\n".join(summary(tally, path, topics, where)), flush=True)
    return tally.exit_code()


def _usage_error(path: Path, rate: float | None) -> str | None:
    if rate is not None and not rate > 0:
        return "--rate must be a positive number of events per second"
    if not path.exists():
        return f"no such file: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
    except OSError as err:
        return f"cannot read {path}: {err.strerror}"
    if path.suffix == ".gz" and magic != _GZIP_MAGIC:
        return f"{path} ends in .gz but is not gzip data"
    return None


def _connect(settings: Settings, errors: Console) -> Producer | None:
    """A producer on the configured cluster, once the topics exist (created when missing, as
    `scorestream topics` does); None, having said why, when the cluster cannot be used."""
    logging.getLogger("streams.runtime.kafka").setLevel(logging.WARNING)  # the topic list
    try:
        created = ensure_topics(settings)
    except (KafkaException, RuntimeError) as err:
        errors.print(f"scorestream load: {err}", soft_wrap=True, markup=False)
        return None
    if created:
        errors.print(f"created {len(created)} missing topic{_s(len(created))} "
                     "(as `scorestream topics` does)",
                     style="dim", soft_wrap=True, markup=False)
        try:
            _await_leaders(settings, [t for t in settings.source_topics.values() if t in created])
        except (KafkaException, RuntimeError) as err:
            errors.print(f"scorestream load: {err}", soft_wrap=True, markup=False)
            return None
    return Producer(producer_config(settings))


def _await_leaders(settings: Settings, topics: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of these new topics is served by its leader.

    A new topic is in the cluster's metadata a moment before its leader serves it: a batch sent
    then is refused ("not leader") and retried, and on a busy broker the idempotent producer was
    seen to report the first batch of such a partition delivered although the partition never
    took it. A partition whose leader reports its end offset takes records.
    """
    consumer = Consumer({**client_config(settings), "enable.auto.commit": False,
                         # needed to create a consumer; no group is joined
                         "group.id": f"{settings.app_id}-load-{uuid.uuid4().hex[:12]}"})
    deadline = time.monotonic() + timeout
    try:
        for topic in topics:
            while True:
                try:
                    meta = consumer.list_topics(topic, timeout=5).topics[topic]
                    if meta.error is None and meta.partitions:
                        for partition in meta.partitions:
                            consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=5, cached=False)
                        break
                except KafkaException:
                    pass  # not served yet
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"topic {topic} was created, but its partitions are "
                                       f"not served after {timeout:.0f} s")
                time.sleep(0.1)
    finally:
        consumer.close()


class _Signals:
    """Ctrl-C and SIGTERM set flags instead of raising, so that counting is never cut in
    the middle: the first stops reading, the second stops waiting for delivery reports."""

    def __init__(self) -> None:
        self.stop = False
        self.abandon = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        if self.stop:
            self.abandon = True
        self.stop = True


@contextmanager
def _catching_signals() -> Iterator[_Signals]:
    flags = _Signals()
    previous = {sig: signal.signal(sig, flags) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flags
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _load(path: Path, tally: Tally, topics: dict[str, str], producer: Producer | None,
          rate: float | None, quiet: bool, errors: Console) -> None:
    """Read, check and send (no producer: only check) every line into `tally`."""
    started = time.monotonic()
    history = History(path)
    with _catching_signals() as signals, Progress(
        TextColumn("load" if producer is not None else "check"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=errors,  # the summary on stdout stays clean when redirected
        disable=quiet,
    ) as bar:
        task = bar.add_task("lines", total=max(history.size, 1), status="")

        def show() -> None:
            done = (f"{sum(tally.sent.values()):,} sent" if producer is not None
                    else f"{sum(tally.accepted.values()):,} to send")
            bar.update(task, completed=history.position, status=(
                f"{tally.lines:,} lines, {done}, {sum(tally.rejected.values()):,} rejected"))

        try:
            _send_lines(history, tally, topics, producer, rate, signals, show)
        except (OSError, EOFError) as err:  # a truncated or corrupt gzip file, a read error
            tally.read_error = f"reading stopped after line {tally.lines:,}: {err}"
        finally:
            history.close()
        show()
        if producer is not None:
            bar.update(task, status=f"{len(producer):,} delivery reports to come")
            _flush(producer, tally, signals)
            show()
    tally.seconds = time.monotonic() - started


def _send_lines(history: History, tally: Tally, topics: dict[str, str],
                producer: Producer | None, rate: float | None, signals: _Signals,
                show: Callable[[], None]) -> None:
    """Check every line; send the good ones (no producer: count them) until a stop."""
    paced_from = time.monotonic()
    for number, line in enumerate(history, 1):
        if signals.stop:
            tally.stopped_at = number
            return
        tally.lines = number
        checked = check_line(line, topics)
        if checked is None:
            tally.blank += 1
            if len(tally.blank_lines) < FIRST_SHOWN:
                tally.blank_lines.append(number)
        elif isinstance(checked, Rejected):
            tally.reject(number, checked)
        elif producer is None:
            tally.accepted[checked.source] += 1
        else:
            if rate is not None:
                _pace(producer, paced_from + sum(tally.accepted.values()) / rate, signals)
            if signals.stop or not _produce(producer, tally, number, checked, topics, signals):
                tally.stopped_at = number
                return
        if number % _PROGRESS_EVERY == 0:
            show()


def _pace(producer: Producer, until: float, signals: _Signals) -> None:
    """Serve delivery reports until `until` (monotonic clock) or a stop."""
    while not signals.stop and (left := until - time.monotonic()) > 0:
        producer.poll(min(left, _POLL_S))


def _produce(producer: Producer, tally: Tally, number: int, line: Accepted,
             topics: dict[str, str], signals: _Signals) -> bool:
    """Hand one record to the producer, waiting while its queue is full; False if stopped
    first (nothing handed over). A record the client refuses outright counts as not
    delivered."""
    report = functools.partial(tally.delivered, number, line.source)
    while True:
        try:
            producer.produce(topics[line.source], line.value, line.key, on_delivery=report)
        except BufferError:  # the local queue is full: let deliveries drain it
            if signals.stop:
                return False
            producer.poll(_POLL_S)
            continue
        except KafkaException as err:  # too large for the client, say
            tally.accepted[line.source] += 1
            tally.fail(number, line.source, str(err.args[0].str()))
            return True
        tally.accepted[line.source] += 1
        producer.poll(0)
        return True


def _flush(producer: Producer, tally: Tally, signals: _Signals) -> None:
    """Wait for every delivery report (librdkafka gives each record one within its
    message.timeout.ms); a second Ctrl-C withdraws what is still queued and stops waiting."""
    while len(producer) > 0 and not signals.abandon:
        producer.flush(_POLL_S)
    if len(producer) > 0:
        producer.purge(in_queue=True, in_flight=False, blocking=False)
        producer.poll(0.5)  # the purged records' reports
        tally.unconfirmed = len(producer)


def summary(tally: Tally, path: Path, topics: dict[str, str], bootstrap: str | None) -> list[str]:
    """The closing report, one string a line (bootstrap None: a dry run)."""
    sent = sum(tally.sent.values())
    rejected = sum(tally.rejected.values())
    failed = sum(tally.failed.values())
    rate = f" ({tally.lines / tally.seconds:,.0f} lines/s)" if tally.seconds >= 0.1 else ""
    read = f"{tally.lines:,} line{_s(tally.lines)} of {path} in {tally.seconds:.1f} s{rate}"
    if bootstrap is None:
        would = sum(tally.accepted.values())
        lines = [f"dry run, nothing sent: read {read}",
                 f"would send {would:,} record{_s(would)}:"]
        counts = tally.accepted
    else:
        lines = [f"read {read}",
                 f"sent {sent:,} record{_s(sent)} to Kafka at {bootstrap} (acknowledged):"]
        counts = tally.sent
    shown = [source for source in topics if tally.accepted[source] or counts[source]]
    for source in shown:
        lines.append(f"  {source:<9}{counts[source]:>9,}  -> topic {topics[source]}")
    if not shown:
        lines.append("  none")
    if rejected:
        lines.append(f"rejected, not sent: {rejected:,} line{_s(rejected)}")
        for reason, count in tally.rejected.most_common():
            lines.append(f"  {reason:<16}{count:>8,}  {REASONS[reason]}")
        for number, why in tally.rejected_lines:
            lines.append(f"  line {number:,}: {why.reason}: {why.detail}")
        if rejected > len(tally.rejected_lines):
            lines.append(f"  (the first {len(tally.rejected_lines)} of {rejected:,} shown)")
    else:
        lines.append("rejected: none")
    if failed:
        lines.append(f"not delivered: {failed:,} record{_s(failed)}")
        for error, count in tally.failed.most_common():
            lines.append(f"  {count:>8,}  {error}")
        for number, source, error in sorted(tally.failed_lines):
            lines.append(f"  line {number:,} ({source}): {error}")
        if failed > len(tally.failed_lines):
            lines.append(f"  (the first {len(tally.failed_lines)} of {failed:,} shown)")
    elif bootstrap is not None:
        lines.append("not delivered: none")
    if tally.blank:
        numbers = ", ".join(f"{n:,}" for n in tally.blank_lines)
        more = ", ..." if tally.blank > len(tally.blank_lines) else ""
        lines.append(f"blank lines, not events: {tally.blank:,} (line{_s(tally.blank)} "
                     f"{numbers}{more})")
    if tally.read_error is not None:
        lines.append(f"could not read the whole file: {tally.read_error}")
    if tally.stopped_at is not None:
        lines.append(f"interrupted: line {tally.stopped_at:,} and the lines after it were not "
                     "sent")
    if tally.unconfirmed:
        lines.append(f"no delivery report for {tally.unconfirmed:,} record"
                     f"{_s(tally.unconfirmed)} (waiting was cut short): they may or may not "
                     "have reached Kafka")
    return lines


def _s(n: int) -> str:
    return "" if n == 1 else "s"
