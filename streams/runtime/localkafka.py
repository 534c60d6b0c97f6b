"""The project's local Kafka launcher (deploy/kafka/kafka_local.py), for commands that start a
broker of their own: `scorestream demo` and the benchmarks.

The launcher is a stand-alone, standard-library script (it runs before the virtualenv exists),
so it is loaded from its file in the source checkout rather than imported as a package.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from schemas.errors import ScorestreamError

__all__ = ["LAUNCHER", "LauncherMissing", "launcher", "local_broker"]

LAUNCHER = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka_local.py"


class LauncherMissing(ScorestreamError, RuntimeError):
    """No source checkout around this installation: there is no launcher to start a broker."""


def launcher() -> ModuleType:
    """The launcher module (start, stop, status, kafka_version, BrokerError)."""
    if "kafka_local" in sys.modules:
        return sys.modules["kafka_local"]
    if not LAUNCHER.exists():
        raise LauncherMissing(f"{LAUNCHER} not found")
    spec = importlib.util.spec_from_file_location("kafka_local", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_local"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@contextmanager
def local_broker(run_dir: Path) -> Iterator[str]:
    """Start a fresh single-node broker in `run_dir`, yield its bootstrap, stop it on exit."""
    kafka = launcher()
    started = kafka.start(run_dir)
    try:
        yield str(started.bootstrap)
    finally:
        kafka.stop(run_dir)
