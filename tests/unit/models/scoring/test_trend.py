"""The KPI history behind the management scorecard's 30-day trend."""

from __future__ import annotations

import pytest

from models.scoring.trend import KEEP_DAYS, TREND_DAYS, KpiHistory, TrendError, day_text


def test_a_day_keeps_its_latest_record_and_old_days_go() -> None:
    history = KpiHistory()
    assert history.record(10, {"customers": 1})
    assert history.record(10, {"customers": 2})  # later the same day: replaces
    assert history.days == {10: {"customers": 2}}
    assert history.record(11, {"customers": 3})
    assert history.record(12 + KEEP_DAYS, {"customers": 4})
    # day 10 is too old; day 11 too, but the newest day's trend compares with it
    assert sorted(history.days) == [11, 12 + KEEP_DAYS]
    # exactly KEEP_DAYS before the newest: kept, and the trend's day now, so 11 goes
    assert history.record(12, {"customers": 9})
    assert sorted(history.days) == [12, 12 + KEEP_DAYS]
    assert history.record(13, {"customers": 5})
    assert sorted(history.days) == [12, 13, 12 + KEEP_DAYS]
    assert history.record(12 + KEEP_DAYS + 100, {"customers": 6})  # after a long gap
    assert sorted(history.days) == [12 + KEEP_DAYS, 12 + KEEP_DAYS + 100]
    # a day far before every kept one: event time went back (a reset), so a new history
    assert history.record(11, {"customers": 9})
    assert history.days == {11: {"customers": 9}}


def test_the_trend_compares_with_the_latest_day_at_least_30_days_back() -> None:
    history = KpiHistory({d: {"nps": float(d), "customers": d} for d in (50, 55, 61, 80)})
    assert history.against(90) == 55  # 60 is the cut: 61 is too recent
    assert history.against(85) == 55
    assert history.against(91) == 61
    assert history.against(84) == 50
    assert history.against(79) is None
    trend = history.trend(91, {"nps": 70.5, "customers": 100, "aov": 12.0})
    assert trend == {"days": TREND_DAYS, "against": day_text(61), "kpis": {
        "nps": {"previous": 61.0, "change": 9.5},
        "customers": {"previous": 61, "change": 39},
        "aov": {"previous": None, "change": None}}}  # not recorded then
    assert history.trend(91, {"nps": None})["kpis"] == {"nps": {"previous": 61.0,
                                                                "change": None}}


def test_the_report_is_oldest_first_with_dates() -> None:
    history = KpiHistory({20_429: {"nps": 3.0}, 20_400: {"nps": 1.0}})
    assert history.report() == [{"day": "2025-11-08", "kpis": {"nps": 1.0}},
                                 {"day": "2025-12-07", "kpis": {"nps": 3.0}}]


def test_a_history_round_trips_and_a_broken_one_says_what_is_wrong() -> None:
    history = KpiHistory({3: {"nps": None, "customers": 4, "aov": 1.5}})
    assert KpiHistory.restore(history.snapshot()) == history
    for raw, fault in ((b"{", "does not read"), (b'{"days": [["x", {}]]}', "day 'x'"),
                       (b'{"days": [[1, {"nps": "high"}]]}', "value of 'nps'"),
                       (b"{}", "does not read")):
        with pytest.raises(TrendError, match=fault):
            KpiHistory.restore(raw)
