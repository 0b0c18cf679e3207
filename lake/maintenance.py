"""Scheduled lake maintenance, with DuckLake's own functions only.

One run does, in this order (each step is one DuckLake call on the attached ``lake``):

1. **compaction**: ``ducklake_merge_adjacent_files`` merges the many small Parquet files of
   the streaming micro-batches (within a partition) into fewer, larger ones. Snapshots stay
   readable (time travel keeps working): the old files are only *scheduled* for deletion.
2. **snapshot expiry**: ``ducklake_expire_snapshots(older_than => now - snapshot_retention)``
   forgets snapshots older than the retention (time travel reaches back that far, no further);
   the files only they referenced are scheduled for deletion.
3. **clean-up of old files**: ``ducklake_cleanup_old_files(older_than => now - file_grace)``
   deletes files scheduled for deletion more than ``file_grace`` ago (a reader that started
   before may still be scanning them: keep the grace longer than the longest query).
4. **orphaned files**: ``ducklake_delete_orphaned_files(older_than => now - file_grace)``
   deletes files under the data path that no snapshot references and that are older than
   the grace: what a writer killed between writing its Parquet files and its COMMIT left
   behind. A writer still inside its transaction has files younger than the grace, which
   must exceed the longest lake commit (``lake.writer.RETRY_FOR_S``, 90 s): never use a grace
   of 0 while consumers run.

Nothing here lists or deletes files by itself: DuckLake knows which files a snapshot
references. Compaction conflicts with a concurrent commit that deletes from the same table
(DuckLake aborts one of them); the consumer retries its commit, and a conflicting
maintenance run raises :class:`~sensorlake.errors.RetryableError` (run it again).

Schedule it like the transforms (cron, or the compose scheduler), e.g. hourly:
``sensorlake maintain``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import duckdb

from lake.catalog import LAKE, connect
from sensorlake.errors import InputError, RetryableError, ServiceError, first_line
from sensorlake.settings import Settings

DEFAULT_SNAPSHOT_RETENTION = timedelta(days=7)
DEFAULT_FILE_GRACE = timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class MaintenanceResult:
    """What one maintenance run did.

    Attributes:
        files_merged: data files replaced by compaction (``files_processed``).
        files_created: data files compaction wrote.
        snapshots_expired: snapshots forgotten.
        old_files_deleted: files deleted because no live snapshot needs them any more.
        orphans_deleted: unreferenced files (a crashed writer's) deleted.
        dry_run: True when nothing was changed (the counts say what would have been).
        seconds: wall time of the run.
    """

    files_merged: int
    files_created: int
    snapshots_expired: int
    old_files_deleted: int
    orphans_deleted: int
    dry_run: bool
    seconds: float

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"compaction: {self.files_merged} files merged into {self.files_created}; "
            f"{self.snapshots_expired} snapshots expired; {verb} {self.old_files_deleted} old "
            f"and {self.orphans_deleted} orphaned files in {self.seconds:.1f} s"
        )


def run_maintenance(
    settings: Settings,
    *,
    snapshot_retention: timedelta = DEFAULT_SNAPSHOT_RETENTION,
    file_grace: timedelta = DEFAULT_FILE_GRACE,
    compact: bool = True,
    dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> MaintenanceResult:
    """Compact, expire snapshots and delete unneeded files of the lake (see module docstring).

    Args:
        settings: where the lake is.
        snapshot_retention: snapshots older than this are expired (>= 0).
        file_grace: files scheduled for deletion, or orphaned, less than this long ago are
            kept (>= 0; keep it above the longest query and the longest lake commit).
        compact: run ``ducklake_merge_adjacent_files`` first.
        dry_run: change nothing; report what expiry and clean-up would delete
            (compaction is skipped).
        now: the wall clock (UTC), injectable for tests.

    Returns:
        A :class:`MaintenanceResult`.

    Raises:
        InputError: a negative retention or grace.
        RetryableError: a concurrent writer conflicted with a step; run again.
        ServiceError: the lake cannot be opened.
    """
    if snapshot_retention < timedelta(0) or file_grace < timedelta(0):
        raise InputError("snapshot retention and file grace must be >= 0")
    t0 = time.monotonic()
    con = connect(settings)
    try:
        merged = created = 0
        if compact and not dry_run:
            for _schema, _table, processed, made in _call(con, f"CALL ducklake_merge_adjacent_files('{LAKE}')"):
                merged += int(processed or 0)
                created += int(made or 0)
        t = now()
        expired = _call(
            con, f"CALL ducklake_expire_snapshots('{LAKE}', dry_run => ?, older_than => ?)",
            [dry_run, t - snapshot_retention],
        )  # fmt: skip
        old = _call(
            con, f"CALL ducklake_cleanup_old_files('{LAKE}', dry_run => ?, older_than => ?)", [dry_run, t - file_grace]
        )
        orphans = _call(
            con, f"CALL ducklake_delete_orphaned_files('{LAKE}', dry_run => ?, older_than => ?)",
            [dry_run, t - file_grace],
        )  # fmt: skip
    finally:
        con.close()
    return MaintenanceResult(
        files_merged=merged, files_created=created, snapshots_expired=len(expired),
        old_files_deleted=len(old), orphans_deleted=len(orphans), dry_run=dry_run,
        seconds=time.monotonic() - t0,
    )  # fmt: skip


def _call(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    try:
        return con.execute(sql, params or []).fetchall()
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.TransactionException) or "conflict" in str(exc).lower():
            raise RetryableError(f"lake maintenance conflicted with a concurrent commit: {first_line(exc)}") from None
        raise ServiceError(f"lake maintenance failed: {first_line(exc)}") from None
