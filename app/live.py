"""Live metrics from PostgreSQL's ``traveler_summary`` (written by the consumer), for the app.

``traveler_summary`` has one row per visit of a traveler, primary key ``(sensor_id,
traveler_id, first_seen)``, with ``last_seen`` (timestamptz, event time) and
``avg_speed_fps`` (time-weighted distance / duration, ft/s; NULL before the first merged
segment). Every filter is a bound parameter (psycopg ``%(name)s``), never formatted into SQL.

Definitions:

* A traveler is **active** in the last N minutes when one of its visits has
  ``last_seen >= now - N minutes``; ``now`` is passed in (the app offers the wall clock or the
  latest ``last_seen`` in the table, for replayed data whose event times are in the past).
* Per sensor and traveler type: ``active_travelers`` = distinct traveler ids among those
  visits, ``mean_speed_fps`` = mean of their ``avg_speed_fps`` (NULLs ignored), and
  ``mean_speed_mph`` = the same x 3600 / 5280.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sensorlake.errors import ServiceError, first_line
from sensorlake.kinematics import FPS_TO_MPH
from sensorlake.settings import Settings

TABLE = "traveler_summary"

ACTIVE_SQL = """
SELECT sensor_id,
       traveler_type,
       count(DISTINCT traveler_id) AS active_travelers,
       count(*) AS visits,
       avg(avg_speed_fps) AS mean_speed_fps,
       avg(avg_speed_fps) * %(fps_to_mph)s AS mean_speed_mph,
       max(last_seen) AS last_seen
FROM traveler_summary
WHERE last_seen >= %(since)s
  AND (%(sensor_ids)s::bigint[] IS NULL OR sensor_id = ANY(%(sensor_ids)s::bigint[]))
  AND (%(traveler_types)s::text[] IS NULL OR traveler_type = ANY(%(traveler_types)s::text[]))
GROUP BY sensor_id, traveler_type
ORDER BY sensor_id, traveler_type
"""

LATEST_SQL = "SELECT max(last_seen) AS latest FROM traveler_summary"

OPTIONS_SQL = """
SELECT DISTINCT sensor_id, traveler_type
FROM traveler_summary
WHERE last_seen >= %(since)s
ORDER BY sensor_id, traveler_type
"""


def connect(settings: Settings, *, timeout_s: int = 2) -> psycopg.Connection:
    """An autocommit connection to the live-metrics database (``settings.pg_dsn``).

    Raises:
        ServiceError: ``PostgreSQL not reachable at host:port`` (the message never holds
            the password).
    """
    try:
        conn = psycopg.connect(settings.pg_dsn, connect_timeout=timeout_s, autocommit=True, row_factory=dict_row)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ServiceError(
            f"PostgreSQL not reachable at {settings.host}:{settings.pg_port} ({reason})"
        ) from None
    return conn


def _run(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    except psycopg.errors.UndefinedTable:
        raise ServiceError(f"PostgreSQL has no {TABLE} table yet (has a consumer run?)") from None
    except psycopg.Error as exc:
        raise ServiceError(f"live query failed: {first_line(exc)}") from None


def active_params(
    *,
    now: datetime,
    minutes: float,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The bound parameters of :data:`ACTIVE_SQL` (None filters mean "all").

    Raises:
        ValueError: ``now`` is naive or ``minutes <= 0``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if minutes <= 0:
        raise ValueError("minutes must be > 0")
    return {
        "since": now - timedelta(minutes=minutes),
        "sensor_ids": None if sensor_ids is None else [int(s) for s in sensor_ids],
        "traveler_types": None if traveler_types is None else [str(t) for t in traveler_types],
        "fps_to_mph": FPS_TO_MPH,
    }


def active_travelers(
    conn: psycopg.Connection,
    *,
    now: datetime,
    minutes: float,
    sensor_ids: Sequence[int] | None = None,
    traveler_types: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Travelers active in ``[now - minutes, ...)`` per sensor and traveler type.

    Returns:
        Rows ``{sensor_id, traveler_type, active_travelers, visits, mean_speed_fps,
        mean_speed_mph, last_seen}`` sorted by sensor_id, traveler_type.

    Raises:
        ServiceError: the table is missing or the query failed.
    """
    params = active_params(now=now, minutes=minutes, sensor_ids=sensor_ids, traveler_types=traveler_types)
    return _run(conn, ACTIVE_SQL, params)


def latest_seen(conn: psycopg.Connection) -> datetime | None:
    """The newest ``last_seen`` in ``traveler_summary`` (None when it is empty)."""
    rows = _run(conn, LATEST_SQL, {})
    return rows[0]["latest"] if rows else None


def filter_options(conn: psycopg.Connection, *, since: datetime) -> list[dict[str, Any]]:
    """Distinct ``(sensor_id, traveler_type)`` of the visits seen since ``since``."""
    return _run(conn, OPTIONS_SQL, {"since": since})
