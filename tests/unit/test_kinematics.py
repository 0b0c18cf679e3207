"""Speeds and summaries computed by hand, and properties of the kinematics."""

from __future__ import annotations

import math

from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from sensorlake.events import Event
from sensorlake.kinematics import FPS_TO_MPH, Outcome, apply_event, fps_to_mph, summarize

S = 1_000_000  # microseconds per second


def ev(t_s: float, x: float, y: float, traveler: str = "T1", sensor: int = 1) -> Event:
    return Event(sensor, traveler, "car", int(round(t_s * S)), float(x), float(y))


def run(events, min_segment_s=0.5, visit_gap_s=60.0):
    state, steps = None, []
    for i, e in enumerate(events):
        step = apply_event(state, e, min_segment_s=min_segment_s, visit_gap_s=visit_gap_s, partition=0, offset=i)
        state = step.state
        steps.append(step)
    return state, steps


def test_t1_by_hand():
    # (0,0) -> (100,0) in 10 s = 10 ft/s; (100,0) -> (100,150) in 10 s = 15 ft/s
    state, steps = run([ev(0, 0, 0), ev(10, 100, 0), ev(20, 100, 150)])
    assert [s.segment_speed_fps for s in steps] == [None, 10.0, 15.0]
    assert state.observations == 3
    assert state.distance_ft == 250.0
    assert state.duration_s == 20.0
    assert state.avg_speed_fps == 12.5
    assert state.min_speed_fps == 10.0 and state.max_speed_fps == 15.0
    assert state.first_seen_us == 0 and state.last_seen_us == 20 * S


def test_mph_conversion():
    assert math.isclose(FPS_TO_MPH, 0.6818181818, rel_tol=1e-9)
    assert math.isclose(fps_to_mph(88.0), 60.0)


def test_short_segments_merge_forward():
    # 10 Hz jitter: +-1 ft zig-zag while creeping 1 ft/s forward. Taken raw, each 0.1 s
    # segment is ~20 ft/s; merged to >= 1 s the speed is the 1 ft/s creep.
    events = [ev(i / 10, i / 10, (-1) ** i) for i in range(21)]  # t = 0.0 .. 2.0 s
    state, steps = run(events, min_segment_s=1.0)
    speeds = [s.segment_speed_fps for s in steps if s.segment_speed_fps is not None]
    assert len(speeds) == 2  # anchors at t=0, 1.0, 2.0
    # (0,1)->(1,1): 1 ft in 1 s; (1,1)->(2,1): 1 ft in 1 s
    assert speeds == [1.0, 1.0]
    assert state.distance_ft == 2.0 and state.duration_s == 2.0


def test_pending_tail_not_counted_until_min_segment():
    state, _ = run([ev(0, 0, 0), ev(1, 10, 0), ev(1.2, 12, 0)], min_segment_s=0.5)
    assert state.distance_ft == 10.0 and state.duration_s == 1.0  # 0.2 s tail pending
    assert state.last_seen_us == int(1.2 * S) and state.observations == 3


def test_duplicate_changes_nothing_but_its_count():
    base, _ = run([ev(0, 0, 0), ev(10, 100, 0)])
    dup, steps = run([ev(0, 0, 0), ev(10, 100, 0), ev(10, 100, 0)])
    assert steps[-1].outcome is Outcome.DUPLICATE
    assert dup.duplicate_count == 1
    assert (dup.distance_ft, dup.duration_s, dup.observations) == (base.distance_ft, base.duration_s, base.observations)


def test_dt_zero_move_is_rejected_and_speeds_stay_finite():
    # T6: t=0 (0,0), t=0 (0,0) duplicate, t=0 (30,0) moved in no time, t=10 (150,0)
    state, steps = run([ev(0, 0, 0), ev(0, 0, 0), ev(0, 30, 0), ev(10, 150, 0)])
    assert [s.outcome for s in steps] == [Outcome.NEW_VISIT, Outcome.DUPLICATE, Outcome.ZERO_TIME_MOVE, Outcome.ACCEPTED]
    assert state.max_speed_fps == 15.0 and state.rejected_count == 1 and state.duplicate_count == 1


def test_late_event_counted_not_applied():
    # T5: t=0 (0,0), t=20 (200,0), then t=10 (100,0)
    state, steps = run([ev(0, 0, 0), ev(20, 200, 0), ev(10, 100, 0)])
    assert steps[-1].outcome is Outcome.LATE
    assert state.late_count == 1 and state.last_seen_us == 20 * S
    assert state.min_speed_fps == 10.0 and state.max_speed_fps == 10.0


def test_replayed_offsets_change_nothing():
    events = [ev(0, 0, 0), ev(10, 100, 0), ev(20, 100, 150)]
    state, _ = run(events)
    again = state
    for i, e in enumerate(events):  # consumer B receives all three again
        step = apply_event(again, e, min_segment_s=0.5, visit_gap_s=60, partition=0, offset=i)
        assert step.outcome is Outcome.REPLAYED
        again = step.state
    assert again == state


def test_visit_gap_starts_new_visit():
    visits = summarize([ev(0, 0, 0), ev(10, 100, 0), ev(100, 0, 0), ev(110, 50, 0)], min_segment_s=0.5, visit_gap_s=60)
    assert sorted(v.avg_speed_fps for v in visits.values()) == [5.0, 10.0]


# ----------------------------------------------------------------- properties
coord = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
obs = st.lists(st.tuples(st.integers(min_value=0, max_value=10**9), coord, coord), min_size=1, max_size=60)


@given(obs, st.floats(min_value=0, max_value=5))
@hsettings(max_examples=300, deadline=None)
def test_speeds_finite_and_non_negative(points, min_seg):
    events = [Event(1, "P", "car", t, x, y) for t, x, y in points]
    state, steps = run(events, min_segment_s=min_seg, visit_gap_s=1e9)
    for s in steps:
        if s.segment_speed_fps is not None:
            assert math.isfinite(s.segment_speed_fps) and s.segment_speed_fps >= 0
    assert math.isfinite(state.distance_ft) and state.distance_ft >= 0
    assert state.duration_s >= 0
    if state.avg_speed_fps is not None:
        assert math.isfinite(state.avg_speed_fps) and state.avg_speed_fps >= 0
        assert state.min_speed_fps <= state.avg_speed_fps * (1 + 1e-9) + 1e-9
        assert state.avg_speed_fps <= state.max_speed_fps * (1 + 1e-9) + 1e-9


@given(obs, st.integers(min_value=1, max_value=10))
@hsettings(max_examples=200, deadline=None)
def test_summary_independent_of_batch_split(points, nbatches):
    """Applying events in batches, with the state carried through a serialise/deserialise
    round trip between batches (as Redis does), equals applying them in one go."""
    from ingest.redis_state import decode_state, encode_state

    events = [Event(1, "P", "car", t, x, y) for t, x, y in points]
    whole, _ = run(events)
    state = None
    size = max(1, len(events) // nbatches)
    for start in range(0, len(events), size):
        for i in range(start, min(start + size, len(events))):
            state = apply_event(state, events[i], min_segment_s=0.5, visit_gap_s=60, partition=0, offset=i).state
        state = decode_state(encode_state(state))
    assert state == whole


# ----------------------------------------------------------------- the batch form
def fold(state, events, parts, offs, min_segment_s, visit_gap_s):
    """What the batch form must equal: apply_event, one event at a time (the consumer's
    former loop: the latest state of every visit a non-replayed event touched)."""
    visits: dict[int, object] = {}
    counts: dict[str, int] = {}
    for e, p, o in zip(events, parts, offs, strict=True):
        step = apply_event(state, e, min_segment_s=min_segment_s, visit_gap_s=visit_gap_s, partition=p, offset=o)
        counts[step.outcome.value] = counts.get(step.outcome.value, 0) + 1
        state = step.state
        if step.outcome is not Outcome.REPLAYED:
            visits[state.first_seen_us] = state
    return state, list(visits.values()), counts


# timestamps on a coarse grid so that duplicates, zero-time moves, late events and visit
# gaps all occur; offsets that sometimes go back (replays) and partitions that change
batch_obs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400).map(lambda t: t * 250_000),
        st.sampled_from([0.0, 1.0, 2.5]) | coord,
        st.sampled_from([0.0, 3.0]) | coord,
        st.sampled_from(["car", "bus"]),
        st.integers(min_value=0, max_value=1),
        st.integers(min_value=-1, max_value=30),
    ),
    min_size=0,
    max_size=60,
)


@given(batch_obs, batch_obs, st.sampled_from([0.0, 0.5, 2.0]), st.sampled_from([1.0, 20.0, 60.0]))
@hsettings(max_examples=400, deadline=None)
def test_apply_events_equals_folding_apply_event(before, batch, min_seg, gap):
    from sensorlake.kinematics import apply_events

    def events_of(rows):
        return [Event(1, "P", kind, t, x, y) for t, x, y, kind, _, _ in rows]

    # a prior state built from `before`, so batches also start mid-visit
    prior, _, _ = fold(None, events_of(before), [r[4] for r in before], [r[5] for r in before], min_seg, gap)
    evs, parts, offs = events_of(batch), [r[4] for r in batch], [r[5] for r in batch]
    want_state, want_visits, want_counts = fold(prior, evs, parts, offs, min_seg, gap)
    got = apply_events(prior, evs, parts, offs, min_segment_s=min_seg, visit_gap_s=gap)
    assert got.state == want_state
    assert got.visits == want_visits
    assert got.outcomes == want_counts


def test_apply_events_by_hand_two_visits_and_a_replay():
    from sensorlake.kinematics import apply_events

    evs = [ev(0, 0, 0), ev(10, 100, 0), ev(10, 100, 0), ev(100, 0, 0), ev(110, 50, 0)]
    parts, offs = [0, 0, 0, 0, 0], [0, 1, 1, 3, 4]  # the third is a replay of offset 1
    res = apply_events(None, evs, parts, offs, min_segment_s=0.5, visit_gap_s=60)
    assert [v.avg_speed_fps for v in res.visits] == [10.0, 5.0]
    assert res.visits[-1] is res.state and res.state.kafka_offset == 4
    assert res.outcomes == {"new_visit": 2, "accepted": 2, "replayed": 1}


def test_apply_events_rejects_another_key():
    import pytest

    from sensorlake.kinematics import apply_events

    with pytest.raises(ValueError):
        apply_events(None, [ev(0, 0, 0), ev(1, 0, 0, traveler="T2")], [0, 0], [0, 1], min_segment_s=0.5, visit_gap_s=60)
