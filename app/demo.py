"""``sensorlake demo``: the whole flow on real data, end to end, with a printed summary.

Steps: start the local stack; replay the NGSIM Peachtree sample (or the synthetic
generator when the data is not there, saying so) through Kafka with event times shifted
to now; drain it with N consumer processes; run the 15-minute window transform over the
replayed range; print what landed where, counted from the services themselves (not from
the producer's own tally).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from sensorlake.errors import InputError, ServiceError
from sensorlake.kinematics import FPS_TO_MPH
from sensorlake.settings import Settings

PEACHTREE = Path("ngsim_peachtree_sample") / "NGSIM.csv"


def shared_data_dir() -> Path | None:
    """The shared trajectory data directory: ``$SENSORLAKE_SHARED_DATA``, else ``../shared/data``
    next to the current directory or next to this checkout. None when absent."""
    candidates = []
    if os.environ.get("SENSORLAKE_SHARED_DATA"):
        candidates.append(Path(os.environ["SENSORLAKE_SHARED_DATA"]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@dataclass
class DemoSummary:
    """What the demo counted in Kafka, the lake and PostgreSQL."""

    source: str
    produced: int
    in_lake: int
    distinct_offsets: int
    in_dlq: int
    travelers_in_pg: int
    window_rows: int
    p85_mph_by_type: dict[str, float]


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    """High watermark (next offset) of every partition of ``topic``."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "sensorlake-watermarks"})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise ServiceError(f"topic {topic} does not exist")
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.topics[topic].partitions
        }
    finally:
        c.close()


def run_demo(settings: Settings, *, source: str | None, consumers: int, console: Console, out: Console) -> DemoSummary:
    """Run the demo and print its summary table.

    Traveler ids of each run get the suffix ``@<UTC run time>`` and event times are
    shifted so the first event is now, so repeated demos never mix their visits.

    Raises:
        ServiceError: a service or a consumer process failed.
        InputError: a bad ``source`` or ``consumers``.
    """
    from app import stack
    from ingest.producer import produce
    from ingest.readers import open_source
    from ingest.synthetic import generate
    from lake.catalog import connect
    from transforms.backfill import run_transform
    from transforms.windows import floor_to_step

    if consumers < 1:
        raise InputError("--consumers must be >= 1")
    if source:  # validate the path before starting anything
        path = Path(source)
        events, label = open_source(path), str(path)
    stack.up(settings, console)
    if not source:
        data = shared_data_dir()
        if data is not None and (data / PEACHTREE).exists():
            events, label = open_source(data / PEACHTREE), f"NGSIM Peachtree ({data / PEACHTREE})"
        else:
            console.print("[yellow]NGSIM Peachtree sample not found (../shared/data): using the synthetic generator[/]")
            events, label = generate(sensors=3, travelers=150, rate_hz=10.0, duration_s=60.0, seed=7), "synthetic"
    # Tag this run's traveler ids: replaying the same file again, shifted to now, must
    # not continue (or arrive late into) the visits of an earlier demo run.
    run_tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    events = (msgspec.structs.replace(e, traveler_id=f"{e.traveler_id}@{run_tag}") for e in events)
    before = high_watermarks(settings, settings.topic)
    dlq_before = sum(high_watermarks(settings, settings.dlq_topic).values())

    console.print(f"starting {consumers} consumer processes")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "consume", "--until-idle", "12"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
        )
        for _ in range(consumers)
    ]
    try:
        console.print(f"replaying {label}")
        stats = produce(settings, events, speedup=None, max_rate=True, shift_to_now=True, console=console)
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                last = (err.decode(errors="replace").strip().splitlines() or [f"exit {p.returncode}"])[-1]
                raise ServiceError(f"a consumer failed: {last}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    after = high_watermarks(settings, settings.topic)
    dlq_after = sum(high_watermarks(settings, settings.dlq_topic).values())
    produced = sum(after[p] - before.get(p, 0) for p in after)

    con = connect(settings, read_only=True)
    try:
        cond = " OR ".join(
            f"(kafka_partition = {int(p)} AND kafka_offset >= {int(before.get(p, 0))})" for p in after
        )
        in_lake, distinct, t0, t1 = con.execute(
            f"SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), min(ts), max(ts) "
            f"FROM lake.movements WHERE {cond}"
        ).fetchone()
        keys = con.execute(f"SELECT DISTINCT sensor_id, traveler_id FROM lake.movements WHERE {cond}").fetchall()
    finally:
        con.close()
    if t0 is None:
        raise ServiceError("nothing reached the lake")
    res = run_transform(settings, floor_to_step(t0, 900), t1, engine="duckdb")
    with psycopg.connect(settings.pg_dsn) as pg:
        rows = pg.execute(
            """
            SELECT s.traveler_type, count(*),
                   percentile_cont(0.85) WITHIN GROUP (ORDER BY s.avg_speed_fps)
            FROM traveler_summary s
            JOIN unnest(%s::bigint[], %s::text[]) AS k(sensor_id, traveler_id)
              ON s.sensor_id = k.sensor_id AND s.traveler_id = k.traveler_id
            WHERE s.first_seen >= %s
            GROUP BY 1 ORDER BY 1
            """,
            ([k[0] for k in keys], [k[1] for k in keys], t0),
        ).fetchall()
    summary = DemoSummary(
        source=label, produced=produced, in_lake=in_lake, distinct_offsets=distinct,
        in_dlq=dlq_after - dlq_before, travelers_in_pg=sum(r[1] for r in rows),
        window_rows=res.written("window_stats"),
        p85_mph_by_type={r[0]: (r[2] or 0.0) * FPS_TO_MPH for r in rows},
    )  # fmt: skip
    _print(out, summary, stats)
    return summary


def _print(out: Console, s: DemoSummary, stats) -> None:
    t = Table(title=f"sensorlake demo: {s.source}", show_header=False)
    t.add_row("events produced (Kafka high watermarks)", f"{s.produced:,}")
    t.add_row("producer rate (first send to last broker ack)", f"{stats.events_per_s:,.0f} events/s")
    t.add_row("events in the lake / distinct offsets", f"{s.in_lake:,} / {s.distinct_offsets:,}")
    t.add_row("records in the DLQ", f"{s.in_dlq:,}")
    t.add_row("travelers (visits) in PostgreSQL", f"{s.travelers_in_pg:,}")
    t.add_row("window rows written (1/5/15 min)", f"{s.window_rows:,}")
    for typ, mph in s.p85_mph_by_type.items():
        t.add_row(f"p85 of traveler speeds, {typ}", f"{mph:.1f} mph")
    out.print(t)
