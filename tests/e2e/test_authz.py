"""ACL authorization (StandardAuthorizer semantics) as Kafka's KafkaApis applies it.

One module-scoped broker (`authz`): PLAINTEXT (the readiness probe, principal User:ANONYMOUS)
and SASL_PLAINTEXT with PLAIN users (`USERS`), `authorizer.class.name=...StandardAuthorizer`,
`super.users=User:admin`, `allow.everyone.if.no.acl.found` left at false. ACLs are created by
the super user with CreateAcls; every test works on its own uniquely named topics, groups and
transactional ids, and principals that hold cluster-wide or wildcard grants are dedicated to one
test, so the tests do not see each other's ACLs.

Raw requests (kafka-python 3's protocol classes, after SaslHandshake v1 + SaslAuthenticate on
the connection) pin the exact error code of every API a client sends, each once with a principal
holding exactly the ACL it needs and once without (`bob` never gets any ACL, `nobody` neither,
and `carol` holds another operation on the same resource):

1. the matrix: topic APIs (Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, Metadata,
   DescribeTopicPartitions, CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords,
   Describe/Alter/IncrementalAlterConfigs, DescribeProducers), cluster APIs (DescribeLogDirs,
   DescribeQuorum, ListPartitionReassignments, Describe/AlterUserScramCredentials, ElectLeaders,
   AlterPartitionReassignments, WriteTxnMarkers, follower Fetch, the ACL APIs, broker configs,
   CREATE and IDEMPOTENT_WRITE on the cluster), a raw transaction (InitProducerId, FindCoordinator,
   AddPartitionsToTxn v3, transactional Produce, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
   Describe/ListTransactions), a raw classic group (FindCoordinator, Join/Sync/Heartbeat/Leave,
   OffsetCommit/Fetch/Delete, DescribeGroups, DeleteGroups) and a KIP-848 group
   (ConsumerGroupHeartbeat, ConsumerGroupDescribe; a regex subscription resolves only to topics
   the member may describe, and a group using a topic the describer may not describe is
   TOPIC_AUTHORIZATION_FAILED, as KAFKA-18813); real clients: confluent-kafka produce,
   group consume, a transactional producer, admin create/delete topics, describe/alter configs;
2. no data leaks: Metadata, DescribeTopicPartitions, ListGroups, OffsetFetch (all topics),
   DescribeAcls, DescribeCluster's authorized operations;
3. semantics: DENY beats ALLOW, PREFIXED, `User:*`, host-specific ACLs, implied operations;
4. the ACL lifecycle through confluent-kafka's admin (create, describe with filters, delete,
   the revoked principal refused at once, ACLs kept across a restart);
5. kafka-clients 3.9.1 group consumers (java/StrataAuthz.java);
6. SECURITY_DISABLED from the ACL APIs of a broker without an authorizer.

Every answer checked is Kafka's (KafkaApis / AuthHelper / ReplicationControlManager), including
the less obvious ones: TxnOffsetCommit needs WRITE on the transactional id, DescribeCluster
answers everyone, WriteTxnMarkers accepts ALTER, CLUSTER_ACTION reads every topic's epochs,
CreateTopics hides configs without DESCRIBE_CONFIGS, a refused auto-creation is
TOPIC_AUTHORIZATION_FAILED.
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import uuid
from typing import NamedTuple

import pytest
from kafka.protocol.admin.acl import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest
from kafka.protocol.admin.cluster import DescribeClusterRequest, DescribeLogDirsRequest, DescribeQuorumRequest
from kafka.protocol.admin.configs import AlterConfigsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest
from kafka.protocol.admin.groups import DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest
from kafka.protocol.admin.topics import (
    AlterPartitionReassignmentsRequest,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    DeleteRecordsRequest,
    DeleteTopicsRequest,
    DescribeTopicPartitionsRequest,
    ElectLeadersRequest,
    ListPartitionReassignmentsRequest,
)
from kafka.protocol.admin.transactions import (
    DescribeProducersRequest,
    DescribeTransactionsRequest,
    ListTransactionsRequest,
)
from kafka.protocol.admin.users import AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    JoinGroupRequest,
    LeaveGroupRequest,
    OffsetCommitRequest,
    OffsetDeleteRequest,
    OffsetFetchRequest,
    SyncGroupRequest,
)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, OffsetForLeaderEpochRequest
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.protocol.producer.transaction import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
    TxnOffsetCommitRequest,
    WriteTxnMarkersRequest,
)
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import Broker
from e2e_util import E2E_DIR, RDKAFKA_LOGGER, FlexReader, compact_str, free_port, java_program, recv_exact, uvarint, \
    wait_until
from security_util import LogMark, PLAIN_MODULE, listener_sets

# ------------------------------------------------------------------ constants

# error codes (org.apache.kafka.common.protocol.Errors)
NONE = 0
MEMBER_ID_REQUIRED = 79
TOPIC_AUTH = 29        # TOPIC_AUTHORIZATION_FAILED
GROUP_AUTH = 30        # GROUP_AUTHORIZATION_FAILED
CLUSTER_AUTH = 31      # CLUSTER_AUTHORIZATION_FAILED
TXN_AUTH = 53          # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
SECURITY_DISABLED = 54
OPERATION_NOT_ATTEMPTED = 55
ERROR_NAMES = {0: "NONE", 3: "UNKNOWN_TOPIC_OR_PARTITION", 5: "LEADER_NOT_AVAILABLE", 6: "NOT_LEADER_OR_FOLLOWER",
               29: "TOPIC_AUTHORIZATION_FAILED", 30: "GROUP_AUTHORIZATION_FAILED",
               31: "CLUSTER_AUTHORIZATION_FAILED", 35: "UNSUPPORTED_VERSION", 42: "INVALID_REQUEST",
               53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", 54: "SECURITY_DISABLED",
               55: "OPERATION_NOT_ATTEMPTED", 79: "MEMBER_ID_REQUIRED"}

# ACL enums (org.apache.kafka.common.{resource,acl})
TOPIC, GROUP, CLUSTER, TXN = 2, 3, 4, 5
ANY_RESOURCE = ANY_PATTERN = ANY_OP = ANY_PERM = 1
MATCH, LITERAL, PREFIXED = 2, 3, 4
ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 2, 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12
DENY, ALLOW = 2, 3
CLUSTER_NAME = "kafka-cluster"
OP_NAMES = {2: "ALL", 3: "READ", 4: "WRITE", 5: "CREATE", 6: "DELETE", 7: "ALTER", 8: "DESCRIBE",
            9: "CLUSTER_ACTION", 10: "DESCRIBE_CONFIGS", 11: "ALTER_CONFIGS", 12: "IDEMPOTENT_WRITE"}

# SASL/PLAIN users of the broker's JAAS config. admin is the super user; bob and nobody never
# get an ACL; c* each hold one cluster operation; the others are given ACLs by the tests.
CLUSTER_USERS = {"cdescribe": DESCRIBE, "calter": ALTER, "caction": CLUSTER_ACTION, "cidem": IDEMPOTENT_WRITE,
                 "ccreate": CREATE, "cdconf": DESCRIBE_CONFIGS, "caconf": ALTER_CONFIGS}
USERS = {u: f"{u}-pw" for u in ["admin", "alice", "bob", "carol", "dave", "erin", "frank", "gina", "ivan", "paul",
                                "wild", "nobody", "jane", "jim", "joe", *CLUSTER_USERS]}


def err(code) -> str:
    return f"{code} ({ERROR_NAMES.get(code, '?')})"


def uid() -> str:
    return uuid.uuid4().hex[:8]


def expect(got, want, what):
    assert got == want, f"{what}: got {err(got)}, expected {err(want)}"


# ================================================================== brokers

_SHARED: list[Broker] = []


class _Brokers:
    """request.node._strata_brokers for conftest's report hook: the test's own and the shared one."""

    def __init__(self, own):
        self.own = own

    def __iter__(self):
        yield from self.own
        yield from _SHARED

    def __bool__(self):
        return bool(self.own) or bool(_SHARED)


@pytest.fixture(autouse=True)
def _shared_broker_checks(request, broker_factory):
    request.node._strata_brokers = _Brokers(getattr(request.node, "_strata_brokers", []))
    marks = {b.name: LogMark(b) for b in _SHARED}
    yield
    panics = [f"{b.name}: {l}" for b in _SHARED if b.name in marks
              for l in marks[b.name].text().splitlines() if "panicked" in l]
    if panics:
        pytest.fail("shared broker log contains 'panicked':\n" + "\n".join(panics), pytrace=False)


def authz_sets(ports) -> list[str]:
    jaas = f"{PLAIN_MODULE} required " + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";"
    return listener_sets(ports) + [
        "sasl.enabled.mechanisms=PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
        "group.initial.rebalance.delay.ms=0",
    ]


@pytest.fixture(scope="module")
def authz(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("authz"), name="authz")
    b.ports = {"PLAINTEXT": b.port, "SASL_PLAINTEXT": free_port()}
    b.sets += authz_sets(b.ports)
    b.sasl = f"127.0.0.1:{b.ports['SASL_PLAINTEXT']}"
    _SHARED.append(b)
    try:
        b.start()
        # the dedicated cluster principals, one operation each
        grant(b, *[Acl(u, CLUSTER, CLUSTER_NAME, op) for u, op in CLUSTER_USERS.items()])
        yield b
    finally:
        b.cleanup()
        _SHARED.remove(b)


# ================================================================== raw requests

class Session:
    """One SASL_PLAINTEXT connection authenticated as `user` (SaslHandshake v1 + SaslAuthenticate);
    requests encoded/decoded with kafka-python's schema classes."""

    def __init__(self, broker, user, timeout=15.0):
        self.user = user
        self.sock = socket.create_connection(("127.0.0.1", broker.ports["SASL_PLAINTEXT"]), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0
        hs = self.call(SaslHandshakeRequest, 1, mechanism="PLAIN")
        assert hs.error_code == NONE, hs
        au = self.call(SaslAuthenticateRequest, 1, auth_bytes=f"\x00{user}\x00{USERS[user]}".encode())
        assert au.error_code == NONE, f"{user}: SaslAuthenticate {au}"

    def call(self, cls, version, **fields):
        self.corr += 1
        req = cls[version](**fields)
        req.with_header(correlation_id=self.corr, client_id=f"strata-e2e-authz-{self.user}")
        self.sock.sendall(req.encode(header=True, framed=True))
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        resp = ResponseClassRegistry.get_response_class(req.header).decode(recv_exact(self.sock, size), header=True)
        assert resp.header.correlation_id == self.corr
        return resp

    def call_flex(self, api_key, version, body: bytes) -> FlexReader:
        """A flexible-version request kafka-python has no class for; a reader over the body."""
        self.corr += 1
        cid = b"strata-e2e-authz"
        msg = struct.pack(">hhih", api_key, version, self.corr, len(cid)) + cid + b"\x00" + body
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        r = FlexReader(recv_exact(self.sock, size))
        assert r.take(">i") == self.corr and r.uvarint() == 0
        return r

    def close(self):
        self.sock.close()


@pytest.fixture
def sess(authz, closer):
    """sess(user) -> an authenticated Session (closed at teardown)."""
    return lambda user: closer(Session(authz, user))


class Acl(NamedTuple):
    user: str
    rtype: int
    name: str
    op: int
    perm: int = ALLOW
    pattern: int = LITERAL
    host: str = "*"

    @property
    def principal(self):
        return self.user if ":" in self.user else f"User:{self.user}"

    def fields(self):
        return dict(resource_type=self.rtype, resource_name=self.name, principal=self.principal, host=self.host,
                    operation=self.op, permission_type=self.perm)


def _acl_filter(a: Acl):
    return DeleteAclsRequest.DeleteAclsFilter(
        resource_type_filter=a.rtype, resource_name_filter=a.name, pattern_type_filter=a.pattern,
        principal_filter=a.principal, host_filter=a.host, operation=a.op, permission_type=a.perm)


def described(broker, a: Acl) -> bool:
    s = Session(broker, "admin")
    try:
        r = s.call(DescribeAclsRequest, 3, resource_type_filter=a.rtype, resource_name_filter=a.name,
                   pattern_type_filter=a.pattern, principal_filter=a.principal, host_filter=a.host,
                   operation=a.op, permission_type=a.perm)
    finally:
        s.close()
    assert r.error_code == NONE, r
    return any(res.acls for res in r.resources)


def grant(broker, *acls: Acl):
    """CreateAcls as the super user; every creation must succeed and be listed by DescribeAcls."""
    s = Session(broker, "admin")
    try:
        r = s.call(CreateAclsRequest, 3, creations=[CreateAclsRequest.AclCreation(
            resource_pattern_type=a.pattern, **a.fields()) for a in acls])
    finally:
        s.close()
    assert [x.error_code for x in r.results] == [NONE] * len(acls), r
    for a in acls:
        wait_until(lambda: described(broker, a), 5, 0.02, f"{a} not listed by DescribeAcls after CreateAcls")


def revoke(broker, *acls: Acl):
    s = Session(broker, "admin")
    try:
        r = s.call(DeleteAclsRequest, 3, filters=[_acl_filter(a) for a in acls])
    finally:
        s.close()
    assert [(x.error_code, len(x.matching_acls)) for x in r.filter_results] == [(NONE, 1)] * len(acls), r


def make_topics(broker, *names, partitions=1, records=1):
    """CreateTopics as the super user, wait for leaders, and produce `records` records to p0."""
    s = Session(broker, "admin")
    try:
        T = CreateTopicsRequest.CreatableTopic
        r = s.call(CreateTopicsRequest, 7, topics=[T(name=n, num_partitions=partitions, replication_factor=1,
                                                     assignments=[], configs=[]) for n in names],
                   timeout_ms=15000, validate_only=False)
        assert [(t.name, t.error_code) for t in r.topics] == [(n, NONE) for n in names], r

        def ready():
            md = s.call(MetadataRequest, 12, topics=[MetadataRequest.MetadataRequestTopic(name=n) for n in names],
                        allow_auto_topic_creation=False)
            return all(t.error_code == NONE and len(t.partitions) == partitions
                       and all(p.leader_id >= 0 for p in t.partitions) for t in md.topics)
        wait_until(ready, 15, 0.05, f"topics {names} not ready")
        for n in names:
            for _ in range(records):
                expect(produce(s, n), NONE, f"admin produce to {n}")
    finally:
        s.close()


def batch(n=1, txn=False, pid=-1, epoch=-1, seq=-1) -> bytes:
    b = DefaultRecordBatchBuilder(2, 0, txn, pid, epoch, seq, 1 << 20)
    now = int(time.time() * 1000)
    for i in range(n):
        assert b.append(i, now, f"k{i}".encode(), f"authz-{i}".encode(), []) is not None
    return bytes(b.build())


def produce(s, topic, records=None, txn_id=None, partition=0):
    P = ProduceRequest
    r = s.call(P, 8, transactional_id=txn_id, acks=-1, timeout_ms=10000, topic_data=[
        P.TopicProduceData(name=topic, partition_data=[
            P.TopicProduceData.PartitionProduceData(index=partition, records=records or batch())])])
    return r.responses[0].partition_responses[0].error_code


def fetch(s, topic, replica_id=-1, partition=0):
    F = FetchRequest
    r = s.call(F, 12, replica_id=replica_id, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20, isolation_level=0,
               session_id=0, session_epoch=-1, forgotten_topics_data=[], rack_id="",
               topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(
                   partition=partition, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1,
                   log_start_offset=-1, partition_max_bytes=1 << 20)])])
    return r.responses[0].partitions[0].error_code


def list_offsets(s, topic):
    L = ListOffsetsRequest
    r = s.call(L, 7, replica_id=-1, isolation_level=0, topics=[L.ListOffsetsTopic(name=topic, partitions=[
        L.ListOffsetsTopic.ListOffsetsPartition(partition_index=0, current_leader_epoch=-1, timestamp=-1)])])
    return r.topics[0].partitions[0].error_code


def offset_for_leader_epoch(s, topic):
    O = OffsetForLeaderEpochRequest
    r = s.call(O, 4, replica_id=-1, topics=[O.OffsetForLeaderTopic(topic=topic, partitions=[
        O.OffsetForLeaderTopic.OffsetForLeaderPartition(partition=0, current_leader_epoch=-1, leader_epoch=0)])])
    return r.topics[0].partitions[0].error_code


def metadata(s, names=None, auto=False, ops=False):
    topics = None if names is None else [MetadataRequest.MetadataRequestTopic(name=n) for n in names]
    return s.call(MetadataRequest, 12, topics=topics, allow_auto_topic_creation=auto,
                  include_topic_authorized_operations=ops)


def metadata_named(s, topic):
    [t] = metadata(s, [topic]).topics
    return t.error_code


def describe_topic_partitions(s, topic):
    r = s.call(DescribeTopicPartitionsRequest, 0, topics=[DescribeTopicPartitionsRequest.TopicRequest(name=topic)],
               response_partition_limit=100, cursor=None)
    [t] = r.topics
    return t.error_code


def create_topic(s, topic):
    T = CreateTopicsRequest.CreatableTopic
    r = s.call(CreateTopicsRequest, 7, topics=[T(name=topic, num_partitions=1, replication_factor=1, assignments=[],
                                                 configs=[])], timeout_ms=15000, validate_only=False)
    return r.topics[0].error_code


def delete_topic(s, topic):
    r = s.call(DeleteTopicsRequest, 6, topics=[DeleteTopicsRequest.DeleteTopicState(name=topic, topic_id=None)],
               timeout_ms=15000)
    return r.responses[0].error_code


def create_partitions(s, topic):
    C = CreatePartitionsRequest
    r = s.call(C, 3, topics=[C.CreatePartitionsTopic(name=topic, count=2, assignments=None)], timeout_ms=15000,
               validate_only=False)
    return r.results[0].error_code


def delete_records(s, topic):
    D = DeleteRecordsRequest
    r = s.call(D, 2, topics=[D.DeleteRecordsTopic(name=topic, partitions=[
        D.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=0, offset=1)])], timeout_ms=15000)
    return r.topics[0].partitions[0].error_code


BROKER_RESOURCE = 4  # ConfigResource.Type.BROKER


def describe_configs(s, name, rtype=TOPIC):
    D = DescribeConfigsRequest
    r = s.call(D, 4, resources=[D.DescribeConfigsResource(resource_type=rtype, resource_name=name,
                                                          configuration_keys=None)],
               include_synonyms=False, include_documentation=False)
    return r.results[0].error_code


def alter_configs(s, topic):
    A = AlterConfigsRequest
    r = s.call(A, 2, resources=[A.AlterConfigsResource(resource_type=TOPIC, resource_name=topic, configs=[
        A.AlterConfigsResource.AlterableConfig(name="retention.ms", value="3600000")])], validate_only=False)
    return r.responses[0].error_code


def incremental_alter_configs(s, name, rtype=TOPIC, config=("retention.ms", "7200000"), validate_only=False):
    I = IncrementalAlterConfigsRequest
    r = s.call(I, 1, resources=[I.AlterConfigsResource(resource_type=rtype, resource_name=name, configs=[
        I.AlterConfigsResource.AlterableConfig(name=config[0], config_operation=0, value=config[1])])],
               validate_only=validate_only)
    return r.responses[0].error_code


def describe_producers(s, topic):
    D = DescribeProducersRequest
    r = s.call(D, 0, topics=[D.TopicRequest(name=topic, partition_indexes=[0])])
    return r.topics[0].partitions[0].error_code


# ================================================================== 1. the matrix: topic APIs

class TopicCase(NamedTuple):
    op: int          # the ACL the API needs on the topic
    other: int       # an operation that must not be enough
    call: object     # call(session, topic) -> error code
    exists: bool = True


TOPIC_CASES = {
    "Produce": TopicCase(WRITE, READ, produce),
    "Fetch": TopicCase(READ, WRITE, fetch),
    "ListOffsets": TopicCase(DESCRIBE, DESCRIBE_CONFIGS, list_offsets),
    "OffsetForLeaderEpoch": TopicCase(DESCRIBE, DESCRIBE_CONFIGS, offset_for_leader_epoch),
    "Metadata": TopicCase(DESCRIBE, CREATE, metadata_named),
    "DescribeTopicPartitions": TopicCase(DESCRIBE, ALTER_CONFIGS, describe_topic_partitions),
    "CreateTopics": TopicCase(CREATE, DESCRIBE, create_topic, exists=False),
    "DeleteTopics": TopicCase(DELETE, ALTER, delete_topic),
    "CreatePartitions": TopicCase(ALTER, ALTER_CONFIGS, create_partitions),
    "DeleteRecords": TopicCase(DELETE, WRITE, delete_records),
    "DescribeConfigs": TopicCase(DESCRIBE_CONFIGS, DESCRIBE, describe_configs),
    "AlterConfigs": TopicCase(ALTER_CONFIGS, ALTER, alter_configs),
    "IncrementalAlterConfigs": TopicCase(ALTER_CONFIGS, DESCRIBE_CONFIGS, incremental_alter_configs),
    "DescribeProducers": TopicCase(READ, DESCRIBE, describe_producers),
}


@pytest.mark.parametrize("api", list(TOPIC_CASES))
def test_topic_api_matrix(authz, sess, api):
    """alice holds exactly the operation the API needs on the topic: NONE. bob (no ACL) and
    carol (another operation on the same topic) get TOPIC_AUTHORIZATION_FAILED."""
    case = TOPIC_CASES[api]
    topic = f"m-{api.lower()}-{uid()}"
    if case.exists:
        make_topics(authz, topic)
    grant(authz, Acl("alice", TOPIC, topic, case.op), Acl("carol", TOPIC, topic, case.other))
    expect(case.call(sess("bob"), topic), TOPIC_AUTH, f"{api} by bob (no ACL)")
    expect(case.call(sess("carol"), topic), TOPIC_AUTH, f"{api} by carol ({OP_NAMES[case.other]} only)")
    expect(case.call(sess("alice"), topic), NONE, f"{api} by alice ({OP_NAMES[case.op]})")


def test_create_topics_without_describe_configs_hides_the_config(authz, sess):
    """CreateTopics v5+: a principal with CREATE but not DESCRIBE_CONFIGS on the topic gets the
    topic created (NONE) and TOPIC_AUTHORIZATION_FAILED as topic_config_error_code, with no
    configs and -1 partitions/replication factor; with DESCRIBE_CONFIGS too it gets them."""
    t1, t2 = f"cfgvis-{uid()}", f"cfgvis-{uid()}"
    grant(authz, Acl("alice", TOPIC, t1, CREATE), Acl("alice", TOPIC, t2, CREATE),
          Acl("alice", TOPIC, t2, DESCRIBE_CONFIGS))
    s = sess("alice")
    T = CreateTopicsRequest.CreatableTopic
    r = s.call(CreateTopicsRequest, 7, topics=[T(name=t, num_partitions=2, replication_factor=1, assignments=[],
                                                 configs=[]) for t in (t1, t2)], timeout_ms=15000,
               validate_only=False)
    got = {t.name: t for t in r.topics}
    a, b = got[t1], got[t2]
    assert (a.error_code, a.topic_config_error_code, a.num_partitions, a.replication_factor, len(a.configs)) == (
        NONE, TOPIC_AUTH, -1, -1, 0), a
    assert (b.error_code, b.topic_config_error_code, b.num_partitions, b.replication_factor) == (NONE, NONE, 2, 1), b
    assert b.configs, b


def test_implied_operations(authz, sess):
    """READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL
    allows everything; DESCRIBE implies nothing else."""
    topics = {op: f"impl-{OP_NAMES[op].lower()}-{uid()}" for op in (READ, WRITE, DELETE, ALTER, ALTER_CONFIGS,
                                                                    ALL, DESCRIBE)}
    make_topics(authz, *topics.values())
    grant(authz, *[Acl("carol", TOPIC, t, op) for op, t in topics.items()])
    s = sess("carol")
    for op in (READ, WRITE, DELETE, ALTER, ALL):
        expect(list_offsets(s, topics[op]), NONE, f"ListOffsets (DESCRIBE) with {OP_NAMES[op]}")
        expect(metadata_named(s, topics[op]), NONE, f"Metadata (DESCRIBE) with {OP_NAMES[op]}")
    expect(describe_configs(s, topics[ALTER_CONFIGS]), NONE, "DescribeConfigs with ALTER_CONFIGS")
    expect(metadata_named(s, topics[ALTER_CONFIGS]), TOPIC_AUTH, "Metadata with ALTER_CONFIGS only")
    for call in (produce, fetch, describe_configs, delete_records):
        expect(call(s, topics[ALL]), NONE, f"{call.__name__} with ALL")
    for call in (produce, fetch, describe_configs, delete_records):
        expect(call(s, topics[DESCRIBE]), TOPIC_AUTH, f"{call.__name__} with DESCRIBE only")


# ================================================================== 1. the matrix: cluster APIs

def c_describe_log_dirs(s, topic):
    return s.call(DescribeLogDirsRequest, 4, topics=None).error_code


def c_describe_quorum(s, topic):
    D = DescribeQuorumRequest
    return s.call(D, 1, topics=[D.TopicData(topic_name="__cluster_metadata", partitions=[
        D.TopicData.PartitionData(partition_index=0)])]).error_code


def c_list_reassignments(s, topic):
    return s.call(ListPartitionReassignmentsRequest, 0, timeout_ms=10000, topics=None).error_code


def c_describe_scram(s, topic):
    return s.call(DescribeUserScramCredentialsRequest, 0, users=None).error_code


def c_describe_acls(s, topic):
    return s.call(DescribeAclsRequest, 3, resource_type_filter=ANY_RESOURCE, resource_name_filter=None,
                  pattern_type_filter=ANY_PATTERN, principal_filter=None, host_filter=None, operation=ANY_OP,
                  permission_type=ANY_PERM).error_code


def c_elect_leaders(s, topic):
    E = ElectLeadersRequest
    return s.call(E, 2, election_type=0, topic_partitions=[E.TopicPartitions(topic=topic, partitions=[0])],
                  timeout_ms=10000).error_code


def c_alter_reassignments(s, topic):
    A = AlterPartitionReassignmentsRequest
    return s.call(A, 0, timeout_ms=10000, topics=[A.ReassignableTopic(name=topic, partitions=[
        A.ReassignableTopic.ReassignablePartition(partition_index=0, replicas=[1])])]).error_code


def c_alter_scram(s, topic):
    A = AlterUserScramCredentialsRequest
    r = s.call(A, 0, deletions=[], upsertions=[A.ScramCredentialUpsertion(
        name=f"scram-{topic}", mechanism=1, iterations=8192, salt=b"0123456789abcdef", salted_password=b"x" * 32)])
    return r.results[0].error_code


def c_create_acls(s, topic):
    a = Acl("ghost", TOPIC, topic, READ)
    r = s.call(CreateAclsRequest, 3, creations=[CreateAclsRequest.AclCreation(resource_pattern_type=LITERAL,
                                                                              **a.fields())])
    return r.results[0].error_code


def c_delete_acls(s, topic):
    r = s.call(DeleteAclsRequest, 3, filters=[_acl_filter(Acl("ghost", TOPIC, topic, ANY_OP, ANY_PERM))])
    return r.filter_results[0].error_code


def c_write_txn_markers(s, topic):
    W = WriteTxnMarkersRequest
    r = s.call(W, 1, markers=[W.WritableTxnMarker(
        producer_id=4242424242, producer_epoch=0, transaction_result=False, coordinator_epoch=0,
        topics=[W.WritableTxnMarker.WritableTxnMarkerTopic(name=topic, partition_indexes=[0])])])
    return r.markers[0].topics[0].partitions[0].error_code


def c_describe_broker_configs(s, topic):
    return describe_configs(s, "1", rtype=BROKER_RESOURCE)


def c_alter_broker_configs(s, topic):
    return incremental_alter_configs(s, "1", rtype=BROKER_RESOURCE,
                                     config=("leader.replication.throttled.rate", "1000000000"), validate_only=True)


def c_create_topic(s, topic):
    return create_topic(s, f"{topic}-new")


def c_idempotent_init(s, topic):
    return s.call(InitProducerIdRequest, 4, transactional_id=None, transaction_timeout_ms=60000, producer_id=-1,
                  producer_epoch=-1).error_code


class ClusterCase(NamedTuple):
    user: str      # the principal holding exactly the needed cluster operation
    call: object   # call(session, topic) -> error code
    refused: int   # what bob / nobody gets
    ok: int = NONE


CLUSTER_CASES = {
    "DescribeLogDirs": ClusterCase("cdescribe", c_describe_log_dirs, CLUSTER_AUTH),
    "DescribeQuorum": ClusterCase("cdescribe", c_describe_quorum, CLUSTER_AUTH),
    "ListPartitionReassignments": ClusterCase("cdescribe", c_list_reassignments, CLUSTER_AUTH),
    "DescribeUserScramCredentials": ClusterCase("cdescribe", c_describe_scram, CLUSTER_AUTH),
    "DescribeAcls": ClusterCase("cdescribe", c_describe_acls, CLUSTER_AUTH),
    "ElectLeaders": ClusterCase("calter", c_elect_leaders, CLUSTER_AUTH),
    "AlterPartitionReassignments": ClusterCase("calter", c_alter_reassignments, CLUSTER_AUTH),
    "AlterUserScramCredentials": ClusterCase("calter", c_alter_scram, CLUSTER_AUTH),
    "CreateAcls": ClusterCase("calter", c_create_acls, CLUSTER_AUTH),
    "DeleteAcls": ClusterCase("calter", c_delete_acls, CLUSTER_AUTH),
    "WriteTxnMarkers": ClusterCase("caction", c_write_txn_markers, CLUSTER_AUTH),
    # KIP-664: Kafka also accepts ALTER on the cluster for WriteTxnMarkers (admin abortTransaction)
    "WriteTxnMarkers-ALTER": ClusterCase("calter", c_write_txn_markers, CLUSTER_AUTH),
    "DescribeConfigs-broker": ClusterCase("cdconf", c_describe_broker_configs, CLUSTER_AUTH),
    "DescribeConfigs-broker-ALTER_CONFIGS": ClusterCase("caconf", c_describe_broker_configs, CLUSTER_AUTH),
    "IncrementalAlterConfigs-broker": ClusterCase("caconf", c_alter_broker_configs, CLUSTER_AUTH),
    "CreateTopics-CREATE-cluster": ClusterCase("ccreate", c_create_topic, TOPIC_AUTH),
    "InitProducerId-IDEMPOTENT_WRITE": ClusterCase("cidem", c_idempotent_init, CLUSTER_AUTH),
    # CLUSTER_ACTION lets a broker ask any topic's end offsets
    "OffsetForLeaderEpoch-CLUSTER_ACTION": ClusterCase("caction", offset_for_leader_epoch, TOPIC_AUTH),
}


@pytest.mark.parametrize("api", list(CLUSTER_CASES))
def test_cluster_api_matrix(authz, sess, api):
    """The principal holding exactly the cluster operation succeeds; `nobody` (no ACL at all)
    gets the refusal Kafka answers (CLUSTER_AUTHORIZATION_FAILED; TOPIC_AUTHORIZATION_FAILED where
    a topic is at stake)."""
    case = CLUSTER_CASES[api]
    topic = f"c-{api.lower()}-{uid()}"
    make_topics(authz, topic)
    expect(case.call(sess("nobody"), topic), case.refused, f"{api} by nobody")
    expect(case.call(sess(case.user), topic), case.ok, f"{api} by {case.user}")


def test_follower_fetch_needs_cluster_action(authz, sess):
    """A Fetch with replica_id >= 0 is a follower's: without CLUSTER_ACTION every partition gets
    TOPIC_AUTHORIZATION_FAILED (even with READ on the topic); with it, no authorization error."""
    topic = f"follower-{uid()}"
    make_topics(authz, topic)
    grant(authz, Acl("carol", TOPIC, topic, READ))
    expect(fetch(sess("carol"), topic, replica_id=1), TOPIC_AUTH, "follower Fetch with READ only")
    expect(fetch(sess("carol"), topic), NONE, "consumer Fetch with READ")
    got = fetch(sess("caction"), topic, replica_id=1)
    assert got not in (TOPIC_AUTH, CLUSTER_AUTH), f"follower Fetch with CLUSTER_ACTION: {err(got)}"


def test_describe_cluster_answers_everyone(authz, sess):
    """Kafka answers DescribeCluster to every principal (AuthHelper.computeDescribeClusterResponse:
    no refusal); DESCRIBE on the cluster only decides cluster_authorized_operations, which is 0
    without it and the authorized cluster operations' bits with it."""
    # kafka-python decodes the bit field into the set of operation ids.
    for user, ops in (("bob", set()), ("cdescribe", {DESCRIBE}),
                      ("admin", {CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
                                 IDEMPOTENT_WRITE})):
        r = sess(user).call(DescribeClusterRequest, 0, include_cluster_authorized_operations=True)
        assert (r.error_code, [b.broker_id for b in r.brokers]) == (NONE, [1]), f"{user}: {r}"
        got = set(r.authorized_operations or ())
        assert got == ops, f"{user}: cluster authorized operations {got}, expected {ops}"


# ================================================================== 1. the matrix: a raw transaction

def init_pid(s, txn_id):
    r = s.call(InitProducerIdRequest, 4, transactional_id=txn_id, transaction_timeout_ms=60000, producer_id=-1,
               producer_epoch=-1)
    return r.error_code, r.producer_id, r.producer_epoch


def find_coordinator(s, key, key_type):
    r = s.call(FindCoordinatorRequest, 4, key_type=key_type, coordinator_keys=[key])
    return r.coordinators[0].error_code


def add_partitions(s, txn_id, pid, epoch, topic):
    A = AddPartitionsToTxnRequest
    r = s.call(A, 3, v3_and_below_transactional_id=txn_id, v3_and_below_producer_id=pid,
               v3_and_below_producer_epoch=epoch,
               v3_and_below_topics=[A.AddPartitionsToTxnTopic(name=topic, partitions=[0])])
    return [p.partition_error_code for t in r.results_by_topic_v3_and_below for p in t.results_by_partition]


def txn_offset_commit(s, txn_id, group, pid, epoch, topic, offset):
    T = TxnOffsetCommitRequest
    r = s.call(T, 3, transactional_id=txn_id, group_id=group, producer_id=pid, producer_epoch=epoch,
               generation_id=-1, member_id="", group_instance_id=None, topics=[T.TxnOffsetCommitRequestTopic(
                   name=topic, partitions=[T.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition(
                       partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                       committed_metadata="")])])
    return r.topics[0].partitions[0].error_code


def offset_fetch(s, group, topics=None):
    """OffsetFetch v8 for one group -> (group error, {topic: {partition: (offset, error)}})."""
    O = OffsetFetchRequest
    ts = None if topics is None else [O.OffsetFetchRequestGroup.OffsetFetchRequestTopics(
        name=t, partition_indexes=[0]) for t in topics]
    r = s.call(O, 8, groups=[O.OffsetFetchRequestGroup(group_id=group, topics=ts)], require_stable=False)
    [g] = r.groups
    return g.error_code, {t.name: {p.partition_index: (p.committed_offset, p.error_code) for p in t.partitions}
                          for t in g.topics}


def test_raw_transaction(authz, sess):
    """InitProducerId, FindCoordinator, AddPartitionsToTxn v3, transactional Produce,
    AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions and ListTransactions: alice
    (WRITE on the transactional id, WRITE+READ on the topic, READ on the group) runs a transaction
    that commits a record and an offset; bob gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED at every
    step; alice gets TOPIC_/GROUP_AUTHORIZATION_FAILED for the topic and group she has no ACL for."""
    u = uid()
    txn, topic, other_topic, group, other_group = f"txn-{u}", f"txn-t-{u}", f"txn-o-{u}", f"txn-g-{u}", f"txn-h-{u}"
    make_topics(authz, topic, other_topic, records=0)
    grant(authz, Acl("alice", TXN, txn, WRITE), Acl("alice", TOPIC, topic, WRITE), Acl("alice", TOPIC, topic, READ),
          Acl("alice", GROUP, group, READ))
    a, b = sess("alice"), sess("bob")

    expect(find_coordinator(b, txn, 1), TXN_AUTH, "FindCoordinator(txn) by bob")
    # COORDINATOR_NOT_AVAILABLE until the transaction state topic is up: poll
    wait_until(lambda: find_coordinator(a, txn, 1) == NONE, 15, 0.05,
               lambda: f"FindCoordinator(txn) by alice (WRITE implies DESCRIBE): {err(find_coordinator(a, txn, 1))}")
    expect(init_pid(b, txn)[0], TXN_AUTH, "InitProducerId by bob")
    code, pid, epoch = init_pid(a, txn)
    expect(code, NONE, "InitProducerId by alice")
    # without a transactional id: IDEMPOTENT_WRITE on the cluster or WRITE on any topic
    expect(c_idempotent_init(a, topic), NONE, "InitProducerId (idempotent) by alice (WRITE on a topic)")
    expect(c_idempotent_init(b, topic), CLUSTER_AUTH, "InitProducerId (idempotent) by bob")

    assert add_partitions(b, txn, pid, epoch, topic) == [TXN_AUTH], "AddPartitionsToTxn v3 by bob"
    assert add_partitions(a, txn, pid, epoch, other_topic) == [TOPIC_AUTH], \
        "AddPartitionsToTxn v3 by alice for a topic without WRITE"
    assert add_partitions(a, txn, pid, epoch, topic) == [NONE], "AddPartitionsToTxn v3 by alice"

    records = batch(2, txn=True, pid=pid, epoch=epoch, seq=0)
    expect(produce(b, topic, records, txn_id=txn), TXN_AUTH, "transactional Produce by bob")
    expect(produce(a, topic, records, txn_id=txn), NONE, "transactional Produce by alice")

    def add_offsets(s, g):
        return s.call(AddOffsetsToTxnRequest, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch,
                      group_id=g).error_code
    expect(add_offsets(b, group), TXN_AUTH, "AddOffsetsToTxn by bob")
    expect(add_offsets(a, other_group), GROUP_AUTH, "AddOffsetsToTxn by alice, group without READ")
    expect(add_offsets(a, group), NONE, "AddOffsetsToTxn by alice")

    # (bob's TxnOffsetCommit: test_txn_offset_commit_needs_write_on_the_transactional_id)
    expect(txn_offset_commit(a, txn, other_group, pid, epoch, topic, 2), GROUP_AUTH,
           "TxnOffsetCommit by alice, group without READ")
    expect(txn_offset_commit(a, txn, group, pid, epoch, other_topic, 2), TOPIC_AUTH,
           "TxnOffsetCommit by alice, topic without READ")
    expect(txn_offset_commit(a, txn, group, pid, epoch, topic, 2), NONE, "TxnOffsetCommit by alice")

    d = DescribeTransactionsRequest
    rb = b.call(d, 0, transactional_ids=[txn]).transaction_states
    assert [(x.transactional_id, x.error_code) for x in rb] == [(txn, TXN_AUTH)], rb
    ra = a.call(d, 0, transactional_ids=[txn]).transaction_states
    assert [(x.transactional_id, x.error_code, x.transaction_state) for x in ra] == [(txn, NONE, "Ongoing")], ra
    listed_a = a.call(ListTransactionsRequest, 1, state_filters=[], producer_id_filters=[], duration_filter=-1)
    listed_b = b.call(ListTransactionsRequest, 1, state_filters=[], producer_id_filters=[], duration_filter=-1)
    assert listed_a.error_code == NONE and txn in [x.transactional_id for x in listed_a.transaction_states], listed_a
    assert listed_b.error_code == NONE and listed_b.transaction_states == [], \
        f"ListTransactions shows bob transactions he may not describe: {listed_b.transaction_states}"

    def end(s):
        return s.call(EndTxnRequest, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch,
                      committed=True).error_code
    expect(end(b), TXN_AUTH, "EndTxn by bob")
    expect(end(a), NONE, "EndTxn (commit) by alice")

    def committed():
        code, topics = offset_fetch(a, group, [topic])
        return code == NONE and topics.get(topic, {}).get(0) == (2, NONE)
    wait_until(committed, 10, 0.05, "the transaction's offset commit is not visible to alice")


def test_txn_offset_commit_needs_write_on_the_transactional_id(authz, sess):
    """TxnOffsetCommit needs WRITE on the transactional id before READ on the group and topics:
    neither bob (no ACL) nor carol (READ on the group and topic) may commit offsets into alice's
    transaction (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), and alice's commit then carries only her
    own offset."""
    u = uid()
    txn, topic, group = f"toc-{u}", f"toc-t-{u}", f"toc-g-{u}"
    make_topics(authz, topic, records=0)
    grant(authz, Acl("alice", TXN, txn, WRITE), Acl("alice", TOPIC, topic, READ), Acl("alice", GROUP, group, READ),
          Acl("carol", TOPIC, topic, READ), Acl("carol", GROUP, group, READ))
    a = sess("alice")
    wait_until(lambda: find_coordinator(a, txn, 1) == NONE, 15, 0.05, "transaction coordinator not available")
    code, pid, epoch = init_pid(a, txn)
    expect(code, NONE, "InitProducerId by alice")
    expect(a.call(AddOffsetsToTxnRequest, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch,
                  group_id=group).error_code, NONE, "AddOffsetsToTxn by alice")
    results = {user: txn_offset_commit(sess(user), txn, group, pid, epoch, topic, 5) for user in ("bob", "carol")}
    expect(txn_offset_commit(a, txn, group, pid, epoch, topic, 1), NONE, "TxnOffsetCommit by alice")
    expect(a.call(EndTxnRequest, 3, transactional_id=txn, producer_id=pid, producer_epoch=epoch,
                  committed=True).error_code, NONE, "EndTxn by alice")
    assert results == {"bob": TXN_AUTH, "carol": TXN_AUTH}, {k: err(v) for k, v in results.items()}
    wait_until(lambda: offset_fetch(a, group, [topic]) == (NONE, {topic: {0: (1, NONE)}}), 10, 0.05,
               lambda: f"committed offsets: {offset_fetch(a, group, [topic])}")


# ================================================================== 1. the matrix: a raw classic group

def subscription(topic) -> bytes:
    b = topic.encode()
    return struct.pack(">hih", 0, 1, len(b)) + b + struct.pack(">i", -1)


def simple_commit(s, group, topic, offset, generation=-1, member=""):
    O = OffsetCommitRequest
    r = s.call(O, 8, group_id=group, generation_id_or_member_epoch=generation, member_id=member,
               group_instance_id=None, topics=[O.OffsetCommitRequestTopic(name=topic, partitions=[
                   O.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                       partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                       committed_metadata="")])])
    return r.topics[0].partitions[0].error_code


def test_raw_classic_group(authz, sess):
    """FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetCommit, OffsetFetch,
    DescribeGroups, LeaveGroup, OffsetDelete, DeleteGroups: bob (no ACL) gets
    GROUP_AUTHORIZATION_FAILED for each; alice (READ on the group and topic) runs the group;
    topics without alice's READ/DESCRIBE get TOPIC_AUTHORIZATION_FAILED or stay hidden;
    OffsetDelete and DeleteGroups need DELETE on the group."""
    u = uid()
    group, topic, hidden = f"grp-{u}", f"grp-t-{u}", f"grp-h-{u}"
    make_topics(authz, topic, hidden)
    admin = sess("admin")
    expect(simple_commit(admin, group, hidden, 1), NONE, "admin commit on the hidden topic")
    grant(authz, Acl("alice", GROUP, group, READ), Acl("alice", TOPIC, topic, READ),
          Acl("carol", GROUP, group, READ))
    a, b = sess("alice"), sess("bob")

    expect(find_coordinator(b, group, 0), GROUP_AUTH, "FindCoordinator(group) by bob")
    expect(find_coordinator(a, group, 0), NONE, "FindCoordinator(group) by alice")

    def join(s, member=""):
        return s.call(JoinGroupRequest, 5, group_id=group, session_timeout_ms=30000, rebalance_timeout_ms=10000,
                      member_id=member, group_instance_id=None, protocol_type="consumer",
                      protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range",
                                                                           metadata=subscription(topic))])
    expect(join(b).error_code, GROUP_AUTH, "JoinGroup by bob")
    j = join(a)
    if j.error_code == MEMBER_ID_REQUIRED:
        j = join(a, j.member_id)
    expect(j.error_code, NONE, "JoinGroup by alice")
    member, gen = j.member_id, j.generation_id

    def sync(s):
        S = SyncGroupRequest
        return s.call(S, 3, group_id=group, generation_id=gen, member_id=member, group_instance_id=None,
                      assignments=[S.SyncGroupRequestAssignment(member_id=member, assignment=b"")]).error_code
    expect(sync(b), GROUP_AUTH, "SyncGroup by bob")
    expect(sync(a), NONE, "SyncGroup by alice")

    def heartbeat(s):
        return s.call(HeartbeatRequest, 3, group_id=group, generation_id=gen, member_id=member,
                      group_instance_id=None).error_code
    expect(heartbeat(b), GROUP_AUTH, "Heartbeat by bob")
    expect(heartbeat(a), NONE, "Heartbeat by alice")

    expect(simple_commit(b, group, topic, 1, gen, member), GROUP_AUTH, "OffsetCommit by bob")
    expect(simple_commit(carol := sess("carol"), group, topic, 1, gen, member), TOPIC_AUTH,
           "OffsetCommit by carol (READ on the group, nothing on the topic)")
    expect(simple_commit(a, group, hidden, 1, gen, member), TOPIC_AUTH, "OffsetCommit by alice, topic without READ")
    expect(simple_commit(a, group, topic, 1, gen, member), NONE, "OffsetCommit by alice")

    expect(offset_fetch(b, group)[0], GROUP_AUTH, "OffsetFetch by bob")
    code, topics = offset_fetch(a, group)
    assert (code, topics) == (NONE, {topic: {0: (1, NONE)}}), \
        f"OffsetFetch (all topics) by alice must show only {topic}: {code} {topics}"
    code, topics = offset_fetch(a, group, [hidden])
    assert (code, topics[hidden][0][1]) == (NONE, TOPIC_AUTH), f"OffsetFetch of {hidden} by alice: {code} {topics}"
    code, topics = offset_fetch(admin, group)
    assert topics == {topic: {0: (1, NONE)}, hidden: {0: (1, NONE)}}, f"the super user sees both: {topics}"
    # The group asked twice, for all topics and for a named one: each entry is judged on its
    # own (the all-topics one still hides the topic alice may not describe).
    O = OffsetFetchRequest
    r = a.call(O, 8, groups=[O.OffsetFetchRequestGroup(group_id=group, topics=None),
                             O.OffsetFetchRequestGroup(group_id=group, topics=[
                                 O.OffsetFetchRequestGroup.OffsetFetchRequestTopics(name=topic, partition_indexes=[0])])],
               require_stable=False)
    shown = [sorted(t.name for t in g.topics) for g in r.groups]
    assert shown == [[topic], [topic]], f"OffsetFetch of the group twice by alice: {shown}"

    def describe(s):
        [g] = s.call(DescribeGroupsRequest, 5, groups=[group], include_authorized_operations=True).groups
        return g
    gb = describe(b)
    assert (gb.error_code, gb.members) == (GROUP_AUTH, []), gb
    ga = describe(a)
    assert (ga.error_code, ga.group_state, [m.member_id for m in ga.members]) == (NONE, "Stable", [member]), ga
    assert ga.authorized_operations == {READ, DESCRIBE}, \
        f"alice's authorized operations on the group: {ga.authorized_operations}"

    def leave(s):
        L = LeaveGroupRequest
        return s.call(L, 3, group_id=group, members=[L.MemberIdentity(member_id=member,
                                                                      group_instance_id=None)]).error_code
    expect(leave(b), GROUP_AUTH, "LeaveGroup by bob")
    expect(leave(a), NONE, "LeaveGroup by alice")

    def offset_delete(s, t):
        O = OffsetDeleteRequest
        r = s.call(O, 0, group_id=group, topics=[O.OffsetDeleteRequestTopic(name=t, partitions=[
            O.OffsetDeleteRequestTopic.OffsetDeleteRequestPartition(partition_index=0)])])
        return r.error_code, [p.error_code for x in r.topics for p in x.partitions]
    assert offset_delete(b, topic)[0] == GROUP_AUTH, "OffsetDelete by bob"
    assert offset_delete(a, topic)[0] == GROUP_AUTH, "OffsetDelete by alice without DELETE on the group"
    grant(authz, Acl("alice", GROUP, group, DELETE))
    assert offset_delete(a, hidden) == (NONE, [TOPIC_AUTH]), "OffsetDelete by alice, topic without READ"
    assert offset_delete(a, topic) == (NONE, [NONE]), "OffsetDelete by alice"

    def delete_group(s):
        return s.call(DeleteGroupsRequest, 2, groups_names=[group]).results[0].error_code
    expect(delete_group(b), GROUP_AUTH, "DeleteGroups by bob")
    expect(delete_group(carol), GROUP_AUTH, "DeleteGroups by carol (READ only)")
    expect(delete_group(a), NONE, "DeleteGroups by alice (DELETE)")


# ================================================================== 1. the matrix: KIP-848 group

def cg_heartbeat(s, group, topics, member="", epoch=0):
    body = (compact_str(group) + compact_str(member) + struct.pack(">i", epoch) + b"\x00" + b"\x00"
            + struct.pack(">i", 30000))
    body += b"\x00" if topics is None else uvarint(len(topics) + 1) + b"".join(compact_str(t) for t in topics)
    body += b"\x00"                                  # server assignor: null
    body += uvarint(1) if epoch == 0 else b"\x00"    # topic partitions: [] on join, null after
    body += b"\x00"                                  # tags
    r = s.call_flex(68, 0, body)
    r.take(">i")
    code = r.take(">h")
    msg_len = r.uvarint() - 1                        # error message (nullable)
    r.i += max(msg_len, 0)
    n = r.uvarint() - 1
    member_id = r.b[r.i:r.i + n].decode() if n >= 0 else None
    r.i += max(n, 0)
    return code, member_id, r.take(">i")


def cg_describe(s, group):
    r = s.call_flex(69, 0, uvarint(2) + compact_str(group) + b"\x00" + b"\x00")
    r.take(">i")
    assert r.array_len() == 1
    return r.take(">h")


def test_consumer_group_heartbeat_and_describe(authz, sess):
    """KIP-848: ConsumerGroupHeartbeat needs READ on the group (else GROUP_AUTHORIZATION_FAILED)
    and DESCRIBE on every subscribed topic (else TOPIC_AUTHORIZATION_FAILED); ConsumerGroupDescribe
    needs DESCRIBE on the group."""
    u = uid()
    group, topic = f"cg-{u}", f"cg-t-{u}"
    make_topics(authz, topic)
    grant(authz, Acl("alice", GROUP, group, READ))
    a, b = sess("alice"), sess("bob")
    expect(cg_heartbeat(b, group, [topic])[0], GROUP_AUTH, "ConsumerGroupHeartbeat by bob")
    expect(cg_heartbeat(a, group, [topic])[0], TOPIC_AUTH,
           "ConsumerGroupHeartbeat by alice subscribing to a topic without DESCRIBE")
    grant(authz, Acl("alice", TOPIC, topic, DESCRIBE))
    code, member, epoch = cg_heartbeat(a, group, [topic])
    expect(code, NONE, "ConsumerGroupHeartbeat by alice")
    assert member and epoch > 0, (member, epoch)
    expect(cg_describe(b, group), GROUP_AUTH, "ConsumerGroupDescribe by bob")
    expect(cg_describe(a, group), NONE, "ConsumerGroupDescribe by alice")
    expect(cg_heartbeat(a, group, None, member, -1)[0], NONE, "ConsumerGroupHeartbeat leave by alice")


def cg_heartbeat_regex(s, group, regex, member="", epoch=0):
    """ConsumerGroupHeartbeat v1 subscribing with `regex`; (error, member id, epoch, assigned
    topic ids)."""
    body = (compact_str(group) + compact_str(member) + struct.pack(">i", epoch) + b"\x00" + b"\x00"
            + struct.pack(">i", 30000))
    body += b"\x00"                                          # subscribed topic names: null
    body += compact_str(regex) if epoch == 0 else b"\x00"    # the regex, null when unchanged
    body += b"\x00"                                          # server assignor: null
    body += uvarint(1) if epoch == 0 else b"\x00"            # topic partitions
    body += b"\x00"
    r = s.call_flex(68, 1, body)
    r.take(">i")
    code = r.take(">h")
    msg_len = r.uvarint() - 1
    r.i += max(msg_len, 0)
    n = r.uvarint() - 1
    member_id = r.b[r.i:r.i + n].decode() if n >= 0 else None
    r.i += max(n, 0)
    member_epoch = r.take(">i")
    r.take(">i")                                             # heartbeat interval
    topics = None
    if r.take(">b") == 1:                                    # the assignment (nullable struct)
        topics = set()
        for _ in range(r.uvarint() - 1):
            topics.add(uuid.UUID(bytes=bytes(r.b[r.i:r.i + 16])))
            r.i += 16
            for _ in range(r.uvarint() - 1):
                r.take(">i")
            r.uvarint()                                      # tags
    return code, member_id, member_epoch, topics


def cg_describe_full(s, group):
    r = s.call_flex(69, 0, uvarint(2) + compact_str(group) + b"\x00" + b"\x00")
    r.take(">i")
    assert r.array_len() == 1
    code = r.take(">h")
    n = r.uvarint() - 1
    message = r.b[r.i:r.i + n].decode() if n >= 0 else None
    return code, message


def test_regex_subscriptions_and_describe_hide_undescribable_topics(authz, sess):
    """KAFKA-18813 (Kafka 4.0): a KIP-848 regex resolves to the topics the heartbeating member may
    DESCRIBE, and ConsumerGroupDescribe answers TOPIC_AUTHORIZATION_FAILED for a group that uses
    a topic the describing client may not DESCRIBE."""
    u = uid()
    group, seen, hidden = f"rx-{u}", f"rx-{u}-seen", f"rx-{u}-hidden"
    make_topics(authz, seen, hidden)
    grant(authz, Acl("alice", GROUP, group, READ), Acl("alice", TOPIC, seen, READ),
          Acl("carol", GROUP, group, DESCRIBE))
    admin, a, c = sess("admin"), sess("alice"), sess("carol")
    ids = {t.name: t.topic_id for t in metadata(admin, [seen, hidden]).topics}
    # v1 (KIP-1082): the client names its member id when it joins.
    code, member, epoch, topics = cg_heartbeat_regex(a, group, f"rx-{u}-.*", member=uuid.uuid4().hex)
    expect(code, NONE, "ConsumerGroupHeartbeat v1 with a regex by alice")

    def assigned():
        nonlocal epoch, topics
        if topics:
            return topics
        c2, _, epoch, topics = cg_heartbeat_regex(a, group, "", member, epoch)
        expect(c2, NONE, "ConsumerGroupHeartbeat by alice")
        return topics
    wait_until(assigned, 15, 0.1, "alice's regex subscription got no assignment")
    assert topics == {ids[seen]}, f"the regex resolved to {topics}; only {seen} ({ids[seen]}) may be described " \
                                  f"by alice ({hidden} is {ids[hidden]})"
    expect(cg_describe_full(a, group)[0], NONE, "ConsumerGroupDescribe by alice")
    code, message = cg_describe_full(c, group)
    expect(code, TOPIC_AUTH, "ConsumerGroupDescribe by carol, who may not describe the group's topic")
    assert message, "TOPIC_AUTHORIZATION_FAILED without a message"
    expect(cg_heartbeat(a, group, None, member, -1)[0], NONE, "ConsumerGroupHeartbeat leave by alice")


# ================================================================== 1. real clients (confluent-kafka)

def ck(broker, user, **conf):
    c = {"bootstrap.servers": broker.sasl, "logger": RDKAFKA_LOGGER, "security.protocol": "SASL_PLAINTEXT",
         "sasl.mechanisms": "PLAIN", "sasl.username": user, "sasl.password": USERS[user],
         "socket.timeout.ms": 10000}
    c.update(conf)
    return c


N = 20


def ck_produce(broker, user, topic, n=N, **conf):
    """Produces n records as `user`; returns the delivery error codes (None for delivered)."""
    from confluent_kafka import Producer
    p = Producer(ck(broker, user, **{"linger.ms": 5, "message.timeout.ms": 15000, **conf}))
    results = []
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"authz-{i}".encode(),
                  on_delivery=lambda e, m: results.append(e.code() if e else None))
    p.flush(30)
    assert len(results) == n, f"{len(results)} of {n} delivery reports"
    return results


def test_ck_produce_and_group_consume(authz):
    """confluent-kafka: alice (WRITE) produces; bob's records fail with TOPIC_AUTHORIZATION_FAILED;
    alice (READ topic + READ group) consumes every record in a group and commits; erin (READ
    topic, nothing on the group) gets GROUP_AUTHORIZATION_FAILED; frank (READ group, nothing on
    the topic) gets TOPIC_AUTHORIZATION_FAILED."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    u = uid()
    topic, group = f"ck-{u}", f"ck-g-{u}"
    make_topics(authz, topic, records=0)
    grant(authz, Acl("alice", TOPIC, topic, WRITE), Acl("alice", TOPIC, topic, READ),
          Acl("alice", GROUP, group, READ), Acl("erin", TOPIC, topic, READ), Acl("frank", GROUP, group, READ))
    assert ck_produce(authz, "alice", topic) == [None] * N
    assert set(ck_produce(authz, "bob", topic, n=3)) == {KafkaError.TOPIC_AUTHORIZATION_FAILED}

    def consume(user, want=None, timeout=20):
        c = Consumer(ck(authz, user, **{"group.id": group, "auto.offset.reset": "earliest",
                                        "enable.auto.commit": False, "fetch.wait.max.ms": 100,
                                        "session.timeout.ms": 6000}))
        got, errors = [], []
        try:
            c.subscribe([topic])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(got) < N and not (want and want in errors):
                try:
                    for m in c.consume(100, 0.2):
                        if m.error():
                            errors.append(m.error().code())
                        else:
                            got.append(m.value())
                except KafkaException as e:
                    errors.append(e.args[0].code())
            if len(got) == N:
                c.commit(asynchronous=False)
                [tp] = c.committed([TopicPartition(topic, 0)], timeout=10)
                assert tp.offset == N, tp
        finally:
            c.close()
        return got, errors

    got, errors = consume("alice")
    assert sorted(got) == sorted(f"authz-{i}".encode() for i in range(N)), (len(got), errors)
    _, errors = consume("erin", KafkaError.GROUP_AUTHORIZATION_FAILED)
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in errors, errors
    got, errors = consume("frank", KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert got == [] and KafkaError.TOPIC_AUTHORIZATION_FAILED in errors, (got, errors)


def test_ck_transactional_producer(authz):
    """A librdkafka transactional producer with WRITE on its transactional id and WRITE on the
    topic commits; read_committed sees the records. Without WRITE on the transactional id
    init_transactions fails with TRANSACTIONAL_ID_AUTHORIZATION_FAILED; an idempotent producer
    with IDEMPOTENT_WRITE on the cluster (cidem, no topic ACL) gets its producer id but its records
    fail with TOPIC_AUTHORIZATION_FAILED."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    u = uid()
    topic, txn = f"cktx-{u}", f"cktx-id-{u}"
    make_topics(authz, topic, records=0)
    grant(authz, Acl("alice", TXN, txn, WRITE), Acl("alice", TOPIC, topic, WRITE))
    p = Producer(ck(authz, "alice", **{"transactional.id": txn, "linger.ms": 5}))
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(N):
        p.produce(topic, value=f"authz-{i}".encode(), partition=0)
    p.commit_transaction(20)

    c = Consumer(ck(authz, "admin", **{"group.id": "unused", "isolation.level": "read_committed",
                                       "auto.offset.reset": "earliest", "enable.partition.eof": True}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got, deadline = [], time.monotonic() + 20
        while len(got) < N and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(100, 0.2) if not m.error()]
    finally:
        c.close()
    assert got == [f"authz-{i}".encode() for i in range(N)], got[:3]

    bp = Producer(ck(authz, "bob", **{"transactional.id": txn}))
    with pytest.raises(KafkaException) as ei:
        bp.init_transactions(20)
    assert ei.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, ei.value

    assert set(ck_produce(authz, "cidem", topic, n=3, **{"enable.idempotence": True})) == {
        KafkaError.TOPIC_AUTHORIZATION_FAILED}


def test_ck_admin_topics_and_configs(authz):
    """confluent-kafka AdminClient: create (CREATE) and delete (DELETE) topics, describe
    (DESCRIBE_CONFIGS) and incrementally alter (ALTER_CONFIGS) their configs as alice; bob gets
    TOPIC_AUTHORIZATION_FAILED for each."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
    u = uid()
    topic = f"adm-{u}"
    grant(authz, Acl("alice", TOPIC, topic, CREATE), Acl("alice", TOPIC, topic, DELETE),
          Acl("alice", TOPIC, topic, DESCRIBE_CONFIGS), Acl("alice", TOPIC, topic, ALTER_CONFIGS))
    alice, bob = AdminClient(ck(authz, "alice")), AdminClient(ck(authz, "bob"))

    def code(fut):
        with pytest.raises(KafkaException) as ei:
            fut.result(20)
        return ei.value.args[0].code()

    new = [NewTopic(topic, num_partitions=1, replication_factor=1)]
    assert code(bob.create_topics(new, request_timeout=20)[topic]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    alice.create_topics(new, request_timeout=20)[topic].result(20)

    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert code(bob.describe_configs([res])[res]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    configs = alice.describe_configs([res])[res].result(20)
    assert "retention.ms" in configs, sorted(configs)[:10]

    alter = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "123456789", incremental_operation=AlterConfigOpType.SET)])
    assert code(bob.incremental_alter_configs([alter])[alter]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    alice.incremental_alter_configs([alter])[alter].result(20)
    assert alice.describe_configs([res])[res].result(20)["retention.ms"].value == "123456789"

    assert code(bob.delete_topics([topic], request_timeout=20)[topic]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    alice.delete_topics([topic], request_timeout=20)[topic].result(20)


# ================================================================== 2. no data leaks

def test_no_leaks_metadata(authz, sess):
    """Metadata for all topics lists exactly the topics the principal may describe, with their
    authorized operations; a named topic without DESCRIBE gets TOPIC_AUTHORIZATION_FAILED whether
    it exists or not (and no topic id); DescribeTopicPartitions likewise; User:ANONYMOUS on the
    PLAINTEXT listener sees none of them; auto-creation needs CREATE besides DESCRIBE."""
    u = uid()
    da, db, dc = f"leak-a-{u}", f"leak-b-{u}", f"leak-c-{u}"
    make_topics(authz, da, db, dc)
    grant(authz, Acl("dave", TOPIC, da, DESCRIBE), Acl("dave", TOPIC, db, READ))
    d = sess("dave")
    md = metadata(d, ops=True)
    assert sorted(t.name for t in md.topics) == sorted([da, db]), \
        f"dave's all-topics Metadata: {sorted(t.name for t in md.topics)}"
    ops = {t.name: t.authorized_operations for t in md.topics}
    assert ops == {da: {DESCRIBE}, db: {READ, DESCRIBE}}, ops
    missing = f"leak-missing-{u}"
    by_name = {t.name: t for t in metadata(d, [dc, missing]).topics}
    for name in (dc, missing):
        t = by_name[name]
        # (kafka-python decodes the zero topic id Kafka sends here as None)
        assert (t.error_code, t.partitions, t.topic_id in (None, uuid.UUID(int=0))) == (
            TOPIC_AUTH, [], True), f"Metadata for {name}: {t}"
    expect(describe_topic_partitions(d, dc), TOPIC_AUTH, "DescribeTopicPartitions for a topic without DESCRIBE")
    expect(describe_topic_partitions(d, missing), TOPIC_AUTH, "DescribeTopicPartitions for a missing topic")

    from e2e_util import _request, Reader  # noqa: PLC0415 - PLAINTEXT (User:ANONYMOUS) all-topics Metadata v1
    with socket.create_connection(("127.0.0.1", authz.port), timeout=10) as s:
        s.settimeout(10)
        r = Reader(_request(s, 3, 1, 7, struct.pack(">i", -1)))
        for _ in range(r.take(">i")):
            r.take(">i"), r.string(), r.take(">i"), r.string()
        r.take(">i")  # controller id
        anonymous = []
        for _ in range(r.take(">i")):
            r.take(">h")
            anonymous.append(r.string())
            r.take(">b")
            for _ in range(r.take(">i")):
                r.take(">hii")
                for _ in range(2):  # replicas, isr
                    n = r.take(">i")
                    r.i += 4 * n
    assert not {da, db, dc} & set(anonymous), f"User:ANONYMOUS sees {anonymous}"

    auto = f"leak-auto-{u}"
    grant(authz, Acl("dave", TOPIC, auto, DESCRIBE))
    [t] = metadata(d, [auto], auto=True).topics
    assert t.error_code != NONE, f"auto-creating Metadata with DESCRIBE but not CREATE: {t}"
    # (the exact code: test_auto_create_without_create_acl_code)
    [t] = metadata(sess("admin"), [auto]).topics
    expect(t.error_code, 3, f"{auto} after an auto-creating Metadata without CREATE (must not exist)")
    grant(authz, Acl("dave", TOPIC, auto, CREATE))
    [t] = metadata(d, [auto], auto=True).topics
    assert t.error_code in (NONE, 5), f"auto-creating Metadata with DESCRIBE + CREATE: {err(t.error_code)}"
    wait_until(lambda: metadata_named(d, auto) == NONE, 10, 0.05, f"{auto} not auto-created with DESCRIBE + CREATE")


def test_auto_create_without_create_acl_code(authz, sess):
    """Auto-creation refused for want of CREATE is TOPIC_AUTHORIZATION_FAILED, as Kafka."""
    auto = f"auto-code-{uid()}"
    grant(authz, Acl("dave", TOPIC, auto, DESCRIBE))
    [t] = metadata(sess("dave"), [auto], auto=True).topics
    expect(t.error_code, TOPIC_AUTH, "auto-creating Metadata with DESCRIBE but not CREATE")


def test_no_leaks_groups_and_offsets(authz, sess):
    """ListGroups lists every group with DESCRIBE on the cluster, otherwise only the groups with
    DESCRIBE; OffsetFetch of all topics hides topics without DESCRIBE and names them
    TOPIC_AUTHORIZATION_FAILED when asked; DescribeAcls by a non-admin is refused with nothing
    listed."""
    u = uid()
    ga, gb, ta, tc = f"lg-a-{u}", f"lg-b-{u}", f"lg-ta-{u}", f"lg-tc-{u}"
    make_topics(authz, ta, tc)
    admin = sess("admin")
    for g in (ga, gb):
        for t in (ta, tc):
            expect(simple_commit(admin, g, t, 1), NONE, f"admin commit {g}/{t}")
    grant(authz, Acl("dave", GROUP, ga, DESCRIBE), Acl("dave", TOPIC, ta, DESCRIBE))
    d = sess("dave")

    def listed(s):
        r = s.call(ListGroupsRequest, 4, states_filter=[])
        assert r.error_code == NONE, r
        return {g.group_id for g in r.groups}
    assert listed(d) == {ga}, f"dave's ListGroups: {listed(d)}"
    assert listed(sess("bob")) == set(), "bob's ListGroups"
    assert {ga, gb} <= listed(sess("cdescribe")), "ListGroups with DESCRIBE on the cluster"

    code, topics = offset_fetch(d, ga)
    assert (code, topics) == (NONE, {ta: {0: (1, NONE)}}), f"dave's all-topics OffsetFetch: {code} {topics}"
    code, topics = offset_fetch(d, ga, [tc])
    assert (code, topics[tc][0]) == (NONE, (-1, TOPIC_AUTH)), f"dave's OffsetFetch of {tc}: {topics}"
    expect(offset_fetch(d, gb)[0], GROUP_AUTH, "OffsetFetch of a group without DESCRIBE")

    r = d.call(DescribeAclsRequest, 3, resource_type_filter=ANY_RESOURCE, resource_name_filter=None,
               pattern_type_filter=ANY_PATTERN, principal_filter=None, host_filter=None, operation=ANY_OP,
               permission_type=ANY_PERM)
    assert (r.error_code, r.resources) == (CLUSTER_AUTH, []), r


# ================================================================== 3. semantics

def test_deny_overrides_allow(authz, sess):
    """wild: ALLOW ALL on every topic (LITERAL `*`) and DENY WRITE on one topic: that topic is
    readable but not writable, others are writable. ivan: ALLOW READ on a topic and DENY READ on
    `*`: refused."""
    u = uid()
    denied, open_, ivans = f"deny-{u}", f"deny-open-{u}", f"deny-ivan-{u}"
    make_topics(authz, denied, open_, ivans)
    grant(authz, Acl("wild", TOPIC, "*", ALL), Acl("wild", TOPIC, denied, WRITE, DENY),
          Acl("ivan", TOPIC, ivans, READ), Acl("ivan", TOPIC, "*", READ, DENY))
    w = sess("wild")
    expect(produce(w, denied), TOPIC_AUTH, "Produce by wild to the DENY WRITE topic")
    expect(fetch(w, denied), NONE, "Fetch by wild from the DENY WRITE topic")
    expect(produce(w, open_), NONE, "Produce by wild to another topic")
    assert {denied, open_} <= {t.name for t in metadata(w).topics}
    expect(fetch(sess("ivan"), ivans), TOPIC_AUTH, "Fetch by ivan: ALLOW READ on the topic, DENY READ on *")


def test_prefixed_acls(authz, sess):
    """PREFIXED `<u>orders-`: matches `<u>orders-eu` but not `<u>order`, `<u>orders` or
    `x<u>orders-eu`; a DENY on the longer prefix `<u>orders-eu-` wins for `<u>orders-eu-west`
    only."""
    u = uid()
    prefix = f"{u}orders-"
    names = {"match": f"{u}orders-eu", "short": f"{u}order", "nodash": f"{u}orders", "inner": f"x{u}orders-eu",
             "deny": f"{u}orders-eu-west"}
    make_topics(authz, *names.values())
    grant(authz, Acl("paul", TOPIC, prefix, WRITE, pattern=PREFIXED),
          Acl("paul", TOPIC, f"{u}orders-eu-", WRITE, DENY, pattern=PREFIXED))
    p = sess("paul")
    got = {k: produce(p, t) for k, t in names.items()}
    assert got == {"match": NONE, "short": TOPIC_AUTH, "nodash": TOPIC_AUTH, "inner": TOPIC_AUTH,
                   "deny": TOPIC_AUTH}, {k: err(v) for k, v in got.items()}
    # DENY WRITE does not deny DESCRIBE (only ALLOWs imply it): orders-eu-west stays listed
    assert sorted(t.name for t in metadata(p).topics) == sorted([names["match"], names["deny"]]), \
        "paul's all-topics Metadata"


def test_user_wildcard(authz, sess):
    """`User:*` ALLOW READ on a topic lets every principal read it (and no other topic); a DENY
    for User:bob still wins for bob."""
    u = uid()
    topic, other = f"wild-user-{u}", f"wild-user-o-{u}"
    make_topics(authz, topic, other)
    everyone = Acl("User:*", TOPIC, topic, READ)
    bob_deny = Acl("bob", TOPIC, topic, READ, DENY)
    grant(authz, everyone)
    try:
        for user in ("bob", "nobody"):
            expect(fetch(sess(user), topic), NONE, f"Fetch by {user} with User:* READ")
            expect(fetch(sess(user), other), TOPIC_AUTH, f"Fetch by {user} of a topic User:* does not cover")
        grant(authz, bob_deny)
        expect(fetch(sess("bob"), topic), TOPIC_AUTH, "Fetch by bob: User:* ALLOW, User:bob DENY")
        expect(fetch(sess("nobody"), topic), NONE, "Fetch by nobody: User:* ALLOW")
    finally:
        revoke(authz, *[a for a in (everyone, bob_deny) if described(authz, a)])


def test_host_acls(authz, sess):
    """Hosts: DENY from 127.0.0.1 beats ALLOW from `*`; a DENY for another host does not apply;
    an ALLOW for another host does not allow; an ALLOW for 127.0.0.1 does."""
    u = uid()
    t = {k: f"host-{k}-{u}" for k in ("deny-local", "deny-other", "allow-other", "allow-local")}
    make_topics(authz, *t.values())
    grant(authz, Acl("frank", TOPIC, t["deny-local"], READ), Acl("frank", TOPIC, t["deny-local"], READ, DENY,
                                                                   host="127.0.0.1"),
          Acl("frank", TOPIC, t["deny-other"], READ), Acl("frank", TOPIC, t["deny-other"], READ, DENY,
                                                          host="10.9.8.7"),
          Acl("frank", TOPIC, t["allow-other"], READ, host="10.9.8.7"),
          Acl("frank", TOPIC, t["allow-local"], READ, host="127.0.0.1"))
    f = sess("frank")
    got = {k: fetch(f, name) for k, name in t.items()}
    assert got == {"deny-local": TOPIC_AUTH, "deny-other": NONE, "allow-other": TOPIC_AUTH, "allow-local": NONE}, \
        {k: err(v) for k, v in got.items()}


# ================================================================== 4. ACL lifecycle (confluent-kafka admin)

def test_acl_lifecycle_and_restart(authz, sess):
    """create_acls, describe_acls with LITERAL / PREFIXED / MATCH / ANY filters, delete_acls with a
    filter (returns the deleted binding), the revoked principal refused at once (polled), and the
    remaining ACLs (and the deletion) kept across a restart."""
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)
    u = uid()
    prefix = f"lc-{u}-"
    topic, group = f"{prefix}events", f"lc-g-{u}"
    make_topics(authz, topic)
    P = "User:gina"
    ALLOW_ = AclPermissionType.ALLOW
    b_read = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, P, "*", AclOperation.READ, ALLOW_)
    b_write = AclBinding(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, P, "*", AclOperation.WRITE,
                         ALLOW_)
    b_group = AclBinding(ResourceType.GROUP, group, ResourcePatternType.LITERAL, P, "*", AclOperation.DESCRIBE,
                         ALLOW_)
    b_other = AclBinding(ResourceType.TOPIC, f"lc-other-{u}-", ResourcePatternType.PREFIXED, P, "*",
                         AclOperation.READ, ALLOW_)
    everything = {b_read, b_write, b_group, b_other}

    def admin():
        return AdminClient(ck(authz, "admin"))
    a = admin()
    for b, f in a.create_acls(list(everything), request_timeout=20).items():
        assert f.result(20) is None, b

    def describe(restype, name, pattern, principal=P):
        flt = AclBindingFilter(restype, name, pattern, principal, None, AclOperation.ANY, AclPermissionType.ANY)
        return set(a.describe_acls(flt, request_timeout=20).result(20))
    assert describe(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL) == {b_read}
    assert describe(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED) == {b_write}
    assert describe(ResourceType.TOPIC, topic, ResourcePatternType.MATCH) == {b_read, b_write}
    assert describe(ResourceType.ANY, None, ResourcePatternType.ANY) == everything
    assert describe(ResourceType.ANY, None, ResourcePatternType.ANY, principal="User:bob") == set()

    g = sess("gina")
    expect(fetch(g, topic), NONE, "Fetch by gina (LITERAL READ)")
    expect(produce(g, topic), NONE, "Produce by gina (PREFIXED WRITE)")

    flt = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, P, None, AclOperation.READ,
                           AclPermissionType.ALLOW)
    [deleted] = a.delete_acls([flt], request_timeout=20).values()
    assert deleted.result(20) == [b_read]
    t0 = time.monotonic()
    wait_until(lambda: fetch(g, topic) == TOPIC_AUTH, 5, 0.01, "gina can still Fetch after delete_acls")
    revoked_after = time.monotonic() - t0
    assert revoked_after < 2, f"the revocation took {revoked_after:.2f}s to apply"
    assert describe(ResourceType.ANY, None, ResourcePatternType.ANY) == everything - {b_read}

    authz.restart()
    a = admin()
    assert describe(ResourceType.ANY, None, ResourcePatternType.ANY) == everything - {b_read}
    g = sess("gina")
    expect(fetch(g, topic), TOPIC_AUTH, "Fetch by gina after the restart (READ deleted)")
    expect(produce(g, topic), NONE, "Produce by gina after the restart (PREFIXED WRITE kept)")
    expect(c_describe_log_dirs(sess("cdescribe"), topic), NONE, "cluster ACLs kept across the restart")


# ================================================================== 5. Java kafka-clients

@pytest.fixture(scope="module")
def java_authz(tmp_path_factory):
    return java_program("3", E2E_DIR / "java" / "StrataAuthz.java", tmp_path_factory.mktemp("java-authz"))


@pytest.mark.java
def test_java_group_consumer(authz, java_authz):
    """kafka-clients 3.9.1 group consumers over SASL_PLAINTEXT: jane (READ topic + READ group)
    reads every record and commits; jim (READ topic, nothing on the group) gets
    GroupAuthorizationException; joe (READ group, nothing on the topic) gets
    TopicAuthorizationException."""
    u = uid()
    topic = f"java-{u}"
    groups = {"jane": f"java-g-{u}", "jim": f"java-gjim-{u}", "joe": f"java-gjoe-{u}"}
    make_topics(authz, topic, records=0)
    grant(authz, Acl("jane", TOPIC, topic, READ), Acl("jane", GROUP, groups["jane"], READ),
          Acl("jim", TOPIC, topic, READ), Acl("joe", GROUP, groups["joe"], READ))
    assert ck_produce(authz, "admin", topic) == [None] * N
    cmd = java_authz + [authz.sasl, topic, str(N)] + [f"{u}:{USERS[u]}:{g}" for u, g in groups.items()]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java hung; stderr:\n{(e.stderr or '')[-4000:]}")
    results = {x["user"]: x for x in (json.loads(l[7:]) for l in r.stdout.splitlines() if l.startswith("RESULT "))}
    assert r.returncode == 0 and len(results) == 3, f"java exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (results["jane"]["consumed"], results["jane"]["committed"], results["jane"]["errors"]) == (N, True, []), \
        results["jane"]
    assert results["jim"]["consumed"] == 0 and \
        "org.apache.kafka.common.errors.GroupAuthorizationException" in results["jim"]["errors"], results["jim"]
    assert results["joe"]["consumed"] == 0 and \
        "org.apache.kafka.common.errors.TopicAuthorizationException" in results["joe"]["errors"], results["joe"]


# ================================================================== 6. no authorizer

def test_acl_apis_without_authorizer(broker_factory, closer):
    """Without authorizer.class.name the ACL APIs answer SECURITY_DISABLED (54): CreateAcls per
    creation, DeleteAcls per filter, DescribeAcls at the top."""
    b = broker_factory()

    class Plain(Session):
        def __init__(self, broker):
            self.user = "anonymous"
            self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            self.sock.settimeout(10)
            self.corr = 0

    s = closer(Plain(b))
    a = Acl("alice", TOPIC, "t", READ)
    r = s.call(CreateAclsRequest, 3, creations=[CreateAclsRequest.AclCreation(resource_pattern_type=LITERAL,
                                                                              **a.fields())])
    assert [x.error_code for x in r.results] == [SECURITY_DISABLED], r
    r = s.call(DeleteAclsRequest, 3, filters=[_acl_filter(a)])
    assert [x.error_code for x in r.filter_results] == [SECURITY_DISABLED], r
    r = s.call(DescribeAclsRequest, 3, resource_type_filter=ANY_RESOURCE, resource_name_filter=None,
               pattern_type_filter=ANY_PATTERN, principal_filter=None, host_filter=None, operation=ANY_OP,
               permission_type=ANY_PERM)
    assert r.error_code == SECURITY_DISABLED, r
