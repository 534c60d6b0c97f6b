"""`scorestream load` on the real broker, run as a process: each valid line lands, its bytes
as read, on its source's topic, keyed by its identity on the partition the worker expects;
rejected lines and undelivered records are named in the summary and set the exit code; --rate
paces the sending, and Ctrl-C stops it with a summary that matches what the topics hold."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from models.history.generate import generate, iter_lines
from streams.runtime.partitioning import partition_for
from tests.integration.kafka_tools import free_port, topic_names, worker_env
from tests.kit import ROOT, raw_ev

pytestmark = pytest.mark.integration

PARTITIONS = 4  # worker_env's SCORESTREAM_PARTITIONS


def _load(env: dict[str, str], *argv: str | Path,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", "load", *map(str, argv)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _env(bootstrap: str, name: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    topics = topic_names(name)
    return worker_env(bootstrap, f"load-{name}", topics, tmp_path / "state", free_port()), topics


def _on_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of `topic`, sorted, each checked to sit on its key's
    partition. Reads every partition from its start to its end as of the call (the load has
    exited: whatever it sent is there), without a consumer group to wait for."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"load-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    records = []
    try:
        meta = consumer.list_topics(topic, timeout=15).topics[topic]
        assert meta.error is None and len(meta.partitions) == PARTITIONS, meta
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15,
                                                  cached=False)[1] for p in meta.partitions}
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in left])
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                assert msg.error() is None, msg.error()
                key, value, partition = msg.key(), msg.value(), msg.partition()
                assert key is not None and value is not None and partition is not None
                assert partition == partition_for(key, PARTITIONS), (key, partition)
                records.append((key, value))
                if (msg.offset() or 0) + 1 >= ends[partition]:
                    left.discard(partition)
        assert not left, f"{topic}: partitions {sorted(left)} not read to their end"
    finally:
        consumer.close()
    return sorted(records)


def _check_topic(bootstrap: str, topic: str, expected: list[tuple[bytes, bytes]],
                 output: str) -> None:
    """The topic holds exactly these records; if not, say which are missing or extra (and
    what the load printed)."""
    held = _on_topic(bootstrap, topic)
    missing, extra = Counter(expected) - Counter(held), Counter(held) - Counter(expected)
    assert held == expected, (f"{topic}: {len(held)} records, {len(expected)} expected; "
                              f"missing {sorted(missing.elements())[:5]}, "
                              f"extra {sorted(extra.elements())[:5]}\n{output}")


def _expected(lines: list[bytes]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Per source, the (key, value) records these valid lines should become."""
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for line in lines:
        record = orjson.loads(line)
        key = record.get("customer_id") or record.get("email") or record.get("anonymous_id")
        out.setdefault(record["source"], []).append((key.encode(), line.rstrip(b"\r\n")))
    return {source: sorted(records) for source, records in out.items()}


def _sent_per_source(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2].replace(",", ""))
            for m in re.finditer(r"^  (\w+) +([\d,]+)  -> topic ", stdout, re.M)}


def _seconds(stdout: str) -> float:
    """How long the load took, from the summary's first line."""
    took = re.search(r" in ([\d.]+) s", stdout.splitlines()[0])
    assert took is not None, stdout
    return float(took[1])


def test_valid_lines_land_as_read_and_the_rest_is_reported(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    env, topics = _env(kafka_bootstrap, unique_name, tmp_path)
    # The support topic takes records of at most 2,000 bytes: the broker refuses line 11.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = admin.create_topics([NewTopic(topics["support"], PARTITIONS, 1,
                                            config={"max.message.bytes": "2000"})])
    created[topics["support"]].result(30)
    crm_by_hand = (b'{"event_id": "o-1",  "event_type": "order_placed", "source": "crm", '
                   b'"occurred_at": "2026-01-02T10:00:00Z", "email": "Ann@Example.com", '
                   b'"payload": {"order_id": "o-1", "amount": 10.50, "currency": "EUR"}}')
    lines = [
        raw_ev("w-1", "page_view", customer_id="C1"),                    # 1 web
        crm_by_hand,                                                     # 2 crm, by email
        b"{not json",                                                    # 3 invalid_json
        raw_ev("m-1", "opened", customer_id="C2") + b"\r",               # 4 email, CRLF
        b"[1, 2, 3]",                                                    # 5 not_an_object
        raw_ev("w-2", "page_view", anonymous_id="anon-1"),               # 6 web, anonymous
        raw_ev("p-1", "page_view", source="pos", customer_id="C3"),      # 7 unknown_source
        b"",                                                             # 8 blank
        raw_ev("o-2", "order_placed", customer_id="C2", email="c2@example.com"),  # 9 crm
        raw_ev("w-3", "page_view"),                                      # 10 no_key
        raw_ev("t-1", "ticket_opened", customer_id="C4",                 # 11 too large
               payload={"ticket_id": "t-1", "note": os.urandom(8000).hex()}),
        b'{"source": "web", "customer_id": "\xff\xfe"}',                 # 12 invalid_json
        raw_ev("m-2", "clicked", customer_id="C1"),                      # 13 email
    ]
    path = tmp_path / "history.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))

    done = _load(env, path)

    assert done.returncode == 1, done.stderr
    expected = _expected([lines[n - 1] for n in (1, 2, 4, 6, 9, 13)])
    for source in ("web", "email", "crm"):
        _check_topic(kafka_bootstrap, topics[source], expected[source],
                     done.stdout + done.stderr)
    assert _on_topic(kafka_bootstrap, topics["support"]) == []
    assert (b"Ann@Example.com", crm_by_hand) in expected["crm"]  # as written, not re-serialised

    out = done.stdout.splitlines()
    assert out[0].startswith(f"read 13 lines of {path} in "), done.stdout
    assert out[1] == f"sent 6 records to Kafka at {kafka_bootstrap} (acknowledged):"
    assert out[2:6] == [f"  web              2  -> topic {topics['web']}",
                        f"  email            2  -> topic {topics['email']}",
                        f"  crm              2  -> topic {topics['crm']}",
                        f"  support          0  -> topic {topics['support']}"]
    assert out[6] == "rejected, not sent: 5 lines"
    assert Counter({line.split()[0]: int(line.split()[1]) for line in out[7:11]}) == {
        "invalid_json": 2, "not_an_object": 1, "unknown_source": 1, "no_key": 1}
    assert [line.split(":")[:2] for line in out[11:16]] == [
        ["  line 3", " invalid_json"], ["  line 5", " not_an_object"],
        ["  line 7", " unknown_source"], ["  line 10", " no_key"],
        ["  line 12", " invalid_json"]]
    assert out[16:] == ["not delivered: 1 record",
                        "         1  Broker: Message size too large",
                        "  line 11 (support): Broker: Message size too large",
                        "blank lines, not events: 1 (line 8)"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """What `scorestream generate` writes: 20 customers, 120 days, every source, every kind of
    identity; the file and its lines."""
    events, _truth = generate(20, 5, days=120)
    lines = list(iter_lines(events))
    path = tmp_path_factory.mktemp("load") / "generated.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path, [line.rstrip(b"\n") for line in lines]


def test_a_generated_history_is_sent_whole_at_the_given_rate(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
    generated: tuple[Path, list[bytes]],
) -> None:
    path, lines = generated
    env, topics = _env(kafka_bootstrap, unique_name, tmp_path)
    rate = 400

    done = _load(env, path, "--rate", str(rate))

    assert done.returncode == 0, done.stdout + done.stderr
    expected = _expected(lines)
    assert set(expected) == {"web", "email", "crm", "support"}
    assert _sent_per_source(done.stdout) == {s: len(r) for s, r in expected.items()}
    for source, records in expected.items():
        _check_topic(kafka_bootstrap, topics[source], records, done.stdout + done.stderr)
    assert _seconds(done.stdout) >= (len(lines) - 1) / rate - 0.05, done.stdout  # 0.1 s shown
    assert done.stdout.splitlines()[-2:] == ["rejected: none", "not delivered: none"]


def _wait_for_records(bootstrap: str, topic: str, at_least: int, timeout: float = 60) -> None:
    """Until `topic` exists and holds `at_least` records."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                      "enable.auto.commit": False})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                meta = probe.list_topics(topic, timeout=5).topics[topic]
                if meta.error is None and meta.partitions:
                    held = sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5,
                                                           cached=False)[1]
                               for p in meta.partitions)
                    if held >= at_least:
                        return
            except KafkaException:
                pass
            time.sleep(0.1)
    finally:
        probe.close()
    raise AssertionError(f"{topic} did not get {at_least} records in {timeout} s")


def test_ctrl_c_stops_sending_and_the_summary_matches_the_topics(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path,
    generated: tuple[Path, list[bytes]],
) -> None:
    path, lines = generated
    env, topics = _env(kafka_bootstrap, unique_name, tmp_path)
    rate = 100
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "load", str(path), "--rate", str(rate)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_records(kafka_bootstrap, topics["web"], 10)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, stdout + stderr
    out = stdout.splitlines()
    stopped = re.fullmatch(r"interrupted: line ([\d,]+) and the lines after it were not sent",
                           out[-1])
    assert stopped is not None, stdout
    first_unsent = int(stopped[1].replace(",", ""))
    assert 10 < first_unsent < len(lines) / 2, stdout
    # Lines are sent in file order: exactly those before the first unsent line were sent.
    expected = _expected(lines[: first_unsent - 1])
    sent = _sent_per_source(stdout)
    assert sent == {s: len(r) for s, r in expected.items()}, stdout
    for source, records in expected.items():
        _check_topic(kafka_bootstrap, topics[source], records, stdout + stderr)
    assert sum(sent.values()) <= rate * (_seconds(stdout) + 0.05) + 1, stdout  # 0.1 s shown
    assert "rejected: none" in out and "not delivered: none" in out
