"""One typed settings object, read from SCORESTREAM_* environment variables.

Every knob a deployment may turn lives here with its default, so nothing else in the code reads
os.environ. `Settings.from_env()` fails fast with a message naming the variable at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from models.alerts import AlertConfig

TOPIC_ROLES = (
    "web",
    "email",
    "crm",
    "support",
    "customer_events",
    "score_changes",
    "alerts",
    "dead_letters",
    "training_examples",
    "model_snapshots",
    "identity",
)
SOURCE_ROLES = ("web", "email", "crm", "support")


class SettingsError(ValueError):
    """An environment variable holds a value scorestream cannot use."""


_DEFAULT_TOPIC_NAMES = {"identity": "identity-events"}


def _default_topics() -> dict[str, str]:
    return {role: _DEFAULT_TOPIC_NAMES.get(role, role.replace("_", "-")) for role in TOPIC_ROLES}


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of a scorestream worker (see README, 'Configuration')."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "scorestream"
    topics: Mapping[str, str] = field(default_factory=_default_topics)
    partitions: int = 8
    replication_factor: int = 1
    store: str = "memory://"
    data_dir: Path = Path(".run/worker")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_url: str = ""
    log_level: str = "info"
    batch_size: int = 5000
    batch_within_s: float = 0.05
    max_event_bytes: int = 65536
    identity_max_held: int = 10_000
    identity_max_hold_ms: int = 86_400_000
    alert_churn_risk_on: float = 0.7
    alert_churn_risk_off: float = 0.55
    alert_high_value_churn_on: float = 0.5
    alert_high_value_churn_off: float = 0.4
    alert_cooldown_days: float = 7.0
    alert_tier_cooldown_days: float = 30.0
    change_churn: float = 0.05
    change_points: float = 5.0
    change_money_rel: float = 0.05
    change_interactions: float = 5.0
    model_publish_interval_s: float = 10.0
    model_publish_every: int = 500
    allowed_lateness_days: float = 400.0

    def alert_config(self) -> AlertConfig:
        """Alert and score-change thresholds for the pure AlertRules."""
        day_ms = 86_400_000
        return AlertConfig(
            churn_risk_on=self.alert_churn_risk_on,
            churn_risk_off=self.alert_churn_risk_off,
            high_value_churn_on=self.alert_high_value_churn_on,
            high_value_churn_off=self.alert_high_value_churn_off,
            cooldown_ms=int(self.alert_cooldown_days * day_ms),
            tier_cooldown_ms=int(self.alert_tier_cooldown_days * day_ms),
            change_churn=self.change_churn,
            change_points=self.change_points,
            change_money_rel=self.change_money_rel,
            change_interactions=self.change_interactions,
        )

    def changelog_topic(self, table: str) -> str:
        """The compacted changelog topic of one of the app's tables."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def canonical_url(self) -> str:
        """URL other workers use to reach this one's web server (request routing)."""
        return self.web_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def source_topics(self) -> dict[str, str]:
        """Source name -> topic name for the four source systems."""
        return {role: self.topics[role] for role in SOURCE_ROLES}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from SCORESTREAM_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for spec in fields(cls):
            if spec.name == "topics":
                continue
            var = f"SCORESTREAM_{spec.name.upper()}"
            if var in env:
                values[spec.name] = _convert(var, env[var], spec.type)
        topics = _default_topics()
        for role in TOPIC_ROLES:
            var = f"SCORESTREAM_TOPIC_{role.upper()}"
            if env.get(var):
                topics[role] = env[var]
        settings = cls(topics=topics, **values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject combinations that would fail later in a less readable way."""
        if not self.kafka_bootstrap.strip():
            raise SettingsError("SCORESTREAM_KAFKA_BOOTSTRAP must not be empty")
        if self.partitions < 1:
            raise SettingsError("SCORESTREAM_PARTITIONS must be >= 1")
        if self.batch_size < 1:
            raise SettingsError("SCORESTREAM_BATCH_SIZE must be >= 1")
        if self.identity_max_held < 0 or self.identity_max_hold_ms < 0:
            raise SettingsError(
                "SCORESTREAM_IDENTITY_MAX_HELD and SCORESTREAM_IDENTITY_MAX_HOLD_MS must be >= 0"
            )
        if not 0 <= self.alert_churn_risk_off <= self.alert_churn_risk_on <= 1:
            raise SettingsError("need 0 <= SCORESTREAM_ALERT_CHURN_RISK_OFF <= _ON <= 1")
        if not 0 <= self.alert_high_value_churn_off <= self.alert_high_value_churn_on <= 1:
            raise SettingsError(
                "need 0 <= SCORESTREAM_ALERT_HIGH_VALUE_CHURN_OFF <= _ON <= 1")
        if not self.store.startswith(("memory://", "rocksdb://")):
            raise SettingsError("SCORESTREAM_STORE must be memory:// or rocksdb://")
        names = list(self.topics.values())
        if len(set(names)) != len(names):
            raise SettingsError(f"topic names must be distinct, got {sorted(names)}")


def _convert(var: str, raw: str, kind: object) -> object:
    """Parse one variable to the field's declared type (annotations are strings here)."""
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError as err:
        raise SettingsError(f"{var}={raw!r}: expected {kind}") from err
    return raw
