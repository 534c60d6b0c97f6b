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

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import orjson

from models.attribution.rules import linear, split
from models.attribution.touches import Conversion, Touch

__all__ = [
    "CONVERSION",
    "DRAWS",
    "LEVEL",
    "MAX_CHANNELS",
    "NULL",
    "OTHER",
    "START",
    "DataDrivenModel",
    "MarkovAttribution",
    "TransitionCounts",
    "data_driven",
    "fit",
    "markov_attribution",
]

START = "(start)"
"""The state every path begins in."""
CONVERSION = "(conversion)"
"""The absorbing state of a path that converted."""
NULL = "(null)"
"""The absorbing state of a path that did not convert."""

OTHER = "(other)"
"""The channel that stands for the channels beyond a model's most visited ones (and, in the
reports, beyond their top channels); in parentheses like the chain's states, so that no
channel of the events is taken for it."""

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

    def digest(self) -> str:
        """16 hex digits that name these counts (the same counts, the same digest)."""
        return hashlib.blake2b(orjson.dumps(self.to_dict()), digest_size=8).hexdigest()

    def lumped(self, keep: Iterable[str]) -> TransitionCounts:
        """The counts with every channel but `keep` renamed `OTHER` (a move between two
        such channels becomes a move from `OTHER` to itself): the counts of the same paths
        with those channels relabelled."""
        kept = set(keep) | _RESERVED
        out = TransitionCounts()
        for source, row in self._moves.items():
            source = source if source in kept else OTHER
            into = out._moves.setdefault(source, {})
            for target, n in row.items():
                target = target if target in kept else OTHER
                into[target] = into.get(target, 0) + n
        return out

    def touches(self) -> dict[str, int]:
        """How often each channel was visited (its moves out)."""
        return {c: sum(self._moves.get(c, {}).values()) for c in self.channels}

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


def _chain(moves: Mapping[str, Mapping[str, int]], states: Sequence[str],
           rows: Callable[[Mapping[str, int]], Mapping[str, float]] | None = None,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Q (transient -> transient) and r (transient -> conversion) of the states (start
    first), each row the counts over their total, or `rows(counts)` when given (a draw)."""
    index = {state: i for i, state in enumerate(states)}
    ends = _reaching(moves, (CONVERSION, NULL))
    q = np.zeros((len(states), len(states)))
    r = np.zeros(len(states))
    for state, i in index.items():
        row = moves.get(state, {})
        if state not in ends or not row:
            continue  # cannot reach an end: sent to null (an empty row)
        if rows is None:
            out = sum(row.values())
            probabilities: Mapping[str, float] = {t: n / out for t, n in row.items()}
        else:
            probabilities = rows(row)
        for target, p in probabilities.items():
            if target == CONVERSION:
                r[i] += p
            elif target != NULL:
                q[i, index[target]] += p
    return q, r


def _solve(q: np.ndarray, r: np.ndarray, relevant: Sequence[int]
           ) -> tuple[float, dict[int, float]]:
    """P(conversion) from start, and the removal effect of each `relevant` state index."""
    identity = np.eye(len(r))
    p = float(np.linalg.solve(identity - q, r)[0])
    effects: dict[int, float] = {}
    if p > 0.0:
        for i in relevant:
            q_without, r_without = q.copy(), r.copy()
            q_without[i, :] = 0.0
            r_without[i] = 0.0
            without = float(np.linalg.solve(identity - q_without, r_without)[0])
            effects[i] = min(1.0, max(0.0, 1.0 - without / p))
    return p, effects


def _normalised(effects: Mapping[str, float]) -> dict[str, float]:
    total = math.fsum(effects.values())
    return {c: e / total if total > 0.0 else 0.0 for c, e in effects.items()}


def markov_attribution(counts: TransitionCounts) -> MarkovAttribution:
    """P(conversion), removal effects and weights of every channel, solved exactly."""
    moves = counts._moves
    channels = counts.channels
    states = [START, *channels]
    q, r = _chain(moves, states)
    relevant = _reaching(moves, (CONVERSION,)) & _reached(moves, START)
    p, solved = _solve(q, r, [i for i, s in enumerate(states) if i and s in relevant])
    effects = {c: solved.get(i + 1, 0.0) for i, c in enumerate(channels)}
    return MarkovAttribution(p, effects, _normalised(effects))


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


DRAWS = 200
"""Posterior draws of the transition rows behind a model's intervals."""
LEVEL = 0.9
"""Central probability of the intervals (0.9: the 5th to the 95th percentile)."""
MAX_CHANNELS = 20
"""Most visited channels a model keeps apart; the others are solved as one, `OTHER`."""
LUMPED_SHOWN = 100
"""Lumped channels a model's description names (all of them are counted)."""


@dataclass(frozen=True, slots=True)
class DataDrivenModel:
    """The removal effects and weights of the counts of `paths` closed paths, with intervals.

    `version` names the counts (`paths`-`digest`): two workers with the same counts have the
    same model, intervals included. `weights` and `removal_effects` are the exact solution
    of the counts' chain (`markov_attribution`); `weight_intervals` and `effect_intervals`
    are the `level` central intervals of the same figures over `draws` chains whose
    transition rows are drawn from their Dirichlet posteriors (each row's counts plus one,
    over the moves observed from it), seeded by the digest. `lumped` lists the channels
    solved as `OTHER`.
    """

    paths: int
    conversions: int
    version: str
    conversion_probability: float
    removal_effects: dict[str, float]
    weights: dict[str, float]
    effect_intervals: dict[str, tuple[float, float]]
    weight_intervals: dict[str, tuple[float, float]]
    draws: int
    level: float
    lumped: tuple[str, ...] = ()

    def credit(self, touches: Sequence[Touch], conversion: Conversion) -> list[float]:
        """`data_driven` by these weights; the touches of a channel the model has no weight
        for (a lumped one, or one first seen since the fit) take `OTHER`'s."""
        return self.split(touches, conversion.value)[1]

    def split(self, touches: Sequence[Touch], value: float) -> tuple[list[float], list[float]]:
        """The touches' shares of a conversion and their credits of its `value`, as
        `data_driven` makes them (the touches of a channel the model has no weight for, a
        lumped one or one first seen since the fit, take `OTHER`'s weight, or none when the
        model lumped nothing), from one pass over the touches."""
        weights = self.weights
        channels = [t.channel if t.channel in weights else OTHER for t in touches]
        per_channel = Counter(channels)
        raw = [weights.get(c, 0.0) / per_channel[c] for c in channels]
        if math.fsum(raw) <= 0.0:
            raw = [1.0] * len(raw)  # no weight for any touching channel: linear
        return split(1.0, raw), split(value, raw)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: per channel (by weight, largest first) the weight and the
        removal effect with their intervals; the first `LUMPED_SHOWN` lumped channels (by
        name) and how many there are."""
        order = sorted(self.weights, key=lambda c: (-self.weights[c], c))
        return {
            "version": self.version, "paths": self.paths, "conversions": self.conversions,
            "conversion_probability": self.conversion_probability,
            "draws": self.draws, "level": self.level,
            "lumped": list(self.lumped[:LUMPED_SHOWN]), "lumped_count": len(self.lumped),
            "channels": [
                {"channel": c, "weight": self.weights[c],
                 "weight_low": self.weight_intervals[c][0],
                 "weight_high": self.weight_intervals[c][1],
                 "removal_effect": self.removal_effects[c],
                 "removal_effect_low": self.effect_intervals[c][0],
                 "removal_effect_high": self.effect_intervals[c][1]}
                for c in order],
        }


def fit(counts: TransitionCounts, *, draws: int = DRAWS, level: float = LEVEL,
        max_channels: int = MAX_CHANNELS) -> DataDrivenModel:
    """The data-driven model of the counts, with intervals from `draws` posterior draws.

    Every chain is solved exactly (`markov_attribution`'s solver); only the transition
    probabilities are drawn, never the paths. The same counts give the same model.

    >>> counts = TransitionCounts.from_paths([(["A", "B"], True), (["A"], False),
    ...                                       (["B"], True)] * 20)
    >>> model = fit(counts, draws=100)
    >>> model.version, {c: round(w, 3) for c, w in model.weights.items()}
    ('60-...', {'A': 0.333, 'B': 0.667})
    >>> low, high = model.weight_intervals["B"]
    >>> low < model.weights["B"] < high, fit(counts, draws=100) == model
    (True, True)
    """
    if draws < 0 or not 0.0 < level < 1.0 or max_channels < 1:
        raise ValueError("need draws >= 0, 0 < level < 1 and max_channels >= 1")
    visits = counts.touches()
    ranked = sorted(visits, key=lambda c: (-visits[c], c))
    lumped = tuple(sorted(ranked[max_channels:]))
    chain = counts.lumped(ranked[:max_channels]) if lumped else counts
    point = markov_attribution(chain)
    moves = chain._moves
    channels = chain.channels
    states = [START, *channels]
    relevant_states = _reaching(moves, (CONVERSION,)) & _reached(moves, START)
    relevant = [i for i, s in enumerate(states) if i and s in relevant_states]
    digest = counts.digest()
    rng = np.random.default_rng(int(digest, 16))

    def drawn(row: Mapping[str, int]) -> dict[str, float]:
        targets = sorted(row)
        p = rng.dirichlet([row[t] + 1.0 for t in targets])
        return dict(zip(targets, p.tolist(), strict=True))

    effect_draws = np.zeros((draws, len(channels)))
    weight_draws = np.zeros((draws, len(channels)))
    for d in range(draws):
        q, r = _chain(moves, states, drawn)
        _p, solved = _solve(q, r, relevant)
        effects = [solved.get(i + 1, 0.0) for i in range(len(channels))]
        total = math.fsum(effects)
        effect_draws[d] = effects
        weight_draws[d] = [e / total if total > 0.0 else 0.0 for e in effects]
    tail = (1.0 - level) / 2 * 100

    def interval(values: np.ndarray, j: int, fallback: float) -> tuple[float, float]:
        if not draws:
            return fallback, fallback
        low, high = np.percentile(values[:, j], [tail, 100 - tail])
        return float(low), float(high)

    return DataDrivenModel(
        counts.paths, counts.conversions, f"{counts.paths}-{digest}",
        point.conversion_probability, point.removal_effects, point.weights,
        {c: interval(effect_draws, j, point.removal_effects[c]) for j, c in enumerate(channels)},
        {c: interval(weight_draws, j, point.weights[c]) for j, c in enumerate(channels)},
        draws, level, lumped)
