"""The lake's fenced commit under real races: two writers can never both commit a partition.

DuckLake detects a conflict when two overlapping transactions delete rows of one table; a
DELETE that matches nothing records no change. These tests race real ``LakeWriter``s on a
PostgreSQL catalog, holding both transactions open until each has done all its work, so
the two COMMITs really overlap.
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from lake.catalog import connect
from lake.schema import MOVEMENTS_SCHEMA
from lake.writer import LakeWriter
from sensorlake.errors import FencedError

pytestmark = pytest.mark.services

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def batch(partition: int, first: int, n: int, tag: str) -> pa.Table:
    rows = {
        "sensor_id": [1] * n, "traveler_id": [f"{tag}{i}" for i in range(n)], "traveler_type": ["car"] * n,
        "ts": [T0_US + (first + i) * 1_000_000 for i in range(n)], "x_ft": [0.0] * n, "y_ft": [0.0] * n,
        "kafka_partition": [partition] * n, "kafka_offset": list(range(first, first + n)),
    }  # fmt: skip
    arrays = [pa.array(rows[f.name], pa.int64() if f.name == "ts" else f.type) for f in MOVEMENTS_SCHEMA]
    arrays[3] = arrays[3].cast(MOVEMENTS_SCHEMA.field("ts").type)
    return pa.Table.from_arrays(arrays, schema=MOVEMENTS_SCHEMA)


class _HoldCommit:
    """Connection proxy: the first COMMIT waits at a barrier shared with the other writer."""

    def __init__(self, con, barrier: threading.Barrier) -> None:
        self._con, self._barrier, self._held = con, barrier, False

    def execute(self, sql, *args, **kwargs):
        if sql == "COMMIT" and not self._held:
            self._held = True
            self._barrier.wait()
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


def race(s, jobs):
    """Run ``jobs`` = [(partition, first, n, expected)] on one writer each, COMMITs overlapping.

    Returns a list of ("ok", rows) or ("fenced", message), one per job.
    """
    barrier = threading.Barrier(len(jobs), timeout=60)
    writers = [LakeWriter(s, s.consumer_group, s.topic) for _ in jobs]
    results: list = [None] * len(jobs)

    def run(i, job):
        p, first, n, expected = job
        w = writers[i]
        try:
            results[i] = ("ok", w.commit(batch(p, first, n, f"w{i}-"), {p: first + n}, {p: expected}))
        except FencedError as exc:
            results[i] = ("fenced", str(exc))

    for w in writers:
        w.setup()
        w._con = _HoldCommit(w._con, barrier)
    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    finally:
        for w in writers:
            w.close()
    return results


def lake_rows(s):
    con = connect(s, read_only=True)
    try:
        rows = con.execute("SELECT kafka_partition, kafka_offset, traveler_id FROM lake.movements ORDER BY 1, 2").fetchall()
        offsets = dict(con.execute(
            "SELECT kafka_partition, max(next_offset) FROM lake.ingest_offsets WHERE topic = ? GROUP BY 1",
            [s.topic],
        ).fetchall())  # fmt: skip
    finally:
        con.close()
    return rows, offsets


def test_two_first_commits_of_a_partition_cannot_both_succeed(fault_env):
    """No offset row exists yet: without the fence row both DELETEs match nothing and
    DuckLake would let both commit (the batch twice in the lake)."""
    s = fault_env
    results = race(s, [(0, 0, 5, None), (0, 0, 5, None)])
    assert sorted(r[0] for r in results) == ["fenced", "ok"], results
    rows, offsets = lake_rows(s)
    assert [r[:2] for r in rows] == [(0, i) for i in range(5)]
    assert len({r[2][:3] for r in rows}) == 1  # all five from the one writer that won
    assert offsets == {0: 5}


def test_two_later_commits_of_a_partition_cannot_both_succeed(fault_env):
    s = fault_env
    w = LakeWriter(s, s.consumer_group, s.topic)
    w.setup()
    try:
        assert w.commit(batch(0, 0, 3, "first-"), {0: 3}, {0: None}) == 3
    finally:
        w.close()
    results = race(s, [(0, 3, 4, 3), (0, 3, 4, 3)])
    assert sorted(r[0] for r in results) == ["fenced", "ok"], results
    rows, offsets = lake_rows(s)
    assert [r[:2] for r in rows] == [(0, i) for i in range(7)]
    assert offsets == {0: 7}


def test_commits_of_different_partitions_both_succeed(fault_env):
    """The fence serialises commits, it does not refuse them: a conflict on another
    partition is retried and goes through."""
    s = fault_env
    results = race(s, [(0, 0, 5, None), (1, 0, 6, None)])
    assert [r[0] for r in results] == ["ok", "ok"], results
    rows, offsets = lake_rows(s)
    assert len(rows) == 11
    assert offsets == {0: 5, 1: 6}


def test_many_writers_claiming_one_partition_leave_no_gap_and_no_duplicate(fault_env):
    """Four writers each believe they own partition 0 and commit 15 batches; a fenced
    writer re-reads the lake's offset and continues from there (as the consumer does).
    The partition's offsets in the lake are exactly 0..N-1, each once."""
    s = fault_env
    n_writers, n_batches = 4, 15
    errors: list[BaseException] = []
    fenced = [0] * n_writers
    start = threading.Barrier(n_writers, timeout=60)

    def run(i: int) -> None:
        w = LakeWriter(s, s.consumer_group, s.topic)
        try:
            w.setup()
            start.wait()
            expected = w.stored_offsets([0]).get(0)
            for k in range(n_batches):
                first = expected or 0
                size = 1 + (i + k) % 4
                try:
                    w.commit(batch(0, first, size, f"w{i}b{k}-"), {0: first + size}, {0: expected})
                    expected = first + size
                except FencedError:
                    fenced[i] += 1
                    expected = w.stored_offsets([0]).get(0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            w.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    rows, offsets = lake_rows(s)
    got = [off for p, off, _ in rows]
    assert got == list(range(len(got)))  # contiguous from 0, no duplicate
    assert offsets == {0: len(got)}
    assert sum(fenced) > 0  # the writers really raced
