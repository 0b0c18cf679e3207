"""What the Streamlit pages share: settings, cached data access, filters, zero-filling.

Every loader opens the lake read-only, reads, and closes it at once (a file catalog is locked
by the process holding it open), and returns ``{"ok": True, ...}`` or ``{"ok": False,
"error": message}``: failures are cached too, so an unreachable server is not retried on
every widget interaction. Lake filters go to SQL as bound parameters only (:mod:`lake.reader`);
the live rows (one per sensor and type) are loaded whole and filtered on the page, so changing
a filter queries nothing. Times are UTC. Lake results are cached for :data:`LAKE_TTL_S`, live
ones for :data:`LIVE_TTL_S`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import streamlit as st

from app import health, live
from lake import reader
from lake.catalog import connect
from sensorlake.errors import SensorlakeError, first_line
from sensorlake.settings import Settings

LAKE_TTL_S = 30
LIVE_TTL_S = 5
HEALTH_TTL_S = 10
WALL_CLOCK = "wall clock"
LATEST_EVENT = "latest observation"
PERIODS = {"1 min": 60, "5 min": 300, "15 min": 900, "hour": 3600, "day": 86400}


def settings_or_stop() -> Settings:
    """Settings from ``SENSORLAKE_*``; on a bad value, an error box and the page stops."""
    try:
        return Settings.from_env()
    except SensorlakeError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        raise  # unreachable: st.stop() raises


def open_lake(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The lake, read-only, in one attempt (a page shows the error rather than wait on retries)."""
    return connect(settings, read_only=True, attempts=1)


def _with_lake(settings: Settings, fn: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]]) -> dict[str, Any]:
    try:
        con = open_lake(settings)
        try:
            return {"ok": True, **fn(con)}
        finally:
            con.close()
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}
    except duckdb.Error as exc:  # e.g. a table this lake does not have yet
        return {"ok": False, "error": f"lake query failed: {first_line(exc)}"}
    except (pa.ArrowException, KeyError) as exc:  # a lake from before a table gained columns
        return {"ok": False, "error": f"lake tables are older than this app ({exc}); run `sensorlake transform` once"}


# ------------------------------------------------------------------ lake loaders
@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def lake_extent(settings: Settings) -> dict[str, Any]:
    """Sensors, types, window lengths and the time span of ``lake.window_stats``."""
    return _with_lake(settings, reader.window_stats_extent)


@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def history(
    settings: Settings,
    start: datetime,
    end: datetime,
    period_s: int,
    sensor_ids: tuple[int, ...] | None,
    traveler_types: tuple[str, ...] | None,
) -> dict[str, Any]:
    """``{"stats", "bins", "peaks"}``: window_stats (<= 900 s) or rollup_stats rows of the
    range, their speed bins and the peak hours of the days in it (Arrow tables)."""

    def load(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        if period_s in (3600, 86400):
            stats = reader.read_rollups(con, start, end, period_s=period_s, sensor_ids=sensor_ids,
                                        traveler_types=traveler_types)  # fmt: skip
        else:
            stats = reader.read_window_stats(con, start, end, window_s=period_s, sensor_ids=sensor_ids,
                                             traveler_types=traveler_types)  # fmt: skip
        bins = reader.read_speed_bins(con, start, end, window_s=period_s, sensor_ids=sensor_ids,
                                      traveler_types=traveler_types)  # fmt: skip
        day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        peak_types = None if traveler_types is None else (*traveler_types, "all")
        peaks = reader.read_peak_hours(con, day0, end, sensor_ids=sensor_ids, traveler_types=peak_types)
        return {"stats": stats, "bins": bins, "peaks": peaks}

    return _with_lake(settings, load)


@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def occupancy_options(settings: Settings) -> dict[str, Any]:
    """Sensors, types and hours present in ``lake.occupancy_grid``."""
    return _with_lake(settings, lambda con: {"rows": pl.from_arrow(reader.read_occupancy_hours(con))})


@st.cache_data(ttl=LAKE_TTL_S, show_spinner=False)
def occupancy(
    settings: Settings, sensor_id: int, start: datetime, end: datetime, traveler_types: tuple[str, ...] | None
) -> dict[str, Any]:
    """The occupancy grid of one sensor over ``[start, end)``, summed over hours and types."""
    return _with_lake(
        settings,
        lambda con: {"grid": reader.read_occupancy(con, start, end, sensor_id=sensor_id, traveler_types=traveler_types)},
    )


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False)
def lake_health(settings: Settings) -> dict[str, Any]:
    """Latest snapshots, files per table and partition, next offsets stored for the topic."""

    def load(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        return {
            "snapshots": reader.last_snapshots(con, 5),
            "files": reader.lake_files(con),
            "offsets": reader.stored_offsets(con, settings.topic),
        }

    return _with_lake(settings, load)


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False)
def kafka_health(settings: Settings) -> dict[str, Any]:
    """High watermarks of the topic and the DLQ's reasons (bounded read)."""
    out: dict[str, Any] = {"ok": True}
    try:
        out["high"] = health.watermarks(settings, settings.topic, timeout_s=3)
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}
    try:
        out["dlq"] = health.dlq_reasons(settings, max_records=10_000, timeout_s=4)
    except SensorlakeError as exc:
        out["dlq_error"] = str(exc)
    return out


# ------------------------------------------------------------------ live loaders
@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def live_active(settings: Settings, minutes: int, anchor: str) -> dict[str, Any]:
    """``{"ok": True, "now": datetime, "rows": [...], "options": [...]}`` or ``{"ok": False,
    "error": message}``: the active travelers of every sensor and type (:func:`app.live.active_travelers`,
    one row per pair: the page filters them) and the pairs seen in the last day, for the filters."""
    try:
        with live.connect(settings) as conn:
            now = datetime.now(UTC)
            if anchor == LATEST_EVENT:
                now = live.latest_seen(conn) or now
            rows = live.active_travelers(conn, now=now, minutes=minutes)
            options = live.filter_options(conn, since=now - timedelta(days=1))
            return {"ok": True, "now": now, "rows": rows, "options": options}
    except SensorlakeError as exc:
        return {"ok": False, "error": str(exc)}


# ------------------------------------------------------------------ helpers
def lake_ok(res: dict[str, Any]) -> bool:
    """True for a loader's ``{"ok": True, ...}``; else a "Lake not readable" warning and False."""
    if not res["ok"]:
        st.warning(f"Lake not readable: {res['error']}")
    return bool(res["ok"])


def naive_utc(ts: datetime) -> datetime:
    """An aware datetime as naive UTC (Streamlit's sliders take naive datetimes)."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def utc_range(
    label: str, lo: datetime, hi: datetime, *, step: timedelta, value: tuple[datetime, datetime] | None = None
) -> tuple[datetime, datetime]:
    """A time-range slider over ``[lo, hi]`` (naive UTC, as Streamlit takes them) moving by
    ``step``; none when the range is a single step. Returns the picked ``(start, end)`` aware UTC."""
    picked = (lo, hi)
    if hi - lo > step:
        picked = st.slider(
            label, min_value=lo, max_value=hi, value=value or (lo, hi), step=step, format="YYYY-MM-DD HH:mm"
        )
    return picked[0].replace(tzinfo=UTC), picked[1].replace(tzinfo=UTC)


def filters_sidebar(sensor_opts: list[int], type_opts: list[str], *, key: str) -> tuple[tuple[int, ...] | None, tuple[str, ...] | None]:
    """Sensor and traveler-type multiselects in the sidebar (none picked = all -> None)."""
    with st.sidebar:
        picked_sensors = st.multiselect("Sensors (none = all)", sorted(sensor_opts), key=f"{key}-sensors")
        picked_types = st.multiselect("Traveler types (none = all)", sorted(type_opts), key=f"{key}-types")
    return tuple(int(s) for s in picked_sensors) or None, tuple(str(t) for t in picked_types) or None


def zero_fill_bins(bins: pl.DataFrame, by: list[str], width: int = 5) -> pl.DataFrame:
    """Every 5-mph bin from 0 to the largest seen, per ``by`` group, with 0 where none.

    >>> df = pl.DataFrame({"traveler_type": ["car", "car"], "bin_mph": [0, 15], "visits": [2, 1]})
    >>> zero_fill_bins(df, ["traveler_type"])["visits"].to_list()
    [2, 0, 0, 1]
    """
    if bins.height == 0:
        return bins
    top = int(bins["bin_mph"].max())
    grid = pl.DataFrame({"bin_mph": list(range(0, top + width, width))}, schema={"bin_mph": bins.schema["bin_mph"]})
    groups = bins.select(by).unique()
    return (
        groups.join(grid, how="cross")
        .join(bins.group_by(*by, "bin_mph").agg(pl.col("visits").sum()), on=[*by, "bin_mph"], how="left")
        .with_columns(pl.col("visits").fill_null(0))
        .sort(*by, "bin_mph")
    )


def frame(table: pa.Table) -> pl.DataFrame:
    """Arrow -> Polars (zero copy)."""
    return pl.from_arrow(table)
