"""The consumer loop: the one place that imports the Kafka consumer.

Order of work for every poll (and the reason for it):

1. **poll** a batch of up to ``poll_batch`` messages (no auto-commit, no auto offset store);
2. **decode** each value; records that break the contract are queued to the DLQ with
   their reason and origin, and never stop the loop;
3. **compute** per-traveler kinematics on the valid events: read the states of the batch's
   keys from Redis in one ``MGET`` (misses are rebuilt from PostgreSQL in one query), apply
   the pure :func:`sensorlake.kinematics.apply_event` in order, and write the new states
   back with one compare-and-set script (conflicting keys are re-read and recomputed);
4. **write sinks**: upsert the touched visit summaries into PostgreSQL (absolute values,
   newer-wins), and append the raw events to the lake buffer;
5. **flush** the lake buffer when it holds ``max_batch_rows`` rows or is ``max_batch_age_s``
   old (also with no new traffic): wait for the DLQ's acknowledgements, then commit events
   and next offsets in ONE DuckLake transaction (see :mod:`lake.writer`);
6. **commit** the same offsets to Kafka (for lag monitoring only: on assignment the
   consumer seeks to the offsets stored in the lake, which are the truth).

Redis and PostgreSQL run ahead of the lake; that is safe because both remember the last
Kafka offset applied per key, so events replayed after a crash change nothing there, while
the lake, which had not committed them, receives them exactly once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from ingest.dlq import DeadLetterQueue
from ingest.pg_sink import PgSummarySink
from ingest.redis_state import RedisState, decode_state
from lake.schema import MOVEMENTS_SCHEMA
from lake.writer import LakeWriter
from sensorlake.errors import EventError, FencedError, RetryableError
from sensorlake.events import Event, decode_event
from sensorlake.kinematics import Outcome, TravelerState, apply_event
from sensorlake.settings import Settings

log = logging.getLogger(__name__)
Key = tuple[int, str]
_MAX_CAS_ROUNDS = 20


@dataclass
class ConsumeStats:
    """Counters of one consumer run."""

    consumed: int = 0
    valid: int = 0
    dlq: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    lake_rows: int = 0
    lake_commits: int = 0
    fenced: int = 0
    cas_conflicts: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Consumed messages per wall-clock second."""
        return self.consumed / self.seconds if self.seconds > 0 else 0.0


class _LakeBuffer:
    """Columnar buffer of raw events awaiting a lake commit."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in MOVEMENTS_SCHEMA}
        self.next_offsets: dict[int, int] = {}
        self.started: float | None = None

    @property
    def rows(self) -> int:
        return len(self.cols["sensor_id"])

    def add(self, ev: Event, partition: int, offset: int) -> None:
        c = self.cols
        c["sensor_id"].append(ev.sensor_id)
        c["traveler_id"].append(ev.traveler_id)
        c["traveler_type"].append(ev.traveler_type)
        c["ts"].append(ev.ts_us)
        c["x_ft"].append(ev.x_ft)
        c["y_ft"].append(ev.y_ft)
        c["kafka_partition"].append(partition)
        c["kafka_offset"].append(offset)

    def consumed(self, partition: int, offset: int, now: float) -> None:
        self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)
        if self.started is None:
            self.started = now

    def table(self) -> pa.Table:
        arrays = []
        for f in MOVEMENTS_SCHEMA:
            if f.name == "ts":
                arrays.append(pa.array(self.cols["ts"], pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(self.cols[f.name], f.type))
        return pa.Table.from_arrays(arrays, schema=MOVEMENTS_SCHEMA)


class MovementConsumer:
    """One stateless consumer process of the ``movements`` topic.

    Args:
        settings: services, topic and batching configuration.
        group: consumer group id (default ``settings.consumer_group``).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, settings: Settings, *, group: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.group = group or settings.consumer_group
        self.topic = settings.topic
        self.clock = clock
        self.stats = ConsumeStats()
        self._aliases = settings.traveler_type_aliases
        self._redis = RedisState(settings)
        self._pg = PgSummarySink(settings)
        self._lake = LakeWriter(settings, self.group, self.topic)
        self._dlq = DeadLetterQueue(settings)
        self._buffer = _LakeBuffer()
        self._expected: dict[int, int | None] = {}  # partition -> lake offset we synced to
        self._stop = threading.Event()
        self._consumer: Consumer | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self) -> None:
        """Connect every sink and subscribe (assignment happens on the first poll)."""
        self._redis.setup()
        _retry_service(self._pg.setup)
        self._lake.setup()
        self._dlq.setup()
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                "fetch.min.bytes": 1,
                "fetch.wait.max.ms": 100,
                "queued.max.messages.kbytes": 65_536,
            }
        )
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def stop(self) -> None:
        """Ask the loop to finish: it flushes what it holds, commits and exits."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> :meth:`stop` (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def close(self) -> None:
        """Close Kafka (leaving the group) and every sink."""
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.warning("closing the Kafka consumer failed: %s", exc)
            self._consumer = None
        self._lake.close()
        self._pg.close()
        self._redis.close()

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._lake.stored_offsets([tp.partition for tp in partitions])
        for tp in partitions:
            if tp.partition in stored:
                tp.offset = stored[tp.partition]
            else:
                tp.offset = OFFSET_INVALID  # committed Kafka offset, else earliest
            self._expected[tp.partition] = stored.get(tp.partition)
        log.info("assigned %s (lake offsets %s)", [tp.partition for tp in partitions], stored)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.flush()
        except FencedError:
            self._buffer.clear()
        for tp in partitions:
            self._expected.pop(tp.partition, None)
        log.info("revoked %s", [tp.partition for tp in partitions])

    # ------------------------------------------------------------------ the loop
    def run(self, *, until_idle_s: float | None = None, max_messages: int | None = None) -> ConsumeStats:
        """Consume until :meth:`stop`, ``until_idle_s`` seconds without a message, or
        ``max_messages`` consumed; then flush and close. Returns the run's counters."""
        if self._consumer is None:
            self.setup()
        started = last_msg = self.clock()
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(num_messages=self.settings.poll_batch, timeout=0.5)
                now = self.clock()
                if msgs:
                    real = self._process(msgs)
                    if real:
                        last_msg = now
                if self._should_flush(now):
                    self.flush()
                if until_idle_s is not None and now - last_msg >= until_idle_s:
                    break
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
            self.flush()
        finally:
            self.stats.seconds = self.clock() - started
            self.close()
        return self.stats

    def _should_flush(self, now: float) -> bool:
        b = self._buffer
        if b.started is None:
            return False
        return b.rows >= self.settings.max_batch_rows or now - b.started >= self.settings.max_batch_age_s

    def _process(self, msgs: list) -> int:
        """Decode, compute and write sinks for one poll. Returns messages handled."""
        now = self.clock()
        valid: list[tuple[Event, int, int]] = []
        handled = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error: %s", err)
                continue
            handled += 1
            p, off = m.partition(), m.offset()
            self._buffer.consumed(p, off, now)
            try:
                ev = decode_event(m.value(), self._aliases)
            except EventError as exc:
                self.stats.dlq[exc.reason] += 1
                self._dlq.send(m.key(), m.value(), exc.reason, exc.detail, m.topic(), p, off)
                continue
            valid.append((ev, p, off))
        self.stats.consumed += handled
        self.stats.valid += len(valid)
        if valid:
            states = _retry_service(lambda: self._apply_kinematics(valid))
            _retry_service(lambda: self._pg.upsert(states))
            for ev, p, off in valid:
                self._buffer.add(ev, p, off)
        return handled

    def _apply_kinematics(self, valid: list[tuple[Event, int, int]]) -> list[TravelerState]:
        """Apply the batch to the Redis states with compare-and-set; return every visit
        state touched (to upsert)."""
        by_key: dict[Key, list[tuple[Event, int, int]]] = defaultdict(list)
        for item in valid:
            ev = item[0]
            by_key[(ev.sensor_id, ev.traveler_id)].append(item)
        pending = list(by_key)
        touched: dict[tuple[int, str, int], TravelerState] = {}
        for _ in range(_MAX_CAS_ROUNDS):
            raw = self._redis.get_many(pending)
            current: dict[Key, TravelerState | None] = {
                k: decode_state(v) if v is not None else None for k, v in raw.items()
            }
            missing = [k for k, s in current.items() if s is None]
            if missing:
                current.update(self._pg.fetch_latest(missing))
            updates = []
            round_touched: dict[Key, dict] = {}
            round_outcomes: dict[Key, Counter] = {}
            for key in pending:
                state = current.get(key)
                visits: dict = {}
                outcomes: Counter = Counter()
                for ev, p, off in by_key[key]:
                    step = apply_event(
                        state, ev, min_segment_s=self.settings.min_segment_s,
                        visit_gap_s=self.settings.visit_gap_s, partition=p, offset=off,
                    )  # fmt: skip
                    outcomes[step.outcome.value] += 1
                    state = step.state
                    if step.outcome is not Outcome.REPLAYED:
                        visits[(key[0], key[1], state.first_seen_us)] = state
                if state is not None:
                    # always (re)write and upsert, even when every event was a replay: a
                    # crash between the Redis and PostgreSQL writes is healed this way
                    visits.setdefault((key[0], key[1], state.first_seen_us), state)
                    updates.append((key, raw.get(key), state))
                round_touched[key] = visits
                round_outcomes[key] = outcomes
            failed = set(self._redis.compare_and_set(updates))
            for key, visits in round_touched.items():
                if key not in failed:
                    touched.update(visits)
                    self.stats.outcomes.update(round_outcomes[key])
            if not failed:
                return list(touched.values())
            self.stats.cas_conflicts += len(failed)
            pending = [k for k in pending if k in failed]
        raise RetryableError(f"redis state of {len(pending)} key(s) kept changing under us")

    def flush(self) -> None:
        """Commit the buffered events and offsets to the lake, then to Kafka."""
        b = self._buffer
        if not b.next_offsets:
            b.clear()
            return
        self._dlq.flush()
        expected = {p: self._expected.get(p) for p in b.next_offsets}
        try:
            rows = self._lake.commit(b.table(), b.next_offsets, expected)
        except FencedError as exc:
            self.stats.fenced += 1
            log.warning("fenced, dropping the batch and re-seeking: %s", exc)
            b.clear()
            self._reseek()
            return
        self.stats.lake_rows += rows
        self.stats.lake_commits += 1
        offsets = [TopicPartition(self.topic, p, o) for p, o in b.next_offsets.items()]
        for p, o in b.next_offsets.items():
            self._expected[p] = o
        b.clear()
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - Kafka's committed offsets are advisory
            log.info("kafka commit failed (lake offsets are authoritative): %s", exc)

    def _reseek(self) -> None:
        assignment = self._consumer.assignment() if self._consumer else []
        stored = self._lake.stored_offsets([tp.partition for tp in assignment])
        for tp in assignment:
            self._expected[tp.partition] = stored.get(tp.partition)
            if tp.partition in stored:
                self._consumer.seek(TopicPartition(self.topic, tp.partition, stored[tp.partition]))


def _retry_service(fn: Callable):
    """Call ``fn``, retrying RetryableError (a service blip) for up to 120 s."""

    @retry(
        retry=retry_if_exception_type(RetryableError),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(120),
        reraise=True,
    )
    def _call():
        return fn()

    return _call()


def run_consumer(
    settings: Settings, *, group: str | None = None, until_idle_s: float | None = None,
    max_messages: int | None = None, handle_signals: bool = True,
) -> ConsumeStats:  # fmt: skip
    """Run one consumer process to completion (see :class:`MovementConsumer`)."""
    consumer = MovementConsumer(settings, group=group)
    if handle_signals:
        consumer.install_signal_handlers()
    return consumer.run(until_idle_s=until_idle_s, max_messages=max_messages)
