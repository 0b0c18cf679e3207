"""The layout stays honest: dependencies flow one way and imports connect to nothing."""

from __future__ import annotations

import ast
import os
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
    """Import every module in a child with no SENSORLAKE_* set and every port pointing
    at nothing: importing must neither fail nor connect."""
    modules = []
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            if f.name == "streamlit_app.py":
                continue  # a Streamlit script, run by `streamlit run`, not imported
            rel = f.relative_to(REPO).with_suffix("")
            modules.append(".".join(p for p in rel.parts if p != "__init__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORLAKE_")}
    env.update(SENSORLAKE_KAFKA_PORT="1", SENSORLAKE_PG_PORT="1", SENSORLAKE_REDIS_PORT="1")
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code, *modules], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
