"""Profile the sensorlake consumer with py-spy and summarise where its wall time goes.

Run:  pip install py-spy && python bench/profile_consumer.py [--events 500000]

Fills a private topic with the ingest benchmark's load (50 sensors, ~20,000 concurrent
travelers, 10 Hz), starts ONE ``python -m app.cli consume`` process and attaches
``py-spy record --idle --format raw`` to it at once; sampling stops when all N events are
committed to the lake. ``--idle`` keeps the samples where the main thread waits (on
PostgreSQL, Redis, DuckDB, Kafka), so the shares below are shares of wall time; with
``--cpu`` py-spy drops the waiting samples and the shares are shares of CPU time.

Printed: throughput and CPU while profiled; wall time by stage (each sample goes to the
innermost frame that matches a stage rule, see ``STAGES``); the top functions by self
time (with the source line, which shows which C call a Python line is waiting in) and by
inclusive time. Start-up (imports, connecting) and the idle tail are excluded from the
shares and reported apart. The raw profile (flamegraph.pl / speedscope input) is kept
in ``bench/results/`` unless ``--out -``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench._common import (
    REPO,
    RESULTS,
    CommitWatcher,
    Load,
    Workspace,
    consumer_cmd,
    fill_topic,
    load_avg,
    machine_info,
    machine_line,
    proc_cpu_s,
    spawn,
    stamp,
    table,
    write_json,
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (stage, function-name regex, file regex): a sample goes to the innermost frame that
# matches; the order only breaks ties within one frame.
STAGES: list[tuple[str, str, str]] = [
    ("start-up: imports, connect, subscribe", r"(^|\.)(setup|_find_and_load)$|^<module>$", r""),
    ("shutdown: close", r"(^|\.)close$", r"ingest/consumer\.py"),
    # events.py minus its time conversions (those count where they are called from)
    ("decode + validate (sensorlake/events.py)", r"^(?!ts_from_us$|ts_to_us$)", r"sensorlake/events\.py"),
    ("kinematics (sensorlake/kinematics.py)", r"", r"sensorlake/kinematics\.py"),
    ("Redis MGET", r"get_many$", r""),
    ("state msgpack decode", r"decode_state$", r""),
    ("state msgpack encode", r"encode_state$", r""),
    ("Redis CAS (Lua script)", r"compare_and_set$", r""),
    ("PostgreSQL cache rebuild (fetch_latest)", r"fetch_latest$", r""),
    ("PostgreSQL COPY rows (upsert)", r"write_row$", r""),
    ("PostgreSQL upsert", r"(^|\.)upsert$", r"ingest/"),
    ("lake buffer append (per event)", r"_LakeBuffer\.(add|consumed)$", r""),
    ("lake: build Arrow table", r"_LakeBuffer\.table$", r""),
    ("lake commit (lake/writer.py)", r"", r"lake/writer\.py"),
    ("DLQ (ingest/dlq.py)", r"", r"ingest/dlq\.py"),
    ("per-key grouping + CAS bookkeeping (_apply_kinematics)", r"_apply_kinematics$", r""),
    ("per-message loop (_process)", r"_process$", r"ingest/consumer\.py"),
    ("retry wrapper (tenacity)", r"", r"tenacity/"),
    ("Kafka consume (librdkafka) + loop (run)", r"(^|\.)run$", r"ingest/consumer\.py"),
]


def parse_raw(path: Path) -> list[tuple[list[tuple[str, str, int | None]], int]]:
    """py-spy raw output: ``frame;frame;...;leaf count`` per line, root first."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for f in stack.split(";"):
            m = _FRAME.match(f)
            if m:
                frames.append((m["func"], m["file"], int(m["line"]) if m["line"] else None))
            else:
                frames.append((f, "", None))
        out.append((frames, int(count)))
    return out


def stage_of(frames: list[tuple[str, str, int | None]]) -> str:
    for func, file, _ in reversed(frames):
        for name, fre, pre in STAGES:
            if (not fre or re.search(fre, func)) and (not pre or re.search(pre, file)):
                return name
    leaf = frames[-1] if frames else ("?", "", None)
    return f"other: {leaf[0]} ({leaf[1]})"


def source_line(file: str, line: int | None) -> str:
    if not line:
        return ""
    for base in (REPO, *(Path(p) for p in sys.path if p)):
        p = base / file
        if p.is_file():
            try:
                return p.read_text(errors="replace").splitlines()[line - 1].strip()[:70]
            except (OSError, IndexError):
                return ""
    return ""


def summarise(samples, top: int) -> dict:
    total = sum(c for _, c in samples)
    stages: Counter = Counter()
    loop_samples = []
    for frames, c in samples:
        st = stage_of(frames)
        stages[st] += c
        if not st.startswith(("start-up", "shutdown")):
            loop_samples.append((frames, c))
    loop_total = sum(c for _, c in loop_samples) or 1
    self_t: Counter = Counter()
    incl: Counter = Counter()
    for frames, c in loop_samples:
        func, file, line = frames[-1]
        self_t[(func, file, line)] += c
        for key in {(f, fl) for f, fl, _ in frames}:
            incl[key] += c
    return {
        "samples": total,
        "loop_samples": loop_total,
        "stages": stages,
        "self": self_t.most_common(top),
        # frames in (nearly) every sample are the CLI's wrappers: leave them out
        "inclusive": [(k, v) for k, v in incl.most_common(top * 3) if v < 0.99 * loop_total][:top],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="py-spy profile of one sensorlake consumer (see the module doc).")
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--concurrent", type=int, default=20_000)
    ap.add_argument("--sensors", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="also sample native (C/C++) frames")
    ap.add_argument("--cpu", action="store_true", help="CPU only: leave out samples where the thread waits (no --idle)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="raw profile path (default bench/results/profile-consumer[-cpu].raw.txt; '-' = temp)")
    ap.add_argument("--json", default=None, help="summary file (default bench/results/profile[-cpu].json; '-' = none)")
    args = ap.parse_args(argv)
    suffix = "-cpu" if args.cpu else ""  # wall and CPU profiles are kept side by side
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("py-spy not found: pip install py-spy")
    n = args.events
    load = Load(events=n, concurrent=args.concurrent, sensors=args.sensors)
    info = machine_info()
    print(f"consumer profile, {stamp()}")
    print(machine_line(info))
    print(f"load: {load.describe()}; {args.partitions} partitions")
    load0 = load_avg()
    print(f"load average at start: {load0}")
    with Workspace("profile", partitions=args.partitions) as ws:
        raw = ws.dir / "profile.raw.txt" if args.out == "-" else Path(args.out or RESULTS / f"profile-consumer{suffix}.raw.txt")
        raw.parent.mkdir(parents=True, exist_ok=True)
        print("filling the topic ...", flush=True)
        fill_topic(ws.settings, load, workers=2, workdir=ws.dir)
        s = ws.sink("sl")
        watcher = CommitWatcher(s, s.consumer_group, args.partitions)
        consumer = spawn("consumer", consumer_cmd(5.0), s.to_env(), ws.dir)
        cmd = [spy, "record", "--pid", str(consumer.pid), "--rate", str(args.rate), "--format", "raw", "-o", str(raw)]
        if not args.cpu:
            cmd.append("--idle")
        if args.native:
            cmd.append("--native")
        spy_err = (ws.dir / "py-spy.err").open("wb")
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=spy_err)
        t0 = time.monotonic()
        first = None
        last = None
        try:
            while True:
                done = watcher.committed()
                t = time.monotonic()
                cpu = proc_cpu_s(consumer.pid)
                if done > 0 and first is None:
                    first = (t, done, cpu)
                if done >= n:
                    last = (t, done, cpu)
                    break
                if consumer.poll():
                    consumer.check()
                    raise RuntimeError(f"consumer exited with {done} of {n} committed")
                if t - t0 > 3600:
                    raise TimeoutError("profiling run took over an hour")
                time.sleep(0.1)
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            recorder.wait(120)
            consumer.wait(120)
            consumer.check()
        finally:
            if recorder.poll() is None:
                recorder.kill()
            consumer.kill()
            watcher.close()
            spy_err.close()
        if not raw.exists():
            raise SystemExit(f"py-spy wrote no profile: {(ws.dir / 'py-spy.err').read_text()[-2000:]}")
        samples = parse_raw(raw)
    load1 = load_avg()
    steady = first is not None and last is not None and last[0] > first[0] and first[1] < n
    if steady:  # first -> last lake commit, as in bench/ingest.py
        rate = (n - first[1]) / (last[0] - first[0])
        cpu_pct = 100 * (last[2] - first[2]) / (last[0] - first[0]) if last[2] and first[2] else None
    else:
        rate, cpu_pct = n / (last[0] - t0), None
    summ = summarise(samples, args.top)
    tot, loop = summ["samples"], summ["loop_samples"]
    print()
    print(f"profiled: {n:,} events, {rate:,.0f} events/s while sampled at {args.rate} Hz "
          f"(consumer CPU {cpu_pct or 0:.0f}% of a core), {tot:,} samples, {loop:,} in the consume loop")  # fmt: skip
    print()
    what = "CPU time (active samples only)" if args.cpu else "wall time (active and waiting samples)"
    print(f"{what} by stage (consume loop only; start-up and shutdown apart)")
    rows = []
    for name, c in summ["stages"].most_common():
        in_loop = not name.startswith(("start-up", "shutdown"))
        rows.append([name, c, f"{100 * c / loop:.1f}%" if in_loop else "-", f"{100 * c / tot:.1f}%"])
    print(table(["stage", "samples", "% of loop", "% of all"], rows))
    print()
    print(f"top {args.top} by self time (consume loop)")
    print(table(
        ["function", "file:line", "% loop", "source line"],
        [[f, f"{fl}:{ln}", f"{100 * c / loop:.1f}%", source_line(fl, ln)] for (f, fl, ln), c in summ["self"]],
        align="llrl",
    ))  # fmt: skip
    print()
    print(f"top {args.top} by inclusive time (consume loop)")
    incl = [[f, fl, f"{100 * c / loop:.1f}%"] for (f, fl), c in summ["inclusive"]]
    print(table(["function", "file", "% loop"], incl, align="llr"))
    print(f"\nload average: {load0} -> {load1}")
    if args.out != "-":
        print(f"raw profile: {raw}")
    result = {
        "benchmark": "profile", "when": stamp(), "machine": info, "events": n, "events_per_s": rate,
        "consumer_cpu_pct": cpu_pct, "mode": "cpu" if args.cpu else "wall", "samples": tot, "loop_samples": loop, "rate_hz": args.rate,
        "stages": {k: v for k, v in summ["stages"].most_common()},
        "self": [{"function": f, "file": fl, "line": ln, "samples": c} for (f, fl, ln), c in summ["self"]],
        "inclusive": [{"function": f, "file": fl, "samples": c} for (f, fl), c in summ["inclusive"]],
        "load_before": load0, "load_after": load1,
    }  # fmt: skip
    path = write_json(f"profile{suffix}", result, args.json)
    if path:
        print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
