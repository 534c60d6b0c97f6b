"""The scoring stage's handler without a broker: coalescing, lateness, erasure, dead letters."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.ingest.routing import MERGE_TICK_KEY, merge_tick_message
from models.scoring.alerts import AlertRules
from models.scoring.engine import ScoringEngine
from models.scoring.state import event_hash
from streams.runtime.stores import MemoryStore, StoreClosed, open_store
from streams.runtime.tables import Table
from streams.stages.scoring import ScoringHandler
from tests.kit import DAY_MS, SCORING_TOPICS, assign, at, ev, feed, sent


def event(n: int, customer: str, day: float, kind: str = "page_view") -> bytes:
    """Customer event e<n> as the scoring stage consumes it."""
    return orjson.dumps(ev(f"e{n}", kind, day, customer_id=customer, ingested_at=1))


def setup(lateness_days: int = 30, engine: ScoringEngine | None = None
          ) -> tuple[ScoringHandler, Table]:
    handler = ScoringHandler(engine or ScoringEngine(), AlertRules(), SCORING_TOPICS,
                             allowed_lateness_ms=lateness_days * DAY_MS)
    return handler, assign(handler, "customer-state")


def test_a_batch_writes_and_emits_once_per_customer() -> None:
    handler, table = setup()
    out = feed(handler, table, [event(n, "A" if n % 2 else "B", n / 10) for n in range(10)])
    assert sorted(key for _p, key, _v in out.writes) == [b"A", b"B"]
    changes = sent(out, "score-changes")
    assert sorted(c["customer_id"] for c in changes) == ["A", "B"]
    assert {c["scorecard"]["interactions_12m"] for c in changes} == {5}


def test_redelivered_events_count_once() -> None:
    handler, table = setup()
    feed(handler, table, [event(1, "A", 0), event(2, "A", 1)])
    out = feed(handler, table, [event(1, "A", 0), event(2, "A", 1)])
    assert sent(out, "score-changes") == []
    assert handler.scorecard(table, 0, "A").interactions_12m == 2


def test_a_scorecard_read_racing_a_partition_drop_says_retry_not_unknown() -> None:
    """The API reads from the web thread while the processing thread may drop the partition:
    a store gone before or during the read is "moving" (503), never "unknown" (404)."""
    handler, table = setup()
    feed(handler, table, [event(1, "A", 0)])
    store = table.stores[0]

    class DroppedDuringRead(MemoryStore):
        def get(self, key: bytes) -> bytes | None:
            table.stores.pop(0)
            store.close()  # what BatchProcessor._drop does
            return store.get(key)

    table.stores[0] = DroppedDuringRead()
    with pytest.raises(StoreClosed):
        handler.scorecard(table, 0, "A")
    with pytest.raises(StoreClosed):  # and once it is gone
        handler.scorecard(table, 0, "A")


def test_a_closed_rocksdb_store_raises_store_closed(tmp_path: Path) -> None:
    rocks = open_store("rocksdb://", tmp_path, "customer-state", 0)
    rocks.put(b"A", b"{}")
    rocks.close()
    with pytest.raises(StoreClosed):
        rocks.get(b"A")


def test_late_events_within_the_bound_apply_and_beyond_it_are_dead_lettered() -> None:
    handler, table = setup(lateness_days=30)
    feed(handler, table, [event(1, "A", 100, "order_placed")])
    out = feed(handler, table, [event(2, "A", 80, "order_placed"), event(3, "A", 60)])
    dead = sent(out, "dead")
    assert [d["reason"] for d in dead] == ["too_late"]
    assert orjson.loads(base64.b64decode(dead[0]["value_b64"]))["event_id"] == "e3"
    card = handler.scorecard(table, 0, "A")
    assert card is not None and card.ltv_historic == 20.0


def test_an_event_released_by_identity_resolution_is_never_too_late() -> None:
    """Its delay behind the watermark is the identity detour's: in a backfill, ingest runs far
    ahead of the identity stage, so the same lateness from a source would be dead-lettered."""
    handler, table = setup(lateness_days=30)
    feed(handler, table, [event(1, "A", 100, "order_placed")])
    released = orjson.dumps({**ev("e2", "order_placed", 10, customer_id="A", ingested_at=1),
                             "identity_position": [0, 7, 3]})
    out = feed(handler, table, [released, event(3, "A", 10, "order_placed")])
    assert [orjson.loads(base64.b64decode(d["value_b64"]))["event_id"]
            for d in sent(out, "dead")] == ["e3"]
    card = handler.scorecard(table, 0, "A")
    assert card is not None and card.ltv_historic == 20.0


def test_an_event_released_by_identity_resolution_does_not_move_the_clock() -> None:
    """The identity stage forwards the events of every ingest worker: one released ahead of
    this partition's ingest must not run the clock past events ingest still sends here,
    which would then be too late, and labels resolved before them."""
    handler, table = setup(lateness_days=30)
    feed(handler, table, [event(1, "A", 10, "order_placed")])
    ahead = orjson.dumps({**ev("e2", "order_placed", 100, customer_id="B", ingested_at=1),
                          "identity_position": [0, 7, 3]})
    feed(handler, table, [ahead])
    assert handler.scorecard(table, 0, "A").as_of == at(10)  # as of the partition's clock
    assert handler.scorecard(table, 0, "B").as_of == at(100)  # as of its own last event
    out = feed(handler, table, [event(3, "A", 50, "order_placed")])
    assert sent(out, "dead") == []
    assert handler.scorecard(table, 0, "A").ltv_historic == 20.0


def test_a_partition_taken_over_keeps_its_clock_not_an_identity_release_ahead_of_it() -> None:
    """The next owner rebuilds the partition's clock from the states as they were written, not
    from the customers' own last events: one the identity stage released ahead of the clock
    would run it past events ingest still sends, and resolve labels before them."""
    handler, table = setup(lateness_days=30)
    feed(handler, table, [event(1, "A", 10, "order_placed")])
    ahead = orjson.dumps({**ev("e2", "order_placed", 100, customer_id="B", ingested_at=1),
                          "identity_position": [0, 7, 3]})
    feed(handler, table, [ahead])
    successor = ScoringHandler(ScoringEngine(), AlertRules(), SCORING_TOPICS,
                               allowed_lateness_ms=30 * DAY_MS)
    successor.on_assigned(0, table)  # restored from what the first owner wrote
    assert successor.scorecard(table, 0, "A").as_of == at(10)
    out = feed(successor, table, [event(3, "A", 50, "order_placed")])
    assert sent(out, "dead") == []
    assert successor.scorecard(table, 0, "A").ltv_historic == 20.0


def test_undecodable_customer_event_is_dead_lettered_not_raised() -> None:
    handler, table = setup()
    out = feed(handler, table, [b"\xff not json", event(1, "A", 0)])
    assert [d["reason"] for d in sent(out, "dead")] == ["schema_violation"]
    assert handler.scorecard(table, 0, "A") is not None


def test_erasure_deletes_the_state_and_tombstones_score_changes() -> None:
    handler, table = setup()
    feed(handler, table, [event(1, "A", 0, "order_placed")])
    out = feed(handler, table, [event(2, "A", 1, "customer_erased")])
    assert out.writes == [(0, b"A", None)]
    assert sent(out, "score-changes") == [None]
    assert handler.scorecard(table, 0, "A") is None
    assert handler.partitions[0].aggregates.customers == 0


def _run_history(live_states: int, customers: int = 40) -> tuple[list[Any], dict[bytes, bytes]]:
    """Feed a generated history through a handler in small batches; every output and the
    final store."""
    from models.history.generate import generate
    from schemas.decode import decode_source_event

    events, _ = generate(customers, seed=5, days=500)
    canonical = []
    for e in events:
        decoded = decode_source_event(orjson.dumps(e), e["source"], at(2000))
        if getattr(decoded, "customer_id", None):
            canonical.append(orjson.dumps(decoded.to_canonical(decoded.customer_id, 1)))
    handler = ScoringHandler(ScoringEngine(), AlertRules(), SCORING_TOPICS,
                             live_states=live_states)
    table = assign(handler, "customer-state")
    records: list[Any] = [canonical]
    for start in range(0, len(canonical), 97):
        out = feed(handler, table, canonical[start:start + 97], first_offset=start)
        records.extend((t, k, _without_wall_clock(v)) for t, k, v, _ in out.records)
        records.extend(out.writes)
    return records, dict(table.stores[0].items())


def _without_wall_clock(value: bytes | None) -> Any:
    if value is None or not value.startswith(b"{"):
        return value
    record = orjson.loads(value)
    record.pop("emitted_at", None)
    return record


def test_the_due_index_holds_an_unchanged_due_time_once_and_still_resolves_it() -> None:
    """A customer scored batch after batch keeps the same next due time: the index holds it
    once, not once per batch (which grew it by an entry per event for 30 days); once the
    customer is silent, the label still resolves through the index on time."""
    handler, table = setup()
    for n in range(20):
        feed(handler, table, [event(n, "C1", n * 0.1)])
    assert len(handler.partitions[0].due) == 1
    out = feed(handler, table, [event(99, "C2", 31)])
    examples = [e for e in sent(out, "training") if e.get("customer_id") == "C1"]
    assert [e["model"] for e in examples] == ["engagement"]
    assert examples[0]["label"] == 19.0  # the 19 page views after the snapshot


def test_live_states_change_nothing_but_speed() -> None:
    """Scoring from cached live objects (a tiny cache, so eviction happens too) writes the
    same states and emits the same records as restoring every customer from the store."""
    restored, restored_store = _run_history(live_states=0)
    cached, cached_store = _run_history(live_states=7)
    assert len(restored) > 1000
    assert cached == restored
    assert cached_store == restored_store
    # ...and the day buckets written batch by batch are those of folding everything at once.
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for raw in restored[0]:
        e = orjson.loads(raw)
        by_customer.setdefault(e["customer_id"], []).append(e)
    engine = ScoringEngine()
    for key, value in cached_store.items():
        events = by_customer[key.decode()]
        whole = engine.apply_batch(None, events, max(e["occurred_at"] for e in events))
        assert whole.state is not None
        whole.state.prune()
        assert orjson.loads(value)["d"] == [list(row) for row in whole.state.to_dict()["d"]]


def test_live_states_are_bounded_and_follow_their_partitions() -> None:
    from models.scoring.live import LiveStates
    from models.scoring.state import CustomerState

    live = LiveStates(capacity=2)
    a, b, c = CustomerState("A"), CustomerState("B"), CustomerState("C")
    live.put(0, a, 100)
    live.put(1, b, 100)
    assert live.get(0, "A") is a  # now the most recently used
    assert live.get(1, "A") is None  # a state is only ever served for its own partition
    for _ in range(LiveStates.ADMIT_EVERY):  # full: a newcomer gets in every ADMIT_EVERY-th time
        assert live.get(0, "C") is None
        live.put(0, c, 100)
    assert len(live) == 2 and live.get(1, "B") is None and live.get(0, "A") is a
    assert live.get(0, "C") is c
    live.drop_partition(0)
    assert len(live) == 0 and live.bytes == 0
    live.put(1, b, 100)
    live.discard("B")
    assert live.get(1, "B") is None


def test_live_states_keep_hits_when_more_customers_return_than_fit() -> None:
    from models.scoring.live import LiveStates
    from models.scoring.state import CustomerState

    # 2,000 customers in a steady round, room for 1,000: plain LRU would never hit.
    live = LiveStates(capacity=1000)
    states = [CustomerState(f"C{n}") for n in range(2000)]
    for _ in range(10):
        for state in states:
            if live.get(0, state.customer_id) is None:
                live.put(0, state, 100)
    assert live.hits + live.misses == 20_000 and len(live) == 1000
    hits_last_round = live.hits
    for state in states:
        if live.get(0, state.customer_id) is None:
            live.put(0, state, 100)
    assert live.hits - hits_last_round > 800


def test_live_states_fill_with_a_hot_set_after_a_scan() -> None:
    from models.scoring.live import LiveStates
    from models.scoring.state import CustomerState

    live = LiveStates(capacity=100)
    for n in range(1000):  # a scan (one event for every customer) fills the cache with cold ones
        live.put(0, CustomerState(f"cold{n}"), 100)
    hot = [CustomerState(f"hot{n}") for n in range(50)]
    for _ in range(3 * LiveStates.ADMIT_EVERY):
        for state in hot:
            if live.get(0, state.customer_id) is None:
                live.put(0, state, 100)
    # one miss in ADMIT_EVERY gets in, so the hot customers left out shrink by that share per
    # round: ~95 % of them are in after 48 rounds
    assert sum(live.get(0, state.customer_id) is state for state in hot) >= 45


def test_live_states_are_bounded_by_their_estimated_memory() -> None:
    from models.scoring.live import LIVE_BYTES_PER_SNAPSHOT_BYTE, LiveStates
    from models.scoring.state import CustomerState

    live = LiveStates(capacity=100, max_bytes=1000 * LIVE_BYTES_PER_SNAPSHOT_BYTE)
    states = [CustomerState(f"C{n}") for n in range(4)]
    for state in states[:3]:
        live.put(0, state, 300)
    assert len(live) == 3 and live.bytes == 900 * LIVE_BYTES_PER_SNAPSHOT_BYTE
    live.put(0, states[0], 500)  # C0 grew: C1, now the least recently used, goes
    assert live.get(0, "C1") is None and live.bytes == 800 * LIVE_BYTES_PER_SNAPSHOT_BYTE
    for _ in range(LiveStates.ADMIT_EVERY):  # larger than the whole budget: never admitted
        live.put(0, states[3], 5000)
    assert live.get(0, "C3") is None and live.bytes == 800 * LIVE_BYTES_PER_SNAPSHOT_BYTE
    assert live.get(0, "C0") is states[0] and live.get(0, "C2") is states[2]
    live.put(0, states[0], 5000)  # a live state that outgrows the budget leaves
    assert live.get(0, "C0") is None and live.bytes == 300 * LIVE_BYTES_PER_SNAPSHOT_BYTE


def _observed(handler: ScoringHandler) -> tuple[float, float]:
    """How many latency and lag observations the handler's metrics hold."""
    registry = handler.metrics.registry
    return (registry.get_sample_value("scorestream_processing_latency_seconds_count") or 0.0,
            registry.get_sample_value("scorestream_event_time_lag_seconds_count") or 0.0)


def test_latency_is_observed_once_the_batch_has_committed_and_not_after_an_abort() -> None:
    handler, table = setup()
    feed(handler, table, [event(1, "A", 1.0), event(2, "B", 1.5)])
    assert _observed(handler) == (0.0, 0.0)  # emitted, not yet visible downstream
    handler.committed()
    assert _observed(handler) == (1.0, 1.0)  # once per batch (and partition, for the lag)
    handler.committed()  # a commit with nothing handled (time-driven outputs only)
    assert _observed(handler) == (1.0, 1.0)
    feed(handler, table, [event(3, "A", 2.0)])
    handler.on_revoked(0)  # an aborted transaction drops the partitions: read again later
    handler.committed()
    assert _observed(handler) == (1.0, 1.0)


def test_attributions_are_emitted_with_the_batch_once_per_conversion() -> None:
    """Each conversion's attribution goes out keyed by customer in the batch's Output, beside
    the state it was made from; a redelivered order emits nothing more."""
    from models.config import AttributionConfig, ScoringConfig
    from schemas.registry import validator

    handler, table = setup(engine=ScoringEngine(ScoringConfig(
        attribution=AttributionConfig(enabled=True))))
    touch = orjson.dumps(ev("w1", "session_started", 1, customer_id="A", channel="paid",
                            campaign="winter", ingested_at=1))
    buy = orjson.dumps(ev("o1", "order_placed", 2, customer_id="A", amount=50.0, ingested_at=1))
    untouched = event(3, "B", 2, "order_placed")
    out = feed(handler, table, [(b"A", touch), (b"A", buy), (b"B", untouched)])
    records = sent(out, "attributions")
    for record in records:
        validator("attributions")(record)
    by_customer = {r["customer_id"]: r for r in records}
    assert sorted(by_customer) == ["A", "B"]
    [paid] = by_customer["A"]["touches"]
    assert (paid["channel"], paid["campaign"]) == ("paid", "winter")
    assert paid["credit"] == dict.fromkeys(by_customer["A"]["models"], 50.0)
    assert by_customer["B"]["touches"] == [] and by_customer["B"]["value"] == 10.0
    keys = [key for topic, key, _v, _p in out.records if topic == "attributions"]
    assert sorted(keys) == [b"A", b"B"]
    assert {key for _p, key, _v in out.writes} == {b"A", b"B"}
    assert handler.metrics.attributions._value.get() == 2
    assert sent(feed(handler, table, [(b"A", buy)]), "attributions") == []

    off = ScoringHandler(ScoringEngine(ScoringConfig(attribution=AttributionConfig(
        enabled=False))), AlertRules(), SCORING_TOPICS)
    off_table = assign(off, "customer-state")
    assert sent(feed(off, off_table, [(b"A", touch), (b"A", buy)]), "attributions") == []


# -- the identity merge (SCORESTREAM_IDENTITY_MERGE) ---------------------------------------

def merge_tick(identity_partition: int, day: float) -> tuple[bytes, bytes]:
    """The identity stage's tick: `identity_partition` has released everything up to `day`."""
    return MERGE_TICK_KEY, orjson.dumps(merge_tick_message(identity_partition, at(day)))


def released(n: int, customer: str, day: float, identity_partition: int, position: int,
             kind: str = "order_placed") -> bytes:
    """Alias-only event e<n> as identity partition `identity_partition` released it."""
    return orjson.dumps({**ev(f"e{n}", kind, day, customer_id=customer, ingested_at=1),
                         "identity_position": [identity_partition, position, position]})


def merging(identity_partitions: int = 2, max_held: int = 1000, lateness_days: int = 30
            ) -> tuple[ScoringHandler, Table]:
    handler = ScoringHandler(ScoringEngine(), AlertRules(), SCORING_TOPICS,
                             allowed_lateness_ms=lateness_days * DAY_MS,
                             merge_partitions=identity_partitions, merge_max_held=max_held)
    return handler, assign(handler, "customer-state")


def test_the_merge_scores_an_alias_only_event_before_the_later_events_that_overtook_it() -> None:
    """Ingest's events of day 20 and 40 arrive before the identity stage releases the
    customer's alias-only order of day 30; scored in arrival order the day-30 order would
    come after day 40. Held until both identity partitions have passed their times, the
    three go out in event-time order, and the committed offset stays at the first held."""
    handler, table = merging()
    out = feed(handler, table, [event(1, "A", 20, "order_placed"),
                                event(2, "A", 40, "order_placed"), merge_tick(0, 35)])
    assert sent(out, "score-changes") == []  # partition 1 has not ticked: nothing may go
    assert handler.positions() == {("customer-events", 0): 0}
    out = feed(handler, table, [merge_tick(1, 25)], first_offset=3)
    assert [c["trigger_event_id"] for c in sent(out, "score-changes")] == ["e1"]
    assert handler.positions() == {("customer-events", 0): 1}
    out = feed(handler, table, [released(3, "A", 30, 1, 7), merge_tick(1, 50), merge_tick(0, 50)],
               first_offset=4)
    state = handler._load(table, 0, "A")
    assert state is not None and state.n_events == 3
    changes = sent(out, "score-changes")
    assert [c["trigger_event_id"] for c in changes] == ["e2"]  # the batch's last, day 40
    assert handler.positions() == {("customer-events", 0): 7}
    assert sent(out, "dead") == []
    # Ticks are not events: 3 scored in all, none counted twice.
    assert handler.scorecard(table, 0, "A").ltv_historic == 30.0


def test_the_merge_scores_one_identity_partitions_releases_in_event_time_order() -> None:
    """An identity partition releases a customer's day-30 event before its day-10 one (they
    came from two ingest workers, one ahead of the other), and ingest sent its day-20 event:
    the three are applied day 10, 20, 30, and the earlier release of the later event is not
    taken for a redelivery once the later release has been applied."""
    handler, table = merging(identity_partitions=1)
    feed(handler, table, [event(1, "A", 20, "order_placed"), released(2, "A", 30, 0, 5),
                          released(3, "A", 10, 0, 6), merge_tick(0, 40)])
    state = handler._load(table, 0, "A")
    assert state is not None and state.n_events == 3
    assert state.seen == [event_hash("e3"), event_hash("e1"), event_hash("e2")]
    # Read again after a crash (nothing committed past them): recognised, not applied twice.
    out = feed(handler, table, [event(1, "A", 20, "order_placed"), released(2, "A", 30, 0, 5),
                                released(3, "A", 10, 0, 6), merge_tick(0, 40)])
    assert handler._load(table, 0, "A").n_events == 3
    assert sent(out, "score-changes") == []


def test_a_release_held_behind_a_later_one_is_still_first_after_a_crash() -> None:
    """The day-10 release went out and was committed while the identity partition's earlier
    release of day 30 still waited: read again (its offset was not committed past), the
    day-30 one is applied once, the day-10 one not again."""
    handler, table = merging(identity_partitions=1)
    feed(handler, table, [released(1, "A", 30, 0, 5), released(2, "A", 10, 0, 6),
                          merge_tick(0, 20)])
    assert handler._load(table, 0, "A").n_events == 1
    assert handler.positions() == {("customer-events", 0): 0}
    handler.on_revoked(0)  # a new owner: the live state and the held events are gone
    handler.on_assigned(0, table)
    feed(handler, table, [released(1, "A", 30, 0, 5), released(2, "A", 10, 0, 6),
                          merge_tick(0, 40)])
    state = handler._load(table, 0, "A")
    assert state.n_events == 2 and state.release_gaps == {}
    assert state.seen == [event_hash("e2"), event_hash("e1")]


def test_events_let_out_behind_a_held_one_are_not_applied_again_after_a_handover() -> None:
    """An alias-only event of day 50 waits while 40 later-read events of days 1-40 go out;
    the committed offset stays at the held one. A new owner reads all 41 again: the 40 are
    redeliveries (more than the dedupe window of event ids holds), the held one is new."""
    handler, table = merging(identity_partitions=1, lateness_days=400)
    records = [released(0, "A", 50, 0, 5),
               *[event(n, "A", n, "order_placed") for n in range(1, 41)], merge_tick(0, 40)]
    feed(handler, table, records)
    assert handler._load(table, 0, "A").n_events == 40
    assert handler.positions() == {("customer-events", 0): 0}
    handler.on_revoked(0)
    handler.on_assigned(0, table)
    out = feed(handler, table, [*records[:-1], merge_tick(0, 60)])
    state = handler._load(table, 0, "A")
    assert state.n_events == 41 and handler.scorecard(table, 0, "A").ltv_historic == 410.0
    assert handler.metrics.duplicates.labels("customer-events")._value.get() == 40
    assert [c["trigger_event_id"] for c in sent(out, "score-changes")] == ["e0"]


def test_a_customer_whose_events_are_all_read_again_still_has_its_labels_resolved() -> None:
    """After a handover a batch holds only redeliveries of customer A's order of day 1, and
    the release of B's day-100 event moves the clock past the day-91 due time of A's churn
    label: A's labels are resolved as if its events had been new."""
    handler, table = merging(identity_partitions=1, lateness_days=400)
    records = [released(0, "B", 100, 0, 5), event(1, "A", 1, "order_placed"), merge_tick(0, 50)]
    feed(handler, table, records)
    due = handler._load(table, 0, "A").next_due()
    assert due is not None and at(1) < due < at(100)
    handler.on_revoked(0)
    handler.on_assigned(0, table)
    feed(handler, table, [*records[:-1], merge_tick(0, 200)])
    state = handler._load(table, 0, "A")
    assert state.n_events == 1
    assert state.next_due() is None or state.next_due() > at(100)


def test_a_late_event_applied_past_a_held_one_does_not_hide_it() -> None:
    """Past the bound X (day 300) is let out without waiting; E (day 200) is then held, and
    F (day 50, behind the ticks) goes at once at a later offset. E is still applied when the
    ticks pass it: the state keeps E's offset as held, not as applied."""
    handler, table = merging(identity_partitions=1, max_held=2, lateness_days=400)
    feed(handler, table, [merge_tick(0, 100)])
    feed(handler, table, [event(1, "C", 300, "order_placed"), event(2, "D", 400, "order_placed"),
                          event(3, "D", 500, "order_placed")], first_offset=1)
    erased = orjson.dumps(ev("x", "customer_erased", 600, customer_id="D", ingested_at=1))
    feed(handler, table, [erased, event(5, "C", 200, "order_placed"),
                          released(6, "C", 50, 0, 9)], first_offset=4)
    assert handler._load(table, 0, "C").merged == [6, [5]]
    feed(handler, table, [merge_tick(0, 250)], first_offset=7)
    assert handler._load(table, 0, "C").n_events == 3


def test_events_tried_one_by_one_after_a_core_error_are_all_applied() -> None:
    """The core raises on e9, so C's events are tried one by one in timeline order: the
    alias-only event linked at day 300 (read after the linking event) goes first, and the
    linking event, at a lower offset, is not taken for one applied before."""
    poisoned = ScoringEngine()
    apply_batch = poisoned.apply_batch

    def picky(state: Any, events: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        outcome = apply_batch(state, events, *args, **kwargs)
        if any(e["event_id"] == "e9" for e in events):
            raise OverflowError("cannot convert float infinity to integer")
        return outcome

    poisoned.apply_batch = picky  # type: ignore[method-assign]
    handler = ScoringHandler(poisoned, AlertRules(), SCORING_TOPICS,
                             allowed_lateness_ms=400 * DAY_MS, merge_partitions=1)
    table = assign(handler, "customer-state")
    linked = orjson.dumps({**ev("e2", "order_placed", 100, customer_id="C", ingested_at=1),
                           "linked_at": at(300), "identity_position": [0, 5, 5]})
    out = feed(handler, table, [event(1, "C", 300, "order_placed"), linked,
                                event(9, "C", 301, "order_placed"), merge_tick(0, 400)])
    assert handler._load(table, 0, "C").n_events == 2
    assert [d["reason"] for d in sent(out, "dead")] == ["processing_error"]


def test_a_customer_event_whose_time_is_not_an_integer_is_dead_lettered() -> None:
    handler, table = setup()
    bad = orjson.dumps({**ev("e1", "order_placed", 10, customer_id="C", ingested_at=1),
                        "occurred_at": str(at(10))})
    out = feed(handler, table, [bad])
    assert [d["reason"] for d in sent(out, "dead")] == ["schema_violation"]
    assert handler.scorecard(table, 0, "C") is None


def test_an_erasure_read_again_does_not_erase_what_came_after_it() -> None:
    """C's erasure went out at once and C's day-20 event after it was applied, while D's
    event held the committed offset back. A new owner reads all of it again in one batch:
    the erasure is a redelivery, and C keeps its day-20 event."""
    handler, table = merging(identity_partitions=1)
    erased = orjson.dumps(ev("x", "customer_erased", 30, customer_id="C", ingested_at=1))
    records = [merge_tick(0, 5), event(1, "D", 500), event(2, "C", 10), erased,
               event(3, "C", 20, "order_placed"), merge_tick(0, 50)]
    feed(handler, table, records[:3])
    feed(handler, table, records[3:4], first_offset=3)
    feed(handler, table, records[4:], first_offset=4)
    assert handler.positions() == {("customer-events", 0): 1}
    handler.on_revoked(0)
    handler.on_assigned(0, table)
    feed(handler, table, records[1:], first_offset=1)
    state = handler._load(table, 0, "C")
    assert state is not None and state.n_events == 1


def test_an_erasure_goes_at_once_and_takes_the_customers_held_events_with_it() -> None:
    handler, table = merging()
    feed(handler, table, [event(1, "A", 20, "order_placed"), event(2, "B", 20, "order_placed")])
    erased = orjson.dumps(ev("x1", "customer_erased", 400, customer_id="A", ingested_at=1))
    feed(handler, table, [erased], first_offset=2)
    assert handler.scorecard(table, 0, "A") is None
    assert handler.scorecard(table, 0, "B") is None  # still held
    assert handler.positions() == {("customer-events", 0): 1}


def test_past_its_bound_the_merge_lets_the_oldest_out_without_waiting() -> None:
    handler, table = merging(max_held=2)
    out = feed(handler, table, [event(n, "A", n, "order_placed") for n in range(1, 5)])
    assert [c["trigger_event_id"] for c in sent(out, "score-changes")] == ["e2"]
    assert handler.partitions[0].merge is not None and handler.partitions[0].merge.forced == 2


def test_a_worker_without_the_merge_skips_its_ticks() -> None:
    handler, table = setup()
    out = feed(handler, table, [merge_tick(0, 10), event(1, "A", 5)])
    assert sent(out, "dead") == []
    assert handler.positions() is None
    assert handler.scorecard(table, 0, "A") is not None


def test_one_customers_release_waiting_its_time_holds_back_no_other_customer() -> None:
    """An identity partition releases customer X's day-30 event before customer Y's day-10
    one (they came from different ingest workers): when the ticks pass day 25, Y's day-10
    release and its day-20 event go out in order, and only X's waits."""
    handler, table = merging(identity_partitions=1)
    feed(handler, table, [released(1, "X", 30, 0, 5), released(2, "Y", 10, 0, 6),
                          event(3, "Y", 20, "order_placed"), merge_tick(0, 25)])
    y, x = handler._load(table, 0, "Y"), handler._load(table, 0, "X")
    assert y is not None and y.n_events == 2
    assert x is None
    assert handler.positions() == {("customer-events", 0): 0}  # X's release is still held
