"""Counters count committed work only: a batch whose transaction aborts is read and handled
again, and must not be counted twice.

A real `BatchProcessor` on the real broker; its handler counts every record it handles on a
Prometheus counter through `Output.count`, and sends the first batch's output to a topic whose
broker-side size limit refuses it, so that transaction aborts (an abortable error, as a full
or unavailable partition gives). The processor rebuilds its state, reads the batch again and
commits it: the counter must equal the records once, while the handler saw them twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry, Counter

from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import Output, ProcessorConfig, StageHandler
from streams.runtime.tables import Table

RECORDS = 50


class _Counting(StageHandler):
    """Counts each record on `counter`; the first batch also sends one record too large for
    `refusing`, which aborts its transaction."""

    def __init__(self, counter: Counter, refusing: str, output: str) -> None:
        self.counter = counter
        self.refusing = refusing
        self.output = output
        self.handled = 0
        self.spoiled = False
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
        out.count(self.counter, len(messages))
        for msg in messages:
            out.send(self.output, msg.key(), msg.value())
        if not self.spoiled:
            self.spoiled = True
            out.send(self.refusing, b"k", os.urandom(4096))  # incompressible


def test_a_batch_whose_transaction_aborted_is_counted_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    source, output, refusing = (f"{unique_name}-{t}" for t in ("in", "out", "small"))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = [NewTopic(source, 1, 1), NewTopic(output, 1, 1),
              NewTopic(refusing, 1, 1, config={"max.message.bytes": "1024"})]
    for future in admin.create_topics(topics).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for n in range(RECORDS):
        producer.produce(source, key=f"k{n}".encode(), value=f"v{n}".encode())
    assert producer.flush(30) == 0

    counter = Counter("handled_records", "records handled", registry=CollectorRegistry())
    handler = _Counting(counter, refusing, output)
    processor = BatchProcessor(
        ProcessorConfig(name="counts", group_id=f"{unique_name}-g", input_topics=(source,),
                        changelog_topic=None, client={"bootstrap.servers": kafka_bootstrap},
                        data_dir=tmp_path, batch_size=RECORDS * 2, batch_within_s=1.0),
        handler)
    processor.start()
    try:
        deadline = time.monotonic() + 90
        while handler.last_committed < RECORDS - 1:
            assert processor.error is None, processor.error
            assert time.monotonic() < deadline, "the batch was never committed"
            time.sleep(0.2)
    finally:
        processor.stop()
    assert handler.spoiled
    assert handler.handled > RECORDS, "the first transaction did not abort"
    assert counter._value.get() == RECORDS
