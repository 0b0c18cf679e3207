"""PostgreSQL adapter: per-traveler visit summaries (live metrics), upserted in batches.

Table ``traveler_summary``, one row per visit, primary key
``(sensor_id, traveler_id, first_seen)``. Rows are written as **absolute values** (the
current state, never increments), COPY-ed into a staging table and applied by one
``INSERT ... SELECT ... ON CONFLICT ... DO UPDATE ... WHERE``
the incoming row is newer (a higher Kafka offset of the same partition). Replaying any
part of the topic therefore changes nothing. The row holds the full kinematic state, so
a lost Redis cache is rebuilt from it (:meth:`PgSummarySink.fetch_latest`).

Table ``consumer_metrics`` holds each consumer process's counters (absolute values, one
row per ``(consumer_id, metric, label)``, e.g. ``('host/123/...', 'dlq', 'malformed_json')``),
written by the consumer after each lake commit and at exit. Totals of a group:
``SELECT metric, label, sum(value) FROM consumer_metrics WHERE consumer_group = ... GROUP BY 1, 2``
(a replayed record is counted again by the process that replays it: DLQ counts are at least once).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec
import psycopg

from sensorlake.errors import RetryableError, first_line
from sensorlake.events import ts_to_us
from sensorlake.kinematics import TravelerState
from sensorlake.settings import Settings

Key = tuple[int, str]

DDL = """
CREATE TABLE IF NOT EXISTS traveler_summary (
    sensor_id        bigint           NOT NULL,
    traveler_id      text             NOT NULL,
    first_seen       timestamptz      NOT NULL,
    traveler_type    text             NOT NULL,
    last_seen        timestamptz      NOT NULL,
    observations     bigint           NOT NULL,
    distance_ft      double precision NOT NULL,
    duration_s       double precision NOT NULL,
    avg_speed_fps    double precision,
    min_speed_fps    double precision,
    max_speed_fps    double precision,
    late_count       bigint           NOT NULL,
    duplicate_count  bigint           NOT NULL,
    rejected_count   bigint           NOT NULL,
    last_x_ft        double precision NOT NULL,
    last_y_ft        double precision NOT NULL,
    anchor_ts        timestamptz      NOT NULL,
    anchor_x_ft      double precision NOT NULL,
    anchor_y_ft      double precision NOT NULL,
    kafka_partition  integer          NOT NULL,
    kafka_offset     bigint           NOT NULL,
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, traveler_id, first_seen)
);
CREATE INDEX IF NOT EXISTS traveler_summary_last_seen ON traveler_summary (last_seen);
CREATE TABLE IF NOT EXISTS consumer_metrics (
    consumer_id      text        NOT NULL,
    consumer_group   text        NOT NULL,
    topic            text        NOT NULL,
    metric           text        NOT NULL,
    label            text        NOT NULL,
    value            bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_id, metric, label)
);
"""

UPSERT_METRIC = """
INSERT INTO consumer_metrics (consumer_id, consumer_group, topic, metric, label, value)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (consumer_id, metric, label) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
"""

_COLUMN_NAMES = (
    "sensor_id", "traveler_id", "first_seen", "traveler_type", "last_seen", "observations",
    "distance_ft", "duration_s", "avg_speed_fps", "min_speed_fps", "max_speed_fps", "late_count",
    "duplicate_count", "rejected_count", "last_x_ft", "last_y_ft", "anchor_ts", "anchor_x_ft",
    "anchor_y_ft", "kafka_partition", "kafka_offset",
)  # fmt: skip
"""The columns of ``traveler_summary`` that hold a state, in order (the first three: the primary key)."""
_COLUMNS = ", ".join(_COLUMN_NAMES)

_PG_TYPES = {int: "int8", float: "float8", float | None: "float8", str: "text"}
_STAGE_COLUMNS = tuple(
    (f.name, _PG_TYPES[f.type]) for f in msgspec.structs.fields(TravelerState)
)
"""Columns of the per-connection staging table: the fields of :class:`TravelerState`, in
its order and with its names (so a row is ``msgspec.structs.astuple(state)``), times as
UTC epoch µs."""

STAGE_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS traveler_summary_stage (
  {", ".join(f"{c} {t}" for c, t in _STAGE_COLUMNS)}
) ON COMMIT DELETE ROWS
"""

COPY_STAGE = "COPY traveler_summary_stage FROM STDIN (FORMAT BINARY)"


def _us_to_ts(col: str) -> str:
    # exact: 1 µs x an integer below 2**53 is exact in the double arithmetic of interval_mul
    return f"timestamptz 'epoch' + {col} * interval '1 microsecond'"


UPSERT_FROM_STAGE = f"""
INSERT INTO traveler_summary ({_COLUMNS})
SELECT sensor_id, traveler_id, {_us_to_ts("first_seen_us")}, traveler_type,
       {_us_to_ts("last_seen_us")}, observations, distance_ft, duration_s,
       CASE WHEN duration_s > 0 THEN distance_ft / duration_s END, min_speed_fps, max_speed_fps,
       late_count, duplicate_count, rejected_count, last_x_ft, last_y_ft, {_us_to_ts("anchor_us")},
       anchor_x_ft, anchor_y_ft, kafka_partition, kafka_offset
FROM traveler_summary_stage
ORDER BY sensor_id, traveler_id, first_seen_us
ON CONFLICT (sensor_id, traveler_id, first_seen) DO UPDATE SET
  {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMN_NAMES[3:])}, updated_at = now()
WHERE traveler_summary.kafka_partition <> EXCLUDED.kafka_partition
   OR traveler_summary.kafka_offset < EXCLUDED.kafka_offset
"""
"""The batch upsert: every staged row in primary-key order (two consumers upserting
overlapping keys lock them in the same order: no deadlock), absolute values, newer-wins
(a higher Kafka offset of the same partition; another partition: the last writer, which
only a repartitioned topic produces)."""

FETCH_LATEST = f"""
SELECT DISTINCT ON (s.sensor_id, s.traveler_id) {", ".join("s." + c for c in _COLUMN_NAMES)}
FROM traveler_summary s
JOIN unnest(%s::bigint[], %s::text[]) AS k(sensor_id, traveler_id)
  ON s.sensor_id = k.sensor_id AND s.traveler_id = k.traveler_id
ORDER BY s.sensor_id, s.traveler_id, s.first_seen DESC
"""


def row_to_state(r: Sequence) -> TravelerState:
    """The state held by a ``traveler_summary`` row (``avg_speed_fps`` is derived, not read)."""
    return TravelerState(
        sensor_id=r[0], traveler_id=r[1], first_seen_us=ts_to_us(r[2]), traveler_type=r[3],
        last_seen_us=ts_to_us(r[4]), observations=r[5], distance_ft=r[6], duration_s=r[7],
        min_speed_fps=r[9], max_speed_fps=r[10], late_count=r[11], duplicate_count=r[12],
        rejected_count=r[13], last_x_ft=r[14], last_y_ft=r[15], anchor_us=ts_to_us(r[16]),
        anchor_x_ft=r[17], anchor_y_ft=r[18], kafka_partition=r[19], kafka_offset=r[20],
    )  # fmt: skip


class PgSummarySink:
    """Batch upserts and cache-rebuild reads of ``traveler_summary``."""

    def __init__(self, settings: Settings) -> None:
        self._dsn = settings.pg_dsn
        self._conn: psycopg.Connection | None = None

    def setup(self) -> None:
        """Connect and create the table if missing.

        Raises:
            RetryableError: PostgreSQL is unreachable.
        """
        try:
            self._conn = psycopg.connect(self._dsn, connect_timeout=10)
            with self._conn.transaction():
                # consumers start together: serialise the DDL (CREATE ... IF NOT EXISTS
                # is not safe against a concurrent creator)
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('sensorlake.traveler_summary'))")
                self._conn.execute(DDL)
                self._conn.execute(STAGE_DDL)  # this session's staging table for COPY
        except psycopg.OperationalError as exc:
            raise RetryableError(f"postgres unreachable: {first_line(exc)}") from exc

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self, what: str) -> Iterator[psycopg.Connection]:
        """A transaction on a live connection (reconnecting first if needed: RetryableError
        when PostgreSQL is unreachable). A PostgreSQL error inside rolls it back, resets the
        connection and raises RetryableError(``postgres <what> failed: ...``)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self.setup()
        try:
            with self._conn.transaction():
                yield self._conn
        except psycopg.Error as exc:
            self.close()
            raise RetryableError(f"postgres {what} failed: {first_line(exc)}") from exc

    def fetch_latest(self, keys: Sequence[Key]) -> dict[Key, TravelerState]:
        """The latest visit's state of each key that has a row (one query).

        Raises:
            RetryableError: PostgreSQL failed; the connection is reset.
        """
        if not keys:
            return {}
        with self._transaction("read") as conn:
            rows = conn.execute(FETCH_LATEST, ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
        return {(r[0], r[1]): row_to_state(r) for r in rows}

    def write_metrics(
        self, consumer_id: str, group: str, topic: str, rows: Sequence[tuple[str, str, int]]
    ) -> None:
        """Upsert one consumer's ``(metric, label, value)`` counters (absolute values).

        Raises:
            RetryableError: PostgreSQL failed; the connection is reset.
        """
        if not rows:
            return
        with self._transaction("metrics upsert") as conn, conn.cursor() as cur:
            cur.executemany(UPSERT_METRIC, [(consumer_id, group, topic, m, lbl, int(v)) for m, lbl, v in rows])

    def upsert(self, states: Sequence[TravelerState]) -> None:
        """Upsert visit states as absolute values, newer-wins, in one transaction.

        The states are streamed with ``COPY ... (FORMAT BINARY)`` into this session's
        staging table, then one ``INSERT ... SELECT ... ORDER BY key ON CONFLICT DO UPDATE
        ... WHERE newer`` applies them (:data:`UPSERT_FROM_STAGE`): two statements per batch
        instead of one per row. The states must belong to distinct visits (one row per
        ``(sensor_id, traveler_id, first_seen_us)``), as one consumer round produces them.

        Raises:
            RetryableError: PostgreSQL failed; nothing of this batch was committed.
        """
        if not states:
            return
        astuple = msgspec.structs.astuple
        with self._transaction("upsert") as conn, conn.cursor() as cur:
            with cur.copy(COPY_STAGE) as copy:
                copy.set_types([t for _, t in _STAGE_COLUMNS])
                write_row = copy.write_row
                for s in states:
                    write_row(astuple(s))
            cur.execute(UPSERT_FROM_STAGE)
