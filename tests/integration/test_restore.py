"""Restoring a table from its changelog on the real broker, around a crashed owner's open
transaction.

The scenario behind it, seen in a kill -9 run: worker B is killed while its transaction is
open on the changelog; worker C takes over and commits states after B's open records; C is
killed too, and D restores before the broker has aborted B's transaction. Read in
read_committed mode, the changelog then "ends" at B's open records (the last stable offset),
and D used to start from C's committed offsets with C's states missing.
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import streams.runtime.tables as tables_module
from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import Output, ProcessorConfig, StageHandler, Stopped
from streams.runtime.tables import Table


class _Assigned(StageHandler):
    """A handler that only notes which partitions were restored."""

    def __init__(self) -> None:
        self.partitions: list[int] = []

    def on_assigned(self, partition: int, table: Table) -> None:
        self.partitions.append(partition)

    def on_revoked(self, partition: int) -> None:
        """Nothing derived to drop."""

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        """Not called: the test restores only."""

    def idle(self, table: Table, out: Output) -> None:
        """Not called: the test restores only."""


def _transactional(bootstrap: str, name: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": name})
    producer.init_transactions(30)
    producer.begin_transaction()
    return producer


def _open_only(bootstrap: str, name: str, transaction_timeout_ms: int = 60_000
               ) -> tuple[BatchProcessor, Producer]:
    """A processor whose changelog holds another producer's open transaction (left as a
    crashed owner leaves it), and that producer."""
    changelog, source = f"{name}-changelog", f"{name}-events"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (changelog, source)]).values():
        future.result(30)
    crashed = _transactional(bootstrap, f"{name}-crashed")
    crashed.produce(changelog, key=b"C1", value=b"never committed", partition=0)
    crashed.flush(30)
    processor = BatchProcessor(
        ProcessorConfig(name="restore", group_id=f"{name}-g", input_topics=(source,),
                        changelog_topic=changelog, client={"bootstrap.servers": bootstrap},
                        transaction_timeout_ms=transaction_timeout_ms),
        _Assigned())  # type: ignore[arg-type]  # a handler with only the calls a restore makes
    return processor, crashed


def test_restore_reads_past_an_open_transaction_once_it_ends(
    kafka_bootstrap: str, unique_name: str
) -> None:
    processor, crashed = _open_only(kafka_bootstrap, unique_name)
    changelog = processor.config.changelog_topic
    assert changelog is not None
    owner = _transactional(kafka_bootstrap, f"{unique_name}-owner")
    owner.produce(changelog, key=b"C1", value=b"committed after it", partition=0)
    owner.produce(changelog, key=b"C2", value=b"also after it", partition=0)
    owner.commit_transaction(30)
    aborted: list[BaseException | None] = []

    def abort() -> None:  # what the broker does after the crashed transaction's timeout
        try:
            crashed.abort_transaction(30)
            aborted.append(None)
        except BaseException as err:
            aborted.append(err)

    timer = threading.Timer(3.0, abort)
    timer.start()
    try:
        processor._restore([(processor.config.input_topics[0], 0)])
    finally:
        timer.join()
    assert aborted == [None]
    assert isinstance(processor.handler, _Assigned) and processor.handler.partitions == [0]
    assert dict(processor.table.items(0)) == {b"C1": b"committed after it",
                                              b"C2": b"also after it"}
    processor.table.stores.pop(0).close()


def test_a_stop_ends_a_restore_that_waits_for_an_open_transaction(
    kafka_bootstrap: str, unique_name: str
) -> None:
    processor, crashed = _open_only(kafka_bootstrap, unique_name)
    stopper = threading.Timer(2.0, processor._stop.set)
    stopper.start()
    try:
        with pytest.raises(Stopped, match="stopped while restoring"):
            processor._restore([(processor.config.input_topics[0], 0)])
    finally:
        stopper.join()
        crashed.abort_transaction(30)
    assert processor.table.stores == {} and processor.owned == set()


def test_a_restore_gives_up_loudly_on_a_transaction_open_past_any_timeout(
    kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables_module, "RESTORE_WAIT_BEYOND_TRANSACTION_S", 1.0)
    processor, crashed = _open_only(kafka_bootstrap, unique_name, transaction_timeout_ms=1000)
    try:
        with pytest.raises(RuntimeError, match=r"held back by an open transaction") as failed:
            processor._restore([(processor.config.input_topics[0], 0)])
    finally:
        crashed.abort_transaction(30)
    assert not isinstance(failed.value, Stopped)
