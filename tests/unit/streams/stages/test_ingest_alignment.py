"""The ingest handler with event-time alignment, without a broker: what it sends, in which
order, for records of several source partitions."""

from __future__ import annotations

from typing import cast

import orjson
from confluent_kafka import Message

from streams.metrics import Metrics
from streams.runtime.stage import Output
from streams.runtime.tables import Table
from streams.settings import Settings
from streams.stages.ingest import IngestHandler
from tests.kit import DAY_MS, T0, FakeMessage, raw_ev

SETTINGS = Settings()
EMAIL, CRM = SETTINGS.topics["email"], SETTINGS.topics["crm"]


def _batch(handler: IngestHandler, topic: str, values: list[bytes], caught_up: set[
        tuple[str, int]]) -> list[tuple[str, dict[str, object]]]:
    """One batch of partition 0 of `topic`; the (topic, message) pairs sent, in order."""
    out = Output()
    messages = [FakeMessage(v, n, key=None, topic=topic) for n, v in enumerate(values)]
    table = Table("ingest", "memory://", None)  # type: ignore[arg-type]
    handler.handle(0, cast("list[Message]", messages), table, out)
    handler.finish(table, out, lambda: caught_up)
    return [(topic, orjson.loads(value)) for topic, _key, value, _p in out.records
            if value is not None and b'"tick"' not in value]


def test_an_alias_only_event_waits_its_turn_behind_the_link_that_resolves_it() -> None:
    """The email partition delivers a campaign email of day 3 that names only an address
    first; the crm profile update that links the address to its customer (day 1) comes later
    from another partition. The email must not go out before the link, or the identity stage
    holds it waiting for a link it has already missed."""
    handler = IngestHandler(SETTINGS, Metrics())
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])
    email = raw_ev("e-1", "opened", source="email", occurred_at=T0 + 3 * DAY_MS,
                   email="c1@example.com", payload={})
    profile = raw_ev("c-1", "profile_updated", source="crm", occurred_at=T0 + DAY_MS,
                     customer_id="C1", payload={"fields": {"email": "c1@example.com"}})
    assert _batch(handler, EMAIL, [email], caught_up=set()) == []  # crm may deliver earlier
    sent = _batch(handler, CRM, [profile], caught_up={(EMAIL, 0), (CRM, 0)})
    ops = [(message.get("op"), message.get("event_id") or message.get("event", {}).get(
        "event_id")) for _topic, message in sent if "op" in message]
    assert ops == [("link", "c-1"), ("event", "e-1")]
    # and the identity messages carry their own event time, not the newest read
    stamps = [message["watermark"] for _topic, message in sent if "op" in message]
    assert stamps == [T0 + DAY_MS, T0 + 3 * DAY_MS]


def _consumed(metrics: Metrics, source: str) -> float:
    return float(metrics.events_consumed.labels(source)._value.get())


def test_a_held_record_counts_when_it_goes_out_once_however_often_it_is_read() -> None:
    """Records the aligner holds are not done: their offsets are not committed, and after an
    abort or a rebalance they are read again. They count when they are released with the
    batch that commits them, so a record read twice counts once."""
    metrics = Metrics()
    handler = IngestHandler(SETTINGS, metrics)
    handler.pace_inputs([(EMAIL, 0), (CRM, 0)])
    opened = [raw_ev(f"e-{n}", "opened", source="email", occurred_at=T0 + n * DAY_MS,
                     customer_id="C1", payload={}) for n in range(3)]
    bad = b"not json"
    table = Table("ingest", "memory://", None)  # type: ignore[arg-type]

    def batch(values: list[bytes], caught_up: set[tuple[str, int]]) -> Output:
        out = Output()
        messages = [FakeMessage(v, n, key=None, topic=EMAIL) for n, v in enumerate(values)]
        handler.handle(0, cast("list[Message]", messages), table, out)
        handler.finish(table, out, lambda: caught_up)
        out.tally()  # the batch commits
        return out

    held = batch([*opened, bad], caught_up=set())  # crm has not delivered: all of it waits
    assert [r for r in held.records if b'"tick"' not in (r[2] or b"")] == []
    assert _consumed(metrics, "email") == 0
    assert metrics.dead_letters.labels("invalid_json")._value.get() == 0
    # The transaction aborted: as BatchProcessor rewinds, the partition is dropped (its held
    # records with it) and assigned again, and its records are read again.
    handler.release_input(EMAIL, 0)
    handler.on_revoked(0)
    handler.pace_inputs([(EMAIL, 0)])
    batch([*opened, bad], caught_up={(EMAIL, 0), (CRM, 0)})
    assert _consumed(metrics, "email") == 4
    assert metrics.events_ingested.labels("email", "opened")._value.get() == 3
    assert metrics.dead_letters.labels("invalid_json")._value.get() == 1
