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

from lake.schema import ROLLUP_STATS_SCHEMA, SPEED_BINS_SCHEMA, TS

ALL_TYPES = "all"  # the traveler_type of peak-hour rows over every type of a sensor

# the stored values a roll-up merges (added up, or min/max): columns of rollup_stats, and of
# window_stats but for ``windows`` (1 per 15-minute row)
MERGED_COLUMNS: tuple[str, ...] = (
    "windows", "volume", "speed_samples", "speed_sum_fps", "speed_min_fps", "speed_max_fps", "dwell_s", "dwell_visits",
)  # fmt: skip
_KEY = [ROLLUP_STATS_SCHEMA.field("sensor_id"), ROLLUP_STATS_SCHEMA.field("traveler_type"), pa.field("start", TS, nullable=False)]

# what a roll-up merges: one row per sensor, type and finer period (``start``), typed as in rollup_stats
PARTS_SCHEMA = pa.schema([*_KEY, *(ROLLUP_STATS_SCHEMA.field(c) for c in MERGED_COLUMNS)])

# their 5-mph histograms, typed as in speed_bins
PART_BINS_SCHEMA = pa.schema([*_KEY, SPEED_BINS_SCHEMA.field("bin_mph"), SPEED_BINS_SCHEMA.field("visits")])


def _conform(t: pa.Table, schema: pa.Schema, start: str = "start") -> pa.Table:
    """The fields of ``schema`` taken from ``t`` and cast; the ``start`` field from the column named ``start``."""
    return pa.Table.from_arrays(
        [t.column(start if f.name == "start" else f.name).cast(f.type) for f in schema], schema=schema
    )


def parts_from_windows(window_stats: pa.Table) -> pa.Table:
    """``window_stats`` rows -> :data:`PARTS_SCHEMA` (each window counts as 1)."""
    ones = pa.array([1] * window_stats.num_rows, pa.int64())
    return _conform(window_stats.append_column("windows", ones), PARTS_SCHEMA, "window_start")


def parts_from_rollups(rollups: pa.Table) -> pa.Table:
    """``rollup_stats`` rows -> :data:`PARTS_SCHEMA` (``start`` = ``period_start``)."""
    return _conform(rollups, PARTS_SCHEMA, "period_start")


def part_bins(speed_bins: pa.Table) -> pa.Table:
    """``speed_bins`` rows -> :data:`PART_BINS_SCHEMA` (``start`` = ``window_start``)."""
    return _conform(speed_bins, PART_BINS_SCHEMA, "window_start")


# (sensor_id, traveler_type) pairs that get a window row even with no visit (zero-filled)
PAIRS_SCHEMA = pa.schema([ROLLUP_STATS_SCHEMA.field("sensor_id"), ROLLUP_STATS_SCHEMA.field("traveler_type")])


def pairs_table(pairs: pa.Table | None) -> pa.Table:
    """``pairs`` (any table with sensor_id and traveler_type) as :data:`PAIRS_SCHEMA`; None = none."""
    if pairs is None:
        return PAIRS_SCHEMA.empty_table()
    return _conform(pairs, PAIRS_SCHEMA)


def with_arrival(events: pa.Table) -> pa.Table:
    """Events with ``kafka_partition``/``kafka_offset`` (what breaks ties on equal ``ts``); when
    missing, the row order is the arrival order."""
    if "kafka_partition" in events.column_names and "kafka_offset" in events.column_names:
        return events
    n = events.num_rows
    return events.append_column("kafka_partition", pa.array([0] * n, pa.int32())).append_column(
        "kafka_offset", pa.array(range(n), pa.int64())
    )
