"""Transforms: the 15-minute volume / mean / p85 job in DuckDB and in Polars, against
DuckDB's raw scan of the same lake files.

Run:  python bench/transforms.py [--events 10000000] [--span-s 7200]

A private lake (PostgreSQL catalog, own data directory) receives N synthetic events
(50 sensors, 10 Hz, the default type mix) spread over ``--span-s`` seconds of event time
(default 2 h: 8 windows of 15 min), written straight to ``lake.movements`` in
``--chunk-rows`` commits (default 1,000,000: the layout after compaction), sorted by
sensor_id, ts like the consumer's micro-batches. Then, on the same snapshot:

* raw scan: DuckDB aggregates every column the job reads over the job's read range
  (``count, sum(sensor_id), max(length(traveler_id)), max(length(traveler_type)),
  min/max(ts), sum(x_ft), sum(y_ft)``): how fast this machine can read these files;
* stages of the job, each timed alone: read (``lake.reader.read_movements``: scan, sort,
  Arrow), visits + merged segments (``transforms.segments.build_visits_segments``, shared
  by both engines), the window aggregation in DuckDB (``compute_windows_duckdb``) and in
  Polars (``compute_windows_polars``), whose outputs must be identical;
* the whole backfill, once per engine (``transforms.backfill.run_transform`` restricted to
  the 15-minute window job: read, segments, aggregation, replace the range of
  ``lake.window_stats`` in one transaction).

Rates are events read per second; "x raw scan" divides by the raw scan's rate (target:
the job >= 20% of it). Fast stages are repeated ``--repeat`` times (median reported).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import dataclasses
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench._common import (
    Load,
    Workspace,
    load_avg,
    load_plans,
    machine_info,
    machine_line,
    stamp,
    table,
    write_json,
)


def fill_lake(s, load: Load, chunk_rows: int) -> dict:
    """Write the load's events to ``lake.movements`` in commits of ``chunk_rows``."""
    import pyarrow as pa

    from ingest.synthetic import events_of
    from lake.catalog import LAKE, connect
    from lake.schema import MOVEMENTS_SCHEMA

    t0 = time.monotonic()
    plans = load_plans(load)
    con = connect(s)
    offset = 0
    commits = 0

    def flush(cols: dict) -> None:
        nonlocal offset, commits
        n = len(cols["sensor_id"])
        if not n:
            return
        tbl = pa.Table.from_arrays(
            [
                pa.array(cols["sensor_id"], pa.int64()),
                pa.array(cols["traveler_id"], pa.string()),
                pa.array(cols["traveler_type"], pa.string()),
                pa.array(cols["ts"], pa.int64()).cast(MOVEMENTS_SCHEMA.field("ts").type),
                pa.array(cols["x_ft"], pa.float64()),
                pa.array(cols["y_ft"], pa.float64()),
                pa.array([0] * n, pa.int32()),
                pa.array(range(offset, offset + n), pa.int64()),
            ],
            schema=MOVEMENTS_SCHEMA,
        ).sort_by([("sensor_id", "ascending"), ("ts", "ascending")])
        con.register("_bench_batch", tbl)
        con.execute(f"INSERT INTO {LAKE}.movements SELECT * FROM _bench_batch")
        con.unregister("_bench_batch")
        offset += n
        commits += 1

    names = ("sensor_id", "traveler_id", "traveler_type", "ts", "x_ft", "y_ft")
    cols: dict[str, list] = {k: [] for k in names}
    sid, tid, typ, ts, xs, ys = (cols[k] for k in names)
    for ev in events_of(plans, jitter_ft=load.jitter_ft, seed=load.seed):
        sid.append(ev.sensor_id)
        tid.append(ev.traveler_id)
        typ.append(ev.traveler_type)
        ts.append(ev.ts_us)
        xs.append(ev.x_ft)
        ys.append(ev.y_ft)
        if len(sid) >= chunk_rows:
            flush(cols)
            for v in cols.values():
                v.clear()
    flush(cols)
    lo, hi, files = con.execute(
        f"SELECT min(ts), max(ts), (SELECT count(*) FROM ducklake_list_files('{LAKE}', 'movements')) FROM {LAKE}.movements"
    ).fetchone()
    con.close()
    return {"events": offset, "commits": commits, "files": int(files), "seconds": time.monotonic() - t0,
            "min_ts": lo, "max_ts": hi, "travelers": len(plans)}  # fmt: skip


def compare_tables(a, b) -> dict:
    """Rows and columns where two window_stats tables differ, and the largest relative
    difference of a float column (inf when the shapes, keys or nulls differ)."""
    import numpy as np

    if a.num_rows != b.num_rows or a.schema != b.schema:
        return {"rows_differing": max(a.num_rows, b.num_rows), "columns": ["<shape>"], "max_rel": float("inf")}
    differing = np.zeros(a.num_rows, dtype=bool)
    cols, max_rel = [], 0.0
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        if x.equals(y):
            continue
        cols.append(name)
        if not str(x.type).startswith("double"):
            return {"rows_differing": a.num_rows, "columns": cols, "max_rel": float("inf")}
        xv = x.to_numpy(zero_copy_only=False).astype(float)
        yv = y.to_numpy(zero_copy_only=False).astype(float)
        nx, ny = np.isnan(xv), np.isnan(yv)
        if (nx != ny).any():
            return {"rows_differing": int((nx != ny).sum()), "columns": cols, "max_rel": float("inf")}
        ok = ~nx
        d = np.abs(xv[ok] - yv[ok]) / np.maximum(np.abs(xv[ok]), 1e-300)
        differing[np.flatnonzero(ok)[d > 0]] = True
        max_rel = max(max_rel, float(d.max()) if d.size else 0.0)
    return {"rows_differing": int(differing.sum()), "columns": cols, "max_rel": max_rel}


def window_job_only(run_transform, s) -> dict:
    """Keyword arguments that restrict a backfill to the 15-minute window job, when
    ``run_transform`` has several jobs (``jobs=``, ``windows_s=``, ``step_s=``)."""
    import inspect

    params = inspect.signature(run_transform).parameters
    kw: dict = {}
    if "jobs" in params:
        kw["jobs"] = ("windows",)
    if "windows_s" in params:
        kw["windows_s"] = (s.window_s,)
    if "step_s" in params:
        kw["step_s"] = s.window_step_s
    return kw


def timed(fn, repeat: int):
    """(median seconds, all seconds, last result) of ``repeat`` calls."""
    times, out = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Window job (DuckDB, Polars) vs DuckDB raw scan (see the module doc).")
    ap.add_argument("--events", type=int, default=10_000_000, help="events in the lake (default 10,000,000)")
    ap.add_argument("--span-s", type=float, default=7200.0, help="seconds of event time (default 7200)")
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per lake commit when loading")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the fast stages (median)")
    ap.add_argument("--json", default=None, help="results file (default bench/results/transforms.json; '-' = none)")
    args = ap.parse_args(argv)
    n = args.events
    concurrent = max(1, round(n / (args.rate_hz * args.span_s)))
    load = Load(events=n, concurrent=concurrent, sensors=args.sensors, rate_hz=args.rate_hz)
    info = machine_info()
    print(f"transforms benchmark, {stamp()}")
    print(machine_line(info))
    print(f"load: {load.describe()}")
    load0 = load_avg()
    print(f"load average at start: {load0}")
    from lake.catalog import connect
    from lake.reader import current_snapshot, read_movements, read_window_stats
    from transforms.backfill import run_transform
    from transforms.duckdb_job import compute_windows_duckdb
    from transforms.polars_job import compute_windows_polars
    from transforms.segments import build_visits_segments
    from transforms.windows import WindowGrid, read_bounds

    res: dict = {"benchmark": "transforms", "when": stamp(), "machine": info, "load": dataclasses.asdict(load),
                 "load_before": load0}  # fmt: skip
    with Workspace("transforms", topic=False) as ws:
        s = ws.sink("lake")
        print("loading the lake ...", flush=True)
        fill = fill_lake(s, load, args.chunk_rows)
        res["fill"] = fill
        print(f"  {fill['events']:,} events ({fill['travelers']:,} travelers) in {fill['commits']} commits / "
              f"{fill['files']} files, {fill['seconds']:.0f} s")  # fmt: skip
        step = timedelta(seconds=s.window_step_s)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        start = epoch + ((fill["min_ts"] - epoch) // step) * step
        end = epoch + (((fill["max_ts"] - epoch) // step) + 1) * step
        grid = WindowGrid.build(start, end, window_s=s.window_s, step_s=s.window_step_s)
        lo, hi = read_bounds(start, end, window_s=s.window_s, step_s=s.window_step_s, visit_gap_s=s.visit_gap_s)
        print(f"range {start.isoformat()} .. {end.isoformat()}: {len(grid.starts)} windows of {s.window_s} s")

        con = connect(s)
        try:
            snap = current_snapshot(con)
            scan_sql = (
                "SELECT count(*), sum(sensor_id), max(length(traveler_id)), max(length(traveler_type)), "
                f"min(ts), max(ts), sum(x_ft), sum(y_ft) FROM lake.movements AT (VERSION => {snap}) "
                "WHERE ts >= ? AND ts < ?"
            )
            print("raw scan ...", flush=True)
            t_scan, scan_all, scan_row = timed(lambda: con.execute(scan_sql, [lo, hi]).fetchone(), args.repeat)
            rows_scanned = int(scan_row[0])
            print("read ...", flush=True)
            t_read, read_all, events = timed(lambda: read_movements(con, lo, hi, snapshot=snap), args.repeat)
        finally:
            con.close()
        print("visits + segments ...", flush=True)
        t_seg, _, data = timed(
            lambda: build_visits_segments(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s), 1
        )
        print("window aggregation: DuckDB, Polars ...", flush=True)
        t_duck, duck_all, out_duck = timed(lambda: compute_windows_duckdb(data, grid), args.repeat)
        t_pol, pol_all, out_pol = timed(lambda: compute_windows_polars(data, grid), args.repeat)
        identical = out_duck.equals(out_pol)
        diff = compare_tables(out_duck, out_pol)
        backfill = {}
        written = {}
        for engine in ("duckdb", "polars"):
            print(f"backfill with {engine} ...", flush=True)
            r = run_transform(s, start, end, engine=engine, **window_job_only(run_transform, s))
            backfill[engine] = r
            c2 = connect(s, read_only=True)
            try:
                written[engine] = read_window_stats(c2, start, end, window_s=s.window_s)
            finally:
                c2.close()
        backfill_identical = written["duckdb"].equals(written["polars"])
        backfill_diff = compare_tables(written["duckdb"], written["polars"])
    load1 = load_avg()

    ev = events.num_rows
    scan_rate = rows_scanned / t_scan
    rows = [
        ["raw scan (DuckDB, all job columns)", rows_scanned, t_scan, scan_rate, 1.0],
        ["read: scan + sort + Arrow", ev, t_read, ev / t_read, ev / t_read / scan_rate],
        ["visits + segments (columnar)", ev, t_seg, ev / t_seg, ev / t_seg / scan_rate],
        ["window aggregation, DuckDB", ev, t_duck, ev / t_duck, ev / t_duck / scan_rate],
        ["window aggregation, Polars", ev, t_pol, ev / t_pol, ev / t_pol / scan_rate],
    ]
    for engine, r in backfill.items():
        rows.append([f"whole backfill, {engine}", r.events_read, r.elapsed_s, r.events_read / r.elapsed_s,
                     r.events_read / r.elapsed_s / scan_rate])  # fmt: skip
    print()
    print(table(["stage", "events", "seconds", "events/s", "x raw scan"], rows))
    print()
    print(f"visits {data.visits.num_rows:,}, segments {data.segments.num_rows:,}, window rows {out_duck.num_rows:,}")
    print(f"DuckDB vs Polars aggregation: {max(t_duck, t_pol) / min(t_duck, t_pol):.2f}x apart "
          f"({'DuckDB' if t_duck < t_pol else 'Polars'} faster); outputs bit-identical: {identical}"
          + ("" if identical else f" ({diff['rows_differing']} of {out_duck.num_rows} rows differ, in "
             f"{', '.join(diff['columns']) or '-'}; max relative difference {diff['max_rel']:.2g})"))  # fmt: skip
    bd, bp = backfill["duckdb"].elapsed_s, backfill["polars"].elapsed_s
    print(f"whole backfill: DuckDB {bd:.2f} s, Polars {bp:.2f} s ({max(bd, bp) / min(bd, bp):.2f}x apart); "
          f"lake.window_stats bit-identical after each: {backfill_identical}"
          + ("" if backfill_identical else f" (max relative difference {backfill_diff['max_rel']:.2g})"))  # fmt: skip
    best_job = ev / min(bd, bp)
    print(f"target: job >= 20% of the raw scan rate: whole backfill {best_job / scan_rate:.1%}, "
          f"aggregation alone {ev / min(t_duck, t_pol) / scan_rate:.1%}")  # fmt: skip
    print(f"load average: {load0} -> {load1}")
    res.update(
        events_read=ev, rows_scanned=rows_scanned, windows=len(grid.starts),
        seconds={"raw_scan": scan_all, "read": read_all, "segments": t_seg, "agg_duckdb": duck_all,
                 "agg_polars": pol_all, "backfill_duckdb": bd, "backfill_polars": bp},
        events_per_s={"raw_scan": scan_rate, "read": ev / t_read, "segments": ev / t_seg, "agg_duckdb": ev / t_duck,
                      "agg_polars": ev / t_pol, "backfill_duckdb": ev / bd, "backfill_polars": ev / bp},
        visits=data.visits.num_rows, segments=data.segments.num_rows, window_rows=out_duck.num_rows,
        identical=identical, diff=diff, backfill_identical=backfill_identical, backfill_diff=backfill_diff,
        load_after=load1,
    )  # fmt: skip
    path = write_json("transforms", res, args.json)
    if path:
        print(f"results: {path}")
    same = (identical or diff["max_rel"] <= 1e-12) and (backfill_identical or backfill_diff["max_rel"] <= 1e-12)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
