"""Helpers of the fault-tolerance tests: a generated stream with its single-process reference,
and ways to look at what workers left in Kafka (changelog states, group members, offsets).

The reference is what is deterministic whatever the timing of a live run: the customer state
folded from every accepted event (models.history.replay's ingestion, then `CustomerState.apply`) and
the key values computed from it. Churn, engagement, predicted value and tiers depend on which
model bundle the learner had published when a customer was scored, so they are left out.
"""

from __future__ import annotations

import functools
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from confluent_kafka import Consumer, IsolationLevel, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from models.config import ScoringConfig
from models.history.generate import generate, iter_lines, without_extras
from models.history.replay import ingest, replay, sort_raw
from models.ingest.routing import Ingestion
from models.scoring.alerts import AlertConfig
from models.scoring.engine import ScoringEngine
from models.scoring.state import CustomerState
from streams.runtime.partitioning import partition_for
from streams.settings import IdentitySettings, Settings
from streams.stages.ingest import ingestion_config
from tests.kit import DAY_MS

PARTITIONS = 4
HOLD_MS = 10 * 365 * DAY_MS
"""Alias-only events wait for their link however far ingest's clock runs ahead (the live
interleaving of source topics is arbitrary; the replay's is event-time order)."""
DETERMINISTIC_FIELDS = ("customer_id", "as_of", "data_completeness", "revenue_12m",
                        "interactions_12m", "days_since_last_interaction")


@dataclass
class Stream:
    """Raw source records in event-time order and the reference they must produce."""

    records: list[tuple[str, bytes, bytes]]
    """(source, key, value) in the order they are produced."""
    states: dict[str, CustomerState]
    dead: list[dict[str, Any]]
    watermarks: dict[int, int] = field(default_factory=dict)
    """Per partition of customer-events: its clock once everything is scored
    (`direct_watermarks`)."""
    canonical: list[dict[str, Any]] = field(default_factory=list)
    """The accepted canonical events in event-time order (what the reference folded)."""
    detoured: set[str] = field(default_factory=set)
    """Customers with alias-only events: those reach the scoring stage through the identity
    stage, in a backfill months of event time behind the customer's other events."""
    replays: dict[bool, tuple[Counter[tuple[str, str, str]], dict[str, dict[str, Any]]]] = (
        field(default_factory=dict))
    """`expected_alerts` and `expected_scored`, once computed, without (False) and with
    (True) the detoured customers."""

    @property
    def customers(self) -> list[str]:
        """Every customer id of the reference, sorted."""
        return sorted(self.states)

    @property
    def events(self) -> int:
        """Accepted (distinct) events in the reference."""
        return sum(s.n_events for s in self.states.values())


def worker_settings() -> Settings:
    """The settings the reference shares with the workers under test."""
    return Settings(partitions=PARTITIONS, identity=IdentitySettings(max_hold_ms=HOLD_MS))


def make_stream(customers: int, seed: int, days: int) -> Stream:
    """Generate a history and fold it, as one process would, into the reference states.

    Without the generator's categories, plan upgrades and NPS answers: the fault scenarios
    keep the stream their alert expectations were made on; the upsell and advocacy paths have
    tests of their own. Every other customer is known by its id on every event (its email
    provider passes the id, the site knows it from the first visit), so half the customers
    have no alias-only event (`Stream.detoured` names the others)."""
    raw = without_extras(generate(customers, seed=seed, days=days)[0])
    detoured = set()
    for k, event in enumerate(raw):
        if event.get("customer_id"):
            continue
        customer = "C" + event["event_id"].split("-C", 1)[1].split("-", 1)[0]
        if int(customer[1:]) % 2:
            detoured.add(customer)
        else:
            raw[k] = {**event, "customer_id": customer}
    records = []
    for event in raw:
        key = event.get("customer_id") or event.get("email") or event.get("anonymous_id")
        records.append((event["source"], str(key).encode(), orjson.dumps(event)))
    dead: list[dict[str, Any]] = []
    ingestion = Ingestion(ingestion_config(worker_settings()))
    events = list(ingest(sort_raw(iter_lines(raw)), ingestion, dead))
    return Stream(records, fold(events), dead, {}, events, detoured)


def fold(events: Iterable[dict[str, Any]]) -> dict[str, CustomerState]:
    """Customer states from canonical events (any order: state updates commute)."""
    config = ScoringConfig()
    states: dict[str, CustomerState] = {}
    for event in events:
        cid = event["customer_id"]
        state = states.get(cid)
        if state is None:
            state = states[cid] = CustomerState(cid, config)
        state.apply(event)
    # Through the changelog format, as a worker's states are (it prunes unreachable days).
    return {cid: CustomerState.restore(s.snapshot(), config) for cid, s in states.items()}


def with_watermarks(stream: Stream) -> Stream:
    """Fill in each customer-events partition's expected watermark."""
    stream.watermarks.update(direct_watermarks(
        (orjson.loads(value) for _source, _key, value in stream.records), stream.canonical,
        PARTITIONS))
    return stream


def direct_watermarks(raw: Iterable[dict[str, Any]], events: Iterable[dict[str, Any]],
                      partitions: int) -> dict[int, int]:
    """Each customer-events partition's watermark as the scoring stage keeps it: the latest
    event time of the accepted `events` whose source record (in `raw`) named the customer.
    Ingest sends those itself; the others reach scoring through the identity stage, whose
    releases do not move a partition's clock."""
    direct = {(r.get("source"), r.get("event_id")) for r in raw if r.get("customer_id")}
    marks: dict[int, int] = {}
    for event in events:
        if (event["source"], event["event_id"]) in direct:
            p = partition_for(event["customer_id"].encode(), partitions)
            marks[p] = max(marks.get(p, 0), event["occurred_at"])
    return marks


def merged(stream: Stream) -> Stream:
    """The stream as workers with the identity merge score it: every event, alias-only ones
    too, moves its partition's clock (they come in event-time order), so the watermarks are
    the latest event time of each partition's events."""
    marks: dict[int, int] = {}
    for event in stream.canonical:
        p = partition_for(event["customer_id"].encode(), PARTITIONS)
        marks[p] = max(marks.get(p, 0), event["occurred_at"])
    return replace(stream, watermarks=marks, replays={})


def served_as_of(stream: Stream, customer: str) -> int:
    """The time a customer's scorecard is served as of once everything is scored: its
    partition's watermark, or its own last event when that is later (an event the identity
    stage released)."""
    return max(stream.watermarks.get(partition_for(customer.encode(), PARTITIONS), 0),
               stream.states[customer].last_ms or 0)


COMPARED = ("v", "c", "n", "f", "l", "li", "md", "d", "p", "o", "sub", "un", "cx", "ad",
            "sv", "ac")
"""The state fields compared with the reference: everything that depends only on which
events were applied, not on their order (the reference folds the events in event-time order,
the workers apply them in whatever order alignment and the identity detour give).

Not compared, each for a reason that makes it differ between two correct runs:
- "s", the dedupe window: the last 32 event ids in the order applied, so beyond 32 events it
  depends on the order (compared as a set below that: `seen_matches`);
- "pl", pending label snapshots, "last", the last scorecard, and "al", the alert memory: what
  scoring produced, which depends on the model bundle loaded then and, for a customer with
  alias-only events, on when the identity stage released them; the reference folds events
  without scoring them. With frozen models they are compared with a replay's for the
  customers without alias-only events (`SCORED`), and so are the alerts (`expected_alerts`);
- "rp", the baseline last reported: score changes are reported once per batch, so it depends
  on how the events were batched;
- "ip" and "ig", identity positions: offsets of the identity topic, which aborted
  transactions and retries move; "mg" (with the identity merge), offsets of customer-events;
- "pw", the partition's clock when the state was last written: that depends on the batch;
- "j", attribution touches: absent with attribution off (as here).
"""


def projection(state: CustomerState, fields: tuple[str, ...] = COMPARED) -> dict[str, Any]:
    """The `fields` of a state (by default those compared with the reference: `COMPARED`)."""
    d = state.to_dict()
    return {k: d.get(k) for k in fields}


def seen_matches(live: CustomerState, reference: CustomerState) -> bool:
    """Every event id the reference applied is in the live state's dedupe window (when the
    window still holds them all)."""
    if reference.n_events > live.config.dedupe_window:
        return True
    return set(live.seen) == set(reference.seen)


def expected_card(stream: Stream, customer: str, as_of: int) -> dict[str, Any]:
    """The deterministic part of a customer's scorecard as of `as_of`."""
    card = ScoringEngine(ScoringConfig()).score(stream.states[customer], as_of).to_dict()
    return {**{k: card[k] for k in DETERMINISTIC_FIELDS}, "ltv_historic": card["ltv"]["historic"]}


def live_card(body: dict[str, Any]) -> dict[str, Any]:
    """The same deterministic part of an API answer."""
    return {**{k: body[k] for k in DETERMINISTIC_FIELDS}, "ltv_historic": body["ltv"]["historic"]}


def expected_alerts(stream: Stream, everyone: bool = False) -> Counter[tuple[str, str, str]]:
    """The alerts a worker must commit for the stream's customers without alias-only events,
    counted per (customer, alert type, alert id), when it scores with frozen models (the
    initial bundle) and with no alert budget to share (`alerting_script.ALERT_ENV`): what the
    replay raises for the same events, up to each partition's watermark (labels due after it
    are resolved by neither). Alert ids follow the customer's alert episodes, so equal ids
    mean equal counts too.

    A detoured customer's alias-only events reach scoring after its other events, by as much
    event time as the identity stage runs behind ingest (months, when a backfill goes in
    seconds), so its labels may come due before they arrive and it is left out; with
    `everyone` (workers with `SCORESTREAM_IDENTITY_MERGE`, which scores them in event-time
    order) it is not."""
    return _replay_partitions(stream, everyone)[0]


SCORED = ("pl", "last", "al")
"""The state fields scoring makes (pending label snapshots, the last scorecard, the alert
memory): compared with a replay's for the customers without alias-only events, when the
workers score with frozen models and no alert budget (`scored_differences`)."""


def expected_scored(stream: Stream, everyone: bool = False) -> dict[str, dict[str, Any]]:
    """The `SCORED` fields of each customer without alias-only events (with `everyone`, of
    every customer), as a replay of its partition's events up to the partition's watermark
    leaves them (frozen models, no alert budget): what a partition's scoring stage has made
    once it has scored everything."""
    return _replay_partitions(stream, everyone)[1]


def _replay_partitions(stream: Stream, everyone: bool
                       ) -> tuple[Counter[tuple[str, str, str]], dict[str, dict[str, Any]]]:
    """Replay each partition's events (of the customers without alias-only events, or of
    `everyone`) up to the partition's watermark (frozen models, no alert budget; customers of
    different partitions share nothing then): the alerts and the `SCORED` fields."""
    done = stream.replays.get(everyone)
    if done is not None:
        return done
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for event in stream.canonical:
        if everyone or event["customer_id"] not in stream.detoured:
            p = partition_for(event["customer_id"].encode(), PARTITIONS)
            by_partition.setdefault(p, []).append(event)
    alerts: Counter[tuple[str, str, str]] = Counter()
    scored: dict[str, dict[str, Any]] = {}
    for p, events in by_partition.items():
        result = replay(events, ScoringConfig(), publish=False, as_of_ms=stream.watermarks[p],
                        alert_config=AlertConfig(budget_share=1.0))
        alerts.update((a["customer_id"], a["alert_type"], a["alert_id"])
                      for a in result.alerts)
        for cid, state in result.states.items():
            scored[cid] = projection(state, SCORED)
    stream.replays[everyone] = alerts, scored
    return alerts, scored


def scored_differences(live: dict[str, CustomerState], stream: Stream,
                       everyone: bool = False) -> list[str]:
    """Customers without alias-only events (with `everyone`, all) whose committed `SCORED`
    fields differ from the replay's, each with the fields that differ."""
    wrong = []
    for cid, want in expected_scored(stream, everyone).items():
        state = live.get(cid)
        got = projection(state, SCORED) if state is not None else None
        if got is None:
            wrong.append(f"{cid}: missing")
        elif got != want:
            wrong.append(f"{cid}: " + "; ".join(f"{k} {got[k]} vs {want[k]}"[:400]
                                                for k in SCORED if got[k] != want[k]))
    return wrong


def produce_records(bootstrap: str, topics: dict[str, str],
                    records: Iterable[tuple[str, bytes | None, bytes | None]]) -> int:
    """Produce (source, key, value) records to their source topics; wait for every ack."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": True,  # retries keep each partition's order
                         # Kafka's default (the Java client's): a customer's records are on
                         # the same partition of every source topic and of customer-events.
                         "partitioner": "murmur2_random",
                         "message.max.bytes": 4_000_000})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for source, key, value in records:
        while True:
            try:
                producer.produce(topics[source], key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        producer.poll(0)
    remaining = producer.flush(120)
    assert remaining == 0 and not failures, f"produce failed: {remaining} left, {failures[:3]}"
    return count


def get_json(url: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """GET a JSON document; (status, body), also for HTTP errors; (0, {}) when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, orjson.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def metric(url: str, name: str) -> float:
    """Sum of every sample of one metric on a worker's /metrics (-1 when unreachable)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def mismatches(stream: Stream, web_url: str) -> list[str]:
    """Customers whose scorecard through this worker's API differs from the reference (the
    worker forwards customers of partitions it does not own to their owner)."""

    def differ(cid: str, body: dict[str, Any], as_of: int) -> str | None:
        expected, got = expected_card(stream, cid, as_of), live_card(body)
        return None if got == expected else f"{got} != {expected}"

    return _compare_cards(stream, web_url, differ)


def card_differences(stream: Stream, web_url: str) -> list[str]:
    """Customers whose whole scorecard through the API differs from the reference's, scored
    with the initial model bundle (a worker with frozen models scores with it too), each with
    the fields that differ."""
    engine = ScoringEngine(ScoringConfig())

    def differ(cid: str, body: dict[str, Any], as_of: int) -> str | None:
        expected = engine.score(stream.states[cid], as_of).to_dict()
        keys = sorted(expected)  # the API adds where it was answered
        return "; ".join(f"{k} {body.get(k)} != {expected[k]}" for k in keys
                         if body.get(k) != expected[k]) or None

    return _compare_cards(stream, web_url, differ)


def _compare_cards(stream: Stream, web_url: str,
                   differ: Callable[[str, dict[str, Any], int], str | None]) -> list[str]:
    """Each customer's scorecard through the API, as of the time it is served as of
    (`served_as_of`), given to `differ`; the customers it finds wrong (or not served), each
    with why."""
    wrong = []
    for cid in stream.customers:
        status, body = get_json(f"{web_url}/customers/{cid}/scorecard")
        if status != 200:
            wrong.append(f"{cid}: HTTP {status}")
            continue
        found = differ(cid, body, served_as_of(stream, cid))
        if found is not None:
            wrong.append(f"{cid}: {found}")
    return wrong


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             details: Callable[[], str] = lambda: "", every: float = 1.0) -> Any:
    """Poll until predicate returns something truthy; fail with `details()` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{details()}")
        time.sleep(every)


def converge(stream: Stream, web_url: str, timeout: float, details: Callable[[], str]) -> float:
    """Wait until every scorecard matches the reference; returns the seconds it took."""
    began = time.monotonic()
    last: list[str] = []

    def done() -> bool:
        last[:] = mismatches(stream, web_url)
        return not last

    wait_for(done, timeout, "scorecards equal to the reference",
             lambda: f"{len(last)} differ, e.g. {last[:3]}\n{details()}", every=2.0)
    return time.monotonic() - began


def read_all(bootstrap: str, topic: str, *, committed: bool = True,
             until: dict[int, int] | None = None, timeout: float = 60.0) -> list[Any]:
    """Every record of a topic (read_committed unless told), up to `until` offsets per
    partition when given; stops at the end of each partition."""
    if committed:
        wait_decided(bootstrap, topic, timeout)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"ft-reader-{os.getpid()}-{time.time_ns()}",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    })
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        pending = set(parts)
        if until is not None:
            pending = {p for p in pending if until.get(p, 0) > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in pending])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"{topic}: partitions {pending} never ended"
            for msg in consumer.consume(5000, 0.5):
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(p)
                    continue
                if p not in pending:
                    continue
                offset = msg.offset() or 0
                if until is not None and offset >= until[p]:
                    pending.discard(p)
                    continue
                out.append(msg)
                if until is not None and offset + 1 >= until[p]:
                    pending.discard(p)
        return out
    finally:
        consumer.close()


def out_of_order(bootstrap: str, topic: str, stream: Stream) -> str:
    """How many committed customer-events records of customers without alias-only events
    reached their partition behind its clock (scoring had resolved labels up to there without
    them), and by how much at most: what makes alerts differ. The clock is the latest event
    time of ingest's own records; the identity stage's releases do not move it."""
    newest: dict[int, int] = {}
    late, worst = 0, 0
    for msg in read_all(bootstrap, topic):
        event = orjson.loads(msg.value())
        t = event.get("occurred_at")
        if not isinstance(t, int):
            continue
        p = msg.partition() or 0
        seen = newest.get(p, 0)
        if t < seen and event.get("customer_id") not in stream.detoured:
            late += 1
            worst = max(worst, seen - t)
        if "identity_position" not in event:
            newest[p] = max(seen, t)
    return f"{late} events behind their partition's clock, by up to {worst / 3_600_000:.1f} h"


def changelog_states(bootstrap: str, topic: str) -> dict[str, CustomerState]:
    """The committed customer states of a state changelog (last value per key)."""
    latest: dict[bytes, bytes | None] = {}
    for msg in read_all(bootstrap, topic):
        if msg.key() is not None:
            latest[msg.key()] = msg.value()
    config = ScoringConfig()
    return {k.decode(): CustomerState.restore(v, config) for k, v in latest.items()
            if v is not None}


def state_differences(live: dict[str, CustomerState], stream: Stream) -> list[str]:
    """Customers whose committed state differs from the reference in what is deterministic."""
    return differences(live, stream.states)


def differences(live: dict[str, CustomerState], expected: dict[str, CustomerState]
                ) -> list[str]:
    """Customers whose state differs from the expected one in what is deterministic, each
    with the fields (and day buckets) that differ: what a failure report needs to be read."""
    wrong = [f"missing: {cid}" for cid in expected if cid not in live]
    wrong += [f"unexpected: {cid}" for cid in live if cid not in expected]
    for cid, ref in expected.items():
        state = live.get(cid)
        if state is None:
            continue
        a, b = projection(state), projection(ref)
        if a != b:
            keys = [k for k in a if a[k] != b[k]]
            days = ""
            if "d" in keys:
                got, want = {r[0]: r for r in a["d"]}, {r[0]: r for r in b["d"]}
                days = "; day rows (got, expected) " + ", ".join(
                    f"{got.get(d)} vs {want.get(d)}" for d in sorted(got.keys() | want.keys())
                    if got.get(d) != want.get(d))
            wrong.append(f"{cid}: differs in {keys} (events {a['n']} vs {b['n']}){days}")
        elif not seen_matches(state, ref):
            wrong.append(f"{cid}: applied other event ids than the reference")
    return wrong


@functools.cache
def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def group_members(bootstrap: str, groups: list[str]) -> dict[str, list[tuple[str, list[int]]]]:
    """Each group's members: (client id, partitions assigned)."""
    admin = _admin(bootstrap)
    out = {}
    for group, future in admin.describe_consumer_groups(groups).items():
        description = future.result(15)
        out[group] = [(m.client_id, sorted(tp.partition for tp in m.assignment.topic_partitions))
                      for m in description.members]
    return out


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """A group's committed offsets on a topic, per partition (absent when none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = _admin(bootstrap)
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(PARTITIONS)])
    result = admin.list_consumer_group_offsets([request])[group].result(15)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def wait_decided(bootstrap: str, topic: str, timeout: float = 60.0) -> None:
    """Until every transaction that wrote to `topic` before this call is committed or aborted.

    A worker killed inside a transaction leaves it open until the broker aborts it (the
    transaction timeout, then the broker's next cleanup pass): until then a read_committed
    reader ends at that transaction's first record and misses everything written after it,
    by other workers too. Its last stable offsets reaching the high watermarks of the start
    says that everything written before the start is decided.
    """
    high = _latest_offsets(bootstrap, [topic], IsolationLevel.READ_UNCOMMITTED)
    deadline = time.monotonic() + timeout
    while True:
        stable = _latest_offsets(bootstrap, [topic], IsolationLevel.READ_COMMITTED)
        if all(stable[tp] >= high[tp] for tp in high):
            return
        assert time.monotonic() < deadline, (
            f"{topic}: transactions still open after {timeout:.0f}s (last stable offsets "
            f"{stable}, high watermarks {high})")
        time.sleep(0.25)


def open_transactions(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Partitions whose last stable offset is behind the high watermark (an open
    transaction holds them), with how far behind."""
    stable = _latest_offsets(bootstrap, topics, IsolationLevel.READ_COMMITTED)
    high = _latest_offsets(bootstrap, topics, IsolationLevel.READ_UNCOMMITTED)
    return {tp: high[tp] - lso for tp, lso in stable.items() if lso != high[tp]}


def stable_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's last stable offset (where a read_committed reader ends)."""
    return _latest_offsets(bootstrap, topics, IsolationLevel.READ_COMMITTED)


def latest_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Each partition's high watermark."""
    return _latest_offsets(bootstrap, topics, IsolationLevel.READ_UNCOMMITTED)


def _latest_offsets(bootstrap: str, topics: list[str], level: IsolationLevel
                    ) -> dict[tuple[str, int], int]:
    """Each partition's end as a reader at `level` sees it: the last stable offset for
    read_committed, the high watermark for read_uncommitted."""
    admin = _admin(bootstrap)
    meta = admin.list_topics(timeout=15)
    tps = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
    result = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, isolation_level=level)
    return {(tp.topic, tp.partition): f.result(15).offset for tp, f in result.items()}
