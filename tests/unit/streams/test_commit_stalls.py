"""What the worker says, and when it stops, about a batch stage whose commit hangs."""

from __future__ import annotations

import logging

from streams.app import CommitStalls


def test_a_quick_commit_says_nothing() -> None:
    stalls = CommitStalls(slow_s=60, stuck_s=300)
    assert [stalls.check("scoring", s) for s in (0.0, 0.2, 59.9, 0.0)] == [None] * 4


def test_a_slow_commit_is_reported_once_a_minute_then_stops_the_worker() -> None:
    stalls = CommitStalls(slow_s=60, stuck_s=300)
    said = {s: stalls.check("scoring", s) for s in (30, 61, 63, 119, 121, 150, 181, 300)}
    assert {s: v[0] for s, v in said.items() if v is not None} == {
        61: logging.ERROR, 121: logging.ERROR, 181: logging.ERROR, 300: logging.CRITICAL}
    assert "committing one batch for 61 s" in said[61][1]  # type: ignore[index]
    assert "stopping the worker" in said[300][1]  # type: ignore[index]


def test_stages_are_reported_apart_and_a_finished_commit_starts_over() -> None:
    stalls = CommitStalls(slow_s=60, stuck_s=300)
    assert stalls.check("ingest", 70) is not None
    assert stalls.check("scoring", 70) is not None
    assert stalls.check("ingest", 0.0) is None
    assert stalls.check("ingest", 65) is not None  # a new stall, reported again
