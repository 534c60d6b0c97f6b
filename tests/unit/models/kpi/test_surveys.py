"""Survey KPIs by hand (NPS, CSAT, CES), their boundaries, and tallies kept by deltas."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.kpi.surveys import (
    CesTally,
    CsatTally,
    NpsResult,
    NpsTally,
    ScoreError,
    ScoreTally,
    advocacy,
    ces,
    csat,
    normal_interval,
    nps,
)

# -- NPS ---------------------------------------------------------------------------------------


def test_nps_by_hand() -> None:
    # 10 answers: promoters 10, 9, 9, 10, 9 (5); passives 8, 7 (2); detractors 6, 3, 0 (3)
    # NPS = 50 % - 30 % = 20
    # p = 0.5, d = 0.3: p + d - (p - d)^2 = 0.8 - 0.04 = 0.76; / 10 = 0.076
    # SE = 100 * sqrt(0.076) = 27.5681 NPS points
    result = nps([10, 9, 9, 8, 7, 6, 3, 10, 0, 9])
    assert (result.n, result.promoters, result.passives, result.detractors) == (10, 5, 2, 3)
    assert result.value == 20.0
    assert result.standard_error == pytest.approx(27.5681, abs=1e-4)
    # 95 % interval: 20 -+ 1.96 * 27.5681 = 20 -+ 54.0335
    interval = result.interval()
    assert interval is not None
    assert interval == pytest.approx((-34.0335, 74.0335), abs=1e-4)


def test_nps_standard_error_exact_case() -> None:
    # 9, 10, 7, 8: p = 0.5, d = 0; p + d - (p - d)^2 = 0.5 - 0.25 = 0.25; / 4 = 0.0625
    # SE = 100 * sqrt(0.0625) = 25 exactly; NPS = 50
    result = nps([9, 10, 7, 8])
    assert result == NpsResult(n=4, promoters=2, passives=2, detractors=0, value=50.0,
                               standard_error=25.0)
    # 50 -+ 2 * 25 = (0, 100)
    assert result.interval(2.0) == (0.0, 100.0)
    # one promoter, one detractor: p = d = 0.5; 1 - 0 = 1; / 2 -> SE = 100 * sqrt(0.5)
    both = nps([10, 0])
    assert both.value == 0.0
    assert both.standard_error == pytest.approx(100 * math.sqrt(0.5))


def test_nps_extremes_and_clipped_interval() -> None:
    everyone = nps([9, 10, 10])
    assert everyone.value == 100.0
    assert everyone.standard_error == 0.0  # p = 1, d = 0: 1 - 1 = 0
    assert nps([0, 6]).value == -100.0
    assert nps([7, 8]).value == 0.0
    assert nps([7, 8]).standard_error == 0.0
    # 100 -+ anything stays within -100..100
    assert NpsResult(2, 2, 0, 0, 100.0, 10.0).interval() == (80.4, 100.0)
    assert NpsResult(2, 0, 0, 2, -100.0, 10.0).interval() == (-100.0, -80.4)


def test_nps_boundaries() -> None:
    assert [advocacy(s) for s in range(11)] == ["detractor"] * 7 + ["passive"] * 2 + [
        "promoter"
    ] * 2
    assert advocacy(6) == "detractor"
    assert advocacy(7) == "passive"
    assert advocacy(8) == "passive"
    assert advocacy(9) == "promoter"
    assert advocacy(np.int64(9)) == "promoter"  # type: ignore[arg-type]  # NumPy integers count
    # one answer each: 6 -> -100, 7 and 8 -> 0, 9 -> 100
    assert [nps([s]).value for s in (6, 7, 8, 9)] == [-100.0, 0.0, 0.0, 100.0]


def test_nps_empty() -> None:
    result = nps([])
    assert result == NpsResult(n=0, promoters=0, passives=0, detractors=0, value=None,
                               standard_error=None)
    assert result.interval() is None


# -- CSAT and CES ------------------------------------------------------------------------------


def test_csat_by_hand() -> None:
    # 5, 4, 3, 2, 5: satisfied (4-5) 3 of 5 = 60 %; mean 19 / 5 = 3.8
    # share SE = 100 * sqrt(0.6 * 0.4 / 5) = 100 * sqrt(0.048) = 21.9089
    # deviations from 3.8: 1.2, 0.2, -0.8, -1.8, 1.2; squares sum 1.44 + 0.04 + 0.64 + 3.24 +
    # 1.44 = 6.8; sample variance 6.8 / 4 = 1.7; mean SE = sqrt(1.7 / 5) = sqrt(0.34) = 0.5831
    result = csat([5, 4, 3, 2, 5])
    assert (result.n, result.satisfied) == (5, 3)
    assert result.value == 60.0
    assert result.standard_error == pytest.approx(21.9089, abs=1e-4)
    assert result.mean == 3.8
    assert result.mean_standard_error == pytest.approx(0.5831, abs=1e-4)
    # 60 -+ 1.96 * 21.9089 = 60 -+ 42.9415
    assert result.interval() == pytest.approx((17.0585, 100.0), abs=1e-4)


def test_csat_boundaries_and_small_samples() -> None:
    assert csat([3]).value == 0.0
    assert csat([4]).value == 100.0
    assert csat([1, 2, 3]).satisfied == 0
    assert csat([4, 5]).satisfied == 2
    one = csat([4])
    assert one.mean == 4.0
    assert one.standard_error == 0.0
    assert one.mean_standard_error is None  # no spread from a single answer
    assert csat([3, 3]).mean_standard_error == 0.0


def test_ces_by_hand() -> None:
    # 7, 5, 4, 1, 3, 6: mean 26 / 6 = 4.3333; easy (5-7) 7, 5, 6 = 3 of 6 = 50 %
    # share SE = 100 * sqrt(0.25 / 6) = 20.4124
    # deviations from 13/3: 8/3, 2/3, -1/3, -10/3, -4/3, 5/3; squares sum (64 + 4 + 1 + 100 + 16
    # + 25) / 9 = 210 / 9; sample variance 210 / 45 = 4.6667; mean SE = sqrt(4.6667 / 6) = 0.8819
    result = ces([7, 5, 4, 1, 3, 6])
    assert (result.n, result.easy) == (6, 3)
    assert result.mean == pytest.approx(26 / 6)
    assert result.value == result.mean
    assert result.mean_standard_error == pytest.approx(0.8819, abs=1e-4)
    assert result.share == 50.0
    assert result.share_standard_error == pytest.approx(20.4124, abs=1e-4)
    # the interval is the mean's: 4.3333 -+ 2 * 0.8819
    assert result.interval(2.0) == pytest.approx((2.5695, 6.0972), abs=1e-4)


def test_ces_boundaries() -> None:
    assert ces([4]).share == 0.0
    assert ces([5]).share == 100.0
    assert ces([1, 7]).mean == 4.0
    assert ces([1, 1, 1, 7, 7, 7]).interval(100.0) == (1.0, 7.0)  # clipped to the scale


def test_csat_and_ces_empty() -> None:
    for result in (csat([]), ces([])):
        assert result.n == 0
        assert result.value is None
        assert result.mean is None
        assert result.mean_standard_error is None
        assert result.interval() is None
    assert csat([]).standard_error is None
    assert ces([]).share is None
    assert ces([]).share_standard_error is None


def test_normal_interval() -> None:
    assert normal_interval(50.0, 10.0, 1.0, 0.0, 100.0) == (40.0, 60.0)
    assert normal_interval(50.0, None, 1.0, 0.0, 100.0) is None
    assert normal_interval(None, 1.0, 1.0, 0.0, 100.0) is None


# -- invalid answers ---------------------------------------------------------------------------

NOT_INTEGERS = [7.5, 9.0, float("nan"), "9", None, True, False]


@pytest.mark.parametrize("score", [-1, 11, *NOT_INTEGERS])
def test_nps_rejects_invalid_answers(score: object) -> None:
    with pytest.raises(ScoreError, match="NPS answers are integers from 0 to 10"):
        nps([score])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="NPS"):  # ScoreError is a ValueError
        advocacy(score)  # type: ignore[arg-type]


@pytest.mark.parametrize(("tally", "scores"), [
    (CsatTally, [0, 6, *NOT_INTEGERS]),
    (CesTally, [0, 8, *NOT_INTEGERS]),
])
def test_csat_and_ces_reject_invalid_answers(tally: type[ScoreTally], scores: list[object]
                                             ) -> None:
    for score in scores:
        t = tally([tally.LO])
        with pytest.raises(ScoreError, match=f"{tally.KPI} answers are integers"):
            t.add(score)  # type: ignore[arg-type]
        with pytest.raises(ScoreError, match=f"{tally.KPI} answers are integers"):
            t.remove(score)  # type: ignore[arg-type]
        assert t == tally([tally.LO])  # unchanged


def test_removing_what_was_never_added_fails_and_changes_nothing() -> None:
    tally = NpsTally([9, 9])
    with pytest.raises(ScoreError, match="no NPS answer 3 to remove"):
        tally.remove(3)
    assert tally.counts == {9: 2}
    assert tally.n == 2
    # replace checks the new answer before taking the old one out
    with pytest.raises(ScoreError):
        tally.replace(9, 11)
    assert tally.counts == {9: 2}
    with pytest.raises(ScoreError):
        tally.replace(0, 10)
    assert tally.counts == {9: 2}


def test_replace_and_count() -> None:
    tally = CsatTally()
    tally.replace(None, 2)
    tally.replace(2, 5)
    tally.replace(None, 5)
    assert tally.counts == {5: 2}
    assert tally.count(5) == 2
    assert tally.count(2) == 0
    tally.replace(5, None)
    assert tally.n == 1
    assert tally.result().value == 100.0


def test_tallies_of_different_kinds_do_not_mix() -> None:
    with pytest.raises(TypeError, match="cannot merge a CesTally into a CsatTally"):
        CsatTally([4]).merge(CesTally([4]))
    assert CsatTally([4]) != CesTally([4])
    assert CsatTally([4]) == CsatTally([4])
    assert CsatTally([4]) != CsatTally([5])
    assert repr(NpsTally([9, 3, 9])) == "NpsTally({3: 1, 9: 2})"


# -- tallies kept by deltas equal a batch recomputation ----------------------------------------

KINDS: list[type[ScoreTally]] = [NpsTally, CsatTally, CesTally]


def reference(kind: type[ScoreTally], scores: list[int]) -> dict[str, float | None]:
    """The headline figures straight from the list of answers, without a tally."""
    n = len(scores)
    if kind is NpsTally:
        p = sum(s >= 9 for s in scores) / n if n else 0.0
        d = sum(s <= 6 for s in scores) / n if n else 0.0
        return {"value": 100 * (p - d) if n else None,
                "se": 100 * math.sqrt((p + d - (p - d) ** 2) / n) if n else None}
    cut = 4 if kind is CsatTally else 5
    share = sum(s >= cut for s in scores) / n if n else 0.0
    return {"share": 100 * share if n else None,
            "share_se": 100 * math.sqrt(share * (1 - share) / n) if n else None,
            "mean": statistics.fmean(scores) if n else None,
            "mean_se": statistics.stdev(scores) / math.sqrt(n) if n > 1 else None}


def headline(tally: ScoreTally) -> dict[str, float | None]:
    if isinstance(tally, NpsTally):
        nps_result = tally.result()
        return {"value": nps_result.value, "se": nps_result.standard_error}
    if isinstance(tally, CsatTally):
        c = tally.result()
        return {"share": c.value, "share_se": c.standard_error, "mean": c.mean,
                "mean_se": c.mean_standard_error}
    assert isinstance(tally, CesTally)
    e = tally.result()
    return {"share": e.share, "share_se": e.share_standard_error, "mean": e.mean,
            "mean_se": e.mean_standard_error}


def assert_matches_reference(tally: ScoreTally, scores: list[int]) -> None:
    got, want = headline(tally), reference(type(tally), scores)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


@st.composite
def operations(draw: st.DrawFn) -> tuple[type[ScoreTally], list[tuple[bool, int]]]:
    """A kind of tally and a sequence of (add?, score) that only removes what was added."""
    kind = draw(st.sampled_from(KINDS))
    held: list[int] = []
    ops: list[tuple[bool, int]] = []
    for add, score, pick in draw(st.lists(st.tuples(st.booleans(),
                                                    st.integers(kind.LO, kind.HI),
                                                    st.integers(0, 1_000)), max_size=60)):
        if add or not held:
            held.append(score)
            ops.append((True, score))
        else:
            ops.append((False, held.pop(pick % len(held))))
    return kind, ops


@given(operations())
def test_adds_and_removes_equal_a_batch_recomputation(
    case: tuple[type[ScoreTally], list[tuple[bool, int]]],
) -> None:
    kind, ops = case
    tally = kind()
    remaining: list[int] = []
    for add, score in ops:
        if add:
            tally.add(score)
            remaining.append(score)
        else:
            tally.remove(score)
            remaining.remove(score)
    batch = kind(remaining)
    assert tally == batch
    assert tally.n == len(remaining)
    assert tally.result() == batch.result()  # type: ignore[attr-defined]
    assert_matches_reference(tally, remaining)


@given(st.sampled_from(KINDS), st.data())
def test_merge_equals_adding_all(kind: type[ScoreTally], data: st.DataObject) -> None:
    scale = st.integers(kind.LO, kind.HI)
    first = data.draw(st.lists(scale, max_size=40))
    second = data.draw(st.lists(scale, max_size=40))
    merged = kind(first)
    other = kind(second)
    merged.merge(other)
    assert merged == kind(first + second)
    assert merged.result() == kind(first + second).result()  # type: ignore[attr-defined]
    assert other == kind(second)  # the merged-in tally is unchanged
    assert_matches_reference(merged, first + second)
