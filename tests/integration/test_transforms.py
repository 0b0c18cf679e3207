"""The window job and the backfill against a real DuckLake (local file catalog, no servers)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from lake.catalog import connect
from lake.reader import read_movements, read_window_stats
from lake.schema import MOVEMENTS_SCHEMA, WINDOW_STATS_SCHEMA
from sensorlake.errors import InputError
from sensorlake.settings import Settings
from transforms import (
    WindowGrid,
    build_visits_segments,
    compute_windows_duckdb,
    compute_windows_polars,
    read_bounds,
    run_transform,
)

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
FLOATS = ("mean_speed_fps", "p85_speed_fps", "mean_speed_mph", "p85_speed_mph")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env(env={}, catalog=str(tmp_path / "catalog.ducklake"), state_dir=tmp_path)


_offset = iter(range(10**9))


def insert(settings: Settings, rows: list[tuple]) -> None:
    """Insert (sensor_id, traveler_id, traveler_type, ts, x_ft, y_ft) rows in one lake transaction."""
    cols = {f.name: [] for f in MOVEMENTS_SCHEMA}
    for sid, tid, typ, ts, x, y in rows:
        for name, v in zip(("sensor_id", "traveler_id", "traveler_type", "ts", "x_ft", "y_ft"),
                           (sid, tid, typ, ts, x, y), strict=True):
            cols[name].append(v)
        cols["kafka_partition"].append(0)
        cols["kafka_offset"].append(next(_offset))
    table = pa.Table.from_pydict(cols, schema=MOVEMENTS_SCHEMA)
    con = connect(settings)
    try:
        con.register("new_events", table)
        con.execute("INSERT INTO lake.movements SELECT * FROM new_events")
    finally:
        con.close()


def synthetic(seed: int = 7, travelers: int = 120) -> list[tuple]:
    """Travelers at ~10 Hz with position noise over 14:00-15:00 +- 3 min, three sensors,
    four types, some visits crossing the range edges, duplicates and zero-time moves."""
    rng = np.random.default_rng(seed)
    types = ["car", "bicycle", "pedestrian", "bus"]
    rows: list[tuple] = []
    for i in range(travelers):
        sid, typ = int(rng.integers(1, 4)), types[i % len(types)]
        start_s = float(rng.uniform(-180, 3600 + 120))
        speed_fps = float(rng.uniform(2, 70))
        n = int(rng.integers(1, 300))
        t_s = start_s + np.cumsum(rng.uniform(0.05, 0.15, n))
        for k, ts_s in enumerate(t_s):
            ts = T0 + timedelta(microseconds=int(ts_s * 1e6))
            rows.append((sid, f"t{i}", typ, ts, speed_fps * (ts_s - start_s) + rng.normal(0, 0.4), rng.normal(0, 0.4)))
            if k % 97 == 5:  # exact duplicate
                rows.append(rows[-1])
            if k % 131 == 7:  # same timestamp, other position: rejected live, ignored here
                rows.append((*rows[-1][:4], rows[-1][4] + 3.0, rows[-1][5]))
        if i % 10 == 0:  # a second visit of the same traveler after a long gap
            ts = T0 + timedelta(seconds=start_s + float(t_s[-1] - start_s) + 400)
            rows += [(sid, f"t{i}", typ, ts, 0.0, 0.0), (sid, f"t{i}", typ, ts + timedelta(seconds=3), 30.0, 40.0)]
    return rows


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema == WINDOW_STATS_SCHEMA
    assert a.num_rows == b.num_rows
    for ra, rb in zip(a.to_pylist(), b.to_pylist(), strict=True):
        for k in WINDOW_STATS_SCHEMA.names:
            if k in FLOATS and ra[k] is not None and rb[k] is not None:
                assert math.isclose(ra[k], rb[k], rel_tol=1e-9, abs_tol=1e-9), (k, ra, rb)
            else:
                assert ra[k] == rb[k], (k, ra, rb)


def lake_stats(settings: Settings, start: datetime, end: datetime) -> pa.Table:
    con = connect(settings, read_only=True)
    try:
        return read_window_stats(con, start, end, window_s=settings.window_s)
    finally:
        con.close()


def snapshot_count(settings: Settings) -> int:
    con = connect(settings, read_only=True)
    try:
        return con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------- engines agree
def test_duckdb_and_polars_give_identical_rows(settings: Settings) -> None:
    rows = synthetic()
    insert(settings, rows[::2])
    insert(settings, rows[1::2])  # two files, interleaved: order in the lake is not time order
    lo, hi = read_bounds(T0, at(60), window_s=900, step_s=900, visit_gap_s=settings.visit_gap_s)
    con = connect(settings, read_only=True)
    try:
        events = read_movements(con, lo, hi)
    finally:
        con.close()
    data = build_visits_segments(events, min_segment_s=settings.min_segment_s, visit_gap_s=settings.visit_gap_s)
    for window_s, step_s in ((900, 900), (300, 300), (900, 300)):
        grid = WindowGrid.build(T0, at(60), window_s=window_s, step_s=step_s)
        by_duckdb = compute_windows_duckdb(data, grid)
        by_polars = compute_windows_polars(data, grid)
        assert by_duckdb.num_rows > 0
        assert sum(by_duckdb.column("volume").to_pylist()) > 0
        assert 0 in by_duckdb.column("volume").to_pylist()  # some empty windows exist
        assert_same_rows(by_duckdb, by_polars)

    # and through the backfill: each engine's table in the lake is the same
    run_transform(settings, T0, at(60), engine="duckdb")
    from_duckdb = lake_stats(settings, T0, at(60))
    run_transform(settings, T0, at(60), engine="polars")
    from_polars = lake_stats(settings, T0, at(60))
    assert from_duckdb.num_rows == len(grid_rows := from_polars.to_pylist()) > 0
    assert_same_rows(from_duckdb, from_polars)
    assert {r["window_start"] for r in grid_rows} == {at(0), at(15), at(30), at(45)}


# ---------------------------------------------------------------- idempotent backfill
@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_backfill_twice_is_idempotent_and_one_transaction(settings: Settings, engine: str) -> None:
    insert(settings, synthetic(seed=11, travelers=60))
    other = run_transform(settings, at(60), at(120), engine=engine)  # a neighbouring range
    neighbour = lake_stats(settings, at(60), at(120))

    before = snapshot_count(settings)
    first = run_transform(settings, T0, at(60), engine=engine)
    table_1 = lake_stats(settings, T0, at(60))
    second = run_transform(settings, T0, at(60), engine=engine)
    table_2 = lake_stats(settings, T0, at(60))

    assert snapshot_count(settings) == before + 2  # each run commits exactly one snapshot
    assert first.rows_deleted == 0 and first.rows_written == table_1.num_rows > 0
    assert second.rows_deleted == first.rows_written == second.rows_written
    assert table_1.equals(table_2)  # bit-identical rows, same count
    assert lake_stats(settings, at(60), at(120)).equals(neighbour)  # other range untouched
    assert other.rows_written == neighbour.num_rows
    con = connect(settings, read_only=True)
    try:
        total = con.execute("SELECT count(*) FROM lake.window_stats").fetchone()[0]
    finally:
        con.close()
    assert total == table_2.num_rows + neighbour.num_rows


def test_unaligned_start_replaces_the_floored_windows(settings: Settings) -> None:
    insert(settings, [(1, "a", "car", at(3), 0.0, 0.0), (1, "a", "car", at(3) + timedelta(seconds=10), 100.0, 0.0)])
    r1 = run_transform(settings, at(7), at(30))  # windows 14:00 and 14:15
    r2 = run_transform(settings, at(7), at(30))
    assert r1.range_start == T0 and r1.windows == 2
    assert r2.rows_deleted == r1.rows_written == 2
    rows = lake_stats(settings, T0, at(30)).to_pylist()
    assert [(r["window_start"], r["volume"], r["mean_speed_fps"]) for r in rows] == [
        (at(0), 1, 10.0), (at(15), 0, None)]


# ---------------------------------------------------------------- exact answers from the lake
def test_late_event_inserted_last_gives_exact_speeds(settings: Settings) -> None:
    # T5 at t=0 (0,0) and t=20 (200,0) arrive first; t=10 (100,0) arrives last, in another
    # transaction. By event time the segments are 100 ft / 10 s twice: 10 ft/s and 10 ft/s.
    s = T0 + timedelta(minutes=2)
    insert(settings, [(5, "T5", "car", s, 0.0, 0.0), (5, "T5", "car", s + timedelta(seconds=20), 200.0, 0.0)])
    insert(settings, [(5, "T5", "car", s + timedelta(seconds=10), 100.0, 0.0)])
    con = connect(settings, read_only=True)
    try:
        events = read_movements(con, T0, at(15))
    finally:
        con.close()
    data = build_visits_segments(events, min_segment_s=settings.min_segment_s, visit_gap_s=settings.visit_gap_s)
    speeds = [s["distance_ft"] / s["duration_s"] for s in data.segments.to_pylist()]
    assert speeds == [10.0, 10.0]
    assert data.visits.column("observations").to_pylist() == [3]

    for engine in ("duckdb", "polars"):
        run_transform(settings, T0, at(15), engine=engine)
        [row] = lake_stats(settings, T0, at(15)).to_pylist()
        assert (row["volume"], row["speed_samples"], row["mean_speed_fps"], row["p85_speed_fps"]) == (1, 1, 10.0, 10.0)


def test_visit_crossing_the_range_start_is_reconstructed(settings: Settings) -> None:
    # 13:59:30 (0,0) -> 14:00:10 (400,0): 400 ft in 40 s = 10 ft/s, segment ends in 14:00-14:15
    insert(settings, [(1, "x", "bus", T0 - timedelta(seconds=30), 0.0, 0.0),
                      (1, "x", "bus", T0 + timedelta(seconds=10), 400.0, 0.0)])
    res = run_transform(settings, T0, at(15))
    assert res.read_start == T0 - timedelta(seconds=settings.visit_gap_s)
    assert res.events_read == 2 and res.visits == 1
    [row] = lake_stats(settings, T0, at(15)).to_pylist()
    assert (row["volume"], row["mean_speed_fps"]) == (1, 10.0)


def test_naive_datetimes_are_utc(settings: Settings) -> None:
    insert(settings, [(1, "a", "car", at(1), 0.0, 0.0), (1, "a", "car", at(1) + timedelta(seconds=4), 20.0, 0.0)])
    res = run_transform(settings, datetime(2026, 11, 30, 14, 0), datetime(2026, 11, 30, 14, 15))
    assert res.range_start == T0 and res.range_end == at(15)
    assert lake_stats(settings, T0, at(15)).column("mean_speed_fps").to_pylist() == [5.0]


@pytest.mark.parametrize(
    ("start", "end", "engine", "message"),
    [
        (at(60), at(0), "duckdb", "start must be before end"),
        (at(0), at(0), "duckdb", "start must be before end"),
        ("2026-11-30T14:00", at(15), "duckdb", "must be datetimes"),
        (at(0), at(15), "spark", "unknown engine"),
    ],
)
def test_bad_arguments_raise_input_error(settings: Settings, start, end, engine, message) -> None:
    with pytest.raises(InputError, match=message) as info:
        run_transform(settings, start, end, engine=engine)
    assert "\n" not in str(info.value)
