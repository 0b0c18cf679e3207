"""SQL page: ad-hoc read-only DuckDB SQL over the lake, with a row and a time limit.

:func:`lake.api.run_limited` attaches the lake read-only, disables external file access
(except the lake's own data files), caps memory and locks the configuration: a query can
read ``lake.*`` and nothing else, and cannot loosen those settings.
"""

from __future__ import annotations

import streamlit as st

from app import ui
from lake.api import TABLE_DOCS, run_limited
from sensorlake.errors import InputError, SensorlakeError

DEFAULT_SQL = """SELECT sensor_id, traveler_type,
       sum(volume) AS volume,
       round(avg(p85_speed_mph), 1) AS avg_p85_mph
FROM lake.window_stats
WHERE window_s = 900
GROUP BY ALL
ORDER BY sensor_id, traveler_type"""


def main() -> None:
    settings = ui.settings_or_stop()
    st.title("SQL")
    st.caption(
        "Read-only DuckDB SQL over the lake (tables `lake.*`): external file access disabled, "
        "configuration locked, a row limit and a time limit."
    )
    with st.expander("Tables"):
        st.table({"table": [f"lake.{t}" for t in TABLE_DOCS], "holds": list(TABLE_DOCS.values())})
    sql = st.text_area("Query", DEFAULT_SQL, height=180)
    a, b, _ = st.columns([1, 1, 3])
    max_rows = a.number_input("Row limit", min_value=1, max_value=100_000, value=1000, step=100)
    timeout_s = b.number_input("Time limit (s)", min_value=1, max_value=120, value=10)
    if st.button("Run", type="primary") or "sql_result" not in st.session_state:
        try:
            table, more = run_limited(settings, sql, max_rows=int(max_rows), timeout_s=float(timeout_s))
            st.session_state["sql_result"] = {"ok": True, "table": table, "more": more}
        except InputError as exc:  # the statement: refused, failed or too slow
            st.session_state["sql_result"] = {"ok": False, "error": str(exc), "lake": True}
        except SensorlakeError as exc:  # the lake itself
            st.session_state["sql_result"] = {"ok": False, "error": str(exc), "lake": False}
    res = st.session_state["sql_result"]
    if not res["ok"]:
        if res["lake"]:
            st.error(f"Query refused or failed: {res['error']}")
        else:
            st.warning(f"Lake not readable: {res['error']}")
        return
    table = res["table"]
    note = f" (first {table.num_rows} rows: the row limit)" if res["more"] else ""
    st.caption(f"{table.num_rows} rows{note}")
    st.dataframe(ui.frame(table) if table.num_columns else None, hide_index=True, width="stretch")


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it draws nothing
    main()
