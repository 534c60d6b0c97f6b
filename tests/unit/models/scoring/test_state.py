"""CustomerState: idempotence, order-insensitivity, late events, persistence."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.config import ScoringConfig
from models.scoring.state import INTERACTIONS, N_SLOTS, REVENUE_CENTS, CustomerState
from tests.kit import DAY_MS, T0, ev


def canonical(s: CustomerState) -> dict:
    d = s.to_dict()
    del d["s"]  # the redelivery window holds the most recently *arrived* ids, by design
    return d


def test_orders_refunds_and_fx_in_cents() -> None:
    s = CustomerState("C1")
    assert s.apply(ev("o1", "order_placed", 0, amount=120.0))
    # 0.92 EUR per USD -> 92.00
    assert s.apply(ev("o2", "order_placed", 1, amount=100.0, currency="USD"))
    assert s.apply(ev("r1", "order_refunded", 2, order_id="o1", amount=20.0, currency="EUR"))
    assert s.ltv_cents == 12000 + 9200 - 2000
    assert s.gross_cents == 21200
    assert s.n_orders == 2 and s.n_refunds == 1
    assert s.purchase_days == 2


def test_redelivery_is_ignored() -> None:
    s = CustomerState("C1")
    e = ev("o1", "order_placed", 0, amount=10.0)
    assert s.apply(e) is True
    assert s.apply(dict(e)) is False
    assert s.ltv_cents == 1000 and s.n_events == 1


def test_redelivery_window_is_bounded() -> None:
    s = CustomerState("C1", ScoringConfig(dedupe_window=4))
    for i in range(10):
        s.apply(ev(f"w{i}", "page_view", 0, url="/"))
    assert len(s.seen) == 4
    assert s.apply(ev("w9", "page_view", 0, url="/")) is False


def test_late_event_lands_in_its_own_day() -> None:
    s = CustomerState("C1")
    s.apply(ev("w1", "page_view", 10, url="/"))
    s.apply(ev("w0", "page_view", 3, url="/"))  # arrives late
    day0 = T0 // DAY_MS
    assert s.days[day0 + 3][INTERACTIONS] == 1
    assert s.days[day0 + 10][INTERACTIONS] == 1
    assert s.last_interaction_ms == T0 + 10 * DAY_MS


def test_event_older_than_every_window_only_counts_for_lifetime() -> None:
    s = CustomerState("C1")
    s.apply(ev("o2", "order_placed", 400, amount=10.0))
    # 400 days late: no bucket, still lifetime revenue
    s.apply(ev("o1", "order_placed", 0, amount=5.0))
    assert s.ltv_cents == 1500
    assert T0 // DAY_MS not in s.days


def test_profile_last_writer_wins_by_event_time_not_arrival() -> None:
    set_phone = ev("p1", "profile_updated", 1, fields={"phone": "+1"})
    clear_phone = ev("p2", "profile_updated", 2, fields={"phone": None})
    a, b = CustomerState("C1"), CustomerState("C1")
    a.apply(set_phone)
    a.apply(clear_phone)
    b.apply(clear_phone)
    b.apply(set_phone)
    assert a.known_fields() == b.known_fields() == []


def test_subscription_and_unsubscribe() -> None:
    s = CustomerState("C1")
    s.apply(ev("s1", "subscription_started", 1))
    assert s.subscription_active
    s.apply(ev("s2", "subscription_cancelled", 5))
    assert not s.subscription_active and s.cancelled_ms == T0 + 5 * DAY_MS
    s.apply(ev("u1", "unsubscribed", 6))
    assert s.unsubscribed == [T0 + 6 * DAY_MS, 1]


def _history(seed: int) -> list[dict]:
    rng = random.Random(seed)
    kinds = ["page_view", "opened", "ticket_opened", "payment_late", "sent"]
    out = []
    for i in range(60):
        day = rng.uniform(0, 500)
        if rng.random() < 0.3:
            amount, currency = round(rng.uniform(1, 300), 2), rng.choice(["EUR", "USD", "GBP"])
            out.append(ev(f"o{i}", "order_placed", day, amount=amount, currency=currency))
        else:
            out.append(ev(f"e{i}", rng.choice(kinds), day, url="/", ticket_id="t"))
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_apply_is_order_insensitive(seed: int, rnd: random.Random) -> None:
    events = _history(seed)
    a = CustomerState("C1")
    for e in events:
        a.apply(e)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    b = CustomerState("C1")
    for e in shuffled:
        b.apply(e)
    a.prune()
    b.prune()
    assert canonical(a) == canonical(b)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.randoms(use_true_random=False))
def test_running_window_sums_match_a_full_scan(seed: int, rnd: random.Random) -> None:
    events = sorted(_history(seed), key=lambda e: e["occurred_at"])
    for i in range(len(events) - 1):  # some late arrivals
        if rnd.random() < 0.2:
            j = min(len(events) - 1, i + rnd.randrange(1, 10))
            events[i], events[j] = events[j], events[i]
    s = CustomerState("C1")
    newest = 0
    for k, e in enumerate(events):
        s.apply(e)
        newest = max(newest, e["occurred_at"] // DAY_MS)
        if k % 3 == 0:
            now = newest + rnd.choice([0, 0, 1, 7, 90])
            sums = s.window_sums(now)
            if rnd.random() < 0.3:  # pruning behind the running sums keeps them exact
                s.prune()
                assert min(s.days, default=newest) > s.max_day - 365
                sums = s.window_sums(now)
            if rnd.random() < 0.5:  # reused serialised rows always match the buckets
                rows = s.to_dict()["d"]
                assert rows == [
                    (d, *b[: max((i + 1 for i, x in enumerate(b) if x), default=0)])
                    for d, b in sorted(s.days.items())
                ]
                restored = CustomerState.restore(orjson.dumps(s.to_dict()))
                assert restored.to_dict()["d"] == rows
            for w, acc in sums.items():
                expected = [0] * N_SLOTS
                for d, b in s.days.items():
                    if 0 <= now - d < w:
                        expected = [x + y for x, y in zip(expected, b, strict=True)]
                assert acc == expected, (w, now)


def test_snapshot_roundtrip_and_size() -> None:
    s = CustomerState("C1")
    for e in _history(3):
        s.apply(e)
    b = s.snapshot()
    r = CustomerState.restore(b)
    assert r.snapshot() == b
    assert r.ltv_cents == s.ltv_cents
    assert (
        r.window_sums(T0 // DAY_MS + 500)[365][REVENUE_CENTS]
        == s.window_sums(T0 // DAY_MS + 500)[365][REVENUE_CENTS]
    )
    assert len(b) < 3000


def _scan(s: CustomerState, now: int) -> dict[int, list[int]]:
    out = {}
    for w in (30, 90, 180, 365):
        acc = [0] * N_SLOTS
        for d, b in s.days.items():
            if 0 <= now - d < w:
                acc = [x + y for x, y in zip(acc, b, strict=True)]
        out[w] = acc
    return out


def test_late_events_on_new_days_behind_the_running_sums() -> None:
    s = CustomerState("C1")
    s.apply(ev("o1", "order_placed", 100, amount=10.0))
    now = T0 // DAY_MS + 200
    assert s.window_sums(now)[365][REVENUE_CENTS] == 1000
    # a new day inside the 90- and 365-day windows
    s.apply(ev("o2", "order_placed", 150, amount=5.0))
    # a new day that has already left all but the 365-day one
    s.apply(ev("o3", "order_placed", 20, amount=7.0))
    s.apply(ev("w1", "page_view", 185, url="/"))  # inside every window
    s.apply(ev("e1", "sent", 199))  # an empty bucket
    assert s.window_sums(now) == _scan(s, now)
    assert s.window_sums(now)[30][INTERACTIONS] == 1
    assert s.window_sums(now)[365][REVENUE_CENTS] == 2200
    for later in (now + 1, now + 40, now + 100, now + 300, now + 400, now - 50):
        assert s.window_sums(later) == _scan(s, later), later


def test_a_state_written_before_active_days_were_kept_restores_them_from_all_it_has() -> None:
    """Its buckets cover the last year only; its order days reach further back."""
    s = CustomerState("C1")
    for week in range(150):  # weekly visits for ~3 years, an order every fourth week
        day = 20_000 + 7 * week
        s.apply(ev(f"w{week}", "page_view", occurred_at=day * DAY_MS))
        if week % 4 == 0:
            s.apply(ev(f"o{week}", "order_placed", occurred_at=day * DAY_MS + 1, amount=5.0))
    old = s.to_dict()
    del old["ad"]
    restored = CustomerState.from_dict(old)
    assert restored.active_days >= restored.purchase_days == 38
    assert restored.active_days >= 53 + 38 - 14  # the last year's weeks, plus older orders
    assert restored.first_interaction_ms == 20_000 * DAY_MS


def test_interactions_on_the_anchored_day_add_to_the_running_sums() -> None:
    s = CustomerState("C1")
    s.apply(ev("o1", "order_placed", 100, amount=10.0))
    now = T0 // DAY_MS + 100
    s.window_sums(now)
    for i in range(3):  # interactions only: one slot moves
        s.apply(ev(f"w{i}", "page_view", 100, url="/"))
    s.apply(ev("o2", "order_placed", 100, amount=5.0))  # several slots move
    s.apply(ev("e1", "sent", 100))  # nothing moves
    assert s.window_sums(now) == _scan(s, now)
    assert s.window_sums(now)[30][INTERACTIONS] == 5
    assert s.next_due() is None
