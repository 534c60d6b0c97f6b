"""The HTTP API's security on real workers: read-only, bearer token, no echoed input, a
forwarded request that carries the token to the partition's owner, every customer id ingestion
accepts served, malformed requests and headers answered without echo or traceback, and slow or
idle connections closed.

One pair of workers serves the whole module (starting workers is the slow part)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streams.client import fetch_scorecard, scorecard_path
from streams.runtime.partitioning import partition_for
from tests.integration.kafka_tools import (
    WorkerProcess,
    free_port,
    produce,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import raw_ev

pytestmark = pytest.mark.integration

TOKEN = "token-for-tests-0123456789abcdef"
CUSTOMERS = [f"SEC{n}" for n in range(8)]
HOSTILE_IDS = [
    "\U0001F600 emoji \U0001F9D1\u200D\U0001F4BB",
    "\u05e9\u05dc\u05d5\u05dd \u0639\u0627\u0644\u0645",  # Hebrew and Arabic (RTL)
    "\u202eRTL override",
    "../..",
    "..",
    ".",
    "<script>alert(1)</script>",
    "two  spaces and a tab\t",
    "100%",
    "%2F%25",
    "a/b?c=d#e",
    "+plus;semi,comma",
    "nul\u0000byte",
    "\u00e9" * 128,  # the longest id the schema allows, 256 bytes of UTF-8
]
"""Customer ids the source schemas accept (1 to 128 characters of anything)."""
HEADER_TIMEOUT_S = 2.0
KEEPALIVE_S = 3.0


@dataclass
class Deployment:
    """Two workers sharing the customers, and which of them owns each of CUSTOMERS."""

    workers: tuple[WorkerProcess, WorkerProcess]
    owners: dict[str, str]

    @property
    def base(self) -> str:
        return self.workers[0].web_url

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[Deployment]:
    """Two workers with the API token and short web timeouts, the customers of CUSTOMERS scored
    and split between them (those of HOSTILE_IDS, produced with them, are scored too)."""
    tmp_path = tmp_path_factory.mktemp("api-security")
    unique_name = uuid.uuid4().hex[:10]
    topics = topic_names(unique_name)
    app_id = f"security-{unique_name}"
    ports = free_port(), free_port()
    envs = [worker_env(kafka_bootstrap, app_id, topics, tmp_path / f"state-{n}", port,
                       SCORESTREAM_API_TOKEN=TOKEN,
                       SCORESTREAM_WEB_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
                       SCORESTREAM_WEB_KEEPALIVE_S=str(KEEPALIVE_S))
            for n, port in enumerate(ports)]
    with (running_worker(envs[0], tmp_path / "a.log") as first,
          running_worker(envs[1], tmp_path / "b.log") as second):
        events = [(c.encode(), raw_ev(f"{n}-1", "page_view", customer_id=c))
                  for n, c in enumerate(CUSTOMERS + HOSTILE_IDS)]
        produce(kafka_bootstrap, topics["web"], events)

        # Wait until the two workers split the partitions and hold every customer (asked with
        # the forwarded header, a worker answers only for what it owns).
        def split() -> dict[str, str] | None:
            owners = {}
            for customer in CUSTOMERS:
                holders = [w.web_url for w in (first, second) if _owner_is(w.web_url, customer)]
                if len(holders) != 1:
                    return None
                owners[customer] = holders[0]
            return owners if len(set(owners.values())) == 2 else None

        deadline, owners = time.monotonic() + 120, None
        while owners is None and time.monotonic() < deadline:
            owners = split()
            time.sleep(0.5)
        assert owners is not None, (first.log_tail(), second.log_tail())
        yield Deployment((first, second), owners)


def _call(url: str, token: str | None = None, method: str = "GET",
          ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of one request."""
    request = urllib.request.Request(url, method=method,
                                     data=b"{}" if method in ("POST", "PUT") else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            raw, status, headers = reply.read(), reply.status, dict(reply.headers)
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, dict(err.headers)
    return status, headers, json.loads(raw) if raw.strip().startswith(b"{") else {}


def test_token_read_only_and_forwarding_with_two_workers(deployment: Deployment) -> None:
    base, owners, second = deployment.base, deployment.owners, deployment.workers[1]
    # Every customer through the first worker: the second worker's are forwarded, and only
    # answer 200 because the token went along.
    forwarded = [c for c in CUSTOMERS if owners[c] == second.web_url]
    assert forwarded
    for customer in CUSTOMERS:
        status, _, body = _call(f"{base}/customers/{customer}/scorecard", TOKEN)
        assert status == 200, (customer, body)
        assert (body["customer_id"], body["partition"]) == (
            customer, partition_for(customer.encode(), 4))

    card = f"{base}/customers/SEC0/scorecard"
    status, headers, body = _call(card)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert body == {"error": "missing or invalid bearer token"}
    assert _call(card, "wrong-token-0123456789abcdef")[0] == 401
    assert _call(card, TOKEN[:-1])[0] == 401
    assert _call(card, "")[0] == 401
    assert _call(card, TOKEN)[0] == 200
    # The probes stay open; metrics and anything else need the token.
    assert _call(f"{base}/healthz")[0] == 200
    assert _call(f"{base}/readyz")[0] == 200
    assert _call(f"{base}/metrics")[0] == 401
    assert _call(f"{base}/metrics", TOKEN)[0] == 200
    assert _call(f"{base}/nothing-here")[0] == 401
    # Faust's own pages (table contents among them) are not served at all.
    assert _call(f"{base}/table/identity-links/", TOKEN)[0] == 404
    # Read-only: other methods get 405, with or without a token.
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = _call(card, TOKEN, method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
        assert _call(card, None, method)[0] == 405
    assert _call(card, TOKEN, "HEAD")[0] == 200

    # Error bodies never echo the input.
    for raw, quoted in [("<script>alert(2)</script>", "%3Cscript%3Ealert(2)%3C%2Fscript%3E"),
                        ("x" * 300, "x" * 300), ("a b", "a%20b")]:
        status, _, body = _call(f"{base}/customers/{quoted}/scorecard", TOKEN)
        text = json.dumps(body)
        assert status in (400, 404) and raw not in text and quoted not in text, text
    status, _, body = _call(f"{base}/customers/UNKNOWN-CUSTOMER-77/scorecard", TOKEN)
    assert status == 404 and "UNKNOWN-CUSTOMER-77" not in json.dumps(body)


def test_every_customer_id_ingestion_accepts_is_served(deployment: Deployment) -> None:
    urls = [w.web_url for w in deployment.workers]
    owners: dict[str, str] = {}
    deadline = time.monotonic() + 30  # scored with CUSTOMERS: normally there already
    for customer in HOSTILE_IDS:
        holders = [url for url in urls if _owner_is(url, customer)]
        while len(holders) != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            holders = [url for url in urls if _owner_is(url, customer)]
        assert len(holders) == 1, (customer, holders)
        owners[customer] = holders[0]
    # Each id through both workers: one answers itself, the other forwards (re-encoding it).
    assert set(owners.values()) == set(urls)
    for customer in HOSTILE_IDS:
        for worker in deployment.workers:
            status, _, body = _call(f"{worker.web_url}{scorecard_path(customer)}", TOKEN)
            assert status == 200, (customer, worker.web_url, body)
            assert (body["customer_id"], body["partition"]) == (
                customer, partition_for(customer.encode(), 4)), customer
        # `scorestream scorecard` builds the same URL.
        assert fetch_scorecard(deployment.base, customer, TOKEN)["customer_id"] == customer
    # Plain percent-encoding of a dot-only id reaches the server unchanged too.
    assert _call(f"{deployment.base}/customers/../scorecard", TOKEN)[2]["customer_id"] == ".."


@pytest.mark.parametrize("segment", [
    "",  # empty
    "x" * 129,  # longer than the schema allows
    "%C3%A9" * 129,  # 129 characters, as UTF-8
    "%FF%3Cscript%3E",  # not UTF-8 (aiohttp alone would look up the id '%FF<script>')
    "%ED%A0%80",  # an encoded surrogate
    "bad%zzescape",  # not a percent-escape
    "100%",
])
def test_ids_ingestion_rejects_get_400_without_echo(deployment: Deployment, segment: str,
                                                     ) -> None:
    status, _, body = _call(f"{deployment.base}/customers/{segment}/scorecard", TOKEN)
    assert status == 400, body
    text = json.dumps(body)
    assert "invalid customer id" in body["error"]
    assert not any(part in text for part in ("xxxx", "script", "escape", "100", "%"))


def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes on a fresh connection; everything the server answers before closing."""
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    return asyncio.run(exchange())


@pytest.mark.parametrize("request_bytes", [
    b"FOO /<script>alert(1)</script> HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /<script>alert(1)</script> HTTP/9.9\r\nHost: x\r\n\r\n",
    b"<script>alert(1)</script>\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-<script>alert(1)</script>: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Probe <script>alert(1)</script>\r\n\r\n",
    b"GET /<script>alert(1)</script>" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nAuthorization: Bearer <script>alert(1)</script>\x00\r\n\r\n",
])
def test_malformed_requests_get_a_fixed_400(deployment: Deployment, request_bytes: bytes,
                                            ) -> None:
    reply = _raw_exchange(deployment.port, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400", reply
    assert json.loads(body) == {"error": "bad request"}
    assert b"script" not in reply and b"alert" not in reply
    _assert_no_traceback_logged(deployment)


def test_slow_and_idle_connections_are_closed(deployment: Deployment) -> None:
    port = deployment.port
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    async def closed_after(first: bytes, trickle: bytes = b"") -> tuple[float, bytes]:
        """Seconds until the server closes a connection that sends `first`, then `trickle`
        every 0.4 s (a request head that never ends); what it answered meanwhile."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(first)
        received = b""

        async def read_all() -> None:
            nonlocal received
            while chunk := await reader.read(4096):
                received += chunk

        reading = asyncio.ensure_future(read_all())
        try:
            while not reading.done() and time.monotonic() - started < 20:
                if trickle:
                    writer.write(trickle)
                await asyncio.wait([reading], timeout=0.4)
            await asyncio.wait_for(reading, 1)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
        return time.monotonic() - started, received

    async def probe() -> list[tuple[float, bytes]]:
        return list(await asyncio.gather(
            *(closed_after(b"GET /healthz HTTP/1.1\r\n", b"X-Slow: 1\r\n") for _ in range(5)),
            closed_after(b""),  # connects and says nothing
            closed_after(good),  # one request, then idle on a kept-alive connection
            closed_after(good + b"GET /healthz HTTP/1.1\r\n", b"X-Slow: 1\r\n"),  # slow 2nd
        ))

    *slow, silent, idle, slow_second = asyncio.run(probe())
    for seconds, received in [*slow, silent]:
        assert HEADER_TIMEOUT_S - 0.5 < seconds < HEADER_TIMEOUT_S + 2, seconds
        assert received == b""
    seconds, received = idle
    assert KEEPALIVE_S - 0.5 < seconds < KEEPALIVE_S + 2, seconds
    assert received.startswith(b"HTTP/1.1 200")
    seconds, received = slow_second
    assert seconds < KEEPALIVE_S + 2, seconds  # (the head timer, at the latest keep-alive's)
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("value", [
    b"Bearer \xff\xfe\x80",
    b"Bearer " + TOKEN.encode() + b"\xff",
    "Bearer caf\u00e9\u20ac\U0001F600".encode(),
    "Bearer caf\u00e9".encode("latin-1"),
    b"\xff\xff \xff",
    b"\xc3\xa9 " + TOKEN.encode(),
    b"Bearer",
    b"Bearer ",
    b"Basic dXNlcjpwYXNz",
    b"bearer\t" + TOKEN.encode(),
])
def test_malformed_authorization_gets_401(deployment: Deployment, value: bytes) -> None:
    reply = _raw_exchange(deployment.port, b"GET /customers/SEC0/scorecard HTTP/1.1\r\nHost: x"
                          b"\r\nConnection: close\r\nAuthorization: " + value + b"\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), reply
    assert json.loads(body) == {"error": "missing or invalid bearer token"}
    _assert_no_traceback_logged(deployment)


def _assert_no_traceback_logged(deployment: Deployment) -> None:
    """Neither worker logged a traceback or an error page (nor any of the hostile input)."""
    for worker in deployment.workers:
        text = worker.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Error handling request" not in text, (
            worker.log_tail(80))
        assert "<script" not in text and "alert(" not in text, worker.log_tail(80)


def _owner_is(web_url: str, customer: str) -> bool:
    """Whether the worker at web_url holds the customer itself (no forwarding needed)."""
    request = urllib.request.Request(f"{web_url}{scorecard_path(customer)}",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "X-Scorestream-Forwarded": "1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError:
        return False
