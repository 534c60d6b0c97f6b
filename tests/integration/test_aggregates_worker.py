"""The management scorecard on the real broker, with two workers sharing the partitions.

A generated history (orders over several months, web sessions with channels, one of them a
hostile name, survey answers, support ratings, one customer erased at the end) is produced to
the source topics; two workers with frozen models score it. Then, from either worker:

* `GET /aggregates` covers every partition (each worker gathers the other's) and equals a
  batch computation over the latest scorecards in the committed changelog, every field;
* what depends only on the events (customers, orders, historic revenue and AOV per cohort
  and channel, the survey KPIs) equals a replay of the same history;
* the gauges of both workers add up to the whole base;
* the trend: the history is produced in two parts; the KPIs `/aggregates` reported after the
  first are what the learner recorded for that day, and at the end each KPI's change is
  against the latest recorded day at least 30 days back;
* the worker's page, in a real headless chromium, asks for the token, then shows the same
  numbers as the API (the trends too), the hostile channel name as text, and a customer's
  scorecard.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.history.replay import ingest, replay, sort_raw
from models.scoring.aggregates import Aggregates, kpi_values
from models.scoring.scorecard import Scorecard
from models.scoring.trend import TREND_DAYS, day_text
from tests.integration.alerting_script import wait_until
from tests.integration.browser import Browser
from tests.integration.fault_tools import changelog_states
from tests.integration.kafka_tools import (
    free_port,
    http_get,
    produce,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import DAY_MS, T0

pytestmark = pytest.mark.integration

CUSTOMERS, DAYS, SEED = 40, 120, 5
TOKEN = "aggregates-test-token-01234"
HOSTILE = "<img src=x onerror=\"window.pwned=1\">"
CHANNELS = ("organic", "paid", "email", HOSTILE)
ERASED = "G007"
SPLIT_DAY = 60
"""The first part of the history is its events before this day."""


def history() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    records: list[dict[str, Any]] = []

    def add(customer: str, source: str, event_type: str, at: int, **payload: Any) -> None:
        records.append({"event_id": f"{customer}-{len(records)}", "source": source,
                        "event_type": event_type, "occurred_at": at, "customer_id": customer,
                        "payload": payload})

    for c in range(CUSTOMERS):
        customer = f"G{c:03d}"
        for day in sorted(rng.sample(range(DAYS), rng.randrange(1, 8))):
            at = T0 + day * DAY_MS + rng.randrange(DAY_MS // 2)
            if rng.random() < 0.6:
                add(customer, "web", "session_started", at, channel=rng.choice(CHANNELS))
            if rng.random() < 0.5:
                add(customer, "crm", "order_placed", at + 60_000, order_id=f"{customer}-{day}",
                    amount=round(rng.uniform(5, 400), 2), currency="EUR",
                    categories=[("books", "music", "film")[day % 3]])
            if rng.random() < 0.2:
                survey = rng.choice(["nps", "csat", "ces"])
                top = {"nps": 10, "csat": 5, "ces": 7}[survey]
                add(customer, "support", "survey_answered", at + 120_000, survey=survey,
                    score=rng.randrange(0 if survey == "nps" else 1, top + 1))
            if rng.random() < 0.1:
                add(customer, "support", "satisfaction_rated", at + 180_000,
                    ticket_id=f"t{len(records)}", csat=rng.randrange(1, 6))
    add(ERASED, "crm", "customer_erased", T0 + (DAYS + 5) * DAY_MS)
    return records


def _get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    """GET with the API token (or none): (status, body); (0, b"") when unreachable."""
    return http_get(url, token, timeout=20)


def _aggregates(url: str) -> dict[str, Any]:
    status, body = _get(f"{url}/aggregates")
    return orjson.loads(body) if status == 200 else {}


def _rows(report: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(row["kind"], row["name"]): row for row in report["segments"]}


def _settled(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a whole-base row counts every customer, order and survey answer of the
    replay's (the sources' topics arrive in any order, so orders alone say too little)."""
    return (got["customers"] == want["customers"]
            and got["totals"]["orders"] == want["totals"]["orders"]
            and all(got[s]["answers"] == want[s]["answers"] for s in ("nps", "csat", "ces")))


def _gauge_sum(texts: list[str], prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for text in texts for line in text.splitlines()
               if line.startswith(prefix))


def test_aggregates_of_two_workers_equal_a_batch_computation_and_a_replay(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    records = history()
    lines = [orjson.dumps(r) for r in records]
    reference = replay(ingest(sort_raw(lines), dead=[]))
    expected = Aggregates.of(
        Scorecard.from_row(s.last) for s in reference.states.values() if s.last)
    want = _rows(orjson.loads(orjson.dumps(expected.report(limit=1000))))
    known = len({r["customer_id"] for r in records}) - 1  # the erased one is gone
    assert want[("all", None)]["customers"] == known > CUSTOMERS // 2
    assert want[("all", None)]["nps"]["answers"] > 3 and want[("all", None)]["csat"]["answers"]
    assert ("channel", HOSTILE) in want and ("cohort", None) in want

    topics = topic_names(unique_name)
    app_id = f"agg-{unique_name}"
    envs = [worker_env(kafka_bootstrap, app_id, topics, tmp_path / f"state-{name}",
                       free_port(), SCORESTREAM_API_TOKEN=TOKEN, SCORESTREAM_MODEL_FROZEN="true",
                       SCORESTREAM_KPI_TARGETS="nps=20,churn_rate=0.5",
                       SCORESTREAM_MODEL_PUBLISH_INTERVAL_S="2",
                       SCORESTREAM_MODEL_SHARE_INTERVAL_S="1")
            for name in ("a", "b")]
    split = T0 + SPLIT_DAY * DAY_MS
    first = [r for r in records if r["occurred_at"] < split]
    first_state = replay(ingest(sort_raw([orjson.dumps(r) for r in first]), dead=[]))
    first = _rows(orjson.loads(orjson.dumps(Aggregates.of(
        Scorecard.from_row(s.last) for s in first_state.states.values() if s.last
    ).report(limit=1000))))[("all", None)]

    def send(part: list[dict[str, Any]]) -> None:
        for source in ("web", "crm", "support"):
            produce(kafka_bootstrap, topics[source],
                    [(r["customer_id"].encode(), orjson.dumps(r)) for r in part
                     if r["source"] == source])

    send([r for r in records if r["occurred_at"] < split])
    with (running_worker(envs[0], tmp_path / "a.log") as a,
          running_worker(envs[1], tmp_path / "b.log") as b):

        def logs() -> str:
            return f"a:\n{a.log_tail(30)}\nb:\n{b.log_tail(30)}"

        def owned(worker: Any) -> int:
            """customer-events partitions the worker's scoring stage owns."""
            text = _get(f"{worker.web_url}/metrics")[1].decode()
            return sum(1 for line in text.splitlines()
                       if line.startswith("scorestream_consumer_lag_records{")
                       and f'topic="{topics["customer_events"]}"' in line)

        def both_own_and_all_scored() -> bool:
            # each worker owns some partitions: the reports are gathered, not local
            split = owned(a), owned(b)
            if not all(split) or sum(split) != 4:
                return False
            got = _aggregates(a.web_url)
            whole = _rows(got).get(("all", None)) if got else None
            return (got.get("complete") is True and whole is not None
                    and _settled(whole, want[("all", None)]))

        def first_part_scored() -> bool:
            got = _aggregates(a.web_url)
            whole = _rows(got).get(("all", None)) if got else None
            return got.get("complete") is True and whole is not None and _settled(whole, first)

        wait_until(first_part_scored, 180, "the first part scored", logs)
        then = _aggregates(a.web_url)
        then_day = day_text(then["as_of"] // DAY_MS)
        then_kpis = kpi_values(_rows(then)[("all", None)])

        def recorded() -> bool:
            days = {h["day"]: h["kpis"] for h in _aggregates(b.web_url).get("history", [])}
            return days.get(then_day) == then_kpis

        # the scorers send their whole base every second, the learner publishes every 2 s
        wait_until(recorded, 60, f"the KPIs of {then_day} in the history", logs)
        assert then["trend"] == {"days": TREND_DAYS, "against": None, "kpis": {}}
        send([r for r in records if r["occurred_at"] >= split])
        wait_until(both_own_and_all_scored, 180, "both workers scoring every event", logs)

        def today_recorded() -> bool:
            got = _aggregates(a.web_url)
            whole = _rows(got)[("all", None)]
            return got["history"][-1] == {"day": day_text(got["as_of"] // DAY_MS),
                                          "kpis": kpi_values(whole)}

        wait_until(today_recorded, 60, "the last day's KPIs in the history", logs)
        from_a, from_b = _aggregates(a.web_url), _aggregates(b.web_url)
        assert _get(f"{a.web_url}/aggregates", token=None)[0] == 401
        assert _get(f"{a.web_url}/aggregates?limit=0")[0] == 400
        status, top = _get(f"{b.web_url}/aggregates?limit=1")
        metrics = [_get(f"{w.web_url}/metrics")[1].decode() for w in (a, b)]
        assert owned(a) + owned(b) == 4
        states = changelog_states(kafka_bootstrap, f"{app_id}-customer-state-changelog")
        _page(a.web_url, tmp_path / "chromium", from_a)

    assert from_a["partitions"] == {"covered": [0, 1, 2, 3], "total": 4, "missing": []}
    assert from_a["segments"] == from_b["segments"]
    # every field equals a batch computation over the committed latest scorecards
    batch = Aggregates.of(Scorecard.from_row(s.last) for s in states.values() if s.last)
    assert ERASED not in states
    assert orjson.loads(orjson.dumps(batch.report(limit=100)["segments"])) == from_a["segments"]
    # the trend: against the latest recorded day at least 30 days back (the first part's
    # day or a later one)
    whole = _rows(from_a)[("all", None)]
    today = from_a["as_of"] // DAY_MS
    days = {h["day"]: h["kpis"] for h in from_a["history"]}
    against = max(d for d in days if d <= day_text(today - TREND_DAYS))
    assert from_a["trend"]["against"] == against and against >= then_day
    assert from_a["trend"] == from_b["trend"]
    for kpi, now in kpi_values(whole).items():
        before = days[against].get(kpi)
        row = from_a["trend"]["kpis"][kpi]
        assert row["previous"] == before, kpi
        assert row["change"] == (None if now is None or before is None else now - before), kpi
    assert from_a["trend"]["kpis"]["customers"]["change"] is not None
    # targets: the whole base's actual value beside each
    assert [(t["kpi"], t["target"], t["actual"]) for t in from_a["targets"]] == [
        ("nps", 20.0, whole["nps"]["value"]), ("churn_rate", 0.5, whole["churn_rate"])]
    # what only the events decide equals the replay
    got = _rows(from_a)
    assert {k for k in got if k[0] != "tier"} == {k for k in want if k[0] != "tier"}
    for key, row in want.items():
        if key[0] == "tier":
            continue
        assert got[key]["customers"] == row["customers"], key
        assert got[key]["totals"]["orders"] == row["totals"]["orders"], key
        assert got[key]["totals"]["ltv_historic"] == pytest.approx(row["totals"]["ltv_historic"])
        assert got[key]["aov"] == pytest.approx(row["aov"]), key
        for survey in ("nps", "csat", "ces"):
            assert got[key][survey] == row[survey], (key, survey)
    # the hostile channel name comes back as the same string, never interpreted
    assert got[("channel", HOSTILE)]["customers"] == want[("channel", HOSTILE)]["customers"]
    # limit=1: one channel listed, the rest added up
    assert status == 200
    channels = [r for r in orjson.loads(top)["segments"] if r["kind"] == "channel"]
    assert len(channels) == 2 and channels[1]["other"] is True
    assert channels[0]["customers"] + channels[1]["customers"] == known
    # the gauges of both workers add up to the whole base
    assert _gauge_sum(metrics, "scorestream_customers_by_tier{") == known
    answers = _gauge_sum(metrics, 'scorestream_survey_answers{answer="promoter",survey="nps"}')
    assert answers == whole["nps"]["promoters"]
    assert _gauge_sum(metrics, "scorestream_expected_churners{") == pytest.approx(
        whole["totals"]["expected_churners"])


def _page(url: str, profile: Path, api: dict[str, Any]) -> None:
    """What the page shows, read in chromium after logging in with the token; checks the
    login and the escaping on the way."""
    with Browser(profile) as browser:
        browser.navigate(f"{url}/")  # the root leads to the page
        browser.wait_for("!document.getElementById('login').hidden", what="the token prompt")
        assert browser.evaluate("document.getElementById('board').hidden") is True
        assert browser.evaluate("location.pathname") == "/ui/"
        for token, expect in (("wrong-token-0123456789", "refused"), (TOKEN, None)):
            typed = orjson.dumps(token).decode()
            browser.evaluate(f"document.getElementById('token').value = {typed};"
                             "document.getElementById('login').requestSubmit()")
            if expect:
                browser.wait_for(f"document.getElementById('login-error').textContent"
                                 f".includes({expect!r})", what="the refusal")
        browser.wait_for("document.body.dataset.loaded", what="the figures")
        # so far only the refusals expected: before the token, and with the wrong one
        early = browser.problems()
        assert early and all("401" in p and "/aggregates" in p for p in early), early
        browser.events.clear()
        browser.wait_for("!!document.querySelector('#tier-chart .main-svg')",
                         what="the chart")
        shown = browser.evaluate("""({
            tiles: Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [
                t.dataset.kpi, [t.querySelector('.value').dataset.value,
                                t.querySelector('.target')?.dataset.target ?? null]])),
            changes: Object.fromEntries([...document.querySelectorAll('.tile')].map(t => [
                t.dataset.kpi, t.querySelector('.trend')?.dataset.change ?? null])),
            sparklines: document.querySelectorAll('.tile svg.spark polyline').length,
            trends: [...document.querySelectorAll('.tile .trend')].map(t => t.textContent),
            attribution_hidden: document.getElementById('attribution').hidden,
            tiers: [...document.querySelectorAll('#tiers tbody tr')].map(r => [
                r.dataset.tier, Number(r.dataset.customers), Number(r.dataset.revenueAtRisk)]),
            channels: [...document.querySelectorAll('#channels tbody td:first-child')]
                .map(td => td.textContent),
            cohort_nrr: [...document.querySelectorAll('#cohorts tbody tr')]
                .map(r => r.dataset.nrr),
            images: document.querySelectorAll('img').length,
            pwned: window.pwned ?? null,
        })""")
        ordered = {r["customer_id"] for r in history() if r["event_type"] == "order_placed"}
        customer = next(r["customer_id"] for r in history()
                        if r["event_type"] == "session_started"
                        and r["payload"]["channel"] == HOSTILE and r["customer_id"] != ERASED
                        and r["customer_id"] in ordered)
        browser.evaluate(f"document.getElementById('customer-id').value = "
                         f"{orjson.dumps(customer).decode()};"
                         "document.getElementById('lookup').requestSubmit()")
        browser.wait_for("!!document.querySelector('#customer [data-field=customer_id]')",
                         what="the customer's scorecard", show="document.getElementById("
                         "'customer').textContent")
        shown["customer"] = browser.evaluate("""Object.fromEntries(
            [...document.querySelectorAll('#customer [data-field]')].map(
                d => [d.dataset.field, d.textContent]))""")
        shown["problems"] = browser.problems()
    status, body = _get(f"{url}/customers/{customer}/scorecard")
    assert status == 200
    card = orjson.loads(body)
    whole = _rows(api)[("all", None)]
    values = {"customers": whole["customers"], "nps": whole["nps"]["value"],
              "csat": whole["csat"]["value"], "ces": whole["ces"]["value"],
              "churn_rate": whole["churn_rate"],
              "revenue_at_risk": whole["totals"]["revenue_at_risk"],
              "revenue_12m": whole["totals"]["revenue_12m"], "aov": whole["aov"],
              "data_completeness": whole["averages"]["data_completeness"],
              "engagement": whole["averages"]["engagement"],
              "nrr": whole["retention"]["nrr"]}
    assert shown["problems"] == []
    assert shown["attribution_hidden"] is True and api["attribution"] is False  # it is off
    assert set(shown["tiles"]) == set(values)
    for kpi, value in values.items():
        text, _target = shown["tiles"][kpi]
        assert (float(text) if text else None) == value, kpi
    assert shown["tiles"]["nps"][1] == "20" and shown["tiles"]["churn_rate"][1] == "0.5"
    assert shown["tiles"]["csat"][1] is None  # no target set
    for kpi in values:
        change = api["trend"]["kpis"][kpi]["change"]
        text = shown["changes"][kpi]
        assert (float(text) if text is not None else None) == change, (
            kpi, shown["trends"], api["trend"]["against"], api["history"])
    points = {kpi: sum(1 for h in api["history"] if h["kpis"][kpi] is not None)
              + (value is not None) for kpi, value in values.items()}
    assert shown["sparklines"] == sum(1 for n in points.values() if n > 1) > 0
    assert shown["tiers"] == [[r["name"], r["customers"], r["totals"]["revenue_at_risk"]]
                              for r in api["segments"] if r["kind"] == "tier"]
    assert HOSTILE in shown["channels"]  # as text
    cohorts = [r["retention"]["nrr"] for r in api["segments"] if r["kind"] == "cohort"]
    assert [float(v) if v else None for v in shown["cohort_nrr"]] == cohorts
    assert any(v is not None for v in cohorts)  # the history is long enough to retain
    assert shown["images"] == 0 and shown["pwned"] is None  # never as markup
    assert shown["customer"]["customer_id"] == customer
    assert shown["customer"]["acquisition_channel"] == HOSTILE == card["acquisition_channel"]
    assert shown["customer"]["tier"] == card["tier"]
    assert shown["customer"]["orders"] == str(card["orders"])
    upsell = shown["customer"]["upsell"]  # its orders name categories: it has a propensity
    assert upsell.endswith(" %")
    assert float(upsell[:-2]) == pytest.approx(100 * card["upsell"]["probability"], abs=0.051)
