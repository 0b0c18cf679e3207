"""Dead-letter queue adapter: rejected records go to ``movements.dlq`` with their reason.

The DLQ message keeps the **original key and value bytes unchanged**; the reason and
origin travel as headers:

========================  ==================================================
``sl-reason``             machine-readable code (``malformed_json``, ...)
``sl-detail``             human-readable explanation (truncated to 1 kB)
``sl-origin-topic``       topic the record was read from
``sl-origin-partition``   its partition (decimal)
``sl-origin-offset``      its offset (decimal)
========================  ==================================================
"""

from __future__ import annotations

from collections import Counter

from confluent_kafka import Producer

from sensorlake.errors import ServiceError
from sensorlake.settings import Settings


class DeadLetterQueue:
    """Produces rejected records to the DLQ topic; :meth:`flush` before committing offsets."""

    def __init__(self, settings: Settings) -> None:
        self._conf = {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "message.max.bytes": 4_000_000,
        }
        self.topic = settings.dlq_topic
        self._producer: Producer | None = None
        self._failed = 0
        self.counts: Counter[str] = Counter()

    def setup(self) -> None:
        """Create the Kafka producer."""
        self._producer = Producer(self._conf)

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self._failed += 1

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
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged by the broker.

        Raises:
            ServiceError: records still undelivered after ``timeout_s``, or a delivery failed
                (the caller must not commit the offsets of those records).
        """
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failed:
            failed, self._failed = self._failed, 0
            raise ServiceError(f"DLQ: {remaining} record(s) undelivered, {failed} failed")
