"""Consumers killed, replaced and racing: replays change nothing, offsets never run ahead.

Real consumer processes on the private stack, killed with SIGKILL at chosen points.
"""

from __future__ import annotations

import dataclasses
import signal
import threading

import pytest
from confluent_kafka import Consumer, TopicPartition

from ingest.consumer import MovementConsumer, _retry_service
from sensorlake.kinematics import summarize
from tests.faults.helpers import (
    T0_US,
    ConsumerThread,
    assert_summaries_equal,
    ev,
    high_watermarks,
    kafka_committed,
    lake_count,
    lake_offsets,
    lake_table,
    pg_states,
    redis_states,
    same_state,
    send,
    spawn_consumer,
    stop_all,
    wait_until,
)

pytestmark = pytest.mark.services

T1 = [ev("T1", 0, 0, 0), ev("T1", 10, 100, 0), ev("T1", 20, 100, 150)]


def assert_t1(st) -> None:
    """T1's summary: 3 observations, segments of 10 and 15 ft/s, 250 ft in 20 s."""
    assert st.observations == 3
    assert (st.first_seen_us, st.last_seen_us) == (T0_US, T0_US + 20_000_000)
    assert (st.last_x_ft, st.last_y_ft) == (100.0, 150.0)
    assert (st.min_speed_fps, st.max_speed_fps) == (10.0, 15.0)
    assert st.distance_ft == 250.0 and st.duration_s == 20.0
    assert st.avg_speed_fps == 12.5
    assert st.late_count == st.duplicate_count == st.rejected_count == 0


def test_replay_after_a_rebalance_changes_nothing(fault_env, tmp_path):
    """Consumer A applies T1's three events to Redis and PostgreSQL, then dies before any
    commit; consumer B receives all three again: the summary is unchanged, never negative."""
    s = fault_env
    send(s, T1)
    holder = dataclasses.replace(s, max_batch_age_s=600.0)  # A never flushes to the lake
    a = spawn_consumer(holder, log_path=tmp_path / "a.log")
    try:
        wait_until(lambda: any(st.observations == 3 for st in pg_states(s).values()), 60, what="A to apply T1")
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        a.stdout.close()
    assert lake_count(s) == 0 and lake_offsets(s) == {} and kafka_committed(s) == {}

    b = ConsumerThread(s).start()
    try:
        wait_until(lambda: lake_count(s) == 3, 60, what="B to commit T1 to the lake")
    finally:
        stats = b.stop()
    assert stats.outcomes["replayed"] == 3 and stats.valid == 3  # B saw all three again
    (st,) = pg_states(s).values()
    assert_t1(st)
    assert_t1(redis_states(s)[(1, "T1")])
    lake = lake_table(s)
    assert lake.column("kafka_offset").to_pylist() == [0, 1, 2]


@pytest.mark.parametrize("killpoint", ["before_lake_commit", "mid_lake_commit", "after_lake_commit"])
def test_kill_between_sinks_and_commits_loses_and_duplicates_nothing(fault_env, tmp_path, killpoint):
    """No offset is committed or stored before both sinks hold the events; a SIGKILL before,
    during or after the lake commit (before Kafka's) loses nothing and duplicates nothing."""
    s = fault_env
    events = [ev(f"k{i % 20}", (i // 20) * 0.7, i, i % 7) for i in range(400)]
    send(s, events)
    hw = {p: o for p, o in high_watermarks(s).items() if o}
    victim = spawn_consumer(s, killpoint=killpoint, log_path=tmp_path / "victim.log")
    try:
        rc = victim.wait(60)
    finally:
        stop_all([victim])
    assert rc == -signal.SIGKILL, (tmp_path / "victim.log").read_text()[-2000:]

    # when it died: Kafka has no committed offset; the lake has the batch only after its commit
    assert kafka_committed(s) == {}
    if killpoint == "after_lake_commit":
        assert lake_count(s) > 0 and lake_offsets(s)
    else:
        assert lake_count(s) == 0 and lake_offsets(s) == {}
        # ... while both sinks already held what had been polled
        assert pg_states(s) and redis_states(s)

    survivor = ConsumerThread(s).start()
    try:
        wait_until(lambda: survivor.assigned() and lake_offsets(s) == hw, 90, what="the survivor to catch up")
        wait_until(lambda: kafka_committed(s) == hw, 20, what="Kafka's committed offsets to follow the lake")
    finally:
        survivor.stop()
    lake = lake_table(s)
    pairs = list(zip(lake.column("kafka_partition").to_pylist(), lake.column("kafka_offset").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 400
    assert_summaries_equal(pg_states(s), summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s))


def test_kill_between_the_two_state_sinks_at_a_visit_boundary(fault_env, tmp_path):
    """A poll closes T3's first visit (t=20) and opens its second (t=200, after the 60 s
    gap); the consumer dies after writing one of PostgreSQL and Redis. The replay must
    still give the first visit its final summary (3 observations), and the second its own."""
    s = fault_env
    events = [ev("T3", 0, 0, 0), ev("T3", 10, 100, 0), ev("T3", 20, 200, 0), ev("T3", 200, 0, 0), ev("T3", 210, 50, 0)]
    send(s, events[:2], partition=0)
    first = ConsumerThread(s).start()
    try:
        wait_until(lambda: lake_count(s) == 2, 60, what="the first two events")
    finally:
        first.stop()
    send(s, events[2:], partition=0)
    victim = spawn_consumer(s, killpoint="between_state_sinks", log_path=tmp_path / "victim.log")
    try:
        assert victim.wait(60) == -signal.SIGKILL, (tmp_path / "victim.log").read_text()[-2000:]
    finally:
        stop_all([victim])
    survivor = ConsumerThread(s).start()
    try:
        wait_until(lambda: survivor.assigned() and lake_count(s) == 5, 60, what="the replay")
    finally:
        survivor.stop()
    expected = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
    assert [v.observations for _, v in sorted(expected.items())] == [3, 2]
    assert_summaries_equal(pg_states(s), expected)


def _commit_wrong_kafka_offsets(s, offsets: dict[int, int]) -> None:
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": s.consumer_group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(s.topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def test_assignment_seeks_to_the_lake_offsets_never_to_kafkas(fault_env, tmp_path):
    """Kafka's committed offsets are made wrong on purpose (behind the lake on one
    partition, ahead of it on another, ahead on a partition the lake has never seen);
    consumers then join and leave several times. Every partition's offsets in the lake are
    exactly 0..end-1, each once: each assignment sought to the lake's offsets."""
    s = fault_env
    wave1 = [ev(f"a{p}-{i}", i * 0.6, i, 0) for p in (0, 1) for i in range(50)]
    for p in (0, 1):
        send(s, [e for e in wave1 if e.traveler_id.startswith(f"a{p}-")], partition=p)
    first = ConsumerThread(s).start()
    try:
        wait_until(lambda: lake_offsets(s) == {0: 50, 1: 50}, 60, what="wave 1 in the lake")
    finally:
        first.stop()
    _commit_wrong_kafka_offsets(s, {0: 10, 1: 90, 2: 40})  # behind, ahead, ahead of nothing

    wave2 = [ev(f"b{i % 12}", 100 + i * 0.6, i, 1) for i in range(600)]
    for k, p in enumerate((0, 1, 2, 3)):
        send(s, wave2[k::4], partition=p)
    hw = high_watermarks(s)
    logs = tmp_path / "c.log"
    procs = [spawn_consumer(s, log_path=logs)]
    try:
        wait_until(lambda: lake_count(s) > 100, 60, what="the first consumer to commit")
        procs.append(spawn_consumer(s, log_path=logs))  # join: rebalance
        procs.append(spawn_consumer(s, log_path=logs))  # join: rebalance
        wait_until(lambda: lake_count(s) > 300, 60, what="progress after the joins")
        stop_all(procs[:1])  # leave: rebalance
        wait_until(lambda: lake_offsets(s) == hw, 90, what="every partition to the end")
    finally:
        stop_all(procs)
    lake = lake_table(s)
    for p in range(4):
        offs = [o for q, o in zip(lake.column("kafka_partition").to_pylist(), lake.column("kafka_offset").to_pylist(), strict=True) if q == p]
        assert offs == list(range(hw[p])), f"partition {p}: gap or duplicate"


def test_two_consumers_updating_one_traveler_at_once(fault_env):
    """Consumer A reads T2's state, then B applies the same three events (a rebalance
    overlap) before A writes: A's compare-and-set fails, A re-reads and finds them applied.
    Final state: the newest point (t=20, (100, 150)); speeds 10 and 15 each counted once."""
    s = fault_env
    events = [ev("T2", 0, 0, 0), ev("T2", 10, 100, 0), ev("T2", 20, 100, 150)]
    batch = [(e, 0, off) for off, e in enumerate(events)]
    a, b = MovementConsumer(s), MovementConsumer(s)
    for c in (a, b):
        c._redis.setup()
        c._pg.setup()
    try:
        real_upsert = a._pg.upsert
        interleaved = []

        def b_overtakes_a(states):
            if not interleaved:  # A has read and computed, written nothing; B runs now
                interleaved.append(True)
                b._apply_kinematics(batch)  # writes PostgreSQL, then Redis
            return real_upsert(states)

        a._pg.upsert = b_overtakes_a
        a._apply_kinematics(batch)
    finally:
        for c in (a, b):
            c._pg.close()
            c._redis.close()
    assert a.stats.cas_conflicts == 1
    assert a.stats.outcomes == {"replayed": 3}
    assert b.stats.outcomes == {"new_visit": 1, "accepted": 2}
    st = redis_states(s)[(1, "T2")]
    assert (st.last_seen_us, st.last_x_ft, st.last_y_ft) == (T0_US + 20_000_000, 100.0, 150.0)
    assert (st.observations, st.distance_ft, st.duration_s) == (3, 250.0, 20.0)
    assert (st.min_speed_fps, st.max_speed_fps) == (10.0, 15.0)
    (row,) = pg_states(s).values()
    assert (row.observations, row.distance_ft, row.min_speed_fps, row.max_speed_fps) == (3, 250.0, 10.0, 15.0)


def test_concurrent_consumers_hammering_the_same_travelers_agree_with_the_reference(fault_env):
    """Two consumers apply the same 1,200 events of 8 travelers at the same time, in
    different batch splits (as two owners of a partition during a rebalance would): the
    compare-and-set keeps every state equal to the single-writer reference."""
    s = fault_env
    events = [ev(f"h{i % 8}", (i // 8) * 0.3, (i // 8) * 3.0, (i % 8) * 10.0) for i in range(1200)]
    items = [(e, 0, off) for off, e in enumerate(events)]
    errors: list[BaseException] = []

    def worker(step: int) -> None:
        c = MovementConsumer(s)
        c._redis.setup()
        c._pg.setup()
        try:
            for i in range(0, len(items), step):
                batch = items[i : i + step]
                _retry_service(lambda b=batch: c._apply_kinematics(b))  # as the consumer does
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            c._pg.close()
            c._redis.close()

    threads = [threading.Thread(target=worker, args=(step,)) for step in (37, 53)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    expected = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
    assert_summaries_equal(pg_states(s), expected)
    latest = {(k[0], k[1]): v for k, v in sorted(expected.items(), key=lambda kv: kv[0][2])}
    got = redis_states(s)
    assert set(got) == set(latest)
    assert all(same_state(got[k], latest[k]) for k in latest)


def test_restart_after_a_kill_with_until_idle_drains_the_backlog(fault_env, tmp_path):
    """A consumer restarted right after a SIGKILL joins the group only once the dead member's
    session (10 s) has timed out; with ``--until-idle 3`` it must not leave before its
    assignment, so it exits 0 with every event in the lake, once."""
    s = fault_env
    events = [ev(f"r{i % 10}", (i // 10) * 0.7, i, 0) for i in range(300)]
    send(s, events)
    victim = spawn_consumer(s, killpoint="before_lake_commit", log_path=tmp_path / "victim.log")
    try:
        assert victim.wait(60) == -signal.SIGKILL
    finally:
        stop_all([victim])
    assert lake_count(s) == 0
    restarted = spawn_consumer(s, until_idle_s=3, log_path=tmp_path / "restarted.log")
    try:
        rc = restarted.wait(90)
    finally:
        stop_all([restarted])
    assert rc == 0, (tmp_path / "restarted.log").read_text()[-2000:]
    lake = lake_table(s)
    pairs = set(zip(lake.column("kafka_partition").to_pylist(), lake.column("kafka_offset").to_pylist(), strict=True))
    assert lake.num_rows == len(pairs) == 300
