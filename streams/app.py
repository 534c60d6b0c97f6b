"""The Faust application: built from Settings by a factory, never as module-level state.

`create_app(settings)` returns a ready app with its topics, agents and web views registered, so
the CLI, the tests and a second worker in the same process each get their own instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.web import Request, Response, View

from streams.settings import Settings


@dataclass
class Topics:
    """The Faust topic objects of one app, by role (all raw bytes: we decode ourselves)."""

    sources: faust.TopicT
    customer_events: faust.TopicT
    dead_letters: faust.TopicT


def create_app(settings: Settings) -> faust.App:
    """Build the scorestream Faust app for these settings."""
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_canonical_url=settings.canonical_url,
        web_enabled=True,
        producer_compression_type="lz4",
    )
    topics = Topics(
        sources=app.topic(
            *settings.source_topics.values(), key_serializer="raw", value_serializer="raw"
        ),
        customer_events=app.topic(
            settings.topics["customer_events"], key_serializer="raw", value_serializer="raw"
        ),
        dead_letters=app.topic(
            settings.topics["dead_letters"], key_serializer="raw", value_serializer="raw"
        ),
    )
    # Imported here so that the agents' module sees a fully configured app.
    from streams.ingest import register_ingest

    register_ingest(app, settings, topics)
    _register_health(app)
    return app


def _register_health(app: faust.App) -> None:
    """Liveness and readiness probes for orchestrators."""

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = not self.app.rebalancing
            return self.json({"ready": ready}, status=200 if ready else 503)
