"""The schema files: valid 2020-12, examples valid in both validators, docs in sync."""

from __future__ import annotations

import doctest
from types import ModuleType
from typing import Any

import fastjsonschema
import jsonschema
import orjson
import pytest

from schemas import decode, docs, registry
from schemas.decode import DecodedEvent, Reason, decode_source_event
from schemas.registry import (
    SCHEMA_NAMES,
    SOURCES,
    UnknownSchemaError,
    event_type_schema,
    event_types,
    examples,
    load_schema,
    required_identity,
    validator,
)
from tests.kit import DAY_MS, ROOT, at, ev

NOW = 1_767_605_400_000 + 30 * DAY_MS  # a month after the examples' event times

EXAMPLE_CASES = [(name, i, ex) for name in SCHEMA_NAMES for i, ex in enumerate(examples(name))]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["description"]
    assert schema["examples"]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_files_are_package_data(name: str) -> None:
    assert (ROOT / "schemas" / f"{name}.json").is_file()


@pytest.mark.parametrize(("name", "index", "example"), EXAMPLE_CASES)
def test_every_example_validates_in_both_validators(
    name: str, index: int, example: dict[str, Any]
) -> None:
    errors = list(jsonschema.Draft202012Validator(load_schema(name)).iter_errors(example))
    assert errors == []
    validator(name)(example)


@pytest.mark.parametrize("source", SOURCES)
def test_every_event_type_is_described_with_an_example(source: str) -> None:
    for event_type in event_types(source):
        definition = event_type_schema(source, event_type)
        assert definition["description"]
        assert [ex["event_type"] for ex in definition["examples"]] == [event_type]


@pytest.mark.parametrize(
    ("name", "index", "example"), [case for case in EXAMPLE_CASES if case[0] in SOURCES]
)
def test_every_source_example_decodes_as_accepted(
    name: str, index: int, example: dict[str, Any]
) -> None:
    decoded = decode_source_event(orjson.dumps(example), name, NOW)
    assert isinstance(decoded, DecodedEvent), decoded
    canonical = decoded.to_canonical(decoded.customer_id or "C-resolved", NOW)
    validator("customer-events")(canonical)


def test_dead_letter_reasons_match_the_code() -> None:
    schema = load_schema("dead-letters")
    codes = [option["const"] for option in schema["properties"]["reason"]["oneOf"]]
    assert codes == [str(reason) for reason in Reason]


def test_event_types_follow_the_contract() -> None:
    assert event_types("web") == (
        "page_view", "session_started", "search", "login", "goal_completed",
    )  # fmt: skip
    assert event_types("email") == (
        "sent", "delivered", "opened", "clicked", "bounced", "unsubscribed",
    )  # fmt: skip
    assert event_types("crm") == (
        "profile_updated", "order_placed", "order_refunded", "subscription_started",
        "subscription_cancelled", "payment_late", "customer_erased",
    )  # fmt: skip
    assert event_types("support") == (
        "ticket_opened", "ticket_resolved", "escalated", "satisfaction_rated",
        "survey_answered",
    )  # fmt: skip
    assert required_identity("web")["login"] == ("customer_id", "anonymous_id")
    assert required_identity("crm")["profile_updated"] == ("customer_id",)
    assert required_identity("crm")["customer_erased"] == ("customer_id",)


def test_registry_accepts_role_names_and_rejects_unknown() -> None:
    assert load_schema("dead_letters") == load_schema("dead-letters")
    with pytest.raises(UnknownSchemaError):
        load_schema("nope")
    with pytest.raises(UnknownSchemaError):
        event_types("customer-events")


def test_load_schema_returns_independent_copies() -> None:
    load_schema("web")["title"] = "mutated"
    assert load_schema("web")["title"] != "mutated"


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("alerts", {**examples("alerts")[0], "severity": "apocalyptic"}),
        ("alerts", {**examples("alerts")[0], "factors": [{"name": "x"}]}),
        ("score-changes", {**examples("score-changes")[0], "changed": {}}),
        ("score-changes", {**examples("score-changes")[0], "changed": {"tier": {"new": "vip"}}}),
        ("customer-events", {**examples("customer-events")[0], "occurred_at": "2026-01-01"}),
        ("customer-events", {**examples("customer-events")[0], "surprise": 1}),
        ("dead-letters", {**examples("dead-letters")[0], "reason": "bad_vibes"}),
    ],
)
def test_output_schemas_reject_malformed_records(name: str, bad: dict[str, Any]) -> None:
    """Both validators agree that these break the contract."""
    assert list(jsonschema.Draft202012Validator(load_schema(name)).iter_errors(bad))
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validator(name)(bad)


def test_committed_events_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert committed == docs.render(), "regenerate: python -m schemas.docs > docs/events.md"


@pytest.mark.parametrize("module", [registry, decode])
def test_module_doctests(module: ModuleType) -> None:
    """schemas/ is outside pytest's doctest paths; its examples must still hold."""
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0
    assert failures == 0


def _shape(value: Any) -> Any:
    """The keys of a JSON value, recursively (list items by their first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


@pytest.mark.parametrize("name", ["score-changes", "alerts"])
def test_output_examples_have_the_shape_of_a_real_scorecard(name: str) -> None:
    """The scorecard is owned by models/, not the schema: the examples must keep up with it."""
    from models.scoring.engine import ScoringEngine

    orders = [ev(f"o{k}", "order_placed", 10 + k, amount=50.0) for k in range(2)]
    card = ScoringEngine().apply_batch(None, orders, watermark_ms=at(11)).scorecard
    assert card is not None
    real = orjson.loads(orjson.dumps(card.to_dict()))
    real["churn"]["factors"] = [  # an untrained model names none
        {"name": "tickets_90d", "label": "support tickets in the last 90 days: high",
         "contribution": 0.4}]
    example = examples(name)[0]
    assert _shape(example["scorecard"]) == _shape(real)
    if name == "alerts":
        assert _shape(example["factors"]) == _shape(real["churn"]["factors"])
