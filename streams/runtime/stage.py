"""The stage contract: what a stage's handler implements and what a batch produces.

A stage is a `StageHandler` run by a `BatchProcessor` (streams/runtime/processor.py): the
processor consumes a batch, calls `handle` once per input partition with that partition's
records, and commits the `Output` (table writes, output records) and the consumed offsets in
one Kafka transaction. `on_assigned` and `on_revoked` bracket a partition's life on this
worker; the other hooks are optional and do nothing by default.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import Message

from schemas.decode import DeadLetter, Origin, Reason
from schemas.errors import ScorestreamError

if TYPE_CHECKING:
    from streams.runtime.tables import Table

__all__ = ["CaughtUp", "Counting", "Output", "ProcessorConfig", "Stage", "StageHandler", "Stopped",
           "dead_letter"]

InputPartition = tuple[str, int]
"""An input partition: (topic, partition)."""


class CaughtUp(Protocol):
    """Which owned input partitions have nothing left to read: as of the client's latest
    fetch responses, and for those in `confirm` as the broker answers now (a round trip)."""

    def __call__(self, confirm: Collection[InputPartition] = ()) -> set[InputPartition]: ...


class Stopped(ScorestreamError, RuntimeError):
    """The stage was asked to stop while it waited for the broker (not a failure)."""


@dataclass(frozen=True)
class ProcessorConfig:
    """Where a stage reads, where its table's changelog lives, and how it batches."""

    name: str
    group_id: str
    input_topics: tuple[str, ...]
    changelog_topic: str | None
    """None for a stateless stage; with a table, exactly one input topic (co-partitioned)."""
    client: dict[str, str | int | float | bool]
    store_url: str = "memory://"
    data_dir: Path = Path(".run/worker")
    batch_size: int = 2000
    batch_within_s: float = 0.05
    client_id: str = "scorestream"
    consumer_overrides: dict[str, str | int | float | bool] = field(default_factory=dict)
    """Extra consumer settings of this stage (librdkafka names)."""
    co_partitioned: bool = False
    """Partition k of every input topic goes to the same member (librdkafka's range assignor),
    so one member reads all of a key's records whichever topic they came on. An eager
    protocol: each rebalance revokes every partition and assigns the new shares whole (the
    cooperative-sticky default moves only what changes, but splits topics freely)."""
    session_timeout_ms: int = 10_000
    """How long the group waits for a silent member (a crashed worker) before moving its
    partitions to the others."""
    transaction_timeout_ms: int = 60_000
    """How long the broker keeps an open transaction of a producer nobody fenced before
    aborting it (a new owner fences a crashed one at once: streams/runtime/fencing.py); until
    then read_committed readers and committed-offset fetches of its partitions wait. Longer
    than any batch's produce and commit, and than a broker outage the stages should ride
    out without replacing their producers."""


def dead_letter(msg: Message, reason: Reason, message: str,
                now_ms: int | None = None) -> dict[str, Any]:
    """The dead-letters record of a consumed message: the reason, where it came from and its
    original bytes (what every stage sends when it gives up on one)."""
    return DeadLetter(reason, message).to_record(
        origin_of(msg), int(time.time() * 1000) if now_ms is None else now_ms)


def origin_of(msg: Message) -> Origin:
    """A consumed message's origin: where it came from and its original bytes."""
    return Origin(msg.topic() or "", msg.partition(), msg.offset(), msg.key(), msg.value())


class Counting(Protocol):
    """A counter a batch's work is counted on (`prometheus_client.Counter` or its child)."""

    def inc(self, amount: float = 1) -> None: ...


@dataclass
class Output:
    """What a batch produces: table writes, messages for other topics, and the counts of its
    work, which go to the metrics only once the batch has committed."""

    writes: list[tuple[int, bytes, bytes | None]] = field(default_factory=list)
    records: list[tuple[str, bytes | None, bytes | None, int | None]] = field(
        default_factory=list)
    counts: list[tuple[Counting, float]] = field(default_factory=list)

    def count(self, counter: Counting, amount: float = 1.0) -> None:
        """Add `amount` to a counter (a labelled Prometheus counter) when the batch commits.
        A batch whose transaction aborts is read and handled again: counted at once, its
        work would be counted twice."""
        self.counts.append((counter, amount))

    def tally(self) -> None:
        """The batch committed (or had nothing to commit): apply its counts."""
        for counter, amount in self.counts:
            counter.inc(amount)
        self.counts.clear()

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None) -> None:
        """Queue one output record, partitioned by key with murmur2 (like Java clients) unless
        a partition is given; a None value is a tombstone."""
        self.records.append((topic, key, value, partition))


class StageHandler(ABC):
    """What a stage does with its records; pure logic lives in models/, not here.

    Required: `handle`, `on_assigned`, `on_revoked`. The other hooks are optional: each does
    nothing (or says "no opinion") unless a stage overrides it.
    """

    @abstractmethod
    def on_assigned(self, partition: int, table: Table) -> None:
        """A partition of the input is this worker's, its store restored (for a stage with a
        table): rebuild what is derived from it (indexes, histograms)."""

    @abstractmethod
    def on_revoked(self, partition: int) -> None:
        """A partition left this worker (or its store is rebuilt after an aborted
        transaction): drop what was derived from it."""

    @abstractmethod
    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Process one partition's records of a batch: write `table`, send to `out`."""

    def idle(self, table: Table, out: Output) -> None:
        """A poll returned nothing: time-driven work (publish, flush held records). Default:
        nothing."""
        return None

    def finish(self, table: Table, out: Output,
               caught_up: CaughtUp) -> None:
        """Before the batch commits, after every partition was handled; `caught_up()` says
        which input partitions have nothing left to read. Default: nothing."""
        return None

    def committed(self) -> None:
        """The batch's transaction committed: its outputs are visible downstream (what a
        stage measures at emit). Default: nothing."""
        return None

    def positions(self) -> dict[InputPartition, int] | None:
        """Offsets to commit when the stage holds records back (it commits only up to the
        first one it holds). Default: None, past every record of the batch."""
        return None

    def pause_resume(self) -> tuple[list[InputPartition], list[InputPartition]]:
        """Input partitions to pause and to resume now (event-time alignment). Default:
        neither."""
        return [], []

    def pace_inputs(self, inputs: list[InputPartition]) -> None:
        """Input partitions were assigned (a stage without a table): start pacing them.
        Default: nothing."""
        return None

    def release_input(self, topic: str, partition: int) -> None:
        """An input partition left this worker: stop pacing it. Default: nothing."""
        return None


class Stage(Protocol):
    """What the worker sees of a stage: a `BatchProcessor`, or the ingest stage's process."""

    config: ProcessorConfig
    error: BaseException | None
    ready: threading.Event
    lag: dict[tuple[str, int], int]

    def start(self) -> None:
        """Start processing."""

    def stop(self, timeout: float = 30.0) -> None:
        """Finish and commit the batch in hand, then leave the group."""

    @property
    def alive(self) -> bool:
        """True while the stage runs."""

    @property
    def committing(self) -> str:
        """The transactional step in progress, for the stall report, or ""."""

    def committing_for(self) -> float:
        """Seconds the batch in hand has been committing (0 when not committing)."""
