"""Fixtures of the fault tests: a private stack that may be broken at will.

Fault tests stop, kill and flush real services. Doing that to the shared stack would break
whatever else runs against it (other test sessions, a demo, a benchmark), so these tests
start their own Kafka, PostgreSQL and Redis once per session with ``app.stack`` on free
loopback ports, under ``/tmp/sensorlake-faults-<random>`` (the Kafka jars are hard-linked
from the shared stack's state directory, so nothing is downloaded). ``FLUSHALL``, a
PostgreSQL crash and a broker restart then touch nobody else. The stack is stopped and
removed at the end of the session; a stack left behind by a killed session (its owner
process is gone) is stopped and removed by the next session.

Each test gets its own topic, databases, lake directory and Redis namespace on that stack
(:func:`fault_env`), as ``tests/conftest.py``'s ``isolated`` does on the shared stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensorlake.settings import Settings
from tests.conftest import isolated_on

pytestmark = pytest.mark.services

_PREFIX = "sensorlake-faults-"
_OWNER = "owner.json"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_abandoned_stacks() -> None:
    """Stop and remove private stacks whose owning pytest process is gone."""
    from app import stack

    for root in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        owner = root / _OWNER
        try:
            meta = json.loads(owner.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(meta["pid"])):
            continue
        with contextlib.suppress(Exception):
            stack.down(Settings.from_env(**meta["settings"]))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def private_stack(services: Settings) -> Iterator[Settings]:
    """Settings of a Kafka + PostgreSQL + Redis stack private to this test session."""
    from app import stack

    _reap_abandoned_stacks()
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
    kafka, controller, pg, rds = _free_ports(4)
    overrides = {
        "state_dir": str(root), "host": "127.0.0.1", "kafka_host": "", "pg_host": "", "redis_host": "",
        "kafka_port": kafka, "kafka_controller_port": controller, "pg_port": pg, "redis_port": rds,
        "kafka_heap_mb": 384,
    }  # fmt: skip
    (root / _OWNER).write_text(json.dumps({"pid": os.getpid(), "settings": overrides}))
    s = Settings.from_env(**overrides)
    shared_libs = Path(services.state_dir).expanduser() / "kafka" / "libs"
    if (shared_libs / ".pom-sha256").exists():
        (root / "kafka").mkdir(parents=True)
        try:
            shutil.copytree(shared_libs, root / "kafka" / "libs", copy_function=os.link)
        except OSError:
            shutil.rmtree(root / "kafka" / "libs", ignore_errors=True)
            shutil.copytree(shared_libs, root / "kafka" / "libs")
    try:
        stack.up(s)
        yield s
    finally:
        with contextlib.suppress(Exception):
            stack.down(s)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fault_env(private_stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Isolated settings (4 partitions, lake flush age 1 s) on the private stack."""
    with isolated_on(private_stack, tmp_path) as s:
        yield s
