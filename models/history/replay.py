"""Replay: run the scoring core over a recorded history in event-time order, without Kafka.

Pure over iterables (the CLI in `streams/cli/replay.py` does files, gzip and the progress bar).
Raw source records are sorted by event time and passed through `models.ingest.routing.Ingestion`
(decode, dedupe, identity) exactly like the streaming ingest stage does; the canonical events
then go through the same `ScoringEngine` and `Learner` the workers use, batch by batch of event
time, with one learner publishing bundles every `publish_every_days` (or none: frozen models,
as a worker with `SCORESTREAM_MODEL_FROZEN` scores). Same input, same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from models.attribution.journey import Attribution, ClosedJourney, GoalReached
from models.attribution.paths import MAX_STEPS, JourneyTotals
from models.config import ScoringConfig
from models.ingest.routing import Ingestion
from models.learning.bundle import ModelBundle
from models.learning.learner import Learner
from models.scoring.alerts import AlertConfig, AlertRules
from models.scoring.engine import BatchOutcome, ScoringEngine
from models.scoring.features import activity_row, rfm
from models.scoring.labels import CHURN, DueIndex, TrainingExample
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from models.scoring.tiers import TierThresholds, ValueHistogram
from schemas.decode import Origin
from schemas.units import DAY_MS

__all__ = ["ReplayResult", "ingest", "parse_time", "replay", "sort_raw"]

_UNPARSABLE = 2**62  # sorts records without a usable time last; ingestion dead-letters them


@dataclass(slots=True)
class ReplayResult:
    """Final scorecards (sorted by customer id), alerts, quality report and counters.

    `tier_changes` lists every tier move between two consecutive scorecards of a customer
    (customer_id, event_time, from, to), in the order they were computed.
    `churn_examples` lists every resolved churn example the learner measured (held-back
    customers' too) as (resolved_at, label, logged prediction), in the order it saw them.
    `states` holds every customer's final state, by customer id. `attributions` lists the
    records of the attributions topic in the order the engine made them: every conversion's
    attribution, every null path found, every funnel goal completed.
    """

    scorecards: list[Scorecard]
    alerts: list[dict[str, Any]]
    quality: dict[str, Any]
    stats: dict[str, Any]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    bundle: ModelBundle | None = None
    tier_changes: list[dict[str, Any]] = field(default_factory=list)
    churn_examples: list[tuple[int, float, float]] = field(default_factory=list)
    states: dict[str, CustomerState] = field(default_factory=dict)
    attributions: list[Attribution | ClosedJourney | GoalReached] = field(default_factory=list)

    def conversions(self) -> list[Attribution]:
        """The conversions' attributions, in the order the engine made them."""
        return [a for a in self.attributions if isinstance(a, Attribution)]

    def journeys(self, max_steps: int = MAX_STEPS, funnel: tuple[str, ...] = ()
                 ) -> JourneyTotals:
        """The closed journeys and funnel goals added up, as an attribution reader adds up
        the same records from the topic."""
        totals = JourneyTotals(max_steps, funnel)
        for record in self.attributions:
            totals.add(record.to_record(emitted_at=0))
        return totals


def parse_time(value: str | int) -> int:
    """Epoch ms from an int or an RFC 3339 string (for `--as-of` and sorting raw records)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def sort_raw(lines: Iterable[bytes]) -> list[tuple[int, int, bytes, str]]:
    """Raw JSON lines -> (event time, input position, bytes, source), sorted by event time.

    Records that do not parse keep their bytes and sort last, so ingestion dead-letters them
    with the right reason instead of replay silently dropping them.
    """
    out = []
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        ts, source = _UNPARSABLE, "unknown"
        try:
            rec = orjson.loads(line)
            if isinstance(rec, dict):
                source = str(rec.get("source", "unknown"))
                ts = parse_time(rec["occurred_at"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            pass
        out.append((ts, i, line, source))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def ingest(
    records: Iterable[tuple[int, int, bytes, str]],
    ingestion: Ingestion | None = None,
    dead: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Canonical customer events from sorted raw records; dead letters appended to `dead`.

    `now_ms` is the record's own event time, so `ingested_at` is reproducible in a replay.
    """
    ing = ingestion or Ingestion()
    sink = dead if dead is not None else []
    now = 0
    for ts, offset, line, source in records:
        if ts != _UNPARSABLE:
            now = ts
        result = ing.process(Origin(source, 0, offset, None, line), source, now)
        sink.extend(result.dead)
        yield from result.accepted
    final = ing.flush(now)
    sink.extend(final.dead)
    yield from final.accepted


def replay(
    events: Iterable[dict[str, Any]],
    config: ScoringConfig | None = None,
    *,
    as_of_ms: int | None = None,
    batch_ms: int = DAY_MS,
    publish_every_days: int = 7,
    publish: bool = True,
    bundle: ModelBundle | None = None,
    progress: Callable[[int], None] | None = None,
    alert_config: AlertConfig | None = None,
) -> ReplayResult:
    """Score canonical customer events (ascending event time) and return the final picture.

    Events are coalesced per customer in batches of `batch_ms` of event time (the watermark
    is the batch end), labels come due through a `DueIndex`, and the learner publishes a new
    bundle every `publish_every_days` and a last one, fitted on every customer, at the end.
    With `publish=False` (frozen models) it learns and measures but publishes nothing: every
    scorecard comes from `bundle` (default: the initial models and tiers), as a worker with
    `SCORESTREAM_MODEL_FROZEN` scores. With `as_of_ms`, later events are ignored and every
    scorecard is computed as of that time. Events older than the current batch (late, or
    released by identity resolution) join the current batch: the state handles late events.
    """
    cfg = config or ScoringConfig()
    start = bundle or ModelBundle.initial(cfg)
    learner = Learner(cfg, start)
    engine = ScoringEngine(cfg, ModelBundle.restore(start.snapshot(), cfg))
    run = _Run(cfg, engine, learner, AlertRules(alert_config))
    batch: dict[str, list[dict[str, Any]]] = defaultdict(list)
    batch_end: int | None = None
    next_publish: int | None = None
    max_ts: int | None = None
    n = 0
    for e in events:
        n += 1
        if progress is not None and n % 4096 == 0:
            progress(4096)
        ts = e["occurred_at"]
        if as_of_ms is not None and ts > as_of_ms:
            run.skipped += 1
            continue
        max_ts = ts if max_ts is None else max(max_ts, ts)
        if batch_end is None:
            batch_end = (ts // batch_ms + 1) * batch_ms
            if publish:
                next_publish = batch_end + publish_every_days * DAY_MS
        if ts >= batch_end:
            run.flush(batch, batch_end - 1)
            batch = defaultdict(list)
            batch_end = (ts // batch_ms + 1) * batch_ms
            if next_publish is not None and batch_end >= next_publish:
                run.publish()
                next_publish = batch_end + publish_every_days * DAY_MS
        batch[e["customer_id"]].append(e)
    if progress is not None:
        progress(n % 4096)
    final_as_of = as_of_ms if as_of_ms is not None else (max_ts if max_ts is not None else 0)
    if batch:
        run.flush(batch, final_as_of)
    run.resolve(final_as_of)
    run.events = n
    return run.finish(final_as_of, publish=publish)


class _Run:
    """Mutable bookkeeping of one replay (states, due index, histogram, alerts)."""

    def __init__(self, cfg: ScoringConfig, engine: ScoringEngine, learner: Learner,
                 rules: AlertRules | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.learner = learner
        self.states: dict[str, CustomerState] = {}
        self.due = DueIndex()
        self.hist = ValueHistogram()
        self.values: dict[str, float] = {}
        self.rules = rules or AlertRules()
        self.budget = self.rules.budget()
        self.risk = ValueHistogram()
        self.risks: dict[str, float] = {}
        self.alerts: list[dict[str, Any]] = []
        self.tier_changes: list[dict[str, Any]] = []
        self.pending_examples: list[TrainingExample] = []
        self.churn_examples: list[tuple[int, float, float]] = []
        self.attributions: list[Attribution | ClosedJourney | GoalReached] = []
        self.events = 0
        self.applied = 0
        self.duplicates = 0
        self.erased = 0
        self.skipped = 0
        self.batches = 0
        self.examples = 0
        self.fitted_population = 0

    def flush(self, batch: dict[str, list[dict[str, Any]]], watermark: int) -> None:
        self.batches += 1
        for cid in sorted(batch):
            self.handle(self.engine.apply_batch(self.states.get(cid), batch[cid], watermark, cid))
        self.resolve(watermark)

    def resolve(self, watermark: int) -> None:
        for cid in self.due.pop_due(watermark):
            state = self.states.get(cid)
            if state is not None:
                self.handle(self.engine.resolve_due(state, watermark))
        if self.pending_examples:
            self.examples += len(self.pending_examples)
            self.churn_examples.extend(
                (ex.resolved_at, ex.label, ex.prediction)
                for ex in self.pending_examples if ex.model == CHURN
            )
            self.learner.learn(self.pending_examples)
            self.pending_examples = []

    def handle(self, out: BatchOutcome) -> None:
        cid = out.customer_id
        self.applied += out.applied
        self.duplicates += out.duplicates
        if out.erased or out.state is None:
            self.erased += 1
            self.states.pop(cid, None)
            self.hist.replace(self.values.pop(cid, None), None)
            self.risk.replace(self.risks.pop(cid, None), None)
            return
        self.states[cid] = out.state
        self.attributions.extend(out.attributions)
        if out.next_due is not None:
            self.due.push(out.next_due, cid)
        self.pending_examples.extend(out.training_examples)
        sc = out.scorecard
        if sc is None:
            return
        self.hist.replace(self.values.get(cid), sc.ltv_predicted_12m)
        self.values[cid] = sc.ltv_predicted_12m
        at_risk = sc.value_at_risk
        self.risk.replace(self.risks.get(cid), at_risk)
        self.risks[cid] = at_risk
        prev = out.previous_scorecard
        for card, _trigger in out.points:
            if prev is not None and prev.tier != card.tier:
                self.tier_changes.append({"customer_id": cid, "event_time": card.as_of,
                                          "from": prev.tier, "to": card.tier})
            prev = card
        self._alert(out)

    def _alert(self, out: BatchOutcome) -> None:
        """The alerts the live engine would raise; emitted_at is the event time (reproducible)."""
        alerts = self.rules.on_outcome(out, self.engine.bundle.tiers.at_risk_from, self.budget,
                                       len(self.states))
        self.alerts.extend(a.to_record(emitted_at=a.event_time) for a in alerts)

    def publish(self) -> None:
        pop = len(self.learner.population)
        if pop >= 50 and pop >= 1.25 * self.fitted_population:
            self.learner.refit_value()
            self.fitted_population = pop
        if self.learner.activity_due():
            self.learner.refit_activity()
        self.engine.bundle = self.learner.publish(self._tiers())

    def _tiers(self) -> TierThresholds:
        version = f"tiers-{self.learner.models.sequence + 1:05d}"
        return self.hist.thresholds(self.cfg.tier_cuts, version).with_risk_cut(
            self.risk, self.rules.config.budget_share)

    def finish(self, as_of: int, publish: bool = True) -> ReplayResult:
        if publish:
            # Final population fit on every buyer as of the dump time, then exact-time tiers.
            summaries = {cid: rfm(s, as_of) for cid, s in self.states.items()}
            self.learner.refit_value([v for v in summaries.values() if v is not None])
            rows = [activity_row(state, as_of) for state in self.states.values()]
            self.learner.refit_activity([row for row in rows if row is not None])
            model = self.learner.models.value
            final_hist = ValueHistogram()
            for v in summaries.values():
                final_hist.add(model.estimate(v).value)
            seq = self.learner.models.sequence + 1
            tiers = final_hist.thresholds(self.cfg.tier_cuts, f"tiers-{seq:05d}")
            self.engine.bundle = self.learner.publish(
                tiers.with_risk_cut(self.risk, self.rules.config.budget_share))
        else:  # frozen: the models that scored are the start bundle's
            model = self.engine.bundle.value
        bundle = self.engine.bundle
        cards = [self.engine.score(self.states[cid], as_of) for cid in sorted(self.states)]
        quality = self.learner.report()
        sizes = sorted(len(s.snapshot()) for s in self.states.values()) or [0]
        stats = {
            "events": self.events,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "skipped_after_as_of": self.skipped,
            "erased": self.erased,
            "customers": len(self.states),
            "batches": self.batches,
            "training_examples": self.examples,
            "as_of": as_of,
            "state_bytes": {
                "median": sizes[len(sizes) // 2],
                "mean": round(sum(sizes) / len(sizes)),
                "p95": sizes[int(0.95 * (len(sizes) - 1))],
            },
            "model_versions": bundle.versions(),
            "value_params": {
                "bgnbd": model.to_dict()["bgnbd"],
                "gamma_gamma": model.to_dict()["gamma_gamma"],
                "fitted_on": model.fitted_on,
            },
        }
        return ReplayResult(
            cards, self.alerts, quality, stats, bundle=bundle, tier_changes=self.tier_changes,
            churn_examples=self.churn_examples, states=self.states,
            attributions=self.attributions,
        )
