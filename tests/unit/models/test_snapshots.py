"""One snapshot contract for every stateful class of the core: `snapshot() -> bytes`, and a
`restore(bytes, ...)` classmethod that gives an equal, independent object.

Each class is built with real content (a replayed history, routed records), restored from
its bytes, and must snapshot to the same bytes again. A class of `models/` that gains a
`snapshot` method without a case here fails `test_every_stateful_class_has_a_case`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import models
from models.attribution.markov import TransitionCounts
from models.config import AttributionConfig, ScoringConfig
from models.history.generate import generate
from models.history.replay import ingest, replay, sort_raw
from models.ingest.dedupe import Dedupe
from models.ingest.identity import IdentityResolver
from models.ingest.routing import Ingestion
from models.learning.bundle import ModelBundle
from models.learning.churn import ChurnModel
from models.learning.engagement import EngagementModel
from models.learning.propensity import PropensityModel
from models.learning.value import ValueModel
from models.scoring.aggregates import Aggregates, kpi_values
from models.scoring.engine import ScoringEngine
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from models.scoring.tiers import ValueHistogram
from models.scoring.trend import KpiHistory
from schemas.decode import Origin


@functools.cache
def _history() -> list[dict[str, Any]]:
    events, _ = generate(40, seed=3, days=240)
    lines = [orjson.dumps(e) for e in events]
    return list(ingest(sort_raw(lines)))


@functools.cache
def _trained() -> ModelBundle:
    result = replay(iter(_history()), ScoringConfig(), publish_every_days=7)
    assert result.bundle is not None
    return result.bundle


def _state() -> CustomerState:
    engine = ScoringEngine(ScoringConfig(attribution=AttributionConfig(enabled=True)), _trained())
    events = [e for e in _history() if e["customer_id"] == _history()[0]["customer_id"]]
    outcome = engine.apply_batch(None, events, events[-1]["occurred_at"], events[0]["customer_id"])
    assert outcome.state is not None and outcome.state.pending
    assert outcome.state.journey and outcome.state.journey.touches  # touches round-trip too
    return outcome.state


def _histogram() -> ValueHistogram:
    h = ValueHistogram()
    for v in (0.0, 3.5, 120.0, 9_000.0):
        h.add(v)
    return h


def _ingestion() -> Ingestion:
    ingestion = Ingestion()
    alias_only = {"event_id": "w-1", "event_type": "page_view", "source": "web",
                  "occurred_at": 1_767_225_600_000, "anonymous_id": "a-1",
                  "payload": {"url": "/"}}
    known = {**alias_only, "event_id": "w-2", "customer_id": "C1", "event_type": "login"}
    for n, event in enumerate((alias_only, known, {**alias_only, "event_id": "w-3",
                                                   "anonymous_id": "a-2"})):
        ingestion.process(Origin("web", 0, n, None, orjson.dumps(event)), "web",
                          1_767_225_600_000)
    assert ingestion.resolver.held_count == 1  # a-2 still waits: the snapshot carries it
    return ingestion


def _dedupe() -> Dedupe:
    dedupe = Dedupe(max_entries=10, horizon_ms=1_000)
    for n in range(5):
        dedupe.seen("web", f"e-{n}", 100 * n)
    return dedupe


def _resolver() -> IdentityResolver:
    return _ingestion().resolver


def _propensity() -> PropensityModel:
    model = PropensityModel()
    for n in range(300):
        model.learn({"orders_365d": float(n % 3), "tenure_days": n / 50}, float(n % 3 == 2))
    assert model.ready and model.predict({"orders_365d": 2.0}) is not None
    return model


def _transition_counts() -> TransitionCounts:
    return TransitionCounts.from_paths(
        [(["email", "search"], True), (["search"], False), (["search", "email", "email"], True)])


def _kpi_history() -> KpiHistory:
    """The whole base's KPIs of a replayed history, recorded on three days."""
    result = replay(iter(_history()), ScoringConfig(), publish_every_days=7)
    cards = [Scorecard.from_row(s.last) for s in result.states.values() if s.last]
    history = KpiHistory()
    for day, some in ((100, cards[:10]), (120, cards[:25]), (131, cards)):
        history.record(day, kpi_values(Aggregates.of(some).report()["segments"][0]))
    assert len(history.days) == 3
    return history


CASES: dict[type, tuple[Callable[[], Any], Callable[[bytes], Any]]] = {
    CustomerState: (_state, CustomerState.restore),
    ModelBundle: (_trained, ModelBundle.restore),
    ChurnModel: (lambda: _trained().churn, ChurnModel.restore),
    EngagementModel: (lambda: _trained().engagement, EngagementModel.restore),
    ValueModel: (lambda: _trained().value, ValueModel.restore),
    ValueHistogram: (_histogram, ValueHistogram.restore),
    Dedupe: (_dedupe, Dedupe.restore),
    IdentityResolver: (_resolver, IdentityResolver.restore),
    Ingestion: (_ingestion, Ingestion.restore),
    TransitionCounts: (_transition_counts, TransitionCounts.restore),
    PropensityModel: (_propensity, PropensityModel.restore),
    KpiHistory: (_kpi_history, KpiHistory.restore),
}


@pytest.mark.parametrize("cls", list(CASES), ids=lambda cls: cls.__name__)
def test_snapshot_round_trip(cls: type) -> None:
    make, restore = CASES[cls]
    original = make()
    assert type(original) is cls
    data = original.snapshot()
    assert isinstance(data, bytes) and data
    again = restore(data)
    assert type(again) is cls and again is not original
    assert again.snapshot() == data


def _stateful_classes() -> set[type]:
    found = set()
    for info in pkgutil.walk_packages(models.__path__, "models."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and "snapshot" in vars(cls):
                found.add(cls)
    return found


def test_every_stateful_class_has_a_case() -> None:
    stateful = _stateful_classes()
    assert stateful, "no class with a snapshot method found: the discovery is broken"
    assert {c.__name__ for c in stateful} == {c.__name__ for c in CASES}
    for cls in stateful:
        assert isinstance(inspect.getattr_static(cls, "restore"), classmethod), cls
