"""Data health for the app: consumer lag, DLQ reasons, lake snapshots and files.

Definitions:

* **Consumer lag** per partition of ``Settings.topic`` = Kafka's high watermark (the offset
  the next produced record gets) minus the next offset the lake stored for the topic in
  ``lake.ingest_offsets``, whichever consumer group wrote it (0 when none: nothing consumed).
  It is what has been produced and is not yet in the lake, whatever Kafka's own committed
  offsets say (those are written after the lake commit, for monitoring only).
* **DLQ counts by reason**: the ``sl-reason`` header of the records of
  ``Settings.dlq_topic``. The read is bounded: at most ``max_records`` of the newest records
  (spread over the partitions) within ``timeout_s``; the result says how many of how many
  it read.

Every Kafka call has a timeout, so the page renders (with the error) when Kafka is down.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from sensorlake.errors import ServiceError
from sensorlake.settings import Settings

REASON_HEADER = "sl-reason"


def _consumer(settings: Settings, timeout_s: float) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"sensorlake-health-{uuid.uuid4().hex[:8]}",  # never commits
            "enable.auto.commit": False,
            "socket.timeout.ms": int(timeout_s * 1000),
            "session.timeout.ms": 6000,
            "log_level": 0,
            "logger": _quiet,
        }
    )


class _Quiet:
    def log(self, *args: Any, **kwargs: Any) -> None:  # librdkafka chatter when Kafka is down
        pass


_quiet = _Quiet()


def watermarks(settings: Settings, topic: str, *, timeout_s: float = 3.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermarks of ``topic``.

    Raises:
        ServiceError: Kafka unreachable or the topic missing.
    """
    c = _consumer(settings, timeout_s)
    try:
        return _watermarks(c, topic, timeout_s)
    finally:
        c.close()


def _watermarks(c: Consumer, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    try:
        md = c.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceError(f"Kafka not reachable ({exc.args[0].str() if exc.args else exc})") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise ServiceError(f"Kafka topic {topic} does not exist")
    out = {}
    for p in sorted(t.partitions):
        try:
            out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        except KafkaException as exc:
            raise ServiceError(f"Kafka watermarks of {topic}[{p}]: {exc}") from None
    return out


def consumer_lag(
    high: dict[int, tuple[int, int]] | dict[int, int], stored: dict[int, int]
) -> list[dict[str, int]]:
    """Lag per partition: high watermark minus the lake's stored next offset (pure).

    Args:
        high: ``{partition: high}`` or ``{partition: (low, high)}``.
        stored: ``{partition: next offset}`` from ``lake.ingest_offsets``.

    Returns:
        ``[{"partition", "high_watermark", "lake_next_offset", "lag"}]`` sorted by partition.

    >>> consumer_lag({0: 10, 1: 5}, {0: 7})
    [{'partition': 0, 'high_watermark': 10, 'lake_next_offset': 7, 'lag': 3}, {'partition': 1, 'high_watermark': 5, 'lake_next_offset': 0, 'lag': 5}]
    """
    rows = []
    for p in sorted(set(high) | set(stored)):
        h = high.get(p, 0)
        h = h[1] if isinstance(h, tuple) else h
        s = stored.get(p, 0)
        rows.append({"partition": p, "high_watermark": int(h), "lake_next_offset": int(s), "lag": max(int(h) - int(s), 0)})
    return rows


def dlq_reasons(settings: Settings, *, max_records: int = 10_000, timeout_s: float = 5.0) -> dict[str, Any]:
    """Count the newest DLQ records by their ``sl-reason`` header (a bounded read).

    Returns:
        ``{"reasons": {reason: count}, "read": n, "total": records in the topic}``.

    Raises:
        ServiceError: Kafka unreachable or the DLQ topic missing.
    """
    c = _consumer(settings, timeout_s)
    try:
        marks = _watermarks(c, settings.dlq_topic, timeout_s)
        total = sum(h - lo for lo, h in marks.values())
        per_part = max(max_records // max(len(marks), 1), 1)
        todo = {p: h for p, (lo, h) in marks.items() if h > lo}
        reasons: Counter[str] = Counter()
        read = 0
        if todo:
            c.assign([TopicPartition(settings.dlq_topic, p, max(marks[p][0], h - per_part)) for p, h in todo.items()])
            deadline = time.monotonic() + timeout_s
            while todo and time.monotonic() < deadline:
                for msg in c.consume(num_messages=1000, timeout=0.5):
                    if msg.error() is not None:
                        continue
                    headers = dict(msg.headers() or [])
                    raw = headers.get(REASON_HEADER)
                    reasons[raw.decode(errors="replace") if raw else "(no reason)"] += 1
                    read += 1
                    if msg.offset() + 1 >= todo.get(msg.partition(), 0):
                        todo.pop(msg.partition(), None)
        return {"reasons": dict(sorted(reasons.items())), "read": read, "total": total}
    finally:
        c.close()
