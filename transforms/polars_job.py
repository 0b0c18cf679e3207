"""The transforms in Polars: the same functions and definitions as :mod:`transforms.duckdb_job`.

The p85 is ``quantile(0.85, interpolation="linear")``, never Polars' default ("nearest"),
which gives 90 instead of 86.5 for 10, 20, ..., 100. Frames are sorted before every float
sum so that a re-run adds in the same order and writes bit-identical rows (``group_by``
keeps the row order within a group); a sum over no value is NULL, as in SQL.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
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

_VISIT_KEY = ["sensor_id", "traveler_id", "visit_start"]
_PERIOD_EVERY = {3600: "1h", 86400: "1d"}


def _frame(t: pa.Table | pl.DataFrame) -> pl.DataFrame:
    return t if isinstance(t, pl.DataFrame) else pl.from_arrow(t)


def _arrow(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    table = df.select([f.name for f in schema]).to_arrow()
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def _sum_or_null(col: str) -> pl.Expr:
    """``sum(col)`` that is NULL when every value is NULL (SQL semantics)."""
    return pl.when(pl.col(col).count() > 0).then(pl.col(col).sum()).otherwise(None)


def _visit_windows(data, grid: WindowGrid) -> pl.DataFrame:
    """Each visit x each window it overlaps, with its speed and dwell time in the window."""
    visits, segments = (_frame(t) for t in data)
    windows = pl.from_arrow(grid.to_arrow())
    vw = visits.select(*_VISIT_KEY, "visit_end", "traveler_type").join_where(
        windows,
        pl.col("visit_start") < pl.col("window_end"),
        pl.col("visit_end") >= pl.col("window_start"),
    )
    seg = segments.with_columns(
        pl.when(pl.col("distance_ft") / pl.col("duration_s") * FPS_TO_MPH < DWELL_MPH)
        .then(pl.col("duration_s"))
        .otherwise(None)
        .alias("dwell_part_s")
    )
    per_visit = (
        vw.select(*_VISIT_KEY, "window_start", "window_end")
        .join(seg, on=_VISIT_KEY, how="inner")
        .filter((pl.col("seg_end_ts") >= pl.col("window_start")) & (pl.col("seg_end_ts") < pl.col("window_end")))
        .sort(*_VISIT_KEY, "window_start", "seg_end_ts")
        .group_by(*_VISIT_KEY, "window_start")
        .agg(
            (pl.col("distance_ft").sum() / pl.col("duration_s").sum()).alias("speed_fps"),
            _sum_or_null("dwell_part_s").alias("dwell_s"),
        )
    )
    return vw.join(per_visit, on=[*_VISIT_KEY, "window_start"], how="left")


def compute_windows_polars(
    data: VisitsSegments | tuple[pa.Table | pl.DataFrame, pa.Table | pl.DataFrame],
    grid: WindowGrid,
    *,
    pairs: pa.Table | None = None,
) -> pa.Table:
    """Window statistics per sensor, traveler type and window, computed in Polars.

    Args:
        data: ``(visits, segments)`` from :func:`transforms.segments.build_visits_segments`,
            as Arrow tables (converted with ``pl.from_arrow``, zero copy) or Polars frames.
        grid: the windows to compute.
        pairs: (sensor_id, traveler_type) rows zero-filled besides the visits' pairs.

    Returns:
        Arrow table with ``lake.schema.WINDOW_STATS_SCHEMA`` (the same rows as
        :func:`transforms.duckdb_job.compute_windows_duckdb`).
    """
    windows = pl.from_arrow(grid.to_arrow())
    vw = _visit_windows(data, grid).sort("sensor_id", "traveler_type", "window_start", "speed_fps", nulls_last=True)
    agg = vw.group_by("sensor_id", "traveler_type", "window_start").agg(
        pl.len().cast(pl.Int64).alias("volume"),
        pl.col("speed_fps").count().cast(pl.Int64).alias("speed_samples"),
        _sum_or_null("speed_fps").alias("speed_sum_fps"),
        pl.col("speed_fps").min().alias("speed_min_fps"),
        pl.col("speed_fps").max().alias("speed_max_fps"),
        pl.col("speed_fps").quantile(P85, interpolation="linear").alias("p85_speed_fps"),
        pl.col("dwell_s").sort(nulls_last=True).sum().alias("dwell_s"),
        (pl.col("dwell_s") > 0).sum().cast(pl.Int64).alias("dwell_visits"),
    )
    every = pl.concat([vw.select("sensor_id", "traveler_type"), pl.from_arrow(pairs_table(pairs))]).unique()
    mean = pl.col("speed_sum_fps") / pl.col("speed_samples")
    out = (
        every.join(windows, how="cross")
        .join(agg, on=["sensor_id", "traveler_type", "window_start"], how="left")
        .with_columns(
            pl.col("volume").fill_null(0),
            pl.col("speed_samples").fill_null(0),
            pl.col("dwell_s").fill_null(0.0),
            pl.col("dwell_visits").fill_null(0),
        )
        .with_columns(
            pl.lit(grid.window_s, dtype=pl.Int32).alias("window_s"),
            pl.lit(grid.step_s, dtype=pl.Int32).alias("step_s"),
            pl.when(pl.col("speed_samples") > 0).then(mean).alias("mean_speed_fps"),
            pl.when(pl.col("speed_samples") > 0).then(mean * FPS_TO_MPH).alias("mean_speed_mph"),
            (pl.col("p85_speed_fps") * FPS_TO_MPH).alias("p85_speed_mph"),
            _share("volume", ["sensor_id", "window_start"]).alias("mode_share"),
        )
        .sort("sensor_id", "traveler_type", "window_start")
    )
    return _arrow(out, WINDOW_STATS_SCHEMA)


def _share(col: str, over: list[str]) -> pl.Expr:
    total = pl.col(col).sum().over(over)
    return pl.when(total > 0).then(pl.col(col).cast(pl.Float64) / total).otherwise(None)


def compute_speed_bins_polars(
    data: VisitsSegments | tuple[pa.Table | pl.DataFrame, pa.Table | pl.DataFrame],
    grid: WindowGrid,
) -> pa.Table:
    """5-mph histogram of the per-visit speeds per sensor, traveler type and window (Polars).

    Returns:
        ``SPEED_BINS_SCHEMA`` rows, one per non-empty bin (as the DuckDB job).
    """
    vw = _visit_windows(data, grid).filter(pl.col("speed_fps").is_not_null())
    out = (
        vw.with_columns(
            ((pl.col("speed_fps") * FPS_TO_MPH / SPEED_BIN_MPH).floor().cast(pl.Int32) * SPEED_BIN_MPH).alias(
                "bin_mph"
            )
        )
        .group_by("sensor_id", "traveler_type", "window_start", "window_end", "bin_mph")
        .agg(pl.len().cast(pl.Int64).alias("visits"))
        .with_columns(pl.lit(grid.window_s, dtype=pl.Int32).alias("window_s"))
        .sort("sensor_id", "traveler_type", "window_start", "bin_mph")
    )
    return _arrow(out, SPEED_BINS_SCHEMA)


def rollup_polars(parts: pa.Table, bins: pa.Table, period_s: int) -> tuple[pa.Table, pa.Table]:
    """Merge finer periods into hours or days in Polars (see :func:`transforms.duckdb_job.rollup_duckdb`)."""
    every = _PERIOD_EVERY[period_s]
    p = (
        _frame(parts)
        .with_columns(pl.col("start").dt.truncate(every).alias("period_start"))
        .sort("sensor_id", "traveler_type", "period_start", "start")
    )
    key = ["sensor_id", "traveler_type", "period_start"]
    agg = p.group_by(key).agg(
        pl.col("windows").sum().cast(pl.Int64),
        pl.col("volume").sum().cast(pl.Int64),
        pl.col("speed_samples").sum().cast(pl.Int64),
        _sum_or_null("speed_sum_fps").alias("speed_sum_fps"),
        pl.col("speed_min_fps").min(),
        pl.col("speed_max_fps").max(),
        pl.col("dwell_s").fill_null(0.0).sum(),
        pl.col("dwell_visits").sum().cast(pl.Int64),
    )
    hb = (
        _frame(bins)
        .with_columns(pl.col("start").dt.truncate(every).alias("period_start"))
        .group_by(*key, "bin_mph")
        .agg(pl.col("visits").sum().cast(pl.Int64))
        .sort(*key, "bin_mph")
    )
    rank = P85 * pl.col("n")
    est = (
        hb.with_columns(
            pl.col("visits").cum_sum().over(key).alias("cum_incl"),
            pl.col("visits").sum().over(key).alias("n"),
        )
        .filter((pl.col("cum_incl") - pl.col("visits") < rank) & (rank <= pl.col("cum_incl")))
        .select(
            *key,
            (
                pl.col("bin_mph")
                + SPEED_BIN_MPH * (rank - (pl.col("cum_incl") - pl.col("visits"))) / pl.col("visits")
            ).alias("p85_mph"),
        )
    )
    mean = pl.col("speed_sum_fps") / pl.col("speed_samples")
    out = (
        agg.join(est, on=key, how="left")
        .with_columns(
            (pl.col("period_start") + pl.duration(seconds=period_s)).alias("period_end"),
            pl.lit(period_s, dtype=pl.Int32).alias("period_s"),
            pl.when(pl.col("speed_samples") > 0).then(mean).alias("mean_speed_fps"),
            pl.when(pl.col("speed_samples") > 0).then(mean * FPS_TO_MPH).alias("mean_speed_mph"),
            pl.max_horizontal(
                pl.min_horizontal(pl.col("p85_mph"), pl.col("speed_max_fps") * FPS_TO_MPH),
                pl.col("speed_min_fps") * FPS_TO_MPH,
            ).alias("p85_speed_mph_binned"),
            _share("volume", ["sensor_id", "period_start"]).alias("mode_share"),
        )
        .with_columns(pl.when(pl.col("p85_mph").is_not_null()).then(pl.col("p85_speed_mph_binned")))
        .sort(key)
    )
    out_bins = hb.rename({"period_start": "window_start"}).with_columns(
        (pl.col("window_start") + pl.duration(seconds=period_s)).alias("window_end"),
        pl.lit(period_s, dtype=pl.Int32).alias("window_s"),
    )
    return _arrow(out, ROLLUP_STATS_SCHEMA), _arrow(out_bins, SPEED_BINS_SCHEMA)


def peak_hour_polars(quarters: pa.Table) -> pa.Table:
    """Peak hour and PHF per sensor, traveler type (and ``"all"``) and UTC day (Polars)."""
    q = _frame(quarters).select("sensor_id", "traveler_type", "window_start", "volume")
    total = q.group_by("sensor_id", "window_start").agg(pl.col("volume").sum().cast(pl.Int64)).select(
        "sensor_id", pl.lit(ALL_TYPES).alias("traveler_type"), "window_start", "volume"
    )
    base = pl.concat([q.with_columns(pl.col("volume").cast(pl.Int64)), total]).with_columns(
        pl.col("window_start").dt.truncate("1d").alias("day_start")
    )
    key = ["sensor_id", "traveler_type"]
    cand = base.filter(
        pl.col("window_start") + pl.duration(hours=1) <= pl.col("day_start") + pl.duration(days=1)
    ).select(*key, "day_start", pl.col("window_start").alias("peak_start"))
    hours = (
        cand.join(base.select(*key, "window_start", "volume"), on=key, how="inner")
        .filter(
            (pl.col("window_start") >= pl.col("peak_start"))
            & (pl.col("window_start") < pl.col("peak_start") + pl.duration(hours=1))
        )
        .group_by(*key, "day_start", "peak_start")
        .agg(pl.col("volume").sum().alias("peak_hour_volume"), pl.col("volume").max().alias("max_15min_volume"))
        .sort(*key, "day_start", pl.col("peak_hour_volume"), "peak_start", descending=[False, False, False, True, False])
        .group_by(*key, "day_start", maintain_order=True)
        .first()
        .with_columns(
            (pl.col("peak_start") + pl.duration(hours=1)).alias("peak_end"),
            pl.when(pl.col("max_15min_volume") > 0)
            .then(pl.col("peak_hour_volume") / (4.0 * pl.col("max_15min_volume")))
            .alias("phf"),
        )
        .sort(*key, "day_start")
    )
    return _arrow(hours, PEAK_HOUR_SCHEMA)


def occupancy_polars(events: pa.Table, hours_start: datetime, hours_end: datetime, *, visit_gap_s: float) -> pa.Table:
    """Occupancy grid per sensor, traveler type, UTC hour and 5-ft cell (Polars)."""
    key = ["sensor_id", "traveler_id"]
    gap_us = visit_gap_s * 1_000_000
    ev = (
        pl.from_arrow(with_arrival(events))
        .sort(*key, "ts", "kafka_partition", "kafka_offset")
        .unique(subset=[*key, "ts"], keep="first", maintain_order=True)
    )
    gap = (pl.col("ts") - pl.col("ts").shift(1)).dt.total_microseconds().over(key)
    nxt = (pl.col("ts").shift(-1) - pl.col("ts")).dt.total_microseconds().over(key)
    t = (
        ev.with_columns(gap.alias("gap_us"), nxt.alias("next_us"))
        .with_columns(
            (pl.col("gap_us").is_null() | (pl.col("gap_us") > gap_us)).cast(pl.Int64).cum_sum().over(key).alias("visit_no")
        )
        .with_columns(
            pl.col("traveler_type").last().over([*key, "visit_no"]).alias("visit_type"),
            pl.when(pl.col("next_us").is_not_null() & (pl.col("next_us") <= gap_us))
            .then(pl.col("next_us") / 1e6)
            .otherwise(0.0)
            .alias("dt_s"),
        )
        .filter((pl.col("ts") >= hours_start) & (pl.col("ts") < hours_end))
        .sort("sensor_id", "visit_type", "traveler_id", "ts")
    )
    out = (
        t.with_columns(
            pl.col("ts").dt.truncate("1h").alias("hour_start"),
            ((pl.col("x_ft") / CELL_FT).floor() * CELL_FT).alias("cell_x_ft"),
            ((pl.col("y_ft") / CELL_FT).floor() * CELL_FT).alias("cell_y_ft"),
        )
        .group_by("sensor_id", pl.col("visit_type").alias("traveler_type"), "hour_start", "cell_x_ft", "cell_y_ft")
        .agg(
            pl.col("dt_s").sum().alias("occupancy_s"),
            pl.len().cast(pl.Int64).alias("observations"),
            pl.col("traveler_id").n_unique().cast(pl.Int64).alias("travelers"),
        )
        .sort("sensor_id", "traveler_type", "hour_start", "cell_x_ft", "cell_y_ft")
    )
    return _arrow(out, OCCUPANCY_SCHEMA)
