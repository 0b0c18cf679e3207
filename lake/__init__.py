"""The sensorlake lake: DuckLake tables of raw events and derived traffic measures.

For analysts (:mod:`lake.api`, re-exported here)::

    import lake
    con = lake.connect()                                  # DuckDB, the lake attached read-only
    df = lake.table("window_stats", window_s=900)         # Polars
    df = lake.query("SELECT * FROM lake.peak_hour WHERE sensor_id = ?", [1])

Importing this package connects to nothing and imports no engine: the names below are
loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TABLE_DOCS", "TIME_COLUMNS", "connect", "query", "run_limited", "table", "tables"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lake import api

        return getattr(api, name)
    raise AttributeError(f"module 'lake' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
