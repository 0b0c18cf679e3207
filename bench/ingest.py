"""Ingest throughput: ceiling, per-event baseline and sensorlake (1 and 2 consumer processes),
side by side in ONE run on the same machine and the same topic.

Run:  python bench/ingest.py [--events 1000000] [--baseline-events 10000]

1. A private topic (6 partitions) is filled with N synthetic events (50 sensors, ~20,000
   concurrent travelers at 10 Hz, the default type mix; ``bench._common.Load``) by two
   producer processes.
2. Every contender then reads that topic from the start with its own consumer group (and
   its own PostgreSQL databases, lake directory and Redis namespace):

   * ceiling: a bare consume loop that discards what it reads (``bench._workers ceiling``,
     tuned librdkafka fetch settings), variants: consume only; consume + msgspec decode
     into a typed struct (THE ceiling used in the ratios); consume + the product's
     validating ``decode_event``; and consume only with the sensorlake consumer's own
     fetch settings (librdkafka's 1 MB per partition fetch and 100k queued messages);
   * baseline: the per-event design sensorlake replaces (``bench._workers baseline``: a
     Redis GET + SET and a PostgreSQL upsert + COMMIT per event, no lake), on the first
     ``--baseline-events`` messages;
   * sensorlake: ``python -m app.cli consume`` as real processes, 1 and then 2 in a group.

How each figure is measured:

* events/s, sensorlake: the steady-state rate between the first and the last lake commit,
  observed as the group's committed Kafka offsets (the consumer commits them right after
  each lake commit), polled every ``--poll`` s: (N - events in the first commit) /
  (time of the last commit - time of the first). Start-up, group join and the idle wait
  before exit are excluded; "e2e incl. start-up" is N / (last commit - process spawn).
* events/s, ceiling and baseline: measured inside the child, first message to N-th.
* CPU s / M events: user + system CPU of the consumer process(es) over the same window
  (``/proc/<pid>/stat``; ``getrusage`` in the workers), per million events. The servers'
  CPU (PostgreSQL, Redis, Kafka) is not included: see "machine CPU busy".
* peak RSS: ``ru_maxrss`` of each consumer process over its whole life (``os.wait4``).
* exactly-once (sensorlake): lake rows = distinct (partition, offset) = stored next
  offsets = N, and the PostgreSQL summaries account for N observations.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import dataclasses
import json
import time

from bench._common import (
    CommitWatcher,
    Load,
    Workspace,
    consumer_cmd,
    fill_topic,
    lake_check,
    load_avg,
    machine_cpu_busy,
    machine_info,
    machine_line,
    pg_check,
    proc_cpu_s,
    proc_rss_mb,
    spawn,
    stamp,
    table,
    worker_cmd,
    write_json,
)

from ingest.consumer import FETCH_SETTINGS

# (label, --mode, librdkafka overrides): the msgspec one is THE ceiling of the ratios; the
# last shows what the sensorlake consumer's own fetch settings allow a bare loop
CEILINGS = [
    ("ceiling: consume only", "consume", {}),
    ("ceiling: consume + decode (msgspec)", "msgspec", {}),
    ("ceiling: consume + decode_event", "decode_event", {}),
    ("ceiling: consume only, consumer's fetch settings", "consume", FETCH_SETTINGS),
]  # fmt: skip


def run_worker(ws: Workspace, kind: str, label: str, settings, *args: str) -> dict:
    load0 = load_avg()
    kid = spawn(label, worker_cmd("bench._workers", kind, *args), settings.to_env(), ws.dir)
    try:
        kid.wait()
        kid.check()
    finally:
        kid.kill()
    r = kid.result()
    r.update(label=label, load_before=load0, load_after=load_avg(), peak_rss_mb=kid.maxrss_mb,
             cpu_total_s=kid.cpu_s)  # fmt: skip
    r["cpu_s_per_m"] = r["cpu_s"] / r["events"] * 1e6 if r["events"] else None
    return r


def run_sensorlake(ws: Workspace, n: int, processes: int, *, idle_s: float, poll_s: float, timeout_s: float) -> dict:
    """``processes`` real consumer processes on a fresh sink; watch their lake commits."""
    label = f"sensorlake, {processes} process{'es' if processes > 1 else ''}"
    s = ws.sink(f"sl{processes}")
    watcher = CommitWatcher(s, s.consumer_group, ws.partitions)
    load0, busy0 = load_avg(), machine_cpu_busy()
    t_spawn = time.monotonic()
    kids = [spawn(f"sensorlake{processes}-{i}", consumer_cmd(idle_s), s.to_env(), ws.dir) for i in range(processes)]
    samples: list[tuple[float, int, float]] = []  # (t, committed, cpu of all consumers)
    rss_peak_sampled = 0.0
    t_done = None
    try:
        deadline = t_spawn + timeout_s
        while True:
            exited = [k.poll() for k in kids]
            committed = watcher.committed()
            t = time.monotonic()
            cpu = 0.0
            for k in kids:
                if k.returncode is not None:
                    cpu += k.cpu_s or 0.0
                else:
                    cpu += proc_cpu_s(k.pid) or 0.0
                    rss_peak_sampled = max(rss_peak_sampled, proc_rss_mb(k.pid) or 0.0)
            if committed >= 0:
                samples.append((t, committed, cpu))
            if committed >= n and t_done is None:
                t_done = t
                busy1 = machine_cpu_busy()
                load1 = load_avg()
            if all(exited):
                break
            if t > deadline:
                raise TimeoutError(f"{label}: {committed} of {n} events committed after {timeout_s:.0f} s")
            time.sleep(poll_s)
        for k in kids:
            k.check()
    finally:
        for k in kids:
            k.kill()
        watcher.close()
    if t_done is None:
        raise RuntimeError(f"{label}: the consumers exited with {samples[-1][1] if samples else 0} of {n} committed")
    # steady state: from the first observed commit to the one that completes N
    first = next(x for x in samples if x[1] > 0)
    last = next(x for x in samples if x[1] >= n)
    if last[0] > first[0] and first[1] < n:
        rate = (n - first[1]) / (last[0] - first[0])
        cpu_per_m = (last[2] - first[2]) / (n - first[1]) * 1e6
        window = "steady state (first -> last lake commit)"
    else:  # one commit only (tiny N): fall back to spawn -> commit
        rate = n / (last[0] - t_spawn)
        cpu_per_m = last[2] / n * 1e6
        window = "spawn -> last lake commit (one commit only)"
    lake = lake_check(s)
    pg = pg_check(s)
    exactly_once = (
        lake["rows"] == n and lake["distinct_offsets"] == n and lake["stored_offsets"] == n
        and pg["observations"] + pg["late_dup_rejected"] == n
    )  # fmt: skip
    b0, b1 = busy0, busy1
    return {
        "label": label,
        "processes": processes,
        "events": n,
        "events_per_s": rate,
        "events_per_s_per_process": rate / processes,
        "e2e_events_per_s": n / (t_done - t_spawn),
        "seconds": last[0] - first[0],
        "window": window,
        "first_commit_events": first[1],
        "cpu_s_per_m": cpu_per_m,
        "cpu_total_s": sum(k.cpu_s or 0.0 for k in kids),
        "peak_rss_mb": max(k.maxrss_mb or 0.0 for k in kids),
        "peak_rss_mb_each": [k.maxrss_mb for k in kids],
        "machine_cpu_busy_pct": 100.0 * (b1[0] - b0[0]) / max(b1[1] - b0[1], 1.0),
        "lake": lake,
        "pg": pg,
        "exactly_once": exactly_once,
        "load_before": load0,
        "load_after": load1,
        "consumer_output": [k.stdout().strip() for k in kids],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ingest throughput: ceiling vs baseline vs sensorlake (see the module doc).")
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the topic (default 1,000,000)")
    ap.add_argument("--baseline-events", type=int, default=10_000, help="events the per-event baseline consumes (default 10,000)")
    ap.add_argument("--concurrent", type=int, default=20_000, help="concurrent travelers (default 20,000)")
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=2, help="producer processes filling the topic")
    ap.add_argument("--consumers", default="1,2", help="sensorlake runs: comma-separated process counts (default 1,2)")
    ap.add_argument("--until-idle", type=float, default=5.0, help="consumer --until-idle (s)")
    ap.add_argument("--poll", type=float, default=0.1, help="commit polling interval (s)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up on a run after this many seconds")
    ap.add_argument("--json", default=None, help="results file (default bench/results/ingest.json; '-' = none)")
    args = ap.parse_args(argv)
    n = args.events
    nb = min(args.baseline_events, n)
    load = Load(events=n, concurrent=args.concurrent, sensors=args.sensors, rate_hz=args.rate_hz)
    info = machine_info()
    print(f"ingest benchmark, {stamp()}")
    print(machine_line(info))
    print(f"load: {load.describe()}; {args.partitions} partitions")
    print(f"load average at start: {load_avg()}")
    results: dict = {"benchmark": "ingest", "when": stamp(), "machine": info, "load": dataclasses.asdict(load),
                     "partitions": args.partitions, "runs": []}  # fmt: skip
    with Workspace("ingest", partitions=args.partitions) as ws:
        print("filling the topic ...", flush=True)
        results["fill"] = fill_topic(ws.settings, load, workers=args.producers, workdir=ws.dir)
        runs = results["runs"]
        for i, (label, mode, conf) in enumerate(CEILINGS):
            print(f"running {label} ...", flush=True)
            s = dataclasses.replace(ws.settings, consumer_group=f"bench-ceiling-{i}-{ws.rid}")
            runs.append(run_worker(ws, "ceiling", label, s, "--mode", mode, "--events", str(n), "--conf", json.dumps(conf)))
            runs[-1]["processes"] = 1
        print(f"running the per-event baseline on {nb:,} events ...", flush=True)
        sb = ws.sink("baseline", catalog=False)
        runs.append(run_worker(ws, "baseline", "baseline: per event", sb, "--events", str(nb)))
        runs[-1]["processes"] = 1
        base_pg = pg_check(sb, "baseline_summary")
        runs[-1]["pg"] = base_pg
        runs[-1]["exactly_once"] = base_pg["observations"] + base_pg["late_dup_rejected"] == runs[-1]["events"]
        for procs in [int(x) for x in args.consumers.split(",") if x.strip()]:
            print(f"running sensorlake with {procs} consumer process(es) ...", flush=True)
            runs.append(run_sensorlake(ws, n, procs, idle_s=args.until_idle, poll_s=args.poll, timeout_s=args.timeout))

    ceiling = next(r for r in runs if r.get("mode") == "msgspec")["events_per_s"]
    base = next(r for r in runs if r["label"].startswith("baseline"))["events_per_s"]
    rows = []
    for r in runs:
        rate = r["events_per_s"]
        r["vs_ceiling"] = rate / ceiling if ceiling else None
        r["vs_baseline"] = rate / base if base else None
        rows.append([
            r["label"], r["events"], rate, r.get("events_per_s_per_process", rate),
            r.get("e2e_events_per_s"), r["cpu_s_per_m"], r["peak_rss_mb"],
            r["vs_ceiling"], r["vs_baseline"],
            {True: "yes", False: "NO"}.get(r.get("exactly_once"), "-"),
            f"{r['load_before']} -> {r['load_after']}",
        ])  # fmt: skip
    print()
    print(table(
        ["run", "events", "events/s", "per process", "e2e incl. start-up", "CPU s/M ev", "peak RSS MB",
         "x ceiling", "x baseline", "exactly-once", "load avg (1/5/15 min) before -> after"],
        rows, align="lrrrrrrrrrl",
    ))  # fmt: skip
    sl1 = next((r for r in runs if r.get("processes") == 1 and r["label"].startswith("sensorlake")), None)
    print()
    print(f"ceiling = consume + msgspec decode, {ceiling:,.0f} events/s; baseline = {base:,.0f} events/s on {nb:,} events")
    if sl1:
        print(
            f"sensorlake, 1 process: {sl1['events_per_s']:,.0f} events/s = {sl1['vs_ceiling']:.1%} of the ceiling "
            f"(target >= 60%), {sl1['vs_baseline']:.0f}x the baseline (target >= 100x); target 250,000 events/s"
        )
    for r in runs:
        if "machine_cpu_busy_pct" in r:
            print(f"{r['label']}: machine CPU busy {r['machine_cpu_busy_pct']:.0f}% during the run; "
                  f"lake {r['lake']['rows']:,} rows in {r['lake']['files']} files; {r['window']}")  # fmt: skip
    print(f"fill: {results['fill']['events_per_s']:,.0f} events/s with {args.producers} producer processes")
    path = write_json("ingest", results, args.json)
    if path:
        print(f"results: {path}")
    ok = all(r.get("exactly_once", True) for r in runs)
    if not ok:
        print("EXACTLY-ONCE CHECK FAILED (see the table)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
