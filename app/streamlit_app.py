"""sensorlake dashboard: live PostgreSQL metrics next to the lake's traffic analytics.

Run with ``sensorlake app`` (``streamlit run app/streamlit_app.py``). Settings are read from
``SENSORLAKE_*`` when a page runs. Pages (``app/views/``, one script each):

* **Live** (``/``): travelers active in the last N minutes per sensor and type, and their
  mean speed, from PostgreSQL ``traveler_summary``; refreshes itself.
* **History** (``/history``): volume, 85th-percentile speed, 5-mph speed bins, mode split
  and peak hour factor from the lake's derived tables, over a chosen range, zero-filled.
* **Heatmap** (``/heatmap``): the occupancy grid (5-ft cells) of one sensor.
* **SQL** (``/sql``): ad-hoc read-only DuckDB SQL over the lake, with a row and a time limit.
* **Data health** (``/health``): consumer lag, DLQ records by reason, lake snapshots and
  files per partition.

Filters reach SQL as bound parameters only. Times are UTC.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "views"  # not "pages/": Streamlit would list that itself

st.set_page_config(page_title="sensorlake", page_icon=":material/traffic:", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "live.py", title="Live", icon=":material/sensors:", default=True),
        st.Page(PAGES / "history.py", title="History", icon=":material/timeline:", url_path="history"),
        st.Page(PAGES / "heatmap.py", title="Heatmap", icon=":material/grid_on:", url_path="heatmap"),
        st.Page(PAGES / "sql.py", title="SQL", icon=":material/terminal:", url_path="sql"),
        st.Page(PAGES / "health.py", title="Data health", icon=":material/monitor_heart:", url_path="health"),
    ]
)
navigation.run()
