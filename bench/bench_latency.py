"""Latency of one worker at a fixed input rate, and scorecard API latency, on one broker.

    SCORESTREAM_KAFKA_BOOTSTRAP=127.0.0.1:9092 python bench/bench_latency.py --rate 5000

1. Starts `scorestream worker` on fresh topics.
2. Produces page views and orders for `--customers` customers at `--rate` events/s for
   `--seconds`, each event's id mapped to its send time.
3. Reads score-changes (committed, as a downstream consumer sees them) and reports, per
   change, the time from sending its triggering event to receiving the change: p50/p95/p99.
   Alerts travel in the same transaction as score changes, so this is also their latency.
4. Requests `GET /customers/{id}/scorecard` `--requests` times and reports p50/p99.

A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_worker(bootstrap: str, topics: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """A worker on its own topics and group, ready when its /healthz answers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORESTREAM_KAFKA_BOOTSTRAP": bootstrap,
           "SCORESTREAM_APP_ID": f"lat-{uuid.uuid4().hex[:8]}", "SCORESTREAM_WEB_PORT": str(port),
           "SCORESTREAM_LOG_LEVEL": "warn", "SCORESTREAM_DATA_DIR": f"/tmp/scorestream-lat-{port}"}
    env.update({f"SCORESTREAM_TOPIC_{role.upper()}": name for role, name in topics.items()})
    log = open(f"/tmp/scorestream-lat-{port}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return worker
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"worker not ready; log: {log.name}")


def main() -> int:
    """Run both measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5000, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--port", type=int, default=6093)
    args = parser.parse_args()
    bootstrap = os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    run = uuid.uuid4().hex[:8]
    roles = ("web", "email", "crm", "support", "customer_events", "score_changes", "alerts",
             "dead_letters", "training_examples", "model_snapshots", "identity")
    topics = {role: f"lat-{role.replace('_', '-')}-{run}" for role in roles}
    worker = start_worker(bootstrap, topics, args.port)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def read_changes() -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{run}",
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        consumer.subscribe([topics["score_changes"]])
        while not stop.is_set():
            for msg in consumer.consume(1000, 0.2):
                received = time.time()
                value = msg.value()
                if msg.error() is None and value:
                    trigger = orjson.loads(value).get("trigger_event_id")
                    if trigger in sent:
                        latencies.append(received - sent[trigger])
        consumer.close()

    reader = threading.Thread(target=read_changes, daemon=True)
    reader.start()
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        total = int(args.rate * args.seconds)
        began = time.time()
        for n in range(total):
            due = began + n / args.rate
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            customer = f"L{n % args.customers}"
            kind = "order_placed" if n % 10 == 0 else "page_view"
            source = "crm" if kind == "order_placed" else "web"
            payload = ({"order_id": f"o{n}", "amount": 25.0, "currency": "EUR"}
                       if kind == "order_placed" else {"url": "/"})
            event_id = f"{run}-{n}"
            event = {"event_id": event_id, "event_type": kind, "source": source,
                     "occurred_at": int(time.time() * 1000), "customer_id": customer,
                     "payload": payload}
            sent[event_id] = time.time()
            producer.produce(topics[source], key=customer.encode(), value=orjson.dumps(event))
            producer.poll(0)
        producer.flush(30)
        achieved = total / (time.time() - began)
        # Let the worker catch up before timing the API, so both figures are clean.
        matched, quiet_since = -1, time.time()
        while time.time() - quiet_since < 3.0:
            if len(latencies) != matched:
                matched, quiet_since = len(latencies), time.time()
            time.sleep(0.2)
        stop.set()
        reader.join(10)
        api: list[float] = []
        for n in range(args.requests):
            url = f"http://127.0.0.1:{args.port}/customers/L{(n * 7919) % args.customers}/scorecard"
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
            api.append(time.perf_counter() - t0)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    if not latencies:
        raise SystemExit("no score changes were read")
    print(f"input rate {achieved:,.0f} events/s for {args.seconds:.0f}s, "
          f"{len(latencies):,} score changes matched to their trigger")
    print(f"{'measure':<46}{'p50':>9}{'p95':>9}{'p99':>9}")
    ms = [v * 1000 for v in latencies]
    print(f"{'send event -> score change read (ms)':<46}{statistics.median(ms):>9.1f}"
          f"{percentile(ms, 0.95):>9.1f}{percentile(ms, 0.99):>9.1f}")
    api_ms = [v * 1000 for v in api]
    print(f"{'GET scorecard, local request (ms)':<46}{statistics.median(api_ms):>9.2f}"
          f"{percentile(api_ms, 0.95):>9.2f}{percentile(api_ms, 0.99):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
