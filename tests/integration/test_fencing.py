"""Fencing on the real broker: a new owner fences a departed owner's transactional producer at
once (its open transaction aborted, not left to time out), never a live member's; a processor
fenced by mistake starts a new producer and loses or repeats nothing.

Real `BatchProcessor`s copy a source topic to an output topic in transactions, as every stage
does with its outputs and offsets (streams/runtime/fencing.py has the design).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.runtime.fencing import fence_departed, transactional_id
from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import Output, ProcessorConfig, StageHandler
from streams.runtime.tables import Table
from tests.integration.fault_tools import latest_offsets, read_all, stable_offsets

RECORDS = 40


class _Copying(StageHandler):
    """Copies every record to `output`; counts what it handled and the last offset committed."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.handled = 0
        self.last_handled = -1
        self.last_committed = -1

    def on_assigned(self, partition: int, table: Table) -> None:
        """Nothing to rebuild."""

    def on_revoked(self, partition: int) -> None:
        """Nothing derived to drop."""

    def committed(self) -> None:
        self.last_committed = self.last_handled

    def handle(self, partition: int, messages: list[Message], table: Table, out: Output) -> None:
        self.handled += len(messages)
        self.last_handled = max(msg.offset() or 0 for msg in messages)
        for msg in messages:
            out.send(self.output, msg.key(), msg.value())


class _Setup:
    def __init__(self, bootstrap: str, name: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.source, self.output = f"{name}-in", f"{name}-out"
        self.group = f"{name}-g"
        self.tmp = tmp
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(self.source, 1, 1),
                                           NewTopic(self.output, 1, 1)]).values():
            future.result(30)
        self.sent = 0

    def config(self, client_id: str) -> ProcessorConfig:
        return ProcessorConfig(name="copy", group_id=self.group, input_topics=(self.source,),
                               changelog_topic=None, data_dir=self.tmp, client_id=client_id,
                               client={"bootstrap.servers": self.bootstrap},
                               batch_size=RECORDS, batch_within_s=0.2)

    def send(self, n: int) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        for i in range(self.sent, self.sent + n):
            producer.produce(self.source, key=f"k{i}".encode(), value=f"v{i}".encode())
        assert producer.flush(30) == 0
        self.sent += n

    def copied(self) -> list[bytes]:
        """The committed output's values, in order."""
        return [msg.value() for msg in read_all(self.bootstrap, self.output)]

    def crashed(self, client_id: str, timeout_ms: int,
                group: Consumer | None = None) -> Producer:
        """A transaction of `client_id`'s producer left open, as by a worker killed inside it:
        a record written to the output and, with a consumer of the group, the source's offset
        1 pending."""
        producer = Producer({"bootstrap.servers": self.bootstrap,
                             "transactional.id": transactional_id(self.config(client_id)),
                             "transaction.timeout.ms": timeout_ms})
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(self.output, key=b"zombie", value=b"never committed", partition=0)
        if group is not None:
            producer.send_offsets_to_transaction([TopicPartition(self.source, 0, 1)],
                                                 group.consumer_group_metadata(), 30)
        assert producer.flush(30) == 0
        return producer

    def open_transaction(self) -> bool:
        """An open transaction holds the output (its last stable offset behind its end)."""
        return (stable_offsets(self.bootstrap, [self.output])
                != latest_offsets(self.bootstrap, [self.output]))


def _run(processor: BatchProcessor, handler: _Copying, through: int) -> None:
    """Wait until the processor has committed source offset `through`."""
    deadline = time.monotonic() + 90
    while handler.last_committed < through:
        assert processor.error is None, processor.error
        assert time.monotonic() < deadline, f"offset {through} never committed"
        time.sleep(0.1)


def _expected(n: int) -> list[bytes]:
    return [f"v{i}".encode() for i in range(n)]


@pytest.mark.integration
def test_a_departed_owners_open_transaction_is_aborted_when_its_partitions_are_assigned(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    setup = _Setup(kafka_bootstrap, unique_name, tmp_path)
    setup.send(RECORDS)
    first = _Copying(setup.output)
    one = BatchProcessor(setup.config("one"), first)
    one.start()
    try:
        _run(one, first, RECORDS - 1)
    finally:
        one.stop()
    # "one" crashes with a transaction open: its producer (same transactional id) begins one,
    # writes, and is never heard of again. The broker would keep it for 60 s.
    crashed = setup.crashed("one", 60_000)
    assert setup.open_transaction()

    second = _Copying(setup.output)
    two = BatchProcessor(setup.config("two"), second)
    two.start()
    try:
        assert two.ready.wait(60), two.error
        # Fenced on assignment: the crashed transaction is gone as soon as "two" is ready
        # (and "two" has nothing to read yet, so no transaction of its own is open).
        assert not setup.open_transaction()
        setup.send(RECORDS)
        _run(two, second, 2 * RECORDS - 1)
    finally:
        two.stop()
    with pytest.raises(KafkaException, match="fenced"):
        crashed.commit_transaction(30)
    assert second.handled == RECORDS  # started at "one"'s committed offset
    assert setup.copied() == _expected(2 * RECORDS)


@pytest.mark.integration
def test_an_owner_killed_in_its_first_transaction_is_fenced_too(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """A partition no transaction has committed offsets for yet is claimed on assignment (its
    beginning committed under the owner's transactional id), so an owner that dies inside its
    very first transaction is named by the offsets, fenced, and the next owner does not
    wait out that transaction (here 5 minutes) before it can read its offsets."""
    setup = _Setup(kafka_bootstrap, unique_name, tmp_path)
    one = BatchProcessor(setup.config("one"), _Copying(setup.output))
    one.start()
    try:
        assert one.ready.wait(60), one.error
    finally:
        one.stop()
    assert one.error is None
    # Nothing was read, but the partition's start is committed, naming "one"'s producer.
    lookup = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": setup.group,
                       "isolation.level": "read_uncommitted"})
    try:
        [claimed] = lookup.committed([TopicPartition(setup.source, 0)], 30)
        # "one" dies inside its first transaction: records out, offsets pending, never ended.
        crashed = setup.crashed("one", 300_000, lookup)
    finally:
        lookup.close()
    assert setup.open_transaction()

    second = _Copying(setup.output)
    two = BatchProcessor(setup.config("two"), second)
    two.start()
    try:
        # Unfenced, "two" would wait in its offset fetch until the broker aborts the
        # transaction, 5 minutes on.
        assert two.ready.wait(60), two.error or "not ready: the crashed transaction held it"
        assert not setup.open_transaction()
        setup.send(RECORDS)
        _run(two, second, RECORDS - 1)
    finally:
        two.stop()
    with pytest.raises(KafkaException, match="fenced"):
        crashed.commit_transaction(30)
    assert second.handled == RECORDS
    assert setup.copied() == _expected(RECORDS)
    assert (claimed.offset, claimed.metadata) == (0, transactional_id(setup.config("one")))


@pytest.mark.integration
def test_a_live_members_producer_is_never_fenced(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    setup = _Setup(kafka_bootstrap, unique_name, tmp_path)
    setup.send(RECORDS)
    handler = _Copying(setup.output)
    one = BatchProcessor(setup.config("one"), handler)
    one.start()
    try:
        _run(one, handler, RECORDS - 1)
        # Another worker's stage asks about the same partition while "one" is in the group.
        assert fence_departed(setup.config("two"), [(setup.source, 0)]) == []
        setup.send(RECORDS)
        _run(one, handler, 2 * RECORDS - 1)
        assert handler.handled == 2 * RECORDS
    finally:
        one.stop()
    assert one.error is None
    # Once "one" has left the group, the same question fences it.
    assert fence_departed(setup.config("two"), [(setup.source, 0)]) == [
        transactional_id(setup.config("one"))]


@pytest.mark.integration
def test_a_fenced_processor_starts_a_new_producer_and_loses_nothing(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    setup = _Setup(kafka_bootstrap, unique_name, tmp_path)
    setup.send(RECORDS)
    handler = _Copying(setup.output)
    one = BatchProcessor(setup.config("one"), handler)
    one.start()
    try:
        _run(one, handler, RECORDS - 1)
        # Another instance with the same transactional id (a restart under the same id that
        # a takeover raced with) fences the running processor's producer.
        other = Producer({"bootstrap.servers": kafka_bootstrap,
                          "transactional.id": transactional_id(setup.config("one"))})
        other.init_transactions(30)
        setup.send(RECORDS)
        _run(one, handler, 2 * RECORDS - 1)
    finally:
        one.stop()
    assert one.error is None
    assert handler.handled > 2 * RECORDS, "the fenced batch was not redone"
    assert setup.copied() == _expected(2 * RECORDS)
