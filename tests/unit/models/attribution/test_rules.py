"""Rule-based attribution: hand-computed credits, Adobe's time-decay example, and credits that
always add up to the conversion's value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribution.rules import (
    HALF_LIFE_MS,
    MODELS,
    all_models,
    all_shares,
    first_click,
    last_click,
    linear,
    position_based,
    split,
    time_decay,
)
from models.attribution.touches import Conversion, Touch
from tests.kit import DAY_MS, T0, at

HOUR_MS = DAY_MS // 24


def touch(channel: str, day: float, direct: bool = False) -> Touch:
    return Touch(channel, None, at(day), direct)


def conversion(day: float, value: float = 100.0) -> Conversion:
    return Conversion("o-1", "C1", at(day), value, "EUR")


def close(actual: list[float], expected: list[float]) -> bool:
    return len(actual) == len(expected) and all(
        a == pytest.approx(e, rel=1e-12, abs=1e-12) for a, e in zip(actual, expected, strict=True))


def test_one_touch_gets_everything_in_every_model() -> None:
    for name, credits in all_models([touch("email", 3, direct=True)], conversion(5, 42.5)).items():
        assert credits == [42.5], name


def test_two_touches() -> None:
    pair = [touch("search", 3), touch("email", 10)]
    buy = conversion(10, 90.0)
    assert last_click(pair, buy) == [0.0, 90.0]
    assert first_click(pair, buy) == [90.0, 0.0]
    assert linear(pair, buy) == [45.0, 45.0]
    # ages 7 and 0 days: weights 1/2 and 1, so 1/3 and 2/3
    assert close(time_decay(pair, buy), [30.0, 60.0])
    assert position_based(pair, buy) == [45.0, 45.0]
    assert position_based(pair, buy, end_share=0.3) == [45.0, 45.0]


def test_three_or_more_touches_position_based_is_40_20_40() -> None:
    buy = conversion(10)
    three = [touch("a", 1), touch("b", 2), touch("c", 3)]
    assert close(position_based(three, buy), [40.0, 20.0, 40.0])
    four = [*three, touch("d", 4)]
    assert close(position_based(four, buy), [40.0, 10.0, 10.0, 40.0])
    six = [touch(c, d) for d, c in enumerate("abcdef")]
    assert close(position_based(six, buy), [40.0, 5.0, 5.0, 5.0, 5.0, 40.0])
    assert close(position_based(four, buy, end_share=0.25), [25.0, 25.0, 25.0, 25.0])
    assert close(position_based(four, buy, end_share=0.5), [50.0, 0.0, 0.0, 50.0])


def test_linear_and_first_click_on_many_touches() -> None:
    five = [touch(c, d) for d, c in enumerate("abcde")]
    assert close(linear(five, conversion(9)), [20.0] * 5)
    assert first_click(five, conversion(9)) == [100.0, 0.0, 0.0, 0.0, 0.0]


def test_last_click_skips_direct_touches() -> None:
    buy = conversion(10, 60.0)
    journey = [touch("search", 1), touch("email", 2), touch("direct", 3, direct=True),
               touch("direct", 4, direct=True)]
    assert last_click(journey, buy) == [0.0, 60.0, 0.0, 0.0]
    assert last_click([touch("direct", 4, direct=True), touch("ad", 5)], buy) == [0.0, 60.0]


def test_last_click_falls_back_to_the_last_touch_when_all_are_direct() -> None:
    journey = [touch("direct", 1, direct=True), touch("direct", 2, direct=True)]
    assert last_click(journey, conversion(3, 60.0)) == [0.0, 60.0]


def test_first_click_counts_a_direct_first_touch() -> None:
    journey = [touch("direct", 1, direct=True), touch("email", 2)]
    assert first_click(journey, conversion(3, 60.0)) == [60.0, 0.0]


def test_first_and_last_are_by_time_and_credits_keep_the_given_order() -> None:
    late, early, middle = touch("late", 9), touch("early", 1), touch("middle", 5)
    shuffled = [late, early, middle]
    buy = conversion(10)
    assert last_click(shuffled, buy) == [100.0, 0.0, 0.0]
    assert first_click(shuffled, buy) == [0.0, 100.0, 0.0]
    assert close(position_based(shuffled, buy), [40.0, 40.0, 20.0])
    # simultaneous touches: the given order decides
    tie = [touch("x", 5), touch("y", 5)]
    assert first_click(tie, buy) == [100.0, 0.0] and last_click(tie, buy) == [0.0, 100.0]


def test_adobe_time_decay_example() -> None:
    # Adobe: paid search on September 15, social on September 18, email and display on
    # September 24, then a $50 purchase on September 24. Gaps to the conversion day:
    # 9, 6, 0 and 0 days; weights 2^(-9/7), 2^(-6/7), 1, 1.
    def sep(day: int, hour: int) -> int:
        return T0 + (day - 15) * DAY_MS + hour * HOUR_MS

    touches = [Touch("paid_search", None, sep(15, 19), False),  # evening: still 9 days
               Touch("social", None, sep(18, 8), False),
               Touch("email", "coupon", sep(24, 9), False),       # hours before display
               Touch("display", None, sep(24, 15), False)]
    buy = Conversion("o-1", "C1", sep(24, 16), 50.0, "USD")
    credits = time_decay(touches, buy)
    weights = [2 ** (-9 / 7), 2 ** (-6 / 7), 1.0, 1.0]
    assert close(credits, [50.0 * w / sum(weights) for w in weights])
    assert [round(100 * c / 50.0, 1) for c in credits] == [13.8, 18.6, 33.8, 33.8]
    assert [round(c, 2) for c in credits] == [6.92, 9.32, 16.88, 16.88]


def test_time_decay_age_is_calendar_days_not_elapsed_time() -> None:
    buy = Conversion("o-1", "C1", at(10) + 1, 100.0, "EUR")  # just after midnight
    late_evening = Touch("a", None, at(10) - 1, False)  # 2 ms earlier, previous day: age 1
    same_day = Touch("b", None, at(10), False)
    assert close(time_decay([late_evening, same_day], buy),
                 [100 * 2 ** (-1 / 7) / (1 + 2 ** (-1 / 7)), 100 / (1 + 2 ** (-1 / 7))])
    morning, evening = touch("a", 3.1), touch("b", 3.9)
    assert time_decay([morning, evening], conversion(3.95)) == [50.0, 50.0]


def test_time_decay_half_life_is_configurable() -> None:
    assert HALF_LIFE_MS == 7 * DAY_MS
    journey = [touch("a", 1), touch("b", 4), touch("c", 7)]
    # half-life 3 days, ages 6, 3, 0: weights 1/4, 1/2, 1
    assert close(time_decay(journey, conversion(7, 70.0), half_life_ms=3 * DAY_MS),
                 [10.0, 20.0, 40.0])
    assert close(all_models(journey, conversion(7, 70.0), half_life_ms=3 * DAY_MS)["time_decay"],
                 [10.0, 20.0, 40.0])


def test_time_decay_of_very_old_touches_does_not_underflow() -> None:
    # 2^(-8000/7) is 0.0 in floats: weights are taken relative to the youngest touch
    old = [touch("a", -8007), touch("b", -8000)]
    assert close(time_decay(old, conversion(0, 30.0)), [10.0, 20.0])


def test_a_touch_after_the_conversion_counts_as_age_zero() -> None:
    assert close(time_decay([touch("a", 3), touch("b", 12)], conversion(10, 30.0),
                            half_life_ms=7 * DAY_MS), [10.0, 20.0])


def test_all_models_names_and_no_touches() -> None:
    journey = [touch("search", 1), touch("email", 2), touch("direct", 3, direct=True)]
    result = all_models(journey, conversion(3, 10.0))
    assert tuple(result) == MODELS == (
        "last_click", "first_click", "linear", "time_decay", "position_based")
    assert result["last_click"] == last_click(journey, conversion(3, 10.0)) == [0.0, 10.0, 0.0]
    assert result["position_based"] == position_based(journey, conversion(3, 10.0))
    assert all(credits == [] for credits in all_models([], conversion(3)).values())


def test_split_puts_the_rounding_on_the_largest_share() -> None:
    thirds = split(100.0, [1, 1, 1])
    assert thirds[1] == thirds[2] == 100.0 * (1 / 3)
    assert thirds[0] == 100.0 - math.fsum(thirds[1:])
    assert math.fsum(thirds) == 100.0
    tenths = split(1.0, [1, 2, 7])
    assert tenths[:2] == [0.1, 0.2] and tenths[2] == 1.0 - math.fsum([0.1, 0.2])
    assert split(1.0, [0, 0, 5]) == [0.0, 0.0, 1.0]


def test_bad_parameters_are_rejected() -> None:
    journey = [touch("a", 1), touch("b", 2), touch("c", 3)]
    with pytest.raises(ValueError, match="half_life_ms"):
        time_decay(journey, conversion(3), half_life_ms=0)
    with pytest.raises(ValueError, match="end_share"):
        position_based(journey, conversion(3), end_share=0.6)
    with pytest.raises(ValueError, match="weights"):
        split(1.0, [1.0, -0.5])
    with pytest.raises(ValueError, match="zero"):
        split(1.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="weights"):
        split(1.0, [math.nan])


touch_lists = st.lists(
    st.builds(Touch, st.sampled_from(["search", "email", "ad", "direct"]), st.none(),
              st.integers(T0 - 20_000 * DAY_MS, T0), st.booleans()),
    min_size=1, max_size=40)
values = st.just(0.0) | st.floats(1e-290, 1e12)  # 0, or any amount of normal magnitude


@settings(max_examples=300)
@given(touch_lists, values, st.integers(1, 400 * DAY_MS), st.floats(0.0, 0.5))
def test_every_model_gives_non_negative_credits_adding_up_to_the_value(
        touches: list[Touch], value: float, half_life_ms: int, end_share: float) -> None:
    buy = Conversion("o-1", "C1", T0, value, "EUR")
    result = all_models(touches, buy, half_life_ms=half_life_ms, end_share=end_share)
    assert tuple(result) == MODELS
    for name, credits in result.items():
        assert len(credits) == len(touches), name
        assert all(c >= 0.0 for c in credits), name
        assert abs(sum(credits) - value) <= 1e-9 * value, name


@settings(max_examples=300)
@given(touch_lists, values, st.integers(1, 400 * DAY_MS), st.floats(0.0, 0.5))
def test_all_shares_is_every_model_at_value_one_then_split_to_the_last_bit(
        touches: list[Touch], value: float, half_life_ms: int, end_share: float) -> None:
    buy = Conversion("o-1", "C1", T0, value, "EUR")
    unit = Conversion("o-1", "C1", T0, 1.0, "EUR")
    shares, credits = all_shares(touches, buy, half_life_ms=half_life_ms, end_share=end_share)
    expected = all_models(touches, unit, half_life_ms=half_life_ms, end_share=end_share)
    assert tuple(shares) == tuple(credits) == MODELS
    assert shares == expected
    assert credits == {m: split(value, s) for m, s in expected.items()}
