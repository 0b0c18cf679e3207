"""Visits and merged segments from raw events, by the live kinematics' own rule.

The lake transforms must agree with the live summaries, so this module applies the segment
rule of the pure :func:`sensorlake.kinematics.apply_event`, but in **event-time order** (the live consumer
applies them in arrival order and can only count a late event; here it lands where it
belongs, so the lake gives the exact answer).

Definitions:

* Events are grouped by ``(sensor_id, traveler_id)`` and sorted by ``ts``; ties on ``ts``
  keep arrival order (``kafka_partition``, ``kafka_offset``) so the first-arrived event
  wins, as it does live. An event with the same key and ``ts`` as the previous one changes
  nothing (an exact duplicate, or a zero-time move that the live path rejects).
* A gap larger than ``visit_gap_s`` (event time) starts a new **visit**. A visit is
  ``[visit_start, visit_end]`` = its first and last observation times (closed interval);
  its ``traveler_type`` is the one of its last observation (the sensor may reclassify).
* A **segment** is a merge-forward segment of :mod:`sensorlake.kinematics`: from an anchor
  to the first later observation at least ``min_segment_s`` after it; ``distance_ft`` is the
  euclidean distance between the two positions (ft), ``duration_s`` the elapsed time (s),
  and ``seg_end_ts`` the time of the closing observation. Observations after the last
  anchor that span less than ``min_segment_s`` yield no segment (they still extend the visit).

Columnar: the sort, key and visit boundaries, dropped same-time rows, visit figures and
segment lengths are Arrow/NumPy operations. Only the merge-forward anchor chain is a Python
loop, over integer times alone (an anchor depends on the previous one). The expressions
are those of :func:`sensorlake.kinematics.apply_event` (``math.hypot``, ``(t1 - t0) /
1_000_000``), so segments are bit-identical to the live path; ``tests/unit/test_windows.py``
checks the result against folding ``apply_event`` itself, with hypothesis.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lake.schema import TS

VISITS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_id", pa.string(), nullable=False),
        pa.field("traveler_type", pa.string(), nullable=False),
        pa.field("visit_start", TS, nullable=False),
        pa.field("visit_end", TS, nullable=False),
        pa.field("observations", pa.int64(), nullable=False),
    ]
)

SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("sensor_id", pa.int64(), nullable=False),
        pa.field("traveler_id", pa.string(), nullable=False),
        pa.field("visit_start", TS, nullable=False),
        pa.field("seg_end_ts", TS, nullable=False),
        pa.field("distance_ft", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
    ]
)

_REQUIRED = ("sensor_id", "traveler_id", "traveler_type", "ts", "x_ft", "y_ft")
_TIEBREAK = ("kafka_partition", "kafka_offset")


class VisitsSegments(NamedTuple):
    """Output of :func:`build_visits_segments`.

    Attributes:
        visits: one row per visit, :data:`VISITS_SCHEMA`; a visit is identified by
            ``(sensor_id, traveler_id, visit_start)``.
        segments: one row per merged segment, :data:`SEGMENTS_SCHEMA`, joined to its visit
            by ``(sensor_id, traveler_id, visit_start)``.
    """

    visits: pa.Table
    segments: pa.Table


def build_visits_segments(events: pa.Table, *, min_segment_s: float, visit_gap_s: float) -> VisitsSegments:
    """Split events into visits and merge-forward segments (see the module docstring).

    Args:
        events: rows with at least sensor_id, traveler_id, traveler_type, ts (timestamp,
            UTC), x_ft, y_ft (ft); ``kafka_partition``/``kafka_offset`` when present break
            ties on equal ``ts``. Any order: they are sorted here.
        min_segment_s: shortest segment (s) that yields a speed (``Settings.min_segment_s``).
        visit_gap_s: event-time gap (s) that ends a visit (``Settings.visit_gap_s``).

    Returns:
        :class:`VisitsSegments`, both sorted by sensor_id, traveler_id, time.

    Raises:
        ValueError: a required column is missing.

    >>> from datetime import datetime, UTC
    >>> t = lambda s: datetime(2026, 1, 1, 14, 0, s, tzinfo=UTC)
    >>> ev = pa.table({"sensor_id": [5, 5, 5], "traveler_id": ["T5"] * 3,
    ...                "traveler_type": ["car"] * 3, "ts": [t(0), t(20), t(10)],
    ...                "x_ft": [0.0, 200.0, 100.0], "y_ft": [0.0, 0.0, 0.0]})
    >>> out = build_visits_segments(ev, min_segment_s=0.5, visit_gap_s=60)
    >>> out.segments.column("distance_ft").to_pylist(), out.segments.column("duration_s").to_pylist()
    ([100.0, 100.0], [10.0, 10.0])
    """
    missing = [c for c in _REQUIRED if c not in events.column_names]
    if missing:
        raise ValueError(f"events lack column(s): {', '.join(missing)}")
    keys = [c for c in ("sensor_id", "traveler_id", "ts", *_TIEBREAK) if c in events.column_names]
    ev = events if _in_key_order(events, keys) else events.sort_by([(k, "ascending") for k in keys])
    n = ev.num_rows
    if n == 0:
        return VisitsSegments(VISITS_SCHEMA.empty_table(), SEGMENTS_SCHEMA.empty_table())

    sid_col = ev.column("sensor_id").combine_chunks()
    tid_col = ev.column("traveler_id").combine_chunks()
    sid = sid_col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    ts = pc.cast(ev.column("ts").cast(TS), pa.int64()).to_numpy(zero_copy_only=False)
    # a row starts a key when its (sensor_id, traveler_id) differs from the row before
    new_key = np.ones(n, dtype=bool)
    if n > 1:
        same_tid = pc.equal(tid_col.slice(1), tid_col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        new_key[1:] = (sid[1:] != sid[:-1]) | ~same_tid
    # a row with its key's previous time changes nothing (duplicate / zero-time move): drop it
    keep = new_key.copy()
    keep[1:] |= ts[1:] != ts[:-1]
    rows = np.flatnonzero(keep)
    ts, sid, new_key = ts[rows], sid[rows], new_key[rows]
    x = ev.column("x_ft").to_numpy().astype(np.float64, copy=False)[rows]
    y = ev.column("y_ft").to_numpy().astype(np.float64, copy=False)[rows]
    # a visit starts with a key, or after more than visit_gap_s without an observation
    new_visit = new_key.copy()
    new_visit[1:] |= (ts[1:] - ts[:-1]) > visit_gap_s * 1_000_000
    starts = np.flatnonzero(new_visit)
    ends = np.append(starts[1:], len(rows)) - 1  # last row of each visit
    visit_of_row = np.cumsum(new_visit) - 1
    take_start, take_end = pa.array(rows[starts]), pa.array(rows[ends])
    visits = pa.Table.from_arrays(
        [
            pa.array(sid[starts], pa.int64()),
            tid_col.take(take_start),
            ev.column("traveler_type").take(take_end).combine_chunks(),  # the last observation's type
            pa.array(ts[starts], pa.int64()).cast(TS),
            pa.array(ts[ends], pa.int64()).cast(TS),
            pa.array(ends - starts + 1, pa.int64()),
        ],
        schema=VISITS_SCHEMA,
    )

    anchors, closers = _merge_forward(ts.tolist(), starts.tolist(), ends.tolist(), min_segment_s)
    a, c = np.asarray(anchors, dtype=np.int64), np.asarray(closers, dtype=np.int64)
    hypot = math.hypot
    dist = [hypot(x1 - x0, y1 - y0) for x0, y0, x1, y1 in zip(x[a].tolist(), y[a].tolist(),
                                                               x[c].tolist(), y[c].tolist())]  # fmt: skip
    seg_visit = visit_of_row[c]
    segments = pa.Table.from_arrays(
        [
            pa.array(sid[c], pa.int64()),
            tid_col.take(pa.array(rows[c])),
            pa.array(ts[starts][seg_visit], pa.int64()).cast(TS),
            pa.array(ts[c], pa.int64()).cast(TS),
            pa.array(dist, pa.float64()),
            pa.array((ts[c] - ts[a]) / 1_000_000, pa.float64()),
        ],
        schema=SEGMENTS_SCHEMA,
    )
    return VisitsSegments(visits, segments)


def _in_key_order(events: pa.Table, keys: list[str]) -> bool:
    """True when ``events`` need no sort: each (sensor_id, traveler_id) is one contiguous
    run, in ascending key order, ``ts`` non-decreasing within it and, on equal ``ts``, the
    tie-break columns too (``lake.reader.read_movements`` returns rows so). A few vector
    passes, against a multi-key sort with strings: the backfill reads sorted data."""
    n = events.num_rows
    if n < 2:
        return True
    sid = events.column("sensor_id").to_numpy()
    tid = events.column("traveler_id")
    same_tid = pc.equal(tid.slice(1), tid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    same_key = (sid[1:] == sid[:-1]) & same_tid
    starts = np.flatnonzero(np.concatenate(([True], ~same_key)))
    run_sid = sid[starts]
    run_tid = tid.take(pa.array(starts)).to_pylist()
    run_keys = list(zip(run_sid.tolist(), run_tid, strict=True))
    if any(a >= b for a, b in zip(run_keys, run_keys[1:])):  # noqa: RUF007 - tuples, not a pairwise walk
        return False  # a key out of order or split in two runs
    ts = pc.cast(events.column("ts").cast(TS), pa.int64()).to_numpy()
    tied = same_key & (ts[1:] == ts[:-1])
    if np.any(same_key & (ts[1:] < ts[:-1])):
        return False
    for col in keys[3:]:  # tie-breaks, most significant first
        v = events.column(col).to_numpy()
        if np.any(tied & (v[1:] < v[:-1])):
            return False
        tied &= v[1:] == v[:-1]
    return True


def _merge_forward(ts: list[int], starts: list[int], ends: list[int], min_segment_s: float) -> tuple[list, list]:
    """Row indexes ``(anchors, closers)`` of every merge-forward segment: within each visit
    ``starts[k]..ends[k]`` of the time list ``ts`` (UTC µs, strictly increasing within a
    visit), the anchor is the visit's first row, and the first later row at least
    ``min_segment_s`` after it closes a segment and becomes the next anchor (the rule and
    the expression of ``kinematics.apply_event``)."""
    anchors: list[int] = []
    closers: list[int] = []
    for first, last in zip(starts, ends):
        anchor = first
        t_anchor = ts[first]
        for i in range(first + 1, last + 1):
            t = ts[i]
            if (t - t_anchor) / 1_000_000 >= min_segment_s:
                anchors.append(anchor)
                closers.append(i)
                anchor, t_anchor = i, t
    return anchors, closers
