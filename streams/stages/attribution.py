"""The attribution reader: totals of the attributions topic, for the API and the gauges.

The scoring stage writes one record per conversion to the attributions topic inside its
transactions. Every worker runs one `AttributionReader`, a background thread that reads the
whole topic (every partition, `read_committed`, from its start) and folds each record into
`AttributionTotals`, so any worker answers `GET /attribution` for all customers, with no
request to the others. What survives a restart is what the topic still holds: a new reader
reads it again from its start (`SCORESTREAM_ATTRIBUTION_RETENTION_DAYS` bounds how far back).
Aborted transactions are never read, so a crash neither repeats nor loses a record here.

The reader also folds every closed journey (a conversion's path, a null path) and funnel
goal into `JourneyTotals` (the Markov chain's transition counts, the Sankey paths, the
funnel). Now and then (every `refit_paths` new closed paths, or `refit_s` seconds after the
first one not yet in the model), it fits the data-driven model on the counts
(`models.attribution.markov.fit`, exact solves, intervals from posterior draws) in its own
thread and hands it to `on_model` (the scoring engine's reference swap), so conversions
scored afterwards are credited by it. Every worker reads the same committed records; once
caught up, every worker has the same counts and fits the same model. Until then, which
records a model rests on depends on how far the reader has read each partition: the model's
`version` names its counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from models.attribution.markov import (
    DRAWS,
    LEVEL,
    MAX_CHANNELS,
    DataDrivenModel,
    TransitionCounts,
    fit,
)
from models.attribution.paths import MAX_STEPS, JourneyTotals
from models.attribution.totals import AttributionTotals

__all__ = ["FIT_SPACING", "AttributionReader"]

FIT_SPACING = 50.0
"""A fit is due at the soonest this many times the last fit's duration after it: a fit holds
the interpreter, and so stalls the scoring thread beside it, at most a fiftieth of the
time."""

log = logging.getLogger(__name__)


class AttributionReader:
    """Folds the attributions topic into `AttributionTotals` (a background thread)."""

    def __init__(self, client: dict[str, Any], topic: str, group_id: str, *,
                 funnel: tuple[str, ...] = (), max_steps: int = MAX_STEPS,
                 refit_paths: int = 100, refit_s: float = 10.0, draws: int = DRAWS,
                 level: float = LEVEL, max_channels: int = MAX_CHANNELS,
                 on_model: Callable[[DataDrivenModel], None] | None = None) -> None:
        self.client = client
        self.topic = topic
        self.group_id = group_id
        self.totals = AttributionTotals()
        self.journeys = JourneyTotals(max_steps, funnel)
        self.model: DataDrivenModel | None = None
        """The last data-driven model fitted (None: no closed path yet)."""
        self.refit_paths = refit_paths
        self.refit_s = refit_s
        self.fit_options = {"draws": draws, "level": level, "max_channels": max_channels}
        self.on_model = on_model
        self.fit_seconds = 0.0
        """How long the last fit took."""
        self._unfitted = 0
        """Closed paths read since the last fit."""
        self._unfitted_since = 0.0
        """Monotonic time of the first of them."""
        self._fitted_at = 0.0
        """Monotonic time the last fit ended."""
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
            if not isinstance(record, dict):
                raise TypeError("not an object")
            kind = record.get("kind", "conversion")
            with self._lock:
                self.journeys.check(record)  # all or nothing: both refuse before counting
                if kind == "conversion":
                    self.totals.add(record)
                closed = self.journeys.add(record)
            if closed:
                if not self._unfitted:
                    self._unfitted_since = time.monotonic()
                self._unfitted += 1
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

    def journeys_report(self, top: int) -> dict[str, Any]:
        """The closed journeys (Sankey nodes and links with the `top` channels per step)
        and the funnel, read safely from another thread."""
        with self._lock:
            j = self.journeys
            counts = j.counts
            return {"closed": {"paths": counts.paths, "converted": counts.conversions,
                               "null": counts.paths - counts.conversions,
                               "conversions_without_path": j.without_path,
                               "conversions_before_paths": j.unpathed},
                    "sankey": j.paths.report(top), "funnel": j.funnel.report()}

    def refit(self, force: bool = False) -> DataDrivenModel | None:
        """Fit the data-driven model on the counts when it is due (every `refit_paths`
        closed paths, or `refit_s` after the first one not in the model) or `force`d, and
        hand it to `on_model`; the new model, or None when none was fitted.

        A fit costs a good part of a second with the default draws (and holds the
        interpreter meanwhile), so it is never due while the reader still catches up with
        the topic (one fit once it has), nor sooner after the last one than `FIT_SPACING`
        times that fit's duration: fitting takes at most about a fiftieth of the reader's time
        (and of the scoring thread's, which waits for the interpreter meanwhile) however
        fast paths close."""
        now = time.monotonic()
        if not self._unfitted or not (
                force or self._unfitted >= self.refit_paths
                or now - self._unfitted_since >= self.refit_s):
            return None
        if not force and (self._behind
                          or now - self._fitted_at < FIT_SPACING * self.fit_seconds):
            return None
        with self._lock:
            counts = TransitionCounts.from_dict(self.journeys.counts.to_dict())
        started = time.monotonic()
        model = fit(counts, **self.fit_options)  # type: ignore[arg-type]
        self._fitted_at = time.monotonic()
        self.fit_seconds = self._fitted_at - started
        self._unfitted = 0
        self.model = model
        if self.on_model is not None:
            self.on_model(model)
        return model

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
                self.refit()
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
