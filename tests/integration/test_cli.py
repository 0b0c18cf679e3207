"""The CLI as a user meets it: one-line errors, no tracebacks, read-only SQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, text=True,
        timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sensorlake: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["produce", "--source", "/no/such/file.csv"], "/no/such/file.csv"),
        (["produce", "--source", "synthetic", "--speedup", "0"], "--speedup"),
        (["produce", "--bogus"], "--bogus"),
        (["transform", "--start", "yesterday", "--end", "2024-01-01"], "yesterday"),
        (["transform", "--start", "2024-01-02", "--end", "2024-01-01"], "before"),
        (["transform", "--start", "2024-01-01", "--end", "2024-01-02", "--engine", "spark"], "spark"),
        (["consume", "--until-idle", "-1"], "--until-idle"),
        (["nonsense"], "nonsense"),
        (["produce", "--source", "synthetic", "--seed", "-1"], "--seed"),
        (["produce", "--source", "synthetic", "--rate-hz", "inf"], "--rate-hz"),
        (["consume", "--until-idle", "nan"], "--until-idle"),
        (["sql", "SELECT 1", "--max-rows", "99999999999999999999"], "--max-rows"),
        (["transform", "--start", "0001-01-01", "--end", "9999-12-31T23:59:59"], "split"),
        (["app", "--port", "0"], "--port"),
        (["app", "--port", "70000"], "--port"),
        (["demo", "--headless", "--source", "/no/such/dir"], "/no/such/dir"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(args, needle):
    line = one_line_error(cli(*args))
    assert needle in line


def test_usage_error_exit_code_is_2():
    assert cli("produce", "--bogus").returncode == 2


def test_sql_is_read_only_and_cannot_touch_files(tmp_path):
    env = {"SENSORLAKE_CATALOG": str(tmp_path / "cat.ducklake"), "SENSORLAKE_DATA_PATH": str(tmp_path / "data")}
    # create an empty lake in the file catalog
    from lake.catalog import connect
    from sensorlake.settings import Settings

    con = connect(Settings.from_env(catalog=env["SENSORLAKE_CATALOG"], data_path=env["SENSORLAKE_DATA_PATH"]))
    con.execute(
        "INSERT INTO lake.movements VALUES (7, 'b-1', 'bicycle', TIMESTAMPTZ '2024-03-11 04:30:00+00', 1, 2, 0, 0),"
        " (7, 'b-1', 'bicycle', TIMESTAMPTZ '2024-03-11 04:30:01+00', 3, 2, 0, 1)"
    )
    con.close()
    ok = cli("sql", "--csv", "SELECT count(*) AS n, max(ts) AS last FROM lake.movements", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "n,last\n2,2024-03-11 04:30:01+00:00\n"  # LF, not CRLF
    assert "Permission" in one_line_error(cli("sql", "SELECT * FROM read_csv('/etc/passwd')", env=env))
    one_line_error(cli("sql", "DELETE FROM lake.movements", env=env))
    assert "not COPY" in one_line_error(cli("sql", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", env=env))
    assert not (tmp_path / "x.csv").exists()
    # not even into the lake's own data directory, which reads are allowed from
    files = sorted((tmp_path / "data").rglob("*.parquet"))
    assert files
    before = files[0].read_bytes()
    one_line_error(cli("sql", f"COPY (SELECT 'junk' AS x) TO '{files[0]}' (FORMAT parquet)", env=env))
    assert files[0].read_bytes() == before
    assert "one statement" in one_line_error(cli("sql", "SELECT 1; SELECT 2", env=env))
    for stmt in ("ATTACH ':memory:' AS m", "SET enable_external_access = true", "INSTALL httpfs", "EXPORT DATABASE '/tmp/x'"):
        one_line_error(cli("sql", stmt, env=env))
    again = cli("sql", "--csv", "SELECT count(*) FROM lake.movements", env=env)
    assert again.stdout.splitlines()[1] == "2"


@pytest.mark.services
def test_sql_never_shows_the_catalog_password(isolated):
    s = isolated
    r = cli("sql", "--csv", "SELECT database_name, path FROM duckdb_databases()", env=s.to_env())
    assert r.returncode == 0, r.stderr
    assert "lake" in r.stdout
    assert s.pg_password not in r.stdout
    r = cli("sql", "--csv", "SELECT secret_string FROM duckdb_secrets()", env=s.to_env())
    assert f"password={s.pg_password}" not in r.stdout


@pytest.mark.parametrize(
    ("var", "value"),
    [("SENSORLAKE_POLL_WAIT_S", "0"), ("SENSORLAKE_POLL_WAIT_S", "abc"), ("SENSORLAKE_POLL_BATCH", "-5"),
     ("SENSORLAKE_POLL_BATCH", "1000001"), ("SENSORLAKE_MAX_BATCH_ROWS", "0"), ("SENSORLAKE_MAX_BATCH_AGE_S", "nan"),
     ("SENSORLAKE_MIN_SEGMENT_S", "nan"), ("SENSORLAKE_VISIT_GAP_S", "inf")],
)
def test_bad_consumer_setting_is_one_line_before_any_connection(var, value):
    """Checked when the settings are read: the consumer never starts (exits at once, even
    with the services down) and names the variable."""
    line = one_line_error(cli("consume", "--until-idle", "1", env={var: value}))
    assert var in line
