"""Revenue KPIs: net and gross revenue retention of a cohort, and the average order value.

Retention compares each customer's revenue at a period's start with the same customer's at
its end. What "revenue at" a date is stays the caller's choice, the same at both ends (the
recurring revenue at that date, or the revenue of the 12 months up to it); the period is
whatever separates the two mappings. The cohort is fixed at the start: the customers with
revenue above 0 then. Customers who only appear later (new, or back from 0) are no part of it,
so retention measures the existing base and not acquisition. Per cohort customer:

* end > start: the growth is expansion;
* 0 < end < start: the decline is contraction;
* end = 0 (or the customer is missing from the end's mapping): the start revenue is churned.

NRR = (start + expansion - contraction - churned) / start, GRR = (start - contraction -
churned) / start, as ratios (1.0 = 100 %): GRR is at most 1, NRR can exceed it. Both are None
for an empty cohort (start = 0). Revenues must be finite and not negative.

>>> r = retention({"A": 100.0, "B": 100.0}, {"A": 150.0, "C": 80.0})
>>> r.start, r.expansion, r.contraction, r.churned, r.nrr, r.grr
(200.0, 50.0, 0.0, 100.0, 0.75, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.errors import ScorestreamError

__all__ = [
    "Retention",
    "RevenueError",
    "aov",
    "grr",
    "nrr",
    "retention",
]


class RevenueError(ScorestreamError, ValueError):
    """A revenue that is negative or not a finite number, or a negative order count."""


@dataclass(frozen=True, slots=True)
class Retention:
    """A cohort's revenue at a period's start and how it moved by the end (see the module's
    docstring): `customers` in the cohort, `churned_customers` of them at 0 by the end."""

    customers: int
    churned_customers: int
    start: float
    expansion: float
    contraction: float
    churned: float

    @property
    def end(self) -> float:
        """The cohort's revenue at the end: start + expansion - contraction - churned."""
        return self.start + self.expansion - self.contraction - self.churned

    @property
    def nrr(self) -> float | None:
        """Net revenue retention, a ratio (None for an empty cohort)."""
        return self.end / self.start if self.start else None

    @property
    def grr(self) -> float | None:
        """Gross revenue retention, a ratio of at most 1 (None for an empty cohort)."""
        if not self.start:
            return None
        return (self.start - self.contraction - self.churned) / self.start


def _checked(customer: str, revenue: float) -> float:
    if isinstance(revenue, bool) or not isinstance(revenue, int | float):
        raise RevenueError(f"revenue of {customer!r} is no number: {revenue!r}")
    if not (math.isfinite(revenue) and revenue >= 0):
        raise RevenueError(f"revenue of {customer!r} must be finite and >= 0, got {revenue!r}")
    return float(revenue)


def retention(start: Mapping[str, float], end: Mapping[str, float]) -> Retention:
    """The parts of NRR and GRR: revenue per customer at a period's start and at its end.

    Customers with revenue 0 at the start, or missing from `start`, are not in the cohort;
    a cohort customer missing from `end` has churned. Every revenue of both mappings is
    checked (RevenueError), also those outside the cohort.

    >>> r = retention({"A": 100.0, "B": 50.0, "N": 0.0}, {"A": 90.0, "B": 0.0, "N": 30.0})
    >>> r.customers, r.churned_customers, r.contraction, r.churned, r.end
    (2, 1, 10.0, 50.0, 90.0)
    >>> retention({}, {"A": 10.0}).nrr is None
    True
    """
    for customer, revenue in end.items():
        _checked(customer, revenue)
    starts, expansion, contraction, churned = [], [], [], []
    for customer, revenue in start.items():
        before = _checked(customer, revenue)
        if not before:
            continue
        starts.append(before)
        after = float(end.get(customer, 0.0))
        if not after:
            churned.append(before)
        elif after > before:
            expansion.append(after - before)
        elif after < before:
            contraction.append(before - after)
    return Retention(
        customers=len(starts),
        churned_customers=len(churned),
        start=math.fsum(starts),
        expansion=math.fsum(expansion),
        contraction=math.fsum(contraction),
        churned=math.fsum(churned),
    )


def nrr(start: Mapping[str, float], end: Mapping[str, float]) -> float | None:
    """Net revenue retention of the cohort at `start` (see `retention`).

    >>> nrr({"A": 100.0, "B": 100.0}, {"A": 250.0, "B": 50.0})
    1.5
    """
    return retention(start, end).nrr


def grr(start: Mapping[str, float], end: Mapping[str, float]) -> float | None:
    """Gross revenue retention of the cohort at `start` (see `retention`).

    >>> grr({"A": 100.0, "B": 100.0}, {"A": 250.0, "B": 50.0})
    0.75
    """
    return retention(start, end).grr


def aov(revenue: float, orders: int) -> float | None:
    """Average order value: revenue / orders, None when there are no orders.

    >>> aov(250.0, 4), aov(0.0, 0)
    (62.5, None)
    """
    if orders < 0:
        raise RevenueError(f"an order count cannot be negative, got {orders}")
    return revenue / orders if orders else None
