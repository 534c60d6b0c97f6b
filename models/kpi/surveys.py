"""Survey KPIs: NPS, CSAT and CES, exact over the answers counted, with their standard errors.

The standard definitions:

* NPS (Net Promoter Score), answers 0-10 to "how likely are you to recommend us": promoters
  answer 9-10, passives 7-8, detractors 0-6; NPS = % promoters - % detractors, from -100 to
  100. Its standard error, in NPS points, with p and d the promoter and detractor shares of
  the n answers: 100 * sqrt((p + d - (p - d)**2) / n) (the variance of one answer scored
  +1 / 0 / -1, over n).
* CSAT (customer satisfaction), answers 1-5: the share of satisfied answers (4-5), in %, and
  the mean answer.
* CES (customer effort score), answers 1-7 (7: "very easy"): the mean answer, and the share
  of easy answers (5-7), in %.

A share's standard error is the binomial one, 100 * sqrt(s * (1 - s) / n) in points of %; a
mean's is the sample standard deviation (n - 1 in the denominator) over sqrt(n), undefined
below two answers. `interval` gives the normal-approximation interval value +- z * standard
error, clipped to the scale: fine for a few dozen answers and more, too narrow for a handful
of answers or for shares near 0 or 100 % (a standard error of 0 at 0 % or 100 % is no
certainty).

Each KPI is a tally of answers per score (`NpsTally`, `CsatTally`, `CesTally`). A running
aggregate maintains it by deltas, as `models.scoring.aggregates.Aggregates` does: `add` a
customer's answer, `remove` it again when the customer answers anew or leaves, `merge` the
tally of another partition. The result depends on the counts alone, so it is the same
however the tally got them. With no answers (n = 0) a result has n = 0 and None for every
value and standard error (never NaN).

>>> tally = NpsTally([10, 9, 8, 3])
>>> tally.result().value
25.0
>>> tally.replace(3, 9)   # the detractor answers again, now a promoter
>>> tally.result().value, tally.result().n
(75.0, 4)
>>> csat([5, 4, 2, 3]).value, ces([7, 5, 3]).mean
(50.0, 5.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from schemas.errors import ScorestreamError

__all__ = [
    "Advocacy",
    "CesResult",
    "CesTally",
    "CsatResult",
    "CsatTally",
    "NpsResult",
    "NpsTally",
    "ScoreError",
    "ScoreTally",
    "advocacy",
    "ces",
    "csat",
    "normal_interval",
    "nps",
]

Advocacy = Literal["promoter", "passive", "detractor"]
"""An NPS answer's class."""


class ScoreError(ScorestreamError, ValueError):
    """A survey answer that is not an integer on its scale, or a removal of an answer that
    was never added."""


def _checked(score: object, lo: int, hi: int, kpi: str) -> int:
    """`score` as an int when it is an integer from `lo` to `hi`; else ScoreError."""
    # numbers.Integral: int and NumPy's integers; a bool is no answer, a float never counts
    # (not even 9.0: answers are whole numbers, the caller converts on purpose)
    if isinstance(score, bool) or not isinstance(score, numbers.Integral):
        raise ScoreError(
            f"{kpi} answers are integers from {lo} to {hi}, "
            f"got {score!r} ({type(score).__name__})"
        )
    value = int(score)
    if not lo <= value <= hi:
        raise ScoreError(f"{kpi} answers are integers from {lo} to {hi}, got {value}")
    return value


def advocacy(score: int) -> Advocacy:
    """The class of an NPS answer (0-10): promoter 9-10, passive 7-8, detractor 0-6.

    >>> [advocacy(s) for s in (0, 6, 7, 8, 9, 10)]
    ['detractor', 'detractor', 'passive', 'passive', 'promoter', 'promoter']
    >>> advocacy(11)
    Traceback (most recent call last):
    ...
    models.kpi.surveys.ScoreError: NPS answers are integers from 0 to 10, got 11
    """
    value = _checked(score, 0, 10, "NPS")
    if value >= 9:
        return "promoter"
    return "passive" if value >= 7 else "detractor"


def normal_interval(
    value: float | None, standard_error: float | None, z: float, lo: float, hi: float
) -> tuple[float, float] | None:
    """value +- z * standard_error, clipped to [lo, hi]; None when either is undefined.

    >>> normal_interval(20.0, 10.0, 2.0, -100.0, 100.0)
    (0.0, 40.0)
    >>> normal_interval(95.0, 5.0, 2.0, 0.0, 100.0)
    (85.0, 100.0)
    >>> normal_interval(None, None, 1.96, 0.0, 100.0) is None
    True
    """
    if value is None or standard_error is None:
        return None
    return max(lo, value - z * standard_error), min(hi, value + z * standard_error)


def _share(k: int, n: int) -> float | None:
    """k of n answers, in %."""
    return 100 * k / n if n else None


def _share_se(k: int, n: int) -> float | None:
    """Binomial standard error of k of n answers, in points of %: 100 * sqrt(s(1 - s) / n)."""
    return 100 * math.sqrt(k * (n - k) / n**3) if n else None


class ScoreTally:
    """Counts of answers per score on the closed integer scale `LO`..`HI`.

    The base of the three KPI tallies: a tally only ever merges with one of its own kind.
    Mutable and unhashable; two tallies are equal when they are of one kind and count the
    same answers.

    >>> tally = CsatTally([4, 4, 2])
    >>> tally.remove(4)
    >>> tally.n, tally.counts
    (2, {2: 1, 4: 1})
    >>> tally.remove(5)
    Traceback (most recent call last):
    ...
    models.kpi.surveys.ScoreError: no CSAT answer 5 to remove
    """

    LO: ClassVar[int] = 0
    HI: ClassVar[int] = 0
    KPI: ClassVar[str] = ""

    __slots__ = ("_counts", "_n")

    def __init__(self, scores: Iterable[int] = ()) -> None:
        self._counts = [0] * (self.HI - self.LO + 1)
        self._n = 0
        for score in scores:
            self.add(score)

    @property
    def n(self) -> int:
        """How many answers are counted."""
        return self._n

    @property
    def counts(self) -> dict[int, int]:
        """Answers per score, for the scores answered at least once (a copy)."""
        return {self.LO + i: c for i, c in enumerate(self._counts) if c}

    def count(self, score: int) -> int:
        """How many answers are `score` (ScoreError when it is not on the scale)."""
        return self._counts[_checked(score, self.LO, self.HI, self.KPI) - self.LO]

    def add(self, score: int) -> None:
        """Count one answer."""
        self._counts[_checked(score, self.LO, self.HI, self.KPI) - self.LO] += 1
        self._n += 1

    def remove(self, score: int) -> None:
        """Take one answer `score` out again (ScoreError when none is counted: the tally is
        left as it was)."""
        i = _checked(score, self.LO, self.HI, self.KPI) - self.LO
        if not self._counts[i]:
            raise ScoreError(f"no {self.KPI} answer {score} to remove")
        self._counts[i] -= 1
        self._n -= 1

    def replace(self, old: int | None, new: int | None) -> None:
        """Swap one customer's previous answer for its new one (None = no answer); both are
        checked before anything changes."""
        if new is not None:
            _checked(new, self.LO, self.HI, self.KPI)
        if old is not None:
            self.remove(old)
        if new is not None:
            self.add(new)

    @classmethod
    def of_counts(cls, counts: Iterable[tuple[int, int]]) -> Self:
        """A tally from (score, how many) pairs (ScoreError for a score off the scale or a
        count that is not a whole number >= 0).

        >>> NpsTally.of_counts([(10, 3), (2, 1)]).result().value
        50.0
        """
        tally = cls()
        for score, count in counts:
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ScoreError(f"a count of {cls.KPI} answers must be a whole number >= 0, "
                                 f"got {count!r}")
            tally._counts[_checked(score, cls.LO, cls.HI, cls.KPI) - cls.LO] += count
            tally._n += count
        return tally

    def merge(self, other: ScoreTally) -> None:
        """Add every answer `other` counts (a tally of the same kind; `other` is unchanged)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        for i, c in enumerate(other._counts):
            self._counts[i] += c
        self._n += other._n

    def _between(self, lo: int, hi: int) -> int:
        """Answers from `lo` to `hi`, both included."""
        return sum(self._counts[lo - self.LO : hi - self.LO + 1])

    def _mean(self) -> float | None:
        if not self._n:
            return None
        return sum((self.LO + i) * c for i, c in enumerate(self._counts)) / self._n

    def _mean_se(self) -> float | None:
        """Sample standard deviation over sqrt(n), from integer sums (no cancellation):
        var = (n * sum(x^2) - sum(x)^2) / (n * (n - 1)); se = sqrt(var / n)."""
        n = self._n
        if n < 2:
            return None
        s1 = sum((self.LO + i) * c for i, c in enumerate(self._counts))
        s2 = sum((self.LO + i) ** 2 * c for i, c in enumerate(self._counts))
        return math.sqrt((n * s2 - s1 * s1) / (n * n * (n - 1)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreTally) or type(other) is not type(self):
            return NotImplemented
        return self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.counts})"


@dataclass(frozen=True, slots=True)
class NpsResult:
    """NPS of n answers: `value` in NPS points (-100..100), `standard_error` in NPS points;
    both None when n = 0."""

    n: int
    promoters: int
    passives: int
    detractors: int
    value: float | None
    standard_error: float | None

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Normal-approximation interval value +- z * standard error, within -100..100.

        >>> NpsTally([9, 10, 7, 8]).result().interval(2.0)
        (0.0, 100.0)
        """
        return normal_interval(self.value, self.standard_error, z, -100.0, 100.0)


class NpsTally(ScoreTally):
    """NPS answers (0-10) per score.

    >>> NpsTally([9, 10, 7, 8]).result()
    NpsResult(n=4, promoters=2, passives=2, detractors=0, value=50.0, standard_error=25.0)
    >>> NpsTally().result()
    NpsResult(n=0, promoters=0, passives=0, detractors=0, value=None, standard_error=None)
    """

    LO, HI, KPI = 0, 10, "NPS"
    __slots__ = ()

    def result(self) -> NpsResult:
        """NPS, its parts and its standard error (see the module's docstring)."""
        n = self._n
        promoters, detractors = self._between(9, 10), self._between(0, 6)
        if not n:
            return NpsResult(0, 0, 0, 0, None, None)
        # p + d - (p - d)^2 over n, with p = P/n, d = D/n: (n(P + D) - (P - D)^2) / n^3
        spread = n * (promoters + detractors) - (promoters - detractors) ** 2
        return NpsResult(
            n=n,
            promoters=promoters,
            passives=n - promoters - detractors,
            detractors=detractors,
            value=100 * (promoters - detractors) / n,
            standard_error=100 * math.sqrt(spread / n**3),
        )


@dataclass(frozen=True, slots=True)
class CsatResult:
    """CSAT of n answers (1-5): `value`, the share of satisfied answers (4-5) in %, with its
    standard error in points of %, and the mean answer with its standard error (None below
    two answers); values None when n = 0."""

    n: int
    satisfied: int
    value: float | None
    standard_error: float | None
    mean: float | None
    mean_standard_error: float | None

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Normal-approximation interval of the share, within 0..100 %."""
        return normal_interval(self.value, self.standard_error, z, 0.0, 100.0)


class CsatTally(ScoreTally):
    """CSAT answers (1-5) per score.

    >>> r = CsatTally([5, 5, 1, 1]).result()
    >>> r.n, r.satisfied, r.value, r.standard_error, r.mean, round(r.mean_standard_error, 4)
    (4, 2, 50.0, 25.0, 3.0, 1.1547)
    """

    LO, HI, KPI = 1, 5, "CSAT"
    __slots__ = ()

    def result(self) -> CsatResult:
        """Share satisfied (4-5), the mean, and their standard errors."""
        n, satisfied = self._n, self._between(4, 5)
        return CsatResult(
            n=n,
            satisfied=satisfied,
            value=_share(satisfied, n),
            standard_error=_share_se(satisfied, n),
            mean=self._mean(),
            mean_standard_error=self._mean_se(),
        )


@dataclass(frozen=True, slots=True)
class CesResult:
    """CES of n answers (1-7): the `mean` answer with its standard error (None below two
    answers), and the share of easy answers (5-7) in % with its standard error in points of
    %; values None when n = 0."""

    n: int
    easy: int
    mean: float | None
    mean_standard_error: float | None
    share: float | None
    share_standard_error: float | None

    @property
    def value(self) -> float | None:
        """The CES itself: the mean answer."""
        return self.mean

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Normal-approximation interval of the mean, within 1..7."""
        return normal_interval(self.mean, self.mean_standard_error, z, 1.0, 7.0)


class CesTally(ScoreTally):
    """CES answers (1-7) per score.

    >>> r = CesTally([7, 5, 4, 1, 3, 6]).result()
    >>> r.n, r.easy, round(r.mean, 4), round(r.mean_standard_error, 4), r.share
    (6, 3, 4.3333, 0.8819, 50.0)
    """

    LO, HI, KPI = 1, 7, "CES"
    __slots__ = ()

    def result(self) -> CesResult:
        """The mean, the share easy (5-7), and their standard errors."""
        n, easy = self._n, self._between(5, 7)
        return CesResult(
            n=n,
            easy=easy,
            mean=self._mean(),
            mean_standard_error=self._mean_se(),
            share=_share(easy, n),
            share_standard_error=_share_se(easy, n),
        )


def nps(scores: Iterable[int]) -> NpsResult:
    """NPS of a batch of 0-10 answers.

    >>> nps([10, 9, 8, 7, 6, 0]).value
    0.0
    """
    return NpsTally(scores).result()


def csat(scores: Iterable[int]) -> CsatResult:
    """CSAT of a batch of 1-5 answers.

    >>> csat([3, 4]).value
    50.0
    """
    return CsatTally(scores).result()


def ces(scores: Iterable[int]) -> CesResult:
    """CES of a batch of 1-7 answers.

    >>> ces([4, 5]).share
    50.0
    """
    return CesTally(scores).result()
