"""Replay: byte-identical output, order-free input, --as-of, frozen models, churn AUC better
than chance."""

from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

import orjson
import pytest

from models.history.generate import START_MS, generate, iter_lines
from models.history.replay import ingest, replay, sort_raw
from models.learning.bundle import ModelBundle
from models.scoring.engine import ScoringEngine
from streams.cli import replay as replay_cli
from tests.kit import DAY_MS


@pytest.fixture(scope="module")
def small_history() -> list[bytes]:
    events, _ = generate(120, seed=11, days=400)
    return list(iter_lines(events))


def run_cli(path: Path, out: Path, *extra: str) -> bytes:
    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    assert replay_cli.run(parser.parse_args([str(path), "--out", str(out), "--quiet", *extra])) == 0
    return (out / "scorecards.jsonl").read_bytes()


def test_replay_twice_is_byte_identical_and_input_order_free(small_history, tmp_path) -> None:
    plain = tmp_path / "h.jsonl"
    plain.write_bytes(b"".join(small_history))
    shuffled = small_history[:]
    random.Random(3).shuffle(shuffled)
    gz = tmp_path / "shuffled.jsonl.gz"
    gz.write_bytes(gzip.compress(b"".join(shuffled), mtime=0))
    a = run_cli(plain, tmp_path / "a")
    b = run_cli(plain, tmp_path / "b")
    c = run_cli(gz, tmp_path / "c")
    assert a == b == c
    assert (tmp_path / "a" / "quality.json").read_bytes() == (
        tmp_path / "c" / "quality.json"
    ).read_bytes()
    # the management scorecard of the final scorecards
    aggregates = orjson.loads((tmp_path / "a" / "aggregates.json").read_bytes())
    cards = [orjson.loads(line) for line in a.splitlines()]
    whole = aggregates["segments"][0]
    assert (whole["kind"], whole["customers"]) == ("all", len(cards))
    assert whole["totals"]["orders"] == sum(card["orders"] for card in cards)
    assert whole["totals"]["revenue_12m"] == pytest.approx(
        sum(card["revenue_12m"] for card in cards))
    assert sum(s["customers"] for s in aggregates["segments"] if s["kind"] == "tier") == len(
        cards)
    lines = a.splitlines()
    assert len(lines) == 120
    ids = [line.split(b'"customer_id":"')[1][:7] for line in lines]
    assert ids == sorted(ids)


def test_as_of_stops_and_scores_everyone_as_of_then(small_history, tmp_path) -> None:
    as_of = START_MS + 200 * DAY_MS
    result = replay(ingest(sort_raw(small_history)), as_of_ms=as_of)
    assert result.stats["skipped_after_as_of"] > 0
    assert {sc.as_of for sc in result.scorecards} == {as_of}
    plain = tmp_path / "h.jsonl"
    plain.write_bytes(b"".join(small_history))
    out = run_cli(plain, tmp_path / "o", "--as-of", "2024-07-19T00:00:00Z")
    assert out.count(b'"as_of":1721347200000') == len(out.splitlines())


def test_frozen_models_score_with_the_initial_bundle_throughout(small_history, tmp_path) -> None:
    initial = ModelBundle.initial()
    learned = replay(ingest(sort_raw(small_history)))
    frozen = replay(ingest(sort_raw(small_history)), publish=False)
    assert {sc.customer_id for sc in frozen.scorecards} == set(frozen.states)
    assert {tuple(sc.model_versions.values()) for sc in learned.scorecards} != {
        tuple(initial.versions().values())}
    assert frozen.bundle is not None and frozen.bundle.snapshot() == initial.snapshot()
    assert frozen.stats["model_versions"] == initial.versions()
    # Every alert, and every final scorecard, came from the initial models.
    assert frozen.alerts and all(
        a["scorecard"]["model_versions"] == initial.versions() for a in frozen.alerts)
    engine = ScoringEngine(bundle=initial)
    for sc in frozen.scorecards:
        assert sc == engine.score(frozen.states[sc.customer_id], sc.as_of)
    # The learner still learned and measured; the events did what they do with any models.
    assert frozen.stats["training_examples"] > 0 and frozen.quality["churn"]["n"] > 0
    assert {cid: s.n_events for cid, s in frozen.states.items()} == {
        cid: s.n_events for cid, s in learned.states.items()}

    plain = tmp_path / "h.jsonl"
    plain.write_bytes(b"".join(small_history))
    lines = run_cli(plain, tmp_path / "frozen", "--frozen-models").splitlines()
    assert [orjson.loads(line) for line in lines] == [sc.to_dict() for sc in frozen.scorecards]


def test_churn_auc_on_held_back_customers_is_clearly_better_than_chance() -> None:
    # 600 customers give the held-back set ~35 churners: enough for a fixed bar to be stable.
    events, _ = generate(600, seed=7, days=540)
    result = replay(ingest(sort_raw(iter_lines(events))))
    holdout = result.quality["churn_holdout"]
    assert holdout["n"] >= 50
    assert holdout["auc"] > 0.7, holdout
    assert result.quality["churn"]["auc"] > 0.7
    assert result.stats["events"] > 50_000
