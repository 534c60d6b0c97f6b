"""Scale-out and fault tolerance on the real broker: two workers, kill -9, a broker restart,
an empty disk, poison records, SIGTERM, and memory per customer.

Every scenario runs a generated history through real `scorestream worker` processes and
compares the outcome with a single-process reference of the same events (fault_tools.py): the
committed customer states in the changelog and each customer's scorecard through the API, in
everything that does not depend on when the learner published which model bundle. Where the
workers score with frozen models and no alert budget, the committed alerts and what scoring
made of each state (pending labels, last scorecard, alert memory) must equal a replay's, for
the customers without alias-only events.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.history.generate import iter_lines
from models.history.replay import ingest, replay, sort_raw
from models.ingest.routing import Ingestion
from schemas.decode import Reason
from streams.stages.ingest import ingestion_config
from tests.integration.alerting_script import ALERT_ENV
from tests.integration.fault_tools import (
    HOLD_MS,
    PARTITIONS,
    Stream,
    card_differences,
    changelog_states,
    committed_offsets,
    converge,
    differences,
    expected_alerts,
    expected_card,
    fold,
    group_members,
    latest_offsets,
    make_stream,
    merged,
    metric,
    open_transactions,
    out_of_order,
    produce_records,
    read_all,
    scored_differences,
    stable_offsets,
    state_differences,
    wait_for,
    with_watermarks,
    worker_settings,
)
from tests.integration.kafka_tools import (
    WorkerProcess,
    free_port,
    running_worker,
    topic_names,
    worker_env,
)
from tests.kit import ROOT

LAUNCHER = ROOT / "deploy" / "kafka" / "kafka_local.py"


@pytest.fixture(scope="module")
def stream() -> Stream:
    """250 customers over a year (~45,000 source records), and their reference."""
    built = with_watermarks(make_stream(250, seed=11, days=365))
    assert not built.dead and len(built.states) == 250
    return built


def _env(bootstrap: str, name: str, tmp: Path, tag: str, **extra: str) -> dict[str, str]:
    return worker_env(bootstrap, f"ft-{name}", topic_names(name), tmp / f"state-{tag}",
                      free_port(), SCORESTREAM_IDENTITY_MAX_HOLD_MS=str(HOLD_MS),
                      SCORESTREAM_PARTITIONS=str(PARTITIONS), **extra)


def _logs(*workers: WorkerProcess) -> str:
    """Each worker's failures (what stopped a stage or the worker) and the end of its log."""
    return "\n".join(f"--- {w.log_path.name}\n{_failures(w)}{w.log_tail(25)}" for w in workers)


def _failures(worker: WorkerProcess) -> str:
    text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    lines = [line for line in text.splitlines()
             if "CRITICAL" in line or "processor stopped" in line or "KafkaException" in line]
    return "".join(f"{line}\n" for line in lines[:20]) + ("...\n" if lines else "")


def _scoring_members(bootstrap: str, app_id: str) -> list[tuple[str, list[int]]]:
    return group_members(bootstrap, [f"{app_id}-scoring"])[f"{app_id}-scoring"]


def _exact_and_no_alert_twice(bootstrap: str, app_id: str, topics: dict[str, str],
                              stream: Stream, everyone: bool = False) -> list[dict[str, Any]]:
    """The committed customer states equal the reference, and what scoring made of them (the
    pending labels, the last scorecard, the alert memory) a replay's for the customers without
    alias-only events (with `everyone`, for all: workers with the identity merge), the workers
    scoring with frozen models and no alert budget (`ALERT_ENV`); no alert id is committed
    twice. Returns the committed alerts."""
    states = changelog_states(bootstrap, f"{app_id}-customer-state-changelog")
    assert state_differences(states, stream) == []
    alerts = [orjson.loads(m.value()) for m in read_all(bootstrap, topics["alerts"])]
    ids = Counter(a["alert_id"] for a in alerts)
    assert [a for a, count in ids.items() if count > 1] == []
    scored = scored_differences(states, stream, everyone)
    assert scored == [], (f"{len(scored)} customers differ, e.g. {scored[:3]} "
                          f"({out_of_order(bootstrap, topics['customer_events'], stream)})")
    return alerts


def _agreement(alerts: list[dict[str, Any]], stream: Stream, bootstrap: str,
               topics: dict[str, str], everyone: bool = False) -> str:
    """The committed `alerts` of the customers without alias-only events (with `everyone`, of
    all customers: workers with the identity merge), per (customer, type, alert id), must be
    the replay's (workers with frozen models and no alert budget: `ALERT_ENV`): none lost,
    none repeated, none more. Returns how they compare."""
    got = Counter((a["customer_id"], a["alert_type"], a["alert_id"]) for a in alerts
                  if everyone or a["customer_id"] not in stream.detoured)
    expected = expected_alerts(stream, everyone)
    late = ("scored in event-time order by the identity merge" if everyone
            else out_of_order(bootstrap, topics["customer_events"], stream))
    whose = "all customers" if everyone else "customers without alias-only events"
    text = (f"alerts of {whose}: {sum((got & expected).values())} "
            f"of the reference's {sum(expected.values())} committed, "
            f"{sum((got - expected).values())} more ({late})")
    assert got == expected, (f"{text}; missing {sorted(expected - got)[:10]}, "
                             f"more {sorted(got - expected)[:10]}")
    return text


def _alert_types(bootstrap: str, topic: str) -> dict[str, str]:
    """Alert id -> alert type, of every alert written (aborted ones too)."""
    return {alert["alert_id"]: alert["alert_type"]
            for alert in map(orjson.loads, (m.value() for m in read_all(
                bootstrap, topic, committed=False)))}


def _written_alert_ids(bootstrap: str, topic: str) -> Counter[str]:
    """Every alert id written (aborted ones too), counted."""
    return Counter(orjson.loads(m.value())["alert_id"]
                   for m in read_all(bootstrap, topic, committed=False))


def test_reference_agrees_with_the_replay(stream: Stream) -> None:
    """The folded reference gives the same key values as `models.history.replay` on the same
    history."""
    raw = [orjson.loads(value) for _source, _key, value in stream.records]
    ingestion = Ingestion(ingestion_config(worker_settings()))
    result = replay(ingest(sort_raw(iter_lines(raw)), ingestion))
    as_of = result.stats["as_of"]
    assert result.stats["applied"] == stream.events
    for card in result.scorecards:
        got = expected_card(stream, card.customer_id, as_of)
        assert got == {"customer_id": card.customer_id, "as_of": as_of,
                       "data_completeness": card.data_completeness,
                       "revenue_12m": card.revenue_12m,
                       "interactions_12m": card.interactions_12m,
                       "days_since_last_interaction": card.days_since_last_interaction,
                       "ltv_historic": card.ltv_historic}


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_split_partitions_and_match_the_replay(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream
) -> None:
    # Frozen models: scoring keeps the initial bundle, so whole scorecards and the alerts can
    # be compared.
    env_a = _env(kafka_bootstrap, unique_name, tmp_path, "a", **ALERT_ENV,
                 SCORESTREAM_MODEL_FROZEN="true")
    env_b = _env(kafka_bootstrap, unique_name, tmp_path, "b", **ALERT_ENV,
                 SCORESTREAM_MODEL_FROZEN="true")
    app_id = env_a["SCORESTREAM_APP_ID"]
    topics = topic_names(unique_name)
    with running_worker(env_a, tmp_path / "a.log") as a, \
            running_worker(env_b, tmp_path / "b.log") as b:
        members = wait_for(
            lambda: (m := _scoring_members(kafka_bootstrap, app_id)) and len(m) == 2
            and all(parts for _, parts in m) and m,
            60, "both workers to own scoring partitions", lambda: _logs(a, b), every=0.5)
        owned = sorted(p for _, parts in members for p in parts)
        assert owned == list(range(PARTITIONS)), members
        assert {client for client, _ in members} == {a.web_url, b.web_url}

        produce_records(kafka_bootstrap, topics, stream.records)
        took = converge(stream, a.web_url, 240, lambda: _logs(a, b))
        assert card_differences(stream, b.web_url) == []
        # Worker A answered for B's customers by forwarding: both served a share.
        processed = [metric(w.web_url, "scorestream_events_processed_total") for w in (a, b)]
        assert all(n > 0 for n in processed), processed
        # Partitions moved between two live workers: neither fenced the other's producer
        # (once one stops, the other does fence the producer it left behind).
        for worker in (a, b):
            text = worker.log_path.read_text(errors="replace")
            assert ": fenced " not in text and "cannot go on" not in text, _logs(worker)
        assert a.stop() == 0 and b.stop() == 0, _logs(a, b)

    alerts = _exact_and_no_alert_twice(kafka_bootstrap, app_id, topics, stream)
    print(f"two workers: converged {took:.1f}s after the last record was produced; "
          f"events scored per worker {processed}; alerts {len(alerts)}; "
          f"{_agreement(alerts, stream, kafka_bootstrap, topics)}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("merge", [False, True], ids=["default", "identity_merge"])
def test_kill_9_at_three_points_loses_nothing_and_duplicates_no_alert(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream, merge: bool
) -> None:
    """Three times: send a third of the stream and kill -9 a worker while it scores; a fresh
    worker joins after the first two kills. The others take over the dead worker's partitions
    and restore them from the changelogs; its open transactions are aborted, never
    half-applied, so every event (alias-only ones through the identity stage too) counts once
    and no alert is committed twice.

    With the identity merge (`SCORESTREAM_IDENTITY_MERGE`) scoring holds each event until
    every identity partition has passed its time, so a customer's alias-only events are
    scored in event-time order with its others however far the identity stage runs behind:
    then the alerts and what scoring made of every state, detoured customers' too, are a
    replay's (held events are read again after a kill, not lost, and what went out is not
    scored twice)."""
    if merge:
        stream = merged(stream)  # alias-only events move the partitions' clocks too
    topics = topic_names(unique_name)
    # Frozen models and no alert budget: scoring keeps the initial bundle, so whole
    # scorecards can be compared with the reference, and the alerts with a replay's.
    envs = {tag: _env(kafka_bootstrap, unique_name, tmp_path, tag, **ALERT_ENV,
                      SCORESTREAM_MODEL_FROZEN="true",
                      **({"SCORESTREAM_IDENTITY_MERGE": "true"} if merge else {}))
            for tag in "abcd"}
    app_id = envs["a"]["SCORESTREAM_APP_ID"]
    size = len(stream.records)
    thirds = [stream.records[i * size // 3:(i + 1) * size // 3] for i in range(3)]
    takeovers = []
    victims: list[WorkerProcess] = []
    with ExitStack() as stack:
        live = [stack.enter_context(running_worker(envs[t], tmp_path / f"{t}.log"))
                for t in "ab"]
        for n, third in enumerate(thirds):
            victim = live.pop(0)
            victims.append(victim)
            before = metric(victim.web_url, "scorestream_events_processed_total")
            produce_records(kafka_bootstrap, topics, third)
            _wait_scored(victim, before + 200, live)
            victim.process.send_signal(signal.SIGKILL)
            assert victim.process.wait(10) == -signal.SIGKILL
            killed_at = time.monotonic()
            _wait_owned(kafka_bootstrap, app_id, live)
            takeovers.append(round(time.monotonic() - killed_at, 1))
            if n < 2:
                tag = "cd"[n]
                live.append(stack.enter_context(
                    running_worker(envs[tag], tmp_path / f"{tag}.log")))
        converge(stream, live[0].web_url, 240, lambda: _logs(*live))
        assert card_differences(stream, live[0].web_url) == []
        for worker in live:
            text = worker.log_path.read_text(errors="replace")
            assert "went out without waiting" not in text, _logs(worker)
            assert worker.stop() == 0, _logs(worker)
    # A survivor fenced each victim's scoring producer when it took the partitions over, so a
    # transaction the victim left open was aborted at once, not at the transaction timeout.
    for victim in victims:
        assert _fenced(victims + live, "customer-state", victim), _logs(*victims, *live)

    alerts = _exact_and_no_alert_twice(kafka_bootstrap, app_id, topics, stream, merge)
    committed = Counter(a["alert_id"] for a in alerts)
    everything = _written_alert_ids(kafka_bootstrap, topics["alerts"])
    assert committed, "the stream raises alerts"
    # An alert of an aborted transaction was raised again, with its id, once its events were
    # scored again: none lost to a kill.
    kinds = _alert_types(kafka_bootstrap, topics["alerts"])
    lost = [kinds[a] for a in set(everything) - set(committed)]
    assert lost == [], lost
    print(f"kill -9{' (identity merge)' if merge else ''}: partitions owned again "
          f"{takeovers}s after each kill; alerts committed "
          f"{sum(committed.values())} (all distinct); alerts in aborted transactions "
          f"{sum(everything.values()) - sum(committed.values())}; "
          f"{_agreement(alerts, stream, kafka_bootstrap, topics, merge)}")


def _fenced(workers: list[WorkerProcess], stage: str, victim: WorkerProcess) -> bool:
    """Some worker's log says its `stage` fenced the victim's producer of that stage."""
    return any(f"{stage}: fenced" in line and f"{victim.web_url}," in line
               for worker in workers
               for line in worker.log_path.read_text(errors="replace").splitlines())


def _ingest_child(worker: WorkerProcess) -> int:
    """The pid of a worker's ingest child process (multiprocessing's spawned interpreter)."""
    pid = worker.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    spawned = [int(c) for c in children
               if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(spawned) == 1, (children, worker.log_tail())
    return spawned[0]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def _stop_inside_a_transaction(bootstrap: str, topic: str, stop: Callable[[], None],
                               cont: Callable[[], None], timeout: float = 60.0
                               ) -> dict[int, int]:
    """SIGSTOP the process(es) until one is caught with a transaction open on `topic`; they
    stay stopped. Returns the first offset of the open transaction per partition (its last
    stable offset): a partition counts only if that offset stays put for a second while
    everything not stopped runs on, so the transaction is the stopped process's, not one that
    a running stage commits a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        stop()
        try:
            first = _stable_offsets_of_open(bootstrap, topic)
            if first:
                time.sleep(1.0)
                again = _stable_offsets_of_open(bootstrap, topic)
                held = {p: lso for p, lso in first.items() if again.get(p) == lso}
                if held:
                    return held
        except BaseException:
            cont()  # never leave a process stopped behind a failure
            raise
        cont()
        assert time.monotonic() < deadline, f"no transaction on {topic} caught open"
        time.sleep(0.02)


def _stable_offsets_of_open(bootstrap: str, topic: str) -> dict[int, int]:
    """Last stable offset of each partition of `topic` that an open transaction holds (its
    last stable offset behind its high watermark)."""
    stable = stable_offsets(bootstrap, [topic])
    high = latest_offsets(bootstrap, [topic])
    return {tp[1]: lso for tp, lso in stable.items() if lso < high[tp]}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("victim", ["ingest child", "process group"])
def test_kill_9_inside_an_ingest_transaction_aborts_it_and_loses_nothing(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream, victim: str
) -> None:
    """kill -9 of the ingest child process alone, or of the worker's whole process group,
    while a transaction holds records on customer-events (caught by SIGSTOP first: the ingest
    child's own when only it is stopped; in the group, ingest's or the identity stage's). The
    transaction is aborted by the broker, never half-applied; a worker that loses its ingest
    child stops with an error instead of scoring without input; a fresh worker takes over
    and every event counts once, no alert twice."""
    topics = topic_names(unique_name)
    envs = {tag: _env(kafka_bootstrap, unique_name, tmp_path, tag, **ALERT_ENV,
                      SCORESTREAM_MODEL_FROZEN="true")
            for tag in "ab"}
    app_id = envs["a"]["SCORESTREAM_APP_ID"]
    chunks = [stream.records[i:i + 500] for i in range(0, len(stream.records), 500)]
    sent = [0]
    enough = threading.Event()

    def trickle() -> None:  # keep ingest busy until the test has caught a transaction open
        for chunk in chunks:
            if enough.is_set():
                return
            produce_records(kafka_bootstrap, topics, chunk)
            sent[0] += 1
            time.sleep(0.1)

    with ExitStack() as stack:
        a = stack.enter_context(running_worker(envs["a"], tmp_path / "a.log"))
        child = _ingest_child(a)
        producing = threading.Thread(target=trickle, daemon=True)
        producing.start()
        _wait_scored(a, 200, [])
        if victim == "ingest child":
            caught = _stop_inside_a_transaction(
                kafka_bootstrap, topics["customer_events"],
                lambda: os.kill(child, signal.SIGSTOP), lambda: os.kill(child, signal.SIGCONT))
            os.kill(child, signal.SIGKILL)
            killed_at = time.monotonic()
            enough.set()
            # The parent sees its ingest child die and stops the worker (its other stages
            # commit and leave), so an orchestrator restarts it whole.
            assert a.process.wait(60) != 0, _logs(a)
            assert "ingest process exited unexpectedly" in a.log_path.read_text(), _logs(a)
        else:
            caught = _stop_inside_a_transaction(
                kafka_bootstrap, topics["customer_events"],
                lambda: os.killpg(a.process.pid, signal.SIGSTOP),
                lambda: os.killpg(a.process.pid, signal.SIGCONT))
            os.killpg(a.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            enough.set()
            assert a.process.wait(10) == -signal.SIGKILL
        producing.join(60)
        assert not producing.is_alive()
        wait_for(lambda: _gone(child), 10, f"the ingest child {child} to be gone",
                 lambda: _logs(a))
        b = stack.enter_context(running_worker(envs["b"], tmp_path / "b.log"))
        _wait_owned(kafka_bootstrap, app_id, [b])
        took_over = time.monotonic() - killed_at
        produce_records(kafka_bootstrap, topics,
                        [r for chunk in chunks[sent[0]:] for r in chunk])
        converge(stream, b.web_url, 240, lambda: _logs(a, b))
        assert b.stop() == 0, _logs(b)
    # The new worker fenced the dead ingest producer: its open transaction was aborted then.
    assert _fenced([b], "ingest", a), _logs(a, b)
    if victim == "process group":
        # Every stage of the dead worker is named by its partitions' committed offsets, even
        # one that had not finished a batch yet (claimed on assignment), and so fenced: none
        # of its open transactions is left to time out.
        assert all(_fenced([b], stage, a) for stage in ("identity", "customer-state")), _logs(
            a, b)

    # The open transaction's first record is on the topic but was never committed: aborted.
    written = read_all(kafka_bootstrap, topics["customer_events"], committed=False)
    committed = read_all(kafka_bootstrap, topics["customer_events"])
    at = {(m.partition(), m.offset()) for m in committed}
    assert all((p, lso) not in at for p, lso in caught.items()), caught
    assert {(p, lso) for p, lso in caught.items()} <= {(m.partition(), m.offset())
                                                       for m in written}, caught
    alerts = _exact_and_no_alert_twice(kafka_bootstrap, app_id, topics, stream)
    assert alerts, "the stream raises alerts"
    print(f"kill -9 of the {victim} inside a transaction (first offsets {caught}): a new "
          f"worker owned every partition {took_over:.1f}s after the kill; "
          f"{len(written) - len(committed)} customer events aborted, none lost; "
          f"{_agreement(alerts, stream, kafka_bootstrap, topics)}")


def _wait_scored(worker: WorkerProcess, above: float, others: list[WorkerProcess]) -> None:
    """Wait (polling fast) until a worker's scoring stage has processed more than `above`."""
    wait_for(lambda: metric(worker.web_url, "scorestream_events_processed_total") > above,
             120, f"{worker.log_path.stem} to score", lambda: _logs(worker, *others),
             every=0.05)


def _wait_owned(bootstrap: str, app_id: str, workers: list[WorkerProcess]) -> None:
    """Wait until exactly these workers are the scoring group and own every partition."""
    urls = {w.web_url for w in workers}

    def owned() -> bool:
        members = _scoring_members(bootstrap, app_id)
        return ({client for client, _ in members} == urls
                and sorted(p for _, parts in members for p in parts) == list(range(PARTITIONS)))

    wait_for(owned, 90, "the survivors to own every partition", lambda: _logs(*workers),
             every=0.5)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Path]:
    """A broker of this test's own (it will be stopped and restarted): its run directory."""
    run_dir = tmp_path / "kafka"
    started = subprocess.run([sys.executable, str(LAUNCHER), "start", "--run-dir", str(run_dir)],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.fail(f"dedicated broker did not start:\n{started.stderr}", pytrace=False)
    try:
        yield run_dir
    finally:
        subprocess.run([sys.executable, str(LAUNCHER), "stop", "--run-dir", str(run_dir)],
                       capture_output=True, text=True, check=False)


@pytest.mark.integration
@pytest.mark.slow
def test_broker_restart_mid_stream_recovers_without_help(
    own_broker: Path, unique_name: str, tmp_path: Path, stream: Stream
) -> None:
    """The broker is stopped while two workers score, and started again on its ports and
    data three seconds later: the same two processes carry on and the result is exact."""
    bootstrap = (own_broker / "bootstrap").read_text().strip()
    topics = topic_names(unique_name)
    # Frozen models and no alert budget, so the alerts can be compared with a replay's.
    env_a = _env(bootstrap, unique_name, tmp_path, "a", **ALERT_ENV,
                 SCORESTREAM_MODEL_FROZEN="true")
    env_b = _env(bootstrap, unique_name, tmp_path, "b", **ALERT_ENV,
                 SCORESTREAM_MODEL_FROZEN="true")
    half = len(stream.records) // 2
    with running_worker(env_a, tmp_path / "a.log") as a, \
            running_worker(env_b, tmp_path / "b.log") as b:
        pids = (a.process.pid, b.process.pid)
        produce_records(bootstrap, topics, stream.records[:half])
        wait_for(lambda: metric(a.web_url, "scorestream_events_processed_total") > 500,
                 120, "scoring to run", lambda: _logs(a, b), every=0.05)
        stopped = subprocess.run([sys.executable, str(LAUNCHER), "stop", "--run-dir",
                                  str(own_broker)], capture_output=True, text=True, check=False)
        assert stopped.stdout.strip() == "stopped", stopped.stderr
        down_at = time.monotonic()
        time.sleep(3)
        restarted = subprocess.run([sys.executable, str(LAUNCHER), "restart", "--run-dir",
                                    str(own_broker)], capture_output=True, text=True, check=False)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.strip() == bootstrap
        downtime = time.monotonic() - down_at
        produce_records(bootstrap, topics, stream.records[half:])
        took = converge(stream, a.web_url, 120, lambda: _logs(a, b))
        assert (a.process.poll(), b.process.poll()) == (None, None)
        assert (a.process.pid, b.process.pid) == pids
        assert a.stop() == 0 and b.stop() == 0, _logs(a, b)

    alerts = _exact_and_no_alert_twice(bootstrap, env_a["SCORESTREAM_APP_ID"], topics, stream)
    print(f"broker restart: down {downtime:.1f}s; exact again {took:.1f}s after the rest of the "
          f"stream was produced; {_agreement(alerts, stream, bootstrap, topics)}")


def _restored(worker: WorkerProcess) -> tuple[int, float]:
    """Keys and seconds of the scoring table's restore, from the worker's log."""
    text = worker.log_path.read_text(errors="replace")
    found = re.findall(r"customer-state: restored (\d+) keys for partitions .* in ([0-9.]+)s",
                       text)
    assert found, worker.log_tail()
    return int(found[-1][0]), float(found[-1][1])


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_commits_and_leaves_then_empty_disk_restores(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, stream: Stream
) -> None:
    """SIGTERM mid-stream: the batch in hand is committed, every group is left, no transaction
    stays open, and the committed state is exactly the customer events up to the committed
    offsets. Then a worker on an empty RocksDB disk restores that state, finishes the stream,
    and a third one on another empty disk restores the final state alone."""
    topics = topic_names(unique_name)
    rocks = {"SCORESTREAM_STORE": "rocksdb://"}
    env_a = _env(kafka_bootstrap, unique_name, tmp_path, "a", **rocks)
    app_id = env_a["SCORESTREAM_APP_ID"]
    changelog = f"{app_id}-customer-state-changelog"
    with running_worker(env_a, tmp_path / "a.log") as a:
        produce_records(kafka_bootstrap, topics, stream.records)
        wait_for(lambda: metric(a.web_url, "scorestream_events_processed_total")
                 > stream.events // 4, 120, "a quarter of the stream scored", lambda: _logs(a),
                 every=0.05)
        began = time.monotonic()
        assert a.stop() == 0, _logs(a)
        shutdown_s = time.monotonic() - began
        assert "Traceback" not in a.log_path.read_text(errors="replace"), _logs(a)

    groups = [f"{app_id}-{stage}" for stage in ("ingest", "identity", "scoring", "learner")]
    assert group_members(kafka_bootstrap, groups) == {g: [] for g in groups}
    outputs = [topics["customer_events"], topics["alerts"], topics["score_changes"],
               topics["dead_letters"], topics["identity"], changelog,
               f"{app_id}-identity-changelog"]
    assert open_transactions(kafka_bootstrap, outputs) == {}
    offsets = committed_offsets(kafka_bootstrap, f"{app_id}-scoring", topics["customer_events"])
    consumed = [orjson.loads(m.value()) for m in
                read_all(kafka_bootstrap, topics["customer_events"], until=offsets)]
    partial = changelog_states(kafka_bootstrap, changelog)
    assert 0 < len(consumed) < stream.events
    assert differences(partial, fold(consumed)) == []

    env_b = _env(kafka_bootstrap, unique_name, tmp_path, "b", **rocks)
    with running_worker(env_b, tmp_path / "b.log") as b:
        keys_b, _ = wait_for(lambda: _restored_or_none(b), 60, "B's restore", lambda: _logs(b))
        assert keys_b == len(partial)
        converge(stream, b.web_url, 240, lambda: _logs(b))
        assert b.stop() == 0, _logs(b)
    env_c = _env(kafka_bootstrap, unique_name, tmp_path, "c", **rocks)
    with running_worker(env_c, tmp_path / "c.log") as c:
        keys_c, seconds_c = wait_for(lambda: _restored_or_none(c), 60, "C's restore",
                                     lambda: _logs(c))
        assert keys_c == len(stream.states)
        assert list((tmp_path / "state-c" / "tables" / "customer-state").iterdir())
        converge(stream, c.web_url, 30, lambda: _logs(c))
    print(f"SIGTERM: exit 0 after {shutdown_s:.1f}s with {len(consumed)} customer events "
          f"committed; empty-disk restore of {keys_c} customers took {seconds_c:.2f}s")


def _restored_or_none(worker: WorkerProcess) -> tuple[int, float] | None:
    text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    return _restored(worker) if "customer-state: restored" in text else None


def _poison(n: int, max_bytes: int) -> list[tuple[str, bytes, bytes | None, str]]:
    """n poison records of every kind, each with its own event id where it has one:
    (source, key, value, the reason it must be dead-lettered with)."""
    def event(i: int, **changes: object) -> bytes:
        good: dict[str, object] = {
            "event_id": f"poison-{i}", "event_type": "page_view", "source": "web",
            "occurred_at": 1_720_000_000_000, "customer_id": "C000001", "payload": {"url": "/"}}
        good.update(changes)
        return orjson.dumps({k: v for k, v in good.items() if v is not None})

    order = {"order_id": "o", "amount": "lots", "currency": "EUR"}
    kinds: list[tuple[str, Callable[[int], bytes | None], Reason]] = [
        ("web", lambda i: bytes(range(256)) * 3, Reason.INVALID_UTF8),
        ("crm", lambda i: b"\xc3\x28{\"event_id\": 1}", Reason.INVALID_UTF8),
        ("email", lambda i: b"this is not json", Reason.INVALID_JSON),
        ("web", lambda i: b"[1, 2, 3]", Reason.NOT_AN_OBJECT),
        ("crm", lambda i: b"\"just a string\"", Reason.NOT_AN_OBJECT),
        ("email", lambda i: b"42", Reason.NOT_AN_OBJECT),
        ("web", lambda i: b"", Reason.EMPTY_VALUE),
        ("crm", lambda i: None, Reason.EMPTY_VALUE),
        ("web", lambda i: b"{\"pad\": \"" + b"x" * (max_bytes + 10) + b"\"}", Reason.OVERSIZED),
        ("web", lambda i: b"{\"a\":" * 100 + b"1" + b"}" * 100, Reason.TOO_DEEP),
        ("web", lambda i: event(i, occurred_at="yesterday"), Reason.BAD_TIMESTAMP),
        ("web", lambda i: event(i, customer_id=12345), Reason.SCHEMA_VIOLATION),
        ("crm", lambda i: event(i, source="crm", event_type="order_placed", payload=order),
         Reason.SCHEMA_VIOLATION),
        ("web", lambda i: event(i, payload="not an object"), Reason.SCHEMA_VIOLATION),
        ("web", lambda i: event(i, event_id=None), Reason.SCHEMA_VIOLATION),
        ("web", lambda i: event(i, customer_id=None), Reason.MISSING_IDENTITY),
        ("support", lambda i: event(i, source="support", event_type="teleported"),
         Reason.UNKNOWN_EVENT_TYPE),
        ("email", lambda i: event(i), Reason.SOURCE_MISMATCH),
    ]
    out = []
    for i in range(n):
        source, make, reason = kinds[i % len(kinds)]
        out.append((source, f"poison-{i}".encode(), make(i), str(reason)))
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_ten_percent_poison_all_dead_lettered_and_every_valid_event_applied(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    valid = with_watermarks(make_stream(120, seed=5, days=240))
    max_bytes = worker_settings().max_event_bytes
    poison = _poison(len(valid.records) // 9, max_bytes)  # 10 % of all records
    mixed: list[tuple[str, bytes | None, bytes | None]] = []
    step = len(valid.records) // len(poison)
    for i, record in enumerate(valid.records):
        mixed.append(record)
        if i % step == 0 and i // step < len(poison):
            source, key, value, _ = poison[i // step]
            mixed.append((source, key, value))
    assert len(mixed) == len(valid.records) + len(poison)
    share = len(poison) / len(mixed)
    assert 0.09 < share < 0.11, share

    topics = topic_names(unique_name)
    env = _env(kafka_bootstrap, unique_name, tmp_path, "a")
    with running_worker(env, tmp_path / "a.log") as worker:
        pid = worker.process.pid
        produce_records(kafka_bootstrap, topics, mixed)
        converge(valid, worker.web_url, 240, lambda: _logs(worker))
        letters = wait_for(
            lambda: (d := read_all(kafka_bootstrap, topics["dead_letters"]))
            and len(d) >= len(poison) and d, 60, "every dead letter", lambda: _logs(worker))
        assert worker.process.poll() is None and worker.process.pid == pid
        text = worker.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "CRITICAL" not in text, worker.log_tail()
        assert worker.stop() == 0, _logs(worker)

    states = changelog_states(kafka_bootstrap, f"{env['SCORESTREAM_APP_ID']}"
                              "-customer-state-changelog")
    assert state_differences(states, valid) == []
    by_key = {}
    for msg in letters:
        record = orjson.loads(msg.value())
        key = base64.b64decode(record["key_b64"]) if record["key_b64"] else b""
        assert key not in by_key, f"dead-lettered twice: {key!r}"
        by_key[key] = record
    assert len(letters) == len(poison)
    for source, key, value, reason in poison:
        record = by_key[key]
        assert record["reason"] == reason, (key, value and value[:60], record)
        assert record["message"]
        assert record["topic"] == topics[source]
        kept = None if record["value_b64"] is None else base64.b64decode(record["value_b64"])
        if not value:
            assert not kept  # an empty value and a null one are both "no bytes"
        elif record["value_truncated"]:
            assert record["value_size"] == len(value) and value.startswith(kept or b"")
        else:
            assert kept == value
    reasons_seen = Counter(r["reason"] for r in by_key.values())
    print(f"poison: {len(poison)} of {len(mixed)} records dead-lettered by reason "
          f"{dict(reasons_seen)}; {valid.events} valid events applied")


@pytest.mark.slow
def test_rocksdb_resident_memory_does_not_grow_with_customers(tmp_path: Path) -> None:
    """Resident memory after writing N and 2N customer states (cloned from generated,
    scored histories) to four partition stores: with RocksDB the second N add far less than
    their bytes; with dicts they add at least their bytes (so the measure can see growth)."""
    def start(store: str, customers: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--store", store,
             "--customers", str(customers), "--json",
             "--dir", str(tmp_path / f"{store}-{customers}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    def result(run: subprocess.Popen[str]) -> dict[str, float]:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    # Each measure is a process of its own (its resident memory is its own): all four at once.
    n = 40_000
    runs = [start(store, customers) for store in ("rocksdb", "memory") for customers in (n, 2 * n)]
    rocks, memory = [result(r) for r in runs[:2]], [result(r) for r in runs[2:]]
    added_bytes = rocks[1]["state_bytes"] - rocks[0]["state_bytes"]
    rocks_growth = rocks[1]["rss_bytes"] - rocks[0]["rss_bytes"]
    memory_growth = memory[1]["rss_bytes"] - memory[0]["rss_bytes"]
    assert memory_growth > 0.8 * added_bytes, (memory, added_bytes)
    assert rocks_growth < 0.15 * added_bytes, (rocks, added_bytes)
    print(f"memory per customer: dict {memory[1]['rss_per_customer']:.0f} B, RocksDB "
          f"{rocks[1]['rss_per_customer']:.0f} B at {2 * n} customers; RSS growth from {n} "
          f"to {2 * n}: dict {memory_growth / 2**20:.1f} MiB, RocksDB "
          f"{rocks_growth / 2**20:.1f} MiB for {added_bytes / 2**20:.1f} MiB of states")
