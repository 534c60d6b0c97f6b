"""The management scorecard's trend: the whole base's KPIs day by day, and their change
against 30 days before.

The scorers share their partition's whole-base segment with the learner now and then, with
their value histograms. The learner keeps the latest segment of every partition; when it has
all of them, it records the KPIs of their sum (`kpi_values`) under the UTC day of the newest
watermark among them (the day `/aggregates` would have reported as its `as_of` then). A day
keeps its latest record, and the history keeps the `KEEP_DAYS` days before the newest. The
learner publishes the history on the model-snapshots topic, every worker reads it, and
`/aggregates` reports beside each KPI its value on the latest recorded day at least
`TREND_DAYS` before today, and the change since (`KpiHistory.trend`).

Days are event time, and the learner records only when it publishes (every ten seconds or
so). Live, that is every day. A backfill runs through many days between two publishes, so it
records some days and skips others: the trend then compares with the nearest earlier recorded
day, and names it. Each partition's segment is as of its own watermark when it was sent,
which live is within seconds of the others'.

>>> history = KpiHistory()
>>> history.record(100, {"customers": 40, "nps": 10.0})
True
>>> history.record(112, {"customers": 45, "nps": None})
True
>>> history.record(112, {"customers": 45, "nps": None})   # the same again: nothing new
False
>>> history.record(10, {"customers": 3})   # event time went back: a new history
True
>>> sorted(history.days)
[10]
>>> history.days = {100: {"customers": 40, "nps": 10.0}, 112: {"customers": 45, "nps": None}}
>>> history.trend(140, {"customers": 50, "nps": 12.5})   # 30 days before 140 is day 110
{'days': 30, 'against': '1970-04-11', 'kpis': {'customers': {'previous': 40, 'change': 10}, \
'nps': {'previous': 10.0, 'change': 2.5}}}
>>> history.trend(129, {"customers": 50})["against"] is None   # nothing 30 days back yet
True
>>> KpiHistory.restore(history.snapshot()) == history
True
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import orjson

from schemas.errors import ScorestreamError

__all__ = ["KEEP_DAYS", "TREND_DAYS", "KpiHistory", "TrendError", "day_text"]

TREND_DAYS = 30
"""How many days back the trend compares with."""
KEEP_DAYS = 45
"""Days kept before the newest (for the sparklines), and the one the trend compares with."""

_EPOCH = datetime.date(1970, 1, 1)

Values = Mapping[str, float | int | None]


class TrendError(ScorestreamError, ValueError):
    """A published history that does not read."""


def day_text(day: int) -> str:
    """An epoch day as its UTC date.

    >>> day_text(0), day_text(20_429)
    ('1970-01-01', '2025-12-07')
    """
    return (_EPOCH + datetime.timedelta(days=day)).isoformat()


class KpiHistory:
    """The whole base's KPI values per epoch day (see the module)."""

    __slots__ = ("days",)

    def __init__(self, days: Mapping[int, Values] | None = None) -> None:
        self.days: dict[int, dict[str, float | int | None]] = {
            day: dict(values) for day, values in (days or {}).items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KpiHistory):
            return NotImplemented
        return self.days == other.days

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"KpiHistory({len(self.days)} days)"

    def record(self, day: int, values: Values) -> bool:
        """Keep `values` as the day's (the latest record of a day wins) and forget the days
        more than `KEEP_DAYS` before the newest, except the one the newest day's trend
        compares with (after a gap in the records, it can be older); True if the history
        changed. A day more than `KEEP_DAYS` before the newest that is not kept starts the
        history afresh: the base's event time went back (its topics were reset, or an older
        period is replayed), and what was recorded is no trend of it."""
        if self.days and day < max(self.days) - KEEP_DAYS and day not in self.days:
            self.days = {day: dict(values)}
            return True
        newest = max(day, max(self.days, default=day))
        if (day < newest - KEEP_DAYS and day != self.against(newest)) or (
                self.days.get(day) == values):
            return False
        self.days[day] = dict(values)
        keep = self.against(newest)
        for old in [d for d in self.days if d < newest - KEEP_DAYS and d != keep]:
            del self.days[old]
        return True

    def against(self, today: int) -> int | None:
        """The day the trend compares with: the latest recorded one at least `TREND_DAYS`
        before `today` (None: none yet)."""
        cut = today - TREND_DAYS
        return max((day for day in self.days if day <= cut), default=None)

    def trend(self, today: int, actual: Values) -> dict[str, Any]:
        """Each KPI's value on the day compared with, and the change from it to `actual`
        (None where either is unknown)."""
        day = self.against(today)
        if day is None:
            return {"days": TREND_DAYS, "against": None, "kpis": {}}
        previous = self.days[day]
        kpis: dict[str, dict[str, float | int | None]] = {}
        for kpi, now in actual.items():
            before = previous.get(kpi)
            kpis[kpi] = {"previous": before,
                         "change": None if now is None or before is None else now - before}
        return {"days": TREND_DAYS, "against": day_text(day), "kpis": kpis}

    def report(self) -> list[dict[str, Any]]:
        """The recorded days, oldest first: [{"day": date, "kpis": {kpi: value}}]."""
        return [{"day": day_text(day), "kpis": self.days[day]} for day in sorted(self.days)]

    def snapshot(self) -> bytes:
        """JSON bytes (a record of the model-snapshots topic)."""
        return orjson.dumps({"days": [[day, self.days[day]] for day in sorted(self.days)]})

    @classmethod
    def restore(cls, raw: bytes) -> KpiHistory:
        """Inverse of `snapshot` (TrendError when it does not read)."""
        try:
            rows = orjson.loads(raw)["days"]
            days: dict[int, dict[str, float | int | None]] = {}
            for day, values in rows:
                if not isinstance(day, int) or not isinstance(values, dict):
                    raise ValueError(f"day {day!r}")
                for kpi, value in values.items():
                    if not (value is None or isinstance(value, int | float)):
                        raise ValueError(f"value of {kpi!r}: {value!r}")
                days[day] = values
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise TrendError(f"KPI history does not read: {err}") from err
        return cls(days)
