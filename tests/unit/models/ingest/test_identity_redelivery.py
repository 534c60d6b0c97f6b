"""Alias-only events the identity stage releases again after a crash count once, however many
events the customer had since (the state's event-id window alone would miss them)."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from models.config import ScoringConfig
from models.ingest.routing import IdentityPartition, Ingestion
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from schemas.decode import Origin
from schemas.registry import validator
from tests.kit import T0, at, raw_ev

NOW = at(365)


class IdentityLog:
    """One identity-topic partition and its two tables, handled from any offset."""

    def __init__(self, records: list[bytes]) -> None:
        stage1 = Ingestion()
        self.direct: list[dict[str, Any]] = []
        self.log: list[tuple[bytes, bytes]] = []
        for offset, value in enumerate(records):
            routed = stage1.route(Origin("web", 0, offset, b"k", value), "web", NOW)
            self.direct += routed.accepted
            self.log += [(k.encode(), orjson.dumps(m)) for k, m in routed.identity]
        self.links: dict[str, Any] = {}
        self.held: dict[str, Any] = {}

    def handle(self, stage: IdentityPartition, start: int, end: int | None = None
               ) -> list[dict[str, Any]]:
        released = []
        for offset in range(start, len(self.log) if end is None else end):
            key, value = self.log[offset]
            result = stage.handle(Origin("identity", 0, offset, key, value), self.links, NOW)
            for table, changes in ((self.links, result.link_changes),
                                   (self.held, result.held_changes)):
                for k, record in changes:
                    if record is None:
                        table.pop(k, None)
                    else:
                        table[k] = record
            released += result.accepted
        return released

    def restarted(self) -> IdentityPartition:
        return IdentityPartition(0, held=list(self.held.values()))


RECORDS = [
    raw_ev("w-1", "page_view", occurred_at=T0, anonymous_id="a-1"),  # held: a-1 is not linked yet
    raw_ev("w-2", "page_view", occurred_at=T0 + 1, anonymous_id="a-1"),  # held
    # links, releases
    raw_ev("w-3", "login", occurred_at=T0 + 2, customer_id="C1", anonymous_id="a-1"),
    raw_ev("w-4", "page_view", occurred_at=T0 + 3, anonymous_id="a-1"),  # resolved at once
]


def _counted(events: list[dict[str, Any]], batch: int = 3) -> int:
    """Events the scoring engine counts for C1, fed in arrival order in batches (which it
    reorders by event time), the state going through the changelog between batches. A
    one-event id window: only the release positions can recognise these redeliveries."""
    engine = ScoringEngine(ScoringConfig(dedupe_window=1))
    state: CustomerState | None = None
    for start in range(0, len(events), batch):
        out = engine.apply_batch(state, events[start:start + batch], watermark_ms=NOW,
                                 customer_id="C1")
        assert out.state is not None
        state = CustomerState.restore(out.state.snapshot(), engine.config)
        assert state.released == out.state.released
    assert state is not None
    return state.n_events


def test_releases_carry_increasing_positions_that_match_the_schema() -> None:
    ids = IdentityLog(RECORDS)
    released = ids.handle(IdentityPartition(0), 0)
    assert [e["event_id"] for e in released] == ["w-1", "w-2", "w-4"]
    positions = [e["identity_position"] for e in released]
    assert positions == sorted(positions) and positions[0][0] == 0
    assert positions[0][1] == positions[1][1]  # released by the same (link) record
    for record in released:
        validator("customer-events")(record)


def test_everything_handled_again_after_a_crash_is_applied_once() -> None:
    ids = IdentityLog(RECORDS)
    first = ids.handle(IdentityPartition(0), 0)
    # Crashed before committing any offset: a new incarnation handles the whole log again,
    # with the tables as the first one left them (the link is known, nothing is held).
    again = ids.handle(ids.restarted(), 0)
    assert [e["event_id"] for e in again] == ["w-1", "w-2", "w-4"]  # released once more
    assert _counted(ids.direct + first + again) == 4


def test_a_crash_that_lost_the_link_write_but_not_the_releases_applies_them_once() -> None:
    ids = IdentityLog(RECORDS)
    link_at = next(i for i, (key, value) in enumerate(ids.log) if b'"op":"link"' in value)
    before = ids.handle(IdentityPartition(0), 0, link_at)
    tables = copy.deepcopy((ids.links, ids.held))
    after = ids.handle(IdentityPartition(0, held=list(ids.held.values())), link_at)
    ids.links, ids.held = tables  # the link's table writes never reached the changelog
    again = ids.handle(ids.restarted(), 0)
    assert [e["event_id"] for e in again] == ["w-1", "w-2", "w-4"]
    assert _counted(ids.direct + before + after + again) == 4


def test_a_new_release_after_the_replay_is_applied() -> None:
    # w-5 arrives late: released after w-4 but it happened before everything else.
    late = raw_ev("w-5", "page_view", occurred_at=T0 - 10, anonymous_id="a-1")
    ids = IdentityLog([*RECORDS, late])
    end = len(ids.log) - 1
    first = ids.handle(IdentityPartition(0), 0, end)
    again = ids.handle(ids.restarted(), 0)  # the replay reaches the new record too
    assert [e["event_id"] for e in again] == ["w-1", "w-2", "w-4", "w-5"]
    assert _counted(ids.direct + first + again) == 5
    assert _counted(ids.direct + first + again, batch=100) == 5  # one batch, reordered


def test_without_positions_the_replay_would_count_twice() -> None:
    ids = IdentityLog(RECORDS)
    events = ids.direct + ids.handle(IdentityPartition(0), 0) + ids.handle(ids.restarted(), 0)
    for event in events:
        event.pop("identity_position", None)
    assert _counted(events) > 4  # the id window catches only the latest


def test_an_event_resolved_by_a_later_link_is_placed_at_the_link() -> None:
    """An alias-only event that waited for its link, or reached the identity stage after a
    link made later than itself, is the customer's from the link's time on (`linked_at`);
    one whose link was made before it is not marked. The single-process path agrees."""
    records = [
        raw_ev("w-1", "page_view", occurred_at=T0, anonymous_id="a-9"),  # waits for its link
        raw_ev("w-2", "login", occurred_at=T0 + 60_000, customer_id="C9", anonymous_id="a-9"),
        raw_ev("w-0", "page_view", occurred_at=T0 - 60_000, anonymous_id="a-9"),  # overtaken
        raw_ev("w-3", "page_view", occurred_at=T0 + 120_000, anonymous_id="a-9"),
    ]
    released = IdentityLog(records).handle(IdentityPartition(0), 0)
    marked = {e["event_id"]: e.get("linked_at") for e in released}
    assert marked == {"w-1": T0 + 60_000, "w-0": T0 + 60_000, "w-3": None}
    single = Ingestion()
    accepted = []
    for offset, value in enumerate(records):
        accepted += single.process(Origin("web", 0, offset, None, value), "web", NOW).accepted
    assert {e["event_id"]: e.get("linked_at") for e in accepted} == {**marked, "w-2": None}
