"""The Kafka producer adapter (ingest.producer).

``services`` tests produce to a fresh, uniquely named topic on the local broker
(``Settings.from_env()``: 127.0.0.1:19092 by default) and consume it back. The pacing and
looping tests use a fake clock and, where no broker is needed, a fake producer: no test
waits in real time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from ingest.producer import LOOP_GAP_US, ProduceStats, produce, produce_raw, replay
from ingest.synthetic import generate
from sensorlake.errors import InputError, ServiceError
from sensorlake.events import Event, decode_event, encode_event
from sensorlake.settings import Settings

_quiet = logging.getLogger("tests.kafka")


class FakeClock:
    """Monotonic seconds that only move when the code sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


class FakeProducer:
    """Records (clock time, topic, key, value); acknowledges on flush; can fail or be full."""

    def __init__(self, clock: FakeClock | None = None, *, fail: bool = False, full_times: int = 0) -> None:
        self.clock = clock
        self.sent: list[tuple[float | None, str, bytes | None, bytes | None]] = []
        self.pending: list = []
        self.fail = fail
        self.full_times = full_times
        self.polls = 0

    def produce(self, topic, value=None, key=None, on_delivery=None):
        if self.full_times:
            self.full_times -= 1
            raise BufferError("queue full")
        self.sent.append((self.clock() if self.clock else None, topic, key, value))
        self.pending.append(on_delivery)

    def poll(self, timeout=0):
        self.polls += 1
        return self._deliver()

    def flush(self, timeout=0):
        self._deliver()
        return 0

    def _deliver(self) -> int:
        n = len(self.pending)
        for cb in self.pending:
            cb("KafkaError{code=MSG_TIMED_OUT}" if self.fail else None, None)
        self.pending.clear()
        return n


def ev(ts_s: float, tid: str = "a", sensor: int = 1) -> Event:
    return Event(sensor, tid, "car", 1_700_000_000_000_000 + int(ts_s * 1_000_000), 1.0, 2.0)


SETTINGS = Settings.from_env(topic="not-used-by-fakes")


# ============================================================ pacing, looping (no broker)
def test_pacing_sends_each_event_at_its_scaled_event_time() -> None:
    clock = FakeClock()
    fake = FakeProducer(clock)
    events = [ev(0), ev(1), ev(1), ev(3.5), ev(10)]
    stats = produce(SETTINGS, events, speedup=2.0, clock=clock, sleep=clock.sleep, producer=fake)
    sent_at = [t - 100.0 for t, *_ in fake.sent]
    assert sent_at == pytest.approx([0.0, 0.5, 0.5, 1.75, 5.0])
    assert stats.count == 5 and stats.seconds == pytest.approx(5.0)
    assert stats.bytes == sum(len(e.key) + len(encode_event(e)) for e in events)
    assert max(clock.sleeps) <= 0.25  # long waits are cut into slices that serve deliveries


def test_max_rate_never_sleeps() -> None:
    clock = FakeClock()
    fake = FakeProducer(clock)
    stats = produce(SETTINGS, [ev(0), ev(100), ev(5000)], max_rate=True, clock=clock, sleep=clock.sleep, producer=fake)
    assert clock.sleeps == [] and stats.count == 3
    stats = produce(SETTINGS, [ev(0), ev(100)], speedup=None, clock=clock, sleep=clock.sleep, producer=fake)
    assert clock.sleeps == [] and stats.count == 2


def test_loop_suffixes_ids_and_shifts_times_monotonically() -> None:
    events = (e for e in [ev(0, "a"), ev(1, "b"), ev(2, "a")])  # a one-shot iterator
    fake = FakeProducer()
    stats = produce(SETTINGS, events, max_rate=True, loop=True, limit=8, producer=fake)
    assert stats.count == 8
    got = [decode_event(v) for *_, v in fake.sent]
    assert [e.traveler_id for e in got] == ["a", "b", "a", "a~1", "b~1", "a~1", "a~2", "b~2"]
    span = 2_000_000 + LOOP_GAP_US
    assert got[3].ts_us == got[0].ts_us + span and got[6].ts_us == got[0].ts_us + 2 * span
    assert [e.ts_us for e in got] == sorted(e.ts_us for e in got)
    assert [k for _, _, k, _ in fake.sent][3] == b"1:a~1"


def test_loop_with_a_factory_and_shift_to_now() -> None:
    now = 1_800_000_000_000_000
    out = replay(lambda: [ev(0), ev(0.5, "b")], loop=True, shift_to_now=True, wall_time_us=lambda: now)
    first = [next(out) for _ in range(4)]
    assert [e.ts_us for e in first] == [now, now + 500_000, now + 500_000 + LOOP_GAP_US, now + 1_000_000 + LOOP_GAP_US]
    assert [e.traveler_id for e in first] == ["a", "b", "a~1", "b~1"]


def test_limit_zero_and_empty_source() -> None:
    fake = FakeProducer()
    assert produce(SETTINGS, [ev(0)], limit=0, producer=fake).count == 0
    assert produce(SETTINGS, [], loop=True, producer=fake).count == 0


def test_buffer_full_is_retried_after_polling() -> None:
    fake = FakeProducer(full_times=3)
    stats = produce(SETTINGS, [ev(0), ev(0, "b")], max_rate=True, producer=fake)
    assert stats.count == 2 and len(fake.sent) == 2 and fake.polls >= 3


def test_failed_deliveries_raise_service_error() -> None:
    with pytest.raises(ServiceError, match="2 of 2 messages .* failed delivery: .*MSG_TIMED_OUT"):
        produce(SETTINGS, [ev(0), ev(1)], max_rate=True, producer=FakeProducer(fail=True))


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        produce(SETTINGS, [ev(0)], speedup=0, producer=FakeProducer())
    with pytest.raises(InputError):
        produce(SETTINGS, [ev(0)], limit=-1, producer=FakeProducer())


def test_progress_bar_with_a_console() -> None:
    from rich.console import Console

    console = Console(record=True, width=100, force_terminal=False)
    stats = produce(SETTINGS, [ev(i / 10, f"t{i}") for i in range(5000)], max_rate=True, console=console, producer=FakeProducer())
    assert stats.count == 5000
    assert "5000/5000" in console.export_text()


# ============================================================ against the local broker
def _admin(settings: Settings):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "logger": _quiet})


@pytest.fixture(scope="module")
def broker() -> Settings:
    settings = Settings.from_env()
    try:
        _admin(settings).list_topics(timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means "no broker here"
        pytest.skip(f"no Kafka broker at {settings.kafka_bootstrap}: {exc}")
    return settings


@pytest.fixture()
def topic(broker: Settings) -> Iterator[Settings]:
    from confluent_kafka.admin import NewTopic

    name = f"test-producer-{uuid.uuid4().hex[:10]}"
    admin = _admin(broker)
    for fut in admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)]).values():
        fut.result(timeout=30)
    for _ in range(50):  # wait until the broker's metadata shows it
        if name in admin.list_topics(timeout=5).topics:
            break
        time.sleep(0.1)
    yield Settings.from_env(topic=name)
    for fut in admin.delete_topics([name]).values():
        try:
            fut.result(timeout=30)
        except Exception:  # noqa: BLE001 - best-effort clean-up
            pass


def consume_all(settings: Settings, n: int, timeout_s: float = 60.0) -> list:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": _quiet,
        }
    )
    c.subscribe([settings.topic])
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                assert m.error() is None, m.error()
                out.append(m)
        # anything extra would show up now
        out.extend(m for m in c.consume(num_messages=100, timeout=2.0) if m.error() is None)
    finally:
        c.close()
    return out


@pytest.mark.services
def test_produce_and_consume_back(topic: Settings) -> None:
    events = list(generate(sensors=2, travelers=30, rate_hz=5, duration_s=60, seed=5))
    stats = produce(topic, events, max_rate=True)
    assert isinstance(stats, ProduceStats) and stats.count == len(events) > 500
    msgs = consume_all(topic, len(events))
    assert len(msgs) == len(events)
    got = sorted((m.key(), m.value()) for m in msgs)
    want = sorted((e.key.encode(), encode_event(e)) for e in events)
    assert got == want
    # one key lives on one partition, in event-time order
    per_key: dict[bytes, list[tuple[int, int]]] = {}
    for m in msgs:
        per_key.setdefault(m.key(), []).append((m.partition(), decode_event(m.value()).ts_us))
    for seq in per_key.values():
        assert len({p for p, _ in seq}) == 1
        assert [t for _, t in seq] == sorted(t for _, t in seq)
    assert stats.bytes == sum(len(k) + len(v) for k, v in want)


@pytest.mark.services
def test_paced_replay_against_the_broker_with_a_fake_clock(topic: Settings) -> None:
    clock = FakeClock()
    events = [ev(0), ev(2, "b"), ev(30, "c")]
    stats = produce(topic, events, speedup=10.0, clock=clock, sleep=clock.sleep)
    assert stats.count == 3
    assert sum(clock.sleeps) == pytest.approx(3.0)  # 30 s of event time at 10x
    assert len(consume_all(topic, 3)) == 3


@pytest.mark.services
def test_produce_raw_sends_bytes_unchanged(topic: Settings) -> None:
    items = [(b"1:x", b"{not json"), (None, b"\xff\xfe"), (b"2:y", None), ("3:z", '{"a":1}')]
    stats = produce_raw(topic, items)
    assert stats.count == 4
    msgs = consume_all(topic, 4)
    assert sorted(((m.key(), m.value()) for m in msgs), key=repr) == sorted(
        [(b"1:x", b"{not json"), (None, b"\xff\xfe"), (b"2:y", None), (b"3:z", b'{"a":1}')], key=repr
    )


@pytest.mark.services
def test_missing_topic_is_a_service_error(broker: Settings) -> None:
    settings = Settings.from_env(topic=f"missing-{uuid.uuid4().hex[:10]}")
    with pytest.raises(ServiceError, match="does not exist"):
        produce(settings, [ev(0)], max_rate=True)
