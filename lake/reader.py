"""Read snapshots of lake tables into Arrow, through DuckDB (never by globbing data files).

Globbing the data directory would see uncommitted, deleted and compacted-away files; DuckDB
reads exactly one DuckLake snapshot, including inlined rows and delete files. Every filter
is a bound parameter. Time bounds are half-open ``[start, end)``; naive datetimes are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import duckdb
import pyarrow as pa

from lake.catalog import LAKE
from lake.schema import MOVEMENTS_SCHEMA, TABLES, as_utc


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """Id of the lake's latest snapshot (pass it to the readers to pin a consistent view)."""
    row = con.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
    return int(row[0])


def at_snapshot(snapshot: int | None) -> str:
    """The ``AT (VERSION => n)`` clause that reads snapshot ``n``; ``""`` for None (the latest)."""
    # an int() cannot carry SQL: the only value formatted into a statement here
    return "" if snapshot is None else f" AT (VERSION => {int(snapshot)})"


def read_movements(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    snapshot: int | None = None,
) -> pa.Table:
    """Events of ``lake.movements`` with ``start <= ts < end`` as Arrow (``MOVEMENTS_SCHEMA``).

    Args:
        con: a connection from :func:`lake.catalog.connect` (read-only is enough).
        start, end: event-time bounds, half-open; naive = UTC.
        snapshot: DuckLake snapshot id to read (time travel); None = the latest.

    Returns:
        The events sorted by sensor_id, traveler_id, ts, kafka_partition, kafka_offset.
    """
    sql = (
        "SELECT sensor_id, traveler_id, traveler_type, ts, x_ft, y_ft, kafka_partition, kafka_offset "
        f"FROM {LAKE}.movements{at_snapshot(snapshot)} WHERE ts >= ? AND ts < ? "
        "ORDER BY sensor_id, traveler_id, ts, kafka_partition, kafka_offset"
    )
    table = con.execute(sql, [as_utc(start), as_utc(end)]).to_arrow_table()
    return table.cast(MOVEMENTS_SCHEMA)


def read_pairs(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime, *, snapshot: int | None = None
) -> pa.Table:
    """Distinct ``(sensor_id, traveler_type)`` of ``lake.movements`` with ``start <= ts < end``."""
    sql = (
        f"SELECT DISTINCT sensor_id, traveler_type FROM {LAKE}.movements{at_snapshot(snapshot)} "
        "WHERE ts >= ? AND ts < ? ORDER BY sensor_id, traveler_type"
    )
    return con.execute(sql, [as_utc(start), as_utc(end)]).to_arrow_table()


def _filters(sensor_ids: Sequence[int] | None, traveler_types: Sequence[str] | None) -> tuple[str, list]:
    """SQL of the sensor and type filters (constant text) and its bound parameters."""
    sensors = None if sensor_ids is None else [int(v) for v in sensor_ids]
    types = None if traveler_types is None else [str(v) for v in traveler_types]
    sql = (
        " AND (?::BIGINT[] IS NULL OR list_contains(?::BIGINT[], sensor_id))"
        " AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], traveler_type))"
    )
    return sql, [sensors, sensors, types, types]


def _read_derived(
    con: duckdb.DuckDBPyConnection,
    table: str,
    time_col: str,
    start: datetime,
    end: datetime,
    *,
    length: tuple[str, int] | None,
    sensor_ids: Sequence[int] | None,
    traveler_types: Sequence[str] | None,
    order: str,
    snapshot: int | None = None,
) -> pa.Table:
    """Rows of a derived table with ``start <= time_col < end``, ``length`` = ``(column, s)``
    when given, and the sensor/type filters; cast to the table's schema. ``table``,
    ``time_col``, ``length[0]`` and ``order`` are constants of this module, never user input."""
    where, params = _filters(sensor_ids, traveler_types)
    sql = f"SELECT * FROM {LAKE}.{table}{at_snapshot(snapshot)} WHERE {time_col} >= ? AND {time_col} < ?"
    args: list = [as_utc(start), as_utc(end)]
    if length is not None:
        sql += f" AND {length[0]} = ?"
        args.append(int(length[1]))
    sql += f"{where} ORDER BY {order}"
    return con.execute(sql, [*args, *params]).to_arrow_table().cast(TABLES[table])


def read_window_stats(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    window_s: int,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
    snapshot: int | None = None,
) -> pa.Table:
    """Rows of ``lake.window_stats`` with ``start <= window_start < end`` (``WINDOW_STATS_SCHEMA``).

    Args:
        window_s: only windows of this length (s).
        sensor_ids, traveler_types: keep only these; None = all (an empty list keeps none).
        snapshot: DuckLake snapshot id; None = the latest.

    Returns:
        Sorted by sensor_id, traveler_type, window_start.
    """
    return _read_derived(
        con, "window_stats", "window_start", start, end, length=("window_s", window_s),
        sensor_ids=sensor_ids, traveler_types=traveler_types,
        order="sensor_id, traveler_type, window_start", snapshot=snapshot,
    )  # fmt: skip


def window_stats_extent(con: duckdb.DuckDBPyConnection) -> dict:
    """What ``lake.window_stats`` holds, for filters: ``{"sensor_ids": [...],
    "traveler_types": [...], "window_s": [...], "min_start": datetime | None,
    "max_start": datetime | None}`` (one scan)."""
    sensors, types, sizes, lo, hi = con.execute(
        "SELECT list(DISTINCT sensor_id ORDER BY sensor_id), list(DISTINCT traveler_type ORDER BY traveler_type), "
        f"list(DISTINCT window_s ORDER BY window_s), min(window_start), max(window_start) FROM {LAKE}.window_stats"
    ).fetchone()
    return {"sensor_ids": sensors or [], "traveler_types": types or [], "window_s": sizes or [],
            "min_start": lo, "max_start": hi}  # fmt: skip


def read_speed_bins(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    window_s: int,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of ``lake.speed_bins`` (``SPEED_BINS_SCHEMA``) of periods of ``window_s`` starting in
    ``[start, end)``; sorted by sensor_id, traveler_type, window_start, bin_mph."""
    return _read_derived(
        con, "speed_bins", "window_start", start, end, length=("window_s", window_s),
        sensor_ids=sensor_ids, traveler_types=traveler_types,
        order="sensor_id, traveler_type, window_start, bin_mph",
    )  # fmt: skip


def read_rollups(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    period_s: int,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of ``lake.rollup_stats`` (``ROLLUP_STATS_SCHEMA``) of hours (3600) or days (86400)
    starting in ``[start, end)``; sorted by sensor_id, traveler_type, period_start."""
    return _read_derived(
        con, "rollup_stats", "period_start", start, end, length=("period_s", period_s),
        sensor_ids=sensor_ids, traveler_types=traveler_types, order="sensor_id, traveler_type, period_start",
    )  # fmt: skip


def read_peak_hours(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
) -> pa.Table:
    """Rows of ``lake.peak_hour`` (``PEAK_HOUR_SCHEMA``) of the UTC days starting in ``[start, end)``."""
    return _read_derived(
        con, "peak_hour", "day_start", start, end, length=None,
        sensor_ids=sensor_ids, traveler_types=traveler_types, order="sensor_id, traveler_type, day_start",
    )  # fmt: skip


def read_occupancy(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    sensor_id: int,
    traveler_types: Sequence[str] | None = None,
) -> pa.Table:
    """The occupancy grid of one sensor, summed over the hours starting in ``[start, end)`` and
    over ``traveler_types`` (None = all).

    Returns:
        ``cell_x_ft, cell_y_ft, occupancy_s, observations`` per 5-ft cell, sorted by cell.
    """
    where, params = _filters([int(sensor_id)], traveler_types)
    sql = (
        f"SELECT cell_x_ft, cell_y_ft, sum(occupancy_s ORDER BY hour_start, traveler_type) AS occupancy_s, "
        f"sum(observations)::BIGINT AS observations FROM {LAKE}.occupancy_grid "
        f"WHERE hour_start >= ? AND hour_start < ?{where} GROUP BY cell_x_ft, cell_y_ft ORDER BY cell_x_ft, cell_y_ft"
    )
    return con.execute(sql, [as_utc(start), as_utc(end), *params]).to_arrow_table()


def read_occupancy_hours(con: duckdb.DuckDBPyConnection, *, sensor_id: int | None = None) -> pa.Table:
    """Hours, sensors and types present in ``lake.occupancy_grid`` (for the app's filters)."""
    sql = (
        f"SELECT DISTINCT sensor_id, traveler_type, hour_start FROM {LAKE}.occupancy_grid "
        "WHERE (?::BIGINT IS NULL OR sensor_id = ?) ORDER BY ALL"
    )
    return con.execute(sql, [sensor_id, sensor_id]).to_arrow_table()


_PARTITION = re.compile(r"((?:[A-Za-z_]+=[^/]+/)+)[^/]+$")


def lake_files(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Data files per table and partition of the current snapshot (never by globbing).

    Returns:
        ``[{"table", "partition", "files", "bytes", "delete_files"}]``; ``partition`` is the
        Hive-style directory (``year=2026/month=11/day=30``) or ``""`` for unpartitioned files.
        Rows inlined in the catalog have no file and are not counted.
    """
    out: dict[tuple[str, str], dict] = {}
    for table in TABLES:
        try:
            rows = con.execute(
                f"SELECT data_file, data_file_size_bytes, delete_file FROM ducklake_list_files('{LAKE}', ?)", [table]
            ).fetchall()
        except duckdb.Error:
            continue  # a table this lake does not have yet
        for path, size, delete in rows:
            m = _PARTITION.search(path.replace("\\", "/"))
            part = m.group(1).rstrip("/") if m else ""
            d = out.setdefault((table, part), {"table": table, "partition": part, "files": 0, "bytes": 0, "delete_files": 0})
            d["files"] += 1
            d["bytes"] += int(size or 0)
            d["delete_files"] += 1 if delete else 0
    return [out[k] for k in sorted(out)]


def last_snapshots(con: duckdb.DuckDBPyConnection, n: int = 5) -> list[dict]:
    """The ``n`` latest snapshots: ``[{"snapshot_id", "snapshot_time", "changes"}]``, newest first."""
    rows = con.execute(
        f"SELECT snapshot_id, snapshot_time, changes FROM {LAKE}.snapshots() ORDER BY snapshot_id DESC LIMIT ?",
        [int(n)],
    ).fetchall()
    return [{"snapshot_id": r[0], "snapshot_time": r[1], "changes": r[2]} for r in rows]


def stored_offsets(
    con: duckdb.DuckDBPyConnection, topic: str, partitions: Sequence[int] | None = None
) -> dict[int, int]:
    """The next offset per Kafka partition of ``topic`` stored in ``lake.ingest_offsets``.

    Offsets belong to the topic, whichever consumer group wrote them: the lake holds one
    copy of a topic's events (``consumer_group`` records the last writer).

    Args:
        partitions: only these partitions; None = all. A partition with no row is absent.
    """
    rows = con.execute(
        f"SELECT kafka_partition, max(next_offset) FROM {LAKE}.ingest_offsets "
        "WHERE topic = ? GROUP BY kafka_partition",
        [topic],
    ).fetchall()
    out = {int(p): int(o) for p, o in rows}
    if partitions is not None:
        wanted = {int(p) for p in partitions}
        out = {p: o for p, o in out.items() if p in wanted}
    return out
