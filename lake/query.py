"""Ad-hoc, read-only DuckDB SQL over the lake.

The lake is attached ``READ_ONLY``; the connection may read only the lake's data
directory (``allowed_directories``), has external access disabled and its configuration
locked, so a query can neither write the lake nor read or write any other file.
"""

from __future__ import annotations

import duckdb

from lake.catalog import connect
from sensorlake.errors import InputError
from sensorlake.settings import Settings


def readonly_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A locked-down DuckDB connection with the lake attached read-only as ``lake``.

    Raises:
        ServiceError: the lake cannot be opened.
    """
    con = connect(settings, read_only=True)
    con.execute("SET allowed_directories = ?", [[f"{settings.lake_data_path}/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_readonly(settings: Settings, query: str, *, max_rows: int = 1000) -> tuple[list[str], list[tuple]]:
    """Run one query; return (column names, at most ``max_rows`` rows).

    Raises:
        InputError: the query is empty, fails, tries to write or to touch other files
            (one-line DuckDB message).
        ServiceError: the lake cannot be opened.
    """
    if not query.strip():
        raise InputError("empty query")
    if max_rows <= 0:
        raise InputError("--max-rows must be > 0")
    con = readonly_connection(settings)
    try:
        cur = con.execute(query)
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchmany(max_rows)
    except duckdb.Error as exc:
        raise InputError(str(exc).strip().splitlines()[0]) from None
    finally:
        con.close()
