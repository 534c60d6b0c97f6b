"""`scorestream tail` and `scorestream scorecard` against a real broker and a real worker that
has scored the alerting script: filters, --max, --exit-at-end, --json, following new records
until Ctrl-C, and the scorecard of a known customer, an unknown one and an unreachable worker."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.registry import validator
from streams.cli import main
from tests.integration.alerting_script import (
    ALERT_ENV,
    EXPECTED_ALERTS,
    metric_value,
    publish_bundle,
    run_script,
    wait_until,
)
from tests.integration.kafka_tools import (
    WorkerProcess,
    free_port,
    produce,
    read_topic,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import ROOT, raw_ev

pytestmark = pytest.mark.integration


@dataclass
class Scored:
    """A running worker that has scored the alerting script, and how to reach it."""

    worker: WorkerProcess
    env: dict[str, str]
    topics: dict[str, str]
    bootstrap: str


@pytest.fixture(scope="module")
def scored(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scored]:
    """One worker for the module, past the alerting script (tests only read from it)."""
    name = uuid.uuid4().hex[:10]
    topics = topic_names(name)
    tmp = tmp_path_factory.mktemp("cli")
    publish_bundle(kafka_bootstrap, topics)
    env = worker_env(kafka_bootstrap, f"cli-{name}", topics, tmp / "state", free_port(),
                     **ALERT_ENV)
    with running_worker(env, tmp / "worker.log") as worker:
        run_script(kafka_bootstrap, topics, worker.web_url, worker.log_tail)
        yield Scored(worker, env, topics, kafka_bootstrap)
        assert worker.stop() == 0, worker.log_tail()


def _cli(scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *argv: str) -> tuple[int, str, str]:
    """Run `scorestream ARGV` in this process with the worker's settings; (code, out, err)."""
    for var, value in scored.env.items():
        if var.startswith("SCORESTREAM_"):
            monkeypatch.setenv(var, value)
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tail_alerts_filtered_by_type_stops_after_max(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(scored, monkeypatch, capsys, "tail", "alerts", "--from-beginning",
                          "--type", "high_value_at_risk", "--max", "2", "--json")
    assert code == 0, err
    alerts = [orjson.loads(line) for line in out.splitlines()]
    for alert in alerts:
        validator("alerts")(alert)
    assert sorted((a["customer_id"], a["alert_type"]) for a in alerts) == sorted(
        pair for pair in EXPECTED_ALERTS if pair[1] == "high_value_at_risk")
    assert "2 records shown" in err


def test_tail_alerts_pretty_per_customer_and_severity(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(scored, monkeypatch, capsys, "tail", "alerts", "--from-beginning",
                        "--customer", "C-VIP", "--exit-at-end")
    assert code == 0
    lines = out.splitlines()
    expected = sorted(kind for customer, kind in EXPECTED_ALERTS if customer == "C-VIP")
    assert sorted(line.split()[3] for line in lines) == expected
    assert all(line.split()[4] == "C-VIP" for line in lines), lines
    by_type = {line.split()[3]: line.split()[2] for line in lines}
    assert by_type == {"high_value_at_risk": "CRITICAL", "vip_upgrade": "INFO"}

    code, out, _ = _cli(scored, monkeypatch, capsys, "tail", "alerts", "--from-beginning",
                        "--severity", "critical", "-e", "--json")
    assert code == 0
    critical = {(a["customer_id"], a["alert_type"]) for a in map(orjson.loads, out.splitlines())}
    assert critical == {p for p in EXPECTED_ALERTS if p[1] == "high_value_at_risk"}


def test_tail_dead_letters_and_score_changes(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(scored, monkeypatch, capsys, "tail", "dead-letters", "--from-beginning",
                        "-e", "--reason", "invalid_json", "--json")
    assert code == 0
    letters = [orjson.loads(line) for line in out.splitlines()]
    assert [(d["reason"], d["topic"]) for d in letters] == [
        ("invalid_json", scored.topics["web"])]

    code, out, _ = _cli(scored, monkeypatch, capsys, "tail", "score-changes",
                        "--from-beginning", "-e", "--customer", "C-VIP", "--field", "tier")
    assert code == 0
    lines = out.splitlines()
    assert lines and all(" C-VIP " in line for line in lines), lines
    tiers = [re.search(r"\btier (\S+) -> (\S+)", line) for line in lines]
    moves = [(m.group(1).rstrip(","), m.group(2).rstrip(",")) for m in tiers if m]
    assert len(moves) == len(lines), lines
    assert moves[0][0] == "none" and moves[-1][1] == "VIP", moves
    assert all(new == old_next for (_, new), (old_next, _) in itertools.pairwise(moves))


def test_tail_rejects_filters_of_another_topic(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(scored, monkeypatch, capsys, "tail", "dead-letters", "--type",
                        "churn_risk")
    assert code == 2 and "--type does not apply to dead-letters" in err


def _ctrl_c_works() -> None:
    """In the child before it starts: SIGINT back to its default. A shell starts background
    jobs with SIGINT ignored, and an ignored SIGINT is inherited, so a test run started that
    way would hand these clients a Ctrl-C they never see."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_tail_follows_new_alerts_until_interrupted(scored: Scored, tmp_path: Path) -> None:
    out_path, err_path = tmp_path / "tail.out", tmp_path / "tail.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        tail = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "tail", "alerts", "--customer", "C-LATE",
             "--json"], cwd=ROOT, env={**scored.env, "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=err, preexec_fn=_ctrl_c_works)
    try:
        wait_until(lambda: "reading" in err_path.read_text() or tail.poll() is not None, 60,
                   "tail to take its place at the end of every partition",
                   err_path.read_text)
        assert tail.poll() is None, err_path.read_text()
        # A new customer visits, then cancels: a material rise of churn risk, one alert. (Soon
        # after the script: months later, its customers' labels would resolve and their risk rise.)
        visit = raw_ev("C-LATE-1", "page_view", 14, customer_id="C-LATE")
        scored_before = metric_value(scored.worker.web_url, "scorestream_events_processed_total")
        produce(scored.bootstrap, scored.topics["web"], [(b"C-LATE", visit)])
        wait_until(lambda: metric_value(scored.worker.web_url,
                                        "scorestream_events_processed_total")
                   == (scored_before or 0) + 1, 60, "the visit scored", scored.worker.log_tail)
        cancel = raw_ev("C-LATE-2", "subscription_cancelled", 15, customer_id="C-LATE",
                     payload={})
        produce(scored.bootstrap, scored.topics["crm"], [(b"C-LATE", cancel)])
        wait_until(lambda: out_path.read_text().count("\n") >= 1, 60,
                   "the new alert on tail's output", scored.worker.log_tail)
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0, err_path.read_text()
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    alerts = [orjson.loads(line) for line in out_path.read_text().splitlines()]
    assert [(a["customer_id"], a["alert_type"]) for a in alerts] == [("C-LATE", "churn_risk")]
    assert "1 record shown" in err_path.read_text()
    churn_alerts = [(a["customer_id"], a["event_time"]) for a in (
        orjson.loads(m.value()) for m in read_topic(scored.bootstrap, scored.topics["alerts"], 0,
                                                    timeout=5))
        if a["alert_type"] == "churn_risk"]
    assert metric_value(scored.worker.web_url,
                        'scorestream_alerts_total{alert_type="churn_risk"}') == sum(
        1 for _, kind in EXPECTED_ALERTS if kind == "churn_risk") + 1, churn_alerts


def test_scorecard_of_a_known_customer_from_the_configured_worker(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No --url: SCORESTREAM_WEB_PORT of the settings points at the worker.
    code, out, err = _cli(scored, monkeypatch, capsys, "scorecard", "C-VIP", "--json")
    assert code == 0, err
    card = json.loads(out)
    assert (card["customer_id"], card["tier"]) == ("C-VIP", "VIP")
    assert card["ltv"]["historic"] == pytest.approx(6 * 500.0)

    code, out, _ = _cli(scored, monkeypatch, capsys, "scorecard", "C-PREMIUM",
                        "--url", scored.worker.web_url)
    assert code == 0
    assert "Scorecard of C-PREMIUM" in out
    rows = {line.strip("│ ").split("│")[0].strip(): line for line in out.splitlines()}
    assert "Premium" in rows["tier"]
    assert "900.00 EUR" in rows["lifetime value"]


def test_scorecard_of_an_unknown_customer_and_of_no_worker(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(scored, monkeypatch, capsys, "scorecard", "NOBODY",
                          "--url", scored.worker.web_url)
    assert (code, out) == (1, "")
    assert "no scorecard for customer 'NOBODY'" in err

    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = _cli(scored, monkeypatch, capsys, "scorecard", "C-VIP", "--url", nowhere)
    assert (code, out) == (1, "")
    assert f"cannot reach a worker at {nowhere}: connection refused" in err


def test_tail_of_a_missing_topic_says_so(
    scored: Scored, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCORESTREAM_TOPIC_ALERTS", f"no-such-topic-{os.getpid()}")
    for var, value in scored.env.items():
        if var.startswith("SCORESTREAM_") and var != "SCORESTREAM_TOPIC_ALERTS":
            monkeypatch.setenv(var, value)
    capsys.readouterr()
    code = main(["tail", "alerts", "-e"])
    _, err = capsys.readouterr()
    assert code == 1 and "does not exist" in err


def _readme_block(heading: str) -> str:
    """The first Python code block of a README section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under '{heading}'"
    return match.group(1)


def test_readme_consumer_starts_one_win_back_flow_per_churn_alert(
    scored: Scored, tmp_path: Path
) -> None:
    topic = scored.topics["alerts"]
    alerts = read_topic(scored.bootstrap, topic, len(EXPECTED_ALERTS))
    churn = [m for m in alerts if orjson.loads(m.value())["alert_type"] == "churn_risk"]
    # A redelivered alert (same record again), as an at-least-once stage upstream may cause.
    produce(scored.bootstrap, topic, [(churn[0].key(), churn[0].value())])
    everything = read_topic(scored.bootstrap, topic, len(alerts) + 1)
    assert len(everything) == len(alerts) + 1
    ends: dict[int, int] = {}
    for message in everything:
        ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    script = tmp_path / "consume_alerts.py"
    script.write_text(_readme_block("Consuming alerts"))
    out_path = tmp_path / "consumer.out"
    env = {**os.environ, "SCORESTREAM_KAFKA_BOOTSTRAP": scored.bootstrap,
           "SCORESTREAM_TOPIC_ALERTS": topic}
    with out_path.open("wb") as out:
        consumer = subprocess.Popen([sys.executable, str(script)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=_ctrl_c_works)
    try:
        # The example commits after acting on each record: done once its group's committed
        # offsets reach the end of every partition, the redelivery included.
        wait_until(lambda: _committed("marketing-automation", scored.bootstrap, topic, ends)
                   == ends or consumer.poll() is not None, 60,
                   "the README consumer to commit every alert", out_path.read_text)
        assert consumer.poll() is None, out_path.read_text()
        consumer.send_signal(signal.SIGINT)
        assert consumer.wait(30) == 0, out_path.read_text()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()

    lines = out_path.read_text().splitlines()
    flows = [re.fullmatch(r"win-back flow for (\S+) \((\w+), churn risk (\d+)%\): (.+)", line)
             for line in lines]
    assert all(flows), lines
    expected = sorted(orjson.loads(m.value())["customer_id"] for m in churn)
    assert sorted(m.group(1) for m in flows if m) == expected
    reasons = {orjson.loads(m.value())["customer_id"]: orjson.loads(m.value())["reason"]
               for m in churn}
    assert all(m.group(4) == reasons[m.group(1)] for m in flows if m)


def _committed(group: str, bootstrap: str, topic: str, ends: dict[int, int]) -> dict[int, int]:
    """A consumer group's committed offsets on the given partitions of a topic."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                       "enable.auto.commit": False})
    try:
        offsets = reader.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    finally:
        reader.close()
    return {tp.partition: tp.offset for tp in offsets}
