"""The cyclic garbage collector's settings for scorestream's long-running processes.

A worker keeps thousands of customer states alive and handles batches of thousands of
records, each living for the whole batch. With Python's default young-generation threshold
most of a batch's objects are collected while still alive, promoted, and die in the old
generation, where full collections walk every live state; collecting the young generation
less often lets a batch's objects die young instead (measurements in docs/performance.md).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

YOUNG_THRESHOLD = 50_000
"""Net allocations between young-generation collections (Python's default: 700)."""


def settle() -> None:
    """Freeze what start-up built (it lives as long as the process, so full collections need
    not walk it) and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
