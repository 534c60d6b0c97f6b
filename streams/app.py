"""The Faust application: built from Settings by a factory, never as module-level state.

`create_app(settings)` returns a ready app with its topics, stages and web views registered, so
the CLI, the tests and a second worker in the same process each get their own instance.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import faust

from streams.metrics import Metrics
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.runtime.pipeline import ScoringPipeline

__all__ = ["COMMIT_SLOW_S", "COMMIT_STUCK_S", "CommitStalls", "create_app"]

log = logging.getLogger(__name__)

COMMIT_SLOW_S = 60.0
"""A batch stage still committing after this long is reported (every COMMIT_SLOW_S)."""
COMMIT_STUCK_S = 300.0
"""... and after this long (librdkafka's max.poll.interval.ms: the group has already moved
its partitions to other workers) the worker stops, so that its supervisor restarts it."""


def create_app(settings: Settings) -> faust.App:
    """Build the scorestream Faust app for these settings."""
    from streams.runtime.kafka import faust_credentials
    from streams.web import api_guard

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_host=settings.web.host,
        web_port=settings.web.port,
        web_canonical_url=settings.canonical_url,
        web_enabled=True,
        # Read-only API, optional bearer token: a middleware sees every request first.
        web_application_options={"middlewares": [api_guard(settings.api_token.reveal())]},
        # Faust's own pages (table contents, routing, stats) are not part of our API.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        producer_compression_type="lz4",
        broker_session_timeout=settings.group_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.group_session_timeout_s / 3),
    )
    # Imported here so that the stages' modules see a fully configured app.
    from streams.runtime.pipeline import ScoringPipeline
    from streams.web import install_server_limits, register_views

    metrics = Metrics()
    pipeline = ScoringPipeline(settings, metrics=metrics)
    register_views(app, settings, pipeline, metrics)
    # Header-read and keep-alive timeouts, and error pages that never quote the request.
    install_server_limits(app, settings)
    _manage(app, pipeline)
    return app


class CommitStalls:
    """Decides what to say about a batch stage whose commit takes long: an error every
    COMMIT_SLOW_S, and a critical one (stop the worker) at COMMIT_STUCK_S."""

    def __init__(self, slow_s: float = COMMIT_SLOW_S, stuck_s: float = COMMIT_STUCK_S) -> None:
        self.slow_s = slow_s
        self.stuck_s = stuck_s
        self._reported: dict[str, float] = {}

    def check(self, stage: str, committing_s: float, step: str = "") -> tuple[int, str] | None:
        """(log level, message) when there is something to say about `stage`, which has been
        committing its batch for `committing_s` seconds (0 when it is not committing), now
        at transactional `step`."""
        if committing_s == 0.0:
            self._reported.pop(stage, None)
            return None
        if committing_s >= self.stuck_s:
            return logging.CRITICAL, (
                f"stage {stage} has been committing one batch for {committing_s:.0f} s "
                f"({step or 'no step'}); its consumer has left the group; stopping the worker")
        if committing_s >= self._reported.get(stage, 0.0) + self.slow_s:
            self._reported[stage] = committing_s
            return logging.ERROR, (
                f"stage {stage} has been committing one batch for {committing_s:.0f} s "
                f"({step or 'no step'}): is the broker reachable? (the worker stops at "
                f"{self.stuck_s:.0f} s)")
        return None


def _manage(app: faust.App, pipeline: ScoringPipeline) -> None:
    """Start the scoring pipeline with the worker, stop it first on shutdown, and take the
    worker down loudly if a stage dies or hangs (a silently dead stage would stop scoring
    unnoticed)."""
    stalls = CommitStalls()

    @app.task
    async def start_pipeline() -> None:
        pipeline.start()

    @app.timer(interval=2.0)
    async def watch_pipeline() -> None:
        for stage in pipeline.stages:
            if stage.error is not None:
                log.critical("stage %s failed: %r; stopping the worker", stage.config.name,
                             stage.error)
                await app.crash(stage.error)
            verdict = stalls.check(stage.config.name, stage.committing_for(), stage.committing)
            if verdict is not None:
                level, message = verdict
                log.log(level, message)
                if level == logging.CRITICAL:
                    await app.crash(RuntimeError(message))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_pipeline(sender: faust.App, **_: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, pipeline.stop)
