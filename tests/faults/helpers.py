"""What the fault and bad-input tests read and send: Kafka, PostgreSQL, Redis and the lake."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pyarrow as pa
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ingest.consumer import ConsumeStats, MovementConsumer
from ingest.pg_sink import _COLUMNS, row_to_state
from ingest.redis_state import decode_state
from lake.catalog import connect
from sensorlake.events import Event, encode_event, ts_to_us
from sensorlake.kinematics import TravelerState
from sensorlake.settings import Settings
from tests.conftest import REPO

T0 = datetime(2026, 1, 1, 14, 0, tzinfo=UTC)
T0_US = ts_to_us(T0)


def ev(tid: str, t_s: float, x: float, y: float, *, sensor: int = 1, type_: str = "car") -> Event:
    """An event of traveler ``tid`` at ``T0 + t_s`` seconds, position (x, y) ft."""
    return Event(sensor, tid, type_, T0_US + round(t_s * 1_000_000), float(x), float(y))


def send(s: Settings, items: Iterable[Event | tuple[bytes | None, bytes | None]], *, partition: int | None = None,
         topic: str | None = None, producer_conf: dict | None = None) -> int:  # fmt: skip
    """Produce events (encoded) or raw ``(key, value)`` pairs, in order; wait for every ack.

    ``partition`` forces one partition (default: the key's, as the real producer does).
    """
    conf = {"bootstrap.servers": s.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "partitioner": "murmur2_random", **(producer_conf or {})}  # fmt: skip
    p = Producer(conf)
    failed: list = []
    n = 0
    for item in items:
        key, value = (item.key.encode(), encode_event(item)) if isinstance(item, Event) else item
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic or s.topic, value=value, key=key,
                          on_delivery=lambda err, _m: err and failed.append(err), **kwargs)  # fmt: skip
                break
            except BufferError:
                p.poll(0.1)
        n += 1
    left = p.flush(60)
    assert left == 0 and not failed, (left, failed[:3])
    return n


# ----------------------------------------------------------------------------- readers
def pg_states(s: Settings) -> dict[tuple[int, str, int], TravelerState]:
    """Every ``traveler_summary`` row as a state, keyed (sensor_id, traveler_id, first_seen_us)."""
    with psycopg.connect(s.pg_dsn) as c:
        if c.execute("SELECT to_regclass('traveler_summary')").fetchone()[0] is None:
            return {}  # no consumer has set up yet
        rows = c.execute(f"SELECT {_COLUMNS} FROM traveler_summary").fetchall()
    return {(r[0], r[1], st.first_seen_us): st for r in rows for st in [row_to_state(r)]}


def pg_raw_rows(s: Settings) -> list[tuple]:
    with psycopg.connect(s.pg_dsn) as c:
        return c.execute("SELECT * FROM traveler_summary").fetchall()


def pg_metrics(s: Settings) -> dict[tuple[str, str], int]:
    """Sum of ``consumer_metrics`` over the group's consumer processes, by (metric, label)."""
    with psycopg.connect(s.pg_dsn) as c:
        if c.execute("SELECT to_regclass('consumer_metrics')").fetchone()[0] is None:
            return {}
        rows = c.execute(
            "SELECT metric, label, sum(value) FROM consumer_metrics WHERE consumer_group = %s GROUP BY 1, 2",
            (s.consumer_group,),
        ).fetchall()
    return {(m, lbl): int(v) for m, lbl, v in rows}


def redis_states(s: Settings) -> dict[tuple[int, str], TravelerState]:
    r = redis.Redis.from_url(s.redis_url)
    try:
        out = {}
        for k in r.scan_iter(match=f"{s.redis_namespace}:state:*", count=1000):
            st = decode_state(r.get(k))
            out[(st.sensor_id, st.traveler_id)] = st
        return out
    finally:
        r.close()


def lake_table(s: Settings, sql: str = "SELECT * FROM lake.movements ORDER BY kafka_partition, kafka_offset") -> pa.Table:
    con = connect(s, read_only=True)
    try:
        return con.execute(sql).to_arrow_table()
    finally:
        con.close()


def lake_count(s: Settings) -> int:
    return lake_table(s, "SELECT count(*) AS n FROM lake.movements").column("n")[0].as_py()


def lake_offsets(s: Settings) -> dict[int, int]:
    t = lake_table(
        s,
        "SELECT kafka_partition AS p, max(next_offset) AS o FROM lake.ingest_offsets "
        f"WHERE consumer_group = '{s.consumer_group}' AND topic = '{s.topic}' GROUP BY 1",
    )
    return dict(zip(t.column("p").to_pylist(), t.column("o").to_pylist(), strict=True))


def high_watermarks(s: Settings, topic: str | None = None) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "hw-probe"})
    try:
        md = c.list_topics(topic or s.topic, timeout=10)
        parts = md.topics[topic or s.topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic or s.topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def kafka_committed(s: Settings) -> dict[int, int]:
    """The group's committed offsets on Kafka (partitions with none are left out)."""
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": s.consumer_group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(s.topic, p) for p in range(s.topic_partitions)]
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def read_topic(s: Settings, topic: str, timeout_s: float = 30.0) -> list:
    """Every message of ``topic`` (all partitions, each in offset order), up to the high watermarks."""
    hw = high_watermarks(s, topic)
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "read-probe", "enable.auto.commit": False,
                  "fetch.message.max.bytes": 8_000_000})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, p, 0) for p in hw])
        got: list = []
        seen = dict.fromkeys(hw, 0)
        deadline = time.monotonic() + timeout_s
        while any(seen[p] < hw[p] for p in hw) and time.monotonic() < deadline:
            for m in c.consume(10_000, timeout=1.0):
                if m.error() is None:
                    got.append(m)
                    seen[m.partition()] = m.offset() + 1
        assert all(seen[p] >= hw[p] for p in hw), (seen, hw)
        return got
    finally:
        c.close()


def dlq_records(s: Settings) -> list[dict]:
    """The DLQ's records: reason, origin, key, value and all headers."""
    out = []
    for m in read_topic(s, s.dlq_topic):
        h = {k: v for k, v in (m.headers() or [])}
        out.append({
            "reason": h["sl-reason"].decode(), "detail": h["sl-detail"].decode(errors="replace"),
            "origin": (h["sl-origin-topic"].decode(), int(h["sl-origin-partition"]), int(h["sl-origin-offset"])),
            "key": m.key(), "value": m.value(), "headers": h,
        })  # fmt: skip
    return out


# ----------------------------------------------------------------------------- checks
def assert_finite_state(st: TravelerState) -> None:
    for name in ("last_x_ft", "last_y_ft", "anchor_x_ft", "anchor_y_ft", "distance_ft", "duration_s"):
        assert math.isfinite(getattr(st, name)), (name, st)
    for name in ("min_speed_fps", "max_speed_fps", "avg_speed_fps"):
        v = getattr(st, name)
        assert v is None or (math.isfinite(v) and v >= 0), (name, st)


def same_state(a: TravelerState, b: TravelerState) -> bool:
    """Equal summaries (floats to 1e-9 relative; the Kafka origin is not compared)."""
    da, db = msgspec.structs.asdict(a), msgspec.structs.asdict(b)
    for k in da:
        if k in ("kafka_partition", "kafka_offset"):
            continue
        x, y = da[k], db[k]
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def assert_summaries_equal(got: dict, expected: dict) -> None:
    assert set(got) == set(expected), (
        f"{len(set(expected) - set(got))} visit(s) missing, {len(set(got) - set(expected))} unexpected; "
        f"e.g. missing {sorted(set(expected) - set(got))[:3]}, extra {sorted(set(got) - set(expected))[:3]}"
    )
    bad = [k for k in expected if not same_state(got[k], expected[k])]
    assert not bad, f"{len(bad)} summaries differ, e.g. {bad[0]}: got {got[bad[0]]} expected {expected[bad[0]]}"


# ----------------------------------------------------------------------------- in-process consumer
class ConsumerThread:
    """A MovementConsumer running in a thread (no signal handlers); :meth:`stop` ends it."""

    def __init__(self, s: Settings, **run_kwargs) -> None:
        self.consumer = MovementConsumer(s)
        self.stats: ConsumeStats | None = None
        self.error: BaseException | None = None
        self._kwargs = run_kwargs
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.consumer.run(**self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.error = exc

    def start(self) -> ConsumerThread:
        self.consumer.setup()
        self._thread.start()
        return self

    def assigned(self) -> bool:
        """True once partitions are assigned (read from the consumer's own bookkeeping:
        librdkafka's ``assignment()`` must not be called from another thread)."""
        return bool(self.consumer._expected)

    def join(self, timeout_s: float = 60) -> ConsumeStats:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            pytest.fail(f"consumer thread still running after {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats

    def stop(self, timeout_s: float = 60) -> ConsumeStats:
        self.consumer.stop()
        return self.join(timeout_s)


# ----------------------------------------------------------------------------- environments
def create_topics(
    s: Settings, partitions: int, *, max_message_bytes: int | None = None, dlq_max_message_bytes: int | None = None
) -> None:
    """Create the event topic (``partitions``) and its DLQ (1 partition); wait until visible.

    ``max_message_bytes`` raises both topics' ``max.message.bytes`` (broker default ~1 MB);
    ``dlq_max_message_bytes`` sets the DLQ's alone.
    """
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    config = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    dlq_limit = dlq_max_message_bytes or max_message_bytes
    dlq_config = {"max.message.bytes": str(dlq_limit)} if dlq_limit else {}
    futures = admin.create_topics(
        [NewTopic(s.topic, partitions, 1, config=config), NewTopic(s.dlq_topic, 1, 1, config=dlq_config)],
        operation_timeout=30,
    )
    for f in futures.values():
        f.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        t = md.topics.get(s.topic)
        if (t and len(t.partitions) == partitions and s.dlq_topic in md.topics
                and all(pm.leader >= 0 for pm in t.partitions.values())):  # fmt: skip
            return
        time.sleep(0.2)
    raise RuntimeError("topics not visible after 30 s")


@contextlib.contextmanager
def isolated_on(
    base: Settings, tmp_path: Path, *, partitions: int = 4, max_message_bytes: int | None = None,
    dlq_max_message_bytes: int | None = None, **overrides,
) -> Iterator[Settings]:  # fmt: skip
    """Private topic (+DLQ), consumer group, live and catalog databases, lake directory and
    Redis namespace on the stack of ``base``; everything removed afterwards."""
    rid = uuid.uuid4().hex[:10]
    values = {
        "topic": f"movements-{rid}", "dlq_topic": f"movements-{rid}.dlq", "consumer_group": f"g-{rid}",
        "pg_database": f"sl_live_{rid}", "pg_catalog_database": f"sl_lake_{rid}",
        "data_path": str(tmp_path / f"lake-{rid}"), "redis_namespace": f"t{rid}",
        "topic_partitions": partitions, "max_batch_age_s": 1.0,
    }  # fmt: skip
    values.update(overrides)
    s = Settings.from_env(
        **{k: getattr(base, k) for k in ("state_dir", "host", "kafka_port", "kafka_controller_port",
                                          "pg_port", "redis_port", "kafka_host", "pg_host", "redis_host")},
        **values,
    )  # fmt: skip
    with psycopg.connect(s._pg_dsn(base.pg_database), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{s.pg_database}"')
        c.execute(f'CREATE DATABASE "{s.pg_catalog_database}"')
    create_topics(s, partitions, max_message_bytes=max_message_bytes, dlq_max_message_bytes=dlq_max_message_bytes)
    from lake.catalog import connect

    connect(s).close()  # initialise the catalog once, before concurrent consumers attach
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
            for f in admin.delete_topics([s.topic, s.dlq_topic], operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    f.result(30)  # wait: the request must go out before the client is collected
        with contextlib.suppress(Exception), psycopg.connect(s._pg_dsn(base.pg_database), autocommit=True) as c:
            for db in (s.pg_database, s.pg_catalog_database):
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        with contextlib.suppress(Exception):
            r = redis.Redis.from_url(s.redis_url)
            for k in r.scan_iter(match=f"{s.redis_namespace}:*", count=1000):
                r.delete(k)


# ----------------------------------------------------------------------------- processes
def spawn_consumer(
    s: Settings, *, until_idle_s: float | None = None, killpoint: str | None = None, log_path: Path | None = None
) -> subprocess.Popen:
    """Start one real consumer process (``tests/faults/consumer_proc.py``).

    Args:
        until_idle_s: exit after this many idle seconds (None: run until SIGTERM).
        killpoint: make the process SIGKILL itself at that point (see consumer_proc).
        log_path: append its stderr (INFO log) here; default: discarded.
    """
    env = {**os.environ, **s.to_env()}
    args = [sys.executable, "-m", "tests.faults.consumer_proc"]
    if until_idle_s is not None:
        args += ["--until-idle", str(until_idle_s)]
    if killpoint:
        args += ["--killpoint", killpoint]
    err = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
    finally:
        if log_path:
            err.close()


def stop_all(procs: list[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """SIGTERM every live process, then SIGKILL what is still running after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
