"""Attribution on the real broker: a worker's attributions topic holds what a batch
recomputation of the same events holds, and its API and gauges add them up.

A generated history of customers with web sessions (channels, some campaigns), email clicks
and opens, orders (two currencies) and page views, over 150 days so that some touches fall out
of the 90-day lookback, is produced to the source topics before the worker starts; one order
is delivered twice and one is sent again under another event id. The worker's attributions
topic must then hold exactly the records `models.history.replay` makes from the same lines:
one per order id, every credit equal. `GET /attribution` (behind the API token) must report
the totals of those records, and `/metrics` the gauges per model and channel.

Some customers touch rarely, so that paths pass the lookback without a conversion (null
journeys), and many complete the goals of a funnel. The closed journeys and goals on the
topic must equal the replay's, and so must everything added up from them: the Markov
chain's transition counts, the Sankey paths and the funnel (`GET /journeys`). The only part
of a record that does not depend on the events alone is the data-driven credit (which model
the worker had when it scored the conversion): it is compared apart, and the model the API
reports in the end must be the one fitted on the replay's counts, intervals included.

The worker's page, in a real headless chromium, shows the same credits per channel and
campaign under every model, the data-driven weights, the Sankey and the funnel as the API; a
channel and a campaign named like markup show as text.

A first worker is killed (kill -9) while it scores; the records must still be exactly the
replay's: none lost, none twice, the journeys restored from the customers' states.

Every touch comes at least an hour before the next conversion of its customer, so that the
order in which the sources' records reach the scoring stage cannot change which touches a
conversion sees.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.attribution.journey import Attribution
from models.attribution.markov import fit
from models.attribution.paths import JourneyTotals
from models.attribution.rules import MODELS
from models.attribution.totals import DATA_DRIVEN, AttributionTotals
from models.config import AttributionConfig, ScoringConfig
from models.history.replay import ingest, replay, sort_raw
from schemas.registry import validator
from tests.integration.alerting_script import wait_until
from tests.integration.browser import Browser
from tests.integration.fault_tools import read_all
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

CUSTOMERS, SPARSE, DAYS, SEED = 30, 20, 150, 11
LATE, LATE_FROM, LATE_PREFIX = 12, 100, "L"
"""Customers whose whole history (shorter than the lookback) is sent once the worker has a
data-driven model, so that their conversions get its credit."""
TOKEN = "attribution-test-token-0123"
FUNNEL = ("information_found", "signup", "purchase")
ON = ScoringConfig(attribution=AttributionConfig(enabled=True, funnel=FUNNEL,
                                                 funnel_window_days=10))
"""Attribution is off by default: the worker and the replay both switch it on."""
HOUR_MS = DAY_MS // 24
HOSTILE_CHANNEL = "<b>x</b><img src=x onerror=\"window.pwned=1\">"
"""Markup, some of which plotly's chart text would read as such (<b>)."""
HOSTILE_CAMPAIGN = "<script>window.pwned=2</script>"
CHANNELS = ("direct", "organic", "paid", HOSTILE_CHANNEL, "email")


def _event(customer: str, n: int, source: str, event_type: str, at: int,
           payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"{customer}-{n}", "source": source, "event_type": event_type,
            "occurred_at": at, "customer_id": customer, "payload": payload}


def history() -> list[dict[str, Any]]:
    """Source records of every customer, each with its customer id, in no particular order."""
    rng = random.Random(SEED)
    records: list[dict[str, Any]] = []
    dense = [(f"A{c:03d}", range(DAYS)) for c in range(CUSTOMERS)]
    late = [(f"{LATE_PREFIX}{c:03d}", range(LATE_FROM, DAYS)) for c in range(LATE)]
    for customer, days in dense + late:
        orders = 0
        for day in days:
            if rng.random() > 0.25:
                continue
            start = T0 + day * DAY_MS + rng.randrange(6, 12) * HOUR_MS + rng.randrange(HOUR_MS)
            visit: list[tuple[str, str, int, dict[str, Any]]] = []
            kind = rng.random()
            if kind < 0.5:
                session: dict[str, Any] = {"channel": rng.choice(CHANNELS), "device": "mobile"}
                if rng.random() < 0.3:
                    session["campaign"] = f"c{day // 30}" if day // 30 != 2 else HOSTILE_CAMPAIGN
                visit += [("web", "session_started", start, session),
                          ("web", "page_view", start + 60_000, {"url": "/"})]
                for step, goal in enumerate(FUNNEL):  # each next goal: half as often
                    if rng.random() >= 0.5:
                        break
                    visit.append(("web", "goal_completed", start + (2 + step) * 60_000,
                                  {"goal": goal}))
            elif kind < 0.8:
                campaign = {"campaign_id": f"mail-{day // 14}"}
                visit.append(("email", "opened", start, dict(campaign)))
                if rng.random() < 0.5:
                    visit.append(("email", "clicked", start + 30_000, {**campaign, "url": "/o"}))
            if rng.random() < 0.35:  # a conversion, hours after the day's touch
                orders += 1
                visit.append(("crm", "order_placed",
                              T0 + day * DAY_MS + 15 * HOUR_MS + rng.randrange(HOUR_MS),
                              {"order_id": f"{customer}-o{orders}",
                               "amount": round(rng.uniform(5, 300), 2),
                               "currency": "USD" if rng.random() < 0.2 else "EUR"}))
            for source, event_type, at, payload in visit:
                records.append(_event(customer, len(records), source, event_type, at, payload))
    for c in range(SPARSE):  # a touch every 60 to 140 days: some paths pass the lookback
        customer = f"S{c:03d}"
        day = rng.randrange(10)
        while day < DAYS:
            start = T0 + day * DAY_MS + rng.randrange(6, 12) * HOUR_MS
            records.append(_event(customer, len(records), "web", "session_started", start,
                                  {"channel": rng.choice(CHANNELS)}))
            if rng.random() < 0.3:
                records.append(_event(customer, len(records), "crm", "order_placed",
                                      start + 3 * HOUR_MS,
                                      {"order_id": f"{customer}-o{day}", "amount": 20.0,
                                       "currency": "EUR"}))
            day += rng.randrange(60, 141)
    orders = [r for r in records if r["event_type"] == "order_placed"]
    records.append(dict(orders[3]))  # delivered twice: the same event id
    records.append({**orders[7], "event_id": f"{orders[7]['event_id']}-resent"})
    return records


DRAWS = 50
"""Posterior draws of the worker's data-driven model and of the test's."""


def _events_only(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what depends on more than the events: the time it was written and
    the data-driven credit (which model the worker had then)."""
    return {k: v for k, v in record.items() if k not in ("emitted_at", "data_driven")}


def _data_driven_is_sound(record: dict[str, Any]) -> bool:
    """Whether the conversion got a data-driven credit; if it did, the credit adds up to
    its value over the path's touches, from a model of enough paths; if not, it says why."""
    driven = record["data_driven"]
    if driven["credits"] is None:
        assert driven["reason"], driven
        return False
    assert driven["paths"] >= 20 and driven["version"].startswith(f"{driven['paths']}-")
    assert sum(driven["credits"]) == pytest.approx(record["value"], abs=1e-6)
    before = len(record["touches"]) - len(record["path"])
    assert record["path"] and driven["credits"][:before] == [0.0] * before
    return True


def _get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    """GET with the API token (or none): (status, body); (0, b"") when unreachable."""
    return http_get(url, token)


def _report(url: str) -> tuple[int, dict[str, Any]]:
    status, body = _get(url)
    return status, (orjson.loads(body) if status else {})


def test_stream_attributions_equal_a_batch_recomputation(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    records = history()
    lines = [orjson.dumps(r) for r in records]
    replayed = replay(ingest(sort_raw(lines), dead=[]), config=ON)
    expected = {a.conversion.conversion_id: a for a in replayed.conversions()}
    expected_records = {cid: _events_only(a.to_record(0)) for cid, a in expected.items()}
    with_touches = [r for r in expected_records.values() if r["touches"]]
    assert len(expected) > 100 and len(with_touches) > len(expected) // 2
    assert any(not r["touches"] for r in expected_records.values())
    journeys = replayed.journeys(funnel=FUNNEL)
    others = sorted(orjson.dumps(_events_only(r.to_record(0))) for r in replayed.attributions
                    if not isinstance(r, Attribution))
    nulls = journeys.counts.paths - journeys.counts.conversions
    assert nulls >= 5 and journeys.counts.conversions > 50
    assert journeys.funnel.report()["steps"][2]["reached"] > 0

    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"attr-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_PARTITIONS="2", SCORESTREAM_API_TOKEN=TOKEN,
                     SCORESTREAM_ATTRIBUTION_ENABLED="true",
                     SCORESTREAM_ATTRIBUTION_FUNNEL=",".join(FUNNEL),
                     SCORESTREAM_ATTRIBUTION_FUNNEL_WINDOW_DAYS="10",
                     SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_MIN_PATHS="20",
                     SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_REFIT_PATHS="20",
                     SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_REFIT_S="1",
                     SCORESTREAM_ATTRIBUTION_DATA_DRIVEN_DRAWS=str(DRAWS),
                     SCORESTREAM_GROUP_SESSION_TIMEOUT_S="6")
    def send(part: list[dict[str, Any]]) -> None:
        for source in ("web", "email", "crm"):
            produce(kafka_bootstrap, topics[source],
                    [(r["customer_id"].encode(), orjson.dumps(r)) for r in part
                     if r["source"] == source])

    send([r for r in records if not r["customer_id"].startswith(LATE_PREFIX)])
    # kill -9 a first worker while it scores, once some of its records are committed: the
    # next worker restores the journeys from the customers' states and takes over where the
    # last committed transaction ended. (It may have scored everything by then on a fast
    # machine; the figure printed says how far it got.)
    with running_worker(env, tmp_path / "killed.log") as first:
        committed: list[int] = []

        def scoring() -> bool:
            status, body = _report(f"{first.web_url}/attribution")
            committed.append(body.get("conversions", 0) if status == 200 else 0)
            return committed[-1] >= 40

        wait_until(scoring, 120, "the first worker's first conversions", first.log_tail)
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(10) == -signal.SIGKILL
    print(f"kill -9 once {committed[-1]} of {len(expected)} conversions were committed")
    with running_worker(env, tmp_path / "worker.log") as worker:
        url = f"{worker.web_url}/attribution"

        def model_ready() -> bool:
            status, body = _report(url)
            return status == 200 and body["data_driven"]["ready"]

        wait_until(model_ready, 120, "a data-driven model of 20 paths", worker.log_tail)
        # The late customers once the worker's model is ready, so that their conversions
        # are credited by it. Their sources' records then reach the worker one source after
        # the other, not in event-time order; their histories are shorter than the lookback
        # and their touches come within it of each other, so this changes none of their
        # records.
        send([r for r in records if r["customer_id"].startswith(LATE_PREFIX)])

        def reported_all() -> bool:
            status, body = _report(url)
            return status == 200 and body["caught_up"] and body["conversions"] == len(expected)

        wait_until(reported_all, 120, "the API reporting every conversion", worker.log_tail)
        assert _get(url, token=None)[0] == 401
        status, report = _report(f"{url}?model=linear&from=2026-01-15&to=2026-03-31")
        assert status == 200
        assert _get(f"{url}?model=nonsense")[0] == 400
        assert _get(f"{url}?limit=0")[0] == 400
        status, top = _report(f"{url}?model=linear&from=2026-01-15&to=2026-03-31&limit=1")
        assert status == 200
        wait_until(lambda: b"scorestream_attributed_value{" in _get(
            f"{worker.web_url}/metrics")[1], 60, "the attribution gauges", worker.log_tail)
        metrics = _get(f"{worker.web_url}/metrics")[1].decode()
        def fitted_all() -> bool:
            status, body = _report(url)
            return status == 200 and (body["data_driven"]["model"] or {}).get(
                "paths") == journeys.counts.paths

        wait_until(fitted_all, 60, "the model of every closed path", worker.log_tail)
        data_driven = _report(url)[1]["data_driven"]
        status, sankey = _report(f"{worker.web_url}/journeys?top=3")
        assert status == 200
        assert _get(f"{worker.web_url}/journeys", token=None)[0] == 401
        assert _get(f"{worker.web_url}/journeys?top=x")[0] == 400
        _page(worker.web_url, tmp_path / "chromium")
        assert worker.stop() == 0, worker.log_tail()


    messages = read_all(kafka_bootstrap, topics["attributions"])
    check = validator("attributions")
    stream: dict[str, dict[str, Any]] = {}
    stream_others: list[bytes] = []
    stream_journeys = JourneyTotals(funnel=FUNNEL)
    credited = 0
    for msg in messages:
        record = orjson.loads(msg.value())
        check(record)
        assert msg.key() == record["customer_id"].encode()
        stream_journeys.add(record)
        if record["kind"] != "conversion":
            stream_others.append(orjson.dumps(_events_only(record)))
            continue
        credited += _data_driven_is_sound(record)
        record = _events_only(record)
        assert record["conversion_id"] not in stream, record["conversion_id"]
        stream[record["conversion_id"]] = record
    # null journeys and goals: the same records; every count made of them: the same counts
    assert sorted(stream_others) == others
    assert credited > 0  # the late customers' conversions with a path, at least
    assert sorted(stream) == sorted(expected_records)
    different = [cid for cid in stream if stream[cid] != expected_records[cid]]
    assert different == [], (len(different), different[:3], [
        {k: (str(stream[c].get(k))[:600], str(expected_records[c].get(k))[:600])
         for k in stream[c].keys() | expected_records[c].keys()
         if stream[c].get(k) != expected_records[c].get(k)} for c in different[:2]])
    assert stream_journeys.to_dict() == journeys.to_dict()
    # The worker fitted the same model as the counts of the replay's journeys give, and
    # reports the same journeys.
    final = fit(journeys.counts, draws=DRAWS)
    assert data_driven == {"ready": True, "min_paths": 20, "paths": journeys.counts.paths,
                           "model": orjson.loads(orjson.dumps(final.to_dict()))}
    assert sankey["caught_up"] and sankey["sankey"] == journeys.paths.report(3)
    assert sankey["funnel"] == {**journeys.funnel.report(), "window_days": 10}
    assert sankey["closed"]["null"] == nulls

    totals = AttributionTotals()
    for record in expected_records.values():
        totals.add(record)
    first, last = (T0 // DAY_MS + 14, T0 // DAY_MS + 89)  # 2026-01-15 .. 2026-03-31
    want = totals.report("linear", first, last)
    assert (report["from"], report["to"], report["currency"]) == (
        "2026-01-15", "2026-03-31", "EUR")
    assert report["conversions"] == want["conversions"] > 0
    assert report["value"] == pytest.approx(want["value"], abs=0.01)
    assert list(report["models"]) == ["linear"]
    for table, key in (("channels", "channel"), ("campaigns", "campaign")):
        got = {row[key]: row for row in report["models"]["linear"][table]}
        assert got.keys() == {row[key] for row in want["models"]["linear"][table]}
        for row in want["models"]["linear"][table]:
            assert got[row[key]]["value"] == pytest.approx(row["value"], abs=0.01)
            assert got[row[key]]["conversions"] == pytest.approx(row["conversions"], abs=1e-3)
    # limit=1: the largest channel, and the others added up
    top_linear, all_linear = top["models"]["linear"], want["models"]["linear"]
    [largest] = top_linear["channels"]
    assert largest["channel"] == all_linear["channels"][0]["channel"]
    assert largest["value"] == pytest.approx(all_linear["channels"][0]["value"], abs=0.01)
    assert top_linear["channels_other"]["channels"] == len(all_linear["channels"]) - 1 > 0
    assert top_linear["channels_other"]["value"] == pytest.approx(
        sum(row["value"] for row in all_linear["channels"][1:]), abs=0.05)
    gauge_lines = [line for line in metrics.splitlines()
                   if line.startswith("scorestream_attributed_value{")]
    assert {line.split('model="')[1].split('"')[0] for line in gauge_lines} == {
        *MODELS, DATA_DRIVEN}
    assert 'scorestream_data_driven_weight{bound="point",channel="email"}' in metrics


def _page(url: str, profile: Path) -> None:
    """The page's attribution and journeys sections equal the API's answers at that time."""
    status, attribution = _report(f"{url}/attribution?limit=100")
    status_j, journeys = _report(f"{url}/journeys")
    assert status == status_j == 200
    with Browser(profile) as browser:
        browser.navigate(f"{url}/ui/")
        browser.wait_for("!document.getElementById('login').hidden", what="the token prompt")
        browser.evaluate(f"document.getElementById('token').value = {orjson.dumps(TOKEN).decode()};"
                         "document.getElementById('login').requestSubmit()")
        browser.wait_for("document.body.dataset.loaded", what="the figures")
        browser.events.clear()  # the refusal before the token was given
        browser.wait_for("document.querySelectorAll('#sankey .sankey-node').length > 0 && "
                         "!!document.querySelector('#attribution-chart .main-svg')",
                         what="the charts")
        shown = browser.evaluate("""(() => {
            const table = (id, key) => Object.fromEntries(
                [...document.querySelectorAll(`#${id} tbody tr`)].map(r => [r.dataset[key],
                    Object.fromEntries([...r.querySelectorAll('td[data-model]')].map(
                        td => [td.dataset.model, Number(td.dataset.value)]))]));
            return {
                channels: table('attribution-table', 'channel'),
                campaigns: table('campaigns-table', 'campaign'),
                channel_text: [...document.querySelectorAll(
                    '#attribution-table tbody td:first-child')].map(td => td.textContent),
                campaign_text: [...document.querySelectorAll(
                    '#campaigns-table tbody td:first-child')].map(td => td.textContent),
                weights: [...document.querySelectorAll('#data-driven tbody tr')].map(
                    r => [r.dataset.channel, Number(r.dataset.weight)]),
                flow: [...document.querySelectorAll('#journey-steps tbody tr')].map(r => [
                    Number(r.dataset.step), Number(r.dataset.inflow),
                    Number(r.dataset.conversions), Number(r.dataset.dropOffs)]),
                funnel: [...document.querySelectorAll('#funnel tbody tr')].map(
                    r => [r.dataset.goal, Number(r.dataset.reached)]),
                sankey_nodes: document.querySelectorAll('#sankey .sankey-node').length,
                sankey_labels: [...document.querySelectorAll('#sankey .sankey-node text')]
                    .map(t => t.textContent),
                bar_labels: [...document.querySelectorAll('#attribution-chart .xtick text')]
                    .map(t => t.textContent),
                images: document.querySelectorAll('img').length,
                scripts: document.querySelectorAll('script').length,
                pwned: window.pwned ?? null,
            };
        })()""")
        shown["problems"] = browser.problems()
    assert shown["problems"] == []
    assert shown["pwned"] is None and shown["images"] == 0
    assert shown["scripts"] == 2  # the page's own (plotly, app.js): nothing injected
    models = attribution["models"]
    assert set(models) == {*MODELS, DATA_DRIVEN}
    value_of = {m: {row["channel"]: row["value"] for row in models[m]["channels"]}
                for m in models}
    assert shown["channels"] and set(shown["channels"]) <= set(value_of["linear"])
    for channel, credits in shown["channels"].items():
        assert credits == {m: value_of[m].get(channel, 0) for m in models}, channel
    assert HOSTILE_CHANNEL in shown["channel_text"] and HOSTILE_CHANNEL in shown["bar_labels"]
    campaign_value = {m: {row["campaign"]: row["value"] for row in models[m]["campaigns"]}
                      for m in models}
    assert HOSTILE_CAMPAIGN in shown["campaign_text"]
    for campaign, credits in shown["campaigns"].items():
        key = campaign or None  # the row of touches without a campaign
        assert credits == {m: campaign_value[m].get(key, 0) for m in models}, campaign
    model = attribution["data_driven"]["model"]
    assert shown["weights"] == [[c["channel"], c["weight"]] for c in model["channels"]]
    sankey = journeys["sankey"]
    assert shown["sankey_nodes"] == len(sankey["nodes"])
    assert any(label.endswith(HOSTILE_CHANNEL) for label in shown["sankey_labels"])
    assert shown["flow"] == [[f["step"], f["inflow"], f["conversions"], f["drop_offs"]]
                             for f in sankey["flow"]]
    assert shown["funnel"] == [[st["goal"], st["reached"]]
                               for st in journeys["funnel"]["steps"]]
