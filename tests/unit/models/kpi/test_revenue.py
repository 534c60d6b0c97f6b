"""Revenue KPIs by hand: NRR and GRR of a cohort fixed at the start, AOV."""

from __future__ import annotations

import pytest

from models.kpi.revenue import Retention, RevenueError, aov, grr, nrr, retention


def test_nrr_and_grr_by_hand() -> None:
    start = {"A": 400.0, "B": 300.0, "C": 200.0, "D": 100.0, "E": 0.0}
    end = {"A": 500.0, "B": 250.0, "C": 0.0, "E": 60.0, "F": 1000.0}
    # cohort A, B, C, D (E had no revenue at the start, F is new): start 1000
    # A +100 expansion; B -50 contraction; C to 0 churned 200; D gone churned 100
    # NRR = (1000 + 100 - 50 - 300) / 1000 = 0.75; GRR = (1000 - 50 - 300) / 1000 = 0.65
    result = retention(start, end)
    assert result == Retention(customers=4, churned_customers=2, start=1000.0, expansion=100.0,
                               contraction=50.0, churned=300.0)
    assert result.end == 750.0  # the cohort's end revenue: 500 + 250
    assert result.nrr == 0.75
    assert result.grr == 0.65
    assert nrr(start, end) == 0.75
    assert grr(start, end) == 0.65


def test_nrr_above_one_grr_not() -> None:
    # A 100 -> 250 (+150), B 100 -> 50 (-50): NRR = (200 + 150 - 50) / 200 = 1.5,
    # GRR = (200 - 50) / 200 = 0.75
    start, end = {"A": 100.0, "B": 100.0}, {"A": 250.0, "B": 50.0}
    assert nrr(start, end) == 1.5
    assert grr(start, end) == 0.75


def test_unchanged_revenue_retains_everything() -> None:
    result = retention({"A": 80.0, "B": 20}, {"A": 80.0, "B": 20})
    assert (result.expansion, result.contraction, result.churned) == (0.0, 0.0, 0.0)
    assert result.nrr == 1.0
    assert result.grr == 1.0


def test_everyone_churned() -> None:
    result = retention({"A": 80.0, "B": 20.0}, {})
    assert result.churned_customers == 2
    assert result.churned == 100.0
    assert result.nrr == 0.0
    assert result.grr == 0.0


def test_customers_outside_the_cohort_are_ignored() -> None:
    # only new or returning customers grow: the cohort (A) is unchanged
    result = retention({"A": 50.0, "Z": 0.0}, {"A": 50.0, "Z": 500.0, "N": 900.0})
    assert result.customers == 1
    assert result.expansion == 0.0
    assert result.nrr == 1.0


def test_empty_cohort() -> None:
    for start in ({}, {"A": 0.0}):
        result = retention(start, {"A": 10.0})
        assert result == Retention(0, 0, 0.0, 0.0, 0.0, 0.0)
        assert result.nrr is None
        assert result.grr is None
    assert nrr({}, {}) is None
    assert grr({}, {}) is None


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "10", None, True])
def test_invalid_revenue_is_rejected(bad: object) -> None:
    with pytest.raises(RevenueError, match="revenue of 'X'"):
        retention({"X": bad}, {})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="revenue of 'X'"):  # a RevenueError is a ValueError
        retention({"A": 1.0}, {"X": bad})  # type: ignore[dict-item]


def test_aov_by_hand() -> None:
    # 250 over 4 orders = 62.5
    assert aov(250.0, 4) == 62.5
    assert aov(99.0, 1) == 99.0
    assert aov(100.0, 0) is None
    assert aov(0.0, 0) is None
    with pytest.raises(RevenueError, match="order count cannot be negative"):
        aov(10.0, -1)
