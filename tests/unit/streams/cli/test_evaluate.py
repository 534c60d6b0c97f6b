"""`scorestream evaluate`: labels from the history after the split, report, determinism, charts."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from models.history.backtest import (
    PROGRESSIVE_MODELS,
    SCORERS,
    Outcome,
    check_window,
    history_end,
    iso,
    months_before,
    progressive,
    rfm_at,
    summarize,
)
from models.history.generate import generate, iter_lines
from models.history.replay import ReplayResult, ingest, replay, sort_raw
from streams import cli
from streams.cli import evaluate as evaluate_cli
from tests.kit import DAY_MS, DEV_SET, ev

SPLIT = "2025-09-30T23:59:59Z"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = evaluate_cli.run(parser.parse_args([*argv, "--quiet"]))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def dev_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The dev set evaluated twice, into two directories; the first run's printed table."""
    a, b = tmp_path_factory.mktemp("eval-a"), tmp_path_factory.mktemp("eval-b")
    code_a, table = run_cli(str(DEV_SET), "--split", SPLIT, "--out", str(a))
    code_b, _ = run_cli(str(DEV_SET), "--split", SPLIT, "--out", str(b))
    assert code_a == code_b == 0
    return a, b, table


def test_report_has_every_section_for_every_customer(dev_runs) -> None:
    a, _, _ = dev_runs
    r = json.loads((a / "report.json").read_bytes())
    assert set(r) == {"alerts", "baseline_params", "history", "input", "labels", "lift",
                      "probability", "progressive", "propensities", "ranking", "value"}
    h = r["history"]
    assert (h["customers"], h["split"], h["end"]) == (2357, SPLIT, "2026-06-30T23:59:59Z")
    assert (h["events_before_split"], h["events_after_split"]) == (4960, 1959)
    assert h["evaluation_days"] == 273.0 and h["horizon_days"] == 90
    assert sum(h["tiers_at_split"].values()) == 2357
    assert r["input"] == {"file": DEV_SET.name, "records": 6919, "dead_letters": 0}
    churned = r["labels"]["churned"]
    assert 0 < churned["positives"] < 2357
    # only orders in this history: bought again is exactly not churned
    assert r["labels"]["bought_again"]["positives"] == 2357 - churned["positives"]

    assert list(r["ranking"]) == sorted(SCORERS)
    for name, row in r["ranking"].items():
        assert row["what"] == SCORERS[name]
        for key in ("churn_roc_auc", "churn_pr_auc", "bought_again_roc_auc",
                    "bought_again_pr_auc"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
    for name in ("model_churn_probability", "supervised_ceiling"):
        p = r["probability"][name]
        assert p["log_loss"] > 0 and 0 <= p["brier"] <= 1 and 0 <= p["ece"] <= 1
        assert len(p["reliability"]) == 10
        assert sum(b["n"] for b in p["reliability"]) == 2357
    for table in r["lift"].values():
        assert [row["group"] for row in table] == list(range(1, 11))
        assert table[-1]["cumulative_gain"] == 1.0

    v = r["value"]
    assert v["days"] == 273.0 and v["scale_of_12m"] == round(273 / 365, 4)
    assert v["orders"]["actual_total"] == 1959  # every order after the split is counted
    for what in ("orders", "spend"):
        for name in ("model", "bgnbd", "past_rate"):
            assert v[what][name]["mae"] >= 0 and v[what][name]["rmse"] >= v[what][name]["mae"]

    al = r["alerts"]
    assert (al["months"], al["from"], al["to"]) == (6, "2025-03-30T23:59:59Z", SPLIT)
    per = al["per_1000_customers_per_month"]
    assert per["total"] == pytest.approx(sum(per[t] for t in al["counts"]), abs=1e-3)
    assert per["total"] == pytest.approx(sum(al["counts"].values()) * 1000 / 2357 / 6, abs=1e-3)
    for kind in ("churn_risk", "high_value_at_risk", "any"):
        pl = al["churn_alert_precision"][kind]
        assert pl["overall"]["n"] == 2357
        assert sum(t["n"] for t in pl["by_tier"].values()) == 2357
        assert sum(t["flagged"] for t in pl["by_tier"].values()) == pl["overall"]["flagged"]
    assert al["tier_changes"]["count"] >= 0


def test_recency_of_interaction_is_recency_of_orders_on_an_orders_only_history(dev_runs) -> None:
    a, _, table = dev_runs
    ranking = json.loads((a / "report.json").read_bytes())["ranking"]
    by_order, by_interaction = ranking["recency"], ranking["recency_interaction"]
    assert by_interaction["what"] == "baseline: days since last interaction"
    assert {k: v for k, v in by_order.items() if k != "what"} == {
        k: v for k, v in by_interaction.items() if k != "what"
    }
    assert "baseline: days since last interaction" in table


def test_progressive_quality_is_the_learners_report_and_covers_every_churn_label(
    dev_runs,
) -> None:
    a, _, table = dev_runs
    prog = json.loads((a / "report.json").read_bytes())["progressive"]
    assert set(prog["quality"]) == set(PROGRESSIVE_MODELS)
    q = prog["quality"]
    for name, row in q.items():
        assert "calibration" not in row, name
        assert row["n"] > 0 and 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["ece"] <= 1.0, name
    months = prog["by_month"]
    assert [m["month"] for m in months] == sorted(m["month"] for m in months)
    # every served churn prediction, held-back customers' included, resolved before the split
    assert sum(m["n"] for m in months) == q["churn"]["n"] + q["churn_holdout"]["n"]
    assert months[-1]["month"] <= SPLIT[:7] and prog["first_month"] == months[0]["month"]
    for m in months:
        assert m["status"] in ("ok", "fewer than 30", "one class")
        assert (m["auc"] is None) == (m["status"] == "one class")
    low = prog["min_auc_month"]
    assert low is not None
    assert min(m["auc"] for m in months if m["status"] == "ok") == next(
        m["auc"] for m in months if m["month"] == low
    )
    lines = table.rstrip("\n").splitlines()
    assert "progressive churn quality before the split" in table
    assert any(line.startswith(f"  {months[0]['month']} ") for line in lines)
    summary_line = next(line for line in lines[-25:] if line.startswith("progressive churn AUC"))
    assert f"first month with labels {months[0]['month']}" in summary_line
    assert "min over months with 30+ labels" in summary_line and f"({low})" in summary_line


def test_progressive_by_month_marks_thin_and_one_class_months() -> None:
    day = DAY_MS
    jan, feb, mar = 1704067200000, 1706745600000, 1709251200000  # 2024-01/02/03-01 UTC
    examples = [(jan + k * day // 10, float(k % 2), 0.2 + 0.6 * (k % 2)) for k in range(40)]
    examples += [(feb + day, 1.0, 0.7), (feb + 2 * day, 0.0, 0.4), (feb + 3 * day, 1.0, 0.3)]
    examples += [(mar + day, 1.0, 0.9)] * 5
    result = ReplayResult([], [], {"churn": {"n": 48, "auc": 0.9, "calibration": []}}, {},
                          churn_examples=examples)
    prog = progressive(result)
    assert prog["quality"] == {"churn": {"n": 48, "auc": 0.9}}
    rows = {m["month"]: m for m in prog["by_month"]}
    assert list(rows) == ["2024-01", "2024-02", "2024-03"]
    assert rows["2024-01"] == {"month": "2024-01", "n": 40, "churn_rate": 0.5,
                               "mean_predicted": pytest.approx(0.5), "auc": 1.0,
                               "status": "ok"}
    # 2 churners x 1 stayer: 0.7 beats 0.4, 0.3 does not
    assert rows["2024-02"]["auc"] == 0.5 and rows["2024-02"]["status"] == "fewer than 30"
    assert rows["2024-03"]["auc"] is None and rows["2024-03"]["status"] == "one class"
    assert (prog["first_month"], prog["min_auc_month"]) == ("2024-01", "2024-01")
    empty = progressive(ReplayResult([], [], {}, {}))
    assert empty["by_month"] == [] and empty["first_month"] is None
    assert empty["min_auc_month"] is None and empty["quality"] == {}


def test_report_json_is_byte_identical_across_runs(dev_runs) -> None:
    a, b, _ = dev_runs
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()


def test_charts_are_png_files(dev_runs) -> None:
    a, _, _ = dev_runs
    for name in ("calibration.png", "lift.png", "gain.png"):
        data = (a / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


def test_table_ends_with_a_summary_that_fits_in_25_lines(dev_runs) -> None:
    _, _, table = dev_runs
    lines = table.rstrip("\n").splitlines()
    tail = lines[-25:]
    start = next(i for i, line in enumerate(tail) if line.startswith("summary: "))
    assert any(line.startswith("churn ROC AUC") for line in tail[start:])
    assert tail[-1].startswith("outputs in ")
    assert "ranking: churned / bought again in 90 days" in table


def test_a_horizon_past_the_end_of_the_history_is_a_clear_error(tmp_path, capsys) -> None:
    code, _ = run_cli(str(DEV_SET), "--split", "2026-05-01T00:00:00Z", "--out", str(tmp_path))
    assert code == 2
    err = capsys.readouterr().err
    assert "90-day horizon needs at least 90" in err and "2026-06-30T23:59:59Z" in err
    assert not (tmp_path / "report.json").exists()


def test_evaluate_is_a_scorestream_command() -> None:
    args = cli.build_parser().parse_args(["evaluate", "h.jsonl", "--split", SPLIT])
    assert args.command == "evaluate" and args.horizon_days == 90 and args.alert_months == 6
    assert args.out == Path("out/evaluate")


def _event(cid: str, day: float, etype: str = "order_placed", **payload: Any) -> dict[str, Any]:
    """Customer `cid`'s event `day` days after the epoch."""
    return ev(f"{cid}@{day}", etype, occurred_at=int(day * DAY_MS), customer_id=cid, **payload)


def test_labels_and_calibration_summaries_by_hand() -> None:
    split = 101 * DAY_MS - 1000  # last second of day 100; horizon ends on day 190
    events = [
        _event("A", 10.5, amount=10.0),
        _event("A", 50.5, amount=20.0, currency="USD"),  # 18.40 EUR
        _event("A", 120.5, amount=5.0),  # bought again, within the horizon
        _event("B", 20.5, amount=7.0),
        _event("B", 150.5, "page_view"),  # an interaction: not churned
        _event("B", 250.5, amount=9.0),  # an order after the horizon: counts for value only
        _event("C", 30.5, amount=3.0),
        _event("C", 105.5, "login"),
        _event("C", 110.5, "subscription_cancelled"),  # cancelled: churned all the same
        _event("D", 160.5, amount=4.0),  # new after the split: not evaluated
        _event("E", 40.5, "page_view"),  # never ordered, silent afterwards: churned
        _event("E", 60.5, "sent"),  # a message we sent: not an interaction
    ]
    before, after, counts = summarize(events, split, 300 * DAY_MS, 90)
    assert counts == {"events_before_split": 6, "events_after_split": 6, "events_after_end": 0}
    assert sorted(before) == ["A", "B", "C", "E"]
    a = before["A"]
    assert a.last_interaction_ms == a.last_order_ms == int(50.5 * DAY_MS)
    assert before["E"].last_interaction_ms == int(40.5 * DAY_MS)
    assert (a.orders, sorted(a.order_days), a.spend_cents) == (2, [10, 50], 2840)
    assert rfm_at(a, split) == (1.0, 40.0, 90.0, 2.0, 14.2)
    assert rfm_at(before["E"], split) is None
    assert after["A"] == Outcome(interactions_h=1, orders_h=1, orders=1, spend_cents=500)
    assert after["B"] == Outcome(interactions_h=1, orders_h=0, orders=1, spend_cents=900)
    assert after["C"].cancelled_h and after["C"].interactions_h == 1
    assert "E" not in after


def test_window_and_time_helpers() -> None:
    split = 1759276799000
    assert iso(split) == SPLIT
    assert iso(months_before(split, 6)) == "2025-03-30T23:59:59Z"
    assert iso(months_before(split, 12)) == "2024-09-30T23:59:59Z"
    assert iso(months_before(1767225599000, 10)) == "2025-02-28T23:59:59Z"  # from Dec 31
    end = history_end([{"occurred_at": split + 5 * DAY_MS}, {"occurred_at": split}])
    assert end is not None and iso(end) == "2025-10-05T23:59:59Z"
    check_window(split, split + 90 * DAY_MS, 90)
    with pytest.raises(ValueError, match="needs at least 90"):
        check_window(split, split + 89 * DAY_MS, 90)
    with pytest.raises(ValueError, match="no valid events"):
        check_window(split, history_end([]), 90)


def test_replay_lists_tier_changes_behind_every_tier_downgrade_alert() -> None:
    events, _ = generate(60, seed=4, days=300)
    result = replay(ingest(sort_raw(iter_lines(events))))
    changes = result.tier_changes
    assert changes and all(c["from"] != c["to"] for c in changes)
    moves = {(c["customer_id"], c["event_time"]): (c["from"], c["to"]) for c in changes}
    downgrades = [a for a in result.alerts if a["alert_type"] == "tier_downgrade"]
    assert downgrades
    for alert in downgrades:
        old, new = moves[(alert["customer_id"], alert["event_time"])]
        assert old in ("VIP", "Premium") and new == alert["scorecard"]["tier"]
