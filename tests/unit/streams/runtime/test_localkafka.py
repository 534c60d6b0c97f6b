"""The demo and the benchmarks find the project's broker launcher from the installed package."""

from __future__ import annotations

from streams.runtime import localkafka
from tests.kit import ROOT


def test_the_launcher_is_the_checkouts_and_loads() -> None:
    assert localkafka.LAUNCHER == ROOT / "deploy" / "kafka" / "kafka_local.py"
    module = localkafka.launcher()
    assert callable(module.start) and callable(module.stop)
    assert module.__file__ is not None
    assert localkafka.LAUNCHER.samefile(module.__file__)
