"""Running totals of attribution records, per conversion day, for reports and gauges.

`AttributionTotals.add` folds one record of the attributions topic (`Attribution.to_record`)
into the bucket of its conversion's UTC day: conversions and value, and per model the
conversions (fractions: the touches' shares) and the value credited to each channel and each
campaign (`None`: touches without one). A conversion without any touch in the lookback is
counted as unattributed. A record's data-driven credits (its `data_driven` object) are
folded in as the model `data_driven`; the conversions with touches it did not credit are
added up per reason (`data_driven_uncredited`). `report` adds up a range of days; per
rule-based model, the channels' value plus the unattributed value is the total value, and
so is the campaigns'; for `data_driven` the uncredited value is added too.

>>> day = 86_400_000
>>> def record(conversion_id, at, value, touches):
...     return {"conversion_id": conversion_id, "occurred_at": at, "value": value,
...             "touches": [{"channel": channel, "campaign": campaign,
...                          "credit": {"linear": value * share}, "share": {"linear": share}}
...                         for channel, campaign, share in touches]}
>>> totals = AttributionTotals()
>>> totals.add(record("o-1", 3 * day, 90.0, [("email", "spring", 0.5), ("paid", None, 0.5)]))
>>> totals.add(record("o-2", 4 * day, 10.0, [("email", "spring", 1.0)]))
>>> totals.add(record("o-3", 9 * day, 30.0, []))
>>> report = totals.report("linear")
>>> report["conversions"], report["value"], report["unattributed"]
(3, 130.0, {'conversions': 1, 'value': 30.0})
>>> for row in report["models"]["linear"]["channels"]:
...     print(row)
{'channel': 'email', 'conversions': 1.5, 'value': 55.0}
{'channel': 'paid', 'conversions': 0.5, 'value': 45.0}
>>> totals.report("linear", first_day=4, last_day=4)["models"]["linear"]["campaigns"]
[{'campaign': 'spring', 'conversions': 1.0, 'value': 10.0}]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.attribution.markov import OTHER
from models.attribution.rules import MODELS
from schemas.units import DAY_MS

__all__ = ["DATA_DRIVEN", "OTHER", "UNATTRIBUTED", "AttributionTotals"]

DATA_DRIVEN = "data_driven"
"""The model name of the data-driven credits (a record's `data_driven` object)."""

UNATTRIBUTED = "(none)"
"""The channel label of the conversions without a touch (gauges)."""

_Credits = dict[Any, list[float]]
"""Channel or campaign -> [conversions, value] credited."""


@dataclass
class _Day:
    """One conversion day's totals."""

    conversions: int = 0
    value: float = 0.0
    unattributed: list[float] = field(default_factory=lambda: [0, 0.0])
    uncredited: dict[str, list[float]] = field(default_factory=dict)
    """Data-driven: reason -> [conversions, value] of the conversions it did not credit."""
    channels: dict[str, _Credits] = field(default_factory=dict)
    """Model -> channel -> [conversions, value]."""
    campaigns: dict[str, _Credits] = field(default_factory=dict)
    """Model -> campaign (None: none) -> [conversions, value]."""


def _credit(table: _Credits, key: Any, share: float, credit: float) -> None:
    row = table.get(key)
    if row is None:
        table[key] = [share, credit]
    else:
        row[0] += share
        row[1] += credit


class AttributionTotals:
    """Conversions, value and credits per model, channel and campaign, per conversion day."""

    def __init__(self) -> None:
        self._days: dict[int, _Day] = {}
        self.records = 0
        """Records folded in."""

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one attributions record in (raises KeyError, TypeError or ValueError on a
        malformed one, before anything is counted)."""
        at = int(record["occurred_at"])
        value = float(record["value"])
        touches = [(str(t["channel"]), _campaign(t["campaign"]), t["share"], t["credit"])
                   for t in record["touches"]]
        credits = [(channel, campaign, [(m, float(share[m]), float(credit[m])) for m in credit])
                   for channel, campaign, share, credit in touches]
        driven = record.get("data_driven")
        reason = None
        if driven is not None:
            if driven["credits"] is None:
                reason = str(driven["reason"])
            else:
                if len(driven["credits"]) != len(credits) or len(driven["shares"]) != len(
                        credits):
                    raise ValueError("data_driven credits do not go with the touches")
                for (_c, _k, per_model), share, credit in zip(
                        credits, driven["shares"], driven["credits"], strict=True):
                    per_model.append((DATA_DRIVEN, float(share), float(credit)))
        day = self._days.get(at // DAY_MS)
        if day is None:
            day = self._days[at // DAY_MS] = _Day()
        day.conversions += 1
        day.value += value
        self.records += 1
        if reason is not None and credits:
            row = day.uncredited.setdefault(reason, [0, 0.0])
            row[0] += 1
            row[1] += value
        if not credits:
            day.unattributed[0] += 1
            day.unattributed[1] += value
            return
        for channel, campaign, per_model in credits:
            for model, share, credit in per_model:
                by_channel = day.channels.get(model)
                if by_channel is None:
                    by_channel = day.channels[model] = {}
                    day.campaigns[model] = {}
                _credit(by_channel, channel, share, credit)
                _credit(day.campaigns[model], campaign, share, credit)

    def __len__(self) -> int:
        return len(self._days)

    def models(self) -> list[str]:
        """Every model some record credited, sorted."""
        return sorted({m for day in self._days.values() for m in day.channels})

    def _range(self, first_day: int | None, last_day: int | None) -> Iterable[_Day]:
        for d, totals in self._days.items():
            if (first_day is None or d >= first_day) and (last_day is None or d <= last_day):
                yield totals

    def report(self, model: str | None = None, first_day: int | None = None,
               last_day: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """Totals over the conversion days `first_day`..`last_day` (epoch days, both
        included; None: open), for one model or every model; channels and campaigns by
        value, largest first, at most `limit` of each (None: all), the rest added up in
        `channels_other` and `campaigns_other`. Values are rounded to cents, conversions to
        4 decimals."""
        days = list(self._range(first_day, last_day))
        models = [model] if model is not None else self.models()
        out: dict[str, Any] = {
            "conversions": sum(d.conversions for d in days),
            "value": round(sum(d.value for d in days), 2),
            "unattributed": {"conversions": int(sum(d.unattributed[0] for d in days)),
                             "value": round(sum(d.unattributed[1] for d in days), 2)},
            "models": {},
        }
        if model is None or model == DATA_DRIVEN:
            reasons: dict[str, list[float]] = {}
            for d in days:
                for why, (n, v) in d.uncredited.items():
                    row = reasons.setdefault(why, [0, 0.0])
                    row[0] += n
                    row[1] += v
            out["data_driven_uncredited"] = {
                "conversions": int(sum(n for n, _v in reasons.values())),
                "value": round(sum(v for _n, v in reasons.values()), 2),
                "reasons": [{"reason": why, "conversions": int(n), "value": round(v, 2)}
                            for why, (n, v) in sorted(reasons.items(),
                                                      key=lambda kv: (-kv[1][0], kv[0]))]}
        for m in models:
            channels: _Credits = {}
            campaigns: _Credits = {}
            for d in days:
                for key, (share, credit) in d.channels.get(m, {}).items():
                    _credit(channels, key, share, credit)
                for key, (share, credit) in d.campaigns.get(m, {}).items():
                    _credit(campaigns, key, share, credit)
            out["models"][m] = {}
            for name, table in (("channel", channels), ("campaign", campaigns)):
                rows = _rows(name, table)
                rest = rows[limit:] if limit is not None else []
                out["models"][m][f"{name}s"] = rows[:limit] if limit is not None else rows
                out["models"][m][f"{name}s_other"] = {
                    f"{name}s": len(rest),
                    "conversions": round(sum(r["conversions"] for r in rest), 4),
                    "value": round(sum(r["value"] for r in rest), 2)}
        return out

    def by_channel(self, top: int) -> list[tuple[str, str, float, float]]:
        """(model, channel, conversions, value) over every day, for gauges with bounded
        labels: the `top` channels by value credited (over all models), the rest added up
        as `OTHER`, the unattributed conversions as `UNATTRIBUTED`; sorted."""
        totals: dict[tuple[str, str], list[float]] = {}
        unattributed = [0.0, 0.0]
        for day in self._days.values():
            unattributed[0] += day.unattributed[0]
            unattributed[1] += day.unattributed[1]
            for model, channels in day.channels.items():
                for channel, (share, credit) in channels.items():
                    row = totals.setdefault((model, channel), [0.0, 0.0])
                    row[0] += share
                    row[1] += credit
        weight: dict[str, float] = {}
        for (_model, channel), (_share, credit) in totals.items():
            weight[channel] = weight.get(channel, 0.0) + credit
        kept = set(sorted(weight, key=lambda c: (-weight[c], c))[:max(top, 0)])
        rows: dict[tuple[str, str], list[float]] = {}
        for (model, channel), (share, credit) in totals.items():
            row = rows.setdefault((model, channel if channel in kept else OTHER), [0.0, 0.0])
            row[0] += share
            row[1] += credit
        if self.records:
            for model in set(MODELS).union(model for model, _channel in totals):
                rows[(model, UNATTRIBUTED)] = list(unattributed)
        return [(model, channel, share, credit)
                for (model, channel), (share, credit) in sorted(rows.items())]


def _rows(name: str, table: _Credits) -> list[dict[str, Any]]:
    ordered = sorted(table.items(), key=lambda kv: (-kv[1][1], str(kv[0])))
    return [{name: key, "conversions": round(share, 4), "value": round(credit, 2)}
            for key, (share, credit) in ordered]


def _campaign(campaign: Any) -> str | None:
    """A touch's campaign: a string or None (raises TypeError for anything else, before the
    record is counted)."""
    if campaign is not None and not isinstance(campaign, str):
        raise TypeError(f"campaign must be a string or null, not {type(campaign).__name__}")
    return campaign
