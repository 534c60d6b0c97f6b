"""HTTP views on Faust's web server: scorecard API, health, readiness, Prometheus metrics.

The API is read-only. A scorecard lives in the worker that owns the customer's partition of
customer-events; a request that reaches another worker is forwarded to the owner, found from
the scoring consumer group's assignment (each member's client.id is its web URL). Error bodies
never echo the request's input.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import aiohttp
import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust.web import Request, Response, View

from streams.kafka import client_config
from streams.metrics import Metrics
from streams.pipeline import ScoringPipeline
from streams.settings import Settings

log = logging.getLogger(__name__)

CUSTOMER_ID = re.compile(r"^[\w.@:+\-]{1,128}$")
FORWARDED = "X-Scorestream-Forwarded"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class PartitionOwners:
    """Which worker (web URL) owns each partition of customer-events, cached briefly."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self.group = f"{settings.app_id}-scoring"
        self.topic = settings.topics["customer_events"]
        self.admin = AdminClient(client_config(settings))
        self.ttl_s = ttl_s
        self._owners: dict[int, str] = {}
        self._fetched = 0.0

    def lookup(self, partition: int) -> str | None:
        """The web URL of the partition's owner (blocking; call from an executor)."""
        if time.monotonic() - self._fetched > self.ttl_s or partition not in self._owners:
            self._refresh()
        return self._owners.get(partition)

    def _refresh(self) -> None:
        owners: dict[int, str] = {}
        try:
            description = self.admin.describe_consumer_groups([self.group])[self.group].result(10)
        except KafkaException as err:
            log.warning("cannot describe consumer group %s: %s", self.group, err)
            return
        for member in description.members:
            for tp in member.assignment.topic_partitions:
                if tp.topic == self.topic:
                    owners[tp.partition] = member.client_id
        self._owners, self._fetched = owners, time.monotonic()


def register_views(app: faust.App, settings: Settings, pipeline: ScoringPipeline,
                   metrics: Metrics) -> None:
    """Add the API, probes and metrics to app's web server."""
    owners = PartitionOwners(settings)

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            healthy = pipeline.healthy
            return self.json({"status": "ok" if healthy else "failing"},
                             status=200 if healthy else 503)

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = pipeline.healthy and pipeline.scoring.ready.is_set()
            return self.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), content_type=PROMETHEUS_TEXT)

    @app.page("/customers/{customer_id}/scorecard")
    class ScorecardView(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            if not CUSTOMER_ID.match(customer_id):
                return self.json({"error": "invalid customer id"}, status=400)
            partition, owned = pipeline.owns(customer_id)
            if owned:
                card = pipeline.scorecard(customer_id)
                if card is None:
                    return self.json({"error": "unknown customer"}, status=404)
                return self.json({**card.to_dict(), "partition": partition})
            if request.headers.get(FORWARDED):
                return self.json({"error": "partition is moving; retry"}, status=503)
            loop = asyncio.get_running_loop()
            owner = await loop.run_in_executor(None, owners.lookup, partition)
            if owner is None or owner == settings.canonical_url:
                return self.json({"error": "no worker owns this customer yet; retry"},
                                 status=503)
            return await _forward(self, f"{owner}/customers/{customer_id}/scorecard")


async def _forward(view: View, url: str) -> Response:
    """Proxy a GET to the owning worker and relay its answer."""
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers={FORWARDED: "1"}) as reply):
            body: Any = await reply.json(content_type=None)
            return view.json(body, status=reply.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        log.warning("forwarding to %s failed: %s", url, err)
        return view.json({"error": "owner unreachable; retry"}, status=502)
