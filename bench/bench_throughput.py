"""End-to-end throughput of one worker against the bare-consumer ceiling, on one broker.

    SCORESTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/bench_throughput.py --customers 2000

1. Pre-produces a generated history (valid source events) to fresh source topics, so producer
   speed is not what is measured.
2. Ceiling: a bare confluent-kafka consumer that only decodes every record with orjson.
3. Worker: starts `scorestream worker` on those topics and times, from the first record it
   scores to the last one, how fast events go from source topics to scores out
   (polling /metrics). Prints both rates and their ratio.

A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.synthetic import generate  # noqa: E402


def produce_history(bootstrap: str, topics: dict[str, str], customers: int, seed: int) -> int:
    """Produce the generated history's events that carry a customer id; returns the count."""
    events, _ = generate(customers, seed=seed)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 2_000_000,
                         "compression.type": "lz4"})
    seen: set[tuple[str, str]] = set()
    count = 0
    for event in events:
        ident = (event["source"], event["event_id"])
        if "customer_id" not in event or ident in seen:
            continue  # alias-only events and redeliveries would blur the count
        seen.add(ident)
        producer.produce(topics[event["source"]], key=event["customer_id"].encode(),
                         value=orjson.dumps(event))
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
    producer.flush(120)
    return count


def ceiling(bootstrap: str, topics: list[str], expected: int) -> float:
    """Events/s of a bare consumer that only decodes (the ceiling)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ceiling-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(topics)
    n, began = 0, None
    while n < expected:
        for msg in consumer.consume(5000, 1.0):
            if msg.error() is None:
                began = began or time.perf_counter()
                orjson.loads(msg.value())
                n += 1
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return n / elapsed


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples from a worker's /metrics."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return 0.0
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def worker_rate(bootstrap: str, topics: dict[str, str], expected: int, port: int,
                timeout: float, batch_size: int | None = None) -> tuple[float, float]:
    """(events/s end to end, seconds) for one worker processing the pre-produced history."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORESTREAM_KAFKA_BOOTSTRAP": bootstrap,
           "SCORESTREAM_APP_ID": f"bench-{uuid.uuid4().hex[:8]}", "SCORESTREAM_WEB_PORT":
           str(port), "SCORESTREAM_LOG_LEVEL": "warn",
           "SCORESTREAM_DATA_DIR": f"/tmp/scorestream-bench-{port}"}
    env.update({f"SCORESTREAM_TOPIC_{role.upper()}": name for role, name in topics.items()})
    if batch_size:
        env["SCORESTREAM_BATCH_SIZE"] = str(batch_size)
    url = f"http://127.0.0.1:{port}"
    log = open(f"/tmp/scorestream-bench-{port}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        began = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = metric(url, "scorestream_events_processed_total")
            if began is None and done > 0:
                began = time.perf_counter()
            if done >= expected:
                elapsed = time.perf_counter() - (began or time.perf_counter())
                return expected / elapsed, elapsed
            time.sleep(0.25)  # scraping /metrics costs the worker CPU: not too often
        raise SystemExit(f"worker processed {done:.0f} of {expected} within {timeout}s; "
                         f"log: {log.name}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def main() -> int:
    """Run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--port", type=int, default=6091)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="SCORESTREAM_BATCH_SIZE for the worker (default: its own)")
    args = parser.parse_args()
    bootstrap = os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    run = uuid.uuid4().hex[:8]
    topics = {s: f"bench-{s}-{run}" for s in ("web", "email", "crm", "support")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, args.partitions, 1) for t in topics.values()])
    for future in futures.values():
        future.result()
    n = produce_history(bootstrap, topics, args.customers, args.seed)
    print(f"produced {n:,} events for {args.customers:,} customers to {args.partitions} "
          f"partitions per source topic")
    top = ceiling(bootstrap, list(topics.values()), n)
    rate, seconds = worker_rate(bootstrap, topics, n, args.port, args.timeout, args.batch_size)
    print(f"{'measure':<44}{'events/s':>12}")
    print(f"{'bare confluent-kafka consumer (ceiling)':<44}{top:>12,.0f}")
    print(f"{'one scorestream worker, source -> scores':<44}{rate:>12,.0f}")
    print(f"{'ratio worker / ceiling':<44}{rate / top:>12.1%}")
    print(f"(worker took {seconds:.1f}s for {n:,} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
