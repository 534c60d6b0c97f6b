"""Markov-chain attribution: a hand-solved chain, the degenerate cases, incremental counts and
their snapshots, and a conversion's value split by the channel weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribution.markov import (
    CONVERSION,
    NULL,
    OTHER,
    START,
    MarkovAttribution,
    TransitionCounts,
    data_driven,
    fit,
    markov_attribution,
)
from models.attribution.touches import Conversion, Touch
from tests.kit import at

# The hand-solved example:
#   1. A -> B        converted
#   2. A             null
#   3. B -> A -> B   converted
#   4. C             null
# Moves: start->A 2, start->B 1, start->C 1 (of 4); A->B 2, A->null 1 (of 3);
#        B->conversion 2, B->A 1 (of 3); C->null 1.
# Conversion probabilities x (from each state):
#   x_A = 2/3 x_B,  x_B = 2/3 + 1/3 x_A = 2/3 + 2/9 x_B  =>  x_B = 6/7, x_A = 4/7, x_C = 0
#   P = x_start = 1/2 x_A + 1/4 x_B + 1/4 x_C = 2/7 + 3/14 = 1/2
# Without A (moves into A go to null): x_A = 0, x_B = 2/3, P = 1/4 * 2/3 = 1/6
#   removal effect 1 - (1/6)/(1/2) = 2/3
# Without B: x_B = 0, so x_A = 0 and P = 0: removal effect 1
# Without C: C never converts, P stays 1/2: removal effect 0
# Weights: A = (2/3)/(5/3) = 2/5, B = 1/(5/3) = 3/5, C = 0
HAND_PATHS = [(["A", "B"], True), (["A"], False), (["B", "A", "B"], True), (["C"], False)]


def test_counts_of_the_hand_example() -> None:
    counts = TransitionCounts.from_paths(HAND_PATHS)
    assert counts.to_dict() == {
        START: {"A": 2, "B": 1, "C": 1},
        "A": {"B": 2, NULL: 1},
        "B": {"A": 1, CONVERSION: 2},
        "C": {NULL: 1},
    }
    assert (counts.paths, counts.conversions, counts.channels) == (4, 2, ["A", "B", "C"])
    assert counts.count("B", CONVERSION) == 2 and counts.count("C", "A") == 0


def test_hand_example_probability_removal_effects_and_weights() -> None:
    result = markov_attribution(TransitionCounts.from_paths(HAND_PATHS))
    assert result.conversion_probability == pytest.approx(1 / 2, abs=1e-12)
    assert list(result.removal_effects) == ["A", "B", "C"]
    assert result.removal_effects["A"] == pytest.approx(2 / 3, abs=1e-12)
    assert result.removal_effects["B"] == pytest.approx(1.0, abs=1e-12)
    assert result.removal_effects["C"] == 0.0
    assert result.weights["A"] == pytest.approx(2 / 5, abs=1e-12)
    assert result.weights["B"] == pytest.approx(3 / 5, abs=1e-12)
    assert result.weights["C"] == 0.0


def test_small_loop_free_example() -> None:
    # [A, B] converted, [A] null, [B] converted: start->A 2/3, start->B 1/3, A->B 1/2,
    # A->null 1/2, B->conversion 1. x_A = 1/2, P = 2/3 * 1/2 + 1/3 = 2/3.
    # Without A: P = 1/3, effect 1/2; without B: P = 0, effect 1. Weights 1/3, 2/3.
    result = markov_attribution(TransitionCounts.from_paths(
        [(["A", "B"], True), (["A"], False), (["B"], True)]))
    assert result.conversion_probability == pytest.approx(2 / 3, abs=1e-12)
    assert result.removal_effects == pytest.approx({"A": 1 / 2, "B": 1.0}, abs=1e-12)
    assert result.weights == pytest.approx({"A": 1 / 3, "B": 2 / 3}, abs=1e-12)


def test_no_conversions_gives_zero_everywhere() -> None:
    result = markov_attribution(TransitionCounts.from_paths([(["A"], False), (["A", "B"], False)]))
    assert result == MarkovAttribution(0.0, {"A": 0.0, "B": 0.0}, {"A": 0.0, "B": 0.0})


def test_no_paths_at_all() -> None:
    assert markov_attribution(TransitionCounts()) == MarkovAttribution(0.0, {}, {})


def test_a_channel_whose_removal_changes_nothing_gets_weight_zero() -> None:
    # D is only ever followed by B, and a path without D converts through B as well:
    # removing D loses D's conversions, but E (always null) loses none.
    counts = TransitionCounts.from_paths(
        [(["D", "B"], True), (["B"], True), (["E"], False), (["B", "E"], False)])
    result = markov_attribution(counts)
    assert result.removal_effects["E"] == 0.0 and result.weights["E"] == 0.0
    assert result.removal_effects["D"] > 0.0 and result.weights["B"] > result.weights["D"]
    assert math.fsum(result.weights.values()) == pytest.approx(1.0, abs=1e-12)


def test_a_path_without_channels_converts_from_start() -> None:
    # start->conversion 1/2, start->A 1/2, A->conversion: P = 1; without A, P = 1/2.
    result = markov_attribution(TransitionCounts.from_paths([([], True), (["A"], True)]))
    assert result.conversion_probability == pytest.approx(1.0, abs=1e-12)
    assert result.removal_effects == pytest.approx({"A": 0.5}, abs=1e-12)
    assert result.weights == pytest.approx({"A": 1.0}, abs=1e-12)


def test_states_that_cannot_reach_an_end_are_sent_to_null() -> None:
    # Only restored counts can hold them: A loops on itself forever, B has no moves out.
    # start->A, start->B, start->C 1/3 each; C->conversion: P = 1/3 with A and B as null.
    counts = TransitionCounts.from_dict(
        {START: {"A": 1, "B": 1, "C": 1}, "A": {"A": 1}, "C": {CONVERSION: 1}})
    result = markov_attribution(counts)  # I - Q would be singular at A without the rule
    assert result.conversion_probability == pytest.approx(1 / 3, abs=1e-12)
    assert result.removal_effects == {"A": 0.0, "B": 0.0, "C": pytest.approx(1.0, abs=1e-12)}


def test_a_closed_loop_of_two_channels_is_sent_to_null() -> None:
    counts = TransitionCounts.from_dict(
        {START: {"A": 1, "C": 3}, "A": {"B": 2}, "B": {"A": 5}, "C": {CONVERSION: 1, NULL: 1}})
    result = markov_attribution(counts)  # start->C 3/4, C->conversion 1/2: P = 3/8
    assert result.conversion_probability == pytest.approx(3 / 8, abs=1e-12)
    assert result.weights == {"A": 0.0, "B": 0.0, "C": pytest.approx(1.0, abs=1e-12)}


def test_a_channel_no_path_from_start_reaches_has_effect_zero() -> None:
    counts = TransitionCounts.from_dict(
        {START: {"B": 2}, "B": {CONVERSION: 1, NULL: 1}, "X": {"B": 4}})
    result = markov_attribution(counts)
    assert result.conversion_probability == pytest.approx(0.5, abs=1e-12)
    assert result.removal_effects == {"B": pytest.approx(1.0, abs=1e-12), "X": 0.0}


def test_adding_paths_one_by_one_equals_building_from_all_of_them() -> None:
    incremental = TransitionCounts()
    for n, (channels, converted) in enumerate(HAND_PATHS):
        incremental.add_path(channels, converted)
        if n == 1:  # a stream restarts from its snapshot half-way
            incremental = TransitionCounts.restore(incremental.snapshot())
    assert incremental == TransitionCounts.from_paths(HAND_PATHS)
    assert incremental == TransitionCounts.from_paths(reversed(HAND_PATHS))
    assert incremental != TransitionCounts.from_paths(HAND_PATHS[:-1])
    assert markov_attribution(incremental) == markov_attribution(
        TransitionCounts.from_paths(HAND_PATHS))


def test_snapshot_round_trip_is_equal_and_independent() -> None:
    counts = TransitionCounts.from_paths(HAND_PATHS)
    data = counts.snapshot()
    again = TransitionCounts.restore(data)
    assert again == counts and again is not counts and again.snapshot() == data
    assert orjson.loads(data) == counts.to_dict()
    again.add_path(["A"], True)
    assert again != counts and counts.snapshot() == data
    assert TransitionCounts.restore(TransitionCounts().snapshot()) == TransitionCounts()


def test_bad_paths_and_bad_counts_are_rejected_without_change() -> None:
    counts = TransitionCounts.from_paths(HAND_PATHS)
    before = counts.snapshot()
    for bad in (["A", START], ["A", ""], [NULL], ["A", CONVERSION]):
        with pytest.raises(ValueError, match="channel"):
            counts.add_path(bad, True)
    with pytest.raises(TypeError):
        counts.add_path("AB", True)
    assert counts.snapshot() == before
    for bad_dict in ({NULL: {"A": 1}}, {START: {START: 1}}, {START: {"A": 0}},
                     {START: {"A": 1.5}}):
        with pytest.raises(ValueError):
            TransitionCounts.from_dict(bad_dict)


path_lists = st.lists(
    st.tuples(st.lists(st.sampled_from("ABCDE"), max_size=6), st.booleans()), max_size=30)


@settings(max_examples=200)
@given(path_lists, st.integers(0, 30))
def test_incremental_counts_and_results_match_at_any_split(
        paths: list[tuple[list[str], bool]], cut: int) -> None:
    whole = TransitionCounts.from_paths(paths)
    resumed = TransitionCounts.restore(TransitionCounts.from_paths(paths[:cut]).snapshot())
    for channels, converted in paths[cut:]:
        resumed.add_path(channels, converted)
    assert resumed == whole and resumed.snapshot() == whole.snapshot()
    result = markov_attribution(whole)
    assert result == markov_attribution(resumed)
    assert 0.0 <= result.conversion_probability <= 1.0 + 1e-12
    assert (result.conversion_probability > 0) == any(converted for _, converted in paths)
    assert all(0.0 <= e <= 1.0 for e in result.removal_effects.values())
    weights = list(result.weights.values())
    assert all(w >= 0.0 for w in weights)
    if any(e > 0 for e in result.removal_effects.values()):
        assert math.fsum(weights) == pytest.approx(1.0, abs=1e-12)
    else:
        assert weights == [0.0] * len(weights)


def touch(channel: str, day: float) -> Touch:
    return Touch(channel, None, at(day), False)


BUY = Conversion("o-1", "C1", at(10), 100.0, "EUR")


def test_data_driven_splits_channel_weights_over_their_touches() -> None:
    journey = [touch("A", 1), touch("B", 2), touch("B", 3), touch("C", 4)]
    # A 2/5, B 3/5 shared by two touches, C 0
    assert data_driven(journey, BUY, {"A": 0.4, "B": 0.6, "C": 0.0}) == pytest.approx(
        [40.0, 30.0, 30.0, 0.0], abs=1e-12)
    weights = markov_attribution(TransitionCounts.from_paths(HAND_PATHS)).weights
    assert data_driven(journey, BUY, weights) == pytest.approx([40.0, 30.0, 30.0, 0.0],
                                                               abs=1e-9)
    # only the weights of the touching channels count: A 0.2 against B 0.2
    assert data_driven([touch("A", 1), touch("B", 2)], BUY,
                       {"A": 0.2, "B": 0.2, "Z": 0.6}) == [50.0, 50.0]


def test_data_driven_falls_back_to_linear_when_no_touching_channel_has_weight() -> None:
    journey = [touch("C", 1), touch("new", 2), touch("C", 3), touch("new", 4)]
    assert data_driven(journey, BUY, {"A": 1.0, "C": 0.0}) == [25.0, 25.0, 25.0, 25.0]
    assert data_driven(journey, BUY, {}) == [25.0, 25.0, 25.0, 25.0]
    assert data_driven([], BUY, {"A": 1.0}) == []


def test_data_driven_rejects_negative_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        data_driven([touch("A", 1)], BUY, {"A": -0.1})


@settings(max_examples=200)
@given(st.lists(st.sampled_from("ABCD"), min_size=1, max_size=30),
       st.dictionaries(st.sampled_from("ABCDE"), st.floats(0.0, 1.0)),
       st.just(0.0) | st.floats(1e-290, 1e12))
def test_data_driven_credits_are_non_negative_and_add_up(
        channels: list[str], weights: dict[str, float], value: float) -> None:
    journey = [touch(c, n / 10) for n, c in enumerate(channels)]
    credits = data_driven(journey, Conversion("o-1", "C1", at(10), value, "EUR"), weights)
    assert len(credits) == len(journey)
    assert all(c >= 0.0 for c in credits)
    assert abs(sum(credits) - value) <= 1e-9 * value


REFERENCE = Path(__file__).parents[3] / "data" / "markov-reference.json"


@pytest.mark.parametrize("case", orjson.loads(REFERENCE.read_bytes())["cases"],
                         ids=lambda case: f"seed{case['seed']}")
def test_the_solver_agrees_with_marketing_attribution_models(case: dict[str, Any]) -> None:
    """The same paths through `marketing-attribution-models` 2.1.1 (tests/data/README.md)."""
    counts = TransitionCounts.from_paths((p.split(" > "), c) for p, c in case["paths"])
    result = markov_attribution(counts)
    assert result.conversion_probability == pytest.approx(case["conversion_probability"],
                                                          rel=1e-12)
    assert result.removal_effects == pytest.approx(case["removal_effects"], rel=1e-9, abs=1e-12)
    assert result.weights == pytest.approx(case["weights"], rel=1e-9, abs=1e-12)
    assert len(result.weights) >= 3


def test_a_fit_is_the_exact_solution_with_intervals_around_it() -> None:
    counts = TransitionCounts.from_paths(HAND_PATHS * 25)
    model = fit(counts, draws=300)
    exact = markov_attribution(counts)
    assert (model.weights, model.removal_effects) == (exact.weights, exact.removal_effects)
    assert model.version == f"100-{counts.digest()}" and model.paths == 100
    for channel in ("A", "B"):
        low, high = model.weight_intervals[channel]
        assert low < exact.weights[channel] < high
        low, high = model.effect_intervals[channel]
        assert low <= exact.removal_effects[channel] <= high
    assert model.weight_intervals["C"] == (0.0, 0.0)  # C never converts, in any draw
    # The same counts, however they were reached, give the same model, intervals included.
    again = TransitionCounts.from_paths(list(reversed(HAND_PATHS * 25)))
    assert fit(again, draws=300) == model
    # More paths of the same chain: narrower intervals.
    wide = fit(TransitionCounts.from_paths(HAND_PATHS * 5), draws=300).weight_intervals["A"]
    narrow = model.weight_intervals["A"]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_channels_beyond_the_most_visited_are_solved_as_one() -> None:
    counts = TransitionCounts.from_paths([(["A", "x"], True), (["A", "y"], False),
                                          (["A"], True), (["B", "y"], True)])
    model = fit(counts, draws=10, max_channels=2)
    # visits: A 3, y 2, B 1, x 1: A and y are kept, B and x solved as one
    assert model.lumped == ("B", "x") and sorted(model.weights) == ["(other)", "A", "y"]
    lumped = counts.lumped(["A", "y"])
    assert lumped.count(START, OTHER) == 1 and lumped.count("A", OTHER) == 1
    assert lumped.count(OTHER, "y") == 1 and lumped.count(OTHER, CONVERSION) == 1
    assert lumped.paths == counts.paths and lumped.conversions == counts.conversions
    buy = Conversion("o-1", "C1", at(9), 10.0, "EUR")
    credited = model.credit([Touch("x", None, at(1)), Touch("A", None, at(2))], buy)
    assert math.fsum(credited) == pytest.approx(10.0)
    assert credited == data_driven([Touch(OTHER, None, at(1)), Touch("A", None, at(2))], buy,
                                   model.weights)


def test_a_channel_first_seen_after_the_fit_takes_the_lumped_weight() -> None:
    paths = [(["A", "x"], True), (["A", "y"], False), (["A"], True), (["B", "y"], True)]
    lumping = fit(TransitionCounts.from_paths(paths), draws=0, max_channels=2)
    buy = Conversion("o-1", "C1", at(9), 10.0, "EUR")
    new = [Touch("new", None, at(1)), Touch("A", None, at(2))]
    assert lumping.credit(new, buy) == data_driven(
        [Touch(OTHER, None, at(1)), Touch("A", None, at(2))], buy, lumping.weights)
    assert lumping.credit(new, buy)[0] > 0.0
    # A model that lumped nothing has no weight for it: the known channel takes all.
    whole = fit(TransitionCounts.from_paths(paths), draws=0)
    assert OTHER not in whole.weights
    assert whole.credit(new, buy) == [0.0, 10.0]
    # Only unknown channels: no weight for any, so the split is linear.
    assert whole.credit([Touch("new", None, at(1)), Touch("newer", None, at(2))], buy) == [
        5.0, 5.0]


def test_the_description_names_at_most_a_hundred_lumped_channels() -> None:
    paths = [([f"c{i:03d}", "A"], i % 2 == 0) for i in range(150)]
    model = fit(TransitionCounts.from_paths(paths), draws=0, max_channels=1)
    described = model.to_dict()
    assert len(model.lumped) == 150 and described["lumped_count"] == 150
    assert described["lumped"] == [f"c{i:03d}" for i in range(100)]
