"""`scorestream scorecard CUSTOMER_ID`: print one customer's scorecard from a worker's API.

Any worker answers for any customer (the API forwards to the owner of the customer's
partition), so the URL is just one worker's: `--url`, else this machine's settings
(`SCORESTREAM_WEB_URL`, or `http://SCORESTREAM_WEB_HOST:SCORESTREAM_WEB_PORT`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.client import ScorecardError, fetch_scorecard
from streams.settings import Settings

__all__ = ["add_arguments", "render", "run"]


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


def _money(value: float | None, currency: str) -> str:
    return "-" if value is None else f"{value:,.2f} {currency}"


def render(card: dict[str, Any]) -> Table:
    """The scorecard as a two-column table: key values, churn risk and why, tier, advocacy,
    upsell propensity, versions.

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
    advocacy, promoter, upsell = card.get("advocacy"), card.get("promoter"), card.get("upsell")
    if advocacy:
        rows.append(("advocacy (last NPS answer)", str(advocacy)))
    elif promoter:
        low, high = promoter.get("interval") or (0.0, 1.0)
        rows.append(("P(promoter), predicted",
                     f"{promoter.get('probability', 0):.2f} (95 % {low:.2f}-{high:.2f})"))
    if upsell:
        rows.append(("upsell propensity, 30 days", f"{upsell.get('probability', 0):.2f}"))
        if upsell.get("factors"):
            rows.append(("upsell mainly from", "; ".join(
                str(f.get("label") or f.get("name")) for f in upsell["factors"])))
    versions = card.get("model_versions") or {}
    rows += [("models", ", ".join(f"{v}" for _, v in sorted(versions.items())) or "-"),
             ("as of (event time)", when)]
    for name, value in rows:
        table.add_row(name, value)
    return table
