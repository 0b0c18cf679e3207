"""Shared pieces of the benchmarks: a private workspace, the synthetic load, child processes
measured from outside, and table / JSON output.

Nothing here is timed by itself. Every benchmark

* runs against the local stack (``sensorlake stack up``) but in a **private workspace**: its
  own topic and DLQ topic, consumer groups, PostgreSQL databases (live + DuckLake catalog),
  lake data directory and Redis namespace, all removed at the end (the approach of the
  ``isolated`` fixture in ``tests/conftest.py``);
* measures consumers as **real processes** (``python -m app.cli consume``), reading their CPU
  time and RSS from ``/proc`` while they run and their ``rusage`` (CPU, peak RSS) when
  they exit (``os.wait4``), so no third-party package is needed (Linux only, like the stack);
* records the machine and its load average next to every figure: the machine may be
  shared, and a figure without the load it was measured under is not comparable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- machine and load
def load_avg() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and library versions, git commit."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    versions = {}
    for mod in ("duckdb", "pyarrow", "polars", "msgspec", "confluent_kafka", "psycopg", "redis", "numpy"):
        with contextlib.suppress(Exception):
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
    with contextlib.suppress(Exception):
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    if not commit:  # not a checkout (e.g. a `git archive` copy): say so, or what the caller says
        commit, dirty = os.environ.get("SENSORLAKE_BENCH_GIT", "no git checkout"), False
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "git": commit + ("+dirty" if dirty else ""),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, {info['os']}, "
        f"Python {info['python']}, duckdb {info['versions'].get('duckdb')}, "
        f"librdkafka {info['versions'].get('librdkafka')}, git {info['git']}"
    )


# --------------------------------------------------------------------------- /proc readings
def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float | None:
    """Resident set size of a live process, MB (None when it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * PAGE / 1e6


def machine_cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot (from /proc/stat)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return float(sum(vals) - idle), float(sum(vals))


# --------------------------------------------------------------------------- child processes
@dataclasses.dataclass
class Child:
    """A child process measured from outside: ``rusage`` at exit, output in temp files.

    ``cpu_s`` (user + system) and ``maxrss_mb`` come from ``os.wait4`` and cover the
    whole life of the process (start-up included).
    """

    label: str
    cmd: list[str]
    popen: subprocess.Popen
    out_path: Path
    err_path: Path
    started: float
    returncode: int | None = None
    cpu_s: float | None = None
    maxrss_mb: float | None = None
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> bool:
        """True when the process has exited (and reaps it, recording its rusage)."""
        if self.returncode is not None:
            return True
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._record(status, ru)
        return True

    def wait(self, timeout_s: float | None = None) -> int:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.label} still running after {timeout_s:.0f} s")
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def _record(self, status: int, ru: Any) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # keep Popen from waiting on a reaped pid
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.maxrss_mb = ru.ru_maxrss * 1024 / 1e6  # Linux: kB
        self.ended = time.monotonic()

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def terminate(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self.wait(10)

    def check(self) -> None:
        """Raise with the tail of stderr when the process failed."""
        if self.returncode not in (0, None):
            raise RuntimeError(f"{self.label} exited {self.returncode}:\n{self.stderr()[-3000:]}")

    def result(self) -> dict:
        """The last ``RESULT {json}`` line a bench worker printed."""
        for line in reversed(self.stdout().splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise RuntimeError(f"{self.label} printed no RESULT line:\n{self.stderr()[-3000:]}")


def spawn(label: str, cmd: Sequence[str], env: dict[str, str], workdir: Path) -> Child:
    """Start ``cmd`` in the repository with ``env`` added to this environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{label.replace(' ', '_')}-{uuid.uuid4().hex[:6]}"
    out_path, err_path = workdir / f"{tag}.out", workdir / f"{tag}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        p = subprocess.Popen(list(cmd), cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=err)
    return Child(label, list(cmd), p, out_path, err_path, time.monotonic())


def consumer_cmd(until_idle_s: float) -> list[str]:
    """The real sensorlake consumer process (the CLI, exactly as an operator runs it)."""
    return [sys.executable, "-m", "app.cli", "consume", "--until-idle", f"{until_idle_s:g}"]


def worker_cmd(module: str, *args: str) -> list[str]:
    """A bench worker module (``bench._workers``, ...) run as ``python -m``."""
    return [sys.executable, "-m", module, *args]


# --------------------------------------------------------------------------- services
# (also the test suite's: tests/conftest.py checks the stack and creates its private topics
# with these, so the benchmarks and the tests see the stack the same way)
def unreachable_services(settings: Any) -> list[str]:
    """One line per service of ``settings`` (Kafka, PostgreSQL, Redis) that does not answer
    a real request; empty when all three do."""
    import psycopg
    import redis
    from confluent_kafka.admin import AdminClient

    problems = []
    try:
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10)
    except Exception as exc:  # noqa: BLE001 - reported, whatever it is
        problems.append(f"kafka {settings.kafka_bootstrap}: {exc}")
    try:
        with psycopg.connect(settings.pg_dsn, connect_timeout=5) as c:
            c.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"postgres: {str(exc).splitlines()[0]}")
    try:
        r = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
        try:
            r.ping()
        finally:
            r.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"redis: {exc}")
    return problems


def create_topics(
    settings: Any, partitions: int, *, config: dict[str, str] | None = None,
    dlq_config: dict[str, str] | None = None, timeout_s: float = 30.0,
) -> None:  # fmt: skip
    """Create ``settings.topic`` with ``partitions`` and ``settings.dlq_topic`` with one (topic
    ``config`` / ``dlq_config``, e.g. ``{"max.message.bytes": "4000000"}``); return once both
    are visible and every partition of the topic has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(settings.topic, partitions, 1, config=config or {}),
         NewTopic(settings.dlq_topic, 1, 1, config=dlq_config or {})],
        operation_timeout=timeout_s,
    )  # fmt: skip
    for f in futures.values():
        f.result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        t = md.topics.get(settings.topic)
        if (t and len(t.partitions) == partitions and settings.dlq_topic in md.topics
                and all(pm.leader >= 0 for pm in t.partitions.values())):  # fmt: skip
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {settings.topic}, {settings.dlq_topic} not visible after {timeout_s:.0f} s")


# --------------------------------------------------------------------------- workspace
class Workspace:
    """A private topic plus any number of private *sinks* (live database, catalog database,
    lake directory, Redis namespace, consumer group), all removed by :meth:`close`.

    Args:
        partitions: partitions of the private topic.
        label: a short word in every name (``bench-<label>-<id>``), to spot leftovers.
        topic: create the topic (False for benchmarks that only need a lake).
    """

    def __init__(self, label: str, *, partitions: int = 6, topic: bool = True, **overrides: Any) -> None:
        from sensorlake.settings import Settings

        self.rid = uuid.uuid4().hex[:8]
        self.label = label
        self.dir = Path(tempfile.mkdtemp(prefix=f"sl-bench-{label}-"))
        self.base = Settings.from_env()
        self.partitions = partitions
        self._dbs: list[str] = []
        self._namespaces: list[str] = []
        self._topics: list[str] = []
        self._n = 0
        self.settings = Settings.from_env(
            topic=f"bench-{label}-{self.rid}",
            dlq_topic=f"bench-{label}-{self.rid}.dlq",
            topic_partitions=partitions,
            **overrides,
        )
        self._check_services()
        if topic:
            self._create_topics()

    # -- services
    def _check_services(self) -> None:
        problems = unreachable_services(self.base)
        if problems:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise SystemExit("local stack not reachable (run `sensorlake stack up`): " + "; ".join(problems))

    def _create_topics(self) -> None:
        s = self.settings
        self._topics += [s.topic, s.dlq_topic]
        create_topics(s, self.partitions)

    def sink(self, name: str, *, catalog: bool = True, **overrides: Any):
        """Settings for one contender: its own consumer group, live and catalog databases,
        lake directory and Redis namespace, on the workspace's topic. The catalog is
        initialised once here, before any consumer attaches."""
        import psycopg

        from sensorlake.settings import Settings

        self._n += 1
        tag = f"{self.rid}_{self._n}"
        live, cat = f"bench_live_{tag}", f"bench_lake_{tag}"
        ns = f"bench{tag}"
        s = Settings.from_env(
            topic=self.settings.topic,
            dlq_topic=self.settings.dlq_topic,
            topic_partitions=self.partitions,
            consumer_group=f"bench-{self.label}-{name}-{tag}",
            pg_database=live,
            pg_catalog_database=cat,
            data_path=str(self.dir / f"lake-{name}-{self._n}"),
            redis_namespace=ns,
            **overrides,
        )
        with psycopg.connect(self.base.pg_dsn, autocommit=True) as c:
            for db in (live, cat):
                c.execute(f'CREATE DATABASE "{db}"')
                self._dbs.append(db)
        self._namespaces.append(ns)
        if catalog:
            from lake.catalog import connect

            connect(s).close()
        return s

    def close(self) -> None:
        """Remove everything this workspace created (best effort, reports what failed)."""
        import psycopg
        import redis
        from confluent_kafka.admin import AdminClient

        errors = []
        if self._topics:
            try:
                admin = AdminClient({"bootstrap.servers": self.base.kafka_bootstrap})  # keep a reference:
                fs = admin.delete_topics(self._topics, operation_timeout=30)  # a collected client drops the request
                for topic, f in fs.items():
                    try:
                        f.result(timeout=30)
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"topic {topic}: {exc}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"topics: {exc}")
        if self._dbs:
            try:
                with psycopg.connect(self.base.pg_dsn, autocommit=True) as c:
                    for db in self._dbs:
                        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                errors.append(f"databases: {exc}")
        if self._namespaces:
            try:
                r = redis.Redis.from_url(self.base.redis_url)
                for ns in self._namespaces:
                    keys = list(r.scan_iter(match=f"{ns}:*", count=5000))
                    for i in range(0, len(keys), 5000):
                        r.delete(*keys[i : i + 5000])
                r.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(f"redis: {exc}")
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            print("warning: clean-up incomplete: " + "; ".join(errors), file=sys.stderr)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- synthetic load
@dataclasses.dataclass(frozen=True)
class Load:
    """Shape of a synthetic load: ``concurrent`` travelers on ``sensors`` sensors observed at
    ``rate_hz``, i.e. about ``concurrent x rate_hz`` events per second of event time, with the
    default type mix of :mod:`ingest.synthetic` (35% pedestrians, 15% bicycles, 35% cars,
    5% buses, 10% trucks) and Gaussian position noise ``jitter_ft``."""

    events: int
    concurrent: int = 20_000
    sensors: int = 50
    rate_hz: float = 10.0
    seed: int = 42
    jitter_ft: float = 0.3

    @property
    def duration_s(self) -> float:
        """Event-time span that holds ``events`` at ``concurrent x rate_hz`` events/s."""
        return max(self.events / (self.concurrent * self.rate_hz), 2.0 / self.rate_hz)

    def describe(self) -> str:
        return (
            f"{self.events:,} synthetic events: {self.sensors} sensors, ~{self.concurrent:,} concurrent "
            f"travelers at {self.rate_hz:g} Hz ({self.duration_s:.1f} s of event time), "
            f"type mix ped 35% / bike 15% / car 35% / bus 5% / truck 10%, jitter {self.jitter_ft:g} ft, "
            f"seed {self.seed}"
        )


def load_plans(load: Load, start_us: int | None = None, **plan_options: Any) -> list:
    """Traveler plans of :func:`ingest.synthetic.plan` with exactly ``load.events``
    observations in total.

    The number of travelers is chosen so that the events fill ``load.duration_s`` at about
    ``load.concurrent`` travelers at a time (visits are bounded: a traveler covers 100-600 ft
    at its type's speed, so short runs have every traveler on the road throughout and long
    runs have turnover). The excess is trimmed from the ends of the latest visits (each
    keeps at least 2 observations): deterministic for given arguments.
    """
    from ingest.synthetic import plan

    d = load.duration_s
    travelers = max(1, load.concurrent)
    plans = []
    for _ in range(6):
        plans = plan(
            sensors=load.sensors, travelers=travelers, rate_hz=load.rate_hz, duration_s=d,
            seed=load.seed, start_us=start_us, **plan_options,
        )  # fmt: skip
        total = sum(p.n_obs for p in plans)
        if total >= load.events:
            break
        travelers = max(travelers + 1, math.ceil(travelers * load.events / max(total, 1) * 1.03))
    total = sum(p.n_obs for p in plans)
    if total < load.events:
        raise RuntimeError(f"could not plan {load.events} events (got {total})")
    excess = total - load.events
    out = list(plans)
    order = sorted(range(len(out)), key=lambda i: (-out[i].last_us, i))
    for i in order:  # shorten the latest visits first
        if excess == 0:
            break
        take = min(excess, out[i].n_obs - 2)
        if take > 0:
            out[i] = dataclasses.replace(out[i], n_obs=out[i].n_obs - take)
            excess -= take
    if excess:  # only 2-observation visits left: drop whole travelers
        keep = []
        for p in reversed(out):
            if excess >= p.n_obs:
                excess -= p.n_obs
                continue
            keep.append(p)
        out = list(reversed(keep))
    if excess:
        raise RuntimeError("could not trim the plan to the exact event count")
    return out


def split_plans(plans: Sequence, workers: int, index: int) -> list:
    """The ``index``-th of ``workers`` disjoint subsets (a traveler stays in one subset, so
    its observations keep their order)."""
    return [p for k, p in enumerate(plans) if k % workers == index]


def fill_topic(
    settings: Any, load: Load, *, workers: int = 2, workdir: Path, quiet: bool = False
) -> dict[str, Any]:
    """Produce ``load`` into ``settings.topic`` at full speed with ``workers`` producer
    processes (``bench._workers produce``); returns events, seconds, events/s."""
    env = settings.to_env()
    t0 = time.monotonic()
    kids = [
        spawn(
            f"producer{i}",
            worker_cmd("bench._workers", "produce", "--load", json.dumps(dataclasses.asdict(load)),
                       "--workers", str(workers), "--index", str(i)),
            env, workdir,
        )  # fmt: skip
        for i in range(workers)
    ]
    try:
        for k in kids:
            k.wait()
            k.check()
    finally:
        for k in kids:
            k.kill()
    seconds = time.monotonic() - t0
    count = sum(k.result()["count"] for k in kids)
    if count != load.events:
        raise RuntimeError(f"produced {count} events, expected {load.events}")
    if not quiet:
        print(f"  filled {settings.topic}: {count:,} events in {seconds:.1f} s ({count / seconds:,.0f} events/s, {workers} producer processes)")
    return {"events": count, "seconds": seconds, "events_per_s": count / seconds, "workers": workers}


# --------------------------------------------------------------------------- Kafka progress
class CommitWatcher:
    """Reads a consumer group's committed offsets (the sensorlake consumer commits them to
    Kafka right after each lake commit, for lag monitoring), without joining the group."""

    def __init__(self, settings: Any, group: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._c = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._tps = [TopicPartition(settings.topic, p) for p in range(partitions)]

    def committed(self) -> int:
        """Sum of the committed next offsets over all partitions (= events committed,
        for a topic whose partitions start at offset 0)."""
        try:
            tps = self._c.committed(self._tps, timeout=5)
        except Exception:  # noqa: BLE001 - a slow coordinator answer: report "unknown"
            return -1
        return sum(tp.offset for tp in tps if tp.offset >= 0)

    def close(self) -> None:
        self._c.close()


# --------------------------------------------------------------------------- checks
def lake_check(settings: Any) -> dict[str, int]:
    """Rows, distinct (partition, offset) and the stored next offsets of the lake."""
    from lake.catalog import connect

    con = connect(settings, read_only=True)
    try:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM lake.movements"
        ).fetchone()
        stored = con.execute(
            "SELECT coalesce(sum(n), 0) FROM (SELECT max(next_offset) AS n FROM lake.ingest_offsets "
            "WHERE topic = ? GROUP BY kafka_partition)",  # the topic's offsets, whichever group wrote them
            [settings.topic],
        ).fetchone()[0]
        files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'movements')").fetchone()[0]
    finally:
        con.close()
    return {"rows": int(rows), "distinct_offsets": int(distinct), "stored_offsets": int(stored), "files": int(files)}


def pg_check(settings: Any, table: str = "traveler_summary") -> dict[str, int]:
    """Visits and summed observation counts of the live table."""
    import psycopg

    with psycopg.connect(settings.pg_dsn) as c:
        visits, obs, other = c.execute(
            f"SELECT count(*), coalesce(sum(observations), 0),"
            f" coalesce(sum(late_count + duplicate_count + rejected_count), 0) FROM {table}"
        ).fetchone()
    return {"visits": int(visits), "observations": int(obs), "late_dup_rejected": int(other)}


# --------------------------------------------------------------------------- output
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; ``align`` is one of l/r per column (default: first left)."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(vals: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(vals, widths, align, strict=True))

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_json(name: str, payload: dict, path: str | None) -> Path | None:
    """Write ``payload`` to ``path`` (default ``bench/results/<name>.json``; ``-`` = none)."""
    if path == "-":
        return None
    target = Path(path) if path else RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return target


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def percentiles(values: Any, qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q:g}": float("nan") for q in qs} | {"max": float("nan"), "n": 0}
    out = {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
    out["max"] = float(arr.max())
    out["n"] = int(arr.size)
    return out


@contextlib.contextmanager
def cleanup_children(children: list[Child]) -> Iterator[None]:
    """Kill any child still running when the block exits (error or Ctrl-C)."""
    try:
        yield
    finally:
        for c in children:
            c.kill()
