"""Closed journeys added up: the Markov chain's counts, a Sankey diagram of the paths, the funnel.

A closed journey is a path of channels that ended in a conversion or in nothing (a null
path). `PathAggregates` counts the moves of paths step by step, for a Sankey diagram: a
node is a (step, channel) pair, consecutive touches of one channel are one step, and every
path ends in one of two terminals, conversion or drop-off. `report` keeps the `top` channels
of each step (by the paths that reach them) and adds the others up as `other`, so that
every step's flow adds up exactly: the paths leaving step k are those reaching step k + 1
plus those converting or dropping off at step k.

`JourneyTotals` folds records of the attributions topic (`Attribution.to_record`,
`ClosedJourney.to_record`, `GoalReached.to_record`) into `TransitionCounts`,
`PathAggregates` and `FunnelTotals`: what every worker's attribution reader keeps, and
what a batch recomputation of the same events must equal.

>>> paths = PathAggregates(max_steps=4)
>>> paths.add(["email", "email", "paid"], converted=True)   # email twice: one step
>>> paths.add(["paid"], converted=False)
>>> paths.add(["social", "paid", "email"], converted=True)
>>> report = paths.report(top=1)
>>> [(n["step"], n["channel"], n["value"]) for n in report["nodes"] if n["step"] is not None]
[(0, '(other)', 2), (0, 'email', 1), (1, 'paid', 2), (2, 'email', 1)]
>>> for row in report["flow"]:
...     print(row)
{'step': 0, 'inflow': 3, 'onward': 2, 'conversions': 0, 'drop_offs': 1}
{'step': 1, 'inflow': 2, 'onward': 1, 'conversions': 1, 'drop_offs': 0}
{'step': 2, 'inflow': 1, 'onward': 0, 'conversions': 1, 'drop_offs': 0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.attribution.funnel import FunnelTotals
from models.attribution.markov import CONVERSION, NULL, OTHER, START, TransitionCounts

__all__ = [
    "CONVERTED",
    "DROP_OFF",
    "MAX_STEPS",
    "MORE",
    "OTHER",
    "TOP",
    "JourneyTotals",
    "PathAggregates",
    "collapse",
]

CONVERTED = "(conversion)"
"""The terminal of the paths that converted."""
DROP_OFF = "(drop-off)"
"""The terminal of the null paths."""
MORE = "(more)"
"""The last step's channel of a path longer than `max_steps`: its remaining channels."""
MAX_STEPS = 8
"""Steps a Sankey diagram shows by default."""
TOP = 5
"""Channels a step shows by default; the others are added up as `OTHER`."""


_STATES = frozenset({START, CONVERSION, NULL})


def collapse(channels: Sequence[str]) -> list[str]:
    """The channels with consecutive repeats made one.

    >>> collapse(["a", "a", "b", "a", "a"])
    ['a', 'b', 'a']
    """
    out: list[str] = []
    for channel in channels:
        if not out or out[-1] != channel:
            out.append(channel)
    return out


class PathAggregates:
    """Paths counted move by move, step by step (consecutive repeats collapsed)."""

    __slots__ = ("_moves", "max_steps")

    def __init__(self, max_steps: int = MAX_STEPS) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, not {max_steps}")
        self.max_steps = max_steps
        self._moves: dict[tuple[int, str, str], int] = {}
        """(step, channel, next step's channel or a terminal) -> paths; step -1 is the
        start (channel "")."""

    def add(self, channels: Sequence[str], converted: bool) -> None:
        """Count one closed path (an empty one is not a path: nothing is counted)."""
        steps = collapse(channels)
        if not steps:
            return
        if len(steps) > self.max_steps:
            steps = [*steps[:self.max_steps - 1], MORE]
        moves = self._moves
        previous = ""
        for k, channel in enumerate(steps):
            key = (k - 1, previous, channel)
            moves[key] = moves.get(key, 0) + 1
            previous = channel
        key = (len(steps) - 1, previous, CONVERTED if converted else DROP_OFF)
        moves[key] = moves.get(key, 0) + 1

    @property
    def paths(self) -> int:
        """Paths counted."""
        return sum(n for (k, _a, _b), n in self._moves.items() if k == -1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathAggregates):
            return NotImplemented
        return self.max_steps == other.max_steps and self._moves == other._moves

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_dict(self) -> dict[str, int]:
        """The counts as "step|channel|next" -> paths, sorted (JSON-friendly)."""
        return {f"{k}|{a}|{b}": n for (k, a, b), n in sorted(self._moves.items())}

    def report(self, top: int = TOP) -> dict[str, Any]:
        """Sankey nodes and links with the `top` channels of each step (the others added
        up as `OTHER`), and each step's flow.

        Nodes: {"id", "step", "channel", "value"} (value: the paths reaching it), then the
        two terminals {"id", "step": None, "terminal": "conversion" | "drop-off", "value"}.
        Links: {"source", "target", "step", "value"}, from a node of step k to one of step
        k + 1 or to a terminal. Flow, per step: `inflow` (paths reaching it) = `onward`
        (the next step's inflow) + `conversions` + `drop_offs`.
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, not {top}")
        inflow: dict[int, dict[str, int]] = {}
        for (k, _a, b), n in self._moves.items():
            if b not in (CONVERTED, DROP_OFF):
                step = inflow.setdefault(k + 1, {})
                step[b] = step.get(b, 0) + n
        kept = {k: set(sorted(row, key=lambda c: (-row[c], c))[:top])
                for k, row in inflow.items()}

        def label(k: int, channel: str) -> str:
            return channel if channel in kept[k] else OTHER

        nodes: dict[tuple[int, str], int] = {}
        for k in sorted(inflow):
            for channel, n in inflow[k].items():
                key = (k, label(k, channel))
                nodes[key] = nodes.get(key, 0) + n
        order = sorted(nodes, key=lambda key: (key[0], -nodes[key], key[1]))
        ids = {key: i for i, key in enumerate(order)}
        terminals = {CONVERTED: len(order), DROP_OFF: len(order) + 1}
        links: dict[tuple[int, int, int], int] = {}
        ended = {CONVERTED: 0, DROP_OFF: 0}
        flow = {k: {"step": k, "inflow": sum(row.values()), "onward": 0, "conversions": 0,
                    "drop_offs": 0} for k, row in inflow.items()}
        for (k, a, b), n in self._moves.items():
            if k == -1:
                continue
            source = ids[(k, label(k, a))]
            if b in terminals:
                target = terminals[b]
                ended[b] += n
                flow[k]["conversions" if b == CONVERTED else "drop_offs"] += n
            else:
                target = ids[(k + 1, label(k + 1, b))]
                flow[k]["onward"] += n
            links[(k, source, target)] = links.get((k, source, target), 0) + n
        return {
            "paths": self.paths,
            "max_steps": self.max_steps,
            "top": top,
            "nodes": [{"id": ids[key], "step": key[0], "channel": key[1], "value": nodes[key]}
                      for key in order] + [
                {"id": terminals[CONVERTED], "step": None, "terminal": "conversion",
                 "value": ended[CONVERTED]},
                {"id": terminals[DROP_OFF], "step": None, "terminal": "drop-off",
                 "value": ended[DROP_OFF]}],
            "links": [{"source": s, "target": t, "step": k, "value": n}
                      for (k, s, t), n in sorted(links.items())],
            "flow": [flow[k] for k in sorted(flow)],
        }


class JourneyTotals:
    """Every closed journey and funnel goal of the attributions topic, added up.

    >>> totals = JourneyTotals()
    >>> totals.add({"kind": "conversion", "path": ["email", "paid"], "occurred_at": 5})
    True
    >>> totals.add({"kind": "null_journey", "path": ["paid"], "occurred_at": 9})
    True
    >>> totals.add({"kind": "conversion", "path": [], "occurred_at": 12})  # no new touch
    False
    >>> totals.counts.paths, totals.counts.conversions, totals.without_path
    (2, 1, 1)
    """

    def __init__(self, max_steps: int = MAX_STEPS, funnel: Sequence[str] = ()) -> None:
        self.counts = TransitionCounts()
        """The Markov chain's counts of every closed path (consecutive repeats kept)."""
        self.paths = PathAggregates(max_steps)
        self.funnel = FunnelTotals(funnel)
        self.without_path = 0
        """Conversions that closed no path (no touch since the previous conversion)."""
        self.unpathed = 0
        """Conversion records written before closed journeys (no `path`): not counted."""

    @staticmethod
    def check(record: Mapping[str, Any]) -> None:
        """Raise KeyError, TypeError or ValueError when `add` would refuse the record."""
        kind = record.get("kind", "conversion")
        if kind == "goal":
            FunnelTotals.check(record)
            return
        if kind not in ("conversion", "null_journey"):
            raise ValueError(f"unknown record kind {kind!r}")
        if kind == "conversion" and "path" not in record:
            return
        path = record["path"]
        if not isinstance(path, list) or not all(
                isinstance(c, str) and c and c not in _STATES for c in path):
            raise TypeError("path must be a list of channel names")
        if not path and kind == "null_journey":
            raise ValueError("a null journey has touches")

    def add(self, record: Mapping[str, Any]) -> bool:
        """Fold one record in; True when it added a closed path (raises KeyError,
        TypeError or ValueError on a malformed one, before anything is counted)."""
        self.check(record)
        kind = record.get("kind", "conversion")
        if kind == "goal":
            self.funnel.add(record)
            return False
        if "path" not in record:
            self.unpathed += 1
            return False
        path = record["path"]
        if not path:
            self.without_path += 1
            return False
        converted = kind == "conversion"
        self.counts.add_path(path, converted)
        self.paths.add(path, converted)
        return True

    def to_dict(self) -> dict[str, Any]:
        """Everything counted (JSON-friendly, sorted): for comparisons."""
        return {"counts": self.counts.to_dict(), "paths": self.paths.to_dict(),
                "funnel": self.funnel.to_dict(), "without_path": self.without_path,
                "unpathed": self.unpathed}
