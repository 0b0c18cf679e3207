"""Kafka producer adapter: replay events into the movements topic, paced or at full speed.

The one place that imports the Kafka *producer*. Each event becomes one message:

* topic ``settings.topic``; key ``event.key`` (``"<sensor_id>:<traveler_id>"``, UTF-8), so
  all observations of one traveler at one sensor land on one partition, in order;
* value ``sensorlake.events.encode_event(event)`` (the JSON wire format).

Delivery guarantees: ``enable.idempotence=true`` and ``acks=all`` (no duplicates or reordering
from producer retries); ``compression.type=lz4``; batching with ``linger.ms`` for throughput;
key partitioning ``murmur2_random`` (the Java client's partitioner, so other producers of the
same keys agree). Every delivery report is checked: at the end the producer is flushed with a
timeout and any message that failed or is still undelivered raises
:class:`sensorlake.errors.ServiceError`. Nothing is lost silently.

Pacing (event time -> wall time): with ``speedup = X`` the event with event time ``t`` is sent
at wall time ``start + (t - t0) / X``, ``t0`` being the first event's time and ``start`` the
wall clock when it was sent. ``max_rate=True`` (or ``speedup=None``) sends as fast as the
client accepts. The clock and sleep are injectable, so tests never wait.

``loop=True`` replays the source again and again: pass ``n`` (1, 2, ...) suffixes traveler ids
with ``~n`` and shifts event times by ``n x (span + 1 s)``, ``span`` being the first pass's
last minus first event time, so keys stay distinct and times keep increasing.
``shift_to_now=True`` shifts all event times so the first event is "now" (UTC wall clock).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer

from sensorlake.errors import InputError, ServiceError
from sensorlake.events import Event, encode_event
from sensorlake.settings import Settings

__all__ = ["LOOP_GAP_US", "ProduceStats", "produce", "produce_raw", "producer_config", "replay"]

_log = logging.getLogger(__name__)

LOOP_GAP_US = 1_000_000
"""Event-time gap between the end of one ``loop`` pass and the start of the next, us."""

_MAX_SLEEP_S = 0.25  # wake up at least this often while pacing, to serve delivery reports
_POLL_EVERY = 1_000  # serve delivery reports every N messages
_PROGRESS_EVERY = 2_000
_TOPIC_CHECKS = 6  # metadata look-ups, 0.5 s apart, before "topic does not exist"


class _ProducerLike(Protocol):  # the part of confluent_kafka.Producer used here
    def produce(self, topic: str, value: Any = ..., key: Any = ..., on_delivery: Any = ...) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


@dataclasses.dataclass(frozen=True)
class ProduceStats:
    """What a :func:`produce` run did.

    Attributes:
        count: messages sent and acknowledged by Kafka.
        seconds: wall seconds from the first send to the end of the final flush.
        events_per_s: ``count / seconds`` (0 when no time elapsed).
        bytes: key + value bytes sent (before compression).
        interrupted: True when Ctrl-C stopped the run (what was sent is still flushed).
    """

    count: int
    seconds: float
    events_per_s: float
    bytes: int
    interrupted: bool = False


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The confluent-kafka producer configuration used by :func:`produce` (overridable).

    Tuned for throughput with safety: idempotent, ``acks=all``, lz4, 20 ms linger, batches of
    up to 10k messages / 1 MB, a 500k-message local queue; topics are never auto-created
    (``allow.auto.create.topics=false``: the topic's partition count is configuration).
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": "sensorlake-producer",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
        "message.timeout.ms": 60_000,
        "partitioner": "murmur2_random",
        "allow.auto.create.topics": False,
        "logger": _log,
    }
    conf.update(overrides)
    return conf


def _connect(settings: Settings, topic: str, conf_overrides: dict[str, Any]) -> _ProducerLike:
    """Build a Producer and check, before sending anything, that the broker and topic exist."""
    try:
        producer = Producer(producer_config(settings, **conf_overrides))
    except KafkaException as exc:
        raise ServiceError(f"cannot create a Kafka producer: {exc}") from None
    for attempt in range(_TOPIC_CHECKS):
        try:
            md = producer.list_topics(timeout=10)
        except KafkaException as exc:
            raise ServiceError(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc.args[0]}") from None
        if topic in md.topics:
            break
        if attempt + 1 < _TOPIC_CHECKS:  # a just-created topic can take a moment to appear
            time.sleep(0.5)
    else:
        raise ServiceError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}; create it first")
    if md.topics[topic].error is not None:
        raise ServiceError(f"topic {topic!r} on {settings.kafka_bootstrap}: {md.topics[topic].error}")
    return producer


class _Sender:
    """Sends messages to one topic and checks every delivery report.

    ``send`` counts messages and key + value bytes and serves delivery reports every
    ``_POLL_EVERY`` messages; ``finish`` flushes and raises if anything was not delivered.
    """

    def __init__(self, producer: _ProducerLike, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0
        self.bytes = 0
        self.failed = 0
        self.first_error: str | None = None

    def _on_delivery(self, err: Any, msg: Any) -> None:  # called from poll/flush on this thread
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)

    def send(self, key: bytes | None, value: bytes | None) -> None:
        """Produce one message; when the local queue is full, serve delivery reports and retry."""
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                raise ServiceError(f"Kafka refused a message for {self.topic!r}: {exc.args[0]}") from None
        self.count += 1
        self.bytes += len(key or b"") + len(value or b"")
        if self.count % _POLL_EVERY == 0:
            self.producer.poll(0)

    def finish(self, flush_timeout_s: float) -> None:
        """Flush; raise ServiceError if any message is undelivered or failed."""
        remaining = self.producer.flush(flush_timeout_s)
        if remaining > 0:
            raise ServiceError(
                f"{remaining} of {self.count} messages to {self.topic!r} still undelivered after {flush_timeout_s:g} s"
                + (f" (first error: {self.first_error})" if self.first_error else "")
            )
        if self.failed:
            raise ServiceError(
                f"{self.failed} of {self.count} messages to {self.topic!r} failed delivery: {self.first_error}"
            )

    def stats(self, seconds: float, interrupted: bool = False) -> ProduceStats:
        """The run's :class:`ProduceStats` after ``seconds`` of wall time."""
        seconds = max(seconds, 0.0)
        return ProduceStats(
            count=self.count,
            seconds=seconds,
            events_per_s=self.count / seconds if seconds > 0 else 0.0,
            bytes=self.bytes,
            interrupted=interrupted,
        )


def _wall_time_us() -> int:
    return time.time_ns() // 1_000


def replay(
    events: Iterable[Event] | Callable[[], Iterable[Event]],
    *,
    loop: bool = False,
    shift_to_now: bool = False,
    wall_time_us: Callable[[], int] = _wall_time_us,
) -> Iterator[Event]:
    """The stream :func:`produce` sends: the source, optionally shifted to now and looped.

    Args:
        events: the events (in event-time order), or a zero-argument callable returning them
            afresh (used for each ``loop`` pass). A one-shot iterator is cached in memory
            during the first pass when ``loop`` is set.
        loop: repeat forever; pass ``n >= 1`` has traveler ids ``f"{id}~{n}"`` and times
            shifted by ``n x (last - first + LOOP_GAP_US)``.
        shift_to_now: add ``now - first event time`` to every event time (UTC microseconds
            from ``wall_time_us``, read when the first event is seen).

    The first pass's span uses its first and its largest event time, so a pass never
    overlaps the previous one even if the source is not perfectly sorted.
    """
    if callable(events):
        factory: Callable[[], Iterable[Event]] | None = events
        first_pass: Iterable[Event] = events()
    else:
        factory = None
        first_pass = events
    one_shot = iter(first_pass) is first_pass
    cache: list[Event] | None = [] if (loop and factory is None and one_shot) else None

    first_us: int | None = None
    last_us = 0
    offset = 0
    for ev in first_pass:
        if first_us is None:
            first_us = ev.ts_us
            last_us = ev.ts_us
            if shift_to_now:
                offset = wall_time_us() - first_us
        elif ev.ts_us > last_us:
            last_us = ev.ts_us
        if cache is not None:
            cache.append(ev)
        yield ev if not offset else Event(
            ev.sensor_id, ev.traveler_id, ev.traveler_type, ev.ts_us + offset, ev.x_ft, ev.y_ft
        )
    if not loop or first_us is None:
        return
    span = last_us - first_us + LOOP_GAP_US
    n = 0
    while True:
        n += 1
        shift = offset + n * span
        suffix = f"~{n}"
        source: Iterable[Event]
        if factory is not None:
            source = factory()
        elif cache is not None:
            source = cache
        else:
            source = first_pass
        for ev in source:
            yield Event(ev.sensor_id, ev.traveler_id + suffix, ev.traveler_type, ev.ts_us + shift, ev.x_ft, ev.y_ft)


def produce(
    settings: Settings,
    events: Iterable[Event] | Callable[[], Iterable[Event]],
    *,
    speedup: float | None = 1.0,
    max_rate: bool = False,
    limit: int | None = None,
    loop: bool = False,
    shift_to_now: bool = False,
    console: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall_time_us: Callable[[], int] = _wall_time_us,
    flush_timeout_s: float = 75.0,
    producer: _ProducerLike | None = None,
    producer_overrides: dict[str, Any] | None = None,
) -> ProduceStats:
    """Send events to ``settings.topic``, in the given order, paced by event time.

    Args:
        settings: broker address (``settings.kafka_bootstrap``) and topic (``settings.topic``).
        events: events in event-time order (e.g. :func:`ingest.readers.open_source` or
            :func:`ingest.synthetic.generate`), or a callable returning them afresh.
        speedup: replay speed: 1.0 = real time, 10 = ten times faster. ``None`` = max rate.
        max_rate: send as fast as possible, ignoring event times.
        limit: stop after this many messages (over all loop passes).
        loop: replay the source forever (until ``limit`` or Ctrl-C); see :func:`replay`.
        shift_to_now: shift event times so the first event is now (UTC).
        console: a ``rich.console.Console``; when given, a progress bar is shown.
        clock, sleep: monotonic seconds and a sleep function (inject fakes in tests).
        wall_time_us: UTC epoch microseconds now (for ``shift_to_now``).
        flush_timeout_s: how long the final flush may wait for acknowledgements, s.
        producer: a ready producer object (tests); default: a new confluent-kafka Producer
            with :func:`producer_config` (plus ``producer_overrides``), checked to reach the
            broker and find the topic before anything is sent.

    Returns:
        :class:`ProduceStats`. Ctrl-C stops sending; what was sent is flushed and the stats
        say ``interrupted=True``.

    Raises:
        InputError: ``speedup <= 0`` or ``limit < 0``.
        ServiceError: broker unreachable, topic missing, a message refused, or any message
            not acknowledged by the end of the flush (counted, with the first error).
    """
    paced = not max_rate and speedup is not None
    if paced and not (speedup > 0):  # type: ignore[operator]
        raise InputError(f"speedup must be > 0, got {speedup!r} (use max_rate for no pacing)")
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    topic = settings.topic
    if producer is None:
        producer = _connect(settings, topic, producer_overrides or {})
    stream = replay(events, loop=loop, shift_to_now=shift_to_now, wall_time_us=wall_time_us)
    total = limit if limit is not None else (len(events) if (not loop and hasattr(events, "__len__")) else None)  # type: ignore[arg-type]

    sender = _Sender(producer, topic)
    interrupted = False
    t0_event: int | None = None
    t0_wall = start = clock()
    progress = task = None
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn(f"producing to [bold]{topic}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
        )
        progress.start()
        task = progress.add_task("produce", total=total, rate="")
    try:
        try:
            for ev in stream:
                if limit is not None and sender.count >= limit:
                    break
                if paced:
                    if t0_event is None:
                        t0_event, t0_wall = ev.ts_us, clock()
                        start = t0_wall
                    due = t0_wall + (ev.ts_us - t0_event) / 1e6 / speedup  # type: ignore[operator]
                    while (wait := due - clock()) > 0:
                        producer.poll(0)
                        sleep(min(wait, _MAX_SLEEP_S))
                sender.send(ev.key.encode(), encode_event(ev))
                if progress is not None and sender.count % _PROGRESS_EVERY == 0:
                    n, el = sender.count, clock() - start
                    progress.update(task, completed=n, rate=f"{n / el:,.0f} ev/s" if el > 0 else "")  # type: ignore[arg-type]
        except KeyboardInterrupt:
            interrupted = True
            _log.warning("interrupted after %d messages; flushing", sender.count)
        sender.finish(flush_timeout_s)
    finally:
        if progress is not None:
            progress.update(task, completed=sender.count)  # type: ignore[arg-type]
            progress.stop()
    return sender.stats(clock() - start, interrupted)


def produce_raw(
    settings: Settings,
    items: Iterable[tuple[bytes | str | None, bytes | str | None]],
    topic: str | None = None,
    *,
    flush_timeout_s: float = 30.0,
    producer: _ProducerLike | None = None,
) -> ProduceStats:
    """Send raw ``(key, value)`` pairs unchanged (tests: malformed values, tombstones).

    ``str`` is encoded as UTF-8; ``None`` is sent as a null key / value. Topic defaults to
    ``settings.topic``. Same delivery checks and errors as :func:`produce`; no pacing.
    """
    topic = topic or settings.topic
    if producer is None:
        producer = _connect(settings, topic, {})
    sender = _Sender(producer, topic)
    start = time.monotonic()
    for key, value in items:
        sender.send(
            key.encode() if isinstance(key, str) else key,
            value.encode() if isinstance(value, str) else value,
        )
    sender.finish(flush_timeout_s)
    return sender.stats(time.monotonic() - start)
