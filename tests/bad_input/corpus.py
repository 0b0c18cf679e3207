"""A corpus of bad (and borderline) Kafka messages, with the outcome each must have.

``REJECTED``: ``(name, key, value, reason)``: each must land in the DLQ with that reason,
its original key and value bytes. ``ACCEPTED``: ``(name, key, value, traveler_id, check)``:
valid by a documented rule (naive timestamp = UTC, unknown type accepted and normalised,
...); they land in the lake as ``traveler_id``, and ``check(row)`` says how.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

GOOD: dict[str, Any] = {
    "traveler_id": "b-1042", "traveler_type": "bicycle", "sensor_id": 7,
    "position": [112.4, 38.9], "timestamp": "2026-01-01T14:00:05.250+00:00",
}  # fmt: skip
ONE_MB = 1024 * 1024


def obj(**changes: Any) -> dict[str, Any]:
    """GOOD with fields changed (a value of ``...`` removes the field)."""
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def enc(o: Any) -> bytes:
    return json.dumps(o).encode()


def raw_fields(**fields: str) -> bytes:
    """A JSON object written by hand (to place literals json.dumps will not write)."""
    base = {k: json.dumps(v) for k, v in GOOD.items()}
    base.update(fields)
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


REJECTED: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("malformed json", b"7:m", b'{"traveler_id": "x", "position": [1, 2', "malformed_json"),
    ("trailing garbage", b"7:m", enc(GOOD) + b" }", "malformed_json"),
    ("single-quoted pseudo json", b"7:m", b"{'traveler_id': 'x'}", "malformed_json"),
    ("utf-8 byte order mark", b"7:m", b"\xef\xbb\xbf" + enc(GOOD), "malformed_json"),
    ("NaN literal coordinate", b"7:m", raw_fields(position="[NaN, 1.0]"), "malformed_json"),
    ("Infinity literal coordinate", b"7:m", raw_fields(position="[Infinity, 1.0]"), "malformed_json"),
    ("nested 5000 deep", b"7:m", raw_fields(extra="[" * 5000 + "]" * 5000), "malformed_json"),
    ("lone surrogate escape", b"7:m", raw_fields(traveler_id='"\\ud800"'), "malformed_json"),
    ("empty value", b"7:e", b"", "empty"),
    ("null value (tombstone)", b"7:e", None, "empty"),
    ("array, not an object", None, b"[1, 2]", "not_an_object"),
    ("string, not an object", b"7:o", b'"hello"', "not_an_object"),
    ("json null", b"7:o", b"null", "not_an_object"),
    ("number, not an object", b"7:o", b"42", "not_an_object"),
    *[(f"missing {f}", b"7:f", enc(obj(**{f: ...})), "missing_field") for f in GOOD],
    ("empty object", b"7:f", b"{}", "missing_field"),
    ("position as a string", b"7:p", enc(obj(position="112.4,38.9")), "bad_position"),
    ("position with 3 elements", b"7:p", enc(obj(position=[1.0, 2.0, 3.0])), "bad_position"),
    ("position with 1 element", b"7:p", enc(obj(position=[1.0])), "bad_position"),
    ("position null", b"7:p", enc(obj(position=None)), "bad_position"),
    ("position of strings", b"7:p", enc(obj(position=["1", "2"])), "bad_position"),
    ("position as an object", b"7:p", enc(obj(position={"x": 1, "y": 2})), "bad_position"),
    ("coordinate 1e308", b"7:p", enc(obj(position=[1e308, 0.0])), "bad_position"),
    ("coordinate 1e999 (overflows a double)", b"7:p", raw_fields(position="[1e999, 0]"), "bad_position"),
    ("coordinate 1e7 + 1 ft", b"7:p", enc(obj(position=[10_000_001.0, 0.0])), "bad_position"),
    ("sensor id as a list", b"7:s", enc(obj(sensor_id=[7])), "bad_type"),
    ("sensor id as the string 007", b"7:s", enc(obj(sensor_id="007")), "bad_type"),
    ("sensor id as the string 7", b"7:s", enc(obj(sensor_id="7")), "bad_type"),
    ("sensor id 7.0", b"7:s", enc(obj(sensor_id=7.0)), "bad_type"),
    ("sensor id true", b"7:s", enc(obj(sensor_id=True)), "bad_type"),
    ("sensor id -1", b"7:s", enc(obj(sensor_id=-1)), "bad_value"),
    ("sensor id 2**63", b"7:s", enc(obj(sensor_id=2**63)), "bad_value"),
    ("sensor id 2**70", b"7:s", enc(obj(sensor_id=2**70)), "bad_value"),
    ("traveler id a number", b"7:t", enc(obj(traveler_id=1042)), "bad_type"),
    ("traveler id null", b"7:t", enc(obj(traveler_id=None)), "bad_type"),
    ("traveler id empty", b"7:t", enc(obj(traveler_id="")), "bad_value"),
    ("traveler id blanks only", b"7:t", enc(obj(traveler_id="   ")), "bad_value"),
    ("traveler id of 129 characters", b"7:t", enc(obj(traveler_id="x" * 129)), "bad_value"),
    ("traveler id with NUL", b"7:t", enc(obj(traveler_id="a\u0000b")), "bad_value"),
    ("traveler id with a newline", b"7:t", enc(obj(traveler_id="a\nb")), "bad_value"),
    ("traveler type empty", b"7:y", enc(obj(traveler_type="")), "bad_value"),
    ("traveler type a list", b"7:y", enc(obj(traveler_type=["car"])), "bad_type"),
    ("traveler type with a tab", b"7:y", enc(obj(traveler_type="car\tbus")), "bad_value"),
    ("timestamp far in the future", b"7:ts", enc(obj(timestamp="2200-01-01T00:00:00Z")), "bad_timestamp"),
    ("timestamp before 1970", b"7:ts", enc(obj(timestamp="1969-12-31T23:59:59Z")), "bad_timestamp"),
    ("timestamp year 1", b"7:ts", enc(obj(timestamp="0001-01-01T00:00:00+01:00")), "bad_timestamp"),
    ("timestamp not a date", b"7:ts", enc(obj(timestamp="yesterday")), "bad_timestamp"),
    ("timestamp 30 February", b"7:ts", enc(obj(timestamp="2024-02-30T00:00:00Z")), "bad_timestamp"),
    ("timestamp as epoch nanoseconds", b"7:ts", enc(obj(timestamp=1767276005250000000)), "bad_type"),
    ("timestamp as epoch seconds", b"7:ts", enc(obj(timestamp=1767276005.25)), "bad_type"),
    ("invalid utf-8", b"7:u", b'{"traveler_id": "\xff\xfe", "traveler_type": "car"}', "bad_utf8"),
    ("duplicate key", b"7:d", raw_fields(traveler_id='"a", "traveler_id": "b"'), "duplicate_key"),
    ("duplicate key, one escaped", b"7:d", raw_fields(sensor_id='7, "sensor\\u005fid": 8'), "duplicate_key"),
    ("just over 64 kB", b"7:big", enc(obj(note="x" * 65_600)), "too_large"),
    ("1 MB message", b"7:big", enc(obj(note="x" * ONE_MB)), "too_large"),
]


def _ts(row: dict) -> datetime:
    return row["ts"].astimezone(UTC)


ACCEPTED: list[tuple[str, bytes, bytes, str, Callable[[dict], bool]]] = [
    ("naive timestamp is UTC", b"7:ok1", enc(obj(traveler_id="ok1", timestamp="2026-01-01T14:00:05")),
     "ok1", lambda r: _ts(r) == datetime(2026, 1, 1, 14, 0, 5, tzinfo=UTC)),
    ("offset timestamp converted to UTC", b"7:ok2", enc(obj(traveler_id="ok2", timestamp="2026-01-01T09:00:05-05:00")),
     "ok2", lambda r: _ts(r) == datetime(2026, 1, 1, 14, 0, 5, tzinfo=UTC)),
    ("nanoseconds truncated", b"7:ok3", enc(obj(traveler_id="ok3", timestamp="2026-01-01T14:00:05.987654321Z")),
     "ok3", lambda r: _ts(r) == datetime(2026, 1, 1, 14, 0, 5, 987654, tzinfo=UTC)),
    ("unknown traveler type accepted, normalised", b"7:ok4", enc(obj(traveler_id="ok4", traveler_type="  Hover  Board ")),
     "ok4", lambda r: r["traveler_type"] == "hover board"),
    ("alias de-aliased", b"7:ok5", enc(obj(traveler_id="ok5", traveler_type="BIKER")),
     "ok5", lambda r: r["traveler_type"] == "bicycle"),
    ("integer coordinates", b"7:ok6", enc(obj(traveler_id="ok6", position=[3, -4])),
     "ok6", lambda r: (r["x_ft"], r["y_ft"]) == (3.0, -4.0)),
    ("extra fields ignored, even repeated", b"7:ok7",
     b'{"extra": 1, "extra": [2], ' + enc(obj(traveler_id="ok7"))[1:],
     "ok7", lambda r: r["traveler_id"] == "ok7"),
    ("traveler id stripped", b"7:ok8", enc(obj(traveler_id="  ok8  ")), "ok8", lambda r: r["traveler_id"] == "ok8"),
    ("unicode traveler id", b"7:ok9", enc(obj(traveler_id="caf\u00e9-\u6b69")),
     "caf\u00e9-\u6b69", lambda r: r["traveler_id"] == "caf\u00e9-\u6b69"),
    ("coordinates at the 1e7 ft limit", b"7:ok10", enc(obj(traveler_id="ok10", position=[1e7, -1e7])),
     "ok10", lambda r: (r["x_ft"], r["y_ft"]) == (1e7, -1e7)),
    ("sensor id 0", b"0:ok11", enc(obj(traveler_id="ok11", sensor_id=0)), "ok11", lambda r: r["sensor_id"] == 0),
]  # fmt: skip
