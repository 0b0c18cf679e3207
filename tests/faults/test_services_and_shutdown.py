"""Services failing under a running consumer: broker down at SIGTERM, DLQ unavailable,
PostgreSQL and broker restarts; and lake maintenance after a writer killed mid-flush.

All on the private stack (restarting it disturbs no other test); every test restores what
it broke in a ``finally`` (or, for Redis, restarts it itself).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from app import stack
from lake.catalog import connect
from sensorlake.kinematics import summarize
from tests.conftest import REPO
from tests.faults.helpers import (
    ConsumerThread,
    assert_summaries_equal,
    dlq_records,
    ev,
    high_watermarks,
    lake_count,
    lake_offsets,
    lake_table,
    pg_states,
    send,
    spawn_consumer,
    stop_all,
    wait_until,
)

pytestmark = pytest.mark.services

BAD = [(b"1:bad", b'{"traveler_id": "x", "position": [1, 2'), (b"1:bad", b"[]"), (b"1:bad", b"")]


def _ensure_kafka(s) -> None:
    stack.start_service(s, "kafka")  # no-op when it runs; waits until it serves metadata


def test_sigterm_with_the_broker_down_exits_in_time_and_keeps_what_it_held(fault_env, private_stack, tmp_path):
    """The consumer holds a whole batch (flush age 600 s) when the broker dies; SIGTERM:
    it flushes what it holds to the lake, tries Kafka's commit with a bound, exits 0 within
    15 s, and nothing it acknowledged is lost."""
    s = fault_env
    holder = dataclasses.replace(s, max_batch_age_s=600.0, max_batch_rows=1_000_000)
    events = [ev(f"h{i % 10}", (i // 10) * 0.5, i, 0) for i in range(300)]
    send(s, events[:150] + BAD + events[150:])
    hw = {p: o for p, o in high_watermarks(s).items() if o}
    proc = spawn_consumer(holder, log_path=tmp_path / "consumer.log")
    try:
        wait_until(lambda: sum(st.observations for st in pg_states(s).values()) == 300, 60, what="all events applied")
        wait_until(lambda: len(dlq_records(s)) == len(BAD), 30, what="the DLQ records acknowledged")
        assert lake_count(s) == 0  # held in the consumer's buffer, not yet in the lake
        stack.stop_service(private_stack, "kafka", hard=True)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        stop_all([proc])
        _ensure_kafka(private_stack)
    assert rc == 0, (tmp_path / "consumer.log").read_text()[-3000:]
    print(f"\nSIGTERM with the broker down: exit after {took:.1f} s")
    assert took <= 15.0, f"exit took {took:.1f} s"
    assert lake_count(s) == 300 and lake_offsets(s) == hw


def test_a_rejected_record_the_dlq_has_not_acknowledged_is_never_skipped(fault_env):
    """The DLQ topic is missing: the consumer commits partition 0 only below the rejected
    record and keeps the rest; once the DLQ topic exists the record is delivered and the
    rest committed. Nothing skipped, nothing twice in the lake."""
    s = fault_env
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    for f in admin.delete_topics([s.dlq_topic], operation_timeout=30).values():
        f.result(30)
    wait_until(lambda: s.dlq_topic not in admin.list_topics(timeout=10).topics, 30, what="the DLQ topic to go")
    good = [ev(f"d{i % 3}", i * 0.6, i, 0) for i in range(20)]
    c = ConsumerThread(s).start()
    try:
        send(s, good[:10] + [BAD[0]] + good[10:], partition=0)
        wait_until(lambda: lake_offsets(s) == {0: 10}, 60, what="the commit below the rejected record")
        time.sleep(3)
        assert lake_offsets(s) == {0: 10} and lake_count(s) == 10  # no further while undelivered
        for f in admin.create_topics([NewTopic(s.dlq_topic, 1, 1)], operation_timeout=30).values():
            f.result(30)
        wait_until(lambda: lake_offsets(s) == {0: 21}, 90, what="the rest, once the DLQ took the record")
    finally:
        stats = c.stop()
    assert lake_count(s) == 20 and stats.fenced == 0
    recs = dlq_records(s)
    assert recs and {r["origin"] for r in recs} == {(s.topic, 0, 10)}  # at least once
    assert all(r["value"] == BAD[0][1] and r["reason"] == "malformed_json" for r in recs)


def test_consumers_survive_postgres_and_broker_restarts(fault_env, private_stack, tmp_path):
    """Two running consumers; PostgreSQL crashes and restarts while events arrive, then the
    broker restarts: both consumers carry on, and in the end every event is in the lake
    exactly once and every summary equals the reference."""
    s = fault_env
    waves = [[ev(f"w{i % 40}", w * 200 + (i // 40) * 0.5, i, w) for i in range(2000)] for w in range(3)]
    log = tmp_path / "consumers.log"
    procs = [spawn_consumer(s, log_path=log) for _ in range(2)]
    restarter: threading.Thread | None = None
    try:
        send(s, waves[0])
        wait_until(lambda: lake_count(s) == 2000, 90, what="wave 1")
        restarter = threading.Thread(target=stack.restart_postgres, args=(private_stack,), kwargs={"hard": True})
        restarter.start()
        send(s, waves[1])
        restarter.join(120)
        wait_until(lambda: lake_count(s) == 4000, 120, what="wave 2 after the PostgreSQL restart")
        stack.restart_kafka(private_stack)
        send(s, waves[2])
        wait_until(lambda: lake_count(s) == 6000, 120, what="wave 3 after the broker restart")
        assert all(p.poll() is None for p in procs), log.read_text()[-3000:]
    finally:
        if restarter is not None:
            restarter.join(120)
        stack.start_service(private_stack, "postgresql")
        _ensure_kafka(private_stack)
        stop_all(procs)
    events = [e for w in waves for e in w]
    lake = lake_table(s)
    pairs = set(zip(lake.column("kafka_partition").to_pylist(), lake.column("kafka_offset").to_pylist(), strict=True))
    assert lake.num_rows == len(pairs) == 6000
    assert lake_offsets(s) == {p: o for p, o in high_watermarks(s).items() if o}
    assert_summaries_equal(pg_states(s), summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s))
    assert dlq_records(s) == []


def test_redis_crash_restart_brings_up_a_new_server(private_stack):
    """``restart_redis(hard=True)`` (a fault-injection helper) SIGKILLs Redis and starts it
    again: afterwards another server process (a new ``run_id``) answers."""
    r = redis.Redis.from_url(private_stack.redis_url, socket_connect_timeout=5)
    try:
        before = r.info("server")["run_id"]
        stack.restart_redis(private_stack, hard=True)
        assert r.ping() is True
        after = r.info("server")["run_id"]
    finally:
        r.close()
    assert after != before


def _files(s) -> tuple[set[str], set[str]]:
    """(every Parquet file under the data path, the files the current snapshot references)."""
    on_disk = {str(p) for p in Path(s.lake_data_path).rglob("*.parquet")}
    con = connect(s, read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()]
        referenced = {f for t in tables for (f,) in con.execute(f"SELECT data_file FROM ducklake_list_files('lake', '{t}')").fetchall()}
    finally:
        con.close()
    return on_disk, referenced


def test_maintenance_removes_what_a_writer_killed_mid_flush_left(fault_env, tmp_path):
    """A consumer SIGKILLed between writing its Parquet files and COMMIT leaves files no
    snapshot references; `sensorlake maintain` compacts, expires and removes them with
    DuckLake's functions, and the lake still reads exactly the same rows."""
    s = fault_env
    events = [ev(f"m{i % 7}", i * 0.3, i, 0) for i in range(600)]
    send(s, events[:200])
    victim = spawn_consumer(s, killpoint="mid_lake_commit", log_path=tmp_path / "victim.log")
    try:
        assert victim.wait(60) == -signal.SIGKILL
    finally:
        stop_all([victim])
    on_disk, referenced = _files(s)
    orphans = on_disk - referenced
    assert orphans and lake_count(s) == 0

    survivor = ConsumerThread(s).start()
    try:
        wait_until(lambda: lake_count(s) == 200, 60, what="the survivor's first batch")
        send(s, events[200:400])
        wait_until(lambda: lake_count(s) == 400, 60, what="the second batch")
        send(s, events[400:])
        wait_until(lambda: lake_count(s) == 600, 60, what="the third batch")
    finally:
        survivor.stop()
    before = lake_table(s)
    on_disk, referenced = _files(s)
    assert orphans <= on_disk and len(referenced) >= 3

    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "maintain", "--file-grace-s", "0", "--snapshot-retention-s", "0"],
        cwd=REPO, env={**os.environ, **s.to_env()}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "orphaned files" in r.stdout
    on_disk_after, referenced_after = _files(s)
    assert not (orphans & on_disk_after)  # the killed writer's files are gone
    assert on_disk_after == referenced_after  # nothing unreferenced is left
    assert len(referenced_after) < len(referenced)  # compacted
    after = lake_table(s)
    assert after.num_rows == 600 and after.to_pylist() == before.to_pylist()
