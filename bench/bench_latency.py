"""Latency of one worker at fixed input rates, and scorecard API latency, on one broker.

    python bench/bench_latency.py --rates 1000,2000,5000 [--bootstrap HOST:PORT]

1. Starts `scorestream worker` on fresh topics, and warms up at the first rate for
   `--warmup-seconds` (printed, not counted: a freshly started broker is slow at first).
2. For each rate: builds every event of the run first (bytes ready to send, event time = its
   planned send time), then produces page views and orders for `--customers` new customers
   at that rate for `--seconds`, each event's id mapped to its send time; then waits until
   the worker has caught up.
3. A consumer reads score-changes (committed, as a downstream consumer sees them) and
   reports, per change, the time from sending its triggering event to receiving the change:
   p50/p95/p99. Alerts travel in the same transaction as score changes, so this is also
   their latency.
4. Requests `GET /customers/{id}/scorecard` `--requests` times and reports p50/p95/p99.

A script, not a test: it prints figures and never asserts on time.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from schemas.units import DAY_MS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Worker, broker, percentile, run_topics


@dataclass(frozen=True)
class Percentiles:
    """p50 / p95 / p99 in milliseconds over `count` samples."""

    count: int
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        """Percentiles of durations given in seconds."""
        ms = [v * 1000 for v in seconds]
        return cls(len(ms), statistics.median(ms), percentile(ms, 0.95), percentile(ms, 0.99))


@dataclass(frozen=True)
class RateFigures:
    """Send -> score-change latency at one input rate."""

    rate: int
    achieved: float
    sent: int
    latency: Percentiles


@dataclass(frozen=True)
class LatencyFigures:
    """Latency at each rate, and of the scorecard API on the same worker afterwards."""

    rates: list[RateFigures]
    api: Percentiles
    customers: int
    seconds: float
    warmup: RateFigures | None = None
    """The warm-up phase at the first rate: not counted, shown for what a cold start costs."""


class ChangeReader:
    """Reads committed score changes in a thread and matches each to its trigger's send time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap,
                                   "group.id": f"lat-{uuid.uuid4().hex[:8]}",
                                   "auto.offset.reset": "earliest",
                                   "isolation.level": "read_committed"})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, 0.01):
                received = time.time()
                value = msg.value()
                if msg.error() is None and value:
                    trigger = orjson.loads(value).get("trigger_event_id")
                    sent = self.sent.get(trigger)
                    if sent is not None:
                        self.latencies.setdefault(trigger, received - sent)
        self._consumer.close()

    def wait_quiet(self, quiet_s: float = 3.0, timeout: float = 120.0) -> None:
        """Until no new change has matched for `quiet_s`: the worker has caught up."""
        matched, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() < deadline:
            if len(self.latencies) != matched:
                matched, quiet_since = len(self.latencies), time.monotonic()
            time.sleep(0.2)

    def wait_for(self, event_ids: set[str], timeout: float) -> None:
        """Until a change triggered by one of `event_ids` has been read."""
        deadline = time.monotonic() + timeout
        while not event_ids & self.latencies.keys():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no score change read within {timeout:.0f}s")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        self._thread.join(10)


def build_events(tag: str, rate: int, seconds: float, customers: int, topics: dict[str, str],
                 began_ms: int, pool: str | None = None) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, event id) of every event of one rate, event time = planned send time;
    customers `<pool>-0` ... `<pool>-<customers - 1>` (`pool` defaults to `tag`: new ones).

    Built before sending so that the paced loop only produces."""
    out = []
    for n in range(int(rate * seconds)):
        customer = f"{pool or tag}-{n % customers}"
        kind = "order_placed" if n % 10 == 0 else "page_view"
        source = "crm" if kind == "order_placed" else "web"
        payload = ({"order_id": f"o{n}", "amount": 25.0, "currency": "EUR"}
                   if kind == "order_placed" else {"url": "/"})
        event_id = f"{customer}-{n}" if pool is None else f"{customer}-{tag}-{n}"
        event = {"event_id": event_id, "event_type": kind, "source": source,
                 "occurred_at": began_ms + n * 1000 // rate, "customer_id": customer,
                 "payload": payload}
        out.append((topics[source], customer.encode(), orjson.dumps(event), event_id))
    return out


def build_history(customers: int, days: int, topics: dict[str, str], now_ms: int
                  ) -> list[tuple[str, bytes, bytes, str]]:
    """A past for customers `H-0` ... : over `days` days before now, a page view every
    three days and an order every thirty, in event-time order (what a worker that has run
    for a while holds in its states)."""
    day = DAY_MS
    out = []
    for d in range(days, 0, -1):
        for c in range(customers):
            if (c + d) % 3:
                continue
            customer = f"H-{c}"
            order = (c + d) % 30 == 0
            source = "crm" if order else "web"
            event_id = f"{customer}-h{d}"
            event = {"event_id": event_id,
                     "event_type": "order_placed" if order else "page_view", "source": source,
                     "occurred_at": now_ms - d * day + c, "customer_id": customer,
                     "payload": ({"order_id": event_id, "amount": 40.0, "currency": "EUR"}
                                 if order else {"url": "/"})}
            out.append((topics[source], customer.encode(), orjson.dumps(event), event_id))
    return out


def send_paced(producer: Producer, events: list[tuple[str, bytes, bytes, str]], rate: int,
               began: float, reader: ChangeReader, tick_s: float = 0.005) -> float:
    """Produce events at `rate` from `began` (epoch s); returns the achieved rate.

    Every `tick_s` it sends the events whose planned time has come, each stamped with its
    actual send time: a per-event sleep would make this generator, which stands in for
    upstream services on other machines, cost more CPU on the worker's machine than the
    broker does."""
    sent = reader.sent
    n, total = 0, len(events)
    while n < total:
        now = time.time()
        due = min(total, math.floor((now - began) * rate) + 1)
        if due <= n:
            time.sleep(min(tick_s, began + n / rate - now))
            continue
        for topic, key, value, event_id in events[n:due]:
            sent[event_id] = time.time()
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.01)
        n = due
        producer.poll(0)
    achieved = total / (time.time() - began)
    producer.flush(30)
    return achieved


def wait_processed(worker: Worker, events: int, timeout: float = 300.0) -> None:
    """Until the worker has scored `events` events (it has caught up with the input)."""
    deadline = time.monotonic() + timeout
    while worker.metric("scorestream_events_processed_total") < events:
        if time.monotonic() > deadline or worker.process.poll() is not None:
            raise RuntimeError(f"worker did not catch up with {events:,} events; "
                               f"log: {worker.log_path}")
        time.sleep(0.5)


def api_latency(url: str, customers: list[str], requests: int) -> Percentiles:
    """Scorecard requests to one worker, spread over known customers."""
    spent = []
    for n in range(requests):
        customer = customers[(n * 7919) % len(customers)]
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{url}/customers/{customer}/scorecard", timeout=5) as reply:
            reply.read()
        spent.append(time.perf_counter() - t0)
    return Percentiles.of(spent)


def measure(bootstrap: str, rates: list[int], seconds: float = 20.0, customers: int = 20_000,
            requests: int = 2000, history_days: int = 0, warmup_s: float = 20.0,
            linger_ms: int = 5) -> LatencyFigures:
    """Run every rate on one worker, then time the API: new customers per rate, or with
    `history_days` the same customers at every rate, each given that many days of past
    first. A warm-up of `warmup_s` at the first rate comes before: a freshly started broker
    answers slowly for its first seconds of load (its JVM compiles), which showed as seconds
    of latency in whichever rate came first.

    `linger_ms` is how long the generator's producer (the upstream services) gathers events
    per partition before sending: at 5 ms most of its batches hold one event, and the shared
    broker used 23-26 s of CPU per run at 4,000/s against 15-16 s with 50 ms batches; the
    wait counts in the latency, which starts when an event is handed to the producer."""
    run = uuid.uuid4().hex[:8]
    topics = run_topics("lat")
    worker = Worker.start(bootstrap, topics, f"lat-{run}")
    reader: ChangeReader | None = None
    results = []
    try:
        worker.wait_ready()
        reader = ChangeReader(bootstrap, topics["score_changes"])
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms})
        # Warm-up: the first scored events also wait for the worker's stages and the reader to
        # join their groups; only figures of a running pipeline count.
        warmup = build_events("W", 100, 1.0, 100, topics, int(time.time() * 1000))
        send_paced(producer, warmup, 100, time.time(), reader)
        reader.wait_for({e[3] for e in warmup}, timeout=120.0)
        sent = len(warmup)
        warmed: RateFigures | None = None
        if warmup_s > 0:
            warmed, more = _phase(worker, producer, reader, rates[0], warmup_s, customers,
                                  topics, sent, tag=f"W{rates[0]}")
            sent += more
        if history_days:
            past = build_history(customers, history_days, topics, int(time.time() * 1000))
            send_paced(producer, past, 1_000_000, time.time(), reader)
            sent += len(past)
            wait_processed(worker, sent, timeout=900)
            reader.wait_quiet(quiet_s=2.0)
        for rate in rates:
            figures, more = _phase(worker, producer, reader, rate, seconds, customers, topics,
                                   sent, pool="H" if history_days else None)
            sent += more
            results.append(figures)
        pool = "H" if history_days else f"L{rates[-1]}"
        known = [f"{pool}-{n}" for n in range(min(customers, int(rates[-1] * seconds)))]
        api = api_latency(worker.url, known, requests)
    finally:
        if reader is not None:
            reader.close()
        worker.stop()
    return LatencyFigures(results, api, customers, seconds, warmed)


def _phase(worker: Worker, producer: Producer, reader: ChangeReader, rate: int, seconds: float,
           customers: int, topics: dict[str, str], sent_before: int, tag: str | None = None,
           pool: str | None = None) -> tuple[RateFigures, int]:
    """Send at `rate` for `seconds` (customers `<tag>-n`, tag `L<rate>` by default), wait
    until the worker has caught up, and time each event's score change; returns the figures
    and the number of events sent."""
    began = time.time() + 1.0
    events = build_events(tag or f"L{rate}", rate, seconds, customers, topics,
                          int(began * 1000), pool=pool)
    achieved = send_paced(producer, events, rate, began, reader)
    wait_processed(worker, sent_before + len(events))
    reader.wait_quiet(quiet_s=1.0)
    ids = {e[3] for e in events}
    matched = [v for k, v in reader.latencies.items() if k in ids]
    if not matched:
        raise RuntimeError(f"no score change matched at {rate} events/s; log: {worker.log_path}")
    return RateFigures(rate, achieved, len(events), Percentiles.of(matched)), len(events)


def main() -> int:
    """Run the measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SCORESTREAM_KAFKA_BOOTSTRAP"),
                        help="an existing broker (default: start a local one)")
    parser.add_argument("--rates", default="1000,2000,5000",
                        help="events per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="per rate")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup-seconds", type=float, default=20.0,
                        help="send at the first rate this long first, not counted (a fresh "
                             "broker is slow for its first seconds of load)")
    parser.add_argument("--history-days", type=int, default=0,
                        help="give the customers this many days of past first, and use the "
                             "same customers at every rate (default: new customers per rate)")
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="the event generator's producer linger.ms (upstream batching)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with broker(args.bootstrap) as bootstrap:
        f = measure(bootstrap, rates, args.seconds, args.customers, args.requests,
                    args.history_days, args.warmup_seconds, args.linger_ms)
    kind = (f"the same customers with {args.history_days} days of past" if args.history_days
            else "new customers per rate")
    print(f"{f.customers:,} customers ({kind}), {f.seconds:.0f}s per rate, live states "
          f"{os.environ.get('SCORESTREAM_LIVE_STATES', 'default')}, generator linger "
          f"{args.linger_ms} ms")
    print(f"{'measure (ms)':<40}{'achieved/s':>11}{'count':>8}{'p50':>9}{'p95':>9}{'p99':>9}")
    rows = [(f"send -> score change at {r.rate:,}/s", r) for r in f.rates]
    if f.warmup is not None:
        rows.insert(0, (f"warm-up at {f.warmup.rate:,}/s, not counted", f.warmup))
    for label, r in rows:
        print(f"{label:<40}{r.achieved:>11,.0f}{r.latency.count:>8,}{r.latency.p50:>9.1f}"
              f"{r.latency.p95:>9.1f}{r.latency.p99:>9.1f}")
    print(f"{'GET scorecard, local request':<40}{'':>11}{f.api.count:>8,}{f.api.p50:>9.2f}"
          f"{f.api.p95:>9.2f}{f.api.p99:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
