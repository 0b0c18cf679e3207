"""Each benchmark runs once at a tiny size against the local stack: it must complete, print
its figures and write its JSON. No timing is asserted (figures on a shared CI machine mean
nothing); the benchmarks' own correctness checks (exactly-once, every event visible,
DuckDB == Polars) still decide their exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.services


def run_bench(script: str, tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{script}.py"), *args, "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, f"bench/{script}.py exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "load average" in r.stdout and "machine:" in r.stdout
    return r.stdout, json.loads(out.read_text())


def test_ingest(services, tmp_path):
    out, res = run_bench(
        "ingest", tmp_path, "--events", "3000", "--baseline-events", "300", "--concurrent", "300",
        "--consumers", "1,2", "--until-idle", "3",
    )  # fmt: skip
    for label in ("ceiling: consume only", "ceiling: consume + decode (msgspec)", "baseline: per event",
                  "sensorlake, 1 process", "sensorlake, 2 processes", "x ceiling", "x baseline"):  # fmt: skip
        assert label in out
    runs = {r["label"]: r for r in res["runs"]}
    assert runs["sensorlake, 1 process"]["exactly_once"] and runs["sensorlake, 2 processes"]["exactly_once"]
    assert all(r["events_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in res["runs"])


def test_latency(services, tmp_path):
    out, res = run_bench("latency", tmp_path, "--rate", "500", "--duration", "3")
    assert "visible in PostgreSQL" in out and "visible in the lake" in out
    assert res["pg"]["visible"] == res["produced"] == res["lake"]["visible"] > 0
    assert res["pg"]["p99"] >= res["pg"]["p50"] > 0


def test_memory(services, tmp_path):
    out, res = run_bench("memory", tmp_path, "--events", "5000", "--concurrent", "300")
    assert "peak RSS" in out
    assert res["lake"]["rows"] == 5000 and res["samples"]


def test_transforms(services, tmp_path):
    out, res = run_bench("transforms", tmp_path, "--events", "5000", "--span-s", "900", "--repeat", "1")
    for label in ("raw scan", "window aggregation, DuckDB", "window aggregation, Polars", "whole backfill, polars"):
        assert label in out
    assert res["events_read"] == 5000 and res["window_rows"] > 0
