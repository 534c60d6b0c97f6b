"""The root of scorestream's own exceptions.

Every error the project raises on purpose derives from `ScorestreamError` (and, where it has
one, from the built-in it refines, such as `ValueError` for a bad setting), so a caller can
catch all of them in one clause:

>>> from streams.settings import SettingsError
>>> issubclass(SettingsError, ScorestreamError) and issubclass(SettingsError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["ScorestreamError"]


class ScorestreamError(Exception):
    """An error scorestream raises on purpose (bad input, configuration, a broker away)."""
