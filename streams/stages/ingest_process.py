"""The ingest stage in a child process of the worker, so that it runs on a core of its own.

Ingest is stateless but for its de-duplication memory, and it is about half of a busy worker's
Python time (decode, validate, route). In the worker process it shares one interpreter lock
with the scoring stage; in a child process the two run in parallel. The child runs the same
`BatchProcessor` and `IngestHandler` as the in-process stage (`SCORESTREAM_INGEST_PROCESS=false`),
with the same transactional guarantees.

Parent and child talk over a pipe. Every `REPORT_INTERVAL_S` the child sends a `Report`: its
ingest counters' totals, the batches it committed, its consumer lag and commit progress, and
its error if the stage died. The parent adds them to the worker's metrics, so `/metrics`, the
stall watchdog and `/readyz` see the child like any other stage.

Stopping: the parent sends "stop"; the child finishes and commits the batch in hand and leaves
the group (as does a SIGTERM sent to the child itself). If the parent dies, kill -9 included,
the pipe closes and the child stops the same way within `REPORT_INTERVAL_S`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from models.ingest.routing import IngestionConfig
from streams.metrics import Metrics
from streams.runtime import collector
from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import ProcessorConfig
from streams.settings import Settings, redact_logs

__all__ = ["RELAYED", "REPORT_INTERVAL_S", "SILENT_AFTER_S", "IngestProcess", "Report", "run_child"]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.25
"""How often the child reports, and how soon it notices that its parent is gone."""

SILENT_AFTER_S = 5.0
"""A child that has not reported for this long counts as stalled since its last report: the
worker's stall watchdog then treats it like a batch that does not commit."""

RELAYED = {"scorestream_events_consumed_total": "events_consumed",
           "scorestream_events_ingested_total": "events_ingested",
           "scorestream_duplicate_events_total": "duplicates",
           "scorestream_dead_letters_total": "dead_letters",
           "scorestream_processing_errors_total": "processing_errors"}
"""The counters the ingest handler counts: sample name -> `Metrics` attribute."""


@dataclass
class Report:
    """What the child tells the parent."""

    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    """Totals since the child started: (sample name, labels) -> value."""
    batches: list[tuple[int, float, float]] = field(default_factory=list)
    """(records, seconds, committing seconds) of each batch committed since the last report."""
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    committing_for: float = 0.0
    committing: str = ""
    ready: bool = False
    error: str | None = None
    done: bool = False


class IngestProcess:
    """The parent's handle on the ingest child: a stage like `BatchProcessor` to the pipeline."""

    def __init__(self, settings: Settings, config: ProcessorConfig, ingestion: IngestionConfig,
                 metrics: Metrics,
                 on_batch: Callable[[int, float, float], None] | None = None) -> None:
        self.settings = settings
        self.config = config
        self.ingestion = ingestion
        self.metrics = metrics
        self.on_batch = on_batch
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.lag: dict[tuple[str, int], int] = {}
        self._committing = ""
        self._committing_for = 0.0
        self._heard_at = time.monotonic()
        self._totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._counters = {sample: getattr(metrics, name) for sample, name in RELAYED.items()}
        self._process: Any = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Spawn the child (a fresh interpreter: forking a process with librdkafka threads
        running is unsafe) and a thread that reads its reports."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=run_child, args=(self.settings, self.config, self.ingestion, child),
            name=f"{self.config.name}-process", daemon=True)
        self._heard_at = time.monotonic()
        self._process.start()
        child.close()
        self._conn = parent
        self._reader = threading.Thread(target=self._read, name=f"{self.config.name}-reports",
                                        daemon=True)
        self._reader.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the child to commit its batch and leave; kill it if it does not within
        `timeout` (its open transaction is then aborted by the broker)."""
        self._stopping = True
        if self._conn is not None:
            with contextlib.suppress(OSError):  # already gone
                self._conn.send("stop")
        if self._process is not None:
            # Longer than the child gives its own stage to stop, so it is not killed while it
            # commits its last batch.
            self._process.join(timeout + 15.0)
            if self._process.is_alive():
                log.error("%s process did not stop within %.0f s; killing it", self.config.name,
                          timeout)
                self._process.kill()
                self._process.join(5)
        if self._reader is not None:
            self._reader.join(5)

    @property
    def alive(self) -> bool:
        """True while the child runs and reports."""
        return (self._process is not None and self._process.is_alive()
                and self._reader is not None and self._reader.is_alive())

    def committing_for(self) -> float:
        """Seconds the child's batch in hand has been committing, as last reported; or, when
        the child has gone silent (hung, or stopped by a signal), seconds since it last spoke."""
        silent = self.silent_for()
        return max(self._committing_for, silent) if silent >= SILENT_AFTER_S else \
            self._committing_for

    @property
    def committing(self) -> str:
        """The child's transactional step in progress, as last reported, or its silence."""
        silent = self.silent_for()
        if silent >= SILENT_AFTER_S:
            return f"no report from the {self.config.name} process for {silent:.0f} s"
        return self._committing

    def silent_for(self) -> float:
        """Seconds since the child last reported (or was started)."""
        return time.monotonic() - self._heard_at

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                report: Report = conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._apply(report)
            except Exception as err:  # the stage must not die silently with its reader
                self.error = err
                log.exception("%s: bad report from the child process", self.config.name)
                break
            if report.done:
                break
        if self.error is None and not self._stopping:
            self.error = RuntimeError(f"the {self.config.name} process exited unexpectedly")

    def _apply(self, report: Report) -> None:
        self._heard_at = time.monotonic()
        for key, total in report.counters.items():
            delta = total - self._totals.get(key, 0.0)
            if delta > 0:
                name, labels = key
                self._counters[name].labels(**dict(labels)).inc(delta)
                self._totals[key] = total
        if self.on_batch is not None:
            for batch in report.batches:
                self.on_batch(*batch)
        self.lag = report.lag
        self._committing_for = report.committing_for
        self._committing = report.committing
        if report.ready:
            self.ready.set()
        if report.error is not None and self.error is None:
            self.error = RuntimeError(f"{self.config.name} process: {report.error}")


def run_child(settings: Settings, config: ProcessorConfig, ingestion: IngestionConfig,
              conn: Connection) -> None:
    """The child's main: run the ingest stage until told to stop or orphaned."""
    from streams.stages.ingest import IngestHandler  # imported here: the child's own interpreter

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent decides
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=settings.log_level.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    redact_logs(settings.secret_values())
    metrics = Metrics()
    batches: list[tuple[int, float, float]] = []
    processor = BatchProcessor(config, IngestHandler(settings, metrics, config=ingestion),
                               on_batch=lambda *batch: batches.append(batch))
    collector.settle()
    processor.start()

    def report(done: bool = False) -> Report:
        totals = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                  for family in metrics.registry.collect() for sample in family.samples
                  if sample.name in RELAYED}
        taken = batches[:]
        del batches[:len(taken)]
        error = processor.error
        return Report(totals, taken, dict(processor.lag), processor.committing_for(),
                      processor.committing, processor.ready.is_set(),
                      None if error is None else repr(error), done)

    try:
        while not stop.is_set() and processor.alive:
            try:
                if conn.poll(REPORT_INTERVAL_S):
                    conn.recv()  # "stop"
                    break
                conn.send(report())
            except (EOFError, OSError):
                break  # the parent is gone: stop cleanly all the same
    finally:
        processor.stop()
        with contextlib.suppress(OSError):
            conn.send(report(done=True))
