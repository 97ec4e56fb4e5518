"""TLS (SSL listeners, mTLS) and SASL/PLAIN (SASL_SSL, SASL_PLAINTEXT) with real clients.

The PKI comes from `security_util.make_pki` (openssl CLI, once per session). Brokers:

- `secure` (module-scoped): PLAINTEXT (readiness probe), SSL, SASL_SSL and SASL_PLAINTEXT,
  keystore from one PEM file (key + chain), PEM truststore, PLAIN users alice and bob on
  both SASL listeners;
- `mtls` (module-scoped): PLAINTEXT + SSL with `listener.name.ssl.ssl.client.auth=required`
  and `ssl.principal.mapping.rules`;
- per test: the encrypted keystore (`ssl.key.password`), the inline keystore
  (`ssl.keystore.key` / `ssl.keystore.certificate.chain`), custom listener names,
  `ssl.client.auth=requested`; and bad TLS configs, which must stop the broker at startup
  with an error naming the problem.

Clients: confluent-kafka (librdkafka 2.16), kcat (librdkafka 2.0.2), kafka-python, aiokafka,
kafkajs (node/kafkajs_security.js), kafka-clients 3.9.1 (java/StrataSecurity.java), and raw
requests (kafka-python's protocol classes) where the exact answer is the point.

SCRAM-SHA-256/512 is tested in test_scram.py and OAUTHBEARER in test_oauth.py; the brokers here
set sasl.enabled.mechanisms=PLAIN, so SaslHandshake for SCRAM-SHA-256 must answer
UNSUPPORTED_SASL_MECHANISM (test_raw_sasl_plain_exchange). PLAIN's users come from
listener.name.NAME.plain.sasl.jaas.config, or from a JAAS file (test_plain_users_from_a_jaas_file).

The last tests check that secrets (PLAIN passwords in sasl.jaas.config, ssl.key.password, an
inline ssl.keystore.key) never reach the broker's log, as Kafka prints them as [hidden].

Refusals (wrong password, untrusted client certificate, a client not trusting the broker's CA,
plaintext bytes on a TLS port, a SASL client on an SSL listener, a request before SASL
authentication) each fail the client quickly, leave a line in the broker log (where Kafka's
broker would log one), and the broker keeps serving: a good client round-trips afterwards.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from kafka.protocol.api_header import ResponseClassRegistry
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from conftest import Broker
from e2e_util import E2E_DIR, RDKAFKA_LOGGER, free_port, java_program, recv_exact, wait_until
from security_util import (
    KEY_PASSWORD,
    USERS,
    LogMark,
    aiokafka_kwargs,
    ck_security,
    java_props,
    kafka_python_kwargs,
    kafkajs_conf,
    kcat_args,
    listener_sets,
    make_pki,
    sasl_plain_sets,
    tls_sets,
    write_properties,
)

KCAT = shutil.which("kcat")
NODE = shutil.which("node")
NODE_DIR = E2E_DIR / "node"
PARTS = 2
N = 100

TLS_FAILED = r"TLS handshake failed"
# the client's certificate reached the broker and was refused (not "peer sent no certificates")
TLS_CERT_REFUSED = r"TLS handshake failed(?!.*no certificates)"
SASL_FAILED = r"SASL authentication failed"

# Kafka error codes
NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58


# ================================================================== brokers

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


_SHARED: list[Broker] = []  # module-scoped brokers, attached to failing reports


class _Brokers:
    """request.node._strata_brokers for conftest's report hook: the test's own brokers
    (broker_factory's list, which may still grow) and the shared ones."""

    def __init__(self, own):
        self.own = own

    def __iter__(self):
        yield from self.own
        yield from _SHARED

    def __bool__(self):
        return bool(self.own) or bool(_SHARED)


@pytest.fixture(autouse=True)
def _shared_broker_checks(request, broker_factory):
    own = getattr(request.node, "_strata_brokers", [])
    request.node._strata_brokers = _Brokers(own)
    marks = {b.name: LogMark(b) for b in _SHARED}
    yield
    panics = []
    for b in _SHARED:
        text = marks[b.name].text() if b.name in marks else b.log_text()
        panics += [f"{b.name}: {l}" for l in text.splitlines() if "panicked" in l]
    if panics:
        pytest.fail("shared broker log contains 'panicked':\n" + "\n".join(panics), pytrace=False)


def configure(b: Broker, listeners: dict[str, str], *sets: str) -> Broker:
    """Adds secure listeners to a not yet started Broker: `listeners` maps listener name ->
    security protocol (a name that is not a protocol goes into listener.security.protocol.map).
    The broker's own port stays the PLAINTEXT listener (its readiness probe). b.ports: name -> port."""
    ports = {"PLAINTEXT": b.port}
    ports.update({name: free_port() for name in listeners})
    b.ports = ports
    b.sets += listener_sets(ports) + list(sets)
    custom = {n: p for n, p in listeners.items() if n != p}
    if custom:
        proto_map = {"PLAINTEXT": "PLAINTEXT", **listeners}
        b.sets.append("listener.security.protocol.map=" + ",".join(f"{n}:{p}" for n, p in proto_map.items()))
    return b


def addr(b: Broker, listener: str) -> str:
    return f"127.0.0.1:{b.ports[listener]}"


def _shared(tmp_path_factory, name, listeners, sets):
    b = Broker(tmp_path_factory.mktemp(name), name=name)
    configure(b, listeners, *sets)
    _SHARED.append(b)
    try:
        b.start()
    except BaseException:
        _SHARED.remove(b)
        b.cleanup()
        raise
    return b


@pytest.fixture(scope="module")
def secure(tmp_path_factory, pki):
    """PLAINTEXT, SSL, SASL_SSL and SASL_PLAINTEXT (PLAIN: alice, bob)."""
    b = _shared(tmp_path_factory, "secure",
                {"SSL": "SSL", "SASL_SSL": "SASL_SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                tls_sets(pki) + sasl_plain_sets("SASL_SSL", "SASL_PLAINTEXT"))
    yield b
    b.cleanup()
    _SHARED.remove(b)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory, pki):
    """PLAINTEXT and SSL with client certificates required on the SSL listener only."""
    b = _shared(tmp_path_factory, "mtls", {"SSL": "SSL"},
                tls_sets(pki) + ["listener.name.ssl.ssl.client.auth=required",
                                 "ssl.principal.mapping.rules=RULE:^CN=([a-z]+),.*$/$1/,DEFAULT"])
    yield b
    b.cleanup()
    _SHARED.remove(b)


def new_topic(prefix="sec"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ================================================================== confluent-kafka

def ck(bootstrap, conf, **extra):
    c = {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER, "socket.timeout.ms": 10000}
    c.update(conf)
    c.update(extra)
    return c


def ck_advertised(bootstrap, conf):
    """The brokers Metadata names to a client connected to `bootstrap`: [(id, host, port)]."""
    from confluent_kafka.admin import AdminClient
    md = AdminClient(ck(bootstrap, conf)).list_topics(timeout=15)
    return sorted((b.id, b.host, b.port) for b in md.brokers.values())


def ck_roundtrip(bootstrap, conf, topic=None, n=N):
    """Over one listener with `conf`: create a topic (2 partitions), produce n records acks=all,
    read them back with a group-free consumer; asserts every record."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = topic or new_topic("ck")
    admin = AdminClient(ck(bootstrap, conf))
    admin.create_topics([NewTopic(topic, num_partitions=PARTS, replication_factor=1)],
                        operation_timeout=20, request_timeout=20)[topic].result(30)

    def ready():
        t = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == PARTS and all(
            p.leader >= 0 for p in t.partitions.values())
    wait_until(ready, 20, 0.1, f"{topic} not ready over {bootstrap}")

    errors = []
    p = Producer(ck(bootstrap, conf, acks="all", **{"linger.ms": 5}))
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"ck-sec-{i}".encode(), partition=i % PARTS,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0, f"{len(p)} records undelivered over {bootstrap}"
    assert errors == [], f"delivery errors over {bootstrap}: {errors[:5]}"

    c = Consumer(ck(bootstrap, conf, **{"group.id": "strata-e2e-unused", "enable.auto.commit": False,
                                        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100}))
    got = {q: [] for q in range(PARTS)}
    try:
        c.assign([TopicPartition(topic, q, 0) for q in range(PARTS)])
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < n:
            assert time.monotonic() < deadline, f"read {sum(map(len, got.values()))} of {n} over {bootstrap}"
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise AssertionError(f"consumer error over {bootstrap}: {m.error()}")
                    continue
                got[m.partition()].append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    for q in range(PARTS):
        exp = [(off, f"k{i}".encode(), f"ck-sec-{i}".encode())
               for off, i in enumerate(range(q, n, PARTS))]
        assert got[q] == exp, f"partition {q} over {bootstrap}: first records {got[q][:3]}, expected {exp[:3]}"
    return topic


def ck_failure(bootstrap, conf, timeout=15.0):
    """A producer with `conf` that must NOT get metadata: returns the errors its error_cb
    reported (waits for the first one at most `timeout` s, then 0.5 s more)."""
    from confluent_kafka import KafkaException, Producer
    errors = []
    p = Producer(ck(bootstrap, conf, error_cb=errors.append, **{"reconnect.backoff.ms": 500}))
    t0 = time.monotonic()
    while not errors and time.monotonic() - t0 < timeout:
        p.poll(0.1)
    elapsed = time.monotonic() - t0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        p.poll(0.1)
    assert errors, f"no client error within {timeout}s"
    try:
        md = p.list_topics(timeout=1)
        got = sorted((b.id, b.port) for b in md.brokers.values())
        raise AssertionError(f"the client got metadata (brokers {got}) although it should be refused; "
                             f"its errors: {[str(e) for e in errors]}")
    except KafkaException:
        pass
    return errors, elapsed


def names(errors):
    return [f"{e.name()}: {e.str()}" for e in errors]


def codes(errors):
    return {e.code() for e in errors}


# ------------------------------------------------------------------ happy paths

def test_ck_ssl_produce_consume(secure, pki):
    """librdkafka over SSL (server cert verified for 127.0.0.1): Metadata answers with the SSL
    listener's endpoint, and a produce/consume round trip."""
    conf = ck_security(pki, "SSL")
    assert ck_advertised(addr(secure, "SSL"), conf) == [(1, "127.0.0.1", secure.ports["SSL"])]
    ck_roundtrip(addr(secure, "SSL"), conf)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_ck_sasl_plain_produce_consume(secure, pki, protocol):
    """librdkafka with SASL/PLAIN (users alice and bob) over SASL_SSL and SASL_PLAINTEXT."""
    conf = ck_security(pki, protocol, user="alice")
    assert ck_advertised(addr(secure, protocol), conf) == [(1, "127.0.0.1", secure.ports[protocol])]
    topic = ck_roundtrip(addr(secure, protocol), conf)
    # the second user of the JAAS config reads what alice wrote
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(ck(addr(secure, protocol), ck_security(pki, protocol, user="bob"),
                    **{"group.id": "strata-e2e-unused"}))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)
    finally:
        c.close()
    assert (lo, hi) == (0, len(range(0, N, PARTS))), (lo, hi)


def test_ck_mtls_produce_consume(mtls, pki):
    """ssl.client.auth=required on the SSL listener: a client with a certificate from the
    trusted CA (CN=alice,OU=eng,O=Strata) round-trips; the PLAINTEXT listener is unaffected."""
    conf = ck_security(pki, "SSL", cert="alice")
    assert ck_advertised(addr(mtls, "SSL"), conf) == [(1, "127.0.0.1", mtls.ports["SSL"])]
    ck_roundtrip(addr(mtls, "SSL"), conf)
    ck_roundtrip(mtls.bootstrap, {})


@pytest.mark.parametrize("keystore", ["encrypted", "inline"])
def test_ck_keystore_forms(broker_factory, pki, keystore):
    """The server keystore as an encrypted PKCS#8 PEM (ssl.key.password), and inline
    (ssl.keystore.key + ssl.keystore.certificate.chain as PEM text)."""
    b = configure(broker_factory(start=False), {"SSL": "SSL"}, *tls_sets(pki, keystore))
    b.start()
    ck_roundtrip(addr(b, "SSL"), ck_security(pki, "SSL"))


def test_custom_listener_names(broker_factory, pki):
    """listener.security.protocol.map with custom names: INTERNAL (PLAINTEXT, the inter-broker
    listener), EXTERNAL (SSL) and PARTNERS (SSL with a per-listener
    listener.name.partners.ssl.client.auth=required). Metadata answers each client with the
    endpoint of the listener it came in on."""
    b = broker_factory(start=False)
    b.sets += ["inter.broker.listener.name=INTERNAL"]
    ports = {"INTERNAL": b.port, "EXTERNAL": free_port(), "PARTNERS": free_port()}
    b.ports = ports
    b.sets += listener_sets(ports) + tls_sets(pki) + [
        "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:SSL,PARTNERS:SSL",
        "listener.name.partners.ssl.client.auth=required"]
    b.start()
    ssl_conf = ck_security(pki, "SSL")
    assert ck_advertised(addr(b, "EXTERNAL"), ssl_conf) == [(1, "127.0.0.1", ports["EXTERNAL"])]
    assert ck_advertised(addr(b, "INTERNAL"), {}) == [(1, "127.0.0.1", ports["INTERNAL"])]
    mtls_conf = ck_security(pki, "SSL", cert="alice")
    assert ck_advertised(addr(b, "PARTNERS"), mtls_conf) == [(1, "127.0.0.1", ports["PARTNERS"])]
    topic = ck_roundtrip(addr(b, "EXTERNAL"), ssl_conf)
    ck_roundtrip(addr(b, "PARTNERS"), mtls_conf)
    # one broker behind all three: the topic made through EXTERNAL is seen through INTERNAL
    from confluent_kafka.admin import AdminClient
    t = AdminClient(ck(b.bootstrap, {})).list_topics(topic=topic, timeout=10).topics[topic]
    assert t.error is None and len(t.partitions) == PARTS, t
    # no client certificate: refused on PARTNERS only (EXTERNAL just served ssl_conf)
    mark = LogMark(b)
    ck_failure(addr(b, "PARTNERS"), ssl_conf)
    assert "PARTNERS" in mark.wait_for(TLS_FAILED)
    ck_roundtrip(addr(b, "PARTNERS"), mtls_conf, n=10)


# ------------------------------------------------------------------ kcat (librdkafka 2.0.2)

def kcat(bootstrap, sec, *args, input=None, timeout=30):
    if KCAT is None:
        pytest.fail("kcat not found: run scripts/install-test-deps.sh")
    cmd = [KCAT, "-b", bootstrap, "-m", "10", *sec, *args]
    try:
        r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} hung; stderr:\n{(e.stderr or b'').decode(errors='replace')[-3000:]}")
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}; stderr:\n{r.stderr.decode(errors='replace')[-3000:]}"
    return r.stdout.decode()


@pytest.mark.kcat
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_kcat(secure, pki, protocol):
    """kcat (librdkafka 2.0.2): -L metadata names the listener's endpoint, -P then -C -e."""
    bs, sec = addr(secure, protocol), kcat_args(pki, protocol)
    topic = new_topic("kcat")
    ck_roundtrip(bs, ck_security(pki, protocol), topic=topic, n=2)  # creates the topic
    md = json.loads(kcat(bs, sec, "-L", "-J", "-t", topic))
    assert [(x["id"], x["name"]) for x in md["brokers"]] == [(1, bs)], md["brokers"]
    assert [t["topic"] for t in md["topics"]] == [topic] and "error" not in md["topics"][0], md["topics"]
    lines = [f"key{i}\tkcat {protocol} {i}" for i in range(50)]
    kcat(bs, sec, "-P", "-t", topic, "-p", "1", "-K", "\t", input=("\n".join(lines) + "\n").encode())
    out = kcat(bs, sec, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-J")
    got = [json.loads(l) for l in out.splitlines() if l.strip()]
    # partition 1 holds ck_roundtrip's record 1, then kcat's 50
    assert [(m["offset"], m["key"], m["payload"]) for m in got] == [(0, "k1", "ck-sec-1")] + [
        (i + 1, f"key{i}", f"kcat {protocol} {i}") for i in range(50)], got[:3]


# ------------------------------------------------------------------ kafka-python, aiokafka

def _kafka_python_roundtrip(bs, kw, topic, closer):
    """kafka-python 3 with `kw` (its security settings) against `bs`: admin create (PARTS
    partitions), N records acks=all, read back by an assign() consumer; asserts every record."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    admin = closer(KafkaAdminClient(bootstrap_servers=bs, request_timeout_ms=20000, **kw))
    admin.create_topics([NewTopic(topic, num_partitions=PARTS, replication_factor=1)], timeout_ms=20000)
    wait_until(lambda: topic in admin.list_topics(), 20, 0.2, f"{topic} not listed")
    prod = closer(KafkaProducer(bootstrap_servers=bs, acks="all", **kw))
    metas = [prod.send(topic, key=f"k{i}".encode(), value=f"kpy-{i}".encode(), partition=i % PARTS)
             for i in range(N)]
    prod.flush(30)
    acked = [f.get(timeout=30) for f in metas]
    assert [(m.partition, m.offset) for m in acked] == [(i % PARTS, i // PARTS) for i in range(N)]
    cons = closer(KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100, **kw))
    tps = [TopicPartition(topic, q) for q in range(PARTS)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < N:
        assert time.monotonic() < deadline, f"read {len(got)} of {N}"
        for _, msgs in cons.poll(timeout_ms=500).items():
            got += [(m.partition, m.offset, m.key, m.value) for m in msgs]
    assert sorted(got) == sorted((i % PARTS, i // PARTS, f"k{i}".encode(), f"kpy-{i}".encode())
                                 for i in range(N))


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_kafka_python(secure, pki, protocol, closer):
    _kafka_python_roundtrip(addr(secure, protocol), kafka_python_kwargs(pki, protocol), new_topic("kpy"), closer)


async def _aiokafka_scenario(bs, kw, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=bs, **kw)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTS, replication_factor=1)])
        for _ in range(100):
            md = await admin.describe_topics([topic])
            if md and md[0].get("error_code", 0) == 0 and len(md[0].get("partitions", [])) == PARTS:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"describe_topics never showed {PARTS} partitions: {md}")
    finally:
        await admin.close()
    prod = AIOKafkaProducer(bootstrap_servers=bs, acks="all", **kw)
    await prod.start()
    try:
        futs = [await prod.send(topic, key=f"k{i}".encode(), value=f"aio-{i}".encode(), partition=i % PARTS)
                for i in range(N)]
        metas = await asyncio.gather(*futs)
    finally:
        await prod.stop()
    cons = AIOKafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100, **kw)
    await cons.start()
    got = []
    try:
        tps = [TopicPartition(topic, q) for q in range(PARTS)]
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)

        async def drain():
            while len(got) < N:
                for _, msgs in (await cons.getmany(timeout_ms=500)).items():
                    got.extend((m.partition, m.offset, m.key, m.value) for m in msgs)
        await asyncio.wait_for(drain(), 30)
    finally:
        await cons.stop()
    return [(m.partition, m.offset) for m in metas], got


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_aiokafka(secure, pki, protocol):
    bs, kw = addr(secure, protocol), aiokafka_kwargs(pki, protocol)
    acked, got = asyncio.run(_aiokafka_scenario(bs, kw, new_topic("aio")))
    assert acked == [(i % PARTS, i // PARTS) for i in range(N)]
    assert sorted(got) == sorted((i % PARTS, i // PARTS, f"k{i}".encode(), f"aio-{i}".encode())
                                 for i in range(N))


# ------------------------------------------------------------------ kafkajs

def run_kafkajs(bootstrap, topic, conf, n=N, timeout=60):
    if NODE is None:
        pytest.fail("node not found: run scripts/install-test-deps.sh")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("tests/e2e/node/node_modules missing: run scripts/install-test-deps.sh")
    cmd = [NODE, str(NODE_DIR / "kafkajs_security.js"), bootstrap, topic, str(n), json.dumps(conf)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kafkajs hung; stderr:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT from kafkajs (exit {r.returncode}); stderr:\n{r.stderr[-4000:]}"
    return json.loads(lines[-1]), r.stderr


@pytest.mark.node
def test_kafkajs_sasl_ssl(secure, pki):
    """kafkajs over SASL_SSL/PLAIN: admin create + metadata + produce; read back with librdkafka."""
    bs, topic = addr(secure, "SASL_SSL"), new_topic("kjs")
    res, err = run_kafkajs(bs, topic, kafkajs_conf(pki, "SASL_SSL"))
    assert "error" not in res, f"kafkajs failed: {res}\nstderr:\n{err[-4000:]}"
    assert res["brokers"] == [f"1@127.0.0.1:{secure.ports['SASL_SSL']}"], res["brokers"]
    assert all(s["errorCode"] == 0 for s in res["sent"]), res["sent"]
    assert {o["partition"]: (int(o["low"]), int(o["high"])) for o in res["offsets"]} == {
        q: (0, len(range(q, N, PARTS))) for q in range(PARTS)}, res["offsets"]
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(ck(bs, ck_security(pki, "SASL_SSL"), **{"group.id": "strata-e2e-unused",
                                                          "auto.offset.reset": "earliest"}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < len(range(0, N, PARTS)) and time.monotonic() < deadline:
            got += [(m.offset(), m.key(), m.value()) for m in c.consume(100, 0.5) if not m.error()]
    finally:
        c.close()
    assert got == [(o, f"k{i}".encode(), f"kafkajs-sec-{i}".encode()) for o, i in enumerate(range(0, N, PARTS))]


@pytest.mark.node
def test_kafkajs_wrong_password(secure, pki):
    mark = LogMark(secure)
    t0 = time.monotonic()
    res, err = run_kafkajs(addr(secure, "SASL_SSL"), new_topic("kjs"),
                           kafkajs_conf(pki, "SASL_SSL", password="not-the-password"))
    assert "KafkaJSSASLAuthenticationError" in res.get("causes", []), f"kafkajs: {res}\nstderr:\n{err[-3000:]}"
    assert time.monotonic() - t0 < 20
    mark.wait_for(SASL_FAILED)
    ck_roundtrip(addr(secure, "SASL_SSL"), ck_security(pki, "SASL_SSL"), n=10)


# ------------------------------------------------------------------ Java kafka-clients 3.9.1

@pytest.fixture(scope="session")
def java_security(tmp_path_factory):
    return java_program("3", E2E_DIR / "java" / "StrataSecurity.java", tmp_path_factory.mktemp("java-sec"))


def run_java(cmd, bootstrap, props, tmp_path, topic=None, n=N, timeout=90):
    f = write_properties(tmp_path / f"client-{uuid.uuid4().hex[:6]}.properties",
                         {"bootstrap.servers": bootstrap, **props})
    try:
        r = subprocess.run(cmd + [str(f), topic or new_topic("java"), str(n)], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java client hung; stderr:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"java exited {r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-4000:]}"
    return json.loads(lines[-1]), r.stderr


def assert_java_ok(res, err, port):
    assert res["ok"] is True, f"java client failed: {res}\nstderr:\n{err[-4000:]}"
    assert res["nodes"] == [f"1@127.0.0.1:{port}"], res["nodes"]
    assert res["produced"] == N and res["consumed"] == N and res["mismatches"] == [], res


@pytest.mark.java
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_java(secure, pki, java_security, tmp_path, protocol):
    """kafka-clients 3.9.1 with a PEM truststore (ssl.truststore.type=PEM), over SSL and
    SASL_SSL/PLAIN: admin, acks=all producer, assign() consumer."""
    res, err = run_java(java_security, addr(secure, protocol), java_props(pki, protocol), tmp_path)
    assert_java_ok(res, err, secure.ports[protocol])


@pytest.mark.java
def test_java_mtls(mtls, pki, java_security, tmp_path):
    """kafka-clients with a PEM keystore (key + certificate of alice) against a listener
    requiring client certificates."""
    res, err = run_java(java_security, addr(mtls, "SSL"), java_props(pki, "SSL", cert="alice"), tmp_path)
    assert_java_ok(res, err, mtls.ports["SSL"])


def test_client_auth_requested(broker_factory, pki):
    """ssl.client.auth=requested (listener REQ via listener.name.req.ssl.client.auth): a client
    without a certificate and one with a trusted certificate are served; a certificate the
    truststore does not vouch for fails the handshake (as Kafka's setWantClientAuth)."""
    b = configure(broker_factory(start=False), {"REQ": "SSL"}, *tls_sets(pki),
                  "listener.name.req.ssl.client.auth=requested")
    b.start()
    ck_roundtrip(addr(b, "REQ"), ck_security(pki, "SSL"), n=10)
    ck_roundtrip(addr(b, "REQ"), ck_security(pki, "SSL", cert="alice"), n=10)
    mark = LogMark(b)
    ck_failure(addr(b, "REQ"), ck_security(pki, "SSL", cert="mallory"))
    mark.wait_for(TLS_CERT_REFUSED)


def _mismatched_keystore(pki):
    path = pki.dir / "mismatched-keystore.pem"  # alice's key with the server's certificate
    path.write_text(pki.text("alice.key") + pki.text("server.pem") + pki.text("ca.pem"))
    return str(path)


BAD_TLS_CONFIGS = {
    # case: (sets(pki), regex the broker's error output must match)
    "wrong-key-password": (lambda pki: tls_sets(pki, "encrypted")[:-1] + ["ssl.key.password=wrong"],
                           r"ssl\.key\.password"),
    "encrypted-no-password": (lambda pki: tls_sets(pki, "encrypted")[:-1], r"ssl\.key\.password"),
    "missing-keystore-file": (lambda pki: ["ssl.keystore.type=PEM", "ssl.keystore.location=/nonexistent/ks.pem"],
                              r"/nonexistent/ks\.pem"),
    "no-keystore": (lambda pki: [], r"ssl\.keystore"),
    "no-private-key": (lambda pki: ["ssl.keystore.type=PEM", f"ssl.keystore.location={pki.ca}"], r"private key"),
    "key-certificate-mismatch": (lambda pki: ["ssl.keystore.type=PEM",
                                              f"ssl.keystore.location={_mismatched_keystore(pki)}"],
                                 r"key|certificate"),
    "jks-keystore": (lambda pki: ["ssl.keystore.type=JKS", f"ssl.keystore.location={pki.server_keystore}"],
                     r"JKS|PEM"),
    "bad-client-auth": (lambda pki: tls_sets(pki) + ["ssl.client.auth=bogus"], r"ssl\.client\.auth"),
}


@pytest.mark.parametrize("case", list(BAD_TLS_CONFIGS))
def test_bad_tls_config_refused(broker_factory, pki, case):
    """A TLS listener the broker cannot serve is a startup error naming the problem (as Kafka
    refuses to start), never a broker that starts and fails every handshake."""
    sets_for, pattern = BAD_TLS_CONFIGS[case]
    b = configure(broker_factory(start=False), {"SSL": "SSL"}, *sets_for(pki))
    b.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(b.argv(), capture_output=True, text=True, timeout=20, cwd=b.workdir)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{case}: the broker did not exit within 20 s (it should refuse the config)")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{case}: exit 0\n{out[-3000:]}"
    assert re.search(pattern, out, re.I), f"{case}: exit {r.returncode}, no /{pattern}/ in:\n{out[-3000:]}"
    assert "panicked" not in out, out[-3000:]


# ================================================================== a JAAS file

JAAS_FILE = """// a Kafka broker's JAAS file: one section per listener, KafkaServer for the others
sasl_plaintext.KafkaServer {
    org.apache.kafka.common.security.plain.PlainLoginModule required
        user_alice="alice-secret"
        user_bob="bob;secret";   /* a ';' inside a quoted value */
};
KafkaServer {
    org.apache.kafka.common.security.plain.PlainLoginModule required user_carol="carol-secret";
};
"""


def test_plain_users_from_a_jaas_file(broker_factory, pki, tmp_path, monkeypatch):
    """PLAIN's users from a JAAS file, as Kafka brokers read it (`java.security.auth.login.config`,
    as a config key or in KAFKA_OPTS): the listener's own `sasl_plaintext.KafkaServer` section,
    else `KafkaServer`; a user of one section cannot log in on the other's listener."""
    from confluent_kafka import KafkaError
    jaas = tmp_path / "kafka_server_jaas.conf"
    jaas.write_text(JAAS_FILE)

    def logs_in(b, listener, user, password):
        conf = ck_security(pki, "SASL_PLAINTEXT", user=user, password=password)
        try:
            ck_advertised(addr(b, listener), conf)
            return True
        except Exception:  # noqa: BLE001 - librdkafka's timeout or authentication error
            return False

    b = configure(broker_factory(start=False), {"SASL_PLAINTEXT": "SASL_PLAINTEXT", "OTHER": "SASL_PLAINTEXT"},
                  "sasl.enabled.mechanisms=PLAIN", f"java.security.auth.login.config={jaas}")
    b.start()
    assert logs_in(b, "SASL_PLAINTEXT", "alice", "alice-secret")
    assert logs_in(b, "SASL_PLAINTEXT", "bob", "bob;secret")
    assert logs_in(b, "OTHER", "carol", "carol-secret")
    errors, _ = ck_failure(addr(b, "OTHER"), ck_security(pki, "SASL_PLAINTEXT", user="alice", password="alice-secret"))
    assert KafkaError._AUTHENTICATION in codes(errors), names(errors)
    errors, _ = ck_failure(addr(b, "SASL_PLAINTEXT"), ck_security(pki, "SASL_PLAINTEXT", user="carol",
                                                                  password="carol-secret"))
    assert KafkaError._AUTHENTICATION in codes(errors), names(errors)
    b.stop()

    # The same file through KAFKA_OPTS, as Kafka's scripts and images pass it.
    monkeypatch.setenv("KAFKA_OPTS", f"-Xmx1G -Djava.security.auth.login.config={jaas}")
    b2 = configure(broker_factory(start=False), {"SASL_PLAINTEXT": "SASL_PLAINTEXT"}, "sasl.enabled.mechanisms=PLAIN")
    b2.start()
    assert logs_in(b2, "SASL_PLAINTEXT", "alice", "alice-secret")


# ================================================================== refusals

@pytest.mark.parametrize("user,password", [("alice", "not-the-password"), ("eve", "alice-secret")],
                         ids=["wrong-password", "unknown-user"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_ck_wrong_password(secure, pki, protocol, user, password):
    """librdkafka reports an authentication error (SaslAuthenticate: SASL_AUTHENTICATION_FAILED)
    within seconds, the broker logs it and keeps serving good clients on the same listener."""
    from confluent_kafka import KafkaError
    mark = LogMark(secure)
    errors, elapsed = ck_failure(addr(secure, protocol), ck_security(pki, protocol, user=user, password=password))
    assert KafkaError._AUTHENTICATION in codes(errors), names(errors)
    assert elapsed < 10, f"authentication error after {elapsed:.1f}s"
    assert any("authentication" in e.str().lower() for e in errors), names(errors)
    mark.wait_for(SASL_FAILED)
    ck_roundtrip(addr(secure, protocol), ck_security(pki, protocol), n=10)


@pytest.mark.java
def test_java_wrong_password(secure, pki, java_security, tmp_path):
    mark = LogMark(secure)
    res, err = run_java(java_security, addr(secure, "SASL_SSL"),
                        java_props(pki, "SASL_SSL", password="not-the-password"), tmp_path)
    assert res["ok"] is False and res["step"] == "admin", res
    assert "org.apache.kafka.common.errors.SaslAuthenticationException" in res["errors"], res
    assert res["elapsed_ms"] < 15000, res
    mark.wait_for(SASL_FAILED)
    res, err = run_java(java_security, addr(secure, "SASL_SSL"), java_props(pki, "SASL_SSL"), tmp_path)
    assert_java_ok(res, err, secure.ports["SASL_SSL"])


@pytest.mark.parametrize("cert", ["mallory", None], ids=["untrusted-cert", "no-cert"])
def test_mtls_refused(mtls, pki, cert):
    """ssl.client.auth=required: a certificate from an untrusted CA, or none, fails the TLS
    handshake; the broker logs it and keeps serving alice."""
    from confluent_kafka import KafkaError
    mark = LogMark(mtls)
    errors, _ = ck_failure(addr(mtls, "SSL"), ck_security(pki, "SSL", cert=cert))
    assert codes(errors) & {KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}, names(errors)
    mark.wait_for(TLS_CERT_REFUSED if cert else TLS_FAILED)
    ck_roundtrip(addr(mtls, "SSL"), ck_security(pki, "SSL", cert="alice"), n=10)


@pytest.mark.java
def test_java_mtls_untrusted_cert(mtls, pki, java_security, tmp_path):
    mark = LogMark(mtls)
    res, err = run_java(java_security, addr(mtls, "SSL"), java_props(pki, "SSL", cert="mallory"), tmp_path)
    assert res["ok"] is False and res["step"] == "admin", res
    assert "org.apache.kafka.common.errors.SslAuthenticationException" in res["errors"], res
    mark.wait_for(TLS_CERT_REFUSED)
    ck_roundtrip(addr(mtls, "SSL"), ck_security(pki, "SSL", cert="alice"), n=10)


def test_client_not_trusting_server_ca(secure, pki):
    """A client trusting only another CA refuses the broker's certificate ('certificate verify
    failed'); the broker logs the failed handshake and keeps serving."""
    from confluent_kafka import KafkaError
    mark = LogMark(secure)
    errors, _ = ck_failure(addr(secure, "SSL"), ck_security(pki, "SSL", ca=pki.rogue_ca))
    # librdkafka reports it as _SSL ("SSL handshake failed: ...") or, when the failure surfaces
    # on a socket read, as _TRANSPORT; the OpenSSL reason is the same
    verify = [e for e in errors if "certificate verify failed" in e.str()]
    assert verify and {e.code() for e in verify} <= {KafkaError._SSL, KafkaError._TRANSPORT}, names(errors)
    mark.wait_for(TLS_FAILED)
    ck_roundtrip(addr(secure, "SSL"), ck_security(pki, "SSL"), n=10)


def test_sasl_client_on_ssl_listener(secure, pki):
    """A SASL_SSL client on the SSL listener: TLS works, SaslHandshake is refused
    (ILLEGAL_SASL_STATE, as Kafka), librdkafka reports an authentication error."""
    from confluent_kafka import KafkaError
    errors, elapsed = ck_failure(addr(secure, "SSL"), ck_security(pki, "SASL_SSL"))
    assert KafkaError._AUTHENTICATION in codes(errors), names(errors)
    assert elapsed < 10, elapsed
    ck_roundtrip(addr(secure, "SSL"), ck_security(pki, "SSL"), n=10)


# ------------------------------------------------------------------ raw sockets

def read_to_eof(sock, timeout=10.0) -> bytes:
    """Everything the peer sends until it closes; AssertionError if it stays open."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
            return data
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s (received {data[:64]!r})")
        if not chunk:
            return data
        data += chunk
        if time.monotonic() > deadline:
            raise AssertionError(f"connection still open after {timeout}s (received {data[:64]!r})")


def test_plaintext_request_on_ssl_port(secure, pki):
    """A Kafka ApiVersions request in clear text on the SSL port gets no Kafka answer (at most
    a TLS alert record) and the connection is closed; the broker logs it and keeps serving."""
    mark = LogMark(secure)
    req = ApiVersionsRequest[0]()
    req.with_header(correlation_id=1, client_id="strata-e2e-sec")
    with socket.create_connection(("127.0.0.1", secure.ports["SSL"]), timeout=10) as s:
        s.sendall(req.encode(header=True, framed=True))
        data = read_to_eof(s)
    assert data == b"" or data[0] == 0x15, f"expected no answer or a TLS alert, got {data[:64]!r}"
    mark.wait_for(TLS_FAILED)
    ck_roundtrip(addr(secure, "SSL"), ck_security(pki, "SSL"), n=10)


class Raw:
    """One connection (optionally TLS); requests encoded/decoded with kafka-python's classes."""

    def __init__(self, port, tls_ca=None, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        s.settimeout(timeout)
        self.sock, self.corr = s, 0

    def send(self, cls, version, **fields):
        self.corr += 1
        req = cls[version](**fields)
        req.with_header(correlation_id=self.corr, client_id="strata-e2e-sec")
        self.sock.sendall(req.encode(header=True, framed=True))
        return req

    def call(self, cls, version, **fields):
        req = self.send(cls, version, **fields)
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        resp = ResponseClassRegistry.get_response_class(req.header).decode(recv_exact(self.sock, size), header=True)
        assert resp.header.correlation_id == req.header.correlation_id
        return resp

    def close(self):
        self.sock.close()


def ca_for(pki, listener):
    return pki.ca if listener in ("SSL", "SASL_SSL") else None


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_request_before_sasl_authentication_closes(secure, pki, listener, closer):
    """On a SASL listener ApiVersions is answered before authentication (clients need it to
    pick SaslHandshake's version), but Metadata before SaslHandshake/SaslAuthenticate closes the
    connection without an answer (as Kafka)."""
    mark = LogMark(secure)
    c = closer(Raw(secure.ports[listener], ca_for(pki, listener)))
    av = c.call(ApiVersionsRequest, 0)
    assert av.error_code == NONE and av.api_keys, av
    c.send(MetadataRequest, 1, topics=None)
    data = read_to_eof(c.sock)
    assert data == b"", f"the broker answered Metadata before SASL authentication: {data[:64]!r}"
    mark.wait_for(r"before SASL authentication")
    ck_roundtrip(addr(secure, listener), ck_security(pki, listener), n=10)


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_raw_sasl_plain_exchange(secure, pki, listener, closer):
    """SaslHandshake v1 lists exactly the enabled mechanisms (sasl.enabled.mechanisms=PLAIN) and
    refuses SCRAM-SHA-256 with UNSUPPORTED_SASL_MECHANISM; SaslAuthenticate with a wrong password
    answers SASL_AUTHENTICATION_FAILED (58) and closes the connection; with alice's password
    it answers NONE and Metadata then names this listener's endpoint."""
    port, ca = secure.ports[listener], ca_for(pki, listener)
    c = closer(Raw(port, ca))
    hs = c.call(SaslHandshakeRequest, 1, mechanism="SCRAM-SHA-256")
    assert (hs.error_code, list(hs.mechanisms)) == (UNSUPPORTED_SASL_MECHANISM, ["PLAIN"]), hs

    mark = LogMark(secure)
    c = closer(Raw(port, ca))
    hs = c.call(SaslHandshakeRequest, 1, mechanism="PLAIN")
    assert (hs.error_code, list(hs.mechanisms)) == (NONE, ["PLAIN"]), hs
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=b"\x00alice\x00wrong")
    assert au.error_code == SASL_AUTHENTICATION_FAILED, au
    assert read_to_eof(c.sock) == b"", "more bytes after the failed SaslAuthenticate answer"
    mark.wait_for(SASL_FAILED)

    c = closer(Raw(port, ca))
    assert c.call(ApiVersionsRequest, 0).error_code == NONE
    hs = c.call(SaslHandshakeRequest, 1, mechanism="PLAIN")
    assert hs.error_code == NONE, hs
    au = c.call(SaslAuthenticateRequest, 1, auth_bytes=b"\x00alice\x00alice-secret")
    assert au.error_code == NONE, au
    md = c.call(MetadataRequest, 1, topics=None)
    assert [(b.node_id, b.host, b.port) for b in md.brokers] == [(1, "127.0.0.1", port)], md.brokers


# ================================================================== secrets stay out of the log

def broker_output(b: Broker) -> str:
    """What the broker itself wrote to its log (without conftest's '----- [e2e] start' argv
    lines, which carry the --set values, inline PEM included, verbatim)."""
    out = []
    for block in b.log_text().split("----- [e2e] start #")[1:]:
        m = re.search(r"^\d{4}-\d\d-\d\dT", block, re.M)
        out.append(block[m.start():] if m else "")
    return "".join(out)


@pytest.mark.parametrize("form", ["sasl-jaas", "key-password", "inline-key"])
def test_secrets_not_logged(secure, broker_factory, pki, form):
    """Kafka logs password-type configs (sasl.jaas.config, ssl.key.password, ssl.keystore.key)
    as [hidden]; the broker's own log lines (its startup config dump included) must not carry
    the PLAIN users' passwords, the key password or the private key."""
    if form == "sasl-jaas":
        b, secrets = secure, list(USERS.values())
    else:
        b = configure(broker_factory(start=False), {"SSL": "SSL"},
                      *tls_sets(pki, "encrypted" if form == "key-password" else "inline"))
        b.start()
        key_body = pki.text("server.key").splitlines()[5]  # a base64 line inside the private key
        secrets = [KEY_PASSWORD] if form == "key-password" else ["PRIVATE KEY", key_body]
    text = broker_output(b)
    assert "starting strata" in text, "the broker's startup line is missing from its log"
    leaked = [(s, line[:300]) for s in secrets for line in text.splitlines() if s in line]
    assert not leaked, f"secrets in the broker log ({form}): {leaked[:3]}"


# ================================================================== KIP-368 re-authentication, v0 tokens

def test_session_lifetime_and_reauthentication(broker_factory, pki, closer):
    """connections.max.reauth.ms (here per listener): SaslAuthenticate v1 tells the client its
    session lifetime; re-authenticating on the same connection before the end (SaslHandshake +
    SaslAuthenticate again, same user) keeps it serving past the first session's end; a
    connection that does not re-authenticate is closed at its next request after the end,
    re-authenticating as another user is refused, and a request in the middle of a
    re-authentication closes the connection."""
    lifetime_ms = 1500
    b = configure(broker_factory(start=False), {"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
                  "sasl.enabled.mechanisms=PLAIN",
                  "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                  "org.apache.kafka.common.security.plain.PlainLoginModule required "
                  + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";",
                  f"listener.name.sasl_plaintext.connections.max.reauth.ms={lifetime_ms}")
    b.start()
    port = b.ports["SASL_PLAINTEXT"]
    users = list(USERS.items())

    def login(c, user, password):
        assert c.call(SaslHandshakeRequest, 1, mechanism="PLAIN").error_code == NONE
        return c.call(SaslAuthenticateRequest, 1, auth_bytes=f"\x00{user}\x00{password}".encode())

    stays, expires, switches, stalls = closer(Raw(port)), closer(Raw(port)), closer(Raw(port)), closer(Raw(port))
    started = time.monotonic()
    for c in (stays, expires, switches, stalls):
        au = login(c, *users[0])
        assert (au.error_code, au.session_lifetime_ms) == (NONE, lifetime_ms), au
    # Re-authenticate `stays` every half lifetime, past two lifetimes, serving in between.
    while time.monotonic() - started < 2.5 * lifetime_ms / 1000:
        time.sleep(lifetime_ms / 2000)
        au = login(stays, *users[0])
        assert au.error_code == NONE, au
        assert stays.call(MetadataRequest, 1, topics=None).brokers, "re-authenticated connection serves"
    # `expires` did not re-authenticate: its next request closes it, unanswered.
    expires.send(MetadataRequest, 1, topics=None)
    assert read_to_eof(expires.sock) == b"", "a request after the session's end was answered"
    # Another principal on re-authentication: refused, connection closed.
    au = login(switches, *users[1])
    assert au.error_code == SASL_AUTHENTICATION_FAILED, au
    assert read_to_eof(switches.sock) == b""
    # A re-authentication begun and not finished serves nothing (else it would outlive the
    # session): as Kafka, another request in between closes the connection.
    assert stalls.call(SaslHandshakeRequest, 1, mechanism="PLAIN").error_code == NONE
    stalls.send(MetadataRequest, 1, topics=None)
    assert read_to_eof(stalls.sock) == b"", "a request in the middle of a re-authentication was answered"


def test_v0_handshake_exchanges_bare_tokens(secure, pki, closer):
    """After a v0 SaslHandshake (before KIP-152) the SASL tokens travel as bare size-prefixed
    frames: alice's PLAIN token gets an empty bare answer and the connection then serves
    Kafka requests; a wrong password closes the connection without an answer."""
    port = secure.ports["SASL_PLAINTEXT"]
    user, password = next(iter(USERS.items()))
    for token, ok in ((f"\x00{user}\x00{password}".encode(), True), (f"\x00{user}\x00nope".encode(), False)):
        c = closer(Raw(port))
        assert c.call(SaslHandshakeRequest, 0, mechanism="PLAIN").error_code == NONE
        c.sock.sendall(struct.pack(">i", len(token)) + token)
        if ok:
            (size,) = struct.unpack(">i", recv_exact(c.sock, 4))
            assert size == 0, size
            assert c.call(MetadataRequest, 1, topics=None).brokers
        else:
            assert read_to_eof(c.sock) == b""


def test_big_frame_before_authentication_closes(secure, pki, closer):
    """Before a SASL login a frame above sasl.server.max.receive.size (512 KiB) is refused at
    its size prefix: the connection closes without the broker reading (or reserving) it."""
    c = closer(Raw(secure.ports["SASL_PLAINTEXT"]))
    mark = LogMark(secure)
    c.sock.sendall(struct.pack(">i", 600_000) + b"\x00" * 1024)
    assert read_to_eof(c.sock) == b""
    mark.wait_for(r"sasl.server.max.receive.size")
