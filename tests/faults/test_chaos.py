"""The chaos run: exactly once, and every summary right, whatever fails.

On the private stack, with six partitions:

* input: a synthetic run (known reference), then the NGSIM Peachtree sample replayed in a
  loop with shifted traveler ids and times (the synthetic generator fills in where the
  shared data is absent), >= 200,000 valid events, with a few hundred bad records mixed
  in; produced at a steady pace over ``PRODUCE_S`` seconds;
* meanwhile, from a seeded schedule: >= 20 ``kill -9`` of a random consumer (each replaced
  at once, so the group rebalances), consumers joining and leaving (SIGTERM), two Redis
  ``FLUSHALL``s, a PostgreSQL crash-restart and a broker restart;
* then the consumers drain the topic and stop.

Checked: the topic holds exactly what was produced; lake rows = distinct
(kafka_partition, kafka_offset) = valid events produced, and the lake's stored offsets are
the topic's end; every PostgreSQL visit summary equals the pure functions applied to the
input; every DLQ record is really invalid, and every invalid record is in the DLQ.

The figures (failures injected, events, lost, duplicated, DLQ copies, wall time) are
printed and written to ``test-artifacts/chaos.json``.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from app import stack
from ingest.producer import replay
from ingest.synthetic import generate
from sensorlake.errors import EventError
from sensorlake.events import decode_event, encode_event
from sensorlake.kinematics import summarize
from tests.bad_input.corpus import REJECTED
from tests.conftest import REPO, isolated_on, shared_data
from tests.faults.helpers import (
    assert_summaries_equal,
    dlq_records,
    high_watermarks,
    lake_offsets,
    lake_table,
    pg_states,
    read_topic,
    spawn_consumer,
    stop_all,
    wait_until,
)

pytestmark = pytest.mark.services

SEED = 20_261_130
PARTITIONS = 6
SYNTHETIC_EVENTS = 110_000
NGSIM_EVENTS = 100_000
BAD_RECORDS = 300
PRODUCE_S = 150.0
KILLS = 22
CONSUMERS = 3


def build_input(rng: random.Random) -> tuple[list, list, str]:
    """(valid events in send order, (key, value) messages in send order, ngsim source)."""
    synthetic = list(itertools.islice(
        generate(sensors=4, travelers=1500, rate_hz=10, duration_s=900, seed=SEED % 1000), SYNTHETIC_EVENTS
    ))  # fmt: skip
    peachtree = shared_data() / "ngsim_peachtree_sample" / "NGSIM.csv"
    if peachtree.exists():
        from ingest.readers import open_source

        base = list(open_source(peachtree))
        source = "NGSIM Peachtree sample, looped"
    else:
        base = list(generate(sensors=2, travelers=150, rate_hz=10, duration_s=120, seed=1, sensor_base=500))
        source = "synthetic stand-in (shared data absent)"
    looped = list(itertools.islice(replay(base, loop=True), NGSIM_EVENTS))
    events = synthetic + looped
    messages = [(e.key.encode(), encode_event(e)) for e in events]
    bad = [(k, v) for _, k, v, _ in REJECTED if v is None or len(v) < 100_000]
    for i in sorted(rng.sample(range(len(messages)), BAD_RECORDS), reverse=True):
        messages.insert(i, bad[i % len(bad)])
    return events, messages, source


class PacedProducer(threading.Thread):
    """Sends the messages evenly over ``seconds``; survives a broker restart (long timeout,
    idempotent: no loss, no duplicate, order kept per partition)."""

    def __init__(self, s, messages, seconds: float) -> None:
        super().__init__(daemon=True)
        self.s, self.messages, self.seconds = s, messages, seconds
        self.delivered = 0
        self.failed: list = []
        self.error: BaseException | None = None

    def _cb(self, err, _msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(str(err))

    def run(self) -> None:
        try:
            p = Producer({
                "bootstrap.servers": self.s.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                "linger.ms": 20, "partitioner": "murmur2_random", "message.timeout.ms": 600_000,
                "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4",
            })  # fmt: skip
            t0 = time.monotonic()
            chunk = 500
            for i in range(0, len(self.messages), chunk):
                due = t0 + self.seconds * i / len(self.messages)
                while (wait := due - time.monotonic()) > 0:
                    p.poll(min(wait, 0.1))
                for key, value in self.messages[i : i + chunk]:
                    while True:
                        try:
                            p.produce(self.s.topic, key=key, value=value, on_delivery=self._cb)
                            break
                        except BufferError:
                            p.poll(0.1)
                p.poll(0)
            assert p.flush(300) == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


class Fleet:
    """The consumer processes; knows which ended by our hand and which by themselves."""

    def __init__(self, s, log: Path) -> None:
        self.s, self.log = s, log
        self.procs: list[subprocess.Popen] = []
        self.ours: set[int] = set()  # pids we killed or stopped

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def spawn(self) -> None:
        self.procs.append(spawn_consumer(self.s, log_path=self.log))

    def kill(self, rng: random.Random) -> None:
        p = rng.choice(self.alive())
        self.ours.add(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def leave(self, rng: random.Random) -> None:
        p = rng.choice(self.alive())
        self.ours.add(p.pid)
        p.send_signal(signal.SIGTERM)  # graceful: flush, commit, leave the group

    def unexpected_exits(self) -> list[tuple[int, int]]:
        return [(p.pid, p.returncode) for p in self.procs
                if p.poll() is not None and p.pid not in self.ours and p.returncode != 0]  # fmt: skip


def schedule(rng: random.Random) -> list[tuple[float, str]]:
    """When each failure happens, seconds after the producer starts."""
    at = [(rng.uniform(4, PRODUCE_S - 6), "kill") for _ in range(KILLS)]
    at += [(PRODUCE_S * f, what) for f, what in ((0.15, "join"), (0.33, "leave"), (0.55, "join"), (0.85, "leave"))]
    at += [(rng.uniform(0.1, 0.9) * PRODUCE_S, "flushall") for _ in range(2)]
    at += [(rng.uniform(0.3, 0.45) * PRODUCE_S, "restart_postgres"), (rng.uniform(0.6, 0.75) * PRODUCE_S, "restart_broker")]
    return sorted(at)


@pytest.mark.timeout(1200)
def test_chaos_run_exactly_once_and_exact_summaries(private_stack, tmp_path):
    rng = random.Random(SEED)
    events, messages, source = build_input(rng)
    plan = schedule(rng)
    done: Counter = Counter()
    t_start = time.monotonic()
    with isolated_on(private_stack, tmp_path, partitions=PARTITIONS, max_batch_age_s=1.5, max_batch_rows=20_000) as s:
        log = tmp_path / "consumers.log"
        fleet = Fleet(s, log)
        producer = PacedProducer(s, messages, PRODUCE_S)
        try:
            for _ in range(CONSUMERS):
                fleet.spawn()
            producer.start()
            t0 = time.monotonic()
            for when, what in plan:
                time.sleep(max(0.0, t0 + when - time.monotonic()))
                if what == "kill":
                    fleet.kill(rng)
                    fleet.spawn()  # a replacement joins at once: another rebalance
                elif what == "join":
                    fleet.spawn()
                elif what == "leave":
                    fleet.leave(rng)
                elif what == "flushall":
                    r = redis.Redis.from_url(s.redis_url)
                    r.flushall()
                    r.close()
                elif what == "restart_postgres":
                    stack.restart_postgres(private_stack, hard=True)
                elif what == "restart_broker":
                    stack.restart_kafka(private_stack)
                done[what] += 1
                assert not fleet.unexpected_exits(), log.read_text()[-4000:]
            producer.join(PRODUCE_S + 300)
            assert not producer.is_alive() and producer.error is None, producer.error
            assert producer.failed == [] and producer.delivered == len(messages)
            while len(fleet.alive()) < CONSUMERS:
                fleet.spawn()
            hw = high_watermarks(s)
            drain_t0 = time.monotonic()
            wait_until(lambda: lake_offsets(s) == hw, 240, interval_s=1.0, what="the consumers to drain the topic")
            drain_s = time.monotonic() - drain_t0
            assert not fleet.unexpected_exits(), log.read_text()[-4000:]
        finally:
            stack.start_service(private_stack, "postgresql")
            stack.start_service(private_stack, "kafka")
            stop_all(fleet.procs, timeout_s=30)
        assert not fleet.unexpected_exits(), log.read_text()[-4000:]

        # -- the input, as the topic holds it (per partition, in offset order)
        topic_msgs = read_topic(s, s.topic, timeout_s=120)
        assert len(topic_msgs) == len(messages)
        valid_in_topic, bad_origins = [], set()
        for m in topic_msgs:
            try:
                valid_in_topic.append(decode_event(m.value()))
            except EventError:
                bad_origins.add((m.partition(), m.offset()))
        assert len(valid_in_topic) == len(events) >= 200_000
        assert len(bad_origins) == BAD_RECORDS
        reference = summarize(events, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
        from_topic = summarize(valid_in_topic, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s)
        assert_summaries_equal(from_topic, reference)  # the topic kept every key's order

        # -- the lake: exactly once
        lake = lake_table(s, "SELECT count(*) AS n, count(DISTINCT (kafka_partition, kafka_offset)) AS d FROM lake.movements")
        rows, distinct = lake.column("n")[0].as_py(), lake.column("d")[0].as_py()
        assert lake_offsets(s) == {p: o for p, o in hw.items() if o}

        # -- PostgreSQL: every visit summary equals the reference
        assert_summaries_equal(pg_states(s), reference)

        # -- the DLQ: nothing valid in it, every invalid record in it (at least once)
        dlq = dlq_records(s)
        for rec in dlq:
            with pytest.raises(EventError) as info:
                decode_event(rec["value"])
            assert info.value.reason == rec["reason"]
        dlq_origins = Counter((r["origin"][1], r["origin"][2]) for r in dlq)
        assert set(dlq_origins) == bad_origins

    figures = {
        "input": source, "events_valid": len(events), "records_bad": BAD_RECORDS, "partitions": PARTITIONS,
        "kill_9": done["kill"], "consumers_started": len(fleet.procs), "joins": done["join"] + done["kill"],
        "graceful_leaves": done["leave"], "redis_flushall": done["flushall"],
        "postgres_restarts": done["restart_postgres"], "broker_restarts": done["restart_broker"],
        "lake_rows": rows, "lake_distinct_offsets": distinct, "lost": len(events) - distinct,
        "duplicated": rows - distinct, "pg_visits": len(reference), "pg_visits_wrong": 0,
        "dlq_records": len(dlq), "dlq_extra_copies": len(dlq) - len(dlq_origins),
        "drain_s": round(drain_s, 1), "wall_s": round(time.monotonic() - t_start, 1),
    }  # fmt: skip
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\nchaos run:", json.dumps(figures))
    assert rows == distinct == len(events)
    assert done["kill"] >= 20 and done["flushall"] == 2 and done["restart_postgres"] == done["restart_broker"] == 1
