"""Synthetic movement load: deterministic travelers with known speeds, in event-time order.

Pure and deterministic: the same arguments (including ``seed``) give the same events, byte
for byte, on every machine (NumPy's PCG64 generator). No clock is read: ``start_us`` is an
argument.

Model (units in names; feet, ft/s, UTC epoch microseconds):

* ``travelers`` travelers are spread uniformly over sensors ``sensor_base ..
  sensor_base + sensors - 1`` (keep them below 1000: the dataset readers own 1000+, see
  :mod:`ingest.readers`). Type by weighted choice from ``types``.
* Each traveler moves at a **constant speed** ``speed_fps`` = the type's typical speed
  (:data:`TYPICAL_SPEEDS_FPS`: pedestrian 4.5, bicycle 18, car 40, bus 30, truck 35,
  motorcycle 45 ft/s) x a factor ``1 + speed_cv x N(0, 1)`` clipped to [0.6, 1.4].
* Along a straight line, or (with probability ``curved_fraction``) a circular arc of radius
  50..400 ft turning left or right, from a random point of a ``area_ft`` square with a random
  heading.
* A **bounded visit**: the traveler covers a path of ``path_ft`` feet (uniform in the given
  range), so its visit lasts ``path / speed`` seconds, capped at ``max_visit_s`` and at
  ``duration_s``; it starts at a uniform time such that the visit ends by ``duration_s``.
* It is observed every ``1 / rate_hz`` s (rounded to a whole microsecond) from its first to
  its last observation (at least 2 observations), each traveler with its own phase.
* Optional position noise ``jitter_ft`` (Gaussian, per axis); 0 by default so that the
  reference speeds below are exact.

Reference speeds (for tests): a straight-path traveler's speed between **any** two of its
observations is exactly ``speed_fps`` (up to float rounding), so its average speed is
``speed_fps``. On an arc, a chord spanning ``dt_s`` is shorter than the arc:
``TravelerPlan.chord_speed_fps(dt_s) = speed_fps x sin(a) / a`` with
``a = speed_fps x dt_s / (2 |R|)``.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sensorlake.errors import InputError
from sensorlake.events import Event, ts_to_us

__all__ = [
    "DEFAULT_START",
    "DEFAULT_TYPE_MIX",
    "TYPICAL_SPEEDS_FPS",
    "TravelerPlan",
    "events_of",
    "generate",
    "plan",
]

TYPICAL_SPEEDS_FPS: dict[str, float] = {
    "pedestrian": 4.5,  # ~3.1 mph
    "bicycle": 18.0,  # ~12.3 mph
    "car": 40.0,  # ~27.3 mph, urban street
    "bus": 30.0,  # ~20.5 mph
    "truck": 35.0,  # ~23.9 mph
    "motorcycle": 45.0,  # ~30.7 mph
    "skater": 12.0,
    "cart": 10.0,
}
"""Typical speed per traveler type, ft/s (1 ft/s = 0.681818 mph)."""

DEFAULT_TYPE_MIX: dict[str, float] = {"pedestrian": 0.35, "bicycle": 0.15, "car": 0.35, "bus": 0.05, "truck": 0.10}
"""Default type weights (normalised; need not sum to 1)."""

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Default time of the run's start (``start_us`` = this in UTC epoch microseconds)."""

_SPEED_FACTOR_CLIP = (0.6, 1.4)
_RADIUS_FT = (50.0, 400.0)


@dataclasses.dataclass(frozen=True)
class TravelerPlan:
    """One synthetic traveler: where, when and how fast it moves (the ground truth).

    Attributes:
        sensor_id, traveler_id, traveler_type: as in its events.
        speed_fps: constant speed along the path, ft/s.
        first_us: UTC epoch microseconds of the first observation.
        step_us: microseconds between observations (``round(1e6 / rate_hz)``).
        n_obs: number of observations (>= 2).
        x0_ft, y0_ft: position of the first observation, ft.
        heading_rad: initial direction of travel (0 = +x, counter-clockwise).
        radius_ft: signed turn radius, ft (> 0 turns left, < 0 right); ``None`` = straight.
    """

    sensor_id: int
    traveler_id: str
    traveler_type: str
    speed_fps: float
    first_us: int
    step_us: int
    n_obs: int
    x0_ft: float
    y0_ft: float
    heading_rad: float
    radius_ft: float | None

    @property
    def last_us(self) -> int:
        """UTC epoch microseconds of the last observation."""
        return self.first_us + (self.n_obs - 1) * self.step_us

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last observation."""
        return (self.n_obs - 1) * self.step_us / 1e6

    @property
    def path_ft(self) -> float:
        """Distance travelled along the path (arc length), ft."""
        return self.speed_fps * self.duration_s

    def chord_speed_fps(self, dt_s: float) -> float:
        """Straight-line distance over ``dt_s`` seconds of travel, divided by ``dt_s`` (ft/s).

        Equals ``speed_fps`` on a straight path; smaller on an arc (``sin(a)/a``,
        ``a = speed_fps * dt_s / (2 |R|)``). It is what a segment-speed computation must find.
        """
        if self.radius_ft is None or dt_s <= 0:
            return self.speed_fps
        a = self.speed_fps * dt_s / (2.0 * abs(self.radius_ft))
        return self.speed_fps * (math.sin(a) / a if a else 1.0)

    def position_ft(self, t_s: float) -> tuple[float, float]:
        """Noise-free position ``t_s`` seconds after the first observation, ft."""
        s = self.speed_fps * t_s
        h = self.heading_rad
        if self.radius_ft is None:
            return self.x0_ft + s * math.cos(h), self.y0_ft + s * math.sin(h)
        r = self.radius_ft
        phi = s / r
        return (
            self.x0_ft + r * (math.sin(h + phi) - math.sin(h)),
            self.y0_ft - r * (math.cos(h + phi) - math.cos(h)),
        )


def _type_weights(types: Mapping[str, float] | Sequence[str] | str) -> tuple[list[str], np.ndarray]:
    if isinstance(types, str):
        types = [t for t in types.split(",") if t.strip()]
    if isinstance(types, Mapping):
        names = [str(t).strip().lower() for t in types]
        weights = np.array([float(w) for w in types.values()], dtype=np.float64)
    else:
        names = [str(t).strip().lower() for t in types]
        weights = np.ones(len(names), dtype=np.float64)
    if not names or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError("types must name at least one type with a positive weight")
    return names, weights / weights.sum()


def plan(
    *,
    sensors: int = 4,
    travelers: int = 200,
    rate_hz: float = 10.0,
    duration_s: float = 600.0,
    seed: int = 0,
    start_us: int | None = None,
    types: Mapping[str, float] | Sequence[str] | str = DEFAULT_TYPE_MIX,
    speeds_fps: Mapping[str, float] | None = None,
    speed_cv: float = 0.15,
    path_ft: tuple[float, float] = (100.0, 600.0),
    max_visit_s: float = 300.0,
    curved_fraction: float = 0.3,
    area_ft: float = 500.0,
    sensor_base: int = 1,
) -> list[TravelerPlan]:
    """Draw the travelers of a run (see the module docstring for the model).

    Args:
        sensors: number of sensors (ids ``sensor_base ..``), >= 1.
        travelers: number of travelers over the whole run, >= 0.
        rate_hz: observations per second per traveler, > 0.
        duration_s: length of the run, s, > 0; every observation lies in
            ``[start_us, start_us + duration_s]``.
        seed: random seed; same seed, same run.
        start_us: UTC epoch microseconds of the run's start (default :data:`DEFAULT_START`).
        types: type weights (mapping), or a list / comma-separated string of equally likely types.
        speeds_fps: typical speeds overriding :data:`TYPICAL_SPEEDS_FPS`, ft/s.
        speed_cv: relative spread of speeds around the typical one.
        path_ft: (min, max) path length of a visit, ft.
        max_visit_s: cap on a visit's length, s.
        curved_fraction: share of travelers on arcs instead of straight lines.
        area_ft: side of the square where paths start, ft.
        sensor_base: id of the first sensor.

    Returns:
        The travelers' plans, in traveler order (ids ``f"{type}-{index}"``).

    Raises:
        InputError: an argument out of range, or a type with no known speed.
    """
    if sensors < 1 or travelers < 0:
        raise InputError("sensors must be >= 1 and travelers >= 0")
    if not (rate_hz > 0 and math.isfinite(rate_hz)) or not (duration_s > 0 and math.isfinite(duration_s)):
        raise InputError("rate_hz and duration_s must be positive")
    if not (0 <= curved_fraction <= 1) or speed_cv < 0 or not (0 < path_ft[0] <= path_ft[1]) or max_visit_s <= 0:
        raise InputError("curved_fraction in [0, 1], speed_cv >= 0, 0 < path_ft[0] <= path_ft[1], max_visit_s > 0")
    if sensor_base < 0:
        raise InputError("sensor_base must be >= 0")
    step_us = max(1, round(1_000_000 / rate_hz))
    duration_us = int(duration_s * 1_000_000)
    if duration_us < step_us:
        raise InputError("duration_s must cover at least two observations (>= 1 / rate_hz)")
    start = ts_to_us(DEFAULT_START) if start_us is None else int(start_us)
    speeds = {**TYPICAL_SPEEDS_FPS, **{k.lower(): float(v) for k, v in (speeds_fps or {}).items()}}
    names, probs = _type_weights(types)
    unknown = [t for t in names if t not in speeds or not speeds[t] > 0]
    if unknown:
        raise InputError(f"no typical speed for type(s) {', '.join(unknown)}; pass speeds_fps=")

    rng = np.random.Generator(np.random.PCG64(seed))
    n = travelers
    type_idx = rng.choice(len(names), size=n, p=probs)
    sensor = sensor_base + rng.integers(0, sensors, size=n)
    factor = np.clip(1.0 + speed_cv * rng.standard_normal(n), *_SPEED_FACTOR_CLIP)
    path = rng.uniform(path_ft[0], path_ft[1], size=n)
    u_start = rng.random(n)
    x0 = rng.uniform(0.0, area_ft, size=n)
    y0 = rng.uniform(0.0, area_ft, size=n)
    heading = rng.uniform(-math.pi, math.pi, size=n)
    curved = rng.random(n) < curved_fraction
    radius = rng.uniform(*_RADIUS_FT, size=n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)

    plans: list[TravelerPlan] = []
    max_steps = duration_us // step_us
    for i in range(n):
        ttype = names[int(type_idx[i])]
        v = speeds[ttype] * float(factor[i])
        visit_s = min(float(path[i]) / v, max_visit_s, duration_s)
        steps = min(max(1, int(visit_s * 1_000_000) // step_us), max_steps)
        slack_us = duration_us - steps * step_us
        first = start + int(float(u_start[i]) * slack_us)
        plans.append(
            TravelerPlan(
                sensor_id=int(sensor[i]),
                traveler_id=f"{ttype}-{i}",
                traveler_type=ttype,
                speed_fps=v,
                first_us=first,
                step_us=step_us,
                n_obs=steps + 1,
                x0_ft=float(x0[i]),
                y0_ft=float(y0[i]),
                heading_rad=float(heading[i]),
                radius_ft=float(radius[i]) if curved[i] else None,
            )
        )
    return plans


def events_of(plans: Sequence[TravelerPlan], *, jitter_ft: float = 0.0, seed: int = 0) -> Iterator[Event]:
    """Merge the observations of ``plans`` into one stream in event-time order.

    Order: ``ts_us``, then ``sensor_id``, then ``traveler_id`` (the readers' order). Memory is
    proportional to the travelers on the road at once, not to the number of events.
    Position noise, if any, is drawn in that order from ``seed``, so it is deterministic too.
    """
    order = sorted(range(len(plans)), key=lambda i: (plans[i].first_us, plans[i].sensor_id, plans[i].traveler_id))
    rng = np.random.Generator(np.random.PCG64([seed, 0x5E]))
    noise = np.zeros(0)
    noise_at = 0
    heap: list[tuple[int, int, str, int, int]] = []
    j = 0
    while heap or j < len(order):
        while j < len(order) and (not heap or plans[order[j]].first_us <= heap[0][0]):
            p = plans[order[j]]
            heapq.heappush(heap, (p.first_us, p.sensor_id, p.traveler_id, order[j], 0))
            j += 1
        ts, sid, tid, i, k = heapq.heappop(heap)
        p = plans[i]
        x, y = p.position_ft(k * p.step_us / 1e6)
        if jitter_ft > 0:
            if noise_at + 2 > len(noise):
                noise, noise_at = rng.standard_normal(8192) * jitter_ft, 0
            x += float(noise[noise_at])
            y += float(noise[noise_at + 1])
            noise_at += 2
        yield Event(sid, tid, p.traveler_type, ts, x, y)
        if k + 1 < p.n_obs:
            heapq.heappush(heap, (ts + p.step_us, sid, tid, i, k + 1))


def generate(*, jitter_ft: float = 0.0, seed: int = 0, **plan_options: Any) -> Iterator[Event]:
    """Generate a deterministic synthetic run, as events in event-time order.

    Arguments as :func:`plan` (``seed`` and the ``plan_options``: ``sensors``, ``travelers``,
    ``rate_hz``, ``duration_s``, ``start_us``, ``types``, ``speeds_fps``, ...), plus
    ``jitter_ft``: Gaussian position noise per axis, ft (0 = exact paths), drawn from ``seed``
    too. The number of events is ``sum(p.n_obs for p in plan(...))``; about
    ``travelers x mean visit x rate_hz``.

    Raises:
        InputError: as :func:`plan` (raised by this call, before the first event).
        TypeError: an option :func:`plan` does not take.

    Examples:
        >>> evs = list(generate(sensors=1, travelers=2, rate_hz=2, duration_s=60, seed=1,
        ...                     types=["car"]))
        >>> all(a.ts_us <= b.ts_us for a, b in zip(evs, evs[1:]))
        True
    """
    plans = plan(seed=seed, **plan_options)
    if jitter_ft < 0 or not math.isfinite(jitter_ft):
        raise InputError("jitter_ft must be >= 0")
    return events_of(plans, jitter_ft=jitter_ft, seed=seed)
