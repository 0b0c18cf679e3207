"""The rolling-window job in DuckDB SQL.

Consumes the visits and segments of :func:`transforms.segments.build_visits_segments` and
the window grid of :class:`transforms.windows.WindowGrid`; the definitions (volume by visit
overlap, per-visit speed from segments ending in the window, mean and linear-interpolation
p85, zero rows for empty windows) are in :mod:`transforms.windows`. The Polars job
(:mod:`transforms.polars_job`) implements the same definitions and must give the same rows.
"""

from __future__ import annotations

import itertools

import duckdb
import pyarrow as pa

from lake.schema import WINDOW_STATS_SCHEMA
from transforms.segments import VisitsSegments
from transforms.windows import FPS_TO_MPH, P85, WindowGrid

_names = itertools.count()

# {v}, {s}, {w} are generated view names (never user input); every value is a bound parameter.
# Float sums are ordered aggregates: a parallel hash aggregate adds partial sums in an order
# that varies from run to run, and a backfill must write bit-identical rows when re-run.
_SQL = """
WITH vw AS (           -- each visit x each window its [visit_start, visit_end] overlaps
    SELECT v.sensor_id, v.traveler_id, v.visit_start, v.traveler_type, w.window_start, w.window_end
    FROM {v} AS v JOIN {w} AS w
      ON v.visit_start < w.window_end AND v.visit_end >= w.window_start
),
vs AS (                -- per visit and window: speed of the segments ending in the window
    SELECT vw.sensor_id, vw.traveler_type, vw.window_start,
           sum(s.distance_ft ORDER BY s.seg_end_ts) / sum(s.duration_s ORDER BY s.seg_end_ts) AS speed_fps
    FROM vw LEFT JOIN {s} AS s
      ON s.sensor_id = vw.sensor_id AND s.traveler_id = vw.traveler_id
     AND s.visit_start = vw.visit_start
     AND s.seg_end_ts >= vw.window_start AND s.seg_end_ts < vw.window_end
    GROUP BY vw.sensor_id, vw.traveler_id, vw.visit_start, vw.traveler_type, vw.window_start
),
agg AS (
    SELECT sensor_id, traveler_type, window_start,
           count(*) AS volume,
           count(speed_fps) AS speed_samples,
           avg(speed_fps ORDER BY speed_fps) AS mean_speed_fps,
           quantile_cont(speed_fps, ?) AS p85_speed_fps
    FROM vs GROUP BY sensor_id, traveler_type, window_start
),
pairs AS (SELECT DISTINCT sensor_id, traveler_type FROM vw)
SELECT p.sensor_id, p.traveler_type, w.window_start, w.window_end,
       ?::INTEGER AS window_s,
       coalesce(a.volume, 0)::BIGINT AS volume,
       coalesce(a.speed_samples, 0)::BIGINT AS speed_samples,
       a.mean_speed_fps, a.p85_speed_fps,
       a.mean_speed_fps * ? AS mean_speed_mph,
       a.p85_speed_fps * ? AS p85_speed_mph
FROM pairs AS p CROSS JOIN {w} AS w
LEFT JOIN agg AS a
  ON a.sensor_id = p.sensor_id AND a.traveler_type = p.traveler_type AND a.window_start = w.window_start
ORDER BY p.sensor_id, p.traveler_type, w.window_start
"""


def compute_windows_duckdb(
    data: VisitsSegments | tuple[pa.Table, pa.Table],
    grid: WindowGrid,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Window statistics per sensor, traveler type and window, computed in DuckDB.

    Args:
        data: ``(visits, segments)`` Arrow tables from
            :func:`transforms.segments.build_visits_segments`.
        grid: the windows to compute (start, length ``window_s``, step ``step_s``).
        con: run on this connection (e.g. the lake connection of a backfill); None = a
            private in-memory connection. The inputs are registered as temporary views and
            unregistered afterwards.

    Returns:
        Arrow table with ``lake.schema.WINDOW_STATS_SCHEMA``, sorted by sensor_id,
        traveler_type, window_start; one row per (sensor, type) pair seen in the grid and
        window, volume 0 and NULL speeds for empty windows.
    """
    visits, segments = data
    own = con is None
    if own:
        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
    n = next(_names)
    views = {"v": f"_sl_visits_{n}", "s": f"_sl_segments_{n}", "w": f"_sl_windows_{n}"}
    try:
        con.register(views["v"], visits)
        con.register(views["s"], segments)
        con.register(views["w"], grid.to_arrow())
        params = [P85, grid.window_s, FPS_TO_MPH, FPS_TO_MPH]
        out = con.execute(_SQL.format(**views), params).to_arrow_table()
    finally:
        for name in views.values():
            try:
                con.unregister(name)
            except duckdb.Error:
                pass
        if own:
            con.close()
    return pa.Table.from_arrays(
        [out.column(f.name).cast(f.type) for f in WINDOW_STATS_SCHEMA], schema=WINDOW_STATS_SCHEMA
    )
