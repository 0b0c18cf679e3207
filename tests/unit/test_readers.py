"""Readers of the real datasets and the generic CSV reader (ingest.readers).

Real data lives outside the repo, in ``shared/data`` next to the repository root (override
with ``SENSORLAKE_SHARED_DATA``); tests that need it skip with the reason when it is absent.
Expected values are hand-computed from the raw rows quoted in each test and from the figures
in each folder's PROVENANCE.md.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.readers import (
    detect_format,
    ground_truth_speeds,
    load_frame,
    open_source,
    read_av2,
    read_csv,
    read_eth_ucy,
    read_ngsim_peachtree,
    read_ngsim_us101,
    read_sdd,
)
from sensorlake.errors import InputError
from sensorlake.events import MAX_TS_US, Event, decode_event, encode_event, ts_to_us

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("SENSORLAKE_SHARED_DATA") or (REPO_ROOT.parent / "shared" / "data"))

needs_data = pytest.mark.skipif(
    not (DATA / "ngsim_peachtree_sample" / "NGSIM.csv").is_file(),
    reason=f"shared test data not found at {DATA} (set SENSORLAKE_SHARED_DATA)",
)

PEACHTREE = DATA / "ngsim_peachtree_sample" / "NGSIM.csv"
US101 = DATA / "ngsim_us101_vehiclewise_subset"
ETH = DATA / "eth_ucy"
SDD = DATA / "stanford_drone_subset"
AV2 = DATA / "argoverse2_scenario_sample"

FT = 1 / 0.3048
ORIGIN_US = ts_to_us(datetime(2000, 1, 1, tzinfo=UTC))  # readers.RELATIVE_TIME_ORIGIN


def us(*args: int) -> int:
    return ts_to_us(datetime(*args, tzinfo=UTC))


def assert_sorted(events: list[Event]) -> None:
    keys = [(e.ts_us, e.sensor_id, e.traveler_id) for e in events]
    assert keys == sorted(keys)


def by_key(events: list[Event]) -> dict[tuple[str, int], Event]:
    return {(e.traveler_id, e.ts_us): e for e in events}


# ============================================================ NGSIM Peachtree
@pytest.fixture(scope="module")
def peachtree() -> list[Event]:
    return list(read_ngsim_peachtree(PEACHTREE))


@needs_data
def test_peachtree_counts_and_types(peachtree: list[Event]) -> None:
    # PROVENANCE: 5,000 rows; 162 Vehicle_IDs = 165 travelers once the period is in the key;
    # 159 autos (4,866 rows) and 6 trucks (134 rows); Section_ID 1 only.
    assert len(peachtree) == 5000
    travelers = {e.traveler_id: e.traveler_type for e in peachtree}
    assert len(travelers) == 165
    assert sorted(travelers.values()).count("car") == 159
    assert sorted(travelers.values()).count("truck") == 6
    assert sum(e.traveler_type == "car" for e in peachtree) == 4866
    assert {e.sensor_id for e in peachtree} == {1001}  # 1000 + Section_ID
    # ids 70, 1311 and 1322 occur in both recording periods and must stay apart
    for vid in (70, 1311, 1322):
        assert f"1163018600-{vid}" in travelers and f"1163030300-{vid}" in travelers


@needs_data
def test_peachtree_row_by_hand(peachtree: list[Event]) -> None:
    # Raw row 2 of NGSIM.csv: Vehicle_ID 352, Frame_ID 3380, Global_Time 1163368300,
    # Local_X -5.359, Local_Y 0.0, v_Class 2, v_Vel 33.96.
    # base = 1163368300 - 100*3380 = 1163030300 (the larger base -> 16:00 EST = 21:00Z),
    # t = 21:00:00Z + 3380 x 0.1 s = 21:05:38.000Z.
    e = by_key(peachtree)[("1163030300-352", us(2006, 11, 8, 21, 5, 38))]
    assert (e.sensor_id, e.traveler_type, e.x_ft, e.y_ft) == (1001, "car", -5.359, 0.0)
    assert e.ts == datetime(2006, 11, 8, 21, 5, 38, tzinfo=UTC)
    gt = ground_truth_speeds(PEACHTREE).filter(
        (pl.col("traveler_id") == "1163030300-352") & (pl.col("ts_us") == e.ts_us)
    )
    assert gt["speed_fps"].to_list() == [33.96]


@needs_data
def test_peachtree_periods_map_to_documented_utc_times(peachtree: list[Event]) -> None:
    # Smaller base 1163018600 -> 2006-11-08T17:45:00Z; frames 225..8736 (PROVENANCE).
    p1 = [e.ts_us for e in peachtree if e.traveler_id.startswith("1163018600-")]
    p2 = [e.ts_us for e in peachtree if e.traveler_id.startswith("1163030300-")]
    assert (len(p1), len(p2)) == (4017, 983)
    assert min(p1) == us(2006, 11, 8, 17, 45) + 225 * 100_000
    assert max(p1) == us(2006, 11, 8, 17, 45) + 8736 * 100_000
    assert min(p2) == us(2006, 11, 8, 21, 0) + 45 * 100_000
    assert max(p2) == us(2006, 11, 8, 21, 0) + 8479 * 100_000


@needs_data
def test_peachtree_is_sorted_although_the_file_is_not(peachtree: list[Event]) -> None:
    raw = pl.read_csv(PEACHTREE, columns=["Frame_ID"])["Frame_ID"].to_list()
    assert raw != sorted(raw)  # the export is unordered (frames descend in the first rows)
    assert_sorted(peachtree)


# ============================================================ NGSIM US-101
@needs_data
def test_us101_counts_row_and_metres_to_feet() -> None:
    events = list(read_ngsim_us101(US101))
    assert len(events) == 18_700  # PROVENANCE: 40 files, 18,700 rows
    assert len({e.traveler_id for e in events}) == 40
    assert {e.traveler_type for e in events} == {"vehicle"}
    assert {e.sensor_id for e in events} == {2000}
    assert_sorted(events)
    # 11.csv row 1: Frame_ID 244, Global_Time 1118847866400 (ms), local_x(m) 8.347154399999999,
    # local_y(m) 15.28893, v_Vel(m) 4.3700280000000005.
    e = by_key(events)[("11", 1_118_847_866_400_000)]
    assert e.ts == datetime(2005, 6, 15, 15, 4, 26, 400_000, tzinfo=UTC)
    assert e.x_ft == pytest.approx(27.385677165354330, rel=1e-12)  # 8.3471544 / 0.3048
    assert e.y_ft == pytest.approx(50.160531496062994, rel=1e-12)  # 15.28893 / 0.3048
    gt = ground_truth_speeds(US101).filter((pl.col("traveler_id") == "11") & (pl.col("ts_us") == e.ts_us))
    assert gt["speed_fps"].item() == pytest.approx(14.337362204724410, rel=1e-12)  # 4.370028 / 0.3048


@needs_data
def test_us101_single_file() -> None:
    events = list(read_ngsim_us101(US101 / "11.csv"))
    assert {e.traveler_id for e in events} == {"11"}
    assert len(events) == sum(1 for _ in (US101 / "11.csv").open()) - 1


# ============================================================ ETH / UCY
@needs_data
def test_eth_ucy_counts_and_row_by_hand() -> None:
    events = list(read_eth_ucy(ETH))
    # PROVENANCE: 8,908 + 6,544 + 5,024 + 9,537 rows; 360 + 390 + 148 + 204 pedestrians
    assert len(events) == 30_013
    assert len({(e.sensor_id, e.traveler_id) for e in events}) == 1102
    assert {e.sensor_id for e in events} == {3001, 3002, 3003, 3004}
    assert {e.traveler_type for e in events} == {"pedestrian"}
    assert_sorted(events)
    # eth_seq_eth_obsmat.txt row 1: frame 780, ped 1, pos_x 8.4568443, pos_y 3.5880664 (m);
    # seq_eth: frame x 0.4/6 s = 52 s after the origin.
    e = by_key(events)[("seq_eth:1", ORIGIN_US + 52_000_000)]
    assert e.sensor_id == 3001
    assert e.x_ft == pytest.approx(8.4568443 * FT, rel=1e-12)
    assert e.y_ft == pytest.approx(3.5880664 * FT, rel=1e-12)


@needs_data
def test_eth_frame_rates_and_time_origin() -> None:
    eth = list(read_eth_ucy(ETH / "eth_seq_eth_obsmat.txt", time_origin="2009-06-01T12:00:00+02:00"))
    origin = us(2009, 6, 1, 10)
    # every seq_eth time is frame / 15 s to the nearest microsecond
    frames = {round((e.ts_us - origin) * 15 / 1e6) for e in eth}
    assert min(frames) == 780 and max(frames) == 12381
    assert all(abs((e.ts_us - origin) - round((e.ts_us - origin) * 15 / 1e6) * 1e6 / 15) <= 0.5 for e in eth)
    hotel = list(read_eth_ucy(ETH / "eth_seq_hotel_obsmat.txt"))
    assert min(e.ts_us for e in hotel) == ORIGIN_US + 1 * 40_000  # frame 1 x 0.04 s
    assert max(e.ts_us for e in hotel) == ORIGIN_US + 18061 * 40_000


# ============================================================ Stanford Drone
@needs_data
def test_sdd_pixels_to_feet_with_the_scale_file() -> None:
    events = list(read_sdd(SDD / "quad_video1_annotations.txt"))
    # 7,153 rows, 949 lost=1 rows dropped (PROVENANCE); 17 tracks
    assert len(events) == 7153 - 949
    assert len({e.traveler_id for e in events}) == 17
    assert {e.sensor_id for e in events} == {4000 + 100 * 7 + 1}  # quad = scene 7, video 1
    assert {e.traveler_type for e in events} == {"pedestrian", "bicycle"}  # Biker -> bicycle
    # Row 1: track 0, box (5, 795)-(38, 831) px, frame 500, "Pedestrian"; 0.042530206 m/px.
    # centre (21.5, 813) px -> x = 21.5 x 0.042530206 / 0.3048 = 2.99999812664042 ft,
    # y = -(813 x 0.042530206 / 0.3048) = -113.44178962598424 ft (image y points down);
    # t = 500 / 30 s = 16.666667 s.
    e = by_key(events)[("quad_video1:0", ORIGIN_US + 16_666_667)]
    assert e.traveler_type == "pedestrian"
    assert e.x_ft == pytest.approx(2.99999812664042, rel=1e-12)
    assert e.y_ft == pytest.approx(-113.44178962598424, rel=1e-12)
    assert_sorted(events)


@needs_data
def test_sdd_all_videos_drop_lost_boxes() -> None:
    df = load_frame(SDD)
    raw_rows = 22_340 + 60_492 + 76_132 + 29_380 + 7_153
    lost_rows = 5_206 + 18_291 + 30_337 + 15_532 + 949
    assert df.height == raw_rows - lost_rows == 125_182
    assert df.select(pl.struct("sensor_id", "traveler_id").n_unique()).item() == 315
    assert set(df["sensor_id"].unique()) == {4204, 4304, 4308, 4605, 4701}
    assert set(df["traveler_type"].unique()) == {"pedestrian", "bicycle", "car", "bus", "skater", "cart"}
    with pytest.raises(InputError, match="no ground-truth speed"):
        ground_truth_speeds(SDD)


@needs_data
def test_sdd_explicit_scale_and_missing_scale(tmp_path: Path) -> None:
    src = SDD / "quad_video1_annotations.txt"
    e = by_key(list(read_sdd(src, px_scale_m=0.3048, flip_y=False)))[("quad_video1:0", ORIGIN_US + 16_666_667)]
    # 1 px = 1 ft: centre (21.5, 813) px, y not flipped
    assert (e.x_ft, e.y_ft) == pytest.approx((21.5, 813.0))
    copy = tmp_path / "quad_video1_annotations.txt"
    copy.write_bytes(src.read_bytes()[:2000].rsplit(b"\n", 1)[0] + b"\n")
    with pytest.raises(InputError, match="no pixel scale"):
        read_sdd(copy)


# ============================================================ Argoverse 2
@needs_data
def test_av2_counts_types_and_exact_ns_to_us() -> None:
    events = list(read_av2(AV2))
    # PROVENANCE: vehicle 32 tracks (1,774 rows), pedestrian 12 (329); others dropped
    assert len(events) == 1774 + 329
    types = {e.traveler_id: e.traveler_type for e in events}
    assert sorted(types.values()).count("car") == 32 and sorted(types.values()).count("pedestrian") == 12
    assert types["AV"] == "car"  # the autonomous vehicle is a track too
    # start_timestamp "3.15986559459579e+17" ns, 110 timesteps of 100 ms
    assert min(e.ts_us for e in events) == 315_986_559_459_579
    assert max(e.ts_us for e in events) == 315_986_559_459_579 + 109 * 100_000
    assert all((e.ts_us - 315_986_559_459_579) % 100_000 == 0 for e in events)
    assert_sorted(events)
    everything = load_frame(AV2, keep_other=True)
    assert everything.height == 2434
    assert everything["traveler_id"].n_unique() == 58


def test_av2_timestamp_never_goes_through_float(tmp_path: Path) -> None:
    # 1,700,000,000,000,000,990 ns: exact floor -> ...000 us; via float64 it would round to
    # ...001,024 ns -> ...001 us.
    raw = "1.70000000000000099e+18"
    assert int(float(raw)) // 1000 != int(Decimal(raw)) // 1000
    f = tmp_path / "scenario_x.csv"
    f.write_text(
        "track_id,object_type,timestep,position_x,position_y,velocity_x,velocity_y,start_timestamp\n"
        f'"7","vehicle",0,1.0,2.0,3.0,4.0,{raw}\n'
        f'"7","vehicle",1,1.3048,2.0,3.0,4.0,{raw}\n'
        f'"9","static",0,0.0,0.0,0.0,0.0,{raw}\n'
    )
    assert detect_format(f) == "av2"
    events = list(open_source(f))
    assert [e.ts_us for e in events] == [1_700_000_000_000_000, 1_700_000_000_100_000]
    assert events[1].x_ft - events[0].x_ft == pytest.approx(1.0)  # 0.3048 m = 1 ft
    assert ground_truth_speeds(f)["speed_fps"].to_list() == pytest.approx([5 * FT, 5 * FT])


# ============================================================ detection, all datasets
@needs_data
def test_open_source_detects_every_dataset_and_merges_a_tree() -> None:
    assert detect_format(PEACHTREE) == "ngsim_peachtree"
    assert detect_format(US101) == "ngsim_us101"
    assert detect_format(ETH) == "eth_ucy"
    assert detect_format(SDD) == "sdd"
    assert detect_format(AV2) == "av2"
    assert detect_format(DATA) == "mixed"
    df = load_frame(DATA)
    assert df.height == 5000 + 18_700 + 30_013 + 125_182 + 2103
    keys = df.select("ts_us", "sensor_id", "traveler_id")
    assert keys.equals(keys.sort(["ts_us", "sensor_id", "traveler_id"]))
    # the sensor-id blocks keep the datasets apart
    blocks = df.group_by(pl.col("sensor_id") // 1000).agg(pl.len()).sort("sensor_id").rows()
    assert blocks == [(1, 5000), (2, 18_700), (3, 30_013), (4, 125_182), (5, 2103)]


@needs_data
def test_events_satisfy_the_wire_contract() -> None:
    for path in (PEACHTREE, US101, ETH, SDD, AV2):
        for e in list(open_source(path))[:200]:
            assert decode_event(encode_event(e)) == e


def test_open_source_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        open_source(tmp_path / "nope.csv")
    assert "\n" not in str(exc.value)
    other = tmp_path / "notes.md"
    other.write_text("hello\n")
    with pytest.raises(InputError, match="unrecognised input format"):
        open_source(other)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no recognised trajectory files"):
        open_source(tmp_path)
    with pytest.raises(InputError, match="unknown format"):
        open_source(other, format="parquet")


# ============================================================ generic CSV
def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_feet_seconds_constant_type_and_sensor(tmp_path: Path) -> None:
    p = write(tmp_path, "id,t,x,y\nb,2.5,10,20\na,2.5,1,2\na,0.1,0,0\n")
    events = list(read_csv(p, traveler_id="id", time="t", x="x", y="y", traveler_type="Biker", sensor_id=3))
    assert events == [
        Event(3, "a", "biker", 100_000, 0.0, 0.0),
        Event(3, "a", "biker", 2_500_000, 1.0, 2.0),
        Event(3, "b", "biker", 2_500_000, 10.0, 20.0),
    ]
    aliased = next(
        read_csv(p, traveler_id="id", time="t", x="x", y="y", traveler_type="Biker", aliases={"biker": "bicycle"})
    )
    assert (aliased.traveler_type, aliased.sensor_id) == ("bicycle", 0)


def test_csv_metres_milliseconds_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "sid;who;kind;ms;x;y\n7;p1; Pedestrian ;1700000000123;0.3048;-3.048\n")
    (e,) = read_csv(
        p,
        traveler_id="who",
        traveler_type="kind",
        sensor_id="sid",
        time="ms",
        time_unit="ms",
        x="x",
        y="y",
        units="m",
        separator=";",
    )
    assert e == Event(7, "p1", "pedestrian", 1_700_000_000_123_000, pytest.approx(1.0), pytest.approx(-10.0))


def test_csv_pixels_microseconds_nanoseconds(tmp_path: Path) -> None:
    p = write(tmp_path, "id,t,x,y\n1,1700000000000000999,100,50\n")
    (e,) = read_csv(p, traveler_id="id", time="t", time_unit="ns", x="x", y="y", units="px", px_scale_m=0.06096)
    # 0.06096 m/px = 0.2 ft/px; 999 ns floor -> 0 us
    assert (e.ts_us, e.x_ft, e.y_ft) == (1_700_000_000_000_000, pytest.approx(20.0), pytest.approx(10.0))
    p2 = write(tmp_path, "id,t,x,y\n1,17,0,0\n", "u.csv")
    (e2,) = read_csv(p2, traveler_id="id", time="t", time_unit="us", x="x", y="y", time_origin="2020-01-01T00:00:00Z")
    assert e2.ts_us == us(2020, 1, 1) + 17
    with pytest.raises(InputError, match="px_scale_m"):
        read_csv(p, traveler_id="id", time="t", x="x", y="y", units="px")


def test_csv_iso_times(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "id,ts,x,y\n"
        "a,2024-03-10T23:30:00-05:00,0,0\n"
        "a,2024-03-11T04:30:00.0000019,1,0\n"  # naive = UTC; sub-us digits truncated
        "a,2024-03-11 04:30:01Z,2,0\n",
    )
    ts = [e.ts_us for e in read_csv(p, traveler_id="id", time="ts", time_unit="iso", x="x", y="y")]
    base = us(2024, 3, 11, 4, 30)
    assert ts == [base, base + 1, base + 1_000_000]


def test_csv_rejects_bad_input(tmp_path: Path) -> None:
    p = write(tmp_path, "id,t,x,y\na,1,0,0\n")
    with pytest.raises(InputError, match="missing column"):
        read_csv(p, traveler_id="nope", time="t", x="x", y="y")
    with pytest.raises(InputError, match="1970..2100"):  # epoch ms read as seconds
        read_csv(write(tmp_path, "id,t,x,y\na,1700000000000,0,0\n", "ms.csv"), traveler_id="id", time="t", x="x", y="y")
    with pytest.raises(InputError, match="not a number"):
        read_csv(write(tmp_path, "id,t,x,y\na,soon,0,0\n", "b.csv"), traveler_id="id", time="t", x="x", y="y")
    with pytest.raises(InputError, match="empty values"):
        read_csv(write(tmp_path, "id,t,x,y\n,1,0,0\n", "e.csv"), traveler_id="id", time="t", x="x", y="y")
    with pytest.raises(InputError, match="bad value"):
        read_csv(write(tmp_path, "id,t,x,y\na,1,east,0\n", "x.csv"), traveler_id="id", time="t", x="x", y="y")
    with pytest.raises(InputError, match="integer sensor ids"):
        read_csv(p, traveler_id="id", time="t", x="x", y="y", sensor_id="id")


# ------------------------------------------------------------ property tests
_T_US = st.integers(min_value=0, max_value=ts_to_us(datetime(2099, 12, 31, tzinfo=UTC)))


def _format_time(t_us: int, unit: str, extra_ns: int, offset_min: int) -> str:
    if unit == "s":
        return f"{t_us // 1_000_000}.{t_us % 1_000_000:06d}{extra_ns:03d}"
    if unit == "ms":
        return f"{t_us // 1000}.{t_us % 1000:03d}{extra_ns:03d}"
    if unit == "us":
        return str(t_us)
    if unit == "ns":
        return str(t_us * 1000 + extra_ns)
    tz = timezone(timedelta(minutes=offset_min))
    return datetime.fromtimestamp(t_us // 1_000_000, tz).replace(microsecond=t_us % 1_000_000).isoformat()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            _T_US,
            st.integers(0, 999),
            st.integers(-14 * 60, 14 * 60),
            st.floats(-1e5, 1e5, allow_nan=False),
            st.floats(-1e5, 1e5, allow_nan=False),
        ),
        min_size=1,
        max_size=8,
    ),
    unit=st.sampled_from(["s", "ms", "us", "ns", "iso"]),
    units=st.sampled_from(["ft", "m", "px"]),
)
def test_csv_time_and_unit_parsing_is_exact(rows, unit, units, tmp_path_factory) -> None:
    """Any time written in any unit comes back as the same microsecond (sub-us floored);
    positions come back scaled by exactly ft/m (1/0.3048) or m/px / 0.3048."""
    d = tmp_path_factory.mktemp("prop")
    lines = ["id,t,x,y"]
    for i, (t, extra, off, x, y) in enumerate(rows):
        lines.append(f"tr{i},{_format_time(t, unit, extra, off)},{x!r},{y!r}")
    p = d / "p.csv"
    p.write_text("\n".join(lines) + "\n")
    scale = {"ft": 1.0, "m": FT, "px": 0.05 * FT}[units]
    events = list(
        read_csv(p, traveler_id="id", time="t", x="x", y="y", time_unit=unit, units=units, px_scale_m=0.05)
    )
    got = {e.traveler_id: e for e in events}
    for i, (t, _extra, _off, x, y) in enumerate(rows):
        e = got[f"tr{i}"]
        assert e.ts_us == t
        assert e.x_ft == pytest.approx(x * scale, rel=1e-12, abs=1e-12)
        assert e.y_ft == pytest.approx(y * scale, rel=1e-12, abs=1e-12)
    assert_sorted(events)


@settings(max_examples=40, deadline=None)
@given(
    origin=st.integers(0, 2_000_000_000_000_000),
    value=st.integers(-10**12, 10**12),
    unit=st.sampled_from(["ms", "us", "ns"]),
)
def test_csv_integer_times_are_floored_relative_to_the_origin(origin, value, unit, tmp_path_factory) -> None:
    factor = {"ms": 1000, "us": 1, "ns": None}[unit]
    expect = origin + (value // 1000 if factor is None else value * factor)
    p = tmp_path_factory.mktemp("int") / "i.csv"
    p.write_text(f"id,t,x,y\na,{value},0,0\n")
    if not (0 <= expect < MAX_TS_US):
        with pytest.raises(InputError):
            read_csv(p, traveler_id="id", time="t", x="x", y="y", time_unit=unit, time_origin=origin)
        return
    (e,) = read_csv(p, traveler_id="id", time="t", x="x", y="y", time_unit=unit, time_origin=origin)
    assert e.ts_us == expect
    assert not math.isnan(e.x_ft)
