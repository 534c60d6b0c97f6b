"""What the scoring stage keeps in memory beside its store, with no Kafka in it.

- `LiveStates`: the most recently used customers' live `CustomerState` objects.
- `ScoringPartition`: everything the stage derives from one owned partition (due labels, the
  event-time watermark, value and value-at-risk histograms, the alert budget, the management
  scorecard's aggregates: `models.scoring.aggregates`),
  rebuilt from the partition's stored states when it is assigned.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from models.scoring.aggregates import Aggregates
from models.scoring.alerts import AlertBudget
from models.scoring.labels import DueIndex
from models.scoring.merge import Merge
from models.scoring.scorecard import Scorecard
from models.scoring.state import CustomerState
from models.scoring.tiers import ValueHistogram

__all__ = ["LIVE_BYTES_PER_SNAPSHOT_BYTE", "LiveStates", "ScoringPartition"]


LIVE_BYTES_PER_SNAPSHOT_BYTE = 24
"""Resident bytes of a live state per byte of its snapshot, rounded up from what was
measured: ~14 for customers with a few events a week, ~23 for one active every day."""


class LiveStates:
    """The most recently used customers' live `CustomerState` objects, beside the store.

    Restoring a state from its bytes costs more than scoring it, and a restored state has to
    rebuild its running window sums; a customer seen again soon skips both. The store stays
    the source of truth: entries are only ever the state as last written to it in this
    batch or an earlier one, and a partition's entries go when the partition does (also
    after an aborted transaction, which rebuilds the stores).

    Bounded by count and by an estimate of their memory (snapshot bytes times
    `LIVE_BYTES_PER_SNAPSHOT_BYTE`): a customer with a year of daily activity costs several times
    one who visits weekly.

    Once full, only every `ADMIT_EVERY`-th miss (whoever it belongs to) is admitted
    (bimodal insertion), while hits always stay. Plain LRU thrashes when more customers come
    back than it holds (a campaign reaching every customer): every lookup misses and every
    miss evicts. With bimodal insertion the cache keeps part of such a round and still fills
    with a hot set, more slowly (measurements in docs/performance.md). A state larger than
    the whole memory budget is never admitted.
    """

    ADMIT_EVERY = 16

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        """0: bounded by count only."""
        self.bytes = 0
        self._declined = 0  # misses not admitted since the last admission while full
        self.hits = 0
        self.misses = 0
        # customer id -> (partition, state, estimated bytes), least recently used first
        self._states: OrderedDict[str, tuple[int, CustomerState, int]] = OrderedDict()

    def get(self, partition: int, customer_id: str) -> CustomerState | None:
        """The live state of a customer of `partition`, or None when it is not cached."""
        entry = self._states.get(customer_id)
        if entry is None or entry[0] != partition:
            if self.capacity > 0:
                self.misses += 1
            return None
        self.hits += 1
        self._states.move_to_end(customer_id)
        return entry[1]

    def put(self, partition: int, state: CustomerState, snapshot_bytes: int) -> None:
        """Remember a state just written to the store as `snapshot_bytes` bytes; when full,
        admit only every `ADMIT_EVERY`-th miss, evicting the least recently used."""
        if self.capacity <= 0:
            return
        cid = state.customer_id
        size = snapshot_bytes * LIVE_BYTES_PER_SNAPSHOT_BYTE
        if self.max_bytes and size > self.max_bytes:
            self.discard(cid)
            return
        if cid not in self._states and (len(self._states) >= self.capacity or (
                self.max_bytes and self.bytes + size > self.max_bytes)):
            self._declined += 1
            if self._declined < self.ADMIT_EVERY:
                return
            self._declined = 0
        self.discard(cid)
        self._states[cid] = (partition, state, size)
        self.bytes += size
        limit = self.max_bytes or float("inf")
        while len(self._states) > self.capacity or (self.bytes > limit and self._states):
            self.discard(next(iter(self._states)))

    def discard(self, customer_id: str) -> None:
        """Forget one customer (erased)."""
        entry = self._states.pop(customer_id, None)
        if entry is not None:
            self.bytes -= entry[2]

    def drop_partition(self, partition: int) -> None:
        """Forget every customer of a partition that left this worker."""
        for cid in [c for c, entry in self._states.items() if entry[0] == partition]:
            self.discard(cid)

    def __len__(self) -> int:
        return len(self._states)


@dataclass
class ScoringPartition:
    """What the scoring stage derives from one owned partition; `rebuild` makes it from the
    partition's stored states (on assignment), and it goes with the partition.

    >>> part = ScoringPartition(budget=AlertBudget(0.02, 30 * 86_400_000))
    >>> card = Scorecard("C1", as_of=0, data_completeness=50.0, ltv_historic=10.0,
    ...                  ltv_predicted_12m=200.0, engagement=1.0, revenue_12m=10.0,
    ...                  interactions_12m=1, days_since_last_interaction=0,
    ...                  churn_probability=0.5, tier="Premium")
    >>> part.replace(None, card)
    >>> part.values.total, part.risks.total, part.aggregates.tier_counts()
    (1, 1, {'Premium': 1})
    >>> part.replace(card, None)
    >>> part.values.total, part.aggregates.customers
    (0, 0)
    """

    budget: AlertBudget
    """Alerts fired in the budget's window (rebuilt from the customers' alert memories)."""
    due: DueIndex = field(default_factory=DueIndex)
    """When each customer's delayed labels come due."""
    watermark: int = 0
    """The partition's clock: the highest event time of the records ingest sent it (the
    identity stage's releases do not move it)."""
    values: ValueHistogram = field(default_factory=ValueHistogram)
    """The customers' predicted 12-month values (the learner cuts the tiers from them)."""
    risks: ValueHistogram = field(default_factory=ValueHistogram)
    """The customers' values at risk (the learner's alert cut)."""
    aggregates: Aggregates = field(default_factory=Aggregates)
    histogram_sent: float = 0.0
    """When the histograms were last sent to the learner (monotonic seconds)."""
    merge: Merge | None = None
    """The events held for the identity merge (`SCORESTREAM_IDENTITY_MERGE`), else None."""

    @classmethod
    def rebuild(cls, states: Iterable[CustomerState], budget: AlertBudget) -> ScoringPartition:
        """The partition's derived state from its stored customer states."""
        part = cls(budget)
        items = []
        spent: dict[str, list[int]] = {}
        for state in states:
            items.append((state.customer_id, list(state.due_times())))
            # The clock each state was written at: a customer's own last event can be later
            # (the identity stage's releases do not move the clock). States written before the
            # clock was kept give their last event.
            clock = state.clock if state.clock is not None else state.last_ms
            if clock is not None:
                part.watermark = max(part.watermark, clock)
            if state.last:
                part.replace(None, Scorecard.from_row(state.last))
            window = state.alerts.get("w") if state.alerts else None
            if window:
                for kind, times in window.items():
                    spent.setdefault(kind, []).extend(times)
        since = part.watermark - budget.window_ms  # older fire times count for nothing now
        for kind, times in spent.items():
            budget.spend(kind, [t for t in times if t > since])
        part.due.rebuild(items)
        return part

    def replace(self, previous: Scorecard | None, card: Scorecard | None) -> None:
        """A customer's latest scorecard went from `previous` to `card` (None: none, erased)."""
        self.values.replace(previous.ltv_predicted_12m if previous is not None else None,
                            card.ltv_predicted_12m if card is not None else None)
        before = previous.value_at_risk if previous is not None else None
        after = card.value_at_risk if card is not None else None
        if before != after:
            self.risks.replace(before, after)
        self.aggregates.replace(previous, card)
