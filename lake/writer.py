"""Exactly-once micro-batch commits into the lake.

A micro-batch's raw events and the consumer's next offset per Kafka partition commit in
ONE DuckLake transaction:

1. read the stored next offsets of the batch's partitions (inside the transaction);
2. check each equals what this consumer saw when it last synchronised (its *expected*
   start: the value it seeked to on assignment, or its own previous commit). Any
   difference means another consumer has written that partition since: raise
   :class:`~sensorlake.errors.FencedError` and write nothing;
3. insert the events (sorted by sensor_id, ts), delete the partitions' offset rows and
   insert the new ones;
4. commit.

Two transactions that both delete from ``ingest_offsets`` conflict in DuckLake, so two
writers racing on the same partition cannot both pass step 2: one commit fails and is
retried from step 1, where it sees the other's offsets and is fenced. Committed events are
therefore in the lake exactly once, whatever is killed when.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from lake.catalog import LAKE, connect
from lake.schema import MOVEMENTS_SCHEMA
from sensorlake.errors import FencedError, RetryableError
from sensorlake.settings import Settings

log = logging.getLogger(__name__)


class LakeWriter:
    """Commits micro-batches of ``lake.movements`` with their offsets.

    Args:
        settings: lake location.
        consumer_group, topic: the offsets' owner; offsets are stored per
            (consumer_group, topic, kafka_partition).
    """

    def __init__(self, settings: Settings, consumer_group: str, topic: str) -> None:
        self._settings = settings
        self.group = consumer_group
        self.topic = topic
        self._con: duckdb.DuckDBPyConnection | None = None

    def setup(self) -> None:
        """Open the lake (creates its tables when missing)."""
        self._con = connect(self._settings)

    def close(self) -> None:
        """Close the DuckDB connection."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def stored_offsets(self, partitions: list[int] | None = None) -> dict[int, int]:
        """Next offset to consume per partition, as stored in the lake (absent: none yet)."""
        return self._read_offsets(self._con, partitions)

    def _read_offsets(self, con: duckdb.DuckDBPyConnection, partitions: list[int] | None) -> dict[int, int]:
        sql = (
            f"SELECT kafka_partition, max(next_offset) FROM {LAKE}.ingest_offsets "
            "WHERE consumer_group = ? AND topic = ? GROUP BY kafka_partition"
        )
        rows = con.execute(sql, [self.group, self.topic]).fetchall()
        out = {int(p): int(o) for p, o in rows}
        if partitions is not None:
            out = {p: o for p, o in out.items() if p in set(partitions)}
        return out

    @retry(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_attempt(30),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )
    def commit(
        self,
        events: pa.Table,
        next_offsets: Mapping[int, int],
        expected: Mapping[int, int | None],
    ) -> int:
        """Commit ``events`` and ``next_offsets`` atomically, fenced by ``expected``.

        Args:
            events: rows of ``MOVEMENTS_SCHEMA`` (cast to it; may be empty when only
                offsets move, e.g. a poll of DLQ-only records).
            next_offsets: partition -> next offset to consume after this batch.
            expected: partition -> stored next offset this writer last saw (None: none).

        Returns:
            The number of event rows written.

        Raises:
            FencedError: a partition's stored offset is not the expected one.
            RetryableError: the commit kept conflicting (after retries).
        """
        con = self._con
        table = events.cast(MOVEMENTS_SCHEMA).sort_by([("sensor_id", "ascending"), ("ts", "ascending")])
        parts = sorted(next_offsets)
        try:
            con.execute("BEGIN")
            stored = self._read_offsets(con, parts)
            for p in parts:
                if stored.get(p) != expected.get(p):
                    raise FencedError(
                        f"partition {p}: lake has next offset {stored.get(p)}, expected {expected.get(p)}"
                    )
            if table.num_rows:
                con.register("_sl_batch", table)
                con.execute(f"INSERT INTO {LAKE}.movements SELECT * FROM _sl_batch")
                con.unregister("_sl_batch")
            if parts:
                con.execute(
                    f"DELETE FROM {LAKE}.ingest_offsets WHERE consumer_group = ? AND topic = ? "
                    f"AND kafka_partition IN ({', '.join(str(int(p)) for p in parts)})",
                    [self.group, self.topic],
                )
                now = datetime.now(UTC)
                con.executemany(
                    f"INSERT INTO {LAKE}.ingest_offsets VALUES (?, ?, ?, ?, ?)",
                    [[self.group, self.topic, p, int(next_offsets[p]), now] for p in parts],
                )
            con.execute("COMMIT")
        except FencedError:
            _rollback(con)
            raise
        except duckdb.Error as exc:
            _rollback(con)
            msg = str(exc).splitlines()[0]
            log.info("lake commit conflict/failure, retrying: %s", msg)
            raise RetryableError(f"lake commit failed: {msg}") from exc
        return table.num_rows


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
