"""Dedupe: duplicates count once, memory stays bounded by count and event time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.ingest.dedupe import Dedupe


def test_second_delivery_is_a_duplicate() -> None:
    dedupe = Dedupe()
    assert dedupe.seen("web", "w-1", 100) is False
    assert dedupe.seen("web", "w-1", 100) is True
    assert dedupe.seen("web", "w-1", 50) is True  # a late redelivery still matches
    assert dedupe.seen("email", "w-1", 100) is False  # ids are per source


def test_count_bound_forgets_oldest() -> None:
    dedupe = Dedupe(max_entries=3)
    for n in range(4):
        dedupe.seen("web", f"w-{n}", 100)
    assert len(dedupe) == 3
    assert ("web", "w-0") not in dedupe
    assert dedupe.seen("web", "w-3", 100) is True


def test_time_bound_forgets_entries_older_than_the_horizon() -> None:
    dedupe = Dedupe(horizon_ms=1_000)
    dedupe.seen("web", "old", 1_000)
    dedupe.seen("web", "new", 1_900)
    assert dedupe.seen("web", "old", 2_000) is True  # exactly the horizon: kept
    dedupe.seen("web", "x", 3_001)
    assert ("web", "old") not in dedupe  # refreshed at 2_000, now 1_001 ms behind
    assert ("web", "new") not in dedupe
    assert dedupe.clock == 3_001


def test_a_redelivered_id_is_refreshed_and_stays_known() -> None:
    dedupe = Dedupe(max_entries=2)
    dedupe.seen("web", "hot", 1)
    dedupe.seen("web", "a", 2)
    dedupe.seen("web", "hot", 3)
    dedupe.seen("web", "b", 4)
    assert ("web", "hot") in dedupe
    assert ("web", "a") not in dedupe


def test_snapshot_round_trip() -> None:
    dedupe = Dedupe(max_entries=10, horizon_ms=500)
    for n in range(5):
        dedupe.seen("crm", f"c-{n}", 100 * n)
    snapshot = dedupe.snapshot()
    restored = Dedupe.restore(snapshot, max_entries=10, horizon_ms=500)
    assert restored.snapshot() == dedupe.snapshot()
    assert restored.seen("crm", "c-4", 400) is True
    assert len(Dedupe.restore(snapshot, max_entries=2, horizon_ms=500)) == 2


def test_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Dedupe(max_entries=0)


@given(
    deliveries=st.lists(
        st.tuples(st.sampled_from(["web", "crm"]), st.integers(0, 30), st.integers(0, 10_000)),
        max_size=200,
    )
)
def test_memory_stays_bounded_and_recent_duplicates_are_caught(
    deliveries: list[tuple[str, int, int]],
) -> None:
    dedupe = Dedupe(max_entries=20, horizon_ms=2_000)
    for source, number, time in deliveries:
        event_id = f"e-{number}"
        was_known = (source, event_id) in dedupe
        assert dedupe.seen(source, event_id, time) is was_known
        assert len(dedupe) <= 20
        assert (source, event_id) in dedupe
        stamps = [stamp for *_, stamp in dedupe.to_dict()["entries"]]
        assert stamps == sorted(stamps)
        assert all(stamp >= dedupe.clock - 2_000 for stamp in stamps)
