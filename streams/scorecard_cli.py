"""`scorestream scorecard CUSTOMER_ID`: print one customer's scorecard from a worker's API.

Any worker answers for any customer (the API forwards to the owner of the customer's
partition), so the URL is just one worker's: `--url`, else this machine's settings
(`SCORESTREAM_WEB_URL`, or `http://SCORESTREAM_WEB_HOST:SCORESTREAM_WEB_PORT`).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.settings import Settings


class ScorecardError(RuntimeError):
    """The worker could not give the scorecard; the message says why, for a person."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream scorecard`."""
    parser.add_argument("customer_id", help="canonical customer id")
    parser.add_argument("--url", default=None,
                        help="a worker's base URL (default: SCORESTREAM_WEB_URL, or "
                             "http://SCORESTREAM_WEB_HOST:SCORESTREAM_WEB_PORT)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for it")


def run(args: argparse.Namespace) -> int:
    """Fetch and print; 0 when a scorecard was printed, 1 otherwise."""
    settings: Settings = args.settings
    base = (args.url or settings.canonical_url).rstrip("/")
    try:
        card = fetch_scorecard(base, args.customer_id, _token(settings), args.timeout)
    except ScorecardError as err:
        print(f"scorestream scorecard: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(card, indent=2))
    else:
        Console(highlight=False).print(render(card))
    return 0


def _token(settings: Settings) -> str:
    """The API's bearer token when the deployment sets one (SCORESTREAM_API_TOKEN)."""
    secret = getattr(settings, "api_token", None)
    return secret.reveal() if secret else ""


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


def _money(value: float | None, currency: str) -> str:
    return "-" if value is None else f"{value:,.2f} {currency}"


def render(card: dict[str, Any]) -> Table:
    """The scorecard as a two-column table: key values, churn risk and why, tier, versions.

    >>> card = {"customer_id": "C1", "as_of": 1767225600000, "currency": "EUR",
    ...         "data_completeness": 57.1, "ltv": {"historic": 173.6, "predicted_12m": 90.0},
    ...         "engagement": {"score": 40.0, "factors": []}, "revenue_12m": 173.6,
    ...         "interactions_12m": 6, "days_since_last_interaction": 10,
    ...         "churn": {"probability": 0.2, "factors": []}, "tier": "Standard",
    ...         "model_versions": {"churn": "churn-00001"}}
    >>> table = render(card)
    >>> [cell for cell in table.columns[1].cells][:2]
    ['Standard', '57.1 %']
    """
    currency = str(card.get("currency", ""))
    ltv = card.get("ltv") or {}
    churn = card.get("churn") or {}
    engagement = card.get("engagement") or {}
    as_of = card.get("as_of")
    when = (datetime.fromtimestamp(as_of / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
            if isinstance(as_of, int) else "-")
    table = Table(title=f"Scorecard of {card.get('customer_id')}", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    days = card.get("days_since_last_interaction")
    rows = [
        ("tier", str(card.get("tier", "-"))),
        ("data completeness", f"{card.get('data_completeness', 0):.1f} %"),
        ("lifetime value", _money(ltv.get("historic"), currency)),
        ("predicted value, next 12 months", _money(ltv.get("predicted_12m"), currency)),
        ("engagement", f"{engagement.get('score', 0):.1f} / 100"),
        ("revenue, last 12 months", _money(card.get("revenue_12m"), currency)),
        ("interactions, last 12 months", str(card.get("interactions_12m", "-"))),
        ("days since last interaction", "-" if days is None else str(days)),
        ("churn probability", f"{churn.get('probability', 0):.2f}"),
    ]
    factors = churn.get("factors") or []
    if factors:
        rows.append(("churn risk mainly from",
                     "; ".join(str(f.get("label") or f.get("name")) for f in factors)))
    versions = card.get("model_versions") or {}
    rows += [("models", ", ".join(f"{v}" for _, v in sorted(versions.items())) or "-"),
             ("as of (event time)", when)]
    for name, value in rows:
        table.add_row(name, value)
    return table
