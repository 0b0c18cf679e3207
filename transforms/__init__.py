"""Lake transforms: rolling-window traffic statistics in DuckDB SQL and in Polars.

Public surface::

    run_transform(settings, start, end, engine="duckdb") -> TransformResult   # the backfill
    compute_windows_duckdb((visits, segments), grid, con=None) -> pa.Table
    compute_windows_polars((visits, segments), grid) -> pa.Table
    build_visits_segments(events, min_segment_s=, visit_gap_s=) -> VisitsSegments
    WindowGrid.build(start, end, window_s=, step_s=)

Definitions (visits, segments, windows, volume, speeds, p85) are in :mod:`transforms.windows`
and :mod:`transforms.segments`. Imports ``lake`` and ``sensorlake`` only.
"""

from transforms.backfill import TransformResult, compute_windows, run_transform, validate_range
from transforms.duckdb_job import compute_windows_duckdb
from transforms.polars_job import compute_windows_polars
from transforms.segments import SEGMENTS_SCHEMA, VISITS_SCHEMA, VisitsSegments, build_visits_segments
from transforms.windows import WindowGrid, quantile_linear, read_bounds, window_starts

__all__ = [
    "SEGMENTS_SCHEMA",
    "VISITS_SCHEMA",
    "TransformResult",
    "VisitsSegments",
    "WindowGrid",
    "build_visits_segments",
    "compute_windows",
    "compute_windows_duckdb",
    "compute_windows_polars",
    "quantile_linear",
    "read_bounds",
    "run_transform",
    "validate_range",
    "window_starts",
]
