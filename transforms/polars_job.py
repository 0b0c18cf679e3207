"""The rolling-window job in Polars.

Same inputs and definitions as :mod:`transforms.duckdb_job` (see :mod:`transforms.windows`);
the p85 is ``quantile(0.85, interpolation="linear")``, never Polars' default ("nearest"),
which gives 90 instead of 86.5 for 10, 20, ..., 100.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from lake.schema import WINDOW_STATS_SCHEMA
from transforms.segments import VisitsSegments
from transforms.windows import FPS_TO_MPH, P85, WindowGrid

_VISIT_KEY = ["sensor_id", "traveler_id", "visit_start"]


def _frame(t: pa.Table | pl.DataFrame) -> pl.DataFrame:
    return t if isinstance(t, pl.DataFrame) else pl.from_arrow(t)


def compute_windows_polars(
    data: VisitsSegments | tuple[pa.Table | pl.DataFrame, pa.Table | pl.DataFrame],
    grid: WindowGrid,
) -> pa.Table:
    """Window statistics per sensor, traveler type and window, computed in Polars.

    Args:
        data: ``(visits, segments)`` from :func:`transforms.segments.build_visits_segments`,
            as Arrow tables (converted with ``pl.from_arrow``, zero copy) or Polars frames.
        grid: the windows to compute.

    Returns:
        Arrow table with ``lake.schema.WINDOW_STATS_SCHEMA``, sorted by sensor_id,
        traveler_type, window_start (the same rows as :func:`compute_windows_duckdb`).
    """
    visits, segments = (_frame(t) for t in data)
    windows = pl.from_arrow(grid.to_arrow())

    # each visit x each window its closed interval [visit_start, visit_end] overlaps
    vw = visits.select(*_VISIT_KEY, "visit_end", "traveler_type").join_where(
        windows,
        pl.col("visit_start") < pl.col("window_end"),
        pl.col("visit_end") >= pl.col("window_start"),
    )
    # per visit and window: segments whose end lies in [window_start, window_end)
    seg_speed = (
        vw.select(*_VISIT_KEY, "window_start", "window_end")
        .join(segments, on=_VISIT_KEY, how="inner")
        .filter(
            (pl.col("seg_end_ts") >= pl.col("window_start")) & (pl.col("seg_end_ts") < pl.col("window_end"))
        )
        .sort(*_VISIT_KEY, "window_start", "seg_end_ts")
        .group_by(*_VISIT_KEY, "window_start")
        .agg((pl.col("distance_ft").sum() / pl.col("duration_s").sum()).alias("speed_fps"))
    )
    # sorted so every float sum runs in one fixed order (group_by keeps the row order within
    # a group): a re-run must give bit-identical rows, whatever the join's output order
    per_visit = vw.join(seg_speed, on=[*_VISIT_KEY, "window_start"], how="left").sort(
        "sensor_id", "traveler_type", "window_start", "speed_fps", nulls_last=True
    )
    agg = per_visit.group_by("sensor_id", "traveler_type", "window_start").agg(
        pl.len().cast(pl.Int64).alias("volume"),
        pl.col("speed_fps").count().cast(pl.Int64).alias("speed_samples"),
        pl.col("speed_fps").mean().alias("mean_speed_fps"),
        pl.col("speed_fps").quantile(P85, interpolation="linear").alias("p85_speed_fps"),
    )
    pairs = vw.select("sensor_id", "traveler_type").unique()
    out = (
        pairs.join(windows, how="cross")
        .join(agg, on=["sensor_id", "traveler_type", "window_start"], how="left")
        .with_columns(
            pl.lit(grid.window_s, dtype=pl.Int32).alias("window_s"),
            pl.col("volume").fill_null(0),
            pl.col("speed_samples").fill_null(0),
            (pl.col("mean_speed_fps") * FPS_TO_MPH).alias("mean_speed_mph"),
            (pl.col("p85_speed_fps") * FPS_TO_MPH).alias("p85_speed_mph"),
        )
        .select([f.name for f in WINDOW_STATS_SCHEMA])
        .sort("sensor_id", "traveler_type", "window_start")
    )
    table = out.to_arrow()
    return pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) for f in WINDOW_STATS_SCHEMA], schema=WINDOW_STATS_SCHEMA
    )
