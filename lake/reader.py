"""Read snapshots of lake tables into Arrow, through DuckDB (never by globbing data files).

Globbing the data directory would see uncommitted, deleted and compacted-away files; DuckDB
reads exactly one DuckLake snapshot, including inlined rows and delete files. Every filter
is a bound parameter. Time bounds are half-open ``[start, end)``; naive datetimes are UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from lake.catalog import LAKE
from lake.schema import MOVEMENTS_SCHEMA, WINDOW_STATS_SCHEMA


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """Id of the lake's latest snapshot (pass it to the readers to pin a consistent view)."""
    row = con.execute(f"SELECT id FROM {LAKE}.current_snapshot()").fetchone()
    return int(row[0])


def _at(snapshot: int | None) -> str:
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
        f"FROM {LAKE}.movements{_at(snapshot)} WHERE ts >= ? AND ts < ? "
        "ORDER BY sensor_id, traveler_id, ts, kafka_partition, kafka_offset"
    )
    table = con.execute(sql, [_utc(start), _utc(end)]).to_arrow_table()
    return table.cast(MOVEMENTS_SCHEMA)


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
    sql = (
        f"SELECT * FROM {LAKE}.window_stats{_at(snapshot)} "
        "WHERE window_start >= ? AND window_start < ? AND window_s = ? "
        "AND (?::BIGINT[] IS NULL OR list_contains(?::BIGINT[], sensor_id)) "
        "AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], traveler_type)) "
        "ORDER BY sensor_id, traveler_type, window_start"
    )
    sensors = None if sensor_ids is None else [int(s) for s in sensor_ids]
    types = None if traveler_types is None else [str(t) for t in traveler_types]
    params = [_utc(start), _utc(end), int(window_s), sensors, sensors, types, types]
    return con.execute(sql, params).to_arrow_table().cast(WINDOW_STATS_SCHEMA)


def window_stats_extent(con: duckdb.DuckDBPyConnection) -> dict:
    """What ``lake.window_stats`` holds, for filters: ``{"sensor_ids": [...],
    "traveler_types": [...], "window_s": [...], "min_start": datetime | None,
    "max_start": datetime | None}``."""
    sensors = [r[0] for r in con.execute(f"SELECT DISTINCT sensor_id FROM {LAKE}.window_stats ORDER BY 1").fetchall()]
    types = [r[0] for r in con.execute(f"SELECT DISTINCT traveler_type FROM {LAKE}.window_stats ORDER BY 1").fetchall()]
    sizes = [r[0] for r in con.execute(f"SELECT DISTINCT window_s FROM {LAKE}.window_stats ORDER BY 1").fetchall()]
    lo, hi = con.execute(f"SELECT min(window_start), max(window_start) FROM {LAKE}.window_stats").fetchone()
    return {"sensor_ids": sensors, "traveler_types": types, "window_s": sizes, "min_start": lo, "max_start": hi}
