"""Heatmap page: the occupancy grid of one sensor (seconds spent per 5-ft cell).

Reads ``lake.occupancy_grid`` (definition in :mod:`transforms.measures`) summed over the
chosen hours and traveler types. Long, narrow sensor frames (a road segment) are drawn
with the long axis horizontal.
"""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import polars as pl
import streamlit as st

from app import ui
from transforms.windows import CELL_FT


def main() -> None:
    settings = ui.settings_or_stop()
    st.title("Heatmap")
    opts = ui.occupancy_options(settings)
    if not ui.lake_ok(opts):
        return
    rows: pl.DataFrame = opts["rows"]
    if rows.height == 0:
        st.info("lake.occupancy_grid is empty: run `sensorlake transform --job occupancy ...` first.")
        return
    with st.sidebar:
        sensor = st.selectbox("Sensor", rows["sensor_id"].unique().sort().to_list())
        mine = rows.filter(pl.col("sensor_id") == sensor)
        picked = st.multiselect("Traveler types (none = all)", mine["traveler_type"].unique().sort().to_list())
        lo = ui.naive_utc(mine["hour_start"].min())
        hi = ui.naive_utc(mine["hour_start"].max()) + timedelta(hours=1)
        start, end = ui.utc_range("Hours (UTC)", lo, hi, step=timedelta(hours=1))
        log_scale = st.toggle("Log colour scale", value=True)
    types = tuple(picked) or None
    res = ui.occupancy(settings, int(sensor), start, end, types)
    if not ui.lake_ok(res):
        return
    grid = ui.frame(res["grid"]).filter(pl.col("occupancy_s") > 0)
    st.caption(
        f"Sensor {sensor}: seconds spent per {CELL_FT:g}-ft cell, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
        f"{'all types' if types is None else ', '.join(types)} ({grid.height} cells)"
    )
    if grid.height == 0:
        st.info("No occupancy in these hours.")
        return
    a, b, c = st.columns(3)
    a.metric("Occupied cells", f"{grid.height:,}")
    b.metric("Time observed (s)", f"{grid['occupancy_s'].sum():,.0f}")
    top = grid.sort("occupancy_s", descending=True).row(0, named=True)
    c.metric("Busiest cell (s)", f"{top['occupancy_s']:,.0f}", help=f"cell at x={top['cell_x_ft']:g} ft, y={top['cell_y_ft']:g} ft")
    span_x = grid["cell_x_ft"].max() - grid["cell_x_ft"].min() + CELL_FT
    span_y = grid["cell_y_ft"].max() - grid["cell_y_ft"].min() + CELL_FT
    h, v = ("cell_y_ft", "cell_x_ft") if span_y > 2 * span_x else ("cell_x_ft", "cell_y_ft")
    data = grid.with_columns((pl.col(h) + CELL_FT).alias("h2"), (pl.col(v) + CELL_FT).alias("v2"))
    across = span_x if h == "cell_y_ft" else span_y
    along = span_y if h == "cell_y_ft" else span_x
    height = int(min(max(across / along * 1100, 160), 700))
    scale = alt.Scale(type="log", scheme="inferno") if log_scale else alt.Scale(scheme="inferno")
    st.altair_chart(
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X(f"{h}:Q", title=f"{h[5]} (ft)", scale=alt.Scale(zero=False, nice=False)),
            x2="h2:Q",
            y=alt.Y(f"{v}:Q", title=f"{v[5]} (ft)", scale=alt.Scale(zero=False, nice=False)),
            y2="v2:Q",
            color=alt.Color("occupancy_s:Q", title="seconds", scale=scale),
            tooltip=["cell_x_ft", "cell_y_ft", "occupancy_s", "observations"],
        )
        .properties(height=height),
        width="stretch",
    )


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it draws nothing
    main()
