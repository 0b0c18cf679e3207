"""Every traffic measure on a hand-computed fixture, in both engines (no lake, no servers).

Each expected number is worked out by hand in the comments, never copied from the output.
Each test runs the DuckDB and the Polars implementation; tests/integration/test_transforms.py
checks DuckDB == Polars on every output table of a whole backfill.
"""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import lake.schema
import transforms.measures
import transforms.windows
from lake.schema import (
    OCCUPANCY_SCHEMA,
    PEAK_HOUR_SCHEMA,
    ROLLUP_STATS_SCHEMA,
    SPEED_BINS_SCHEMA,
)
from transforms import duckdb_job, polars_job
from transforms.measures import PART_BINS_SCHEMA, PARTS_SCHEMA, parts_from_rollups
from transforms.segments import SEGMENTS_SCHEMA, VISITS_SCHEMA, build_visits_segments
from transforms.windows import WindowGrid

MPH = 3600 / 5280
FPS_PER_MPH = 5280 / 3600
ENGINES = ("duckdb", "polars")
WINDOWS = {"duckdb": duckdb_job.compute_windows_duckdb, "polars": polars_job.compute_windows_polars}
BINS = {"duckdb": duckdb_job.compute_speed_bins_duckdb, "polars": polars_job.compute_speed_bins_polars}
ROLLUP = {"duckdb": duckdb_job.rollup_duckdb, "polars": polars_job.rollup_polars}
PEAK = {"duckdb": duckdb_job.peak_hour_duckdb, "polars": polars_job.peak_hour_polars}
OCCUPANCY = {"duckdb": duckdb_job.occupancy_duckdb, "polars": polars_job.occupancy_polars}


def at(h: int, m: int, s: float = 0) -> datetime:
    return datetime(2026, 11, 30, h, m, tzinfo=UTC) + timedelta(seconds=s)


def one_segment_visits(speeds_fps: list[float], types: list[str], start: datetime, sensor_id: int = 1):
    """One visit per speed, each with one 10-s segment ending at start + 10 s."""
    n = len(speeds_fps)
    visits = pa.Table.from_pydict(
        {
            "sensor_id": [sensor_id] * n,
            "traveler_id": [f"t{i}" for i in range(n)],
            "traveler_type": types,
            "visit_start": [start] * n,
            "visit_end": [start + timedelta(seconds=10)] * n,
            "observations": [2] * n,
        },
        schema=VISITS_SCHEMA,
    )
    segments = pa.Table.from_pydict(
        {
            "sensor_id": [sensor_id] * n,
            "traveler_id": [f"t{i}" for i in range(n)],
            "visit_start": [start] * n,
            "seg_end_ts": [start + timedelta(seconds=10)] * n,
            "distance_ft": [v * 10.0 for v in speeds_fps],
            "duration_s": [10.0] * n,
        },
        schema=SEGMENTS_SCHEMA,
    )
    return visits, segments


def test_doctests_of_the_pure_modules() -> None:
    for mod in (lake.schema, transforms.windows, transforms.measures):
        assert doctest.testmod(mod).failed == 0


# ---------------------------------------------------------------- sliding windows
@pytest.mark.parametrize("engine", ENGINES)
def test_sliding_windows_of_1_5_and_15_minutes(engine: str) -> None:
    # one car 14:58-15:03 (gap 600 s keeps it one visit). A window [ws, ws + len) counts it
    # when 14:58 < ws + len and 15:03 >= ws.
    ev = pa.table({
        "sensor_id": [7, 7], "traveler_id": ["c1", "c1"], "traveler_type": ["car", "car"],
        "ts": [at(14, 58), at(15, 3)], "x_ft": [0.0, 120.0], "y_ft": [0.0, 0.0],
    })  # fmt: skip
    data = build_visits_segments(ev, min_segment_s=0.5, visit_gap_s=600)

    def counted(window_s: int, step_s: int) -> list[datetime]:
        grid = WindowGrid.build(at(14, 30), at(15, 30), window_s=window_s, step_s=step_s)
        rows = WINDOWS[engine](data, grid).to_pylist()
        assert len(rows) == len(grid.starts)  # every window has a row, empty ones with volume 0
        assert {r["step_s"] for r in rows} == {step_s}
        return [r["window_start"] for r in rows if r["volume"] == 1]

    # 15-minute tumbling: 14:45-15:00 and 15:00-15:15
    assert counted(900, 900) == [at(14, 45), at(15, 0)]
    # 15-minute windows every 5 minutes: 14:45, 14:50, 14:55, 15:00 (14:40-14:55 ends before 14:58)
    assert counted(900, 300) == [at(14, 45), at(14, 50), at(14, 55), at(15, 0)]
    # 5-minute tumbling: 14:55-15:00 and 15:00-15:05
    assert counted(300, 300) == [at(14, 55), at(15, 0)]
    # 1-minute: 14:58, 14:59, 15:00, 15:01, 15:02, and 15:03 (the visit's last instant)
    assert counted(60, 60) == [at(14, 58), at(14, 59), at(15, 0), at(15, 1), at(15, 2), at(15, 3)]


# ---------------------------------------------------------------- speed bins, mode split
@pytest.mark.parametrize("engine", ENGINES)
def test_speed_bins_of_5_mph(engine: str) -> None:
    # per-visit speeds 2.5, 7.5, 7.5, 31 mph -> bins [0, 5): 1, [5, 10): 2, [30, 35): 1
    speeds = [m * FPS_PER_MPH for m in (2.5, 7.5, 7.5, 31.0)]
    data = one_segment_visits(speeds, ["car"] * 4, at(14, 1))
    grid = WindowGrid.build(at(14, 0), at(14, 15), window_s=900, step_s=900)
    out = BINS[engine](data, grid)
    assert out.schema == SPEED_BINS_SCHEMA
    assert [(r["bin_mph"], r["visits"]) for r in out.to_pylist()] == [(0, 1), (5, 2), (30, 1)]
    assert {(r["window_start"], r["window_end"], r["window_s"]) for r in out.to_pylist()} == {
        (at(14, 0), at(14, 15), 900)}


@pytest.mark.parametrize("engine", ENGINES)
def test_mode_split(engine: str) -> None:
    # 3 cars and 1 bicycle in 14:00-14:15: car 3/4, bicycle 1/4; 14:15-14:30 is empty: NULL
    data = one_segment_visits([30.0, 30.0, 30.0, 15.0], ["car", "car", "car", "bicycle"], at(14, 1))
    grid = WindowGrid.build(at(14, 0), at(14, 30), window_s=900, step_s=900)
    rows = {(r["traveler_type"], r["window_start"]): r for r in WINDOWS[engine](data, grid).to_pylist()}
    assert rows[("car", at(14, 0))]["mode_share"] == 0.75
    assert rows[("bicycle", at(14, 0))]["mode_share"] == 0.25
    assert rows[("car", at(14, 15))]["mode_share"] is None
    assert rows[("car", at(14, 15))]["volume"] == 0


# ---------------------------------------------------------------- dwell
@pytest.mark.parametrize("engine", ENGINES)
def test_dwell_is_time_below_half_a_mph(engine: str) -> None:
    # one visit with four 10-s segments: 0 ft/s, 20 ft/s, 0.5 ft/s (0.34 mph), 0.8 ft/s (0.545 mph)
    # -> dwell = 10 + 10 = 20 s (0.8 ft/s is above 0.5 mph); a second visit never stops
    start = at(14, 1)
    xs = [0.0, 0.0, 200.0, 205.0, 213.0]
    ev = pa.table({
        "sensor_id": [1] * 7, "traveler_id": ["a"] * 5 + ["b"] * 2, "traveler_type": ["car"] * 7,
        "ts": [start + timedelta(seconds=10 * k) for k in range(5)] + [start, start + timedelta(seconds=10)],
        "x_ft": xs + [0.0, 300.0], "y_ft": [0.0] * 7,
    })  # fmt: skip
    data = build_visits_segments(ev, min_segment_s=0.5, visit_gap_s=60)
    grid = WindowGrid.build(at(14, 0), at(14, 15), window_s=900, step_s=900)
    [r] = WINDOWS[engine](data, grid).to_pylist()
    assert r["dwell_s"] == 20.0 and r["dwell_visits"] == 1
    # speeds: a = 213 ft / 40 s = 5.325 ft/s, b = 30 ft/s; min, max and sum are stored for roll-ups
    assert (r["speed_min_fps"], r["speed_max_fps"]) == (5.325, 30.0)
    assert r["speed_sum_fps"] == pytest.approx(35.325, abs=1e-12)
    assert r["mean_speed_fps"] == pytest.approx(35.325 / 2, abs=1e-12)


# ---------------------------------------------------------------- roll-ups
def parts(rows: list[tuple]) -> pa.Table:
    names = PARTS_SCHEMA.names
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=PARTS_SCHEMA)


def part_bins(rows: list[tuple]) -> pa.Table:
    names = PART_BINS_SCHEMA.names
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], schema=PART_BINS_SCHEMA)


@pytest.mark.parametrize("engine", ENGINES)
def test_rollup_15min_to_hour_to_day(engine: str) -> None:
    # quarter 14:00: volume 2, speeds 10 and 20 ft/s (bins 5 and 10 mph), 5 s of dwell;
    # quarter 14:15: volume 3, one speed 65 ft/s (44.3 mph, bin 40)
    p = parts([
        (1, "car", at(14, 0), 1, 2, 2, 30.0, 10.0, 20.0, 5.0, 1),
        (1, "car", at(14, 15), 1, 3, 1, 65.0, 65.0, 65.0, 0.0, 0),
        (1, "bus", at(14, 0), 1, 5, 0, None, None, None, 0.0, 0),
    ])  # fmt: skip
    b = part_bins([(1, "car", at(14, 0), 5, 1), (1, "car", at(14, 0), 10, 1), (1, "car", at(14, 15), 40, 1)])
    hours, hour_bins = ROLLUP[engine](p, b, 3600)
    assert hours.schema == ROLLUP_STATS_SCHEMA
    h = {r["traveler_type"]: r for r in hours.to_pylist()}
    car = h["car"]
    assert (car["period_start"], car["period_end"], car["period_s"]) == (at(14, 0), at(15, 0), 3600)
    assert (car["windows"], car["volume"], car["speed_samples"]) == (2, 5, 3)
    assert (car["speed_sum_fps"], car["speed_min_fps"], car["speed_max_fps"]) == (95.0, 10.0, 65.0)
    assert car["mean_speed_fps"] == pytest.approx(95 / 3, abs=1e-12)
    assert (car["dwell_s"], car["dwell_visits"]) == (5.0, 1)
    # binned p85: n = 3, rank 2.55; cumulative 1 (bin 5), 2 (bin 10), 3 (bin 40) -> bin 40:
    # 40 + 5 * (2.55 - 2) / 1 = 42.75 mph (inside [min, max] = [6.8, 44.3] mph)
    assert car["p85_speed_mph_binned"] == pytest.approx(42.75, abs=1e-12)
    # mode split of the hour: car 5 / 10, bus 5 / 10; the bus has no speeds
    assert car["mode_share"] == 0.5 and h["bus"]["mode_share"] == 0.5
    assert h["bus"]["mean_speed_fps"] is None and h["bus"]["p85_speed_mph_binned"] is None
    assert h["bus"]["speed_sum_fps"] is None
    assert [(r["bin_mph"], r["visits"], r["window_s"]) for r in hour_bins.to_pylist()] == [
        (5, 1, 3600), (10, 1, 3600), (40, 1, 3600)]

    # day from the stored hours: the same numbers, one period of 86400 s
    days, day_bins = ROLLUP[engine](parts_from_rollups(hours), part_bins(
        [(r["sensor_id"], r["traveler_type"], r["window_start"], r["bin_mph"], r["visits"])
         for r in hour_bins.to_pylist()]), 86400)  # fmt: skip
    d = {r["traveler_type"]: r for r in days.to_pylist()}["car"]
    assert (d["period_start"], d["period_end"], d["windows"], d["volume"]) == (at(0, 0), at(0, 0) + timedelta(days=1), 2, 5)
    assert d["p85_speed_mph_binned"] == pytest.approx(42.75, abs=1e-12)
    assert {r["window_s"] for r in day_bins.to_pylist()} == {86400}


@pytest.mark.parametrize("engine", ENGINES)
def test_binned_p85_is_clamped_to_the_observed_range(engine: str) -> None:
    # ten speeds of 21 mph in bin 20: rank 8.5 -> 20 + 5 * 8.5 / 10 = 24.25, above the max (21)
    v = 21 * FPS_PER_MPH
    p = parts([(1, "car", at(14, 0), 1, 10, 10, 10 * v, v, v, 0.0, 0)])
    b = part_bins([(1, "car", at(14, 0), 20, 10)])
    [r] = ROLLUP[engine](p, b, 3600)[0].to_pylist()
    assert r["p85_speed_mph_binned"] == pytest.approx(21.0, abs=1e-9)


# ---------------------------------------------------------------- peak hour factor
def quarters(rows: list[tuple]) -> pa.Table:
    return pa.table({
        "sensor_id": pa.array([r[0] for r in rows], pa.int64()),
        "traveler_type": [r[1] for r in rows],
        "window_start": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "volume": pa.array([r[3] for r in rows], pa.int64()),
    })  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_peak_hour_factor(engine: str) -> None:
    # cars 13:45..15:00: 90, 100, 120, 150, 130, 50. Hours: 13:45 -> 460, 14:00 -> 500,
    # 14:15 -> 450. Peak 14:00-15:00, 500 / (4 x 150) = 0.833
    cars = [90, 100, 120, 150, 130, 50]
    bikes = [0, 10, 0, 0, 0, 0]
    starts = [at(13, 45) + timedelta(minutes=15 * k) for k in range(6)]
    q = quarters([(3, "car", t, v) for t, v in zip(starts, cars, strict=True)]
                 + [(3, "bicycle", t, v) for t, v in zip(starts, bikes, strict=True)])
    out = PEAK[engine](q)
    assert out.schema == PEAK_HOUR_SCHEMA
    rows = {r["traveler_type"]: r for r in out.to_pylist()}
    car = rows["car"]
    assert (car["peak_start"], car["peak_end"], car["day_start"]) == (at(14, 0), at(15, 0), at(0, 0))
    assert (car["peak_hour_volume"], car["max_15min_volume"]) == (500, 150)
    assert car["phf"] == pytest.approx(500 / 600) and round(car["phf"], 3) == 0.833
    # all types: 90, 110, 120, 150, 130, 50 -> 14:00 hour 510, PHF 510 / 600 = 0.85
    assert (rows["all"]["peak_start"], rows["all"]["peak_hour_volume"]) == (at(14, 0), 510)
    assert rows["all"]["phf"] == pytest.approx(0.85)
    # bicycles: 13:45 and 14:00 both give 10 -> the earliest; PHF 10 / (4 x 10) = 0.25
    assert (rows["bicycle"]["peak_start"], rows["bicycle"]["phf"]) == (at(13, 45), 0.25)


@pytest.mark.parametrize("engine", ENGINES)
def test_peak_hour_stays_inside_the_day_and_empty_days_have_no_factor(engine: str) -> None:
    # 23:00 is the last start of a peak hour; 23:15..23:45 are busier but cross midnight
    day = datetime(2026, 11, 30, tzinfo=UTC)
    q = quarters([(1, "car", day + timedelta(hours=23, minutes=15 * k), v) for k, v in enumerate([1, 9, 9, 9])]
                 + [(2, "car", day + timedelta(hours=8), 0)])
    rows = {r["sensor_id"]: r for r in PEAK[engine](q).to_pylist() if r["traveler_type"] == "car"}
    assert (rows[1]["peak_start"], rows[1]["peak_hour_volume"], rows[1]["max_15min_volume"]) == (
        day + timedelta(hours=23), 28, 9)
    assert rows[2]["peak_hour_volume"] == 0 and rows[2]["phf"] is None


# ---------------------------------------------------------------- occupancy
@pytest.mark.parametrize("engine", ENGINES)
def test_occupancy_grid_of_5_ft(engine: str) -> None:
    # visit 1 of "t": t=0 (2,2) cell (0,0); t=1 (-0.1,3) cell (-5,0); t=3 (7,2) cell (5,0);
    # t=3 again at (9,9): same ts, arrived later -> dropped; t=5 (8,2) cell (5,0), typed truck
    # (the visit's last type wins). Visit 2: t=100 (1,1), 95 s later (> 60 s gap), a car.
    # Time to the next observation: 1, 2, 2, 0 (gap) and 0 (last).
    t0 = at(14, 10)
    ev = pa.table({
        "sensor_id": [4] * 6, "traveler_id": ["t"] * 6,
        "traveler_type": ["car", "car", "car", "car", "truck", "car"],
        "ts": [t0 + timedelta(seconds=s) for s in (0, 1, 3, 3, 5, 100)],
        "x_ft": [2.0, -0.1, 7.0, 9.0, 8.0, 1.0], "y_ft": [2.0, 3.0, 2.0, 9.0, 2.0, 1.0],
        "kafka_partition": pa.array([0] * 6, pa.int32()), "kafka_offset": pa.array(range(6), pa.int64()),
    })  # fmt: skip
    out = OCCUPANCY[engine](ev, at(14, 0), at(15, 0), visit_gap_s=60)
    assert out.schema == OCCUPANCY_SCHEMA
    got = [(r["traveler_type"], r["cell_x_ft"], r["cell_y_ft"], r["occupancy_s"], r["observations"], r["travelers"])
           for r in out.to_pylist()]
    assert got == [
        ("car", 0.0, 0.0, 0.0, 1, 1),      # visit 2
        ("truck", -5.0, 0.0, 2.0, 1, 1),
        ("truck", 0.0, 0.0, 1.0, 1, 1),
        ("truck", 5.0, 0.0, 2.0, 2, 1),
    ]
    assert {r["hour_start"] for r in out.to_pylist()} == {at(14, 0)}
    # an hour range that excludes the observations gives no rows
    assert OCCUPANCY[engine](ev, at(15, 0), at(16, 0), visit_gap_s=60).num_rows == 0


# ---------------------------------------------------------------- exact speeds for late events
@pytest.mark.parametrize("engine", ENGINES)
def test_a_late_event_makes_the_live_summary_wrong_and_the_lake_right(engine: str) -> None:
    # arrival order: (0, 0) at t=0, (200, 0) at t=20, then the late (100, 100) at t=10.
    # Live (arrival order) the late event can only be counted: 200 ft / 20 s = 10 ft/s.
    # By event time the path is (0,0) -> (100,100) -> (200,0): 2 x 141.42 ft in 20 s = 14.142 ft/s.
    from sensorlake.events import Event, ts_to_us
    from sensorlake.kinematics import summarize

    t = [at(14, 2, s) for s in (0, 20, 10)]
    xy = [(0.0, 0.0), (200.0, 0.0), (100.0, 100.0)]
    arrivals = [Event(1, "c", "car", ts_to_us(ts), x, y) for ts, (x, y) in zip(t, xy, strict=True)]
    [live] = summarize(arrivals, min_segment_s=0.5, visit_gap_s=60).values()
    assert live.late_count == 1 and live.avg_speed_fps == 10.0

    ev = pa.table({
        "sensor_id": [1] * 3, "traveler_id": ["c"] * 3, "traveler_type": ["car"] * 3, "ts": t,
        "x_ft": [p[0] for p in xy], "y_ft": [p[1] for p in xy],
        "kafka_partition": pa.array([0] * 3, pa.int32()), "kafka_offset": pa.array([0, 1, 2], pa.int64()),
    })  # fmt: skip
    data = build_visits_segments(ev, min_segment_s=0.5, visit_gap_s=60)
    grid = WindowGrid.build(at(14, 0), at(14, 15), window_s=900, step_s=900)
    [r] = WINDOWS[engine](data, grid).to_pylist()
    assert r["mean_speed_fps"] == pytest.approx(2 * 100 * 2**0.5 / 20, abs=1e-12)  # 14.142
    assert (r["speed_min_fps"], r["speed_max_fps"]) == pytest.approx((14.142135623730951,) * 2)
