"""Per-traveler kinematics: segment speeds and visit summaries, as pure functions.

Definitions (ARCHITECTURE.md, "Speed semantics"):

* All state is keyed by ``(sensor_id, traveler_id)``: positions of two sensors are not
  comparable.
* A **segment** joins two observations of one key in event-time order; its speed is the
  euclidean distance in feet over the elapsed seconds: ``speed_fps = hypot(dx_ft, dy_ft)
  / dt_s``; ``speed_mph = speed_fps * 3600 / 5280`` (1 ft/s = 0.681818 mph).
* Positions are noisy at 10-30 Hz, so a segment shorter than ``min_segment_s`` is **merged
  forward**: the segment's start (the *anchor*) stays where it is and the next observation
  extends it, until at least ``min_segment_s`` has elapsed since the anchor. Only then is a
  speed taken and the anchor moved. Jitter therefore cannot invent 200 mph maxima.
* The **summary** of a visit: first_seen, last_seen, observations, ``distance_ft`` (sum of
  merged segment lengths), ``duration_s`` (sum of merged segment durations, i.e. anchor time
  - first_seen), time-weighted average speed ``distance_ft / duration_s``, min and max
  segment speed, and late / duplicate / rejected counts. Observations after the last
  anchor that have not yet spanned ``min_segment_s`` are pending: they set last_seen but
  not yet distance or duration.
* A **visit** ends after ``visit_gap_s`` of event time with no observation; the next
  observation starts a new visit (a new summary).
* An observation with the key's last timestamp and the same position is a **duplicate**
  and changes nothing but the duplicate count. The same timestamp with another position
  moves the traveler in zero time: it is **rejected** (``zero_time_move``). An observation
  older than the key's last timestamp is **late**: counted, never applied (the lake
  transforms, which sort by event time, give the exact answer for it).
* Exactly-once with at-least-once delivery: the state remembers the Kafka partition and
  offset of the last message applied; a message at or before it is a **replay** and is
  ignored, so a batch processed twice (crash before commit, rebalance) changes nothing.

Speeds are finite and >= 0 for every input the event contract admits: dt is always > 0
when a speed is taken.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from sensorlake.events import Event

FPS_TO_MPH = 3600.0 / 5280.0  # 1 ft/s = 0.681818... mph (exact by definition of the mile)


def fps_to_mph(speed_fps: float) -> float:
    """Convert ft/s to mph (x 3600 / 5280).

    >>> round(fps_to_mph(44.0), 6)
    30.0
    """
    return speed_fps * FPS_TO_MPH


class Outcome(enum.StrEnum):
    """What applying one observation did to a traveler's state."""

    NEW_VISIT = "new_visit"  # first observation of a visit
    ACCEPTED = "accepted"  # in-order observation, applied
    DUPLICATE = "duplicate"  # same timestamp and position as the last: no change
    LATE = "late"  # older than the last timestamp: counted only
    ZERO_TIME_MOVE = "zero_time_move"  # same timestamp, other position: rejected
    REPLAYED = "replayed"  # Kafka offset already applied: ignored


class TravelerState(msgspec.Struct, frozen=True, gc=False):
    """Kinematic state and running summary of one visit of one (sensor_id, traveler_id).

    Times are UTC epoch microseconds (``*_us``); positions in feet; speeds in ft/s.
    ``kafka_partition``/``kafka_offset`` identify the last message applied (-1: none).
    """

    sensor_id: int
    traveler_id: str
    traveler_type: str
    first_seen_us: int
    last_seen_us: int
    last_x_ft: float
    last_y_ft: float
    anchor_us: int
    anchor_x_ft: float
    anchor_y_ft: float
    observations: int = 1
    distance_ft: float = 0.0
    duration_s: float = 0.0
    min_speed_fps: float | None = None
    max_speed_fps: float | None = None
    late_count: int = 0
    duplicate_count: int = 0
    rejected_count: int = 0
    kafka_partition: int = -1
    kafka_offset: int = -1

    @property
    def avg_speed_fps(self) -> float | None:
        """Time-weighted average speed, ``distance_ft / duration_s`` (ft/s); None before
        the first merged segment."""
        return self.distance_ft / self.duration_s if self.duration_s > 0 else None


class Step(NamedTuple):
    """Result of :func:`apply_event`: the new state, what happened, and the speed (ft/s)
    of the segment closed by this observation, if any."""

    state: TravelerState
    outcome: Outcome
    segment_speed_fps: float | None = None


def start_visit(ev: Event, partition: int = -1, offset: int = -1) -> TravelerState:
    """State of a visit whose first observation is ``ev``."""
    return TravelerState(
        sensor_id=ev.sensor_id,
        traveler_id=ev.traveler_id,
        traveler_type=ev.traveler_type,
        first_seen_us=ev.ts_us,
        last_seen_us=ev.ts_us,
        last_x_ft=ev.x_ft,
        last_y_ft=ev.y_ft,
        anchor_us=ev.ts_us,
        anchor_x_ft=ev.x_ft,
        anchor_y_ft=ev.y_ft,
        kafka_partition=partition,
        kafka_offset=offset,
    )


def apply_event(
    state: TravelerState | None,
    ev: Event,
    *,
    min_segment_s: float,
    visit_gap_s: float,
    partition: int = -1,
    offset: int = -1,
) -> Step:
    """Apply one observation to a traveler's state (pure: returns a new state).

    Args:
        state: current state of the key's latest visit, or None if never seen.
        ev: the observation; must have the same (sensor_id, traveler_id) as ``state``.
        min_segment_s: shortest segment (s) that yields a speed; shorter ones merge forward.
        visit_gap_s: event-time gap (s) after which a new visit starts.
        partition, offset: Kafka origin of ``ev`` (-1 when not from Kafka).

    Returns:
        A :class:`Step`. For ``NEW_VISIT`` the returned state is a fresh visit; the
        previous visit's state is final and must be kept by the caller.

    Raises:
        ValueError: ``ev`` belongs to another key.

    >>> e = lambda t, x, y: Event(1, "T1", "car", t * 1_000_000, x, y)
    >>> s = apply_event(None, e(0, 0, 0), min_segment_s=0.5, visit_gap_s=60).state
    >>> s = apply_event(s, e(10, 100, 0), min_segment_s=0.5, visit_gap_s=60).state
    >>> apply_event(s, e(20, 100, 150), min_segment_s=0.5, visit_gap_s=60).segment_speed_fps
    15.0
    """
    if state is None:
        return Step(start_visit(ev, partition, offset), Outcome.NEW_VISIT)
    if ev.sensor_id != state.sensor_id or ev.traveler_id != state.traveler_id:
        raise ValueError("event belongs to another (sensor_id, traveler_id)")
    if offset >= 0 and partition == state.kafka_partition and offset <= state.kafka_offset:
        return Step(state, Outcome.REPLAYED)
    origin = {"kafka_partition": partition, "kafka_offset": offset} if offset >= 0 else {}
    if ev.ts_us < state.last_seen_us:
        return Step(msgspec.structs.replace(state, late_count=state.late_count + 1, **origin), Outcome.LATE)
    if ev.ts_us == state.last_seen_us:
        if ev.x_ft == state.last_x_ft and ev.y_ft == state.last_y_ft:
            new = msgspec.structs.replace(state, duplicate_count=state.duplicate_count + 1, **origin)
            return Step(new, Outcome.DUPLICATE)
        new = msgspec.structs.replace(state, rejected_count=state.rejected_count + 1, **origin)
        return Step(new, Outcome.ZERO_TIME_MOVE)
    if (ev.ts_us - state.last_seen_us) > visit_gap_s * 1_000_000:
        return Step(start_visit(ev, partition, offset), Outcome.NEW_VISIT)

    changes: dict = {
        "last_seen_us": ev.ts_us,
        "last_x_ft": ev.x_ft,
        "last_y_ft": ev.y_ft,
        "observations": state.observations + 1,
        **origin,
    }
    if ev.traveler_type != state.traveler_type:
        changes["traveler_type"] = ev.traveler_type  # the sensor reclassified it: keep the newest
    dt_s = (ev.ts_us - state.anchor_us) / 1_000_000
    speed = None
    if dt_s >= min_segment_s:  # dt_s > 0 here: ev.ts_us > last_seen_us >= anchor_us
        dist_ft = math.hypot(ev.x_ft - state.anchor_x_ft, ev.y_ft - state.anchor_y_ft)
        speed = dist_ft / dt_s
        changes.update(
            anchor_us=ev.ts_us,
            anchor_x_ft=ev.x_ft,
            anchor_y_ft=ev.y_ft,
            distance_ft=state.distance_ft + dist_ft,
            duration_s=(ev.ts_us - state.first_seen_us) / 1_000_000,
            min_speed_fps=speed if state.min_speed_fps is None else min(state.min_speed_fps, speed),
            max_speed_fps=speed if state.max_speed_fps is None else max(state.max_speed_fps, speed),
        )
    return Step(msgspec.structs.replace(state, **changes), Outcome.ACCEPTED, speed)


class BatchResult(NamedTuple):
    """Result of :func:`apply_events`.

    Attributes:
        state: the key's latest state after the batch (None only for an empty batch on an
            unseen key).
        visits: the final state of every visit the batch changed, oldest first (when not
            empty, its last item is ``state``); replayed events change nothing, so a batch
            of replays gives ``[]``.
        outcomes: how many events had each :class:`Outcome` (by its string value).
    """

    state: TravelerState | None
    visits: list[TravelerState]
    outcomes: dict[str, int]


def apply_events(
    state: TravelerState | None,
    events: Sequence[Event],
    partitions: Sequence[int],
    offsets: Sequence[int],
    *,
    min_segment_s: float,
    visit_gap_s: float,
) -> BatchResult:
    """Apply a key's observations in order: the same result as folding :func:`apply_event`
    over them, without building a state per event.

    This is the consumer's hot path. :func:`apply_event` stays the definition; this
    function holds the state's fields in local variables and builds a
    :class:`TravelerState` only where a visit ends and at the end of the batch. Every
    arithmetic expression is the one of :func:`apply_event`, in the same order, so the
    floating-point results are identical (``tests/unit/test_kinematics.py`` checks it with
    hypothesis, replays, late events, duplicates and visit gaps included).

    Args:
        state: the key's latest state, or None if never seen.
        events: the key's observations in Kafka order (all of one (sensor_id, traveler_id)).
        partitions, offsets: Kafka origin of each event (-1 when not from Kafka).
        min_segment_s, visit_gap_s: as in :func:`apply_event`.

    Returns:
        A :class:`BatchResult`.

    Raises:
        ValueError: an event belongs to another key than ``state`` or the first event.
    """
    outcomes: dict[str, int] = {}
    visits: list[TravelerState] = []
    if not events:
        return BatchResult(state, visits, outcomes)
    n_new = n_acc = n_dup = n_late = n_zero = n_replay = 0
    gap_us = visit_gap_s * 1_000_000
    hypot = math.hypot
    dirty = False  # the current visit was changed by this batch
    if state is None:
        s0 = events[0]
        state = start_visit(s0, partitions[0], offsets[0])
        n_new, dirty, start = 1, True, 1
    else:
        start = 0
    (sid, tid, ttype, first, last, lx, ly, anchor, ax, ay, obs, dist, dur, vmin, vmax,
     late, dup, rej, kp, ko) = msgspec.structs.astuple(state)  # fmt: skip

    def snapshot() -> TravelerState:
        return TravelerState(sid, tid, ttype, first, last, lx, ly, anchor, ax, ay, obs, dist, dur, vmin, vmax,
                             late, dup, rej, kp, ko)  # fmt: skip

    for i in range(start, len(events)):
        ev = events[i]
        p, off = partitions[i], offsets[i]
        if ev.sensor_id != sid or ev.traveler_id != tid:
            raise ValueError("event belongs to another (sensor_id, traveler_id)")
        if off >= 0 and p == kp and off <= ko:
            n_replay += 1
            continue
        ts = ev.ts_us
        if ts <= last:
            if off >= 0:
                kp, ko = p, off
            dirty = True
            if ts < last:
                late += 1
                n_late += 1
            elif ev.x_ft == lx and ev.y_ft == ly:
                dup += 1
                n_dup += 1
            else:
                rej += 1
                n_zero += 1
            continue
        if (ts - last) > gap_us:  # the visit ended: keep its final state, start a new one
            if dirty:
                visits.append(snapshot())
            ttype, first, last, lx, ly, anchor, ax, ay = ev.traveler_type, ts, ts, ev.x_ft, ev.y_ft, ts, ev.x_ft, ev.y_ft
            obs, dist, dur, vmin, vmax, late, dup, rej, kp, ko = 1, 0.0, 0.0, None, None, 0, 0, 0, p, off
            dirty = True
            n_new += 1
            continue
        if off >= 0:
            kp, ko = p, off
        dirty = True
        n_acc += 1
        last, lx, ly = ts, ev.x_ft, ev.y_ft
        obs += 1
        ttype = ev.traveler_type
        dt_s = (ts - anchor) / 1_000_000
        if dt_s >= min_segment_s:
            seg_ft = hypot(lx - ax, ly - ay)
            speed = seg_ft / dt_s
            anchor, ax, ay = ts, lx, ly
            dist = dist + seg_ft
            dur = (ts - first) / 1_000_000
            vmin = speed if vmin is None else min(vmin, speed)
            vmax = speed if vmax is None else max(vmax, speed)
    final = snapshot() if dirty else state
    if dirty:
        visits.append(final)
    for name, n in ((Outcome.NEW_VISIT, n_new), (Outcome.ACCEPTED, n_acc), (Outcome.DUPLICATE, n_dup),
                    (Outcome.LATE, n_late), (Outcome.ZERO_TIME_MOVE, n_zero), (Outcome.REPLAYED, n_replay)):  # fmt: skip
        if n:
            outcomes[name.value] = n
    return BatchResult(final, visits, outcomes)


def summarize(
    events: Iterable[Event], *, min_segment_s: float, visit_gap_s: float
) -> dict[tuple[int, str, int], TravelerState]:
    """Reference summaries: apply ``events`` in the given order, per key.

    Args:
        events: observations in arrival order (per key, the order Kafka delivers them).

    Returns:
        ``{(sensor_id, traveler_id, first_seen_us): final visit state}`` for every visit.
    """
    current: dict[tuple[int, str], TravelerState] = {}
    visits: dict[tuple[int, str, int], TravelerState] = {}
    for ev in events:
        key = (ev.sensor_id, ev.traveler_id)
        step = apply_event(current.get(key), ev, min_segment_s=min_segment_s, visit_gap_s=visit_gap_s)
        current[key] = step.state
        visits[(ev.sensor_id, ev.traveler_id, step.state.first_seen_us)] = step.state
    return visits
