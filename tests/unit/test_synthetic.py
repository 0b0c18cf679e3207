"""The synthetic load generator (ingest.synthetic): determinism, order, counts, known speeds."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.synthetic import DEFAULT_START, TYPICAL_SPEEDS_FPS, generate, plan
from sensorlake.errors import InputError
from sensorlake.events import Event, decode_event, encode_event, ts_to_us

RUN = dict(sensors=3, travelers=120, rate_hz=10.0, duration_s=300.0, seed=42)


def tracks(events: list[Event]) -> dict[tuple[int, str], list[Event]]:
    out: dict[tuple[int, str], list[Event]] = defaultdict(list)
    for e in events:
        out[(e.sensor_id, e.traveler_id)].append(e)
    return out


def test_same_seed_same_events_other_seed_other_events() -> None:
    a = list(generate(**RUN))
    b = list(generate(**RUN))
    c = list(generate(**{**RUN, "seed": 43}))
    assert a == b
    assert [encode_event(e) for e in a] == [encode_event(e) for e in b]
    assert a != c
    jittered = list(generate(**RUN, jitter_ft=0.5))
    assert jittered == list(generate(**RUN, jitter_ft=0.5))
    assert [e.ts_us for e in jittered] == [e.ts_us for e in a]


def test_event_time_order_and_bounds() -> None:
    events = list(generate(**RUN, start_us=1_000_000_000_000_000))
    keys = [(e.ts_us, e.sensor_id, e.traveler_id) for e in events]
    assert keys == sorted(keys)
    assert min(keys)[0] >= 1_000_000_000_000_000
    assert max(keys)[0] <= 1_000_000_000_000_000 + 300 * 1_000_000
    assert {e.sensor_id for e in events} <= {1, 2, 3}


def test_counts_match_the_plan() -> None:
    plans = plan(**RUN)
    events = list(generate(**RUN))
    assert len(plans) == 120
    assert len(events) == sum(p.n_obs for p in plans)
    by = tracks(events)
    assert len(by) == 120
    for p in plans:
        obs = by[(p.sensor_id, p.traveler_id)]
        assert len(obs) == p.n_obs >= 2
        assert obs[0].ts_us == p.first_us and obs[-1].ts_us == p.last_us
        assert {b.ts_us - a.ts_us for a, b in zip(obs, obs[1:])} == {100_000}  # 10 Hz
        assert {e.traveler_type for e in obs} == {p.traveler_type}
        assert p.duration_s <= 300.0  # bounded visit


def test_default_start_and_types() -> None:
    events = list(generate(sensors=1, travelers=50, rate_hz=1, duration_s=100, seed=0, types=["bus", "truck"]))
    assert min(e.ts_us for e in events) >= ts_to_us(DEFAULT_START)
    assert {e.traveler_type for e in events} == {"bus", "truck"}


def test_straight_travelers_move_at_their_planned_speed() -> None:
    plans = {(p.sensor_id, p.traveler_id): p for p in plan(**RUN)}
    by = tracks(list(generate(**RUN)))
    checked = 0
    for key, obs in by.items():
        p = plans[key]
        for a, b in zip(obs, obs[1:]):
            dt_s = (b.ts_us - a.ts_us) / 1e6
            seg = math.hypot(b.x_ft - a.x_ft, b.y_ft - a.y_ft) / dt_s
            assert seg == pytest.approx(p.chord_speed_fps(dt_s), rel=1e-9)
        # average over the visit: distance / duration
        dist = sum(math.hypot(b.x_ft - a.x_ft, b.y_ft - a.y_ft) for a, b in zip(obs, obs[1:]))
        avg = dist / ((obs[-1].ts_us - obs[0].ts_us) / 1e6)
        if p.radius_ft is None:
            assert avg == pytest.approx(p.speed_fps, rel=1e-9)
            checked += 1
        else:
            assert avg < p.speed_fps
    assert checked > 50


def test_type_speeds_are_realistic() -> None:
    plans = plan(sensors=2, travelers=3000, rate_hz=1, duration_s=3600, seed=7)
    by_type: dict[str, list[float]] = defaultdict(list)
    for p in plans:
        by_type[p.traveler_type].append(p.speed_fps)
    assert set(by_type) == {"pedestrian", "bicycle", "car", "bus", "truck"}
    for t, speeds in by_type.items():
        assert statistics.mean(speeds) == pytest.approx(TYPICAL_SPEEDS_FPS[t], rel=0.03)
        assert min(speeds) >= 0.6 * TYPICAL_SPEEDS_FPS[t] and max(speeds) <= 1.4 * TYPICAL_SPEEDS_FPS[t]
    assert statistics.mean(by_type["pedestrian"]) == pytest.approx(4.5, rel=0.03)
    assert statistics.mean(by_type["car"]) == pytest.approx(40.0, rel=0.03)


def test_events_satisfy_the_wire_contract() -> None:
    for e in list(generate(**RUN, jitter_ft=1.0))[:2000]:
        assert decode_event(encode_event(e)) == e


@pytest.mark.parametrize(
    "bad",
    [
        {"sensors": 0},
        {"travelers": -1},
        {"rate_hz": 0},
        {"duration_s": -5},
        {"types": {"hovercraft": 1.0}},
        {"types": []},
        {"jitter_ft": -1.0},
        {"curved_fraction": 2.0},
    ],
)
def test_bad_arguments_raise_input_error(bad: dict) -> None:
    with pytest.raises(InputError):
        generate(**{**RUN, **bad})


def test_unknown_type_with_a_speed_is_fine() -> None:
    events = list(generate(**{**RUN, "travelers": 3}, types={"scooter": 1}, speeds_fps={"scooter": 15.0}))
    assert {e.traveler_type for e in events} == {"scooter"}


@settings(max_examples=25, deadline=None)
@given(
    sensors=st.integers(1, 5),
    travelers=st.integers(0, 30),
    rate_hz=st.sampled_from([0.5, 1.0, 3.0, 10.0, 30.0]),
    duration_s=st.floats(2.0, 120.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_run_is_ordered_and_counted(sensors, travelers, rate_hz, duration_s, seed) -> None:
    kw = dict(sensors=sensors, travelers=travelers, rate_hz=rate_hz, duration_s=duration_s, seed=seed, start_us=0)
    events = list(generate(**kw))
    keys = [(e.ts_us, e.sensor_id, e.traveler_id) for e in events]
    assert keys == sorted(keys)
    assert len(events) == sum(p.n_obs for p in plan(**kw))
    assert all(0 <= e.ts_us <= duration_s * 1e6 for e in events)
