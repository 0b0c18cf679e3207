"""Shared fixtures. Integration tests talk to the real local stack (`sensorlake stack up`);
each gets its own topics, PostgreSQL databases, lake directory and Redis namespace
(:func:`isolated_on`, also used by the fault tests on their private stack). The stack probe
and the topic creation are ``bench._common``'s, so benchmarks and tests share them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient

from bench._common import create_topics, unreachable_services
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
    problems = unreachable_services(base_settings)
    if problems:
        pytest.fail("local stack not reachable (run `sensorlake stack up`): " + "; ".join(problems))
    return base_settings


@contextlib.contextmanager
def isolated_on(
    base: Settings, tmp_path: Path, *, partitions: int = 4, max_message_bytes: int | None = None,
    dlq_max_message_bytes: int | None = None, **overrides,
) -> Iterator[Settings]:  # fmt: skip
    """Private topic (+DLQ), consumer group, live and catalog databases, lake directory and
    Redis namespace on the stack of ``base``; everything removed afterwards.

    ``max_message_bytes`` raises both topics' ``max.message.bytes`` (broker default ~1 MB);
    ``dlq_max_message_bytes`` sets the DLQ's alone. ``overrides`` are further settings.
    """
    rid = uuid.uuid4().hex[:10]
    values = {
        "topic": f"movements-{rid}", "dlq_topic": f"movements-{rid}.dlq", "consumer_group": f"g-{rid}",
        "pg_database": f"sl_live_{rid}", "pg_catalog_database": f"sl_lake_{rid}",
        "data_path": str(tmp_path / f"lake-{rid}"), "redis_namespace": f"t{rid}",
        "topic_partitions": partitions, "max_batch_age_s": 1.0,
    }  # fmt: skip
    values.update(overrides)
    s = Settings.from_env(
        **{k: getattr(base, k) for k in ("state_dir", "host", "kafka_port", "kafka_controller_port",
                                          "pg_port", "redis_port", "kafka_host", "pg_host", "redis_host")},
        **values,
    )  # fmt: skip
    from lake.catalog import connect

    dlq_limit = dlq_max_message_bytes or max_message_bytes
    try:  # what was created is removed even when a later step of the set-up fails
        with psycopg.connect(s._pg_dsn(base.pg_database), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{s.pg_database}"')
            c.execute(f'CREATE DATABASE "{s.pg_catalog_database}"')
        create_topics(
            s, partitions,
            config={"max.message.bytes": str(max_message_bytes)} if max_message_bytes else None,
            dlq_config={"max.message.bytes": str(dlq_limit)} if dlq_limit else None,
        )  # fmt: skip
        connect(s).close()  # initialise the catalog once, before concurrent consumers attach
        yield s
    finally:
        with contextlib.suppress(Exception):
            admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
            for f in admin.delete_topics([s.topic, s.dlq_topic], operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    f.result(30)  # wait: the request must go out before the client is collected
        with contextlib.suppress(Exception), psycopg.connect(s._pg_dsn(base.pg_database), autocommit=True) as c:
            for db in (s.pg_database, s.pg_catalog_database):
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        with contextlib.suppress(Exception):
            r = redis.Redis.from_url(s.redis_url)
            for k in r.scan_iter(match=f"{s.redis_namespace}:*", count=1000):
                r.delete(k)
            r.close()


@pytest.fixture
def isolated(services: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a private topic (4 partitions), DLQ topic, consumer group, live and
    catalog databases, lake data directory and Redis namespace; all removed afterwards."""
    with isolated_on(services, tmp_path) as s:
        yield s


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
