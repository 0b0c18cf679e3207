"""The layout stays honest: dependencies flow one way and imports connect to nothing."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("sensorlake", "ingest", "lake", "transforms", "app")
# package -> packages it must never import
FORBIDDEN = {
    "sensorlake": {"ingest", "lake", "transforms", "app"},
    "lake": {"ingest", "transforms", "app"},
    "transforms": {"ingest", "app"},
    "ingest": {"transforms", "app"},
}
# the pure core must not import clients
PURE_FORBIDDEN = {"confluent_kafka", "redis", "psycopg", "duckdb", "streamlit"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_flow_one_way(package):
    bad = {}
    for f in (REPO / package).rglob("*.py"):
        hit = imports_of(f) & FORBIDDEN[package]
        if hit:
            bad[str(f.relative_to(REPO))] = sorted(hit)
    assert not bad


def test_pure_core_imports_no_client():
    for f in (REPO / "sensorlake").rglob("*.py"):
        assert not imports_of(f) & PURE_FORBIDDEN, f


def test_every_module_imports_without_environment_or_servers():
    """Import every module in a child with no SENSORLAKE_* set and every service port
    pointing at a socket this test listens on: importing must neither fail nor connect
    (a connection attempt, from Python or from a C client's thread, shows up as a pending
    connection on that socket)."""
    modules = []
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            if f.name == "streamlit_app.py":
                continue  # a Streamlit script, run by `streamlit run`, not imported
            rel = f.relative_to(REPO).with_suffix("")
            modules.append(".".join(p for p in rel.parts if p != "__init__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORLAKE_")}
    # give a client created at import (librdkafka connects from its own thread) time to dial
    code = "import importlib, sys, time\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\ntime.sleep(1.0)\nprint('ok')"
    with socket.create_server(("127.0.0.1", 0)) as trap:
        port = str(trap.getsockname()[1])
        env.update(SENSORLAKE_KAFKA_PORT=port, SENSORLAKE_PG_PORT=port, SENSORLAKE_REDIS_PORT=port)
        r = subprocess.run([sys.executable, "-c", code, *modules], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        trap.setblocking(False)
        try:
            conn, _ = trap.accept()
        except BlockingIOError:
            conn = None
        connected = conn is not None
        if conn is not None:
            conn.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    assert len(modules) > 20  # the walk really found the packages
    assert not connected, "importing a module connected to a service port"
