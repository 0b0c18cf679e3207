"""Every page of the Streamlit app under AppTest, against a file-catalog lake (no servers).

PostgreSQL and Kafka are pointed at ports nobody listens on, so the Live page and the
Kafka half of Data health must show their "not reachable" warnings while the lake pages
draw from the lake. Filters are bound parameters: the statements are constants.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import health, live
from lake import reader
from lake.catalog import connect
from sensorlake.errors import ServiceError
from sensorlake.events import Event
from sensorlake.settings import Settings
from tests.lakes import events_table, insert_events
from transforms.backfill import run_transform

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
PAGES = ("views/live.py", "views/history.py", "views/heatmap.py", "views/sql.py", "views/health.py")


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """SENSORLAKE_* pointing at a lake in tmp_path and service ports nobody listens on."""
    for name in list(os.environ):
        if name.startswith("SENSORLAKE_"):
            monkeypatch.delenv(name)
    values = {
        "SENSORLAKE_CATALOG": str(tmp_path / "catalog.ducklake"),
        "SENSORLAKE_DATA_PATH": str(tmp_path / "data"),
        "SENSORLAKE_STATE_DIR": str(tmp_path),
        "SENSORLAKE_HOST": "127.0.0.1",
        "SENSORLAKE_PG_PORT": str(unused_port()),
        "SENSORLAKE_KAFKA_PORT": str(unused_port()),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    st.cache_data.clear()
    yield values
    st.cache_data.clear()


def fill_lake(settings: Settings) -> None:
    """Sensor 1: a car at 40 ft/s and a bicycle at 15 ft/s; sensor 2: a pedestrian at 4 ft/s;
    20 observations each, 1 s apart, starting 0, 5 and 10 minutes after 14:00."""
    events = []
    for i, (sid, typ, v_fps) in enumerate([(1, "car", 40.0), (1, "bicycle", 15.0), (2, "pedestrian", 4.0)]):
        for k in range(20):
            ts_us = int((T0 + timedelta(minutes=5 * i, seconds=k)).timestamp() * 1_000_000)
            events.append(Event(sid, f"{typ}-{i}", typ, ts_us, v_fps * k, 0.0))
    insert_events(settings, events_table(events))
    run_transform(settings, T0, T0 + timedelta(hours=1))


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_live_page_without_postgres(env) -> None:
    fill_lake(Settings.from_env())
    at = app()
    assert [t.value for t in at.title] == ["Live"]
    assert "PostgreSQL not reachable" in texts(at.warning)


def test_history_page_draws_every_measure_and_filters(env) -> None:
    fill_lake(Settings.from_env())
    at = go(app(), "views/history.py")
    assert [t.value for t in at.title] == ["History"]
    assert not at.warning
    # the 15-minute periods of 14:00-15:00 for 3 (sensor, type) pairs, zero-filled
    assert "15 min periods" in texts(at.caption) and "(12 rows)" in texts(at.caption)
    assert len(at.get("vega_lite_chart")) == 4  # volume, p85, speed bins, mode split
    metrics = {m.label: m.value for m in at.metric}
    # volume: each traveler overlaps one 15-minute window
    assert metrics["Volume (traveler-periods)"] == "3"
    assert "Peak hour factor per sensor and day" in texts(at.subheader)

    at.sidebar.multiselect[0].select(1).run()  # sensor 1
    at.sidebar.multiselect[1].select("car").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "(4 rows)" in texts(at.caption)
    assert {m.label: m.value for m in at.metric}["Mean speed (mph)"] == f"{40 * 3600 / 5280:.1f}"  # 27.3

    at.sidebar.selectbox[0].select("hour").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "hour periods" in texts(at.caption) and "estimated from the merged 5-mph histograms" in texts(at.caption)


def test_heatmap_page_draws_the_occupancy_grid(env) -> None:
    fill_lake(Settings.from_env())
    at = go(app(), "views/heatmap.py")
    assert [t.value for t in at.title] == ["Heatmap"]
    assert len(at.get("vega_lite_chart")) == 1
    # sensor 1: the car moves 40 ft/s (8 cells a second), the bicycle 15 ft/s: 19 s each
    assert "Sensor 1" in texts(at.caption)
    assert {m.label: m.value for m in at.metric}["Time observed (s)"] == "38"


def test_sql_page_runs_read_only_queries_and_refuses_files(env) -> None:
    fill_lake(Settings.from_env())
    at = go(app(), "views/sql.py")
    assert [t.value for t in at.title] == ["SQL"]
    assert "3 rows" in texts(at.caption)  # the default query: (1, bicycle), (1, car), (2, pedestrian)

    at.text_area[0].input("SELECT * FROM read_csv('/etc/passwd')")
    at.button[0].click().run()
    assert "Query refused or failed" in texts(at.error)

    at.text_area[0].input("SELECT * FROM range(5000)")
    at.number_input[0].set_value(10)
    at.button[0].click().run()
    assert "10 rows (first 10 rows: the row limit)" in texts(at.caption)

    at.text_area[0].input("DELETE FROM lake.movements")
    at.button[0].click().run()
    assert "Query refused or failed" in texts(at.error)


def test_health_page_without_kafka(env) -> None:
    fill_lake(Settings.from_env())
    at = go(app(), "views/health.py")
    assert [t.value for t in at.title] == ["Data health"]
    assert "Kafka not reachable" in texts(at.warning)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Last snapshot"]) > 0
    assert "data files in" in texts(at.caption)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_a_lake(env, page) -> None:
    at = go(app(), page)
    assert at.warning or at.info, page  # a message, never an exception


def test_bad_configuration_is_an_error_box(env, monkeypatch) -> None:
    monkeypatch.setenv("SENSORLAKE_WINDOW_S", "fifteen")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception
    assert "Configuration error" in texts(at.error)


# ---------------------------------------------------------------- parameters, not SQL text
def test_live_connect_unreachable_is_a_one_line_service_error(env) -> None:
    settings = Settings.from_env()
    with pytest.raises(ServiceError, match="PostgreSQL not reachable") as info:
        live.connect(settings, timeout_s=1)
    assert "password" not in str(info.value)


class _Recorder:
    """A stand-in connection (psycopg or DuckDB) that records what is executed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def cursor(self, **_kw):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def execute(self, sql, params=None):
        self.calls.append((sql, params))
        return self

    def fetchall(self) -> list:
        return []

    def to_arrow_table(self):
        import pyarrow as pa

        return pa.table({})


EVIL = "car'); DROP TABLE traveler_summary; --"


def test_live_filters_are_bound_parameters_not_sql_text() -> None:
    conn = _Recorder()
    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    live.active_travelers(conn, now=now, minutes=10, sensor_ids=[7, 9], traveler_types=[EVIL])
    [(sql, params)] = conn.calls
    assert sql == live.ACTIVE_SQL  # the statement is a constant
    assert EVIL not in sql and "DROP" not in sql
    assert params["since"] == datetime(2026, 11, 30, 14, 50, tzinfo=UTC)
    assert params["sensor_ids"] == [7, 9] and params["traveler_types"] == [EVIL]


@pytest.mark.parametrize(
    "read",
    [
        lambda c: reader.read_window_stats(c, T0, T0, window_s=900, sensor_ids=[1], traveler_types=[EVIL]),
        lambda c: reader.read_speed_bins(c, T0, T0, window_s=900, sensor_ids=[1], traveler_types=[EVIL]),
        lambda c: reader.read_rollups(c, T0, T0, period_s=3600, sensor_ids=[1], traveler_types=[EVIL]),
        lambda c: reader.read_peak_hours(c, T0, T0, sensor_ids=[1], traveler_types=[EVIL]),
        lambda c: reader.read_occupancy(c, T0, T0, sensor_id=1, traveler_types=[EVIL]),
    ],
)
def test_lake_filters_are_bound_parameters_not_sql_text(read) -> None:
    conn = _Recorder()
    try:
        read(conn)
    except Exception:  # noqa: BLE001 - the empty stand-in result cannot be cast; the SQL was recorded
        pass
    [(sql, params)] = conn.calls
    assert EVIL not in sql and "DROP" not in sql
    assert [EVIL] in params


def test_lake_filters_with_quotes_match_nothing_and_harm_nothing(env) -> None:
    settings = Settings.from_env()
    fill_lake(settings)
    con = connect(settings, read_only=True)
    try:
        out = reader.read_window_stats(con, T0, T0 + timedelta(hours=1), window_s=900, traveler_types=[EVIL])
        assert out.num_rows == 0
        assert reader.read_window_stats(con, T0, T0 + timedelta(hours=1), window_s=900).num_rows == 12
    finally:
        con.close()


def test_consumer_lag_is_the_high_watermark_minus_the_stored_offset() -> None:
    rows = health.consumer_lag({0: (0, 10), 1: (2, 5), 2: (0, 0)}, {0: 7, 1: 5, 3: 4})
    assert [(r["partition"], r["lag"]) for r in rows] == [(0, 3), (1, 0), (2, 0), (3, 0)]


def test_app_pages_import_the_project_not_each_other() -> None:
    import ast

    for page in PAGES:
        tree = ast.parse((APP.parent / page).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("app.views"), (page, node.module)


def test_duckdb_is_not_left_open_by_the_app(env) -> None:
    # the app opens the lake per query and closes it: a writer can attach right after
    fill_lake(Settings.from_env())
    go(app(), "views/history.py")
    con = duckdb.connect()
    con.close()
    connect(Settings.from_env()).close()
