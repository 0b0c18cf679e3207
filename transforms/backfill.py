"""Backfill ``lake.window_stats`` for a time range: compute, then replace the range atomically.

Order of one run:

1. validate the arguments (aware datetimes, naive = UTC; ``start < end``; a known engine);
2. build the window grid (:class:`transforms.windows.WindowGrid`): starts aligned to the step,
   the first one is ``start`` floored to ``Settings.window_step_s``, all ``< end``;
3. pin the lake's current snapshot and read ``lake.movements`` for the grid plus
   ``visit_gap_s`` on both sides (:func:`transforms.windows.read_bounds`) through DuckDB's
   Arrow output;
4. rebuild visits and segments by event time (:mod:`transforms.segments`);
5. aggregate with the chosen engine (DuckDB SQL or Polars; same rows);
6. in ONE DuckLake transaction: ``DELETE`` the rows of ``window_stats`` with
   ``window_s = Settings.window_s`` and ``window_start`` in ``[grid start, end)`` and
   ``INSERT`` the new ones. A crash before the commit leaves the old rows; after it, the new.

Re-running the same range on the same snapshot therefore writes identical rows and the same
row count (idempotent). The run never reads the lake's data directory directly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import duckdb
import pyarrow as pa

from lake.catalog import LAKE, connect
from lake.reader import current_snapshot, read_movements
from lake.schema import WINDOW_STATS_SCHEMA
from sensorlake.errors import InputError, RetryableError, ServiceError
from sensorlake.settings import Settings
from transforms.duckdb_job import compute_windows_duckdb
from transforms.polars_job import compute_windows_polars
from transforms.segments import VisitsSegments, build_visits_segments
from transforms.windows import WindowGrid, as_utc, read_bounds

log = logging.getLogger(__name__)

Engine = Literal["duckdb", "polars"]
ENGINES: tuple[str, ...] = ("duckdb", "polars")


@dataclasses.dataclass(frozen=True)
class TransformResult:
    """What one :func:`run_transform` did.

    Attributes:
        engine: ``"duckdb"`` or ``"polars"``.
        range_start: first window start (the requested start floored to the step), UTC.
        range_end: the requested end, UTC (windows start before it).
        window_s, step_s: window length and step (s).
        windows: number of windows in the range.
        read_start, read_end: event-time range read from ``lake.movements``.
        source_snapshot: the DuckLake snapshot the events were read from.
        events_read, visits, segments: input sizes.
        rows_deleted, rows_written: rows of ``lake.window_stats`` replaced.
        elapsed_s: wall time of the run (s).
    """

    engine: str
    range_start: datetime
    range_end: datetime
    window_s: int
    step_s: int
    windows: int
    read_start: datetime
    read_end: datetime
    source_snapshot: int
    events_read: int
    visits: int
    segments: int
    rows_deleted: int
    rows_written: int
    elapsed_s: float


def validate_range(start: object, end: object) -> tuple[datetime, datetime]:
    """``(start, end)`` as aware UTC datetimes (naive = UTC).

    Raises:
        InputError: not datetimes, or ``start >= end``.
    """
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise InputError("start and end must be datetimes (ISO 8601; naive = UTC)")
    s, e = as_utc(start), as_utc(end)
    if s >= e:
        raise InputError(f"start must be before end (got {s.isoformat()} >= {e.isoformat()})")
    return s, e


def compute_windows(
    events: pa.Table,
    grid: WindowGrid,
    *,
    min_segment_s: float,
    visit_gap_s: float,
    engine: Engine = "duckdb",
) -> tuple[pa.Table, VisitsSegments]:
    """Window statistics of ``events`` (``MOVEMENTS_SCHEMA`` rows) on ``grid`` with ``engine``.

    Returns:
        ``(window_stats rows with WINDOW_STATS_SCHEMA, the visits and segments used)``.
    """
    data = build_visits_segments(events, min_segment_s=min_segment_s, visit_gap_s=visit_gap_s)
    job: Callable[..., pa.Table] = compute_windows_duckdb if engine == "duckdb" else compute_windows_polars
    return job(data, grid), data


def run_transform(
    settings: Settings,
    start: datetime,
    end: datetime,
    engine: Engine = "duckdb",
) -> TransformResult:
    """Compute the windows of ``[start, end)`` and replace that range of ``lake.window_stats``.

    Args:
        settings: lake location, ``window_s``, ``window_step_s``, ``min_segment_s``,
            ``visit_gap_s``.
        start, end: the range; aware datetimes (naive = UTC). Windows start at ``start``
            floored to ``window_step_s`` and continue while their start is ``< end``.
        engine: ``"duckdb"`` (SQL) or ``"polars"``; both give the same rows.

    Returns:
        A :class:`TransformResult`.

    Raises:
        InputError: bad range or engine.
        RetryableError: another writer committed a conflicting change; re-run.
        ServiceError: the lake cannot be opened or written.
    """
    t0 = time.monotonic()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    s, e = validate_range(start, end)
    grid = WindowGrid.build(s, e, window_s=settings.window_s, step_s=settings.window_step_s)
    lo, hi = read_bounds(
        s, e, window_s=settings.window_s, step_s=settings.window_step_s, visit_gap_s=settings.visit_gap_s
    )
    con = connect(settings)
    try:
        snapshot = current_snapshot(con)
        events = read_movements(con, lo, hi, snapshot=snapshot)
        stats, data = compute_windows(
            events,
            grid,
            min_segment_s=settings.min_segment_s,
            visit_gap_s=settings.visit_gap_s,
            engine=engine,
        )
        deleted = _replace_range(con, stats, grid.first_start, e, grid.window_s)
    finally:
        con.close()
    result = TransformResult(
        engine=engine,
        range_start=grid.first_start,
        range_end=e,
        window_s=grid.window_s,
        step_s=grid.step_s,
        windows=len(grid.starts),
        read_start=lo,
        read_end=hi,
        source_snapshot=snapshot,
        events_read=events.num_rows,
        visits=data.visits.num_rows,
        segments=data.segments.num_rows,
        rows_deleted=deleted,
        rows_written=stats.num_rows,
        elapsed_s=time.monotonic() - t0,
    )
    log.info(
        "window_stats %s..%s (%d s windows, %s): %d events -> %d rows (replaced %d)",
        result.range_start.isoformat(),
        result.range_end.isoformat(),
        result.window_s,
        engine,
        result.events_read,
        result.rows_written,
        result.rows_deleted,
    )
    return result


def _replace_range(
    con: duckdb.DuckDBPyConnection, stats: pa.Table, start: datetime, end: datetime, window_s: int
) -> int:
    """DELETE the range and INSERT ``stats`` in one DuckLake transaction; returns rows deleted."""
    where = f"FROM {LAKE}.window_stats WHERE window_s = ? AND window_start >= ? AND window_start < ?"
    params = [int(window_s), start, end]
    cols = ", ".join(WINDOW_STATS_SCHEMA.names)
    con.register("_sl_window_stats_new", stats)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            deleted = con.execute(f"SELECT count(*) {where}", params).fetchone()[0]
            con.execute(f"DELETE {where}", params)
            con.execute(f"INSERT INTO {LAKE}.window_stats ({cols}) SELECT {cols} FROM _sl_window_stats_new")
            con.execute("COMMIT")
        except BaseException:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
            raise
    except duckdb.TransactionException as exc:
        raise RetryableError(f"window_stats commit conflict, re-run: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise ServiceError(f"cannot write lake.window_stats: {_first_line(exc)}") from None
    finally:
        con.unregister("_sl_window_stats_new")
    return int(deleted)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
