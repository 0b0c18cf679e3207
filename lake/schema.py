"""The lake's tables: one explicit Arrow schema per table, and the DDL that creates them.

Every write goes through these schemas: ids as strings (``sensor_id`` as int64, the
contract's type), positions and speeds as float64, event time as
``timestamp[us, tz=UTC]``. ``movements`` is partitioned by the UTC day of ``ts``
(DuckLake ``year/month/day`` transforms); ``sensor_id`` is a data column, not a directory.

Raw tables: ``movements`` (events) and ``ingest_offsets`` (the consumers' next offsets).
Derived tables (:data:`DERIVED_TABLES`, written only by ``transforms``): ``window_stats``
(1/5/15-minute sliding windows), ``speed_bins`` (5-mph histograms of windows and roll-ups),
``rollup_stats`` (hour and day roll-ups), ``peak_hour`` (peak hour factor per day) and
``occupancy_grid`` (seconds per 5-ft cell per hour). The definitions are in
:mod:`transforms.windows` and :mod:`transforms.measures`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


def as_utc(ts: datetime) -> datetime:
    """An aware UTC datetime: a naive one is taken as UTC, an aware one is converted.

    The one rule for time bounds everywhere (readers, transforms, the CLI).

    >>> as_utc(datetime(2026, 11, 30, 14, 0)).isoformat()
    '2026-11-30T14:00:00+00:00'
    """
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)

MOVEMENTS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_id", pa.string(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("x_ft", pa.float64(), nullable=False),
        pa.field("y_ft", pa.float64(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)

INGEST_OFFSETS_SCHEMA = pa.schema(
    [
        pa.field("consumer_group", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("next_offset", pa.int64(), nullable=False),
        pa.field("committed_at", TS, nullable=False),
    ]
)

WINDOW_STATS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("window_start", TS, nullable=False),
        pa.field("window_end", TS, nullable=False),
        pa.field("window_s", pa.int32(), nullable=False),
        pa.field("volume", pa.int64(), nullable=False),
        pa.field("speed_samples", pa.int64(), nullable=False),
        pa.field("mean_speed_fps", pa.float64()),
        pa.field("p85_speed_fps", pa.float64()),
        pa.field("mean_speed_mph", pa.float64()),
        pa.field("p85_speed_mph", pa.float64()),
        # added with the traffic measures (issue 5); older lakes get them by ALTER TABLE
        pa.field("step_s", pa.int32()),
        pa.field("speed_sum_fps", pa.float64()),
        pa.field("speed_min_fps", pa.float64()),
        pa.field("speed_max_fps", pa.float64()),
        pa.field("mode_share", pa.float64()),
        pa.field("dwell_s", pa.float64()),
        pa.field("dwell_visits", pa.int64()),
    ]
)

# 5-mph speed histogram per sensor, traveler type and period: sliding windows (window_s 60,
# 300, 900) and roll-ups (3600, 86400). Only bins with at least one visit are stored.
SPEED_BINS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("window_start", TS, nullable=False),
        pa.field("window_end", TS, nullable=False),
        pa.field("window_s", pa.int32(), nullable=False),
        pa.field("bin_mph", pa.int32(), nullable=False),
        pa.field("visits", pa.int64(), nullable=False),
    ]
)

# hour (3600) and day (86400) roll-ups merged from stored 15-minute rows
ROLLUP_STATS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("period_start", TS, nullable=False),
        pa.field("period_end", TS, nullable=False),
        pa.field("period_s", pa.int32(), nullable=False),
        pa.field("windows", pa.int64(), nullable=False),
        pa.field("volume", pa.int64(), nullable=False),
        pa.field("speed_samples", pa.int64(), nullable=False),
        pa.field("speed_sum_fps", pa.float64()),
        pa.field("speed_min_fps", pa.float64()),
        pa.field("speed_max_fps", pa.float64()),
        pa.field("mean_speed_fps", pa.float64()),
        pa.field("mean_speed_mph", pa.float64()),
        pa.field("p85_speed_mph_binned", pa.float64()),
        pa.field("mode_share", pa.float64()),
        pa.field("dwell_s", pa.float64()),
        pa.field("dwell_visits", pa.int64()),
    ]
)

# peak hour and peak hour factor per sensor, traveler type ("all" = every type) and UTC day
PEAK_HOUR_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("day_start", TS, nullable=False),
        pa.field("peak_start", TS, nullable=False),
        pa.field("peak_end", TS, nullable=False),
        pa.field("peak_hour_volume", pa.int64(), nullable=False),
        pa.field("max_15min_volume", pa.int64(), nullable=False),
        pa.field("phf", pa.float64()),
    ]
)

# time spent per 5-ft cell of the sensor's frame, per sensor, traveler type and UTC hour
OCCUPANCY_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("hour_start", TS, nullable=False),
        pa.field("cell_x_ft", pa.float64(), nullable=False),
        pa.field("cell_y_ft", pa.float64(), nullable=False),
        pa.field("occupancy_s", pa.float64(), nullable=False),
        pa.field("observations", pa.int64(), nullable=False),
        pa.field("travelers", pa.int64(), nullable=False),
    ]
)

_DUCK_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    TS: "TIMESTAMPTZ",
}


def ddl_type(typ: pa.DataType) -> str:
    """The DuckDB type of an Arrow type used in these schemas (``KeyError`` for others)."""
    return _DUCK_TYPES[typ]


def ddl(table: str, schema: pa.Schema) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement for ``table`` (qualified) from an Arrow schema.

    Raises:
        KeyError: the schema has an Arrow type with no DuckDB mapping here.
    """
    cols = ", ".join(f"{f.name} {ddl_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema)
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"


TABLES: dict[str, pa.Schema] = {
    "movements": MOVEMENTS_SCHEMA,
    "ingest_offsets": INGEST_OFFSETS_SCHEMA,
    "window_stats": WINDOW_STATS_SCHEMA,
    "speed_bins": SPEED_BINS_SCHEMA,
    "rollup_stats": ROLLUP_STATS_SCHEMA,
    "peak_hour": PEAK_HOUR_SCHEMA,
    "occupancy_grid": OCCUPANCY_SCHEMA,
}

# tables the transforms derive from ``movements`` (rebuilt by backfills; never hand-written)
DERIVED_TABLES: tuple[str, ...] = ("window_stats", "speed_bins", "rollup_stats", "peak_hour", "occupancy_grid")
