"""The HTTP API's security on real workers: read-only, bearer token, no echoed input, and a
forwarded request that carries the token to the partition's owner."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.partitioning import partition_for
from tests.integration.kafka_tools import (
    free_port,
    produce,
    running_worker,
    topic_names,
    worker_env,
)

pytestmark = pytest.mark.integration

TOKEN = "token-for-tests-0123456789abcdef"
CUSTOMERS = [f"SEC{n}" for n in range(8)]


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


def test_token_read_only_and_forwarding_with_two_workers(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topics = topic_names(unique_name)
    app_id = f"security-{unique_name}"
    ports = free_port(), free_port()
    envs = [worker_env(kafka_bootstrap, app_id, topics, tmp_path / f"state-{n}", port,
                       SCORESTREAM_API_TOKEN=TOKEN) for n, port in enumerate(ports)]
    with (running_worker(envs[0], tmp_path / "a.log") as first,
          running_worker(envs[1], tmp_path / "b.log") as second):
        base = first.web_url
        events = [(c.encode(), orjson.dumps({
            "event_id": f"{c}-1", "event_type": "page_view", "source": "web",
            "occurred_at": 1_767_225_600_000, "customer_id": c, "payload": {"url": "/"}}))
            for c in CUSTOMERS]
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
        assert _call(f"{base}/readyz")[0] in (200, 503)
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
        for raw, quoted in [("<script>alert(1)</script>", "%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
                            ("x" * 300, "x" * 300), ("a b", "a%20b")]:
            status, _, body = _call(f"{base}/customers/{quoted}/scorecard", TOKEN)
            text = json.dumps(body)
            assert status in (400, 404) and raw not in text and quoted not in text, text
        status, _, body = _call(f"{base}/customers/UNKNOWN-CUSTOMER-77/scorecard", TOKEN)
        assert status == 404 and "UNKNOWN-CUSTOMER-77" not in json.dumps(body)


def _owner_is(web_url: str, customer: str) -> bool:
    """Whether the worker at web_url holds the customer itself (no forwarding needed)."""
    request = urllib.request.Request(f"{web_url}/customers/{customer}/scorecard",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "X-Scorestream-Forwarded": "1"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return bool(reply.status == 200)
    except urllib.error.HTTPError:
        return False
