"""A real consumer process for the fault tests, with optional self-kill points.

``python -m tests.faults.consumer_proc [--until-idle S] [--killpoint NAME]`` runs
:class:`ingest.consumer.MovementConsumer` from the ``SENSORLAKE_*`` environment, logs at
INFO on stderr and prints its counters as one JSON line on stdout at a clean exit.

``--killpoint`` makes the process ``SIGKILL`` itself, at the first lake commit that carries
events, exactly at one of these moments (no timing guesswork):

* ``before_lake_commit``: Redis and PostgreSQL hold the events, the lake transaction has
  not started, nothing is committed anywhere;
* ``mid_lake_commit``: the Parquet files of the batch are written, ``COMMIT`` not sent
  (the files are orphans: no snapshot references them);
* ``after_lake_commit``: the lake transaction committed, Kafka's offsets not yet;
* ``between_state_sinks``: at the first poll with events, one of PostgreSQL and Redis
  holds the new states and the other not yet (whichever the consumer writes second).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import ingest.consumer as consumer_mod
import ingest.pg_sink as pg_mod
import ingest.redis_state as redis_mod
import lake.writer as writer_mod
from sensorlake.settings import Settings

KILLPOINTS = ("before_lake_commit", "mid_lake_commit", "after_lake_commit", "between_state_sinks")


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _CommitKiller:
    """Proxy of a DuckDB connection that dies on ``COMMIT`` once armed."""

    def __init__(self, con, armed) -> None:
        self._con = con
        self._armed = armed

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper() == "COMMIT" and self._armed():
            _die()
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


def _die_between_state_sinks() -> None:
    first: list[str] = []
    real_upsert, real_cas = pg_mod.PgSummarySink.upsert, redis_mod.RedisState.compare_and_set

    def upsert(self, states):
        if states and first == ["redis"]:
            _die()
        if states and not first:
            first.append("postgres")
        return real_upsert(self, states)

    def compare_and_set(self, updates):
        if updates and first == ["postgres"]:
            _die()
        if updates and not first:
            first.append("redis")
        return real_cas(self, updates)

    pg_mod.PgSummarySink.upsert = upsert
    redis_mod.RedisState.compare_and_set = compare_and_set


def install(killpoint: str) -> None:
    """Patch the consumer's adapters so the process dies at ``killpoint``."""
    if killpoint == "between_state_sinks":
        _die_between_state_sinks()
        return
    real_commit = writer_mod.LakeWriter.commit
    flags = {"committing_rows": False, "committed_rows": False}

    def commit(self, events, next_offsets, expected):
        if events.num_rows and killpoint == "before_lake_commit":
            _die()
        flags["committing_rows"] = events.num_rows > 0
        try:
            n = real_commit(self, events, next_offsets, expected)
        finally:
            flags["committing_rows"] = False
        flags["committed_rows"] = flags["committed_rows"] or n > 0
        return n

    writer_mod.LakeWriter.commit = commit

    if killpoint == "mid_lake_commit":
        real_setup = writer_mod.LakeWriter.setup

        def setup(self):
            real_setup(self)
            self._con = _CommitKiller(self._con, lambda: flags["committing_rows"])

        writer_mod.LakeWriter.setup = setup

    if killpoint == "after_lake_commit":

        class DyingConsumer(consumer_mod.Consumer):  # type: ignore[misc, valid-type]
            def commit(self, *args, **kwargs):
                if flags["committed_rows"]:
                    _die()
                return super().commit(*args, **kwargs)

        consumer_mod.Consumer = DyingConsumer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--until-idle", type=float, default=None)
    ap.add_argument("--killpoint", choices=KILLPOINTS, default=None)
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(levelname)s %(message)s",
    )  # fmt: skip
    logging.getLogger("ingest.consumer").setLevel(logging.INFO)
    if args.killpoint:
        install(args.killpoint)
    stats = consumer_mod.run_consumer(Settings.from_env(), until_idle_s=args.until_idle)
    print(json.dumps({
        "consumed": stats.consumed, "valid": stats.valid, "dlq": dict(stats.dlq),
        "outcomes": dict(stats.outcomes), "lake_rows": stats.lake_rows,
        "lake_commits": stats.lake_commits, "fenced": stats.fenced,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
