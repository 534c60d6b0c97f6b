"""Ingest agent: raw source records in, canonical customer events and dead letters out.

The agent is thin on purpose: it hands each record's bytes to the pure `Ingestion` core and
sends what comes back. Events are taken in batches and acknowledged only after the batch's
output is handed to the producer, and Faust flushes the producer before it commits, so
committed offsets never run ahead of what was emitted.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

import faust
import orjson

from models.ingestion import Ingestion, IngestionConfig
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import Topics

log = logging.getLogger(__name__)


def register_ingest(app: faust.App, settings: Settings, topics: Topics) -> None:
    """Register the ingest agent on app."""
    source_of = {topic: source for source, topic in settings.source_topics.items()}
    ingestion = Ingestion(IngestionConfig(max_event_bytes=settings.max_event_bytes))

    @app.agent(topics.sources, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        # take_events is on the concrete Stream; StreamT does not declare it.
        batches = cast(faust.Stream, stream).take_events(
            settings.batch_size, settings.batch_within_s
        )
        async for batch in batches:
            now_ms = int(time.time() * 1000)
            for event in batch:
                message = event.message
                result = ingestion.process(
                    message.value,
                    source_of[message.topic],
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    now_ms=now_ms,
                )
                for accepted in result.accepted:
                    topics.customer_events.send_soon(
                        key=accepted["customer_id"].encode(), value=orjson.dumps(accepted)
                    )
                for dead in result.dead:
                    topics.dead_letters.send_soon(key=message.key, value=orjson.dumps(dead))
