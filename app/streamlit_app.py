"""sensorlake dashboard: live PostgreSQL metrics next to the lake's 15-minute history.

Run with ``sensorlake app`` (``streamlit run app/streamlit_app.py``). Settings are read from
``SENSORLAKE_*`` when the script runs. Two panels side by side:

* **Live**: travelers active in the last N minutes (slider) per sensor and traveler type,
  with the mean of their time-weighted average speeds in mph, from PostgreSQL
  ``traveler_summary`` (:mod:`app.live`). "Now" is the wall clock, or the newest
  ``last_seen`` for replayed data.
* **History**: ``lake.window_stats`` (the backfill's output, :mod:`transforms.backfill`):
  volume and 85th-percentile speed (mph) per window, as Altair charts. The lake is opened
  read-only, once per cache period, and closed right away (a file catalog is locked by the
  process holding it open, so the app never keeps it).

Filters (sensor, traveler type, time range) are passed to SQL as bound parameters only. Query
results are cached with short TTLs (live 5 s, lake 30 s); failures are cached too, so an
unreachable server is not retried on every widget interaction. Times are shown in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import polars as pl
import pyarrow as pa
import streamlit as st

from app import live
from lake.catalog import connect
from lake.reader import read_window_stats, window_stats_extent
from sensorlake.errors import SensorlakeError, ServiceError
from sensorlake.settings import Settings

LIVE_TTL_S = 5
LAKE_TTL_S = 30
WALL_CLOCK = "wall clock"
LATEST_EVENT = "latest observation"
LIVE_OPTIONS_MINUTES = 24 * 60  # sensors/types offered by the live panel: seen in the last day


# ------------------------------------------------------------------ cached data access
def open_lake(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The lake, read-only. A missing catalog file fails at once (no connection retries)."""
    if settings.catalog_is_file and not Path(settings.catalog).expanduser().exists():
        raise ServiceError(f"lake catalog file {settings.catalog} does not exist (nothing ingested yet?)")
    return connect(settings, read_only=True)


@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def lake_extent(settings: Settings) -> dict[str, Any]:
    """``{"ok": True, **window_stats_extent}`` or ``{"ok": False, "error": message}``."""
    try:
        con = open_lake(settings)
        try:
            return {"ok": True, **window_stats_extent(con)}
        finally:
            con.close()
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}


@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def lake_window_stats(
    settings: Settings,
    start: datetime,
    end: datetime,
    window_s: int,
    sensor_ids: tuple[int, ...] | None,
    traveler_types: tuple[str, ...] | None,
) -> dict[str, Any]:
    """``{"ok": True, "table": pa.Table}`` or ``{"ok": False, "error": message}``."""
    try:
        con = open_lake(settings)
        try:
            table = read_window_stats(
                con, start, end, window_s=window_s, sensor_ids=sensor_ids, traveler_types=traveler_types
            )
            return {"ok": True, "table": table}
        finally:
            con.close()
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def live_options(settings: Settings) -> dict[str, Any]:
    """Sensors and types seen live in the last day, or the error."""
    try:
        with live.connect(settings) as conn:
            since = datetime.now(UTC) - timedelta(minutes=LIVE_OPTIONS_MINUTES)
            return {"ok": True, "rows": live.filter_options(conn, since=since)}
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def live_active(
    settings: Settings,
    minutes: int,
    anchor: str,
    sensor_ids: tuple[int, ...] | None,
    traveler_types: tuple[str, ...] | None,
) -> dict[str, Any]:
    """``{"ok": True, "now": datetime, "rows": [...]}`` or ``{"ok": False, "error": message}``."""
    try:
        with live.connect(settings) as conn:
            now = datetime.now(UTC)
            if anchor == LATEST_EVENT:
                now = live.latest_seen(conn) or now
            rows = live.active_travelers(
                conn, now=now, minutes=minutes, sensor_ids=sensor_ids, traveler_types=traveler_types
            )
            return {"ok": True, "now": now, "rows": rows}
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}


# ------------------------------------------------------------------ panels
def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def live_panel(settings: Settings, minutes: int, anchor: str, sensors, types) -> None:
    st.subheader("Live")
    res = live_active(settings, minutes, anchor, sensors, types)
    if not res["ok"]:
        st.warning(f"{res['error']}. Live metrics are unavailable; the history panel still works.")
        return
    st.caption(f"Travelers seen in the {minutes} min before {res['now']:%Y-%m-%d %H:%M:%S} UTC")
    rows = res["rows"]
    if not rows:
        st.info("No active travelers in this period.")
        return
    df = pl.DataFrame(rows).select(
        "sensor_id", "traveler_type", "active_travelers", "mean_speed_mph", "visits", "last_seen"
    )
    st.metric("Active travelers", int(df["active_travelers"].sum()))
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("sum(active_travelers):Q", title="active travelers"),
            y=alt.Y("sensor_id:N", title="sensor"),
            color=alt.Color("traveler_type:N", title="type"),
            tooltip=["sensor_id", "traveler_type", "active_travelers", "mean_speed_mph"],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(df, hide_index=True, width="stretch")


def history_panel(settings: Settings, extent: dict[str, Any], window_s: int, start, end, sensors, types) -> None:
    st.subheader("History")
    if not extent["ok"]:
        st.warning(f"Lake not readable: {extent['error']}")
        return
    if extent["min_start"] is None:
        st.info("lake.window_stats is empty: run `sensorlake transform --start ... --end ...` first.")
        return
    res = lake_window_stats(settings, start, end, window_s, sensors, types)
    if not res["ok"]:
        st.warning(f"Lake not readable: {res['error']}")
        return
    table: pa.Table = res["table"]
    st.caption(
        f"{window_s // 60}-minute windows, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
        f"({table.num_rows} rows)"
    )
    if table.num_rows == 0:
        st.info("No windows for these filters.")
        return
    df = pl.from_arrow(table)
    volume = df.group_by("window_start", "traveler_type").agg(pl.col("volume").sum()).sort("window_start")
    x = alt.X("window_start:T", title="window start (UTC)", scale=alt.Scale(type="utc"))
    st.altair_chart(
        alt.Chart(volume)
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("volume:Q", title="volume (visits)", stack=True),
            color=alt.Color("traveler_type:N", title="type"),
            tooltip=["window_start:T", "traveler_type", "volume"],
        )
        .properties(title="Volume per window"),
        width="stretch",
    )
    speeds = df.filter(pl.col("p85_speed_mph").is_not_null()).with_columns(
        (pl.col("sensor_id").cast(pl.String) + " · " + pl.col("traveler_type")).alias("series")
    )
    if speeds.height:
        st.altair_chart(
            alt.Chart(speeds)
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("p85_speed_mph:Q", title="85th-percentile speed (mph)"),
                color=alt.Color("series:N", title="sensor · type"),
                tooltip=["window_start:T", "sensor_id", "traveler_type", "p85_speed_mph", "speed_samples"],
            )
            .properties(title="85th-percentile speed"),
            width="stretch",
        )
    else:
        st.info("No speed samples in these windows.")
    with st.expander("Window rows"):
        st.dataframe(df, hide_index=True, width="stretch")


# ------------------------------------------------------------------ page
def main() -> None:
    st.set_page_config(page_title="sensorlake", layout="wide")
    st.title("sensorlake")
    try:
        settings = Settings.from_env()
    except SensorlakeError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        return

    extent = lake_extent(settings)
    opts = live_options(settings)
    sensor_opts = set(extent.get("sensor_ids", []))
    type_opts = set(extent.get("traveler_types", []))
    if opts["ok"]:
        sensor_opts |= {r["sensor_id"] for r in opts["rows"]}
        type_opts |= {r["traveler_type"] for r in opts["rows"]}

    with st.sidebar:
        st.header("Filters")
        picked_sensors = st.multiselect("Sensors (none = all)", sorted(sensor_opts))
        picked_types = st.multiselect("Traveler types (none = all)", sorted(type_opts))
        sensors = tuple(int(s) for s in picked_sensors) or None
        types = tuple(str(t) for t in picked_types) or None

        st.header("Live")
        minutes = st.slider("Active in the last N minutes", 1, 120, 15)
        anchor = st.radio("Now is", [WALL_CLOCK, LATEST_EVENT], help="Use the latest observation for replayed data")

        st.header("History")
        sizes = extent.get("window_s") or [settings.window_s]
        window_s = st.selectbox(
            "Window length (s)", sizes, index=sizes.index(settings.window_s) if settings.window_s in sizes else 0
        )
        start = end = None
        if extent["ok"] and extent["min_start"] is not None:
            lo = _naive_utc(extent["min_start"])
            hi = _naive_utc(extent["max_start"]) + timedelta(seconds=int(window_s))
            default_lo = max(lo, hi - timedelta(days=1))
            picked = st.slider(
                "Time range (UTC)",
                min_value=lo,
                max_value=hi,
                value=(default_lo, hi),
                step=timedelta(seconds=settings.window_step_s),
                format="YYYY-MM-DD HH:mm",
            )
            start, end = (t.replace(tzinfo=UTC) for t in picked)

    left, right = st.columns(2)
    with left:
        live_panel(settings, minutes, anchor, sensors, types)
    with right:
        history_panel(settings, extent, int(window_s), start, end, sensors, types)


main()
