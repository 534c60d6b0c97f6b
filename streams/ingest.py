"""Ingest agent (stage 1): raw source records in; customer events, identity messages and dead
letters out.

The agent is thin on purpose: it hands each record's bytes to `Ingestion.route` (decode,
validate, de-duplicate) and sends what comes back. Events that carry a customer id go straight
to customer-events keyed by that id. Alias-only events, and every identity link or erasure an
event carries, go to the identity topic keyed by their alias key, where the identity agent
(`streams/identity.py`, stage 2) owns that alias's link and the events waiting for it.

Events are taken in batches and acknowledged only after the batch's output is handed to the
producer, and Faust flushes the producer before it commits, so committed offsets never run
ahead of what was emitted. De-duplication memory is per worker and in memory: after a restart
or a rebalance, records after the last commit are processed again (at least once), and the
scoring stage drops redelivered event ids per customer.

Event time for the identity stage's hold bound: every identity message carries this worker's
watermark (highest accepted `occurred_at`), and once a second, when it advanced, a timer sends
a `tick` to every identity partition so events held on a quiet partition still age out.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

import faust
import orjson

from models.config import ScoringConfig
from models.ingestion import Ingestion, IngestionConfig, tick_message
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import Topics

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0
"""Wall-clock interval of the watermark ticks to the identity partitions."""


def ingestion_config(settings: Settings, scoring: ScoringConfig | None = None) -> IngestionConfig:
    """Ingestion bounds from the worker's settings; currencies from the scoring core's rates.

    An amount in a currency without a rate could not be converted to the base currency, so it
    is dead-lettered as `unknown_currency` here rather than miscounted later. Pass the scoring
    stage's own `ScoringConfig` once it is configurable, so both stages use one rate table.
    """
    scoring = scoring or ScoringConfig()
    return IngestionConfig(
        max_event_bytes=settings.max_event_bytes,
        currencies=frozenset(scoring.fx_rates) | {scoring.base_currency},
        max_held=settings.identity_max_held,
        max_hold_ms=settings.identity_max_hold_ms,
    )


def register_ingest(app: faust.App, settings: Settings, topics: Topics) -> None:
    """Register the ingest agent on app."""
    source_of = {topic: source for source, topic in settings.source_topics.items()}
    ingestion = Ingestion(ingestion_config(settings))
    ticked = [0]

    @app.timer(interval=TICK_INTERVAL_S)
    async def send_ticks() -> None:
        """Advance every identity partition's event-time clock to this worker's watermark."""
        watermark = ingestion.watermark
        if watermark <= ticked[0]:
            return
        tick = orjson.dumps(tick_message(watermark))
        for partition in range(settings.partitions):
            topics.identity.send_soon(key=None, value=tick, partition=partition)
        ticked[0] = watermark

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
                routed = ingestion.route(
                    message.value,
                    source_of[message.topic],
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    now_ms=now_ms,
                )
                for accepted in routed.accepted:
                    topics.customer_events.send_soon(
                        key=accepted["customer_id"].encode(), value=orjson.dumps(accepted)
                    )
                for alias_key, identity in routed.identity:
                    topics.identity.send_soon(key=alias_key.encode(), value=orjson.dumps(identity))
                for dead in routed.dead:
                    topics.dead_letters.send_soon(key=message.key, value=orjson.dumps(dead))
