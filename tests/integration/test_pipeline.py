"""End to end through the real services: Kafka -> consumers -> Redis, PostgreSQL, lake."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from ingest.consumer import MovementConsumer
from lake.catalog import connect
from sensorlake.events import Event, encode_event
from sensorlake.kinematics import summarize
from tests.conftest import REPO, start_consumers, wait_all
from tests.faults.helpers import (
    assert_summaries_equal,
    dlq_records,
    high_watermarks,
    lake_offsets,
    lake_table,
    pg_states,
    read_topic,
)

pytestmark = pytest.mark.services

PEACHTREE_VISITS = 165  # 162 Vehicle_IDs, 165 visits once the period is in the key (test_readers)


def lake_counts(s) -> tuple[int, int, dict[int, int]]:
    """(rows, distinct (partition, offset), partition -> highest offset + 1) of lake.movements."""
    t = lake_table(s, "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS d FROM lake.movements")
    ends = lake_table(s, "SELECT kafka_partition AS p, max(kafka_offset) + 1 AS o FROM lake.movements GROUP BY 1")
    return (
        t.column("n")[0].as_py(), t.column("d")[0].as_py(),
        dict(zip(ends.column("p").to_pylist(), ends.column("o").to_pylist(), strict=True)),
    )  # fmt: skip


def test_peachtree_through_kafka_with_two_consumers(isolated, data_dir):
    """Every traveler's PostgreSQL summary (every column, the stored average speed included)
    equals the pure functions applied to the file; every produced event is in the lake
    exactly once and ingest_offsets agrees."""
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
    assert len(expected) == PEACHTREE_VISITS
    assert_summaries_equal(pg_states(s), expected)

    n, distinct, ends = lake_counts(s)
    hw = {p: o for p, o in high_watermarks(s).items() if o > 0}
    assert n == distinct == 5000
    assert lake_offsets(s) == hw  # the lake's stored next offsets are the topic's high watermarks
    assert ends == hw


def test_malformed_and_missing_position_go_to_dlq(isolated):
    from ingest.producer import produce_raw

    s = isolated
    good = [Event(3, f"g{i}", "car", 1_700_000_000_000_000 + i * 1_000_000, float(i), 0.0) for i in range(5)]
    malformed = b'{"traveler_id": "x", "position": [1, 2'
    missing_position = json.dumps(
        {"traveler_id": "m1", "traveler_type": "car", "sensor_id": 3, "timestamp": "2024-01-01T00:00:00Z"}
    ).encode()
    items = [(e.key.encode(), encode_event(e)) for e in good[:2]]
    items += [(b"3:bad", malformed), (b"3:m1", missing_position)]
    items += [(e.key.encode(), encode_event(e)) for e in good[2:]]
    produce_raw(s, items)

    stats = MovementConsumer(s).run(until_idle_s=6)
    assert stats.valid == 5 and dict(stats.dlq) == {"malformed_json": 1, "missing_field": 1}

    originals = {(s.topic, m.partition(), m.offset()): (m.key(), m.value()) for m in read_topic(s, s.topic)}
    dlq = dlq_records(s)
    assert sorted(r["reason"] for r in dlq) == ["malformed_json", "missing_field"]
    for rec in dlq:  # the original key and bytes, and an origin that points at them
        assert (rec["key"], rec["value"]) == originals[rec["origin"]]
    assert {r["reason"]: r["value"] for r in dlq} == {"malformed_json": malformed, "missing_field": missing_position}
    n, distinct, _ = lake_counts(s)
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
    from ingest.producer import produce
    from ingest.readers import open_source

    s = isolated
    events = list(open_source(data_dir / "ngsim_peachtree_sample" / "NGSIM.csv"))
    produce(s, events, speedup=None, max_rate=True)
    MovementConsumer(s).run(until_idle_s=6)

    env = {**os.environ, **s.to_env()}

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
    assert sum(r[vol_idx] for r in by_duckdb) >= PEACHTREE_VISITS


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
    n, distinct, _ = lake_counts(s)
    assert n == distinct == 50
