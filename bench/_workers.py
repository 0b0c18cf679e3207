"""Child processes of the benchmarks: ``python -m bench._workers <kind> ...``.

Each reads its Settings from the ``SENSORLAKE_*`` environment the parent passes
(``Settings.to_env()``) and prints one ``RESULT {json}`` line at the end.

* ``produce``  -- a share of the synthetic load to the topic (full speed, or paced in real
  time with event times shifted to the wall clock for the latency benchmark).
* ``ceiling``  -- a bare consume (+ decode) loop that discards what it reads: the most any
  consumer can get out of Kafka and JSON in one Python process on this machine.
* ``baseline`` -- the per-event design sensorlake replaces (see :func:`baseline`).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from datetime import datetime

import msgspec


def _settings():
    from sensorlake.settings import Settings

    return Settings.from_env()


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def _result(payload: dict) -> None:
    print("RESULT " + json.dumps(payload), flush=True)


# --------------------------------------------------------------------------- produce
def produce(args: argparse.Namespace) -> None:
    """Produce this worker's share of the load (``--index`` of ``--workers``)."""
    from bench._common import Load, load_plans, split_plans
    from ingest.producer import produce as do_produce
    from ingest.synthetic import events_of

    s = _settings()
    load = Load(**json.loads(args.load))
    plans = paced_plans(args.paced_rate, load) if args.paced_rate else load_plans(load)
    mine = split_plans(plans, args.workers, args.index)
    events = events_of(mine, jitter_ft=load.jitter_ft, seed=load.seed + args.index)
    t0 = time.monotonic()
    if args.paced_rate:  # real time, event times shifted so the first event is "now"
        st = do_produce(s, events, speedup=1.0, shift_to_now=True)
    else:
        st = do_produce(s, events, speedup=None, max_rate=True)
    _result({"count": st.count, "seconds": st.seconds, "wall_s": time.monotonic() - t0, "events_per_s": st.events_per_s})


def paced_plans(rate: float, load) -> list:
    """A flat load of ``rate`` events/s for ``load.events / rate`` seconds: ``rate / rate_hz``
    travelers, every one on the road for the whole run (paths long enough that no visit
    ends early), each with its own phase within the 1 / rate_hz period."""
    from ingest.synthetic import plan

    travelers = max(1, round(rate / load.rate_hz))
    duration_s = load.events / rate
    step_s = 1.0 / load.rate_hz
    # a duration just under a whole number of steps leaves each traveler a random phase
    return plan(
        sensors=load.sensors, travelers=travelers, rate_hz=load.rate_hz,
        duration_s=math.floor(duration_s / step_s) * step_s + step_s * 0.999, seed=load.seed,
        path_ft=(1e5, 2e5), max_visit_s=1e6,
    )  # fmt: skip


# --------------------------------------------------------------------------- ceiling
class _Wire(msgspec.Struct):
    """The wire format, typed; the timestamp parsed to a datetime by msgspec (C code)."""

    traveler_id: str
    traveler_type: str
    sensor_id: int
    position: tuple[float, float]
    timestamp: datetime


def consumer_conf(s, **extra) -> dict:
    """Fetch settings of the ceiling loop: tuned (4 MB per partition fetch, keep up to 1M
    messages prefetched per partition within the consumer's 64 MB queue), no auto-commit.
    With librdkafka's defaults (1 MB, 100k) a bare consume loop on this machine tops out
    near 200k messages/s, so the defaults alone would cap any consumer below 250k/s."""
    conf = {
        "bootstrap.servers": s.kafka_bootstrap,
        "group.id": s.consumer_group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 100,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 4_194_304,  # librdkafka default: 1 MB
        "queued.max.messages.kbytes": 65_536,  # the sensorlake consumer's prefetch limit
        "queued.min.messages": 1_000_000,  # librdkafka default: 100,000 per partition
    }
    conf.update(extra)
    return conf


def ceiling(args: argparse.Namespace) -> None:
    """Consume ``--events`` messages in batches of 10,000 and, per ``--mode``:

    * ``consume``: touch each value (``len(m.value())``), nothing else;
    * ``msgspec``: decode each value into a typed struct (timestamp parsed), then drop it;
    * ``decode_event``: the product's validating decoder ``sensorlake.events.decode_event``.

    Timed from the first batch received to the N-th message; CPU from ``getrusage`` over
    the same window (all threads, librdkafka's included).
    """
    from confluent_kafka import Consumer

    s = _settings()
    c = Consumer(consumer_conf(s, **json.loads(args.conf)))
    c.subscribe([s.topic])
    mode = args.mode
    dec = msgspec.json.Decoder(_Wire)
    if mode == "decode_event":
        from sensorlake.events import decode_event

        aliases = s.traveler_type_aliases
    n = args.events
    count = bad = nbytes = 0
    t_first = cpu_first = None
    deadline = time.monotonic() + args.timeout
    while count < n and time.monotonic() < deadline:
        msgs = c.consume(num_messages=10_000, timeout=1.0)
        if not msgs:
            continue
        if t_first is None:
            t_first, cpu_first = time.monotonic(), _cpu_self()
        for m in msgs:
            if m.error() is not None:
                continue
            v = m.value()
            count += 1
            if mode == "consume":
                nbytes += len(v)
            elif mode == "msgspec":
                try:
                    dec.decode(v)
                except msgspec.MsgspecError:
                    bad += 1
            else:
                try:
                    decode_event(v, aliases)
                except Exception:  # noqa: BLE001
                    bad += 1
    t_end, cpu_end = time.monotonic(), _cpu_self()
    c.close()
    seconds = t_end - (t_first or t_end)
    _result({
        "mode": mode, "events": count, "bad": bad, "seconds": seconds,
        "events_per_s": count / seconds if seconds > 0 else 0.0,
        "cpu_s": cpu_end - (cpu_first or cpu_end), "maxrss_mb": _maxrss_mb(),
    })  # fmt: skip


# --------------------------------------------------------------------------- baseline
BASELINE_DDL = """
CREATE TABLE IF NOT EXISTS baseline_summary (
    sensor_id bigint NOT NULL, traveler_id text NOT NULL, first_seen timestamptz NOT NULL,
    traveler_type text NOT NULL, last_seen timestamptz NOT NULL, observations bigint NOT NULL,
    distance_ft double precision NOT NULL, duration_s double precision NOT NULL,
    avg_speed_fps double precision, min_speed_fps double precision, max_speed_fps double precision,
    late_count bigint NOT NULL, duplicate_count bigint NOT NULL, rejected_count bigint NOT NULL,
    kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, traveler_id, first_seen)
)
"""

BASELINE_UPSERT = """
INSERT INTO baseline_summary (sensor_id, traveler_id, first_seen, traveler_type, last_seen,
    observations, distance_ft, duration_s, avg_speed_fps, min_speed_fps, max_speed_fps,
    late_count, duplicate_count, rejected_count, kafka_partition, kafka_offset)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (sensor_id, traveler_id, first_seen) DO UPDATE SET
    traveler_type = EXCLUDED.traveler_type, last_seen = EXCLUDED.last_seen,
    observations = EXCLUDED.observations, distance_ft = EXCLUDED.distance_ft,
    duration_s = EXCLUDED.duration_s, avg_speed_fps = EXCLUDED.avg_speed_fps,
    min_speed_fps = EXCLUDED.min_speed_fps, max_speed_fps = EXCLUDED.max_speed_fps,
    late_count = EXCLUDED.late_count, duplicate_count = EXCLUDED.duplicate_count,
    rejected_count = EXCLUDED.rejected_count, kafka_partition = EXCLUDED.kafka_partition,
    kafka_offset = EXCLUDED.kafka_offset, updated_at = now()
WHERE baseline_summary.kafka_partition <> EXCLUDED.kafka_partition
   OR baseline_summary.kafka_offset < EXCLUDED.kafka_offset
"""


def baseline(args: argparse.Namespace) -> None:
    """The design sensorlake replaces: one event at a time, end to end.

    Per message: ``consumer.poll()`` one message; decode and validate it with
    ``sensorlake.events.decode_event``; Redis ``GET`` of the traveler's state (msgpack);
    the pure ``sensorlake.kinematics.apply_event``; Redis ``SET`` of the new state (with
    TTL); one PostgreSQL ``INSERT ... ON CONFLICT DO UPDATE ... WHERE newer`` of the visit
    summary and a ``COMMIT`` (synchronous_commit as the server has it: on). Kafka offsets
    are auto-committed every 5 s (librdkafka default). No lake, no DLQ (invalid records
    are counted and skipped). Same kinematics and validation as sensorlake, so the
    difference is the I/O pattern.
    """
    import psycopg
    import redis
    from confluent_kafka import Consumer

    from sensorlake.errors import EventError
    from sensorlake.events import decode_event, ts_from_us
    from sensorlake.kinematics import TravelerState, apply_event

    s = _settings()
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(TravelerState)
    r = redis.Redis.from_url(s.redis_url, socket_timeout=10)
    pg = psycopg.connect(s.pg_dsn)
    pg.execute(BASELINE_DDL)
    pg.commit()
    c = Consumer({
        "bootstrap.servers": s.kafka_bootstrap, "group.id": s.consumer_group,
        "auto.offset.reset": "earliest", "enable.auto.commit": True,
    })  # fmt: skip
    c.subscribe([s.topic])
    aliases = s.traveler_type_aliases
    ns, ttl = s.redis_namespace, s.redis_state_ttl_s
    n = args.events
    count = bad = 0
    t_first = cpu_first = None
    deadline = time.monotonic() + args.timeout
    while count < n and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None or m.error() is not None:
            continue
        if t_first is None:
            t_first, cpu_first = time.monotonic(), _cpu_self()
        count += 1
        try:
            ev = decode_event(m.value(), aliases)
        except EventError:
            bad += 1
            continue
        key = f"{ns}:bstate:{ev.sensor_id}:{ev.traveler_id}"
        raw = r.get(key)
        state = dec.decode(raw) if raw is not None else None
        st = apply_event(
            state, ev, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s,
            partition=m.partition(), offset=m.offset(),
        ).state  # fmt: skip
        r.set(key, enc.encode(st), ex=ttl)
        pg.execute(BASELINE_UPSERT, (
            st.sensor_id, st.traveler_id, ts_from_us(st.first_seen_us), st.traveler_type,
            ts_from_us(st.last_seen_us), st.observations, st.distance_ft, st.duration_s,
            st.avg_speed_fps, st.min_speed_fps, st.max_speed_fps, st.late_count,
            st.duplicate_count, st.rejected_count, st.kafka_partition, st.kafka_offset,
        ))  # fmt: skip
        pg.commit()
    t_end, cpu_end = time.monotonic(), _cpu_self()
    c.close()
    pg.close()
    r.close()
    seconds = t_end - (t_first or t_end)
    _result({
        "events": count, "bad": bad, "seconds": seconds,
        "events_per_s": count / seconds if seconds > 0 else 0.0,
        "cpu_s": cpu_end - (cpu_first or cpu_end), "maxrss_mb": _maxrss_mb(),
    })  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench._workers")
    sub = ap.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--load", required=True, help="bench._common.Load as JSON")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--paced-rate", type=float, default=0.0, help="events/s in real time (0: full speed)")
    c = sub.add_parser("ceiling")
    c.add_argument("--mode", choices=["consume", "msgspec", "decode_event"], default="msgspec")
    c.add_argument("--events", type=int, required=True)
    c.add_argument("--conf", default="{}", help="librdkafka settings overriding consumer_conf(), as JSON")
    c.add_argument("--timeout", type=float, default=600)
    b = sub.add_parser("baseline")
    b.add_argument("--events", type=int, required=True)
    b.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    {"produce": produce, "ceiling": ceiling, "baseline": baseline}[args.kind](args)


if __name__ == "__main__":
    sys.exit(main())
