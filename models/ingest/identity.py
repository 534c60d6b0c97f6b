"""Identity resolution: deterministic alias -> customer id links, and events waiting for one.

Source systems do not share customer numbers; they share aliases. A CRM `profile_updated`
links an email to a customer id and a web `login` links an anonymous (cookie) id. An event
that carries only aliases is attributed through those links; when none of its aliases is
linked yet it is *held* until a link arrives, then released in arrival order. Holding is
bounded in count (`max_held`) and in event time (`max_hold_ms` past the moment it was held);
what falls off either bound comes back as an `Eviction`, which ingestion dead-letters as
`unresolved_identity`, so nothing is dropped silently.

Links are deterministic whatever order events arrive in: for one alias the link with the
latest event time wins, ties going to the larger customer id, so a replay ends in the same
links as live processing did.

Durability and partitioning (for the streaming shell):

- Links are state keyed by `alias_key(kind, alias)` ('email:ann@example.com'); `Link.to_record`
  / `Link.from_record` are the table value. Store them in a changelog-backed table keyed by
  alias: create the resolver with `track_changes=True`, write `drain_changes()` (key, record,
  or None for a deletion) to the table after each event. Either load the whole table at start
  (`load_links()`), or, when the table is the source of truth and partitions move between
  workers, `adopt()` each message's key from the table before handling it and `clear_links()`
  after (what `models.ingest.routing.IdentityPartition` does). `snapshot()` / `restore()` cover
  links and held events together (for replays and for rebuilding held events from a table).
- Route by alias, not by the source producer's key: publish link updates and alias-only
  events keyed by the routing alias key (email when present, else anonymous id; see
  `routing_alias`) onto a topic co-partitioned with the links table. Then the resolver that
  owns an alias's link is also the one holding that alias's waiting events, whichever worker
  runs the partition after a rebalance. In that setting, resolve and hold with the routing
  alias only; a single-process resolver (tests, replay) can use all of an event's aliases.
  So an event carrying both an email and an anonymous id waits for its email's link only.
- Erasure: `forget(customer_id)` drops every link to that customer this resolver knows and
  the held events waiting on the given aliases. When links are spread over alias partitions,
  send `unlink(kind, alias)` for each alias of the erased customer to its alias partition.

>>> resolver = IdentityResolver(max_held=100, max_hold_ms=60_000)
>>> resolver.resolve([("email", "ann@example.com")]) is None
True
>>> resolver.hold([("email", "ann@example.com")], {"event_id": "s-1"}, now=1_000)
[]
>>> released = resolver.link("email", "Ann@Example.com", "C42", event_time=2_000)
>>> [(r.customer_id, r.event.item["event_id"]) for r in released]
[('C42', 's-1')]
>>> resolver.lookup("email", "ann@example.com")
'C42'
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from schemas.units import DAY_MS

__all__ = [
    "ALIAS_KINDS",
    "Eviction",
    "Forgotten",
    "HeldEvent",
    "IdentityResolver",
    "Link",
    "Release",
    "alias_key",
    "routing_alias",
]

ALIAS_KINDS: tuple[str, ...] = ("email", "anonymous_id")
"""Alias kinds, in routing preference order (email is the key shared across systems)."""


def alias_key(alias_kind: str, alias: str) -> str:
    """Table key of an alias: its kind and normalised value (emails match case-insensitively)."""
    if alias_kind not in ALIAS_KINDS:
        raise ValueError(f"unknown alias kind {alias_kind!r}; known: {', '.join(ALIAS_KINDS)}")
    if alias_kind == "email":
        alias = alias.strip().lower()
    return f"{alias_kind}:{alias}"


def routing_alias(aliases: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The alias that decides an alias-only event's partition: email first, then anonymous id."""
    by_kind = dict(aliases)
    for kind in ALIAS_KINDS:
        if kind in by_kind:
            return kind, by_kind[kind]
    return None


@dataclass(frozen=True, slots=True)
class Link:
    """One alias -> customer id link, with the event time and event that established it."""

    alias_kind: str
    alias: str
    customer_id: str
    linked_at: int
    event_id: str | None = None
    since: int | None = None
    """The earliest event time of a link of the alias to this customer (it has been theirs
    since; None: `linked_at`)."""

    @property
    def first(self) -> int:
        """Since when (event time) the alias has been this customer's."""
        return self.linked_at if self.since is None else min(self.since, self.linked_at)

    @property
    def key(self) -> str:
        """The table key: `alias_key(alias_kind, alias)`."""
        return alias_key(self.alias_kind, self.alias)

    def supersedes(self, other: Link) -> bool:
        """Whether this link replaces `other` for the same alias (latest event time wins)."""
        return (self.linked_at, self.customer_id) > (other.linked_at, other.customer_id)

    def to_record(self) -> dict[str, Any]:
        """JSON-able table value."""
        return {
            "alias_kind": self.alias_kind,
            "alias": self.alias,
            "customer_id": self.customer_id,
            "linked_at": self.linked_at,
            "event_id": self.event_id,
            **({"since": self.since} if self.since is not None else {}),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Link:
        """Inverse of `to_record`."""
        return cls(
            alias_kind=record["alias_kind"],
            alias=record["alias"],
            customer_id=record["customer_id"],
            linked_at=int(record["linked_at"]),
            event_id=record.get("event_id"),
            since=int(record["since"]) if record.get("since") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """An event waiting for one of its aliases to be linked.

    `item` is the caller's JSON-able record of the event (ingestion keeps the decoded event and
    where it came from, so an eviction can still be dead-lettered with the original bytes).
    """

    seq: int
    alias_keys: tuple[str, ...]
    held_at: int
    item: dict[str, Any] = field(compare=False)

    def to_record(self) -> dict[str, Any]:
        """JSON-able form; inverse of `from_record`."""
        return {
            "seq": self.seq,
            "alias_keys": list(self.alias_keys),
            "held_at": self.held_at,
            "item": self.item,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HeldEvent:
        """Inverse of `to_record`."""
        return cls(
            int(record["seq"]), tuple(record["alias_keys"]), int(record["held_at"]), record["item"]
        )


class Release(NamedTuple):
    """A held event whose alias got linked, and the customer it belongs to."""

    customer_id: str
    event: HeldEvent


class Eviction(NamedTuple):
    """A held event given up on, and why (for the dead letter's message)."""

    event: HeldEvent
    why: str


class Forgotten(NamedTuple):
    """What an erasure removed: link keys (delete them from the table) and discarded events."""

    link_keys: list[str]
    held: list[HeldEvent]


class IdentityResolver:
    """Alias -> customer id links learned from events, and bounded holding of alias-only events.

    Pure and synchronous: time is event time passed in by the caller (`now`, `event_time`).
    """

    def __init__(
        self,
        *,
        max_held: int = 10_000,
        max_hold_ms: int = DAY_MS,
        track_changes: bool = False,
    ) -> None:
        if max_held < 0 or max_hold_ms < 0:
            raise ValueError("max_held and max_hold_ms must be >= 0")
        self.max_held = max_held
        self.max_hold_ms = max_hold_ms
        self.track_changes = track_changes
        self._links: dict[str, Link] = {}
        self._by_customer: dict[str, set[str]] = {}
        self._held: OrderedDict[int, HeldEvent] = OrderedDict()
        self._waiting: dict[str, dict[int, None]] = {}  # alias key -> ordered set of seqs
        self._changes: list[tuple[str, dict[str, Any] | None]] = []
        self._seq = 0
        self._clock = 0

    # -- links -----------------------------------------------------------------------------

    def lookup(self, alias_kind: str, alias: str) -> str | None:
        """Customer id linked to the alias, or None."""
        link = self._links.get(alias_key(alias_kind, alias))
        return None if link is None else link.customer_id

    def resolve(self, aliases: Iterable[tuple[str, str]]) -> str | None:
        """Customer id of the first linked alias among (kind, alias) pairs, or None."""
        link = self.resolve_link(aliases)
        return None if link is None else link.customer_id

    def resolve_link(self, aliases: Iterable[tuple[str, str]]) -> Link | None:
        """The link of the first linked alias among (kind, alias) pairs, or None."""
        for kind, alias in aliases:
            link = self._links.get(alias_key(kind, alias))
            if link is not None:
                return link
        return None

    def link(
        self,
        alias_kind: str,
        alias: str,
        customer_id: str,
        *,
        event_time: int,
        event_id: str | None = None,
    ) -> list[Release]:
        """Learn a link; return the events that were waiting on the alias, oldest first."""
        new = Link(alias_kind, alias, customer_id, event_time, event_id)
        key = new.key
        current = self._links.get(key)
        if current is not None and current.customer_id == customer_id:
            # The same customer again (or an earlier link of it, arriving late): it has been
            # theirs since the earliest of the two.
            first = min(current.first, event_time)
            if new.supersedes(current):
                self._store(key, replace(new, since=first))
            elif first < current.first:
                self._store(key, replace(current, since=first))
        elif current is None or new.supersedes(current):
            self._store(key, new)
        return [Release(self._links[key].customer_id, held) for held in self._take_waiting(key)]

    def unlink(self, alias_kind: str, alias: str) -> bool:
        """Remove one alias's link (erasure routed to the alias partition); True if it existed."""
        key = alias_key(alias_kind, alias)
        if key not in self._links:
            return False
        self._drop(key)
        return True

    def links(self) -> Iterator[Link]:
        """Every link known, in no particular order."""
        return iter(list(self._links.values()))

    def aliases_of(self, customer_id: str) -> list[str]:
        """Alias keys currently linked to a customer (sorted)."""
        return sorted(self._by_customer.get(customer_id, ()))

    def load_links(self, records: Iterable[dict[str, Any]]) -> None:
        """Restore links from table values (e.g. a recovered changelog table); not tracked."""
        for record in records:
            new = Link.from_record(record)
            current = self._links.get(new.key)
            if current is None or new.supersedes(current):
                self._store(new.key, new, track=False)

    def adopt(self, key: str, record: dict[str, Any] | None) -> None:
        """Make one alias key's link what durable storage says (None: not linked); not tracked.

        For a resolver whose links live in a table (the table is the source of truth): adopt
        the key of each message before handling it, so a link changed by another worker that
        owned the partition in between is never shadowed by a stale copy here.
        """
        if key in self._links:
            link = self._links.pop(key)
            self._unindex(key, link.customer_id)
        if record is not None:
            self._store(key, Link.from_record(record), track=False)

    def clear_links(self) -> None:
        """Forget every link (not tracked): drop a table-backed resolver's scratch copies."""
        self._links.clear()
        self._by_customer.clear()

    def drain_changes(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Link changes since the last drain: (key, record) or (key, None) for a deletion."""
        changes, self._changes = self._changes, []
        return changes

    def _store(self, key: str, link: Link, *, track: bool = True) -> None:
        old = self._links.get(key)
        if old is not None:
            self._unindex(key, old.customer_id)
        self._links[key] = link
        self._by_customer.setdefault(link.customer_id, set()).add(key)
        if track and self.track_changes:
            self._changes.append((key, link.to_record()))

    def _drop(self, key: str) -> None:
        link = self._links.pop(key)
        self._unindex(key, link.customer_id)
        if self.track_changes:
            self._changes.append((key, None))

    def _unindex(self, key: str, customer_id: str) -> None:
        keys = self._by_customer.get(customer_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_customer[customer_id]

    # -- held events -----------------------------------------------------------------------

    @property
    def held_count(self) -> int:
        """Number of events currently waiting."""
        return len(self._held)

    def held(self) -> Iterator[HeldEvent]:
        """Waiting events, oldest first."""
        return iter(list(self._held.values()))

    @property
    def last_held(self) -> HeldEvent | None:
        """The most recently held event still waiting (what a held-events table stores)."""
        return next(reversed(self._held.values()), None)

    def hold(
        self, aliases: Iterable[tuple[str, str]], item: dict[str, Any], *, now: int
    ) -> list[Eviction]:
        """Park an event until one of its aliases is linked; return what the count bound pushed out.

        `now` is the caller's event-time clock; the resolver keeps the highest value seen, so
        hold deadlines never go backwards.
        """
        keys = tuple(dict.fromkeys(alias_key(kind, alias) for kind, alias in aliases))
        if not keys:
            raise ValueError("an event without aliases cannot wait for a link")
        self._clock = max(self._clock, now)
        self._seq += 1
        held = HeldEvent(self._seq, keys, self._clock, item)
        self._held[held.seq] = held
        for key in keys:
            self._waiting.setdefault(key, {})[held.seq] = None
        evicted = []
        while len(self._held) > self.max_held:
            evicted.append(
                Eviction(self._pop_oldest(), f"held-event bound of {self.max_held} reached")
            )
        return evicted

    def evict(self, now: int) -> list[Eviction]:
        """Give up on events held longer than `max_hold_ms` of event time as of `now`."""
        self._clock = max(self._clock, now)
        cutoff = self._clock - self.max_hold_ms
        evicted = []
        while self._held and next(iter(self._held.values())).held_at < cutoff:
            evicted.append(
                Eviction(
                    self._pop_oldest(),
                    f"no link for its aliases within {self.max_hold_ms} ms of event time",
                )
            )
        return evicted

    def flush(self) -> list[Eviction]:
        """Give up on every waiting event, oldest first (end of a replay)."""
        evicted = []
        while self._held:
            evicted.append(Eviction(self._pop_oldest(), "no link for its aliases by end of input"))
        return evicted

    def _pop_oldest(self) -> HeldEvent:
        _, held = self._held.popitem(last=False)
        self._unwait(held)
        return held

    def _take_waiting(self, key: str) -> list[HeldEvent]:
        seqs = self._waiting.pop(key, None)
        if not seqs:
            return []
        taken = []
        for seq in seqs:
            held = self._held.pop(seq, None)
            if held is not None:
                self._unwait(held)
                taken.append(held)
        return taken

    def _unwait(self, held: HeldEvent) -> None:
        for key in held.alias_keys:
            seqs = self._waiting.get(key)
            if seqs is not None:
                seqs.pop(held.seq, None)
                if not seqs:
                    del self._waiting[key]

    # -- erasure and persistence -----------------------------------------------------------

    def forget(self, customer_id: str, aliases: Iterable[tuple[str, str]] = ()) -> Forgotten:
        """Right to erasure: drop the customer's links and the events waiting on its aliases."""
        keys = set(self._by_customer.get(customer_id, ()))
        removed = sorted(keys)
        for key in removed:
            self._drop(key)
        keys.update(alias_key(kind, alias) for kind, alias in aliases)
        discarded: list[HeldEvent] = []
        for key in sorted(keys):
            discarded.extend(self._take_waiting(key))
        discarded.sort(key=lambda held: held.seq)
        return Forgotten(removed, discarded)

    def snapshot(self) -> bytes:
        """The resolver as bytes (JSON); `restore` is its inverse."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def restore(cls, b: bytes, **options: Any) -> IdentityResolver:
        """Rebuild from `snapshot()` bytes; options are the constructor's keyword arguments."""
        return cls.from_dict(orjson.loads(b), **options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: links, waiting events (oldest first) and clocks."""
        return {
            "links": [link.to_record() for link in self._links.values()],
            "held": [held.to_record() for held in self._held.values()],
            "seq": self._seq,
            "clock": self._clock,
        }

    @classmethod
    def from_dict(cls, snapshot: dict[str, Any], **options: Any) -> IdentityResolver:
        """Rebuild from `to_dict()` output; options are the constructor's keyword arguments."""
        resolver = cls(**options)
        resolver.load_links(snapshot["links"])
        resolver._seq = int(snapshot["seq"])
        resolver._clock = int(snapshot["clock"])
        for record in snapshot["held"]:
            held = HeldEvent.from_record(record)
            resolver._held[held.seq] = held
            for key in held.alias_keys:
                resolver._waiting.setdefault(key, {})[held.seq] = None
        return resolver
