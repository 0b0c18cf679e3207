"""The local stack (app/stack.py) as CI and the other integration tests rely on it.

Runs against the stack that `sensorlake stack up` started (the ``services`` fixture fails
when it is down). The Kafka roundtrip uses a private throwaway topic, so the shared
``movements`` topic that other processes may be consuming stays untouched; nothing here
stops or restarts a shared service (the restart helpers are tested on the private stack
of ``tests/faults``).
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import app.stack as stack
from sensorlake.settings import Settings

pytestmark = pytest.mark.services


def test_status_reports_all_three_healthy(services: Settings) -> None:
    statuses = stack.status(services)
    assert [s.name for s in statuses] == list(stack.SERVICES)
    unhealthy = [f"{s.name}: {s.detail}" for s in statuses if not s.healthy]
    assert not unhealthy, unhealthy
    for s in statuses:  # endpoints are printed: never with a password
        assert "password" not in s.endpoint and f":{services.pg_password}@" not in s.endpoint


def test_configured_topics_exist(services: Settings) -> None:
    md = AdminClient({"bootstrap.servers": services.kafka_bootstrap}).list_topics(timeout=10)
    assert services.topic in md.topics
    assert services.dlq_topic in md.topics
    assert len(md.topics[services.topic].partitions) >= services.topic_partitions


def test_kafka_produce_consume_roundtrip(services: Settings) -> None:
    topic = f"stacktest-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=30)[topic].result(timeout=30)
    try:
        key, value = b"7:b-1042", b'{"traveler_id": "b-1042", "sensor_id": 7}'
        delivered: list = []
        producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "acks": "all"})
        deadline = time.monotonic() + 30
        while not delivered and time.monotonic() < deadline:  # topic metadata may lag creation
            producer.produce(topic, value, key, on_delivery=lambda err, msg: delivered.append((err, msg)))
            producer.flush(10)
            if delivered and delivered[0][0] is not None:
                delivered.clear()
                time.sleep(0.2)
        assert delivered, "message not delivered within 30 s"
        err, msg = delivered[0]
        assert err is None, err

        consumer = Consumer(
            {
                "bootstrap.servers": services.kafka_bootstrap,
                "group.id": f"stacktest-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.assign([TopicPartition(topic, msg.partition(), msg.offset())])
            got = None
            deadline = time.monotonic() + 15
            while got is None and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    got = m
        finally:
            consumer.close()
        assert got is not None, "message not consumed within 15 s"
        assert (got.key(), got.value()) == (key, value)
    finally:
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(timeout=30)  # wait: a collected client would drop the request


def test_redis_ping(services: Settings) -> None:
    r = redis.Redis.from_url(services.redis_url, socket_connect_timeout=5)
    try:
        assert r.ping() is True
    finally:
        r.close()


@pytest.mark.parametrize("which", ["pg_dsn", "pg_catalog_dsn"])
def test_postgres_both_databases(services: Settings, which: str) -> None:
    dsn = getattr(services, which)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        db, user, one = conn.execute("SELECT current_database(), current_user, 1").fetchone()
    expected = services.pg_database if which == "pg_dsn" else services.pg_catalog_database
    assert (db, user, one) == (expected, services.pg_user, 1)


def test_up_is_idempotent_and_fast_when_running(services: Settings) -> None:
    t0 = time.monotonic()
    stack.up(services)
    assert time.monotonic() - t0 < 15
    assert all(s.healthy for s in stack.status(services))
