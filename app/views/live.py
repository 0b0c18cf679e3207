"""Live page: travelers active now per sensor and type, from PostgreSQL (auto refresh).

Definitions in :mod:`app.live`. "Now" is the wall clock, or the newest ``last_seen`` for
replayed data whose event times are in the past.
"""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import ui


def main() -> None:
    settings = ui.settings_or_stop()
    st.title("Live")
    with st.sidebar:
        st.header("Live")
        minutes = st.slider("Active in the last N minutes", 1, 120, 15)
        anchor = st.radio(
            "Now is", [ui.WALL_CLOCK, ui.LATEST_EVENT], help="Use the latest observation for replayed data",
            index=1 if st.query_params.get("now") == "latest" else 0,  # ?now=latest preselects it
        )  # fmt: skip
        auto = st.toggle("Auto refresh", value=True)
        every_s = st.select_slider("Every (s)", [2, 5, 10, 30, 60], value=5, disabled=not auto)
    # one cached load serves the filters' options and every refresh of the panel
    base = ui.live_active(settings, minutes, anchor)
    options = base.get("options", []) if base["ok"] else []
    sensors, types = ui.filters_sidebar(
        [r["sensor_id"] for r in options], list({r["traveler_type"] for r in options}), key="live"
    )

    @st.fragment(run_every=every_s if auto else None)
    def panel() -> None:
        res = ui.live_active(settings, minutes, anchor)
        if not res["ok"]:
            st.warning(f"{res['error']}. Live metrics are unavailable; the lake pages still work.")
            return
        st.caption(f"Travelers seen in the {minutes} min before {res['now']:%Y-%m-%d %H:%M:%S} UTC (PostgreSQL)")
        rows = [  # one row per sensor and type: the filters pick rows
            r for r in res["rows"]
            if (sensors is None or r["sensor_id"] in sensors) and (types is None or r["traveler_type"] in types)
        ]  # fmt: skip
        if not rows:
            st.info("No active travelers in this period.")
            return
        df = pl.DataFrame(rows).select(
            "sensor_id", "traveler_type", "active_travelers", "mean_speed_mph", "visits", "last_seen"
        )
        a, b, c = st.columns(3)
        a.metric("Active travelers", int(df["active_travelers"].sum()))
        b.metric("Sensors", df["sensor_id"].n_unique())
        mean = df.filter(pl.col("mean_speed_mph").is_not_null())
        c.metric("Mean speed (mph)", f"{mean['mean_speed_mph'].mean():.1f}" if mean.height else "-")
        left, right = st.columns(2)
        with left:
            st.altair_chart(
                alt.Chart(df, title="Active travelers per sensor")
                .mark_bar()
                .encode(
                    x=alt.X("sum(active_travelers):Q", title="active travelers"),
                    y=alt.Y("sensor_id:N", title="sensor"),
                    color=alt.Color("traveler_type:N", title="type"),
                    tooltip=["sensor_id", "traveler_type", "active_travelers", "mean_speed_mph"],
                ),
                width="stretch",
            )
        with right:
            st.altair_chart(
                alt.Chart(mean, title="Mean speed of active travelers (mph)")
                .mark_bar()
                .encode(
                    x=alt.X("mean_speed_mph:Q", title="mean speed (mph)"),
                    y=alt.Y("sensor_id:N", title="sensor"),
                    yOffset="traveler_type:N",
                    color=alt.Color("traveler_type:N", title="type"),
                    tooltip=["sensor_id", "traveler_type", "mean_speed_mph", "active_travelers"],
                ),
                width="stretch",
            )
        st.dataframe(df, hide_index=True, width="stretch")

    panel()


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it draws nothing
    main()
