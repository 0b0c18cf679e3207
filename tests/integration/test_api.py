"""The analyst API (``import lake``) and the notebook that uses it, on a file-catalog lake."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

import lake
from sensorlake.errors import InputError
from sensorlake.events import Event
from tests.conftest import REPO, shared_data
from tests.lakes import PEACHTREE, backfill_all, events_table, file_lake_settings, insert_events, ngsim_lake

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    s = file_lake_settings(tmp_path)
    events = [Event(sid, f"t{sid}-{i}", typ, int((T0 + timedelta(seconds=i)).timestamp() * 1e6), 10.0 * i, 0.0)
              for sid, typ in ((1, "car"), (2, "bus")) for i in range(10)]  # fmt: skip
    insert_events(s, events_table(events))
    backfill_all(s)
    return s


def test_importing_lake_connects_to_nothing_and_loads_no_engine() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORLAKE_")}
    code = "import sys, lake; print(sorted(m for m in ('duckdb', 'polars', 'lake.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_connect_is_read_only(settings) -> None:
    con = lake.connect(settings)
    try:
        assert con.execute("SELECT count(*) FROM lake.movements").fetchone()[0] == 20
        with pytest.raises(duckdb.Error, match="read-only|read only"):
            con.execute("DELETE FROM lake.movements")
    finally:
        con.close()


def test_table_filters_with_bound_parameters(settings) -> None:
    con = lake.connect(settings)
    try:
        df = lake.table("window_stats", window_s=900, sensor_ids=[1], con=con)
        assert isinstance(df, pl.DataFrame)
        # 2 pairs observed on the day x 1 window (14:00) in the backfilled range; sensor 1 only
        assert df.select("sensor_id", "traveler_type", "volume").rows() == [(1, "car", 10)]
        assert lake.table("window_stats", traveler_types=["x' OR '1'='1"], con=con).height == 0
        assert lake.table("movements", start=T0 + timedelta(seconds=5), end=T0 + timedelta(seconds=7), con=con).height == 4
        with pytest.raises(InputError, match="unknown table"):
            lake.table("secrets", con=con)
        with pytest.raises(InputError, match="no column"):
            lake.table("window_stats", **{"1=1 OR window_s": 900}, con=con)
        q = lake.query("SELECT sum(volume)::BIGINT AS v FROM lake.window_stats WHERE window_s = ? AND sensor_id = ?",
                       [900, 2], con=con)  # fmt: skip
        assert q["v"].to_list() == [10]
        t = lake.tables(con=con)
        assert dict(zip(t["name"], t["rows"], strict=True))["movements"] == 20
    finally:
        con.close()


def test_time_travel(settings) -> None:
    con = lake.connect(settings)
    try:
        latest = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        assert lake.table("window_stats", snapshot=latest - 1, con=con).height == 0  # before the backfill
        assert lake.table("window_stats", snapshot=latest, con=con).height > 0
    finally:
        con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "COPY (SELECT 1) TO '/tmp/sl-leak.csv'",
        "ATTACH '/tmp/sl-other.duckdb' AS other",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "DELETE FROM lake.movements",
    ],
)
def test_run_limited_refuses_files_writes_and_settings(settings, sql) -> None:
    with pytest.raises(InputError):
        lake.run_limited(settings, sql)
    assert not Path("/tmp/sl-leak.csv").exists()


def test_run_limited_has_a_row_and_a_time_limit(settings) -> None:
    table, more = lake.run_limited(settings, "SELECT * FROM range(100000)", max_rows=7)
    assert (table.num_rows, more) == (7, True)
    table, more = lake.run_limited(settings, "SELECT count(*) AS n FROM lake.movements", max_rows=7)
    assert (table.to_pylist(), more) == ([{"n": 20}], False)
    t0 = time.monotonic()
    with pytest.raises(InputError, match="time limit"):
        lake.run_limited(settings, "SELECT count(*) FROM range(1000000000000) a", timeout_s=0.5)
    assert time.monotonic() - t0 < 10


def test_the_notebook_runs_against_a_lake(tmp_path, monkeypatch) -> None:
    """examples/explore.ipynb, executed cell by cell in a real kernel (NGSIM Peachtree when the
    shared data is there, else the synthetic generator)."""
    import nbclient  # the [test] extra: nbclient, nbformat, ipykernel
    import nbformat

    data = shared_data()
    if (data / PEACHTREE).exists():
        settings = ngsim_lake(data, tmp_path)
    else:
        from ingest.synthetic import generate

        settings = file_lake_settings(tmp_path)
        insert_events(settings, events_table(generate(sensors=2, travelers=40, rate_hz=10.0, duration_s=60.0, seed=3)))
        backfill_all(settings)
    for name in list(os.environ):
        if name.startswith("SENSORLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SENSORLAKE_CATALOG", settings.catalog)
    monkeypatch.setenv("SENSORLAKE_DATA_PATH", settings.data_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    nb = nbformat.read(REPO / "examples" / "explore.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = "\n".join(
        str(o.get("text") or o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )  # fmt: skip
    assert "error" not in {o.get("output_type") for c in nb.cells if c.cell_type == "code" for o in c.outputs}
    assert "DuckDB quantile_cont: 86.5 | Polars linear: 86.5 | Polars default: 90.0" in outputs
    assert "lake.window_stats has" in outputs and "phf" in outputs
