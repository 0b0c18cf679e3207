"""Computed speeds against the datasets' own speed columns (real data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from bench.ground_truth import DATASETS
from ingest.readers import ground_truth_speeds, open_source
from sensorlake.kinematics import summarize
from sensorlake.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def time_average(truth: pl.DataFrame) -> float:
    """Time average of a sampled speed, trapezoidal rule over the sample times (ft/s)."""
    t = truth["ts_us"].to_numpy() / 1e6
    v = truth["speed_fps"].to_numpy()
    return float(np.trapezoid(v, t) / (t[-1] - t[0]))


def test_us101_time_weighted_mean_within_1_percent_of_v_vel(data_dir):
    path = data_dir / "ngsim_us101_vehiclewise_subset"
    s = Settings.from_env()
    events = list(open_source(path))
    visits = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
    truth = ground_truth_speeds(path).sort("traveler_id", "ts_us")
    by_traveler = {k[0]: g for k, g in truth.group_by(["traveler_id"])}
    assert len(visits) == 40  # 40 vehicles, one visit each (no 60 s gaps)
    for (_, traveler_id, _), state in visits.items():
        ref = time_average(by_traveler[traveler_id].sort("ts_us"))
        err = abs(state.avg_speed_fps - ref) / ref
        assert err < 0.01, (traveler_id, state.avg_speed_fps, ref)


def test_bench_ground_truth_prints_the_readme_table(data_dir):
    """``python bench/ground_truth.py`` (the command the README names) runs from a checkout
    and prints exactly the README's agreement table, row by row."""
    env = {k: v for k, v in os.environ.items() if k not in ("SENSORLAKE_MIN_SEGMENT_S", "SENSORLAKE_VISIT_GAP_S")}
    r = subprocess.run(
        [sys.executable, "bench/ground_truth.py", "--data", str(data_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    printed = {}
    for line in r.stdout.splitlines():
        label, *figures = line.rsplit(maxsplit=4)
        if label.strip() in DATASETS:
            printed[label.strip()] = figures
    assert "min_segment_s=0.5" in r.stdout  # the README's setting

    readme = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if cells[0] in DATASETS:
            readme[cells[0]] = cells[1:]
    assert set(printed) == set(readme) == set(DATASETS)
    for label, figures in printed.items():
        assert re.fullmatch(r"\d+", figures[0]), figures
        assert figures == readme[label], f"{label}: bench/ground_truth.py prints {figures}, README says {readme[label]}"
