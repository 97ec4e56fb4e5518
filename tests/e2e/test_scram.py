"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 end to end (RFC 5802/7677, Kafka's KIP-84 and KIP-554).

One module-scoped broker, `scram`: PLAINTEXT (readiness probe), SASL_SSL and SASL_PLAINTEXT with
`sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512` (no PLAIN, so no JAAS entry is needed),
its data dir formatted before the first start with `strata format --add-scram` (as
`kafka-storage format --add-scram`): alice has a SCRAM-SHA-512 credential (default 4096
iterations), bob a SCRAM-SHA-256 one with 8192 iterations. More users come and go at runtime
through AlterUserScramCredentials (API 51) / DescribeUserScramCredentials (API 50).

Clients: confluent-kafka (librdkafka 2.16), kcat (librdkafka 2.0.2, which sends its client
nonce twice in the client-final message; Kafka accepts that since 3.8.1), kafka-python,
aiokafka, kafkajs (node/kafkajs_security.js with `mechanism: 'scram-sha-512'`), kafka-clients
3.9.1 and 4.1.1 (java/StrataScram.java: ScramLoginModule, Admin alter/describe, a user created,
used, deleted and then refused), and raw exchanges computing the SCRAM proof in Python (the
server-first message, the server signature, librdkafka's doubled final nonce, a foreign nonce).
kafka-python logs in and round-trips, but its refusal is not tested: kafka-python 3.0.12 drops
a response read together with the connection's EOF, so it never sees SASL_AUTHENTICATION_FAILED
and keeps retrying for 30 s (aiokafka's refusal is tested instead).

Refusals (wrong password, a mechanism the user has no credential for, a deleted user) fail the
client quickly with SASL_AUTHENTICATION_FAILED ("Authentication failed during authentication
due to invalid credentials with SASL mechanism ..."), leave a "SASL authentication failed" line
in the broker log, and the broker keeps serving. The last test restarts the broker: credentials
live in the cluster metadata and survive it.

The PKI, the client settings and the shared-broker machinery come from security_util.py and
test_security.py.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import time
import uuid

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from conftest import Broker, strata_bin
from e2e_util import E2E_DIR, java_program, wait_until
from security_util import (
    LogMark,
    aiokafka_kwargs,
    ck_security,
    java_props,
    kafka_python_kwargs,
    kafkajs_conf,
    tls_sets,
    write_properties,
)
from test_security import (  # noqa: F401 - pki and _shared_broker_checks are fixtures used here
    _SHARED,
    N,
    NONE,
    PARTS,
    SASL_AUTHENTICATION_FAILED,
    SASL_FAILED,
    UNSUPPORTED_SASL_MECHANISM,
    Raw,
    _aiokafka_scenario,
    _kafka_python_roundtrip,
    _shared_broker_checks,
    addr,
    ca_for,
    ck,
    ck_failure,
    ck_roundtrip,
    codes,
    configure,
    kcat,
    names,
    new_topic,
    pki,
    read_to_eof,
    run_kafkajs,
)

SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
# the users `strata format --add-scram` creates: name -> (mechanism, password, iterations);
# alice's 4096 is the default (her --add-scram has no iterations=)
FORMATTED = {"alice": ("SCRAM-SHA-512", "alice-secret", 4096), "bob": ("SCRAM-SHA-256", "bob-secret", 8192)}
DEFAULT_ITERATIONS = 4096

# Kafka error codes
RESOURCE_NOT_FOUND = 91
DUPLICATE_RESOURCE = 92
UNACCEPTABLE_CREDENTIAL = 93


def invalid_credentials(mechanism):
    """Kafka's SaslAuthenticate error message for a failed SCRAM exchange."""
    return f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"


# ================================================================== the broker

def format_scram(b: Broker, users: dict):
    """`strata format` of b's data dir with b's own flags and one --add-scram per user."""
    cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
    argv = b.argv()
    assert argv[1] == "server", argv
    argv[1] = "format"
    argv += ["--cluster-id", cluster_id]
    for name, (mech, password, iterations) in users.items():
        extra = "" if iterations == DEFAULT_ITERATIONS else f",iterations={iterations}"
        argv += ["--add-scram", f"{mech}=[name={name},password={password}{extra}]"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=b.workdir)
    assert r.returncode == 0, f"strata format failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert f"cluster {cluster_id}" in r.stdout, r.stdout


@pytest.fixture(scope="module")
def scram(tmp_path_factory, pki):
    """PLAINTEXT, SASL_SSL and SASL_PLAINTEXT; SCRAM only; alice and bob formatted in."""
    b = Broker(tmp_path_factory.mktemp("scram"), name="scram")
    configure(b, {"SASL_SSL": "SASL_SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"},
              *tls_sets(pki), "sasl.enabled.mechanisms=" + ",".join(MECHANISMS))
    _SHARED.append(b)
    try:
        format_scram(b, FORMATTED)
        b.start()
    except BaseException:
        _SHARED.remove(b)
        b.cleanup()
        raise
    yield b
    b.cleanup()
    _SHARED.remove(b)


# ================================================================== client settings

def creds(user, password, mechanism):
    if user in FORMATTED:
        mechanism = mechanism or FORMATTED[user][0]
        password = FORMATTED[user][1] if password is None else password
    assert mechanism and password is not None, (user, mechanism)
    return password, mechanism


def scram_ck(pki, protocol, user="alice", password=None, mechanism=None):
    """librdkafka settings (confluent-kafka, kcat) for a SCRAM user; mechanism defaults to the
    formatted user's own."""
    password, mechanism = creds(user, password, mechanism)
    conf = ck_security(pki, protocol, user=user, password=password)
    conf["sasl.mechanisms"] = mechanism
    return conf


def scram_kcat_args(pki, protocol, **kw):
    return [x for k, v in scram_ck(pki, protocol, **kw).items() for x in ("-X", f"{k}={v}")]


def scram_kafka_python(pki, protocol, user="alice", password=None, mechanism=None):
    password, mechanism = creds(user, password, mechanism)
    return {**kafka_python_kwargs(pki, protocol, user=user, password=password), "sasl_mechanism": mechanism}


def scram_aiokafka(pki, protocol, user="alice", password=None, mechanism=None):
    password, mechanism = creds(user, password, mechanism)
    return {**aiokafka_kwargs(pki, protocol, user=user, password=password), "sasl_mechanism": mechanism}


def scram_kafkajs(pki, protocol, user="alice", password=None, mechanism=None):
    password, mechanism = creds(user, password, mechanism)
    conf = kafkajs_conf(pki, protocol, user=user, password=password)
    conf["sasl"]["mechanism"] = mechanism.lower()  # 'scram-sha-256' / 'scram-sha-512'
    return conf


def scram_java(pki, protocol, user="alice", password=None, mechanism=None):
    password, mechanism = creds(user, password, mechanism)
    props = java_props(pki, protocol, user=user, password=password)
    props.update({"sasl.mechanism": mechanism,
                  "sasl.jaas.config": f'{SCRAM_MODULE} required username="{user}" password="{password}";'})
    return props


# ================================================================== admin helpers (confluent-kafka)

def admin(b, pki):
    """An AdminClient logged in as alice (SCRAM-SHA-512 over SASL_SSL)."""
    from confluent_kafka.admin import AdminClient
    return AdminClient(ck(addr(b, "SASL_SSL"), scram_ck(pki, "SASL_SSL")))


def mech(name):
    from confluent_kafka.admin import ScramMechanism
    return {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}[name]


def upsert(user, mechanism, iterations, password):
    from confluent_kafka.admin import ScramCredentialInfo, UserScramCredentialUpsertion
    return UserScramCredentialUpsertion(user, ScramCredentialInfo(mech(mechanism), iterations), password.encode())


def deletion(user, mechanism):
    from confluent_kafka.admin import UserScramCredentialDeletion
    return UserScramCredentialDeletion(user, mech(mechanism))


def outcome(fut, timeout=20):
    """None if the future succeeded, else (error code, message)."""
    from confluent_kafka import KafkaException
    try:
        fut.result(timeout)
        return None
    except KafkaException as e:
        err = e.args[0]
        return err.code(), err.str()


def alter(a, alterations, timeout=20):
    """alter_user_scram_credentials -> {user: None | (code, message)}."""
    return {u: outcome(f, timeout) for u, f in a.alter_user_scram_credentials(alterations).items()}


def described(a, users=None):
    """{user: sorted [(mechanism name, iterations)]} of describe_user_scram_credentials(users), or
    (code, message) for a user that failed."""
    fs = a.describe_user_scram_credentials(users, request_timeout=20)
    if users is None:
        got = fs.result(20)
    else:
        got = {}
        for u, f in fs.items():
            err = outcome(f)
            got[u] = err if err else f.result()
    return {u: d if isinstance(d, tuple) else sorted(
        (i.mechanism.name.replace("_", "-"), i.iterations) for i in d.scram_credential_infos)
        for u, d in got.items()}


def auth_refused(b, pki, protocol, **kw):
    """A librdkafka client with these credentials fails authentication within 10 s; the broker
    logs the refusal. Returns the client's errors."""
    from confluent_kafka import KafkaError
    mark = LogMark(b)
    errors, elapsed = ck_failure(addr(b, protocol), scram_ck(pki, protocol, **kw))
    assert KafkaError._AUTHENTICATION in codes(errors), names(errors)
    assert elapsed < 10, f"authentication error after {elapsed:.1f}s"
    line = mark.wait_for(SASL_FAILED)
    return errors, line


# ================================================================== confluent-kafka

@pytest.mark.parametrize("user,protocol", [("alice", "SASL_SSL"), ("bob", "SASL_PLAINTEXT")],
                         ids=["alice-512-sasl_ssl", "bob-256-sasl_plaintext"])
def test_ck_scram_produce_consume(scram, pki, user, protocol):
    """librdkafka with SCRAM-SHA-512 (alice, over SASL_SSL) and SCRAM-SHA-256 (bob, over
    SASL_PLAINTEXT): Metadata names the listener, an acks=all round trip of N records."""
    from confluent_kafka.admin import AdminClient
    conf = scram_ck(pki, protocol, user=user)
    md = AdminClient(ck(addr(scram, protocol), conf)).list_topics(timeout=15)
    assert [(x.id, x.host, x.port) for x in md.brokers.values()] == [(1, "127.0.0.1", scram.ports[protocol])]
    ck_roundtrip(addr(scram, protocol), conf)


@pytest.mark.parametrize("protocol,case", [
    ("SASL_SSL", "wrong-password"), ("SASL_PLAINTEXT", "wrong-password"),
    ("SASL_SSL", "wrong-mechanism"), ("SASL_PLAINTEXT", "unknown-user")])
def test_ck_scram_refused(scram, pki, protocol, case):
    """A wrong password (alice, SCRAM-SHA-512), a mechanism the user has no credential for
    (alice with SCRAM-SHA-256) and an unknown user each fail with an authentication error
    naming the mechanism, within seconds; the broker logs it and keeps serving."""
    kw = {"wrong-password": dict(user="alice", password="not-the-password"),
          "wrong-mechanism": dict(user="alice", mechanism="SCRAM-SHA-256"),
          "unknown-user": dict(user="eve", password="alice-secret", mechanism="SCRAM-SHA-512")}[case]
    mechanism = kw.get("mechanism", "SCRAM-SHA-512")
    errors, line = auth_refused(scram, pki, protocol, **kw)
    assert any(invalid_credentials(mechanism) in e.str() for e in errors), names(errors)
    assert mechanism in line and protocol in line, line
    good = scram_ck(pki, protocol, user="alice" if protocol == "SASL_SSL" else "bob")
    ck_roundtrip(addr(scram, protocol), good, n=10)


# ------------------------------------------------------------------ kcat (librdkafka 2.0.2)

@pytest.mark.kcat
def test_kcat_scram_sha_512(scram, pki):
    """kcat 1.7.1 / librdkafka 2.0.2 (before 2.6.1 it repeats its client nonce in the client-final
    message, which Kafka accepts since 3.8.1): -L, -P and -C -e as alice over SASL_SSL."""
    bs, sec = addr(scram, "SASL_SSL"), scram_kcat_args(pki, "SASL_SSL")
    topic = new_topic("kcat-scram")
    ck_roundtrip(bs, scram_ck(pki, "SASL_SSL"), topic=topic, n=2)  # creates the topic
    md = json.loads(kcat(bs, sec, "-L", "-J", "-t", topic))
    assert [(x["id"], x["name"]) for x in md["brokers"]] == [(1, bs)], md["brokers"]
    assert [t["topic"] for t in md["topics"]] == [topic] and "error" not in md["topics"][0], md["topics"]
    lines = [f"key{i}\tkcat scram {i}" for i in range(50)]
    kcat(bs, sec, "-P", "-t", topic, "-p", "1", "-K", "\t", input=("\n".join(lines) + "\n").encode())
    out = kcat(bs, sec, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-J")
    got = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert [(m["offset"], m["key"], m["payload"]) for m in got] == [(0, "k1", "ck-sec-1")] + [
        (i + 1, f"key{i}", f"kcat scram {i}") for i in range(50)], got[:3]
    # and bob with SCRAM-SHA-256 over SASL_PLAINTEXT reads the same partition
    out = kcat(addr(scram, "SASL_PLAINTEXT"), scram_kcat_args(pki, "SASL_PLAINTEXT", user="bob"),
               "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-J")
    assert len([l for l in out.splitlines() if l.strip()]) == 51, out[-2000:]


# ------------------------------------------------------------------ kafka-python, aiokafka

SCRAM_CASES = [("alice", "SASL_SSL"), ("bob", "SASL_PLAINTEXT")]
SCRAM_IDS = ["sha512-alice-sasl_ssl", "sha256-bob-sasl_plaintext"]


@pytest.mark.parametrize("user,protocol", SCRAM_CASES, ids=SCRAM_IDS)
def test_kafka_python_scram(scram, pki, user, protocol, closer):
    kw = scram_kafka_python(pki, protocol, user=user)
    _kafka_python_roundtrip(addr(scram, protocol), kw, new_topic("kpy-scram"), closer)


@pytest.mark.parametrize("user,protocol", SCRAM_CASES, ids=SCRAM_IDS)
def test_aiokafka_scram(scram, pki, user, protocol):
    bs, kw = addr(scram, protocol), scram_aiokafka(pki, protocol, user=user)
    acked, got = asyncio.run(_aiokafka_scenario(bs, kw, new_topic("aio-scram")))
    assert acked == [(i % PARTS, i // PARTS) for i in range(N)]
    assert sorted(got) == sorted((i % PARTS, i // PARTS, f"k{i}".encode(), f"aio-{i}".encode())
                                 for i in range(N))


def test_aiokafka_scram_wrong_password(scram, pki, caplog):
    """aiokafka reports the broker's SaslAuthenticate error (58, with Kafka's message) and gives up
    bootstrapping at once. (kafka-python 3.0.12 is not tested here: its transport drops a response
    that arrives in the same read as the connection's EOF, so it never sees the error and retries
    for 30 s; the raw test below checks the answer and the close.)"""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    async def attempt():
        a = AIOKafkaAdminClient(bootstrap_servers=addr(scram, "SASL_PLAINTEXT"), request_timeout_ms=10000,
                                **scram_aiokafka(pki, "SASL_PLAINTEXT", user="bob", password="nope"))
        try:
            await a.start()
        finally:
            await a.close()

    mark = LogMark(scram)
    t0 = time.monotonic()
    with caplog.at_level("ERROR", logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(attempt())
    assert time.monotonic() - t0 < 10
    assert f"SaslAuthenticationFailed: {invalid_credentials('SCRAM-SHA-256')}" in caplog.text, caplog.text
    mark.wait_for(SASL_FAILED)


# ------------------------------------------------------------------ kafkajs

@pytest.mark.node
def test_kafkajs_scram_sha_512(scram, pki):
    """kafkajs `mechanism: 'scram-sha-512'` over SASL_SSL: admin create + metadata + produce; a
    wrong password is a KafkaJSSASLAuthenticationError."""
    bs, topic = addr(scram, "SASL_SSL"), new_topic("kjs-scram")
    res, err = run_kafkajs(bs, topic, scram_kafkajs(pki, "SASL_SSL"))
    assert "error" not in res, f"kafkajs failed: {res}\nstderr:\n{err[-4000:]}"
    assert res["brokers"] == [f"1@127.0.0.1:{scram.ports['SASL_SSL']}"], res["brokers"]
    assert all(s["errorCode"] == 0 for s in res["sent"]), res["sent"]
    assert {o["partition"]: (int(o["low"]), int(o["high"])) for o in res["offsets"]} == {
        q: (0, len(range(q, N, PARTS))) for q in range(PARTS)}, res["offsets"]

    mark = LogMark(scram)
    t0 = time.monotonic()
    res, err = run_kafkajs(bs, new_topic("kjs-scram"), scram_kafkajs(pki, "SASL_SSL", password="not-the-password"))
    assert "KafkaJSSASLAuthenticationError" in res.get("causes", []), f"kafkajs: {res}\nstderr:\n{err[-3000:]}"
    assert time.monotonic() - t0 < 20
    mark.wait_for(SASL_FAILED)


# ------------------------------------------------------------------ Java kafka-clients 3.9.1 / 4.1.1

@pytest.fixture(scope="session")
def java_scram(tmp_path_factory):
    compiled = {}

    def get(client):
        if client not in compiled:
            compiled[client] = java_program(client, E2E_DIR / "java" / "StrataScram.java",
                                            tmp_path_factory.mktemp(f"java-scram-{client}"))
        return compiled[client]
    return get


@pytest.mark.java
@pytest.mark.parametrize("client,protocol,user_mechanism", [
    ("3", "SASL_SSL", "SCRAM-SHA-256"), ("4", "SASL_PLAINTEXT", "SCRAM-SHA-512")])
def test_java_scram_admin(scram, pki, java_scram, tmp_path, client, protocol, user_mechanism):
    """kafka-clients (3.9.1 / 4.1.1) logged in with ScramLoginModule as alice (SCRAM-SHA-512):
    describeUserScramCredentials() lists the formatted users; alterUserScramCredentials creates a
    user (SCRAM-SHA-256 4096, SCRAM-SHA-512 8192), describe shows both, the user produces at once
    with `user_mechanism`; after both deletions, deleting again and describing fail with
    ResourceNotFoundException, and the user's login with SaslAuthenticationException."""
    user = f"dan{client}-{uuid.uuid4().hex[:6]}"
    password = f"pw-{secrets.token_hex(6)}"
    topic = new_topic(f"java{client}-scram")
    bs = addr(scram, protocol)
    admin_props = write_properties(tmp_path / "admin.properties",
                                   {"bootstrap.servers": bs, **scram_java(pki, protocol)})
    user_props = write_properties(tmp_path / "user.properties", {"bootstrap.servers": bs, **scram_java(
        pki, protocol, user=user, password=password, mechanism=user_mechanism)})
    mark = LogMark(scram)
    cmd = java_scram(client) + [str(admin_props), str(user_props), user, password, topic, "10"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java client hung; stderr:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"java exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    res = json.loads(lines[-1])
    assert res["ok"] is True, f"StrataScram failed: {res}\nstderr:\n{r.stderr[-4000:]}"
    assert res["nodes"] == [f"1@127.0.0.1:{scram.ports[protocol]}"], res
    assert res["known"]["alice"] == ["SCRAM-SHA-512:4096"] and res["known"]["bob"] == ["SCRAM-SHA-256:8192"], res
    assert res["described"] == ["SCRAM-SHA-256:4096", "SCRAM-SHA-512:8192"], res
    assert res["produced"] == 10, res
    assert res["delete_unknown"]["errors"][0] == "org.apache.kafka.common.errors.ResourceNotFoundException", res
    assert res["describe_deleted"]["errors"][0] == "org.apache.kafka.common.errors.ResourceNotFoundException", res
    assert res["login_deleted"] and "org.apache.kafka.common.errors.SaslAuthenticationException" in \
        res["login_deleted"]["errors"], res
    assert invalid_credentials(user_mechanism) in res["login_deleted"]["message"], res
    assert res["login_deleted_ms"] < 15000, res
    mark.wait_for(SASL_FAILED)
    # the records the user produced are there
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(ck(addr(scram, "SASL_SSL"), scram_ck(pki, "SASL_SSL"), **{"group.id": "strata-e2e-unused"}))
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15) == (0, 10)
    finally:
        c.close()


# ------------------------------------------------------------------ admin API (confluent-kafka)

def test_ck_admin_user_lifecycle(scram, pki):
    """Upsert carol (SCRAM-SHA-512, 8192 iterations) -> describe shows it -> carol produces at
    once -> delete -> describe answers RESOURCE_NOT_FOUND and carol's login fails. A second
    upsert of an existing user replaces the credential (the old password stops working)."""
    a = admin(scram, pki)
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    assert described(a, ["alice", "bob"]) == {"alice": [("SCRAM-SHA-512", 4096)], "bob": [("SCRAM-SHA-256", 8192)]}
    assert alter(a, [upsert(carol, "SCRAM-SHA-512", 8192, "carol-pw")]) == {carol: None}
    assert described(a, [carol]) == {carol: [("SCRAM-SHA-512", 8192)]}
    everyone = described(a)
    assert everyone[carol] == [("SCRAM-SHA-512", 8192)] and everyone["alice"] == [("SCRAM-SHA-512", 4096)], everyone
    conf = scram_ck(pki, "SASL_PLAINTEXT", user=carol, password="carol-pw", mechanism="SCRAM-SHA-512")
    ck_roundtrip(addr(scram, "SASL_PLAINTEXT"), conf, n=10)

    # a new password replaces the old one
    assert alter(a, [upsert(carol, "SCRAM-SHA-512", 4096, "carol-pw2")]) == {carol: None}
    assert described(a, [carol]) == {carol: [("SCRAM-SHA-512", 4096)]}
    auth_refused(scram, pki, "SASL_PLAINTEXT", user=carol, password="carol-pw", mechanism="SCRAM-SHA-512")
    ck_roundtrip(addr(scram, "SASL_SSL"), scram_ck(pki, "SASL_SSL", user=carol, password="carol-pw2",
                                                   mechanism="SCRAM-SHA-512"), n=10)

    assert alter(a, [deletion(carol, "SCRAM-SHA-512")]) == {carol: None}
    got = described(a, [carol])
    assert got[carol][0] == RESOURCE_NOT_FOUND, got
    errors, _ = auth_refused(scram, pki, "SASL_SSL", user=carol, password="carol-pw2", mechanism="SCRAM-SHA-512")
    assert any(invalid_credentials("SCRAM-SHA-512") in e.str() for e in errors), names(errors)
    ck_roundtrip(addr(scram, "SASL_SSL"), scram_ck(pki, "SASL_SSL"), n=10)


def test_ck_admin_errors(scram, pki):
    """Per-user errors of AlterUserScramCredentials / DescribeUserScramCredentials, the others in
    the same request unaffected: deleting a credential that does not exist (RESOURCE_NOT_FOUND,
    also a mechanism the user lacks), 100 and 20000 iterations (UNACCEPTABLE_CREDENTIAL), a user
    named twice (DUPLICATE_RESOURCE), describing an unknown user (RESOURCE_NOT_FOUND)."""
    a = admin(scram, pki)
    tag = uuid.uuid4().hex[:6]
    ok, dup, low, high, ghost = (f"{n}-{tag}" for n in ("ok", "dup", "low", "high", "ghost"))
    got = alter(a, [
        upsert(ok, "SCRAM-SHA-256", 4096, "ok-pw"),
        deletion(ghost, "SCRAM-SHA-256"),
        deletion("alice", "SCRAM-SHA-256"),  # alice only has SCRAM-SHA-512
        upsert(low, "SCRAM-SHA-512", 100, "pw"),
        upsert(high, "SCRAM-SHA-512", 20000, "pw"),
        upsert(dup, "SCRAM-SHA-512", 4096, "pw"),
        deletion(dup, "SCRAM-SHA-256"),
    ])
    codes_ = {u: (o[0] if o else None) for u, o in got.items()}
    assert codes_ == {ok: None, ghost: RESOURCE_NOT_FOUND, "alice": RESOURCE_NOT_FOUND,
                      low: UNACCEPTABLE_CREDENTIAL, high: UNACCEPTABLE_CREDENTIAL,
                      dup: DUPLICATE_RESOURCE}, got
    # nothing was written for the failed users; alice keeps her SCRAM-SHA-512 credential
    d = described(a, ["alice", ok, ghost, low, high, dup])
    assert d["alice"] == [("SCRAM-SHA-512", 4096)] and d[ok] == [("SCRAM-SHA-256", 4096)], d
    assert {u: d[u][0] for u in (ghost, low, high, dup)} == dict.fromkeys((ghost, low, high, dup),
                                                                          RESOURCE_NOT_FOUND), d
    # iterations at both bounds are accepted
    assert alter(a, [upsert(low, "SCRAM-SHA-512", 4096, "pw"), upsert(high, "SCRAM-SHA-256", 16384, "pw")]) == {
        low: None, high: None}
    assert described(a, [low, high]) == {low: [("SCRAM-SHA-512", 4096)], high: [("SCRAM-SHA-256", 16384)]}
    ck_roundtrip(addr(scram, "SASL_PLAINTEXT"), scram_ck(pki, "SASL_PLAINTEXT", user=high, password="pw",
                                                         mechanism="SCRAM-SHA-256"), n=10)
    assert alter(a, [deletion(x, m) for x, m in ((ok, "SCRAM-SHA-256"), (low, "SCRAM-SHA-512"),
                                                 (high, "SCRAM-SHA-256"))]) == dict.fromkeys((ok, low, high))


# ------------------------------------------------------------------ raw SCRAM exchange

def scram_client_final(mechanism, user, password, client_first_bare, server_first, nonce=None):
    """RFC 5802 client side: (client-final message, expected server signature). `nonce`: what
    to send as the final nonce instead of the server's (which the proof then covers)."""
    h = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = hashlib.new(h, client_key).digest()
    without_proof = f"c=biws,r={attrs['r'] if nonce is None else nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, h).digest()
    proof = bytes(x ^ y for x, y in zip(client_key, signature))
    server_key = hmac.new(salted, b"Server Key", h).digest()
    server_signature = hmac.new(server_key, auth_message, h).digest()
    return (f"{without_proof},p={base64.b64encode(proof).decode()}",
            f"v={base64.b64encode(server_signature).decode()}")


def scram_first(conn, user):
    """ApiVersions, SaslHandshake v1 and the client-first message as `user` (with the user's
    mechanism) on a Raw connection; checks the server-first message. Returns (client-first-bare,
    server-first)."""
    mechanism, _, iterations = FORMATTED[user]
    assert conn.call(ApiVersionsRequest, 0).error_code == NONE
    hs = conn.call(SaslHandshakeRequest, 1, mechanism=mechanism)
    assert (hs.error_code, sorted(hs.mechanisms)) == (NONE, MECHANISMS), hs
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    bare = f"n={user},r={nonce}"
    au = conn.call(SaslAuthenticateRequest, 1, auth_bytes=f"n,,{bare}".encode())
    assert au.error_code == NONE, au
    server_first = au.auth_bytes.decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(nonce) and len(attrs["r"]) > len(nonce), server_first
    assert int(attrs["i"]) == iterations and base64.b64decode(attrs["s"]), server_first
    return bare, server_first


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_raw_scram_exchange(scram, pki, listener, user, closer):
    """SaslHandshake v1 lists exactly SCRAM-SHA-256 and SCRAM-SHA-512 and refuses PLAIN
    (UNSUPPORTED_SASL_MECHANISM); the server-first message extends the client nonce and carries
    the salt and the credential's iterations; the server signature in server-final verifies;
    Metadata then names this listener. A wrong proof answers SASL_AUTHENTICATION_FAILED with
    Kafka's message and closes the connection."""
    mechanism, password, _ = FORMATTED[user]
    port, ca = scram.ports[listener], ca_for(pki, listener)
    c = closer(Raw(port, ca))
    hs = c.call(SaslHandshakeRequest, 1, mechanism="PLAIN")
    assert (hs.error_code, sorted(hs.mechanisms)) == (UNSUPPORTED_SASL_MECHANISM, MECHANISMS), hs

    c = closer(Raw(port, ca))
    bare, server_first = scram_first(c, user)
    final, server_final = scram_client_final(mechanism, user, password, bare, server_first)
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=final.encode())
    assert au.error_code == NONE, au
    assert au.auth_bytes.decode() == server_final, (au.auth_bytes, server_final)
    md = c.call(MetadataRequest, 1, topics=None)
    assert [(b.node_id, b.host, b.port) for b in md.brokers] == [(1, "127.0.0.1", port)], md.brokers

    mark = LogMark(scram)
    c = closer(Raw(port, ca))
    bare, server_first = scram_first(c, user)
    final, _ = scram_client_final(mechanism, user, "wrong-password", bare, server_first)
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=final.encode())
    assert (au.error_code, au.error_message) == (SASL_AUTHENTICATION_FAILED, invalid_credentials(mechanism)), au
    assert read_to_eof(c.sock) == b"", "more bytes after the failed SaslAuthenticate answer"
    mark.wait_for(SASL_FAILED)


def test_raw_scram_final_nonce(scram, closer):
    """The client-final nonce: librdkafka before 2.6.1 sends its own nonce followed by the
    server's whole nonce (which starts with the client's again); Kafka accepts any final nonce
    ending with the server's since 3.8.1 (KAFKA-17495), and so must Strata. A nonce that does not
    end with the server's fails with Kafka's message, even with a proof over it."""
    port = scram.ports["SASL_PLAINTEXT"]
    c = closer(Raw(port))
    bare, server_first = scram_first(c, "alice")
    client_nonce = bare.split(",r=", 1)[1]
    server_nonce = dict(kv.split("=", 1) for kv in server_first.split(","))["r"]
    final, server_final = scram_client_final("SCRAM-SHA-512", "alice", "alice-secret", bare, server_first,
                                             nonce=client_nonce + server_nonce)
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=final.encode())
    assert (au.error_code, au.auth_bytes.decode()) == (NONE, server_final), au
    assert c.call(MetadataRequest, 1, topics=None).brokers, "no Metadata after the doubled-nonce login"

    mark = LogMark(scram)
    c = closer(Raw(port))
    bare, server_first = scram_first(c, "alice")
    server_nonce = dict(kv.split("=", 1) for kv in server_first.split(","))["r"]
    final, _ = scram_client_final("SCRAM-SHA-512", "alice", "alice-secret", bare, server_first,
                                  nonce=server_nonce + "x")
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=final.encode())
    assert (au.error_code, au.error_message) == (SASL_AUTHENTICATION_FAILED, invalid_credentials("SCRAM-SHA-512")), au
    assert read_to_eof(c.sock) == b""
    mark.wait_for(SASL_FAILED)


# ------------------------------------------------------------------ restart (keep this test last)

def test_credentials_survive_restart(scram, pki):
    """Credentials live in the cluster metadata: after a SIGTERM restart a user created through
    the admin API logs in with its password, one deleted before the restart stays refused, and the
    formatted users still log in."""
    a = admin(scram, pki)
    tag = uuid.uuid4().hex[:6]
    erin, gone = f"erin-{tag}", f"gone-{tag}"
    assert alter(a, [upsert(erin, "SCRAM-SHA-256", 12000, "erin-pw"),
                     upsert(gone, "SCRAM-SHA-512", 4096, "gone-pw")]) == {erin: None, gone: None}
    assert alter(a, [deletion(gone, "SCRAM-SHA-512")]) == {gone: None}
    scram.restart()
    ck_roundtrip(addr(scram, "SASL_SSL"), scram_ck(pki, "SASL_SSL", user=erin, password="erin-pw",
                                                   mechanism="SCRAM-SHA-256"), n=10)
    ck_roundtrip(addr(scram, "SASL_PLAINTEXT"), scram_ck(pki, "SASL_PLAINTEXT", user="bob"), n=10)
    a = admin(scram, pki)
    d = described(a, ["alice", "bob", erin, gone])
    assert d["alice"] == [("SCRAM-SHA-512", 4096)] and d["bob"] == [("SCRAM-SHA-256", 8192)], d
    assert d[erin] == [("SCRAM-SHA-256", 12000)] and d[gone][0] == RESOURCE_NOT_FOUND, d
    auth_refused(scram, pki, "SASL_SSL", user=gone, password="gone-pw", mechanism="SCRAM-SHA-512")
