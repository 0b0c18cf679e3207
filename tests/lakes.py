"""Lakes for tests: fill a lake with events and backfill its derived tables (no Kafka needed)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from lake.catalog import connect
from lake.schema import MOVEMENTS_SCHEMA
from sensorlake.events import Event
from sensorlake.settings import Settings

PEACHTREE = Path("ngsim_peachtree_sample") / "NGSIM.csv"


def events_table(events: Iterable[Event], partition: int = 0) -> pa.Table:
    """Events as ``MOVEMENTS_SCHEMA`` rows, offsets in the given order."""
    evs = list(events)
    return pa.Table.from_pydict(
        {
            "sensor_id": [e.sensor_id for e in evs],
            "traveler_id": [e.traveler_id for e in evs],
            "traveler_type": [e.traveler_type for e in evs],
            "ts": [e.ts for e in evs],
            "x_ft": [e.x_ft for e in evs],
            "y_ft": [e.y_ft for e in evs],
            "kafka_partition": [partition] * len(evs),
            "kafka_offset": list(range(len(evs))),
        },
        schema=MOVEMENTS_SCHEMA,
    )


def insert_events(settings: Settings, table: pa.Table) -> None:
    con = connect(settings)
    try:
        con.register("_new_events", table)
        con.execute("INSERT INTO lake.movements SELECT * FROM _new_events")
    finally:
        con.close()


def backfill_all(settings: Settings) -> tuple[datetime, datetime]:
    """Run every transform job over the whole extent of ``lake.movements``; returns the range."""
    from transforms.backfill import run_transform

    con = connect(settings, read_only=True)
    try:
        lo, hi = con.execute("SELECT min(ts), max(ts) FROM lake.movements").fetchone()
    finally:
        con.close()
    start = lo.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = hi.astimezone(UTC) + timedelta(seconds=1)
    run_transform(settings, start, end)
    return start, end


def file_lake_settings(directory: Path, **overrides) -> Settings:
    """Settings of a file-catalog lake in ``directory`` (no server needed)."""
    return Settings.from_env(
        env={}, catalog=str(directory / "cat.ducklake"), data_path=str(directory / "data"), state_dir=directory,
        **overrides,
    )  # fmt: skip


def ngsim_lake(data_dir: Path, directory: Path) -> Settings:
    """A file-catalog lake with the NGSIM Peachtree sample and every derived table."""
    from ingest.readers import open_source

    settings = file_lake_settings(directory)
    insert_events(settings, events_table(open_source(data_dir / PEACHTREE)))
    backfill_all(settings)
    return settings
