"""docker-compose.yml is checked without Docker: against the Compose Specification's JSON Schema,
and every file, service and setting it refers to must exist."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jsonschema
import yaml

from streams.settings import Settings
from tests.kit import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _compose_schema() -> dict:
    # check-jsonschema ships the Compose Specification's schema (vendored from compose-spec).
    # Locate it without importing the package, whose CLI needs a newer click than Faust allows.
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "check-jsonschema missing"
    package = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((package / "builtin_schemas/vendor/compose-spec.json").read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors]


def test_compose_has_kafka_workers_prometheus_and_grafana() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    worker_command = ["scorestream", "worker"]
    workers = [name for name, svc in services.items() if svc.get("command") == worker_command]
    assert len(workers) >= 2
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")


def test_every_referenced_file_exists() -> None:
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_worker_environment_uses_only_known_settings() -> None:
    known = Settings.env_names()
    for name, service in _compose()["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("SCORESTREAM_"):
                assert var in known, f"{name}: unknown setting {var}"
        if service.get("command") == ["scorestream", "worker"]:
            Settings.from_env({k: str(v) for k, v in service["environment"].items()})


def test_prometheus_scrapes_the_compose_workers() -> None:
    services = _compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        assert host in services, target
        assert services[host]["environment"]["SCORESTREAM_WEB_PORT"] == port


def test_grafana_datasource_points_at_prometheus() -> None:
    path = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
    sources = yaml.safe_load(path.read_text())["datasources"]
    assert sources[0]["type"] == "prometheus"
    assert sources[0]["url"] == "http://prometheus:9090"
