"""Delayed labels: feature snapshots waiting for their outcome, and the per-partition due index.

A model predicts from a snapshot when it is taken and learns from it only once its label is
known in event time, so it never sees information from after the snapshot. Pending snapshots
live inside `CustomerState` (they travel in the changelog and vanish with an erasure); the
`DueIndex` finds customers whose horizon passed without any new event of theirs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADVOCACY",
    "CHURN",
    "ENGAGEMENT",
    "MODEL_NAMES",
    "UPSELL",
    "VALUE",
    "DueIndex",
    "PendingLabel",
    "TrainingExample",
]

CHURN = "churn"
ENGAGEMENT = "engagement"
VALUE = "value"
MODEL_NAMES: tuple[str, ...] = (CHURN, ENGAGEMENT, VALUE)
"""The models every customer with activity gets snapshots for."""
ADVOCACY = "advocacy"
"""Examples made when a customer answers the NPS question (no pending label: the answer is
the label)."""
UPSELL = "upsell"
"""Snapshots for customers with product categories or a subscription only (see
`CustomerState.upsell_eligible`)."""


class PendingLabel:
    """One snapshot waiting for its label: frozen features, the logged prediction, counters.

    Only events with `taken_at < occurred_at <= due_at` touch the counters, so events from
    before the snapshot (late arrivals included) can never leak into its label, and the
    features are an immutable tuple fixed when the snapshot is taken.

    >>> p = PendingLabel(CHURN, taken_at=0, due_at=100, features=(1.0,), prediction=0.2,
    ...                  version="churn-00001")
    >>> p.observe(50, interaction=True, order_cents=0, cancelled=False)
    >>> p.is_due(99), p.is_due(100), p.label()
    (False, True, 0.0)
    """

    __slots__ = (
        "cancelled_at",
        "challenger",
        "due_at",
        "features",
        "interactions",
        "model",
        "order_cents",
        "orders",
        "prediction",
        "taken_at",
        "upsold",
        "version",
    )

    def __init__(
        self,
        model: str,
        taken_at: int,
        due_at: int,
        features: tuple[float, ...],
        prediction: float,
        version: str,
        interactions: int = 0,
        orders: int = 0,
        order_cents: int = 0,
        cancelled_at: int | None = None,
        challenger: float | None = None,
        upsold: int = 0,
    ) -> None:
        self.model = model
        self.taken_at = taken_at
        self.due_at = due_at
        self.features = features
        self.prediction = prediction
        self.version = version
        self.interactions = interactions
        self.orders = orders
        self.order_cents = order_cents
        self.cancelled_at = cancelled_at
        self.challenger = challenger
        """The churn classifier's answer at snapshot time (None before it was ready): what the
        champion/challenger contest judges it on, whichever model served."""
        self.upsold = upsold
        """Upsells seen in the window: first orders in a category, subscription upgrades."""

    def observe(self, ts: int, *, interaction: bool, order_cents: int, cancelled: bool,
                upsold: bool = False) -> None:
        """Count one event towards the label if it falls inside (taken_at, due_at]."""
        if not self.taken_at < ts <= self.due_at:
            return
        if interaction:
            self.interactions += 1
        if order_cents:
            self.orders += 1
            self.order_cents += order_cents
        if cancelled and (self.cancelled_at is None or ts < self.cancelled_at):
            self.cancelled_at = ts
        if upsold:
            self.upsold += 1

    def is_due(self, watermark_ms: int) -> bool:
        """True when the label is known: horizon passed, or (churn) a cancellation was seen."""
        if self.model == CHURN and self.cancelled_at is not None:
            return True
        return watermark_ms >= self.due_at

    def resolved_at(self) -> int:
        """Event time at which the label became known."""
        if self.model == CHURN and self.cancelled_at is not None:
            return self.cancelled_at
        return self.due_at

    def label(self) -> float:
        """The outcome: churn 1/0, engagement interactions count, value orders count,
        upsell 1/0."""
        if self.model == CHURN:
            return 1.0 if (self.cancelled_at is not None or self.interactions == 0) else 0.0
        if self.model == UPSELL:
            return 1.0 if self.upsold else 0.0
        if self.model == ENGAGEMENT:
            return float(self.interactions)
        return float(self.orders)

    def to_list(self) -> list[Any]:
        """Compact JSON-friendly form for the state snapshot."""
        return [
            self.model,
            self.taken_at,
            self.due_at,
            list(self.features),
            self.prediction,
            self.version,
            self.interactions,
            self.orders,
            self.order_cents,
            self.cancelled_at,
            *(() if self.challenger is None and not self.upsold else (self.challenger,)),
            *((self.upsold,) if self.upsold else ()),
        ]

    @classmethod
    def from_list(cls, row: list[Any]) -> PendingLabel:
        """Inverse of `to_list`."""
        return cls(row[0], row[1], row[2], tuple(row[3]), *row[4:])

    def __repr__(self) -> str:
        return f"PendingLabel({self.model!r}, taken_at={self.taken_at}, due_at={self.due_at})"


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """A resolved snapshot: what the learner consumes (and what quality is measured on).

    `prediction` was logged when the snapshot was taken, before the label existed, so
    metrics computed from it are honest progressive (prequential) metrics.
    """

    model: str
    customer_id: str
    features: dict[str, float]
    label: float
    prediction: float
    version: str
    taken_at: int
    resolved_at: int
    holdout: bool = False
    challenger: float | None = None
    """Churn: the classifier's answer logged with the snapshot (None before it was ready),
    beside the served `prediction`. Advocacy: the P(promoter) the model answered (None while
    it answered nothing)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the training-examples topic)."""
        return {
            "model": self.model,
            "customer_id": self.customer_id,
            "features": self.features,
            "label": self.label,
            "prediction": self.prediction,
            "version": self.version,
            "taken_at": self.taken_at,
            "resolved_at": self.resolved_at,
            "holdout": self.holdout,
            **({} if self.challenger is None else {"challenger": self.challenger}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingExample:
        """Inverse of `to_dict`."""
        return cls(
            model=d["model"],
            customer_id=d["customer_id"],
            features=dict(d["features"]),
            label=float(d["label"]),
            prediction=float(d["prediction"]),
            version=d["version"],
            taken_at=int(d["taken_at"]),
            resolved_at=int(d["resolved_at"]),
            holdout=bool(d.get("holdout", False)),
            challenger=None if d.get("challenger") is None else float(d["challenger"]),
        )


class DueIndex:
    """Per-partition min-heap of (due_time, customer_id): who may have a label to resolve.

    Entries are never removed eagerly; a stale entry (label already resolved, customer erased
    or re-snapshotted) only costs one `resolve_due` call that finds nothing. It holds no
    information the states do not, so after a rebalance it is rebuilt from the restored
    states with `rebuild`.

    >>> idx = DueIndex()
    >>> idx.push(200, "b"); idx.push(100, "a"); idx.push(100, "a")
    >>> idx.pop_due(150), idx.pop_due(300), len(idx)
    (['a'], ['b'], 0)
    """

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def push(self, due_ms: int, customer_id: str) -> None:
        """Remember that `customer_id` has a label due at `due_ms`."""
        heapq.heappush(self._heap, (due_ms, customer_id))

    def pop_due(self, watermark_ms: int) -> list[str]:
        """Remove and return (deduplicated, in due order) customers due at or before watermark."""
        out: list[str] = []
        seen: set[str] = set()
        heap = self._heap
        while heap and heap[0][0] <= watermark_ms:
            _, cid = heapq.heappop(heap)
            if cid not in seen:
                seen.add(cid)
                out.append(cid)
        return out

    def rebuild(self, items: Iterable[tuple[str, Iterable[int]]]) -> None:
        """Rebuild from (customer_id, due times) pairs, e.g. `(s.customer_id, s.due_times())`."""
        self._heap = [(due, cid) for cid, dues in items for due in dues]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(sorted(self._heap))
