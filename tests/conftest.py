"""Shared fixtures. Integration tests talk to the real local stack (`sensorlake stack up`);
each gets its own topics, PostgreSQL databases, lake directory and Redis namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from sensorlake.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """../shared/data beside the checkout (or $SENSORLAKE_SHARED_DATA)."""
    env = os.environ.get("SENSORLAKE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if not d.is_dir():
        pytest.skip(f"shared trajectory data not found at {d}")
    return d


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def services(base_settings: Settings) -> Settings:
    """Fail (not skip) when the stack is down: these tests are the point of CI."""
    s = base_settings
    problems = []
    try:
        AdminClient({"bootstrap.servers": s.kafka_bootstrap}).list_topics(timeout=10)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"kafka {s.kafka_bootstrap}: {exc}")
    try:
        with psycopg.connect(s.pg_dsn, connect_timeout=5) as c:
            c.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"postgres: {str(exc).splitlines()[0]}")
    try:
        redis.Redis.from_url(s.redis_url, socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"redis: {exc}")
    if problems:
        pytest.fail("local stack not reachable (run `sensorlake stack up`): " + "; ".join(problems))
    return s


def _admin(s: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": s.kafka_bootstrap})


def create_topics(s: Settings, partitions: int) -> None:
    admin = _admin(s)
    futures = admin.create_topics(
        [NewTopic(s.topic, partitions, 1), NewTopic(s.dlq_topic, 1, 1)], operation_timeout=30
    )
    for f in futures.values():
        f.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10)
        t = md.topics.get(s.topic)
        if t and len(t.partitions) == partitions and s.dlq_topic in md.topics:
            return
        time.sleep(0.2)
    raise RuntimeError("topics not visible after 30 s")


@pytest.fixture
def isolated(services: Settings, tmp_path: Path):
    """Settings with a private topic (4 partitions), DLQ topic, consumer group, live and
    catalog databases, lake data directory and Redis namespace; all removed afterwards."""
    rid = uuid.uuid4().hex[:10]
    s = Settings.from_env(
        topic=f"movements-{rid}",
        dlq_topic=f"movements-{rid}.dlq",
        consumer_group=f"g-{rid}",
        pg_database=f"sl_live_{rid}",
        pg_catalog_database=f"sl_lake_{rid}",
        data_path=str(tmp_path / "lake"),
        redis_namespace=f"t{rid}",
        topic_partitions=4,
        max_batch_age_s=1.0,
    )
    with psycopg.connect(services.pg_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{s.pg_database}"')
        c.execute(f'CREATE DATABASE "{s.pg_catalog_database}"')
    create_topics(s, 4)
    from lake.catalog import connect

    connect(s).close()  # initialise the catalog once, before concurrent consumers attach
    yield s
    admin = _admin(s)  # keep a reference: the request is sent asynchronously
    for f in admin.delete_topics([s.topic, s.dlq_topic], operation_timeout=30).values():
        try:
            f.result(timeout=30)
        except Exception:  # noqa: BLE001 - already gone is fine
            pass
    with psycopg.connect(services.pg_dsn, autocommit=True) as c:
        for db in (s.pg_database, s.pg_catalog_database):
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    r = redis.Redis.from_url(s.redis_url)
    for k in r.scan_iter(match=f"{s.redis_namespace}:*", count=1000):
        r.delete(k)


def start_consumers(s: Settings, n: int, until_idle_s: float = 8.0) -> list[subprocess.Popen]:
    """Start ``n`` real consumer processes (`sensorlake consume --until-idle`)."""
    env = {**os.environ, **s.to_env()}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "consume", "--until-idle", str(until_idle_s)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for _ in range(n)
    ]


def wait_all(procs: list[subprocess.Popen], timeout_s: float = 300) -> list[str]:
    """Wait for every process; fail the test with its stderr if one exits non-zero."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout_s)
        if p.returncode != 0:
            pytest.fail(f"consumer exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
        outs.append(out.decode())
    return outs
