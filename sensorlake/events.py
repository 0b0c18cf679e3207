"""The movement-event contract: decode and validate the JSON wire format, and encode it.

Wire format (unchanged from the system sensorlake replaces)::

    {"traveler_id": "b-1042", "traveler_type": "bicycle", "sensor_id": 7,
     "position": [112.4, 38.9], "timestamp": "2026-11-30T14:03:05.250+00:00"}

Rules (each violation raises :class:`~sensorlake.errors.EventError` with a reason code):

* ``traveler_id``: non-empty string, at most 128 characters, stripped of surrounding blanks,
  with no control character (Unicode category Cc, U+0000..U+001F and U+007F..U+009F:
  PostgreSQL text cannot hold NUL, and an id with a newline is a producer bug)
  -> ``bad_value``.
* ``traveler_type``: non-empty string; normalised to lower case, runs of blanks collapsed,
  then mapped through the configured aliases (``biker`` -> ``bicycle``). Unknown types are
  accepted as they are: the known set is configuration, used for reporting. Same
  length and control-character rules as ``traveler_id``.
* ``sensor_id``: a JSON integer in [0, 2**63). Strings (even ``"7"`` or ``"007"``), floats
  (even ``7.0``) and booleans are rejected (``bad_type``): a sensor id that changes type
  is a producer bug worth seeing, and ``"007"`` vs ``7`` would silently split one sensor's
  state in two if strings were parsed.
* ``position``: exactly two finite JSON numbers ``[x_ft, y_ft]`` in feet in the sensor's
  local frame, each with ``|v| <= 1e7`` ft (about 1,900 miles; anything larger is a unit
  or encoding error).
* ``timestamp``: an ISO 8601 **string** (``datetime.fromisoformat``: extended or basic
  format, ``Z`` or an offset, a date alone is midnight). With an offset it is converted to
  UTC; a naive timestamp is taken as UTC. Digits beyond microseconds (nanosecond inputs)
  are **truncated** to whole microseconds, the lake's one unit, never rounded or rescaled:
  ``...05.123456789Z`` is ``...05.123456Z``. A JSON number (epoch seconds, ms, us or ns:
  ambiguous by a factor 1000) is rejected (``bad_type``). Times before 1970-01-01 or from
  2100-01-01 on are rejected (``bad_timestamp``).
* The value must be a JSON object, UTF-8, at most ``MAX_EVENT_BYTES``, nested at most a
  few hundred levels (deeper is ``malformed_json``). Unknown extra fields are ignored; a
  contract field given twice (also when one spelling is ``\\u``-escaped) is rejected
  (``duplicate_key``) instead of silently keeping the last value.

Reason codes: ``empty``, ``too_large``, ``bad_utf8``, ``malformed_json``, ``not_an_object``,
``duplicate_key``, ``missing_field``, ``bad_type``, ``bad_value``, ``bad_position``,
``bad_timestamp`` (:data:`REASONS`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from sensorlake.errors import EventError

MAX_EVENT_BYTES = 64 * 1024
MAX_ABS_COORD_FT = 1e7
MAX_ID_LEN = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TS_US = 0
"""Earliest event time accepted, UTC epoch microseconds (1970-01-01T00:00:00Z)."""
MAX_TS_US = 4_102_444_800_000_000
"""First event time rejected, UTC epoch microseconds (2100-01-01T00:00:00Z)."""
REQUIRED_FIELDS = ("traveler_id", "traveler_type", "sensor_id", "position", "timestamp")
REASONS = frozenset(
    {
        "empty", "too_large", "bad_utf8", "malformed_json", "not_an_object", "duplicate_key",
        "missing_field", "bad_type", "bad_value", "bad_position", "bad_timestamp",
    }
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


class Event(msgspec.Struct, frozen=True, gc=False):
    """One validated observation of a traveler by a sensor.

    Attributes:
        sensor_id: the sensor's id (>= 0).
        traveler_id: the traveler's id, unique within the sensor.
        traveler_type: normalised lower-case type (``car``, ``pedestrian``, ...).
        ts_us: event time, microseconds since 1970-01-01T00:00:00 UTC.
        x_ft, y_ft: position in feet, sensor-local frame.
    """

    sensor_id: int
    traveler_id: str
    traveler_type: str
    ts_us: int
    x_ft: float
    y_ft: float

    @property
    def key(self) -> str:
        """Kafka message key: ``"<sensor_id>:<traveler_id>"``."""
        return f"{self.sensor_id}:{self.traveler_id}"

    @property
    def ts(self) -> datetime:
        """Event time as an aware UTC datetime."""
        return ts_from_us(self.ts_us)


class _Wire(msgspec.Struct):
    traveler_id: str
    traveler_type: str
    sensor_id: int
    position: tuple[float, float]
    timestamp: str


_decoder = msgspec.json.Decoder(_Wire)
_encoder = msgspec.json.Encoder()


def ts_to_us(ts: datetime) -> int:
    """Aware or naive datetime -> microseconds since the UTC epoch (naive = UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def ts_from_us(ts_us: int) -> datetime:
    """Microseconds since the UTC epoch -> aware UTC datetime."""
    return datetime.fromtimestamp(ts_us // 1_000_000, tz=UTC).replace(microsecond=ts_us % 1_000_000)


def parse_timestamp(raw: str) -> int:
    """Parse an ISO 8601 timestamp to UTC epoch microseconds.

    A naive timestamp is taken as UTC; an offset is applied; digits beyond microseconds
    are truncated. Raises EventError(``bad_timestamp``) when it does not parse or lies
    outside [1970-01-01, 2100-01-01).

    >>> parse_timestamp("2024-03-10T23:30:00-05:00") == parse_timestamp("2024-03-11T04:30:00Z")
    True
    """
    try:
        ts = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise EventError("bad_timestamp", f"not ISO 8601: {raw[:64]!r}") from None
    ts_us = ts_to_us(ts)  # exact for any offset and year: no conversion to UTC that could overflow
    if not (MIN_TS_US <= ts_us < MAX_TS_US):
        raise EventError("bad_timestamp", f"outside 1970..2100: {raw[:64]!r}")
    return ts_us


def normalise_type(raw: str, aliases: Mapping[str, str] | None = None) -> str:
    """Lower-case, strip and de-alias a traveler type (``' Biker '`` -> ``'bicycle'``)."""
    t = " ".join(raw.split()).lower()
    if aliases:
        t = aliases.get(t, t)
    return t


def decode_event(value: bytes | None, aliases: Mapping[str, str] | None = None) -> Event:
    """Decode and validate one Kafka message value.

    Args:
        value: the raw message bytes (UTF-8 JSON).
        aliases: traveler-type aliases (``Settings.traveler_type_aliases``).

    Returns:
        The validated :class:`Event`.

    Raises:
        EventError: with one of the reason codes listed in the module docstring.
    """
    if not value:
        raise EventError("empty", "message has no value")
    if len(value) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"{len(value)} bytes > {MAX_EVENT_BYTES}")
    try:
        wire = _decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise _classify_validation(str(exc)) from None
    except msgspec.DecodeError as exc:
        msg = str(exc)
        if "UTF-8" in msg or "utf-8" in msg:
            raise EventError("bad_utf8", msg) from None
        if "out of range" in msg:
            raise EventError("bad_position", msg) from None
        raise EventError("malformed_json", msg) from None
    except RecursionError:
        raise EventError("malformed_json", "JSON nested too deeply") from None
    if _may_repeat_a_field(value, wire):
        _reject_duplicate_fields(value)
    traveler_id = wire.traveler_id.strip()
    if not traveler_id or len(traveler_id) > MAX_ID_LEN:
        raise EventError("bad_value", f"traveler_id must have 1..{MAX_ID_LEN} characters")
    if _has_control(traveler_id):
        raise EventError("bad_value", "traveler_id contains a control character")
    if _has_control(wire.traveler_type):
        raise EventError("bad_value", "traveler_type contains a control character")
    traveler_type = normalise_type(wire.traveler_type, aliases)
    if not traveler_type or len(traveler_type) > MAX_ID_LEN:
        raise EventError("bad_value", f"traveler_type must have 1..{MAX_ID_LEN} characters")
    if wire.sensor_id < 0 or wire.sensor_id >= 2**63:
        raise EventError("bad_value", f"sensor_id out of range: {wire.sensor_id}")
    x_ft, y_ft = wire.position
    for v in (x_ft, y_ft):
        if not math.isfinite(v) or abs(v) > MAX_ABS_COORD_FT:
            raise EventError("bad_position", f"coordinate {v!r} not finite or |v| > 1e7 ft")
    return Event(
        sensor_id=wire.sensor_id,
        traveler_id=traveler_id,
        traveler_type=traveler_type,
        ts_us=parse_timestamp(wire.timestamp),
        x_ft=float(x_ft),
        y_ft=float(y_ft),
    )


def _may_repeat_a_field(value: bytes, wire: _Wire) -> bool:
    """Cheap, sound suspicion of a repeated contract field (two byte scans in C; the full
    check runs only when this is True).

    Every key of a JSON object is followed by one structural colon, and a colon inside a
    string is a literal ``:`` byte unless ``\\u``-escaped. The five contract fields are all
    present (the decoder checked), so a repeated one means at least six keys, and the
    bytes hold at least ``6 + colons in the decoded string values`` colons (each decoded
    value is one occurrence in the bytes). Fewer colons than that: no repeat is possible.
    A ``\\u`` escape anywhere is suspicious too (a key spelled ``"sensor\\u005fid"``, or an
    escaped colon)."""
    if b"\\u" in value:
        return True
    in_strings = wire.timestamp.count(":") + wire.traveler_id.count(":") + wire.traveler_type.count(":")
    return value.count(b":") > len(REQUIRED_FIELDS) + in_strings


def _has_control(text: str) -> bool:
    """True if ``text`` has a character of Unicode category Cc (printable ASCII: fast path)."""
    if text.isascii() and text.isprintable():
        return False
    return _CONTROL.search(text) is not None


class _Pairs(list):
    """Key-value pairs of one JSON object, as parsed (duplicates kept)."""


def _reject_duplicate_fields(value: bytes) -> None:
    """Raise EventError(``duplicate_key``) if the top-level object repeats a contract field."""
    try:
        top = json.loads(value, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):  # msgspec accepted it; be safe all the same
        raise EventError("malformed_json", "JSON does not parse") from None
    seen: set[str] = set()
    for key, _ in top:
        if key in seen and key in REQUIRED_FIELDS:
            raise EventError("duplicate_key", f"field {key!r} given more than once")
        seen.add(key)


def _classify_validation(msg: str) -> EventError:
    if "missing required field" in msg:
        return EventError("missing_field", msg)
    if "Expected `object`" in msg and "at `$." not in msg:
        return EventError("not_an_object", msg)
    if "position" in msg:
        return EventError("bad_position", msg)
    if "out of range" in msg:
        return EventError("bad_value", msg)
    return EventError("bad_type", msg)


def encode_event(event: Event) -> bytes:
    """Encode an :class:`Event` in the wire format (timestamp ISO 8601 with ``+00:00``)."""
    return _encoder.encode(
        {
            "traveler_id": event.traveler_id,
            "traveler_type": event.traveler_type,
            "sensor_id": event.sensor_id,
            "position": [event.x_ft, event.y_ft],
            "timestamp": event.ts.isoformat(timespec="microseconds"),
        }
    )
