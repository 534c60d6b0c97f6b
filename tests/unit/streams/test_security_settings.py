"""Kafka security and API token settings: environment -> librdkafka and Faust configs, secret
files, validation, and secrets masked wherever settings are printed."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from streams.runtime.kafka import client_config, faust_credentials, security_config
from streams.settings import Secret, Settings, SettingsError, redact_logs

PASSWORD = "sasl-pass-9f8e7d"
TOKEN = "api-token-0123456789abcdef"
KEY_PASSWORD = "key-pass-5a4b3c"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed certificate and its encrypted key (the certificate is also the CA)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=test",
         "-keyout", str(key), "-out", str(cert), "-passout", f"pass:{KEY_PASSWORD}"],
        check=True, capture_output=True)
    return {"ca": str(cert), "cert": str(cert), "key": str(key)}


def _env(**values: str) -> dict[str, str]:
    return {f"SCORESTREAM_{name.upper()}": value for name, value in values.items()}


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings.from_env({})
    assert security_config(settings) == {}
    assert client_config(settings) == {"bootstrap.servers": "127.0.0.1:9092"}
    assert faust_credentials(settings) is None
    assert not settings.api_token


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_plaintext_maps_to_librdkafka_and_faust(mechanism: str) -> None:
    settings = Settings.from_env(_env(
        kafka_security_protocol="sasl_plaintext", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="scorer", kafka_sasl_password=PASSWORD))
    assert security_config(settings) == {
        "security.protocol": "sasl_plaintext", "sasl.mechanism": mechanism.upper(),
        "sasl.username": "scorer", "sasl.password": PASSWORD}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == (
        "SASL_PLAINTEXT", mechanism.upper())
    assert (credentials.username, credentials.password) == ("scorer", PASSWORD)
    assert credentials.ssl_context is None
    assert PASSWORD not in repr(credentials)


def test_sasl_ssl_maps_tls_files_and_hostname_check(tls_files: dict[str, str]) -> None:
    settings = Settings.from_env(_env(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="scorer", kafka_sasl_password=PASSWORD,
        kafka_ssl_ca_location=tls_files["ca"], kafka_ssl_certfile=tls_files["cert"],
        kafka_ssl_keyfile=tls_files["key"], kafka_ssl_key_password=KEY_PASSWORD,
        kafka_ssl_check_hostname="false"))
    assert security_config(settings) == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scorer", "sasl.password": PASSWORD,
        "ssl.ca.location": tls_files["ca"], "ssl.certificate.location": tls_files["cert"],
        "ssl.key.location": tls_files["key"], "ssl.key.password": KEY_PASSWORD,
        "ssl.endpoint.identification.algorithm": "none"}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    context = credentials.ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # our CA, loaded


def test_ssl_only_uses_ssl_credentials_and_checks_hostnames_by_default(
    tls_files: dict[str, str],
) -> None:
    settings = Settings.from_env(_env(kafka_security_protocol="SSL",
                                      kafka_ssl_ca_location=tls_files["ca"]))
    assert security_config(settings) == {
        "security.protocol": "ssl", "ssl.ca.location": tls_files["ca"],
        "ssl.endpoint.identification.algorithm": "https"}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, SSLCredentials)
    assert credentials.protocol.value == "SSL" and credentials.context.check_hostname


def test_secrets_come_from_files_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(f"{PASSWORD}\n")
    (tmp_path / "token").write_text(f"{TOKEN}\n")
    settings = Settings.from_env({
        **_env(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="scorer"),
        "SCORESTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "SCORESTREAM_API_TOKEN_FILE": str(tmp_path / "token")})
    assert settings.kafka.sasl_password.reveal() == PASSWORD
    assert settings.api_token.reveal() == TOKEN
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"SCORESTREAM_API_TOKEN": TOKEN,
                           "SCORESTREAM_API_TOKEN_FILE": str(tmp_path / "token")})
    with pytest.raises(SettingsError, match="SCORESTREAM_API_TOKEN_FILE: cannot read"):
        Settings.from_env({"SCORESTREAM_API_TOKEN_FILE": str(tmp_path / "missing")})


def test_secrets_are_masked_in_repr_str_and_logs(
    tls_files: dict[str, str], caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings.from_env(_env(
        api_token=TOKEN, kafka_security_protocol="SASL_SSL", kafka_sasl_username="scorer",
        kafka_sasl_password=PASSWORD, kafka_ssl_certfile=tls_files["cert"],
        kafka_ssl_keyfile=tls_files["key"], kafka_ssl_key_password=KEY_PASSWORD))
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r", settings, settings)
    for text in (repr(settings), str(settings), f"{settings}", caplog.text):
        assert "Secret('***')" in text
        for secret in (PASSWORD, TOKEN, KEY_PASSWORD):
            assert secret not in text
    assert repr(Secret()) == "Secret('')"  # an unset secret says so


@pytest.mark.parametrize(("env", "message"), [
    ({"kafka_security_protocol": "SASL_TLS"}, "must be one of"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_password": PASSWORD},
     "needs SCORESTREAM_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
      "kafka_sasl_password": PASSWORD, "kafka_sasl_mechanism": "GSSAPI"}, "MECHANISM"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_location": "/no/such/ca.pem"},
     "no such file"),
    ({"kafka_ssl_keyfile": "/tmp"}, "needs SCORESTREAM_KAFKA_SSL_CERTFILE"),
    ({"kafka_ssl_check_hostname": "maybe"}, "expected bool"),
    ({"api_token": "short-token"}, "at least 16"),
])
def test_bad_security_settings_fail_fast_without_echoing_secrets(
    env: dict[str, str], message: str,
) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env(_env(**env))
    assert PASSWORD not in str(raised.value) and "short-token" not in str(raised.value)


def test_log_records_are_redacted_even_inside_a_bytes_repr() -> None:
    """aiokafka logs SASL requests as reprs of their bytes at debug level."""
    tricky = "pa'ss\\wörd-123"
    original = logging.getLogRecordFactory()
    try:
        redact_logs([tricky, ""])
        logger = logging.getLogger("redaction-test")
        sasl = logger.makeRecord("x", logging.DEBUG, "f", 1, "request %r",
                                 (b"\x00user\x00" + tricky.encode(),), None)
        plain = logger.makeRecord("x", logging.INFO, "f", 1, "password=%s", (tricky,), None)
        quoted = logger.makeRecord("x", logging.INFO, "f", 1, "config %r", ({"p": tricky},),
                                   None)
        untouched = logger.makeRecord("x", logging.INFO, "f", 1, "n=%d", (5,), None)
    finally:
        logging.setLogRecordFactory(original)
    for record in (sasl, plain, quoted):
        message = record.getMessage()
        assert "***" in message and "pa'ss" not in message and "pa\\'ss" not in message, message
    assert sasl.getMessage() == 'request b"\\x00user\\x00***"'
    assert (untouched.msg, untouched.args) == ("n=%d", (5,))
