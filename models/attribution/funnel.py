"""A funnel of ordered goals, added up from the `goal` records of the attributions topic.

The scoring engine follows each customer through the configured goals
(`AttributionConfig.funnel`, `Journey.goal`): an attempt starts with the first goal and
reaches each next goal if it comes, in order, within the window of the attempt's start.
`FunnelTotals` counts the attempts reaching each step, the time from each step to the
next, and per goal the completions and the customers who completed it at least once.

Step rates count every attempt that reached the step before, open ones included: a live
funnel's last steps fill in as attempts go on.

The times from step to step are kept as counts in logarithmic buckets (`BUCKETS_PER_DOUBLING`
per doubling), so the memory stays bounded however many attempts there are, and the median
reported is its bucket's middle: within about 2 % of the exact one.

>>> funnel = FunnelTotals(["signup", "cart", "purchase"])
>>> def goal(goal, step, elapsed, first=True, first_any=False):
...     return {"kind": "goal", "goal": goal, "funnel_step": step, "elapsed_ms": elapsed,
...             "first": first, "first_any": first_any}
>>> for record in [goal("signup", 0, 0, first_any=True), goal("cart", 1, 3_600_000),
...                goal("signup", 0, 0, first_any=True), goal("cart", 1, 7_200_000),
...                goal("purchase", 2, 60_000), goal("cart", None, None, first=False)]:
...     funnel.add(record)
>>> [(s["goal"], s["reached"], s["rate_from_previous"], s["median_ms_from_previous"])
...  for s in funnel.report()["steps"]]
[('signup', 2, None, None), ('cart', 2, 1.0, 5406309), ('purchase', 1, 0.5, 58809)]
>>> funnel.report()["completion"][1]
{'goal': 'cart', 'completions': 3, 'customers': 2, 'rate': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BUCKETS_PER_DOUBLING", "FunnelTotals"]

BUCKETS_PER_DOUBLING = 16
"""Resolution of the step-to-step times: 2^(1/16), a bucket spans 4.4 %."""


def _bucket(ms: int) -> int:
    """The bucket of a time: 0 for 0 ms, else 1 + floor(16 log2 ms)."""
    return 0 if ms <= 0 else 1 + math.floor(BUCKETS_PER_DOUBLING * math.log2(ms))


def _middle(bucket: int) -> int:
    """The representative time of a bucket: its geometric middle, in whole ms."""
    return 0 if bucket == 0 else round(2 ** ((bucket - 0.5) / BUCKETS_PER_DOUBLING))


def _median(counts: Mapping[int, int]) -> int | None:
    """The median of bucketed times (the two middle ones' mean when their number is even)."""
    n = sum(counts.values())
    if not n:
        return None
    wanted, found, seen = {(n - 1) // 2, n // 2}, [], 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        found += [_middle(bucket) for rank in sorted(wanted) if rank < seen]
        wanted = {rank for rank in wanted if rank >= seen}
        if not wanted:
            break
    return round(sum(found) / len(found))


class FunnelTotals:
    """Attempts per funnel step, times between steps, completions per goal."""

    __slots__ = ("_elapsed", "_reached", "completions", "customers", "customers_any",
                 "goals")

    def __init__(self, goals: Sequence[str]) -> None:
        self.goals = tuple(goals)
        self._reached = [0] * len(self.goals)
        self._elapsed: list[dict[int, int]] = [{} for _ in self.goals]
        """Per step, bucket -> attempts that reached it that many ms after the previous."""
        self.completions = dict.fromkeys(self.goals, 0)
        self.customers = dict.fromkeys(self.goals, 0)
        """Customers who completed each goal at least once."""
        self.customers_any = 0
        """Customers who completed any funnel goal."""

    @staticmethod
    def check(record: Mapping[str, Any]) -> None:
        """Raise KeyError, TypeError or ValueError for a malformed `goal` record."""
        goal, step, elapsed = record["goal"], record["funnel_step"], record["elapsed_ms"]
        if not isinstance(goal, str) or not isinstance(record["first"], bool) or (
                not isinstance(record["first_any"], bool)):
            raise TypeError("goal must be a string, first and first_any booleans")
        if step is not None and (not isinstance(step, int) or step < 0
                                 or not isinstance(elapsed, int) or elapsed < 0):
            raise ValueError(f"bad funnel step {step!r} of goal {goal!r}")

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold in one `goal` record (one of a goal this funnel does not have, or at a step
        it does not have there, is ignored: the funnel was configured otherwise)."""
        self.check(record)
        goal = record["goal"]
        if goal not in self.completions:
            return
        step, elapsed = record["funnel_step"], record["elapsed_ms"]
        first, first_any = record["first"], record["first_any"]
        if step is not None and step < len(self.goals) and self.goals[step] == goal:
            self._reached[step] += 1
            if step:
                bucket = _bucket(elapsed)
                self._elapsed[step][bucket] = self._elapsed[step].get(bucket, 0) + 1
        self.completions[goal] += 1
        self.customers[goal] += first
        self.customers_any += first_any

    def report(self) -> dict[str, Any]:
        """Per step the attempts reaching it, the rates from the previous step and from the
        first, and the median milliseconds from the previous step; per goal the completions,
        the customers who completed it and their share of the customers who completed any
        funnel goal."""
        reached = self._reached
        entries = reached[0] if reached else 0
        steps = []
        for k, goal in enumerate(self.goals):
            before = reached[k - 1] if k else None
            elapsed = self._elapsed[k]
            steps.append({
                "step": k, "goal": goal, "reached": reached[k],
                "rate_from_previous": (None if before is None else
                                       round(reached[k] / before, 4) if before else None),
                "rate_from_entry": round(reached[k] / entries, 4) if entries else None,
                "median_ms_from_previous": _median(elapsed),
            })
        any_ = self.customers_any
        return {
            "goals": list(self.goals),
            "entries": entries,
            "customers": any_,
            "steps": steps,
            "completion": [{"goal": g, "completions": self.completions[g],
                            "customers": self.customers[g],
                            "rate": round(self.customers[g] / any_, 4) if any_ else None}
                           for g in self.goals],
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything counted (JSON-friendly): for comparisons."""
        return {"goals": list(self.goals), "reached": list(self._reached),
                "elapsed": [sorted(e.items()) for e in self._elapsed],
                "completions": dict(self.completions), "customers": dict(self.customers),
                "customers_any": self.customers_any}
