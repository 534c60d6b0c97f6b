"""Load scorestream's JSON Schemas from package data and compile fast validators for them.

The `*.json` files beside this module are the authoritative event contract (draft 2020-12).
They keep to a keyword subset that fastjsonschema (draft-07 at most) compiles with the same
meaning, so one file is both the published contract and the fast runtime check:
`type`, `enum`, `const`, `required`, `properties`, `additionalProperties`, `pattern`,
`minLength`/`maxLength`, `minimum`/`maximum`, `minProperties`, `items`, `maxItems`, `anyOf`,
`oneOf`, `allOf`, `if`/`then`, and `$ref` to `#/$defs/...` with no sibling keywords. `format`
is an annotation only (2020-12's default); the decoder parses timestamps itself.

Example:

>>> from schemas.registry import event_types, load_schema
>>> event_types("support")
('ticket_opened', 'ticket_resolved', 'escalated', 'satisfaction_rated', 'survey_answered')
>>> load_schema("dead-letters")["$schema"]
'https://json-schema.org/draft/2020-12/schema'
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from schemas.errors import ScorestreamError

__all__ = [
    "IDENTITY_FIELDS",
    "OUTPUT_SCHEMAS",
    "SCHEMA_NAMES",
    "SOURCES",
    "UnknownSchemaError",
    "all_schemas",
    "event_type_schema",
    "event_types",
    "event_validator",
    "examples",
    "load_schema",
    "required_identity",
    "validator",
]

SOURCES: tuple[str, ...] = ("web", "email", "crm", "support")
"""Source systems; each has a topic and a schema file of the same name."""

OUTPUT_SCHEMAS: tuple[str, ...] = (
    "customer-events", "score-changes", "alerts", "attributions", "dead-letters",
    "erasure-confirmations")
"""Schemas of the topics scorestream writes (file name = default topic name)."""

SCHEMA_NAMES: tuple[str, ...] = SOURCES + OUTPUT_SCHEMAS

IDENTITY_FIELDS: tuple[str, ...] = ("customer_id", "email", "anonymous_id")
"""Envelope identifiers: the canonical id and the aliases that resolve to it."""

_DRAFT7 = "http://json-schema.org/draft-07/schema#"

Validator = Callable[[Any], Any]
"""A compiled validator: returns the data or raises fastjsonschema.JsonSchemaValueException."""


class UnknownSchemaError(ScorestreamError, KeyError):
    """No schema file of that name is shipped."""


def _canonical_name(name: str) -> str:
    """Accept both topic names ('dead-letters') and settings roles ('dead_letters')."""
    canonical = name.replace("_", "-")
    if canonical not in SCHEMA_NAMES:
        raise UnknownSchemaError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return canonical


@functools.cache
def _schema_bytes(name: str) -> bytes:
    """Raw schema file from package data (cached; immutable)."""
    return resources.files("schemas").joinpath(f"{name}.json").read_bytes()


def load_schema(name: str) -> dict[str, Any]:
    """Return a fresh copy of the named schema (callers may mutate it freely)."""
    loaded: dict[str, Any] = orjson.loads(_schema_bytes(_canonical_name(name)))
    return loaded


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every shipped schema by name, sources first."""
    return {name: load_schema(name) for name in SCHEMA_NAMES}


@functools.cache
def event_types(source: str) -> tuple[str, ...]:
    """Event types a source may send, in schema order."""
    if source not in SOURCES:
        raise UnknownSchemaError(f"{source!r} is not a source; known: {', '.join(SOURCES)}")
    return tuple(load_schema(source)["properties"]["event_type"]["enum"])


@functools.cache
def required_identity(source: str) -> dict[str, tuple[str, ...]]:
    """Event type -> identifiers its schema requires beyond 'at least one' (e.g. login)."""
    defs = load_schema(source)["$defs"]
    return {
        event_type: tuple(f for f in defs[event_type].get("required", ()) if f in IDENTITY_FIELDS)
        for event_type in event_types(source)
    }


def event_type_schema(source: str, event_type: str) -> dict[str, Any]:
    """The `$defs` entry describing one event type (description, payload, examples)."""
    defs: dict[str, Any] = load_schema(source)["$defs"]
    if event_type not in defs:
        raise UnknownSchemaError(f"{source!r} has no event type {event_type!r}")
    return dict(defs[event_type])


def examples(name: str) -> list[dict[str, Any]]:
    """Every `examples` entry of a schema: top level, then one or more per event type."""
    schema = load_schema(name)
    found = list(schema.get("examples", ()))
    for definition in schema.get("$defs", {}).values():
        found.extend(definition.get("examples", ()))
    return found


@functools.cache
def validator(name: str) -> Validator:
    """Compile the whole named schema once with fastjsonschema (its draft-07 code generator).

    The draft swap is safe because the files only use keywords that mean the same in
    draft-07 and 2020-12 (see module docstring; a unit test checks examples in both).
    """
    schema = load_schema(name)
    schema.pop("$id", None)  # refs are all local; never let a resolver look elsewhere
    return _compile(schema)


@functools.cache
def event_validator(source: str, event_type: str) -> Validator:
    """Compile the source schema specialised to one event type, for the decoder's hot path.

    The whole file dispatches on `event_type` with `if`/`then`, which fastjsonschema runs by
    raising and catching an exception per non-matching branch (tens of microseconds per
    event). For a known event type the file means: envelope, plus "at least one identifier",
    plus that type's `$defs` entry; this validator checks the envelope and the entry. The
    identifier rule is left to the caller, which checks it first for its own reason code.
    """
    schema = load_schema(source)
    definition = event_type_schema(source, event_type)
    for annotation in ("title", "description", "examples"):
        definition.pop(annotation, None)
    envelope = {
        key: value
        for key, value in schema.items()
        if key not in ("$id", "$defs", "allOf", "anyOf", "examples", "title", "description")
    }
    envelope["allOf"] = [definition]
    return _compile(envelope)


def _compile(schema: dict[str, Any]) -> Validator:
    schema["$schema"] = _DRAFT7
    compiled: Validator = fastjsonschema.compile(schema, use_formats=False, use_default=False)
    return compiled
