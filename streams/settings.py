"""One typed settings object, read from SCORESTREAM_* environment variables.

Every knob a deployment may turn lives here with its default, so nothing else in the code reads
os.environ. Settings are nested by concern (`settings.kafka.bootstrap`, `settings.web.port`),
and a variable's name follows the nesting (`SCORESTREAM_KAFKA_BOOTSTRAP`,
`SCORESTREAM_WEB_PORT`). `Settings.from_env()` fails fast with a message naming the variable
at fault.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from models.config import CONVERSION_EVENTS, AttributionConfig, ScoringConfig
from models.scoring.aggregates import AggregatesError, Target, parse_targets
from models.scoring.alerts import AlertConfig
from schemas.decode import MAX_AMOUNT
from schemas.errors import ScorestreamError
from schemas.registry import event_type_schema, event_types
from schemas.units import DAY_MS

__all__ = [
    "GROUPS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "SOURCE_ROLES",
    "TOPIC_ROLES",
    "AlertSettings",
    "AttributionSettings",
    "ChangeSettings",
    "IdentitySettings",
    "KafkaSettings",
    "ModelSettings",
    "Secret",
    "Settings",
    "SettingsError",
    "WebSettings",
    "redact_logs",
]

TOPIC_ROLES = (
    "web",
    "email",
    "crm",
    "support",
    "customer_events",
    "score_changes",
    "alerts",
    "attributions",
    "dead_letters",
    "training_examples",
    "model_snapshots",
    "identity",
    "erasure_confirmations",
)
SOURCE_ROLES = ("web", "email", "crm", "support")


class SettingsError(ScorestreamError, ValueError):
    """An environment variable holds a value scorestream cannot use."""


@dataclass(frozen=True)
class Secret:
    """A password or token: masked wherever it is printed (repr, str, logs, f-strings).

    Only `reveal()` gives the value, at the one place that hands it to a client library.

    >>> token = Secret("s3cret")
    >>> token, f"{token}", token.reveal(), bool(Secret())
    (Secret('***'), "Secret('***')", 's3cret', False)
    """

    _value: str = field(default="", repr=False)

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


def redact_logs(secrets: Iterable[str]) -> None:
    """Mask these values in every log record the process creates from now on.

    A safety net under `Secret`: client libraries log what they send, and aiokafka's debug log
    prints each SASL request with the password in it. Masks the plain value and its escaped
    form inside a bytes repr.
    """
    values: set[str] = set()
    for secret in secrets:
        if secret:
            values.update((secret, repr(secret.encode())[2:-1], repr(secret)[1:-1]))
    ordered = sorted(values, key=len, reverse=True)
    if not ordered:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging reports it at emit
            return record
        if any(value in message for value in ordered):
            for value in ordered:
                message = message.replace(value, "***")
            record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(factory)


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


_DEFAULT_TOPIC_NAMES = {"identity": "identity-events"}


def _default_topics() -> dict[str, str]:
    return {role: _DEFAULT_TOPIC_NAMES.get(role, role.replace("_", "-")) for role in TOPIC_ROLES}


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the brokers (`SCORESTREAM_KAFKA_*`)."""

    ENV = "KAFKA_"

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: Secret = Secret()
    ssl_ca_location: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: Secret = Secret()
    ssl_check_hostname: bool = True

    @property
    def protocol(self) -> str:
        """The security protocol, upper case (`SASL_SSL`)."""
        return self.security_protocol.strip().upper()


@dataclass(frozen=True)
class WebSettings:
    """The worker's web server: scorecard API, probes, metrics (`SCORESTREAM_WEB_*`)."""

    ENV = "WEB_"

    host: str = "127.0.0.1"
    port: int = 6066
    url: str = ""
    """How other workers reach this one (request routing); default http://host:port."""
    header_timeout_s: float = 10.0
    keepalive_s: float = 15.0


@dataclass(frozen=True)
class AlertSettings:
    """Alert thresholds (`SCORESTREAM_ALERT_*`); see `models.scoring.alerts.AlertConfig`."""

    ENV = "ALERT_"

    churn_risk_on: float = 0.7
    churn_risk_off: float = 0.55
    high_value_churn_on: float = 0.5
    high_value_churn_off: float = 0.4
    cooldown_days: float = 7.0
    budget_share: float = 0.02
    churn_rise: float = 0.15
    tier_cooldown_days: float = 30.0
    upsell_on: float = 0.5
    upsell_off: float = 0.35
    upsell_cooldown_days: float = 30.0


@dataclass(frozen=True)
class ChangeSettings:
    """Smallest moves a score change reports (`SCORESTREAM_CHANGE_*`)."""

    ENV = "CHANGE_"

    churn: float = 0.05
    points: float = 5.0
    money_rel: float = 0.05
    interactions: float = 5.0


@dataclass(frozen=True)
class IdentitySettings:
    """Events waiting for an identity link (`SCORESTREAM_IDENTITY_*`)."""

    ENV = "IDENTITY_"

    max_held: int = 10_000
    max_hold_ms: int = DAY_MS
    merge: bool = False
    """Scoring merges the events the identity stage releases with the customers' other
    events in event-time order (`SCORESTREAM_IDENTITY_MERGE`): a customer's alerts and labels
    then do not depend on how far the identity stage runs behind ingest, at the price of
    holding every event until the identity stage has passed its time (about a second more
    latency live). Needs source alignment."""
    merge_max_held: int = 200_000
    """With `merge`: events a worker's scoring stage holds at most; past it the oldest go
    out without waiting (`SCORESTREAM_IDENTITY_MERGE_MAX_HELD`)."""


@dataclass(frozen=True)
class ModelSettings:
    """When the learner publishes a model bundle, and whether scoring loads it
    (`SCORESTREAM_MODEL_*`)."""

    ENV = "MODEL_"

    publish_interval_s: float = 10.0
    publish_every: int = 500
    share_interval_s: float = 10.0
    """How often each scoring partition shares its value histograms (for the tiers) and its
    whole base (for the KPI history) with the learner."""
    frozen: bool = False
    """Scoring keeps the bundle it started with (the initial one) and loads none the learner
    publishes; the learner still learns and measures."""


@dataclass(frozen=True)
class AttributionSettings:
    """Multi-touch attribution (`SCORESTREAM_ATTRIBUTION_*`); see
    `models.config.AttributionConfig`."""

    ENV = "ATTRIBUTION_"

    enabled: bool = False
    lookback_days: int = 90
    half_life_days: float = 7.0
    max_touches: int = 50
    views: bool = False
    """Whether an opened email (a view) is a touch."""
    touches: str = "web:session_started,email:clicked"
    """The touch events, as source:event_type, comma-separated."""
    conversions: str = "order_placed"
    """The conversions: order_placed, goal_completed (or goal_completed:<goal>),
    subscription_started, comma-separated."""
    direct_channels: str = "direct"
    retention_days: float = 400.0
    """Retention of the attributions topic, which the API's totals are read from."""
    gauge_channels: int = 10
    """Channels with a gauge series of their own; the rest are added up as `other`."""
    data_driven_min_paths: int = 200
    """Closed paths the data-driven model must rest on before conversions get its credit."""
    data_driven_refit_paths: int = 100
    """The reader fits the data-driven model again after this many new closed paths..."""
    data_driven_refit_s: float = 10.0
    """...or this many seconds after the first closed path not yet in the model."""
    data_driven_draws: int = 200
    """Posterior draws of the transition rows behind the model's intervals (0: none)."""
    data_driven_level: float = 0.9
    """Central probability of the intervals (0.9: 5th to 95th percentile)."""
    data_driven_channels: int = 20
    """Most visited channels the model keeps apart; the others are solved as `other`."""
    journeys_steps: int = 8
    """Steps of the Sankey diagram of `GET /journeys`; longer paths end in `(more)`."""
    journeys_top: int = 5
    """Channels per step of the Sankey diagram by default (`?top=`); the rest: `other`."""
    funnel: str = ""
    """Ordered funnel goals (`goal_completed` events' `goal`), comma-separated."""
    funnel_window_days: int = 30
    """Days from an attempt's first goal within which it may reach the next ones."""

    def validate(self) -> None:
        """Check the settings of the reader, the data-driven model and the journeys."""
        checks = (
            (self.data_driven_min_paths >= 1, "DATA_DRIVEN_MIN_PATHS must be >= 1"),
            (self.data_driven_refit_paths >= 1, "DATA_DRIVEN_REFIT_PATHS must be >= 1"),
            (0 < self.data_driven_refit_s < math.inf, "DATA_DRIVEN_REFIT_S must be a number > 0"),
            (0 <= self.data_driven_draws <= 10_000, "DATA_DRIVEN_DRAWS must be within 0..10000"),
            (0 < self.data_driven_level < 1, "DATA_DRIVEN_LEVEL must be within (0, 1)"),
            (1 <= self.data_driven_channels <= 100, "DATA_DRIVEN_CHANNELS must be within 1..100"),
            (1 <= self.journeys_steps <= 50, "JOURNEYS_STEPS must be within 1..50"),
            (1 <= self.journeys_top <= 50, "JOURNEYS_TOP must be within 1..50"),
            (self.funnel_window_days >= 1, "FUNNEL_WINDOW_DAYS must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise SettingsError(f"SCORESTREAM_ATTRIBUTION_{message}")
        goals = _items(self.funnel)
        if len(set(goals)) != len(goals):
            raise SettingsError("SCORESTREAM_ATTRIBUTION_FUNNEL: each goal once")
        known = event_type_schema("web", "goal_completed")["properties"]["payload"][
            "properties"]["goal"]["enum"]
        for goal in goals:
            if goal not in known:
                raise SettingsError(f"SCORESTREAM_ATTRIBUTION_FUNNEL: unknown goal {goal!r}; "
                                    f"known: {', '.join(known)}")

    def config(self) -> AttributionConfig:
        """The core's `AttributionConfig`; raises `SettingsError` naming the variable."""
        self.validate()
        if self.lookback_days < 0:
            raise SettingsError("SCORESTREAM_ATTRIBUTION_LOOKBACK_DAYS must be >= 0")
        if not 0 < self.half_life_days < math.inf:
            raise SettingsError("SCORESTREAM_ATTRIBUTION_HALF_LIFE_DAYS must be a number > 0")
        if self.max_touches < 1:
            raise SettingsError("SCORESTREAM_ATTRIBUTION_MAX_TOUCHES must be >= 1")
        touches = set()
        for item in _items(self.touches):
            source, _, event_type = item.partition(":")
            if source not in SOURCE_ROLES or event_type not in event_types(source):
                raise SettingsError(
                    f"SCORESTREAM_ATTRIBUTION_TOUCHES: {item!r} is not an event type of a "
                    "source, written source:event_type (for example web:session_started)")
            touches.add((source, event_type))
        conversions = frozenset(_items(self.conversions))
        for name in conversions:
            if name.partition(":")[0] not in CONVERSION_EVENTS:
                raise SettingsError(
                    f"SCORESTREAM_ATTRIBUTION_CONVERSIONS: unknown conversion {name!r}; known: "
                    f"{', '.join(CONVERSION_EVENTS)} (goal_completed:<goal> for one goal)")
        try:
            return AttributionConfig(
                enabled=self.enabled, lookback_days=self.lookback_days,
                half_life_days=self.half_life_days, max_touches=self.max_touches,
                views=self.views, touch_types=frozenset(touches), conversions=conversions,
                direct_channels=frozenset(_items(self.direct_channels)),
                data_driven_min_paths=self.data_driven_min_paths,
                funnel=tuple(_items(self.funnel)), funnel_window_days=self.funnel_window_days)
        except ValueError as err:  # an event both a touch and a conversion
            raise SettingsError(
                f"SCORESTREAM_ATTRIBUTION_TOUCHES and _CONVERSIONS: {err}") from err


def _items(raw: str) -> list[str]:
    """The non-empty items of a comma-separated list, stripped."""
    return [item.strip() for item in raw.split(",") if item.strip()]


GROUPS: dict[str, type] = {
    "kafka": KafkaSettings,
    "web": WebSettings,
    "alert": AlertSettings,
    "change": ChangeSettings,
    "identity": IdentitySettings,
    "model": ModelSettings,
    "attribution": AttributionSettings,
}
"""The nested groups of `Settings`, by field name; each group's variables are
`SCORESTREAM_<its ENV prefix><FIELD>`."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of a scorestream worker (see README, 'Configuration').

    Grouped by concern: `kafka`, `web`, `alert`, `change`, `identity`, `model` and
    `attribution` hold their `SCORESTREAM_<GROUP>_*` variables; the rest are the worker's own
    (`SCORESTREAM_<FIELD>`). Each default is stated once, here; `env_names()` lists every
    variable.

    >>> s = Settings.from_env({"SCORESTREAM_KAFKA_BOOTSTRAP": "kafka:9092",
    ...                        "SCORESTREAM_WEB_PORT": "7000"})
    >>> s.kafka.bootstrap, s.web.port, s.partitions
    ('kafka:9092', 7000, 8)
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    web: WebSettings = field(default_factory=WebSettings)
    alert: AlertSettings = field(default_factory=AlertSettings)
    change: ChangeSettings = field(default_factory=ChangeSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    app_id: str = "scorestream"
    topics: Mapping[str, str] = field(default_factory=_default_topics)
    partitions: int = 8
    replication_factor: int = 1
    retention_days: float = 7.0
    output_retention_days: float = 30.0
    store: str = "memory://"
    data_dir: Path = Path(".run/worker")
    log_level: str = "info"
    batch_size: int = 5000
    batch_within_s: float = 0.05
    ingest_process: bool = True
    live_states: int = 10_000
    live_states_mb: int = 256
    align_sources: bool = True
    max_source_skew_s: float = 60.0
    source_idle_s: float = 10.0
    align_max_held: int = 100_000
    max_event_bytes: int = 65536
    max_amount: float = 1e9
    allowed_lateness_days: float = 400.0
    score_every_event: bool = True
    api_token: Secret = Secret()
    group_session_timeout_s: float = 10.0
    transaction_timeout_s: float = 60.0
    kpi_targets: str = ""
    """Targets of the management scorecard, "kpi=value,..." (`models.scoring.aggregates.KPIS`)."""

    def targets(self) -> tuple[Target, ...]:
        """The KPI targets (SettingsError naming the variable when they do not parse)."""
        try:
            return parse_targets(self.kpi_targets)
        except AggregatesError as err:
            raise SettingsError(f"SCORESTREAM_KPI_TARGETS: {err}") from None

    def alert_config(self) -> AlertConfig:
        """Alert and score-change thresholds for the pure AlertRules."""
        alert, change = self.alert, self.change
        return AlertConfig(
            churn_risk_on=alert.churn_risk_on,
            churn_risk_off=alert.churn_risk_off,
            high_value_churn_on=alert.high_value_churn_on,
            high_value_churn_off=alert.high_value_churn_off,
            cooldown_ms=int(alert.cooldown_days * DAY_MS),
            tier_cooldown_ms=int(alert.tier_cooldown_days * DAY_MS),
            change_churn=change.churn,
            change_points=change.points,
            change_money_rel=change.money_rel,
            change_interactions=change.interactions,
            churn_rise=alert.churn_rise,
            budget_share=alert.budget_share,
            upsell_on=alert.upsell_on,
            upsell_off=alert.upsell_off,
            upsell_cooldown_ms=int(alert.upsell_cooldown_days * DAY_MS),
        )

    def scoring_config(self) -> ScoringConfig:
        """The scoring core's configuration: its defaults, with attribution as set here."""
        return ScoringConfig(attribution=self.attribution.config(),
                             score_every_event=self.score_every_event)

    def changelog_topic(self, table: str) -> str:
        """The compacted changelog topic of one of the app's tables."""
        return f"{self.app_id}-{table}-changelog"

    @property
    def canonical_url(self) -> str:
        """URL other workers use to reach this one's web server (request routing)."""
        return self.web.url or f"http://{self.web.host}:{self.web.port}"

    @property
    def source_topics(self) -> dict[str, str]:
        """Source name -> topic name for the four source systems."""
        return {role: self.topics[role] for role in SOURCE_ROLES}

    @classmethod
    def env_names(cls) -> set[str]:
        """Every SCORESTREAM_* variable the settings read (secrets' _FILE forms aside)."""
        names = {_env_name("", spec.name) for spec in fields(cls)
                 if spec.name != "topics" and spec.name not in GROUPS}
        for group in GROUPS.values():
            names |= {_env_name(group.ENV, spec.name) for spec in fields(group)}  # type: ignore[attr-defined]
        return names | {f"SCORESTREAM_TOPIC_{role.upper()}" for role in TOPIC_ROLES}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from SCORESTREAM_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for spec in fields(cls):
            if spec.name == "topics":
                continue
            group = GROUPS.get(spec.name)
            if group is not None:
                values[spec.name] = group(**_read(env, group.ENV, group))  # type: ignore[attr-defined]
        values.update(_read(env, "", cls, skip={"topics", *GROUPS}))
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
        alert, identity, web = self.alert, self.identity, self.web
        if not self.kafka.bootstrap.strip():
            raise SettingsError("SCORESTREAM_KAFKA_BOOTSTRAP must not be empty")
        if self.partitions < 1:
            raise SettingsError("SCORESTREAM_PARTITIONS must be >= 1")
        if not (self.model.share_interval_s > 0 and self.model.publish_interval_s > 0):
            raise SettingsError("SCORESTREAM_MODEL_SHARE_INTERVAL_S and "
                                "SCORESTREAM_MODEL_PUBLISH_INTERVAL_S must be > 0")
        if self.retention_days <= 0 or self.output_retention_days <= 0:
            raise SettingsError(
                "SCORESTREAM_RETENTION_DAYS and SCORESTREAM_OUTPUT_RETENTION_DAYS must be > 0")
        if self.batch_size < 1:
            raise SettingsError("SCORESTREAM_BATCH_SIZE must be >= 1")
        if self.max_source_skew_s < 0:
            raise SettingsError("SCORESTREAM_MAX_SOURCE_SKEW_S must be >= 0")
        if self.source_idle_s < 0:
            raise SettingsError("SCORESTREAM_SOURCE_IDLE_S must be >= 0")
        if self.align_max_held < 0:
            raise SettingsError("SCORESTREAM_ALIGN_MAX_HELD must be >= 0")
        if self.live_states < 0:
            raise SettingsError("SCORESTREAM_LIVE_STATES must be >= 0")
        if self.live_states_mb < 0:
            raise SettingsError("SCORESTREAM_LIVE_STATES_MB must be >= 0")
        if not 0 < self.max_amount <= MAX_AMOUNT:
            raise SettingsError(
                f"SCORESTREAM_MAX_AMOUNT must be within 0..{MAX_AMOUNT:.0e} (the contract's bound)")
        if identity.merge and not self.align_sources:
            raise SettingsError("SCORESTREAM_IDENTITY_MERGE needs SCORESTREAM_ALIGN_SOURCES: "
                                "the merge relies on ingest releasing in event-time order")
        if identity.merge_max_held < 1:
            raise SettingsError("SCORESTREAM_IDENTITY_MERGE_MAX_HELD must be >= 1")
        if identity.max_held < 0 or identity.max_hold_ms < 0:
            raise SettingsError(
                "SCORESTREAM_IDENTITY_MAX_HELD and SCORESTREAM_IDENTITY_MAX_HOLD_MS must be >= 0"
            )
        if not 0 <= alert.churn_risk_off <= alert.churn_risk_on <= 1:
            raise SettingsError("need 0 <= SCORESTREAM_ALERT_CHURN_RISK_OFF <= _ON <= 1")
        if not 0 <= alert.upsell_off <= alert.upsell_on <= 1:
            raise SettingsError("need 0 <= SCORESTREAM_ALERT_UPSELL_OFF <= _ON <= 1")
        if not 0 <= alert.high_value_churn_off <= alert.high_value_churn_on <= 1:
            raise SettingsError(
                "need 0 <= SCORESTREAM_ALERT_HIGH_VALUE_CHURN_OFF <= _ON <= 1")
        if not 0 < alert.budget_share <= 1:
            raise SettingsError("SCORESTREAM_ALERT_BUDGET_SHARE must be within (0, 1]")
        if not 0 <= alert.churn_rise <= 1:
            raise SettingsError("SCORESTREAM_ALERT_CHURN_RISE must be within 0..1")
        if not 6 <= self.group_session_timeout_s <= 1800:
            raise SettingsError("SCORESTREAM_GROUP_SESSION_TIMEOUT_S must be within 6..1800 "
                                "(the broker's group.min/max.session.timeout.ms defaults)")
        if not 1 <= self.transaction_timeout_s <= 900:
            raise SettingsError("SCORESTREAM_TRANSACTION_TIMEOUT_S must be within 1..900 "
                                "(the broker's transaction.max.timeout.ms default)")
        if web.header_timeout_s <= 0 or web.keepalive_s <= 0:
            raise SettingsError(
                "SCORESTREAM_WEB_HEADER_TIMEOUT_S and SCORESTREAM_WEB_KEEPALIVE_S must be > 0")
        if not self.store.startswith(("memory://", "rocksdb://")):
            raise SettingsError("SCORESTREAM_STORE must be memory:// or rocksdb://")
        names = list(self.topics.values())
        if len(set(names)) != len(names):
            raise SettingsError(f"topic names must be distinct, got {sorted(names)}")
        if self.api_token and len(self.api_token.reveal()) < 16:
            raise SettingsError("SCORESTREAM_API_TOKEN must be at least 16 characters long")
        if not 0 < self.attribution.retention_days < math.inf:
            raise SettingsError("SCORESTREAM_ATTRIBUTION_RETENTION_DAYS must be a number > 0")
        if self.attribution.gauge_channels < 0:
            raise SettingsError("SCORESTREAM_ATTRIBUTION_GAUGE_CHANNELS must be >= 0")
        self.attribution.config()  # names the variable at fault
        self.targets()
        self._validate_kafka_security()

    def secret_values(self) -> list[str]:
        """The secrets that are set, revealed (for `redact_logs`)."""
        secrets = (self.api_token, self.kafka.sasl_password, self.kafka.ssl_key_password)
        return [secret.reveal() for secret in secrets if secret]

    def _validate_kafka_security(self) -> None:
        kafka = self.kafka
        protocol = kafka.protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError("SCORESTREAM_KAFKA_SECURITY_PROTOCOL must be one of "
                                f"{', '.join(SECURITY_PROTOCOLS)}")
        if protocol.startswith("SASL_"):
            if kafka.sasl_mechanism.upper() not in SASL_MECHANISMS:
                raise SettingsError(
                    f"SCORESTREAM_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
            if not kafka.sasl_username or not kafka.sasl_password:
                raise SettingsError(
                    f"{protocol} needs SCORESTREAM_KAFKA_SASL_USERNAME and "
                    "SCORESTREAM_KAFKA_SASL_PASSWORD (or SCORESTREAM_KAFKA_SASL_PASSWORD_FILE)")
        if kafka.ssl_keyfile and not kafka.ssl_certfile:
            raise SettingsError(
                "SCORESTREAM_KAFKA_SSL_KEYFILE needs SCORESTREAM_KAFKA_SSL_CERTFILE")
        for name in ("ssl_ca_location", "ssl_certfile", "ssl_keyfile"):
            location = getattr(kafka, name)
            if location and not Path(location).exists():
                raise SettingsError(f"SCORESTREAM_KAFKA_{name.upper()}: no such file {location!r}")


def _env_name(prefix: str, name: str) -> str:
    return f"SCORESTREAM_{prefix}{name.upper()}"


def _read(env: Mapping[str, str], prefix: str, cls: type,
          skip: frozenset[str] | set[str] = frozenset()) -> dict[str, object]:
    """The fields of dataclass `cls` that `env` sets (`SCORESTREAM_<prefix><FIELD>`); a
    `Secret` may come from a file named by the variable with `_FILE` appended."""
    values: dict[str, object] = {}
    for spec in fields(cls):
        if spec.name in skip:
            continue
        var = _env_name(prefix, spec.name)
        if spec.type == "Secret" and f"{var}_FILE" in env:
            if var in env:
                raise SettingsError(f"set {var} or {var}_FILE, not both")
            values[spec.name] = Secret(_read_secret_file(f"{var}_FILE", env[f"{var}_FILE"]))
        elif var in env:
            values[spec.name] = _convert(var, env[var], spec.type)
    return values


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _convert(var: str, raw: str, kind: object) -> object:
    """Parse one variable to the field's declared type (annotations are strings here)."""
    if kind == "Secret":
        return Secret(raw)  # never echoed in an error message
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            return _BOOLEANS[raw.strip().lower()]
    except (KeyError, ValueError) as err:
        raise SettingsError(f"{var}={raw!r}: expected {kind}") from err
    return raw


def _read_secret_file(var: str, path: str) -> str:
    """A secret from a file (a mounted Kubernetes or Docker secret); one trailing newline and
    surrounding whitespace are not part of it."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise SettingsError(f"{var}: cannot read {path!r}: {err.strerror}") from err
