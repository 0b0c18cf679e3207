"""Roll-ups, peak hour, occupancy and dwell: the definitions, and the inputs the engines share.

Definitions (the window measures are in :mod:`transforms.windows`):

* **Roll-ups** (``lake.rollup_stats``, histograms in ``lake.speed_bins``). The tumbling
  15-minute rows of ``lake.window_stats`` (``window_s = 900``, starts on quarter hours) merge
  into hours (``period_s = 3600``), and the stored hours into UTC days (``86400``), from the
  stored values only: ``windows`` (15-minute windows merged), ``volume``, ``speed_samples``,
  ``speed_sum_fps``, ``dwell_s`` and ``dwell_visits`` add up; ``speed_min_fps`` and
  ``speed_max_fps`` take the min and max; the 5-mph histograms add bin by bin. Then
  ``mean_speed_fps = speed_sum_fps / speed_samples`` (exactly the mean of the per-visit
  speeds of the 15-minute windows) and ``mode_share = volume / volume of all types``.
  A roll-up's ``volume`` is the **sum of its 15-minute volumes**: a visit that overlaps two
  quarters of an hour counts twice, as in the 15-minute counts the peak hour factor uses.
* **Binned p85** (``p85_speed_mph_binned``): the grouped-data percentile of the merged
  histogram: with ``n`` speeds and rank ``r = 0.85 n``, the bin ``[lo, lo + 5)`` whose
  cumulative count first reaches ``r`` gives ``lo + 5 (r - count below the bin) / count in
  the bin``, clamped to ``[speed_min, speed_max]`` (mph). It is an estimate; the exact p85
  of a window is ``window_stats.p85_speed_mph``.
* **Peak hour** (``lake.peak_hour``), per sensor, traveler type (and ``"all"``: every type
  of the sensor added up) and UTC day: among the hours made of four consecutive tumbling
  15-minute windows that start within the day and end by its end (start 00:00, 00:15, ...,
  23:00), the one with the largest sum of the four volumes (the earliest on a tie). Peak
  hour factor ``phf = peak_hour_volume / (4 x max_15min_volume)``, NULL when the hour is
  empty. Volumes 100, 120, 150, 130 give 500 / (4 x 150) = 0.833. Missing quarters count 0.
* **Occupancy** (``lake.occupancy_grid``), per sensor, traveler type, UTC hour and cell of
  5 x 5 ft (``cell_x_ft = floor(x_ft / 5) * 5``, the cell's lower-left corner): per visit,
  in event-time order with duplicates dropped, the time from each observation to the next
  one of the same visit is spent in the cell and the hour of the earlier observation
  (``occupancy_s``); ``observations`` counts the observations in the cell and ``travelers``
  the distinct traveler ids. A visit's type is the type of its last observation.
* **Dwell time**: the ``duration_s`` of merged segments slower than 0.5 mph, in the window
  (or period) the segment ends in (``dwell_s``, with ``dwell_visits`` the visits that had
  any).
"""

from __future__ import annotations

import pyarrow as pa

from lake.schema import TS

# what a roll-up merges: one row per sensor, type and finer period
PARTS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("start", TS, nullable=False),
        pa.field("windows", pa.int64(), nullable=False),
        pa.field("volume", pa.int64(), nullable=False),
        pa.field("speed_samples", pa.int64(), nullable=False),
        pa.field("speed_sum_fps", pa.float64()),
        pa.field("speed_min_fps", pa.float64()),
        pa.field("speed_max_fps", pa.float64()),
        pa.field("dwell_s", pa.float64()),
        pa.field("dwell_visits", pa.int64()),
    ]
)

PART_BINS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("start", TS, nullable=False),
        pa.field("bin_mph", pa.int32(), nullable=False),
        pa.field("visits", pa.int64(), nullable=False),
    ]
)


def parts_from_windows(window_stats: pa.Table) -> pa.Table:
    """``window_stats`` rows -> :data:`PARTS_SCHEMA` (each window counts as 1)."""
    t = window_stats
    n = t.num_rows
    cols = {
        "sensor_id": t.column("sensor_id"),
        "traveler_type": t.column("traveler_type"),
        "start": t.column("window_start"),
        "windows": pa.array([1] * n, pa.int64()),
    }
    for name in PARTS_SCHEMA.names[4:]:
        cols[name] = t.column(name)
    return pa.Table.from_arrays([cols[f.name].cast(f.type) for f in PARTS_SCHEMA], schema=PARTS_SCHEMA)


def parts_from_rollups(rollups: pa.Table) -> pa.Table:
    """``rollup_stats`` rows -> :data:`PARTS_SCHEMA` (``start`` = ``period_start``)."""
    t = rollups.rename_columns(["start" if c == "period_start" else c for c in rollups.column_names])
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in PARTS_SCHEMA], schema=PARTS_SCHEMA)


def part_bins(speed_bins: pa.Table) -> pa.Table:
    """``speed_bins`` rows -> :data:`PART_BINS_SCHEMA` (``start`` = ``window_start``)."""
    t = speed_bins.rename_columns(["start" if c == "window_start" else c for c in speed_bins.column_names])
    return pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in PART_BINS_SCHEMA], schema=PART_BINS_SCHEMA)
