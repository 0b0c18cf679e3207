"""The consumer loop: the one place that imports the Kafka consumer.

Order of work for every poll (and the reason for it):

1. **poll** a batch of up to ``poll_batch`` messages (no auto-commit, no auto offset store:
   nothing is committed or stored anywhere before step 5 succeeded);
2. **decode** each value; records that break the contract are queued to the DLQ with
   their reason and origin, and never stop the loop;
3. **compute** per-traveler kinematics on the valid events: read the states of the batch's
   keys from Redis in one ``MGET`` (misses are rebuilt from PostgreSQL in one query) and
   apply each key's events with the pure :func:`sensorlake.kinematics.apply_events` (the
   batch form of ``apply_event``, proven equal to it);
4. **write sinks**: upsert the touched visit summaries into PostgreSQL (absolute values,
   newer-wins), then write the new states to Redis with one compare-and-set script
   (conflicting keys are re-read and recomputed; PostgreSQL first, see
   :meth:`MovementConsumer._apply_kinematics`), then append the raw events and the poll's
   next offsets to the lake buffer (only now: a poll whose sinks failed never advances an
   offset);
5. **flush** the lake buffer when it holds ``max_batch_rows`` rows or is ``max_batch_age_s``
   old (also with no new traffic): wait (bounded) for the DLQ's acknowledgements, then
   commit events and next offsets in ONE DuckLake transaction (see :mod:`lake.writer`). A
   partition with a DLQ record not yet acknowledged (broker down) is committed only up to
   that record; the rest waits in the buffer for the next flush, so a rejected record is
   never skipped;
6. **commit** the same offsets to Kafka, asynchronously (for lag monitoring only: on
   assignment the consumer seeks to the offsets stored in the lake, which are the truth;
   a partition with no stored offset starts at the beginning of the topic).

Shutdown (:meth:`MovementConsumer.stop`, SIGTERM/SIGINT): the loop ends within one poll
(``poll_wait_s``, 0.25 s), the buffer is flushed with a DLQ wait of at most ``STOP_DLQ_WAIT_S``, Kafka's
commit is tried only if the broker answers within 1 s, and the consumer is closed: with
the broker down the process exits within a few seconds (measured: 1.5 s), and everything
it committed to the lake stays there.

Metrics: :class:`ConsumeStats` counts per process (messages, valid events, DLQ records by
reason, kinematic outcomes such as ``zero_time_move``, lake commits, fencing); after each
lake commit they are upserted into PostgreSQL table ``consumer_metrics`` (one row per
consumer process and metric, absolute values), which dashboards read.

PostgreSQL and Redis run ahead of the lake (and PostgreSQL ahead of Redis); that is safe
because both remember the last Kafka offset applied per key, so events replayed after a
crash change nothing there, while the lake, which had not committed them, receives them
exactly once.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ingest.dlq import DeadLetterQueue
from ingest.pg_sink import PgSummarySink
from ingest.redis_state import RedisState, decode_state
from lake.schema import MOVEMENTS_SCHEMA
from lake.writer import LakeWriter
from sensorlake.errors import (
    EventError,
    FencedError,
    RetryableError,
    SensorlakeError,
    call_retrying,
)
from sensorlake.events import Event, decode_event
from sensorlake.kinematics import TravelerState, apply_events
from sensorlake.settings import Settings

log = logging.getLogger(__name__)
Key = tuple[int, str]
T = TypeVar("T")
_MAX_CAS_ROUNDS = 20
# Fetch settings, measured by `python bench/ingest.py` (bare consume loop, "ceiling" rows,
# bench/results/ingest.json): librdkafka's defaults (1 MB per partition fetch, 100k messages
# prefetched) reached 222k messages/s (phase 1); these 410k at a peak RSS of 211 MB; 4 MB
# and a 64 MB / 1M-message queue 598k at 291 MB. The consumer needs far less than either.
FETCH_SETTINGS = {
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 100,
    "max.partition.fetch.bytes": 2_097_152,
    "queued.min.messages": 200_000,
    "queued.max.messages.kbytes": 32_768,
}
JOIN_GRACE_S = 20.0  # until_idle_s starts counting this long after start when never assigned
SERVICE_RETRY_S = 120.0  # how long a poll's sink writes are retried through a service blip
DLQ_WAIT_S = 10.0  # how long a flush waits for DLQ acknowledgements while running
STOP_DLQ_WAIT_S = 3.0  # ... and while shutting down (SIGTERM must end within seconds)


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

    def metric_rows(self) -> list[tuple[str, str, int]]:
        """``(metric, label, value)`` rows: the totals (label ``""``), DLQ records by reason
        (metric ``dlq``) and kinematic outcomes (metric ``outcome``)."""
        rows = [
            ("consumed", "", self.consumed), ("valid", "", self.valid),
            ("lake_rows", "", self.lake_rows), ("lake_commits", "", self.lake_commits),
            ("fenced", "", self.fenced), ("cas_conflicts", "", self.cas_conflicts),
            ("dlq_total", "", sum(self.dlq.values())),
        ]  # fmt: skip
        rows += [("dlq", reason, n) for reason, n in sorted(self.dlq.items())]
        rows += [("outcome", outcome, n) for outcome, n in sorted(self.outcomes.items())]
        return rows


class _LakeBuffer:
    """Columnar buffer of raw events awaiting a lake commit (one Arrow table per poll), with
    the next offset and the first offset consumed per partition since the last commit."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.chunks: list[pa.Table] = []
        self.rows = 0
        self.next_offsets: dict[int, int] = {}
        self.first_offsets: dict[int, int] = {}
        self.started: float | None = None

    def add(self, valid: list[tuple[Event, int, int]]) -> None:
        """Append one poll's valid events, each with its Kafka partition and offset."""
        evs = [ev for ev, _, _ in valid]
        columns = {
            "sensor_id": [ev.sensor_id for ev in evs],
            "traveler_id": [ev.traveler_id for ev in evs],
            "traveler_type": [ev.traveler_type for ev in evs],
            "ts": pa.array([ev.ts_us for ev in evs], pa.int64()).cast(MOVEMENTS_SCHEMA.field("ts").type),
            "x_ft": [ev.x_ft for ev in evs],
            "y_ft": [ev.y_ft for ev in evs],
            "kafka_partition": [p for _, p, _ in valid],
            "kafka_offset": [off for _, _, off in valid],
        }
        arrays = [col if isinstance(col := columns[f.name], pa.Array) else pa.array(col, f.type)
                  for f in MOVEMENTS_SCHEMA]  # fmt: skip
        self.chunks.append(pa.Table.from_arrays(arrays, schema=MOVEMENTS_SCHEMA))
        self.rows += len(evs)

    def consumed(self, handled: list[tuple[int, int]], now: float) -> None:
        """Record that one poll's ``(partition, offset)`` records are fully handled (sinks
        written or DLQ'd)."""
        if not handled:
            return
        next_offsets, first_offsets = self.next_offsets, self.first_offsets
        for p, off in handled:
            if off >= next_offsets.get(p, 0):
                next_offsets[p] = off + 1
            if off < first_offsets.get(p, off + 1):
                first_offsets[p] = off
        if self.started is None:
            self.started = now

    def table(self) -> pa.Table:
        if not self.chunks:
            return MOVEMENTS_SCHEMA.empty_table()
        # one contiguous chunk per column: the shape the lake writer was built and
        # fault-tested with (the concatenation costs a copy of one micro-batch)
        return pa.concat_tables(self.chunks).combine_chunks()

    def _held_back(self, table: pa.Table, cuts: Mapping[int, int]) -> pa.ChunkedArray:
        """Row mask of ``table``: in a partition of ``cuts``, at or after its cut offset."""
        keep = None
        for p, cut in cuts.items():
            m = pc.and_(pc.equal(table["kafka_partition"], p), pc.greater_equal(table["kafka_offset"], cut))
            keep = m if keep is None else pc.or_(keep, m)
        return keep

    def split(self, cuts: Mapping[int, int]) -> tuple[pa.Table, dict[int, int]]:
        """The committable part: every row and next offset, except that a partition in
        ``cuts`` stops before its cut offset (rows below it, next offset = the cut; left out
        when nothing of it lies below the cut)."""
        table = self.table()
        offsets = dict(self.next_offsets)
        for p, cut in cuts.items():
            if p not in offsets:
                continue
            if cut <= self.first_offsets[p]:
                del offsets[p]
            else:
                offsets[p] = min(offsets[p], cut)
        if cuts:
            table = table.filter(pc.invert(self._held_back(table, cuts)))
        return table, offsets

    def retain(self, cuts: Mapping[int, int], now: float) -> None:
        """Drop what :meth:`split` returned (it is committed); keep the rest for later."""
        if not cuts:  # the usual case: everything was committed
            self.clear()
            return
        table = self.table()
        kept = table.filter(self._held_back(table, cuts))
        next_offsets = {p: self.next_offsets[p] for p, cut in cuts.items()
                        if p in self.next_offsets and self.next_offsets[p] > cut}  # fmt: skip
        first = {p: max(self.first_offsets[p], cuts[p]) for p in next_offsets}
        self.clear()
        if next_offsets:
            self.chunks, self.rows = [kept], kept.num_rows
            self.next_offsets, self.first_offsets, self.started = next_offsets, first, now


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
        self._closing = False
        self._assigned_at: float | None = None  # clock() of the last partition assignment
        self._consumer: Consumer | None = None
        self.consumer_id = f"{socket.gethostname()}/{os.getpid()}/{time.time_ns() // 1_000_000}"

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
                **FETCH_SETTINGS,
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
        """Close Kafka (leaving the group) and every sink.

        Nothing is flushed here (:meth:`run` flushes before closing on a clean stop; after
        an error, what is not committed is simply consumed again by the next owner).
        """
        self._closing = True
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.warning("closing the Kafka consumer failed: %s", exc)
            self._consumer = None
        self._write_metrics()
        self._lake.close()
        self._pg.close()
        self._redis.close()

    def _write_metrics(self) -> None:
        try:
            self._pg.write_metrics(self.consumer_id, self.group, self.topic, self.stats.metric_rows())
        except SensorlakeError as exc:  # metrics must never stop the consumer
            log.info("consumer metrics not written: %s", exc)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Seek every assigned partition to the lake's stored next offset; a partition the
        lake has never seen starts at the beginning (Kafka's committed offsets are not
        trusted: they may belong to another lake, or be behind it)."""
        self._assigned_at = self.clock()
        stored = self._lake.stored_offsets([tp.partition for tp in partitions])
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            self._expected[tp.partition] = stored.get(tp.partition)
        log.info("assigned %s (lake offsets %s)", [tp.partition for tp in partitions], stored)
        consumer.assign(partitions)
        if stored:  # bring Kafka's advisory offsets (lag monitoring) in line with the lake
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.topic, p, o) for p, o in stored.items()], asynchronous=True
                )
            except Exception as exc:  # noqa: BLE001 - advisory only
                log.info("kafka commit of the lake offsets failed: %s", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._closing:
            self.flush(stopping=self._stop.is_set())  # a fenced commit is handled in flush
        self._buffer.clear()  # whatever could not be committed is the next owner's to consume
        revoked = [tp.partition for tp in partitions]
        self._dlq.forget(revoked)
        for p in revoked:
            self._expected.pop(p, None)
        log.info("revoked %s", revoked)

    # ------------------------------------------------------------------ the loop
    def run(self, *, until_idle_s: float | None = None, max_messages: int | None = None) -> ConsumeStats:
        """Consume until :meth:`stop`, ``until_idle_s`` seconds without a message, or
        ``max_messages`` consumed; then flush and close. Returns the run's counters."""
        if self._consumer is None:
            self.setup()
        started = last_msg = self.clock()
        try:
            while not self._stop.is_set():
                msgs = self._consumer.consume(num_messages=self.settings.poll_batch, timeout=self.settings.poll_wait_s)
                now = self.clock()
                if msgs and self._process(msgs, now):
                    last_msg = now
                if self._should_flush(now):
                    self.flush()
                if until_idle_s is not None and self._idle_for(now, last_msg, started) >= until_idle_s:
                    break
                if max_messages is not None and self.stats.consumed >= max_messages:
                    break
            self.flush(stopping=True)
        finally:
            self.stats.seconds = self.clock() - started
            self.close()
            log.info(
                "consumer %s: %d consumed, %d valid, DLQ %s, %d rows in %d lake commits",
                self.consumer_id, self.stats.consumed, self.stats.valid, dict(self.stats.dlq),
                self.stats.lake_rows, self.stats.lake_commits,
            )  # fmt: skip
        return self.stats

    def _idle_for(self, now: float, last_msg: float, started: float) -> float:
        """Seconds the consumer has been idle, for ``until_idle_s``: since the last message
        or the last partition assignment, whichever is later. Before the first assignment
        the clock waits ``JOIN_GRACE_S`` first: after a ``kill -9`` the group holds the dead
        member's partitions until its session times out (10 s), and a restarted consumer
        that left before that would leave a backlog behind."""
        if self._assigned_at is None:
            return now - started - JOIN_GRACE_S
        return now - max(last_msg, self._assigned_at)

    def _should_flush(self, now: float) -> bool:
        b = self._buffer
        if b.started is None:
            return False
        return b.rows >= self.settings.max_batch_rows or now - b.started >= self.settings.max_batch_age_s

    def _process(self, msgs: list, now: float) -> int:
        """Decode, compute and write sinks for one poll (received at ``now``). Returns the
        messages handled.

        The poll's offsets enter the lake buffer only after Redis and PostgreSQL hold its
        events: if a sink keeps failing, the exception leaves the buffer as it was.
        """
        valid: list[tuple[Event, int, int]] = []
        handled: list[tuple[int, int]] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka error: %s", err)
                continue
            p, off = m.partition(), m.offset()
            handled.append((p, off))
            try:
                ev = decode_event(m.value(), self._aliases)
            except EventError as exc:
                self.stats.dlq[exc.reason] += 1
                self._dlq.send(m.key(), m.value(), exc.reason, exc.detail, m.topic(), p, off)
                continue
            valid.append((ev, p, off))
        self.stats.consumed += len(handled)
        self.stats.valid += len(valid)
        if valid:
            _retry_service(lambda: self._apply_kinematics(valid))
            self._buffer.add(valid)
        self._buffer.consumed(handled, now)
        return len(handled)

    def _apply_kinematics(self, valid: list[tuple[Event, int, int]]) -> None:
        """Apply the batch to the traveler states and write both state sinks.

        Per round: read the keys' states from Redis (one MGET; misses rebuilt from
        PostgreSQL in one query), apply each key's events with the pure ``apply_events``, upsert
        the touched visits into PostgreSQL (newer-wins), then compare-and-set the new
        states into Redis; keys another writer changed meanwhile go round again.

        PostgreSQL is written **before** Redis, so Redis is never ahead of PostgreSQL. The
        other order loses data: a crash between the two writes would leave Redis holding a
        new visit whose first event closed the previous one, the replay would skip those
        events as applied, and the previous visit's final summary would never reach
        PostgreSQL. This way a replay recomputes from the older Redis state and rewrites
        the same rows. An upsert computed from a stale read is harmless: ``apply_events`` is
        deterministic, so it equals what the other writer wrote, and newer-wins keeps the
        row with the highest offset.
        """
        by_key: dict[Key, tuple[list[Event], list[int], list[int]]] = {}
        for ev, p, off in valid:
            group = by_key.get((ev.sensor_id, ev.traveler_id))
            if group is None:
                group = by_key[(ev.sensor_id, ev.traveler_id)] = ([], [], [])
            group[0].append(ev)
            group[1].append(p)
            group[2].append(off)
        min_segment_s, visit_gap_s = self.settings.min_segment_s, self.settings.visit_gap_s
        pending = list(by_key)
        for attempt in range(_MAX_CAS_ROUNDS):
            if attempt:  # another writer won the last round: back off a little, at random
                time.sleep(random.uniform(0, 0.005 * attempt))
            raw = self._redis.get_many(pending)
            current = {k: decode_state(v) for k, v in raw.items() if v is not None}
            missing = [k for k in pending if k not in current]
            if missing:
                current.update(self._pg.fetch_latest(missing))
            rows: list[TravelerState] = []  # every visit touched, for PostgreSQL
            updates = []  # (key, value read, new state) for the Redis compare-and-set
            outcomes: dict[Key, dict[str, int]] = {}
            for key in pending:
                evs, parts, offs = by_key[key]
                res = apply_events(current.get(key), evs, parts, offs, min_segment_s=min_segment_s,
                                   visit_gap_s=visit_gap_s)  # fmt: skip
                outcomes[key] = res.outcomes
                # always (re)write the latest visit to both sinks, even when every event was a
                # replay: it costs nothing (newer-wins) and refreshes the Redis TTL
                rows.extend(res.visits or (res.state,))
                updates.append((key, raw.get(key), res.state))
            self._pg.upsert(rows)
            failed = set(self._redis.compare_and_set(updates))
            for key, counts in outcomes.items():
                if key not in failed:
                    self.stats.outcomes.update(counts)
            if not failed:
                return
            self.stats.cas_conflicts += len(failed)
            pending = [k for k in pending if k in failed]
        raise RetryableError(f"redis state of {len(pending)} key(s) kept changing under us")

    def flush(self, *, stopping: bool = False) -> None:
        """Commit the buffered events and offsets to the lake, then (asynchronously) to Kafka.

        First waits for the DLQ's acknowledgements (at most ``DLQ_WAIT_S``, or
        ``STOP_DLQ_WAIT_S`` when ``stopping``). A partition with a rejected record still
        unacknowledged is committed only below that record; the rest of it stays in the
        buffer for the next flush (or, when stopping, is left to the next owner).
        A fenced commit drops the buffer and re-seeks to the lake's offsets.
        """
        b = self._buffer
        if not b.next_offsets:
            b.clear()
            return
        unacked = self._dlq.flush(STOP_DLQ_WAIT_S if stopping else DLQ_WAIT_S)
        cuts = {
            p: o for p, o in unacked.items()
            if p in b.next_offsets and b.first_offsets[p] <= o < b.next_offsets[p]
        }  # fmt: skip
        if cuts:
            log.warning("DLQ not acknowledged (broker down?): committing partitions %s only up to %s",
                        sorted(cuts), cuts)  # fmt: skip
        table, next_offsets = b.split(cuts)
        if next_offsets:
            expected = {p: self._expected.get(p) for p in next_offsets}
            try:
                rows = self._lake.commit(table, next_offsets, expected)
            except FencedError as exc:
                self.stats.fenced += 1
                log.warning("fenced, dropping the batch and re-seeking: %s", exc)
                b.clear()
                self._reseek()
                return
            self.stats.lake_rows += rows
            self.stats.lake_commits += 1
            for p, o in next_offsets.items():
                self._expected[p] = o
            self._commit_kafka(next_offsets, stopping=stopping)
            self._write_metrics()
        b.retain(cuts, self.clock())

    def _commit_kafka(self, next_offsets: Mapping[int, int], *, stopping: bool) -> None:
        """Commit offsets to Kafka, asynchronously (advisory: lag monitoring).

        When stopping, the broker is probed first (1 s): closing a consumer with a commit
        in flight waits for it, about 10 s when the broker is down, so with the broker
        unreachable the commit is skipped (the next owner commits the lake's offsets to
        Kafka on assignment).
        """
        try:
            if stopping:
                self._consumer.list_topics(self.topic, timeout=1.0)
            offsets = [TopicPartition(self.topic, p, o) for p, o in next_offsets.items()]
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - Kafka's committed offsets are advisory
            log.info("kafka commit skipped or failed (lake offsets are authoritative): %s", exc)

    def _reseek(self) -> None:
        assignment = self._consumer.assignment() if self._consumer else []
        stored = self._lake.stored_offsets([tp.partition for tp in assignment])
        for tp in assignment:
            self._expected[tp.partition] = stored.get(tp.partition)
            if tp.partition in stored:
                try:
                    self._consumer.seek(TopicPartition(self.topic, tp.partition, stored[tp.partition]))
                except Exception as exc:  # noqa: BLE001 - e.g. being revoked: the next owner seeks
                    log.info("re-seek of partition %d failed: %s", tp.partition, exc)


def _retry_service(fn: Callable[[], T]) -> T:
    """Call ``fn``, retrying RetryableError (a service blip) for up to ``SERVICE_RETRY_S``."""
    return call_retrying(fn, for_s=SERVICE_RETRY_S)


def run_consumer(
    settings: Settings, *, group: str | None = None, until_idle_s: float | None = None,
    max_messages: int | None = None, handle_signals: bool = True,
) -> ConsumeStats:  # fmt: skip
    """Run one consumer process to completion (see :class:`MovementConsumer`)."""
    consumer = MovementConsumer(settings, group=group)
    if handle_signals:
        consumer.install_signal_handlers()
    return consumer.run(until_idle_s=until_idle_s, max_messages=max_messages)
