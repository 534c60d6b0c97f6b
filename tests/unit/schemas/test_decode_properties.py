"""Property tests: no byte sequence makes the decoder raise, every reject has a known reason.

Mutated valid events are also checked against the reference 2020-12 validator (jsonschema):
an accepted event is valid under it, and a reject for a schema-backed reason is invalid under
it, so the fast compiled validator and the published contract cannot drift apart.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decode import (
    DeadLetter,
    DecodedEvent,
    DecoderConfig,
    Origin,
    Reason,
    decode_source_event,
    parse_event_time,
)
from schemas.registry import SOURCES, event_types, examples, load_schema, validator
from tests.kit import DAY_MS

NOW = 1_767_605_400_000 + 30 * DAY_MS
REASONS = frozenset(Reason) - {Reason.INTERNAL_ERROR}
SCHEMA_BACKED = frozenset(
    {
        Reason.SCHEMA_VIOLATION,
        Reason.SOURCE_MISMATCH,
        Reason.UNKNOWN_EVENT_TYPE,
        Reason.MISSING_IDENTITY,
    }
)
SOURCE_EXAMPLES = [(source, example) for source in SOURCES for example in examples(source)]
REFERENCE = {source: jsonschema.Draft202012Validator(load_schema(source)) for source in SOURCES}
FIELD_NAMES = [
    "event_id", "event_type", "source", "occurred_at", "customer_id", "email", "anonymous_id",
    "payload", "extra", "amount", "currency", "csat", "sentiment", "url", "goal", "fields",
    "ticket_id", "order_id", "resolution_hours", "kind", "priority",
]  # fmt: skip
INTERESTING = st.sampled_from(
    [
        *SOURCES,
        *(t for s in SOURCES for t in event_types(s)),
        NOW,
        NOW + 10**9,
        1_767_605_400,
        "2026-01-05T09:30:00Z",
        "2026-01-05T09:30:00",
        "2026-02-30T09:30:00Z",
        "ann@example.com",
        "not-an-email",
        "EUR",
        "eur",
        "",
        -1,
        0,
        1,
        5,
        6,
        0.5,
        -1.5,
    ]
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | INTERESTING
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELD_NAMES), children, max_size=4)
    ),
    max_leaves=12,
)


def check_outcome(result: DecodedEvent | DeadLetter) -> None:
    """Shared post-conditions for any decode outcome."""
    if isinstance(result, DeadLetter):
        assert result.reason in REASONS, result
        record = result.to_record(Origin("web", 0, 1, b"k", b"v"), NOW)
        validator("dead-letters")(record)
    else:
        assert isinstance(result, DecodedEvent)
        validator("customer-events")(result.to_canonical(result.customer_id or "C", NOW))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.binary(max_size=512), source=st.sampled_from([*SOURCES, "fax"]))
def test_arbitrary_bytes_never_raise(value: bytes, source: str) -> None:
    check_outcome(decode_source_event(value, source, NOW))


@settings(max_examples=300)
@given(value=JSON_VALUES, source=st.sampled_from(SOURCES))
def test_arbitrary_json_never_raises(value: Any, source: str) -> None:
    check_outcome(decode_source_event(orjson.dumps(value), source, NOW))


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid example with a few fields deleted, replaced or added (top level or payload)."""
    source, example = draw(st.sampled_from(SOURCE_EXAMPLES))
    event = copy.deepcopy(example)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        payload = event.get("payload")
        target = payload if isinstance(payload, dict) and draw(st.booleans()) else event
        keys = sorted(target)
        operation = draw(st.sampled_from(["delete", "replace", "add"]))
        if operation == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif operation == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        else:
            target[draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=8))] = draw(JSON_VALUES)
    return source, event


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_events())
def test_mutated_events_agree_with_the_reference_validator(
    case: tuple[str, dict[str, Any]],
) -> None:
    source, event = case
    result = decode_source_event(orjson.dumps(event), source, NOW)
    check_outcome(result)
    reference_valid = REFERENCE[source].is_valid(event)
    if isinstance(result, DecodedEvent):
        assert reference_valid, event
    elif result.reason in SCHEMA_BACKED:
        assert not reference_valid, (result, event)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_byte_mutations_of_valid_events_never_raise(data: st.DataObject) -> None:
    source, example = data.draw(st.sampled_from(SOURCE_EXAMPLES))
    raw = bytearray(orjson.dumps(example))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(raw)))
        operation = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if operation == "flip" and position < len(raw):
            raw[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif operation == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del raw[position : position + 1]
        else:
            del raw[position:]
    check_outcome(decode_source_event(bytes(raw), source, NOW))


@settings(max_examples=200)
@given(
    value=st.binary(max_size=300),
    max_bytes=st.integers(min_value=0, max_value=400),
    max_depth=st.integers(min_value=0, max_value=20),
)
def test_any_limits_never_raise(value: bytes, max_bytes: int, max_depth: int) -> None:
    config = DecoderConfig(max_bytes=max_bytes, max_depth=max_depth)
    result = decode_source_event(value, "web", NOW, config)
    check_outcome(result)
    if value and len(value) > max_bytes:
        assert isinstance(result, DeadLetter)
        assert result.reason is Reason.OVERSIZED


@given(
    moment=st.datetimes(min_value=dt.datetime(2000, 1, 2), max_value=dt.datetime(2099, 12, 31)),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    digits=st.integers(min_value=0, max_value=9),
    separator=st.sampled_from("Tt "),
)
def test_rfc3339_round_trips_to_epoch_milliseconds(
    moment: dt.datetime, offset_minutes: int, digits: int, separator: str
) -> None:
    aware = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
    text = aware.isoformat(sep=separator, timespec="microseconds")
    date_time, offset = text[:26], text[26:]
    fraction = (date_time[20:] + "000")[:digits]
    text = date_time[:19] + (f".{fraction}" if digits else "") + offset
    expected_ms = int(aware.replace(microsecond=0).timestamp()) * 1000
    expected_ms += int((fraction + "000")[:3]) if digits else 0
    assert parse_event_time(text, 4_102_444_800_000, 0) == expected_ms
