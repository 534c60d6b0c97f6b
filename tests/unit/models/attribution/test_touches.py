"""Touches and conversions: the lookback window picks a conversion's touches, in time order."""

from __future__ import annotations

import dataclasses

import pytest

from models.attribution.touches import LOOKBACK_MS, Conversion, Touch, select_touches
from tests.kit import DAY_MS, at


def touch(channel: str, day: float, direct: bool = False) -> Touch:
    return Touch(channel, None, at(day), direct)


ORDER = Conversion("o-1", "C1", at(100), 80.0, "EUR")


def test_default_lookback_is_ninety_days_with_both_ends_included() -> None:
    assert LOOKBACK_MS == 90 * DAY_MS
    edge = Touch("search", "brand", ORDER.at_ms - LOOKBACK_MS, False)
    too_old = Touch("search", "brand", ORDER.at_ms - LOOKBACK_MS - 1, False)
    same_ms = Touch("direct", None, ORDER.at_ms, True)
    later = Touch("email", None, ORDER.at_ms + 1, False)
    assert select_touches([too_old, edge, same_ms, later], ORDER) == [edge, same_ms]


def test_lookback_is_configurable() -> None:
    touches = [touch("a", 60), touch("b", 80), touch("c", 95)]
    assert select_touches(touches, ORDER, lookback_ms=30 * DAY_MS) == touches[1:]
    assert select_touches(touches, ORDER, lookback_ms=0) == []
    assert select_touches(touches, ORDER, lookback_ms=40 * DAY_MS) == touches


def test_selection_is_in_time_order_and_stable_for_simultaneous_touches() -> None:
    first, tie_a, tie_b, last = touch("a", 10), touch("b", 50), touch("c", 50), touch("d", 99)
    assert select_touches(iter([last, tie_a, first, tie_b]), ORDER) == [
        first, tie_a, tie_b, last]
    assert select_touches([tie_b, tie_a], ORDER) == [tie_b, tie_a]


def test_no_touches_and_bad_window() -> None:
    assert select_touches([], ORDER) == []
    with pytest.raises(ValueError, match="lookback_ms"):
        select_touches([touch("a", 99)], ORDER, lookback_ms=-1)


def test_values_are_frozen_and_direct_defaults_to_false() -> None:
    t = Touch("email", "spring", at(1))
    assert t.direct is False and t.campaign == "spring"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.at_ms = 0  # type: ignore[misc]
    assert ORDER.value == 80.0 and ORDER.currency == "EUR" and ORDER.customer_id == "C1"
