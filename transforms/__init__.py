"""Lake transforms: rolling-window traffic measures in DuckDB SQL and in Polars.

Public surface::

    run_transform(settings, start, end, engine="duckdb", jobs=None, windows_s=None, step_s=None)
        -> TransformResult                     # the backfill: replaces [start, end) in one transaction
    JOBS = ("windows", "rollups", "peak_hour", "occupancy")
    compute_windows_duckdb / compute_windows_polars((visits, segments), grid) -> window_stats rows
    compute_speed_bins_duckdb / compute_speed_bins_polars((visits, segments), grid) -> speed_bins rows
    rollup_duckdb / rollup_polars(parts, bins, period_s) -> (rollup_stats rows, speed_bins rows)
    peak_hour_duckdb / peak_hour_polars(quarters) -> peak_hour rows
    occupancy_duckdb / occupancy_polars(events, hours_start, hours_end, visit_gap_s=) -> occupancy_grid rows
    build_visits_segments(events, min_segment_s=, visit_gap_s=) -> VisitsSegments
    WindowGrid.build(start, end, window_s=, step_s=)

Definitions: :mod:`transforms.windows` (windows, volume, speeds, p85, bins, dwell, mode split),
:mod:`transforms.measures` (roll-ups, peak hour, occupancy) and :mod:`transforms.segments`
(visits and segments). Imports ``lake`` and ``sensorlake`` only.
"""

from transforms.backfill import (
    JOBS,
    TableResult,
    TransformResult,
    compute_windows,
    run_transform,
    validate_jobs,
    validate_range,
)
from transforms.duckdb_job import (
    compute_speed_bins_duckdb,
    compute_windows_duckdb,
    occupancy_duckdb,
    peak_hour_duckdb,
    rollup_duckdb,
)
from transforms.polars_job import (
    compute_speed_bins_polars,
    compute_windows_polars,
    occupancy_polars,
    peak_hour_polars,
    rollup_polars,
)
from transforms.segments import (
    SEGMENTS_SCHEMA,
    VISITS_SCHEMA,
    VisitsSegments,
    build_visits_segments,
)
from transforms.windows import (
    DEFAULT_WINDOWS_S,
    WindowGrid,
    quantile_linear,
    read_bounds,
    window_starts,
)

__all__ = [
    "DEFAULT_WINDOWS_S",
    "JOBS",
    "SEGMENTS_SCHEMA",
    "VISITS_SCHEMA",
    "TableResult",
    "TransformResult",
    "VisitsSegments",
    "WindowGrid",
    "build_visits_segments",
    "compute_speed_bins_duckdb",
    "compute_speed_bins_polars",
    "compute_windows",
    "compute_windows_duckdb",
    "compute_windows_polars",
    "occupancy_duckdb",
    "occupancy_polars",
    "peak_hour_duckdb",
    "peak_hour_polars",
    "quantile_linear",
    "read_bounds",
    "rollup_duckdb",
    "rollup_polars",
    "run_transform",
    "validate_jobs",
    "validate_range",
    "window_starts",
]
