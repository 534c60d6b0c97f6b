"""`scorestream evaluate HISTORY --split TIME`: how good were the scorecards, judged by the future?

Replays the history up to the split (like `scorestream replay --as-of`), freezes every
customer's scorecard there, and compares it with what the same history says happened after
it (`models.history.backtest`): churn and bought-again ranking beside simple baselines and a
cross-validated ceiling, probability quality, value errors, alert rates and precision, and
the learner's own progressive (delayed-label) churn quality before the split, by month.
Prints one plain-text table (its last lines are a compact summary) and writes report.json
(sorted keys, byte-identical across runs), calibration.png, lift.png and gain.png into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from models.history.backtest import (
    CHURN_ALERTS,
    LIFT_SCORERS,
    PROGRESSIVE_MODELS,
    Backtest,
    backtest,
    check_window,
    history_end,
)
from models.history.replay import ingest, parse_time, sort_raw
from streams.cli.replay import read_lines, replay_with_progress

__all__ = [
    "add_arguments",
    "main",
    "progressive_line",
    "progressive_table",
    "propensity_table",
    "render",
    "run",
    "summary",
    "write_charts",
]

_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2

#: Short column names of the scorers in the summary.
_SHORT = {
    "model_churn_probability": "model",
    "recency": "last ord.",
    "recency_interaction": "last int.",
    "purchase_rate": "rate",
    "bgnbd_p_alive": "P(alive)",
    "bgnbd_expected_orders": "E[orders]",
    "supervised_ceiling": "ceiling",
}
#: Row labels of the lift table (deciles of customers by churn score, 1 = highest).
_LIFT_LABELS = {
    "model_churn_probability": "model: churn probability",
    "recency": "recency",
    "bgnbd_expected_orders": "BG/NBD expected orders",
    "supervised_ceiling": "ceiling (5-fold CV)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `scorestream evaluate`."""
    parser.add_argument("history", type=Path, help="JSON lines of source events (.gz allowed)")
    parser.add_argument(
        "--split",
        required=True,
        help="freeze scorecards at this event time (RFC 3339 or epoch ms); later events are truth",
    )
    parser.add_argument(
        "--horizon-days",
        dest="horizon_days",
        type=int,
        default=90,
        help="churned / bought again = no interaction / an order within this many days after "
        "the split (default 90)",
    )
    parser.add_argument(
        "--alert-months",
        dest="alert_months",
        type=int,
        default=6,
        help="alert rates over this many calendar months before the split (default 6)",
    )
    parser.add_argument(
        "--end",
        default=None,
        help="end of the evaluation period (default: the last second of the latest event's day)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/evaluate"), help="output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Replay to the split, evaluate, write the outputs and print the table; the exit code."""
    started = time.perf_counter()
    if args.horizon_days < 1 or args.alert_months < 1:
        print("scorestream evaluate: --horizon-days and --alert-months must be >= 1",
              file=sys.stderr)
        return 2
    try:
        split = parse_time(args.split)
        end_arg = parse_time(args.end) if args.end is not None else None
    except ValueError as err:
        print(f"scorestream evaluate: bad time: {err}", file=sys.stderr)
        return 2
    if not args.history.is_file():
        print(f"scorestream evaluate: no such file: {args.history}", file=sys.stderr)
        return 2
    records = sort_raw(read_lines(args.history))
    dead: list[dict[str, Any]] = []
    events = list(ingest(records, dead=dead))
    end = end_arg if end_arg is not None else history_end(events)
    try:
        check_window(split, end, args.horizon_days)
    except ValueError as err:
        print(f"scorestream evaluate: {err}", file=sys.stderr)
        return 2
    assert end is not None
    result = replay_with_progress("evaluate", iter(events), len(events), args, as_of_ms=split)
    try:
        bt = backtest(
            events,
            result,
            split_ms=split,
            end_ms=end,
            horizon_days=args.horizon_days,
            alert_months=args.alert_months,
        )
    except ValueError as err:
        print(f"scorestream evaluate: {err}", file=sys.stderr)
        return 2
    report = dict(bt.report, input={"file": args.history.name, "records": len(records),
                                    "dead_letters": len(dead)})
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(orjson.dumps(report, option=_ORJSON) + b"\n")
    charts = write_charts(bt, out)
    lines = render(report)
    lines.append(
        f"outputs in {out}: report.json, {', '.join(p.name for p in charts)} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    print("\n".join(lines))
    return 0


# -- the table -----------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 3, width: int = 7) -> str:
    """A figure right-aligned in `width`, '-' when undefined."""
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def render(report: dict[str, Any]) -> list[str]:
    """The plain-text table: details first, then a summary of at most 25 lines at the end."""
    h, labels, rank = report["history"], report["labels"], report["ranking"]
    prob, value, alerts = report["probability"], report["value"], report["alerts"]
    horizon = h["horizon_days"]
    lines = [
        f"evaluate {report['input']['file']}: split {h['split']}, horizon {horizon} days",
        f"evaluation period to {h['end']} ({h['evaluation_days']:.1f} days); customers "
        f"{h['customers']} ({h['customers_without_orders']} without orders)",
        f"churned {labels['churned']['rate']:.3f}, bought again "
        f"{labels['bought_again']['rate']:.3f} within {horizon} days",
        "tiers at the split: "
        + ", ".join(f"{t} {n}" for t, n in h["tiers_at_split"].items()),
        "",
        f"{'ranking: churned / bought again in ' + str(horizon) + ' days':<46}"
        f"{'churn ROC':>10}{'PR AUC':>8}{'bought ROC':>11}{'PR AUC':>8}",
    ]
    for r in rank.values():
        lines.append(
            f"  {r['what']:<44}{_f(r['churn_roc_auc'], width=10)}{_f(r['churn_pr_auc'], width=8)}"
            f"{_f(r['bought_again_roc_auc'], width=11)}{_f(r['bought_again_pr_auc'], width=8)}"
        )
    lines += ["", f"{'churn probability':<46}{'log loss':>10}{'Brier':>8}{'ECE':>8}{'mean p':>8}"
              f"{'sd p':>7}{'distinct':>9}"]
    for name, p in prob.items():
        lines.append(
            f"  {rank[name]['what']:<44}{_f(p['log_loss'], width=10)}{_f(p['brier'], width=8)}"
            f"{_f(p['ece'], width=8)}{_f(p['mean_predicted'], width=8)}"
            f"{_f(p['std_predicted'], width=7)}{p['distinct_predicted']:>9}"
        )
    lines += ["", f"{'reliability of the model (10 bins)':<46}{'n':>10}{'mean p':>8}"
              f"{'observed':>9}"]
    for b in prob["model_churn_probability"]["reliability"]:
        lines.append(
            f"  {b['lower']:.1f}-{b['upper']:.1f}{'':<37}{b['n']:>10}"
            f"{_f(b['mean_predicted'], width=8)}{_f(b['observed'], width=9)}"
        )
    lines += ["", f"{'churn lift by decile':<36}" + "".join(f"{d:>6}" for d in range(1, 11))]
    for name, table in report["lift"].items():
        lines.append(
            f"  {_LIFT_LABELS[name]:<34}" + "".join(_f(row["lift"], 2, 6) for row in table)
        )
    lines += ["", f"value over {value['days']:.1f} days (12 m x {value['scale_of_12m']:.3f})"
              f"{'':<12}{'mean pred':>10}{'actual':>8}{'MAE':>8}{'RMSE':>8}"]
    for what in ("orders", "spend"):
        v = value[what]
        for name, label in (("model", "model (scaled)"), ("bgnbd", "BG/NBD + Gamma-Gamma"),
                            ("past_rate", "past repeat rate")):
            lines.append(
                f"  {what:<7}{label:<37}{_f(v[name]['mean_predicted'], 2, 10)}"
                f"{_f(v['actual_mean'], 2, 8)}{_f(v[name]['mae'], 2, 8)}"
                f"{_f(v[name]['rmse'], 2, 8)}"
            )
    per = alerts["per_1000_customers_per_month"]
    lines += ["", f"alerts {alerts['from'][:10]} .. {alerts['to'][:10]} "
              f"({alerts['months']} months){'':<8}{'count':>10}{'/1000/mo':>9}"]
    for t, c in alerts["counts"].items():
        lines.append(f"  {t:<44}{c:>10}{_f(per[t], 2, 9)}")
    lines.append(f"  {'total':<44}{sum(alerts['counts'].values()):>10}{_f(per['total'], 2, 9)}")
    lines += ["", f"churn alerts -> churned within {horizon} days{'':<14}"
              f"{'alerted':>10}{'precision':>10}{'base':>7}{'lift':>7}"]
    for kind, pl in alerts["churn_alert_precision"].items():
        groups = [("all tiers", pl["overall"]), *pl["by_tier"].items()]
        for tier, g in groups:
            if kind != "any" and tier != "all tiers":
                continue
            lines.append(
                f"  {kind + ' / ' + tier:<44}{g['flagged']:>10}{_f(g['precision'], 3, 10)}"
                f"{_f(g['base_rate'], 3, 7)}{_f(g['lift'], 2, 7)}"
            )
    tc = alerts["tier_changes"]
    lines += [
        "",
        f"tier changes per customer per year: {tc['per_customer_per_year']:.2f} "
        f"({tc['count']} changes in {alerts['months']} months)",
        f"tier alerts per customer per year: vip_upgrade "
        f"{tc['tier_alerts_per_customer_per_year']['vip_upgrade']:.2f}, tier_downgrade "
        f"{tc['tier_alerts_per_customer_per_year']['tier_downgrade']:.2f}",
        "",
        *propensity_table(report["propensities"]),
        "",
        *progressive_table(report["progressive"]),
    ]
    return [*lines, "", *summary(report)]


_OUTCOMES = {
    "upsell": "upsell: first order in a new category or an upgrade",
    "advocacy": "advocacy: next NPS answer is a promoter's",
}


def propensity_table(props: dict[str, Any]) -> list[str]:
    """Upsell and advocacy at the split against what followed, beside the baselines."""
    lines = [f"{'propensities (ROC AUC)':<46}{'n':>7}{'rate':>7}{'model':>8}{'recency':>8}"
             f"{'freq.':>7}{'ECE':>7}"]
    for name, what in _OUTCOMES.items():
        lines.append(f"  {what:<44}" + _propensity_cells(props[name]))
    return lines


def _propensity_line(name: str, r: dict[str, Any]) -> str:
    """One summary line: the model's ROC AUC beside the baselines', or why there is none."""
    if "roc_auc" not in r:
        return f"{name + ' ROC AUC':<24}{'-':>10}   no labels: {r['status']}"
    auc, prob = r["roc_auc"], r.get("probability") or {}
    return (f"{name + ' ROC AUC':<24}{_f(auc.get('model'), width=10)}   recency "
            f"{_f(auc['recency']).strip()}, frequency {_f(auc['frequency']).strip()}; n {r['n']}, "
            f"rate {_f(r['rate']).strip()}, ECE {_f(prob.get('ece')).strip()}"
            + ("" if r["status"] == "ok" else f" ({r['status']})"))


def _propensity_cells(r: dict[str, Any]) -> str:
    """n, rate, AUCs and ECE of one propensity, or why there are none."""
    if "roc_auc" not in r:
        return f"{r['n']:>7}  ({r['status']})"
    auc, prob = r["roc_auc"], r.get("probability") or {}
    note = "" if r["status"] == "ok" else f"  ({r['status']})"
    return (f"{r['n']:>7}{_f(r['rate'], width=7)}{_f(auc.get('model'), width=8)}"
            f"{_f(auc['recency'], width=8)}{_f(auc['frequency'], width=7)}"
            f"{_f(prob.get('ece'), width=7)}{note}")


def progressive_table(prog: dict[str, Any]) -> list[str]:
    """The learner's delayed-label churn quality before the split, and churn AUC by month."""
    lines = [f"{'progressive churn quality before the split':<46}{'n':>8}{'ROC AUC':>9}"
             f"{'ECE':>7}{'log loss':>9}"]
    for name, what in PROGRESSIVE_MODELS.items():
        q = prog["quality"].get(name)
        if q is None:
            continue
        lines.append(
            f"  {name + ': ' + what:<44}{q['n']:>8}{_f(q['auc'], width=9)}"
            f"{_f(q['ece'], width=7)}{_f(q['log_loss'], width=9)}"
        )
    lines += ["", f"{'churn labels by month resolved, logged p':<46}{'n':>8}{'churned':>9}"
              f"{'mean p':>7}{'ROC AUC':>9}"]
    for m in prog["by_month"]:
        note = "" if m["status"] == "ok" else f"  ({m['status']})"
        lines.append(
            f"  {m['month']:<44}{m['n']:>8}{_f(m['churn_rate'], width=9)}"
            f"{_f(m['mean_predicted'], width=7)}{_f(m['auc'], width=9)}{note}"
        )
    if not prog["by_month"]:
        lines.append("  no churn label resolved before the split")
    return lines


def progressive_line(prog: dict[str, Any]) -> str:
    """One summary line: the first month with labels, and the worst month with enough."""
    months = {m["month"]: m for m in prog["by_month"]}
    first, low = prog["first_month"], prog["min_auc_month"]
    if first is None:
        return "progressive churn AUC: no churn label resolved before the split"
    low_text = (f"{_f(months[low]['auc']).strip()} ({low})" if low is not None
                else "- (no such month)")
    return (
        f"progressive churn AUC: first month with labels {first} "
        f"{_f(months[first]['auc']).strip()}, min over months with "
        f"{prog['min_examples']}+ labels {low_text}"
    )


def summary(report: dict[str, Any]) -> list[str]:
    """The compact end of the table (under 25 lines with the outputs line)."""
    h, rank, prob = report["history"], report["ranking"], report["probability"]
    value, alerts = report["value"], report["alerts"]
    model, ceiling = prob["model_churn_probability"], prob["supervised_ceiling"]

    def row(label: str, key: str) -> str:
        return f"{label:<24}" + "".join(_f(rank[name][key], width=10) for name in _SHORT)

    def errors(label: str, v: dict[str, Any]) -> str:
        return (
            f"{label:<24}{_f(v['model']['mae'], 2, 10)}{_f(v['model']['rmse'], 2, 10)}"
            f"   BG/NBD {v['bgnbd']['mae']:.2f} / {v['bgnbd']['rmse']:.2f}; mean "
            f"{v['model']['mean_predicted']:.2f} vs {v['actual_mean']:.2f} actual"
        )

    any_alert = alerts["churn_alert_precision"]["any"]["overall"]
    per = alerts["per_1000_customers_per_month"]
    by_orders = rank["model_expected_orders"]
    return [
        f"summary: {h['customers']} customers, split {h['split'][:10]}, "
        f"{h['evaluation_days']:.0f} days after, horizon {h['horizon_days']} days, "
        f"churned {report['labels']['churned']['rate']:.3f}",
        "columns: model; baselines days since last order / interaction, orders per day of age,",
        "BG/NBD P(alive) and expected orders; ceiling (logistic regression, 5-fold CV)",
        f"{'':<24}" + "".join(f"{short:>10}" for short in _SHORT.values()),
        row("churn ROC AUC", "churn_roc_auc"),
        row("churn PR AUC", "churn_pr_auc"),
        row("bought again ROC AUC", "bought_again_roc_auc"),
        f"{'model E[orders 12m] AUC':<24}{_f(by_orders['churn_roc_auc'], width=10)}"
        f"   churn; {by_orders['bought_again_roc_auc']:.3f} bought again",
        f"{'churn log loss / Brier':<24}{_f(model['log_loss'], width=10)}"
        f"{_f(model['brier'], width=10)}   ceiling {ceiling['log_loss']:.3f} / "
        f"{ceiling['brier']:.3f}",
        f"{'churn ECE / mean p':<24}{_f(model['ece'], width=10)}"
        f"{_f(model['mean_predicted'], width=10)}   ceiling {ceiling['ece']:.3f} / "
        f"{ceiling['mean_predicted']:.3f}",
        errors("orders MAE / RMSE", value["orders"]),
        errors("spend MAE / RMSE", value["spend"]),
        f"{'alerts /1000/month':<24}{_f(per['total'], 1, 10)}   "
        + ", ".join(f"{t} {per[t]:.1f}" for t in alerts["counts"] if t in CHURN_ALERTS),
        f"{'':<34}   " + ", ".join(
            f"{t} {per[t]:.1f}" for t in alerts["counts"] if t not in CHURN_ALERTS),
        f"{'churn alert precision':<24}{_f(any_alert['precision'], width=10)}"
        f"   lift {_f(any_alert['lift'], 2, 4).strip()} over the base rate "
        f"({any_alert['flagged']} customers alerted)",
        f"{'tier changes /cust./year':<24}"
        f"{_f(alerts['tier_changes']['per_customer_per_year'], 2, 10)}",
        *(_propensity_line(name, report["propensities"][name]) for name in _OUTCOMES),
        progressive_line(report["progressive"]),
    ]


# -- the pictures ---------------------------------------------------------------------------------


def write_charts(bt: Backtest, out: Path) -> list[Path]:
    """calibration.png (reliability), lift.png (churn lift by decile), gain.png (cumulative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from models.history import metrics as ev

    names = {n: bt.report["ranking"][n]["what"] for n in bt.churn_scores}
    meta = {"Software": None}
    paths = []

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    width = 0.04
    for k, name in enumerate(("model_churn_probability", "supervised_ceiling")):
        table = bt.report["probability"][name]["reliability"]
        rows = [b for b in table if b["n"]]
        top.plot([b["mean_predicted"] for b in rows], [b["observed"] for b in rows],
                 marker="o", label=names[name])
        bottom.bar([b["lower"] + 0.03 + k * width for b in table], [b["n"] for b in table],
                   width=width, label=names[name])
    top.set_ylabel("observed churn rate")
    top.set_title("Churn reliability (10 equal-width bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("predicted churn probability")
    bottom.set_ylabel("customers")
    paths.append(_save(fig, out / "calibration.png", meta))

    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    deciles = np.arange(1, 11)
    width = 0.8 / len(LIFT_SCORERS)
    for k, name in enumerate(LIFT_SCORERS):
        lifts = [row["lift"] or 0.0 for row in ev.lift_table(bt.churned, bt.churn_scores[name])]
        ax.bar(deciles - 0.4 + (k + 0.5) * width, lifts, width=width, label=names[name])
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set_xticks(deciles)
    ax.set_xlabel("decile of customers by churn score (1 = highest)")
    ax.set_ylabel("churn rate / base rate")
    ax.set_title("Churn lift by decile")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    paths.append(_save(fig, out / "lift.png", meta))

    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    n = len(bt.churned)
    share = np.arange(n + 1) / n
    base = float(bt.churned.mean())
    ax.plot([0, base, 1], [0, 1, 1], color="black", linewidth=0.8, label="perfect")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    for name in LIFT_SCORERS:
        ax.plot(share, ev.cumulative_gain(bt.churned, bt.churn_scores[name]), label=names[name])
    ax.set_xlabel("share of customers contacted (highest churn score first)")
    ax.set_ylabel("share of churners reached")
    ax.set_title("Cumulative gain (churn)")
    ax.legend(fontsize=8, loc="lower right")
    paths.append(_save(fig, out / "gain.png", meta))
    return paths


def _save(fig: Any, path: Path, meta: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, metadata=meta)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m streams.cli.evaluate`)."""
    parser = argparse.ArgumentParser(prog="scorestream evaluate", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from streams.settings import Settings

    args.settings = Settings.from_env()
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
