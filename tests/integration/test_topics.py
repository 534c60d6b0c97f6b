"""Topic creation on the real broker: partitions and retention from the settings, and the
refusal to start on topics with another partition count."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from schemas.units import DAY_MS
from streams.runtime.kafka import check_partitions, ensure_topics, topic_specs
from streams.settings import TOPIC_ROLES, KafkaSettings, Settings, SettingsError
from tests.kit import ROOT

pytestmark = pytest.mark.integration


def _settings(bootstrap: str, name: str, **values: float) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap=bootstrap), app_id=f"app-{name}",
                    topics={role: f"{name}-{role}" for role in TOPIC_ROLES},
                    **values)  # type: ignore[arg-type]


def _retention_ms(admin: AdminClient, topic: str) -> int:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return int(entries["retention.ms"].value)


def test_created_topics_have_the_configured_partitions_and_retention(
    kafka_bootstrap: str, unique_name: str
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=3, retention_days=2,
                         output_retention_days=10)
    created = ensure_topics(settings)
    assert sorted(created) == sorted(spec.name for spec in topic_specs(settings))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    described = admin.list_topics(timeout=30).topics
    assert len(described[settings.topics["customer_events"]].partitions) == 3
    assert len(described[settings.topics["training_examples"]].partitions) == 1
    assert _retention_ms(admin, settings.topics["customer_events"]) == 2 * DAY_MS
    assert _retention_ms(admin, settings.topics["web"]) == 2 * DAY_MS
    assert _retention_ms(admin, settings.topics["alerts"]) == 10 * DAY_MS
    assert _retention_ms(admin, settings.topics["dead_letters"]) == 10 * DAY_MS
    assert ensure_topics(settings) == []  # a restart creates nothing


def test_a_worker_refuses_topics_with_another_partition_count(
    kafka_bootstrap: str, unique_name: str
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=3)
    ensure_topics(settings)
    check_partitions(settings)  # as created
    changed = dataclasses.replace(settings, partitions=4)
    assert ensure_topics(changed) == []  # existing topics are left as they are ...
    with pytest.raises(SettingsError, match=(  # ... but a worker refuses them
            rf"SCORESTREAM_PARTITIONS is 4, but {unique_name}-customer_events has 3; .*"
            r"customer-state-changelog has 3")):
        check_partitions(changed)


def test_the_topics_command_names_the_mismatch_without_a_traceback(
    kafka_bootstrap: str, unique_name: str
) -> None:
    settings = _settings(kafka_bootstrap, unique_name, partitions=3)
    ensure_topics(settings)
    env = {**os.environ, "SCORESTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SCORESTREAM_APP_ID": settings.app_id, "SCORESTREAM_PARTITIONS": "4",
           **{f"SCORESTREAM_TOPIC_{role.upper()}": name
              for role, name in settings.topics.items()}}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "topics"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "configuration error: SCORESTREAM_PARTITIONS is 4" in done.stderr
    assert "Traceback" not in done.stderr
