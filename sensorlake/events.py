"""The movement-event contract: decode and validate the JSON wire format, and encode it.

Wire format (unchanged from the system sensorlake replaces)::

    {"traveler_id": "b-1042", "traveler_type": "bicycle", "sensor_id": 7,
     "position": [112.4, 38.9], "timestamp": "2026-11-30T14:03:05.250+00:00"}

Rules (each violation raises :class:`~sensorlake.errors.EventError` with a reason code):

* ``traveler_id``: non-empty string, at most 128 characters, stripped of surrounding blanks.
* ``traveler_type``: non-empty string; normalised to lower case, blanks stripped, then
  mapped through the configured aliases (``biker`` -> ``bicycle``). Unknown types are
  accepted as they are: the known set is configuration, used for reporting.
* ``sensor_id``: a JSON integer >= 0. Strings (even ``"7"``), floats and booleans are
  rejected (``bad_type``): a sensor id that changes type is a producer bug worth seeing.
* ``position``: exactly two finite JSON numbers ``[x_ft, y_ft]`` in feet in the sensor's
  local frame, each with ``|v| <= 1e7`` ft (about 1,900 miles; anything larger is a unit
  or encoding error).
* ``timestamp``: ISO 8601 (``datetime.fromisoformat``). With an offset it is converted to
  UTC; a naive timestamp is taken as UTC. Sub-microsecond digits are truncated to whole
  microseconds (the lake's unit), never rescaled. Years before 1970 or after 2100 are
  rejected (``bad_timestamp``).
* The value must be a JSON object, UTF-8, at most ``MAX_EVENT_BYTES``; unknown extra fields
  are ignored.

Reason codes: ``empty``, ``too_large``, ``bad_utf8``, ``malformed_json``, ``not_an_object``,
``missing_field``, ``bad_type``, ``bad_value``, ``bad_position``, ``bad_timestamp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from sensorlake.errors import EventError

MAX_EVENT_BYTES = 64 * 1024
MAX_ABS_COORD_FT = 1e7
MAX_ID_LEN = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)
REQUIRED_FIELDS = ("traveler_id", "traveler_type", "sensor_id", "position", "timestamp")


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
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    if not (_MIN_TS <= ts < _MAX_TS):
        raise EventError("bad_timestamp", f"outside 1970..2100: {raw[:64]!r}")
    return ts_to_us(ts)


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
    traveler_id = wire.traveler_id.strip()
    if not traveler_id or len(traveler_id) > MAX_ID_LEN:
        raise EventError("bad_value", "traveler_id must have 1..128 characters")
    traveler_type = normalise_type(wire.traveler_type, aliases)
    if not traveler_type or len(traveler_type) > MAX_ID_LEN:
        raise EventError("bad_value", "traveler_type must have 1..128 characters")
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
