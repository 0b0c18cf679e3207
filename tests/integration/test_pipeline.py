"""End to end through the real services: Kafka -> consumers -> Redis, PostgreSQL, lake."""

from __future__ import annotations

import json
import math

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from ingest.consumer import MovementConsumer
from ingest.pg_sink import row_to_state
from lake.catalog import connect
from sensorlake.events import Event, encode_event
from sensorlake.kinematics import summarize
from tests.conftest import start_consumers, wait_all

pytestmark = pytest.mark.services


def pg_states(s):
    with psycopg.connect(s.pg_dsn) as c:
        rows = c.execute(
            "SELECT sensor_id, traveler_id, first_seen, traveler_type, last_seen, observations, distance_ft,"
            " duration_s, avg_speed_fps, min_speed_fps, max_speed_fps, late_count, duplicate_count,"
            " rejected_count, last_x_ft, last_y_ft, anchor_ts, anchor_x_ft, anchor_y_ft, kafka_partition,"
            " kafka_offset FROM traveler_summary"
        ).fetchall()
    return {(r[0], r[1], st.first_seen_us): st for r in rows for st in [row_to_state(r)]}


def lake_counts(s):
    con = connect(s, read_only=True)
    try:
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM lake.movements"
        ).fetchone()
        offsets = dict(
            con.execute(
                "SELECT kafka_partition, max(next_offset) FROM lake.ingest_offsets"
                " WHERE consumer_group = ? AND topic = ? GROUP BY 1",
                [s.consumer_group, s.topic],
            ).fetchall()
        )
        per_part = dict(con.execute("SELECT kafka_partition, max(kafka_offset) + 1 FROM lake.movements GROUP BY 1").fetchall())
    finally:
        con.close()
    return n, distinct, offsets, per_part


def high_watermarks(s):
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "hw-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(s.topic, p), timeout=10)[1] for p in range(s.topic_partitions)}
    finally:
        c.close()


def test_peachtree_through_kafka_with_two_consumers(isolated, data_dir):
    """Every traveler's PostgreSQL summary equals the pure functions applied to the file;
    every produced event is in the lake exactly once and ingest_offsets agrees."""
    from ingest.producer import produce
    from ingest.readers import open_source

    s = isolated
    events = list(open_source(data_dir / "ngsim_peachtree_sample" / "NGSIM.csv"))
    assert len(events) == 5000
    procs = start_consumers(s, 2, until_idle_s=10)
    stats = produce(s, events, speedup=None, max_rate=True)
    assert stats.count == 5000
    wait_all(procs)

    expected = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
    got = pg_states(s)
    assert len(expected) >= 165
    assert set(got) == set(expected)
    for key, exp in expected.items():
        g = got[key]
        assert (g.observations, g.first_seen_us, g.last_seen_us, g.traveler_type) == (
            exp.observations, exp.first_seen_us, exp.last_seen_us, exp.traveler_type
        ), key
        assert (g.late_count, g.duplicate_count, g.rejected_count) == (exp.late_count, exp.duplicate_count, exp.rejected_count)
        assert math.isclose(g.distance_ft, exp.distance_ft, rel_tol=1e-12, abs_tol=1e-9), key
        assert math.isclose(g.duration_s, exp.duration_s, rel_tol=1e-12, abs_tol=1e-9), key
        assert g.min_speed_fps == pytest.approx(exp.min_speed_fps, rel=1e-12) if exp.min_speed_fps is not None else g.min_speed_fps is None
        assert g.max_speed_fps == pytest.approx(exp.max_speed_fps, rel=1e-12) if exp.max_speed_fps is not None else g.max_speed_fps is None

    n, distinct, offsets, per_part = lake_counts(s)
    hw = {p: o for p, o in high_watermarks(s).items() if o > 0}
    assert n == distinct == 5000
    assert offsets == hw  # the lake's stored next offsets are the topic's high watermarks
    assert per_part == hw


def test_malformed_and_missing_position_go_to_dlq(isolated):
    from ingest.producer import produce_raw

    s = isolated
    good = [Event(3, f"g{i}", "car", 1_700_000_000_000_000 + i * 1_000_000, float(i), 0.0) for i in range(5)]
    missing_position = json.dumps(
        {"traveler_id": "m1", "traveler_type": "car", "sensor_id": 3, "timestamp": "2024-01-01T00:00:00Z"}
    ).encode()
    items = [(e.key.encode(), encode_event(e)) for e in good[:2]]
    items += [(b"3:bad", b'{"traveler_id": "x", "position": [1, 2'), (b"3:m1", missing_position)]
    items += [(e.key.encode(), encode_event(e)) for e in good[2:]]
    produce_raw(s, items)

    stats = MovementConsumer(s).run(until_idle_s=6)
    assert stats.valid == 5 and sum(stats.dlq.values()) == 2

    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "dlq-check", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(s.dlq_topic, 0, 0)])
    msgs = c.consume(10, timeout=10)
    c.close()
    assert len(msgs) == 2
    by_reason = {dict(m.headers())["sl-reason"].decode(): m for m in msgs}
    assert set(by_reason) == {"malformed_json", "missing_field"}
    assert by_reason["missing_field"].value() == missing_position  # original bytes kept
    h = dict(by_reason["malformed_json"].headers())
    assert h["sl-origin-topic"].decode() == s.topic
    assert int(h["sl-origin-offset"]) >= 0
    n, distinct, _, _ = lake_counts(s)
    assert n == distinct == 5


def _window_stats(s):
    con = connect(s, read_only=True)
    try:
        return con.execute("SELECT * FROM lake.window_stats WHERE window_s = 900 ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_transform_cli_duckdb_equals_polars_on_the_streamed_lake(isolated, data_dir):
    """The same lake, filled through Kafka, backfilled by each engine through the CLI:
    identical window_stats, and a re-run changes nothing."""
    import subprocess
    import sys

    from ingest.producer import produce
    from ingest.readers import open_source
    from tests.conftest import REPO

    s = isolated
    events = list(open_source(data_dir / "ngsim_peachtree_sample" / "NGSIM.csv"))
    produce(s, events, speedup=None, max_rate=True)
    MovementConsumer(s).run(until_idle_s=6)

    env = {**__import__("os").environ, **s.to_env()}

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r

    rng = ["transform", "--start", "2006-11-08T17:30:00Z", "--end", "2006-11-08T21:30:00Z"]
    cli(*rng, "--engine", "duckdb")
    by_duckdb = _window_stats(s)
    cli(*rng, "--engine", "polars")
    by_polars = _window_stats(s)
    cli(*rng, "--engine", "duckdb")
    again = _window_stats(s)
    assert len(by_duckdb) == 16 * 2  # 16 windows x (car, truck), zero-filled
    assert by_duckdb == again  # the same engine re-run: bit-identical
    # across engines: keys and counts exact; floats equal to 1e-12 relative (the engines
    # interpolate quantiles with algebraically equal formulas that round differently)
    assert len(by_polars) == len(by_duckdb)
    for a, b in zip(by_polars, by_duckdb, strict=True):
        assert a[:7] == b[:7]
        for x, y in zip(a[7:], b[7:], strict=True):
            assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-12)
    # the volumes add up to at least one count per traveler visit (a visit crossing a
    # window edge counts in both windows)
    vol_idx = 5
    assert sum(r[vol_idx] for r in by_duckdb) >= 165


def test_a_second_consumer_group_does_not_duplicate_the_lake(isolated):
    """The lake's offsets belong to the topic: a consumer of another group resumes where
    the lake is, instead of writing every event again."""
    from dataclasses import replace

    from ingest.producer import produce

    s = isolated
    events = [Event(4, f"v{i % 7}", "car", 1_700_000_000_000_000 + i * 1_000_000, float(i), 0.0) for i in range(50)]
    produce(s, events, speedup=None, max_rate=True)
    MovementConsumer(s).run(until_idle_s=5)
    MovementConsumer(replace(s, consumer_group=s.consumer_group + "-other")).run(until_idle_s=5)
    n, distinct, _, _ = lake_counts(s)
    assert n == distinct == 50
