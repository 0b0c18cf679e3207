"""Readers: real trajectory datasets and generic CSV files -> :class:`sensorlake.events.Event`.

Pure functions: no Kafka, no environment, no clock. Every reader parses with Polars (or NumPy
for whitespace-separated text), converts to the event contract's units, validates, and
returns events **sorted by event time** (``ts_us``, then ``sensor_id``, then
``traveler_id``), because a replay is sent in event-time order.

Units (the event contract): positions ``x_ft``, ``y_ft`` in **feet** in the sensor's local
frame; ``ts_us`` in **microseconds since 1970-01-01T00:00:00 UTC**; ground-truth speeds in
**ft/s**. Conversions are exact definitions: 1 m = 1 / 0.3048 ft; pixels -> metres by the
dataset's metres-per-pixel scale; nanoseconds -> microseconds by integer (floor) division,
never by a 1000x rescale of a float.

Sensor ids: each dataset owns a block so that several replays into one topic never collide
(all sources: ``/work/shared/data/*/PROVENANCE.md``; the strings there, e.g.
``ngsim-peachtree``, become these integers):

=====================  ==========================================================
dataset                sensor_id
=====================  ==========================================================
synthetic generator    1 ... N (``ingest.synthetic``), keep below 1000
NGSIM Peachtree        ``1000 + Section_ID`` (the sample has Section_ID 1 -> 1001)
NGSIM US-101 subset    2000
ETH / UCY obsmat       3001 seq_eth, 3002 seq_hotel, 3003 zara01, 3004 zara02,
                       3005 zara03, 3006 students001, 3007 students003,
                       3008 uni_examples (one fixed camera per sequence)
Stanford Drone         ``4000 + 100 * scene_index + video_number`` with the scene index
                       in :data:`SDD_SCENES` (e.g. nexus video5 -> 4605)
Argoverse 2 scenario   5000 (the autonomous vehicle's own, moving, sensor suite)
generic CSV            what the caller maps (a column or a constant)
=====================  ==========================================================

Datasets without an absolute clock (ETH/UCY, Stanford Drone) are placed at
:data:`RELATIVE_TIME_ORIGIN` (2000-01-01T00:00:00Z, an arbitrary, obviously-not-real date)
unless ``time_origin`` is given.

Errors: every problem with a path or its content raises
:class:`sensorlake.errors.InputError` with a one-line message.

Public surface:

* :func:`open_source` - detect the dataset of a file or directory and return its events.
* :func:`load_frame` - the same as a Polars frame (:data:`EVENT_COLUMNS` + ``speed_fps``).
* :func:`ground_truth_speeds` - the dataset's own speed column in ft/s, for tests.
* :func:`detect_format`, :func:`events_from_frame`.
* per dataset: :func:`read_ngsim_peachtree`, :func:`read_ngsim_us101`, :func:`read_eth_ucy`,
  :func:`read_sdd`, :func:`read_av2`, and the generic :func:`read_csv`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec

import numpy as np
import polars as pl

from sensorlake.errors import EventError, InputError, first_line
from sensorlake.events import (
    MAX_ABS_COORD_FT,
    MAX_ID_LEN,
    MAX_TS_US,
    MIN_TS_US,
    Event,
    normalise_type,
    parse_timestamp,
    ts_to_us,
)

__all__ = [
    "AV2_SENSOR_ID",
    "EVENT_COLUMNS",
    "EVENT_SCHEMA",
    "ETH_UCY_SEQUENCES",
    "FORMATS",
    "FT_PER_M",
    "PEACHTREE_PERIOD_STARTS",
    "RELATIVE_TIME_ORIGIN",
    "SDD_SCENES",
    "US101_SENSOR_ID",
    "detect_format",
    "events_from_frame",
    "ground_truth_speeds",
    "load_frame",
    "open_source",
    "read_av2",
    "read_csv",
    "read_eth_ucy",
    "read_ngsim_peachtree",
    "read_ngsim_us101",
    "read_sdd",
]

PathLike = str | Path
P = ParamSpec("P")
TimeOrigin = datetime | str | int | None
Units = Literal["ft", "m", "px"]
TimeUnit = Literal["s", "ms", "us", "ns", "iso"]

FT_PER_M = 1.0 / 0.3048
"""Feet per metre: the international foot is exactly 0.3048 m."""

EVENT_COLUMNS = ("sensor_id", "traveler_id", "traveler_type", "ts_us", "x_ft", "y_ft")
"""Columns of an event frame, in :class:`Event` field order."""

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "sensor_id": pl.Int64(),
    "traveler_id": pl.String(),
    "traveler_type": pl.String(),
    "ts_us": pl.Int64(),
    "x_ft": pl.Float64(),
    "y_ft": pl.Float64(),
    "speed_fps": pl.Float64(),
}
"""Schema of :func:`load_frame`'s result; ``speed_fps`` is null where the dataset has none."""

FORMATS = ("ngsim_peachtree", "ngsim_us101", "eth_ucy", "sdd", "av2", "csv")
"""Format names accepted by ``format=`` and returned by :func:`detect_format`."""

RELATIVE_TIME_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
"""Default origin of datasets whose clock is relative (ETH/UCY, Stanford Drone)."""

_US_PER_S = 1_000_000

# ------------------------------------------------------------------ NGSIM Peachtree
PEACHTREE_SENSOR_BASE = 1000
PEACHTREE_PERIOD_STARTS: dict[int, datetime] = {
    1163018600: datetime(2006, 11, 8, 17, 45, tzinfo=UTC),  # 12:45 EST
    1163030300: datetime(2006, 11, 8, 21, 0, tzinfo=UTC),  # 16:00 EST
}
"""Period base (``Global_Time - 100 * Frame_ID``) -> start of the recording period (UTC).

Assumption (PROVENANCE: "which offset is the 12:45 and which the 16:00 period cannot be read
from this file"): the smaller base is the 12:45-13:00 EST period, the larger the 16:00-16:15
one; both on 2006-11-08 (EST = UTC-5).
"""
_PEACHTREE_TYPES = {1: "motorcycle", 2: "car", 3: "truck"}
_PEACHTREE_REQUIRED = ("Vehicle_ID", "Frame_ID", "Global_Time", "Local_X", "Local_Y", "v_Class")

# ------------------------------------------------------------------ NGSIM US-101
US101_SENSOR_ID = 2000
US101_TRAVELER_TYPE = "vehicle"
_US101_REQUIRED = ("Vehicle_ID", "Frame_ID", "Global_Time", "local_x(m)", "local_y(m)")

# ------------------------------------------------------------------ ETH / UCY
ETH_UCY_SEQUENCES: dict[str, tuple[int, Fraction]] = {
    # sequence: (sensor_id, seconds per video frame)
    "seq_eth": (3001, Fraction(4, 60)),  # one annotation = 6 frames = 0.4 s
    "seq_hotel": (3002, Fraction(1, 25)),  # 25 fps, one annotation = 10 frames
    "zara01": (3003, Fraction(1, 25)),
    "zara02": (3004, Fraction(1, 25)),
    "zara03": (3005, Fraction(1, 25)),
    "students001": (3006, Fraction(1, 25)),
    "students003": (3007, Fraction(1, 25)),
    "uni_examples": (3008, Fraction(1, 25)),
}
"""ETH/UCY sequence -> (sensor_id, seconds per frame). PROVENANCE: seq_eth ``frame x 0.4/6`` s,
the others ``frame x 0.04`` s."""

# ------------------------------------------------------------------ Stanford Drone
SDD_SCENES = ("bookstore", "coupa", "deathCircle", "gates", "hyang", "little", "nexus", "quad")
"""The eight SDD scenes; the index is part of the sensor id (``4000 + 100 * index + video``)."""
SDD_FPS = 30
_SDD_TYPES = {
    "pedestrian": "pedestrian",
    "biker": "bicycle",
    "car": "car",
    "bus": "bus",
    "skater": "skater",
    "cart": "cart",
}
_SDD_COLUMNS = ("track_id", "xmin", "ymin", "xmax", "ymax", "frame", "lost", "occluded", "generated", "label")
_SDD_SCALE_FILES = ("estimated_scales_subset.json", "estimated_scales.json")
_SDD_NAME = re.compile(r"^(?P<scene>[A-Za-z]+)_video(?P<video>\d+)$")

# ------------------------------------------------------------------ Argoverse 2
AV2_SENSOR_ID = 5000
AV2_TIMESTEP_NS = 100_000_000  # 10 Hz
_AV2_TYPES = {
    "vehicle": "car",
    "bus": "bus",
    "pedestrian": "pedestrian",
    "cyclist": "bicycle",
    "motorcyclist": "motorcycle",
}
_AV2_REQUIRED = ("track_id", "object_type", "timestep", "position_x", "position_y", "start_timestamp")


# ======================================================================= helpers
def _origin_us(origin: TimeOrigin, default: datetime | None = None) -> int:
    """Time origin -> UTC epoch microseconds. int = epoch us; str = ISO 8601; datetime (naive =
    UTC); None = ``default`` (None: the epoch)."""
    if origin is None:
        return 0 if default is None else ts_to_us(default)
    if isinstance(origin, datetime):
        return ts_to_us(origin)
    if isinstance(origin, str):
        try:
            return parse_timestamp(origin)
        except EventError as exc:
            raise InputError(f"time_origin {origin!r}: {exc.detail}") from None
    if isinstance(origin, int) and not isinstance(origin, bool):
        return origin
    raise InputError(f"time_origin must be a datetime, ISO string or epoch microseconds: {origin!r}")


def _check_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or directory: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    return p


def _header(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return fh.readline()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _require(df: pl.DataFrame, cols: Iterable[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")


def _read_polars_csv(path: Path, **kwargs: Any) -> pl.DataFrame:
    try:
        return pl.read_csv(path, **kwargs)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot parse as CSV: {first_line(exc)}") from None


def _finish(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Cast to :data:`EVENT_SCHEMA`, validate the contract's bounds, sort by event time."""
    if "speed_fps" not in df.columns:
        df = df.with_columns(speed_fps=pl.lit(None, dtype=pl.Float64))
    df = df.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
    nulls = df.select(pl.col(c).null_count() for c in EVENT_COLUMNS).row(0)
    if any(nulls):
        bad = [c for c, n in zip(EVENT_COLUMNS, nulls, strict=True) if n]
        raise InputError(f"{source}: empty values in {', '.join(bad)}")
    if df.height:
        stats = df.select(
            ts_min=pl.col("ts_us").min(),
            ts_max=pl.col("ts_us").max(),
            sid_min=pl.col("sensor_id").min(),
            xy_ok=(pl.col("x_ft").is_finite() & pl.col("y_ft").is_finite()).all(),
            xy_max=pl.max_horizontal(pl.col("x_ft").abs().max(), pl.col("y_ft").abs().max()),
            id_len=pl.col("traveler_id").str.len_chars().max(),
            id_min=pl.col("traveler_id").str.strip_chars().str.len_chars().min(),
        ).row(0, named=True)
        if stats["ts_min"] < MIN_TS_US or stats["ts_max"] >= MAX_TS_US:
            raise InputError(
                f"{source}: event times outside 1970..2100 "
                f"({stats['ts_min']}..{stats['ts_max']} us); wrong time unit or origin?"
            )
        if stats["sid_min"] < 0:
            raise InputError(f"{source}: negative sensor_id")
        if not stats["xy_ok"] or stats["xy_max"] > MAX_ABS_COORD_FT:
            raise InputError(f"{source}: positions not finite or beyond 1e7 ft; wrong units or scale?")
        if stats["id_len"] > MAX_ID_LEN or stats["id_min"] < 1:
            raise InputError(f"{source}: traveler ids must have 1..{MAX_ID_LEN} characters")
    return df.sort(["ts_us", "sensor_id", "traveler_id"], maintain_order=True)


def events_from_frame(df: pl.DataFrame, *, chunk_rows: int = 65_536) -> Iterator[Event]:
    """Yield one :class:`Event` per row of an event frame, in the frame's order.

    Args:
        df: a frame with at least :data:`EVENT_COLUMNS` (as from :func:`load_frame`).
        chunk_rows: rows converted to Python objects at a time (bounds memory).
    """
    sel = df.select(EVENT_COLUMNS)
    for chunk in sel.iter_slices(chunk_rows):
        cols = [chunk.get_column(c).to_list() for c in EVENT_COLUMNS]
        for sid, tid, ttype, ts, x, y in zip(*cols, strict=True):
            yield Event(sid, tid, ttype, ts, x, y)


def _call_with(fn: Callable[..., pl.DataFrame], *args: Any, **opts: Any) -> pl.DataFrame:
    """Call a loader with only the options it accepts (used when a directory mixes formats)."""
    accepted = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in opts.items() if k in accepted})


def _frames_to_us(frame: Any, frame_s: Fraction) -> Any:
    """``frame x frame_s`` seconds in microseconds, rounded to the nearest (half up) in exact
    integer arithmetic; ``frame`` is an int64 NumPy array or a Polars expression."""
    us = frame_s * _US_PER_S
    return (frame * (2 * us.numerator) + us.denominator) // (2 * us.denominator)


def _each_file(
    select: Callable[[Path], list[Path]] | None = None, what: str = "files"
) -> Callable[
    [Callable[Concatenate[Path, P], pl.DataFrame]],
    Callable[Concatenate[PathLike | Sequence[PathLike], P], pl.DataFrame],
]:
    """Let a loader of one file also take a list of files and, given ``select`` (the files of
    a directory that it reads), a directory: each file is read and checked on its own, then
    the frames are merged and sorted into one. ``what`` names the files in errors."""

    def decorate(
        load: Callable[Concatenate[Path, P], pl.DataFrame],
    ) -> Callable[Concatenate[PathLike | Sequence[PathLike], P], pl.DataFrame]:
        @functools.wraps(load)
        def load_any(path: PathLike | Sequence[PathLike], *args: P.args, **kwargs: P.kwargs) -> pl.DataFrame:
            if isinstance(path, (list, tuple)):
                files = [_check_file(f) for f in path]
                if not files:
                    raise InputError(f"no {what} given")
                source = files[0].parent
            else:
                source = Path(path)
                if select is None or not source.is_dir():
                    return load(_check_file(source), *args, **kwargs)
                files = select(source)
                if not files:
                    raise InputError(f"{source}: no {what}")
            if len(files) == 1:
                return load(files[0], *args, **kwargs)
            return _finish(pl.concat([load(f, *args, **kwargs) for f in files]), str(source))

        sig = inspect.signature(load)
        first, *rest = sig.parameters.values()
        load_any.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[first.replace(annotation="PathLike | Sequence[PathLike]"), *rest]
        )
        return load_any

    return decorate


def _reader(load: Callable[P, pl.DataFrame]) -> Callable[P, Iterator[Event]]:
    """The public ``read_*`` of a loader: the same arguments, checks and docstring, but it
    returns the loaded frame's events (:func:`events_from_frame`) instead of the frame."""

    @functools.wraps(load)
    def read(*args: P.args, **kwargs: P.kwargs) -> Iterator[Event]:
        return events_from_frame(load(*args, **kwargs))

    read.__name__ = read.__qualname__ = load.__name__.replace("_load_", "read_")
    read.__signature__ = inspect.signature(load).replace(return_annotation="Iterator[Event]")  # type: ignore[attr-defined]
    return read


# ======================================================================= NGSIM Peachtree
@_each_file()
def _load_ngsim_peachtree(path: Path, *, sensor_id: int | None = None) -> pl.DataFrame:
    """Read the NGSIM Peachtree Street export (``NGSIM.csv``), sorted by event time.

    Mapping (``ngsim_peachtree_sample/PROVENANCE.md``):

    * traveler_id ``f"{Global_Time - 100*Frame_ID}-{Vehicle_ID}"`` (period base + id: Vehicle_ID
      restarts per recording period), e.g. ``"1163030300-352"``.
    * traveler_type from ``v_Class``: 1 motorcycle, 2 car, 3 truck (anything else: vehicle).
    * sensor_id ``1000 + Section_ID`` (no per-row camera in the data) unless ``sensor_id``.
    * x_ft, y_ft = ``Local_X``, ``Local_Y`` (ft, front centre of the vehicle; no conversion).
    * ts_us = period start + ``Frame_ID x 100 ms``; period start per
      :data:`PEACHTREE_PERIOD_STARTS` (smaller base -> 2006-11-08T17:45:00Z, larger ->
      2006-11-08T21:00:00Z: a documented assumption). ``Global_Time`` is not an epoch value.

    The file is **not** sorted; the result is. Raises InputError for a missing file, missing
    columns, another NGSIM location, or more than two recording periods.
    """
    df = _read_polars_csv(path, infer_schema_length=None)
    _require(df, _PEACHTREE_REQUIRED, path)
    if "Location" in df.columns:
        locs = set(df.get_column("Location").cast(pl.String).str.to_lowercase().unique().to_list())
        if locs - {"peachtree"}:
            raise InputError(f"{path}: only the Peachtree export is supported (Location {sorted(locs)})")
    df = df.with_columns(
        _base=(pl.col("Global_Time").cast(pl.Int64) - 100 * pl.col("Frame_ID").cast(pl.Int64)),
    )
    bases = sorted(df.get_column("_base").unique().to_list())
    if all(b in PEACHTREE_PERIOD_STARTS for b in bases):
        starts = {b: ts_to_us(PEACHTREE_PERIOD_STARTS[b]) for b in bases}
    elif len(bases) <= 2:
        # Unknown bases: same rule as the known ones, by rank (smaller = 12:45 EST period).
        ordered = sorted(PEACHTREE_PERIOD_STARTS.values())
        starts = {b: ts_to_us(ordered[i]) for i, b in enumerate(bases)}
    else:
        raise InputError(f"{path}: {len(bases)} recording periods; expected at most 2")
    if sensor_id is None:
        if "Section_ID" in df.columns:
            sid_expr = PEACHTREE_SENSOR_BASE + pl.col("Section_ID").cast(pl.Int64)
        else:
            sid_expr = pl.lit(PEACHTREE_SENSOR_BASE + 1, dtype=pl.Int64)
    else:
        sid_expr = pl.lit(sensor_id, dtype=pl.Int64)
    out = df.select(
        sensor_id=sid_expr,
        traveler_id=pl.format("{}-{}", pl.col("_base"), pl.col("Vehicle_ID").cast(pl.Int64)),
        traveler_type=pl.col("v_Class").cast(pl.Int64).replace_strict(_PEACHTREE_TYPES, default="vehicle"),
        ts_us=pl.col("_base").replace_strict(starts, return_dtype=pl.Int64)
        + pl.col("Frame_ID").cast(pl.Int64) * 100_000,
        x_ft=pl.col("Local_X").cast(pl.Float64),
        y_ft=pl.col("Local_Y").cast(pl.Float64),
        speed_fps=pl.col("v_Vel").cast(pl.Float64) if "v_Vel" in df.columns else pl.lit(None, pl.Float64),
    )
    return _finish(out, str(path))


read_ngsim_peachtree = _reader(_load_ngsim_peachtree)


# ======================================================================= NGSIM US-101
@_each_file(lambda d: sorted(f for f in d.glob("*.csv") if _detect_file(f) == "ngsim_us101"),
            "NGSIM US-101 vehicle CSV files")  # fmt: skip
def _load_ngsim_us101(
    path: Path, *, sensor_id: int = US101_SENSOR_ID, traveler_type: str = US101_TRAVELER_TYPE
) -> pl.DataFrame:
    """Read NGSIM US-101 per-vehicle CSVs (a directory, one file, or a list of files).

    Mapping (``ngsim_us101_vehiclewise_subset/PROVENANCE.md``):

    * traveler_id = ``Vehicle_ID`` (one vehicle per file), traveler_type ``"vehicle"``:
      ``v_Class`` was dropped by the third-party conversion, so the type is unknown (cars,
      trucks and motorcycles are all possible); override with ``traveler_type``.
    * sensor_id 2000. x_ft, y_ft = ``local_x(m)``, ``local_y(m)`` / 0.3048.
    * ts_us = ``Global_Time`` (epoch milliseconds, UTC) x 1000.

    Raises InputError for a missing path, a directory without such files, or missing columns.
    """
    df = _read_polars_csv(path, infer_schema_length=None)
    _require(df, _US101_REQUIRED, path)
    out = df.select(
        sensor_id=pl.lit(sensor_id, dtype=pl.Int64),
        traveler_id=pl.col("Vehicle_ID").cast(pl.Int64).cast(pl.String),
        traveler_type=pl.lit(traveler_type),
        ts_us=pl.col("Global_Time").cast(pl.Int64) * 1000,
        x_ft=pl.col("local_x(m)").cast(pl.Float64) * FT_PER_M,
        y_ft=pl.col("local_y(m)").cast(pl.Float64) * FT_PER_M,
        speed_fps=(
            pl.col("v_Vel(m)").cast(pl.Float64) * FT_PER_M if "v_Vel(m)" in df.columns else pl.lit(None, pl.Float64)
        ),
    )
    return _finish(out, str(path))


read_ngsim_us101 = _reader(_load_ngsim_us101)


# ======================================================================= ETH / UCY
def _eth_sequence(path: Path) -> str:
    stem = path.name
    if stem == "obsmat.txt":
        name = path.parent.name
    else:
        name = re.sub(r"[_-]?obsmat\.txt$", "", stem)
    for seq in ETH_UCY_SEQUENCES:
        if name == seq or name.endswith("_" + seq):
            return seq
    return name


@_each_file(lambda d: sorted(f for f in d.rglob("*obsmat*.txt") if f.is_file()), "ETH/UCY obsmat files")
def _load_eth_ucy(
    path: Path,
    *,
    sequence: str | None = None,
    sensor_id: int | None = None,
    frame_s: float | Fraction | None = None,
    time_origin: TimeOrigin = None,
) -> pl.DataFrame:
    """Read ETH/UCY ``obsmat.txt`` files (one file, a list of files, or every ``*obsmat*.txt`` under a directory).

    Mapping (``eth_ucy/PROVENANCE.md``); columns ``frame ped_id pos_x pos_z pos_y v_x v_z v_y``:

    * traveler_id ``f"{sequence}:{ped_id}"`` (ids restart per sequence), e.g. ``"seq_eth:1"``;
      traveler_type ``"pedestrian"``.
    * sequence from the file name (``eth_seq_eth_obsmat.txt`` -> ``seq_eth``) or, for the
      OpenTraj layout ``.../seq_eth/obsmat.txt``, the folder; sensor_id and frame duration from
      :data:`ETH_UCY_SEQUENCES` (3001..3008).
    * x_ft, y_ft = ``pos_x``, ``pos_y`` (m) / 0.3048.
    * ts_us = origin + frame x (0.4/6 s for seq_eth, 0.04 s otherwise), rounded to the nearest
      microsecond; origin :data:`RELATIVE_TIME_ORIGIN` unless ``time_origin`` (datetime, ISO
      string, or epoch microseconds). The data has no absolute clock.
    * ground truth ``hypot(v_x, v_y)`` m/s -> ft/s (annotation-derived).

    Raises InputError for a missing path, an unknown sequence without ``sensor_id`` and
    ``frame_s``, or a file that is not 8 numeric columns.
    """
    seq = sequence or _eth_sequence(path)
    known = ETH_UCY_SEQUENCES.get(seq)
    if known is None and (sensor_id is None or frame_s is None):
        raise InputError(f"{path}: unknown ETH/UCY sequence {seq!r}; pass sequence=, or sensor_id= and frame_s=")
    sid = sensor_id if sensor_id is not None else known[0]  # type: ignore[index]
    fs = Fraction(frame_s).limit_denominator(1_000_000) if frame_s is not None else known[1]  # type: ignore[index]
    try:
        a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: not an obsmat file: {first_line(exc)}") from None
    if not a.size:
        a = a.reshape(0, 8)  # an empty file: no rows
    if a.shape[1] != 8:
        raise InputError(f"{path}: expected 8 columns (frame ped_id pos_x pos_z pos_y v_x v_z v_y), got {a.shape[1]}")
    frames = a[:, 0]
    if not np.all(frames == np.round(frames)) or not np.all(a[:, 1] == np.round(a[:, 1])):
        raise InputError(f"{path}: frame and pedestrian id must be integers")
    origin = _origin_us(time_origin, RELATIVE_TIME_ORIGIN)
    fr = frames.astype(np.int64)
    ts = origin + _frames_to_us(fr, fs)
    df = pl.DataFrame(
        {
            "sensor_id": np.full(len(fr), sid, dtype=np.int64),
            "traveler_id": pl.Series(a[:, 1].astype(np.int64)).cast(pl.String),
            "traveler_type": ["pedestrian"] * len(fr),
            "ts_us": ts,
            "x_ft": a[:, 2] * FT_PER_M,
            "y_ft": a[:, 4] * FT_PER_M,
            "speed_fps": np.hypot(a[:, 5], a[:, 7]) * FT_PER_M,
        },
    ).with_columns(traveler_id=pl.lit(seq + ":") + pl.col("traveler_id"))
    return _finish(df, str(path))


read_eth_ucy = _reader(_load_eth_ucy)


# ======================================================================= Stanford Drone
def _sdd_name(path: Path) -> str:
    if path.name == "annotations.txt":
        return f"{path.parent.parent.name}_{path.parent.name}"
    return re.sub(r"[_-]?annotations\.txt$", "", path.name)


def _sdd_scale(path: Path, name: str, scales_path: PathLike | None) -> float:
    candidates = (
        [Path(scales_path)]
        if scales_path is not None
        else [d / n for d in (path.parent, *list(path.parents)[1:3]) for n in _SDD_SCALE_FILES]
    )
    for c in candidates:
        if c.is_file():
            try:
                table = json.loads(c.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"{c}: not a JSON scale file: {exc}") from None
            entry = table.get(name)
            if isinstance(entry, Mapping) and "meters_per_pixel" in entry:
                return float(entry["meters_per_pixel"])
            if isinstance(entry, (int, float)):
                return float(entry)
            if scales_path is not None:
                raise InputError(f"{c}: no meters_per_pixel for {name!r}")
    raise InputError(f"{path}: no pixel scale for {name!r}; pass px_scale_m= or scales_path=")


def _sdd_sensor_id(name: str, path: Path) -> int:
    m = _SDD_NAME.match(name)
    if not m or m.group("scene") not in SDD_SCENES or int(m.group("video")) >= 100:
        raise InputError(f"{path}: cannot derive an SDD sensor id from {name!r}; pass sensor_id=")
    return 4000 + 100 * SDD_SCENES.index(m.group("scene")) + int(m.group("video"))


@_each_file(lambda d: sorted(f for f in d.rglob("*annotations.txt") if f.is_file()), "Stanford Drone annotation files")
def _load_sdd(
    path: Path,
    *,
    px_scale_m: float | None = None,
    scales_path: PathLike | None = None,
    sensor_id: int | None = None,
    time_origin: TimeOrigin = None,
    drop_occluded: bool = False,
    flip_y: bool = True,
) -> pl.DataFrame:
    """Read Stanford Drone Dataset annotation files (one file, a list of files, or all under a directory).

    Mapping (``stanford_drone_subset/PROVENANCE.md``); columns
    ``track_id xmin ymin xmax ymax frame lost occluded generated "label"``:

    * rows with ``lost = 1`` (object outside the view) are dropped; occluded and generated
      (interpolated) boxes are kept, as PROVENANCE says (``drop_occluded=True`` drops occluded).
    * traveler_id ``f"{scene}_{video}:{track_id}"``, e.g. ``"nexus_video5:3"``; traveler_type:
      Pedestrian -> pedestrian, Biker -> bicycle, Car -> car, Bus -> bus, Skater -> skater,
      Cart -> cart (other labels lower-cased).
    * sensor_id ``4000 + 100 x scene index in SDD_SCENES + video number`` (one drone camera per
      video) unless ``sensor_id``.
    * position = box centre: ``x_ft = (xmin+xmax)/2 x m_per_px / 0.3048`` and
      ``y_ft = -(ymin+ymax)/2 x m_per_px / 0.3048`` (image y points down; it is negated for a
      right-handed frame unless ``flip_y=False``). ``m_per_px`` from ``px_scale_m``, else the
      ``meters_per_pixel`` of ``<scene>_<video>`` in ``estimated_scales_subset.json`` (or
      ``estimated_scales.json``) next to the file or up to two folders above, or ``scales_path``.
    * ts_us = origin + frame / 30 s (nearest microsecond); origin :data:`RELATIVE_TIME_ORIGIN`
      unless ``time_origin``. No ground-truth speed.

    Raises InputError for a missing path, no scale, or an unparseable file.
    """
    name = _sdd_name(path)
    sid = sensor_id if sensor_id is not None else _sdd_sensor_id(name, path)
    scale_m = float(px_scale_m) if px_scale_m is not None else _sdd_scale(path, name, scales_path)
    if not (math.isfinite(scale_m) and scale_m > 0):
        raise InputError(f"{path}: pixel scale must be a positive number of metres, got {scale_m!r}")
    df = _read_polars_csv(
        path,
        separator=" ",
        has_header=False,
        new_columns=list(_SDD_COLUMNS),
        quote_char='"',
        schema_overrides={"label": pl.String},
    )
    if df.width != len(_SDD_COLUMNS):
        raise InputError(f"{path}: expected 10 space-separated columns, got {df.width}")
    keep = pl.col("lost") == 0
    if drop_occluded:
        keep = keep & (pl.col("occluded") == 0)
    ft_per_px = scale_m * FT_PER_M
    sign = -1.0 if flip_y else 1.0
    origin = _origin_us(time_origin, RELATIVE_TIME_ORIGIN)
    label = pl.col("label").str.strip_chars().str.to_lowercase()
    out = df.filter(keep).select(
        sensor_id=pl.lit(sid, dtype=pl.Int64),
        traveler_id=pl.lit(name + ":") + pl.col("track_id").cast(pl.String),
        traveler_type=label.replace_strict(_SDD_TYPES, default=label),
        ts_us=origin + _frames_to_us(pl.col("frame").cast(pl.Int64), Fraction(1, SDD_FPS)),
        x_ft=(pl.col("xmin") + pl.col("xmax")).cast(pl.Float64) / 2.0 * ft_per_px,
        y_ft=sign * (pl.col("ymin") + pl.col("ymax")).cast(pl.Float64) / 2.0 * ft_per_px,
    )
    return _finish(out, str(path))


read_sdd = _reader(_load_sdd)


# ======================================================================= Argoverse 2
@_each_file(
    lambda d: sorted(f for f in d.rglob("*.csv") if f.is_file() and _detect_file(f) == "av2"),
    "Argoverse 2 scenario CSV files",
)
def _load_av2(path: Path, *, sensor_id: int = AV2_SENSOR_ID, keep_other: bool = False) -> pl.DataFrame:
    """Read Argoverse 2 scenario CSVs (one file, a list of files, or all under a directory).

    Mapping (``argoverse2_scenario_sample/PROVENANCE.md``):

    * traveler_id = ``track_id`` (the autonomous vehicle itself is track ``"AV"``, a vehicle);
      traveler_type: vehicle -> car, bus -> bus, pedestrian -> pedestrian, cyclist -> bicycle,
      motorcyclist -> motorcycle. static, background, construction, riderless_bicycle and
      unknown objects are dropped, or kept as ``"other"`` with ``keep_other=True``.
    * sensor_id 5000: the AV's sensor suite, one moving sensor; positions are in the city map
      frame, so they are comparable within one city.
    * x_ft, y_ft = ``position_x``, ``position_y`` (m) / 0.3048.
    * ts_us = (``start_timestamp`` + ``timestep`` x 100,000,000 ns) // 1000. The timestamp is
      written as a float string (``3.15986559459579e+17``); it is parsed exactly as a decimal,
      never through a float64 (which would be off by up to 64 ns). It is the AV's clock
      (around 1980-01-06, a GPS-like epoch), not wall-clock time.
    * ground truth ``hypot(velocity_x, velocity_y)`` m/s -> ft/s.

    Raises InputError for a missing path, missing columns, or unparseable values.
    """
    # Every column as text: track ids mix digits and "AV"; timestamps must not pass through float.
    df = _read_polars_csv(path, infer_schema=False)
    _require(df, _AV2_REQUIRED, path)
    # start_timestamp (ns, parsed exactly) floored to microseconds; + timestep x 100 ms is exact
    start_us = _time_to_us(df.get_column("start_timestamp"), "ns", 0, str(path))
    otype = pl.col("object_type").str.strip_chars().str.to_lowercase()
    mapped = otype.replace_strict(_AV2_TYPES, default=pl.lit("other") if keep_other else None)
    try:
        out = (
            df.with_columns(_type=mapped, _start_us=start_us)
            .filter(pl.col("_type").is_not_null())
            .select(
                sensor_id=pl.lit(sensor_id, dtype=pl.Int64),
                traveler_id=pl.col("track_id").str.strip_chars(),
                traveler_type=pl.col("_type"),
                ts_us=pl.col("_start_us") + pl.col("timestep").cast(pl.Int64) * (AV2_TIMESTEP_NS // 1000),
                x_ft=pl.col("position_x").cast(pl.Float64) * FT_PER_M,
                y_ft=pl.col("position_y").cast(pl.Float64) * FT_PER_M,
                speed_fps=(
                    (pl.col("velocity_x").cast(pl.Float64).pow(2) + pl.col("velocity_y").cast(pl.Float64).pow(2)).sqrt()
                    * FT_PER_M
                    if {"velocity_x", "velocity_y"} <= set(df.columns)
                    else pl.lit(None, pl.Float64)
                ),
            )
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: bad value in an Argoverse 2 column: {first_line(exc)}") from None
    return _finish(out, str(path))


read_av2 = _reader(_load_av2)


# ======================================================================= generic CSV
_INT_RE = r"^[+-]?\d+$"
_UNIT_US = {"s": (1_000_000, 1), "ms": (1_000, 1), "us": (1, 1), "ns": (1, 1_000)}
"""Numeric time unit -> microseconds per unit, as an exact ``(numerator, denominator)``."""
_SPEED_FPS = {"fps": 1.0, "mps": FT_PER_M, "mph": 5280.0 / 3600.0, "kmh": 1000.0 * FT_PER_M / 3600.0}
"""Speed unit -> ft/s per unit."""
_INT64_SAFE = 2**62  # |microseconds| beyond this are far outside 1970..2100 and near int64 overflow


def _time_to_us(col: pl.Series, unit: str, origin_us: int, source: str) -> pl.Series:
    """Parse a text time column exactly to UTC epoch microseconds.

    ``iso``: ISO 8601 by the event contract's rule (:func:`sensorlake.events.parse_timestamp`).
    Numeric units: ``origin_us`` + value x unit, **floored** to whole microseconds; integers in
    int64, decimals (``1.25``, ``3.1e+17``) as ``Decimal``, never through float64.
    """
    s = col.cast(pl.String).str.strip_chars()
    if unit == "iso":
        table: dict[str, int] = {}
        for raw in s.unique().drop_nulls().to_list():
            try:
                table[raw] = parse_timestamp(raw)
            except EventError as exc:
                raise InputError(f"{source}: time {raw[:40]!r}: {exc.detail}") from None
        return s.replace_strict(table, return_dtype=pl.Int64)
    if unit not in _UNIT_US:
        raise InputError(f"time_unit must be one of s, ms, us, ns, iso; got {unit!r}")
    num, den = _UNIT_US[unit]
    out_of_range = InputError(f"{source}: times in column {col.name!r} outside 1970..2100 (time_unit={unit!r})")
    if s.str.contains(_INT_RE).all():
        ints = s.cast(pl.Int64, strict=False)  # null: beyond int64
        limit = _INT64_SAFE // num  # beyond it int64 arithmetic would wrap around silently
        if ints.null_count() > s.null_count() or ((ints > limit) | (ints < -limit)).any():
            raise out_of_range
        return ints * num // den + origin_us  # floor division: exact
    # Decimal strings: exact decimal arithmetic per distinct value.
    table = {}
    for raw in s.unique().drop_nulls().to_list():
        try:
            d = Decimal(raw)
        except InvalidOperation:
            raise InputError(f"{source}: {col.name} {raw[:40]!r} is not a number (time_unit={unit!r})") from None
        if not d.is_finite():
            raise InputError(f"{source}: {col.name} {raw[:40]!r} is not finite")
        table[raw] = int((d * num / den).to_integral_value(rounding=ROUND_FLOOR)) + origin_us
        if abs(table[raw]) > _INT64_SAFE:
            raise out_of_range
    return s.replace_strict(table, return_dtype=pl.Int64)


def _load_csv(
    path: PathLike,
    *,
    traveler_id: str,
    x: str,
    y: str,
    time: str,
    traveler_type: str = "unknown",
    sensor_id: int | str = 0,
    units: Units = "ft",
    px_scale_m: float | None = None,
    time_unit: TimeUnit = "s",
    time_origin: TimeOrigin = None,
    separator: str = ",",
    aliases: Mapping[str, str] | None = None,
    speed: str | None = None,
    speed_unit: Literal["fps", "mps", "mph", "kmh"] = "fps",
) -> pl.DataFrame:
    """Read any CSV with a header, given which column holds what. Sorted by event time.

    Args:
        path: the CSV file (header row required).
        traveler_id: column of the traveler id (read as text, verbatim but stripped).
        x, y: columns of the position, in ``units``.
        time: column of the event time, in ``time_unit``.
        traveler_type: a column name if the header has it, else a constant type for every
            row (default ``"unknown"``). Normalised with :func:`sensorlake.events.normalise_type`
            and ``aliases``.
        sensor_id: an ``int`` constant, or the name of a column of integers (>= 0).
        units: ``"ft"`` (as is), ``"m"`` (/ 0.3048) or ``"px"`` (x ``px_scale_m`` / 0.3048).
        px_scale_m: metres per pixel; required with ``units="px"``.
        time_unit: ``"s"``, ``"ms"``, ``"us"``, ``"ns"`` - numbers relative to ``time_origin``
            (default: the Unix epoch, i.e. epoch times) - or ``"iso"`` (ISO 8601 text: an
            offset is applied, a naive time is UTC, exactly as the event contract).
        time_origin: datetime, ISO string, or epoch microseconds added to numeric times.
        separator: the field separator.
        aliases: traveler-type aliases (``Settings.traveler_type_aliases``).
        speed, speed_unit: optional column of the traveler's own speed, in ``fps``, ``mps``,
            ``mph`` or ``kmh``: it fills ``speed_fps`` of :func:`load_frame` and
            :func:`ground_truth_speeds` (events carry no speed).

    Notes:
        Numeric times are parsed from the text exactly (integers as int64, decimals as
        ``Decimal``), multiplied by the unit and **floored** to whole microseconds, the same
        truncation the event contract applies: ``1.0000019`` s -> 1,000,001 us; ``1999`` ns
        -> 1 us; ``-1`` ns -> -1 us. Never through float64, so epoch nanoseconds keep all digits.

    Raises:
        InputError: missing file or column, unknown unit, unparseable number or time, values
            outside the contract (times outside 1970..2100, ``|x|, |y| > 1e7`` ft), empty cells.

    Examples:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp(); f = os.path.join(d, "t.csv")
        >>> _ = open(f, "w").write("id,t,x,y\\nb1,1.5,1,2\\n")
        >>> e = next(read_csv(f, traveler_id="id", x="x", y="y", time="t", units="m", sensor_id=7))
        >>> (e.sensor_id, e.traveler_id, e.ts_us, round(e.x_ft, 6))
        (7, 'b1', 1500000, 3.28084)
    """
    p = _check_file(path)
    if units == "ft":
        ft_per_unit = 1.0
    elif units == "m":
        ft_per_unit = FT_PER_M
    elif units == "px":
        if px_scale_m is None or not (px_scale_m > 0 and math.isfinite(px_scale_m)):
            raise InputError("units='px' needs px_scale_m > 0 (metres per pixel)")
        ft_per_unit = px_scale_m * FT_PER_M
    else:
        raise InputError(f"units must be ft, m or px; got {units!r}")
    if speed_unit not in _SPEED_FPS:
        raise InputError(f"speed_unit must be one of {', '.join(_SPEED_FPS)}; got {speed_unit!r}")
    if time_unit == "iso" and time_origin is not None:
        raise InputError("time_origin applies to numeric time units only, not 'iso'")
    df = _read_polars_csv(p, infer_schema=False, separator=separator)
    cols = set(df.columns)
    needed = [traveler_id, x, y, time] + ([sensor_id] if isinstance(sensor_id, str) else []) + ([speed] if speed else [])
    _require(df, needed, p)
    origin = _origin_us(time_origin)
    if isinstance(sensor_id, bool):
        raise InputError("sensor_id must be an int constant or a column name")
    if isinstance(sensor_id, int):
        sid = pl.lit(sensor_id, dtype=pl.Int64)
    else:
        if not df.get_column(sensor_id).drop_nulls().str.strip_chars().str.contains(_INT_RE).all():
            raise InputError(f"{p}: column {sensor_id!r} must hold integer sensor ids")
        sid = pl.col(sensor_id).str.strip_chars().cast(pl.Int64)
    if traveler_type in cols:
        raw_types = df.get_column(traveler_type).drop_nulls().unique().to_list()
        type_map = {t: normalise_type(t, aliases) for t in raw_types}
        ttype = pl.col(traveler_type).replace_strict(type_map, return_dtype=pl.String)
    else:
        ttype = pl.lit(normalise_type(traveler_type, aliases))
    try:
        out = df.select(
            sensor_id=sid,
            traveler_id=pl.col(traveler_id).str.strip_chars(),
            traveler_type=ttype,
            ts_us=_time_to_us(df.get_column(time), time_unit, origin, str(p)),
            x_ft=pl.col(x).str.strip_chars().cast(pl.Float64) * ft_per_unit,
            y_ft=pl.col(y).str.strip_chars().cast(pl.Float64) * ft_per_unit,
            speed_fps=(
                pl.col(speed).str.strip_chars().cast(pl.Float64) * _SPEED_FPS[speed_unit]
                if speed
                else pl.lit(None, pl.Float64)
            ),
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{p}: bad value: {first_line(exc)}") from None
    return _finish(out, str(p))


read_csv = _reader(_load_csv)


# ======================================================================= detection
_LOADERS: dict[str, Callable[..., pl.DataFrame]] = {
    "ngsim_peachtree": _load_ngsim_peachtree,
    "ngsim_us101": _load_ngsim_us101,
    "eth_ucy": _load_eth_ucy,
    "sdd": _load_sdd,
    "av2": _load_av2,
    "csv": _load_csv,
}


def _detect_file(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith("obsmat.txt"):
        return "eth_ucy"
    if name.endswith("annotations.txt"):
        first = _header(path).strip()
        return "sdd" if (not first or first.endswith('"')) else None
    if name.endswith(".csv"):
        header = {h.strip().strip('"') for h in _header(path).strip().split(",")}
        if {"Vehicle_ID", "Frame_ID", "Local_X", "Local_Y", "v_Class"} <= header:
            return "ngsim_peachtree"
        if {"Vehicle_ID", "Global_Time", "local_x(m)", "local_y(m)"} <= header:
            return "ngsim_us101"
        if {"track_id", "object_type", "timestep", "position_x", "start_timestamp"} <= header:
            return "av2"
    return None


def detect_format(path: PathLike) -> str:
    """Name the dataset format of a file, or of the files directly or deeper in a directory.

    Returns one of :data:`FORMATS` (never ``"csv"``: a generic CSV needs a column mapping), or
    ``"mixed"`` for a directory holding several formats.

    Raises:
        InputError: the path does not exist, or nothing in it is recognised.
    """
    groups = _scan(Path(path))
    return next(iter(groups)) if len(groups) == 1 else "mixed"


def _scan(p: Path) -> dict[str, list[Path]]:
    if not p.exists():
        raise InputError(f"no such file or directory: {p}")
    if p.is_file():
        fmt = _detect_file(p)
        if fmt is None:
            raise InputError(f"unrecognised input format: {p} (use read_csv with a column mapping)")
        return {fmt: [p]}
    groups: dict[str, list[Path]] = {}
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        fmt = _detect_file(f)
        if fmt is not None:
            groups.setdefault(fmt, []).append(f)
    if not groups:
        raise InputError(f"no recognised trajectory files under {p}")
    return groups


def load_frame(path: PathLike, *, format: str | None = None, **opts: Any) -> pl.DataFrame:
    """Load a file or directory into one event frame, sorted by event time.

    Args:
        path: a dataset file, or a directory (searched recursively; files that are not
            recognised, such as PROVENANCE.md, are ignored; several datasets are merged).
        format: force a format from :data:`FORMATS` instead of detecting it. ``"csv"`` (the
            generic reader) is also chosen when ``traveler_id=`` is among ``opts``.
        **opts: options of the matching ``read_*`` function (``time_origin``, ``sensor_id``,
            ``px_scale_m``, ``keep_other``, ...). For a directory mixing formats, each reader
            gets the options it accepts. The generic CSV format also takes ``speed=`` (a
            column) and ``speed_unit=`` (``fps``, ``mps``, ``mph``, ``kmh``) to fill
            ``speed_fps``.

    Returns:
        A frame with :data:`EVENT_SCHEMA`: ``sensor_id``, ``traveler_id``, ``traveler_type``,
        ``ts_us`` (UTC epoch us), ``x_ft``, ``y_ft`` and ``speed_fps`` (the dataset's ground
        truth in ft/s, null where it has none).

    Raises:
        InputError: missing path, unrecognised format, unknown option, bad content.
    """
    p = Path(path)
    if format is None and "traveler_id" in opts:
        format = "csv"
    if format is not None:
        if format not in _LOADERS:
            raise InputError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
        if not p.exists():
            raise InputError(f"no such file or directory: {p}")
        params = inspect.signature(_LOADERS[format]).parameters
        unknown = (set(opts) - set(params)) | ({"path"} & set(opts))
        if unknown:
            raise InputError(f"unknown option(s) for {format}: {', '.join(sorted(unknown))}")
        missing = [n for n, q in params.items() if q.kind is q.KEYWORD_ONLY and q.default is q.empty and n not in opts]
        if missing:
            raise InputError(f"format {format} needs option(s): {', '.join(missing)}")
        return _LOADERS[format](p, **opts)
    groups = _scan(p)
    accepted = set().union(*(inspect.signature(_LOADERS[f]).parameters for f in groups)) - {"path"}
    unknown = set(opts) - accepted
    if unknown:
        raise InputError(f"unknown option(s) for {', '.join(groups)}: {', '.join(sorted(unknown))}")
    frames = [_call_with(_LOADERS[fmt], files, **opts) for fmt, files in groups.items()]
    if len(frames) == 1:
        return frames[0]
    return _finish(pl.concat(frames), str(p))


def open_source(path: PathLike, *, format: str | None = None, **opts: Any) -> Iterator[Event]:
    """Detect the dataset at ``path`` and return its events in event-time order.

    The path is read and validated **now** (errors are raised by this call, not by the first
    ``next``); events are then converted lazily. See :func:`load_frame` for ``format`` and
    ``opts``.

    Raises:
        InputError: missing path or unrecognised format, with a one-line message.
    """
    return events_from_frame(load_frame(path, format=format, **opts))


def ground_truth_speeds(path: PathLike, *, format: str | None = None, **opts: Any) -> pl.DataFrame:
    """The dataset's own speed per observation, for checking computed speeds.

    Returns:
        A frame ``sensor_id, traveler_id, ts_us, speed_fps`` (ft/s) sorted like the events:
        NGSIM Peachtree ``v_Vel`` (ft/s), NGSIM US-101 ``v_Vel(m)`` (m/s -> ft/s), ETH/UCY
        ``hypot(v_x, v_y)``, Argoverse 2 ``hypot(velocity_x, velocity_y)`` (m/s -> ft/s).

    Raises:
        InputError: as :func:`load_frame`, or when the dataset has no speed column (SDD).
    """
    df = load_frame(path, format=format, **opts)
    out = df.filter(pl.col("speed_fps").is_not_null()).select("sensor_id", "traveler_id", "ts_us", "speed_fps")
    if df.height and not out.height:
        raise InputError(f"{path}: the dataset has no ground-truth speed")
    return out
