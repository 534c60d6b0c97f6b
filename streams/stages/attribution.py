"""The attribution reader: totals of the attributions topic, for the API and the gauges.

The scoring stage writes one record per conversion to the attributions topic inside its
transactions. Every worker runs one `AttributionReader`, a background thread that reads the
whole topic (every partition, `read_committed`, from its start) and folds each record into
`AttributionTotals`, so any worker answers `GET /attribution` for all customers, with no
request to the others. What survives a restart is what the topic still holds: a new reader
reads it again from its start (`SCORESTREAM_ATTRIBUTION_RETENTION_DAYS` bounds how far back).
Aborted transactions are never read, so a crash neither repeats nor loses a record here.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from models.attribution.totals import AttributionTotals

__all__ = ["AttributionReader"]

log = logging.getLogger(__name__)


class AttributionReader:
    """Folds the attributions topic into `AttributionTotals` (a background thread)."""

    def __init__(self, client: dict[str, Any], topic: str, group_id: str) -> None:
        self.client = client
        self.topic = topic
        self.group_id = group_id
        self.totals = AttributionTotals()
        self.skipped = 0
        """Records that could not be read as attributions (logged)."""
        self._lock = threading.Lock()
        """Held while a record is folded in and while the web thread reads the totals."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._behind: set[int] | None = None
        """Partitions not yet read to their end once (None: not assigned yet)."""

    def start(self) -> None:
        """Start reading the topic from its start."""
        self._thread = threading.Thread(target=self._run, name="attribution-reader",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the reader thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def caught_up(self) -> bool:
        """Whether every partition has been read to its end at least once (the totals then
        include every record committed before the reader started)."""
        return self._behind is not None and not self._behind

    def offer(self, value: bytes | None, where: str = "") -> bool:
        """Fold one record of the topic in; False (and logged) for one that is not an
        attribution."""
        if value is None:
            return False
        try:
            record = orjson.loads(value)
            with self._lock:
                self.totals.add(record)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            self.skipped += 1
            log.warning("attribution reader: skipping a record that is not an attribution "
                        "%s: %s", where, err)
            return False
        return True

    def report(self, model: str | None = None, first_day: int | None = None,
               last_day: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """`AttributionTotals.report`, read safely from another thread."""
        with self._lock:
            return self.totals.report(model, first_day, last_day, limit)

    def by_channel(self, top: int) -> list[tuple[str, str, float, float]]:
        """`AttributionTotals.by_channel`, read safely from another thread."""
        with self._lock:
            return self.totals.by_channel(top)

    def _run(self) -> None:
        consumer = Consumer({**self.client, "group.id": self.group_id,
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "enable.partition.eof": True})
        try:
            partitions = self._partitions(consumer)
            if partitions is None:
                return
            self._behind = set(partitions)
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                             for p in partitions])
            while not self._stop.is_set():
                for msg in consumer.consume(1000, 0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self._behind.discard(msg.partition() or 0)
                        else:
                            log.warning("attribution reader: %s", err)
                        continue
                    self.offer(msg.value(), f"at {msg.partition()}@{msg.offset()}")
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions, once its metadata is known (None: asked to stop)."""
        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(self.topic, timeout=5.0).topics.get(self.topic)
            except KafkaException as err:
                log.warning("attribution reader: cannot read the metadata of %s: %s",
                            self.topic, err)
                continue
            if metadata is not None and metadata.error is None and metadata.partitions:
                return sorted(metadata.partitions)
            self._stop.wait(1.0)
        return None
