"""Hand-written cases for the decoder: normalisation, and one or more per reason code."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from schemas.decode import (
    DeadLetter,
    DecodedEvent,
    DecoderConfig,
    Origin,
    Reason,
    decode_source_event,
    parse_event_time,
)
from schemas.registry import validator
from tests.kit import T0

NOW = T0  # 2026-01-01T00:00:00Z
ORDER: dict[str, Any] = {
    "event_id": "o-1",
    "event_type": "order_placed",
    "source": "crm",
    "occurred_at": "2025-12-31T23:00:00Z",
    "customer_id": "C42",
    "payload": {"order_id": "o-1", "amount": 120.0, "currency": "EUR"},
}


def encode(event: dict[str, Any], **changes: Any) -> bytes:
    """The event with top-level changes applied; a value of ... removes the field."""
    merged = {**event, **changes}
    return orjson.dumps({k: v for k, v in merged.items() if v is not ...})


def reject(value: bytes | None, source: str = "crm", **config: Any) -> DeadLetter:
    result = decode_source_event(value, source, NOW, DecoderConfig(**config))
    assert isinstance(result, DeadLetter), result
    return result


def accept(value: bytes, source: str = "crm", **config: Any) -> DecodedEvent:
    result = decode_source_event(value, source, NOW, DecoderConfig(**config))
    assert isinstance(result, DecodedEvent), result
    return result


# -- accepted events are normalised ---------------------------------------------------------


def test_accepts_and_normalises_a_valid_event() -> None:
    event = accept(encode(ORDER, channel="shop", extra={"x": 1}))
    assert event.occurred_at == NOW - 3_600_000
    assert (event.event_id, event.event_type, event.source) == ("o-1", "order_placed", "crm")
    assert event.customer_id == "C42"
    assert event.payload == ORDER["payload"]
    assert event.extra == {"channel": "shop", "extra": {"x": 1}}
    canonical = event.to_canonical("C42", NOW + 5)
    assert canonical == {
        "event_id": "o-1",
        "event_type": "order_placed",
        "source": "crm",
        "occurred_at": NOW - 3_600_000,
        "customer_id": "C42",
        "payload": ORDER["payload"],
        "extra": {"channel": "shop", "extra": {"x": 1}},
        "ingested_at": NOW + 5,
    }
    validator("customer-events")(canonical)


def test_payload_defaults_to_empty_and_unknown_payload_fields_are_kept() -> None:
    login = {
        "event_id": "w-1",
        "event_type": "login",
        "source": "web",
        "occurred_at": NOW,
        "customer_id": "C1",
        "anonymous_id": "a-1",
    }
    assert accept(encode(login), "web").payload == {}
    view = {**login, "event_type": "page_view", "payload": {"url": "/", "ab_test": "b"}}
    assert accept(encode(view), "web").payload == {"url": "/", "ab_test": "b"}


def test_extra_is_omitted_from_canonical_when_empty() -> None:
    assert "extra" not in accept(encode(ORDER)).to_canonical("C42", NOW)


def test_decoded_event_round_trips_through_its_record() -> None:
    event = accept(encode(ORDER, email="ann@example.com", note="n"))
    assert DecodedEvent.from_record(orjson.loads(orjson.dumps(event.to_record()))) == event


def test_accepts_bytearray_and_memoryview() -> None:
    accept(bytearray(encode(ORDER)))  # type: ignore[arg-type]
    accept(memoryview(encode(ORDER)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (NOW, NOW),
        (float(NOW), NOW),
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01t00:00:00z", NOW),
        ("2026-01-01 00:00:00Z", NOW),
        ("2026-01-01T00:00:00.123456789Z", NOW + 123),
        ("2026-01-01T00:00:00.1Z", NOW + 100),
        ("2026-01-01T02:30:00+02:30", NOW),
        ("2025-12-31T19:00:00-05:00", NOW),
        ("2025-12-31T23:59:60Z", NOW - 1),
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ],
)
def test_parse_event_time_accepts(raw: object, expected: int) -> None:
    assert parse_event_time(raw, NOW, 1_000) == expected


@pytest.mark.parametrize(
    "raw",
    [
        True,
        None,
        [NOW],
        NOW + 0.5,
        "2026-01-01T00:00:00",  # no offset: ambiguous
        "2026-01-01",
        "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00.Z",
        "yesterday",
        "２０２６-01-01T00:00:00Z",  # noqa: RUF001 - full-width digits must not count as digits
        "1999-12-31T23:59:59.999Z",
        946_684_799_999,
        NOW // 1000,  # seconds, not ms
        -1,
        NOW + 3_600_001,
        10**30,
    ],
)
def test_parse_event_time_rejects(raw: object) -> None:
    assert isinstance(parse_event_time(raw, NOW, 3_600_000), str)


def test_seconds_instead_of_milliseconds_gets_a_hint() -> None:
    assert "seconds" in reject(encode(ORDER, occurred_at=NOW // 1000)).message


# -- one or more cases per reason ------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b""])
def test_empty_value(value: bytes | None) -> None:
    assert reject(value).reason is Reason.EMPTY_VALUE


def test_oversized_is_checked_before_decoding() -> None:
    padded = encode(ORDER, note="x" * 70_000)
    assert reject(padded).reason is Reason.OVERSIZED
    assert reject(b"\xff" * 70_000).reason is Reason.OVERSIZED  # not even looked at
    assert reject(encode(ORDER, note="x" * 200), max_bytes=100).reason is Reason.OVERSIZED
    accept(padded, max_bytes=100_000)


@pytest.mark.parametrize("value", [b"\xff", b'{"event_id": "\xc3\x28"}', b"\xed\xa0\x80"])
def test_invalid_utf8(value: bytes) -> None:
    assert reject(value).reason is Reason.INVALID_UTF8


@pytest.mark.parametrize(
    "value", [b"{", b"{'a': 1}", b"NaN", b'{"a": 1,}', b"\xef\xbb\xbf{}", b'"\\ud800"', b"1e999"]
)
def test_invalid_json(value: bytes) -> None:
    assert reject(value).reason is Reason.INVALID_JSON


def test_too_deep_by_own_bound_and_by_the_parser() -> None:
    nested: Any = {"leaf": 1}
    for _ in range(16):
        nested = {"n": nested}
    deep = reject(encode(ORDER, nested=nested))
    assert deep.reason is Reason.TOO_DEEP
    assert deep.event_id == "o-1"
    assert reject(b"[" * 2000 + b"]" * 2000).reason is Reason.TOO_DEEP
    assert reject(encode(ORDER, nested={"a": [[{}]]}), max_depth=4).reason is Reason.TOO_DEEP


def test_many_brackets_that_are_not_deep_are_fine() -> None:
    accept(encode(ORDER, tags=[[1], [2], [3]] * 20, note="{{{{[[[[" * 10))


@pytest.mark.parametrize("value", [b"[]", b"1", b'"event"', b"null", b"true", b"[{}]"])
def test_not_an_object(value: bytes) -> None:
    assert reject(value).reason is Reason.NOT_AN_OBJECT


def test_unknown_source() -> None:
    assert reject(encode(ORDER), source="fax").reason is Reason.UNKNOWN_SOURCE


def test_source_mismatch() -> None:
    letter = reject(encode(ORDER), source="web")
    assert letter.reason is Reason.SOURCE_MISMATCH
    assert letter.event_id == "o-1"


@pytest.mark.parametrize("event_type", ["page_view", "ORDER_PLACED", ""])
def test_unknown_event_type(event_type: str) -> None:
    assert reject(encode(ORDER, event_type=event_type)).reason is Reason.UNKNOWN_EVENT_TYPE


def test_missing_identity() -> None:
    assert reject(encode(ORDER, customer_id=...)).reason is Reason.MISSING_IDENTITY
    assert reject(encode(ORDER, customer_id=None)).reason is Reason.MISSING_IDENTITY
    login = {**ORDER, "source": "web", "event_type": "login", "payload": {}}
    letter = reject(encode(login), source="web")
    assert letter.reason is Reason.MISSING_IDENTITY
    assert "anonymous_id" in letter.message
    erased = {**ORDER, "event_type": "customer_erased", "payload": {}}
    erase_by_email = encode(erased, customer_id=..., email="ann@example.com")
    assert reject(erase_by_email).reason is Reason.MISSING_IDENTITY


def test_alias_only_events_are_accepted_unresolved() -> None:
    event = accept(encode(ORDER, customer_id=..., email="Ann@Example.com"))
    assert event.customer_id is None
    assert event.aliases() == [("email", "Ann@Example.com")]


@pytest.mark.parametrize(
    "occurred_at", ["not a time", "2026-01-01T00:00:00", 1_000, NOW + 3_600_001, True, None, {}]
)
def test_bad_timestamp(occurred_at: object) -> None:
    assert reject(encode(ORDER, occurred_at=occurred_at)).reason is Reason.BAD_TIMESTAMP


def test_future_skew_is_configurable() -> None:
    future = encode(ORDER, occurred_at=NOW + 10_000)
    accept(future)
    assert reject(future, max_future_skew_ms=5_000).reason is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    "changes",
    [
        {"event_id": ...},
        {"event_id": ""},
        {"event_id": "x" * 129},
        {"event_id": 7},
        {"event_type": ...},
        {"event_type": 3},
        {"source": ...},
        {"source": None},
        {"occurred_at": ...},
        {"customer_id": 42},
        {"customer_id": ""},
        {"email": "not-an-email"},
        {"payload": None},
        {"payload": []},
        {"payload": {"order_id": "o-1", "amount": 120.0}},
        {"payload": {"order_id": "o-1", "amount": -1, "currency": "EUR"}},
        {"payload": {"order_id": "o-1", "amount": "12", "currency": "EUR"}},
        {"payload": {"order_id": "o-1", "amount": True, "currency": "EUR"}},
        {"payload": {"order_id": "o-1", "amount": 1, "currency": "eur"}},
    ],
)
def test_schema_violation(changes: dict[str, Any]) -> None:
    assert reject(encode(ORDER, **changes)).reason is Reason.SCHEMA_VIOLATION


@pytest.mark.parametrize(
    ("source", "event"),
    [
        ("support", {"event_type": "satisfaction_rated", "payload": {"csat": 6}}),
        ("support", {"event_type": "satisfaction_rated", "payload": {"csat": 4.5}}),
        ("support", {"event_type": "escalated", "payload": {"ticket_id": "t", "sentiment": 2}}),
        (
            "support",
            {"event_type": "ticket_opened", "payload": {"ticket_id": "t", "priority": "p0"}},
        ),
        ("web", {"event_type": "goal_completed", "payload": {"goal": "world_peace"}}),
        ("web", {"event_type": "page_view", "payload": {}}),
        ("email", {"event_type": "bounced", "payload": {"kind": "medium"}}),
        ("crm", {"event_type": "profile_updated", "payload": {"fields": {"city": 7}}}),
        ("crm", {"event_type": "profile_updated", "payload": {}}),
        ("crm", {"event_type": "payment_late", "payload": {"days_late": -3}}),
    ],
)
def test_schema_violation_in_typed_payloads(source: str, event: dict[str, Any]) -> None:
    base = {"event_id": "e-1", "source": source, "occurred_at": NOW, "customer_id": "C1"}
    letter = reject(orjson.dumps({**base, **event}), source=source)
    assert letter.reason is Reason.SCHEMA_VIOLATION
    assert letter.message.startswith("data")


def test_unknown_currency_only_with_a_rate_table() -> None:
    usd = encode(ORDER, payload={**ORDER["payload"], "currency": "USD"})
    accept(usd)
    letter = reject(usd, currencies=frozenset({"EUR", "GBP"}))
    assert letter.reason is Reason.UNKNOWN_CURRENCY
    assert "USD" in letter.message
    accept(encode(ORDER), currencies=frozenset({"EUR"}))
    mrr = {**ORDER, "event_type": "subscription_started", "payload": {"mrr": 9.0}}
    accept(encode(mrr), currencies=frozenset({"EUR"}))  # no currency: base currency


def test_a_currency_field_outside_money_events_is_just_data() -> None:
    view = {
        "event_id": "w-1",
        "event_type": "page_view",
        "source": "web",
        "occurred_at": NOW,
        "anonymous_id": "a",
        "payload": {"url": "/", "currency": ["not", "hashable"]},
    }
    accept(orjson.dumps(view), "web", currencies=frozenset({"EUR"}))


def test_internal_errors_become_dead_letters() -> None:
    letter = reject("{}", source="crm")  # type: ignore[arg-type]  # a str is not bytes
    assert letter.reason is Reason.INTERNAL_ERROR
    assert "TypeError" in letter.message


# -- dead-letter records ---------------------------------------------------------------------


def test_dead_letter_record_carries_origin_and_original_bytes() -> None:
    value = b'{"event_id": "o-1", '
    record = reject(value).to_record(Origin("crm", 3, 1234, b"C42", value), NOW)
    assert record == {
        "reason": "invalid_json",
        "message": record["message"],
        "topic": "crm",
        "partition": 3,
        "offset": 1234,
        "key_b64": base64.b64encode(b"C42").decode(),
        "value_b64": base64.b64encode(value).decode(),
        "value_size": len(value),
        "value_truncated": False,
        "event_id": None,
        "dead_lettered_at": NOW,
    }
    assert record["message"].startswith("not valid JSON")
    validator("dead-letters")(record)


def test_dead_letter_record_of_a_tombstone_and_a_huge_value() -> None:
    tombstone = reject(None).to_record(Origin("crm", 0, 1, None, None), NOW)
    assert (tombstone["key_b64"], tombstone["value_b64"], tombstone["value_size"]) == (
        None,
        None,
        None,
    )
    validator("dead-letters")(tombstone)
    huge = b"x" * 1000
    record = reject(huge).to_record(Origin("crm", 0, 2, None, huge), NOW, max_value_bytes=100)
    assert base64.b64decode(record["value_b64"]) == huge[:100]
    assert (record["value_size"], record["value_truncated"]) == (1000, True)
    validator("dead-letters")(record)


def test_dead_letter_message_is_bounded() -> None:
    letter = DeadLetter(Reason.SCHEMA_VIOLATION, "m" * 5000)
    assert len(letter.to_record(Origin("crm", 0, 0, None, b"x"), NOW)["message"]) == 500


def test_the_amount_limit_applies_to_the_money_fields_each_schema_defines() -> None:
    """A subscription defines `mrr` but not `amount`: an extra `amount` of any kind is not
    money there (the schema lets it pass), while an `mrr` beyond the limit is rejected."""
    started = {"event_id": "c-1", "event_type": "subscription_started", "source": "crm",
               "occurred_at": "2025-12-31T23:00:00Z", "customer_id": "C42",
               "payload": {"plan": "plus", "mrr": 19.0, "currency": "EUR"}}
    for extra in ([], "a lot", 5e9):
        event = {**started, "payload": {**started["payload"], "amount": extra}}
        decoded = decode_source_event(orjson.dumps(event), "crm", NOW,
                                      DecoderConfig(max_amount=1e9))
        assert isinstance(decoded, DecodedEvent), decoded
    too_much = {**started, "payload": {**started["payload"], "mrr": 5e9}}
    letter = decode_source_event(orjson.dumps(too_much), "crm", NOW, DecoderConfig(max_amount=1e9))
    assert isinstance(letter, DeadLetter) and letter.reason is Reason.SCHEMA_VIOLATION
    assert "payload.mrr" in letter.message


# -- survey answers ---------------------------------------------------------------------------

SURVEY: dict[str, Any] = {
    "event_id": "s-1",
    "event_type": "survey_answered",
    "source": "support",
    "occurred_at": "2025-12-31T23:00:00Z",
    "customer_id": "C42",
    "payload": {"survey": "nps", "score": 10, "comment": "<script>alert(1)</script>"},
}


@pytest.mark.parametrize(("survey", "score"), [("nps", 0), ("nps", 10), ("csat", 1),
                                               ("csat", 5), ("ces", 1), ("ces", 7)])
def test_survey_answers_on_their_scale_are_accepted(survey: str, score: int) -> None:
    event = accept(encode(SURVEY, payload={"survey": survey, "score": score}), "support")
    assert event.payload == {"survey": survey, "score": score}


def test_a_survey_comment_is_kept_as_written() -> None:
    assert accept(encode(SURVEY), "support").payload["comment"] == "<script>alert(1)</script>"


@pytest.mark.parametrize("payload", [
    {"survey": "nps", "score": 11}, {"survey": "nps", "score": -1}, {"survey": "csat", "score": 0},
    {"survey": "csat", "score": 6}, {"survey": "ces", "score": 0}, {"survey": "ces", "score": 8},
    {"survey": "nps", "score": 9.5}, {"survey": "mood", "score": 3}, {"survey": "nps"},
    {"survey": "nps", "score": 9, "comment": "x" * 2001},
])
def test_survey_answers_off_their_scale_are_dead_letters(payload: dict[str, Any]) -> None:
    assert reject(encode(SURVEY, payload=payload), "support").reason is Reason.SCHEMA_VIOLATION
