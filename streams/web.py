"""HTTP views on Faust's web server: scorecard API, health, readiness, Prometheus metrics.

The API is read-only. A scorecard lives in the worker that owns the customer's partition of
customer-events; a request that reaches another worker is forwarded to the owner, found from
the scoring consumer group's assignment (each member's client.id is its web URL). Error bodies
never echo the request's input.

`api_guard` is an aiohttp middleware that sees every request before any view (Faust's built-in
pages included): methods other than GET and HEAD get 405, and when `SCORESTREAM_API_TOKEN` is
set every path but the probes needs `Authorization: Bearer <token>`, compared in constant time.
`/metrics` is protected too: Prometheus sends the token with `authorization: {credentials: ...}`
in its scrape config, and per-tier revenue and customer counts are business data.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import faust
from aiohttp import web as aioweb
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust.web import Request, Response, View

from streams.kafka import client_config
from streams.metrics import Metrics
from streams.pipeline import ScoringPipeline
from streams.settings import Settings
from streams.stores import StoreClosed

log = logging.getLogger(__name__)

CUSTOMER_ID = re.compile(r"^[\w.@:+\-]{1,128}$")
FORWARDED = "X-Scorestream-Forwarded"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes answer without a token: orchestrators rarely can send one, and they reveal nothing."""
READ_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


def api_guard(token: str) -> Callable[[aioweb.Request, Handler], Awaitable[aioweb.StreamResponse]]:
    """Middleware: 405 for anything but GET/HEAD; with a token, 401 unless the request carries
    `Authorization: Bearer <token>` (probes excepted). An empty token disables the check."""
    expected = token.encode()

    @aioweb.middleware
    async def guard(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        if request.method not in READ_METHODS:
            return aioweb.json_response({"error": "method not allowed: the API is read-only"},
                                        status=405, headers={"Allow": "GET, HEAD"})
        if expected and request.path not in OPEN_PATHS and not _bearer_ok(request, expected):
            return aioweb.json_response(
                {"error": "missing or invalid bearer token"}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="scorestream"'})
        return await handler(request)

    return guard


def _bearer_ok(request: aioweb.Request, expected: bytes) -> bool:
    """Whether the request's Authorization header carries the expected bearer token."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest's time does not depend on where the first differing byte is.
    return hmac.compare_digest(presented.strip().encode(), expected)


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
    token = settings.api_token.reveal()

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
                try:
                    card = pipeline.scorecard(customer_id)
                except StoreClosed:  # the partition left while being read
                    return self.json({"error": "partition is moving; retry"}, status=503)
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
            return await _forward(self, f"{owner}/customers/{customer_id}/scorecard", token)


async def _forward(view: View, url: str, token: str) -> Response:
    """Proxy a GET to the owning worker and relay its answer (with the API token, which every
    worker of a deployment shares)."""
    headers = {FORWARDED: "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers=headers) as reply):
            body: Any = await reply.json(content_type=None)
            return view.json(body, status=reply.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        log.warning("forwarding to %s failed: %s", url, err)
        return view.json({"error": "owner unreachable; retry"}, status=502)
