"""State loss, degenerate times, late events, time zones and timestamp units, end to end.

Each case goes through Kafka and a real consumer into Redis, PostgreSQL and the lake
(private stack: the Redis FLUSHALL here touches no other test).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from ingest.consumer import MovementConsumer
from lake.catalog import connect
from sensorlake.kinematics import summarize
from tests.conftest import REPO
from tests.faults.helpers import (
    T0,
    T0_US,
    ConsumerThread,
    assert_finite_state,
    assert_summaries_equal,
    ev,
    lake_count,
    lake_table,
    pg_metrics,
    pg_raw_rows,
    pg_states,
    redis_states,
    same_state,
    send,
    wait_until,
)

pytestmark = pytest.mark.services


def consume(s, n: int):
    """Run a consumer until it has handled ``n`` messages (and committed them)."""
    return MovementConsumer(s).run(until_idle_s=60, max_messages=n)


def test_age_based_flush_without_new_traffic(fault_env):
    """The producer stops; the events a consumer holds reach the lake within
    max_batch_age_s + 5 s although no further message arrives."""
    s = dataclasses.replace(fault_env, max_batch_age_s=3.0, max_batch_rows=1_000_000)
    c = ConsumerThread(s).start()
    try:
        wait_until(c.assigned, 60, what="the consumer's assignment")
        send(s, [ev(f"age{i % 5}", i * 0.5, i, 0) for i in range(50)])
        # fails the test unless the flush comes within max_batch_age_s + 5 s of the send
        wait_until(lambda: lake_count(s) == 50, s.max_batch_age_s + 5, interval_s=0.1, what="the age-based flush")
    finally:
        stats = c.stop()
    assert stats.lake_commits >= 1 and stats.consumed == 50


def test_redis_losing_all_state_mid_traveler_changes_no_summary(fault_env, private_stack):
    """FLUSHALL (the whole private Redis) between the two halves of every traveler: the next
    event rebuilds each state from PostgreSQL and the summaries equal the no-failure run."""
    s = fault_env
    events = [ev(f"r{i % 6}", (i // 6) * 0.4, (i // 6) * 4.0, (i % 6) * 3.0) for i in range(480)]
    half = len(events) // 2
    c = ConsumerThread(s).start()
    try:
        send(s, events[:half])
        wait_until(lambda: lake_count(s) == half, 60, what="the first half")
        r = redis.Redis.from_url(s.redis_url)
        r.flushall()
        assert r.dbsize() == 0
        r.close()
        send(s, events[half:])
        wait_until(lambda: lake_count(s) == len(events), 60, what="the second half")
    finally:
        c.stop()
    expected = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
    assert_summaries_equal(pg_states(s), expected)
    got = redis_states(s)
    assert len(got) == 6 and all(same_state(got[(k[0], k[1])], v) for k, v in expected.items())


def _no_nan_anywhere(s) -> None:
    for st in redis_states(s).values():
        assert_finite_state(st)
    for row in pg_raw_rows(s):
        assert all(math.isfinite(v) for v in row if isinstance(v, float)), row
    lake = lake_table(s)
    for name in ("x_ft", "y_ft"):
        assert all(math.isfinite(v) for v in lake.column(name).to_pylist())


def _derived_tables_finite(s, start: datetime, end: datetime) -> int:
    """Run every transform over [start, end); assert no NaN/inf in any derived table; rows."""
    from transforms.backfill import run_transform

    run_transform(s, start, end)
    con = connect(s, read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' "
            "AND table_name NOT IN ('movements', 'ingest_offsets', 'ingest_fence')").fetchall()]  # fmt: skip
        n = 0
        for t in tables:
            data = con.execute(f"SELECT * FROM lake.{t}").to_arrow_table()
            n += data.num_rows
            for col, field in zip(data.columns, data.schema, strict=True):
                if pa.types.is_floating(field.type):
                    bad = [v for v in col.to_pylist() if v is not None and not math.isfinite(v)]
                    assert not bad, (t, field.name, bad[:3])
        return n
    finally:
        con.close()


def test_zero_dt_duplicate_and_zero_time_move(fault_env):
    """T6 at t=0 (0,0), t=0 (0,0) again, t=0 (30,0), t=10 (150,0): no NaN or inf in Redis,
    PostgreSQL, the lake or the transforms; the duplicate changes nothing, the zero-time
    move is rejected with its reason (``zero_time_move``, counted); max speed 15 ft/s."""
    s = fault_env
    t6 = [ev("T6", 0, 0, 0), ev("T6", 0, 0, 0), ev("T6", 0, 30, 0), ev("T6", 10, 150, 0)]
    send(s, t6)
    stats = consume(s, 4)
    assert stats.outcomes == {"new_visit": 1, "duplicate": 1, "zero_time_move": 1, "accepted": 1}
    (st,) = pg_states(s).values()
    assert (st.observations, st.duplicate_count, st.rejected_count) == (2, 1, 1)
    assert (st.min_speed_fps, st.max_speed_fps, st.avg_speed_fps) == (15.0, 15.0, 15.0)
    assert (st.distance_ft, st.duration_s) == (150.0, 10.0)
    assert same_state(redis_states(s)[(1, "T6")], st)
    assert pg_metrics(s)[("outcome", "zero_time_move")] == 1  # the reason, as a metric
    assert lake_count(s) == 4  # the lake keeps what the sensor said
    _no_nan_anywhere(s)

    from transforms.segments import build_visits_segments

    seg = build_visits_segments(lake_table(s), min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s).segments
    assert seg.column("distance_ft").to_pylist() == [150.0] and seg.column("duration_s").to_pylist() == [10.0]
    assert _derived_tables_finite(s, T0 - timedelta(hours=1), T0 + timedelta(hours=1)) > 0


def test_late_event_is_counted_kept_in_the_lake_and_exact_there(fault_env):
    """T5 at t=0 (0,0), t=20 (200,0), then t=10 (100,0): live, no negative speed, last_seen
    stays t=20 and the late event is counted; it is in the lake, where the transform gives
    speeds 10 and 10."""
    s = fault_env
    send(s, [ev("T5", 0, 0, 0), ev("T5", 20, 200, 0), ev("T5", 10, 100, 0)])
    stats = consume(s, 3)
    assert stats.outcomes["late"] == 1
    (st,) = pg_states(s).values()
    assert st.last_seen_us == T0_US + 20_000_000 and st.late_count == 1
    assert st.min_speed_fps == st.max_speed_fps == 10.0 and st.min_speed_fps >= 0
    assert lake_count(s) == 3
    _no_nan_anywhere(s)

    from transforms.segments import build_visits_segments

    seg = build_visits_segments(lake_table(s), min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s).segments
    speeds = [d / t for d, t in zip(seg.column("distance_ft").to_pylist(), seg.column("duration_s").to_pylist(), strict=True)]
    assert speeds == [10.0, 10.0]


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata"])
def test_offset_timestamp_reads_back_as_utc_whatever_the_process_time_zone(fault_env, tz):
    """``2024-03-10T23:30:00-05:00`` is 2024-03-11 04:30:00 UTC: stored so, in the day
    partition of 2024-03-11, and read back as 04:30 UTC through PostgreSQL, DuckDB and
    Polars by a process whose TZ is ``tz``."""
    s = fault_env
    env = {**os.environ, **s.to_env(), "TZ": tz}
    r = subprocess.run([sys.executable, "-m", "tests.faults.tz_probe"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tz_env"] == tz and out["utcoffset_s"] != 0  # the probe really ran in that zone
    want = "2024-03-11T04:30:00+00:00"
    assert out["pg"]["aware_utc"] == want and out["pg"]["at_utc"] == "2024-03-11T04:30:00"
    assert out["pg"]["session_tz"] == tz and out["pg"]["offset_s"] != 0  # rendered in the local zone, same instant
    assert out["duckdb"]["ts"] == want and out["duckdb"]["ymdh"] == [2024, 3, 11, 4]
    assert out["polars"] == {"dtype": "Datetime(time_unit='us', time_zone='UTC')", "ts": want, "hour": 4}
    assert out["parquet"]["arrow_type"] == "timestamp[us, tz=UTC]"
    assert out["parquet"]["ts"] == want
    (path,) = out["files"]
    assert "year=2024" in path and "month=3" in path and "day=11" in path, path


def test_one_timestamp_unit_in_every_file_and_nanoseconds_truncated(fault_env):
    """Nanosecond inputs are truncated to microseconds (the documented rule), never shifted
    by 1000x; a numeric epoch timestamp is rejected (its unit is ambiguous); every Parquet
    file the lake references, raw and derived, stores timestamps in microseconds, UTC."""
    s = fault_env
    base = '{{"traveler_id": "{tid}", "traveler_type": "car", "sensor_id": 2, "position": [{x}, 0], "timestamp": {ts}}}'
    items = [
        (b"2:ns", base.format(tid="ns", x=0, ts='"2026-01-01T14:00:00.123456789Z"').encode()),
        (b"2:ns", base.format(tid="ns", x=10, ts='"2026-01-01T15:00:01.9999999+01:00"').encode()),
        (b"2:ns", base.format(tid="ns", x=20, ts='"2026-01-01T14:00:02.000001Z"').encode()),
        (b"2:num", base.format(tid="num", x=0, ts="1767276000123456789").encode()),
    ]
    send(s, items)
    stats = consume(s, len(items))
    assert stats.dlq == {"bad_type": 1}
    ts = [t.astimezone(UTC) for t in lake_table(s).column("ts").to_pylist()]
    assert ts == [datetime(2026, 1, 1, 14, 0, 0, 123456, tzinfo=UTC), datetime(2026, 1, 1, 14, 0, 1, 999999, tzinfo=UTC),
                  datetime(2026, 1, 1, 14, 0, 2, 1, tzinfo=UTC)]  # fmt: skip
    (st,) = pg_states(s).values()
    assert st.first_seen_us == T0_US + 123456 and st.last_seen_us == T0_US + 2_000_001

    assert _derived_tables_finite(s, T0 - timedelta(hours=1), T0 + timedelta(hours=1)) > 0
    con = connect(s, read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()]  # fmt: skip
        files = [f for t in tables for (f,) in con.execute(
            f"SELECT data_file FROM ducklake_list_files('lake', '{t}')").fetchall()]  # fmt: skip
    finally:
        con.close()
    assert len(files) >= 2  # movements and at least one derived table
    units = set()
    for f in files:
        for field in pq.read_schema(f):
            if pa.types.is_timestamp(field.type):
                units.add((field.type.unit, field.type.tz))
            assert not pa.types.is_date64(field.type)
    assert units == {("us", "UTC")}, units
    with psycopg.connect(s.pg_dsn) as c:
        (typ,) = c.execute("SELECT pg_typeof(first_seen)::text FROM traveler_summary LIMIT 1").fetchone()
    assert typ == "timestamp with time zone"
