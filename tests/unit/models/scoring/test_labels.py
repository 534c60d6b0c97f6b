"""Delayed labels: no leakage, labels resolve in event time, due index, erasure."""

from __future__ import annotations

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.learning.learner import Learner
from models.scoring.engine import ACTIVITY_POPULATION, VALUE_POPULATION, ScoringEngine
from models.scoring.labels import CHURN, ENGAGEMENT, VALUE, DueIndex, TrainingExample
from models.scoring.state import CustomerState
from tests.kit import at, ev


def engine() -> ScoringEngine:
    return ScoringEngine(ScoringConfig(holdout_fraction=0.0), ModelBundle.initial())


def test_snapshot_features_never_change_and_labels_count_only_after_snapshot() -> None:
    eng = engine()
    out = eng.apply_batch(
        None,
        [
            ev("w1", "page_view", 0, url="/"),
            ev("o1", "order_placed", 0, order_id="o1", amount=10.0, currency="EUR"),
        ],
        at(0),
    )
    state = out.state
    assert state is not None
    frozen = {m: p.features for m, p in state.pending.items()}
    assert set(frozen) == {CHURN, ENGAGEMENT}  # value waits for 30 days of purchase history
    # a late event from *before* the snapshot and later events after it
    later = [
        ev("w0", "page_view", -5, url="/"),
        ev("w2", "page_view", 10, url="/"),
        ev("w3", "page_view", 20, url="/"),
    ]
    out = eng.apply_batch(state, later, at(20))
    assert {m: p.features for m, p in out.state.pending.items()} == frozen
    assert out.training_examples == []  # nothing due yet: nothing learnable
    assert out.state.pending[ENGAGEMENT].interactions == 2  # w0 is before the snapshot
    out = eng.resolve_due(out.state, at(30))
    (ex,) = out.training_examples
    assert (ex.model, ex.label, ex.taken_at, ex.resolved_at) == (ENGAGEMENT, 2.0, at(0), at(30))
    assert tuple(ex.features[k] for k in ex.features) == frozen[ENGAGEMENT]
    out = eng.apply_batch(out.state, [ev("w4", "page_view", 35, url="/")], at(35))
    value = out.state.pending[VALUE]
    assert (value.taken_at, value.features) == (at(35), (0.0, 0.0, 35.0, 1.0, 10.0))


def test_churn_resolves_early_on_cancellation_and_by_silence_at_horizon() -> None:
    eng = engine()
    out = eng.apply_batch(None, [ev("s1", "subscription_started", 0)], at(0))
    out = eng.apply_batch(out.state, [ev("c1", "subscription_cancelled", 40)], at(40))
    churn = [e for e in out.training_examples if e.model == CHURN]
    assert [(e.label, e.resolved_at) for e in churn] == [(1.0, at(40))]

    out = eng.apply_batch(None, [ev("w1", "page_view", 0, customer_id="C2", url="/")], at(0))
    early = eng.resolve_due(out.state, at(89.99)).training_examples
    assert [e.model for e in early] == [ENGAGEMENT]  # its 30-day horizon passed; churn's not
    out = eng.resolve_due(out.state, at(90))
    churn = [e for e in out.training_examples if e.model == CHURN]
    assert [(e.label, e.resolved_at) for e in churn] == [(1.0, at(90))]  # silent whole horizon


def test_active_customer_label_zero_and_resnapshot() -> None:
    eng = engine()
    out = eng.apply_batch(None, [ev("w1", "page_view", 0, url="/")], at(0))
    out = eng.apply_batch(out.state, [ev("w2", "page_view", 80, url="/")], at(80))
    out = eng.resolve_due(out.state, at(90))
    churn = [e for e in out.training_examples if e.model == CHURN]
    assert [e.label for e in churn] == [0.0]
    assert out.state.pending[CHURN].taken_at == at(90)  # still active: a fresh snapshot


def test_learner_never_learns_before_the_label_is_known_and_logs_predictions_first() -> None:
    """Replay a journey day by day; at every step the learner has only seen resolved labels."""
    cfg = ScoringConfig(holdout_fraction=0.0)
    learner = Learner(cfg)
    eng = ScoringEngine(cfg, learner.publish())
    states: dict[str, CustomerState] = {}
    due = DueIndex()
    learned: list[TrainingExample] = []
    predictions_at_snapshot: dict[tuple[str, int], float] = {}

    def record(out) -> None:
        cid = out.customer_id
        states[cid] = out.state
        if out.next_due is not None:
            due.push(out.next_due, cid)
        for m, p in out.state.pending.items():
            if m == CHURN and out.scorecard is not None and p.taken_at == out.scorecard.as_of:
                predictions_at_snapshot[(cid, p.taken_at)] = out.scorecard.churn_probability
        learned.extend(e for e in out.training_examples
                       if e.model not in (VALUE_POPULATION, ACTIVITY_POPULATION))

    for day in range(0, 400):
        wm = at(day + 0.999)
        for cid in ("A", "B", "C"):
            if (
                (cid == "A" and day % 3 == 0)
                or (cid == "B" and day < 50)
                or (cid == "C" and day % 100 == 0)
            ):
                out = eng.apply_batch(
                    states.get(cid),
                    [ev(f"{cid}{day}", "page_view", day + 0.5, customer_id=cid, url="/")],
                    wm,
                )
                record(out)
        for cid in due.pop_due(wm):
            record(eng.resolve_due(states[cid], wm))
        for ex in learned:
            assert ex.resolved_at <= wm  # known by now
            assert ex.taken_at < ex.resolved_at
            if ex.model == CHURN:
                assert ex.prediction == predictions_at_snapshot[(ex.customer_id, ex.taken_at)]
        learner.learn(learned)
        learned = []
        if day % 7 == 0:
            eng.bundle = learner.publish()
    assert learner.quality["churn"].n > 5


def test_due_index_rebuild_from_states_and_erasure_drops_pending() -> None:
    eng = engine()
    s1 = eng.apply_batch(None, [ev("w1", "page_view", 0, customer_id="C1", url="/")], at(0)).state
    s2 = eng.apply_batch(None, [ev("w2", "page_view", 5, customer_id="C2", url="/")], at(5)).state
    idx = DueIndex()
    idx.rebuild((s.customer_id, s.due_times()) for s in (s1, s2))
    assert idx.pop_due(at(30)) == ["C1"]
    assert idx.pop_due(at(95)) == ["C2", "C1"]  # C2 first (engagement due at day 35)
    out = eng.apply_batch(s1, [ev("x", "customer_erased", 6, customer_id="C1")], at(6))
    assert out.erased and out.state is None and out.scorecard is None


def test_pending_roundtrips_through_state_snapshot() -> None:
    eng = engine()
    s = eng.apply_batch(None, [ev("w1", "page_view", 0, url="/")], at(0)).state
    r = CustomerState.restore(s.snapshot())
    assert {m: (p.features, p.due_at) for m, p in r.pending.items()} == {
        m: (p.features, p.due_at) for m, p in s.pending.items()
    }
