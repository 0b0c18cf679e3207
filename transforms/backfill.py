"""Backfill the derived tables for a time range: compute, then replace the range atomically.

Jobs (``--job NAME``; all of them by default, in this order):

=============  ==========================================================================
``windows``    ``lake.window_stats`` and ``lake.speed_bins`` for sliding windows of 1, 5
               and 15 minutes (:data:`transforms.windows.DEFAULT_WINDOWS_S`)
``rollups``    ``lake.rollup_stats`` and the hour/day ``lake.speed_bins``, merged from the
               stored 15-minute rows, then from the stored hours
``peak_hour``  ``lake.peak_hour``: peak hour and peak hour factor per sensor, type and day
``occupancy``  ``lake.occupancy_grid``: time per 5-ft cell per sensor, type and hour
=============  ==========================================================================

Order of one run:

1. validate the arguments (aware datetimes, naive = UTC; ``start < end``; known jobs,
   engine, window lengths and a step that divides them);
2. pin the lake's current snapshot; open ONE DuckLake transaction;
3. delete, per table, the periods whose start lies in ``[start floored to the period, end)``:
   windows of each length from ``start`` floored to their step, hours from ``start``
   floored to the hour, days from ``start`` floored to the UTC day;
4. per UTC day (so a month-long backfill holds one day of events at a time): read
   ``lake.movements`` of the snapshot for the day's windows and hours plus ``visit_gap_s``
   on both sides, rebuild visits and segments by event time (:mod:`transforms.segments`),
   compute windows, speed bins and occupancy with the chosen engine, insert. Empty
   windows are zero rows for every (sensor, type) observed on that UTC day, so a day gets
   the same rows whether it is backfilled whole or hour by hour;
5. roll the stored 15-minute rows (the ones just written included) up to hours, the stored
   hours up to days, and compute each day's peak hour; insert;
6. commit. A crash before the commit leaves the old rows; after it, the new.

Re-running a range on the same snapshot writes identical rows (floats are summed in a
fixed order), so backfills are idempotent and overlapping scheduled runs are safe. The run
never reads the lake's data directory directly.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lake.catalog import LAKE, connect
from lake.reader import (
    current_snapshot,
    read_movements,
    read_pairs,
    read_rollups,
    read_speed_bins,
)
from lake.schema import DERIVED_TABLES, TABLES, ddl_type
from sensorlake.errors import InputError, RetryableError, ServiceError, first_line
from sensorlake.settings import Settings
from transforms import duckdb_job, polars_job
from transforms.measures import part_bins, parts_from_rollups, parts_from_windows
from transforms.segments import VisitsSegments, build_visits_segments
from transforms.windows import (
    BASE_WINDOW_S,
    DEFAULT_WINDOWS_S,
    WindowGrid,
    as_utc,
    floor_to_step,
    step_for,
    window_starts,
)

log = logging.getLogger(__name__)

Engine = Literal["duckdb", "polars"]
ENGINES: tuple[str, ...] = ("duckdb", "polars")
JOBS: tuple[str, ...] = ("windows", "rollups", "peak_hour", "occupancy")
HOUR_S = 3600
DAY_S = 86400


@dataclasses.dataclass(frozen=True)
class Engines:
    """The functions of one engine (the DuckDB and the Polars ones give the same rows)."""

    windows: Callable[..., pa.Table]
    speed_bins: Callable[..., pa.Table]
    rollup: Callable[..., tuple[pa.Table, pa.Table]]
    peak_hour: Callable[..., pa.Table]
    occupancy: Callable[..., pa.Table]


ENGINE_FUNCTIONS: dict[str, Engines] = {
    "duckdb": Engines(
        duckdb_job.compute_windows_duckdb,
        duckdb_job.compute_speed_bins_duckdb,
        duckdb_job.rollup_duckdb,
        duckdb_job.peak_hour_duckdb,
        duckdb_job.occupancy_duckdb,
    ),
    "polars": Engines(
        polars_job.compute_windows_polars,
        polars_job.compute_speed_bins_polars,
        polars_job.rollup_polars,
        polars_job.peak_hour_polars,
        polars_job.occupancy_polars,
    ),
}


@dataclasses.dataclass(frozen=True)
class TableResult:
    """Rows of one lake table replaced by a run."""

    table: str
    rows_deleted: int
    rows_written: int


@dataclasses.dataclass(frozen=True)
class TransformResult:
    """What one :func:`run_transform` did.

    Attributes:
        engine: ``"duckdb"`` or ``"polars"``.
        jobs: the jobs run, in order.
        range_start: the requested start, UTC.
        range_end: the requested end, UTC (periods start before it).
        windows_s: window lengths computed (s); ``step_s`` the configured step (s), each
            length slides by ``min(step_s, window_s)``.
        windows: number of windows computed, all lengths together.
        chunks: UTC days processed one at a time.
        read_start, read_end: event-time range read from ``lake.movements`` (all chunks).
        source_snapshot: the DuckLake snapshot the events were read from.
        events_read, visits, segments: input sizes (all chunks).
        tables: rows replaced per table.
        rows_deleted, rows_written: totals over ``tables``.
        elapsed_s: wall time of the run (s).
    """

    engine: str
    jobs: tuple[str, ...]
    range_start: datetime
    range_end: datetime
    windows_s: tuple[int, ...]
    step_s: int
    windows: int
    chunks: int
    read_start: datetime | None
    read_end: datetime | None
    source_snapshot: int
    events_read: int
    visits: int
    segments: int
    tables: tuple[TableResult, ...]
    elapsed_s: float

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)

    @property
    def rows_written(self) -> int:
        return sum(t.rows_written for t in self.tables)

    def written(self, table: str) -> int:
        """Rows written to ``table`` (0 when the run did not touch it)."""
        return sum(t.rows_written for t in self.tables if t.table == table)

    def summary(self) -> str:
        """A few human-readable lines for the CLI."""
        head = (
            f"{self.range_start:%Y-%m-%d %H:%M} .. {self.range_end:%Y-%m-%d %H:%M} UTC, {self.engine}, "
            f"jobs {','.join(self.jobs)}, snapshot {self.source_snapshot}: {self.events_read:,} events, "
            f"{self.visits:,} visits in {self.chunks} day chunk(s), {self.elapsed_s:.2f} s"
        )
        lines = [head] + [
            f"  lake.{t.table}: replaced {t.rows_deleted:,} rows with {t.rows_written:,}" for t in self.tables
        ]
        return "\n".join(lines)


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


def validate_jobs(jobs: Sequence[str] | None) -> tuple[str, ...]:
    """The jobs to run in :data:`JOBS` order; None = all.

    Raises:
        InputError: an unknown job name, or none.
    """
    if jobs is None:
        return JOBS
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        raise InputError(f"unknown job(s) {', '.join(map(repr, unknown))}: use {', '.join(JOBS)}")
    picked = tuple(j for j in JOBS if j in set(jobs))
    if not picked:
        raise InputError("no job given")
    return picked


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
    return ENGINE_FUNCTIONS[engine].windows(data, grid), data


def _grids(s: datetime, e: datetime, windows_s: Sequence[int], step_s: int) -> dict[int, WindowGrid]:
    try:
        return {w: WindowGrid.build(s, e, window_s=w, step_s=step_for(w, step_s)) for w in windows_s}
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _end_of_last(e: datetime, period_s: int) -> datetime:
    """End of the last period (of ``period_s``) that starts before ``e``."""
    return floor_to_step(e - timedelta(microseconds=1), period_s) + timedelta(seconds=period_s)


def run_transform(
    settings: Settings,
    start: datetime,
    end: datetime,
    engine: Engine = "duckdb",
    *,
    jobs: Sequence[str] | None = None,
    windows_s: Sequence[int] | None = None,
    step_s: int | None = None,
) -> TransformResult:
    """Recompute the derived tables for ``[start, end)`` and replace that range in one transaction.

    Args:
        settings: lake location, ``window_step_s``, ``min_segment_s``, ``visit_gap_s``.
        start, end: the range; aware datetimes (naive = UTC). Each table's periods whose
            start lies in ``[start floored to the period, end)`` are replaced.
        engine: ``"duckdb"`` (SQL) or ``"polars"``; both give the same rows.
        jobs: names from :data:`JOBS`; None = all.
        windows_s: window lengths (s); None = 1, 5 and 15 minutes (plus
            ``settings.window_s`` when it is another length).
        step_s: sliding step (s); None = ``settings.window_step_s``. A length slides by
            ``min(step_s, window_s)``, which must divide it.

    Returns:
        A :class:`TransformResult`.

    Raises:
        InputError: bad range, engine, job, window length or step.
        RetryableError: another writer committed a conflicting change; re-run.
        ServiceError: the lake cannot be opened or written.
    """
    t0 = time.monotonic()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    fns = ENGINE_FUNCTIONS[engine]
    picked = validate_jobs(jobs)
    s, e = validate_range(start, end)
    lengths = tuple(sorted({int(w) for w in (windows_s or (*DEFAULT_WINDOWS_S, settings.window_s))}))
    step = int(step_s if step_s is not None else settings.window_step_s)
    grids = _grids(s, e, lengths, step) if "windows" in picked else {}
    hour_lo, day_lo = floor_to_step(s, HOUR_S), floor_to_step(s, DAY_S)
    hour_hi, day_hi = _end_of_last(e, HOUR_S), _end_of_last(e, DAY_S)
    gap = timedelta(seconds=settings.visit_gap_s)

    con = connect(settings)
    try:
        _ensure_columns(con)
        snapshot = current_snapshot(con)
        w = _Writer(con)
        sizes = {"events": 0, "visits": 0, "segments": 0}
        read_lo: datetime | None = None
        read_hi: datetime | None = None
        chunks = 0
        try:
            con.execute("BEGIN TRANSACTION")
            # 3. delete every range first: the inserts below are then plain appends
            for length, grid in grids.items():
                for table in ("window_stats", "speed_bins"):
                    w.delete(table, "window_start", grid.first_start, e, "window_s", length)
            if "occupancy" in picked:
                w.delete("occupancy_grid", "hour_start", hour_lo, e)
            if "rollups" in picked:
                for period_s, lo in ((HOUR_S, hour_lo), (DAY_S, day_lo)):
                    w.delete("rollup_stats", "period_start", lo, e, "period_s", period_s)
                    w.delete("speed_bins", "window_start", lo, e, "window_s", period_s)
            if "peak_hour" in picked:
                w.delete("peak_hour", "day_start", day_lo, e)

            # 4. per UTC day: events -> visits/segments -> windows, bins, occupancy
            if grids or "occupancy" in picked:
                for day in window_starts(day_lo, e, DAY_S):
                    day_end = day + timedelta(days=1)
                    sub = {
                        n: WindowGrid(tuple(t for t in g.starts if day <= t < day_end), g.window_s, g.step_s)
                        for n, g in grids.items()
                    }
                    sub = {n: g for n, g in sub.items() if g.starts}
                    occ = (max(day, hour_lo), min(day_end, hour_hi)) if "occupancy" in picked else None
                    if occ is not None and occ[0] >= occ[1]:
                        occ = None
                    if not sub and occ is None:
                        continue
                    bounds = [(g.first_start, g.last_end) for g in sub.values()] + ([occ] if occ else [])
                    lo = min(b[0] for b in bounds) - gap
                    hi = max(b[1] for b in bounds) + gap
                    read_lo = lo if read_lo is None else min(read_lo, lo)
                    read_hi = hi if read_hi is None else max(read_hi, hi)
                    chunks += 1
                    events = read_movements(con, lo, hi, snapshot=snapshot)
                    sizes["events"] += events.num_rows
                    if sub:
                        data = build_visits_segments(
                            events, min_segment_s=settings.min_segment_s, visit_gap_s=settings.visit_gap_s
                        )
                        sizes["visits"] += data.visits.num_rows
                        sizes["segments"] += data.segments.num_rows
                        pairs = _day_pairs(con, events, (lo, hi), day, day_end, snapshot)
                        for grid in sub.values():
                            w.insert("window_stats", fns.windows(data, grid, pairs=pairs))
                            w.insert("speed_bins", fns.speed_bins(data, grid))
                    if occ is not None:
                        w.insert("occupancy_grid", fns.occupancy(events, *occ, visit_gap_s=settings.visit_gap_s))

            # 5. from the stored rows: 15 min -> hour -> day, and the peak hour of each day.
            # The stored quarters are read once: the peak hour needs whole days of them, the
            # hour roll-up the hours of the range (inside those days).
            quarters = None
            if "peak_hour" in picked:
                quarters = _read_quarters(con, "window_stats", day_lo, day_hi)
            if "rollups" in picked:
                hour_quarters = (
                    _read_quarters(con, "window_stats", hour_lo, hour_hi)
                    if quarters is None
                    else _between(quarters, "window_start", hour_lo, hour_hi)
                )
                hours, hour_bins = fns.rollup(
                    parts_from_windows(hour_quarters),
                    part_bins(_read_quarters(con, "speed_bins", hour_lo, hour_hi)),
                    HOUR_S,
                )
                w.insert("rollup_stats", hours)
                w.insert("speed_bins", hour_bins)
                # the stored hours of the days, the ones just written included
                stored_hours = read_rollups(con, day_lo, day_hi, period_s=HOUR_S)
                stored_bins = read_speed_bins(con, day_lo, day_hi, window_s=HOUR_S)
                days, day_bins = fns.rollup(parts_from_rollups(stored_hours), part_bins(stored_bins), DAY_S)
                w.insert("rollup_stats", days)
                w.insert("speed_bins", day_bins)
            if quarters is not None:
                w.insert("peak_hour", fns.peak_hour(quarters))
            con.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    except duckdb.TransactionException as exc:
        raise RetryableError(f"derived tables commit conflict, re-run: {first_line(exc)}") from None
    except duckdb.Error as exc:
        raise ServiceError(f"cannot write the derived tables: {first_line(exc)}") from None
    finally:
        con.close()

    result = TransformResult(
        engine=engine,
        jobs=picked,
        range_start=s,
        range_end=e,
        windows_s=lengths if grids else (),
        step_s=step,
        windows=sum(len(g.starts) for g in grids.values()),
        chunks=chunks,
        read_start=read_lo,
        read_end=read_hi,
        source_snapshot=snapshot,
        events_read=sizes["events"],
        visits=sizes["visits"],
        segments=sizes["segments"],
        tables=w.results(),
        elapsed_s=time.monotonic() - t0,
    )
    log.info("transform %s", result.summary())
    return result


class _Writer:
    """Deletes and inserts inside the caller's transaction, counting rows per table."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._counts: dict[str, list[int]] = {}

    def _count(self, table: str) -> list[int]:
        return self._counts.setdefault(table, [0, 0])

    def delete(
        self, table: str, column: str, lo: datetime, hi: datetime, kind: str | None = None, value: int | None = None
    ) -> None:
        # table and column names are constants of this module, never user input
        sql = f"DELETE FROM {LAKE}.{table} WHERE {column} >= ? AND {column} < ?"
        params: list = [lo, hi]
        if kind is not None:
            sql += f" AND {kind} = ?"
            params.append(int(value))
        # DELETE returns the row count; one matching nothing records no change in DuckLake
        n = self._con.execute(sql, params).fetchone()[0]
        self._count(table)[0] += int(n)

    def insert(self, table: str, rows: pa.Table) -> None:
        self._count(table)
        if rows.num_rows == 0:
            return
        cols = ", ".join(rows.schema.names)
        self._con.register("_sl_new_rows", rows)
        try:
            self._con.execute(f"INSERT INTO {LAKE}.{table} ({cols}) SELECT {cols} FROM _sl_new_rows")
        finally:
            self._con.unregister("_sl_new_rows")
        self._count(table)[1] += rows.num_rows

    def results(self) -> tuple[TableResult, ...]:
        return tuple(TableResult(t, d, i) for t, (d, i) in self._counts.items())


_QUARTER_US = BASE_WINDOW_S * 1_000_000
_QUARTER_ORDER = {
    "window_stats": "sensor_id, traveler_type, window_start",
    "speed_bins": "sensor_id, traveler_type, window_start, bin_mph",
}


def _read_quarters(con: duckdb.DuckDBPyConnection, table: str, lo: datetime, hi: datetime) -> pa.Table:
    """Stored rows of the tumbling 15-minute windows (``window_s = 900``, starting on a quarter
    hour) of ``window_stats`` or ``speed_bins`` with ``lo <= window_start < hi``."""
    sql = (
        f"SELECT * FROM {LAKE}.{table} WHERE window_s = ? AND window_start >= ? AND window_start < ? "
        f"AND epoch_us(window_start) % ? = 0 ORDER BY {_QUARTER_ORDER[table]}"
    )
    return con.execute(sql, [BASE_WINDOW_S, lo, hi, _QUARTER_US]).to_arrow_table()


def _between(rows: pa.Table, column: str, lo: datetime, hi: datetime) -> pa.Table:
    """The rows with ``lo <= column < hi``, in their order."""
    return rows.filter((pc.field(column) >= lo) & (pc.field(column) < hi))


def _day_pairs(
    con: duckdb.DuckDBPyConnection,
    events: pa.Table,
    read: tuple[datetime, datetime],
    day: datetime,
    day_end: datetime,
    snapshot: int,
) -> pa.Table:
    """Distinct ``(sensor_id, traveler_type)`` of ``lake.movements`` in ``[day, day_end)``: from
    ``events`` (read for ``read = [lo, hi)``) when they cover the whole day, else from the lake."""
    if read[0] <= day and day_end <= read[1]:
        pairs = _between(events, "ts", day, day_end).group_by(["sensor_id", "traveler_type"]).aggregate([])
        return pairs.sort_by([("sensor_id", "ascending"), ("traveler_type", "ascending")])
    return read_pairs(con, day, day_end, snapshot=snapshot)


def _ensure_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Add the columns a derived table gained since the lake was created (``ALTER TABLE``)."""
    for table in DERIVED_TABLES:
        have = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
                [LAKE, table],
            ).fetchall()
        }
        for f in TABLES[table]:
            if have and f.name not in have:
                con.execute(f"ALTER TABLE {LAKE}.{table} ADD COLUMN {f.name} {ddl_type(f.type)}")
