"""Open the DuckLake lake from DuckDB: load the extensions offline, attach, create tables.

The catalog lives in PostgreSQL (``Settings.pg_catalog_database``) unless
``SENSORLAKE_CATALOG`` names a local DuckDB catalog file (embedded mode: batch imports,
notebooks, demos without servers). Data files are Parquet under ``Settings.lake_data_path``.

Every connection runs with ``SET TimeZone='UTC'`` so that day partitions and every
TIMESTAMPTZ rendering are UTC whatever the process time zone.
"""

from __future__ import annotations

import importlib
import re
import time
from pathlib import Path

import duckdb

from lake.schema import TABLES, ddl
from sensorlake.errors import ServiceError, first_line
from sensorlake.settings import Settings

LAKE = "lake"  # the name the lake is attached under in every connection
_EXT_PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    # the binary must be loaded under this name: its entry point is postgres_scanner_*
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension from the PyPI wheel that bundles it, else by plain ``LOAD``.

    No extension can be downloaded at run time here, so the ``duckdb-extension-<name>``
    wheel (pinned to the DuckDB version) provides the binary. The bundled file is tried
    first: a plain ``LOAD`` of a missing extension spends time trying to download it.

    Raises:
        ServiceError: neither the bundled file nor a plain LOAD worked.
    """
    bundled = _bundled_extension(name)
    if bundled is not None:
        try:
            con.execute(f"LOAD '{bundled}'")
            return
        except duckdb.Error:
            pass
    try:
        con.execute(f"LOAD {name}")
    except duckdb.Error as exc:
        raise ServiceError(
            f"DuckDB extension {name!r} cannot be loaded (install the pinned "
            f"duckdb-extension-{name.replace('_', '-')} wheel): {_masked(exc)}"
        ) from None


def _bundled_extension(name: str) -> Path | None:
    try:
        mod = importlib.import_module(_EXT_PACKAGES[name])
    except (KeyError, ImportError):
        return None
    base = Path(mod.__file__).parent / "extensions"
    files = sorted(base.glob(f"v{duckdb.__version__}/{name}.duckdb_extension")) or sorted(
        base.glob(f"*/{name}.duckdb_extension")
    )
    return files[0] if files else None


def attach_target(settings: Settings) -> str:
    """The ``ATTACH`` target string for the configured catalog.

    For PostgreSQL it names no server, user or password: those come from the connection's
    default postgres secret (:func:`_create_pg_secret`), so ``duckdb_databases()`` and
    error messages never show the password.
    """
    if settings.catalog_is_file:
        return f"ducklake:{Path(settings.catalog).expanduser()}"
    return "ducklake:postgres:"


def _sql_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _create_pg_secret(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """The connection's default postgres secret (DuckDB redacts its password)."""
    con.execute(
        "CREATE OR REPLACE SECRET (TYPE postgres, "
        f"HOST {_sql_literal(settings.pg_host or settings.host)}, PORT {int(settings.pg_port)}, "
        f"DATABASE {_sql_literal(settings.pg_catalog_database)}, USER {_sql_literal(settings.pg_user)}, "
        f"PASSWORD {_sql_literal(settings.pg_password)})"
    )


def connect(
    settings: Settings, *, read_only: bool = False, create: bool = True, attempts: int = 5
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as ``lake`` (see :func:`_connect_once`).

    Retries ``attempts`` times with a short back-off: two processes initialising a new
    catalog at the same moment conflict once, then both see the created tables. A missing
    catalog file opened ``read_only`` fails at once (nothing to retry).
    """
    if read_only and settings.catalog_is_file and not Path(settings.catalog).expanduser().exists():
        raise ServiceError(f"lake catalog file {settings.catalog} does not exist (nothing ingested yet?)")
    for attempt in range(attempts):
        try:
            return _connect_once(settings, read_only=read_only, create=create)
        except ServiceError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _connect_once(
    settings: Settings, *, read_only: bool = False, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as ``lake``.

    Args:
        settings: where the catalog and data live.
        read_only: attach the lake read-only (ad-hoc SQL, the app).
        create: create missing tables (ignored when ``read_only``).

    Returns:
        An in-memory DuckDB connection; the caller closes it.

    Raises:
        ServiceError: the catalog cannot be reached or opened.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        load_extension(con, "ducklake")
        if not settings.catalog_is_file:
            load_extension(con, "postgres_scanner")
            _create_pg_secret(con, settings)
        data_path = settings.lake_data_path
        if not read_only:
            data_path.mkdir(parents=True, exist_ok=True)
            if settings.catalog_is_file:
                Path(settings.catalog).expanduser().parent.mkdir(parents=True, exist_ok=True)
        opts = [f"DATA_PATH '{data_path}/'"]
        if read_only:
            opts.append("READ_ONLY")
        con.execute(f"ATTACH '{attach_target(settings)}' AS {LAKE} ({', '.join(opts)})")
        if create and not read_only:
            ensure_tables(con)
    except duckdb.Error as exc:
        con.close()
        raise ServiceError(f"cannot open the lake: {_masked(exc)}") from None
    except BaseException:
        con.close()
        raise
    return con


# table -> (PARTITIONED BY expression or None, inline small inserts in the catalog); others: (None, True)
_LAYOUT: dict[str, tuple[str | None, bool]] = {
    "movements": ("year(ts), month(ts), day(ts)", False),
    "window_stats": ("year(window_start), month(window_start)", True),
}


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the lake's tables if missing, with their layout options (:data:`_LAYOUT`).

    ``movements`` is partitioned by UTC day and never inlined (its micro-batches are
    large; Parquet keeps the files readable by snapshot); ``window_stats`` is partitioned
    by UTC month. Every other table keeps DuckLake's default: unpartitioned, small inserts
    inlined in the catalog.
    """
    existing = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE]
        ).fetchall()
    }
    for name, schema in TABLES.items():
        if name in existing:
            continue
        partition_by, inline = _LAYOUT.get(name, (None, True))
        con.execute("BEGIN")
        con.execute(ddl(f"{LAKE}.{name}", schema))
        if partition_by:
            con.execute(f"ALTER TABLE {LAKE}.{name} SET PARTITIONED BY ({partition_by})")
        con.execute("COMMIT")
        if not inline:
            # name: a key of TABLES, never user input
            con.execute(f"CALL {LAKE}.set_option('data_inlining_row_limit', 0, table_name => '{name}')")


def _masked(exc: BaseException) -> str:
    """:func:`~sensorlake.errors.first_line` of a connection error, any ``password=...`` masked."""
    return re.sub(r"password=\S+", "password=***", first_line(exc))
