"""The transforms in DuckDB SQL: rolling windows, speed bins, roll-ups, peak hour, occupancy.

Each function takes Arrow tables (never a lake table: the backfill reads and writes the
lake) and returns an Arrow table with the schema of its lake table. The definitions are in
:mod:`transforms.windows` (windows, volume, speeds, bins, dwell, mode split) and
:mod:`transforms.measures` (roll-ups, peak hour, occupancy). :mod:`transforms.polars_job`
implements the same definitions and must give the same rows.

Every value is a bound parameter; the only text formatted into a statement is a generated
view name or a constant of this module. Float sums are ordered aggregates: a parallel hash
aggregate adds partial sums in an order that varies from run to run, and a backfill must
write bit-identical rows when re-run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import duckdb
import pyarrow as pa

from lake.schema import (
    OCCUPANCY_SCHEMA,
    PEAK_HOUR_SCHEMA,
    ROLLUP_STATS_SCHEMA,
    SPEED_BINS_SCHEMA,
    WINDOW_STATS_SCHEMA,
)
from transforms.measures import ALL_TYPES, pairs_table, with_arrival
from transforms.segments import VisitsSegments
from transforms.windows import (
    CELL_FT,
    DWELL_MPH,
    FPS_TO_MPH,
    P85,
    SPEED_BIN_MPH,
    WindowGrid,
)

_names = itertools.count()
_PERIOD_PART = {3600: "hour", 86400: "day"}

# per visit and window: the visit's speed from the segments ending in the window, and its
# dwell time (segments slower than DWELL_MPH). Parameters: FPS_TO_MPH, DWELL_MPH.
_VISIT_WINDOWS = """
vw AS (                -- each visit x each window its [visit_start, visit_end] overlaps
    SELECT v.sensor_id, v.traveler_id, v.visit_start, v.traveler_type, w.window_start, w.window_end
    FROM {v} AS v JOIN {w} AS w
      ON v.visit_start < w.window_end AND v.visit_end >= w.window_start
),
vs AS (                -- per visit and window: speed and dwell of the segments ending in it
    SELECT vw.sensor_id, vw.traveler_type, vw.window_start, vw.window_end,
           sum(s.distance_ft ORDER BY s.seg_end_ts) / sum(s.duration_s ORDER BY s.seg_end_ts) AS speed_fps,
           sum(CASE WHEN s.distance_ft / s.duration_s * ? < ? THEN s.duration_s END ORDER BY s.seg_end_ts)
               AS dwell_s
    FROM vw LEFT JOIN {s} AS s
      ON s.sensor_id = vw.sensor_id AND s.traveler_id = vw.traveler_id
     AND s.visit_start = vw.visit_start
     AND s.seg_end_ts >= vw.window_start AND s.seg_end_ts < vw.window_end
    GROUP BY vw.sensor_id, vw.traveler_id, vw.visit_start, vw.traveler_type, vw.window_start, vw.window_end
)"""

_WINDOWS_SQL = (
    "WITH"
    + _VISIT_WINDOWS
    + """,
agg AS (
    SELECT sensor_id, traveler_type, window_start,
           count(*) AS volume,
           count(speed_fps) AS speed_samples,
           sum(speed_fps ORDER BY speed_fps) AS speed_sum_fps,
           min(speed_fps) AS speed_min_fps,
           max(speed_fps) AS speed_max_fps,
           quantile_cont(speed_fps, ?) AS p85_speed_fps,
           coalesce(sum(dwell_s ORDER BY dwell_s), 0.0) AS dwell_s,
           count(*) FILTER (WHERE dwell_s > 0) AS dwell_visits
    FROM vs GROUP BY sensor_id, traveler_type, window_start
),
pairs AS (SELECT DISTINCT sensor_id, traveler_type FROM vw UNION SELECT sensor_id, traveler_type FROM {p}),
grid AS (
    SELECT p.sensor_id, p.traveler_type, w.window_start, w.window_end,
           coalesce(a.volume, 0)::BIGINT AS volume,
           coalesce(a.speed_samples, 0)::BIGINT AS speed_samples,
           a.speed_sum_fps, a.speed_min_fps, a.speed_max_fps, a.p85_speed_fps,
           coalesce(a.dwell_s, 0.0) AS dwell_s,
           coalesce(a.dwell_visits, 0)::BIGINT AS dwell_visits
    FROM pairs AS p CROSS JOIN {w} AS w
    LEFT JOIN agg AS a
      ON a.sensor_id = p.sensor_id AND a.traveler_type = p.traveler_type AND a.window_start = w.window_start
)
SELECT sensor_id, traveler_type, window_start, window_end,
       ?::INTEGER AS window_s, volume, speed_samples,
       speed_sum_fps / speed_samples AS mean_speed_fps,
       p85_speed_fps,
       speed_sum_fps / speed_samples * ? AS mean_speed_mph,
       p85_speed_fps * ? AS p85_speed_mph,
       ?::INTEGER AS step_s,
       speed_sum_fps, speed_min_fps, speed_max_fps,
       volume::DOUBLE / nullif(sum(volume) OVER (PARTITION BY sensor_id, window_start), 0) AS mode_share,
       dwell_s, dwell_visits
FROM grid
ORDER BY sensor_id, traveler_type, window_start
"""
)

_BINS_SQL = (
    "WITH"
    + _VISIT_WINDOWS
    + """
SELECT sensor_id, traveler_type, window_start, window_end, ?::INTEGER AS window_s,
       (floor(speed_fps * ? / ?)::INTEGER * ?)::INTEGER AS bin_mph,
       count(*) AS visits
FROM vs WHERE speed_fps IS NOT NULL
GROUP BY ALL
ORDER BY sensor_id, traveler_type, window_start, bin_mph
"""
)

# parts -> periods: {p} = parts (one row per sensor, type, start), {b} = their bins.
# Parameters: P85 (x3), SPEED_BIN_MPH, FPS_TO_MPH (x3), period_s.
_ROLLUP_SQL = """
WITH p AS (SELECT *, date_trunc('{part}', start) AS period_start FROM {p}),
agg AS (
    SELECT sensor_id, traveler_type, period_start,
           sum(windows)::BIGINT AS windows,
           sum(volume)::BIGINT AS volume,
           sum(speed_samples)::BIGINT AS speed_samples,
           sum(speed_sum_fps ORDER BY start) AS speed_sum_fps,
           min(speed_min_fps) AS speed_min_fps,
           max(speed_max_fps) AS speed_max_fps,
           coalesce(sum(dwell_s ORDER BY start), 0.0) AS dwell_s,
           sum(dwell_visits)::BIGINT AS dwell_visits
    FROM p GROUP BY sensor_id, traveler_type, period_start
),
hb AS (
    SELECT sensor_id, traveler_type, date_trunc('{part}', start) AS period_start, bin_mph,
           sum(visits)::BIGINT AS visits
    FROM {b} GROUP BY ALL
),
cum AS (
    SELECT *, sum(visits) OVER (PARTITION BY sensor_id, traveler_type, period_start ORDER BY bin_mph) AS cum_incl,
           sum(visits) OVER (PARTITION BY sensor_id, traveler_type, period_start) AS n
    FROM hb
),
est AS (               -- grouped-data percentile: linear inside the bin holding rank P85 * n
    SELECT sensor_id, traveler_type, period_start,
           bin_mph + ? * (? * n - (cum_incl - visits)) / visits AS p85_mph
    FROM cum WHERE cum_incl - visits < ? * n AND ? * n <= cum_incl
)
SELECT a.sensor_id, a.traveler_type, a.period_start,
       a.period_start + to_seconds(?::BIGINT) AS period_end,
       ?::INTEGER AS period_s, a.windows, a.volume, a.speed_samples,
       a.speed_sum_fps, a.speed_min_fps, a.speed_max_fps,
       a.speed_sum_fps / a.speed_samples AS mean_speed_fps,
       a.speed_sum_fps / a.speed_samples * ? AS mean_speed_mph,
       CASE WHEN e.p85_mph IS NOT NULL
            THEN greatest(least(e.p85_mph, a.speed_max_fps * ?), a.speed_min_fps * ?) END AS p85_speed_mph_binned,
       a.volume::DOUBLE / nullif(sum(a.volume) OVER (PARTITION BY a.sensor_id, a.period_start), 0) AS mode_share,
       a.dwell_s, a.dwell_visits
FROM agg AS a LEFT JOIN est AS e
  ON e.sensor_id = a.sensor_id AND e.traveler_type = a.traveler_type AND e.period_start = a.period_start
ORDER BY a.sensor_id, a.traveler_type, a.period_start
"""

_ROLLUP_BINS_SQL = """
SELECT sensor_id, traveler_type, date_trunc('{part}', start) AS window_start,
       date_trunc('{part}', start) + to_seconds(?::BIGINT) AS window_end,
       ?::INTEGER AS window_s, bin_mph, sum(visits)::BIGINT AS visits
FROM {b} GROUP BY ALL
ORDER BY sensor_id, traveler_type, window_start, bin_mph
"""

# {q} = 15-minute rows (sensor_id, traveler_type, window_start, volume). Parameter: ALL_TYPES.
_PEAK_SQL = """
WITH base AS (
    SELECT sensor_id, traveler_type, window_start, volume FROM {q}
    UNION ALL
    SELECT sensor_id, ? AS traveler_type, window_start, sum(volume)::BIGINT FROM {q} GROUP BY sensor_id, window_start
),
q AS (SELECT *, date_trunc('day', window_start) AS day_start FROM base),
h AS (                 -- every hour made of four consecutive 15-minute windows within the day
    SELECT a.sensor_id, a.traveler_type, a.day_start, a.window_start AS peak_start,
           sum(b.volume)::BIGINT AS hour_volume, max(b.volume)::BIGINT AS max15
    FROM q AS a JOIN q AS b
      ON b.sensor_id = a.sensor_id AND b.traveler_type = a.traveler_type
     AND b.window_start >= a.window_start AND b.window_start < a.window_start + INTERVAL 1 HOUR
    WHERE a.window_start + INTERVAL 1 HOUR <= a.day_start + INTERVAL 1 DAY
    GROUP BY ALL
),
ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY sensor_id, traveler_type, day_start ORDER BY hour_volume DESC, peak_start) AS rn
    FROM h
)
SELECT sensor_id, traveler_type, day_start, peak_start, peak_start + INTERVAL 1 HOUR AS peak_end,
       hour_volume AS peak_hour_volume, max15 AS max_15min_volume,
       CASE WHEN max15 > 0 THEN hour_volume / (4.0 * max15) END AS phf
FROM ranked WHERE rn = 1
ORDER BY sensor_id, traveler_type, day_start
"""

# {e} = events. Parameters: visit_gap_us (x2), CELL_FT (x4), hour range start, end.
_OCCUPANCY_SQL = """
WITH e AS (            -- the first arrival of each (key, ts): duplicates change nothing
    SELECT sensor_id, traveler_id, traveler_type, ts, x_ft, y_ft FROM (
        SELECT *, row_number() OVER (
            PARTITION BY sensor_id, traveler_id, ts ORDER BY kafka_partition, kafka_offset) AS rn
        FROM {e}) WHERE rn = 1
),
n AS (
    SELECT *, epoch_us(ts) - epoch_us(lag(ts) OVER k) AS gap_us,
           epoch_us(lead(ts) OVER k) - epoch_us(ts) AS next_us
    FROM e WINDOW k AS (PARTITION BY sensor_id, traveler_id ORDER BY ts)
),
v AS (
    SELECT *, sum(CASE WHEN gap_us IS NULL OR gap_us > ? THEN 1 ELSE 0 END) OVER (
        PARTITION BY sensor_id, traveler_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS visit_no
    FROM n
),
t AS (
    SELECT sensor_id, traveler_id, ts, x_ft, y_ft,
           last_value(traveler_type) OVER (
               PARTITION BY sensor_id, traveler_id, visit_no ORDER BY ts
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS visit_type,
           CASE WHEN next_us IS NOT NULL AND next_us <= ? THEN next_us / 1e6 ELSE 0.0 END AS dt_s
    FROM v
)
SELECT sensor_id, visit_type AS traveler_type, date_trunc('hour', ts) AS hour_start,
       floor(x_ft / ?) * ? AS cell_x_ft, floor(y_ft / ?) * ? AS cell_y_ft,
       sum(dt_s ORDER BY traveler_id, ts) AS occupancy_s,
       count(*) AS observations,
       count(DISTINCT traveler_id) AS travelers
FROM t WHERE ts >= ? AND ts < ?
GROUP BY ALL
ORDER BY sensor_id, traveler_type, hour_start, cell_x_ft, cell_y_ft
"""

@contextmanager
def _session(con: duckdb.DuckDBPyConnection | None, tables: dict[str, pa.Table]) -> Iterator[tuple]:
    """Register ``tables`` under fresh view names on ``con`` (or a private connection)."""
    own = con is None
    if own:
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
    n = next(_names)
    views = {k: f"_sl_{k}_{n}" for k in tables}
    try:
        for k, t in tables.items():
            con.register(views[k], t)
        yield con, views
    finally:
        for name in views.values():
            with suppress(duckdb.Error):
                con.unregister(name)
        if own:
            con.close()


def _cast(out: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([out.column(f.name).cast(f.type) for f in schema], schema=schema)


def compute_windows_duckdb(
    data: VisitsSegments | tuple[pa.Table, pa.Table],
    grid: WindowGrid,
    *,
    pairs: pa.Table | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Window statistics per sensor, traveler type and window, computed in DuckDB.

    Args:
        data: ``(visits, segments)`` Arrow tables from
            :func:`transforms.segments.build_visits_segments`.
        grid: the windows to compute (start, length ``window_s``, step ``step_s``).
        pairs: (sensor_id, traveler_type) rows that get a row for every window, empty or
            not, besides the pairs of the visits (the backfill passes the pairs observed on
            the windows' UTC day, so the rows do not depend on how a day is split in runs).
        con: run on this connection; None = a private in-memory connection. The inputs are
            registered as temporary views and unregistered afterwards.

    Returns:
        Arrow table with ``lake.schema.WINDOW_STATS_SCHEMA``, sorted by sensor_id,
        traveler_type, window_start; one row per (sensor, type) pair seen in the grid and
        window, volume 0, dwell 0 and NULL speeds for empty windows.
    """
    visits, segments = data
    tables = {"v": visits, "s": segments, "w": grid.to_arrow(), "p": pairs_table(pairs)}
    with _session(con, tables) as (c, views):
        params = [FPS_TO_MPH, DWELL_MPH, P85, grid.window_s, FPS_TO_MPH, FPS_TO_MPH, grid.step_s]
        out = c.execute(_WINDOWS_SQL.format(**views), params).to_arrow_table()
    return _cast(out, WINDOW_STATS_SCHEMA)


def compute_speed_bins_duckdb(
    data: VisitsSegments | tuple[pa.Table, pa.Table],
    grid: WindowGrid,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """5-mph histogram of the per-visit speeds per sensor, traveler type and window (DuckDB).

    Returns:
        Arrow table with ``lake.schema.SPEED_BINS_SCHEMA``: one row per non-empty bin,
        sorted by sensor_id, traveler_type, window_start, bin_mph.
    """
    visits, segments = data
    with _session(con, {"v": visits, "s": segments, "w": grid.to_arrow()}) as (c, views):
        params = [FPS_TO_MPH, DWELL_MPH, grid.window_s, FPS_TO_MPH, SPEED_BIN_MPH, SPEED_BIN_MPH]
        out = c.execute(_BINS_SQL.format(**views), params).to_arrow_table()
    return _cast(out, SPEED_BINS_SCHEMA)


def rollup_duckdb(parts: pa.Table, bins: pa.Table, period_s: int) -> tuple[pa.Table, pa.Table]:
    """Merge finer periods into hours (``period_s=3600``) or days (``86400``) in DuckDB.

    Args:
        parts: :data:`transforms.measures.PARTS_SCHEMA` rows (counts, sums, min/max).
        bins: :data:`transforms.measures.PART_BINS_SCHEMA` rows (5-mph histograms).
        period_s: 3600 or 86400.

    Returns:
        ``(rollup_stats rows, speed_bins rows)`` with ``ROLLUP_STATS_SCHEMA`` and
        ``SPEED_BINS_SCHEMA``.
    """
    part = _PERIOD_PART[period_s]
    with _session(None, {"p": parts, "b": bins}) as (c, views):
        params = [SPEED_BIN_MPH, P85, P85, P85, period_s, period_s, FPS_TO_MPH, FPS_TO_MPH, FPS_TO_MPH]
        stats = c.execute(_ROLLUP_SQL.format(part=part, **views), params).to_arrow_table()
        out_bins = c.execute(_ROLLUP_BINS_SQL.format(part=part, **views), [period_s, period_s]).to_arrow_table()
    return _cast(stats, ROLLUP_STATS_SCHEMA), _cast(out_bins, SPEED_BINS_SCHEMA)


def peak_hour_duckdb(quarters: pa.Table) -> pa.Table:
    """Peak hour and peak hour factor per sensor, traveler type (and ``"all"``) and UTC day.

    Args:
        quarters: tumbling 15-minute rows with sensor_id, traveler_type, window_start, volume.

    Returns:
        ``PEAK_HOUR_SCHEMA`` rows sorted by sensor_id, traveler_type, day_start.
    """
    with _session(None, {"q": quarters.select(["sensor_id", "traveler_type", "window_start", "volume"])}) as (
        c,
        views,
    ):
        out = c.execute(_PEAK_SQL.format(**views), [ALL_TYPES]).to_arrow_table()
    return _cast(out, PEAK_HOUR_SCHEMA)


def occupancy_duckdb(events: pa.Table, hours_start, hours_end, *, visit_gap_s: float) -> pa.Table:
    """Occupancy grid per sensor, traveler type, UTC hour and 5-ft cell (DuckDB).

    Args:
        events: rows of ``lake.movements`` (``kafka_partition``/``kafka_offset`` break ties
            on equal ``ts``; when absent, the table order does).
        hours_start, hours_end: keep the hours whose observations lie in this half-open range.
        visit_gap_s: event-time gap (s) that ends a visit.

    Returns:
        ``OCCUPANCY_SCHEMA`` rows sorted by sensor_id, traveler_type, hour_start, cell.
    """
    with _session(None, {"e": with_arrival(events)}) as (c, views):
        gap_us = visit_gap_s * 1_000_000
        params = [gap_us, gap_us, CELL_FT, CELL_FT, CELL_FT, CELL_FT, hours_start, hours_end]
        out = c.execute(_OCCUPANCY_SQL.format(**views), params).to_arrow_table()
    return _cast(out, OCCUPANCY_SCHEMA)
