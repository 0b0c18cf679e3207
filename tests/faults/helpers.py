"""What the tests against real services read and send: Kafka, PostgreSQL, Redis and the lake
(used by the fault, bad-input and pipeline tests)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pyarrow as pa
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from ingest.consumer import ConsumeStats, MovementConsumer
from ingest.pg_sink import _COLUMNS, row_to_state
from ingest.redis_state import decode_state
from lake.catalog import connect
from sensorlake.events import Event, encode_event, ts_to_us
from sensorlake.kinematics import TravelerState
from sensorlake.settings import Settings
from tests.conftest import REPO

T0 = datetime(2026, 1, 1, 14, 0, tzinfo=UTC)
_AVG = [c.strip() for c in _COLUMNS.split(",")].index("avg_speed_fps")
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
    """Every ``traveler_summary`` row as a state, keyed (sensor_id, traveler_id, first_seen_us).

    ``row_to_state`` derives ``avg_speed_fps`` from distance and duration, so the stored
    ``avg_speed_fps`` column (the one the app and SQL users read) is checked against it here.
    """
    with psycopg.connect(s.pg_dsn) as c:
        if c.execute("SELECT to_regclass('traveler_summary')").fetchone()[0] is None:
            return {}  # no consumer has set up yet
        rows = c.execute(f"SELECT {_COLUMNS} FROM traveler_summary").fetchall()
    out = {}
    for r in rows:
        st = row_to_state(r)
        stored = r[_AVG]
        assert (stored is None and st.avg_speed_fps is None) or math.isclose(
            stored, st.avg_speed_fps, rel_tol=1e-9, abs_tol=1e-9
        ), f"{r[:3]}: stored avg_speed_fps {stored} != distance / duration {st.avg_speed_fps}"
        out[(r[0], r[1], st.first_seen_us)] = st
    return out


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
    """The next offsets the lake stores for the topic (they belong to the topic, whichever
    consumer group wrote them: the consumer reads them so on assignment)."""
    t = lake_table(
        s, f"SELECT kafka_partition AS p, max(next_offset) AS o FROM lake.ingest_offsets WHERE topic = '{s.topic}' GROUP BY 1"
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
