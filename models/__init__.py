"""Pure scoring core: customer state, key values, features, online models and tiers.

Imports no Kafka and no Faust and reads no clock: time always arrives as an argument
(event time), so the streaming stages, the replay command and the tests share one library.
Subpackages by concern: `ingest` (a record's route to a customer), `scoring` (state, features,
the engine, scorecards, alerts, tiers), `learning` (the models and the learner), `history`
(generate, replay and evaluate whole histories), `attribution` (multi-touch attribution) and
`kpi` (survey and revenue KPIs of the customer base). What a user needs is importable from here:

>>> from models import AlertRules, Scorecard, ScoringConfig, ScoringEngine, replay
>>> ScoringEngine(ScoringConfig()).config.window_days
365
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

__all__ = [
    "AlertConfig",
    "AlertRules",
    "ModelBundle",
    "Scorecard",
    "ScorestreamError",
    "ScoringConfig",
    "ScoringEngine",
    "lazy_exports",
    "replay",
]

_HOME = {
    "AlertConfig": "models.scoring.alerts",
    "AlertRules": "models.scoring.alerts",
    "ModelBundle": "models.learning.bundle",
    "Scorecard": "models.scoring.scorecard",
    "ScorestreamError": "schemas.errors",
    "ScoringConfig": "models.config",
    "ScoringEngine": "models.scoring.engine",
    "replay": "models.history.replay",
}

if TYPE_CHECKING:
    from models.config import ScoringConfig
    from models.history.replay import replay
    from models.learning.bundle import ModelBundle
    from models.scoring.alerts import AlertConfig, AlertRules
    from models.scoring.engine import ScoringEngine
    from models.scoring.scorecard import Scorecard
    from schemas.errors import ScorestreamError


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's module `__getattr__` that imports each public name from its home module
    when first used, so importing one small module of the package stays cheap."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    return __getattr__


# The public names, imported when first used (`models.config` alone needs no River, no SciPy).
__getattr__ = lazy_exports("models", _HOME)
