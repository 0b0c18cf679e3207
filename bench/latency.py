"""Latency: event time -> visible in PostgreSQL, and -> visible in the lake, at a fixed rate.

Run:  python bench/latency.py [--rate 20000] [--duration 60]

One sensorlake consumer process (``python -m app.cli consume``) runs on a private topic
and sinks. When it has joined its group, a producer process sends a flat load of
``--rate`` events/s for ``--duration`` s in real time (``rate / 10`` travelers at 10 Hz,
all on the road for the whole run, each with its own phase), with event times shifted to
the producer's wall clock (``produce(..., speedup=1, shift_to_now=True)``): an event's
timestamp is the wall-clock time it was due to be sent.

Method (this process polls both sinks while the load runs; same machine, same clock):

* PostgreSQL: every ``--pg-poll`` s (default 0.05), the ``traveler_summary`` rows with
  ``updated_at`` later than the latest one seen (``updated_at`` is the start time of the
  transaction that wrote the row, the same for all its rows, and one consumer's
  transactions commit in the order they start, so nothing is skipped). A row's ``observations`` grew by
  k since the previous poll: its k new events became visible at this poll; their event
  times are spread evenly over (previous ``last_seen``, ``last_seen``] (exact for this
  load, where each traveler is observed every 100 ms). Latency = time the poll started
  - event time.
* Lake: every ``--lake-poll`` s (default 0.1), the DuckLake snapshot id (read-only attach,
  as any reader); on a new snapshot, the events of partitions past the offsets already
  seen are read at that snapshot (``AT (VERSION => n)``); latency = time the snapshot was
  first seen - event time.

Resolution: each figure is an upper bound, at most one poll interval (plus the query's
own time, reported) above the moment the event became visible. The producer's own lag
behind its schedule is included (it is part of "event time -> visible").
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import dataclasses
import json
import threading
import time

import numpy as np

from bench._common import (
    Load,
    Workspace,
    consumer_cmd,
    load_avg,
    machine_info,
    machine_line,
    percentiles,
    proc_cpu_s,
    proc_rss_mb,
    spawn,
    stamp,
    table,
    worker_cmd,
    write_json,
)


def wait_group_ready(s, timeout_s: float = 90.0) -> float:
    """Wait until the consumer group is stable with partitions assigned; returns seconds."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            d = admin.describe_consumer_groups([s.consumer_group])[s.consumer_group].result(10)
            assigned = sum(len(m.assignment.topic_partitions) for m in d.members if m.assignment)
            if d.state == ConsumerGroupState.STABLE and assigned >= s.topic_partitions:
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - group not there yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"consumer group {s.consumer_group} not ready after {timeout_s:.0f} s")


class PgPoller(threading.Thread):
    """Polls ``traveler_summary`` and turns observation-count increments into latencies."""

    SQL = (
        "SELECT sensor_id, traveler_id, floor(extract(epoch FROM first_seen) * 1000000)::bigint,"
        " observations, floor(extract(epoch FROM last_seen) * 1000000)::bigint,"
        " extract(epoch FROM updated_at)::float8"
        " FROM traveler_summary WHERE updated_at > to_timestamp(%s)"
    )

    def __init__(self, s, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.s, self.interval_s = s, interval_s
        self.stop = threading.Event()
        self.latencies: list[np.ndarray] = []
        self.event_ts: list[np.ndarray] = []
        self.visible = 0
        self.polls = 0
        self.query_s: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg

        try:
            conn = psycopg.connect(self.s.pg_dsn, autocommit=True)
            seen: dict[tuple, tuple[int, int]] = {}
            watermark = 0.0
            while not self.stop.is_set():
                t_q = time.time()
                try:
                    rows = conn.execute(self.SQL, (watermark,)).fetchall()
                except psycopg.errors.UndefinedTable:
                    time.sleep(self.interval_s)
                    continue
                self.query_s.append(time.time() - t_q)
                self.polls += 1
                lats, tss = [], []
                for sid, tid, first_us, obs, last_us, upd in rows:
                    watermark = max(watermark, upd)
                    key = (sid, tid, first_us)
                    prev = seen.get(key)
                    if prev is None:
                        k = obs
                        if k <= 0:
                            continue
                        ts = np.linspace(first_us, last_us, k) if k > 1 else np.array([last_us], dtype=np.float64)
                    else:
                        k = obs - prev[0]
                        if k <= 0:
                            continue
                        ts = prev[1] + (last_us - prev[1]) * np.arange(1, k + 1) / k
                    seen[key] = (obs, last_us)
                    self.visible += k
                    lats.append(t_q - ts / 1e6)
                    tss.append(ts / 1e6)
                if lats:
                    self.latencies.append(np.concatenate(lats))
                    self.event_ts.append(np.concatenate(tss))
                elapsed = time.time() - t_q
                self.stop.wait(max(0.0, self.interval_s - elapsed))
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


class LakePoller(threading.Thread):
    """Polls the lake's current snapshot; reads each new snapshot's new events."""

    def __init__(self, s, interval_s: float, partitions: int) -> None:
        super().__init__(daemon=True)
        self.s, self.interval_s, self.partitions = s, interval_s, partitions
        self.stop = threading.Event()
        self.latencies: list[np.ndarray] = []
        self.event_ts: list[np.ndarray] = []
        self.visible = 0
        self.polls = 0
        self.snapshots = 0
        self.query_s: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from lake.catalog import connect

        try:
            con = connect(self.s, read_only=True)
            next_off = dict.fromkeys(range(self.partitions), 0)
            last_snap = None
            while not self.stop.is_set():
                t0 = time.time()
                snap = int(con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0])
                t_seen = time.time()
                self.query_s.append(t_seen - t0)
                self.polls += 1
                if snap != last_snap:
                    last_snap = snap
                    cond = " OR ".join(
                        f"(kafka_partition = {p} AND kafka_offset >= {o})" for p, o in next_off.items()
                    )
                    got = con.execute(
                        f"SELECT kafka_partition, kafka_offset, epoch_us(ts) AS ts_us "
                        f"FROM lake.movements AT (VERSION => {snap}) WHERE {cond}"
                    ).fetchnumpy()
                    if len(got["ts_us"]):
                        self.snapshots += 1
                        self.visible += len(got["ts_us"])
                        ts_s = np.asarray(got["ts_us"], dtype=np.float64) / 1e6
                        self.latencies.append(t_seen - ts_s)
                        self.event_ts.append(ts_s)
                        parts, offs = np.asarray(got["kafka_partition"]), np.asarray(got["kafka_offset"])
                        for p in np.unique(parts):
                            next_off[int(p)] = max(next_off[int(p)], int(offs[parts == p].max()) + 1)
                self.stop.wait(max(0.0, self.interval_s - (time.time() - t0)))
            con.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def _self_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def slices(pg: PgPoller, lake: LakePoller, width_s: float) -> list[list]:
    """p50 / p99 of both latencies per ``width_s`` seconds of event time."""
    def cat(xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs) if xs else np.array([])

    pts, plat, lts, llat = cat(pg.event_ts), cat(pg.latencies), cat(lake.event_ts), cat(lake.latencies)
    if not pts.size:
        return []
    t0 = min(pts.min(), lts.min() if lts.size else pts.min())
    rows = []
    end = max(pts.max(), lts.max() if lts.size else pts.max())
    k = 0
    while t0 + k * width_s <= end:
        lo, hi = t0 + k * width_s, t0 + (k + 1) * width_s
        pm, lm = (pts >= lo) & (pts < hi), (lts >= lo) & (lts < hi)
        row = [f"{k * width_s:g}-{(k + 1) * width_s:g}"]
        for arr, m in ((plat, pm), (llat, lm)):
            row += [float(np.percentile(arr[m], 50)), float(np.percentile(arr[m], 99))] if m.any() else [None, None]
        rows.append(row)
        k += 1
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Latency event time -> PostgreSQL / lake at a fixed rate (see the module doc).")
    ap.add_argument("--rate", type=float, default=20_000, help="events per second (default 20,000)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--pg-poll", type=float, default=0.05, help="PostgreSQL polling interval (s)")
    ap.add_argument("--lake-poll", type=float, default=0.1, help="lake polling interval (s)")
    ap.add_argument("--slice", type=float, default=10.0, help="report percentiles per this many seconds of event time")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="wait this long after the producer for the sinks")
    ap.add_argument("--json", default=None, help="results file (default bench/results/latency.json; '-' = none)")
    args = ap.parse_args(argv)
    events = int(round(args.rate * args.duration))
    load = Load(events=events, concurrent=max(1, round(args.rate / args.rate_hz)), sensors=args.sensors, rate_hz=args.rate_hz)
    info = machine_info()
    print(f"latency benchmark, {stamp()}")
    print(machine_line(info))
    print(f"load: {args.rate:,.0f} events/s for {args.duration:g} s ({load.concurrent:,} travelers at {args.rate_hz:g} Hz, "
          f"{args.sensors} sensors), event time = producer wall clock")  # fmt: skip
    load0 = load_avg()
    print(f"load average at start: {load0}")
    result: dict = {"benchmark": "latency", "when": stamp(), "machine": info, "rate": args.rate,
                    "duration_s": args.duration, "load_before": load0}  # fmt: skip
    with Workspace("latency", partitions=args.partitions) as ws:
        s = ws.sink("sl")
        result["consumer_settings"] = {k: getattr(s, k) for k in ("poll_batch", "max_batch_rows", "max_batch_age_s")}
        consumer = spawn("consumer", consumer_cmd(60.0), s.to_env(), ws.dir)
        producer = None
        pg = PgPoller(s, args.pg_poll)
        lake = LakePoller(s, args.lake_poll, args.partitions)
        try:
            ready_s = wait_group_ready(s)
            print(f"consumer ready after {ready_s:.1f} s; producing ...", flush=True)
            self_cpu0, self_t0 = _self_cpu(), time.monotonic()
            pg.start()
            lake.start()
            cpu0 = proc_cpu_s(consumer.pid) or 0.0
            producer = spawn(
                "producer",
                worker_cmd("bench._workers", "produce", "--load", json.dumps(dataclasses.asdict(load)),
                           "--paced-rate", str(args.rate)),
                s.to_env(), ws.dir,
            )  # fmt: skip
            t_prod = time.monotonic()
            rss = []
            while not producer.poll():
                rss.append(proc_rss_mb(consumer.pid) or 0.0)
                if consumer.poll():
                    consumer.check()
                    raise RuntimeError("the consumer exited during the run")
                time.sleep(1.0)
            producer.check()
            prod = producer.result()
            cpu1 = proc_cpu_s(consumer.pid) or 0.0
            wall_load = time.monotonic() - t_prod
            deadline = time.monotonic() + args.drain_timeout
            while (pg.visible < prod["count"] or lake.visible < prod["count"]) and time.monotonic() < deadline:
                if pg.error or lake.error:
                    break
                time.sleep(0.2)
            pg.stop.set()
            lake.stop.set()
            pg.join(30)
            lake.join(30)
            for t in (pg, lake):
                if t.error:
                    raise t.error
            consumer.terminate()
            consumer.wait(120)
            consumer.check()
        finally:
            pg.stop.set()
            lake.stop.set()
            consumer.kill()
            if producer is not None:
                producer.kill()
    load1 = load_avg()
    observer_cpu_pct = 100.0 * (_self_cpu() - self_cpu0) / max(time.monotonic() - self_t0, 1e-9)
    produced = prod["count"]
    pg_lat = np.concatenate(pg.latencies) if pg.latencies else np.array([])
    lake_lat = np.concatenate(lake.latencies) if lake.latencies else np.array([])
    pg_p, lake_p = percentiles(pg_lat), percentiles(lake_lat)
    result.update(
        produced=produced, producer_events_per_s=prod["events_per_s"], producer_seconds=prod["seconds"],
        pg=pg_p | {"visible": pg.visible, "poll_s": args.pg_poll, "polls": pg.polls,
                   "query_ms_p50": float(np.median(pg.query_s) * 1e3) if pg.query_s else None},
        lake=lake_p | {"visible": lake.visible, "poll_s": args.lake_poll, "polls": lake.polls, "snapshots": lake.snapshots,
                       "query_ms_p50": float(np.median(lake.query_s) * 1e3) if lake.query_s else None},
        consumer_cpu_pct=100.0 * (cpu1 - cpu0) / wall_load if wall_load > 0 else None,
        consumer_peak_rss_mb=consumer.maxrss_mb, consumer_rss_sampled_max_mb=max(rss) if rss else None,
        observer_cpu_pct=observer_cpu_pct, slices=slices(pg, lake, args.slice),
        load_after=load1,
    )  # fmt: skip
    print()
    print(table(
        ["event time ->", "events seen", "of produced", "p50 s", "p95 s", "p99 s", "max s", "poll s", "query ms (p50)"],
        [
            ["visible in PostgreSQL", pg.visible, produced, pg_p["p50"], pg_p["p95"], pg_p["p99"], pg_p["max"],
             args.pg_poll, result["pg"]["query_ms_p50"]],
            ["visible in the lake", lake.visible, produced, lake_p["p50"], lake_p["p95"], lake_p["p99"], lake_p["max"],
             args.lake_poll, result["lake"]["query_ms_p50"]],
        ],
    ))  # fmt: skip
    print()
    print(f"by {args.slice:g} s of event time (does the lag grow? a consumer that keeps up has a flat p99)")
    print(table(["event time from start s", "PG p50 s", "PG p99 s", "lake p50 s", "lake p99 s"], slices(pg, lake, args.slice)))
    print()
    print(f"producer: {produced:,} events in {prod['seconds']:.1f} s ({prod['events_per_s']:,.0f} events/s, target {args.rate:,.0f})")
    print(f"consumer: {result['consumer_cpu_pct']:.0f}% of a core during the load, peak RSS {consumer.maxrss_mb:.0f} MB; "
          f"settings {result['consumer_settings']}; lake snapshots with new events: {lake.snapshots}")  # fmt: skip
    print(f"target: p99 event -> PostgreSQL < 1 s: {'met' if pg_p['p99'] < 1.0 else 'NOT met'} ({pg_p['p99']:.3f} s)")
    print(f"this process (the two pollers) used {observer_cpu_pct:.0f}% of a core")
    print(f"load average: {load0} -> {load1}")
    complete = pg.visible == produced and lake.visible == produced
    if not complete:
        print(f"WARNING: not every event became visible within {args.drain_timeout:g} s")
    path = write_json("latency", result, args.json)
    if path:
        print(f"results: {path}")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
