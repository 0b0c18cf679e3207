"""The event contract: decoding, normalisation, rejection reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from sensorlake.errors import EventError
from sensorlake.events import Event, decode_event, encode_event, parse_timestamp, ts_from_us, ts_to_us

GOOD = {
    "traveler_id": "b-1042", "traveler_type": "bicycle", "sensor_id": 7,
    "position": [112.4, 38.9], "timestamp": "2026-11-30T14:03:05.250+00:00",
}  # fmt: skip


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


def test_decodes_the_contract_example():
    e = decode_event(enc(GOOD))
    assert e == Event(7, "b-1042", "bicycle", ts_to_us(datetime(2026, 11, 30, 14, 3, 5, 250000, tzinfo=UTC)), 112.4, 38.9)
    assert e.key == "7:b-1042"


def test_offset_converted_to_utc():
    # 23:30 at UTC-5 is 04:30 UTC the next day
    assert ts_from_us(parse_timestamp("2024-03-10T23:30:00-05:00")) == datetime(2024, 3, 11, 4, 30, tzinfo=UTC)


def test_naive_timestamp_is_utc():
    assert parse_timestamp("2024-03-11T04:30:00") == parse_timestamp("2024-03-11T04:30:00+00:00")


def test_nanoseconds_truncated_not_rescaled():
    us = parse_timestamp("2026-11-30T14:03:05.123456789Z")
    assert us % 1_000_000 == 123456


def test_type_normalised_and_aliased():
    e = decode_event(enc({**GOOD, "traveler_type": "  Biker "}), {"biker": "bicycle"})
    assert e.traveler_type == "bicycle"
    assert decode_event(enc({**GOOD, "traveler_type": "Hoverboard"})).traveler_type == "hoverboard"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (enc({k: v for k, v in GOOD.items() if k != "position"}), "missing_field"),
        (enc({k: v for k, v in GOOD.items() if k != "timestamp"}), "missing_field"),
        (enc({**GOOD, "position": "1,2"}), "bad_position"),
        (enc({**GOOD, "position": [1, 2, 3]}), "bad_position"),
        (enc({**GOOD, "sensor_id": [7]}), "bad_type"),
        (enc({**GOOD, "sensor_id": "007"}), "bad_type"),
        (enc({**GOOD, "sensor_id": -1}), "bad_value"),
        (enc({**GOOD, "position": [1e308, 0]}), "bad_position"),
        (enc({**GOOD, "position": [1e999, 0]}).replace(b"Infinity", b"1e999"), "bad_position"),
        (enc({**GOOD, "timestamp": "yesterday"}), "bad_timestamp"),
        (enc({**GOOD, "timestamp": "1969-12-31T23:59:59Z"}), "bad_timestamp"),
        (enc({**GOOD, "timestamp": "2200-01-01T00:00:00Z"}), "bad_timestamp"),
        (enc({**GOOD, "traveler_id": ""}), "bad_value"),
        (b'{"traveler_id": "\xff\xfe"}', "bad_utf8"),
        (b"x" * 70_000, "too_large"),
    ],
)
def test_rejections_have_reasons(value, reason):
    with pytest.raises(EventError) as info:
        decode_event(value)
    assert info.value.reason == reason


@given(
    # ids are any text without control characters (category Cc: rejected by the contract)
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(lambda s: s.strip()),
    st.sampled_from(["car", "bus", "pedestrian"]),
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)),
)
@hsettings(max_examples=300, deadline=None)
def test_encode_decode_roundtrip(tid, ttype, sid, x, y, ts):
    e = Event(sid, tid.strip(), ttype, ts_to_us(ts), x, y)
    assert decode_event(encode_event(e)) == e


@given(st.binary(max_size=300))
@hsettings(max_examples=500, deadline=None)
def test_arbitrary_bytes_never_crash(raw):
    try:
        decode_event(raw)
    except EventError as exc:
        assert exc.reason


# ----------------------------------------------------------- repeated fields (fast path)
_ID_TEXT = st.text(alphabet=st.sampled_from(list("ab:7 -{}[],")), min_size=1, max_size=12).filter(
    lambda t: t.strip() != ""
)


@st.composite
def objects_with_maybe_repeated_fields(draw):
    """A JSON object with the five contract fields (ids and type may hold colons), maybe
    extra fields (some with colons, some nested), maybe a repeated contract field, keys in
    any order, random blanks around colons and commas."""
    tid, ttype = draw(_ID_TEXT), draw(st.sampled_from(["car", "bus:x", "a:b:c"]))
    ts = draw(st.sampled_from(["2026-11-30T14:03:05.250+00:00", "2026-11-30", "20261130T140305Z"]))
    pairs = [("traveler_id", tid), ("traveler_type", ttype), ("sensor_id", 7), ("position", [1.5, -2.0]),
             ("timestamp", ts)]  # fmt: skip
    pairs += draw(st.lists(st.tuples(st.sampled_from(["x", "note:", "meta"]),
                                     st.sampled_from(["a:b", 1, {"k:": "v:w"}])), max_size=3))  # fmt: skip
    repeated = draw(st.sampled_from([None, *[name for name, _ in pairs[:5]]]))
    if repeated is not None:
        pairs.append((repeated, dict(pairs[:5])[repeated]))
    order = draw(st.permutations(range(len(pairs))))
    blank = draw(st.sampled_from(["", " ", "\n"]))
    body = f",{blank}".join(f"{json.dumps(pairs[i][0])}{blank}:{blank}{json.dumps(pairs[i][1])}" for i in order)
    return ("{" + body + "}").encode(), repeated is not None


@given(objects_with_maybe_repeated_fields())
@hsettings(max_examples=500, deadline=None)
def test_repeated_contract_field_rejected_exactly_when_present(case):
    """The colon-count shortcut in front of the duplicate check never lets a repeat through
    and never rejects an object without one (reference: json.loads with all pairs kept)."""
    raw, has_repeat = case
    try:
        decode_event(raw)
        assert not has_repeat, raw
    except EventError as exc:
        assert has_repeat and exc.reason == "duplicate_key", (raw, exc.reason)
