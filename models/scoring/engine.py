"""The scoring engine shared by the scoring stage and replay: apply, resolve, score.

Per customer and batch, the engine walks the customer's timeline in event-time order: each
label that comes due before the next event is resolved as of its due time, each event is
applied and scored as of its own time, and a model with no pending label takes a new feature
snapshot from the very features just scored. Each of these scorecards is a point the alert
rules see (`BatchOutcome.points`), so what a customer's scorecards, labels and alerts are
depends on its events, never on how they were batched. The engine holds no customer state of
its own: state goes in and comes out, so any worker that owns the partition can continue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.attribution.journey import (
    Attribution,
    ClosedJourney,
    GoalReached,
    Journey,
    conversion_of,
    touch_of,
)
from models.attribution.markov import DataDrivenModel
from models.config import TOUCH, AttributionConfig, ScoringConfig
from models.kpi.surveys import advocacy
from models.learning.bundle import ModelBundle
from models.learning.churn import CANCELLED_CHURN, logit, segment_of
from models.scoring.features import (
    FEATURE_NAMES,
    RFM_NAMES,
    UPSELL_NAMES,
    activity,
    observe,
    rfm,
    summary_row,
    unvector,
    upsell_features,
    vector,
)
from models.scoring.labels import (
    ADVOCACY,
    CHURN,
    ENGAGEMENT,
    MODEL_NAMES,
    UPSELL,
    VALUE,
    PendingLabel,
    TrainingExample,
)
from models.scoring.scorecard import Scorecard, cohort_of, recent_nps
from models.scoring.state import REVENUE_CENTS, CustomerState
from schemas.units import DAY_MS

__all__ = [
    "ACTIVITY_POPULATION",
    "SILENT_SNAPSHOT_MS",
    "VALUE_MIN_AGE_DAYS",
    "VALUE_POPULATION",
    "BatchOutcome",
    "ScoringEngine",
    "event_order",
    "is_holdout",
    "timeline_time",
]

#: Training-example kind carrying a customer's current RFM summary for the population fit.
VALUE_POPULATION = "value_population"
#: Training-example kind carrying a customer's active-day summary (x, t_x, T) for the churn
#: baseline's population fit: sent when a churn snapshot is taken and when its label resolves.
ACTIVITY_POPULATION = "activity_population"
#: How long a silent customer keeps getting churn snapshots (one per horizon).
SILENT_SNAPSHOT_MS = 365 * DAY_MS
#: Days since first purchase before a value snapshot is worth taking.
VALUE_MIN_AGE_DAYS = 30


def is_holdout(customer_id: str, fraction: float) -> bool:
    """Stable, process-independent assignment of a customer to the held-back evaluation set."""
    h = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


@dataclass(slots=True)
class BatchOutcome:
    """What one customer's batch produced.

    `state` is None when the customer was erased. `scorecard` is None when nothing changed
    (every event a redelivery and no label due). `previous_scorecard` is the last one computed
    for this customer (kept inside the state), for alerts and the value aggregates.
    `attributions` holds the records of the attributions topic the batch made, in event
    order: an `Attribution` per conversion, a `ClosedJourney` per null path found, a
    `GoalReached` per funnel goal completed.
    """

    customer_id: str
    state: CustomerState | None
    scorecard: Scorecard | None
    previous_scorecard: Scorecard | None
    training_examples: list[TrainingExample] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    erased: bool = False
    next_due: int | None = None
    last_event_id: str | None = None
    attributions: list[Attribution | ClosedJourney | GoalReached] = field(default_factory=list)
    points: list[tuple[Scorecard, str | None]] = field(default_factory=list)
    """The customer's timeline in this batch: a scorecard after each event applied (with its
    event id) and at each due time resolved (None), in event-time order; `scorecard` is the
    last. The alert rules walk them all, so batching never hides a crossing."""


class ScoringEngine:
    """Pure scoring core for one partition (or a whole replay).

    >>> engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    >>> day = 86_400_000
    >>> ev = {"event_id": "w1", "event_type": "page_view", "source": "web",
    ...       "occurred_at": 10 * day, "customer_id": "C1", "payload": {"url": "/"}}
    >>> out = engine.apply_batch(None, [ev], watermark_ms=10 * day)
    >>> out.scorecard.interactions_12m, out.scorecard.days_since_last_interaction
    (1, 0)
    >>> sorted(out.state.pending), out.next_due == 40 * day
    (['churn', 'engagement'], True)
    >>> later = engine.resolve_due(out.state, watermark_ms=40 * day)
    >>> [(e.model, e.label) for e in later.training_examples]
    [('engagement', 0.0)]
    >>> later.scorecard.days_since_last_interaction
    30
    """

    def __init__(self, config: ScoringConfig | None = None, bundle: ModelBundle | None = None):
        self.config = config or ScoringConfig()
        self.bundle = bundle or ModelBundle.initial(self.config)
        cfg = self.config
        self._attribution: AttributionConfig | None = (
            cfg.attribution if cfg.attribution.kinds else None)
        """Attribution's settings when some event is a touch or a conversion, else None."""
        self._horizon = {
            CHURN: cfg.churn_horizon_days * DAY_MS,
            ENGAGEMENT: cfg.engagement_horizon_days * DAY_MS,
            VALUE: cfg.value_horizon_days * DAY_MS,
            UPSELL: cfg.upsell_horizon_days * DAY_MS,
        }
        self._versions: dict[str, str] | None = None
        """`bundle.versions()` of `_versions_of`: one dict shared by the scorecards of a
        bundle (a new bundle is a new object; its versions never change)."""
        self._versions_of: ModelBundle | None = None
        self.data_driven: DataDrivenModel | None = None
        """The data-driven model conversions are credited by (None: none yet). The
        attribution reader of a worker swaps in a new one now and then, from another
        thread: one reference, read once per conversion."""

    # -- the two entry points -------------------------------------------------------------

    def apply_batch(
        self,
        state: CustomerState | None,
        events: list[dict[str, Any]],
        watermark_ms: int,
        customer_id: str | None = None,
        held_before: Mapping[int, list[list[int]]] | None = None,
    ) -> BatchOutcome:
        """Apply one customer's events in event-time order, scoring after each, and resolve
        the labels that fall due before each event and by the watermark at their own times.

        Every scorecard is as of the customer's own time (its event, or the due time it was
        scored at), never the batch's: what a customer's scorecards and alerts are depends
        on its events alone, not on how they were batched with other customers' or with each
        other. A `customer_erased` event drops the state and everything in it (pending
        snapshots included); the batch's other events for that customer are dropped with it.
        """
        cid = customer_id or (state.customer_id if state else events[0]["customer_id"])
        prev = _previous(state) if state is not None else None
        last_id = events[-1]["event_id"] if events else None
        for e in events:
            if e["event_type"] == "customer_erased":
                return BatchOutcome(cid, None, None, prev, erased=True, last_event_id=last_id)
        if state is None:
            state = CustomerState(cid, self.config)
        applied = 0
        # Redelivered releases first, in arrival order (their positions follow it), or in the
        # identity merge's order with `held_before` (per index in `events`, the positions of
        # the same identity partition's releases still held before it: CustomerState.first_release).
        held_before = held_before or {}
        if len(events) == 1:  # most batches of a live stream: one event per customer
            fresh = events if state.first_release(events[0], held_before.get(0)) else []
        else:
            fresh = [e for k, e in enumerate(events) if state.first_release(e, held_before.get(k))]
        attribution = self._attribution
        attributions: list[Attribution | ClosedJourney | GoalReached] = []
        funnel = attribution is not None and bool(attribution.funnel)
        examples: list[TrainingExample] = []
        points: list[tuple[Scorecard, str | None]] = []
        every = self.config.score_every_event
        unscored: tuple[int, str] | None = None
        """(time, id) of the last event applied but not scored yet (scoring once per batch)."""
        for e in sorted(fresh, key=event_order) if len(fresh) > 1 else fresh:
            at = timeline_time(e)
            if state.pending:  # labels due before this event are resolved as of their time
                self._resolve_until(state, at - 1, examples, points)
            answer = (self._nps_example(state, e) if e["event_type"] == "survey_answered"
                      else None)
            if not state.apply(e):
                continue
            applied += 1
            if answer is not None:
                examples.append(answer)
            if attribution is not None:
                kind = attribution.kinds.get((e["source"], e["event_type"]))
                if kind is not None:
                    self._journey(state, e, kind, attribution, attributions)
                if funnel and e["event_type"] == "goal_completed":
                    self._goal(state, e, attribution, attributions)
            if every:
                self._event_point(state, at, e["event_id"], examples, points)
            else:
                unscored = (at, e["event_id"])
        if unscored is not None:
            self._event_point(state, unscored[0], unscored[1], examples, points)
        if state.pending:
            self._resolve_until(state, watermark_ms, examples, points)
        dups = len(events) - applied
        if not points:
            return BatchOutcome(
                cid, state, None, prev, examples, 0, dups, False, state.next_due(), last_id
            )
        scorecard = points[-1][0]
        state.last = scorecard.to_row()
        return BatchOutcome(
            cid, state, scorecard, prev, examples, applied, dups, False, state.next_due(), last_id,
            attributions, points,
        )

    def resolve_due(self, state: CustomerState, watermark_ms: int) -> BatchOutcome:
        """Resolve the labels due by the watermark of a customer with no new events, each as
        of its due time, rescoring at each (`_resolve_until`)."""
        prev = _previous(state)
        examples: list[TrainingExample] = []
        points: list[tuple[Scorecard, str | None]] = []
        self._resolve_until(state, watermark_ms, examples, points)
        if not points:
            return BatchOutcome(state.customer_id, state, None, prev, examples,
                                next_due=state.next_due())
        scorecard = points[-1][0]
        state.last = scorecard.to_row()
        return BatchOutcome(state.customer_id, state, scorecard, prev, examples,
                            next_due=state.next_due(), points=points)

    def _event_point(self, state: CustomerState, at: int, event_id: str,
                     examples: list[TrainingExample],
                     points: list[tuple[Scorecard, str | None]]) -> None:
        """Score the customer after its event at `at` (a point of its timeline), resolving
        the labels that event decided, and snapshot each model that has no pending label."""
        as_of = _timeline_time(state, at)  # a late event is scored as of now, not then
        active = activity(state, as_of)
        resolved = self._resolve(state, as_of, active)
        if resolved:
            examples.extend(resolved)
        scorecard, feats, summary, upsell = self._score(state, as_of, active)
        shared: dict[str, tuple[float, ...]] = {}
        for model in MODEL_NAMES:
            if model not in state.pending:
                self._take_snapshot(state, model, as_of, feats, summary, active, scorecard,
                                    examples, shared)
        if upsell is not None and UPSELL not in state.pending:
            self._upsell_snapshot(state, as_of, upsell, scorecard)
        state.card = scorecard
        points.append((scorecard, event_id))

    def _resolve_until(self, state: CustomerState, until_ms: int,
                       examples: list[TrainingExample],
                       points: list[tuple[Scorecard, str | None]]) -> None:
        """Resolve every label due by `until_ms`, in due-time order, each as of its due time:
        rescore there (a point of the customer's timeline, for the alert rules) and take a
        fresh snapshot for a model whose customer is still active (interacted within its
        horizon), so active customers keep producing one example per horizon while silent
        ones stop after their churn is recorded."""
        before = None
        while True:
            due_at = state.next_due()
            if due_at is None or due_at > until_ms or (before is not None and due_at <= before):
                return  # (the last: a horizon of zero would come due again at once)
            before = due_at
            as_of = _timeline_time(state, due_at)
            resolved = [m for m, p in state.pending.items() if p.is_due(as_of)]
            active = activity(state, as_of)
            found = self._resolve(state, as_of, active)
            examples.extend(found)
            scorecard, feats, summary, upsell = self._score(state, as_of, active)
            last_int = state.last_interaction_ms
            shared: dict[str, tuple[float, ...]] = {}
            for model in resolved:
                # Churn keeps taking snapshots of a silent customer for a year of silence, so
                # that it learns (and is judged) on customers as they are when they are
                # scored, long quiet ones included, not only right after they were active.
                follow = SILENT_SNAPSHOT_MS if model == CHURN else self._horizon[model]
                recent = last_int is not None and as_of - last_int < follow
                if model not in state.pending and recent:
                    if model == UPSELL:
                        if upsell is not None:
                            self._upsell_snapshot(state, as_of, upsell, scorecard)
                        continue
                    self._take_snapshot(state, model, as_of, feats, summary, active, scorecard,
                                        examples, shared)
            state.card = scorecard
            points.append((scorecard, None))

    def score(self, state: CustomerState, as_of_ms: int) -> Scorecard:
        """The scorecard as of `as_of_ms` without changing anything (API reads, final dumps),
        with the predicted P(promoter)."""
        return self._score(state, as_of_ms, activity(state, as_of_ms), read=True)[0]

    # -- internals ------------------------------------------------------------------------

    def _journey(self, state: CustomerState, event: dict[str, Any], kind: str,
                 attribution: AttributionConfig,
                 out: list[Attribution | ClosedJourney | GoalReached]) -> None:
        """Keep a touch in the customer's journey, or attribute a conversion over it (once
        per conversion id); either first closes an open path that passed the lookback."""
        journey = _journey_of(state)
        stale = journey.close_stale(event, attribution)
        if stale is not None:
            out.append(stale)
        if kind == TOUCH:
            journey.add(touch_of(event, attribution), attribution)
            return
        done = journey.attribute(conversion_of(event, self.config), event, attribution,
                                 self.data_driven)
        if done is not None:
            out.append(done)

    @staticmethod
    def _goal(state: CustomerState, event: dict[str, Any], attribution: AttributionConfig,
              out: list[Attribution | ClosedJourney | GoalReached]) -> None:
        """A completed goal's place in the funnel."""
        reached = _journey_of(state).goal(event, attribution)
        if reached is not None:
            out.append(reached)

    def _features(self, state: CustomerState, as_of: int,
                  active: tuple[float, float, float] | None) -> tuple[Any, ...]:
        """Key values, behavioural features with the churn baseline's answer among them, the
        baseline's (probability, P(alive), P(quiet)), whether a subscription was cancelled
        and the churn segment, as of `as_of`."""
        kv, feats = observe(state, as_of)
        cancelled = state.cancelled_ms is not None and not state.subscription_active
        segment = segment_of(feats["orders_only"])
        base = self.bundle.churn.baseline(active, cancelled, segment)
        feats["baseline_churn"] = logit(base[0])
        return kv, feats, base, cancelled, segment

    def _score(
        self, state: CustomerState, as_of: int, active: tuple[float, float, float] | None,
        read: bool = False,
    ) -> tuple[Scorecard, dict[str, float], dict[str, float] | None, dict[str, float] | None]:
        """The scorecard, the features it was scored from, the RFM summary and the upsell
        features (None: nothing to upsell from); `active` is the state's `activity` as of
        `as_of` (computed once per point by the caller).

        P(promoter) only when the scorecard is `read` (`score`): it moves slowly, nothing
        fires on it, and on every event it would cost a sixth of the scoring."""
        kv, feats, (p_base, alive, quiet), cancelled, segment = self._features(
            state, as_of, active)
        summary = rfm(state, as_of)
        b = self.bundle
        churn = b.churn.predict(feats, segment, p_base)
        if cancelled and churn.value < CANCELLED_CHURN:  # decisive, whichever model serves
            churn = churn._replace(value=CANCELLED_CHURN)
        churn_factors = churn.factors or b.churn.baseline_factors(alive, quiet)
        engagement = b.engagement.predict(feats)
        value = b.value.estimate(summary)
        upsell_x = upsell_features(state, feats)
        upsell = b.upsell.predict(upsell_x) if upsell_x is not None else None
        surveys = _surveys(state.surveys) if state.surveys else ()
        sums = state.window_sums(as_of // DAY_MS)  # as `observe` left them: no work
        quarter, half = sums[90][REVENUE_CENTS], sums[180][REVENUE_CENTS]
        promoter = None
        if read and b.advocacy.ready and recent_nps(surveys, as_of) is None:
            promoter = b.advocacy.predict(feats)
        versions = self._versions
        if versions is None or self._versions_of is not b:
            versions, self._versions_of = b.versions(), b
            self._versions = versions
        # Every field in order (`Scorecard.of`: no keyword __init__ on the hot path).
        sc = Scorecard.of(
            state.customer_id,
            as_of,
            kv.data_completeness,
            kv.ltv_historic,
            _rounded(value.value, 2),  # ltv_predicted_12m
            engagement.value,
            kv.revenue_12m,
            kv.interactions_12m,
            kv.days_since_last_interaction,
            churn.value,
            churn_factors,
            engagement.factors,
            _rounded(value.expected_orders, 4),
            _rounded(value.p_alive, 4),
            b.tiers.tier(value.value, _previous_tier(state)),
            versions,
            self.config.base_currency,
            surveys,
            state.n_orders,
            cohort_of(state.first_order_ms),
            state.acquired[1] if state.acquired is not None else None,  # acquisition channel
            None if upsell is None else upsell.value,
            () if upsell is None else upsell.factors,
            None if promoter is None else promoter.value,
            None if promoter is None else (promoter.low, promoter.high),
            () if promoter is None else promoter.factors,
            quarter / 100,  # revenue_90d
            (half - quarter) / 100,  # revenue_prior_90d
        )
        return sc, feats, summary, upsell_x

    def _upsell_snapshot(self, state: CustomerState, as_of: int, x: dict[str, float],
                         scorecard: Scorecard) -> None:
        """A pending upsell label from the upsell features just scored."""
        state.pending[UPSELL] = PendingLabel(
            UPSELL, as_of, as_of + self._horizon[UPSELL], vector(x, UPSELL_NAMES),
            scorecard.upsell_probability or 0.0, scorecard.model_versions[UPSELL])

    def _nps_example(self, state: CustomerState,
                     event: dict[str, Any]) -> TrainingExample | None:
        """An NPS answer is the advocacy model's label: its example holds the customer's
        features from just before the answer (the state has not applied it yet) and what the
        model said of it then (`challenger`, None while it said nothing)."""
        payload = event.get("payload") or {}
        score = payload.get("score")
        if payload.get("survey") != "nps" or not isinstance(score, int) or state.last_ms is None:
            return None  # a first event says nothing about the customer before it
        at = event["occurred_at"]
        feats = self._features(state, at, activity(state, at))[1]
        model = self.bundle.advocacy
        said = model.probability(feats)
        return TrainingExample(
            ADVOCACY, state.customer_id, unvector(vector(feats, FEATURE_NAMES), FEATURE_NAMES),
            1.0 if advocacy(score) == "promoter" else 0.0, said if said is not None else 0.0,
            model.version, at, at, is_holdout(state.customer_id, self.config.holdout_fraction),
            said)

    def _take_snapshot(
        self,
        state: CustomerState,
        model: str,
        as_of: int,
        feats: dict[str, float],
        summary: dict[str, float] | None,
        active: tuple[float, float, float] | None,
        scorecard: Scorecard,
        examples: list[TrainingExample],
        shared: dict[str, tuple[float, ...]],
    ) -> None:
        """A pending label for `model` from the features just scored. `shared` carries the
        feature vector from one model's snapshot to the next (churn and engagement use the
        same one)."""
        versions = scorecard.model_versions
        if model == VALUE:
            # A customer on their first purchase day has an RFM identical to every other new
            # buyer's: the snapshot would measure nothing, so wait for some history.
            if summary is None or summary["T"] < VALUE_MIN_AGE_DAYS:
                return
            vec = vector(summary, RFM_NAMES)
            prediction = scorecard.expected_orders_12m
            examples.append(
                TrainingExample(
                    VALUE_POPULATION,
                    state.customer_id,
                    summary,
                    0.0,
                    prediction,
                    versions[VALUE],
                    as_of,
                    as_of,
                )
            )
        else:
            cached = shared.get("features")
            vec = shared["features"] = cached if cached is not None else vector(
                feats, FEATURE_NAMES)
            prediction = (scorecard.churn_probability if model == CHURN else
                          round(self.bundle.engagement.expected_interactions(feats)[0], 4))
            if model == CHURN:
                self._activity_example(state, as_of, active, versions[CHURN], examples)
        challenger = None
        if model == CHURN:
            challenger = self.bundle.churn.classifier_probability(feats)
            if challenger is not None:
                challenger = round(challenger, 4)
        state.pending[model] = PendingLabel(
            model, as_of, as_of + self._horizon[model], vec, prediction, versions[model],
            challenger=challenger)

    def _resolve(self, state: CustomerState, as_of: int,
                 active: tuple[float, float, float] | None) -> list[TrainingExample]:
        due: list[str] = []
        for model, pending in state.pending.items():
            if pending.is_due(as_of):
                due.append(model)
        if not due:
            return []
        out: list[TrainingExample] = []
        holdout = is_holdout(state.customer_id, self.config.holdout_fraction)
        for model in sorted(due):
            p = state.pending[model]
            del state.pending[model]
            names = (RFM_NAMES if model == VALUE else
                     UPSELL_NAMES if model == UPSELL else FEATURE_NAMES)
            if len(p.features) != len(names):
                continue  # taken with another feature set: nothing to learn from it
            if model == CHURN:
                self._activity_example(state, as_of, active, self.bundle.churn.version, out)
            out.append(
                TrainingExample(
                    model=model,
                    customer_id=state.customer_id,
                    features=unvector(p.features, names),
                    label=p.label(),
                    prediction=p.prediction,
                    version=p.version,
                    taken_at=p.taken_at,
                    resolved_at=p.resolved_at(),
                    holdout=holdout,
                    challenger=p.challenger,
                )
            )
        return out

    @staticmethod
    def _activity_example(state: CustomerState, as_of: int,
                          active: tuple[float, float, float] | None, version: str,
                          examples: list[TrainingExample]) -> None:
        """The customer's active-day summary now (`active`), for the churn baseline's
        population fit."""
        row = summary_row(active, state.orders_only)
        if row is None:
            return
        examples.append(TrainingExample(
            ACTIVITY_POPULATION, state.customer_id, row, 0.0, 0.0, version, as_of, as_of))


def _rounded(x: float, digits: int) -> float:
    """round(x, digits), without the call for zero (no order: no value to round).

    Rounding a float to some digits goes through its decimal string, which costs more than
    the rest of a scorecard field; zero (either sign) rounds to itself.
    """
    return round(x, digits) if x else x


def _timeline_time(state: CustomerState, at: int) -> int:
    """The time a point of the customer's timeline at `at` is scored as of: never before its
    last event or its last scorecard (a late event, or a label resolved late, is scored as of
    the customer's present, not back in its past)."""
    last_ms, card = state.last_ms, state.card
    if last_ms is not None and last_ms > at:
        at = last_ms
    if card is not None and card.as_of > at:
        at = card.as_of
    return at


def _previous_tier(state: CustomerState) -> str | None:
    """The tier of the customer's last scorecard (for the tiers' hysteresis)."""
    card = state.card
    if card is not None:
        return str(card.tier)
    return state.last[_TIER_FIELD] if state.last else None


_TIER_FIELD = 14
"""Index of the tier in `Scorecard.to_row`."""


def _previous(state: CustomerState) -> Scorecard | None:
    """The last scorecard computed for this customer, kept as an object on the state (its time
    is where the customer's timeline goes on from: `_timeline_time`)."""
    if not state.last:
        return None
    card = state.card
    if card is None:
        card = state.card = Scorecard.from_row(state.last)
    return card


def timeline_time(e: dict[str, Any]) -> int:
    """Where an event sits on its customer's timeline: its own time, or for an alias-only
    event held until a link named its customer, the link's time (`linked_at`): it became
    the customer's then, and scoring it there is what every run agrees on (a replay and
    workers that release it at different moments)."""
    linked = e.get("linked_at")
    at: int = e["occurred_at"]
    return linked if linked is not None and linked > at else at


def event_order(e: dict[str, Any]) -> tuple[int, int, int, str]:
    """The order a customer's events are applied in: by `timeline_time`, an event released by
    its link before the linking event and others of the same time, then by own time and id.

    >>> first = {"event_id": "w-1", "occurred_at": 100, "linked_at": 300}
    >>> link = {"event_id": "w-3", "occurred_at": 300}
    >>> between = {"event_id": "c-2", "occurred_at": 200}
    >>> [e["event_id"] for e in sorted([link, first, between], key=event_order)]
    ['c-2', 'w-1', 'w-3']
    """
    at: int = e["occurred_at"]
    placed = timeline_time(e)
    return placed, 0 if placed > at else 1, at, e["event_id"]


def _surveys(answers: dict[str, list[int]]) -> tuple[tuple[str, int, int], ...]:
    """A state's latest survey answers as the scorecard holds them: (survey, score, at)."""
    return tuple([(name, answers[name][1], answers[name][0]) for name in sorted(answers)])


def _journey_of(state: CustomerState) -> Journey:
    """The customer's journey, started empty when it has none yet."""
    if state.journey is None:
        state.journey = Journey()
    return state.journey
