"""Changelog-backed tables: one store per owned partition, restored from a compacted topic.

A table's writes go to its store at once and to its changelog topic (co-partitioned with the
stage's input) inside the batch's transaction. When a partition is assigned, `restore` fills
a fresh store from the changelog, from the start to the end, before any of the partition's
records are handled; when it is revoked, the store is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.runtime.stage import Output, ProcessorConfig, Stopped
from streams.runtime.stores import Store, open_store

__all__ = ["Table", "restore"]

log = logging.getLogger(__name__)

RESTORE_POLL_S = 0.1
"""Longest wait of one read of a restore: a read returns early only with 10,000 records."""
RESTORE_WAIT_LOG_S = 10.0
"""A restore still waiting for its changelog's end says so this often."""
RESTORE_WAIT_BEYOND_TRANSACTION_S = 60.0
"""A restore gives up (the stage fails, loudly) when an open transaction holds its changelog
back this much longer than the transaction timeout, after which the broker aborts one."""


class Table:
    """A changelog-backed key/value table, one store per owned partition."""

    def __init__(self, name: str, store_url: str, data_dir: Path) -> None:
        self.name = name
        self.store_url = store_url
        self.data_dir = data_dir
        self.stores: dict[int, Store] = {}
        self._out: Output | None = None

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of key in an owned partition (None when absent)."""
        return self.stores[partition].get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Write in the store now and in the changelog with this batch's transaction."""
        self.stores[partition].put(key, value)
        if self._out is not None:
            self._out.writes.append((partition, key, value))

    def delete(self, partition: int, key: bytes) -> None:
        """Delete (a tombstone on the changelog, so compaction forgets the key too)."""
        self.stores[partition].delete(key)
        if self._out is not None:
            self._out.writes.append((partition, key, None))

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value of one owned partition."""
        return self.stores[partition].items()

    def __len__(self) -> int:
        # A copy: the web thread counts while the processing thread may add or drop stores.
        return sum(len(store) for store in list(self.stores.values()))


def restore(cfg: ProcessorConfig, partitions: list[int], stop: threading.Event
            ) -> dict[int, Store]:
    """Fresh stores of `partitions`, each filled from its changelog from the start to the end
    (the caller puts them in place complete: the web thread reads the stores, and a
    half-restored one would answer "unknown customer" or an old state). Raises `Stopped`
    when `stop` is set meanwhile."""
    assert cfg.changelog_topic is not None
    # Filled aside and put in place complete: the web thread reads the stores, and a
    # half-restored one would answer "unknown customer" or an old state.
    ends = _changelog_ends(cfg, cfg.changelog_topic, partitions)
    stores = {p: open_store(cfg.store_url, cfg.data_dir, cfg.name, p) for p in partitions}
    reader = Consumer({**cfg.client, "group.id": f"{cfg.group_id}-restore",
                       "enable.auto.commit": False, "isolation.level": "read_committed",
                       "enable.partition.eof": True,
                       # The end of a partition is known only once a fetch comes back empty:
                       # a short fetch wait, and short consume calls, end a small restore in
                       # a tenth of a second instead of a second or two.
                       "fetch.wait.max.ms": 50})
    try:
        reader.assign([TopicPartition(cfg.changelog_topic, p, OFFSET_BEGINNING)
                       for p in ends])
        began = told = time.monotonic()
        give_up = began + cfg.transaction_timeout_ms / 1000 + RESTORE_WAIT_BEYOND_TRANSACTION_S
        stalled: dict[int, int] = {}  # partition -> last stable offset, short of its end
        while ends:
            if stop.is_set():
                raise Stopped(f"{cfg.name}: stopped while restoring {sorted(ends)}")
            if time.monotonic() > give_up and _waiting(stalled, ends):
                raise RuntimeError(
                    f"{cfg.name}: changelog {cfg.changelog_topic} partitions (last stable "
                    f"offset, end) {_waiting(stalled, ends)} held back by an open "
                    f"transaction for {time.monotonic() - began:.0f} s, longer than any "
                    f"transaction may last")
            for msg in reader.consume(10_000, RESTORE_POLL_S):
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    # read_committed reaches "the end" at the last stable offset. A
                    # transaction a crashed owner left open on the changelog (until the
                    # broker aborts it) hides every record committed after it, such as
                    # the next owner's: only the high watermark read above is the end.
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (msg.offset() or 0) >= ends.get(p, 0):
                            ends.pop(p, None)
                        elif p in ends:
                            stalled[p] = msg.offset() or 0
                    else:
                        log.warning("%s: restoring %s: %s", cfg.name, cfg.changelog_topic,
                                    err)
                    continue
                stalled.pop(p, None)
                key, value = msg.key(), msg.value()
                if key is not None:
                    if value is None:
                        stores[p].delete(key)
                    else:
                        stores[p].put(key, value)
                if (msg.offset() or 0) + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
            waiting = _waiting(stalled, ends)
            if waiting and time.monotonic() - told >= RESTORE_WAIT_LOG_S:
                told = time.monotonic()
                log.warning("%s: restoring %s for %.0f s: partitions (last stable offset, "
                            "end) %s wait for an open transaction to end (one a crashed "
                            "owner left is aborted by the broker after its "
                            "transaction.timeout.ms)",
                            cfg.name, cfg.changelog_topic, told - began, waiting)
    except BaseException:
        for store in stores.values():
            store.close()
        raise
    finally:
        reader.close()
    return stores


def _changelog_ends(cfg: ProcessorConfig, topic: str, partitions: list[int]
                    ) -> dict[int, int]:
    """Each non-empty changelog partition's high watermark. Only a read_uncommitted client
    is told it: to a read_committed one the end is the last stable offset, which an open
    transaction holds back (see `restore`)."""
    ruler = Consumer({**cfg.client, "group.id": f"{cfg.group_id}-restore",
                      "isolation.level": "read_uncommitted"})
    try:
        ends = {}
        for p in partitions:
            low, high = ruler.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        return ends
    finally:
        ruler.close()

def _waiting(stalled: dict[int, int], ends: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Partitions read to a last stable offset short of their end: (that offset, end)."""
    return {p: (lso, ends[p]) for p, lso in sorted(stalled.items()) if p in ends}
