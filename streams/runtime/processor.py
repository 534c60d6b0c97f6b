"""A transactional batch processor on confluent-kafka: the engine's hot path.

Faust's per-event stream machinery costs far more CPU per event than the work itself (see
docs/performance.md), so the stages that must keep up with the source topics consume with
confluent-kafka in batches instead, inside the Faust worker process:

1. `consume()` up to `batch_size` records (or what arrives within `batch_within_s`);
2. the stage's `StageHandler` (streams/runtime/stage.py) turns them into table writes and
   output records;
3. one Kafka transaction carries the table changelog writes, the outputs and the consumed
   offsets, so state, outputs and offsets move together (exactly-once within Kafka);
4. once it has committed, the handler's optional `committed()` (what is measured at emit).

Tables (streams/runtime/tables.py) are per-partition stores rebuilt from a compacted changelog
topic co-partitioned with the input: when a partition is assigned, its store is restored from
the changelog before any of its records are processed; when it is revoked, the store is
dropped. After an aborted
transaction every owned store is rebuilt and the consumer rewinds to the committed offsets,
so in-memory state never runs ahead of what Kafka holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streams.runtime.fencing import fence_departed, transactional_id
from streams.runtime.stage import Output, ProcessorConfig, StageHandler, Stopped
from streams.runtime.tables import RESTORE_WAIT_BEYOND_TRANSACTION_S, Table, restore

__all__ = ["BatchProcessor"]

log = logging.getLogger(__name__)

END_ASK_TIMEOUT_S = 1.0
"""How long `_broker_ends` waits for the broker: a partition whose end is not known in time
does not count as caught up (it holds the others back until it answers or idles)."""

END_RETRY_S = 5.0
"""A partition whose end the broker did not give is not asked again for this long."""

_STALE_LEADER = frozenset({KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                           KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})
"""Answers to a question for partition ends after which the next one goes on a new client."""

END_WARN_EVERY_S = 10.0
"""`_broker_ends` logs a failure to learn partition ends at most this often."""

PRODUCER_IDLE_CLOSE_MS = 10_000
"""Transactional producers close connections idle this long (see BatchProcessor._run)."""
PRODUCER_METADATA_MAX_AGE_MS = 3_000
"""... and forget cached coordinators unused this long."""
RENEWALS_ALLOWED = 5
RENEWALS_WINDOW_S = 300.0
"""A stage whose transactional producer had to be replaced more often than this stops."""


class BatchProcessor:
    """Runs one stage in a thread: consume a batch, handle it, commit it in one transaction."""

    def __init__(self, config: ProcessorConfig, handler: StageHandler,
                 on_batch: Callable[[int, float, float], None] | None = None) -> None:
        self.config = config
        self.handler = handler
        self.table = Table(config.name, config.store_url, config.data_dir)
        self.on_batch = on_batch
        if config.changelog_topic is not None and len(config.input_topics) != 1:
            raise ValueError(f"{config.name}: a table needs exactly one (co-partitioned) input")
        self.owned: set[tuple[str, int]] = set()
        self._paused: set[tuple[str, int]] = set()
        """Input partitions paused at the handler's request (resumed when they leave)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self.lag: dict[tuple[str, int], int] = {}
        self._in_transaction = False
        self._lag_checked = 0.0
        self._start: dict[tuple[str, int], int] = {}
        self._end: dict[tuple[str, int], int] = {}
        """Each partition's end offset as the broker last answered it (`_caught_up`): asked
        once it was assigned, since the client's cached end of a partition it had before can
        be far behind, and again when a caught-up partition must be confirmed."""
        self._admin: AdminClient | None = None
        """Asks partition ends of the broker (`_broker_ends`), made at the first question."""
        self._ends_warned = -END_WARN_EVERY_S
        self._unanswered: dict[tuple[str, int], float] = {}
        """Partitions whose end the broker did not give, and until when they are not asked
        again (monotonic seconds)."""
        self._committing_since: float | None = None
        self.committing = ""
        """The transactional step in progress (for the stall report), or ""."""
        self._transactional_id = transactional_id(config)
        self._renewals: list[float] = []
        """When the producer was last replaced (see _renewed)."""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the processing thread."""
        self._thread = threading.Thread(target=self._run, name=f"{self.config.name}-processor",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch, commit it, leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the processing thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def committing_for(self) -> float:
        """Seconds the batch in hand has been committing (0 when not committing): a commit
        that takes minutes means the broker is unreachable or the client is stuck."""
        since = self._committing_since
        return 0.0 if since is None else time.monotonic() - since

    def owns(self, partition: int) -> bool:
        """True when this worker owns (and has restored) that partition of the input."""
        return (self.config.input_topics[0], partition) in self.owned

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        try:
            self._producer = self._new_producer()
            self._consumer = Consumer({
                **cfg.client,
                "group.id": cfg.group_id,
                "client.id": cfg.client_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": (
                    "range" if cfg.co_partitioned else "cooperative-sticky"),
                # A fetch waits (at most fetch.wait.max.ms) for 64 KiB instead of answering as
                # soon as one record is there: less CPU per event for the broker and the
                # ingest process under load, up to 50 ms more per stage at low rates (see
                # docs/performance.md).
                "fetch.wait.max.ms": 50,
                "fetch.min.bytes": 64 * 1024,
                "session.timeout.ms": cfg.session_timeout_ms,
                # A takeover's restore can wait out a crashed owner's open transaction inside
                # the assignment callback (see tables.restore): stay in the group meanwhile.
                "max.poll.interval.ms": max(300_000, cfg.transaction_timeout_ms + int(
                    (RESTORE_WAIT_BEYOND_TRANSACTION_S + 30) * 1000)),
                # A survivor learns of a rebalance at its next heartbeat: once a second, a
                # takeover waits up to 1 s for it instead of 3 (the client default).
                "heartbeat.interval.ms": min(1000, cfg.session_timeout_ms // 3),
                **cfg.consumer_overrides,
            })
            self._consumer.subscribe(list(cfg.input_topics), on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_revoke)
            while not self._stop.is_set():
                self._step()
        except Stopped as err:
            log.info("%s processor stopped: %s", cfg.name, err)
        except BaseException as err:  # the worker must see why processing stopped
            self.error = err
            log.exception("%s processor stopped", cfg.name)
        finally:
            self._close()

    def _new_producer(self) -> Producer:
        """The stage's transactional producer, initialised: this fences any earlier producer
        with the same id and aborts the transaction it left open."""
        cfg = self.config
        producer = Producer({
            **cfg.client,
            # Stable per worker and stage (see streams/runtime/fencing.py).
            "transactional.id": self._transactional_id,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "client.id": cfg.client_id,
            "transaction.timeout.ms": cfg.transaction_timeout_ms,
            # After a broker restart librdkafka can keep the old group coordinator's
            # broker handle, decommissioned, in its coordinator cache, and
            # send_offsets_to_transaction then waits for that handle to come up, past
            # its own timeout (librdkafka issue #5511). The cache forgets an entry
            # unused for metadata.max.age.ms, and the request looks again on broker state
            # changes, which closing idle connections makes happen.
            "connections.max.idle.ms": PRODUCER_IDLE_CLOSE_MS,
            "metadata.max.age.ms": PRODUCER_METADATA_MAX_AGE_MS,
        })
        producer.init_transactions(60)
        return producer

    def _step(self) -> None:
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        messages = consumer.consume(self.config.batch_size, self.config.batch_within_s)
        by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is None:
                by_partition[(msg.topic() or "", msg.partition() or 0)].append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s consumer error: %s", self.config.name, err)
        # Records of partitions revoked during this consume() are neither handled nor committed:
        # their new owner reads them from the committed offset.
        by_partition = {tp: batch for tp, batch in by_partition.items() if tp in self.owned}
        began = time.perf_counter()
        out = Output()
        self.table._out = out
        try:
            if by_partition:
                for tp, batch in by_partition.items():
                    self.handler.handle(tp[1], batch, self.table, out)
            else:
                self.handler.idle(self.table, out)
            self.handler.finish(self.table, out, self._caught_up)
        finally:
            self.table._out = None
        self._flow()
        self._measure_lag()
        positions = self._positions(by_partition)
        if not positions and not out.writes and not out.records:
            out.tally()  # nothing to commit, nothing to take back
            producer.poll(0)
            return
        self._committing_since = time.monotonic()
        committing = time.perf_counter()
        try:
            committed = self._commit(positions, out)
        finally:
            self._committing_since = None
            self.committing = ""
        if committed:
            out.tally()  # counters count committed work only; an aborted batch is redone
            self.handler.committed()  # the batch's outputs are now visible downstream
        if self.on_batch is not None:
            done = time.perf_counter()
            self.on_batch(len(messages), done - began, done - committing)

    def _caught_up(self, confirm: Collection[tuple[str, int]] = ()) -> set[tuple[str, int]]:
        """Owned partitions with nothing left to read (a transaction marker at the end counts
        as nothing): as of the latest fetch responses, and for the partitions in `confirm`,
        as the broker answers now.

        A partition's cached end is only as new as the last fetch response that carried it:
        paused partitions are not fetched, and after a broker outage the partitions come back
        one by one. A stage that lets other partitions run ahead of one because it is caught
        up asks the broker (`confirm`) after those partitions' records were read."""
        consumer = self._consumer
        if consumer is None:
            return set()
        done = set()
        positions = consumer.position([TopicPartition(t, p) for t, p in self.owned])
        unknown = [tp for tp in positions
                   if tp.offset < 0 and (tp.topic, tp.partition) not in self._start]
        if unknown:  # where reading starts, once per assignment (a broker round trip)
            try:
                for tp in consumer.committed(unknown, 5):
                    self._start[(tp.topic, tp.partition)] = max(tp.offset, 0)
            except KafkaException as err:  # not caught up as far as we know; ask again later
                log.warning("%s: committed offsets unavailable (%s)", self.config.name, err)
        ends = self._end
        reached: dict[tuple[str, int], int] = {}
        known: dict[tuple[str, int], int] = {}
        for tp in positions:
            key = (tp.topic, tp.partition)
            if key not in ends:  # once per assignment (a broker round trip)
                marks = None
                try:
                    marks = consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                except KafkaException as err:  # asked once: the cached end serves instead
                    log.warning("%s: end of %s[%d] unavailable (%s)", self.config.name,
                                tp.topic, tp.partition, err)
                ends[key] = marks[1] if marks is not None else -1
            low, cached = consumer.get_watermark_offsets(tp, cached=True)
            # A partition assigned again can keep the end the client cached when it last
            # had it, until a new fetch answers: caught up by that, it would let the others
            # run ahead of records it has not fetched yet.
            high = max(cached, ends[key])
            # Nothing consumed yet: it starts at its committed offset, or at the start.
            offset = tp.offset if tp.offset >= 0 else self._start.get((tp.topic, tp.partition))
            if offset is None or high < 0:
                continue
            # One offset short of the end is a transaction marker, if the client has seen
            # that end; an end only the broker told of may be one more record.
            short = high - max(offset, low)
            if short <= 0 or (short == 1 and ends[key] <= cached):
                done.add(key)
                reached[key], known[key] = max(offset, low), high
        now = time.monotonic()
        unanswered = self._unanswered
        for key in [key for key, until in unanswered.items() if until <= now]:
            del unanswered[key]
        # A partition the broker did not answer for lately is not caught up, and is not asked
        # again until END_RETRY_S has passed: it holds the others back until it idles.
        done.difference_update(unanswered)
        asked = [key for key in confirm if key in done]
        if asked:
            latest = self._broker_ends(asked)
            for key in asked:
                end = latest.get(key, -1)
                if end < 0:
                    unanswered[key] = now + END_RETRY_S
                    done.discard(key)
                    continue
                ends[key] = max(ends[key], end)
                # Past the end the client knows (a marker at the end aside, which the next
                # fetch shows), or more than a marker past what was read: records to read.
                if end > known[key] or end - reached[key] > 1:
                    done.discard(key)
        return done

    def _broker_ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end for a read_committed reader (its last stable offset), asked of
        the broker in one request on a client of its own: the consumer's connection would
        answer only after its pending fetch. Partitions it could not learn are left out."""
        if self._admin is None:
            self._admin = AdminClient({**self.config.client,
                                       "client.id": f"{self.config.client_id}-ends"})
        ends: dict[tuple[str, int], int] = {}
        failed: list[str] = []
        try:
            futures = self._admin.list_offsets(
                {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=END_ASK_TIMEOUT_S)
            for tp, future in futures.items():
                try:
                    ends[(tp.topic, tp.partition)] = future.result().offset
                except KafkaException as err:
                    failed.append(f"{tp.topic}[{tp.partition}]: {err.args[0].str()}")
                    if err.args[0].code() in _STALE_LEADER:
                        # After a broker restart the client was seen asking with a leader
                        # epoch the broker had fenced, again and again: a new client asks
                        # with fresh metadata.
                        self._admin = None
        except KafkaException as err:
            failed.append(err.args[0].str())
        if failed:
            now = time.monotonic()
            if now - self._ends_warned >= END_WARN_EVERY_S:
                self._ends_warned = now
                log.warning("%s: partition ends unavailable (%s); such a partition holds the "
                            "others back until it answers or idles", self.config.name,
                            "; ".join(failed[:4]))
        return ends

    def _flow(self) -> None:
        """Pause and resume input partitions as the handler asks (event-time alignment)."""
        consumer = self._consumer
        if consumer is None:
            return
        pause, resume = self.handler.pause_resume()
        pause = [tp for tp in pause if tp in self.owned]
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
            self._paused.update(pause)
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume if (t, p) in self.owned])
            self._paused.difference_update(resume)

    def _measure_lag(self, every_s: float = 5.0) -> None:
        """Records not yet consumed per owned partition (transaction markers count as one)."""
        consumer = self._consumer
        if consumer is None or time.monotonic() - self._lag_checked < every_s:
            return
        self._lag_checked = time.monotonic()
        owned = [TopicPartition(topic, p) for topic, p in self.owned]
        lag = {}
        for tp in consumer.position(owned):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        self.lag = lag

    def _positions(self, by_partition: dict[tuple[str, int], list[Message]]
                   ) -> dict[tuple[str, int], int]:
        """Offsets to commit: past each batch, or what the handler says it is done with (a
        handler that holds records back commits only up to the first one it holds)."""
        positions = self.handler.positions()
        if positions is not None:
            return {tp: offset for tp, offset in positions.items() if tp in self.owned}
        return {tp: (batch[-1].offset() or 0) + 1 for tp, batch in by_partition.items()}

    def _commit(self, positions: dict[tuple[str, int], int], out: Output) -> bool:
        """One transaction for the batch's writes, outputs and offsets; False when it was
        aborted (and the state rebuilt)."""
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        cfg = self.config
        try:
            self.committing = "begin_transaction"
            producer.begin_transaction()
            self._in_transaction = True
            self.committing = f"producing {len(out.writes) + len(out.records)} records"
            if cfg.changelog_topic is not None:
                for partition, key, value in out.writes:
                    self._produce(cfg.changelog_topic, key, value, partition)
            for topic, out_key, out_value, out_partition in out.records:
                self._produce(topic, out_key, out_value, out_partition)
            # The offsets name the producer that committed them: a later owner fences it if
            # this worker is gone (streams/runtime/fencing.py).
            offsets = [TopicPartition(topic, p, offset, metadata=self._transactional_id)
                       for (topic, p), offset in positions.items()]
            if offsets:
                metadata = consumer.consumer_group_metadata()
                self.committing = "send_offsets_to_transaction"
                _retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, 30))
            self.committing = "commit_transaction"
            _retrying(lambda: producer.commit_transaction(60))
            self._in_transaction = False
            return True
        except KafkaException as err:
            if _unusable(err.args[0]):
                return self._renewed(err)
            if not _abortable(err.args[0]):
                raise
            log.warning("%s: transaction aborted (%s); rebuilding state", cfg.name, err)
            self.committing = "abort_transaction"
            try:
                producer.abort_transaction(60)
            except KafkaException as abort_err:
                # A produce() into a fenced or failed producer raises a plain state error;
                # the abort tells what happened.
                if _unusable(abort_err.args[0]):
                    return self._renewed(abort_err)
                raise
            self._in_transaction = False
            self._committing_since = None  # rebuilding state is not a stuck commit
            self.committing = ""
            self._rewind()
            return False

    def _renewed(self, err: KafkaException) -> bool:
        """The producer cannot go on: another one with this stage's transactional id fenced
        it (a worker that took over partitions thought this one gone: it restarted under the
        same id just then, or was cut off from the group), or the broker failed it (a
        transaction it had timed out while the broker was away). Its open transaction is
        aborted by the broker; start a new producer and rebuild the owned state from what
        Kafka holds, as a restarted stage would. If this worker did lose its partitions, its
        consumer learns so at the next poll, and the broker refuses input offsets committed
        with its old group generation meanwhile.

        Renewed more than `RENEWALS_ALLOWED` times within `RENEWALS_WINDOW_S`, the stage
        stops: two workers with one client id fence each other for ever."""
        now = time.monotonic()
        recent = self._renewals = [t for t in self._renewals if now - t < RENEWALS_WINDOW_S]
        if len(recent) >= RENEWALS_ALLOWED:
            raise RuntimeError(
                f"{self.config.name}: the transactional producer was lost "
                f"{len(recent) + 1} times within {RENEWALS_WINDOW_S:.0f} s, last: {err}. Does "
                f"another worker use the same client id ({self.config.client_id!r}, from "
                f"SCORESTREAM_WEB_URL or the web host and port)?") from err
        recent.append(now)
        log.warning("%s: the transactional producer cannot go on (%s); starting a new one and "
                    "rebuilding state", self.config.name, err)
        old = self._producer
        assert old is not None
        old.purge()  # nothing of it is to be delivered; dropped, it is destroyed
        self._in_transaction = False
        self._committing_since = None
        self.committing = ""
        self._producer = self._new_producer()
        self._rewind()
        return False

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None) -> None:
        producer = self._producer
        assert producer is not None
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value=value, key=key)
                else:
                    producer.produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:
                producer.poll(0.05)

    def _rewind(self) -> None:
        """After an abort: rebuild every owned store and seek back to committed offsets.

        An abort often means the broker is unreachable, and then so is the changelog: retry
        (the stores stay dropped meanwhile) until it answers or the stage is stopped."""
        consumer = self._consumer
        assert consumer is not None
        owned = sorted(self.owned)
        delay = 0.5
        while True:
            for topic, partition in owned:
                self._drop(topic, partition)
            try:
                # Offsets first, as on assignment (see _on_assign); _committed retries on
                # per-partition errors rather than reading them as "start from the beginning".
                starts = self._committed([TopicPartition(t, p) for t, p in owned])
                self._restore(owned)
                break
            except KafkaException as err:
                if self._stop.is_set():
                    raise
                log.warning("%s: rebuilding state after an abort failed (%s); retrying in "
                            "%.1f s", self.config.name, err, delay)
                delay = self._back_off(delay)
        for tp in starts:
            consumer.seek(tp)

    # -- rebalancing -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = [(tp.topic, tp.partition) for tp in partitions]
        log.info("%s: assigned %s; restoring state", self.config.name, wanted)
        began = time.perf_counter()
        # A crashed predecessor's open transaction would hold the offset fetch and the
        # restore below until the broker times it out: fence it first.
        fence_departed(self.config, wanted)
        # Where reading starts is fetched here and assigned explicitly. Left to librdkafka,
        # a partition taken over from a killed worker whose transaction was still pending once
        # started at auto.offset.reset (the beginning) instead of the committed offset, while
        # its state was restored as committed: 41 customers got events applied twice. The
        # fetch waits until no transaction is pending on the offsets, and comes before the
        # restore, so the state restored is never older than the offsets.
        starts = self._committed(partitions)
        self._claim([tp for tp in starts if tp.offset == OFFSET_BEGINNING])
        self._restore(wanted)
        if starts:
            if self.config.co_partitioned:  # eager: the whole assignment, every time
                consumer.assign(starts)
            else:
                consumer.incremental_assign(starts)
        log.info("%s: restored %d keys for partitions %s in %.2fs", self.config.name,
                 len(self.table), wanted, time.perf_counter() - began)
        # Ready once the group has given this consumer its share (possibly none) and its state
        # is restored: what /readyz reports.
        self.ready.set()

    def _claim(self, unclaimed: list[TopicPartition]) -> None:
        """Commit the start of partitions that no transaction has committed offsets for yet,
        naming this stage's producer, before any batch of them.

        A fence finds a crashed owner's producer by the committed offsets' metadata
        (streams/runtime/fencing.py). Without a claim, a worker killed inside its first
        transaction on a partition would be named nowhere: the next owner could not fence
        it, and its offset fetch and restore would wait out the transaction timeout. The
        claim commits each partition's beginning, where reading starts anyway, so it never
        runs ahead of processed state. A failed claim is logged: only a takeover after a
        crash in the first transaction waits longer."""
        consumer, producer = self._consumer, self._producer
        if not unclaimed or consumer is None or producer is None:
            return
        cfg = self.config
        try:
            offsets = []
            for tp in unclaimed:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=10)
                if marks is None:
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                                    "the partition's beginning is unknown"))
                offsets.append(TopicPartition(tp.topic, tp.partition, max(marks[0], 0),
                                              metadata=self._transactional_id))
            self.committing = "claiming partitions"
            self._committing_since = time.monotonic()
            producer.begin_transaction()
            self._in_transaction = True
            metadata = consumer.consumer_group_metadata()
            _retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, 30))
            _retrying(lambda: producer.commit_transaction(60))
            self._in_transaction = False
        except KafkaException as err:
            log.warning("%s: could not claim %s (%s); a takeover after a crash inside their "
                        "first transaction waits for the transaction timeout", cfg.name,
                        [(tp.topic, tp.partition) for tp in unclaimed], err)
            if self._in_transaction:
                self._end_claim(err.args[0])
        finally:
            self.committing = ""
            self._committing_since = None

    def _end_claim(self, error: KafkaError) -> None:
        """End a failed claim's transaction: abort it, or, when the producer cannot go on or
        the abort fails, start a new producer (which fences the old one, and the broker
        aborts its transaction). A claim writes no state: nothing to rebuild."""
        producer = self._producer
        assert producer is not None
        if not _unusable(error):
            try:
                producer.abort_transaction(60)
                self._in_transaction = False
                return
            except KafkaException as abort_err:
                log.warning("%s: aborting the claim failed too (%s); starting a new producer",
                            self.config.name, abort_err)
        producer.purge()
        self._in_transaction = False
        self._producer = self._new_producer()

    def _committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The committed offsets of `partitions` (their beginning where none is), asked until
        the group coordinator answers for every one of them."""
        consumer = self._consumer
        assert consumer is not None
        if not partitions:
            return []
        delay = 0.5
        while True:
            try:
                found = consumer.committed(
                    [TopicPartition(tp.topic, tp.partition) for tp in partitions], 30)
                failed = [tp for tp in found if tp.error is not None]
                if not failed:
                    return [TopicPartition(tp.topic, tp.partition,
                                           tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                            for tp in found]
                problem = f"{failed[0].error} for {len(failed)} partitions"
            except KafkaException as err:
                problem = str(err)
            if self._stop.is_set():
                raise Stopped(f"{self.config.name}: committed offsets unavailable: "
                              f"{problem}")
            log.warning("%s: committed offsets unavailable (%s); asking again in %.1f s",
                        self.config.name, problem, delay)
            delay = self._back_off(delay)

    def _back_off(self, delay: float) -> float:
        """Wait `delay` seconds before asking the broker again (at once on stop); the next
        wait is twice as long, up to 10 s."""
        self._stop.wait(delay)
        return min(delay * 2, 10.0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._drop(tp.topic, tp.partition)
        log.info("%s: revoked %s", self.config.name,
                 [(tp.topic, tp.partition) for tp in partitions])

    def _drop(self, topic: str, partition: int) -> None:
        self.owned.discard((topic, partition))
        if (topic, partition) in self.lag:  # a new dict: scrapes read the old one meanwhile
            self.lag = {tp: n for tp, n in self.lag.items() if tp != (topic, partition)}
        self._start.pop((topic, partition), None)
        self._end.pop((topic, partition), None)
        self._unanswered.pop((topic, partition), None)
        self.handler.release_input(topic, partition)
        if (topic, partition) in self._paused:
            self._paused.discard((topic, partition))
            # A pause outlives the handler's memory of it (and librdkafka keeps it across a
            # re-assignment): resume, or the partition would never be read again.
            if self._consumer is not None:
                # (not assigned any more, or the consumer is closed: nothing to resume)
                with contextlib.suppress(KafkaException, RuntimeError):
                    self._consumer.resume([TopicPartition(topic, partition)])
        store = self.table.stores.pop(partition, None)
        if store is not None:
            store.close()
        self.handler.on_revoked(partition)

    def _restore(self, wanted: list[tuple[str, int]]) -> None:
        """Fill each partition's store from its changelog, then hand the partitions over."""
        cfg = self.config
        partitions = [p for _topic, p in wanted]
        if cfg.changelog_topic is None or not partitions:
            self.owned.update(wanted)
            for p in partitions:
                self.handler.on_assigned(p, self.table)
            self.handler.pace_inputs(wanted)
            return
        self.table.stores.update(restore(cfg, partitions, self._stop))
        self.owned.update(wanted)
        for p in partitions:
            self.handler.on_assigned(p, self.table)

    def _close(self) -> None:
        if self._producer is not None and self._in_transaction:
            try:
                self._producer.abort_transaction(30)
            except KafkaException as err:
                log.warning("%s: aborting the open transaction: %s", self.config.name, err)
        if self._consumer is not None:
            try:
                self._consumer.close()
            except KafkaException as err:
                log.warning("%s: closing consumer: %s", self.config.name, err)
        if self._producer is not None:
            try:
                self._producer.flush(30)
            except KafkaException as err:  # a failed producer has nothing left to deliver
                log.warning("%s: flushing the producer: %s", self.config.name, err)
        for topic, partition in list(self.owned):
            self._drop(topic, partition)


def _unusable(error: KafkaError) -> bool:
    """The producer cannot be used any more: it was fenced by a newer one with the same
    transactional id, or failed fatally (a produce() into such a producer raises `_FATAL`
    without the fatal flag)."""
    return error.fatal() or error.code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FATAL)


def _abortable(error: KafkaError) -> bool:
    """The transaction failed and can be aborted and redone. A `produce()` into a transaction
    that already failed (its records timed out, or the broker bumped the epoch after a
    restart: "skipped sequence numbers") raises a plain state error instead of the failure
    itself; the abort clears both."""
    return not error.fatal() and (error.txn_requires_abort()
                                  or error.code() == KafkaError._STATE)


def _retrying(call: Callable[[], object], attempts: int = 5) -> None:
    """Run a transactional producer call, repeating it on retriable errors (librdkafka allows
    calling send_offsets_to_transaction and commit_transaction again after those)."""
    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as err:
            if not err.args[0].retriable() or attempt == attempts - 1:
                raise
            log.warning("transactional call failed (%s); retrying", err)
            time.sleep(0.5 * (attempt + 1))
