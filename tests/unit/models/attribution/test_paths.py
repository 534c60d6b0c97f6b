"""Closed journeys added up: a hand-counted Sankey diagram, its flow invariant on random
paths, the funnel, and the records of the engine folded into `JourneyTotals`."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribution.funnel import FunnelTotals
from models.attribution.paths import DROP_OFF, MORE, JourneyTotals, PathAggregates, collapse

CHANNELS = ("email", "paid", "social", "organic", "direct", "display", "affiliate")


def flow_holds(report: dict[str, Any]) -> bool:
    """Every step: paths in = onward + conversions + drop-offs, onward = the next step's
    inflow, and the links add up to the same numbers."""
    flow = report["flow"]
    nodes = {n["id"]: n for n in report["nodes"]}
    for k, row in enumerate(flow):
        if row["step"] != k:
            return False
        if row["inflow"] != row["onward"] + row["conversions"] + row["drop_offs"]:
            return False
        following = flow[k + 1]["inflow"] if k + 1 < len(flow) else 0
        if row["onward"] != following:
            return False
        out = [link for link in report["links"] if link["step"] == k]
        if sum(link["value"] for link in out) != row["inflow"]:
            return False
        if sum(link["value"] for link in out
               if nodes[link["target"]].get("terminal") == "conversion") != row["conversions"]:
            return False
    for node in report["nodes"]:
        if node["step"] is None:
            continue
        inflow = (node["value"] if node["step"] == 0 else
                  sum(link["value"] for link in report["links"] if link["target"] == node["id"]))
        outflow = sum(link["value"] for link in report["links"] if link["source"] == node["id"])
        if not inflow == outflow == node["value"]:
            return False
    return True


def test_a_hand_counted_sankey() -> None:
    paths = PathAggregates(max_steps=3)
    paths.add(["email", "email", "paid"], converted=True)   # email, paid: 2 steps
    paths.add(["email"], converted=False)
    paths.add(["social", "paid", "email", "social"], converted=True)  # 4 steps: cut at 3
    paths.add(["paid", "email"], converted=False)
    paths.add([], converted=True)  # no touch: not a path
    report = paths.report(top=2)
    assert report["paths"] == 4
    named = {n["id"]: (n["step"], n.get("channel") or n["terminal"]) for n in report["nodes"]}
    # step 0: email 2, paid 1, social 1 -> top 2 are email and paid (name breaks the tie)
    assert [(named[n["id"]], n["value"]) for n in report["nodes"]] == [
        ((0, "email"), 2), ((0, "(other)"), 1), ((0, "paid"), 1),
        ((1, "paid"), 2), ((1, "email"), 1), ((2, MORE), 1),
        ((None, "conversion"), 2), ((None, "drop-off"), 2)]
    links = {(named[link["source"]], named[link["target"]]): link["value"]
             for link in report["links"]}
    assert links == {
        ((0, "email"), (1, "paid")): 1, ((0, "email"), (None, "drop-off")): 1,
        ((0, "(other)"), (1, "paid")): 1, ((0, "paid"), (1, "email")): 1,
        ((1, "paid"), (None, "conversion")): 1, ((1, "paid"), (2, MORE)): 1,
        ((1, "email"), (None, "drop-off")): 1, ((2, MORE), (None, "conversion")): 1}
    assert report["flow"] == [
        {"step": 0, "inflow": 4, "onward": 3, "conversions": 0, "drop_offs": 1},
        {"step": 1, "inflow": 3, "onward": 1, "conversions": 1, "drop_offs": 1},
        {"step": 2, "inflow": 1, "onward": 0, "conversions": 1, "drop_offs": 0}]
    assert flow_holds(report)
    assert collapse(["a", "a"]) == ["a"] and DROP_OFF == "(drop-off)"
    with pytest.raises(ValueError):
        paths.report(top=0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(CHANNELS), min_size=0, max_size=12),
                          st.booleans()), max_size=60),
       st.integers(1, 9), st.integers(1, 8))
def test_the_flow_of_every_step_adds_up_on_random_paths(
        paths: list[tuple[list[str], bool]], max_steps: int, top: int) -> None:
    aggregates = PathAggregates(max_steps)
    for channels, converted in paths:
        aggregates.add(channels, converted)
    report = aggregates.report(top)
    assert flow_holds(report)
    real = [(c, v) for c, v in paths if c]
    assert report["paths"] == len(real)
    assert report["flow"][0]["inflow"] if real else report["flow"] == []
    terminals = {n["terminal"]: n["value"] for n in report["nodes"] if n["step"] is None}
    assert terminals == {"conversion": sum(v for _c, v in real),
                         "drop-off": sum(not v for _c, v in real)}
    assert all(len([n for n in report["nodes"] if n["step"] == k]) <= top + 1
               for k in range(max_steps))
    assert len(report["flow"]) == min(max_steps, max(
        (len(collapse(c)) for c, _v in real), default=0))


def test_journey_totals_refuse_a_malformed_record_before_counting() -> None:
    totals = JourneyTotals(funnel=("signup",))
    before = totals.to_dict()
    for bad in ({"kind": "null_journey", "path": []}, {"kind": "conversion", "path": "email"},
                {"kind": "conversion", "path": ["(start)"]}, {"kind": "surprise"},
                {"kind": "goal", "goal": "signup", "funnel_step": -1, "elapsed_ms": 0,
                 "first": True, "first_any": True}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            totals.add(bad)
    assert totals.to_dict() == before
    assert totals.add({"conversion_id": "o-1", "touches": []}) is False  # before paths
    assert totals.unpathed == 1


def test_funnel_steps_rates_and_medians() -> None:
    funnel = FunnelTotals(["a", "b"])
    for step, elapsed in ((0, 0), (1, 10), (0, 0), (1, 30), (0, 0), (1, 20)):
        funnel.add({"goal": "ab"[step], "funnel_step": step, "elapsed_ms": elapsed,
                    "first": True, "first_any": step == 0})
    funnel.add({"goal": "b", "funnel_step": None, "elapsed_ms": None, "first": False,
                "first_any": False})
    funnel.add({"goal": "elsewhere", "funnel_step": 0, "elapsed_ms": 0, "first": True,
                "first_any": True})  # not this funnel's goal: ignored
    report = funnel.report()
    assert report["entries"] == 3 and report["customers"] == 3
    assert report["steps"][1] == {"step": 1, "goal": "b", "reached": 3,
                                  "rate_from_previous": 1.0, "rate_from_entry": 1.0,
                                  "median_ms_from_previous": pytest.approx(20, rel=0.022)}
    assert report["completion"] == [
        {"goal": "a", "completions": 3, "customers": 3, "rate": 1.0},
        {"goal": "b", "completions": 4, "customers": 3, "rate": 1.0}]
    assert FunnelTotals(["a"]).report()["steps"][0]["rate_from_entry"] is None


@given(st.lists(st.integers(min_value=0, max_value=90 * 86_400_000), min_size=1,
                max_size=300))
def test_funnel_medians_are_within_a_bucket_of_the_exact_ones_in_bounded_memory(
        times: list[int]) -> None:
    funnel = FunnelTotals(["a", "b"])
    for ms in times:
        funnel.add({"goal": "b", "funnel_step": 1, "elapsed_ms": ms, "first": False,
                    "first_any": False})
    got = funnel.report()["steps"][1]["median_ms_from_previous"]
    exact = statistics.median(times)
    low, high = sorted(times)[(len(times) - 1) // 2], sorted(times)[len(times) // 2]
    # each middle time is reported as its bucket's middle: within 2.2 % of it
    assert min(low, high) * 0.978 - 1 <= got <= max(low, high) * 1.023 + 1, (got, exact)
    assert len(funnel.to_dict()["elapsed"][1]) <= 16 * 37 + 1  # buckets up to 2^37 ms
