"""Apache Kafka's answers to admin, offset and group edge cases, request by request.

Most checks send raw requests built with kafka-python 3's protocol classes (generated from
Kafka's JSON schemas, flexible versions included), so each one pins the exact error code the
request must get back; a few use real clients where the client's behaviour is the point
(a librdkafka producer to a refused auto-created topic, librdkafka static members, the Java
Admin/consumer with topic ids and with SASL configured against a PLAINTEXT listener:
`java/StrataTopicIds.java`).

A. topic names colliding on '.'/'_' (CreateTopics, auto-creation)  -> INVALID_TOPIC_EXCEPTION
B. OffsetCommit to an unknown topic / partition                      -> UNKNOWN_TOPIC_OR_PARTITION
C. deleting a topic deletes its committed offsets in every group (also across a restart)
D. replica assignments and a topic/resource/key named twice        -> INVALID_REPLICA_ASSIGNMENT,
   INVALID_REQUEST
E. a static group leader rejoining under a new member id (JoinGroup v5 vs v9, KIP-814)
F. SaslHandshake on a listener without SASL                        -> ILLEGAL_SASL_STATE
G. topic ids: Metadata v12 by id, Java describeTopics/deleteTopics by id, Fetch v13+
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import uuid

import pytest
from kafka.protocol.admin.configs import (
    AlterConfigsRequest,
    DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
)
from kafka.protocol.admin.topics import CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    JoinGroupRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from e2e_util import java_program as compile_java
from e2e_util import E2E_DIR, ck_conf, ck_producer, recv_exact, wait_until

GROUP_SETS = ("group.initial.rebalance.delay.ms=0",)

# Kafka error codes (org.apache.kafka.common.protocol.Errors)
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
REBALANCE_IN_PROGRESS = 27
ILLEGAL_SASL_STATE = 34
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_REQUEST = 42
FENCED_INSTANCE_ID = 82
UNKNOWN_TOPIC_ID = 100
ERROR_NAMES = {0: "NONE", 3: "UNKNOWN_TOPIC_OR_PARTITION", 17: "INVALID_TOPIC_EXCEPTION",
               27: "REBALANCE_IN_PROGRESS", 34: "ILLEGAL_SASL_STATE", 35: "UNSUPPORTED_VERSION",
               36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 39: "INVALID_REPLICA_ASSIGNMENT",
               42: "INVALID_REQUEST", 82: "FENCED_INSTANCE_ID", 100: "UNKNOWN_TOPIC_ID"}


def err(code) -> str:
    return f"{code} ({ERROR_NAMES.get(code, '?')})"


# ------------------------------------------------------------------ raw requests

class Raw:
    """One connection; requests encoded/decoded with kafka-python's schema classes."""

    def __init__(self, broker, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0
        self.pending = None

    def send(self, cls, version, **fields):
        self.corr += 1
        req = cls[version](**fields)
        req.with_header(correlation_id=self.corr, client_id="strata-e2e-admin")
        self.sock.sendall(req.encode(header=True, framed=True))
        self.pending = req

    def recv(self):
        req, self.pending = self.pending, None
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        data = recv_exact(self.sock, size)
        resp = ResponseClassRegistry.get_response_class(req.header).decode(data, header=True)
        assert resp.header.correlation_id == req.header.correlation_id, "correlation id mismatch"
        return resp

    def call(self, cls, version, **fields):
        self.send(cls, version, **fields)
        return self.recv()

    def close(self):
        self.sock.close()


@pytest.fixture
def raw(broker_factory, closer):
    """raw(broker) -> a tracked Raw connection (closed at teardown)."""
    return lambda b: closer(Raw(b))


def creatable(name, partitions=1, rf=1, assignments=None):
    T = CreateTopicsRequest.CreatableTopic
    return T(name=name, num_partitions=partitions, replication_factor=rf, configs=[],
             assignments=[T.CreatableReplicaAssignment(partition_index=p, broker_ids=ids)
                          for p, ids in (assignments or {}).items()])


def create_topics(conn, *topics, version=7):
    """CreateTopics -> [(name, error_code, error_message)] in response order."""
    r = conn.call(CreateTopicsRequest, version, topics=list(topics), timeout_ms=15000, validate_only=False)
    return [(t.name, t.error_code, t.error_message) for t in r.topics]


def metadata(conn, names=None, ids=None, auto=False, version=12):
    M = MetadataRequest
    topics = None
    if names is not None or ids is not None:
        topics = [M.MetadataRequestTopic(name=n, topic_id=None) for n in names or ()]
        topics += [M.MetadataRequestTopic(name=None, topic_id=i) for i in ids or ()]
    return conn.call(M, version, topics=topics, allow_auto_topic_creation=auto,
                     include_topic_authorized_operations=False)


def topic_state(conn, name):
    """(error_code, partition count, topic id) from a Metadata v12 for `name` (no auto-create)."""
    t = metadata(conn, [name]).topics[0]
    assert t.name == name, (t.name, name)
    return t.error_code, len(t.partitions), t.topic_id


def all_topic_names(conn):
    return {t.name for t in metadata(conn).topics}


def commit(conn, group, offsets, version=8):
    """OffsetCommit as a simple (group-less) commit: generation -1, member "".
    offsets {topic: {partition: offset}} -> {(topic, partition): error_code}."""
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    P = T.OffsetCommitRequestPartition
    topics = [T(name=t, partitions=[P(partition_index=p, committed_offset=o, committed_leader_epoch=-1,
                                      committed_metadata="e2e") for p, o in parts.items()])
              for t, parts in offsets.items()]
    kw = dict(group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=topics)
    if version >= 7:
        kw["group_instance_id"] = None
    if 2 <= version <= 4:
        kw["retention_time_ms"] = -1
    r = conn.call(OffsetCommitRequest, version, **kw)
    return {(t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}


def fetch_offsets(conn, group, wanted):
    """OffsetFetch v7; wanted {topic: [partitions]} -> {(topic, partition): committed offset}."""
    T = OffsetFetchRequest.OffsetFetchRequestTopic
    r = conn.call(OffsetFetchRequest, 7, group_id=group, require_stable=False,
                  topics=[T(name=t, partition_indexes=list(ps)) for t, ps in wanted.items()])
    assert r.error_code == 0, f"OffsetFetch group {group}: error {err(r.error_code)}"
    return {(t.name, p.partition_index): p.committed_offset for t in r.topics for p in t.partitions}


def describe_topic_config(conn, topic, key):
    R = DescribeConfigsRequest.DescribeConfigsResource
    r = conn.call(DescribeConfigsRequest, 4, include_synonyms=False, include_documentation=False,
                  resources=[R(resource_type=2, resource_name=topic, configuration_keys=[key])])
    res = r.results[0]
    assert res.error_code == 0, f"DescribeConfigs {topic}: {err(res.error_code)} {res.error_message}"
    (c,) = [c for c in res.configs if c.name == key]
    return c.value


def results_for(results, name):
    return [(code, msg) for n, code, msg in results if n == name]


# ================================================================ A. '.' / '_' collisions

def test_create_topic_colliding_on_dot_and_underscore(broker, raw, topic_name):
    """Kafka refuses a topic whose name equals an existing one once '.' and '_' are treated
    alike (their metric names would collide): INVALID_TOPIC_EXCEPTION naming the existing topic."""
    c = raw(broker)
    dotted, underscored = f"{topic_name}.a.b", f"{topic_name}_a_b"
    res = create_topics(c, creatable(dotted))
    assert [code for _, code, _ in res] == [NONE], f"CreateTopics {dotted!r}: {res}"
    res = create_topics(c, creatable(underscored))
    assert len(res) == 1 and res[0][1] == INVALID_TOPIC_EXCEPTION, (
        f"CreateTopics {underscored!r} while {dotted!r} exists: {res}, expected "
        f"{err(INVALID_TOPIC_EXCEPTION)}")
    assert dotted in (res[0][2] or ""), f"the error message should name {dotted!r}: {res[0][2]!r}"
    assert topic_state(c, underscored)[0] == UNKNOWN_TOPIC_OR_PARTITION, "the colliding topic was created"
    # the other direction: '_' exists, '.' refused
    other_u, other_d = f"{topic_name}_c", f"{topic_name}.c"
    assert create_topics(c, creatable(other_u))[0][1] == NONE
    res = create_topics(c, creatable(other_d))
    assert res[0][1] == INVALID_TOPIC_EXCEPTION and other_u in (res[0][2] or ""), (
        f"CreateTopics {other_d!r} while {other_u!r} exists: {res}")
    assert underscored not in all_topic_names(c) and other_d not in all_topic_names(c)


def test_one_create_topics_request_with_both_colliding_names(broker, raw, topic_name):
    """"c.d" and "c_d" in ONE CreateTopics request: Kafka's KRaft controller checks names
    against existing topics only (ReplicationControlManager.validateNewTopicNames), so both are
    created; a third, "c_d"'s twin in a later request, collides."""
    c = raw(broker)
    dotted, underscored = f"{topic_name}.c.d", f"{topic_name}_c_d"
    res = create_topics(c, creatable(dotted), creatable(underscored))
    assert sorted(code for _, code, _ in res) == [NONE, NONE], f"CreateTopics [{dotted!r}, {underscored!r}]: {res}"
    names = all_topic_names(c)
    assert dotted in names and underscored in names, f"topics afterwards: {sorted(names)}"
    later = f"{topic_name}.c_d"
    (_, code, _), = create_topics(c, creatable(later))
    assert code == INVALID_TOPIC_EXCEPTION, f"CreateTopics {later!r} after both exist: {err(code)}"


def test_auto_create_of_colliding_name_is_refused(broker, raw, topic_name):
    """Metadata with allow_auto_topic_creation for "x_y" while "x.y" exists: the topic is not
    created and its entry answers INVALID_TOPIC_EXCEPTION; a producer to it fails."""
    c = raw(broker)
    dotted, underscored = f"{topic_name}.x.y", f"{topic_name}_x_y"
    assert create_topics(c, creatable(dotted))[0][1] == NONE
    t = metadata(c, [underscored], auto=True).topics[0]
    assert (t.name, t.error_code) == (underscored, INVALID_TOPIC_EXCEPTION), (
        f"Metadata v12 auto-create {underscored!r} (colliding with {dotted!r}): error "
        f"{err(t.error_code)}, {len(t.partitions)} partitions; expected {err(INVALID_TOPIC_EXCEPTION)}")
    t4 = metadata(c, [underscored], auto=True, version=4).topics[0]
    assert t4.error_code == INVALID_TOPIC_EXCEPTION, f"Metadata v4 auto-create: {err(t4.error_code)}"
    assert underscored not in all_topic_names(c), f"{underscored} was auto-created"

    p = ck_producer(broker.bootstrap, **{"message.timeout.ms": 15000})
    results = []
    p.produce(underscored, value=b"v", on_delivery=lambda e, m: results.append(e))
    wait_until(lambda: (p.poll(0.1), results)[1], 20,
               message=lambda: f"no delivery report producing to {underscored}")
    assert results[0] is not None and results[0].code() == INVALID_TOPIC_EXCEPTION, (
        f"producing to {underscored!r} (colliding with {dotted!r}) must fail with "
        f"TOPIC_EXCEPTION (17), got {results[0]}")
    assert underscored not in all_topic_names(c), f"{underscored} was created by the producer"


# ================================================================ B. OffsetCommit unknown

@pytest.mark.parametrize("version", [2, 8])
def test_offset_commit_to_unknown_topic_or_partition(broker_factory, raw, topic_name, version):
    """Kafka's coordinator answers UNKNOWN_TOPIC_OR_PARTITION per partition for a topic that
    does not exist or a partition past its count, and stores nothing for them; the valid
    partitions of the same request are committed."""
    broker = broker_factory(*GROUP_SETS)
    c = raw(broker)
    assert create_topics(c, creatable(topic_name, 1))[0][1] == NONE
    missing = f"{topic_name}-missing"
    group = f"g-{uuid.uuid4().hex[:8]}"
    got = commit(c, group, {topic_name: {0: 7, 5: 7}, missing: {0: 7}}, version=version)
    want = {(topic_name, 0): NONE, (topic_name, 5): UNKNOWN_TOPIC_OR_PARTITION,
            (missing, 0): UNKNOWN_TOPIC_OR_PARTITION}
    assert got == want, (
        f"OffsetCommit v{version} {{{topic_name}: [0, 5], {missing}: [0]}} (1-partition topic, "
        f"unknown topic): { {k: err(v) for k, v in got.items()} }, expected "
        f"{ {k: err(v) for k, v in want.items()} }")
    offs = fetch_offsets(c, group, {topic_name: [0, 5], missing: [0]})
    assert offs == {(topic_name, 0): 7, (topic_name, 5): -1, (missing, 0): -1}, (
        f"OffsetFetch after the commit: {offs}; only {topic_name}/0 may hold an offset")
    # all-partitions OffsetFetch: nothing stored for the refused ones
    r = c.call(OffsetFetchRequest, 7, group_id=group, topics=None, require_stable=False)
    stored = {(t.name, p.partition_index): p.committed_offset for t in r.topics for p in t.partitions}
    assert stored == {(topic_name, 0): 7}, f"OffsetFetch (all topics) lists {stored}"
    assert missing not in all_topic_names(c), "OffsetCommit must not create the topic"


# ================================================================ C. delete -> offsets gone

@pytest.mark.timeout(120)
def test_delete_topic_deletes_its_offsets_in_every_group(broker_factory, raw, topic_name):
    """Kafka drops a deleted topic's committed offsets in every group: a re-created topic of
    the same name starts without commits (OffsetFetch -1), a group consumer reads it from
    the start, and a broker restart does not bring the offsets back."""
    from confluent_kafka import Consumer, KafkaError
    broker = broker_factory(*GROUP_SETS)
    c = raw(broker)
    groups = [f"g1-{uuid.uuid4().hex[:6]}", f"g2-{uuid.uuid4().hex[:6]}"]
    parts = [0, 1]
    assert create_topics(c, creatable(topic_name, 2))[0][1] == NONE
    for g in groups:
        assert commit(c, g, {topic_name: {p: 3 for p in parts}}) == {(topic_name, p): NONE for p in parts}
        assert fetch_offsets(c, g, {topic_name: parts}) == {(topic_name, p): 3 for p in parts}

    r = c.call(DeleteTopicsRequest, 6, timeout_ms=15000,
               topics=[DeleteTopicsRequest.DeleteTopicState(name=topic_name, topic_id=None)])
    assert [x.error_code for x in r.responses] == [NONE], r
    wait_until(lambda: topic_name not in all_topic_names(c), 15, 0.1, f"{topic_name} still listed")
    for g in groups:
        offs = fetch_offsets(c, g, {topic_name: parts})
        assert offs == {(topic_name, p): -1 for p in parts}, (
            f"group {g}: OffsetFetch after deleting {topic_name}: {offs}, expected -1")

    assert create_topics(c, creatable(topic_name, 2))[0][1] == NONE
    p = ck_producer(broker.bootstrap, acks="all")
    for i in range(10):
        p.produce(topic_name, value=f"v{i}".encode(), partition=i % 2)
    assert p.flush(30) == 0
    for g in groups:
        offs = fetch_offsets(c, g, {topic_name: parts})
        assert offs == {(topic_name, p): -1 for p in parts}, (
            f"group {g}: OffsetFetch on the re-created {topic_name}: {offs}, expected -1 "
            f"(the old topic's offset 3 must be gone)")

    cons = Consumer(ck_conf(broker.bootstrap, group_id=groups[0], auto_offset_reset="earliest",
                            enable_auto_commit=False, fetch_wait_max_ms=100,
                            session_timeout_ms=10000, heartbeat_interval_ms=1000))
    try:
        cons.subscribe([topic_name])
        got = []

        def read_all():
            m = cons.poll(0.2)
            if m is not None:
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                else:
                    got.append((m.partition(), m.offset()))
            return len(got) >= 10
        wait_until(read_all, 40, 0, lambda: f"group consumer read {sorted(got)} of 10 records")
        assert sorted(got) == [(p, o) for p in parts for o in range(5)], (
            f"group {groups[0]} consumer (auto.offset.reset=earliest) read {sorted(got)}; "
            f"expected offsets 0..4 of both partitions")
    finally:
        cons.close()

    broker.restart()
    c = raw(broker)
    for g in groups:
        offs = fetch_offsets(c, g, {topic_name: parts})
        assert offs == {(topic_name, p): -1 for p in parts}, (
            f"group {g}: OffsetFetch after a broker restart: {offs}, expected -1")


# ================================================================ D. assignments, duplicates

def test_create_topics_assignment_naming_a_broker_twice(broker, raw, topic_name):
    """CreateTopics with replica assignment {0: [1, 1]}: INVALID_REPLICA_ASSIGNMENT and no topic,
    also after a restart."""
    c = raw(broker)
    res = create_topics(c, creatable(topic_name, -1, -1, {0: [1, 1]}))
    assert len(res) == 1 and res[0][1] == INVALID_REPLICA_ASSIGNMENT, (
        f"CreateTopics {topic_name} assignments {{0: [1, 1]}}: {res}, expected "
        f"{err(INVALID_REPLICA_ASSIGNMENT)}")
    assert topic_state(c, topic_name)[0] == UNKNOWN_TOPIC_OR_PARTITION, f"{topic_name} was created"
    broker.restart()
    c = raw(broker)
    assert topic_state(c, topic_name)[0] == UNKNOWN_TOPIC_OR_PARTITION, (
        f"{topic_name} exists after a restart")
    # a valid assignment works (the same request shape, so the refusal was about the broker twice)
    ok = f"{topic_name}-ok"
    assert create_topics(c, creatable(ok, -1, -1, {0: [1]}))[0][1] == NONE
    assert topic_state(c, ok)[:2] == (NONE, 1)


def test_create_partitions_with_assignments(broker, raw, topic_name):
    """CreatePartitions with assignment [[1, 1]]: INVALID_REPLICA_ASSIGNMENT, nothing added;
    [[1]] adds the partition."""
    c = raw(broker)
    assert create_topics(c, creatable(topic_name, 1))[0][1] == NONE
    A = CreatePartitionsRequest.CreatePartitionsTopic.CreatePartitionsAssignment

    def create_partitions(count, assignments):
        r = c.call(CreatePartitionsRequest, 3, timeout_ms=15000, validate_only=False,
                   topics=[CreatePartitionsRequest.CreatePartitionsTopic(
                       name=topic_name, count=count, assignments=[A(broker_ids=a) for a in assignments])])
        return [(x.name, x.error_code, x.error_message) for x in r.results]

    res = create_partitions(2, [[1, 1]])
    assert [code for _, code, _ in res] == [INVALID_REPLICA_ASSIGNMENT], (
        f"CreatePartitions {topic_name} count 2 assignments [[1, 1]]: {res}, expected "
        f"{err(INVALID_REPLICA_ASSIGNMENT)}")
    assert topic_state(c, topic_name)[:2] == (NONE, 1), "a partition was added by the refused request"
    res = create_partitions(2, [[1]])
    assert [code for _, code, _ in res] == [NONE], f"CreatePartitions count 2 assignments [[1]]: {res}"
    wait_until(lambda: topic_state(c, topic_name)[:2] == (NONE, 2), 15, 0.1,
               lambda: f"{topic_name} has {topic_state(c, topic_name)} after CreatePartitions to 2")


def test_create_topics_same_topic_twice(broker, raw, topic_name):
    """CreateTopics naming a topic twice: INVALID_REQUEST "Duplicate topic name", not created."""
    c = raw(broker)
    res = create_topics(c, creatable(topic_name), creatable(topic_name))
    assert res and all(code == INVALID_REQUEST for _, code, _ in res) and all(
        "Duplicate topic name" in (msg or "") for _, _, msg in res), (
        f"CreateTopics naming {topic_name} twice: {res}, expected {err(INVALID_REQUEST)} 'Duplicate topic name'")
    assert topic_state(c, topic_name)[0] == UNKNOWN_TOPIC_OR_PARTITION, f"{topic_name} was created"


def test_create_partitions_same_topic_twice(broker, raw, topic_name):
    """CreatePartitions naming a topic twice: INVALID_REQUEST for it and its partition count is
    unchanged; another topic in the same request grows."""
    c = raw(broker)
    twice, other = f"{topic_name}-twice", f"{topic_name}-other"
    assert [code for _, code, _ in create_topics(c, creatable(twice), creatable(other))] == [NONE, NONE]
    P = CreatePartitionsRequest.CreatePartitionsTopic
    r = c.call(CreatePartitionsRequest, 3, timeout_ms=15000, validate_only=False,
               topics=[P(name=twice, count=2, assignments=None), P(name=twice, count=3, assignments=None),
                       P(name=other, count=2, assignments=None)])
    res = [(x.name, x.error_code, x.error_message) for x in r.results]
    assert [code for code, _ in results_for(res, twice)] == [INVALID_REQUEST], (
        f"CreatePartitions naming {twice} twice: {res}, expected one {err(INVALID_REQUEST)} for it")
    assert [code for code, _ in results_for(res, other)] == [NONE], (
        f"CreatePartitions for {other} in the same request: {res}")
    wait_until(lambda: topic_state(c, other)[1] == 2, 15, 0.1, f"{other} did not grow to 2 partitions")
    assert topic_state(c, twice)[:2] == (NONE, 1), (
        f"{twice} has {topic_state(c, twice)[1]} partitions after the refused CreatePartitions (expected 1)")


def test_delete_topics_same_topic_twice(broker, raw, topic_name):
    """DeleteTopics naming a topic twice (v4 names, v6 by name, v6 by id): INVALID_REQUEST for it
    and it is not deleted; another topic in the same request is deleted."""
    c = raw(broker)
    keep, other = f"{topic_name}-keep", f"{topic_name}-other"
    assert [code for _, code, _ in create_topics(c, creatable(keep), creatable(other))] == [NONE, NONE]
    D = DeleteTopicsRequest.DeleteTopicState
    for version, kw in [
        (4, dict(topic_names=[keep, keep])),
        (6, dict(topics=[D(name=keep, topic_id=None), D(name=keep, topic_id=None)])),
    ]:
        r = c.call(DeleteTopicsRequest, version, timeout_ms=15000, **kw)
        res = [(x.name, x.error_code) for x in r.responses]
        assert res and all(x == (keep, INVALID_REQUEST) for x in res), (
            f"DeleteTopics v{version} naming {keep} twice: {res}, expected {err(INVALID_REQUEST)}")
        assert topic_state(c, keep)[0] == NONE, f"{keep} was deleted by DeleteTopics v{version} naming it twice"
    _, _, keep_id = topic_state(c, keep)
    r = c.call(DeleteTopicsRequest, 6, timeout_ms=15000,
               topics=[D(name=None, topic_id=keep_id), D(name=None, topic_id=keep_id), D(name=other, topic_id=None)])
    res = [(x.name, x.topic_id, x.error_code) for x in r.responses]
    dup = [code for n, _, code in res if n != other]
    assert dup and all(code == INVALID_REQUEST for code in dup), (
        f"DeleteTopics v6 naming {keep}'s id {keep_id} twice: {res}, expected {err(INVALID_REQUEST)}")
    assert [code for n, _, code in res if n == other] == [NONE], (
        f"DeleteTopics v6 for {other} in the same request: {res}")
    assert topic_state(c, keep)[0] == NONE, f"{keep} was deleted by a request naming its id twice"
    wait_until(lambda: other not in all_topic_names(c), 15, 0.1, f"{other} was not deleted")


def test_delete_topics_ambiguous_entries(broker, raw, topic_name):
    """DeleteTopics v6 entries Kafka's controller refuses (ControllerApis.deleteTopics), each
    INVALID_REQUEST and nothing deleted: neither a name nor an id; both a name and an id; a name
    that maps to an id the request also gives."""
    c = raw(broker)
    keep = f"{topic_name}-keep"
    assert create_topics(c, creatable(keep))[0][1] == NONE
    _, _, keep_id = topic_state(c, keep)
    D = DeleteTopicsRequest.DeleteTopicState
    for entries, what in [
        ([D(name=None, topic_id=None)], "neither a name nor an id"),
        ([D(name=keep, topic_id=keep_id)], "both a name and an id"),
        ([D(name=keep, topic_id=None), D(name=None, topic_id=keep_id)], "a name and its own id"),
    ]:
        r = c.call(DeleteTopicsRequest, 6, timeout_ms=15000, topics=entries)
        codes = [x.error_code for x in r.responses]
        assert codes and all(code == INVALID_REQUEST for code in codes), (
            f"DeleteTopics v6 with {what}: {[(x.name, x.topic_id, x.error_code, x.error_message) for x in r.responses]}, "
            f"expected {err(INVALID_REQUEST)}")
        assert topic_state(c, keep)[0] == NONE, f"{keep} was deleted by a DeleteTopics with {what}"


@pytest.fixture
def two_topics(broker, raw, topic_name):
    """(conn, twice, once, default retention.ms): two fresh topics."""
    c = raw(broker)
    twice, once = f"{topic_name}-twice", f"{topic_name}-once"
    assert [code for _, code, _ in create_topics(c, creatable(twice), creatable(once))] == [NONE, NONE]
    return c, twice, once, describe_topic_config(c, twice, "retention.ms")


def incremental_alter(c, resources):
    """IncrementalAlterConfigs v1 SET; resources [(topic, [(key, value)])] -> [(name, code, msg)]."""
    R = IncrementalAlterConfigsRequest.AlterConfigsResource
    r = c.call(IncrementalAlterConfigsRequest, 1, validate_only=False, resources=[
        R(resource_type=2, resource_name=n,
          configs=[R.AlterableConfig(name=k, config_operation=0, value=v) for k, v in kvs])
        for n, kvs in resources])
    return [(x.resource_name, x.error_code, x.error_message) for x in r.responses]


def test_incremental_alter_configs_same_resource_twice(two_topics):
    """IncrementalAlterConfigs naming a topic twice: INVALID_REQUEST for it, its config unchanged;
    the other resource of the request is altered."""
    c, twice, once, default = two_topics
    res = incremental_alter(c, [(twice, [("retention.ms", "1000")]), (twice, [("retention.ms", "2000")]),
                                (once, [("retention.ms", "3000")])])
    assert [code for code, _ in results_for(res, twice)] == [INVALID_REQUEST, INVALID_REQUEST], (
        f"IncrementalAlterConfigs naming topic {twice} twice: {res}, expected {err(INVALID_REQUEST)} for it")
    assert [code for code, _ in results_for(res, once)] == [NONE], f"the other resource: {res}"
    assert describe_topic_config(c, twice, "retention.ms") == default, "config changed by a refused request"
    assert describe_topic_config(c, once, "retention.ms") == "3000"


def test_incremental_alter_configs_same_key_twice(two_topics):
    """IncrementalAlterConfigs setting one key twice in a resource: INVALID_REQUEST, unchanged."""
    c, twice, _, default = two_topics
    res = incremental_alter(c, [(twice, [("retention.ms", "1000"), ("retention.ms", "2000")])])
    assert [code for _, code, _ in res] == [INVALID_REQUEST], (
        f"IncrementalAlterConfigs with retention.ms twice for {twice}: {res}, expected {err(INVALID_REQUEST)}")
    assert describe_topic_config(c, twice, "retention.ms") == default, "config changed by a refused request"


def test_alter_configs_same_resource_twice(two_topics):
    """AlterConfigs naming a topic twice: INVALID_REQUEST for it, its config unchanged; the other
    resource of the request is altered."""
    c, twice, once, default = two_topics
    R = AlterConfigsRequest.AlterConfigsResource
    r = c.call(AlterConfigsRequest, 2, validate_only=False, resources=[
        R(resource_type=2, resource_name=n, configs=[R.AlterableConfig(name="retention.ms", value=v)])
        for n, v in [(twice, "1000"), (twice, "2000"), (once, "4000")]])
    res = [(x.resource_name, x.error_code, x.error_message) for x in r.responses]
    assert [code for code, _ in results_for(res, twice)] == [INVALID_REQUEST, INVALID_REQUEST], (
        f"AlterConfigs naming topic {twice} twice: {res}, expected {err(INVALID_REQUEST)} for it")
    assert [code for code, _ in results_for(res, once)] == [NONE], f"the other resource: {res}"
    assert describe_topic_config(c, twice, "retention.ms") == default, "config changed by a refused request"
    assert describe_topic_config(c, once, "retention.ms") == "4000"


# ================================================================ E. static leader rejoin

def _s16(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def subscription(topics) -> bytes:
    """ConsumerProtocolSubscription v0."""
    return (struct.pack(">hi", 0, len(topics)) + b"".join(_s16(t) for t in topics) + struct.pack(">i", -1))


def assignment(topic, parts) -> bytes:
    """ConsumerProtocolAssignment v0 for one topic."""
    return (struct.pack(">hi", 0, 1) + _s16(topic) + struct.pack(">i", len(parts))
            + b"".join(struct.pack(">i", p) for p in parts) + struct.pack(">i", -1))


class Member:
    """One classic-protocol member speaking raw JoinGroup vN / SyncGroup on its own socket."""

    def __init__(self, conn, group, instance, topic, join_version):
        self.c, self.group, self.instance, self.topic = conn, group, instance, topic
        self.jv = join_version
        self.sv = 5 if join_version >= 9 else 3  # librdkafka 2.16: JoinGroup v5 + SyncGroup v3
        self.member_id = ""

    def send_join(self):
        kw = dict(group_id=self.group, session_timeout_ms=30000, rebalance_timeout_ms=15000,
                  member_id=self.member_id, group_instance_id=self.instance, protocol_type="consumer",
                  protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                       metadata=subscription([self.topic]))])
        if self.jv >= 8:
            kw["reason"] = None
        self.c.send(JoinGroupRequest, self.jv, **kw)

    def recv_join(self):
        r = self.c.recv()
        assert r.error_code == NONE, f"{self.instance}: JoinGroup v{self.jv} error {err(r.error_code)}"
        self.member_id = r.member_id
        return r

    def join(self):
        self.send_join()
        return self.recv_join()

    def send_sync(self, generation, assignments=None):
        kw = dict(group_id=self.group, generation_id=generation, member_id=self.member_id,
                  group_instance_id=self.instance,
                  assignments=[SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
                               for m, a in (assignments or {}).items()])
        if self.sv >= 5:
            kw.update(protocol_type="consumer", protocol_name="range")
        self.c.send(SyncGroupRequest, self.sv, **kw)

    def sync(self, generation, assignments=None):
        self.send_sync(generation, assignments)
        return self.c.recv()

    def heartbeat(self, generation, member_id=None):
        return self.c.call(HeartbeatRequest, 3, group_id=self.group, generation_id=generation,
                           member_id=member_id or self.member_id, group_instance_id=self.instance).error_code


def _stable_group_of_two(c_a, c_b, topic, version):
    """i-a joins alone (leader of generation 1), i-b joins, i-a rejoins: generation 2 with
    i-a leading; the leader syncs {a: [0], b: [1]}. Returns (a, b, generation, assignments)."""
    group = f"static-{uuid.uuid4().hex[:8]}"
    a = Member(c_a, group, "i-a", topic, version)
    b = Member(c_b, group, "i-b", topic, version)
    j1 = a.join()
    assert j1.leader == a.member_id, f"the only member does not lead: {j1}"
    s = a.sync(j1.generation_id, {a.member_id: assignment(topic, [0, 1])})
    assert s.error_code == NONE, s
    b.send_join()  # parked until i-a rejoins
    # (i-b's JoinGroup travels on another socket: poll until the coordinator has seen it)
    wait_until(lambda: a.heartbeat(j1.generation_id) == REBALANCE_IN_PROGRESS, 10, 0.02,
               "the leader's heartbeat never answered REBALANCE_IN_PROGRESS after i-b joined")
    ja = a.join()
    jb = b.recv_join()
    gen = ja.generation_id
    assert (ja.leader, jb.leader, jb.generation_id) == (a.member_id, a.member_id, gen), (ja, jb)
    assert sorted(m.member_id for m in ja.members) == sorted([a.member_id, b.member_id]), ja
    assigns = {a.member_id: assignment(topic, [0]), b.member_id: assignment(topic, [1])}
    b.send_sync(gen)  # the follower's SyncGroup waits for the leader's
    sa = a.sync(gen, assigns)
    sb = b.c.recv()
    assert (sa.error_code, sb.error_code) == (NONE, NONE), (sa, sb)
    assert (sa.assignment, sb.assignment) == (assigns[a.member_id], assigns[b.member_id]), (sa, sb)
    return a, b, gen, assigns


@pytest.mark.parametrize("version", [5, 9])
def test_static_leader_rejoins_with_new_member_id(broker_factory, raw, topic_name, version):
    """A Stable group's static leader (group.instance.id i-a) restarts and joins with member id
    "". Before JoinGroup v9 (librdkafka 2.16 sends v5) Kafka answers with the OLD leader id and
    no members, so the new incarnation acts as a follower and keeps its assignment (a leader
    would run an assignment the Stable group ignores). From v9 (KIP-814) it is told it leads,
    gets the members and skip_assignment=true. Same generation, no rebalance; the old member id
    is fenced."""
    broker = broker_factory(*GROUP_SETS)
    a, b, gen, assigns = _stable_group_of_two(raw(broker), raw(broker), topic_name, version)
    old_leader = a.member_id

    a2 = Member(raw(broker), a.group, "i-a", topic_name, version)
    j = a2.join()
    new_id = a2.member_id
    assert new_id and new_id != old_leader, f"rejoin kept member id {new_id!r}"
    assert j.generation_id == gen, f"JoinGroup v{version} rejoin: generation {j.generation_id}, expected {gen}"
    if version < 9:
        assert j.leader == old_leader, (
            f"JoinGroup v{version}: static leader rejoining under {new_id} was told leader={j.leader!r}; "
            f"Kafka answers the old leader id {old_leader!r} (so the client follows)")
        assert list(j.members) == [], (
            f"JoinGroup v{version}: members {[m.member_id for m in j.members]}, Kafka answers none")
    else:
        assert j.leader == new_id, f"JoinGroup v9: leader {j.leader!r}, expected the new id {new_id!r}"
        assert sorted((m.member_id, m.group_instance_id) for m in j.members) == sorted(
            [(new_id, "i-a"), (b.member_id, "i-b")]), f"JoinGroup v9 members: {j.members}"
        assert j.skip_assignment is True, "JoinGroup v9: skip_assignment must be true"
    s = a2.sync(gen)
    assert s.error_code == NONE and s.assignment == assigns[old_leader], (
        f"SyncGroup v{a2.sv} with the new id: error {err(s.error_code)}, assignment {s.assignment!r}; "
        f"expected the leader's old assignment {assigns[old_leader]!r}")
    assert a2.heartbeat(gen) == NONE
    assert b.heartbeat(gen) == NONE, "the other member must see no rebalance"
    assert a.heartbeat(gen, member_id=old_leader) == FENCED_INSTANCE_ID, "the old member id is not fenced"


class GroupConsumer:
    """A confluent-kafka group consumer (range assignor) that keeps what it reads; close() once."""

    def __init__(self, bootstrap, group, topic, **extra):
        from confluent_kafka import Consumer
        self.c = Consumer(ck_conf(bootstrap, group_id=group, partition_assignment_strategy="range",
                                  auto_offset_reset="earliest", enable_auto_commit=False,
                                  fetch_wait_max_ms=100, heartbeat_interval_ms=1000, **extra))
        self.events = []  # ("assign" | "revoke" | "lost", [partitions]) from the rebalance callbacks
        self.records = []
        self.closed = False

        def ev(kind):
            return lambda c, ps: self.events.append((kind, sorted(tp.partition for tp in ps)))
        self.c.subscribe([topic], on_assign=ev("assign"), on_revoke=ev("revoke"), on_lost=ev("lost"))

    def poll(self):
        m = self.c.poll(0.05)
        if m is not None and m.error() is None:
            self.records.append((m.partition(), m.offset()))
        elif m is not None and m.error().fatal():
            raise AssertionError(f"fatal consumer error {m.error()}")
        return True

    def parts(self):
        return sorted(tp.partition for tp in self.c.assignment())

    def close(self):
        if not self.closed:
            self.closed = True
            self.c.close()


@pytest.mark.timeout(120)
def test_librdkafka_static_leader_restart_keeps_partitions(broker_factory, raw, topic_name, closer):
    """librdkafka 2.16 (JoinGroup v5): the static leader closes (no LeaveGroup for static members)
    and restarts; the new incarnation follows, gets the same partitions and consumes records
    produced after its restart, and the other member keeps its own."""
    broker = broker_factory(*GROUP_SETS)
    assert create_topics(raw(broker), creatable(topic_name, 4))[0][1] == NONE
    group = f"static-{uuid.uuid4().hex[:8]}"

    def member(inst, name):
        return closer(GroupConsumer(broker.bootstrap, group, topic_name, group_instance_id=inst,
                                    client_id=name, session_timeout_ms=30000))

    a = member("i-a", "static-a-1")  # alone first: the leader
    wait_until(lambda: a.poll() and a.parts() == [0, 1, 2, 3], 30, 0,
               lambda: f"the first member got {a.parts()}")
    b = member("i-b", "static-b")
    wait_until(lambda: a.poll() and b.poll() and len(a.parts()) == 2 and len(b.parts()) == 2, 40, 0,
               lambda: f"no 2/2 split: a={a.parts()} b={b.parts()}")
    a_parts, b_parts = a.parts(), b.parts()
    b_events = list(b.events)
    a.close()
    a2 = member("i-a", "static-a-2")
    wait_until(lambda: a2.poll() and b.poll() and a2.parts(), 30, 0,
               "the restarted static leader got no assignment")
    assert a2.parts() == a_parts, f"restarted static leader got {a2.parts()}, had {a_parts}"
    p = ck_producer(broker.bootstrap, acks="all")
    for part in range(4):
        for i in range(5):
            p.produce(topic_name, value=f"{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0
    wait_until(lambda: a2.poll() and b.poll() and len(a2.records) >= 10 and len(b.records) >= 10, 30, 0,
               lambda: f"consumed: restarted leader {a2.records}, other {b.records}")
    assert sorted(a2.records) == [(x, o) for x in a_parts for o in range(5)], (
        f"restarted leader (owns {a_parts}) read {sorted(a2.records)}")
    assert sorted(b.records) == [(x, o) for x in b_parts for o in range(5)], (
        f"other member (owns {b_parts}) read {sorted(b.records)}")
    assert (a2.parts(), b.parts()) == (a_parts, b_parts), "assignments changed"
    assert a2.events == [("assign", a_parts)], f"restarted leader's rebalance callbacks: {a2.events}"
    assert b.events == b_events, f"the other member saw a rebalance: {b.events[len(b_events):]}"


# ================================================================ F. SASL without SASL

@pytest.mark.parametrize("version", [0, 1])
def test_sasl_handshake_on_plaintext_listener(broker, raw, version):
    """Kafka answers SaslHandshake on a PLAINTEXT listener with ILLEGAL_SASL_STATE and keeps the
    connection (an ApiVersions right after it on the same socket is answered)."""
    c = raw(broker)
    try:
        r = c.call(SaslHandshakeRequest, version, mechanism="PLAIN")
    except (ConnectionError, OSError) as e:
        raise AssertionError(f"SaslHandshake v{version} (PLAIN): connection closed ({e!r}) instead of "
                             f"an {err(ILLEGAL_SASL_STATE)} answer")
    assert r.error_code == ILLEGAL_SASL_STATE, (
        f"SaslHandshake v{version}: error {err(r.error_code)}, expected {err(ILLEGAL_SASL_STATE)}")
    try:
        av = c.call(ApiVersionsRequest, 0)
    except (ConnectionError, OSError) as e:
        raise AssertionError(f"connection closed after the SaslHandshake answer ({e!r})")
    assert av.error_code == NONE and av.api_keys, f"ApiVersions after SaslHandshake: {av.error_code}"
    try:
        sa = c.call(SaslAuthenticateRequest, 2, auth_bytes=b"\x00u\x00p")
    except (ConnectionError, OSError) as e:
        raise AssertionError(f"SaslAuthenticate v2: connection closed ({e!r})")
    assert sa.error_code == ILLEGAL_SASL_STATE, (
        f"SaslAuthenticate v2 on a PLAINTEXT listener: {err(sa.error_code)}, expected {err(ILLEGAL_SASL_STATE)}")
    assert c.call(ApiVersionsRequest, 0).error_code == NONE


# ================================================================ Java program

JAVA_SRC = E2E_DIR / "java" / "StrataTopicIds.java"
@pytest.fixture(scope="session", params=["3", "4"], ids=lambda c: f"kafka-clients-{c}")
def topic_ids_program(request, tmp_path_factory):
    """The Java checks, compiled against each installed kafka-clients (3.9 and 4.x)."""
    return compile_java(request.param, JAVA_SRC, tmp_path_factory.mktemp(f"java{request.param}-topic-ids"))


def run_java(program, *args, timeout=150):
    """Runs the program; returns {check: result} from its CHECK lines."""
    try:
        r = subprocess.run(program + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java program hung; stdout:\n{e.stdout}\nstderr tail:\n{(e.stderr or '')[-4000:]}")
    checks = {}
    for line in r.stdout.splitlines():
        if line.startswith("CHECK "):
            d = json.loads(line[6:])
            checks[d["check"]] = d["result"]
    assert r.returncode == 0 and "DONE" in r.stdout.splitlines(), (
        f"java {args} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-6000:]}")
    return checks


@pytest.mark.java
@pytest.mark.timeout(150)
def test_java_admin_with_sasl_against_plaintext_fails_fast(broker, topic_ids_program):
    """kafka-clients (3.9 and 4.1) Admin with security.protocol=SASL_PLAINTEXT, mechanism PLAIN against a
    PLAINTEXT listener: Kafka's ILLEGAL_SASL_STATE answer makes listTopics() fail at once with an
    authentication error, not after default.api.timeout.ms (60 s)."""
    res = run_java(topic_ids_program, broker.bootstrap, "sasl")["sasl_list_topics"]
    assert res["ok"] is False, f"listTopics() over SASL against a PLAINTEXT listener succeeded: {res}"
    auth = {"org.apache.kafka.common.errors.IllegalSaslStateException",
            "org.apache.kafka.common.errors.AuthenticationException",
            "org.apache.kafka.common.errors.SaslAuthenticationException"}
    assert auth & set(res["exceptions"]), (
        f"listTopics() failed with {res['exceptions']} ({res['message']!r}) after {res['elapsed_ms']} ms; "
        f"expected an authentication error (IllegalSaslStateException)")
    assert res["elapsed_ms"] < 20000, f"listTopics() took {res['elapsed_ms']} ms to fail (must be fast)"


@pytest.mark.java
@pytest.mark.timeout(150)
def test_java_fetch_and_delete_by_topic_id(broker, topic_name, topic_ids_program):
    """kafka-clients (3.9 and 4.1): a classic assign() consumer (Fetch v13+ names topics by id) reads every
    record; Admin.deleteTopics(TopicCollection.ofTopicIds) deletes by id, and an unknown id fails
    with UnknownTopicIdException."""
    checks = run_java(topic_ids_program, broker.bootstrap, "ids", topic_name)
    f = checks["fetch_by_id"]
    assert f["ok"] and f["consumed"] == f["produced"] == 300 and f["mismatches"] == [], (
        f"consumer fetching by topic id: {f}")
    d = checks["delete_by_id"]
    assert d == {"ok": True, "gone": True, "main_still_listed": True}, f"deleteTopics by id: {d}"
    u = checks["delete_unknown_id"]
    assert u["ok"] is False and "org.apache.kafka.common.errors.UnknownTopicIdException" in u["exceptions"], (
        f"deleteTopics of unknown id {u.get('id')}: {u}; expected UnknownTopicIdException")


@pytest.mark.java
@pytest.mark.timeout(150)
def test_java_describe_topics_by_id(broker, topic_name, topic_ids_program):
    """kafka-clients (3.9 and 4.1) Admin.describeTopics(TopicCollection.ofTopicIds(...)): the right name and
    partitions for an existing id; UnknownTopicIdException for an unknown one."""
    checks = run_java(topic_ids_program, broker.bootstrap, "describe", topic_name)
    created = checks["created"]
    d = checks["describe_by_id"]
    assert d["ok"] is True, f"describeTopics by id {created['topic_id']} failed: {d}"
    assert (d["ids"], d["name"], d["topic_id"], d["partitions"]) == (
        [created["topic_id"]], created["topic"], created["topic_id"], 3), f"describeTopics by id: {d}"
    assert sorted(d["leaders"]) == ["0:1", "1:1", "2:1"], d
    u = checks["describe_unknown_id"]
    assert u["ok"] is False and "org.apache.kafka.common.errors.UnknownTopicIdException" in u["exceptions"], (
        f"describeTopics of unknown id {u.get('id')}: {u}; expected UnknownTopicIdException")


# ================================================================ G. raw Metadata by id

def test_metadata_v12_by_topic_id(broker, raw, topic_name):
    """Metadata v12 with topic entries {name: null, topic_id: X}: Kafka answers with the id and
    the name; an unknown id gets UNKNOWN_TOPIC_ID."""
    c = raw(broker)
    assert create_topics(c, creatable(topic_name, 2))[0][1] == NONE
    err_code, n, tid = topic_state(c, topic_name)
    assert err_code == NONE and tid is not None, (err_code, tid)
    unknown = uuid.uuid4()
    r = metadata(c, ids=[tid, unknown])
    got = {t.topic_id: (t.name, t.error_code, len(t.partitions)) for t in r.topics}
    assert got.get(tid) == (topic_name, NONE, 2), (
        f"Metadata v12 by id {tid}: {got.get(tid)}, expected ({topic_name!r}, 0, 2 partitions)")
    assert got.get(unknown, (None, None))[1] == UNKNOWN_TOPIC_ID, (
        f"Metadata v12 by unknown id {unknown}: {got.get(unknown)}, expected {err(UNKNOWN_TOPIC_ID)}")


def test_metadata_v12_by_topic_id_with_empty_name(broker, raw, topic_name):
    """What kafka-clients 3.9 sends for describeTopics by id: each entry's name left at the
    schema default "" (not null) next to the id. Kafka (KafkaApis.handleTopicMetadataRequest)
    resolves by id as soon as any id is non-zero."""
    c = raw(broker)
    assert create_topics(c, creatable(topic_name, 2))[0][1] == NONE
    _, _, tid = topic_state(c, topic_name)
    unknown = uuid.uuid4()
    M = MetadataRequest
    r = c.call(M, 12, allow_auto_topic_creation=False, include_topic_authorized_operations=False,
               topics=[M.MetadataRequestTopic(name="", topic_id=tid), M.MetadataRequestTopic(name="", topic_id=unknown)])
    got = [(t.name, t.topic_id, t.error_code, len(t.partitions)) for t in r.topics]
    by_id = {t[1]: t for t in got}
    assert by_id.get(tid) == (topic_name, tid, NONE, 2), (
        f"Metadata v12 [{{name: '', id: {tid}}}, {{name: '', id: {unknown}}}]: {got}; expected "
        f"({topic_name!r}, {tid}, 0, 2) for the existing id")
    assert by_id.get(unknown, (None, None, None))[2] == UNKNOWN_TOPIC_ID, (
        f"unknown id {unknown}: {got}; expected {err(UNKNOWN_TOPIC_ID)}")
