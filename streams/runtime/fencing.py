"""Fencing a departed owner's transactional producer, so a takeover does not wait for the
broker to time out the transaction a crashed worker left open.

Each stage's producer has a transactional id of its own worker (`transactional_id`), and each
transaction commits the input offsets with that id as their metadata; a partition that has
no committed offsets yet is claimed on assignment (`BatchProcessor._claim`: its beginning
committed under that id) before any batch of it. When partitions are assigned, their committed
offsets therefore name the producer that last processed them. If
that producer's worker has left the stage's consumer group (it crashed, or was cut off as a
zombie), `fence_departed` starts a producer with the same transactional id: the broker bumps
its epoch and aborts the transaction it had open at once, instead of after
`transaction.timeout.ms` (plus up to the broker's 10 s abort check). Until that abort, the
committed-offset fetch, the changelog restore and every read_committed reader of the
partitions it wrote to would wait.

A producer of a worker that is still in the group is never fenced: a partition moved from a
live worker in a rebalance had its transaction committed before it was given up. A live
worker that restarted under the same id and is fenced by a race (it came back just after the
check), or that was cut off from the group for a session, starts a new producer and rebuilds
its state (BatchProcessor._renewed); its consumer group generation, checked by the broker on
every offset commit, keeps a true zombie from committing input offsets (a transaction without
offsets, such as an idle tick, is not checked).

This is Kafka Streams' exactly-once "alpha" idea (a new owner fences the old one at once)
without a producer per input partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.runtime.stage import ProcessorConfig

__all__ = ["fence_departed", "transactional_id"]

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 10.0
"""How long one broker question of the fencing may take before the takeover goes on without
it (and waits for the transaction timeout, as it would unfenced)."""


def transactional_id(cfg: ProcessorConfig) -> str:
    """A stage's transactional id on this worker: stable across restarts, so a restarted
    worker fences its own predecessor too."""
    return f"{_prefix(cfg)}{cfg.client_id}"


def _prefix(cfg: ProcessorConfig) -> str:
    return f"{cfg.group_id}-{cfg.name}-"


def fence_departed(cfg: ProcessorConfig, partitions: Iterable[tuple[str, int]]) -> list[str]:
    """Fence the producers that last committed `partitions` if their workers are no longer in
    the group; returns the transactional ids fenced. Failures are logged, never raised: without
    the fence a takeover only waits longer."""
    own = transactional_id(cfg)
    began = time.perf_counter()
    try:
        previous = _last_committers(cfg, partitions) - {own}
        if not previous:
            return []
        members = _member_client_ids(cfg)
    except Exception as err:  # a takeover must go on without the fence
        log.warning("%s: could not tell who last owned %s (%s); a transaction it left open "
                    "is aborted by the broker's timeout", cfg.name, sorted(partitions), err)
        return []
    prefix = _prefix(cfg)
    departed = sorted(tid for tid in previous if tid[len(prefix):] not in members)
    fenced = []
    for tid in departed:
        try:
            producer = Producer({**cfg.client, "transactional.id": tid,
                                 "transaction.timeout.ms": cfg.transaction_timeout_ms})
            producer.init_transactions(LOOKUP_TIMEOUT_S * 3)
            fenced.append(tid)
        except Exception as err:  # as above
            log.warning("%s: fencing %s failed (%s); a transaction it left open is aborted by "
                        "the broker's timeout", cfg.name, tid, err)
    if fenced:
        log.info("%s: fenced %s, which last committed these partitions and has left the "
                 "group: any transaction it left open is aborted (%.2fs)", cfg.name,
                 ", ".join(fenced), time.perf_counter() - began)
    return fenced


def _last_committers(cfg: ProcessorConfig, partitions: Iterable[tuple[str, int]]) -> set[str]:
    """The transactional ids named by the committed offsets of `partitions` (this stage's
    own ids only). Asked as a read_uncommitted client: it answers with the last committed
    offsets at once, where a read_committed one waits for a pending transaction to end."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return set()
    lookup = Consumer({**cfg.client, "group.id": cfg.group_id, "client.id": cfg.client_id,
                       "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        found = lookup.committed(wanted, LOOKUP_TIMEOUT_S)
    finally:
        lookup.close()
    prefix = _prefix(cfg)
    return {tp.metadata for tp in found
            if tp.error is None and tp.metadata and tp.metadata.startswith(prefix)}


def _member_client_ids(cfg: ProcessorConfig) -> set[str]:
    """The client ids of the stage's consumer group's members (each a worker's client id)."""
    admin = AdminClient(dict(cfg.client))
    future = admin.describe_consumer_groups([cfg.group_id],
                                            request_timeout=LOOKUP_TIMEOUT_S)[cfg.group_id]
    return {member.client_id for member in future.result(LOOKUP_TIMEOUT_S).members}
