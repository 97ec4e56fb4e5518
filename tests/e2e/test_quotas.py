"""Client quotas (KIP-13 byte rates, KIP-55 user quotas, KIP-124 request percentage, KIP-219
throttling, KIP-546 quota admin APIs) against what Apache Kafka does.

Admin APIs (Kafka's ClientQuotaControlManager / ClientQuotasImage):
1. raw DescribeClientQuotas / AlterClientQuotas (kafka-python's protocol classes, v0 and v1):
   quotas on (user, client-id), user, default user, client-id, default client-id and an ip;
   every filter kind (exact, default, specified = any name of the type, the default included,
   strict or not) answers exactly the matching entities; removing a key, removing every key (the entity disappears), validate_only; each
   INVALID_REQUEST case (42, with a message, nothing changed); UNSUPPORTED_VERSION (35) for an
   unknown entity type in a filter; everything still described after a restart; a successful
   alteration's error_message is null, as Kafka's;
2. kafka-clients 3.9.1 `Admin.alterClientQuotas` / `describeClientQuotas` (java/StrataQuotas.java)
   and its InvalidRequestException;
7. authorization with StandardAuthorizer: DESCRIBE_CONFIGS / ALTER_CONFIGS on the cluster, else
   CLUSTER_AUTHORIZATION_FAILED (31) (Describe: the top-level error; Alter: every entry).

Enforcement (Kafka's ClientQuotaManager: a Rate over quota.window.num=11 windows of 1 s, the
first ten seconds counted as ten; throttle = (rate - quota) / quota * window; the response says
so in throttle_time_ms and the broker reads nothing more from the connection until then):
3. a confluent-kafka producer over producer_byte_rate=100 KiB/s is held to within 10% of it
   over a minute (with quota.window.num=2: see the test), and librdkafka's statistics show the
   throttle times; a producer with another
   client id is not held back (the issue's requirement);
4. consumer_byte_rate: a consumer reads about quota x 10 s and not the whole topic in 6 s, an
   unthrottled one reads it all; a fetch over the quota is answered without partitions and with
   throttle_time_ms > 0;
5. request_percentage: the client's requests get throttle_time_ms > 0 and the connection is
   really muted for that long; another client id never is;
6. user quotas over SASL_PLAINTEXT (PLAIN): a quota of user alice throttles alice and not bob;
   the default-user quota applies to a user without a quota of its own, not to one that has one;
8. replication is never throttled: with 1 KiB/s consumer quotas on the default user and the
   default client-id of a three-node cluster, acks=all writes of 2 MB to a topic of replication
   factor 3 (min.insync.replicas=3) are acknowledged at once and the ISR stays full, while a
   client's fetch from the same leader is throttled.
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import uuid

import pytest
from kafka.protocol.admin.acl import CreateAclsRequest, DescribeAclsRequest
from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest, DescribeClientQuotasRequest
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from e2e_util import E2E_DIR, ck_conf, ck_consumer, ck_create_topic, ck_producer, free_port, java_program, recv_exact, \
    wait_until
from security_util import PLAIN_MODULE, listener_sets

NONE = 0
CLUSTER_AUTH = 31
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42

MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2
DEFAULT = None  # a null entity name is the default entity

# ACL enums (org.apache.kafka.common.{resource,acl})
CLUSTER, LITERAL, ALLOW = 4, 3, 3
DESCRIBE_CONFIGS, ALTER_CONFIGS = 10, 11

A = AlterClientQuotasRequest
D = DescribeClientQuotasRequest


# ================================================================== raw connections

class Conn:
    """One connection to the broker (PLAINTEXT, or SASL_PLAINTEXT authenticated with PLAIN as
    `user`); requests encoded and decoded by kafka-python's protocol classes."""

    def __init__(self, port: int, client_id: str = "strata-e2e-quotas", user: str | None = None,
                 password: str | None = None, timeout: float = 15.0):
        self.client_id = client_id
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0
        if user is not None:
            hs = self.call(SaslHandshakeRequest, 1, mechanism="PLAIN")
            assert hs.error_code == NONE, hs
            au = self.call(SaslAuthenticateRequest, 1, auth_bytes=f"\x00{user}\x00{password}".encode())
            assert au.error_code == NONE, f"{user}: SaslAuthenticate {au}"

    def send(self, cls, version, **fields):
        self.corr += 1
        req = cls[version](**fields)
        req.with_header(correlation_id=self.corr, client_id=self.client_id)
        self.sock.sendall(req.encode(header=True, framed=True))
        return req

    def recv(self, req):
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        resp = ResponseClassRegistry.get_response_class(req.header).decode(recv_exact(self.sock, size), header=True)
        assert resp.header.correlation_id == req.header.correlation_id
        return resp

    def call(self, cls, version, **fields):
        return self.recv(self.send(cls, version, **fields))

    def close(self):
        self.sock.close()


def ent(user=..., client=..., ip=...) -> tuple:
    """A quota entity as a sorted tuple of (type, name); name None is the default entity."""
    parts = [("user", user), ("client-id", client), ("ip", ip)]
    return tuple(sorted((t, n) for t, n in parts if n is not ...))


def alter(conn: Conn, entries, validate_only=False, version=1) -> dict:
    """entries: [(entity, ops)], ops a dict or a list of (key, value); value None removes the key.
    Returns {entity: [(error_code, error_message), ...]}: Kafka answers per entity (its
    controller's result is a map), so the answer is checked to name exactly the entities sent."""
    E = A.EntryData
    data = []
    for entity, ops in entries:
        ops = list(ops.items()) if isinstance(ops, dict) else list(ops)
        data.append(E(entity=[E.EntityData(entity_type=t, entity_name=n) for t, n in entity],
                      ops=[E.OpData(key=k, value=0.0 if v is None else float(v), remove=v is None)
                           for k, v in ops]))
    r = conn.call(A, version, entries=data, validate_only=validate_only)
    out: dict = {}
    for x in r.entries:
        entity = tuple(sorted((e.entity_type, e.entity_name) for e in x.entity))
        out.setdefault(entity, []).append((x.error_code, x.error_message))
    assert set(out) == {tuple(sorted(e)) for e, _ in entries}, f"answered entities {list(out)} for {entries}"
    return out


def codes(answer: dict) -> list[int]:
    return sorted(c for results in answer.values() for c, _ in results)


def alter_ok(conn: Conn, entries, version=1):
    got = alter(conn, entries, version=version)
    assert codes(got) == [NONE] * len(entries), f"AlterClientQuotas v{version} {entries}: {got}"


def describe_raw(conn: Conn, components=(), strict=False, version=1):
    """components: [(entity_type, match_type, match)]."""
    return conn.call(D, version, components=[D.ComponentData(entity_type=t, match_type=m, match=s)
                                             for t, m, s in components], strict=strict)


def describe(conn: Conn, components=(), strict=False, version=1) -> dict:
    """{entity: {key: value}} of a DescribeClientQuotas that must succeed."""
    r = describe_raw(conn, components, strict, version)
    assert r.error_code == NONE, f"DescribeClientQuotas v{version} {components} strict={strict}: {r}"
    out = {}
    for e in r.entries or []:
        entity = tuple(sorted((x.entity_type, x.entity_name) for x in e.entity))
        assert entity not in out, f"entity {entity} described twice: {r}"
        out[entity] = {v.key: v.value for v in e.values}
    return out


def set_quotas(port: int, entries):
    """AlterClientQuotas (must succeed), then wait until the broker's image describes them."""
    conn = Conn(port)
    try:
        alter_ok(conn, entries)

        def applied():
            now = describe(conn)
            return all(now.get(tuple(e), {}).get(k) == v for e, ops in entries for k, v in ops.items())
        wait_until(applied, 15, 0.05, lambda: f"quotas {entries} not described; got {describe(conn)}")
    finally:
        conn.close()


def batch(n: int, size: int) -> bytes:
    """A record batch of n records with `size`-byte values (incompressible, uncompressed)."""
    import os
    b = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 64 << 20)
    now = int(time.time() * 1000)
    for i in range(n):
        assert b.append(i, now, None, os.urandom(size), []) is not None
    return bytes(b.build())


def produce_throttle(conn: Conn, topic: str, records: bytes) -> int:
    """Produce v8 (acks=1) of one batch to partition 0; asserts success; returns throttle_time_ms."""
    P = ProduceRequest
    r = conn.call(P, 8, transactional_id=None, acks=1, timeout_ms=10000, topic_data=[
        P.TopicProduceData(name=topic, partition_data=[
            P.TopicProduceData.PartitionProduceData(index=0, records=records)])])
    [t] = r.responses
    [p] = t.partition_responses
    assert p.error_code == NONE, r
    return r.throttle_time_ms


def fetch(conn: Conn, topic: str, max_bytes: int = 1 << 20):
    """A sessionless consumer Fetch v12 of partition 0 from offset 0."""
    F = FetchRequest
    return conn.call(F, 12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=max_bytes, isolation_level=0,
                     session_id=0, session_epoch=-1, forgotten_topics_data=[], rack_id="",
                     topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(
                         partition=0, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1,
                         log_start_offset=-1, partition_max_bytes=max_bytes)])])


def uid() -> str:
    return uuid.uuid4().hex[:6]


# ================================================================== 1. admin round trip

E_ALICE_APP = ent(user="alice", client="app")
E_ALICE = ent(user="alice")
E_DEF_USER = ent(user=DEFAULT)
E_APP = ent(client="app")
E_DEF_CLIENT = ent(client=DEFAULT)
E_IP = ent(ip="127.0.0.1")


def test_admin_round_trip_raw(broker):
    conn = Conn(broker.port)
    # v1 for most, v0 for two entries: both versions store the same thing.
    alter_ok(conn, [(E_ALICE_APP, {"producer_byte_rate": 1024, "consumer_byte_rate": 2048}),
                    (E_ALICE, {"request_percentage": 12.5}),
                    (E_DEF_USER, {"producer_byte_rate": 4096}),
                    (E_IP, {"connection_creation_rate": 10})])
    alter_ok(conn, [(E_APP, {"consumer_byte_rate": 8192}),
                    (E_DEF_CLIENT, {"controller_mutation_rate": 3.5})], version=0)
    want = {E_ALICE_APP: {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
            E_ALICE: {"request_percentage": 12.5},
            E_DEF_USER: {"producer_byte_rate": 4096.0},
            E_APP: {"consumer_byte_rate": 8192.0},
            E_DEF_CLIENT: {"controller_mutation_rate": 3.5},
            E_IP: {"connection_creation_rate": 10.0}}
    wait_until(lambda: describe(conn) == want, 10, 0.05, lambda: f"described {describe(conn)}, want {want}")
    assert describe(conn, version=0) == want

    def sub(*entities):
        return {e: want[e] for e in entities}

    U, C, IP = "user", "client-id", "ip"
    cases = [
        # (components, strict, expected entities)
        ([(U, MATCH_EXACT, "alice")], False, sub(E_ALICE_APP, E_ALICE)),
        ([(U, MATCH_EXACT, "alice")], True, sub(E_ALICE)),
        ([(U, MATCH_DEFAULT, None)], False, sub(E_DEF_USER)),
        ([(U, MATCH_DEFAULT, None)], True, sub(E_DEF_USER)),
        # "specified" is any entity with that type, the default one included (ClientQuotasImage)
        ([(U, MATCH_SPECIFIED, None)], False, sub(E_ALICE_APP, E_ALICE, E_DEF_USER)),
        ([(U, MATCH_SPECIFIED, None)], True, sub(E_ALICE, E_DEF_USER)),
        ([(U, MATCH_EXACT, "nobody")], False, {}),
        ([(C, MATCH_EXACT, "app")], False, sub(E_ALICE_APP, E_APP)),
        ([(C, MATCH_EXACT, "app")], True, sub(E_APP)),
        ([(C, MATCH_DEFAULT, None)], False, sub(E_DEF_CLIENT)),
        ([(C, MATCH_SPECIFIED, None)], False, sub(E_ALICE_APP, E_APP, E_DEF_CLIENT)),
        ([(U, MATCH_EXACT, "alice"), (C, MATCH_EXACT, "app")], True, sub(E_ALICE_APP)),
        ([(U, MATCH_SPECIFIED, None), (C, MATCH_SPECIFIED, None)], False, sub(E_ALICE_APP)),
        ([(U, MATCH_DEFAULT, None), (C, MATCH_SPECIFIED, None)], False, {}),
        ([(IP, MATCH_EXACT, "127.0.0.1")], False, sub(E_IP)),
        ([(IP, MATCH_SPECIFIED, None)], True, sub(E_IP)),
        ([(IP, MATCH_DEFAULT, None)], False, {}),
        ([], False, want),
        ([], True, {}),
    ]
    for components, strict, expected in cases:
        for v in (0, 1):
            got = describe(conn, components, strict, version=v)
            assert got == expected, f"v{v} filter {components} strict={strict}: got {got}, expected {expected}"

    # validate_only: answered as if applied, nothing written.
    got = alter(conn, [(E_ALICE_APP, {"producer_byte_rate": 999}), (ent(user="bob"), {"producer_byte_rate": 5})],
                validate_only=True)
    assert codes(got) == [NONE, NONE], got
    got = alter(conn, [(E_ALICE_APP, {"producer_byte_rate": 1.5})], validate_only=True)
    [(code, message)] = got[E_ALICE_APP]
    assert code == INVALID_REQUEST and message, f"validate_only still validates: {got}"
    assert describe(conn) == want, "validate_only changed the quotas"

    # Each INVALID_REQUEST case, each request alone: 42 with a message, nothing changed.
    invalid = {
        "unknown entity type": [((("group", "g"),), {"producer_byte_rate": 10})],
        "empty user name": [(ent(user=""), {"producer_byte_rate": 10})],
        "empty client-id name": [(ent(client=""), {"producer_byte_rate": 10})],
        "ip with user": [(ent(ip="127.0.0.1", user="alice"), {"connection_creation_rate": 10})],
        "ip with client-id": [(ent(ip="127.0.0.1", client="app"), {"connection_creation_rate": 10})],
        "ip key on a user": [(E_ALICE, {"connection_creation_rate": 10})],
        "user key on an ip": [(E_IP, {"producer_byte_rate": 10})],
        "unknown key": [(E_ALICE, {"no_such_rate": 10})],
        "zero": [(E_ALICE, {"request_percentage": 0})],
        "negative": [(E_ALICE_APP, {"producer_byte_rate": -5})],
        "fractional byte rate": [(E_ALICE_APP, {"consumer_byte_rate": 1.5})],
        "key twice": [(E_ALICE, [("producer_byte_rate", 100), ("producer_byte_rate", 200)])],
    }
    for what, entries in invalid.items():
        got = alter(conn, entries)
        [results] = got.values()
        assert [c for c, _ in results] == [INVALID_REQUEST] and results[0][1], \
            f"{what}: got {got}, expected 42 with a message"
    # An entity named twice in one request (its parts in any order): refused, neither entry applied.
    # (Kafka answers once per entity; an answer per entry, each refused, is the same to clients.)
    carol_x = (("client-id", "x"), ("user", "carol"))
    got = alter(conn, [(carol_x, {"producer_byte_rate": 100}),
                       ((("user", "carol"), ("client-id", "x")), {"consumer_byte_rate": 100})])
    assert len(got[carol_x]) in (1, 2) and all(c == INVALID_REQUEST and m for c, m in got[carol_x]), got
    assert describe(conn) == want, "a refused alteration changed the quotas"
    # Entries are judged one by one: a valid one next to an invalid one is applied.
    got = alter(conn, [(ent(user="mixed"), {"producer_byte_rate": 100}), (ent(user=""), {"producer_byte_rate": 1})])
    assert [c for c, _ in got[ent(user="mixed")]] == [NONE] and \
        [c for c, _ in got[ent(user="")]] == [INVALID_REQUEST], got
    want[ent(user="mixed")] = {"producer_byte_rate": 100.0}
    wait_until(lambda: describe(conn) == want, 10, 0.05, lambda: f"described {describe(conn)}, want {want}")

    # Bad filters: INVALID_REQUEST with a message; an unknown entity type: UNSUPPORTED_VERSION.
    bad_filters = {
        "exact without a name": ([("user", MATCH_EXACT, None)], INVALID_REQUEST),
        "default with a name": ([("user", MATCH_DEFAULT, "alice")], INVALID_REQUEST),
        "specified with a name": ([("user", MATCH_SPECIFIED, "alice")], INVALID_REQUEST),
        "unknown match type": ([("user", 7, None)], INVALID_REQUEST),
        "a type twice": ([("user", MATCH_EXACT, "alice"), ("user", MATCH_DEFAULT, None)], INVALID_REQUEST),
        "ip with user": ([("ip", MATCH_SPECIFIED, None), ("user", MATCH_SPECIFIED, None)], INVALID_REQUEST),
        "unknown entity type": ([("group", MATCH_SPECIFIED, None)], UNSUPPORTED_VERSION),
    }
    for what, (components, code) in bad_filters.items():
        for v in (0, 1):
            r = describe_raw(conn, components, version=v)
            assert r.error_code == code and r.error_message and not r.entries, \
                f"v{v} filter {what}: got {r}, expected error {code} with a message and no entries"

    # Remove one key; remove every key of an entity (it is gone); re-set a value.
    alter_ok(conn, [(E_ALICE_APP, {"consumer_byte_rate": None}), (E_APP, {"consumer_byte_rate": None}),
                    (E_DEF_USER, {"producer_byte_rate": 8192})])
    want[E_ALICE_APP] = {"producer_byte_rate": 1024.0}
    del want[E_APP]
    want[E_DEF_USER] = {"producer_byte_rate": 8192.0}
    wait_until(lambda: describe(conn) == want, 10, 0.05, lambda: f"described {describe(conn)}, want {want}")
    assert describe(conn, [("client-id", MATCH_EXACT, "app")], True) == {}, "an entity without keys is described"
    # Removing a key that is not set is no error.
    alter_ok(conn, [(ent(user="ghost"), {"producer_byte_rate": None})], version=0)
    assert describe(conn) == want
    conn.close()

    # Quotas live in the metadata log: all of them survive a restart.
    broker.restart()
    conn = Conn(broker.port)
    assert describe(conn) == want, "quotas changed across a restart"
    assert describe(conn, [("user", MATCH_EXACT, "alice")], True, version=0) == {E_ALICE: want[E_ALICE]}
    conn.close()


def test_alter_success_error_message_is_null(broker):
    """Kafka answers a successful alteration with a null error_message (ApiError.NONE's message,
    AlterClientQuotasResponse.fromQuotaEntities), in v0 (INT16 length -1) and v1 (compact 0)."""
    conn = Conn(broker.port)
    for v in (0, 1):
        got = alter(conn, [(ent(user=f"null-msg-v{v}"), {"producer_byte_rate": 1000})], version=v)
        assert list(got.values()) == [[(NONE, None)]], f"v{v}: {got} (expected error_message null)"
    conn.close()


# ================================================================== 2. Java Admin

@pytest.mark.java
def test_java_admin_client_quotas(broker, tmp_path):
    program = java_program("3", E2E_DIR / "java" / "StrataQuotas.java", tmp_path)
    r = subprocess.run(program + [broker.bootstrap], capture_output=True, text=True, timeout=120)
    lines = [line[7:] for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"java exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\n" \
                                         f"stderr:\n{r.stderr[-6000:]}"
    res = json.loads(lines[-1])

    def as_map(described):
        return {tuple(sorted(d["entity"].items())): d["values"] for d in described}

    app = ent(user="jalice", client="japp")
    all_ = {app: {"producer_byte_rate": 4096.0, "consumer_byte_rate": 8192.0},
            ent(client=DEFAULT): {"request_percentage": 12.5},
            ent(ip="127.0.0.1"): {"connection_creation_rate": 20.0}}
    assert as_map(res["all"]) == all_, res["all"]
    assert as_map(res["user_jalice"]) == {app: all_[app]}, res["user_jalice"]
    assert as_map(res["default_client"]) == {ent(client=DEFAULT): all_[ent(client=DEFAULT)]}, res["default_client"]
    assert as_map(res["any_ip"]) == {ent(ip="127.0.0.1"): all_[ent(ip="127.0.0.1")]}, res["any_ip"]
    for what, failure in res["invalid"].items():
        assert "org.apache.kafka.common.errors.InvalidRequestException" in failure["errors"] and \
            failure["message"], f"{what}: {failure}"
    after = {**all_, app: {"producer_byte_rate": 4096.0}}
    assert as_map(res["after_remove"]) == after, res["after_remove"]
    # The raw protocol agrees with what the Java client was told.
    conn = Conn(broker.port)
    assert describe(conn) == after
    conn.close()


# ================================================================== 3. producer byte rate

PRODUCER_QUOTA = 100 * 1024  # bytes/s
VALUE = 10 * 1024


def produce_flat_out(bootstrap, topic, seconds, **conf):
    """A producer writing VALUE-byte values as fast as it may for `seconds`. Returns
    (payload bytes acknowledged within the span, span, librdkafka statistics, KiB acknowledged
    per 5 s)."""
    import os
    stats, timeline = [], []
    acked = {"bytes": 0, "late": 0, "errors": []}
    from confluent_kafka import Producer
    # batch.size 32 KiB: a request is a fraction of a second of the quota (librdkafka's default
    # of 1 MB would be 10 s of it, so a minute's count would move by 17% per request).
    p = Producer({**ck_conf(bootstrap, acks=1, **{"compression.type": "none", "linger.ms": 5,
                                                  "batch.size": 32768, "queue.buffering.max.kbytes": 2048,
                                                  "statistics.interval.ms": 1000, **conf}),
                  "stats_cb": lambda s: stats.append(json.loads(s))})
    value = os.urandom(VALUE)
    t0 = time.monotonic()
    end = t0 + seconds

    def on_delivery(err, msg):
        if err is not None:
            acked["errors"].append(str(err))
        elif time.monotonic() <= end:
            acked["bytes"] += len(msg.value())
            timeline.append((time.monotonic() - t0, len(msg.value())))
        else:
            acked["late"] += 1

    while time.monotonic() < end:
        try:
            p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
            p.poll(0)
        except BufferError:
            p.poll(0.02)
    p.poll(0)
    errors = list(acked["errors"])
    p.purge(in_queue=True, in_flight=True)
    p.flush(10)
    assert not errors, f"delivery errors during the run: {errors[:5]}"
    # acknowledged KiB per 5 s, for the report
    buckets = [round(sum(n for t, n in timeline if i <= t < i + 5) / 1024) for i in range(0, int(seconds), 5)]
    return acked["bytes"], seconds, stats, buckets


@pytest.mark.timeout(150)
def test_producer_throttled_to_its_byte_rate_quota(broker_factory, topic_name):
    # quota.window.num=2 (windows of 1 s). With Kafka's default of 11, Kafka's Rate lets a
    # producer that is held back send a burst of up to 10 s of quota each time a burst's sample
    # leaves the 11 s span, so what passes in any one minute moves by a whole burst (+-9%) with
    # the phase; the same algorithm over 2 windows bursts 1 s of quota every 2 s (+-2%). The
    # default windows are exercised by the consumer test below.
    broker = broker_factory("quota.window.num=2")
    ck_create_topic(broker.bootstrap, topic_name, partitions=1)
    set_quotas(broker.port, [(ent(client="quota-producer"), {"producer_byte_rate": PRODUCER_QUOTA})])

    # Control: another client id is not limited: 3 MiB (30 s of the quota) acknowledged within
    # a few seconds, over 3x the quota.
    import os
    free_p = ck_producer(broker.bootstrap, acks=1, **{"client.id": "free-producer", "compression.type": "none",
                                                      "linger.ms": 5})
    t0 = time.monotonic()
    for _ in range(300):
        free_p.produce(topic_name, value=os.urandom(VALUE), partition=0)
        free_p.poll(0)
    assert free_p.flush(5) == 0, "an unlimited producer did not get 3 MiB acknowledged within 5 s"
    free = 300 * VALUE / (time.monotonic() - t0)
    assert free > 3 * PRODUCER_QUOTA, f"an unlimited producer acknowledged only {free / 1024:.0f} KiB/s"

    acked, span, stats, buckets = produce_flat_out(broker.bootstrap, topic_name, 60.0, **{"client.id": "quota-producer"})
    rate = acked / span
    throttles = [b["throttle"] for s in stats for b in s["brokers"].values() if b["throttle"]["cnt"] > 0]
    max_throttle = max((t["max"] for t in throttles), default=0)
    print(f"\nproducer over {span:.0f} s: {acked} payload bytes acked = {rate / 1024:.1f} KiB/s "
          f"({rate / PRODUCER_QUOTA:.3f} of the {PRODUCER_QUOTA // 1024} KiB/s quota); "
          f"unlimited producer {free / 1024:.0f} KiB/s; throttle ms per stats interval "
          f"(max, avg, cnt): {[(t['max'], round(t['avg']), t['cnt']) for t in throttles]}; "
          f"KiB acked per 5 s: {buckets}")
    assert 0.9 * PRODUCER_QUOTA <= rate <= 1.1 * PRODUCER_QUOTA, \
        f"acknowledged {rate / 1024:.1f} KiB/s over {span:.0f} s, quota {PRODUCER_QUOTA / 1024:.0f} KiB/s (+-10%); " \
        f"KiB acked per 5 s: {buckets}; throttles (max ms, cnt): {[(t['max'], t['cnt']) for t in throttles]}"
    assert max_throttle > 0, f"librdkafka saw no throttle time: {[s['brokers'] for s in stats[-2:]]}"


# ================================================================== 4. consumer byte rate

CONSUMER_QUOTA = 200 * 1024  # bytes/s
RECORDS = 400                # x VALUE = 4 MB


def consume_for(bootstrap, topic, seconds, client_id, **conf):
    """Payload bytes a group-free consumer reads from partition 0 within `seconds`
    (returns early once all RECORDS are read), and the time taken."""
    from confluent_kafka import KafkaError, TopicPartition
    c = ck_consumer(bootstrap, **{"client.id": client_id, **conf})
    c.assign([TopicPartition(topic, 0, 0)])
    got, n = 0, 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds and n < RECORDS:
            for m in c.consume(num_messages=100, timeout=0.2):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                got += len(m.value())
                n += 1
        return got, time.monotonic() - t0
    finally:
        c.close()


def test_consumer_throttled_to_its_byte_rate_quota(broker, topic_name):
    import os
    ck_create_topic(broker.bootstrap, topic_name, partitions=1)
    p = ck_producer(broker.bootstrap, acks=1, **{"batch.size": 65536, "linger.ms": 5})
    for _ in range(RECORDS):
        p.produce(topic_name, value=os.urandom(VALUE), partition=0)
    assert p.flush(30) == 0
    total = RECORDS * VALUE
    set_quotas(broker.port, [(ent(client="quota-consumer"), {"consumer_byte_rate": CONSUMER_QUOTA})])

    free, took = consume_for(broker.bootstrap, topic_name, 6.0, "free-consumer")
    assert free == total, f"an unthrottled consumer read {free} of {total} bytes in {took:.1f} s"

    fetch_max = 256 * 1024
    got, took = consume_for(broker.bootstrap, topic_name, 6.0, "quota-consumer",
                            **{"max.partition.fetch.bytes": fetch_max})
    # Kafka's Rate counts the first ten seconds as ten (quota.window.num - 1 windows) and spans at
    # most quota.window.num windows: within 6 s, at most quota x 11 s of fetch responses pass;
    # and at least the quota's own rate (quota x 10 s is allowed at once).
    bound = CONSUMER_QUOTA * 11
    print(f"\nthrottled consumer read {got} bytes in {took:.1f} s (bound {bound}); unthrottled {free}")
    assert CONSUMER_QUOTA * took <= got <= bound, \
        f"the throttled consumer read {got} bytes in {took:.1f} s (quota {CONSUMER_QUOTA} B/s, bound {bound}, " \
        f"all {total})"

    # The quota is spent now: a raw fetch with that client id is answered empty and throttled.
    conn = Conn(broker.port, client_id="quota-consumer")
    r = fetch(conn, topic_name)
    conn.close()
    assert r.throttle_time_ms > 0 and r.error_code == NONE and r.responses == [], \
        f"a fetch over the quota: throttle {r.throttle_time_ms} ms, error {r.error_code}, " \
        f"partitions {[(t.topic, [(p.partition_index, len(p.records or b'')) for p in t.partitions]) for t in r.responses]}"
    # The same fetch by another client id gets the data, unthrottled.
    conn = Conn(broker.port, client_id="free-consumer")
    r = fetch(conn, topic_name)
    conn.close()
    assert r.throttle_time_ms == 0 and len(r.responses[0].partitions[0].records or b"") > 0, r.throttle_time_ms


# ================================================================== 5. request percentage

def metadata_timed(conn: Conn):
    t0 = time.monotonic()
    r = conn.call(MetadataRequest, 12, topics=[], allow_auto_topic_creation=False,
                  include_topic_authorized_operations=False)
    return r.throttle_time_ms, time.monotonic() - t0


def test_request_percentage_throttles_and_mutes(broker):
    set_quotas(broker.port, [(ent(client="quota-requests"), {"request_percentage": 0.01})])
    conn = Conn(broker.port, client_id="quota-requests")
    sent = {"n": 0, "throttle": 0}

    def throttled():
        sent["n"] += 1
        sent["throttle"], _ = metadata_timed(conn)
        return sent["throttle"] > 0
    wait_until(throttled, 15, 0, lambda: f"{sent['n']} Metadata requests, none throttled")
    first = sent["throttle"]
    assert first <= 1000, f"request quota throttle {first} ms is above one quota window (Kafka's bound)"
    # The broker reads the next request only once the throttle time has passed.
    waits = []
    for _ in range(2):
        throttle, took = metadata_timed(conn)
        waits.append((first, took))
        assert took >= 0.5 * first / 1000, \
            f"answered {took * 1000:.0f} ms after the request, though the previous answer said throttle {first} ms"
        first = throttle
    conn.close()
    print(f"\nthrottled after {sent['n']} requests; (throttle ms, next answer after s): {waits}")

    # Another client id on the same broker is never throttled.
    other = Conn(broker.port, client_id="free-requests")
    for i in range(sent["n"] + 20):
        throttle, _ = metadata_timed(other)
        assert throttle == 0, f"request {i} of an unlimited client id throttled {throttle} ms"
    other.close()


# ================================================================== 6. user quotas (SASL)

SASL_USERS = {u: f"{u}-pw" for u in ("admin", "alice", "bob", "carol", "dave", "erin")}


def sasl_broker(broker_factory, authorizer: bool):
    ports = {"PLAINTEXT": None, "SASL_PLAINTEXT": free_port()}
    b = broker_factory(start=False)
    ports["PLAINTEXT"] = b.port
    jaas = f"{PLAIN_MODULE} required " + " ".join(f'user_{u}="{p}"' for u, p in SASL_USERS.items()) + ";"
    b.sets += listener_sets(ports) + ["sasl.enabled.mechanisms=PLAIN",
                                      f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}"]
    if authorizer:
        b.sets += ["authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                   "super.users=User:admin"]
    b.sasl_port = ports["SASL_PLAINTEXT"]
    b.start()
    return b


def sasl(b, user: str, client_id: str = "strata-e2e-quotas") -> Conn:
    return Conn(b.sasl_port, client_id=client_id, user=user, password=SASL_USERS[user])


def throttles_of(b, user: str, topic: str, records: bytes, n: int = 4) -> list[int]:
    """throttle_time_ms of up to n produces by `user`, stopping at the first throttled one
    (the broker then mutes the connection for that long)."""
    conn = sasl(b, user, client_id=f"producer-{user}-{uid()}")
    out = []
    try:
        for _ in range(n):
            out.append(produce_throttle(conn, topic, records))
            if out[-1] > 0:
                break
    finally:
        conn.close()
    return out


def test_user_quotas_over_sasl(broker_factory, topic_name):
    b = sasl_broker(broker_factory, authorizer=False)
    ck_create_topic(b.bootstrap, topic_name, partitions=1)
    records = batch(2, 10_000)  # ~20 KB a request: 2 of them are over 2 KiB/s x 10 s
    set_quotas(b.port, [(ent(user="alice"), {"producer_byte_rate": 2048})])
    alice = throttles_of(b, "alice", topic_name, records)
    bob = throttles_of(b, "bob", topic_name, records)
    assert alice[-1] > 0, f"alice over her quota, never throttled: {alice}"
    assert bob == [0] * 4, f"bob has no quota, yet throttled: {bob}"

    # The default user's quota: carol (no quota of her own) is throttled, bob (his own, large) is not.
    set_quotas(b.port, [(ent(user=DEFAULT), {"producer_byte_rate": 2048}),
                        (ent(user="bob"), {"producer_byte_rate": 100 << 20})])
    carol = throttles_of(b, "carol", topic_name, records)
    bob = throttles_of(b, "bob", topic_name, records)
    assert carol[-1] > 0, f"carol over the default user quota, never throttled: {carol}"
    assert bob == [0] * 4, f"bob's own quota is large, yet throttled: {bob}"


# ================================================================== 7. authorization

def test_quota_apis_need_cluster_config_acls(broker_factory):
    b = sasl_broker(broker_factory, authorizer=True)
    entry = [(ent(user="target"), {"producer_byte_rate": 1000}), (ent(client=DEFAULT), {"request_percentage": 50})]

    # No ACL: 31 from both APIs (Describe: the top-level error; Alter: every entry); PLAINTEXT's
    # ANONYMOUS neither.
    for conn in (sasl(b, "carol"), Conn(b.port)):
        r = describe_raw(conn)
        assert r.error_code == CLUSTER_AUTH and not r.entries, r
        got = alter(conn, entry)
        assert codes(got) == [CLUSTER_AUTH] * 2, got
        conn.close()

    admin = sasl(b, "admin")
    assert describe(admin) == {}, "a refused AlterClientQuotas stored something"
    alter_ok(admin, [entry[0]])
    wait_until(lambda: describe(admin) == {ent(user="target"): {"producer_byte_rate": 1000.0}}, 10, 0.05)

    # dave gets ALTER_CONFIGS on the cluster (which implies DESCRIBE_CONFIGS), erin DESCRIBE_CONFIGS.
    grants = [("dave", ALTER_CONFIGS), ("erin", DESCRIBE_CONFIGS)]
    r = admin.call(CreateAclsRequest, 3, creations=[CreateAclsRequest.AclCreation(
        resource_type=CLUSTER, resource_name="kafka-cluster", resource_pattern_type=LITERAL,
        principal=f"User:{u}", host="*", operation=op, permission_type=ALLOW) for u, op in grants])
    assert [x.error_code for x in r.results] == [NONE, NONE], r

    def listed():
        d = admin.call(DescribeAclsRequest, 3, resource_type_filter=CLUSTER, resource_name_filter="kafka-cluster",
                       pattern_type_filter=LITERAL, principal_filter=None, host_filter=None, operation=1,
                       permission_type=1)
        return d.error_code == NONE and sum(len(x.acls) for x in d.resources) == 2
    wait_until(listed, 10, 0.05, "the ACLs are not listed")

    dave = sasl(b, "dave")
    got = alter(dave, [entry[1]])
    assert codes(got) == [NONE], got
    want = {ent(user="target"): {"producer_byte_rate": 1000.0}, ent(client=DEFAULT): {"request_percentage": 50.0}}
    wait_until(lambda: describe(admin) == want, 10, 0.05, lambda: f"described {describe(admin)}")
    assert describe(dave) == want, "ALTER_CONFIGS implies DESCRIBE_CONFIGS"
    erin = sasl(b, "erin")
    assert describe(erin) == want
    got = alter(erin, [(ent(user="target"), {"producer_byte_rate": None})])
    assert codes(got) == [CLUSTER_AUTH], got
    assert describe(admin) == want
    for c in (admin, dave, erin):
        c.close()


# ================================================================== 8. replication unthrottled

@pytest.mark.timeout(150)
def test_replication_is_not_throttled(tmp_path):
    from test_cluster import Cluster, leaders_seen_by
    from test_replication import FAST, create_replicated, partitions_of

    c = Cluster(tmp_path, extra=FAST)
    try:
        c.start()
        topic = f"repl-{uid()}"
        create_replicated(c.bootstrap, topic, 1, {"min.insync.replicas": "3"})
        assert partitions_of(c.bootstrap, topic)[0][2] == [1, 2, 3]
        # 1 KiB/s for every consumer -- and for every follower, if the broker applied it to them.
        limits = {"consumer_byte_rate": 1024, "producer_byte_rate": 100 << 20}
        quotas = [(ent(client=DEFAULT), limits), (ent(user=DEFAULT), limits),
                  (ent(user=DEFAULT, client=DEFAULT), limits),
                  (ent(client="repl-producer"), {"producer_byte_rate": 100 << 20})]
        set_quotas(c.nodes[0].port, quotas)
        for n in c.nodes[1:]:  # every broker's image has them before the writes start
            conn = Conn(n.port)
            wait_until(lambda: len(describe(conn)) == len(quotas), 15, 0.05, f"{n.name} lacks the quotas")
            conn.close()

        import os
        errors, acked = [], []
        p = ck_producer(c.bootstrap, acks="all", **{"client.id": "repl-producer", "linger.ms": 5,
                                                    "message.timeout.ms": 60000})
        t0 = time.monotonic()
        for _ in range(200):  # 2 MB
            p.produce(topic, value=os.urandom(VALUE), partition=0,
                      on_delivery=lambda e, m: (errors if e else acked).append(e or len(m.value())))
            p.poll(0)
        left = p.flush(30)
        took = time.monotonic() - t0
        assert left == 0 and not errors and sum(acked) == 200 * VALUE, \
            f"acks=all: {sum(acked)} of {200 * VALUE} bytes acknowledged in {took:.1f} s, {left} left, " \
            f"errors {errors[:3]} (followers throttled?)"
        assert partitions_of(c.bootstrap, topic)[0][2] == [1, 2, 3], "the ISR shrank"
        print(f"\nacks=all 2 MB at RF 3 under 1 KiB/s default consumer quotas: {took:.1f} s")

        # Control: the default consumer quota is in force on the leader for clients.
        leader = c.nodes[leaders_seen_by(c.bootstrap, topic)[0] - 1]
        conn = Conn(leader.port, client_id=f"consumer-{uid()}")
        throttles = []
        for _ in range(3):
            r = fetch(conn, topic)
            throttles.append(r.throttle_time_ms)
            if r.throttle_time_ms > 0:
                break
        conn.close()
        assert throttles[-1] > 0, f"a client's fetches of 2 MB under a 1 KiB/s quota: throttles {throttles}"
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()
