"""Survey answers on the customer state and the scorecard: the latest answer per survey by
event time, a support rating as a CSAT answer, advocacy from the last NPS answer of the
past 365 days."""

from __future__ import annotations

import itertools

import orjson
import pytest

from models.config import ScoringConfig
from models.learning.bundle import ModelBundle
from models.scoring.engine import ScoringEngine
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from tests.kit import at, ev


def answer(event_id: str, survey: str, score: int, day: float) -> dict:
    return ev(event_id, "survey_answered", day, source="support", survey=survey, score=score)


ANSWERS = [
    answer("n1", "nps", 3, 1),
    answer("n2", "nps", 10, 5),
    answer("c1", "csat", 2, 2),
    ev("r1", "satisfaction_rated", 4, source="support", ticket_id="t1", csat=5),
    answer("e1", "ces", 6, 3),
]


def test_the_latest_answer_per_survey_wins_in_any_order() -> None:
    for order in itertools.permutations(ANSWERS):
        state = CustomerState("C1")
        for event in order:
            assert state.apply(event)
        assert state.surveys == {"nps": [at(5), 10], "csat": [at(4), 5], "ces": [at(3), 6]}


def test_answers_are_interactions_and_survive_the_changelog() -> None:
    state = CustomerState("C1")
    for event in ANSWERS:
        state.apply(event)
    assert state.last_interaction_ms == at(5)
    again = CustomerState.restore(state.snapshot())
    assert again.surveys == state.surveys
    assert "sv" not in CustomerState.restore(CustomerState("C2").snapshot()).to_dict()


def test_an_answer_outside_the_contract_is_ignored() -> None:
    state = CustomerState("C1")
    state.apply(answer("x1", "mood", 5, 1))
    state.apply(ev("x2", "survey_answered", 1, source="support", survey="nps", score="9"))
    state.apply(answer("x3", "csat", 9, 1))
    assert state.surveys is None


def test_a_csat_answer_counts_like_a_support_rating() -> None:
    rated, answered = CustomerState("C1"), CustomerState("C1")
    rated.apply(ev("r", "satisfaction_rated", 1, source="support", csat=4))
    answered.apply(answer("a", "csat", 4, 1))
    assert rated.days == answered.days and rated.surveys == answered.surveys


def _card(events: list[dict], day: float) -> dict:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    out = engine.apply_batch(None, events, at(day))
    assert out.state is not None
    return engine.score(out.state, at(day)).to_dict()  # as an API read on `day` shows it


def test_the_scorecard_shows_each_latest_answer_and_its_age() -> None:
    card = _card(ANSWERS, 10)
    assert card["surveys"] == {
        "ces": {"score": 6, "answered_at": at(3), "days_ago": 7},
        "csat": {"score": 5, "answered_at": at(4), "days_ago": 6},
        "nps": {"score": 10, "answered_at": at(5), "days_ago": 5},
    }
    assert card["advocacy"] == "promoter"


@pytest.mark.parametrize(("score", "expected"), [(0, "detractor"), (6, "detractor"),
                                                 (7, "passive"), (8, "passive"),
                                                 (9, "promoter")])
def test_advocacy_is_the_class_of_the_last_nps_answer(score: int, expected: str) -> None:
    assert _card([answer("n", "nps", score, 0)], 365)["advocacy"] == expected


def test_an_nps_answer_older_than_a_year_says_nothing() -> None:
    card = _card([answer("n", "nps", 10, 0), ev("w", "page_view", 366)], 366)
    assert card["surveys"]["nps"]["days_ago"] == 366
    assert card["advocacy"] is None
    assert _card([answer("c", "csat", 5, 0)], 1)["advocacy"] is None


def test_a_scorecard_row_keeps_the_answers_and_an_older_row_has_none() -> None:
    engine = ScoringEngine(ScoringConfig(), ModelBundle.initial())
    card = engine.apply_batch(None, ANSWERS, at(10)).scorecard
    assert card is not None and card.surveys
    row = orjson.loads(orjson.dumps(card.to_row()))
    assert Scorecard.from_row(row) == card
    older = Scorecard.from_row(row[:17])  # written before the answers were kept
    assert older.surveys == () and older.advocacy is None
    assert older.to_dict()["surveys"] == {}
