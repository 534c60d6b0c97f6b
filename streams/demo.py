"""`scorestream demo`: generated events through a real worker, and a report of what happened.

Creates the topics, starts a `scorestream worker` process, produces a synthetic history (plus a
few malformed records) to the four source topics, reads the worker's output topics until every
record is accounted for, then stops the worker with SIGTERM and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from streams.kafka import client_config, ensure_topics, producer_config
from streams.settings import Settings

QUIET_S = 8.0
MALFORMED = [b"{not json", b"\xff\xfe binary", b'{"event_id": 42}', b"[]"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo options."""
    parser.add_argument("--customers", type=int, default=100, help="synthetic customers")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="give up waiting for the worker after this many seconds")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every produced record came out the other side."""
    from models.synthetic import generate

    settings: Settings = args.settings
    print(f"scorestream demo: Kafka at {settings.kafka_bootstrap}")
    ensure_topics(settings)
    run_dir = settings.data_dir.parent / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    worker = _start_worker(settings, run_dir / "worker.log")
    try:
        events, _truth = generate(args.customers, seed=args.seed)
        print(f"generated {len(events):,} events for {args.customers:,} customers "
              f"(seed {args.seed}); producing to the four source topics ...")
        produced = _produce(settings, events)
        consumed = _collect(settings, produced, args.timeout, worker)
        _show_latest_alert(settings, consumed)
    finally:
        _stop_worker(worker)
    return _report(produced, consumed, run_dir / "worker.log")


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SCORESTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"started worker pid {process.pid} (log: {log_path})")
    return process


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"worker stopped (exit code {process.returncode})")


def _produce(settings: Settings, events: list[dict]) -> Counter[str]:
    """Produce events keyed the way a source system might, plus a few malformed records."""
    producer = Producer({**producer_config(settings), "queue.buffering.max.messages": 500_000})
    topics = settings.source_topics
    produced: Counter[str] = Counter()
    seen_ids: set[tuple[str, str]] = set()
    for event in events:
        ident = (event["source"], event["event_id"])
        if ident in seen_ids:
            produced["duplicates"] += 1  # redelivered on purpose: must count once
        seen_ids.add(ident)
        key = event.get("customer_id") or event.get("email") or event.get("anonymous_id")
        _send(producer, topics[event["source"]], str(key).encode(), orjson.dumps(event))
        produced[event["source"]] += 1
    for raw in MALFORMED:
        _send(producer, topics["web"], None, raw)
        produced["malformed"] += 1
    producer.flush(60)
    return produced


def _send(producer: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    """Produce one record, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


def _collect(settings: Settings, produced: Counter[str], timeout: float,
             worker: subprocess.Popen[bytes]) -> dict[str, Counter[str]]:
    """Read customer-events and dead-letters until all produced records are accounted for."""
    consumer = Consumer({**client_config(settings), "group.id": f"demo-reader-{os.getpid()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    out_topics = {settings.topics["customer_events"]: "events",
                  settings.topics["dead_letters"]: "dead",
                  settings.topics["score_changes"]: "changes",
                  settings.topics["alerts"]: "alerts"}
    consumer.subscribe(list(out_topics))
    seen: dict[str, Counter[str]] = {"events": Counter(), "dead": Counter(), "customers": Counter(),
                                     "changes": Counter(), "alerts": Counter(), "last": Counter()}
    total = sum(produced.values()) - produced["duplicates"]
    began = last_print = last_progress = time.monotonic()
    done = progress = 0
    try:
        while time.monotonic() - began < timeout and worker.poll() is None:
            for msg in consumer.consume(num_messages=2000, timeout=0.5):
                value, topic = msg.value(), msg.topic()
                if msg.error() is not None or value is None or topic is None:
                    continue
                record = orjson.loads(value)
                kind = out_topics[topic]
                if kind == "events":
                    seen["events"][record["source"]] += 1
                    seen["customers"][record["customer_id"]] += 1
                elif kind == "dead":
                    seen["dead"][record["reason"]] += 1
                elif kind == "changes":
                    seen["changes"]["score changes"] += 1
                else:
                    seen["alerts"][record["alert_type"]] += 1
                    seen["last"] = Counter({f"{record['customer_id']}\t{record['reason']}": 1})
            done = sum(seen["events"].values()) + sum(seen["dead"].values())
            outputs = done + sum(seen["changes"].values()) + sum(seen["alerts"].values())
            if outputs > progress:
                progress, last_progress = outputs, time.monotonic()
            if time.monotonic() - last_print > 2:
                print(f"  {done:,} of {total:,} records ingested, "
                      f"{sum(seen['changes'].values()):,} score changes, "
                      f"{sum(seen['alerts'].values()):,} alerts "
                      f"({time.monotonic() - began:.0f}s)")
                last_print = time.monotonic()
            # Scores follow ingestion; held alias-only events may never resolve. Stop once
            # every output has been quiet a while.
            quiet = time.monotonic() - last_progress
            if (done >= total and quiet > 3.0) or (done and quiet > QUIET_S):
                break
    finally:
        consumer.close()
    print(f"all output read after {time.monotonic() - began:.0f}s")
    return seen


def _show_latest_alert(settings: Settings, seen: dict[str, Counter[str]]) -> None:
    """Print the newest alert and its customer's scorecard, read from the worker's API."""
    if not seen["last"]:
        return
    customer_id, reason = next(iter(seen["last"])).split("\t", 1)
    print(f"\nlatest alert: customer {customer_id}: {reason}")
    url = f"http://127.0.0.1:{settings.web_port}/customers/{customer_id}/scorecard"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            card = orjson.loads(reply.read())
    except OSError as err:
        print(f"  (scorecard API not reachable: {err})")
        return
    print(f"  scorecard via {url}:")
    print(f"    tier {card['tier']}, churn risk {card['churn']['probability']:.2f}, "
          f"engagement {card['engagement']['score']:.0f}/100, "
          f"data completeness {card['data_completeness']:.0f} %")
    print(f"    lifetime value {card['ltv']['historic']:,.2f} {card['currency']} "
          f"(next 12 months {card['ltv']['predicted_12m']:,.2f}), "
          f"revenue 12 months {card['revenue_12m']:,.2f}, "
          f"{card['interactions_12m']} interactions in 12 months")
    for factor in card["churn"]["factors"]:
        print(f"    why: {factor['label']} ({factor['contribution']:+.2f})")


def _report(produced: Counter[str], seen: dict[str, Counter[str]], log_path: Path) -> int:
    events, dead = seen["events"], seen["dead"]
    print("\nsummary")
    sources = {k: v for k, v in produced.items() if k != "duplicates"}
    print(f"  produced:         {sum(sources.values()):,}  " +
          ", ".join(f"{k} {v:,}" for k, v in sorted(sources.items())) +
          f"  (of which {produced['duplicates']:,} redeliveries of an earlier event id)")
    print(f"  customer-events:  {sum(events.values()):,}  " +
          ", ".join(f"{k} {v:,}" for k, v in sorted(events.items())))
    print(f"  dead-letters:     {sum(dead.values()):,}  " +
          ", ".join(f"{k} {v:,}" for k, v in sorted(dead.items())))
    print(f"  distinct customers seen: {len(seen['customers']):,}")
    print(f"  score-changes:    {sum(seen['changes'].values()):,}")
    print(f"  alerts:           {sum(seen['alerts'].values()):,}  " +
          ", ".join(f"{k} {v:,}" for k, v in sorted(seen["alerts"].items())))
    unique = sum(sources.values()) - produced["duplicates"]
    missing = unique - sum(events.values()) - sum(dead.values())
    if missing > 0:
        print(f"  {missing:,} alias-only events still held, waiting for an identity link")
    print(f"  worker log: {log_path}")
    return 0
