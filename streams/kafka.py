"""Thin confluent-kafka plumbing: client configs and the topics scorestream owns.

Kept in one place so that every client gets the same bootstrap and partitioner, and so that a
newcomer finds every topic's partition count and retention policy in one table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic scorestream creates if it is missing, with its configs."""

    name: str
    partitions: int
    config: dict[str, str]


def client_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """Base librdkafka config for every confluent-kafka client scorestream creates."""
    return {"bootstrap.servers": settings.kafka_bootstrap}


def producer_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """Producer config: murmur2 keys land on the same partitions as Faust (Java) expects."""
    return {
        **client_config(settings),
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "enable.idempotence": True,
        "compression.type": "lz4",
    }


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic scorestream reads or writes, with partitions and retention policy."""
    topics = settings.topics
    parts = settings.partitions
    delete_7d = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    delete_30d = {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
    compact = {"cleanup.policy": "compact"}
    specs = [TopicSpec(topics[source], parts, delete_7d) for source in settings.source_topics]
    specs += [
        TopicSpec(topics["customer_events"], parts, delete_7d),
        TopicSpec(topics["score_changes"], parts, compact),
        TopicSpec(topics["alerts"], parts, delete_30d),
        TopicSpec(topics["dead_letters"], parts, delete_30d),
        # Alias-keyed re-key topic of the identity stage: needed only until consumed (held
        # events and links live in table changelogs), so the source topics' retention.
        TopicSpec(topics["identity"], parts, delete_7d),
        # One partition: exactly one worker of the group runs the learner.
        TopicSpec(topics["training_examples"], 1, delete_7d),
        TopicSpec(topics["model_snapshots"], 1, compact),
        # Table changelogs are co-partitioned with the topic their stage consumes.
        TopicSpec(settings.changelog_topic("customer-state"), parts, compact),
        TopicSpec(settings.changelog_topic("learner"), 1, compact),
        TopicSpec(settings.changelog_topic("identity-links"), parts, compact),
        TopicSpec(settings.changelog_topic("identity-held"), parts, compact),
    ]
    return specs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left as they are."""
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as err:
        raise RuntimeError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} "
            f"(SCORESTREAM_KAFKA_BOOTSTRAP): {err}"
        ) from err
    missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(spec.name, spec.partitions, settings.replication_factor, config=spec.config)
            for spec in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as err:
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise
    log.info("created topics: %s", ", ".join(sorted(created)))
    return created
