"""The streaming shell: a worker's stages on Kafka, its web API and metrics, and the CLI.

Subpackages: `runtime` (Kafka clients, the transactional batch loop, tables and stores),
`stages` (ingest, identity, scoring, learner) and `cli` (one module per command); beside
them `app` (the worker), `web` (the scorecard API), `metrics` and `settings`.

>>> from streams import Settings, create_app
>>> Settings().partitions > 0
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models import lazy_exports

__all__ = ["ScorestreamError", "Settings", "SettingsError", "create_app"]

_HOME = {
    "ScorestreamError": "schemas.errors",
    "Settings": "streams.settings",
    "SettingsError": "streams.settings",
    "create_app": "streams.app",
}

if TYPE_CHECKING:
    from schemas.errors import ScorestreamError
    from streams.app import create_app
    from streams.settings import Settings, SettingsError


# The public names, imported when first used (the CLI stays fast: no Faust until a command
# needs it).
__getattr__ = lazy_exports("streams", _HOME)
