"""The local stack without Docker: Kafka, PostgreSQL and Redis on loopback ports.

* **Kafka**: an Apache Kafka broker (KRaft, one node in combined broker+controller mode),
  its jars assembled once from Maven Central by ``mvn dependency:copy-dependencies`` on
  ``stack/pom.xml`` into ``<state_dir>/kafka/libs``, started with ``java ... kafka.Kafka``.
* **PostgreSQL**: the Debian package's server (``/usr/lib/postgresql/<N>/bin``), a cluster
  of its own in ``<state_dir>/pg/data``, run as the ``postgres`` OS user when we are root.
* **Redis**: the Debian package's ``redis-server``, daemonized, files in ``<state_dir>/redis``.

Everything is driven by a :class:`~sensorlake.settings.Settings` (``host``, the ports,
``state_dir``, topic names, ...). Nothing happens at import time. ``up`` is idempotent:
what already runs is left alone; ``down`` is fine when nothing runs. Missing Debian packages
(``redis-server``, ``postgresql``, ``maven``, a JRE) are installed with ``apt-get`` when we are
root, and only when missing.

Layout under ``state_dir``::

    redis/   redis.pid  redis.log  dump.rdb
    pg/      data/ (PGDATA)  run/ (unix socket)  postgresql.log
    kafka/   libs/ (jars)  data/ (log.dirs)  logs/server.log  logs/kafka.out
             server.properties  log4j2.properties  cluster.id  kafka.pid

Every start waits for the service to answer (a PING, a SQL query, a Kafka metadata request
in a bounded retry loop, never a fixed sleep) and raises
:class:`~sensorlake.errors.ServiceError` with a one-line message naming the log file.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import string
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from sensorlake.errors import ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from sensorlake.settings import Settings

log = logging.getLogger(__name__)

#: Kafka version the broker is assembled from (keep in step with ``stack/pom.xml``).
KAFKA_VERSION = "4.1.1"
#: The services, in the order ``status`` reports them and ``down`` stops them.
SERVICES = ("kafka", "postgresql", "redis")
#: Directory holding ``pom.xml`` and the config templates (a source checkout is needed).
STACK_DIR = Path(__file__).resolve().parent.parent / "stack"

KAFKA_START_TIMEOUT_S = 120.0  # JVM start + KRaft election + broker registration
KAFKA_STOP_TIMEOUT_S = 30.0  # SIGTERM (controlled shutdown) before SIGKILL
PG_START_TIMEOUT_S = 60
REDIS_START_TIMEOUT_S = 15.0
MVN_TIMEOUT_S = 900
DLQ_PARTITIONS = 1


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """Health of one service of the stack.

    Attributes:
        name: ``kafka``, ``postgresql`` or ``redis``.
        endpoint: where clients connect (never contains a password).
        healthy: True when the service answered a real request (Kafka: metadata with the
            configured topics present; PostgreSQL: a query in both databases as the app
            user; Redis: PING).
        detail: one line: version, pid, topics, or the error.
    """

    name: str
    endpoint: str
    healthy: bool
    detail: str = ""


# ------------------------------------------------------------------------------ public API


def up(settings: Settings, console: Console | None = None) -> None:
    """Start Kafka, PostgreSQL and Redis (whatever is not running yet) and wait for health.

    Idempotent: a service already answering is left alone; the Kafka jars are assembled and
    the storage formatted only once; role, databases and topics are created only if missing.
    The Kafka JVM is launched first and boots while PostgreSQL and Redis start.

    Args:
        settings: ports, host, state_dir, topic names and partitions, Kafka heap (MB).
        console: a rich console for progress lines; None prints nothing (logging only).

    Raises:
        ServiceError: a package could not be installed, the jars could not be assembled,
            or a service did not become healthy within its bound (KAFKA_START_TIMEOUT_S,
            PG_START_TIMEOUT_S, REDIS_START_TIMEOUT_S seconds); the message names the log.
    """
    t0 = time.monotonic()
    _say(console, f"[bold]sensorlake stack up[/] (state in {_root(settings)})")
    kafka_launch = _kafka_launch(settings, console)
    _start_redis(settings, console)
    _start_postgres(settings, console)
    _kafka_wait_ready(settings, console, kafka_launch)
    _kafka_ensure_topics(settings, console)
    elapsed = time.monotonic() - t0
    log.info("stack up in %.1f s", elapsed)
    _say(console, f"[green]stack up[/] in {elapsed:.1f} s")


def down(settings: Settings) -> None:
    """Stop Kafka, PostgreSQL and Redis if they run (Kafka first: it has the most clients).

    Kafka gets SIGTERM and KAFKA_STOP_TIMEOUT_S seconds for a controlled shutdown, then
    SIGKILL; PostgreSQL ``pg_ctl stop -m fast``; Redis ``SHUTDOWN``. Data stays in
    ``state_dir``. Fine when already down.

    Raises:
        ServiceError: a service could not be stopped (all three are tried first).
    """
    errors: list[str] = []
    for name in SERVICES:
        try:
            stop_service(settings, name)
        except ServiceError as exc:
            errors.append(str(exc))
    if errors:
        raise ServiceError("; ".join(errors))


def status(settings: Settings) -> list[ServiceStatus]:
    """Probe each service once (a few seconds at most each); never raises for a down one.

    Returns:
        One :class:`ServiceStatus` per service, in the order of :data:`SERVICES`.
    """
    return [_STATUS[name](settings) for name in SERVICES]


def start_service(settings: Settings, name: str, console: Console | None = None) -> None:
    """Start one service (``kafka``, ``postgresql`` or ``redis``) and wait until healthy.

    Raises:
        ServiceError: as :func:`up`; ValueError for an unknown name.
    """
    _check_name(name)
    if name == "kafka":
        launched = _kafka_launch(settings, console)  # None: already running
        _kafka_wait_ready(settings, console, launched)
        _kafka_ensure_topics(settings, console)
    elif name == "postgresql":
        _start_postgres(settings, console)
    else:
        _start_redis(settings, console)


def stop_service(settings: Settings, name: str, *, hard: bool = False) -> None:
    """Stop one service; fine if it is not running.

    Args:
        name: ``kafka``, ``postgresql`` or ``redis``.
        hard: simulate a crash instead of a clean stop: Kafka and Redis get SIGKILL,
            PostgreSQL ``pg_ctl stop -m immediate`` (crash recovery on next start).

    Raises:
        ServiceError: the service is still running after the bound. ValueError: bad name.
    """
    _check_name(name)
    {"kafka": _stop_kafka, "postgresql": _stop_postgres, "redis": _stop_redis}[name](settings, hard=hard)


def restart_service(
    settings: Settings, name: str, *, hard: bool = False, console: Console | None = None
) -> None:
    """Stop (cleanly, or crash-like with ``hard=True``) then start one service and wait.

    Raises:
        ServiceError: see :func:`stop_service` and :func:`start_service`.
    """
    stop_service(settings, name, hard=hard)
    start_service(settings, name, console)


def restart_kafka(settings: Settings, *, hard: bool = False) -> None:
    """Restart the Kafka broker (``hard=True``: SIGKILL). Returns once it serves metadata."""
    restart_service(settings, "kafka", hard=hard)


def restart_postgres(settings: Settings, *, hard: bool = False) -> None:
    """Restart PostgreSQL (``hard=True``: immediate stop, crash recovery on start)."""
    restart_service(settings, "postgresql", hard=hard)


def restart_redis(settings: Settings, *, hard: bool = False) -> None:
    """Restart Redis (``hard=True``: SIGKILL, so nothing is saved since the last snapshot)."""
    restart_service(settings, "redis", hard=hard)


def kafka_log_path(settings: Settings) -> Path:
    """The broker's main log file (``<state_dir>/kafka/logs/server.log``)."""
    return _paths(settings).kafka_logs / "server.log"


# ------------------------------------------------------------------------------ paths & util


@dataclasses.dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_pid(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def pg_dir(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_run(self) -> Path:
        return self.pg_dir / "run"

    @property
    def pg_log(self) -> Path:
        return self.pg_dir / "postgresql.log"

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_logs(self) -> Path:
        return self.kafka_dir / "logs"

    @property
    def kafka_out(self) -> Path:
        return self.kafka_logs / "kafka.out"

    @property
    def kafka_props(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.kafka_dir / "log4j2.properties"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def kafka_cluster_id(self) -> Path:
        return self.kafka_dir / "cluster.id"


def _root(settings: Settings) -> Path:
    return Path(settings.state_dir).expanduser().resolve()


def _paths(settings: Settings) -> _Paths:
    return _Paths(_root(settings))


def _say(console: Console | None, msg: str) -> None:
    if console is not None:
        console.print(msg)


def _check_name(name: str) -> None:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICES)}")


def _one_line(text: str, limit: int = 240) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tail(path: Path, pattern: Callable[[str], bool] | None = None) -> str:
    """Last (matching) line of a log file, for error messages; '' if none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    if pattern is not None:
        lines = [ln for ln in lines if pattern(ln)]
    return _one_line(lines[-1]) if lines else ""


def _port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _is_root() -> bool:
    return os.geteuid() == 0


_apt_updated = False


def _apt_install(package: str) -> None:
    """Install one Debian package (root only); runs ``apt-get update`` once per process."""
    global _apt_updated
    if not _is_root():
        raise ServiceError(f"{package} is not installed; run: sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("installing Debian package %s", package)
    try:
        if not _apt_updated:
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=600)
            _apt_updated = True
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            check=True,
            capture_output=True,
            env=env,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        out = getattr(exc, "stderr", b"") or b""
        raise ServiceError(
            f"apt-get install {package} failed: {_one_line(out.decode(errors='replace')) or exc}"
        ) from None


def _ensure_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        _apt_install(package)
        path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} not found on PATH even after installing {package}")
    return path


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and its command line contains ``marker``."""
    if pid is None or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):  # reap it if it happens to be our child
            os.waitpid(pid, os.WNOHANG)
        return False
    return marker is None or marker in cmdline


def _wait_gone(pid: int, marker: str | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid, marker)


def _kill(pid: int, marker: str | None, *, hard: bool, grace_s: float, what: str) -> None:
    """SIGTERM (or SIGKILL if hard), wait ``grace_s`` s, then SIGKILL and wait 10 s more."""
    sigs = [signal.SIGKILL] if hard else [signal.SIGTERM, signal.SIGKILL]
    for sig in sigs:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, marker, grace_s if sig == signal.SIGTERM else 10.0):
            return
        log.warning("%s (pid %d) still running after %s", what, pid, sig.name)
    raise ServiceError(f"{what} (pid {pid}) does not stop, even after SIGKILL")


# ------------------------------------------------------------------------------ Redis


def _redis_client(settings: Settings, timeout_s: float = 2.0) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no client-side retries: a probe must answer "down" at once (redis-py retries
    # connection errors with backoff by default, ~4 s on a closed port)
    return redis.Redis(
        host=settings.host,
        port=settings.redis_port,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _redis_info(settings: Settings) -> dict[str, Any] | None:
    """INFO server of a Redis answering PING, or None."""
    import redis

    client = _redis_client(settings)
    try:
        client.ping()
        return client.info("server")
    except redis.RedisError:
        return None
    finally:
        client.close()


def _redis_dir(settings: Settings) -> str | None:
    """Working directory of the Redis answering on our port (tells ours from another), or None."""
    import redis

    client = _redis_client(settings)
    try:
        return str(client.config_get("dir").get("dir")) or None
    except redis.RedisError:
        return None
    finally:
        client.close()


def _start_redis(settings: Settings, console: Console | None) -> None:
    p = _paths(settings)
    endpoint = f"{settings.host}:{settings.redis_port}"
    if _redis_info(settings) is not None:
        theirs = _redis_dir(settings)
        if theirs is not None and Path(theirs) != p.redis_dir:
            raise ServiceError(
                f"redis: port {endpoint} is taken by another Redis (dir {theirs}, not {p.redis_dir})"
            )
        log.info("redis already answers on %s", endpoint)
        _say(console, f"  redis       {endpoint} already running")
        return
    if _port_open(settings.host, settings.redis_port):
        raise ServiceError(f"redis: port {endpoint} is taken by something that does not answer PING")
    binary = _ensure_binary("redis-server", "redis-server")
    p.redis_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    cmd = [
        binary,
        "--daemonize", "yes",
        "--bind", settings.host,
        "--port", str(settings.redis_port),
        "--dir", str(p.redis_dir),
        "--pidfile", str(p.redis_pid),
        "--logfile", str(p.redis_log),
        "--appendonly", "no",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise ServiceError(
            f"redis-server failed to start (exit {res.returncode}): "
            f"{_one_line(res.stderr + res.stdout) or _tail(p.redis_log)}; see {p.redis_log}"
        )
    def answers() -> None:
        if _redis_info(settings) is None:
            raise _NotReady

    try:
        _until_ready(answers, timeout_s=REDIS_START_TIMEOUT_S, every_s=0.1)
    except _NotReady:
        raise ServiceError(
            f"redis did not answer PING on {endpoint} within {REDIS_START_TIMEOUT_S:.0f} s; see {p.redis_log}"
        ) from None
    dt = time.monotonic() - t0
    log.info("redis started on %s in %.1f s", endpoint, dt)
    _say(console, f"  redis       {endpoint} started in {dt:.1f} s")


def _stop_redis(settings: Settings, *, hard: bool = False) -> None:
    import redis

    p = _paths(settings)
    pid = _read_pid(p.redis_pid)
    theirs = _redis_dir(settings)
    if theirs is not None and Path(theirs) != p.redis_dir:
        log.warning("the Redis on %s:%d is not ours (dir %s): left running",
                    settings.host, settings.redis_port, theirs)  # fmt: skip
        return
    if hard and _pid_alive(pid, "redis-server"):
        assert pid is not None
        _kill(pid, "redis-server", hard=True, grace_s=0, what="redis")
    else:
        client = _redis_client(settings)
        try:
            client.shutdown()  # returns when the connection drops, i.e. the server exited
        except redis.ConnectionError:
            pass  # not running
        except redis.RedisError as exc:
            if _pid_alive(pid, "redis-server"):
                assert pid is not None
                log.warning("redis SHUTDOWN failed (%s); sending SIGTERM", exc)
                _kill(pid, "redis-server", hard=False, grace_s=10.0, what="redis")
        finally:
            client.close()
        if pid is not None and not _wait_gone(pid, "redis-server", 10.0):
            raise ServiceError(f"redis (pid {pid}) still running after SHUTDOWN; see {p.redis_log}")
    p.redis_pid.unlink(missing_ok=True)
    log.info("redis stopped")


def _status_redis(settings: Settings) -> ServiceStatus:
    import redis

    endpoint = settings.redis_url
    client = _redis_client(settings)
    try:
        client.ping()
        info = client.info()
        detail = (
            f"redis {info.get('redis_version')}, pid {info.get('process_id')}, "
            f"{client.dbsize()} keys, {info.get('used_memory_human')} used"
        )
        return ServiceStatus("redis", endpoint, True, detail)
    except redis.RedisError as exc:
        return ServiceStatus("redis", endpoint, False, f"not answering: {_one_line(str(exc))}")
    finally:
        client.close()


# ------------------------------------------------------------------------------ PostgreSQL


def _pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<N>/bin`` with ``pg_ctl``; installs postgresql if none."""

    def find() -> Path | None:
        found = sorted(
            (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
            key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
        )
        return found[-1] if found else None

    bindir = find()
    if bindir is None:
        _apt_install("postgresql")
        bindir = find()
    if bindir is None:
        raise ServiceError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    return bindir


def _as_postgres(cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` to run as the postgres OS user when we are root (postgres refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if _is_root() else cmd


def _pg_owner() -> tuple[int, int] | None:
    if not _is_root():
        return None
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("OS user 'postgres' does not exist; install the postgresql package") from None
    return pw.pw_uid, pw.pw_gid


def _make_traversable(path: Path) -> None:
    """Give 'others' the execute (search) bit on every ancestor of ``path`` that lacks it.

    Needed when we are root and state_dir sits under /root (mode 0700): the postgres user
    must reach its data and socket directories. Directory listings stay private.
    """
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("chmod o+x %s so the postgres user can reach %s", parent, path)
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _write_owned(path: Path, text: str, owner: tuple[int, int] | None, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, *owner)


def _pg_running(bindir: Path, p: _Paths) -> bool:
    if not (p.pg_data / "PG_VERSION").exists():
        return False
    res = subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "status", "-D", str(p.pg_data)]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return res.returncode == 0


def _pg_config_text(settings: Settings, p: _Paths) -> str:
    return (
        "# written by app/stack.py on every `sensorlake stack up`; included from postgresql.conf\n"
        f"listen_addresses = '{settings.host}'\n"
        f"port = {settings.pg_port}\n"
        f"unix_socket_directories = '{p.pg_run}'\n"
        "max_connections = 200\n"
        "shared_buffers = 128MB\n"
        "password_encryption = 'scram-sha-256'\n"
        "logging_collector = off\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
        "log_min_messages = warning\n"
        "timezone = 'UTC'\n"
        "log_timezone = 'UTC'\n"
    )


def _pg_hba_text(settings: Settings) -> str:
    lines = [
        "# written by app/stack.py: superuser over the private unix socket, passwords over TCP",
        "local   all   all                  trust",
        "host    all   all   127.0.0.1/32   scram-sha-256",
        "host    all   all   ::1/128        scram-sha-256",
    ]
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        lines.append("host    all   all   samenet        scram-sha-256")
    return "\n".join(lines) + "\n"


def _start_postgres(settings: Settings, console: Console | None) -> None:
    p = _paths(settings)
    endpoint = f"{settings.host}:{settings.pg_port}"
    bindir = _pg_bindir()
    owner = _pg_owner()
    t0 = time.monotonic()

    p.pg_dir.mkdir(parents=True, exist_ok=True)
    p.pg_run.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        _make_traversable(p.pg_dir)
        for d in (p.pg_dir, p.pg_run):
            os.chown(d, *owner)

    if not (p.pg_data / "PG_VERSION").exists():
        if p.pg_data.exists():  # a half-done initdb: start over
            shutil.rmtree(p.pg_data)
        log.info("initdb %s", p.pg_data)
        res = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(p.pg_data),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if res.returncode != 0:
            raise ServiceError(f"initdb {p.pg_data} failed: {_one_line(res.stderr + res.stdout)}")
        _say(console, f"  postgresql  initialised {p.pg_data}")

    # our settings live in an included file rewritten on every up; pg_hba too
    _write_owned(p.pg_data / "sensorlake.conf", _pg_config_text(settings, p), owner)
    _write_owned(p.pg_data / "pg_hba.conf", _pg_hba_text(settings), owner)
    main_conf = p.pg_data / "postgresql.conf"
    include = "include_if_exists = 'sensorlake.conf'"
    if include not in main_conf.read_text():
        with main_conf.open("a") as fh:
            fh.write(f"\n# sensorlake local stack\n{include}\n")

    if _pg_running(bindir, p):
        log.info("postgresql already running (%s)", p.pg_data)
        started = False
    else:
        if _port_open(settings.host, settings.pg_port):
            raise ServiceError(f"postgresql: port {endpoint} is taken by another process (not {p.pg_data})")
        res = subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(p.pg_data),
                    "-l",
                    str(p.pg_log),
                    "-w",
                    "-t",
                    str(PG_START_TIMEOUT_S),
                    "-s",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=PG_START_TIMEOUT_S + 30,
        )
        if res.returncode != 0:
            why = _tail(p.pg_log, lambda ln: "FATAL" in ln or "ERROR" in ln) or _one_line(res.stderr)
            raise ServiceError(f"postgresql did not start on {endpoint}: {why}; see {p.pg_log}")
        started = True

    _pg_provision(settings, p)
    _pg_check(settings)
    dt = time.monotonic() - t0
    log.info("postgresql %s on %s in %.1f s", "started" if started else "checked", endpoint, dt)
    _say(console, f"  postgresql  {endpoint} {'started' if started else 'already running'} in {dt:.1f} s")


def _pg_provision(settings: Settings, p: _Paths) -> None:
    """Create/alter the app role (LOGIN CREATEDB, password) and both databases, if missing."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(
            host=str(p.pg_run),
            port=settings.pg_port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            role = settings.pg_user
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} WITH LOGIN CREATEDB PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(role), sql.Literal(settings.pg_password)
                )
            )
            for db in dict.fromkeys((settings.pg_database, settings.pg_catalog_database)):
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                            sql.Identifier(db), sql.Identifier(role)
                        )
                    )
                    log.info("created database %s owned by %s", db, role)
    except psycopg.Error as exc:
        raise ServiceError(
            f"postgresql: could not create role/databases: {_one_line(str(exc))}; see {p.pg_log}"
        ) from None


def _pg_check(settings: Settings) -> str:
    """Query both databases over TCP as the app user; returns the server version."""
    import psycopg

    version = ""
    for dsn in (settings.pg_dsn, settings.pg_catalog_dsn):
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                version = str(row[0]).split()[0] if row else ""  # "15.18 (Debian ...)" -> "15.18"
        except psycopg.Error as exc:
            raise ServiceError(
                f"postgresql: query as {settings.pg_user} failed: {_one_line(str(exc))}; "
                f"see {_paths(settings).pg_log}"
            ) from None
    return version


def _stop_postgres(settings: Settings, *, hard: bool = False) -> None:
    p = _paths(settings)
    if not (p.pg_data / "PG_VERSION").exists():
        return
    bindir = _pg_bindir()
    if not _pg_running(bindir, p):
        return
    mode = "immediate" if hard else "fast"
    res = subprocess.run(
        _as_postgres(
            [str(bindir / "pg_ctl"), "stop", "-D", str(p.pg_data), "-m", mode, "-w", "-t", "60", "-s"]
        ),
        capture_output=True,
        text=True,
        timeout=90,
    )
    if res.returncode != 0 and _pg_running(bindir, p):
        raise ServiceError(f"postgresql did not stop: {_one_line(res.stderr)}; see {p.pg_log}")
    log.info("postgresql stopped (-m %s)", mode)


def _status_postgres(settings: Settings) -> ServiceStatus:
    endpoint = (
        f"postgresql://{settings.pg_user}@{settings.host}:{settings.pg_port}/"
        f"{settings.pg_database} (+ {settings.pg_catalog_database})"
    )
    if not _port_open(settings.host, settings.pg_port):
        return ServiceStatus("postgresql", endpoint, False, "not running (port closed)")
    try:
        version = _pg_check(settings)
    except ServiceError as exc:
        return ServiceStatus("postgresql", endpoint, False, str(exc))
    return ServiceStatus(
        "postgresql",
        endpoint,
        True,
        f"PostgreSQL {version}, databases {settings.pg_database}, {settings.pg_catalog_database}",
    )


# ------------------------------------------------------------------------------ Kafka


class _NotReady(Exception):
    """Internal: a readiness probe failed; retry."""


def _until_ready(probe: Callable[[], object], *, timeout_s: float, every_s: float) -> None:
    """Call ``probe`` every ``every_s`` seconds until it returns without raising :class:`_NotReady`;
    after ``timeout_s`` seconds re-raise its last ``_NotReady``. Other exceptions propagate at once."""
    for attempt in Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        retry=retry_if_exception_type(_NotReady),
        reraise=True,
    ):
        with attempt:
            probe()


def _stack_file(name: str) -> Path:
    path = STACK_DIR / name
    if not path.exists():
        raise ServiceError(f"{path} not found: the local stack needs a source checkout (pip install -e .)")
    return path


def _kafka_conf(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": logging.getLogger(f"{__name__}.librdkafka"),
        "log.connection.close": False,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
    }


def _kafka_metadata(settings: Settings, timeout_s: float) -> Any:
    """ClusterMetadata from the broker; raises _NotReady if the port is closed or no answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    if not _port_open(settings.host, settings.kafka_port):
        raise _NotReady("port closed")
    admin = AdminClient(_kafka_conf(settings))
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise _NotReady(str(exc)) from None
    if not md.brokers:
        raise _NotReady("no broker registered yet")
    return md


def _kafka_jars(settings: Settings, console: Console | None) -> Path:
    """Assemble the broker's jars into ``state_dir/kafka/libs`` once (per pom.xml content)."""
    p = _paths(settings)
    pom = _stack_file("pom.xml")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    marker = p.kafka_libs / ".pom-sha256"
    if marker.exists() and marker.read_text().strip() == digest:
        return p.kafka_libs
    mvn = _ensure_binary("mvn", "maven")
    tmp = p.kafka_dir / "libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    p.kafka_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    _say(console, f"  kafka       assembling Kafka {KAFKA_VERSION} jars with Maven (once)...")
    try:
        res = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            timeout=MVN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"mvn did not finish within {MVN_TIMEOUT_S} s assembling the Kafka jars") from None
    if res.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if "ERROR" in ln]
        raise ServiceError(
            f"mvn could not assemble the Kafka jars (exit {res.returncode}): "
            f"{_one_line(errors[0] if errors else res.stdout + res.stderr)}"
        )
    (tmp / ".pom-sha256").write_text(digest + "\n")
    shutil.rmtree(p.kafka_libs, ignore_errors=True)
    tmp.rename(p.kafka_libs)
    n = len(list(p.kafka_libs.glob("*.jar")))
    dt = time.monotonic() - t0
    log.info("assembled %d Kafka jars in %s in %.1f s", n, p.kafka_libs, dt)
    _say(console, f"  kafka       {n} jars in {dt:.1f} s")
    return p.kafka_libs


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java_cmd(java: str, settings: Settings, p: _Paths, main: list[str]) -> list[str]:
    return [
        java,
        f"-Xmx{settings.kafka_heap_mb}m",
        f"-Xms{settings.kafka_heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={p.kafka_logs}",
        f"-Dlog4j2.configurationFile={p.kafka_log4j}",
        "-cp",
        f"{p.kafka_libs}/*",
        *main,
    ]


def _kafka_pids(p: _Paths) -> list[int]:
    """Pids of brokers started with our server.properties (pid file first, then /proc)."""
    marker = str(p.kafka_props)
    pid = _read_pid(p.kafka_pid)
    if _pid_alive(pid, marker):
        return [pid]  # type: ignore[list-item]
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and _pid_alive(int(entry.name), "kafka.Kafka")
            and _pid_alive(int(entry.name), marker)
        ):
            found.append(int(entry.name))
    return found


@dataclasses.dataclass(frozen=True)
class _Launch:
    """A broker we just launched: when, and where its logs stood (bytes) before it started."""

    pid: int
    started_at: float  # time.monotonic()
    log_offset: int
    out_offset: int


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _first_error(path: Path, offset: int) -> str:
    """First ERROR of a Kafka log written after ``offset``, with the exception line under it."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read(4_000_000).decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if "] ERROR " in line or line.startswith(("Error", "Exception")):
            msg = line.split("] ERROR ", 1)[-1]
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if "Exception" in nxt or "Error" in nxt:
                msg = f"{msg}: {nxt}"
            return _one_line(msg, limit=400)
    return ""


def _kafka_launch(settings: Settings, console: Console | None) -> _Launch | None:
    """Prepare (jars, config, storage format) and start the broker JVM without waiting.

    Returns:
        What was launched, or None if our broker was already running.
    """
    p = _paths(settings)
    tmpl = string.Template(_stack_file("server.properties.tmpl").read_text())
    props = tmpl.substitute(
        host=settings.host,
        kafka_port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        data_dir=p.kafka_data,
        num_partitions=settings.topic_partitions,
    )
    if _kafka_pids(p):
        log.info("kafka already running (pid file %s)", p.kafka_pid)
        if p.kafka_props.exists() and p.kafka_props.read_text() != props:
            log.warning("server.properties changed; restart Kafka to apply (sensorlake stack down/up)")
        return None
    if _port_open(settings.host, settings.kafka_port):
        raise ServiceError(
            f"kafka: port {settings.kafka_bootstrap} is taken by a process this stack did not start"
        )
    _kafka_jars(settings, console)  # only while no broker runs: never swap jars under a JVM
    for d in (p.kafka_data, p.kafka_logs):
        d.mkdir(parents=True, exist_ok=True)
    p.kafka_props.write_text(props)
    shutil.copyfile(_stack_file("log4j2.properties"), p.kafka_log4j)
    java = _ensure_binary("java", "default-jre-headless")

    if not (p.kafka_data / "meta.properties").exists():
        if not p.kafka_cluster_id.exists():
            p.kafka_cluster_id.write_text(_new_cluster_id() + "\n")
        cid = p.kafka_cluster_id.read_text().strip()
        res = subprocess.run(
            _java_cmd(
                java,
                settings,
                p,
                [
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    cid,
                    "-c",
                    str(p.kafka_props),
                ],
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if res.returncode != 0:
            raise ServiceError(
                f"kafka storage format failed: {_one_line(res.stdout + res.stderr)}; "
                f"see {kafka_log_path(settings)}"
            )
        log.info("formatted Kafka storage %s (cluster id %s)", p.kafka_data, cid)

    cmd = _java_cmd(java, settings, p, ["kafka.Kafka", str(p.kafka_props)])
    log_offset, out_offset = _size(kafka_log_path(settings)), _size(p.kafka_out)
    # sh starts the JVM in the background and exits: the broker is not our child (no zombie,
    # no ResourceWarning), lives in its own session, and logs stdout/stderr to kafka.out.
    res = subprocess.run(
        [
            "/bin/sh",
            "-c",
            'out="$1"; shift; "$@" >>"$out" 2>&1 </dev/null & echo $!',
            "sh",
            str(p.kafka_out),
            *cmd,
        ],
        capture_output=True,
        text=True,
        cwd=p.kafka_dir,
        start_new_session=True,
        timeout=30,
    )
    try:
        pid = int(res.stdout.strip())
    except ValueError:
        raise ServiceError(f"could not launch java for Kafka: {_one_line(res.stderr)}") from None
    p.kafka_pid.write_text(f"{pid}\n")
    log.info("kafka launched, pid %d", pid)
    return _Launch(pid, time.monotonic(), log_offset, out_offset)


def _kafka_wait_ready(settings: Settings, console: Console | None, launch: _Launch | None) -> None:
    """Bounded retry of a metadata request until the broker is registered.

    Raises:
        ServiceError: the JVM exited (message: its first ERROR) or no metadata within
            KAFKA_START_TIMEOUT_S seconds of the launch.
    """
    p = _paths(settings)
    t0 = launch.started_at if launch is not None else time.monotonic()
    marker = str(p.kafka_props)

    def probe() -> None:
        if launch is not None and not _pid_alive(launch.pid, marker):
            why = _first_error(p.kafka_out, launch.out_offset) or _first_error(
                kafka_log_path(settings), launch.log_offset
            )
            raise ServiceError(f"kafka exited during startup: {why}; see {kafka_log_path(settings)}")
        _kafka_metadata(settings, timeout_s=2.0)

    remaining = max(1.0, KAFKA_START_TIMEOUT_S - (time.monotonic() - t0))
    try:
        _until_ready(probe, timeout_s=remaining, every_s=0.25)
    except _NotReady as exc:  # the last probe's
        raise ServiceError(
            f"kafka did not serve metadata on {settings.kafka_bootstrap} within "
            f"{KAFKA_START_TIMEOUT_S:.0f} s ({_one_line(str(exc))}); see {kafka_log_path(settings)}"
        ) from None
    dt = time.monotonic() - t0
    if launch is None:
        _say(console, f"  kafka       {settings.kafka_bootstrap} already running")
    else:
        log.info("kafka ready on %s in %.1f s", settings.kafka_bootstrap, dt)
        _say(console, f"  kafka       {settings.kafka_bootstrap} Kafka {KAFKA_VERSION} ready in {dt:.1f} s")


def _kafka_ensure_topics(settings: Settings, console: Console | None) -> None:
    """Create the event topic and the DLQ (replication 1) if missing; wait for their leaders."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    wanted = {settings.topic: settings.topic_partitions, settings.dlq_topic: DLQ_PARTITIONS}
    admin = AdminClient(_kafka_conf(settings))
    md = admin.list_topics(timeout=10)
    missing = [t for t in wanted if t not in md.topics]
    for t, n in wanted.items():
        if t in md.topics and len(md.topics[t].partitions) < n:
            log.warning("topic %s has %d partitions, settings ask for %d (not changed)",
                        t, len(md.topics[t].partitions), n)  # fmt: skip
    if missing:
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=wanted[t], replication_factor=1) for t in missing],
            operation_timeout=30,
            request_timeout=30,
        )
        for topic, fut in futures.items():
            try:
                fut.result()
                log.info("created topic %s (%d partitions)", topic, wanted[topic])
                n = wanted[topic]
                _say(console, f"  kafka       created topic {topic} ({n} partition{'s' if n != 1 else ''})")
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceError(f"kafka: could not create topic {topic}: {err.str()}") from None

    def leaders_ready() -> None:
        md = admin.list_topics(timeout=5)
        for t in wanted:
            tm = md.topics.get(t)
            if tm is None or tm.error is not None or not tm.partitions:
                raise _NotReady(f"topic {t} not in metadata yet")
            if any(pm.leader < 0 for pm in tm.partitions.values()):
                raise _NotReady(f"topic {t} has partitions without a leader")

    try:
        _until_ready(leaders_ready, timeout_s=30, every_s=0.2)
    except _NotReady as exc:
        raise ServiceError(f"kafka: {exc} after 30 s; see {kafka_log_path(settings)}") from None


def _stop_kafka(settings: Settings, *, hard: bool = False) -> None:
    p = _paths(settings)
    for pid in _kafka_pids(p):
        log.info("stopping kafka pid %d (%s)", pid, "SIGKILL" if hard else "SIGTERM")
        _kill(pid, str(p.kafka_props), hard=hard, grace_s=KAFKA_STOP_TIMEOUT_S, what="kafka")
    p.kafka_pid.unlink(missing_ok=True)


def _status_kafka(settings: Settings) -> ServiceStatus:
    endpoint = settings.kafka_bootstrap
    p = _paths(settings)
    pids = _kafka_pids(p)
    who = f"Kafka {KAFKA_VERSION}, pid {pids[0]}" if pids else "broker not started by this stack"
    try:
        md = _kafka_metadata(settings, timeout_s=3.0)
    except _NotReady as exc:
        return ServiceStatus("kafka", endpoint, False, f"not answering ({_one_line(str(exc))})")
    topics = []
    missing = []
    for t in (settings.topic, settings.dlq_topic):
        if t in md.topics and md.topics[t].error is None:
            topics.append(f"{t}({len(md.topics[t].partitions)}p)")
        else:
            missing.append(t)
    if missing:
        return ServiceStatus("kafka", endpoint, False, f"{who}; missing topic(s) {', '.join(missing)}")
    return ServiceStatus("kafka", endpoint, True, f"{who}; topics {', '.join(topics)}")


_STATUS: dict[str, Callable[[Settings], ServiceStatus]] = {
    "kafka": _status_kafka,
    "postgresql": _status_postgres,
    "redis": _status_redis,
}
