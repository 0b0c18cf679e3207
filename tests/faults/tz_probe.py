"""Child process of the time-zone test: run under a given ``TZ``, report what every engine reads.

``TZ=Asia/Kolkata python -m tests.faults.tz_probe`` (with the ``SENSORLAKE_*`` variables of
an isolated test environment) sends one event stamped ``2024-03-10T23:30:00-05:00`` through
Kafka, consumes it into Redis, PostgreSQL and the lake, and prints one JSON object: the
process time zone, and the event time as read back through PostgreSQL (in a session set
to the process time zone), DuckDB, Polars (from DuckDB's Arrow and from the Parquet file)
and the lake's partition values.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC

import polars as pl
import psycopg
import pyarrow.parquet as pq

from ingest.consumer import MovementConsumer
from lake.catalog import connect
from sensorlake.settings import Settings
from tests.faults.helpers import send

RAW = (
    b'{"traveler_id": "tz-1", "traveler_type": "car", "sensor_id": 9, '
    b'"position": [1.0, 2.0], "timestamp": "2024-03-10T23:30:00-05:00"}'
)


def main() -> None:
    s = Settings.from_env()
    time.tzset()
    send(s, [(b"9:tz-1", RAW)])
    MovementConsumer(s).run(until_idle_s=60, max_messages=1)
    out: dict = {"tz_env": os.environ.get("TZ"), "tzname": list(time.tzname), "utcoffset_s": -time.timezone}

    with psycopg.connect(s.pg_dsn) as c:
        c.execute(f"SET TimeZone = '{os.environ.get('TZ', 'UTC')}'")
        first_seen, as_utc, session_tz = c.execute(
            "SELECT first_seen, first_seen AT TIME ZONE 'UTC', current_setting('TimeZone') FROM traveler_summary"
        ).fetchone()
    out["pg"] = {"aware_utc": first_seen.astimezone(UTC).isoformat(), "at_utc": as_utc.isoformat(),
                 "session_tz": session_tz, "offset_s": first_seen.utcoffset().total_seconds()}  # fmt: skip

    con = connect(s, read_only=True)
    try:
        ts, y, m, d, h = con.execute(
            "SELECT ts, year(ts), month(ts), day(ts), hour(ts) FROM lake.movements"
        ).fetchone()
        out["duckdb"] = {"ts": ts.astimezone(UTC).isoformat(), "tzinfo": str(ts.tzinfo), "ymdh": [y, m, d, h]}
        arrow = con.execute("SELECT ts FROM lake.movements").to_arrow_table()
        files = [r[0] for r in con.execute("SELECT data_file FROM ducklake_list_files('lake', 'movements')").fetchall()]
    finally:
        con.close()
    df = pl.from_arrow(arrow)
    v = df["ts"][0]
    out["polars"] = {"dtype": str(df["ts"].dtype), "ts": v.isoformat(), "hour": v.hour}
    out["files"] = files
    f = pl.read_parquet(files[0])
    out["parquet"] = {"arrow_type": str(pq.read_schema(files[0]).field("ts").type), "polars_dtype": str(f["ts"].dtype),
                      "ts": f["ts"][0].isoformat()}  # fmt: skip
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
