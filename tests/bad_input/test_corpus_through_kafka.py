"""Every kind of bad input, sent through Kafka to a running consumer.

Each rejected record lands in the DLQ topic with its machine-readable reason, its original
key and value bytes and its origin; it is counted (in-process ``ConsumeStats.dlq`` and the
PostgreSQL ``consumer_metrics`` table); good events around it are processed and the
consumer keeps running. Borderline inputs that are valid by a documented rule land in the
lake as the rule says.

Runs on the shared stack with private topics whose ``max.message.bytes`` is raised to 4 MB
(the broker's default is ~1 MB), so that the 1 MB message can be sent at all.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from ingest.dlq import TRUNCATED_BYTES
from sensorlake.kinematics import summarize
from tests.bad_input.corpus import ACCEPTED, ONE_MB, REJECTED, obj
from tests.conftest import isolated_on
from tests.faults.helpers import (
    ConsumerThread,
    assert_summaries_equal,
    dlq_records,
    ev,
    high_watermarks,
    lake_offsets,
    lake_table,
    pg_metrics,
    pg_states,
    read_topic,
    send,
    wait_until,
)

pytestmark = pytest.mark.services

BIG = {"message.max.bytes": 4_000_000}


def test_corpus_is_large_and_unambiguous():
    assert len(REJECTED) >= 30
    values = [v for _, _, v, _ in REJECTED]
    assert len(set(values)) == len(values)  # each original identifies its expected reason


def test_every_bad_input_lands_in_the_dlq_with_its_reason_and_the_consumer_keeps_going(services, tmp_path):
    good = [ev("g", i, i * 10.0, 0, sensor=7) for i in range(len(REJECTED) + 1)]
    items: list = []
    for i, (_, key, value, _) in enumerate(REJECTED):
        items += [good[i], (key, value)]
    items += [(key, value) for _, key, value, _, _ in ACCEPTED] + [good[-1]]
    expected_reasons = Counter(reason for *_, reason in REJECTED)

    with isolated_on(services, tmp_path, partitions=2, max_message_bytes=4_000_000) as s:
        send(s, items, producer_conf=BIG)
        hw = {p: o for p, o in high_watermarks(s).items() if o}
        c = ConsumerThread(s).start()
        try:
            wait_until(lambda: lake_offsets(s) == hw, 90, what="every message handled and committed")
            assert c._thread.is_alive()  # still running after the whole corpus
        finally:
            stats = c.stop()
        originals = {(m.partition(), m.offset()): (m.key(), m.value()) for m in read_topic(s, s.topic)}
        dlq = dlq_records(s)
        metrics = pg_metrics(s)
        lake = lake_table(s).to_pylist()
        summaries = pg_states(s)

    # counted, in process and in PostgreSQL
    assert stats.consumed == len(items)
    assert stats.dlq == expected_reasons
    assert {lbl: n for (m, lbl), n in metrics.items() if m == "dlq"} == dict(expected_reasons)
    assert metrics[("dlq_total", "")] == len(REJECTED)

    # each in the DLQ once (no failure here), with its reason, original bytes and origin
    by_value = {v: (name, k, reason) for name, k, v, reason in REJECTED}
    assert len(dlq) == len(REJECTED)
    seen = set()
    for rec in dlq:
        topic, p, off = rec["origin"]
        assert topic == s.topic
        key, value = originals[(p, off)]
        assert (rec["key"], rec["value"]) == (key, value)  # the original bytes, unchanged
        name, want_key, reason = by_value[value]
        assert rec["reason"] == reason, name
        assert rec["key"] == want_key and rec["detail"], name
        seen.add(name)
    assert seen == {name for name, *_ in REJECTED}

    # the good events all made it, around every bad one, and valid-by-rule inputs as ruled
    assert sum(1 for r in lake if r["traveler_id"] == "g") == len(good)
    assert_summaries_equal(
        {k: v for k, v in summaries.items() if k[1] == "g"},
        summarize(good, min_segment_s=s.min_segment_s, visit_gap_s=s.visit_gap_s),
    )
    assert len(lake) == len(good) + len(ACCEPTED)
    rows = {r["traveler_id"]: r for r in lake if r["traveler_id"] != "g"}
    assert set(rows) == {tid for _, _, _, tid, _ in ACCEPTED}
    for name, _, _, tid, check in ACCEPTED:
        assert check(rows[tid]), (name, rows[tid])


def test_a_record_too_large_for_the_dlq_topic_goes_there_truncated_with_its_hash(services, tmp_path):
    """The events topic takes 4 MB messages, the DLQ topic only the broker default (~1 MB):
    the 1 MB rejected record is sent truncated to TRUNCATED_BYTES with its original length
    and SHA-256 in headers, instead of blocking the partition forever."""
    value = __import__("json").dumps(obj(note="y" * ONE_MB)).encode()
    with isolated_on(services, tmp_path, partitions=1, max_message_bytes=4_000_000,
                     dlq_max_message_bytes=1_000_000) as s:  # fmt: skip
        send(s, [(b"7:huge", value), ev("after", 0, 0, 0, sensor=7)], producer_conf=BIG)
        c = ConsumerThread(s).start()
        try:
            wait_until(lambda: lake_offsets(s) == {0: 2}, 90, what="both messages committed")
        finally:
            stats = c.stop()
        (rec,) = dlq_records(s)
    assert stats.dlq == {"too_large": 1}
    assert rec["reason"] == "too_large" and rec["origin"][1:] == (0, 0)
    assert rec["value"] == value[:TRUNCATED_BYTES]
    assert int(rec["headers"]["sl-truncated"]) == len(value)
    assert rec["headers"]["sl-value-sha256"].decode() == hashlib.sha256(value).hexdigest()
