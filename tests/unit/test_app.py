"""The Streamlit app renders against a file-catalog lake, and the live queries are parameterized.

No server is needed: PostgreSQL is pointed at an unused port, so the live panel must show
"PostgreSQL not reachable" while the history panel draws from the lake.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import live
from lake.catalog import connect
from lake.schema import MOVEMENTS_SCHEMA
from sensorlake.errors import ServiceError
from sensorlake.settings import Settings

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"
T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """SENSORLAKE_* pointing at a lake in tmp_path and a PostgreSQL port nobody listens on."""
    for name in list(os.environ):
        if name.startswith("SENSORLAKE_"):
            monkeypatch.delenv(name)
    values = {
        "SENSORLAKE_CATALOG": str(tmp_path / "catalog.ducklake"),
        "SENSORLAKE_STATE_DIR": str(tmp_path),
        "SENSORLAKE_HOST": "127.0.0.1",
        "SENSORLAKE_PG_PORT": str(unused_port()),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    st.cache_data.clear()
    yield values
    st.cache_data.clear()


def fill_lake(settings: Settings) -> None:
    rows = []
    for i, (sid, typ, v_fps) in enumerate([(1, "car", 40.0), (1, "bicycle", 15.0), (2, "pedestrian", 4.0)]):
        for k in range(20):
            ts = T0 + timedelta(minutes=5 * i, seconds=k)
            rows.append((sid, f"{typ}-{i}", typ, ts, v_fps * k, 0.0, 0, len(rows)))
    table = pa.Table.from_pylist([dict(zip(MOVEMENTS_SCHEMA.names, r, strict=True)) for r in rows],
                                 schema=MOVEMENTS_SCHEMA)
    con = connect(settings)
    try:
        con.register("ev", table)
        con.execute("INSERT INTO lake.movements SELECT * FROM ev")
    finally:
        con.close()
    from transforms.backfill import run_transform  # the app reads what the backfill wrote

    run_transform(settings, T0, T0 + timedelta(hours=1))


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_app_renders_lake_history_and_unreachable_postgres(env) -> None:
    fill_lake(Settings.from_env())
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.subheader] == ["Live", "History"]
    assert "PostgreSQL not reachable" in texts(at.warning)
    assert "Lake not readable" not in texts(at.warning)
    assert "15-minute windows" in texts(at.caption)
    assert len(at.get("vega_lite_chart")) == 2  # volume and p85 charts

    # filters: one sensor, one type; the app reruns without errors
    at.sidebar.multiselect[0].select(1).run()
    at.sidebar.multiselect[1].select("car").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "(4 rows)" in texts(at.caption)  # sensor 1, car: the four windows of the hour


def test_app_renders_without_a_lake(env) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = texts(at.warning)
    assert "PostgreSQL not reachable" in warnings
    assert "Lake not readable" in warnings


def test_app_reports_bad_configuration(env, monkeypatch) -> None:
    monkeypatch.setenv("SENSORLAKE_WINDOW_S", "fifteen")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception
    assert "Configuration error" in texts(at.error)


# ---------------------------------------------------------------- app.live
def test_live_connect_unreachable_is_a_one_line_service_error(env) -> None:
    settings = Settings.from_env()
    with pytest.raises(ServiceError, match="PostgreSQL not reachable") as info:
        live.connect(settings, timeout_s=1)
    assert settings.pg_password not in str(info.value) or settings.pg_password == settings.pg_user


class _Recorder:
    """A stand-in psycopg connection that records what is executed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def cursor(self, **_kw):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def execute(self, sql, params=None) -> None:
        self.calls.append((sql, params))

    def fetchall(self) -> list[dict]:
        return []


def test_live_filters_are_bound_parameters_not_sql_text() -> None:
    conn = _Recorder()
    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    evil = "car'); DROP TABLE traveler_summary; --"
    live.active_travelers(conn, now=now, minutes=10, sensor_ids=[7, 9], traveler_types=[evil])
    [(sql, params)] = conn.calls
    assert sql == live.ACTIVE_SQL  # the statement is a constant
    assert evil not in sql and "DROP" not in sql
    assert params["since"] == datetime(2026, 11, 30, 14, 50, tzinfo=UTC)
    assert params["sensor_ids"] == [7, 9] and params["traveler_types"] == [evil]
    assert params["fps_to_mph"] == pytest.approx(3600 / 5280)


def test_live_params_none_means_all_and_naive_now_is_refused() -> None:
    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    p = live.active_params(now=now, minutes=30)
    assert p["sensor_ids"] is None and p["traveler_types"] is None
    assert p["since"] == now - timedelta(minutes=30)
    with pytest.raises(ValueError):
        live.active_params(now=datetime(2026, 11, 30, 15, 0), minutes=30)
    with pytest.raises(ValueError):
        live.active_params(now=now, minutes=0)
