"""The lake for analysts: DuckDB connections and Polars frames, read-only.

Re-exported at the package root, so ``import lake`` is all a notebook needs; importing
connects to nothing. The lake is found from the ``SENSORLAKE_*`` environment (see
:class:`sensorlake.settings.Settings`) unless a ``settings`` object is passed: the
PostgreSQL catalog of the local stack by default, or a local catalog file with
``SENSORLAKE_CATALOG=path/to/catalog.ducklake``.

Tables (``lake.<name>``; :data:`TABLE_DOCS` says what each holds):
``movements``, ``ingest_offsets``, ``window_stats``, ``speed_bins``, ``rollup_stats``,
``peak_hour``, ``occupancy_grid``.

Examples:
    >>> import lake
    >>> con = lake.connect()  # DuckDB, the lake attached read-only as "lake"
    >>> con.sql("SELECT traveler_type, sum(volume) FROM lake.window_stats "
    ...         "WHERE window_s = 900 GROUP BY ALL").pl()  # doctest: +SKIP
    >>> lake.table("window_stats", window_s=900, sensor_ids=[1], con=con)  # doctest: +SKIP
    >>> lake.query("SELECT * FROM lake.peak_hour WHERE sensor_id = ?", [1], con=con)  # doctest: +SKIP

Notes:
    A connection from :func:`connect` sees the snapshot that was current when each
    statement starts; pass ``snapshot=`` to :func:`table` for time travel
    (``AT (VERSION => n)``). A local catalog file is locked by a process that has it open
    for writing (a consumer, a backfill): close read-only connections when done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from lake.catalog import LAKE
from lake.catalog import connect as _connect
from lake.reader import at_snapshot
from lake.readonly import run_readonly
from lake.schema import TABLES, as_utc
from sensorlake.errors import InputError, first_line
from sensorlake.settings import Settings

__all__ = ["TABLE_DOCS", "TIME_COLUMNS", "connect", "query", "run_limited", "table", "tables"]

TABLE_DOCS: dict[str, str] = {
    "movements": "raw events: sensor_id, traveler_id, traveler_type, ts, x_ft, y_ft, Kafka origin",
    "ingest_offsets": "next Kafka offset per topic and partition (consumer_group = last writer), committed with the events",
    "window_stats": "per sensor, type and sliding window (window_s 60/300/900): volume, speeds, p85, mode share, dwell",
    "speed_bins": "5-mph speed histogram per sensor, type and window or roll-up period (bin_mph = lower edge)",
    "rollup_stats": "hour (period_s 3600) and day (86400) roll-ups merged from the 15-minute rows",
    "peak_hour": "peak hour and peak hour factor per sensor, type ('all' = every type) and UTC day",
    "occupancy_grid": "seconds spent per 5-ft cell per sensor, type and UTC hour",
}

TIME_COLUMNS: dict[str, str] = {
    "movements": "ts",
    "ingest_offsets": "committed_at",
    "window_stats": "window_start",
    "speed_bins": "window_start",
    "rollup_stats": "period_start",
    "peak_hour": "day_start",
    "occupancy_grid": "hour_start",
}


def connect(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached read-only as ``lake``.

    Args:
        settings: where the lake is; None = ``Settings.from_env()``.

    Returns:
        An in-memory DuckDB connection (``TimeZone`` UTC); close it when done. Other files
        stay readable, so lake tables can be joined with local data.

    Raises:
        ServiceError: the lake cannot be opened (no catalog, server down).
    """
    return _connect(settings or Settings.from_env(), read_only=True)


def query(
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    settings: Settings | None = None,
) -> pl.DataFrame:
    """Run one SQL statement over the lake and return a Polars frame (via Arrow, zero copy).

    Args:
        sql: DuckDB SQL; tables are ``lake.<name>``. Put values in ``params`` (``?`` or
            ``$name``), never into the text.
        params: bound parameters.
        con: an open connection from :func:`connect`; None = open one and close it after.
        settings: used when ``con`` is None.

    Raises:
        InputError: the statement fails (one-line DuckDB message).
    """
    with _connection(con, settings) as c:
        try:
            return pl.from_arrow(c.execute(sql, params).to_arrow_table())
        except duckdb.Error as exc:
            raise InputError(first_line(exc)) from None


def table(
    name: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
    snapshot: int | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    settings: Settings | None = None,
    **equals: Any,
) -> pl.DataFrame:
    """Rows of one lake table as a Polars frame, filtered with bound parameters.

    Args:
        name: a table of :data:`TABLE_DOCS`.
        start, end: keep ``start <= time column < end`` (:data:`TIME_COLUMNS`; naive = UTC).
        sensor_ids, traveler_types: keep only these (None = all).
        snapshot: read this DuckLake snapshot (time travel); None = the latest.
        con, settings: as for :func:`query`.
        **equals: ``column=value`` equality filters, e.g. ``window_s=900``.

    Returns:
        The rows, sorted by every column.

    Raises:
        InputError: unknown table or column.

    Examples:
        >>> lake.table("rollup_stats", period_s=86400, sensor_ids=[2])  # doctest: +SKIP
    """
    if name not in TABLES:
        raise InputError(f"unknown table {name!r}: one of {', '.join(TABLES)}")
    columns = set(TABLES[name].names)
    unknown = [c for c in equals if c not in columns]
    if sensor_ids is not None and "sensor_id" not in columns:
        unknown.append("sensor_id")
    if traveler_types is not None and "traveler_type" not in columns:
        unknown.append("traveler_type")
    if unknown:
        raise InputError(f"lake.{name} has no column(s) {', '.join(unknown)}")
    where: list[str] = []
    params: list[Any] = []
    time_col = TIME_COLUMNS[name]
    if start is not None:
        where.append(f"{time_col} >= ?")
        params.append(as_utc(start))
    if end is not None:
        where.append(f"{time_col} < ?")
        params.append(as_utc(end))
    if sensor_ids is not None:
        where.append("list_contains(?::BIGINT[], sensor_id)")
        params.append([int(s) for s in sensor_ids])
    if traveler_types is not None:
        where.append("list_contains(?::VARCHAR[], traveler_type)")
        params.append([str(t) for t in traveler_types])
    for col, value in equals.items():  # col is a schema column name (checked above)
        where.append(f"{col} = ?")
        params.append(value)
    sql = f"SELECT * FROM {LAKE}.{name}{at_snapshot(snapshot)}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY ALL"
    return query(sql, params, con=con, settings=settings)


def tables(*, con: duckdb.DuckDBPyConnection | None = None, settings: Settings | None = None) -> pl.DataFrame:
    """The lake's tables with their row counts and what they hold (``name, rows, description``)."""
    with _connection(con, settings) as c:
        present = {
            r[0]
            for r in c.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE]).fetchall()
        }
        rows = []
        for name, doc in TABLE_DOCS.items():
            n = c.execute(f"SELECT count(*) FROM {LAKE}.{name}").fetchone()[0] if name in present else None
            rows.append({"name": name, "rows": n, "description": doc})
        return pl.DataFrame(rows, schema={"name": pl.String, "rows": pl.Int64, "description": pl.String})


def run_limited(
    settings: Settings,
    sql: str,
    *,
    max_rows: int = 1000,
    timeout_s: float = 10.0,
    memory_limit: str = "1GB",
) -> tuple[pa.Table, bool]:
    """Run untrusted ad-hoc SQL read-only, with row, time and memory limits (the app's SQL page).

    See :func:`lake.readonly.run_readonly`: exactly one SELECT, lake attached read-only, no
    file access outside the lake's data directory, configuration locked.

    Returns:
        ``(at most max_rows rows as Arrow, True when there were more)``.

    Raises:
        InputError: not a single SELECT, a failing statement, a refused file access, the time limit.
        ServiceError: the lake cannot be opened.
    """
    return run_readonly(settings, sql, max_rows=max_rows, timeout_s=timeout_s, memory_limit=memory_limit)


@contextmanager
def _connection(
    con: duckdb.DuckDBPyConnection | None, settings: Settings | None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """``con`` as is, or a new read-only connection (:func:`connect`) closed on exit."""
    if con is not None:
        yield con
        return
    own = connect(settings)
    try:
        yield own
    finally:
        own.close()
