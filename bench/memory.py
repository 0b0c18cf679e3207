"""Memory: N events through ONE sensorlake consumer process, its RSS sampled every second.

Run:  python bench/memory.py [--events 20000000]

A producer process fills a private topic with the synthetic load (50 sensors, ~20,000
concurrent travelers at 10 Hz; over a long run travelers come and go, so the consumer
keeps seeing new keys) while one ``python -m app.cli consume`` process consumes it. Every
``--sample`` s this process reads the consumer's RSS (``/proc/<pid>/statm``) and CPU, and
the events committed so far (the group's committed Kafka offsets, written after each lake
commit). When all N are committed the consumer is stopped with SIGTERM.

Reported: RSS min / median / max per tenth of the events (RSS saws up and down with each
lake micro-batch, so single samples are not comparable), peak RSS (``ru_maxrss``), and the
trend after warm-up (the first tenth): least-squares slope of the per-tenth medians
against events consumed (MB per million events) and the growth it implies from 10% to
100%. "Flat" = that growth is below ``--flat-tolerance`` (default 10%) of the second
tenth's median.
At the default 20M events this takes long on a small machine: ``--events`` sets N, and
the output says how long the full 20M would take at the measured rate.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import dataclasses
import json
import time

import numpy as np

from bench._common import (
    CommitWatcher,
    Load,
    Workspace,
    consumer_cmd,
    lake_check,
    load_avg,
    machine_info,
    machine_line,
    proc_cpu_s,
    proc_rss_mb,
    spawn,
    stamp,
    table,
    worker_cmd,
    write_json,
)

FULL_N = 20_000_000


def sample_until_done(consumer, producers, watcher, n: int, *, interval_s: float, timeout_s: float) -> list[dict]:
    """Every ``interval_s``: the consumer's RSS and CPU and the events committed, until all
    ``n`` are committed (then the consumer is stopped with SIGTERM) or it exits."""
    samples: list[dict] = []
    t0 = time.monotonic()
    next_print = 0.1
    while True:
        for p in producers:
            if p.poll():
                p.check()
        if consumer.poll():
            consumer.check()
            return samples
        rss, cpu = proc_rss_mb(consumer.pid), proc_cpu_s(consumer.pid)
        done = watcher.committed()
        t = time.monotonic() - t0
        if rss is not None and done >= 0:
            samples.append({"t_s": round(t, 2), "events": done, "rss_mb": round(rss, 1), "cpu_s": cpu})
        if rss is not None and done >= next_print * n:
            print(f"  {done:>12,} events  {t:7.0f} s  RSS {rss:6.0f} MB  load {load_avg()}", flush=True)
            while next_print * n <= done:
                next_print += 0.1
        if done >= n:
            consumer.terminate()
            consumer.wait(120)
            consumer.check()
            return samples
        if t > timeout_s:
            raise TimeoutError(f"{done:,} of {n:,} events after {t:.0f} s")
        time.sleep(interval_s)


def decile_trend(ev: np.ndarray, rss: np.ndarray, n: int) -> tuple[list[list], float | None, float | None, float | None]:
    """RSS min / median / max per tenth of the ``n`` events (RSS saws up and down with every
    lake micro-batch, so deciles are compared, not single samples), and the trend after the
    first (warm-up) tenth: (table rows, median of the 2nd tenth, least-squares slope of the
    medians in MB per million events, growth it implies from 10% to 100%)."""
    rows, medians, centres = [], [], []
    for q in range(10):
        m = (ev >= q * n / 10) & ((ev < (q + 1) * n / 10) if q < 9 else (ev <= n)) & (rss > 0)
        if not m.any():
            continue
        med = float(np.median(rss[m]))
        rows.append([f"{q * 10}-{(q + 1) * 10}%", int(m.sum()), float(rss[m].min()), med, float(rss[m].max())])
        if q >= 1:  # the first decile is warm-up
            medians.append(med)
            centres.append((q + 0.5) * n / 10 / 1e6)
    if len(medians) >= 3:
        slope = float(np.polyfit(centres, medians, 1)[0])
        return rows, medians[0], slope, slope * 0.9 * n / 1e6
    if medians:
        return rows, medians[0], 0.0, medians[-1] - medians[0]
    return rows, None, None, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Consumer RSS over N events (see the module doc).")
    ap.add_argument("--events", type=int, default=FULL_N, help=f"events (default {FULL_N:,})")
    ap.add_argument("--concurrent", type=int, default=20_000)
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=1, help="producer processes running alongside the consumer")
    ap.add_argument("--sample", type=float, default=1.0, help="RSS sampling interval (s)")
    ap.add_argument("--flat-tolerance", type=float, default=0.10, help="allowed growth after warm-up (fraction)")
    ap.add_argument("--limit-mb", type=float, default=400.0, help="RSS target (MB)")
    ap.add_argument("--timeout", type=float, default=6 * 3600.0)
    ap.add_argument("--json", default=None, help="results file (default bench/results/memory.json; '-' = none)")
    args = ap.parse_args(argv)
    n = args.events
    load = Load(events=n, concurrent=args.concurrent, sensors=args.sensors, rate_hz=args.rate_hz)
    info = machine_info()
    print(f"memory benchmark, {stamp()}")
    print(machine_line(info))
    print(f"load: {load.describe()}; {args.partitions} partitions; {args.producers} producer process(es) alongside")
    load0 = load_avg()
    print(f"load average at start: {load0}")
    with Workspace("memory", partitions=args.partitions) as ws:
        s = ws.sink("sl")
        env = s.to_env()
        producers = [
            spawn(f"producer{i}", worker_cmd("bench._workers", "produce", "--load", json.dumps(dataclasses.asdict(load)),
                                             "--workers", str(args.producers), "--index", str(i)), env, ws.dir)
            for i in range(args.producers)
        ]  # fmt: skip
        consumer = spawn("consumer", consumer_cmd(60.0), env, ws.dir)
        watcher = CommitWatcher(s, s.consumer_group, args.partitions)
        try:
            samples = sample_until_done(consumer, producers, watcher, n, interval_s=args.sample, timeout_s=args.timeout)
            for p in producers:
                p.wait(60)
                p.check()
            lake = lake_check(s)
        finally:
            watcher.close()
            consumer.kill()
            for p in producers:
                p.kill()
    load1 = load_avg()
    wall = samples[-1]["t_s"] if samples else 0.0
    ev = np.array([x["events"] for x in samples], dtype=np.float64)
    rss = np.array([x["rss_mb"] for x in samples], dtype=np.float64)
    first_commit = next((x for x in samples if x["events"] > 0), None)
    last = samples[-1] if samples else None
    rate = None
    if first_commit and last and last["t_s"] > first_commit["t_s"]:
        rate = (last["events"] - first_commit["events"]) / (last["t_s"] - first_commit["t_s"])
    rows, rss10, slope, growth = decile_trend(ev, rss, n)
    warm = (ev >= 0.1 * n) & (rss > 0)
    flat = growth is not None and abs(growth) < args.flat_tolerance * rss10
    peak = consumer.maxrss_mb or float(rss.max() if rss.size else 0)
    print()
    print(table(["events (decile)", "samples", "RSS min MB", "RSS median MB", "RSS max MB"], rows))
    print()
    print(f"peak RSS (ru_maxrss) {peak:.0f} MB (target < {args.limit_mb:.0f}); median RSS of the 2nd decile {rss10 or 0:.0f} MB, "
          f"max after warm-up {float(rss[warm].max()) if warm.any() else float('nan'):.0f} MB")  # fmt: skip
    if slope is not None:
        print(f"trend of the decile medians after warm-up: {slope:+.2f} MB per million events -> {growth:+.1f} MB "
              f"from 10% to 100% ({'flat' if flat else 'NOT flat'}, tolerance {args.flat_tolerance:.0%} of {rss10:.0f} MB)")  # fmt: skip
    if rate:
        print(f"throughput {rate:,.0f} events/s over {wall:.0f} s; the full {FULL_N:,} would take ~{FULL_N / rate / 60:.0f} min at this rate")
    print(f"lake: {lake['rows']:,} rows, {lake['distinct_offsets']:,} distinct offsets, {lake['files']} files")
    print(f"load average: {load0} -> {load1}")
    result = {
        "benchmark": "memory", "when": stamp(), "machine": info, "load": dataclasses.asdict(load),
        "events": n, "peak_rss_mb": peak, "rss_after_warmup_mb": rss10, "slope_mb_per_m_events": slope,
        "growth_mb": growth, "flat": flat, "events_per_s": rate, "wall_s": wall, "lake": lake,
        "load_before": load0, "load_after": load1, "samples": samples,
    }  # fmt: skip
    path = write_json("memory", result, args.json)
    if path:
        print(f"results: {path}")
    return 0 if lake["rows"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
