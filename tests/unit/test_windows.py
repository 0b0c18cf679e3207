"""Window maths and the two window engines on hand-computed fixtures (no lake, no servers).

Every expected number below is worked out by hand in the comments; none is copied from
the code's output.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.schema import WINDOW_STATS_SCHEMA
from transforms.duckdb_job import compute_windows_duckdb
from transforms.polars_job import compute_windows_polars
from transforms.segments import SEGMENTS_SCHEMA, VISITS_SCHEMA, build_visits_segments
from transforms.windows import (
    WindowGrid,
    as_utc,
    floor_to_step,
    quantile_linear,
    read_bounds,
    window_starts,
)

ENGINES = {"duckdb": compute_windows_duckdb, "polars": compute_windows_polars}
MPH = 3600 / 5280


def at(h: int, m: int, s: float = 0) -> datetime:
    return datetime(2026, 11, 30, h, m, tzinfo=UTC) + timedelta(seconds=s)


def events(rows: list[tuple]) -> pa.Table:
    """rows: (sensor_id, traveler_id, traveler_type, ts, x_ft, y_ft)."""
    names = ["sensor_id", "traveler_id", "traveler_type", "ts", "x_ft", "y_ft"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def run(engine: str, rows: list[tuple], start: datetime, end: datetime, *, gap_s: float = 60,
        window_s: int = 900, step_s: int = 900) -> list[dict]:
    data = build_visits_segments(events(rows), min_segment_s=0.5, visit_gap_s=gap_s)
    grid = WindowGrid.build(start, end, window_s=window_s, step_s=step_s)
    out = ENGINES[engine](data, grid)
    assert out.schema == WINDOW_STATS_SCHEMA
    return out.to_pylist()


def row(rows: list[dict], sensor_id: int, traveler_type: str, window_start: datetime) -> dict:
    found = [
        r for r in rows
        if r["sensor_id"] == sensor_id and r["traveler_type"] == traveler_type and r["window_start"] == window_start
    ]
    assert len(found) == 1, f"expected one row for {sensor_id}/{traveler_type}/{window_start}, got {len(found)}"
    return found[0]


# ---------------------------------------------------------------- window bounds
def test_floor_to_step_aligns_to_the_epoch() -> None:
    assert floor_to_step(at(14, 7, 31), 900) == at(14, 0)
    assert floor_to_step(at(14, 15), 900) == at(14, 15)  # already aligned: unchanged
    assert floor_to_step(at(14, 14, 59.999999), 900) == at(14, 0)
    assert floor_to_step(at(14, 7), 300) == at(14, 5)


def test_naive_is_utc_and_offsets_are_converted() -> None:
    assert as_utc(datetime(2026, 11, 30, 14, 0)) == at(14, 0)
    plus2 = timezone(timedelta(hours=2))
    assert as_utc(datetime(2026, 11, 30, 16, 0, tzinfo=plus2)) == at(14, 0)
    assert floor_to_step(datetime(2026, 11, 30, 16, 7, tzinfo=plus2), 900) == at(14, 0)


def test_window_starts_half_open_range() -> None:
    assert window_starts(at(14, 0), at(15, 0), 900) == [at(14, 0), at(14, 15), at(14, 30), at(14, 45)]
    # an unaligned start is floored; the end is exclusive for window starts
    assert window_starts(at(14, 7), at(14, 45), 900) == [at(14, 0), at(14, 15), at(14, 30)]
    # a start just after the end's boundary still gets that window
    assert window_starts(at(14, 0), at(14, 15, 1), 900) == [at(14, 0), at(14, 15)]
    assert window_starts(at(14, 0), at(14, 0), 900) == []


def test_sliding_grid_and_read_bounds() -> None:
    grid = WindowGrid.build(at(14, 0), at(14, 15), window_s=900, step_s=300)
    assert grid.starts == (at(14, 0), at(14, 5), at(14, 10))
    assert grid.last_end == at(14, 25)  # last window 14:10-14:25
    tbl = grid.to_arrow().to_pylist()
    assert tbl[0] == {"window_start": at(14, 0), "window_end": at(14, 15)}
    # read range = [first start - gap, last end + gap)
    assert read_bounds(at(14, 0), at(15, 0), window_s=900, step_s=900, visit_gap_s=60) == (at(13, 59), at(15, 1))
    assert read_bounds(at(14, 0), at(14, 15), window_s=900, step_s=300, visit_gap_s=30) == (
        at(13, 59, 30), at(14, 25, 30))
    with pytest.raises(ValueError):
        WindowGrid.build(at(14, 0), at(14, 0), window_s=900, step_s=900)
    with pytest.raises(ValueError):
        WindowGrid.build(at(14, 0), at(15, 0), window_s=0, step_s=900)


# ---------------------------------------------------------------- percentile definition
def test_p85_reference_definition() -> None:
    # h = 0.85 * (10 - 1) = 7.65 -> x[7] + 0.65 * (x[8] - x[7]) = 80 + 6.5 = 86.5
    assert quantile_linear(range(10, 101, 10), 0.85) == pytest.approx(86.5)
    assert quantile_linear([42.0], 0.85) == 42.0
    assert quantile_linear([], 0.85) is None
    # the trap the definition avoids: Polars' default interpolation gives 90 here
    assert pl.Series([float(v) for v in range(10, 101, 10)]).quantile(0.85) == 90.0


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_p85_of_10_to_100_is_86_5(engine: str) -> None:
    # ten visits in one window, each with one segment of 10 s at 10, 20, ..., 100 ft/s
    n = 10
    start = at(14, 0, 60)
    visits = pa.Table.from_pydict(
        {
            "sensor_id": [1] * n,
            "traveler_id": [f"t{i}" for i in range(n)],
            "traveler_type": ["car"] * n,
            "visit_start": [start] * n,
            "visit_end": [start + timedelta(seconds=10)] * n,
            "observations": [2] * n,
        },
        schema=VISITS_SCHEMA,
    )
    segments = pa.Table.from_pydict(
        {
            "sensor_id": [1] * n,
            "traveler_id": [f"t{i}" for i in range(n)],
            "visit_start": [start] * n,
            "seg_end_ts": [start + timedelta(seconds=10)] * n,
            "distance_ft": [10.0 * 10 * (i + 1) for i in range(n)],  # speed 10*(i+1) over 10 s
            "duration_s": [10.0] * n,
        },
        schema=SEGMENTS_SCHEMA,
    )
    grid = WindowGrid.build(at(14, 0), at(14, 15), window_s=900, step_s=900)
    [r] = ENGINES[engine]((visits, segments), grid).to_pylist()
    assert r["volume"] == 10 and r["speed_samples"] == 10
    assert r["p85_speed_fps"] == pytest.approx(86.5, abs=1e-12)
    assert r["mean_speed_fps"] == pytest.approx(55.0, abs=1e-12)  # (10 + 100) / 2
    assert r["p85_speed_mph"] == pytest.approx(86.5 * 3600 / 5280, abs=1e-12)


# ---------------------------------------------------------------- volume by overlap
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_visit_counts_in_every_window_it_overlaps(engine: str) -> None:
    # one car 14:58-15:03 (gap 600 s so the 5-minute hole stays one visit), 120 ft in 300 s
    rows = [(7, "c1", "car", at(14, 58), 0.0, 0.0), (7, "c1", "car", at(15, 3), 120.0, 0.0)]
    out = run(engine, rows, at(14, 30), at(15, 30), gap_s=600)
    vol = {r["window_start"]: r["volume"] for r in out}
    assert vol == {at(14, 30): 0, at(14, 45): 1, at(15, 0): 1, at(15, 15): 0}
    # the only segment ends at 15:03: speed 120 / 300 = 0.4 ft/s in 15:00-15:15 only
    assert row(out, 7, "car", at(14, 45))["speed_samples"] == 0
    assert row(out, 7, "car", at(14, 45))["mean_speed_fps"] is None
    assert row(out, 7, "car", at(15, 0))["mean_speed_fps"] == pytest.approx(0.4)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_visit_boundaries_are_half_open_windows(engine: str) -> None:
    # a visit ending exactly at 15:00:00 touches 15:00-15:15 (last_ts >= ws);
    # a visit starting exactly at 14:45:00 does not touch 14:30-14:45 (first_ts < we fails)
    rows = [
        (1, "a", "car", at(14, 59, 50), 0.0, 0.0), (1, "a", "car", at(15, 0), 50.0, 0.0),
        (1, "b", "car", at(14, 45), 0.0, 0.0), (1, "b", "car", at(14, 45, 10), 50.0, 0.0),
    ]
    out = run(engine, rows, at(14, 30), at(15, 15))
    vol = {r["window_start"]: r["volume"] for r in out}
    assert vol == {at(14, 30): 0, at(14, 45): 2, at(15, 0): 1}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_empty_windows_are_zero_rows(engine: str) -> None:
    # one pedestrian at 14:05 in a range of four windows: four rows, three of them empty
    rows = [(3, "p1", "pedestrian", at(14, 5), 0.0, 0.0), (3, "p1", "pedestrian", at(14, 5, 10), 40.0, 30.0)]
    out = run(engine, rows, at(14, 0), at(15, 0))
    assert [(r["window_start"], r["volume"]) for r in out] == [
        (at(14, 0), 1), (at(14, 15), 0), (at(14, 30), 0), (at(14, 45), 0)]
    first, *empty = out
    assert first["mean_speed_fps"] == pytest.approx(5.0)  # hypot(40, 30) = 50 ft in 10 s
    for r in empty:
        assert r["speed_samples"] == 0
        assert r["window_end"] - r["window_start"] == timedelta(seconds=900)
        assert r["window_s"] == 900
        assert r["mean_speed_fps"] is None and r["p85_speed_fps"] is None
        assert r["mean_speed_mph"] is None and r["p85_speed_mph"] is None


def test_no_events_no_rows() -> None:
    for engine in ENGINES:
        assert run(engine, [], at(14, 0), at(15, 0)) == []


# ---------------------------------------------------------------- hand-computed fixture
TWO_TRAVELERS = [
    # T1: segments end 14:14:55 (100 ft / 10 s = 10 ft/s) and 14:15:05 (200 ft / 10 s = 20 ft/s);
    # its visit 14:14:45-14:15:05 overlaps both windows
    (1, "T1", "car", at(14, 14, 45), 0.0, 0.0),
    (1, "T1", "car", at(14, 14, 55), 100.0, 0.0),
    (1, "T1", "car", at(14, 15, 5), 300.0, 0.0),
    # T2: a 0.2 s jitter point is merged forward (0.2 < min_segment_s = 0.5), so the one
    # segment runs from (0, 0) at 14:05:00 to (0, 300) at 14:05:10: 300 ft / 10 s = 30 ft/s
    (1, "T2", "car", at(14, 5), 0.0, 0.0),
    (1, "T2", "car", at(14, 5, 0.2), 0.0, 1.0),
    (1, "T2", "car", at(14, 5, 10), 0.0, 300.0),
]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_two_travelers_by_hand(engine: str) -> None:
    out = run(engine, TWO_TRAVELERS, at(14, 0), at(14, 30))
    assert len(out) == 2
    a = row(out, 1, "car", at(14, 0))
    # 14:00-14:15: T1 (10 ft/s) and T2 (30 ft/s): mean 20; p85: h = 0.85 * 1 -> 10 + 0.85 * 20 = 27
    assert (a["volume"], a["speed_samples"]) == (2, 2)
    assert a["mean_speed_fps"] == pytest.approx(20.0, abs=1e-12)
    assert a["p85_speed_fps"] == pytest.approx(27.0, abs=1e-12)
    assert a["mean_speed_mph"] == pytest.approx(20.0 * MPH, abs=1e-12)  # 13.636...
    assert a["p85_speed_mph"] == pytest.approx(18.409090909090, abs=1e-9)  # 27 * 15 / 22
    assert a["window_end"] == at(14, 15)
    b = row(out, 1, "car", at(14, 15))
    # 14:15-14:30: only T1's second segment (20 ft/s)
    assert (b["volume"], b["speed_samples"]) == (1, 1)
    assert b["mean_speed_fps"] == pytest.approx(20.0) and b["p85_speed_fps"] == pytest.approx(20.0)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_zero_speed_is_a_speed_and_a_single_point_is_not(engine: str) -> None:
    rows = [
        (2, "b1", "bicycle", at(14, 20), 5.0, 5.0), (2, "b1", "bicycle", at(14, 20, 2), 5.0, 5.0),
        (2, "p1", "pedestrian", at(14, 25), 0.0, 0.0),
    ]
    out = run(engine, rows, at(14, 15), at(14, 30))
    bike = row(out, 2, "bicycle", at(14, 15))
    assert (bike["volume"], bike["speed_samples"], bike["mean_speed_fps"], bike["p85_speed_fps"]) == (1, 1, 0.0, 0.0)
    ped = row(out, 2, "pedestrian", at(14, 15))
    assert (ped["volume"], ped["speed_samples"], ped["mean_speed_fps"]) == (1, 0, None)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_sliding_windows_count_a_visit_in_each_overlapping_window(engine: str) -> None:
    # 15-minute windows every 5 minutes; a visit 14:12-14:13 overlaps the windows starting
    # 14:00, 14:05 and 14:10 (those ending after 14:12)
    rows = [(1, "c", "car", at(14, 12), 0.0, 0.0), (1, "c", "car", at(14, 13), 600.0, 0.0)]
    out = run(engine, rows, at(14, 0), at(14, 20), window_s=900, step_s=300)
    assert {r["window_start"]: r["volume"] for r in out} == {
        at(14, 0): 1, at(14, 5): 1, at(14, 10): 1, at(14, 15): 0}
    assert all(r["mean_speed_fps"] == pytest.approx(10.0) for r in out if r["volume"])  # 600 ft / 60 s


def test_segments_match_the_live_merge_forward_rule() -> None:
    data = build_visits_segments(events(TWO_TRAVELERS), min_segment_s=0.5, visit_gap_s=60)
    segs = [(s["traveler_id"], s["distance_ft"], s["duration_s"]) for s in data.segments.to_pylist()]
    assert segs == [("T1", 100.0, 10.0), ("T1", 200.0, 10.0), ("T2", 300.0, 10.0)]
    visits = {v["traveler_id"]: (v["visit_start"], v["visit_end"], v["observations"]) for v in data.visits.to_pylist()}
    assert visits == {"T1": (at(14, 14, 45), at(14, 15, 5), 3), "T2": (at(14, 5), at(14, 5, 10), 3)}


def test_gap_splits_visits_and_duplicates_change_nothing() -> None:
    rows = [
        (1, "x", "car", at(14, 0), 0.0, 0.0),
        (1, "x", "car", at(14, 0, 10), 100.0, 0.0),
        (1, "x", "car", at(14, 0, 10), 100.0, 0.0),  # exact duplicate
        (1, "x", "car", at(14, 2), 0.0, 0.0),  # 110 s later > 60 s gap: a new visit
        (1, "x", "car", at(14, 2, 5), 50.0, 0.0),
    ]
    data = build_visits_segments(events(rows), min_segment_s=0.5, visit_gap_s=60)
    assert [(v["visit_start"], v["observations"]) for v in data.visits.to_pylist()] == [
        (at(14, 0), 2), (at(14, 2), 2)]
    assert [(s["distance_ft"], s["duration_s"]) for s in data.segments.to_pylist()] == [(100.0, 10.0), (50.0, 5.0)]


def test_transforms_import_only_lake_and_sensorlake() -> None:
    """Dependencies flow one way: transforms -> lake, sensorlake; lake/reader -> lake only."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def project_imports(path: Path) -> set[str]:
        tops = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops.add(node.module.split(".")[0])
        return tops & {"app", "ingest", "lake", "sensorlake", "transforms"}

    for path in sorted((root / "transforms").glob("*.py")):
        assert project_imports(path) <= {"lake", "sensorlake", "transforms"}, path.name
    assert project_imports(root / "lake" / "reader.py") <= {"lake"}


# ----------------------------------------------------------------- columnar segments vs apply_event
def _oracle(rows: list[tuple], min_segment_s: float, gap_s: float) -> tuple[list, list]:
    """Visits and segments by folding the live ``apply_event`` over each key's events in
    (ts, arrival) order: what build_visits_segments must give."""
    import math

    from sensorlake.events import Event
    from sensorlake.kinematics import Outcome, apply_event

    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1], rows[i][3], i))
    visits, segs, state = [], [], None

    def close(st):
        visits.append((st.sensor_id, st.traveler_id, st.traveler_type, st.first_seen_us, st.last_seen_us,
                       st.observations))  # fmt: skip

    for i in order:
        sid, tid, kind, ts_us, x, y = rows[i]
        e = Event(sid, tid, kind, ts_us, x, y)
        if state is not None and (sid, tid) != (state.sensor_id, state.traveler_id):
            close(state)
            state = None
        step = apply_event(state, e, min_segment_s=min_segment_s, visit_gap_s=gap_s)
        if step.outcome is Outcome.NEW_VISIT and state is not None:
            close(state)
        elif step.segment_speed_fps is not None:
            segs.append((sid, tid, state.first_seen_us, ts_us,
                         math.hypot(x - state.anchor_x_ft, y - state.anchor_y_ft),
                         (ts_us - state.anchor_us) / 1_000_000))  # fmt: skip
        state = step.state
    if state is not None:
        close(state)
    return visits, segs


_seg_rows = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=2),
        st.sampled_from(["a", "b", "ab"]),
        st.sampled_from(["car", "bus"]),
        st.integers(min_value=0, max_value=300).map(lambda t: 1_764_511_200_000_000 + t * 200_000),
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
        st.sampled_from([0.0, 1.0]) | st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
    ),
    max_size=80,
)


@given(_seg_rows, st.sampled_from([0.0, 0.4, 1.0, 1.3]), st.sampled_from([0.5, 5.0, 60.0]))
@settings(max_examples=800, deadline=None)
def test_columnar_segments_equal_folding_apply_event(rows, min_seg, gap) -> None:
    from sensorlake.events import ts_from_us

    table = pa.table({
        "sensor_id": pa.array([r[0] for r in rows], pa.int64()),
        "traveler_id": pa.array([r[1] for r in rows], pa.string()),
        "traveler_type": pa.array([r[2] for r in rows], pa.string()),
        "ts": pa.array([ts_from_us(r[3]) for r in rows], pa.timestamp("us", tz="UTC")),
        "x_ft": pa.array([r[4] for r in rows], pa.float64()),
        "y_ft": pa.array([r[5] for r in rows], pa.float64()),
        "kafka_partition": pa.array([0] * len(rows), pa.int32()),
        "kafka_offset": pa.array(range(len(rows)), pa.int64()),
    })  # fmt: skip
    want_visits, want_segs = _oracle(rows, min_seg, gap)
    data = build_visits_segments(table, min_segment_s=min_seg, visit_gap_s=gap)
    us = lambda d: (d - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    got_visits = [(v["sensor_id"], v["traveler_id"], v["traveler_type"], us(v["visit_start"]), us(v["visit_end"]),
                   v["observations"]) for v in data.visits.to_pylist()]  # fmt: skip
    got_segs = [(s["sensor_id"], s["traveler_id"], us(s["visit_start"]), us(s["seg_end_ts"]), s["distance_ft"],
                 s["duration_s"]) for s in data.segments.to_pylist()]  # fmt: skip
    assert got_visits == want_visits
    assert got_segs == want_segs  # bit-identical floats, not approx
    # rows already in key order (as the lake reader returns them) skip the sort: same result
    keys = ["sensor_id", "traveler_id", "ts", "kafka_partition", "kafka_offset"]
    presorted = build_visits_segments(table.sort_by([(k, "ascending") for k in keys]), min_segment_s=min_seg,
                                      visit_gap_s=gap)  # fmt: skip
    assert presorted.visits.equals(data.visits) and presorted.segments.equals(data.segments)


def test_rows_in_time_order_but_ties_out_of_arrival_order_are_sorted() -> None:
    """Same key and time, the later offset first: the first-arrived row (offset 0, at x=0)
    must win, so the segment to t=10 s is 100 ft long, not 90."""
    t = at(14, 0)
    table = pa.table({
        "sensor_id": [1, 1, 1], "traveler_id": ["x", "x", "x"], "traveler_type": ["car"] * 3,
        "ts": [t, t, t + timedelta(seconds=10)], "x_ft": [10.0, 0.0, 100.0], "y_ft": [0.0, 0.0, 0.0],
        "kafka_partition": pa.array([0, 0, 0], pa.int32()), "kafka_offset": [1, 0, 2],
    })  # fmt: skip
    segs = build_visits_segments(table, min_segment_s=0.5, visit_gap_s=60).segments.to_pylist()
    assert [(s["distance_ft"], s["duration_s"]) for s in segs] == [(100.0, 10.0)]
