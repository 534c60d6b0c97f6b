"""The management scorecard: the customer base per segment, kept by deltas, exact.

Each customer counts once, with its latest scorecard, in four segments: the whole base
(`all`), its value tier (`tier`), the month of its first order (`cohort`, None before any
order) and the channel of its earliest web session (`channel`, None when unknown). A segment
holds:

* how many customers it has;
* sums of the key values, in fixed point (`SUMS`: each value rounded to its resolution and
  kept as an integer), so totals kept by deltas equal a batch sum over the same scorecards
  exactly, in any order of updates;
* expected churners (the sum of churn probabilities) and revenue at risk (the sum of churn
  probability x predicted 12-month value), the same way;
* revenue retention over the last 90 days: the customers who bought in the 90 days before
  them are the cohort at the period's start; their revenue then (start), now (end), kept
  (the smaller of the two per customer) and lost entirely (churned) give NRR = end / start
  and GRR = kept / start, with expansion = end - kept and contraction = start - kept -
  churned;
* tallies of the customers' latest NPS, CSAT and CES answers of the past
  `ADVOCACY_WINDOW_DAYS` (as of each scorecard), from which the KPIs and their standard
  errors follow (`models.kpi.surveys`).

`Aggregates.replace(old, new)` takes a customer's previous scorecard out and puts its new one
in (None: absent; an erasure is `replace(card, None)`). `merge` adds another partition's
aggregates; `to_raw` / `from_raw` carry them between workers; `report` gives what people read:
averages, totals, AOV (historic revenue / orders), the survey KPIs with intervals, and each
configured target with the actual value beside it.

>>> from models.scoring.scorecard import Scorecard
>>> def card(cid, p, tier="Standard", cohort="2026-01", ltv=100.0):
...     return Scorecard(cid, as_of=0, data_completeness=50.0, ltv_historic=ltv,
...                      ltv_predicted_12m=200.0, engagement=40.0, revenue_12m=ltv,
...                      interactions_12m=3, days_since_last_interaction=1,
...                      churn_probability=p, tier=tier, orders=2, cohort=cohort)
>>> agg = Aggregates()
>>> agg.replace(None, card("A", 0.25)); agg.replace(None, card("B", 0.5, "VIP", ltv=300.0))
>>> whole = agg.report()["segments"][0]
>>> whole["customers"], whole["totals"]["expected_churners"], whole["aov"]
(2, 0.75, 100.0)
>>> agg.replace(card("B", 0.5, "VIP", ltv=300.0), None)   # B erased
>>> [(s["kind"], s["name"], s["customers"]) for s in agg.report()["segments"]]
[('all', None, 1), ('tier', 'Standard', 1), ('cohort', '2026-01', 1), ('channel', None, 1)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.kpi.surveys import CesTally, CsatTally, NpsTally, ScoreTally
from models.scoring.scorecard import ADVOCACY_WINDOW_DAYS, Scorecard
from models.scoring.tiers import TIERS
from schemas.errors import ScorestreamError
from schemas.units import DAY_MS

__all__ = [
    "KIND_NAMES",
    "KPIS",
    "SEGMENT_ROWS",
    "SUMS",
    "WHOLE_BASE",
    "Aggregates",
    "AggregatesError",
    "Segment",
    "Target",
    "contribution",
    "kpi_values",
    "parse_targets",
    "retention",
    "segment_keys",
]

SUMS: tuple[tuple[str, int], ...] = (
    ("data_completeness", 10),
    ("ltv_historic", 100),
    ("ltv_predicted_12m", 100),
    ("engagement", 100),
    ("revenue_12m", 100),
    ("interactions_12m", 1),
    ("orders", 1),
    ("expected_churners", 10_000),
    ("revenue_at_risk", 100),
    ("retention_start", 100),
    ("retention_end", 100),
    ("retention_kept", 100),
    ("retention_churned", 100),
)
"""Each summed value and its resolution (units per 1): a customer's value is rounded to it
(cents for money, 0.1 point for data completeness, 1e-4 for a churn probability) and summed
as an integer. `expected_churners` sums churn probabilities, `revenue_at_risk` the values at
risk (`Scorecard.value_at_risk`)."""

_N_SUMS = len(SUMS)
_SCALE = tuple(scale for _name, scale in SUMS)
KIND_NAMES = ("all", "tier", "cohort", "channel")
"""The segment kinds, in report order."""
SEGMENT_ROWS = 100
"""Cohorts and channels a report lists by default (channels come from the sources, so there
can be any number of them); the rest are added up in one row per kind with `other` true."""
_SURVEYS = ("nps", "csat", "ces")
_WINDOW_MS = ADVOCACY_WINDOW_DAYS * DAY_MS

Key = tuple[str, str | None]
WHOLE_BASE: Key = ("all", None)
"""The key of the whole base's segment."""
Answers = tuple[int | None, int | None, int | None]
_NO_ANSWERS: Answers = (None, None, None)


class AggregatesError(ScorestreamError, ValueError):
    """Targets that do not parse, or raw aggregates from another worker that do not fit."""


def retention(card: Scorecard) -> tuple[int, int, int, int]:
    """A scorecard's (start, end, kept, churned) of the revenue retention sums, in cents:
    all zero for a customer who bought nothing in the prior 90 days (not in the cohort).

    >>> from models.scoring.scorecard import Scorecard
    >>> def card(now, before):
    ...     return Scorecard("C", 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, None, revenue_90d=now,
    ...                      revenue_prior_90d=before)
    >>> retention(card(30.0, 20.0)), retention(card(5.0, 20.0)), retention(card(0.0, 20.0))
    ((2000, 3000, 2000, 0), (2000, 500, 500, 0), (2000, 0, 0, 2000))
    >>> retention(card(50.0, 0.0))  # a new or returning buyer: not in the cohort
    (0, 0, 0, 0)
    """
    start = round(card.revenue_prior_90d * 100)
    if start <= 0:
        return 0, 0, 0, 0
    end = round(card.revenue_90d * 100)
    end = end if end > 0 else 0
    return start, end, (end if end < start else start), (0 if end else start)


def contribution(card: Scorecard) -> tuple[int, ...]:
    """A scorecard's share of each sum of `SUMS`, in fixed point."""
    return (
        round(card.data_completeness * 10),
        round(card.ltv_historic * 100),
        round(card.ltv_predicted_12m * 100),
        round(card.engagement * 100),
        round(card.revenue_12m * 100),
        card.interactions_12m,
        card.orders,
        round(card.churn_probability * 10_000),
        round(card.value_at_risk * 100),
        *retention(card),
    )


def segment_keys(card: Scorecard) -> tuple[Key, Key, Key, Key]:
    """The four segments a customer counts in, by its scorecard."""
    return (("all", None), ("tier", card.tier), ("cohort", card.cohort),
            ("channel", card.acquisition_channel))


def answers(card: Scorecard) -> Answers:
    """The customer's latest NPS, CSAT and CES answers of the past year (None: none)."""
    if not card.surveys:
        return _NO_ANSWERS
    found: list[int | None] = [None, None, None]
    oldest = card.as_of - _WINDOW_MS
    for name, score, at in card.surveys:
        if at >= oldest and name in _SURVEYS:
            found[_SURVEYS.index(name)] = score
    return found[0], found[1], found[2]


class Segment:
    """One segment's customers, fixed-point sums and survey tallies (see the module)."""

    __slots__ = ("ces", "csat", "customers", "nps", "sums")

    def __init__(self) -> None:
        self.customers = 0
        self.sums = [0] * _N_SUMS
        self.nps = NpsTally()
        self.csat = CsatTally()
        self.ces = CesTally()

    def tallies(self) -> tuple[ScoreTally, ScoreTally, ScoreTally]:
        return self.nps, self.csat, self.ces

    def add(self, sign: int, sums: tuple[int, ...], found: Answers) -> None:
        """Count a customer in (`sign` 1) or out (-1) with its sums and answers."""
        self.customers += sign
        own = self.sums
        for i, v in enumerate(sums):
            own[i] += sign * v
        if found is not _NO_ANSWERS:
            for tally, score in zip(self.tallies(), found, strict=True):
                if score is not None:
                    if sign > 0:
                        tally.add(score)
                    else:
                        tally.remove(score)

    def merge(self, other: Segment) -> None:
        self.customers += other.customers
        sums = self.sums  # in place: `Aggregates` keeps references to it
        for i, v in enumerate(other.sums):
            sums[i] += v
        for mine, theirs in zip(self.tallies(), other.tallies(), strict=True):
            mine.merge(theirs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segment):
            return NotImplemented
        return (self.customers == other.customers and self.sums == other.sums
                and self.tallies() == other.tallies())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Segment(customers={self.customers}, sums={self.sums})"

    def to_raw(self) -> dict[str, Any]:
        """The additive form, for merging on another worker."""
        return {"customers": self.customers, "sums": list(self.sums),
                "answers": [_counts(t) for t in self.tallies()]}

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Segment:
        seg = cls()
        try:
            seg.customers = int(raw["customers"])
            sums = [int(v) for v in raw["sums"]]
            if len(sums) != _N_SUMS:
                raise ValueError(f"{len(sums)} sums, not {_N_SUMS}")
            seg.sums = sums
            answers = raw["answers"]
            nps, csat, ces = answers
            seg.nps = NpsTally.of_counts((int(score), count) for score, count in nps)
            seg.csat = CsatTally.of_counts((int(score), count) for score, count in csat)
            seg.ces = CesTally.of_counts((int(score), count) for score, count in ces)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise AggregatesError(f"raw segment does not fit: {err}") from err
        return seg

    def report(self) -> dict[str, Any]:
        """What people read of this segment (see `Aggregates.report`)."""
        n = self.customers
        values = [v / scale for v, scale in zip(self.sums, _SCALE, strict=True)]
        named = dict(zip([name for name, _scale in SUMS], values, strict=True))
        averages = {name: (named[name] / n if n else None) for name in (
            "data_completeness", "ltv_historic", "ltv_predicted_12m", "engagement",
            "revenue_12m", "interactions_12m", "orders")}
        averages["churn_probability"] = named["expected_churners"] / n if n else None
        orders = self.sums[6]
        start, end, kept, churned = values[9:13]
        nps, csat, ces = self.nps.result(), self.csat.result(), self.ces.result()
        return {
            "customers": n,
            "averages": averages,
            "totals": {name: named[name] for name in (
                "ltv_historic", "ltv_predicted_12m", "revenue_12m", "interactions_12m",
                "orders", "expected_churners", "revenue_at_risk")},
            "churn_rate": named["expected_churners"] / n if n else None,
            "aov": named["ltv_historic"] / orders if orders else None,
            "retention": {
                "period_days": 90, "start": start, "end": end, "expansion": end - kept,
                "contraction": start - kept - churned, "churned": churned,
                "nrr": end / start if start else None, "grr": kept / start if start else None,
            },
            "nps": {"value": nps.value, "standard_error": nps.standard_error,
                    "interval": nps.interval(), "answers": nps.n, "promoters": nps.promoters,
                    "passives": nps.passives, "detractors": nps.detractors},
            "csat": {"value": csat.value, "standard_error": csat.standard_error,
                     "interval": csat.interval(), "answers": csat.n, "mean": csat.mean},
            "ces": {"value": ces.value, "standard_error": ces.mean_standard_error,
                    "interval": ces.interval(), "answers": ces.n, "share_easy": ces.share},
        }


def _counts(tally: ScoreTally) -> list[list[int]]:
    return [[score, count] for score, count in sorted(tally.counts.items())]


@dataclass(frozen=True, slots=True)
class Target:
    """A KPI's target: `better` says which way is good ("higher" or "lower")."""

    kpi: str
    value: float

    @property
    def better(self) -> str:
        return KPIS[self.kpi][1]


KPIS: dict[str, tuple[str, str]] = {
    "customers": ("customers in the base", "higher"),
    "nps": ("Net Promoter Score, -100 to 100", "higher"),
    "csat": ("CSAT, % of answers 4-5", "higher"),
    "ces": ("CES, mean answer 1-7", "higher"),
    "churn_rate": ("expected churners per customer (mean churn probability)", "lower"),
    "revenue_at_risk": ("sum of churn probability x predicted 12-month value", "lower"),
    "revenue_12m": ("revenue of the past 12 months, sum", "higher"),
    "aov": ("average order value (historic revenue / orders)", "higher"),
    "data_completeness": ("average data completeness, %", "higher"),
    "engagement": ("average engagement score", "higher"),
    "ltv_predicted_12m": ("average predicted 12-month value", "higher"),
    "nrr": ("net revenue retention over 90 days (end / start revenue of the prior-90-day "
            "buyers)", "higher"),
    "grr": ("gross revenue retention over 90 days (without expansion)", "higher"),
}
"""The KPIs a target can be set for (`SCORESTREAM_KPI_TARGETS`): description, better way."""


def parse_targets(text: str) -> tuple[Target, ...]:
    """Targets from "kpi=value,kpi=value" (empty: none); AggregatesError names the fault.

    >>> parse_targets("nps=30, churn_rate=0.05")
    (Target(kpi='nps', value=30.0), Target(kpi='churn_rate', value=0.05))
    >>> parse_targets("happiness=3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    models.scoring.aggregates.AggregatesError: unknown KPI 'happiness' in the targets (known: ...)
    """
    targets: dict[str, Target] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kpi, sep, raw = part.partition("=")
        kpi = kpi.strip()
        if not sep:
            raise AggregatesError(f"a target must be kpi=value, got {part!r}")
        if kpi not in KPIS:
            raise AggregatesError(f"unknown KPI {kpi!r} in the targets "
                                  f"(known: {', '.join(KPIS)})")
        try:
            value = float(raw)
        except ValueError:
            raise AggregatesError(f"target of {kpi} is no number: {raw.strip()!r}") from None
        if not math.isfinite(value):
            raise AggregatesError(f"target of {kpi} must be finite, got {raw.strip()!r}")
        if kpi in targets:
            raise AggregatesError(f"target of {kpi} given twice")
        targets[kpi] = Target(kpi, value)
    return tuple(targets.values())


def kpi_values(seg: dict[str, Any]) -> dict[str, float | None]:
    """Every KPI's value in a segment's report (`Segment.report`), by name as in `KPIS`.

    >>> values = kpi_values(Segment().report())
    >>> values["customers"], values["nps"], list(values) == list(KPIS)
    (0, None, True)
    """
    return {kpi: _actual(kpi, seg) for kpi in KPIS}


def _actual(kpi: str, seg: dict[str, Any]) -> float | None:
    """A KPI's value in a segment's report."""
    if kpi in ("nps", "csat", "ces"):
        value: float | None = seg[kpi]["value"]
        return value
    if kpi in ("churn_rate", "aov", "customers"):
        return seg[kpi]
    if kpi in ("nrr", "grr"):
        return seg["retention"][kpi]
    if kpi in ("revenue_at_risk", "revenue_12m"):
        return seg["totals"][kpi]
    return seg["averages"][kpi]


class Aggregates:
    """The segments of one partition (or of several, merged); see the module."""

    __slots__ = ("_rows", "segments")

    def __init__(self) -> None:
        self.segments: dict[Key, Segment] = {}
        self._rows: dict[tuple[str, str | None, str | None], list[list[int]]] = {}
        """Per (tier, cohort, channel): the sums lists of those segments (derived)."""

    @property
    def customers(self) -> int:
        """Customers counted (the whole base's segment)."""
        whole = self.segments.get(("all", None))
        return whole.customers if whole is not None else 0

    def tier_counts(self) -> dict[str, int]:
        """Customers per tier (tiers without any left out)."""
        return {name: seg.customers for (kind, name), seg in self.segments.items()
                if kind == "tier" and name is not None}

    def replace(self, old: Scorecard | None, new: Scorecard | None) -> None:
        """Swap one customer's previous scorecard for its new one (None = absent)."""
        if old is None and new is None:
            return
        if (old is not None and new is not None and old.tier == new.tier
                and old.cohort == new.cohort
                and old.acquisition_channel == new.acquisition_channel
                and ((not old.surveys and not new.surveys) or answers(old) == answers(new))):
            # The usual case: the same segments and answers, only some sums move. Unrolled
            # (this runs once per scored customer): the differences of `contribution`.
            moved = [
                (0, round(new.data_completeness * 10) - round(old.data_completeness * 10)),
                (1, round(new.ltv_historic * 100) - round(old.ltv_historic * 100)),
                (2, round(new.ltv_predicted_12m * 100) - round(old.ltv_predicted_12m * 100)),
                (3, round(new.engagement * 100) - round(old.engagement * 100)),
                (4, round(new.revenue_12m * 100) - round(old.revenue_12m * 100)),
                (5, new.interactions_12m - old.interactions_12m),
                (6, new.orders - old.orders),
                (7, round(new.churn_probability * 10_000)
                 - round(old.churn_probability * 10_000)),
                (8, round(new.value_at_risk * 100) - round(old.value_at_risk * 100)),
            ]
            if (new.revenue_90d != old.revenue_90d
                    or new.revenue_prior_90d != old.revenue_prior_90d):
                moved += [(9 + i, b - a) for i, (a, b) in enumerate(
                    zip(retention(old), retention(new), strict=True))]
            moved = [m for m in moved if m[1]]
            if not moved:
                return
            rows = self._rows.get((new.tier, new.cohort, new.acquisition_channel))
            if rows is None:
                rows = self._rows_of(new)
            for sums in rows:
                for i, v in moved:
                    sums[i] += v
            return
        if old is not None:
            self._count(old, -1)
        if new is not None:
            self._count(new, 1)

    def _rows_of(self, card: Scorecard) -> list[list[int]]:
        """The sums of the four segments a card counts in (kept for the next one)."""
        rows = [self.segments[key].sums for key in segment_keys(card)]
        self._rows[(card.tier, card.cohort, card.acquisition_channel)] = rows
        return rows

    def _count(self, card: Scorecard, sign: int) -> None:
        sums, found, segments = contribution(card), answers(card), self.segments
        for key in segment_keys(card):
            seg = segments.get(key)
            if seg is None:
                seg = segments[key] = Segment()
            seg.add(sign, sums, found)
            if not seg.customers:
                del segments[key]
                self._rows.clear()  # some point at the segment's sums

    @classmethod
    def of(cls, cards: Iterable[Scorecard]) -> Aggregates:
        """The aggregates of these scorecards, one per customer (a batch computation)."""
        agg = cls()
        for card in cards:
            agg._count(card, 1)
        return agg

    def merge(self, other: Aggregates) -> None:
        """Add another partition's aggregates (its customers are not in these)."""
        for key, seg in other.segments.items():
            mine = self.segments.get(key)
            if mine is None:
                mine = self.segments[key] = Segment()
            mine.merge(seg)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Aggregates):
            return NotImplemented
        return self.segments == other.segments

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_raw(self) -> list[dict[str, Any]]:
        """The additive form (a JSON list), for merging on another worker."""
        return [{"kind": kind, "name": name, **seg.to_raw()}
                for (kind, name), seg in sorted(self.segments.items(), key=_order)]

    @classmethod
    def from_raw(cls, raw: Iterable[Mapping[str, Any]]) -> Aggregates:
        """Inverse of `to_raw` (AggregatesError when it does not fit)."""
        agg = cls()
        try:
            for row in raw:
                kind, name = row["kind"], row["name"]
                if kind not in KIND_NAMES or not (name is None or isinstance(name, str)):
                    raise ValueError(f"segment {kind!r}/{name!r}")
                seg = Segment.from_raw(row)
                if (kind, name) in agg.segments:
                    agg.segments[(kind, name)].merge(seg)
                else:
                    agg.segments[(kind, name)] = seg
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise AggregatesError(f"raw aggregates do not fit: {err}") from err
        return agg

    def report(self, targets: Iterable[Target] = (), limit: int = SEGMENT_ROWS
               ) -> dict[str, Any]:
        """Every segment's report, in order: the whole base, the tiers (lowest first), the
        cohorts (oldest first), the channels (most customers first); at most `limit` cohorts
        and channels, the rest added up in one row per kind marked `other`. `targets` holds
        the whole base's actual value beside each target, and whether it is met."""
        rows: list[dict[str, Any]] = []
        by_kind: dict[str, list[tuple[Key, Segment]]] = {kind: [] for kind in KIND_NAMES}
        for key, seg in self.segments.items():
            by_kind[key[0]].append((key, seg))
        for kind in KIND_NAMES:
            items = sorted(by_kind[kind], key=_order)
            if kind == "channel":
                items.sort(key=lambda item: -item[1].customers)  # stable: names break ties
            listed, rest = items, []
            if kind == "channel" and len(items) > limit:
                listed, rest = items[:limit], items[limit:]
            elif kind == "cohort" and len(items) > limit:
                # oldest first, "no order yet" (None) last: the newest cohorts and no order stay
                cut = len(items) - limit
                listed, rest = items[cut:], items[:cut]
            for (_kind, name), seg in listed:
                rows.append({"kind": kind, "name": name, "other": False, **seg.report()})
            if rest:
                other = Segment()
                for _key, seg in rest:
                    other.merge(seg)
                rows.append({"kind": kind, "name": None, "other": True,
                             "segments": len(rest), **other.report()})
        whole = rows[0] if rows and rows[0]["kind"] == "all" else Segment().report()
        checked = []
        for target in targets:
            actual = _actual(target.kpi, whole)
            met = None if actual is None else (
                actual >= target.value if target.better == "higher" else actual <= target.value)
            checked.append({"kpi": target.kpi, "description": KPIS[target.kpi][0],
                            "target": target.value, "actual": actual, "better": target.better,
                            "met": met})
        return {"segments": rows, "targets": checked}


def _order(item: tuple[Key, Segment]) -> tuple[int, int, str]:
    """Report order inside a kind: tiers by rank; names alphabetically; None last."""
    (kind, name), _seg = item
    if kind == "tier" and name in TIERS:
        return KIND_NAMES.index(kind), TIERS.index(name), ""
    return KIND_NAMES.index(kind), 1 if name is None else 0, name or ""
