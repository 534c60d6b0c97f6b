"""A backfill on the real broker ends as a replay of the same file does.

`scorestream generate` writes a multi-source history whose sources differ in density by an
order of magnitude (web and email every day, crm orders and support tickets now and then);
`scorestream load` produces all of it to the source topics before one worker starts, with
frozen models and a small allowed lateness. Read at its own pace, each sparse source would run
months of event time ahead of the dense ones and leave their events `too_late`; the ingest
stage's event-time alignment must prevent that. The worker's outcome is then compared with
`models.history.replay` of the same file with frozen models (the initial bundle throughout):

- the customer events it scored: exactly the replay's, each once;
- every customer's committed state (its changelog): events applied, orders, revenue, event
  times, day buckets, profile and subscription;
- the key values and model outputs scored from each side's state with the initial bundle at
  one common time, against the replay's own final scorecards;
- the worker's live scorecards (its API, as of each partition's watermark), and the model
  versions on every score change and alert it emitted: the initial ones, although the learner
  published bundles meanwhile.

Not compared, because they legitimately depend on where batches begin and end: pending labels
(the snapshot a label is taken from, and when), the tier (its hysteresis follows the path of
scorecards, one per batch), the alert memory and budget, the last reported scorecard, and the
dedupe window's order beyond its size; alerts and training examples follow from those.

The history includes the alias-only events (email events with only an address, web events with
only a cookie, 19 % of the generated records): they take a detour through the identity stage,
so ingest must release them in their event-time turn (or they overtake the link that resolves
them, and wait for it in vain), and the scoring stage must not count that detour's delay as
lateness (in a backfill, ingest runs months of event time ahead of the identity stage).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.config import ScoringConfig
from models.history.replay import ReplayResult, ingest, replay, sort_raw
from models.ingest.routing import IngestCounters, Ingestion
from models.learning.bundle import ModelBundle
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from streams.runtime.partitioning import partition_for
from streams.settings import Settings
from streams.stages.ingest import ingestion_config
from tests.integration.alerting_script import metric_value, wait_until
from tests.integration.fault_tools import (
    changelog_states,
    direct_watermarks,
    get_json,
    metric,
    read_all,
)
from tests.integration.kafka_tools import free_port, running_worker, topic_names, worker_env
from tests.kit import DAY_MS, ROOT

pytestmark = pytest.mark.integration

CUSTOMERS, DAYS, SEED = 60, 300, 5
LATENESS_DAYS = 15
PARTITIONS = 4  # worker_env's SCORESTREAM_PARTITIONS
NOT_SCORED_ALIKE = ("ingested_at", "identity_position")
"""Fields of a customer event set at ingestion, not by its source: the wall clock (the event
time in a replay) and the identity partition's position (the identity stage's own)."""


def _cli(env: dict[str, str], *argv: str | Path) -> str:
    """Run a `scorestream` command to its end; its standard output."""
    done = subprocess.run([sys.executable, "-m", "streams.cli", *map(str, argv)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"scorestream {argv[0]}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _per_day(records: list[dict[str, Any]]) -> dict[str, float]:
    """Records per day of history, by source."""
    counts = Counter(record["source"] for record in records)
    return {source: count / DAYS for source, count in counts.items()}


def _state(state: CustomerState) -> dict[str, Any]:
    """What a customer's state holds that depends only on which events it applied."""
    return {
        "events": state.n_events,
        "first_last": (state.first_ms, state.last_ms, state.last_interaction_ms),
        "orders": (state.n_orders, state.n_refunds, state.first_order_ms, state.last_order_ms,
                   sorted(state.order_days), state.order_days_dropped),
        "revenue_cents": (state.ltv_cents, state.gross_cents),
        "days": dict(sorted(state.days.items())),
        "active": (state.first_interaction_ms, state.active_days, sorted(state.active_old)),
        "profile": state.profile,
        "subscription": (state.subscription, state.unsubscribed, state.cancelled_ms),
        # The window holds the newest event ids by arrival: all of them, for a short history.
        "seen": sorted(state.seen) if state.n_events <= state.config.dedupe_window else None,
    }


def _card(body: dict[str, Any]) -> dict[str, Any]:
    """A scorecard's key values and model outputs, from its JSON form (`Scorecard.to_dict`, the
    API's answer); the tier aside (see the module doc)."""
    ltv, churn, engagement = body["ltv"], body["churn"], body["engagement"]
    return {
        "customer_id": body["customer_id"], "as_of": body["as_of"],
        "ltv_historic": ltv["historic"], "revenue_12m": body["revenue_12m"],
        "interactions_12m": body["interactions_12m"],
        "days_since_last_interaction": body["days_since_last_interaction"],
        "data_completeness": body["data_completeness"],
        "churn_probability": churn["probability"], "churn_factors": churn["factors"],
        "engagement": engagement["score"], "engagement_factors": engagement["factors"],
        "expected_orders_12m": ltv["expected_orders_12m"],
        "ltv_predicted_12m": ltv["predicted_12m"], "p_alive": ltv["p_alive"],
        "model_versions": body["model_versions"],
    }


def _scored(engine: ScoringEngine, state: CustomerState, as_of: int) -> dict[str, Any]:
    """`_card` of what the engine scores from the state as of `as_of`."""
    return _card(engine.score(state, as_of).to_dict())


def _differ(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """The fields of two dicts that differ, with both values."""
    return [f"{k}: {got.get(k)!r} != {want.get(k)!r}" for k in want if got.get(k) != want[k]]


def _reference(lines: list[bytes], settings: Settings
               ) -> tuple[list[dict[str, Any]], IngestCounters, ReplayResult]:
    """The replay of the file with frozen models, with the worker's ingestion bounds and alert
    rules: its customer events, its ingestion's counters, and its result."""
    ingestion = Ingestion(ingestion_config(settings))
    events = list(ingest(sort_raw(lines), ingestion))
    result = replay(iter(events), ScoringConfig(), publish=False,
                    alert_config=settings.alert_config())
    return events, ingestion.counters, result


def test_a_backfill_through_load_and_one_worker_ends_as_the_replay(
        kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    topics = topic_names(unique_name)
    env = worker_env(kafka_bootstrap, f"backfill-{unique_name}", topics, tmp_path / "state",
                     free_port(), SCORESTREAM_MODEL_FROZEN="true",
                     SCORESTREAM_ALLOWED_LATENESS_DAYS=str(LATENESS_DAYS),
                     SCORESTREAM_BATCH_SIZE="500", SCORESTREAM_MODEL_PUBLISH_INTERVAL_S="1")
    settings = Settings.from_env(env)
    generated = tmp_path / "generated.jsonl"
    _cli(env, "generate", "--customers", CUSTOMERS, "--days", DAYS, "--seed", SEED,
         "--out", generated)
    lines = generated.read_bytes().splitlines(keepends=True)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(lines))
    records = [orjson.loads(line) for line in lines]
    assert sum("customer_id" not in record for record in records) > len(records) / 10

    # Densities differ tenfold and more; a sparse source's whole backlog spans the history,
    # so read at its own pace it would run months past the allowed lateness.
    density = _per_day(records)
    assert set(density) == {"web", "email", "crm", "support"}, density
    assert density["web"] > 10 * density["crm"] and density["web"] > 10 * density["support"]
    for source in ("crm", "support"):
        times = [r["occurred_at"] for r in records if r["source"] == source]
        assert max(times) - min(times) > 10 * LATENESS_DAYS * DAY_MS, source

    # Every line is valid; the generator redelivers a few, which ingestion counts once.
    events, counted, expected = _reference(lines, settings)
    assert counted.consumed == len(lines) == len(events) + counted.duplicates
    assert counted.accepted == len(events) and counted.dead == 0 and counted.held == 0
    assert expected.stats["applied"] == len(events) and len(expected.states) == CUSTOMERS
    by_customer: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event in events:
        by_customer[event["customer_id"]][event["event_id"]] = {
            k: v for k, v in event.items() if k not in NOT_SCORED_ALIKE}
    initial = ModelBundle.initial(ScoringConfig())
    engine = ScoringEngine(ScoringConfig(), initial)

    summary = _cli(env, "load", history, "--quiet")
    assert f"sent {len(lines):,} records" in summary, summary

    with running_worker(env, tmp_path / "worker.log") as worker:
        # Every line accounted for: scored or dead-lettered, or counted as a duplicate.
        wait_until(lambda: metric(worker.web_url, "scorestream_events_processed_total")
                   + metric(worker.web_url, "scorestream_dead_letters_total") == len(events)
                   and metric(worker.web_url, "scorestream_duplicate_events_total")
                   == counted.duplicates, 90,
                   f"{len(events)} customer events scored or dead-lettered, "
                   f"{counted.duplicates} duplicates", worker.log_tail)
        too_late = metric_value(worker.web_url, 'scorestream_dead_letters_total{reason="too_late"}')
        assert not too_late, f"{too_late:.0f} of {len(events)} events too late"
        assert metric(worker.web_url, "scorestream_events_processed_total") == len(events)
        wait_until(lambda: "published model bundle" in worker.log_path.read_text(),
                   30, "the learner's first bundle", worker.log_tail)
        # The live scorecards: as of each partition's watermark (or the customer's own last
        # event, when the identity stage released it later), with the initial models.
        watermarks = direct_watermarks(records, events, PARTITIONS)
        wrong = []
        for cid, state in sorted(expected.states.items()):
            status, body = get_json(f"{worker.web_url}/customers/{cid}/scorecard")
            as_of = max(watermarks.get(partition_for(cid.encode(), PARTITIONS), 0),
                        state.last_ms or 0)
            want = orjson.loads(orjson.dumps(_scored(engine, state, as_of)))
            if status != 200 or _card(body) != want:
                wrong.append(f"{cid}: HTTP {status}, {_differ(_card(body), want)}")
        assert not wrong, f"{len(wrong)} live scorecards differ, e.g. {wrong[:3]}"

    assert read_all(kafka_bootstrap, topics["dead_letters"]) == []
    # Every customer event scored exactly once, as the replay's ingestion made it.
    scored: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for msg in read_all(kafka_bootstrap, topics["customer_events"]):
        event = orjson.loads(msg.value())
        scored[event["customer_id"]][event["event_id"]] += 1
        want = by_customer[event["customer_id"]].get(event["event_id"])
        got = {k: v for k, v in event.items() if k not in NOT_SCORED_ALIKE}
        assert got == want, f"customer event differs from the replay's: {got} != {want}"
    assert {cid: set(ids) for cid, ids in scored.items()} == {
        cid: set(ids) for cid, ids in by_customer.items()}
    assert max(n for ids in scored.values() for n in ids.values()) == 1

    # The committed states, and what each side's state scores at one time with one bundle.
    states = changelog_states(kafka_bootstrap, settings.changelog_topic("customer-state"))
    assert sorted(states) == sorted(expected.states)
    final = {card.customer_id: _card(card.to_dict()) for card in expected.scorecards}
    as_of = expected.stats["as_of"]
    wrong = []
    for cid, state in sorted(states.items()):
        reference = expected.states[cid]
        if _state(state) != _state(reference):
            wrong.append(f"{cid} state: {_differ(_state(state), _state(reference))}")
        card = _scored(engine, state, as_of)
        if card != _scored(engine, reference, as_of) or card != final[cid]:
            wrong.append(f"{cid} scorecard: {_differ(card, final[cid])}")
    assert not wrong, f"{len(wrong)} differences from the replay, e.g. {wrong[:3]}"

    # Frozen throughout: the learner published bundles, no scorecard came from one.
    assert read_all(kafka_bootstrap, topics["model_snapshots"]), "the learner never published"
    emitted = [orjson.loads(msg.value())
               for topic in (topics["score_changes"], topics["alerts"])
               for msg in read_all(kafka_bootstrap, topic) if msg.value() is not None]
    assert emitted and {tuple(sorted(record["scorecard"]["model_versions"].items()))
                        for record in emitted} == {tuple(sorted(initial.versions().items()))}
