"""The pure parts of `scorestream tail` and `scorestream scorecard`: filters, one-line renderings
and the messages for a worker's error answers (their Kafka and HTTP sides are integration
tests)."""

from __future__ import annotations

import doctest

import pytest

import streams.cli.scorecard
import streams.cli.tail
from schemas.registry import examples
from streams.cli.tail import TailFilter, render
from streams.client import _explain


@pytest.mark.parametrize("module", [streams.cli.tail, streams.cli.scorecard])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


ALERT = examples("alerts")[0]
CHANGE = examples("score-changes")[0]
DEAD_LETTER = examples("dead-letters")[0]


@pytest.mark.parametrize(("filt", "shown"), [
    (TailFilter(), True),
    (TailFilter(types=(ALERT["alert_type"],)), True),
    (TailFilter(types=("vip_upgrade", "churn_risk")), False),
    (TailFilter(severities=("critical",), customers=(ALERT["customer_id"],)), True),
    (TailFilter(customers=("C-OTHER",)), False),
])
def test_alert_filters(filt: TailFilter, shown: bool) -> None:
    assert filt.matches("alerts", ALERT["customer_id"].encode(), ALERT) is shown


def test_score_change_filters_and_tombstones() -> None:
    key = CHANGE["customer_id"].encode()
    assert TailFilter(fields=("tier",)).matches("score-changes", key, CHANGE)
    assert not TailFilter(fields=("engagement",)).matches("score-changes", key, CHANGE)
    # An erased customer's tombstone has only its key: shown unless a field filter asks more.
    assert TailFilter(customers=(CHANGE["customer_id"],)).matches("score-changes", key, None)
    assert not TailFilter(fields=("tier",)).matches("score-changes", key, None)


def test_dead_letter_filter_by_reason_and_by_key() -> None:
    assert TailFilter(reasons=(DEAD_LETTER["reason"],)).matches("dead-letters", b"k", DEAD_LETTER)
    assert TailFilter(customers=("anon-7f3a",)).matches("dead-letters", b"anon-7f3a",
                                                        DEAD_LETTER)
    assert not TailFilter(customers=("C1",)).matches("dead-letters", b"anon-7f3a", DEAD_LETTER)


def test_renderings_name_who_what_and_why() -> None:
    line = render("alerts", ALERT["customer_id"].encode(), ALERT).plain
    assert line.split()[2:5] == ["CRITICAL", "high_value_at_risk", "C42"]
    assert line.endswith(ALERT["reason"])

    change = render("score-changes", b"C42", CHANGE).plain
    assert "C42" in change
    churn, tier = CHANGE["changed"]["churn_probability"], CHANGE["changed"]["tier"]
    assert f"churn_probability {churn['old']:.2f} -> {churn['new']:.2f}" in change
    assert f"tier {tier['old']} -> {tier['new']}" in change
    assert render("score-changes", b"C42", None).plain.endswith("C42  erased: scorecard deleted")

    letter = render("dead-letters", b"k", DEAD_LETTER).plain
    assert "invalid_json  web[0]@1234  " in letter and letter.endswith(DEAD_LETTER["message"])


@pytest.mark.parametrize(("status", "says"), [
    (404, "no scorecard for customer 'C9'"),
    (400, "'C9' is not a valid customer id"),
    (401, "SCORESTREAM_API_TOKEN"),
    (503, "retry shortly"),
    (500, "answered 500"),
])
def test_error_answers_are_explained(status: int, says: str) -> None:
    assert says in _explain(status, "C9", "http://w:6066", "partition is moving")


def test_the_scorecard_table_shows_advocacy_or_its_prediction_and_the_upsell() -> None:
    from streams.cli.scorecard import render as table

    card = dict(CHANGE["scorecard"])
    factor = {"name": "categories_bought", "label": "product categories bought: high",
              "contribution": 0.4}
    predicted = {**card, "promoter": {"probability": 0.31, "interval": [0.2, 0.45],
                                      "factors": []},
                 "upsell": {"probability": 0.62, "factors": [factor]}}
    rows = dict(zip(table(predicted).columns[0].cells, table(predicted).columns[1].cells,
                    strict=True))
    assert rows["P(promoter), predicted"] == "0.31 (95 % 0.20-0.45)"
    assert rows["upsell propensity, 30 days"] == "0.62"
    assert rows["upsell mainly from"] == "product categories bought: high"
    answered = {**predicted, "advocacy": "detractor", "upsell": None}
    rows = dict(zip(table(answered).columns[0].cells, table(answered).columns[1].cells,
                    strict=True))
    assert rows["advocacy (last NPS answer)"] == "detractor"
    assert "P(promoter), predicted" not in rows and "upsell propensity, 30 days" not in rows
