"""Rolling-window maths, shared by the DuckDB and the Polars jobs (pure: no I/O, no clock).

Definitions (ARCHITECTURE.md, "Transforms"):

* **Window grid.** Window starts are aligned to multiples of ``step_s`` since the UTC epoch.
  For a requested range ``[range_start, range_end)`` the grid's origin is ``range_start``
  floored to the step, and the windows are ``[ws, ws + window_s)`` for
  ``ws = origin + k * step_s`` (k = 0, 1, ...) while ``ws < range_end``. Defaults: 900 s
  windows every 900 s (``Settings.window_s`` / ``Settings.window_step_s``); with
  ``step_s < window_s`` the windows slide and overlap.
* **Visit.** Per ``(sensor_id, traveler_id)``, events in event-time order; a gap larger than
  ``visit_gap_s`` starts a new visit. Its interval is ``[first_ts, last_ts]`` (closed).
* **Volume** of a window ``[ws, we)``: the number of visits whose interval overlaps it,
  ``first_ts < we AND last_ts >= ws``. A traveler counts in every window its visit overlaps:
  a visit 14:58-15:03 counts in 14:45-15:00 and in 15:00-15:15.
* **Per-visit speed** in a window: ``sum(distance_ft) / sum(duration_s)`` (ft/s) of the visit's
  merged segments whose end time lies in ``[ws, we)``. A visit with no such segment counts in
  the volume but has no speed.
* **Per sensor, traveler type and window**: ``volume``, ``speed_samples`` (visits with a
  speed), ``mean_speed_fps`` (mean of the per-visit speeds), ``p85_speed_fps`` (85th
  percentile of the per-visit speeds by linear interpolation between order statistics, see
  :func:`quantile_linear`), and the same two speeds in mph (x 3600 / 5280).
* **Empty windows** are rows with ``volume = 0``, ``speed_samples = 0`` and NULL speeds, for
  every (sensor_id, traveler_type) pair that has at least one visit overlapping at least one
  window of the grid, and (in a backfill) every pair observed on the window's UTC day, so a
  day has the same rows whether it is backfilled whole or hour by hour.
* **Window lengths and step.** A run computes several window lengths at once (default
  :data:`DEFAULT_WINDOWS_S`: 1, 5 and 15 minutes); each slides by ``min(step_s, window_s)``,
  which must divide the window length (a 15-minute window every 5 minutes is fine, every 7
  is refused), so the tumbling 15-minute windows the roll-ups start from always exist.
* **Speed bins.** Per-visit speeds in mph binned by :data:`SPEED_BIN_MPH` (5 mph):
  ``bin_mph = floor(speed_mph / 5) * 5`` is the bin's lower edge, bins are ``[lo, lo + 5)``.
* **Dwell.** A merged segment slower than :data:`DWELL_MPH` (0.5 mph) is dwelling: its
  ``duration_s`` counts as dwell time in the window its end lies in.
* **Mode split.** ``mode_share`` = the type's volume / the volume of all types at the same
  sensor and window (NULL when that total is 0).
* **Read range.** Events are read for ``[first window start - visit_gap_s, last window end +
  visit_gap_s)`` so that visits crossing the range edges are reconstructed (see
  :func:`read_bounds`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import pyarrow as pa

from lake.schema import TS, as_utc  # as_utc: naive = UTC, aware -> UTC (re-exported)
from sensorlake.events import ts_from_us, ts_to_us
from sensorlake.kinematics import FPS_TO_MPH

__all__ = [
    "CELL_FT",
    "DEFAULT_WINDOWS_S",
    "DWELL_MPH",
    "FPS_TO_MPH",
    "P85",
    "SPEED_BIN_MPH",
    "WINDOWS_SCHEMA",
    "WindowGrid",
    "as_utc",
    "floor_to_step",
    "quantile_linear",
    "read_bounds",
    "window_starts",
]

P85 = 0.85  # the percentile of the "85th-percentile speed"
DEFAULT_WINDOWS_S: tuple[int, ...] = (60, 300, 900)  # 1, 5 and 15 minutes
BASE_WINDOW_S = 900  # the 15-minute windows that roll up to hours and days, and give the PHF
SPEED_BIN_MPH = 5  # width of a speed bin (mph)
DWELL_MPH = 0.5  # slower than this, a traveler is dwelling (mph)
CELL_FT = 5.0  # side of an occupancy-grid cell (ft)

WINDOWS_SCHEMA = pa.schema(
    [pa.field("window_start", TS, nullable=False), pa.field("window_end", TS, nullable=False)]
)


def step_for(window_s: int, step_s: int) -> int:
    """The step of ``window_s`` windows for a configured ``step_s``: ``min(step_s, window_s)``.

    Raises:
        ValueError: a size is <= 0, or the step does not divide the window length.

    >>> step_for(900, 300), step_for(60, 900)
    (300, 60)
    """
    if window_s <= 0 or step_s <= 0:
        raise ValueError("window and step lengths must be > 0")
    step = min(int(step_s), int(window_s))
    if window_s % step:
        raise ValueError(f"a step of {step} s does not divide {window_s} s windows")
    return step


def floor_to_step(ts: datetime, step_s: int) -> datetime:
    """Floor ``ts`` to a multiple of ``step_s`` seconds since the UTC epoch (naive = UTC).

    >>> from datetime import UTC
    >>> floor_to_step(datetime(2026, 11, 30, 14, 7, 31, tzinfo=UTC), 900).isoformat()
    '2026-11-30T14:00:00+00:00'
    """
    if step_s <= 0:
        raise ValueError("step_s must be > 0")
    step_us = int(step_s) * 1_000_000
    return ts_from_us(ts_to_us(as_utc(ts)) // step_us * step_us)


def window_starts(range_start: datetime, range_end: datetime, step_s: int) -> list[datetime]:
    """Starts of the windows of ``[range_start, range_end)``: ``floor(range_start) + k * step_s``
    while ``< range_end`` (aware UTC datetimes; naive inputs are taken as UTC).

    >>> [t.strftime("%H:%M") for t in window_starts(
    ...     datetime(2026, 1, 1, 14, 7), datetime(2026, 1, 1, 15, 0), 900)]
    ['14:00', '14:15', '14:30', '14:45']
    """
    end = as_utc(range_end)
    ws = floor_to_step(range_start, step_s)
    out: list[datetime] = []
    step = timedelta(seconds=int(step_s))
    while ws < end:
        out.append(ws)
        ws += step
    return out


def read_bounds(
    range_start: datetime, range_end: datetime, *, window_s: int, step_s: int, visit_gap_s: float
) -> tuple[datetime, datetime]:
    """Event-time range ``[lo, hi)`` to read so every window of the range sees whole visits.

    ``lo = first window start - visit_gap_s``, ``hi = last window end + visit_gap_s``. With
    aligned bounds and ``window_s == step_s`` this is ``[range_start - gap, range_end + gap)``.

    Notes:
        A visit observed without a gap since before ``lo`` is reconstructed from ``lo`` on:
        its volume is exact (it still overlaps the same windows), but the merge-forward anchors
        of its segments may fall differently than in a run that starts earlier.

    >>> lo, hi = read_bounds(datetime(2026, 1, 1, 14), datetime(2026, 1, 1, 15),
    ...                      window_s=900, step_s=900, visit_gap_s=60)
    >>> lo.strftime("%H:%M"), hi.strftime("%H:%M")
    ('13:59', '15:01')
    """
    grid = WindowGrid.build(range_start, range_end, window_s=window_s, step_s=step_s)
    gap = timedelta(seconds=visit_gap_s)
    return grid.first_start - gap, grid.last_end + gap


@dataclasses.dataclass(frozen=True)
class WindowGrid:
    """The windows of one transform run.

    Attributes:
        starts: window starts, aware UTC, ascending (never empty).
        window_s: window length (s).
        step_s: distance between consecutive window starts (s).
    """

    starts: tuple[datetime, ...]
    window_s: int
    step_s: int

    @classmethod
    def build(cls, range_start: datetime, range_end: datetime, *, window_s: int, step_s: int) -> WindowGrid:
        """Grid of ``[range_start, range_end)``; raises ValueError when it is empty or a size is <= 0."""
        if window_s <= 0 or step_s <= 0:
            raise ValueError("window_s and step_s must be > 0")
        starts = window_starts(range_start, range_end, step_s)
        if not starts:
            raise ValueError("the range contains no window: range_start must be < range_end")
        return cls(tuple(starts), int(window_s), int(step_s))

    @property
    def first_start(self) -> datetime:
        """Start of the first window (``range_start`` floored to the step)."""
        return self.starts[0]

    @property
    def last_end(self) -> datetime:
        """End of the last window (may lie after ``range_end`` by up to ``window_s``)."""
        return self.starts[-1] + timedelta(seconds=self.window_s)

    def to_arrow(self) -> pa.Table:
        """The windows as an Arrow table with :data:`WINDOWS_SCHEMA` (window_start, window_end)."""
        size = timedelta(seconds=self.window_s)
        return pa.Table.from_pydict(
            {"window_start": list(self.starts), "window_end": [s + size for s in self.starts]},
            schema=WINDOWS_SCHEMA,
        )


def quantile_linear(values: Sequence[float], q: float) -> float | None:
    """Quantile by linear interpolation between order statistics (the one definition used
    everywhere: DuckDB ``quantile_cont``, Polars ``interpolation="linear"``, PostgreSQL
    ``percentile_cont``). Position ``h = q * (n - 1)`` in the sorted values (0-based);
    the result is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
    None for no values.

    >>> quantile_linear([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 0.85)
    86.5
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        return None
    h = q * (len(xs) - 1)
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])
