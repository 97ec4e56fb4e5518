"""Consumer groups with other clients: Apache kafka-clients 3.9.1 (classic protocol and
KIP-848 group.protocol=consumer), kafka-python KafkaConsumer and aiokafka
AIOKafkaConsumer. Each run subscribes in a group, processes exactly `limit` records,
commits the positions after them and closes; a second run in the same group must start
every partition exactly at the committed offset and read the rest, so the two runs
together read every record exactly once."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import pytest

from e2e_util import java_program as compile_java
from e2e_util import E2E_DIR, ck_create_topic, ck_producer

PARTS = 3
PER_PART = 300
TOTAL = PARTS * PER_PART
FIRST = 400  # records processed + committed by the first run
GROUP_SETS = ("group.initial.rebalance.delay.ms=0",)

JAVA_SRC = E2E_DIR / "java" / "StrataGroupE2E.java"


def setup_topic(broker, topic):
    """Returns the confluent-kafka AdminClient that created the topic."""
    admin = ck_create_topic(broker.bootstrap, topic, PARTS)
    p = ck_producer(broker.bootstrap, linger_ms=5)
    for i in range(PER_PART):
        for part in range(PARTS):
            p.produce(topic, key=f"k{i}".encode(), value=f"v{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0
    return admin


def check_resume(first, committed, second, fetched=None):
    """first/second: [(partition, offset)] in processing order; committed: {p: offset}."""
    assert len(first) == FIRST, f"first run processed {len(first)}"
    want_commit = {}
    for p, o in first:
        want_commit[p] = o + 1
    assert committed == want_commit, f"committed {committed} != positions {want_commit}"
    if fetched is not None:
        assert fetched == committed, f"OffsetFetch {fetched} != committed {committed}"
    firsts = {}
    for p, o in second:
        firsts.setdefault(p, o)
    assert firsts == {p: committed.get(p, 0) for p in range(PARTS) if committed.get(p, 0) < PER_PART}, (
        f"second run started at {firsts}; committed {committed}")
    both = list(first) + list(second)
    assert len(both) == len(set(both)) == TOTAL, (
        f"{len(both)} records, {len(set(both))} distinct, {TOTAL} in the topic")
    assert set(both) == {(p, o) for p in range(PARTS) for o in range(PER_PART)}


# ============================================================ Java

@pytest.fixture(scope="module")
def java_group_program(tmp_path_factory):
    return compile_java("3", JAVA_SRC, tmp_path_factory.mktemp("java-group-classes"))


def run_java(program, broker, topic, group, protocol, limit):
    try:
        r = subprocess.run(program + [broker.bootstrap, topic, group, protocol, str(limit), "60000"],
                           capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java group consumer hung; stderr tail:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"java exited {r.returncode} without RESULT\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-6000:]}"
    res = json.loads(lines[-1])
    res["stderr"] = r.stderr
    return res


@pytest.mark.java
@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_java_group_consumer_commit_and_resume(broker_factory, topic_name, java_group_program,
                                               protocol):
    """kafka-clients 3.9.1 subscribe() + commitSync(): the second run resumes at the commit
    (classic protocol, and KIP-848 group.protocol=consumer, early access in 3.9)."""
    broker = broker_factory(*GROUP_SETS)
    admin = setup_topic(broker, topic_name)
    group = f"java-{protocol}-{uuid.uuid4().hex[:8]}"
    r1 = run_java(java_group_program, broker, topic_name, group, protocol, FIRST)
    if "error" in r1 and protocol == "consumer" and "UnsupportedVersion" in r1.get("type", "") + r1["error"]:
        pytest.skip(f"kafka-clients refused group.protocol=consumer: {r1['type']}: {r1['error']}")
    assert "error" not in r1, f"first run: {r1['type']}: {r1['error']}\n{r1['stderr'][-6000:]}"
    r2 = run_java(java_group_program, broker, topic_name, group, protocol, TOTAL - FIRST)
    assert "error" not in r2, f"second run: {r2['type']}: {r2['error']}\n{r2['stderr'][-6000:]}"
    for r in (r1, r2):
        assert r["assignment"] == list(range(PARTS)), r["assignment"]
        assert r["generation"] >= 1 and r["member_id"], (r["generation"], r["member_id"])
    as_int = lambda m: {int(k): v for k, v in m.items()}  # noqa: E731
    check_resume([tuple(x) for x in r1["records"]], as_int(r1["committed"]),
                 [tuple(x) for x in r2["records"]], as_int(r1["fetched"]))
    # the group has the protocol's type (ListGroups v5 / KIP-848). (This admin client
    # knows the broker already: a new one may send ListGroups to no broker at all.)
    listed = {g.group_id: g for g in admin.list_consumer_groups(request_timeout=15).result(20).valid}
    assert group in listed, f"{group} not listed: { {g: str(l.type) for g, l in listed.items()} }"
    assert str(listed[group].type) == {"classic": "ConsumerGroupType.CLASSIC",
                                       "consumer": "ConsumerGroupType.CONSUMER"}[protocol], (
        vars(listed[group]))


# ============================================================ kafka-python

def kafka_python_run(bootstrap, topic, group, limit):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id="e2e-kafka-python",
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      fetch_max_wait_ms=100, session_timeout_ms=10000,
                      heartbeat_interval_ms=1000, request_timeout_ms=30000)
    try:
        c.subscribe([topic])
        records, commit = [], {}
        deadline = time.monotonic() + 60
        while len(records) < limit:
            assert time.monotonic() < deadline, f"kafka-python: {len(records)}/{limit} records"
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    if len(records) < limit:
                        records.append((m.partition, m.offset))
                        commit[TopicPartition(topic, m.partition)] = OffsetAndMetadata(
                            m.offset + 1, "", -1)
        c.commit(commit)
        committed = {tp.partition: om.offset for tp, om in commit.items()}
        fetched = {tp.partition: c.committed(tp) for tp in commit}
        return records, committed, fetched
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_kafka_python_group_consumer_commit_and_resume(broker_factory, topic_name):
    """kafka-python KafkaConsumer(group_id=...) subscribe() + commit(): the second run
    resumes at the commit."""
    broker = broker_factory(*GROUP_SETS)
    setup_topic(broker, topic_name)
    group = f"kp-{uuid.uuid4().hex[:8]}"
    first, committed, fetched = kafka_python_run(broker.bootstrap, topic_name, group, FIRST)
    second, _, _ = kafka_python_run(broker.bootstrap, topic_name, group, TOTAL - FIRST)
    check_resume(first, committed, second, fetched)


# ============================================================ aiokafka

async def aiokafka_run(bootstrap, topic, group, limit):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         client_id="e2e-aiokafka", enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100,
                         session_timeout_ms=10000, heartbeat_interval_ms=1000)
    await c.start()
    try:
        records, commit = [], {}

        async def drain():
            while len(records) < limit:
                batch = await c.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if len(records) < limit:
                            records.append((m.partition, m.offset))
                            commit[TopicPartition(topic, m.partition)] = m.offset + 1
        await asyncio.wait_for(drain(), 60)
        await c.commit(commit)
        fetched = {tp.partition: await c.committed(tp) for tp in commit}
        return records, {tp.partition: o for tp, o in commit.items()}, fetched
    finally:
        await c.stop()


@pytest.mark.timeout(120)
def test_aiokafka_group_consumer_commit_and_resume(broker_factory, topic_name):
    """aiokafka AIOKafkaConsumer(group_id=...) + commit(): the second run resumes at the
    commit."""
    broker = broker_factory(*GROUP_SETS)
    setup_topic(broker, topic_name)
    group = f"aio-{uuid.uuid4().hex[:8]}"
    first, committed, fetched = asyncio.run(aiokafka_run(broker.bootstrap, topic_name, group, FIRST))
    second, _, _ = asyncio.run(aiokafka_run(broker.bootstrap, topic_name, group, TOTAL - FIRST))
    check_resume(first, committed, second, fetched)
