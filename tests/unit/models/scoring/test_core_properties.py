"""Property tests of the scoring core on schema-valid events with extreme values.

The decoder's property tests show that no byte sequence makes it raise. These go one stage
further: whatever the contract accepts (amounts at its bound, the longest ids, every unicode
class, times at the edges of the accepted range) must flow through apply, features, scoring,
alerts, serialisation, snapshot and restore without raising, and a snapshot must round-trip.
Every event is first put through the real decoder, so only contract-valid events are used.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.scoring.alerts import AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from schemas.decode import MAX_AMOUNT, MIN_EVENT_TIME_MS, DecodedEvent, decode_source_event
from schemas.registry import SOURCES, examples
from streams.metrics import Metrics
from streams.stages.scoring import ScoringHandler
from tests.kit import DAY_MS, SCORING_TOPICS, assign, ev, feed, sent

NOW = 1_767_605_400_000
TEMPLATES = [(source, example) for source in SOURCES for example in examples(source)
             if example.get("event_type") != "customer_erased"]
TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=128)
TIMES = st.one_of(st.sampled_from([MIN_EVENT_TIME_MS, NOW, NOW + 3_599_999]),
                  st.integers(MIN_EVENT_TIME_MS, NOW))
MONEY = st.one_of(st.sampled_from([0, 0.0, 0.005, 1e-300, MAX_AMOUNT, MAX_AMOUNT - 0.01]),
                  st.floats(0, MAX_AMOUNT), st.integers(0, int(MAX_AMOUNT)))
SCORES = {"csat": st.integers(1, 5), "sentiment": st.sampled_from([-1, -1.0, 0, 1, 0.3])}
ENGINE = ScoringEngine()
RULES = AlertRules()


@st.composite
def valid_events(draw: st.DrawFn, customer_id: str) -> dict[str, Any]:
    """A canonical customer event the decoder accepted, with extreme values where allowed."""
    source, template = draw(st.sampled_from(TEMPLATES))
    obj = copy.deepcopy(template)
    obj["event_id"] = draw(TEXT)
    obj["customer_id"] = customer_id
    obj["occurred_at"] = draw(TIMES)
    payload = obj.get("payload") or {}
    for name, value in list(payload.items()):
        if name in ("amount", "mrr"):
            payload[name] = draw(MONEY)
        elif name in SCORES:
            payload[name] = draw(SCORES[name])
        elif isinstance(value, str) and name not in ("currency", "channel", "priority", "goal",
                                                     "kind", "status", "plan", "reason"):
            payload[name] = draw(TEXT)
    decoded = decode_source_event(orjson.dumps(obj), source, NOW)
    assume(isinstance(decoded, DecodedEvent))
    assert isinstance(decoded, DecodedEvent)
    return decoded.to_canonical(customer_id, NOW)


@st.composite
def histories(draw: st.DrawFn) -> tuple[str, list[list[dict[str, Any]]]]:
    """One customer's events, cut into one to three batches."""
    customer_id = draw(TEXT)
    events = draw(st.lists(valid_events(customer_id), min_size=1, max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=2)))
    bounds = [0, *cuts, len(events)]
    return customer_id, [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(histories())
def test_the_core_never_raises_and_snapshots_round_trip(
        history: tuple[str, list[list[dict[str, Any]]]]) -> None:
    customer_id, batches = history
    state: CustomerState | None = None
    watermark = MIN_EVENT_TIME_MS
    for batch in batches:
        watermark = max(watermark, *(e["occurred_at"] for e in batch))
        outcome = ENGINE.apply_batch(state, batch, watermark, customer_id)
        assert outcome.state is not None
        for alert in RULES.on_outcome(outcome):
            orjson.dumps(alert.to_record(emitted_at=NOW))
        RULES.score_changes(outcome)
        for example in outcome.training_examples:
            orjson.dumps(example.to_dict())
        if outcome.scorecard is not None:
            orjson.dumps(outcome.scorecard.to_dict())
        snapshot = outcome.state.snapshot()
        restored = CustomerState.restore(snapshot)
        assert restored.snapshot() == snapshot
        assert restored.ltv_cents == outcome.state.ltv_cents
        state = restored
    # Labels resolve years later without trouble, too.
    assert state is not None
    later = ENGINE.resolve_due(state, watermark + 800 * DAY_MS)
    if later.scorecard is not None:
        orjson.dumps(later.scorecard.to_dict())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(histories(), min_size=1, max_size=4))
def test_the_scoring_stage_quarantines_nothing_the_contract_accepts(
        customers: list[tuple[str, list[list[dict[str, Any]]]]]) -> None:
    """Through the real handler (batching, alerts, store): no `processing_error` at all, so
    the quarantine is a safety net, not where valid data ends up."""
    metrics = Metrics()
    handler = ScoringHandler(ScoringEngine(), AlertRules(), SCORING_TOPICS, metrics=metrics,
                             live_states=10)
    table = assign(handler, "customer-state")
    rounds = max(len(batches) for _cid, batches in customers)
    offset = 0
    for i in range(rounds):
        values = [orjson.dumps(e) for _cid, batches in customers if i < len(batches)
                  for e in batches[i]]
        out = feed(handler, table, values, first_offset=offset)
        offset += len(values)
        assert [d for d in sent(out, "dead") if d["reason"] != "too_late"] == []
    for customer_id, _batches in customers:
        raw = table.get(0, customer_id.encode())
        if raw is not None:
            assert CustomerState.restore(raw).snapshot() == raw
    assert metrics.processing_errors.labels("scoring")._value.get() == 0


def test_amounts_beyond_the_contract_saturate_instead_of_overflowing() -> None:
    """An event that bypassed the decoder (2e17 was once a worker-stopping order)."""
    state = CustomerState("X1")
    for n, amount in enumerate([2e17, 1e20, 1e308, 1e308, 5.0]):
        state.apply(ev(f"p{n}", "order_placed", occurred_at=NOW + n, customer_id="X1",
                       order_id=f"o{n}", amount=amount))
    restored = CustomerState.restore(state.snapshot())
    assert restored.snapshot() == state.snapshot()
    assert 0 < restored.ltv_cents <= 2**62 and restored.n_orders == 5
    outcome = ENGINE.apply_batch(restored, [], NOW + 10, "X1")
    assert outcome.state is not None
    if outcome.scorecard is not None:
        orjson.dumps(outcome.scorecard.to_dict())
