"""The window job and the backfill against a real DuckLake (local file catalog, no servers)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from lake.catalog import connect
from lake.reader import read_movements, read_window_stats
from lake.schema import DERIVED_TABLES, MOVEMENTS_SCHEMA, WINDOW_STATS_SCHEMA
from sensorlake.errors import InputError
from sensorlake.settings import Settings
from tests.lakes import insert_events
from transforms import (
    WindowGrid,
    build_visits_segments,
    compute_windows_duckdb,
    compute_windows_polars,
    read_bounds,
    run_transform,
)

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
FLOATS = ("mean_speed_fps", "p85_speed_fps", "mean_speed_mph", "p85_speed_mph", "speed_sum_fps",
          "speed_min_fps", "speed_max_fps", "mode_share", "dwell_s")


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
    insert_events(settings, pa.Table.from_pydict(cols, schema=MOVEMENTS_SCHEMA))


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


def every_table(settings: Settings) -> dict[str, list[dict]]:
    """Every derived table, all rows, in a canonical order."""
    con = connect(settings, read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM lake.{t} ORDER BY ALL").to_arrow_table().to_pylist()
                for t in DERIVED_TABLES}
    finally:
        con.close()


def assert_same_tables(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> None:
    """Same rows in every table; floats equal to 1e-9 relative (the engines add in other orders)."""
    assert a.keys() == b.keys()
    for table in a:
        assert len(a[table]) == len(b[table]), table
        for ra, rb in zip(a[table], b[table], strict=True):
            for k, va in ra.items():
                vb = rb[k]
                if isinstance(va, float) and isinstance(vb, float):
                    assert math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-9), (table, k, ra, rb)
                else:
                    assert va == vb, (table, k, ra, rb)


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
    run_transform(settings, T0, at(60), engine="duckdb", jobs=["windows"])
    from_duckdb = lake_stats(settings, T0, at(60))
    run_transform(settings, T0, at(60), engine="polars", jobs=["windows"])
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
    all_1 = every_table(settings)
    second = run_transform(settings, T0, at(60), engine=engine)
    table_2 = lake_stats(settings, T0, at(60))

    assert snapshot_count(settings) == before + 2  # each run commits exactly one snapshot
    assert first.written("window_stats") > table_1.num_rows > 0  # 1-, 5- and 15-minute windows
    assert first.windows == 60 + 12 + 4
    assert second.rows_deleted == second.rows_written
    assert {t.table: t.rows_written for t in first.tables} == {t.table: t.rows_written for t in second.tables}
    assert table_1.equals(table_2)  # bit-identical rows, same count
    assert every_table(settings) == all_1  # every derived table, bit-identical
    assert lake_stats(settings, at(60), at(120)).equals(neighbour)  # other range untouched
    assert other.written("window_stats") >= neighbour.num_rows
    con = connect(settings, read_only=True)
    try:
        total = con.execute("SELECT count(*) FROM lake.window_stats WHERE window_s = 900").fetchone()[0]
    finally:
        con.close()
    assert total == table_2.num_rows + neighbour.num_rows


def test_unaligned_start_replaces_the_floored_windows(settings: Settings) -> None:
    insert(settings, [(1, "a", "car", at(3), 0.0, 0.0), (1, "a", "car", at(3) + timedelta(seconds=10), 100.0, 0.0)])
    r1 = run_transform(settings, at(7), at(30), windows_s=[900])  # windows 14:00 and 14:15
    r2 = run_transform(settings, at(7), at(30), windows_s=[900])
    assert r1.range_start == at(7) and r1.windows == 2
    assert r2.written("window_stats") == r1.written("window_stats") == 2
    assert r2.rows_deleted == r1.rows_written
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
        run_transform(settings, T0, at(15), engine=engine, jobs=["windows"])
        [row] = lake_stats(settings, T0, at(15)).to_pylist()
        assert (row["volume"], row["speed_samples"], row["mean_speed_fps"], row["p85_speed_fps"]) == (1, 1, 10.0, 10.0)


def test_visit_crossing_the_range_start_is_reconstructed(settings: Settings) -> None:
    # 13:59:30 (0,0) -> 14:00:10 (400,0): 400 ft in 40 s = 10 ft/s, segment ends in 14:00-14:15
    insert(settings, [(1, "x", "bus", T0 - timedelta(seconds=30), 0.0, 0.0),
                      (1, "x", "bus", T0 + timedelta(seconds=10), 400.0, 0.0)])
    res = run_transform(settings, T0, at(15), windows_s=[900])
    assert res.read_start == T0 - timedelta(seconds=settings.visit_gap_s)
    assert res.events_read == 2 and res.visits == 1
    [row] = lake_stats(settings, T0, at(15)).to_pylist()
    assert (row["volume"], row["mean_speed_fps"]) == (1, 10.0)


def test_naive_datetimes_are_utc(settings: Settings) -> None:
    insert(settings, [(1, "a", "car", at(1), 0.0, 0.0), (1, "a", "car", at(1) + timedelta(seconds=4), 20.0, 0.0)])
    res = run_transform(settings, datetime(2026, 11, 30, 14, 0), datetime(2026, 11, 30, 14, 15))
    assert res.range_start == T0 and res.range_end == at(15)
    assert res.range_start.tzinfo is not None
    assert lake_stats(settings, T0, at(15)).column("mean_speed_fps").to_pylist() == [5.0]


@pytest.mark.parametrize(
    ("start", "end", "engine", "message"),
    [
        (at(60), at(0), "duckdb", "start must be before end"),
        (at(0), at(0), "duckdb", "start must be before end"),
        ("2026-11-30T14:00", at(15), "duckdb", "must be datetimes"),
        (at(0), at(15), "spark", "unknown engine"),
        (at(0), at(15), "duckdb/job=speeds", "unknown job"),
        (at(0), at(15), "duckdb/step=420", "does not divide"),
    ],
)
def test_bad_arguments_raise_input_error(settings: Settings, start, end, engine, message) -> None:
    kwargs = {}
    if "/" in engine:
        engine, opt = engine.split("/")
        name, value = opt.split("=")
        kwargs = {"jobs": [value]} if name == "job" else {"step_s": int(value)}
    with pytest.raises(InputError, match=message) as info:
        run_transform(settings, start, end, engine=engine, **kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- every output table
def test_every_derived_table_is_the_same_with_duckdb_and_polars(settings: Settings) -> None:
    insert(settings, synthetic(seed=5, travelers=90))
    for step_s in (900, 300):
        run_transform(settings, T0, at(120), engine="duckdb", step_s=step_s)
        by_duckdb = every_table(settings)
        run_transform(settings, T0, at(120), engine="polars", step_s=step_s)
        by_polars = every_table(settings)
        for table, rows in by_duckdb.items():
            assert rows, f"lake.{table} is empty"
        assert_same_tables(by_duckdb, by_polars)
    assert {r["window_s"] for r in by_duckdb["window_stats"]} == {60, 300, 900}
    assert {r["window_s"] for r in by_duckdb["speed_bins"]} == {60, 300, 900, 3600, 86400}
    assert {r["period_s"] for r in by_duckdb["rollup_stats"]} == {3600, 86400}
    assert {r["step_s"] for r in by_duckdb["window_stats"]} == {60, 300}


def test_rollups_and_peak_hour_are_merged_from_the_stored_15_minute_rows(settings: Settings) -> None:
    insert(settings, synthetic(seed=9, travelers=90))
    run_transform(settings, T0, at(120))
    tables = every_table(settings)
    quarters = [r for r in tables["window_stats"] if r["window_s"] == 900]
    for h in [r for r in tables["rollup_stats"] if r["period_s"] == 3600]:
        parts = [q for q in quarters if q["sensor_id"] == h["sensor_id"] and q["traveler_type"] == h["traveler_type"]
                 and h["period_start"] <= q["window_start"] < h["period_end"]]
        assert h["windows"] == len(parts) == 4
        assert h["volume"] == sum(q["volume"] for q in parts)
        assert h["speed_samples"] == sum(q["speed_samples"] for q in parts)
        speeds = [q for q in parts if q["speed_samples"]]
        if speeds:
            assert h["speed_min_fps"] == min(q["speed_min_fps"] for q in speeds)
            assert h["speed_max_fps"] == max(q["speed_max_fps"] for q in speeds)
            assert h["mean_speed_fps"] == pytest.approx(
                sum(q["speed_sum_fps"] for q in speeds) / h["speed_samples"], rel=1e-12)
    # the day's peak hour of "all" types: the best four consecutive quarters of the sensor
    for p in [r for r in tables["peak_hour"] if r["traveler_type"] == "all"]:
        per_q: dict[datetime, int] = {}
        for q in quarters:
            if q["sensor_id"] == p["sensor_id"]:
                per_q[q["window_start"]] = per_q.get(q["window_start"], 0) + q["volume"]
        hours = {t: sum(per_q.get(t + timedelta(minutes=15 * k), 0) for k in range(4))
                 for t in per_q if t + timedelta(hours=1) <= p["day_start"] + timedelta(days=1)}
        best = max(hours.values())
        assert p["peak_hour_volume"] == best
        assert p["peak_start"] == min(t for t, v in hours.items() if v == best)


def test_a_scheduled_hour_keeps_the_day_consistent(settings: Settings) -> None:
    # a full backfill, then the scheduler's one-hour run (unaligned): the day roll-up, the
    # peak hour and the rest of the tables come out as they were
    insert(settings, synthetic(seed=13, travelers=60))
    run_transform(settings, T0 - timedelta(hours=1), at(180))
    full = every_table(settings)
    res = run_transform(settings, at(47), at(107))
    assert res.range_start == at(47) and res.chunks == 1
    assert every_table(settings) == full


def test_a_whole_day_and_one_hour_of_it_agree_on_the_day_pairs(settings: Settings) -> None:
    # a whole-day run takes the day's (sensor, type) pairs from the events it read, a one-hour
    # run reads them from the lake: a traveler reclassified car -> truck at 14:00 leaves a
    # "car" pair with no visit, which both runs must zero-fill the same way
    rows = synthetic(seed=19, travelers=20)
    rows += [(9, "re", "car", at(k / 10), k * 4.0, 0.0) for k in range(20)]
    rows += [(9, "re", "truck", at(2 + k / 10), 80.0 + k * 4.0, 0.0) for k in range(20)]
    insert(settings, rows)
    day = T0.replace(hour=0)
    run_transform(settings, day, day + timedelta(days=1), windows_s=[900])
    full = every_table(settings)
    cars = [r for r in full["window_stats"] if (r["sensor_id"], r["traveler_type"]) == (9, "car")]
    assert len(cars) == 96 and not any(r["volume"] for r in cars)  # every quarter of the day, zero
    res = run_transform(settings, at(60), at(120), windows_s=[900])
    assert res.chunks == 1
    assert_same_tables(every_table(settings), full)


def test_a_backfill_over_midnight_runs_in_day_chunks(settings: Settings) -> None:
    # a car 23:59:30 -> 00:00:30: counted in the last window of the day and the first of the next
    late = datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)
    insert(settings, [(1, "m", "car", late, 0.0, 0.0), (1, "m", "car", late + timedelta(seconds=60), 600.0, 0.0)])
    start, end = datetime(2026, 11, 30, 23, 0, tzinfo=UTC), datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    res = run_transform(settings, start, end, windows_s=[900])
    assert res.chunks == 2
    rows = {r["window_start"]: r["volume"] for r in lake_stats(settings, start, end).to_pylist()}
    assert rows[datetime(2026, 11, 30, 23, 45, tzinfo=UTC)] == 1
    assert rows[datetime(2026, 12, 1, 0, 0, tzinfo=UTC)] == 1
    assert sum(rows.values()) == 2
    days = [r for r in every_table(settings)["rollup_stats"] if r["period_s"] == 86400]
    assert sorted((r["period_start"].day, r["volume"]) for r in days) == [(30, 1), (1, 1)][::-1] or sorted(
        (r["period_start"].day, r["volume"]) for r in days) == [(1, 1), (30, 1)]


def test_jobs_run_alone_touch_only_their_tables(settings: Settings) -> None:
    insert(settings, synthetic(seed=17, travelers=30))
    res = run_transform(settings, T0, at(60), jobs=["occupancy"])
    assert {t.table for t in res.tables} == {"occupancy_grid"}
    assert res.written("occupancy_grid") > 0 and res.written("window_stats") == 0
    res = run_transform(settings, T0, at(60), jobs=["windows", "peak_hour"], windows_s=[900], step_s=900)
    assert {t.table for t in res.tables} == {"window_stats", "speed_bins", "peak_hour"}


def test_an_old_window_stats_table_gains_the_new_columns(settings: Settings) -> None:
    # a lake created before the traffic measures: window_stats with the first 11 columns only
    con = connect(settings)
    try:
        con.execute("DROP TABLE lake.window_stats")
        con.execute(
            "CREATE TABLE lake.window_stats (sensor_id BIGINT NOT NULL, traveler_type VARCHAR NOT NULL, "
            "window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL, window_s INTEGER NOT NULL, "
            "volume BIGINT NOT NULL, speed_samples BIGINT NOT NULL, mean_speed_fps DOUBLE, p85_speed_fps DOUBLE, "
            "mean_speed_mph DOUBLE, p85_speed_mph DOUBLE)"
        )
    finally:
        con.close()
    insert(settings, [(1, "a", "car", at(3), 0.0, 0.0), (1, "a", "car", at(3) + timedelta(seconds=10), 100.0, 0.0)])
    run_transform(settings, T0, at(15), windows_s=[900])
    [row] = lake_stats(settings, T0, at(15)).to_pylist()
    assert (row["volume"], row["speed_sum_fps"], row["mode_share"], row["step_s"]) == (1, 10.0, 1.0, 900)


# ---------------------------------------------------------------- the CLI
def test_transform_cli_jobs_windows_and_step(settings: Settings) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    insert(settings, synthetic(seed=21, travelers=20))
    env = {**os.environ, **settings.to_env()}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", "transform", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    r = cli("--start", "2026-11-30T14:00", "--end", "2026-11-30T15:00", "--job", "windows", "--window", "900",
            "--window", "300", "--step", "300")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "lake.window_stats: replaced 0 rows with" in r.stdout and "rollup_stats" not in r.stdout
    steps = {(w["window_s"], w["step_s"]) for w in every_table(settings)["window_stats"]}
    assert steps == {(900, 300), (300, 300)}
    again = cli("--start", "2026-11-30T14:00", "--end", "2026-11-30T15:00")
    assert again.returncode == 0, again.stderr
    for table in ("window_stats", "speed_bins", "rollup_stats", "peak_hour", "occupancy_grid"):
        assert f"lake.{table}: replaced" in again.stdout
    for args, message in (
        (["--job", "speeds"], "unknown job"),
        (["--step", "420", "--window", "900"], "does not divide"),
        (["--window", "0"], "--window must be > 0"),
    ):
        bad = cli("--start", "2026-11-30T14:00", "--end", "2026-11-30T15:00", *args)
        assert bad.returncode == 1 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
