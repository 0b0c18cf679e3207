"""The lake's tables: one explicit Arrow schema per table, and the DDL that creates them.

Every write goes through these schemas: ids as strings (``sensor_id`` as int64, the
contract's type), positions and speeds as float64, event time as
``timestamp[us, tz=UTC]``. ``movements`` is partitioned by the UTC day of ``ts``
(DuckLake ``year/month/day`` transforms); ``sensor_id`` is a data column, not a directory.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

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
    ]
)

_DUCK_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    TS: "TIMESTAMPTZ",
}


def ddl(table: str, schema: pa.Schema) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement for ``table`` (qualified) from an Arrow schema.

    Raises:
        KeyError: the schema has an Arrow type with no DuckDB mapping here.
    """
    cols = ", ".join(
        f"{f.name} {_DUCK_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}" for f in schema
    )
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"


TABLES: dict[str, pa.Schema] = {
    "movements": MOVEMENTS_SCHEMA,
    "ingest_offsets": INGEST_OFFSETS_SCHEMA,
    "window_stats": WINDOW_STATS_SCHEMA,
}
