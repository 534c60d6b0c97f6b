"""Alert thresholds from the environment reach the alert rules, and bad ones are refused."""

from __future__ import annotations

import pytest

from models.scoring.alerts import AlertConfig
from schemas.units import DAY_MS
from streams.settings import Settings, SettingsError


def test_upsell_thresholds_come_from_the_environment() -> None:
    default = Settings.from_env({}).alert_config()
    assert (default.upsell_on, default.upsell_off, default.upsell_cooldown_ms) == (
        AlertConfig().upsell_on, AlertConfig().upsell_off, AlertConfig().upsell_cooldown_ms)
    config = Settings.from_env({"SCORESTREAM_ALERT_UPSELL_ON": "0.6",
                                "SCORESTREAM_ALERT_UPSELL_OFF": "0.4",
                                "SCORESTREAM_ALERT_UPSELL_COOLDOWN_DAYS": "14"}).alert_config()
    assert (config.upsell_on, config.upsell_off, config.upsell_cooldown_ms) == (
        0.6, 0.4, 14 * DAY_MS)


@pytest.mark.parametrize("env", [
    {"SCORESTREAM_ALERT_UPSELL_ON": "0.3", "SCORESTREAM_ALERT_UPSELL_OFF": "0.4"},
    {"SCORESTREAM_ALERT_UPSELL_ON": "1.5"},
])
def test_upsell_thresholds_out_of_order_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SCORESTREAM_ALERT_UPSELL_OFF <= _ON <= 1"):
        Settings.from_env(env)
