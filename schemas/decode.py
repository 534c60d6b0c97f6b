"""Decode and validate one raw source record: a `DecodedEvent`, or a `DeadLetter` saying why not.

Errors are values at this edge: `decode_source_event` never raises, whatever the bytes, and
every reject carries a `Reason` from a closed list (mirrored by the dead-letters schema) plus a
human message. It reads no clock: `now_ms` (wall clock) comes in as an argument and is used
only for the future-skew check.

Checks run cheapest first so hostile input costs little: size before decoding, a bracket count
before walking for depth, then identity and timestamps (so they get precise reasons), then the
compiled JSON Schema of the source.

>>> event = decode_source_event(
...     b'{"event_id":"o-1","event_type":"order_placed","source":"crm",'
...     b'"occurred_at":"2026-01-01T00:00:00Z","customer_id":"C42",'
...     b'"payload":{"order_id":"o-1","amount":120.0,"currency":"EUR"},"channel":"shop"}',
...     "crm", now_ms=1767225600123)
>>> event.occurred_at, event.customer_id, event.extra
(1767225600000, 'C42', {'channel': 'shop'})
>>> decode_source_event(b'{"event_id":', "crm", now_ms=0).reason
<Reason.INVALID_JSON: 'invalid_json'>
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import fastjsonschema
import orjson

from schemas.registry import (
    IDENTITY_FIELDS,
    SOURCES,
    Validator,
    event_types,
    event_validator,
    load_schema,
    required_identity,
    validator,
)
from schemas.units import HOUR_MS

__all__ = [
    "ALIAS_FIELDS",
    "DEFAULT_CONFIG",
    "DEFAULT_MAX_AMOUNT",
    "ENVELOPE_FIELDS",
    "MAX_AMOUNT",
    "MIN_EVENT_TIME_MS",
    "MONEY_FIELDS",
    "DeadLetter",
    "DecodedEvent",
    "DecoderConfig",
    "Origin",
    "Reason",
    "compile_validators",
    "decode_source_event",
    "parse_event_time",
    "reasons",
]


class Reason(StrEnum):
    """Why a record was dead-lettered; the closed list of the dead-letters schema."""

    EMPTY_VALUE = "empty_value"
    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SOURCE = "unknown_source"
    SOURCE_MISMATCH = "source_mismatch"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_IDENTITY = "missing_identity"
    BAD_TIMESTAMP = "bad_timestamp"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_CURRENCY = "unknown_currency"
    UNRESOLVED_IDENTITY = "unresolved_identity"
    TOO_LATE = "too_late"
    INTERNAL_ERROR = "internal_error"
    PROCESSING_ERROR = "processing_error"


MAX_AMOUNT = 1e12
"""The contract's largest money amount (the schemas' `maximum`): the core keeps money in
integer cents, and sums of such amounts stay far inside 64 bits."""
DEFAULT_MAX_AMOUNT = 1e9
"""A deployment's default bound on one amount: a billion per order is a unit mistake or an
attack, not a sale."""
MONEY_FIELDS = ("amount", "mrr")

MIN_EVENT_TIME_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: anything earlier is a unit mistake or a default, not an event time."""

ENVELOPE_FIELDS = frozenset(
    ("event_id", "event_type", "source", "occurred_at", "payload", *IDENTITY_FIELDS)
)
ALIAS_FIELDS: tuple[str, ...] = ("email", "anonymous_id")

_MAX_MESSAGE = 500
_DEFAULT_MAX_DEAD_LETTER_VALUE = 256 * 1024
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)
_EPOCH = dt.datetime(1970, 1, 1)
_SECOND = dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    """Limits of the decoder; the defaults suit records of a few hundred bytes."""

    max_bytes: int = 64 * 1024
    """Larger values are rejected as `oversized` before any decoding."""
    max_depth: int = 16
    """Deepest allowed nesting of objects/arrays (the top-level object is depth 1)."""
    max_future_skew_ms: int = HOUR_MS
    """How far past `now_ms` an event time may lie (source clocks drift)."""
    currencies: frozenset[str] | None = None
    """Currencies with a configured exchange rate; None accepts any ISO 4217-shaped code."""
    max_amount: float = MAX_AMOUNT
    """Largest money amount (`amount`, `mrr`) an event may carry, in its own currency; the
    contract's own bound is `MAX_AMOUNT`, a deployment may set a lower one."""


DEFAULT_CONFIG = DecoderConfig()


class Origin(NamedTuple):
    """Where a consumed record came from, with its original bytes: what a dead letter carries
    back, in one value (the stages build it from the Kafka message)."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record's verdict: reason code, human message and (when readable) event id."""

    reason: Reason
    message: str
    event_id: str | None = None

    def to_record(
        self,
        origin: Origin,
        now_ms: int,
        *,
        max_value_bytes: int = _DEFAULT_MAX_DEAD_LETTER_VALUE,
    ) -> dict[str, Any]:
        """Build the dead-letters topic record of the record at `origin`, carrying its
        original bytes (base64).

        Values longer than `max_value_bytes` keep only their prefix (`value_truncated`) so the
        dead letter itself stays under the broker's message size limit.
        """
        topic, partition, offset, key, value = origin
        value_bytes = None if value is None else bytes(value)
        truncated = False
        kept = value_bytes
        if value_bytes is not None and len(value_bytes) > max_value_bytes:
            truncated, kept = True, value_bytes[:max_value_bytes]
        return {
            "reason": str(self.reason),
            "message": self.message[:_MAX_MESSAGE],
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": _b64(key),
            "value_b64": _b64(kept),
            "value_size": None if value_bytes is None else len(value_bytes),
            "value_truncated": truncated,
            "event_id": self.event_id,
            "dead_lettered_at": now_ms,
        }


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


@dataclass(slots=True)
class DecodedEvent:
    """A valid source event, normalised but not yet identity-resolved (customer_id may be None).

    `occurred_at` is integer epoch ms UTC; unknown top-level fields are in `extra`.
    """

    event_id: str
    event_type: str
    source: str
    occurred_at: int
    customer_id: str | None
    email: str | None
    anonymous_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def aliases(self) -> list[tuple[str, str]]:
        """(alias kind, alias) pairs the event carries, email first (the cross-system key)."""
        found = []
        if self.email is not None:
            found.append(("email", self.email))
        if self.anonymous_id is not None:
            found.append(("anonymous_id", self.anonymous_id))
        return found

    def to_canonical(self, customer_id: str, ingested_at: int) -> dict[str, Any]:
        """The customer-events record for this event, attributed to `customer_id`."""
        record: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "occurred_at": self.occurred_at,
            "customer_id": customer_id,
        }
        if self.email is not None:
            record["email"] = self.email
        if self.anonymous_id is not None:
            record["anonymous_id"] = self.anonymous_id
        record["payload"] = self.payload
        if self.extra:
            record["extra"] = self.extra
        record["ingested_at"] = ingested_at
        return record

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-able dict (for held-event snapshots); inverse of `from_record`."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "source": self.source,
            "occurred_at": self.occurred_at,
            "customer_id": self.customer_id,
            "email": self.email,
            "anonymous_id": self.anonymous_id,
            "payload": self.payload,
            "extra": self.extra,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DecodedEvent:
        """Rebuild from `to_record` output."""
        return cls(**record)


@dataclass(frozen=True, slots=True)
class _SourceRules:
    """Everything per source that decoding needs, derived once from its schema."""

    validators: dict[str, Validator]
    """Event type -> validator of the envelope plus that type's payload."""
    required_ids: dict[str, tuple[str, ...]]
    money_fields: dict[str, tuple[str, ...]]
    """Event types whose payload defines `currency` (checked against the rate table) -> the
    `MONEY_FIELDS` their payload schema defines (numbers, validated, and held to the
    deployment's `max_amount`); a field of that name the schema does not define is not
    money."""


@functools.cache
def _rules(source: str) -> _SourceRules:
    defs = load_schema(source)["$defs"]
    payloads = {t: defs[t]["properties"].get("payload", {}).get("properties", {})
                for t in event_types(source)}
    money_fields = {
        event_type: tuple(name for name in MONEY_FIELDS if name in fields)
        for event_type, fields in payloads.items() if "currency" in fields
    }
    validators = {t: event_validator(source, t) for t in event_types(source)}
    return _SourceRules(validators, required_identity(source), money_fields)


def compile_validators() -> None:
    """Compile every source validator now (at worker start) rather than on first use."""
    for source in SOURCES:
        _rules(source)


def decode_source_event(
    value: bytes | None,
    source: str,
    now_ms: int,
    config: DecoderConfig = DEFAULT_CONFIG,
) -> DecodedEvent | DeadLetter:
    """Decode, validate and normalise one record value from a source topic. Never raises."""
    try:
        return _decode(value, source, now_ms, config)
    except Exception as err:  # the worker must survive any input; the bug stays visible
        return DeadLetter(Reason.INTERNAL_ERROR, f"{type(err).__name__}: {err}")


def _decode(
    value: bytes | None, source: str, now_ms: int, config: DecoderConfig
) -> DecodedEvent | DeadLetter:
    if not value:
        return DeadLetter(Reason.EMPTY_VALUE, "record value is null or empty")
    if not isinstance(value, bytes):
        value = bytes(value)  # bytearray / memoryview from some clients
    if source not in SOURCES:
        return DeadLetter(Reason.UNKNOWN_SOURCE, f"topic is mapped to unknown source {source!r}")
    if len(value) > config.max_bytes:
        return DeadLetter(
            Reason.OVERSIZED, f"value is {len(value)} bytes, limit is {config.max_bytes}"
        )
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        return _json_error(value, err)
    if not isinstance(obj, dict):
        return DeadLetter(Reason.NOT_AN_OBJECT, f"JSON value is {_json_kind(obj)}, not an object")
    event_id = obj.get("event_id")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 128):
        event_id = None
    if _too_deep(value, obj, config.max_depth):
        return DeadLetter(
            Reason.TOO_DEEP, f"nesting deeper than {config.max_depth} levels", event_id
        )

    rules = _rules(source)
    get = obj.get
    claimed = get("source")
    if isinstance(claimed, str) and claimed != source:
        return DeadLetter(
            Reason.SOURCE_MISMATCH,
            f"event says source {claimed[:40]!r} but arrived on the {source} topic",
            event_id,
        )
    event_type = get("event_type")
    # A known event type gets its specialised validator; anything else (missing or not a
    # string) goes through the whole-file validator, which reports the envelope violation.
    validate = rules.validators.get(event_type) if isinstance(event_type, str) else None
    if validate is None and isinstance(event_type, str):
        return DeadLetter(
            Reason.UNKNOWN_EVENT_TYPE,
            f"{event_type[:60]!r} is not a {source} event type",
            event_id,
        )
    customer_id, email, anonymous_id = get("customer_id"), get("email"), get("anonymous_id")
    if customer_id is None and email is None and anonymous_id is None:
        return DeadLetter(
            Reason.MISSING_IDENTITY, "none of customer_id, email, anonymous_id is set", event_id
        )
    required = rules.required_ids.get(event_type, ()) if isinstance(event_type, str) else ()
    if required:
        missing = [name for name in required if get(name) is None]
        if missing:
            return DeadLetter(
                Reason.MISSING_IDENTITY, f"{event_type} requires {' and '.join(missing)}", event_id
            )
    occurred_at: int | str | None = None
    if "occurred_at" in obj:
        occurred_at = parse_event_time(obj["occurred_at"], now_ms, config.max_future_skew_ms)
        if isinstance(occurred_at, str):
            return DeadLetter(Reason.BAD_TIMESTAMP, occurred_at, event_id)

    try:
        (validate or validator(source))(obj)
    except fastjsonschema.JsonSchemaValueException as err:
        return DeadLetter(Reason.SCHEMA_VIOLATION, err.message, event_id)
    # The schema guarantees the envelope types from here on.
    assert isinstance(occurred_at, int) and isinstance(event_type, str) and event_id is not None

    payload: dict[str, Any] = get("payload", {})
    money_fields = rules.money_fields.get(event_type)
    if money_fields is not None:
        currency = payload.get("currency")
        if (config.currencies is not None and currency is not None
                and currency not in config.currencies):
            return DeadLetter(
                Reason.UNKNOWN_CURRENCY, f"no exchange rate configured for {currency}", event_id
            )
        for name in money_fields:
            amount = payload.get(name)
            if amount is not None and amount > config.max_amount:
                return DeadLetter(
                    Reason.SCHEMA_VIOLATION,
                    f"payload.{name} {amount:.6g} exceeds the configured maximum "
                    f"{config.max_amount:.6g}", event_id)
    extra = (
        {k: v for k, v in obj.items() if k not in ENVELOPE_FIELDS}
        if obj.keys() - ENVELOPE_FIELDS
        else {}
    )
    return DecodedEvent(
        event_id, event_type, source, occurred_at, customer_id, email, anonymous_id, payload, extra
    )


def _json_error(value: bytes, err: orjson.JSONDecodeError) -> DeadLetter:
    """Classify an orjson failure: bad UTF-8, orjson's own depth limit, or plain bad JSON."""
    try:
        bytes(value).decode("utf-8")
    except UnicodeDecodeError as utf_err:
        return DeadLetter(
            Reason.INVALID_UTF8, f"not valid UTF-8: {utf_err.reason} at byte {utf_err.start}"
        )
    if "depth" in err.msg or "recursion" in err.msg:
        return DeadLetter(Reason.TOO_DEEP, f"nesting too deep for the JSON parser: {err}")
    return DeadLetter(Reason.INVALID_JSON, f"not valid JSON: {err}")


def _json_kind(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    return "an array"


def _too_deep(raw: bytes, obj: dict[str, Any], limit: int) -> bool:
    """True when `obj` nests deeper than `limit`.

    Depth can never exceed the number of opening brackets in the raw bytes (brackets inside
    strings only inflate the count), so the walk runs only for the rare value where
    that C-speed count is over the limit.
    """
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterator[Any] = iter(node.values() if isinstance(node, dict) else node)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_event_time(raw: object, now_ms: int, max_future_skew_ms: int) -> int | str:
    """Event time as int epoch ms UTC, or a str saying why it is unusable.

    Accepts integer epoch milliseconds (integral floats too) and RFC 3339 date-times with
    an explicit offset ('Z' or '+hh:mm'); a leap second is read as the end of :59.

    >>> parse_event_time("2026-01-01T01:00:00.5+01:00", 1767225600000, 1000)
    1767225600500
    >>> parse_event_time(1767225600, 1767225600000, 0)
    'occurred_at 1767225600 is before 2000-01-01 (seconds instead of milliseconds?)'
    """
    if isinstance(raw, bool):
        return "occurred_at must be an RFC 3339 string or epoch milliseconds, not a boolean"
    if isinstance(raw, float):
        if not raw.is_integer():
            return "occurred_at epoch milliseconds must be a whole number"
        raw = int(raw)
    if isinstance(raw, int):
        millis = raw
        shown = str(raw)
    elif isinstance(raw, str):
        parsed = _parse_rfc3339(raw)
        if parsed is None:
            return f"occurred_at {raw[:40]!r} is not an RFC 3339 date-time with offset"
        millis = parsed
        shown = repr(raw[:40])
    else:
        return "occurred_at must be an RFC 3339 string or epoch milliseconds"
    if millis < MIN_EVENT_TIME_MS:
        hint = " (seconds instead of milliseconds?)" if 0 < millis < MIN_EVENT_TIME_MS // 10 else ""
        return f"occurred_at {shown} is before 2000-01-01{hint}"
    if millis > now_ms + max_future_skew_ms:
        return f"occurred_at {shown} is more than {max_future_skew_ms} ms in the future"
    return millis


def _parse_rfc3339(text: str) -> int | None:
    """Epoch ms of an RFC 3339 date-time, or None when it is not one.

    The regex enforces RFC 3339's shape (fromisoformat alone accepts much more); the
    C-implemented fromisoformat then checks calendar ranges, faster than doing it here.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    second, fraction, sign, off_h, off_m = match.groups()
    leap = second == "60"
    try:
        moment = dt.datetime.fromisoformat(f"{text[:10]}T{text[11:17]}{'59' if leap else second}")
    except ValueError:
        return None
    millis = 999 if leap else int(fraction[:3].ljust(3, "0")) if fraction else 0
    offset_s = 0
    if sign:
        hours, minutes = int(off_h), int(off_m)
        if hours > 23 or minutes > 59:
            return None
        offset_s = (hours * 3600 + minutes * 60) * (-1 if sign == "-" else 1)
    return ((moment - _EPOCH) // _SECOND - offset_s) * 1000 + millis


def reasons() -> tuple[str, ...]:
    """The closed list of reason codes, in documentation order."""
    return tuple(str(reason) for reason in Reason)
