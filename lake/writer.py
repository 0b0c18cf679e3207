"""Exactly-once micro-batch commits into the lake.

A micro-batch's raw events and the consumer's next offset per Kafka partition commit in
ONE DuckLake transaction:

1. read the stored next offsets of the batch's partitions (inside the transaction);
2. check each equals what this consumer saw when it last synchronised (its *expected*
   start: the value it seeked to on assignment, or its own previous commit). Any
   difference means another consumer has written that partition since: raise
   :class:`~sensorlake.errors.FencedError` and write nothing;
3. insert the events (sorted by sensor_id, ts), delete the partitions' offset rows and
   insert the new ones, and delete and re-insert the row of ``lake.ingest_fence``;
4. commit.

Why the fence row: DuckLake detects a conflict between two transactions that both
*delete* rows of one table (``deleted_from_table``), but a DELETE that matches no row
records no change. Two writers making the first commit of a partition (no offset row yet)
would therefore both commit, and the batch would be in the lake twice. ``ingest_fence``
always holds a row (seeded when the table is created, re-inserted by every commit), so
every commit deletes at least one row of it and any two overlapping commits conflict:
one fails, is retried from step 1, sees the other's offsets and is fenced. Committed
events are therefore in the lake exactly once, whatever is killed when
(``tests/faults/test_lake_fence.py`` races real writers to prove it).

A commit whose outcome is unknown (the catalog connection dropped during COMMIT) is safe
for the same reason: the retry either finds the offsets unchanged (nothing was
committed) or finds its own new offsets and is fenced (it was).

Failures of the catalog (PostgreSQL restarted, connection dropped) are retried with a
fresh DuckDB connection, for at most ``RETRY_FOR_S`` seconds, then raised as
:class:`~sensorlake.errors.RetryableError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import TypeVar

import duckdb
import pyarrow as pa
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from lake.catalog import LAKE, connect
from lake.reader import stored_offsets
from lake.schema import MOVEMENTS_SCHEMA
from sensorlake.errors import FencedError, RetryableError, ServiceError, first_line
from sensorlake.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_FOR_S = 90.0  # how long a commit or an offsets read is retried (conflicts, catalog down)
FENCE_TABLE = "ingest_fence"
_FENCE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LAKE}.{FENCE_TABLE} "
    "(consumer_group VARCHAR NOT NULL, topic VARCHAR NOT NULL, committed_at TIMESTAMPTZ NOT NULL)"
)


class LakeWriter:
    """Commits micro-batches of ``lake.movements`` with their offsets.

    Args:
        settings: lake location.
        consumer_group, topic: offsets are read and replaced per (topic, kafka_partition),
            whichever group wrote them (the lake holds one copy of a topic's events);
            ``consumer_group`` records the last writer.
    """

    def __init__(self, settings: Settings, consumer_group: str, topic: str) -> None:
        self._settings = settings
        self.group = consumer_group
        self.topic = topic
        self._con: duckdb.DuckDBPyConnection | None = None

    def setup(self) -> None:
        """Open the lake (creates its tables when missing) and make sure the fence row exists.

        Raises:
            ServiceError: the catalog cannot be reached.
        """
        self._con = connect(self._settings)
        try:
            _ensure_fence(self._con)
        except duckdb.Error as exc:
            self.close()
            raise ServiceError(f"cannot prepare the lake fence table: {first_line(exc)}") from None

    def close(self) -> None:
        """Close the DuckDB connection."""
        if self._con is not None:
            with suppress(duckdb.Error):
                self._con.close()
            self._con = None

    def _reconnect(self) -> None:
        self.close()
        try:
            self.setup()
        except ServiceError as exc:
            self.close()
            raise RetryableError(f"lake catalog unreachable: {exc}") from exc

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which raises RetryableError on failure), retrying for ``RETRY_FOR_S``."""

        @retry(
            retry=retry_if_exception_type(RetryableError),
            stop=stop_after_delay(RETRY_FOR_S),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        def _call() -> T:
            if self._con is None:
                self._reconnect()
            return fn()

        return _call()

    def stored_offsets(self, partitions: list[int] | None = None) -> dict[int, int]:
        """Next offset to consume per partition, as stored in the lake (absent: none yet).

        Raises:
            RetryableError: the catalog stayed unreachable for ``RETRY_FOR_S`` seconds.
        """

        def read() -> dict[int, int]:
            try:
                return stored_offsets(self._con, self.topic, partitions)
            except duckdb.Error as exc:
                self.close()  # reconnect on the next attempt
                raise RetryableError(f"lake offsets read failed: {first_line(exc)}") from exc

        return self._retrying(read)

    def commit(
        self,
        events: pa.Table,
        next_offsets: Mapping[int, int],
        expected: Mapping[int, int | None],
    ) -> int:
        """Commit ``events`` and ``next_offsets`` atomically, fenced by ``expected``.

        Conflicts and catalog failures are retried (from a fresh read of the offsets, on a
        new connection after a failure other than a conflict) for ``RETRY_FOR_S`` seconds.

        Args:
            events: rows of ``MOVEMENTS_SCHEMA`` (cast to it; may be empty when only
                offsets move, e.g. a poll of DLQ-only records).
            next_offsets: partition -> next offset to consume after this batch.
            expected: partition -> stored next offset this writer last saw (None: none).

        Returns:
            The number of event rows written.

        Raises:
            FencedError: a partition's stored offset is not the expected one.
            RetryableError: the commit kept failing for ``RETRY_FOR_S`` seconds.
        """
        table = events.cast(MOVEMENTS_SCHEMA).sort_by([("sensor_id", "ascending"), ("ts", "ascending")])
        return self._retrying(lambda: self._commit_once(table, next_offsets, expected))

    def _commit_once(
        self, table: pa.Table, next_offsets: Mapping[int, int], expected: Mapping[int, int | None]
    ) -> int:
        con = self._con
        parts = sorted(next_offsets)
        try:
            con.execute("BEGIN")
            stored = stored_offsets(con, self.topic, parts)
            for p in parts:
                if stored.get(p) != expected.get(p):
                    raise FencedError(
                        f"partition {p}: lake has next offset {stored.get(p)}, expected {expected.get(p)}"
                    )
            if table.num_rows:
                con.register("_sl_batch", table)
                con.execute(f"INSERT INTO {LAKE}.movements SELECT * FROM _sl_batch")
                con.unregister("_sl_batch")
            now = datetime.now(UTC)
            if parts:
                con.execute(
                    f"DELETE FROM {LAKE}.ingest_offsets WHERE topic = ? "
                    f"AND kafka_partition IN ({', '.join(str(int(p)) for p in parts)})",
                    [self.topic],
                )
                con.executemany(
                    f"INSERT INTO {LAKE}.ingest_offsets VALUES (?, ?, ?, ?, ?)",
                    [[self.group, self.topic, p, int(next_offsets[p]), now] for p in parts],
                )
            # the fence: every commit deletes a row here, so overlapping commits conflict
            con.execute(f"DELETE FROM {LAKE}.{FENCE_TABLE}")
            con.execute(f"INSERT INTO {LAKE}.{FENCE_TABLE} VALUES (?, ?, ?)", [self.group, self.topic, now])
            con.execute("COMMIT")
        except FencedError:
            _rollback(con)
            raise
        except duckdb.Error as exc:
            _rollback(con)
            msg = first_line(exc)
            if "conflict" in msg.lower():
                log.info("lake commit conflict, retrying: %s", msg)
            else:  # the catalog connection may be dead (PostgreSQL restarted): start afresh
                log.warning("lake commit failed, reconnecting and retrying: %s", msg)
                self.close()
            raise RetryableError(f"lake commit failed: {msg}") from exc
        return table.num_rows


def _ensure_fence(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``lake.ingest_fence`` with its seed row if missing; re-seed it if empty.

    Creation and seed are one transaction, so no commit can ever see the table empty
    (two processes creating it at once conflict: one retries, sees the table, moves on).
    """
    for attempt in range(10):
        try:
            exists = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                [LAKE, FENCE_TABLE],
            ).fetchone()[0]
            if exists and con.execute(f"SELECT count(*) FROM {LAKE}.{FENCE_TABLE}").fetchone()[0]:
                return
            con.execute("BEGIN")
            con.execute(_FENCE_DDL)
            con.execute(f"INSERT INTO {LAKE}.{FENCE_TABLE} VALUES ('', '', now())")
            con.execute("COMMIT")
            return
        except duckdb.Error:
            _rollback(con)
            if attempt == 9:
                raise
            time.sleep(0.1 * (attempt + 1))


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")
