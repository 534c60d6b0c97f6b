"""`scorestream erase CUSTOMER_ID`: the right to erasure, asked for from the command line.

Produces the crm `customer_erased` event an operator would otherwise ask the CRM for, and with
`--wait` waits for the scoring stage's confirmation (streams/stages/erasure.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from models.ingest.erasure import ERASED_EVENT
from schemas.decode import DecodedEvent, decode_source_event
from streams.runtime.kafka import client_config, ensure_topics, producer_config
from streams.runtime.partitioning import partition_for
from streams.settings import Settings

__all__ = ["add_erase_arguments", "erasure_event", "run_erase"]


def add_erase_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scorestream erase`."""
    parser.add_argument("customer_id", help="canonical customer id to erase")
    parser.add_argument("--email", action="append", default=[],
                        help="an email of the customer not linked yet (events held for it are "
                             "discarded too); repeatable")
    parser.add_argument("--anonymous-id", action="append", default=[],
                        help="the same for an anonymous (cookie) id; repeatable")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for the erasure confirmation and print it")


def erasure_event(customer_id: str, emails: list[str], anonymous_ids: list[str],
                  now_ms: int) -> dict[str, Any]:
    """The crm `customer_erased` event of an operator's erasure request."""
    event: dict[str, Any] = {
        "event_id": f"erase-{uuid.uuid4().hex}", "event_type": ERASED_EVENT, "source": "crm",
        "occurred_at": now_ms, "customer_id": customer_id, "payload": {},
    }
    # The envelope holds one alias of each kind; further ones travel as extra requests.
    if emails:
        event["email"] = emails[0]
    if anonymous_ids:
        event["anonymous_id"] = anonymous_ids[0]
    return event


def run_erase(args: argparse.Namespace) -> int:
    """Produce the erasure request(s); with --wait, print the confirmation(s)."""
    settings: Settings = args.settings
    now_ms = int(time.time() * 1000)
    emails, anonymous = list(args.email), list(args.anonymous_id)
    events = [erasure_event(args.customer_id, emails[:1], anonymous[:1], now_ms)]
    for email in emails[1:]:
        events.append(erasure_event(args.customer_id, [email], [], now_ms))
    for anonymous_id in anonymous[1:]:
        events.append(erasure_event(args.customer_id, [], [anonymous_id], now_ms))
    for event in events:
        decoded = decode_source_event(orjson.dumps(event), "crm", now_ms)
        if not isinstance(decoded, DecodedEvent):
            # The reason code only: the message could quote the input.
            print(f"scorestream erase: not a valid erasure request ({decoded.reason.value})",
                  file=sys.stderr)
            return 2
    ensure_topics(settings)
    waiter = _ConfirmationWaiter(settings, args.customer_id) if args.wait > 0 else None
    try:
        _produce(settings, events)
        for event in events:
            print(f"erasure requested: event {event['event_id']} on topic "
                  f"{settings.topics['crm']}")
        if waiter is None:
            return 0
        missing = waiter.wait({e["event_id"] for e in events}, args.wait)
    finally:
        if waiter is not None:
            waiter.close()
    if missing:
        print(f"scorestream erase: no confirmation within {args.wait:.0f}s for "
              f"{', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return 0


def _produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    for event in events:
        producer.produce(settings.topics["crm"], key=event["customer_id"].encode(),
                         value=orjson.dumps(event), on_delivery=on_delivery)
    remaining = producer.flush(30)
    if remaining or failures:
        raise RuntimeError(f"erasure request not delivered: {failures or 'timed out'}")


class _ConfirmationWaiter:
    """Reads the customer's partition of erasure-confirmations from its current end, so only
    confirmations of requests produced after it was created are seen."""

    def __init__(self, settings: Settings, customer_id: str) -> None:
        topic = settings.topics["erasure_confirmations"]
        self.consumer = Consumer({**client_config(settings),
                                  "group.id": f"scorestream-erase-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        partition = partition_for(customer_id.encode(), len(metadata.partitions))
        _low, high = self.consumer.get_watermark_offsets(
            KafkaPartition(topic, partition), timeout=30)
        self.consumer.assign([KafkaPartition(topic, partition, high if high >= 0 else OFFSET_END)])

    def wait(self, erasure_ids: set[str], timeout: float) -> set[str]:
        """Print each awaited confirmation as it arrives; return the ids still missing."""
        missing = set(erasure_ids)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            record = orjson.loads(msg.value() or b"{}")
            if record.get("erasure_event_id") in missing:
                missing.discard(record["erasure_event_id"])
                print(orjson.dumps(record).decode())
        return missing

    def close(self) -> None:
        self.consumer.close()
