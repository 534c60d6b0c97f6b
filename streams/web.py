"""HTTP views on Faust's web server: scorecard API, management scorecard, attribution report,
health, readiness, Prometheus metrics.

The API is read-only. A scorecard lives in the worker that owns the customer's partition of
customer-events; a request that reaches another worker is forwarded to the owner, found from
the scoring consumer group's assignment (each member's client.id is its web URL). Error bodies
never echo the request's input.

`api_guard` is an aiohttp middleware that sees every request before any view (Faust's built-in
pages included): methods other than GET and HEAD get 405, and when `SCORESTREAM_API_TOKEN` is
set every path but the probes needs `Authorization: Bearer <token>`, compared in constant time
(any malformed header, binary included, is a 401).
`/metrics` is protected too: Prometheus sends the token with `authorization: {credentials: ...}`
in its scrape config, and per-tier revenue and customer counts are business data.

Customer ids: the API serves every id ingestion accepts (the source schemas' envelope
`customer_id`: any string of 1 to 128 characters, `/`, `%`, spaces and emoji included), sent
percent-encoded as one path segment (`scorecard_path`); the segment is decoded from the raw path,
as strict UTF-8, and checked against the same schema definition, so anything ingestion would
reject gets a 400.

`GET /attribution?model=&from=&to=` reports the attribution totals (streams/stages/attribution.py)
over conversion days `from`..`to` (UTC dates, both included, each optional), for one model or
every model side by side: conversions, value, and per model the conversions and value credited
to each channel and campaign. Every worker reads the whole attributions topic, so any worker
answers for all customers; `caught_up` is false until it has read the topic to its end once.

`GET /attribution` also reports the data-driven model (`data_driven`: its version, the closed
paths it rests on, each channel's weight and removal effect with their intervals), and
`model=data_driven` its credits per channel and campaign like a rule-based model's.
`GET /journeys?top=` reports the closed journeys (a Sankey diagram of their paths: nodes
named by step and channel, the `top` channels per step, links, each step's flow) and the
funnel of `SCORESTREAM_ATTRIBUTION_FUNNEL`, from the same reader.

`GET /aggregates?limit=` reports the management scorecard (models/scoring/aggregates.py) of the
whole customer base: the worker asks its scoring thread for a copy of its partitions'
aggregates as committed (made between two batches), asks every other member of the scoring
group for theirs (`?scope=local`, with the forwarding header and the token), takes each
partition once, from its owner, and merges them. `partitions.missing` lists the partitions
nobody answered for (a member unreachable, or a rebalance under way).

`install_server_limits` swaps the runner of Faust's aiohttp server for one whose connections
answer malformed requests with a fixed body (aiohttp's own echoes the request line), close a
connection whose request head is not complete within `SCORESTREAM_WEB_HEADER_TIMEOUT_S`, and
close idle keep-alive connections after `SCORESTREAM_WEB_KEEPALIVE_S`.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hmac
import importlib.resources
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, cast

import aiohttp
import fastjsonschema
import faust
from aiohttp import web as aioweb
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust.web import Request, Response, View
from yarl import URL

from models.attribution.markov import DataDrivenModel
from models.attribution.rules import MODELS
from models.attribution.totals import DATA_DRIVEN
from models.scoring.aggregates import KPIS, Aggregates, kpi_values
from models.scoring.trend import TREND_DAYS
from schemas.registry import SOURCES, load_schema
from schemas.units import DAY_MS
from streams.client import scorecard_path
from streams.metrics import Metrics
from streams.runtime.kafka import client_config
from streams.runtime.pipeline import ScoringPipeline
from streams.runtime.stores import StoreClosed
from streams.settings import Settings

__all__ = [
    "AGGREGATES_ROUTE",
    "AGGREGATES_WAIT_S",
    "ATTRIBUTION_MAX_ROWS",
    "ATTRIBUTION_ROUTE",
    "ATTRIBUTION_ROWS",
    "FORWARDED",
    "JOURNEYS_ROUTE",
    "OPEN_PATHS",
    "PAGE_FILES",
    "PAGE_SECURITY",
    "PROMETHEUS_TEXT",
    "READ_METHODS",
    "SCORECARD_ROUTE",
    "LimitedRequestHandler",
    "LimitedRunner",
    "LimitedServer",
    "PartitionOwners",
    "api_guard",
    "attribution_limit",
    "attribution_query",
    "customer_id_from_path",
    "data_driven_report",
    "install_server_limits",
    "journeys_top",
    "register_journeys",
    "register_views",
    "valid_customer_id",
]

log = logging.getLogger(__name__)

AGGREGATES_ROUTE = "/aggregates"
AGGREGATES_WAIT_S = 5.0
"""How long a worker waits for its processing thread to copy the aggregates between batches."""
SCORECARD_ROUTE = "/customers/{customer_id:[^/]*}/scorecard"
"""The id may be empty here so that an empty one gets the 400 of any id ingestion rejects."""
ATTRIBUTION_ROUTE = "/attribution"
ATTRIBUTION_ROWS = 100
"""Channels and campaigns an attribution report lists by default; campaign names come from
the sources (utm tags), so there can be any number of them."""
ATTRIBUTION_MAX_ROWS = 1000
JOURNEYS_ROUTE = "/journeys"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = datetime.date(1970, 1, 1)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
FORWARDED = "X-Scorestream-Forwarded"
PROMETHEUS_TEXT = "text/plain; version=0.0.4"
PAGE_FILES = {
    "/ui/": ("index.html", "text/html"),
    "/ui/app.js": ("app.js", "text/javascript"),
    "/ui/app.css": ("app.css", "text/css"),
    "/ui/plotly.min.js": (None, "text/javascript"),
}
"""The page's files (streams/ui; plotly's own bundle from the plotly package): no data in
them, so they are served without a token; the page sends the token with its API calls."""
PAGE_SECURITY = {
    # Scripts only from the worker itself (no inline script, no eval); plotly sets styles.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", *PAGE_FILES})
"""Probes answer without a token: orchestrators rarely can send one, and they reveal nothing;
nor do the page's files."""
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
    # aiohttp decodes header bytes that are not UTF-8 as lone surrogates; surrogateescape
    # turns them back into those bytes (which then simply do not match) instead of raising.
    # compare_digest's time does not depend on where the first differing byte is.
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), expected)


@functools.cache
def _customer_id_validators() -> tuple[Callable[[Any], Any], ...]:
    """Compiled `customer_id` definitions of the source schemas' envelopes: what ingestion
    accepts (the decoder validates events against these same schemas)."""
    return tuple(fastjsonschema.compile(load_schema(source)["properties"]["customer_id"])
                 for source in SOURCES)


def valid_customer_id(customer_id: object) -> bool:
    """Whether ingestion accepts this as an event's customer_id.

    >>> [valid_customer_id(i) for i in ("C42", "../..", "😀 ש", "", "x" * 129, 42)]
    [True, True, True, False, False, False]
    """
    for check in _customer_id_validators():
        try:
            check(customer_id)
        except fastjsonschema.JsonSchemaValueException:
            continue
        return True
    return False


def customer_id_from_path(request: aioweb.Request) -> str | None:
    """The customer id of a scorecard request, decoded from the raw path's segment (aiohttp's
    own decoding leaves bytes that are not UTF-8 as `%XX`, which would read a malformed
    segment as another, valid id); None unless ingestion would accept the id."""
    parts = request.rel_url.raw_parts
    if len(parts) != 4:  # ("/", "customers", segment, "scorecard") is what the route matched
        return None
    segment = parts[2]
    if _BAD_ESCAPE.search(segment):
        return None
    try:
        customer_id = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None
    return customer_id if valid_customer_id(customer_id) else None


def attribution_query(params: Mapping[str, str]
                      ) -> tuple[str | None, int | None, int | None]:
    """The model and the first and last conversion day (epoch days) of an attribution
    request; raises ValueError with a message that does not quote the request.

    >>> attribution_query({"model": "linear", "from": "1970-01-02", "to": "1970-01-31"})
    ('linear', 1, 30)
    >>> attribution_query({})
    (None, None, None)
    >>> attribution_query({"from": "2026-02-30"})
    Traceback (most recent call last):
    ...
    ValueError: from and to must be dates YYYY-MM-DD (UTC)
    """
    model = params.get("model") or None
    if model is not None and model not in (*MODELS, DATA_DRIVEN):
        raise ValueError(f"model must be one of {', '.join((*MODELS, DATA_DRIVEN))}")
    days: list[int | None] = []
    for name in ("from", "to"):
        raw = params.get(name) or None
        if raw is None:
            days.append(None)
            continue
        try:
            if not _DATE.fullmatch(raw):
                raise ValueError(raw)
            days.append((datetime.date.fromisoformat(raw) - _EPOCH).days)
        except ValueError:
            raise ValueError("from and to must be dates YYYY-MM-DD (UTC)") from None
    first, last = days
    if first is not None and last is not None and first > last:
        raise ValueError("from must not be after to")
    return model, first, last


def attribution_limit(raw: str | None) -> int:
    """The most channels and campaigns an attribution report lists (`limit`, 1 to
    `ATTRIBUTION_MAX_ROWS`, default `ATTRIBUTION_ROWS`); raises ValueError.

    >>> attribution_limit(None), attribution_limit("5")
    (100, 5)
    >>> attribution_limit("0")
    Traceback (most recent call last):
    ...
    ValueError: limit must be a whole number from 1 to 1000
    """
    if not raw:
        return ATTRIBUTION_ROWS
    if not raw.isdigit() or not 1 <= int(raw) <= ATTRIBUTION_MAX_ROWS:
        raise ValueError(f"limit must be a whole number from 1 to {ATTRIBUTION_MAX_ROWS}")
    return int(raw)


def install_server_limits(app: faust.App, settings: Settings) -> None:
    """Make Faust's aiohttp web server use `LimitedRunner` (call before the worker starts).

    Faust builds its `AppRunner` in its aiohttp driver's constructor and uses it only to start
    and stop the server, so a runner of ours with the same application takes its place.
    """
    web: Any = app.web
    if not isinstance(getattr(web, "_runner", None), aioweb.AppRunner):
        raise RuntimeError("Faust's web driver has no aiohttp AppRunner to replace; "
                           "cannot apply the web server's timeouts")
    web._runner = LimitedRunner(web.web_app, header_timeout_s=settings.web.header_timeout_s,
                                keepalive_timeout=settings.web.keepalive_s, access_log=None)


class LimitedRunner(aioweb.AppRunner):
    """aiohttp's AppRunner whose server makes `LimitedRequestHandler` connections."""

    def __init__(self, app: aioweb.Application, *, header_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s

    async def _make_server(self) -> aioweb.Server:
        return LimitedServer(await super()._make_server(), self.header_timeout_s)


class LimitedServer(aioweb.Server):
    """The server aiohttp's runner made, making `LimitedRequestHandler`s for its connections
    (with the same request handler, request factory and handler options)."""

    def __init__(self, made: aioweb.Server, header_timeout_s: float) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, loop=made._loop,
                         **made._kwargs)
        self.header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return LimitedRequestHandler(self, self.header_timeout_s, loop=self._loop,
                                     **self._kwargs)


class LimitedRequestHandler(RequestHandler):
    """One HTTP connection, with a deadline for request heads and fixed error bodies.

    A request head (request line and headers) must be complete within `header_timeout_s` of
    the connection opening or, on a kept-alive connection, of the head's first bytes; otherwise
    the connection is closed (aiohttp has no such limit of its own: a client sending a header
    now and then holds its connection until the keep-alive timeout, an hour by default). Idle
    kept-alive connections are closed by aiohttp after its `keepalive_timeout`.

    Malformed requests (a bad request line or header) get 400 with a fixed body and a one-line
    debug log: aiohttp's answer quotes the offending request line, and its log carries the
    traceback of every port scan.
    """

    def __init__(self, manager: aioweb.Server, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a whole head (or a malformed one) has arrived
            self._stop_head_timer()
        elif (data and self._head_timer is None and self._waiter is not None
              and not self._waiter.done()):  # the first bytes of the next request
            self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self._loop.call_later(self.header_timeout_s, self._head_overdue)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport is not None:
            log.debug("closing a connection whose request head took over %s s",
                      self.header_timeout_s)
            self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> aioweb.StreamResponse:
        """The answer to a request aiohttp could not parse (400) or whose handler failed
        (500, 504): a fixed JSON body; only a failed handler is logged with its traceback."""
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            log.debug("malformed request: %s (status %d)", type(exc).__name__, status)
        if request.writer.output_size > 0:  # a response is half sent: only closing is left
            raise ConnectionError("response already started; closing the connection")
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:
            phrase = "error"
        response = aioweb.json_response({"error": phrase}, status=status)
        response.force_close()
        return response


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

    def members(self) -> dict[str, list[int]]:
        """Each member's web URL and its partitions, cached like `lookup` (blocking; call
        from an executor)."""
        if time.monotonic() - self._fetched > self.ttl_s:
            self._refresh()
        members: dict[str, list[int]] = {}
        for partition, url in sorted(self._owners.items()):
            members.setdefault(url, []).append(partition)
        return members

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
    targets = settings.targets()

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

    @app.page(ATTRIBUTION_ROUTE)
    class AttributionView(View):
        async def get(self, request: Request) -> Response:
            reader = pipeline.attribution
            if reader is None:
                return _attribution_off(self)
            query = cast(aioweb.Request, request).query
            try:
                model, first, last = attribution_query(
                    {name: query.get(name, "") for name in ("model", "from", "to")})
                limit = attribution_limit(query.get("limit"))
            except ValueError as err:
                return self.json({"error": str(err)}, status=400)
            report = reader.report(model, first, last, limit)
            return self.json({
                "from": _day_text(first), "to": _day_text(last),
                "currency": pipeline.engine.config.base_currency,
                "caught_up": reader.caught_up, **report,
                "data_driven": data_driven_report(
                    reader.model, pipeline.engine.config.attribution.data_driven_min_paths)})

    register_journeys(app, settings, pipeline)

    files = {path: (_page_file(name), kind) for path, (name, kind) in PAGE_FILES.items()}

    @app.page("/")
    class Root(View):
        async def get(self, request: Request) -> Response:
            return self.json({"page": "/ui/"}, status=302, headers={"Location": "/ui/"})

    for path, (body, kind) in files.items():

        def serve(body: bytes = body, kind: str = kind) -> type[View]:
            class PageFile(View):
                async def get(self, request: Request) -> Response:
                    return self.bytes(body, content_type=kind, headers=dict(PAGE_SECURITY))

            return PageFile

        app.page(path)(serve())

    @app.page(AGGREGATES_ROUTE)
    class AggregatesView(View):
        async def get(self, request: Request) -> Response:
            query = cast(aioweb.Request, request).query
            gathering = query.get("scope") == "local"  # another worker gathering
            try:
                limit = attribution_limit(None if gathering else query.get("limit"))
            except ValueError as err:
                return self.json({"error": str(err)}, status=400)
            loop = asyncio.get_running_loop()
            local = await loop.run_in_executor(
                None, pipeline.handler.request_aggregates, AGGREGATES_WAIT_S)
            if gathering:
                if local is None:
                    return self.json({"error": "busy; retry"}, status=503)
                return self.json({"partitions": [
                    {"partition": p, "watermark": w, "segments": agg.to_raw()}
                    for p, (agg, w) in sorted(local.items())]})
            members = await loop.run_in_executor(None, owners.members)
            assigned = {p for partitions in members.values() for p in partitions}
            mine = set(members.get(settings.canonical_url, ()))
            # Each partition from its owner; a copy this worker still holds of a partition
            # the group gave another (a rebalance under way) is left to the new owner.
            parts = {p: got for p, got in (local or {}).items()
                     if p in mine or p not in assigned}
            others = [url for url in members if url != settings.canonical_url]
            answers = await asyncio.gather(*(_local_aggregates(url, token) for url in others))
            for url, answer in zip(others, answers, strict=True):
                for partition, got in (answer or {}).items():
                    if partition in members[url]:  # each partition once, from its owner
                        parts.setdefault(partition, got)
            merged = Aggregates()
            for agg, _watermark in parts.values():
                merged.merge(agg)
            covered = sorted(parts)
            as_of = max((w for _agg, w in parts.values()), default=None)
            report = merged.report(targets, limit)
            history = pipeline.watcher.kpi_history
            whole = report["segments"][0] if report["segments"] else None
            return self.json({
                "as_of": as_of,
                "currency": pipeline.engine.config.base_currency,
                "partitions": {"covered": covered, "total": settings.partitions,
                               "missing": sorted(set(range(settings.partitions)) - set(covered))},
                "complete": len(covered) == settings.partitions,
                "attribution": pipeline.attribution is not None,
                **report,
                "trend": _with_better(history.trend(as_of // DAY_MS, kpi_values(whole))
                                      if as_of and whole and len(covered) == settings.partitions
                                      else
                                      {"days": TREND_DAYS, "against": None, "kpis": {}}),
                "history": history.report()})

    @app.page(SCORECARD_ROUTE)
    class ScorecardView(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            # aiohttp's decoded `customer_id` is not used: see customer_id_from_path.
            decoded = customer_id_from_path(cast(aioweb.Request, request))
            if decoded is None:
                return self.json({"error": "invalid customer id (send it percent-encoded as "
                                           "one path segment)"}, status=400)
            customer_id = decoded
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
            return await _forward(self, f"{owner.rstrip('/')}{scorecard_path(customer_id)}",
                                  token)


def _attribution_off(view: View) -> Response:
    """The answer of the attribution views while attribution is off."""
    return view.json({"error": "attribution is off (SCORESTREAM_ATTRIBUTION_ENABLED)"},
                     status=404)


def _with_better(trend: dict[str, Any]) -> dict[str, Any]:
    """The trend with each KPI's better way ("higher" or "lower") beside its change."""
    for kpi, row in trend["kpis"].items():
        row["better"] = KPIS[kpi][1]
    return trend


def journeys_top(raw: str | None, default: int) -> int:
    """The channels per step of a Sankey diagram (`top`, 1 to 50); raises ValueError.

    >>> journeys_top(None, 5), journeys_top("12", 5)
    (5, 12)
    >>> journeys_top("0", 5)
    Traceback (most recent call last):
    ...
    ValueError: top must be a whole number from 1 to 50
    """
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 50:
        raise ValueError("top must be a whole number from 1 to 50")
    return int(raw)


def data_driven_report(model: DataDrivenModel | None, min_paths: int) -> dict[str, Any]:
    """The data-driven model as `GET /attribution` reports it: whether conversions are
    credited by it (`ready`: it rests on `min_paths` closed paths or more) and, once there
    is one, its version, P(conversion), and per channel its weight and removal effect with
    their intervals.

    >>> data_driven_report(None, 200)
    {'ready': False, 'min_paths': 200, 'paths': 0, 'model': None}
    """
    return {"ready": model is not None and model.paths >= min_paths, "min_paths": min_paths,
            "paths": model.paths if model is not None else 0,
            "model": model.to_dict() if model is not None else None}


def register_journeys(app: faust.App, settings: Settings, pipeline: ScoringPipeline) -> None:
    """Add `GET /journeys`: the closed journeys' Sankey diagram and the funnel."""

    @app.page(JOURNEYS_ROUTE)
    class JourneysView(View):
        async def get(self, request: Request) -> Response:
            reader = pipeline.attribution
            if reader is None:
                return _attribution_off(self)
            query = cast(aioweb.Request, request).query
            try:
                top = journeys_top(query.get("top"), settings.attribution.journeys_top)
            except ValueError as err:
                return self.json({"error": str(err)}, status=400)
            config = pipeline.engine.config.attribution
            report = reader.journeys_report(top)
            report["funnel"]["window_days"] = config.funnel_window_days
            return self.json({"caught_up": reader.caught_up,
                              "lookback_days": config.lookback_days, **report})


def _page_file(name: str | None) -> bytes:
    """A file of the page: streams/ui/<name>, or (None) plotly's own minified bundle."""
    if name is None:
        return (importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
                ).read_bytes()
    return (importlib.resources.files("streams") / "ui" / name).read_bytes()


def _day_text(day: int | None) -> str | None:
    """An epoch day as its UTC date (None stays None)."""
    return None if day is None else (_EPOCH + datetime.timedelta(days=day)).isoformat()


def _forwarding_headers(token: str) -> dict[str, str]:
    """Headers of a request one worker makes to another: marked as forwarded, with the API
    token every worker of a deployment shares."""
    headers = {FORWARDED: "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _local_aggregates(url: str, token: str) -> dict[int, tuple[Aggregates, int]] | None:
    """Another worker's aggregates per partition it owns (None when it does not answer)."""
    headers = _forwarding_headers(token)
    try:
        timeout = aiohttp.ClientTimeout(total=AGGREGATES_WAIT_S + 5)
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(f"{url.rstrip('/')}{AGGREGATES_ROUTE}?scope=local",
                                headers=headers) as reply):
            if reply.status != 200:
                log.warning("aggregates of %s: HTTP %d", url, reply.status)
                return None
            body: Any = await reply.json(content_type=None)
        return {int(row["partition"]): (Aggregates.from_raw(row["segments"]),
                                        int(row["watermark"]))
                for row in body["partitions"]}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError,
            OverflowError) as err:
        log.warning("aggregates of %s: %s", url, err)
        return None


async def _forward(view: View, url: str, token: str) -> Response:
    """Proxy a GET to the owning worker and relay its answer (with the API token, which every
    worker of a deployment shares)."""
    headers = _forwarding_headers(token)
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        # encoded=True: the URL is sent as built (yarl would otherwise decode and re-encode it).
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(URL(url, encoded=True), headers=headers) as reply):
            body: Any = await reply.json(content_type=None)
            return view.json(body, status=reply.status)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        log.warning("forwarding to %s failed: %s", url, err)
        return view.json({"error": "owner unreachable; retry"}, status=502)
