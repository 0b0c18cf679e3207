"""Dead-letter queue adapter: rejected records go to ``movements.dlq`` with their reason.

The DLQ message keeps the **original key and value bytes unchanged**; the reason and
origin travel as headers:

========================  ==================================================
``sl-reason``             machine-readable code (``malformed_json``, ...)
``sl-detail``             human-readable explanation (truncated to 1 kB)
``sl-origin-topic``       topic the record was read from
``sl-origin-partition``   its partition (decimal)
``sl-origin-offset``      its offset (decimal)
``sl-truncated``          only when the DLQ topic refused the original value as too
                          large: the original length in bytes; the value is then its
                          first ``TRUNCATED_BYTES`` bytes and ``sl-value-sha256`` the
                          SHA-256 of the whole original
========================  ==================================================

Delivery is **at least once**: the consumer commits a partition's offsets to the lake only
below the first of its rejected records the broker has not acknowledged
(:meth:`DeadLetterQueue.flush` tells which), so a record is never lost; a crash or a
rebalance before that commit makes the next owner send it again. Consumers of the DLQ
deduplicate on (``sl-origin-topic``, ``sl-origin-partition``, ``sl-origin-offset``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Producer

from sensorlake.settings import Settings

log = logging.getLogger(__name__)

TRUNCATED_BYTES = 64 * 1024
_SIZE_ERRORS = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}


@dataclass
class _Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    generation: int = 0
    failed: KafkaError | None = None  # the last delivery error, to re-send


class DeadLetterQueue:
    """Produces rejected records to the DLQ topic and tracks which are acknowledged.

    Records are keyed by their origin ``(partition, offset)``; :meth:`flush` returns, per
    origin partition, the lowest offset whose record is not acknowledged yet.
    """

    def __init__(self, settings: Settings) -> None:
        self._conf = {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "message.max.bytes": 4_000_000,
            "error_cb": self._on_error,
        }
        self.topic = settings.dlq_topic
        self._producer: Producer | None = None
        self._pending: dict[tuple[int, int], _Record] = {}
        self._generation = 0
        self._fatal = False
        self.counts: Counter[str] = Counter()

    def setup(self) -> None:
        """Create the Kafka producer."""
        self._producer = Producer(self._conf)

    def send(
        self, key: bytes | None, value: bytes | None, reason: str, detail: str,
        topic: str, partition: int, offset: int,
    ) -> None:  # fmt: skip
        """Queue one rejected record (asynchronous; see :meth:`flush`)."""
        headers = [
            ("sl-reason", reason.encode()),
            ("sl-detail", detail.encode("utf-8", "replace")[:1024]),
            ("sl-origin-topic", topic.encode()),
            ("sl-origin-partition", str(partition).encode()),
            ("sl-origin-offset", str(offset).encode()),
        ]
        self.counts[reason] += 1
        rec = _Record(key, value, headers)
        self._pending[(partition, offset)] = rec
        self._produce((partition, offset), rec)
        self._producer.poll(0)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = True
            log.warning("DLQ producer fatal error (it will be replaced): %s", err)

    def _replace_producer_if_fatal(self) -> None:
        """An idempotent producer that hit a fatal error refuses everything: start a new one
        and re-send every record not acknowledged (duplicates are possible: at least once)."""
        if not self._fatal:
            return
        self._fatal = False
        self._producer = Producer(self._conf)
        for rec in self._pending.values():
            rec.failed = KafkaError(KafkaError._FATAL)

    def _produce(self, origin: tuple[int, int], rec: _Record) -> None:
        self._generation += 1
        rec.generation, rec.failed = self._generation, None
        cb = partial(self._on_delivery, origin, rec.generation)
        while True:
            try:
                self._producer.produce(self.topic, value=rec.value, key=rec.key, headers=rec.headers, on_delivery=cb)
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused locally (e.g. larger than message.max.bytes)
                err = exc.args[0]
                if _truncate_if_too_large(rec, err):
                    continue
                rec.failed = err
                log.warning("DLQ record from %s refused: %s", origin, err)
                return

    def _on_delivery(self, origin: tuple[int, int], generation: int, err: KafkaError | None, _msg) -> None:
        rec = self._pending.get(origin)
        if rec is None:
            return
        if err is None:
            del self._pending[origin]  # any copy acknowledged: delivered
        elif generation == rec.generation:
            rec.failed = err
            log.warning("DLQ delivery of the record from %s failed: %s", origin, err)

    def flush(self, timeout_s: float = 30.0) -> dict[int, int]:
        """Wait up to ``timeout_s`` until every queued record is acknowledged; re-send the
        ones whose delivery failed (once truncated, if the broker refused their size).

        Returns:
            ``{origin partition: lowest origin offset not acknowledged}`` (empty: all
            delivered). The caller must not commit offsets at or beyond those.
        """
        if self._producer is None or not self._pending:
            return {}
        deadline = time.monotonic() + timeout_s
        while True:
            self._replace_producer_if_fatal()
            for origin, rec in list(self._pending.items()):
                if rec.failed is not None:
                    _truncate_if_too_large(rec, rec.failed)
                    self._produce(origin, rec)
            self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            if not self._pending or time.monotonic() >= deadline:
                break
        out: dict[int, int] = {}
        for p, o in self._pending:
            out[p] = min(o, out.get(p, o))
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Stop tracking records of ``partitions`` (revoked: their next owner re-sends what
        was not committed). A copy still queued may be delivered: at least once."""
        gone = set(partitions)
        for origin in [o for o in self._pending if o[0] in gone]:
            del self._pending[origin]

    @property
    def unacknowledged(self) -> int:
        """Records queued or failed, not acknowledged yet."""
        return len(self._pending)


def _truncate_if_too_large(rec: _Record, err: KafkaError) -> bool:
    """If ``err`` refused the record for its size and it is not truncated yet, replace the
    value by its first TRUNCATED_BYTES bytes, recording length and hash. True if it did."""
    if err.code() not in _SIZE_ERRORS or any(k == "sl-truncated" for k, _ in rec.headers):
        return False
    value = rec.value or b""
    rec.headers = [
        *rec.headers,
        ("sl-truncated", str(len(value)).encode()),
        ("sl-value-sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    rec.value = value[:TRUNCATED_BYTES]
    log.warning("DLQ record too large for the DLQ topic: sending its first %d of %d bytes", TRUNCATED_BYTES, len(value))
    return True
