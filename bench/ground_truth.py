"""Agreement of sensorlake's time-weighted mean speed with each dataset's own speed column.

Run: python bench/ground_truth.py [--data DIR]   (default: $SENSORLAKE_SHARED_DATA, else
../shared/data beside the checkout)

For every visit lasting at least 2 s, compares distance_ft / duration_s (merged segments,
``SENSORLAKE_MIN_SEGMENT_S``) with the time average (trapezoidal rule) of the dataset's
speed over the same visit, and prints the median, 90th percentile and maximum of the
relative error per dataset.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: bench/ must not shadow the ingest / transforms packages
    import _bootstrap  # noqa: F401 - takes bench/ off sys.path, puts the repository first

import argparse
import os
from pathlib import Path

import numpy as np
import polars as pl

from ingest.readers import ground_truth_speeds, open_source
from sensorlake.kinematics import summarize
from sensorlake.settings import Settings

DATASETS = {
    "NGSIM US-101 (v_Vel)": "ngsim_us101_vehiclewise_subset",
    "NGSIM Peachtree (v_Vel)": "ngsim_peachtree_sample/NGSIM.csv",
    "ETH/UCY (v_x, v_y)": "eth_ucy",
    "Argoverse 2 (velocity_x, y)": "argoverse2_scenario_sample",
}


def agreement(path: Path, settings: Settings) -> tuple[int, float, float, float]:
    events = list(open_source(path))
    visits = summarize(events, min_segment_s=settings.min_segment_s, visit_gap_s=settings.visit_gap_s)
    truth = ground_truth_speeds(path)
    groups = {(k[0], k[1]): g.sort("ts_us") for k, g in truth.group_by(["sensor_id", "traveler_id"])}
    errs = []
    for (sensor_id, traveler_id, first_us), st in visits.items():
        if st.duration_s < 2.0 or st.avg_speed_fps is None:
            continue
        g = groups.get((sensor_id, traveler_id))
        if g is None:
            continue
        g = g.filter((pl.col("ts_us") >= first_us) & (pl.col("ts_us") <= st.anchor_us))
        if g.height < 2:
            continue
        t = g["ts_us"].to_numpy() / 1e6
        ref = float(np.trapezoid(g["speed_fps"].to_numpy(), t) / (t[-1] - t[0]))
        if ref < 1.0:  # near-stationary: relative error meaningless
            continue
        errs.append(abs(st.avg_speed_fps - ref) / ref)
    e = np.array(errs)
    return len(e), float(np.median(e)), float(np.quantile(e, 0.9)), float(e.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("SENSORLAKE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=Path(default))
    args = ap.parse_args()
    s = Settings.from_env()
    print(f"min_segment_s={s.min_segment_s}  visit_gap_s={s.visit_gap_s}")
    print(f"{'dataset':32} {'visits':>6} {'median':>8} {'p90':>8} {'max':>8}")
    for label, rel in DATASETS.items():
        n, med, p90, mx = agreement(args.data / rel, s)
        print(f"{label:32} {n:6d} {med:8.2%} {p90:8.2%} {mx:8.2%}")


if __name__ == "__main__":
    main()
