"""What `scorestream demo` shows: the demo's running status and its renderings.

`DemoStatus` is filled by the demo from three places (its own generator's counters, the
worker's /metrics, and the alerts and dead-letters topics); this module only turns it into a
rich live view, a plain status line for non-interactive output, and the closing summary.
No Kafka and no HTTP here, so every rendering can be checked on a hand-made status.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from models.scoring import tiers

__all__ = [
    "ALERT_STYLE",
    "SOURCES",
    "SPOTLIGHT_RANK",
    "TIERS",
    "DemoStatus",
    "Rates",
    "WorkerMetrics",
    "alert_line",
    "headline",
    "plain_line",
    "render",
    "scorecard_lines",
    "summary",
]

SOURCES = ("web", "email", "crm", "support")
TIERS = tuple(reversed(tiers.TIERS))  # highest first, as shown
ALERT_STYLE = {"high_value_at_risk": "bold red", "churn_risk": "red",
               "tier_downgrade": "yellow", "vip_upgrade": "green"}
# Which alert's customer gets the scorecard panel: the most telling kind seen most recently.
SPOTLIGHT_RANK = {"high_value_at_risk": 3, "churn_risk": 2, "vip_upgrade": 1,
                  "tier_downgrade": 0}


class WorkerMetrics:
    """The samples of one /metrics scrape, summed as the demo needs them.

    >>> m = WorkerMetrics.parse('x_total{source="web"} 3.0\\nx_total{source="crm"} 2.0\\n')
    >>> m.total("x_total"), m.by_label("x_total", "source")
    (5.0, {'web': 3.0, 'crm': 2.0})
    """

    def __init__(self, samples: Iterable[tuple[str, dict[str, str], float]] = ()) -> None:
        self.samples = list(samples)

    @classmethod
    def parse(cls, text: str) -> WorkerMetrics:
        """Parse the Prometheus text exposition format."""
        return cls((s.name, dict(s.labels), float(s.value))
                   for family in text_string_to_metric_families(text)
                   for s in family.samples)

    def total(self, name: str) -> float:
        """Sum of every sample of a metric."""
        return sum(v for n, _, v in self.samples if n == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """A metric's samples summed per value of one label."""
        out: dict[str, float] = {}
        for n, labels, v in self.samples:
            if n == name and label in labels:
                out[labels[label]] = out.get(labels[label], 0.0) + v
        return out


@dataclass
class Rates:
    """Per-key rates (per second) from successive cumulative counts."""

    window_s: float = 3.0
    _history: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)

    def update(self, counts: Mapping[str, float], now: float) -> dict[str, float]:
        """Record counts at `now`; return each key's rate over about the last window."""
        self._history.append((now, dict(counts)))
        while len(self._history) > 2 and now - self._history[1][0] >= self.window_s:
            self._history.popleft()
        then, old = self._history[0]
        elapsed = now - then
        if elapsed <= 0:
            return {k: 0.0 for k in counts}
        return {k: max(0.0, (v - old.get(k, 0.0)) / elapsed) for k, v in counts.items()}


@dataclass
class DemoStatus:
    """Everything the view shows, updated about once a second by the demo."""

    bootstrap: str
    web_url: str
    worker_pid: int
    worker_log: str
    topics_note: str
    target_rate: float
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    event_time_ms: int | None = None
    days_per_second: float = 0.0
    history_sent: int = 0
    history_total: int = 0
    worker_up: bool = False
    produced: Counter[str] = field(default_factory=Counter)
    produced_rate: dict[str, float] = field(default_factory=dict)
    consumed: dict[str, float] = field(default_factory=dict)
    consumed_rate: dict[str, float] = field(default_factory=dict)
    scored: float = 0.0
    score_changes: float = 0.0
    customers: float = 0.0
    tiers: dict[str, float] = field(default_factory=dict)
    alerts: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    latest_alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    spotlight_alert: dict[str, Any] | None = None
    spotlight_card: dict[str, Any] | None = None
    spotlight_error: str | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    @property
    def backlog(self) -> float:
        """Records sent that the worker's ingest stage has not read yet."""
        return max(0.0, sum(self.produced.values()) - sum(self.consumed.values()))

    def apply_metrics(self, metrics: WorkerMetrics) -> None:
        """Take the worker's counters and gauges from one scrape."""
        self.worker_up = True
        self.consumed = metrics.by_label("scorestream_events_consumed_total", "source")
        self.scored = metrics.total("scorestream_events_processed_total")
        self.score_changes = metrics.total("scorestream_score_changes_total")
        self.customers = metrics.total("scorestream_customers")
        self.tiers = metrics.by_label("scorestream_customers_by_tier", "tier")

    def add_alert(self, alert: dict[str, Any]) -> bool:
        """Count an alert read from the topic; True when its customer should be spotlighted."""
        kind = str(alert.get("alert_type", "?"))
        self.alerts[kind] += 1
        self.latest_alerts.appendleft(alert)
        current = self.spotlight_alert
        rank = SPOTLIGHT_RANK.get(kind, 0)
        return current is None or rank >= SPOTLIGHT_RANK.get(current.get("alert_type", ""), 0)


def _day(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def headline(s: DemoStatus) -> str:
    """One line: phase, event time, progress through the history."""
    share = f"{s.history_sent / s.history_total:.0%}" if s.history_total else "-"
    if s.phase == "warm-up":
        what = "warm-up: replaying the first months of history at full speed"
    elif s.phase == "live":
        what = f"live: {s.target_rate:,.0f} events/s"
        if s.backlog > 2 * s.target_rate:
            what += f" (the worker is catching up: {s.backlog:,.0f} records behind)"
    elif s.phase == "starting":
        what = "starting: waiting for the worker"
    else:
        what = s.phase
    speed = f" ({s.days_per_second:.1f} days/s)" if s.phase == "live" else ""
    return (f"{what} · event time {_day(s.event_time_ms)}{speed} · "
            f"{share} of the generated history sent")


def render(s: DemoStatus) -> RenderableType:
    """The live view: sources, tiers, totals, latest alerts and one customer's scorecard."""
    title = (f"scorestream demo · {_clock(s.elapsed)} · Kafka {s.bootstrap} · "
             f"worker pid {s.worker_pid} {'up' if s.worker_up else 'starting'}")
    top = Columns([_sources_table(s), _tiers_table(s), _totals_table(s)], padding=(0, 3))
    parts: list[RenderableType] = [Text(headline(s), style="bold"), top,
                                   _alerts_table(s), _spotlight(s),
                                   Text(f"Ctrl-C stops · {s.topics_note} · worker log "
                                        f"{s.worker_log}", style="dim")]
    return Panel(Group(*parts), title=title, title_align="left")


def _sources_table(s: DemoStatus) -> Table:
    table = Table(title="events/s per source", title_justify="left", box=None,
                  header_style="bold")
    table.add_column("source")
    table.add_column("sent/s", justify="right")
    table.add_column("read/s", justify="right")
    table.add_column("read", justify="right")
    for source in SOURCES:
        table.add_row(source, f"{s.produced_rate.get(source, 0):,.0f}",
                      f"{s.consumed_rate.get(source, 0):,.0f}",
                      f"{s.consumed.get(source, 0):,.0f}")
    return table


def _tiers_table(s: DemoStatus) -> Table:
    table = Table(title="customers per tier", title_justify="left", box=None,
                  header_style="bold")
    table.add_column("tier")
    table.add_column("customers", justify="right")
    table.add_column("", min_width=10)
    total = sum(s.tiers.values()) or 1.0
    for tier in TIERS:
        count = s.tiers.get(tier, 0.0)
        table.add_row(tier, f"{count:,.0f}", "█" * round(10 * count / total))
    return table


def _totals_table(s: DemoStatus) -> Table:
    table = Table(title="totals", title_justify="left", box=None, header_style="bold")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("events sent", f"{sum(s.produced.values()):,}")
    table.add_row("events scored", f"{s.scored:,.0f}")
    table.add_row("customers", f"{s.customers:,.0f}")
    table.add_row("score changes", f"{s.score_changes:,.0f}")
    table.add_row("alerts", f"{sum(s.alerts.values()):,}")
    table.add_row("dead letters", f"{sum(s.dead_letters.values()):,}")
    return table


def _alerts_table(s: DemoStatus) -> Table:
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(s.alerts.items())) or "none yet"
    table = Table(title=f"latest alerts ({counts})", title_justify="left", box=None,
                  header_style="bold", expand=True)
    table.add_column("event time", no_wrap=True)
    table.add_column("alert", no_wrap=True)
    table.add_column("customer", no_wrap=True)
    table.add_column("reason", overflow="ellipsis", no_wrap=True, ratio=1)
    for alert in s.latest_alerts:
        kind = str(alert.get("alert_type", "?"))
        table.add_row(_day(alert.get("event_time")), Text(kind, style=ALERT_STYLE.get(kind, "")),
                      str(alert.get("customer_id", "?")), str(alert.get("reason", "")))
    return table


def scorecard_lines(card: Mapping[str, Any]) -> list[str]:
    """A scorecard from the API as a few readable lines."""
    churn, ltv = card["churn"], card["ltv"]
    since = card.get("days_since_last_interaction")
    lines = [
        f"tier {card['tier']} · churn risk {churn['probability']:.2f} · engagement "
        f"{card['engagement']['score']:.0f}/100 · data completeness "
        f"{card['data_completeness']:.0f} %",
        f"lifetime value {ltv['historic']:,.2f} {card['currency']} (next 12 months "
        f"{ltv['predicted_12m']:,.2f}) · revenue 12 months {card['revenue_12m']:,.2f} · "
        f"{card['interactions_12m']} interactions in 12 months · "
        f"{'never' if since is None else f'{since} days since the last'}",
    ]
    lines += [f"why: {f['label']} ({f['contribution']:+.2f})" for f in churn["factors"][:3]]
    return lines


def _spotlight(s: DemoStatus) -> RenderableType:
    alert = s.spotlight_alert
    if alert is None:
        return Panel(Text("waiting for the first alert ...", style="dim"),
                     title="a customer who just crossed a threshold", title_align="left")
    customer = alert.get("customer_id", "?")
    title = f"{customer} just crossed a threshold: {alert.get('alert_type')}"
    said = Text(f"alert ({_day(alert.get('event_time'))}): {alert.get('reason', '')}\n",
                style=ALERT_STYLE.get(str(alert.get("alert_type")), ""))
    source = Text(f"scorecard now, from GET {s.web_url}/customers/{customer}/scorecard:\n",
                  style="dim")
    if s.spotlight_card is None:
        body = Text.assemble(said, Text(s.spotlight_error or "fetching ...", style="dim"))
    else:
        body = Text.assemble(said, source, "\n".join(scorecard_lines(s.spotlight_card)))
    return Panel(body, title=title, title_align="left")


def plain_line(s: DemoStatus) -> str:
    """The status as one line of plain text (when the output is not a terminal)."""
    sent = sum(s.produced.values())
    rate = sum(s.produced_rate.values())
    tiers = " ".join(f"{t} {s.tiers.get(t, 0):,.0f}" for t in TIERS)
    behind = f", worker {s.backlog:,.0f} behind" if s.backlog > 2 * s.target_rate else ""
    return (f"[{_clock(s.elapsed)}] {s.phase}{behind}: sent {sent:,} ({rate:,.0f}/s), scored "
            f"{s.scored:,.0f}, customers {s.customers:,.0f} ({tiers}), score changes "
            f"{s.score_changes:,.0f}, alerts {sum(s.alerts.values()):,}, dead letters "
            f"{sum(s.dead_letters.values()):,}, event time {_day(s.event_time_ms)}")


def alert_line(alert: Mapping[str, Any]) -> str:
    """One alert as a line of plain text."""
    return (f"alert {alert.get('alert_type')} {alert.get('customer_id')} "
            f"({_day(alert.get('event_time'))}): {alert.get('reason')}")


def summary(s: DemoStatus, worker_exit: int | None) -> list[str]:
    """The closing report."""
    sent = sum(s.produced.values())
    minutes = s.elapsed / 60
    lines = [
        f"scorestream demo ran {_clock(s.elapsed)} (event time reached {_day(s.event_time_ms)})",
        f"  sent:           {sent:,}  " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(s.produced.items())),
        f"  read by ingest: {sum(s.consumed.values()):,.0f}  " + ", ".join(
            f"{k} {v:,.0f}" for k, v in sorted(s.consumed.items())),
        f"  scored:         {s.scored:,.0f} events for {s.customers:,.0f} customers",
        "  tiers:          " + ", ".join(f"{t} {s.tiers.get(t, 0):,.0f}" for t in TIERS),
        f"  score changes:  {s.score_changes:,.0f}",
        f"  alerts:         {sum(s.alerts.values()):,}  " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(s.alerts.items())),
        f"  dead letters:   {sum(s.dead_letters.values()):,}  " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(s.dead_letters.items())),
    ]
    if minutes > 0 and sent:
        lines.append(f"  average rate:   {sent / s.elapsed:,.0f} events/s sent")
    exit_text = "still running" if worker_exit is None else f"exit code {worker_exit}"
    lines.append(f"  worker:         stopped with SIGTERM, {exit_text} (log: {s.worker_log})")
    return lines
