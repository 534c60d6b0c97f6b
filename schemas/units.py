"""Time units of the contracts: every time in scorestream is epoch milliseconds.

>>> DAY_MS == 24 * HOUR_MS == 1440 * MINUTE_MS == 86_400 * SECOND_MS
True
"""

from __future__ import annotations

__all__ = ["DAY_MS", "HOUR_MS", "MINUTE_MS", "SECOND_MS"]

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
