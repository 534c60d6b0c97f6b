#!/usr/bin/env python3
"""Run a single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1 from Maven jars.

    python deploy/kafka/kafka_local.py start [--run-dir DIR]   # prints the bootstrap address
    python deploy/kafka/kafka_local.py stop  [--run-dir DIR]
    python deploy/kafka/kafka_local.py restart [--run-dir DIR] # same ports and data after stop
    python deploy/kafka/kafka_local.py status [--run-dir DIR]
    python deploy/kafka/kafka_local.py fetch                   # only resolve the jars

The Kafka version is pinned in pom.xml beside this file. Jars are resolved once with Maven into
a cache outside the repository (SCORESTREAM_CACHE_DIR, default ~/.cache/scorestream), so later
starts only pay for two JVM launches. Each run gets its own data directory, cluster id and free
ports, so parallel runs and a developer's own broker never collide. `start` returns only once the
broker answers a Kafka request; on failure it prints the broker log's tail and exits non-zero.

Standard library only: this runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.yaml"
DEFAULT_RUN_DIR = HERE.parent.parent / ".run" / "kafka"
READY_LINE = "Kafka Server started"
JVM_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class Broker:
    """A running local broker: where it listens and where its files are."""

    bootstrap: str
    pid: int
    run_dir: Path

    @property
    def log_path(self) -> Path:
        return self.run_dir / "broker.log"


def cache_dir() -> Path:
    """Where resolved jars are kept between runs (outside the repository)."""
    configured = os.environ.get("SCORESTREAM_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "scorestream"


def kafka_version() -> str:
    """The Kafka version pinned in pom.xml."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise BrokerError(f"no <kafka.version> in {POM}")
    return match.group(1).strip()


def jar_dir() -> Path:
    """The cached jar folder for this exact pom.xml (a changed pom resolves anew)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return cache_dir() / "kafka" / f"{kafka_version()}-{digest}"


def fetch_jars() -> Path:
    """Resolve the broker's runtime jars from Maven Central into the cache, once."""
    target = jar_dir()
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is not on PATH; it is needed once to fetch Kafka's jars")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=target.parent))
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]
    print(f"resolving Kafka {kafka_version()} jars from Maven Central ...", file=sys.stderr)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stdout + result.stderr)[-3000:]
        raise BrokerError(f"mvn failed (exit {result.returncode}):\n{tail}")
    (staging / ".complete").write_text(kafka_version())
    try:
        staging.rename(target)
    except OSError:
        # Another run finished first: its copy is as good as ours.
        shutil.rmtree(staging, ignore_errors=True)
    return target


def java_bin() -> str:
    """The java executable (JAVA_HOME first), checked to be Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise BrokerError("no Java found: install Java 17+ or set JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        raise BrokerError(f"Kafka 4.x needs Java 17+, found: {out.strip().splitlines()[:1]}")
    return java


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def server_properties(run_dir: Path, port: int, controller_port: int) -> str:
    """The broker config of a combined single node that binds to 127.0.0.1 only."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(run_dir / "data"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def with_sasl_listener(properties: str, sasl_port: int, users: dict[str, str]) -> str:
    """Add a SASL_PLAINTEXT listener (mechanism PLAIN) on sasl_port that accepts these
    username -> password pairs; the PLAINTEXT listener and inter-broker traffic stay as they are.

    For testing clients' SASL settings only: PLAIN over plaintext sends the password in clear.
    """
    jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
        f'user_{name}="{password}"' for name, password in sorted(users.items())) + ";"
    lines = []
    for line in properties.splitlines():
        key = line.partition("=")[0]
        if key in ("listeners", "advertised.listeners"):
            line = f"{line},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
        elif key == "listener.security.protocol.map":
            line = f"{line},SASL_PLAINTEXT:SASL_PLAINTEXT"
        lines.append(line)
    lines += ["sasl.enabled.mechanisms=PLAIN",
              f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}"]
    return "\n".join(lines) + "\n"


def _classpath(jars: Path) -> str:
    return f"{jars}/*"


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


def _api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request and check the broker answers without error."""
    client_id = b"scorestream-kafka-local"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            size = struct.unpack(">i", header)[0]
            reply = _recv_exact(sock, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", reply[:6])
    return correlation_id == 1 and error_code == 0


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _is_our_broker(pid: int, run_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return _alive(pid)
    return b"kafka.Kafka" in cmdline and str(run_dir).encode() in cmdline


def start(run_dir: Path, timeout: float = 120.0,
          sasl_users: dict[str, str] | None = None) -> Broker:
    """Format a fresh data dir, start the broker in the background, wait until it serves.

    With sasl_users, the broker also listens for SASL/PLAIN clients; that address is written to
    `sasl_bootstrap` in run_dir.
    """
    run_dir = run_dir.resolve()
    existing = status(run_dir)
    if existing is not None:
        raise BrokerError(f"a broker already runs from {run_dir} at {existing.bootstrap}")
    jars = fetch_jars()
    java = java_bin()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "data").mkdir(parents=True)
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    props = run_dir / "server.properties"
    props.write_text(server_properties(run_dir, port, controller_port))
    if sasl_users:
        sasl_port = free_port()
        while sasl_port in (port, controller_port):
            sasl_port = free_port()
        props.write_text(with_sasl_listener(props.read_text(), sasl_port, sasl_users))
        (run_dir / "sasl_bootstrap").write_text(f"127.0.0.1:{sasl_port}")
    base = [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            f"-Dkafka.logs.dir={run_dir / 'logs'}", "-cp", _classpath(jars)]
    fmt = subprocess.run(
        [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(props),
         "--standalone"],
        capture_output=True, text=True, check=False,
    )
    if fmt.returncode != 0:
        raise BrokerError(f"formatting storage failed:\n{(fmt.stdout + fmt.stderr)[-3000:]}")
    return _launch(run_dir, base, port, timeout)


def restart(run_dir: Path, timeout: float = 120.0) -> Broker:
    """Start the stopped broker of run_dir again on its ports, with its data (topics, offsets,
    transactions): what a broker restart in production looks like to clients."""
    run_dir = run_dir.resolve()
    existing = status(run_dir)
    if existing is not None:
        raise BrokerError(f"a broker already runs from {run_dir} at {existing.bootstrap}")
    props = run_dir / "server.properties"
    match = re.search(r"^listeners=PLAINTEXT://127\.0\.0\.1:(\d+),",
                      props.read_text() if props.exists() else "", re.M)
    if match is None or not (run_dir / "data").is_dir():
        raise BrokerError(f"no stopped broker in {run_dir}: run `start` first")
    base = [java_bin(), *JVM_OPTS, f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            f"-Dkafka.logs.dir={run_dir / 'logs'}", "-cp", _classpath(fetch_jars())]
    return _launch(run_dir, base, int(match.group(1)), timeout)


def _launch(run_dir: Path, base: list[str], port: int, timeout: float) -> Broker:
    """Run kafka.Kafka with run_dir's config in the background; wait until it serves."""
    props = run_dir / "server.properties"
    log_path = run_dir / "broker.log"
    # Appended, so a restart keeps the earlier run's log; readiness is judged on new lines only.
    seen = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*base, "kafka.Kafka", str(props)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=run_dir,
        )
    (run_dir / "broker.pid").write_text(str(proc.pid))
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(
                f"broker exited with code {proc.returncode} during start-up; log tail:\n"
                f"{_log_tail(log_path)}"
            )
        with log_path.open("rb") as log:
            log.seek(seen)
            started = READY_LINE.encode() in log.read()
        if started and _api_versions_ok(port):
            (run_dir / "bootstrap").write_text(bootstrap)
            return Broker(bootstrap=bootstrap, pid=proc.pid, run_dir=run_dir)
        time.sleep(0.2)
    stop(run_dir)
    raise BrokerError(f"broker not ready after {timeout:.0f}s; log tail:\n{_log_tail(log_path)}")


def status(run_dir: Path) -> Broker | None:
    """The broker running from run_dir, or None."""
    run_dir = run_dir.resolve()
    try:
        pid = int((run_dir / "broker.pid").read_text())
        bootstrap = (run_dir / "bootstrap").read_text().strip()
    except (OSError, ValueError):
        return None
    if not (_alive(pid) and _is_our_broker(pid, run_dir)):
        return None
    return Broker(bootstrap=bootstrap, pid=pid, run_dir=run_dir)


def stop(run_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the broker of run_dir with SIGTERM (SIGKILL after timeout). True if one ran."""
    run_dir = run_dir.resolve()
    try:
        pid = int((run_dir / "broker.pid").read_text())
    except (OSError, ValueError):
        return False
    if not (_alive(pid) and _is_our_broker(pid, run_dir)):
        (run_dir / "broker.pid").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    (run_dir / "broker.pid").unlink(missing_ok=True)
    (run_dir / "bootstrap").unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch | start | stop | status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch", "start", "restart", "stop", "status"])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR,
                        help="per-run data, config, pid and log (default: .run/kafka)")
    parser.add_argument("--sasl-user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="start: also listen for SASL/PLAIN clients with these users "
                             "(address in RUN_DIR/sasl_bootstrap); repeatable")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the broker to serve (default 120)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch_jars())
        elif args.command == "start":
            began = time.monotonic()
            users = dict(user.split(":", 1) for user in args.sasl_user)
            broker = start(args.run_dir, args.timeout, sasl_users=users)
            print(f"kafka {kafka_version()} ready at {broker.bootstrap} (pid {broker.pid}, "
                  f"{time.monotonic() - began:.1f}s, log {broker.log_path})", file=sys.stderr)
            print(broker.bootstrap)
        elif args.command == "restart":
            began = time.monotonic()
            broker = restart(args.run_dir, args.timeout)
            print(f"kafka {kafka_version()} restarted at {broker.bootstrap} (pid {broker.pid}, "
                  f"{time.monotonic() - began:.1f}s, log {broker.log_path})", file=sys.stderr)
            print(broker.bootstrap)
        elif args.command == "stop":
            print("stopped" if stop(args.run_dir, args.timeout) else "not running")
        else:
            broker = status(args.run_dir)
            print(broker.bootstrap if broker else "not running")
            return 0 if broker else 1
    except BrokerError as err:
        print(f"kafka_local: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
