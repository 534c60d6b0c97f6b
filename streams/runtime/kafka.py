"""Thin confluent-kafka plumbing: client configs and the topics scorestream owns.

Kept in one place so that every client gets the same bootstrap and partitioner, and so that a
newcomer finds every topic's partition count and retention policy in one table.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from schemas.units import DAY_MS
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "TopicSpec",
    "check_partitions",
    "client_config",
    "co_partitioned",
    "ensure_topics",
    "faust_credentials",
    "producer_config",
    "security_config",
    "ssl_context",
    "topic_specs",
]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TopicSpec:
    """A topic scorestream creates if it is missing, with its configs."""

    name: str
    partitions: int
    config: dict[str, str]


def client_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """Base librdkafka config for every confluent-kafka client scorestream creates: bootstrap
    and security (every consumer, producer and admin client starts from this)."""
    return {"bootstrap.servers": settings.kafka.bootstrap, **security_config(settings)}


def security_config(settings: Settings) -> dict[str, str | int | float | bool]:
    """librdkafka's security properties for the configured protocol (empty for PLAINTEXT).

    The result holds the SASL and key passwords in clear: hand it to a client, never log it.
    """
    protocol = settings.kafka.protocol
    if protocol == "PLAINTEXT":
        return {}
    conf: dict[str, str | int | float | bool] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = settings.kafka.sasl_mechanism.upper()
        conf["sasl.username"] = settings.kafka.sasl_username
        conf["sasl.password"] = settings.kafka.sasl_password.reveal()
    if protocol.endswith("SSL"):
        if settings.kafka.ssl_ca_location:
            conf["ssl.ca.location"] = settings.kafka.ssl_ca_location
        if settings.kafka.ssl_certfile:
            conf["ssl.certificate.location"] = settings.kafka.ssl_certfile
        if settings.kafka.ssl_keyfile:
            conf["ssl.key.location"] = settings.kafka.ssl_keyfile
        if settings.kafka.ssl_key_password:
            conf["ssl.key.password"] = settings.kafka.ssl_key_password.reveal()
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka.ssl_check_hostname else "none")
    return conf


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Faust (aiokafka) clients, from the same settings as librdkafka's."""
    context = ssl.create_default_context(cafile=settings.kafka.ssl_ca_location or None)
    if settings.kafka.ssl_certfile:
        context.load_cert_chain(
            settings.kafka.ssl_certfile, settings.kafka.ssl_keyfile or None,
            password=settings.kafka.ssl_key_password.reveal() or None)
    context.check_hostname = settings.kafka.ssl_check_hostname
    return context


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` for the configured protocol (None for PLAINTEXT): Faust
    hands them to every aiokafka consumer, producer and topic-creating client it makes."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka.protocol
    context = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL_"):
        return SASLCredentials(
            username=settings.kafka.sasl_username,
            password=settings.kafka.sasl_password.reveal(),
            mechanism=settings.kafka.sasl_mechanism.upper(),
            ssl_context=context,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


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
    # Inputs and topics between stages keep `retention_days`; what people and downstream
    # services read later (alerts, dead letters, the erasure audit) `output_retention_days`.
    transit = {"cleanup.policy": "delete",
               "retention.ms": str(int(settings.retention_days * DAY_MS))}
    output = {"cleanup.policy": "delete",
              "retention.ms": str(int(settings.output_retention_days * DAY_MS))}
    compact = {"cleanup.policy": "compact"}
    specs = [TopicSpec(topics[source], parts, transit) for source in settings.source_topics]
    specs += [
        TopicSpec(topics["customer_events"], parts, transit),
        TopicSpec(topics["score_changes"], parts, compact),
        TopicSpec(topics["alerts"], parts, output),
        # Read from its start by every worker for the attribution totals (the API, gauges):
        # its retention is how far back those reach after a restart.
        TopicSpec(topics["attributions"], parts, {
            "cleanup.policy": "delete",
            "retention.ms": str(int(settings.attribution.retention_days * DAY_MS))}),
        # The audit trail of erasures: customer id and counts only, no personal data.
        TopicSpec(topics["erasure_confirmations"], parts, output),
        TopicSpec(topics["dead_letters"], parts, output),
        # Alias-keyed re-key topic of the identity stage: needed only until consumed (held
        # events and links live in table changelogs), so the source topics' retention.
        TopicSpec(topics["identity"], parts, transit),
        # One partition: exactly one worker of the group runs the learner.
        TopicSpec(topics["training_examples"], 1, transit),
        TopicSpec(topics["model_snapshots"], 1, compact),
        # Table changelogs are co-partitioned with the topic their stage consumes.
        TopicSpec(settings.changelog_topic("customer-state"), parts, compact),
        TopicSpec(settings.changelog_topic("learner"), 1, compact),
        TopicSpec(settings.changelog_topic("identity"), parts, compact),
    ]
    return specs


def co_partitioned(settings: Settings) -> list[str]:
    """Topics whose partition is computed from a customer's id with `SCORESTREAM_PARTITIONS`
    (ingest's routing, the scorecard API's owner lookup) or that must match such a topic
    partition for partition (table changelogs)."""
    return [settings.topics["customer_events"], settings.topics["identity"],
            settings.changelog_topic("customer-state"), settings.changelog_topic("identity")]


def check_partitions(settings: Settings, timeout: float = 30.0) -> None:
    """Refuse to start a worker on existing topics with another partition count than
    `SCORESTREAM_PARTITIONS`: customers would be routed to, and looked up in, the wrong
    partitions (and a scorecard request would answer 404 for a known customer)."""
    _admin, described = _connect(settings, timeout)
    names = co_partitioned(settings)
    if settings.identity.merge:  # the identity merge waits for every source partition
        names += list(settings.source_topics.values())
    wrong = [f"{name} has {len(meta.partitions)}" for name in names
             if (meta := described.get(name)) is not None and meta.error is None
             and len(meta.partitions) != settings.partitions]
    if wrong:
        raise SettingsError(
            f"SCORESTREAM_PARTITIONS is {settings.partitions}, but {'; '.join(wrong)} "
            "partitions: set it to the existing topics' count (changing it needs new topics "
            "and a re-keying of the customer events)")


def _connect(settings: Settings, timeout: float) -> tuple[AdminClient, dict[str, TopicMetadata]]:
    """An admin client and the cluster's topics; fails fast and says so when the broker
    refuses our credentials (librdkafka would otherwise retry until the timeout)."""
    auth_errors: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            auth_errors.append(err.str())

    config: dict[str, Any] = {**client_config(settings), "error_cb": on_error}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin, admin.list_topics(timeout=2.0).topics
        except KafkaException as err:
            admin.poll(0)  # serves error_cb: librdkafka reports a refused login there
            if auth_errors:
                raise RuntimeError(
                    f"Kafka at {settings.kafka.bootstrap} refused our credentials "
                    f"(SCORESTREAM_KAFKA_SASL_* / SCORESTREAM_KAFKA_SSL_*): {auth_errors[-1]}"
                ) from err
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"cannot reach Kafka at {settings.kafka.bootstrap} "
                    "(SCORESTREAM_KAFKA_BOOTSTRAP, SCORESTREAM_KAFKA_SECURITY_PROTOCOL): "
                    f"{err}"
                ) from err


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left as they
    are (a worker checks their partitions: `check_partitions`)."""
    admin, existing = _connect(settings, timeout)
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
