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
    assert ok.stdout.splitlines() == ["n,last", "2,2024-03-11 04:30:01+00:00"]
    assert "Permission" in one_line_error(cli("sql", "SELECT * FROM read_csv('/etc/passwd')", env=env))
    one_line_error(cli("sql", "DELETE FROM lake.movements", env=env))
    one_line_error(cli("sql", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", env=env))
    assert not (tmp_path / "x.csv").exists()
    again = cli("sql", "--csv", "SELECT count(*) FROM lake.movements", env=env)
    assert again.stdout.splitlines()[1] == "2"
