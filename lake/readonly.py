"""Untrusted ad-hoc SQL over the lake: read-only, one SELECT, bounded in rows, time and memory.

Used by ``sensorlake sql`` and the app's SQL page. Layers of defence:

* the statement must be exactly one ``SELECT`` (``COPY``, ``ATTACH``, ``SET``, ``INSTALL``,
  ``EXPORT``, DDL and DML are refused before anything runs);
* the lake is attached ``READ_ONLY``; the PostgreSQL catalog's password lives in a DuckDB
  secret, which DuckDB redacts;
* external access is disabled except for reading the lake's own data directory, memory is
  capped, and the configuration is locked so the query cannot loosen any of this;
* a query still running after ``timeout_s`` is interrupted.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from lake.catalog import connect
from sensorlake.errors import InputError, first_line
from sensorlake.settings import Settings


def ensure_single_select(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise InputError unless ``sql`` is exactly one SELECT statement."""
    if not sql.strip():
        raise InputError("empty query")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(first_line(exc)) from None
    if len(statements) != 1:
        raise InputError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InputError(f"only SELECT queries are allowed here, not {kind.name}")


def run_readonly(
    settings: Settings,
    sql: str,
    *,
    max_rows: int = 1000,
    timeout_s: float = 30.0,
    memory_limit: str = "1GB",
) -> tuple[pa.Table, bool]:
    """Run one untrusted SELECT over the lake.

    Args:
        settings: where the lake is.
        sql: exactly one SELECT statement.
        max_rows: rows returned at most (> 0).
        timeout_s: wall-time limit in seconds (> 0).
        memory_limit: DuckDB ``memory_limit`` of the connection.

    Returns:
        ``(at most max_rows rows as Arrow, True when there were more)``.

    Raises:
        InputError: not a single SELECT, a failing query, a refused file access, the time limit.
        ServiceError: the lake cannot be opened.
    """
    if max_rows <= 0 or timeout_s <= 0:
        raise InputError("the row and time limits must be > 0")
    if not sql.strip():
        raise InputError("empty query")
    con = connect(settings, read_only=True)
    timer = threading.Timer(timeout_s, con.interrupt)
    try:
        ensure_single_select(con, sql)
        con.execute("SET allowed_directories = ?", [[f"{settings.lake_data_path}/"]])
        con.execute("SET enable_external_access = false")
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET lock_configuration = true")
        timer.start()
        cur = con.execute(sql)
        if cur.description is None:
            return pa.table({}), False
        reader = cur.to_arrow_reader(batch_size=min(max_rows + 1, 10_000))
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n > max_rows:
                break
        result = pa.Table.from_batches(batches, schema=reader.schema) if batches else reader.schema.empty_table()
        return result.slice(0, max_rows), n > max_rows
    except duckdb.InterruptException:
        raise InputError(f"query stopped after the time limit of {timeout_s:g} s") from None
    except duckdb.Error as exc:
        raise InputError(first_line(exc)) from None
    finally:
        timer.cancel()
        con.close()

