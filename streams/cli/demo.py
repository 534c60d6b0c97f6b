"""`scorestream demo`: a worker scoring a steady stream of generated events, watched live.

Starts a local Kafka broker (or uses `--bootstrap` / SCORESTREAM_KAFKA_BOOTSTRAP), creates the
topics, starts a `scorestream worker` process and a generator thread, and shows a live view
(rich) that refreshes about once a second: events/s per source, customers per tier, totals,
the latest alerts with their reasons, and the scorecard of a customer who just crossed a
threshold, fetched from the worker's API. Ctrl-C (or `--duration`) stops the generator, the
worker (SIGTERM: it commits its last batch) and the broker it started, then prints a summary.
When stdout is not a terminal, plain status lines replace the live view.

The events come from `models.history.generate`: a history of `--days` ending now. Its first
`--warmup-days` are sent at full speed, so that customers have a past and the models have
seen churn labels resolve; the rest is sent at `--rate` events/s, in event-time order. Event
time therefore runs faster than the clock (the view shows how many days per second), which
is what lets churn risk build up and alerts fire within the first minute.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from rich.console import Console
from rich.live import Live

from models.history.replay import parse_time
from schemas.errors import ScorestreamError
from schemas.units import DAY_MS
from streams.cli.dashboard import (
    DemoStatus,
    Rates,
    WorkerMetrics,
    alert_line,
    plain_line,
    render,
    scorecard_lines,
    summary,
)
from streams.runtime.kafka import client_config, ensure_topics, producer_config
from streams.settings import TOPIC_ROLES, Settings

__all__ = ["DEMO_MIN_HOLD_MS", "MALFORMED", "PLAIN_EVERY_S", "DemoError", "add_arguments", "run"]

MALFORMED = (b"{not json", b"\xff\xfe binary", b'{"event_id": 42}', b"[]")
PLAIN_EVERY_S = 5.0
DEMO_MIN_HOLD_MS = 30 * DAY_MS


class DemoError(ScorestreamError, RuntimeError):
    """The demo cannot run; the message says why and what to do."""


class _Stop(Exception):
    """SIGTERM reached the demo: stop like Ctrl-C."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo options."""
    parser.add_argument("--rate", type=float, default=500.0,
                        help="events per second once the warm-up is sent (default 500)")
    parser.add_argument("--customers", type=int, default=500,
                        help="synthetic customers (default 500)")
    parser.add_argument("--days", type=int, default=730,
                        help="days of generated history, ending now (default 730)")
    parser.add_argument("--warmup-days", type=int, default=365,
                        help="first days of the history sent at full speed (default 365)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--bootstrap", default=None,
                        help="use this Kafka broker instead of starting a local one "
                             "(SCORESTREAM_KAFKA_BOOTSTRAP does the same)")
    parser.add_argument("--namespace", default=None,
                        help="prefix of the app id and topics; default: none on a broker the "
                             "demo starts, 'demo-<time>' on an existing broker so that data "
                             "already there never mixes in ('' uses the configured names)")
    parser.add_argument("--plain", action="store_true",
                        help="print status lines instead of the live view")


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or --duration; returns the exit code."""
    console = Console()
    plain = args.plain or not console.is_terminal
    base: Settings = args.settings
    run_dir = base.data_dir.parent / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    say = console.print if not plain else _print
    # Ctrl-C and SIGTERM both end the demo in order, even where SIGINT came in ignored (a
    # shell starting it in the background, say): the worker must not outlive it.
    previous_term = signal.signal(signal.SIGTERM, _raise_stop)
    previous_int = signal.signal(signal.SIGINT, _raise_stop)
    logging.getLogger("streams.runtime.kafka").setLevel(logging.WARNING)  # the long topic list
    history = _History(args.customers, args.seed, args.days, args.warmup_days)
    history.start()  # generating overlaps with starting the broker and the worker
    status: DemoStatus | None = None
    worker: subprocess.Popen[bytes] | None = None
    code = 0
    with ExitStack() as cleanup:
        try:
            bootstrap, started_here = cleanup.enter_context(
                _broker(args.bootstrap, base, run_dir, say))
            settings = _demo_settings(base, bootstrap, args.namespace, started_here, run_dir)
            created = set(ensure_topics(settings))
            note = _topics_note(settings, base)
            say(f"Kafka at {bootstrap}; {note}")
            log_path = run_dir / "worker.log"
            worker = _start_worker(settings, log_path)
            cleanup.callback(_stop_worker, worker)
            web_url = f"http://{_local_host(settings.web.host)}:{settings.web.port}"
            status = DemoStatus(bootstrap, web_url, worker.pid, str(log_path), note, args.rate)
            say(f"worker pid {worker.pid} on {web_url} (log {log_path}); the customer base "
                f"at a glance: {web_url}/ui/; generating {args.customers:,} customers x "
                f"{args.days} days ...")
            monitor = _Monitor(settings, status, created)
            cleanup.callback(monitor.close)
            history.join_ready()
            stream = _Stream(settings, history, args.rate)
            stream.start()
            cleanup.callback(stream.stop)
            runner = _plain_loop if plain else _live_loop
            # Ctrl-C is the usual way to end the demo: stop in order, as after --duration.
            with contextlib.suppress(KeyboardInterrupt, _Stop):
                code = runner(console, status, monitor, stream, worker, args.duration)
            # Orderly stop: generator first, a moment for the worker to catch up, then the
            # worker (its last transaction commits), then the last alerts it wrote. A second
            # Ctrl-C or SIGTERM must not cut this short and leave the worker running.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("stopping: generator, then worker (SIGTERM) ...")
            stream.stop()
            monitor.settle(stream, worker, timeout=5.0)
            _stop_worker(worker)
            monitor.drain()
        except (KeyboardInterrupt, _Stop):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("stopping ...")
        except DemoError as err:
            say(f"scorestream demo: {err}")
            if worker is not None:
                _print(_log_tail(run_dir / "worker.log"))
            code = 2
    signal.signal(signal.SIGTERM, previous_term)
    signal.signal(signal.SIGINT, previous_int)
    if status is not None:
        exit_code = worker.returncode if worker is not None else None
        for line in summary(status, exit_code):
            _print(line)
        if exit_code not in (0, None) and code == 0:
            code = 1
    return code


def _print(*parts: object) -> None:
    print(*parts, flush=True)


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


# -- broker, settings, worker ---------------------------------------------------------------

@contextmanager
def _broker(bootstrap: str | None, settings: Settings, run_dir: Path,
            say: Callable[..., None]) -> Iterator[tuple[str, bool]]:
    """(bootstrap, started here): the given broker, the configured one, or a local one."""
    # Whether the variable is set at all (not its value, which Settings has) decides between
    # using a configured broker and starting one; Settings cannot tell a default from a choice.
    configured = bootstrap or ("SCORESTREAM_KAFKA_BOOTSTRAP" in os.environ
                               and settings.kafka.bootstrap)
    if configured:
        yield str(configured), False
        return
    from streams.runtime.localkafka import LauncherMissing, launcher, local_broker

    try:
        kafka = launcher()
    except LauncherMissing as err:
        raise DemoError(f"cannot start a local broker ({err}); pass --bootstrap HOST:PORT "
                        "or set SCORESTREAM_KAFKA_BOOTSTRAP") from err
    say(f"starting a local Kafka {kafka.kafka_version()} broker in {run_dir / 'kafka'} ...")
    try:
        with local_broker(run_dir / "kafka") as started:
            yield started, True
    except kafka.BrokerError as err:
        raise DemoError(str(err)) from err


def _demo_settings(base: Settings, bootstrap: str, namespace: str | None, started_here: bool,
                   run_dir: Path) -> Settings:
    """The worker's settings: this broker, its own state dir and a free web port, and on an
    existing broker (unless told otherwise) an app id and topics of its own."""
    if namespace is None:
        namespace = "" if started_here else f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    topics = dict(base.topics)
    app_id = base.app_id
    if namespace:
        topics = {role: f"{namespace}.{name}" for role, name in topics.items()}
        app_id = f"{namespace}.{app_id}"
    port = base.web.port if _port_free(base.web.host, base.web.port) else _free_port()
    return dataclasses.replace(
        base, app_id=app_id, topics=topics, data_dir=run_dir / "worker",
        kafka=dataclasses.replace(base.kafka, bootstrap=bootstrap),
        web=dataclasses.replace(base.web, port=port, url=""))


def _topics_note(settings: Settings, base: Settings) -> str:
    alerts = settings.topics["alerts"]
    if settings.topics == base.topics:
        return f"topics as configured (alerts on '{alerts}')"
    return (f"topics of this run only (alerts on '{alerts}'; to follow them elsewhere set "
            f"SCORESTREAM_TOPIC_ALERTS={alerts})")


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((_local_host(host), port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`scorestream worker` with these settings, in a session of its own, so that Ctrl-C
    reaches only the demo, which then stops the worker with SIGTERM."""
    env = {**os.environ, "SCORESTREAM_KAFKA_BOOTSTRAP": settings.kafka.bootstrap,
           "SCORESTREAM_APP_ID": settings.app_id, "SCORESTREAM_DATA_DIR": str(settings.data_dir),
           "SCORESTREAM_WEB_PORT": str(settings.web.port)}
    env.pop("SCORESTREAM_WEB_URL", None)
    # The warm-up sends months of event time in seconds, and the source topics' partitions
    # are read at different paces, so an alias-only event may arrive days of event time
    # before its link: hold events longer than a real-time deployment needs to.
    env["SCORESTREAM_IDENTITY_MAX_HOLD_MS"] = str(max(settings.identity.max_hold_ms,
                                                      DEMO_MIN_HOLD_MS))
    env.update({f"SCORESTREAM_TOPIC_{role.upper()}": settings.topics[role]
                for role in TOPIC_ROLES})
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if the worker has not stopped within a minute (idempotent)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- events ---------------------------------------------------------------------------------

class _History(threading.Thread):
    """Generates the history in the background (it overlaps the broker and worker start)."""

    def __init__(self, customers: int, seed: int, days: int, warmup_days: int) -> None:
        super().__init__(name="demo-history", daemon=True)
        self.customers, self.seed, self.days = customers, seed, days
        self.end_ms = int(time.time() * 1000)
        self.start_ms = self.end_ms - days * DAY_MS
        self.warmup_until_ms = self.start_ms + min(warmup_days, days) * DAY_MS
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from models.history.generate import generate

        try:
            self.events, _truth = generate(self.customers, self.seed, days=self.days,
                                           start_ms=self.start_ms)
        except BaseException as err:  # reported by join_ready in the main thread
            self.error = err

    def join_ready(self) -> None:
        """Wait for the events; re-raise a generator failure."""
        self.join()
        if self.error is not None:
            raise DemoError(f"generating the history failed: {self.error!r}")


class _Stream(threading.Thread):
    """Sends the history: the warm-up at full speed, then `rate` events/s in event-time order,
    with a malformed record now and then (they become dead letters)."""

    def __init__(self, settings: Settings, history: _History, rate: float,
                 malformed_every: int = 2000) -> None:
        super().__init__(name="demo-stream", daemon=True)
        self.topics = settings.source_topics
        self.config = {**producer_config(settings), "queue.buffering.max.messages": 500_000}
        self.producer: Producer | None = None
        self.events = history.events
        self.warmup_until_ms = history.warmup_until_ms
        self.rate = rate
        self.malformed_every = malformed_every
        self.produced: Counter[str] = Counter()
        self.phase = "warm-up"
        self.event_time_ms: int | None = None
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        self.producer = Producer(self.config)
        try:
            self._send_history()
        finally:
            self.producer.flush(30)
            self.producer = None  # closes it: no reconnecting once the broker is gone

    def _send_history(self) -> None:
        live_from: float | None = None
        live_sent = 0
        for event in self.events:
            if self._halt.is_set():
                break
            at = parse_time(event["occurred_at"])
            if live_from is None and at >= self.warmup_until_ms:
                self.phase, live_from = "live", time.monotonic()
            if live_from is not None:
                pause = live_from + live_sent / self.rate - time.monotonic()
                if pause > 0 and self._halt.wait(pause):
                    break
                live_sent += 1
            key = event.get("customer_id") or event.get("email") or event.get("anonymous_id")
            if not self._send(self.topics[event["source"]], str(key).encode(),
                              orjson.dumps(event)):
                break
            self.produced[event["source"]] += 1
            self.event_time_ms, self.sent = at, self.sent + 1
            if self.sent % self.malformed_every == 0:
                bad = MALFORMED[(self.sent // self.malformed_every) % len(MALFORMED)]
                if not self._send(self.topics["web"], None, bad):
                    break
                self.produced["malformed"] += 1
        else:
            self.phase = "history complete: every generated event sent"

    def _send(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Hand one record to the producer; False if the demo stopped first (nothing sent), so
        the counts only ever include records that were produced."""
        producer = self.producer
        assert producer is not None
        while not self._halt.is_set():
            try:
                producer.produce(topic, key=key, value=value)
                producer.poll(0)
                return True
            except BufferError:
                producer.poll(0.05)
        return False

    def stop(self) -> None:
        """Stop sending and flush what was sent (idempotent)."""
        self._halt.set()
        if self.is_alive():
            self.join(40)


# -- watching -------------------------------------------------------------------------------

class _Monitor:
    """Fills the status: the worker's /metrics, the alerts and dead-letters topics (read from
    where they ended when the demo started), and spotlighted scorecards from the API."""

    def __init__(self, settings: Settings, status: DemoStatus, created: set[str]) -> None:
        self.status = status
        self.alerts_topic = settings.topics["alerts"]
        self.consumer = Consumer({**client_config(settings),
                                  "group.id": f"demo-view-{os.getpid()}-{time.time_ns()}",
                                  "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        self.consumer.assign(self._starts([self.alerts_topic, settings.topics["dead_letters"]],
                                          created, settings.partitions))
        self.produced_rates, self.consumed_rates, self.clock = Rates(), Rates(), Rates(5.0)
        self.new_alerts: list[dict[str, Any]] = []
        self._spotlight: dict[str, Any] | None = None
        self._fetched = 0.0
        self._closed = False

    def _starts(self, topics: list[str], created: set[str], partitions: int,
                timeout: float = 30.0) -> list[TopicPartition]:
        """Topics the demo just created are read from their start; others from where they
        end now, so that earlier data on an existing broker stays out of the view."""
        out = []
        deadline = time.monotonic() + timeout
        for topic in topics:
            if topic in created:
                out += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
                continue
            meta = self.consumer.list_topics(topic, timeout=timeout).topics[topic]
            for p in meta.partitions:
                while True:
                    try:
                        _low, high = self.consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=timeout)
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)  # a leader election after a restart, say
                out.append(TopicPartition(topic, p, high))
        return out

    def poll(self, seconds: float) -> None:
        """Read alerts and dead letters for about `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for msg in self.consumer.consume(500, min(left, 0.25)):
                value = msg.value()
                if msg.error() is not None or not value:
                    continue
                record = orjson.loads(value)
                if msg.topic() == self.alerts_topic:
                    self.new_alerts.append(record)
                    if self.status.add_alert(record):
                        self._spotlight = record
                else:
                    self.status.dead_letters[str(record.get("reason", "?"))] += 1

    def scrape(self, stream: _Stream) -> None:
        """Take the worker's metrics and the generator's counters; compute rates."""
        s = self.status
        now = time.monotonic()
        try:
            with urllib.request.urlopen(f"{s.web_url}/metrics", timeout=2) as reply:
                s.apply_metrics(WorkerMetrics.parse(reply.read().decode()))
        except (OSError, ValueError):
            s.worker_up = False
        s.produced = Counter(stream.produced)
        s.produced_rate = self.produced_rates.update(s.produced, now)
        s.consumed_rate = self.consumed_rates.update(s.consumed, now)
        s.phase, s.event_time_ms, s.history_sent = stream.phase, stream.event_time_ms, stream.sent
        s.history_total = len(stream.events)
        if s.event_time_ms is not None:
            s.days_per_second = self.clock.update({"t": s.event_time_ms / DAY_MS}, now)["t"]

    def spotlight(self, min_interval_s: float = 1.0) -> dict[str, Any] | None:
        """Fetch the scorecard of the latest alert worth showing; returns the alert if one
        was fetched now."""
        alert = self._spotlight
        if alert is None or time.monotonic() - self._fetched < min_interval_s:
            return None
        self._spotlight, self._fetched = None, time.monotonic()
        s = self.status
        s.spotlight_alert = alert
        url = f"{s.web_url}/customers/{alert['customer_id']}/scorecard"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                s.spotlight_card, s.spotlight_error = orjson.loads(reply.read()), None
        except (OSError, ValueError) as err:
            s.spotlight_card = None
            s.spotlight_error = f"GET {url}: {err}"
        return alert

    def settle(self, stream: _Stream, worker: subprocess.Popen[bytes], timeout: float) -> None:
        """Give the worker up to `timeout` s to read everything sent, then take the metrics."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            self.scrape(stream)
            if sum(self.status.consumed.values()) >= sum(stream.produced.values()):
                break
            self.poll(0.5)
        self.scrape(stream)

    def drain(self, quiet_s: float = 1.5, timeout: float = 15.0) -> None:
        """Read what the stopped worker committed last, until the topics stay quiet."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            total = sum(self.status.alerts.values()) + sum(self.status.dead_letters.values())
            if total == seen:
                break
            seen = total
            self.poll(quiet_s)

    def close(self) -> None:
        """Close the consumer (idempotent)."""
        if not self._closed:
            self._closed = True
            # closing after the broker went away: nothing is left to release
            with contextlib.suppress(KafkaException):
                self.consumer.close()


def _tick(monitor: _Monitor, stream: _Stream) -> dict[str, Any] | None:
    """One refresh: about a second of topic reading, a scrape, maybe a spotlight fetch."""
    monitor.poll(1.0)
    monitor.scrape(stream)
    return monitor.spotlight()


def _ended(worker: subprocess.Popen[bytes], started: float, duration: float | None) -> bool:
    if worker.poll() is not None:
        raise DemoError(f"the worker stopped unexpectedly (exit code {worker.returncode}); "
                        "see its log")
    return duration is not None and time.monotonic() - started >= duration


def _live_loop(console: Console, status: DemoStatus, monitor: _Monitor, stream: _Stream,
               worker: subprocess.Popen[bytes], duration: float | None) -> int:
    with Live(render(status), console=console, refresh_per_second=4, transient=False) as live:
        while not _ended(worker, status.started, duration):
            _tick(monitor, stream)
            monitor.new_alerts.clear()
            live.update(render(status))
    return 0


def _plain_loop(console: Console, status: DemoStatus, monitor: _Monitor, stream: _Stream,
                worker: subprocess.Popen[bytes], duration: float | None) -> int:
    last = time.monotonic()
    shown: dict[str, Any] | None = None
    while not _ended(worker, status.started, duration):
        fetched = _tick(monitor, stream)
        if fetched is not None:
            shown = fetched
        if time.monotonic() - last < PLAIN_EVERY_S:
            continue
        last = time.monotonic()
        _print(plain_line(status))
        for alert in monitor.new_alerts[-3:]:
            _print(f"  {alert_line(alert)}")
        if len(monitor.new_alerts) > 3:
            _print(f"  ... and {len(monitor.new_alerts) - 3:,} more alerts")
        monitor.new_alerts.clear()
        if shown is not None and status.spotlight_card is not None:
            _print(f"  scorecard of {shown['customer_id']} ({shown['alert_type']}), "
                   f"from {status.web_url}:")
            for line in scorecard_lines(status.spotlight_card):
                _print(f"    {line}")
            shown = None
    return 0

