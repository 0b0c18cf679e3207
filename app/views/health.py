"""Data health page: consumer lag, DLQ records by reason, lake snapshots and files.

Definitions in :mod:`app.health` (lag = Kafka high watermark - the lake's stored next
offset) and :func:`lake.reader.lake_files` (files per table and partition of the current
snapshot). Kafka and the lake are read with timeouts; a service that is down shows its
error and the rest still renders.
"""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from app import health, ui


def main() -> None:
    settings = ui.settings_or_stop()
    st.title("Data health")
    if st.button("Refresh"):
        ui.kafka_health.clear()
        ui.lake_health.clear()
    lake_res = ui.lake_health(settings)
    kafka_res = ui.kafka_health(settings)

    st.subheader("Consumer lag")
    if not kafka_res["ok"]:
        st.warning(f"{kafka_res['error']}: lag and DLQ unavailable.")
    else:
        stored = lake_res.get("offsets", {}) if lake_res["ok"] else {}
        lag = pl.DataFrame(health.consumer_lag(kafka_res["high"], stored))
        a, b, c = st.columns(3)
        a.metric("Lag (records not in the lake)", f"{int(lag['lag'].sum()) if lag.height else 0:,}")
        b.metric("Produced (high watermarks)", f"{int(lag['high_watermark'].sum()) if lag.height else 0:,}")
        c.metric("Partitions", lag.height)
        st.caption(f"topic {settings.topic}, consumer group {settings.consumer_group}")
        st.dataframe(lag, hide_index=True, width="stretch")

    st.subheader("Dead-letter queue")
    if kafka_res["ok"] and "dlq" in kafka_res:
        dlq = kafka_res["dlq"]
        st.caption(f"{settings.dlq_topic}: read the newest {dlq['read']:,} of {dlq['total']:,} records")
        if dlq["reasons"]:
            reasons = pl.DataFrame({"reason": list(dlq["reasons"]), "records": list(dlq["reasons"].values())})
            st.altair_chart(
                alt.Chart(reasons, title="DLQ records by reason")
                .mark_bar()
                .encode(x=alt.X("records:Q", axis=alt.Axis(tickMinStep=1, format="d")),
                        y=alt.Y("reason:N", sort="-x", axis=alt.Axis(labelLimit=300)),
                        tooltip=["reason", "records"]),
                width="stretch",
            )
        else:
            st.info("The DLQ is empty.")
    elif kafka_res["ok"]:
        st.warning(kafka_res.get("dlq_error", "DLQ unavailable"))

    st.subheader("Lake")
    if not ui.lake_ok(lake_res):
        return
    snaps = lake_res["snapshots"]
    if snaps:
        last = snaps[0]
        a, b = st.columns(2)
        a.metric("Last snapshot", last["snapshot_id"])
        b.metric("Committed (UTC)", f"{last['snapshot_time']:%Y-%m-%d %H:%M:%S}")
        st.dataframe(
            pl.DataFrame([{**s, "changes": str(s["changes"])} for s in snaps]), hide_index=True, width="stretch"
        )
    files = pl.DataFrame(lake_res["files"], schema={"table": pl.String, "partition": pl.String, "files": pl.Int64,
                                                    "bytes": pl.Int64, "delete_files": pl.Int64})  # fmt: skip
    st.caption(f"{int(files['files'].sum()) if files.height else 0} data files in {files.height} table partitions")
    if files.height:
        st.altair_chart(
            alt.Chart(files.with_columns((pl.col("table") + " " + pl.col("partition")).alias("where")),
                      title="Data files per partition")
            .mark_bar()
            .encode(x=alt.X("files:Q", axis=alt.Axis(tickMinStep=1, format="d")),
                    y=alt.Y("where:N", title=None, sort="-x", axis=alt.Axis(labelLimit=400)), color="table:N",
                    tooltip=["table", "partition", "files", "bytes", "delete_files"]),
            width="stretch",
        )
        st.dataframe(files, hide_index=True, width="stretch")


if __name__ == "__main__":  # Streamlit runs a page as __main__; importing it draws nothing
    main()
