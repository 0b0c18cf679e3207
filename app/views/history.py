"""History page: volume, p85, speed bins, mode split and peak hour factor from the lake.

Reads ``lake.window_stats`` (1, 5, 15-minute windows) or ``lake.rollup_stats`` (hour,
day), ``lake.speed_bins`` and ``lake.peak_hour`` over the chosen range, with sensor and type
filters (bound parameters). Empty windows are zero rows in the lake, so the charts are
zero-filled; speed bins are zero-filled between 0 and the fastest bin.
"""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import polars as pl
import streamlit as st

from app import ui


def stacked(stats: pl.DataFrame, t_col: str, e_col: str, *, normalize: bool = False) -> pl.DataFrame:
    """Volume per period and type stacked by hand (``y0``..``y1``), so bars span their period.

    >>> from datetime import datetime
    >>> t = datetime(2026, 1, 1)
    >>> df = pl.DataFrame({"s": [t, t], "e": [t, t], "traveler_type": ["car", "bus"], "volume": [3, 1]})
    >>> stacked(df, "s", "e", normalize=True).select("traveler_type", "y0", "y1").rows()
    [('bus', 0.0, 0.25), ('car', 0.25, 1.0)]
    """
    v = (
        stats.group_by(t_col, e_col, "traveler_type")
        .agg(pl.col("volume").sum())
        .sort(t_col, "traveler_type")
        .with_columns(pl.col("volume").cum_sum().over(t_col).alias("y1"), pl.col("volume").sum().over(t_col).alias("total"))
        .with_columns((pl.col("y1") - pl.col("volume")).alias("y0"))
    )
    if normalize:
        v = v.filter(pl.col("total") > 0).with_columns(
            (pl.col("y0") / pl.col("total")).alias("y0"),
            (pl.col("y1") / pl.col("total")).alias("y1"),
            (pl.col("volume") / pl.col("total")).alias("share"),
        )
    return v.with_columns(pl.col("y0").cast(pl.Float64), pl.col("y1").cast(pl.Float64))


def main() -> None:
    settings = ui.settings_or_stop()
    st.title("History")
    extent = ui.lake_extent(settings)
    if not ui.lake_ok(extent):
        return
    if extent["min_start"] is None:
        st.info("The lake has no derived rows yet: run `sensorlake transform --start ... --end ...` first.")
        return
    sensors, types = ui.filters_sidebar(extent["sensor_ids"], extent["traveler_types"], key="history")
    with st.sidebar:
        names = [n for n, s in ui.PERIODS.items() if s in extent["window_s"] or s >= 3600]
        period = st.selectbox("Period", names, index=names.index("15 min") if "15 min" in names else 0)
        period_s = ui.PERIODS[period]
        lo = ui.naive_utc(extent["min_start"]).replace(minute=0, second=0, microsecond=0)
        hi = ui.naive_utc(extent["max_start"]).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        if period_s == 86400:
            lo = lo.replace(hour=0)
            hi = hi.replace(hour=0) + timedelta(days=1)
        start, end = ui.utc_range(
            "Time range (UTC)", lo, hi, step=timedelta(minutes=15), value=(max(lo, hi - timedelta(days=1)), hi)
        )
    res = ui.history(settings, start, end, period_s, sensors, types)
    if not ui.lake_ok(res):
        return
    stats = ui.frame(res["stats"])
    t_col = "period_start" if period_s >= 3600 else "window_start"
    e_col = "period_end" if period_s >= 3600 else "window_end"
    p85_col = "p85_speed_mph_binned" if period_s >= 3600 else "p85_speed_mph"
    st.caption(
        f"{period} periods, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({stats.height} rows"
        + (", p85 estimated from the merged 5-mph histograms)" if period_s >= 3600 else ")")
    )
    if stats.height == 0:
        st.info("No rows for these filters.")
        return
    a, b, c, d = st.columns(4)
    a.metric("Volume (traveler-periods)", f"{int(stats['volume'].sum()):,}")
    samples = int(stats["speed_samples"].sum())
    mean = stats["speed_sum_fps"].sum() / samples * 3600 / 5280 if samples else None
    b.metric("Mean speed (mph)", f"{mean:.1f}" if mean is not None else "-")
    c.metric("Dwell time (s)", f"{stats['dwell_s'].sum():,.0f}")
    peaks = ui.frame(res["peaks"])
    overall = peaks.filter(pl.col("traveler_type") == "all")
    d.metric("Peak hour factor (median)", f"{overall['phf'].median():.3f}" if overall.height and overall["phf"].null_count() < overall.height else "-")

    x = alt.X(f"{t_col}:T", title="period (UTC)", scale=alt.Scale(type="utc"))
    x2 = alt.X2(f"{e_col}:T")  # bars as wide as their period
    volume = stacked(stats, t_col, e_col)
    left, right = st.columns(2)
    with left:
        st.altair_chart(
            alt.Chart(volume, title="Volume per period")
            .mark_rect()
            .encode(x=x, x2=x2, y=alt.Y("y0:Q", title="volume (visits)"), y2="y1:Q",
                    color=alt.Color("traveler_type:N", title="type"),
                    tooltip=[f"{t_col}:T", "traveler_type", "volume"]),
            width="stretch",
        )
    with right:
        speeds = stats.filter(pl.col(p85_col).is_not_null()).with_columns(
            (pl.col("sensor_id").cast(pl.String) + " · " + pl.col("traveler_type")).alias("series")
        )
        if speeds.height:
            st.altair_chart(
                alt.Chart(speeds, title="85th-percentile speed")
                .mark_line(point=True)
                .encode(x=x, y=alt.Y(f"{p85_col}:Q", title="p85 speed (mph)"),
                        color=alt.Color("series:N", title="sensor · type"),
                        tooltip=[f"{t_col}:T", "sensor_id", "traveler_type", p85_col, "speed_samples"]),
                width="stretch",
            )
        else:
            st.info("No speed samples in these periods.")
    left, right = st.columns(2)
    with left:
        bins = ui.zero_fill_bins(ui.frame(res["bins"]), ["traveler_type"])
        if bins.height:
            st.altair_chart(
                alt.Chart(bins, title="Speed bins (5 mph)")
                .mark_bar()
                .encode(x=alt.X("bin_mph:O", title="speed bin, mph (lower edge)"),
                        y=alt.Y("visits:Q", title="visits", stack=True),
                        color=alt.Color("traveler_type:N", title="type"),
                        tooltip=["bin_mph", "traveler_type", "visits"]),
                width="stretch",
            )
    with right:
        split = stacked(stats, t_col, e_col, normalize=True)
        st.altair_chart(
            alt.Chart(split, title="Mode split")
            .mark_rect()
            .encode(x=x, x2=x2, y=alt.Y("y0:Q", title="share of volume", axis=alt.Axis(format="%")), y2="y1:Q",
                    color=alt.Color("traveler_type:N", title="type"),
                    tooltip=[f"{t_col}:T", "traveler_type", "volume", alt.Tooltip("share:Q", format=".1%")]),
            width="stretch",
        )
    st.subheader("Peak hour factor per sensor and day")
    if peaks.height:
        show = peaks.select(
            pl.col("day_start").dt.strftime("%Y-%m-%d").alias("day"), "sensor_id", "traveler_type",
            pl.col("peak_start").dt.strftime("%H:%M").alias("peak hour from"),
            "peak_hour_volume", "max_15min_volume", pl.col("phf").round(3),
        )  # fmt: skip
        st.dataframe(show, hide_index=True, width="stretch")
    else:
        st.info("No peak hours for these days (run the peak_hour job).")
    with st.expander("Rows"):
        st.dataframe(stats, hide_index=True, width="stretch")


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it draws nothing
    main()
