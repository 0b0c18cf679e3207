"""Visits and merged segments from raw events, by the live kinematics' own rule.

The lake transforms must agree with the live summaries, so this module does not re-implement
the segment rule: it replays each key's events through the pure
:func:`sensorlake.kinematics.apply_event`, but in **event-time order** (the live consumer
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

This is a per-event Python loop (about a microsecond or two per event): it is kept in this
one function, Arrow in and Arrow out, so it can be replaced by a vectorised version later.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from lake.schema import TS
from sensorlake.events import Event
from sensorlake.kinematics import Outcome, TravelerState, apply_event

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
    ev = events.sort_by([(k, "ascending") for k in keys])

    sensor_ids = ev.column("sensor_id").to_pylist()
    traveler_ids = ev.column("traveler_id").to_pylist()
    types = ev.column("traveler_type").to_pylist()
    ts_us = pc.cast(ev.column("ts").cast(TS), pa.int64()).to_pylist()
    xs = ev.column("x_ft").to_pylist()
    ys = ev.column("y_ft").to_pylist()

    v_cols: dict[str, list] = {f.name: [] for f in VISITS_SCHEMA}
    s_cols: dict[str, list] = {f.name: [] for f in SEGMENTS_SCHEMA}

    def close(st: TravelerState) -> None:
        v_cols["sensor_id"].append(st.sensor_id)
        v_cols["traveler_id"].append(st.traveler_id)
        v_cols["traveler_type"].append(st.traveler_type)
        v_cols["visit_start"].append(st.first_seen_us)
        v_cols["visit_end"].append(st.last_seen_us)
        v_cols["observations"].append(st.observations)

    state: TravelerState | None = None
    for i in range(ev.num_rows):
        e = Event(sensor_ids[i], traveler_ids[i], types[i], ts_us[i], float(xs[i]), float(ys[i]))
        if state is not None and (e.sensor_id != state.sensor_id or e.traveler_id != state.traveler_id):
            close(state)
            state = None
        step = apply_event(state, e, min_segment_s=min_segment_s, visit_gap_s=visit_gap_s)
        if step.outcome is Outcome.NEW_VISIT and state is not None:
            close(state)
        elif step.segment_speed_fps is not None:
            # the same expressions as kinematics.apply_event: bit-identical to the live path
            assert state is not None
            s_cols["sensor_id"].append(e.sensor_id)
            s_cols["traveler_id"].append(e.traveler_id)
            s_cols["visit_start"].append(state.first_seen_us)
            s_cols["seg_end_ts"].append(e.ts_us)
            s_cols["distance_ft"].append(math.hypot(e.x_ft - state.anchor_x_ft, e.y_ft - state.anchor_y_ft))
            s_cols["duration_s"].append((e.ts_us - state.anchor_us) / 1_000_000)
        state = step.state
    if state is not None:
        close(state)

    return VisitsSegments(_table(v_cols, VISITS_SCHEMA), _table(s_cols, SEGMENTS_SCHEMA))


def _table(cols: dict[str, list], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)
