"""The scorecard API's client side: a customer's path, and a scorecard fetched from a worker.

Used by `scorestream scorecard` and by the API itself when it forwards a request to the
worker that owns the customer's partition.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from schemas.errors import ScorestreamError

__all__ = ["ScorecardError", "fetch_scorecard", "scorecard_path"]


class ScorecardError(ScorestreamError, RuntimeError):
    """The worker could not give the scorecard; the message says why, for a person."""


def scorecard_path(customer_id: str) -> str:
    """The API path of a customer's scorecard: the id percent-encoded as one path segment
    (`/` and `%` included; an id of only dots as well, so that no client or proxy reads it as
    a `.` or `..` segment and rewrites the path).

    >>> scorecard_path("../..")
    '/customers/..%2F../scorecard'
    >>> scorecard_path("a b%"), scorecard_path("..")
    ('/customers/a%20b%25/scorecard', '/customers/%2E%2E/scorecard')
    """
    segment = urllib.parse.quote(customer_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/customers/{segment}/scorecard"


def fetch_scorecard(base_url: str, customer_id: str, token: str = "",
                    timeout: float = 10.0) -> dict[str, Any]:
    """GET /customers/{id}/scorecard from the worker at `base_url`; ScorecardError otherwise."""
    url = f"{base_url}{scorecard_path(customer_id)}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            card: dict[str, Any] = json.loads(reply.read())
            return card
    except urllib.error.HTTPError as err:
        raise ScorecardError(_explain(err.code, customer_id, base_url, _error_body(err))) from None
    except urllib.error.URLError as err:
        raise ScorecardError(
            f"cannot reach a worker at {base_url}: {_reason(err.reason)} (is `scorestream "
            "worker` running there? pass --url or set SCORESTREAM_WEB_URL)") from None
    except TimeoutError:
        raise ScorecardError(f"the worker at {base_url} did not answer within "
                             f"{timeout:g} s") from None


def _error_body(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read()).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return ""


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(getattr(reason, "strerror", None) or reason)


def _explain(status: int, customer_id: str, base_url: str, detail: str) -> str:
    if status == 404:
        return f"no scorecard for customer {customer_id!r}: the worker knows no such customer"
    if status == 400:
        return f"{customer_id!r} is not a valid customer id"
    if status == 401:
        return (f"the worker at {base_url} needs the API token: set SCORESTREAM_API_TOKEN "
                "(or SCORESTREAM_API_TOKEN_FILE)")
    if status in (502, 503):
        return f"the worker cannot answer for this customer right now ({detail}); retry shortly"
    return f"the worker at {base_url} answered {status} {detail}".rstrip()
