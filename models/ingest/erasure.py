"""Right to erasure across the identity stage: the customer -> aliases index, erasures in flight.

Identity links are partitioned by alias key, so no single identity partition knows every alias
of a customer. This module keeps that knowledge in an index keyed by `customer_key(id)`
(`customer:C42`), on the same identity topic and in a table co-partitioned with it. Alias
partitions tell the index about every link they make or move (`index` / `unindex` messages).

One erasure (a crm `customer_erased` event) travels like this:

1. stage 1 (`Ingestion.route`) sends `erase_customer` keyed by the customer key, with the
   canonical event and the alias keys the event itself names;
2. the customer's `ErasureCoordinator` sends `erase` to every alias key in the index plus the
   named ones (each keyed by its alias key) and records the erasure as pending;
3. each alias partition drops the alias's link (when it points to that customer) and the events
   held for the alias, and answers `erased_alias` keyed by the customer key;
4. once every alias has answered, the coordinator deletes the index entry and releases the
   erasure event to customer-events, with what was removed in its payload (`erasure`);
5. the scoring stage deletes the customer's state and emits the confirmation
   (`confirmation_record`), so a confirmation always follows the removal of every link.

Messages are at least once (a redelivered record is handled again): `erase` is idempotent, a
repeated `erase_customer` re-sends the erases still pending, and an answer to no pending erasure
is ignored. Index entries may name aliases that have since moved to another customer; the alias
partition only drops a link that points to the customer being erased.

>>> coordinator, table = ErasureCoordinator(), {}
>>> def send(message):
...     origin = Origin("identity-events", 0, None, customer_key("C1").encode(),
...                     orjson.dumps(message))
...     out = coordinator.handle(origin, table, 0)
...     table.update(out.index_changes)
...     return out
>>> _ = send(index_message("C1", "email:ann@example.com"))
>>> erasure = {"event_id": "c-9", "event_type": "customer_erased", "source": "crm",
...            "occurred_at": 5, "customer_id": "C1", "payload": {}}
>>> out = send(erase_customer_message(erasure, ["anonymous_id:a-2"], watermark=5))
>>> [(key, m["op"]) for key, m in out.identity]
[('anonymous_id:a-2', 'erase'), ('email:ann@example.com', 'erase')]
>>> _ = send(erased_alias_message("C1", "c-9", "anonymous_id:a-2", False, 1))
>>> out = send(erased_alias_message("C1", "c-9", "email:ann@example.com", True, 0))
>>> out.accepted[0]["payload"]["erasure"], table[customer_key("C1")]
({'identity_links_removed': 1, 'held_events_discarded': 1, 'aliases_erased': 2}, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.ingest.identity import ALIAS_KINDS
from schemas.decode import DeadLetter, Origin, Reason

__all__ = [
    "CUSTOMER_OPS",
    "CUSTOMER_PREFIX",
    "ERASED_EVENT",
    "CoordinatorCounters",
    "CoordinatorResult",
    "ErasureCoordinator",
    "alias_erase_message",
    "confirmation_record",
    "customer_key",
    "erase_customer_message",
    "erased_alias_message",
    "index_message",
    "is_customer_key",
    "split_alias_key",
    "unindex_message",
]

CUSTOMER_PREFIX = "customer:"
"""Key prefix of the index's messages and records (alias keys start with an alias kind)."""

CUSTOMER_OPS = ("index", "unindex", "erase_customer", "erased_alias")
"""Kinds of customer-keyed identity-topic message (field `op`)."""

ERASED_EVENT = "customer_erased"


def customer_key(customer_id: str) -> str:
    """Identity-topic key and index-table key of a customer."""
    return f"{CUSTOMER_PREFIX}{customer_id}"


def is_customer_key(key: bytes | None) -> bool:
    """Whether an identity-topic record is for the customer index (not for an alias)."""
    return key is not None and key.startswith(CUSTOMER_PREFIX.encode())


def split_alias_key(key: str) -> tuple[str, str]:
    """(kind, alias) of an alias key: the inverse of `models.ingest.identity.alias_key`."""
    kind, sep, alias = key.partition(":")
    if not sep or kind not in ALIAS_KINDS or not alias:
        raise ValueError(f"not an alias key: {key!r}")
    return kind, alias


# -- messages --------------------------------------------------------------------------------


def index_message(customer_id: str, alias_key: str) -> dict[str, Any]:
    """An alias got linked to the customer: add it to the customer's index."""
    return {"op": "index", "customer_id": customer_id, "alias_key": alias_key}


def unindex_message(customer_id: str, alias_key: str) -> dict[str, Any]:
    """An alias's link moved away from the customer: drop it from the customer's index."""
    return {"op": "unindex", "customer_id": customer_id, "alias_key": alias_key}


def erase_customer_message(
    event: dict[str, Any], named: list[str], watermark: int
) -> dict[str, Any]:
    """Stage 1's message for a canonical `customer_erased` event and the alias keys it names."""
    return {
        "op": "erase_customer",
        "customer_id": event["customer_id"],
        "erasure_id": event["event_id"],
        "event": event,
        "aliases": sorted(set(named)),
        "watermark": watermark,
    }


def alias_erase_message(
    alias_key: str, customer_id: str, erasure_id: str, watermark: int
) -> dict[str, Any]:
    """The `erase` message an alias partition handles (`IdentityPartition`), with the erasure
    it belongs to so the partition answers with `erased_alias`."""
    kind, alias = split_alias_key(alias_key)
    return {
        "op": "erase",
        "alias_kind": kind,
        "alias": alias,
        "customer_id": customer_id,
        "erasure_id": erasure_id,
        "watermark": watermark,
    }


def erased_alias_message(
    customer_id: str, erasure_id: str, alias_key: str, link_removed: bool, held_discarded: int
) -> dict[str, Any]:
    """An alias partition's answer: the alias is erased (its link, and events held for it)."""
    return {
        "op": "erased_alias",
        "customer_id": customer_id,
        "erasure_id": erasure_id,
        "alias_key": alias_key,
        "link_removed": link_removed,
        "held_discarded": held_discarded,
    }


def confirmation_record(
    event: dict[str, Any], state_removed: bool, confirmed_at: int
) -> dict[str, Any]:
    """The erasure-confirmations record for one erasure event that reached the scoring stage.

    Counts only: the confirmation must not carry the personal data it confirms is gone.
    """
    summary = event.get("payload", {}).get("erasure", {})
    return {
        "customer_id": event["customer_id"],
        "erasure_event_id": event["event_id"],
        "source": event["source"],
        "requested_at": event["occurred_at"],
        "confirmed_at": confirmed_at,
        "customer_state_removed": state_removed,
        "identity_links_removed": int(summary.get("identity_links_removed", 0)),
        "held_events_discarded": int(summary.get("held_events_discarded", 0)),
        "aliases_erased": int(summary.get("aliases_erased", 0)),
    }


# -- the coordinator -------------------------------------------------------------------------


@dataclass(slots=True)
class CoordinatorResult:
    """What one customer-keyed message produced.

    `index_changes` are (customer key, record or None to delete) for the index table;
    `identity` are (key, message) for the identity topic; `accepted` go to customer-events
    keyed by customer id; `dead` to dead-letters.
    """

    index_changes: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    identity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class CoordinatorCounters:
    """Running totals of one worker's coordinator."""

    started: int = 0
    completed: int = 0
    stale: int = 0
    """Answers and repeats that matched no pending erasure (at-least-once redeliveries)."""
    invalid: int = 0


class ErasureCoordinator:
    """The customer-keyed side of the identity stage (see module docstring).

    Stateless but for counters: the index table passed to `handle` is the source of truth, so
    any worker that owns the partition continues where another left off.
    """

    def __init__(self) -> None:
        self.counters = CoordinatorCounters()

    def handle(self, origin: Origin, index: Mapping[str, dict[str, Any]], now_ms: int
               ) -> CoordinatorResult:
        """Handle one customer-keyed identity-topic record. Never raises for any bytes."""
        value, key = origin.value, origin.key
        result = CoordinatorResult()
        try:
            message = _parse(value, key)
        except ValueError as err:
            self.counters.invalid += 1
            letter = DeadLetter(Reason.INTERNAL_ERROR, f"bad customer-index message: {err}")
            result.dead.append(letter.to_record(origin, now_ms))
            return result
        customer_id = message["customer_id"]
        ckey = customer_key(customer_id)
        stored = index.get(ckey)
        record = _copy(stored) if stored is not None else _empty(customer_id)
        op = message["op"]
        if op == "index":
            if message["alias_key"] not in record["aliases"]:
                record["aliases"] = sorted({*record["aliases"], message["alias_key"]})
                result.index_changes.append((ckey, record))
        elif op == "unindex":
            if message["alias_key"] in record["aliases"]:
                record["aliases"] = [a for a in record["aliases"] if a != message["alias_key"]]
                result.index_changes.append((ckey, _or_none(record)))
        elif op == "erase_customer":
            self._start(record, message, result)
        else:
            self._answer(record, message, result)
        return result

    def _start(self, record: dict[str, Any], message: dict[str, Any],
               result: CoordinatorResult) -> None:
        ckey = customer_key(record["customer_id"])
        erasure = record["erasure"]
        targets = sorted({*record["aliases"], *message["aliases"]})
        if erasure is None:
            erasure = record["erasure"] = {
                "erasure_id": message["erasure_id"], "events": [message["event"]],
                "pending": targets, "aliases_erased": len(targets),
                "links_removed": 0, "held_discarded": 0,
            }
            # The index's aliases are now being erased; links made from here on are new data
            # and are indexed afresh.
            record["aliases"] = []
            self.counters.started += 1
            send = targets
        elif message["erasure_id"] == erasure["erasure_id"]:
            self.counters.stale += 1
            send = list(erasure["pending"])  # a redelivery: the earlier erases may be lost
        else:
            # A second request while one is in flight joins it; each gets its confirmation.
            if all(e["event_id"] != message["erasure_id"] for e in erasure["events"]):
                erasure["events"].append(message["event"])
            send = [a for a in targets if a not in erasure["pending"]]
            erasure["pending"] = sorted({*erasure["pending"], *send})
            erasure["aliases_erased"] += len(send)
            record["aliases"] = []
        for alias in send:
            result.identity.append((alias, alias_erase_message(
                alias, record["customer_id"], erasure["erasure_id"], int(message["watermark"]))))
        if not erasure["pending"]:
            self._finish(record, result)
        else:
            result.index_changes.append((ckey, record))

    def _answer(self, record: dict[str, Any], message: dict[str, Any],
                result: CoordinatorResult) -> None:
        erasure = record["erasure"]
        alias = message["alias_key"]
        if (erasure is None or erasure["erasure_id"] != message["erasure_id"]
                or alias not in erasure["pending"]):
            self.counters.stale += 1
            return
        erasure["pending"] = [a for a in erasure["pending"] if a != alias]
        erasure["links_removed"] += bool(message["link_removed"])
        erasure["held_discarded"] += int(message["held_discarded"])
        if erasure["pending"]:
            result.index_changes.append((customer_key(record["customer_id"]), record))
        else:
            self._finish(record, result)

    def _finish(self, record: dict[str, Any], result: CoordinatorResult) -> None:
        erasure = record["erasure"]
        summary = {
            "identity_links_removed": erasure["links_removed"],
            "held_events_discarded": erasure["held_discarded"],
            "aliases_erased": erasure["aliases_erased"],
        }
        for event in erasure["events"]:
            payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
            result.accepted.append({**event, "payload": {**payload, "erasure": summary}})
        record["erasure"] = None
        result.index_changes.append((customer_key(record["customer_id"]), _or_none(record)))
        self.counters.completed += 1


def _empty(customer_id: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "aliases": [], "erasure": None}


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    """A deep copy, so a table's stored value is never changed behind its back."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(record))
    return copied


def _or_none(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record, or None (delete it) when it holds nothing any more."""
    return None if not record["aliases"] and record["erasure"] is None else record


def _parse(value: bytes | None, key: bytes | None) -> dict[str, Any]:
    """The message, checked: known op, its fields, and keyed by its customer key."""
    if not value:
        raise ValueError("empty value")
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from err
    if not isinstance(message, dict) or message.get("op") not in CUSTOMER_OPS:
        raise ValueError(f"not an object with op in {', '.join(CUSTOMER_OPS)}")
    op = message["op"]
    customer_id = message.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError(f"{op} message without a customer_id")
    try:
        if op in ("index", "unindex", "erased_alias"):
            split_alias_key(str(message["alias_key"]))
        if op == "erased_alias":
            str(message["erasure_id"])
            bool(message["link_removed"])
            int(message["held_discarded"])
        if op == "erase_customer":
            event = message["event"]
            if not isinstance(event, dict) or event.get("event_type") != ERASED_EVENT:
                raise ValueError("erase_customer without its customer_erased event")
            if event.get("customer_id") != customer_id or event.get("event_id") != message[
                    "erasure_id"]:
                raise ValueError("erase_customer whose event is another customer's or erasure's")
            for alias in message["aliases"]:
                split_alias_key(str(alias))
            int(message["watermark"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{op} message: {type(err).__name__}: {err}") from err
    if key != customer_key(customer_id).encode():
        raise ValueError("keyed by another customer's key (sent to the wrong partition?)")
    return message
