"""Data-driven attribution: removal effects of a first-order Markov chain of channel paths.

A path is the sequence of channels of one customer journey, ending in a conversion or not
(null). `TransitionCounts` counts the moves between the states `START`, each channel,
`CONVERSION` and `NULL` over many paths, path by path (a stream adds each journey as it
ends), and snapshots to bytes like every stateful class of the core. Consecutive touches of
one channel are a move from the channel to itself; collapse them before `add_path` if they
should not count.

`markov_attribution` turns the counts into transition probabilities (each state's counts
over its total) and solves the absorbing chain exactly, with no simulation: with Q the
probabilities between the transient states (start and the channels) and r the
probabilities of moving to `CONVERSION`, the conversion probabilities x from every
transient state solve (I - Q) x = r, and P(conversion) is x at start. Removing channel c
sends every move into c to `NULL`; that is the same chain with c's row emptied (x_c = 0),
solved again. The removal effect of c is 1 - P_without_c / P, and the channel weights are
the removal effects normalised to add up to 1.

(I - Q) is invertible when every transient state can reach `CONVERSION` or `NULL`, which
holds for counts built by `add_path` (every state on a path reaches its end) and stays true
after a removal. Counts restored from elsewhere may hold states that cannot (a state with
no moves out, or a closed loop): those states are sent to `NULL`, as if the journeys
through them had ended there, so the system is never singular. The degenerate cases have
exact answers, not rounding noise: with no conversion P is 0 and every removal effect and
weight is 0; a channel that cannot reach a conversion, or that no path from start reaches,
has removal effect 0.

`data_driven` splits one conversion's value over its touches by the channel weights.

>>> counts = TransitionCounts.from_paths([(["A", "B"], True), (["A"], False), (["B"], True)])
>>> result = markov_attribution(counts)
>>> round(result.conversion_probability, 12), result.removal_effects
(0.666666666667, {'A': 0.5, 'B': 1.0})
>>> {channel: round(w, 12) for channel, w in result.weights.items()}
{'A': 0.333333333333, 'B': 0.666666666667}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import orjson

from models.attribution.rules import linear, split
from models.attribution.touches import Conversion, Touch

__all__ = [
    "CONVERSION",
    "NULL",
    "START",
    "MarkovAttribution",
    "TransitionCounts",
    "data_driven",
    "markov_attribution",
]

START = "(start)"
"""The state every path begins in."""
CONVERSION = "(conversion)"
"""The absorbing state of a path that converted."""
NULL = "(null)"
"""The absorbing state of a path that did not convert."""

_RESERVED = frozenset({START, CONVERSION, NULL})


class TransitionCounts:
    """How often each state moved to each other state, over the paths added so far.

    >>> counts = TransitionCounts()
    >>> counts.add_path(["email", "search"], converted=True)
    >>> counts.add_path(["email"], converted=False)
    >>> counts.paths, counts.conversions, counts.channels
    (2, 1, ['email', 'search'])
    >>> counts.count(START, "email"), counts.count("email", NULL), counts.count("search", NULL)
    (2, 1, 0)
    >>> TransitionCounts.restore(counts.snapshot()) == counts
    True
    """

    __slots__ = ("_moves",)

    def __init__(self) -> None:
        self._moves: dict[str, dict[str, int]] = {}
        """from state -> to state -> count."""

    def add_path(self, channels: Sequence[str], converted: bool) -> None:
        """Count one journey: start, its channels in order, then conversion or null."""
        if isinstance(channels, str):
            raise TypeError("channels must be a sequence of channel names, not one string")
        for channel in channels:
            if not isinstance(channel, str) or not channel or channel in _RESERVED:
                raise ValueError(f"not a channel name: {channel!r}")
        states = [START, *channels, CONVERSION if converted else NULL]
        for source, target in pairwise(states):
            row = self._moves.setdefault(source, {})
            row[target] = row.get(target, 0) + 1

    @classmethod
    def from_paths(cls, paths: Iterable[tuple[Sequence[str], bool]]) -> TransitionCounts:
        """Counts of all `(channels, converted)` paths."""
        counts = cls()
        for channels, converted in paths:
            counts.add_path(channels, converted)
        return counts

    def count(self, source: str, target: str) -> int:
        """How often `source` moved to `target`."""
        return self._moves.get(source, {}).get(target, 0)

    @property
    def paths(self) -> int:
        """How many paths were added."""
        return sum(self._moves.get(START, {}).values())

    @property
    def conversions(self) -> int:
        """How many of them converted."""
        return sum(row.get(CONVERSION, 0) for row in self._moves.values())

    @property
    def channels(self) -> list[str]:
        """Every channel seen, sorted."""
        seen = set(self._moves).union(*self._moves.values())
        return sorted(seen - _RESERVED)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransitionCounts):
            return NotImplemented
        return self._moves == other._moves

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"TransitionCounts(paths={self.paths}, conversions={self.conversions})"

    def to_dict(self) -> dict[str, dict[str, int]]:
        """The counts as nested dicts, sorted (JSON-friendly)."""
        return {source: dict(sorted(row.items())) for source, row in sorted(self._moves.items())}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, Any]]) -> TransitionCounts:
        """Inverse of `to_dict`; rejects moves out of an end state or into start."""
        counts = cls()
        for source, row in d.items():
            if source in (CONVERSION, NULL):
                raise ValueError(f"no move can leave {source}")
            for target, n in row.items():
                if target == START or not isinstance(n, int) or n <= 0:
                    raise ValueError(f"bad move {source} -> {target}: {n!r}")
            if row:
                counts._moves[source] = dict(row)
        return counts

    def snapshot(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes) -> TransitionCounts:
        """Rebuild from `snapshot()` bytes."""
        return cls.from_dict(orjson.loads(b))


@dataclass(frozen=True, slots=True)
class MarkovAttribution:
    """What the chain says: P(conversion) from start, and per channel (sorted by name) its
    removal effect and its weight (removal effects normalised to add up to 1, or all 0)."""

    conversion_probability: float
    removal_effects: dict[str, float]
    weights: dict[str, float]


def _reaching(moves: Mapping[str, Mapping[str, int]], targets: Iterable[str]) -> set[str]:
    """The states with a sequence of moves to one of `targets` (the targets included)."""
    into: dict[str, list[str]] = {}
    for source, row in moves.items():
        for target in row:
            into.setdefault(target, []).append(source)
    found = set(targets)
    todo = list(found)
    while todo:
        for source in into.get(todo.pop(), ()):
            if source not in found:
                found.add(source)
                todo.append(source)
    return found


def _reached(moves: Mapping[str, Mapping[str, int]], source: str) -> set[str]:
    """The states some sequence of moves from `source` reaches (`source` included)."""
    found = {source}
    todo = [source]
    while todo:
        for target in moves.get(todo.pop(), {}):
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


def markov_attribution(counts: TransitionCounts) -> MarkovAttribution:
    """P(conversion), removal effects and weights of every channel, solved exactly."""
    moves = counts._moves
    channels = counts.channels
    states = [START, *channels]
    index = {state: i for i, state in enumerate(states)}
    ends = _reaching(moves, (CONVERSION, NULL))
    q = np.zeros((len(states), len(states)))
    r = np.zeros(len(states))
    for state, i in index.items():
        row = moves.get(state, {})
        if state not in ends:
            continue  # cannot reach an end: sent to null (an empty row)
        out = sum(row.values())
        for target, n in row.items():
            if target == CONVERSION:
                r[i] += n / out
            elif target != NULL:
                q[i, index[target]] += n / out
    identity = np.eye(len(states))

    def p_conversion(without: int | None = None) -> float:
        if without is None:
            return float(np.linalg.solve(identity - q, r)[0])
        q_without, r_without = q.copy(), r.copy()
        q_without[without, :] = 0.0
        r_without[without] = 0.0
        return float(np.linalg.solve(identity - q_without, r_without)[0])

    p = p_conversion()
    effects: dict[str, float] = dict.fromkeys(channels, 0.0)
    if p > 0.0:
        relevant = _reaching(moves, (CONVERSION,)) & _reached(moves, START)
        for channel in channels:
            if channel in relevant:
                effect = 1.0 - p_conversion(index[channel]) / p
                effects[channel] = min(1.0, max(0.0, effect))
    effect_sum = math.fsum(effects.values())
    weights = {c: e / effect_sum if effect_sum > 0.0 else 0.0 for c, e in effects.items()}
    return MarkovAttribution(p, effects, weights)


def data_driven(
    touches: Sequence[Touch], conversion: Conversion, weights: Mapping[str, float]
) -> list[float]:
    """A conversion's value over its touches by channel weights (`MarkovAttribution.weights`).

    Each channel's weight is shared equally by its touches, and the value is split in
    proportion to the touches' shares. A channel missing from `weights` has weight 0; when
    every touching channel has weight 0 (channels the chain has not seen yet, or none that
    leads to a conversion), the credit falls back to `linear`.

    >>> buy = Conversion("o-1", "C1", 9, 100.0, "EUR")
    >>> visits = [Touch("A", None, 1), Touch("B", None, 2), Touch("B", None, 3)]
    >>> data_driven(visits, buy, {"A": 0.4, "B": 0.6})
    [40.0, 30.0, 30.0]
    >>> [round(c, 2) for c in data_driven(visits, buy, {"C": 1.0})]   # unknown: linear
    [33.33, 33.33, 33.33]
    """
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError("channel weights must be finite and >= 0")
    per_channel = Counter(t.channel for t in touches)
    shares = [weights.get(t.channel, 0.0) / per_channel[t.channel] for t in touches]
    if math.fsum(shares) <= 0.0:
        return linear(touches, conversion)
    return split(conversion.value, shares)
