"""Property tests of the decoder and of the kinematics (hypothesis, pure, no services).

* The decoder never raises anything but EventError (with a known reason) on any input:
  arbitrary objects with wrong, missing, repeated or extreme fields, arbitrary bytes,
  mutated valid messages; what it accepts satisfies every rule of the contract.
* Speeds are finite and >= 0, and summaries finite, for any valid input (ties, zero-time
  moves, duplicates, late events, gaps, coordinates at the 1e7 ft limit, 1 us apart).
* Summaries do not depend on how the stream is split into polls, nor on the failures the
  consumer can meet between its writes (a crash after PostgreSQL and before Redis, after
  both, Redis flushed): a pure model of the consumer's sink order gives exactly what the
  reference :func:`sensorlake.kinematics.summarize` gives.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sensorlake.errors import EventError
from sensorlake.events import (
    MAX_ABS_COORD_FT,
    REASONS,
    Event,
    decode_event,
    encode_event,
    ts_to_us,
)
from sensorlake.kinematics import Outcome, TravelerState, apply_event, summarize
from tests.faults.helpers import same_state

ALIASES = {"biker": "bicycle", "ped": "pedestrian"}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FIELDS = ("traveler_id", "traveler_type", "sensor_id", "position", "timestamp")
MIN_TS, MAX_TS = ts_to_us(datetime(1970, 1, 1, tzinfo=UTC)), ts_to_us(datetime(2100, 1, 1, tzinfo=UTC))

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- decoder
def check_valid(e: Event) -> None:
    """Every rule an accepted event satisfies."""
    assert isinstance(e.sensor_id, int) and 0 <= e.sensor_id < 2**63
    assert e.traveler_id == e.traveler_id.strip() and 1 <= len(e.traveler_id) <= 128
    assert not CONTROL.search(e.traveler_id) and not CONTROL.search(e.traveler_type)
    assert 1 <= len(e.traveler_type) <= 128 and e.traveler_type == " ".join(e.traveler_type.split())
    assert e.traveler_type == e.traveler_type.lower()
    for v in (e.x_ft, e.y_ft):
        assert isinstance(v, float) and math.isfinite(v) and abs(v) <= MAX_ABS_COORD_FT
    assert MIN_TS <= e.ts_us < MAX_TS
    assert decode_event(encode_event(e), ALIASES) == e  # what is accepted re-encodes to itself


def decode_ok_or_reason(raw: bytes | None) -> Event | None:
    try:
        e = decode_event(raw, ALIASES)
    except EventError as exc:
        assert exc.reason in REASONS, exc.reason
        return None
    check_valid(e)
    return e


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
any_datetimes = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
timestamps = st.one_of(
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), any_datetimes, offsets),
    any_datetimes.map(lambda d: d.isoformat()),  # naive
    any_datetimes.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"),  # nanoseconds
    st.text(max_size=40),
    st.integers(), st.floats(), st.none(), st.booleans(),
)  # fmt: skip
texts = st.one_of(st.text(max_size=140), st.just(""), st.just("   "), st.text(alphabet="\x00\n\t\x7f\x85a", max_size=5))
ids = st.one_of(texts, st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.floats())
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e8, max_value=1e8),
    st.integers(min_value=-(2**70), max_value=2**70), st.just(1e308), st.just(-0.0),
)  # fmt: skip
positions = st.one_of(
    st.lists(numbers, min_size=0, max_size=4), st.tuples(numbers, numbers).map(list),
    st.text(max_size=10), st.none(), st.dictionaries(st.sampled_from("xy"), numbers), numbers,
)  # fmt: skip
sensor_ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=0, max_value=10**6),
    st.text(max_size=5), st.booleans(), st.floats(), st.none(), st.lists(st.integers(), max_size=2),
)  # fmt: skip
clean_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
valid_values = {
    "traveler_id": clean_text,
    "traveler_type": st.one_of(clean_text, st.sampled_from(["car", " Biker ", "PED", "hover  board"])),
    "sensor_id": st.integers(0, 10**6),
    "position": st.lists(st.floats(-1e7, 1e7), min_size=2, max_size=2),
    "timestamp": st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30)), st.one_of(st.none(), offsets),
    ),
}  # fmt: skip
field_values = {"traveler_id": ids, "traveler_type": ids, "sensor_id": sensor_ids, "position": positions,
                "timestamp": timestamps}  # fmt: skip


@st.composite
def wire_objects(draw) -> bytes:
    """A JSON object with each field present or not, valid or not, maybe repeated, plus extras."""
    parts = []
    for f in FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        for _ in range(2 if draw(st.integers(0, 14)) == 0 else 1):  # sometimes given twice
            anything = draw(st.integers(0, 4)) == 0  # mostly valid, so later checks are reached
            parts.append((f, draw(field_values[f] if anything else valid_values[f])))
    parts += draw(st.lists(st.tuples(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5))), max_size=3))
    parts = draw(st.permutations(parts))
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v, allow_nan=True)}" for k, v in parts)
    return ("{" + body + "}").encode()


@given(wire_objects())
@PROPS
def test_decoder_accepts_only_contract_events_and_rejects_with_a_known_reason(raw):
    decode_ok_or_reason(raw)


@given(st.one_of(
    st.binary(max_size=400), st.none(),
    st.integers(65_520, 65_545).map(lambda n: b'{"traveler_id": "' + b"x" * n + b'"}'),  # around the size limit
))  # fmt: skip
@PROPS
def test_decoder_on_arbitrary_bytes(raw):
    decode_ok_or_reason(raw)


VALID = encode_event(Event(7, "b-1042", "bicycle", ts_to_us(datetime(2026, 1, 1, 14, tzinfo=UTC)), 112.4, 38.9))


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.sampled_from(["flip", "drop", "dup", "byte"]),
                          st.integers(0, 255)), min_size=1, max_size=4))  # fmt: skip
@PROPS
def test_decoder_on_mutated_valid_messages(mutations):
    raw = bytearray(VALID)
    for pos, kind, b in mutations:
        pos %= max(1, len(raw))
        if kind == "flip" and raw:
            raw[pos] ^= 1 << (b % 8)
        elif kind == "drop" and raw:
            del raw[pos]
        elif kind == "dup":
            raw[pos:pos] = raw[pos : pos + 1 + b % 8]
        else:
            raw[pos:pos] = bytes([b])
    decode_ok_or_reason(bytes(raw))


@given(
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(lambda s: s.strip()),
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(lambda s: s.strip()),
        st.sampled_from([" Biker ", "PED", "car"]),  # aliases, written as a sensor might
    ),
    st.integers(0, 2**63 - 1),
    st.floats(-MAX_ABS_COORD_FT, MAX_ABS_COORD_FT),
    st.floats(-MAX_ABS_COORD_FT, MAX_ABS_COORD_FT),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30)),
    offsets,
)
@PROPS
def test_every_valid_object_decodes_to_its_utc_microsecond_event(tid, ttype, sid, x, y, local, tz):
    assume(len(tid.strip()) <= 128 and len(" ".join(ttype.split())) <= 128)
    ts = local.replace(tzinfo=tz)
    raw = json.dumps({"traveler_id": tid, "traveler_type": ttype, "sensor_id": sid, "position": [x, y],
                      "timestamp": ts.isoformat()}).encode()  # fmt: skip
    e = decode_event(raw, ALIASES)
    normalised = " ".join(ttype.split()).lower()
    want_type = ALIASES.get(normalised, normalised)  # "BIKER" -> "bicycle", as check_valid expects
    assert e == Event(sid, tid.strip(), want_type, ts_to_us(ts.astimezone(UTC)), x, y)
    check_valid(e)


# ----------------------------------------------------------------------------- kinematics
T0 = ts_to_us(datetime(2026, 1, 1, tzinfo=UTC))
STEPS_US = [0, 0, 1, 100_000, 300_000, 500_000, 1_000_000, 7_000_000, 61_000_000, 200_000_000, -3_000_000, -1]


@st.composite
def streams(draw, max_events: int = 60) -> list[Event]:
    """Events of 1-3 travelers: ties, 1 us steps, gaps beyond a visit, late events, exact
    repeats (duplicates), other positions at the same time (zero-time moves), far jumps."""
    n_keys = draw(st.integers(1, 3))
    last: dict[int, tuple[int, float, float]] = {}
    out = []
    for _ in range(draw(st.integers(1, max_events))):
        k = draw(st.integers(0, n_keys - 1))
        t, x, y = last.get(k, (T0, 0.0, 0.0))
        t = max(T0, t + draw(st.sampled_from(STEPS_US)))
        kind = draw(st.integers(0, 5))
        if kind == 0:
            pass  # same position (a duplicate if the time is the same too)
        elif kind == 1:
            x, y = draw(st.sampled_from([-MAX_ABS_COORD_FT, MAX_ABS_COORD_FT])), draw(st.floats(-1e7, 1e7))
        else:
            x, y = x + draw(st.floats(-100, 100)), y + draw(st.floats(-100, 100))
            x, y = max(-1e7, min(1e7, x)), max(-1e7, min(1e7, y))
        last[k] = (t, x, y)
        out.append(Event(k, f"t{k}", draw(st.sampled_from(["car", "bus"])), t, x, y))
    return out


def assert_state_finite(s: TravelerState) -> None:
    for v in (s.last_x_ft, s.last_y_ft, s.anchor_x_ft, s.anchor_y_ft, s.distance_ft, s.duration_s):
        assert math.isfinite(v)
    assert s.distance_ft >= 0 and s.duration_s >= 0 and s.first_seen_us <= s.anchor_us <= s.last_seen_us
    if s.max_speed_fps is not None:
        lo, hi, avg = s.min_speed_fps, s.max_speed_fps, s.avg_speed_fps
        assert all(math.isfinite(v) and v >= 0 for v in (lo, hi, avg))
        assert lo <= hi and lo * (1 - 1e-9) <= avg <= hi * (1 + 1e-9)  # a time-weighted mean


@given(streams(), st.sampled_from([0.0, 0.5, 2.0]))
@PROPS
def test_speeds_are_finite_and_never_negative(events, min_segment_s):
    states: dict = {}
    for e in events:
        step = apply_event(states.get(e.traveler_id), e, min_segment_s=min_segment_s, visit_gap_s=60)
        if step.segment_speed_fps is not None:
            assert math.isfinite(step.segment_speed_fps) and step.segment_speed_fps >= 0
        if step.outcome in (Outcome.DUPLICATE, Outcome.LATE, Outcome.ZERO_TIME_MOVE):
            assert step.segment_speed_fps is None
        assert_state_finite(step.state)
        states[e.traveler_id] = step.state


class Model:
    """The consumer's state handling, without services: ``redis`` holds each key's latest
    visit, ``pg`` every visit (newer-wins on the Kafka offset), in the consumer's order:
    read Redis (miss: the latest PostgreSQL visit), apply, upsert PostgreSQL, set Redis."""

    def __init__(self, min_segment_s: float) -> None:
        self.redis: dict = {}
        self.pg: dict = {}
        self.min_segment_s = min_segment_s

    def latest_pg(self, key):
        rows = [v for k, v in self.pg.items() if (k[0], k[1]) == key]
        return max(rows, key=lambda v: v.first_seen_us) if rows else None

    def poll(self, batch, *, write_redis: bool = True) -> None:
        by_key = defaultdict(list)
        for item in batch:
            by_key[(item[0].sensor_id, item[0].traveler_id)].append(item)
        for key, items in by_key.items():
            state = self.redis.get(key) or self.latest_pg(key)
            visits = {}
            for e, p, off in items:
                step = apply_event(state, e, min_segment_s=self.min_segment_s, visit_gap_s=60, partition=p, offset=off)
                state = step.state
                if step.outcome is not Outcome.REPLAYED:
                    visits[(key[0], key[1], state.first_seen_us)] = state
            visits.setdefault((key[0], key[1], state.first_seen_us), state)
            for k, v in visits.items():  # upsert, newer-wins
                old = self.pg.get(k)
                if old is None or old.kafka_partition != v.kafka_partition or old.kafka_offset < v.kafka_offset:
                    self.pg[k] = v
            if write_redis:
                self.redis[key] = state


FAULTS = ["none", "none", "crash_after_postgres", "crash_after_both", "flush_redis", "crash_and_flush"]


@given(streams(max_events=80), st.data(), st.sampled_from([0.0, 0.5]))
@PROPS
def test_summaries_independent_of_batch_split_replays_and_redis_loss(events, data, min_segment_s):
    items = [(e, 0, off) for off, e in enumerate(events)]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(items) - 1)), max_size=8))))
    batches = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True) if items[a:b]]
    m = Model(min_segment_s)
    for batch in batches:
        fault = data.draw(st.sampled_from(FAULTS))
        if fault == "flush_redis":
            m.redis.clear()
        if fault in ("crash_after_postgres", "crash_and_flush"):
            m.poll(batch, write_redis=False)  # died between the two writes
            if fault == "crash_and_flush":
                m.redis.clear()
        elif fault == "crash_after_both":
            m.poll(batch)  # died before the lake commit
        m.poll(batch)  # the (re)delivery that commits
    expected = summarize(events, min_segment_s=min_segment_s, visit_gap_s=60)
    assert set(m.pg) == set(expected)
    for k, v in expected.items():
        assert same_state(m.pg[k], v), (k, m.pg[k], v)
