"""Inter-broker security (issue #16): brokers reach each other (follower fetches, transaction
markers, KIP-890 verifications) on the inter-broker listener with that listener's TLS and SASL,
as Kafka's inter-broker client does. Three nodes on loopback, each with a CLIENT listener
(SASL_PLAINTEXT, PLAIN users admin and alice) for the test's clients, an inter-broker listener
and a PLAINTEXT CONTROLLER listener (Raft and broker->controller traffic are not covered);
`StandardAuthorizer` with the brokers' own principal in `super.users` and User:ANONYMOUS not.

What is checked:
- SASL_SSL + PLAIN (`inter.broker.listener.name=INTERNAL`, `sasl.mechanism.inter.broker.protocol=PLAIN`,
  the `username`/`password` of the INTERNAL JAAS entry): a topic of replication factor 3 with
  min.insync.replicas=3 takes acks=all writes, every ISR is [1,2,3], a consumer reads everything;
  `ss` shows each node's established connections to the other nodes' INTERNAL ports (none to
  their CLIENT ports), and the leaders log the SASL login of User:broker (debug log);
- KIP-368: with connections.max.reauth.ms=2000 on INTERNAL, the brokers log in again before
  each session ends (new User:broker logins, never a request after a session's end) while
  acks=all writes go on with the ISR whole;
- node 3 restarted with a wrong inter-broker password (its `user_*` entries unchanged): the
  leaders log the refused SASL logins on INTERNAL, node 3 stays out of every ISR and acks=all is
  refused with NOT_ENOUGH_REPLICAS; restarted with the right password it rejoins every ISR;
- SSL with `ssl.client.auth=required` (mTLS, no SASL), named by Kafka's older
  `security.inter.broker.protocol=SSL`, and the CONTROLLER listener on SSL with mTLS too:
  broker certificates with serverAuth+clientAuth, the brokers are `User:CN=broker,O=Strata`
  (RFC 2253 subject) in `super.users`; the quorum forms and replication works; the controller
  port refuses plaintext and a CA-signed certificate of a user who is not a super user;
- a freshly formatted cluster of this kind starts with User:ANONYMOUS not a super user (every
  node stays up, `__consumer_offsets` is created over the CONTROLLER listener);
- refused starts of a node of a quorum: a SASL inter-broker listener with the default GSSAPI mechanism (message names
  sasl.mechanism.inter.broker.protocol), a JAAS entry without username/password (names the JAAS
  key), both inter.broker.listener.name and security.inter.broker.protocol, an SSL inter-broker
  listener without a truststore; the same config with those fixed starts.
"""
from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import READY_TIMEOUT, Broker, _die_with_parent, strata_bin
from e2e_util import RDKAFKA_LOGGER, Reader, _api_versions, _request, free_port, wait_until
from security_util import LogMark, _leaf, make_pki, openssl
from test_cluster import Node

PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ADMIN = ("admin", "admin-secret")
ALICE = ("alice", "alice-secret")
BROKER_USER, BROKER_PASSWORD = "broker", "broker-secret"
BROKER_DN = "CN=broker,O=Strata"  # RFC 2253 subject of the brokers' certificate

FAST = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "300",
    "replica.lag.time.max.ms": "3000",
    "replica.fetch.backoff.ms": "200",
}
# debug for the connection layer: "TLS connection established ... principal=..." and
# "SASL authentication succeeded principal=..." lines show who logged in.
STRATA_LOG = "info,strata_broker::net=debug"
SASL_REFUSED = r"SASL authentication failed"
SESSION_EXPIRED = r"SASL session expired"
BROKER_LOGIN = r"SASL authentication succeeded.*principal=User:broker\b"
REAUTH_MS = 2000  # connections.max.reauth.ms of the SASL clusters' INTERNAL listener

_BROKER_EXT = """
[ broker_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


# ================================================================== PKI

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """security_util's PKI (the CA) plus a broker certificate for both ends of a TLS link:
    extendedKeyUsage serverAuth+clientAuth, SAN IP:127.0.0.1, subject CN=broker,O=Strata;
    `broker-keystore.pem` = key + certificate + CA."""
    pki = make_pki(tmp_path_factory.mktemp("ib-pki"))
    d = pki.dir
    with open(d / "openssl.cnf", "a") as f:  # the generated copy in the tmp dir
        f.write(_BROKER_EXT)
    _leaf(d, "broker", "/O=Strata/CN=broker", "ca", "broker_ext")
    (d / "broker-keystore.pem").write_text((d / "broker.key").read_text() + (d / "broker.pem").read_text()
                                           + (d / "ca.pem").read_text())
    for purpose in ("sslserver", "sslclient"):
        out = openssl("verify", "-CAfile", "ca.pem", "-purpose", purpose, "broker.pem", cwd=d)
        assert out.strip() == "broker.pem: OK", out
    subj = openssl("x509", "-in", "broker.pem", "-noout", "-subject", "-nameopt", "RFC2253", cwd=d)
    assert subj.strip() == f"subject={BROKER_DN}", subj
    return pki


def broker_keystore(pki) -> str:
    return pki.p("broker-keystore.pem")


# ================================================================== nodes

def client_jaas() -> str:
    return f'{PLAIN_MODULE} required user_{ADMIN[0]}="{ADMIN[1]}" user_{ALICE[0]}="{ALICE[1]}";'


def internal_jaas(password: str = BROKER_PASSWORD) -> str:
    """The INTERNAL listener's entry: the brokers' own login (username/password) and the users
    the listener accepts (user_*), which stay the same whatever `password` is."""
    return (f'{PLAIN_MODULE} required username="{BROKER_USER}" password="{password}" '
            f'user_{BROKER_USER}="{BROKER_PASSWORD}" user_{ADMIN[0]}="{ADMIN[1]}";')


def sasl_probe(port: int, user: str, password: str, expect_port: int, timeout: float = 2.0) -> list:
    """Readiness on a SASL_PLAINTEXT listener: ApiVersions, SaslHandshake v1 PLAIN,
    SaslAuthenticate v1, then Metadata v1 must list a broker advertised on `expect_port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        _api_versions(s)
        r = Reader(_request(s, 17, 1, 2, struct.pack(">h", 5) + b"PLAIN"))
        err = r.take(">h")
        if err:
            raise ValueError(f"SaslHandshake error {err}")
        token = f"\x00{user}\x00{password}".encode()
        r = Reader(_request(s, 36, 1, 3, struct.pack(">i", len(token)) + token))
        err, msg = r.take(">h"), r.string()
        if err:
            raise ValueError(f"SaslAuthenticate error {err}: {msg}")
        r = Reader(_request(s, 3, 1, 4, struct.pack(">i", -1)))
        brokers = []
        for _ in range(r.take(">i")):
            node, host, p = r.take(">i"), r.string(), r.take(">i")
            r.string()  # rack
            brokers.append((node, host, p))
        if not any(p == expect_port for _, _, p in brokers):
            raise ValueError(f"Metadata brokers {brokers} do not advertise port {expect_port}")
        return brokers


class IBNode(Node):
    """A cluster node whose broker listeners are CLIENT (SASL_PLAINTEXT, self.port) and the
    inter-broker listener `ib_name` (self.ib_port); CONTROLLER stays PLAINTEXT. `props` are the
    remaining keys; `set_props` rewrites the .properties file for the next start."""

    def __init__(self, workdir: Path, node_id: int, voters: str, controller_port: int, ib_name: str,
                 ib_protocol: str, props: dict[str, str]):
        Broker.__init__(self, workdir, name=f"node{node_id}")
        self.node_id = node_id
        self.controller_port = controller_port
        self.ib_name, self.ib_protocol = ib_name, ib_protocol
        self.ib_port = free_port()
        self.config = self.workdir / f"node{node_id}.properties"
        self.base = {
            "node.id": str(node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"CLIENT://127.0.0.1:{self.port},{ib_name}://127.0.0.1:{self.ib_port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port},{ib_name}://127.0.0.1:{self.ib_port}",
            "listener.security.protocol.map": f"CLIENT:SASL_PLAINTEXT,{ib_name}:{ib_protocol},CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.client.plain.sasl.jaas.config": client_jaas(),
            "authorizer.class.name": AUTHORIZER,
            **FAST,
        }
        self.set_props(props)

    def set_props(self, props: dict[str, str]):
        lines = {**self.base, **props}
        self.config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def spawn(self):
        assert not self.running()
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"\n----- [e2e] start #{self.starts}: {' '.join(self.argv())}\n".encode())
        env = dict(os.environ, STRATA_LOG=STRATA_LOG)
        env.setdefault("RUST_BACKTRACE", "1")
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         cwd=self.workdir, env=env, preexec_fn=_die_with_parent)
        finally:
            logf.close()

    def start(self, ready_timeout: float = READY_TIMEOUT) -> "IBNode":
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        last = {"err": None}

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before becoming ready\n"
                                     + self.log_tail())
            try:
                return sasl_probe(self.port, *ADMIN, expect_port=self.port)
            except Exception as e:  # noqa: BLE001 - keep polling
                last["err"] = e
                return False

        wait_until(ready, timeout, interval=0.1,
                   message=lambda: f"{self.name} not ready on {self.bootstrap} after {timeout}s "
                                   f"(last probe error: {last['err']!r})\n{self.log_tail()}")


def make_cluster(root: Path, ib_name: str, ib_protocol: str, props_of) -> list[IBNode]:
    """Three formatted (not started) nodes; `props_of(node_id)` -> that node's extra keys."""
    cports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i}@127.0.0.1:{cports[i - 1]}" for i in (1, 2, 3))
    nodes = [IBNode(root / f"n{i}", i, voters, cports[i - 1], ib_name, ib_protocol, props_of(i)) for i in (1, 2, 3)]
    cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                check=True).stdout.strip()
    for n in nodes:
        r = subprocess.run([str(strata_bin()), "format", "--config", str(n.config), "--cluster-id", cluster_id],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    return nodes


def start_all(nodes: list[IBNode]):
    """Starts every node; returns once each lists all of them as (unfenced) brokers."""
    for n in nodes:
        n.spawn()
    for n in nodes:
        n.wait_ready(60)
    ids = sorted(n.node_id for n in nodes)
    for n in nodes:
        wait_until(lambda: sorted(b[0] for b in sasl_probe(n.port, *ADMIN, expect_port=n.port)) == ids, 30, 0.2,
                   message=lambda: f"{n.name} does not list brokers {ids}\n{n.log_tail()}")


def offsets_topic_exists(nodes) -> bool:
    return "__consumer_offsets" in admin_of(nodes).list_topics(timeout=10).topics


def start_with_offsets_topic(nodes: list[IBNode], props_of):
    """Starts the cluster with `props_of(node_id)` (User:ANONYMOUS not a super user) and waits
    for `__consumer_offsets`, which the nodes that are not the active controller ask it to
    create over the CONTROLLER listener (a cluster peer's request there is authorized as a
    broker's)."""
    for n in nodes:
        n.set_props(props_of(n.node_id))
    start_all(nodes)
    wait_until(lambda: offsets_topic_exists(nodes), 30, 0.2, message="__consumer_offsets was not created")


def this_run(n: IBNode) -> str:
    """The node's log since its last start."""
    text = n.log_text()
    return text[text.rfind("----- [e2e] start"):]


def check_no_panics(nodes):
    panics = [f"{n.name}: {line}" for n in nodes for line in n.panic_lines()]
    assert not panics, "broker log contains 'panicked':\n" + "\n".join(panics)


def sasl_internal_props(pki, password: str = BROKER_PASSWORD) -> dict[str, str]:
    return {
        "inter.broker.listener.name": "INTERNAL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.internal.plain.sasl.jaas.config": internal_jaas(password),
        "listener.name.internal.ssl.truststore.type": "PEM",
        "listener.name.internal.ssl.truststore.location": pki.ca,
        "listener.name.internal.ssl.keystore.type": "PEM",
        "listener.name.internal.ssl.keystore.location": broker_keystore(pki),
        "super.users": f"User:{BROKER_USER};User:{ADMIN[0]}",
        # KIP-368 sessions on INTERNAL: the brokers must log in again before each ends.
        "listener.name.internal.connections.max.reauth.ms": str(REAUTH_MS),
    }


@pytest.fixture(scope="module")
def sasl_cluster(tmp_path_factory, pki):
    """Test 1 and 2's cluster: INTERNAL is SASL_SSL with PLAIN."""
    props_of = lambda i: sasl_internal_props(pki)  # noqa: E731
    nodes = make_cluster(tmp_path_factory.mktemp("ib-sasl"), "INTERNAL", "SASL_SSL", props_of)
    try:
        start_with_offsets_topic(nodes, props_of)
        yield nodes
    finally:
        for n in nodes:
            n.cleanup()


@pytest.fixture
def sasl_nodes(request, sasl_cluster):
    request.node._strata_brokers = sasl_cluster  # logs attached to failing reports
    yield sasl_cluster
    check_no_panics(sasl_cluster)


# ================================================================== clients

def client_conf(nodes, user=ADMIN, **extra) -> dict:
    """librdkafka settings for the CLIENT listeners (SASL_PLAINTEXT, PLAIN)."""
    conf = {
        "bootstrap.servers": ",".join(n.bootstrap for n in nodes if n.running()),
        "logger": RDKAFKA_LOGGER,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": user[0],
        "sasl.password": user[1],
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return conf


def admin_of(nodes, user=ADMIN):
    from confluent_kafka.admin import AdminClient
    return AdminClient(client_conf(nodes, user))


def partitions_of(nodes, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """Partition -> (leader, replicas, isr) as Metadata answers admin."""
    md = admin_of(nodes).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}


def create_rf3(nodes, topic: str, partitions: int = 3):
    from confluent_kafka.admin import NewTopic
    admin = admin_of(nodes)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3,
                                       config={"min.insync.replicas": "3"})], request_timeout=15)
    for f in fs.values():
        f.result(20)

    def full():
        try:
            parts = partitions_of(nodes, topic)
        except Exception:  # noqa: BLE001 - not known everywhere yet
            return False
        return len(parts) == partitions and all(
            leader > 0 and replicas == [1, 2, 3] and isr == [1, 2, 3] for leader, replicas, isr in parts.values())

    wait_until(full, 30, 0.2, message=lambda: f"{topic}: not every partition has replicas and ISR [1,2,3]: "
                                              f"{partitions_of(nodes, topic)}")


def produce(nodes, topic: str, values: list[bytes], partitions: int = 3, **extra) -> tuple[list, list]:
    """acks=all: (acknowledged values, errors)."""
    from confluent_kafka import Producer
    acked, errors = [], []

    def on_delivery(err, msg):
        (errors if err else acked).append(err or msg.value())

    p = Producer(client_conf(nodes, acks="all", **{"linger.ms": 5, **extra}))
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions, on_delivery=on_delivery)
    p.flush(60)
    return acked, errors


def read_all(nodes, topic: str, partitions: int, expected: int, timeout: float = 30) -> list[bytes]:
    """Every value of the topic from offset 0 (group-free), as admin."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(client_conf(nodes, **{"group.id": "ib-reader", "enable.auto.commit": False,
                                       "fetch.wait.max.ms": 100}))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        values = []
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    values.append(m.value())
        return values
    finally:
        c.close()


# ================================================================== sockets

_SS_LINE = re.compile(r"^\S+\s+\S+\s+(\S+):(\d+)\s+(\S+):(\d+)\s+(.*)$")


def outgoing_connections(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of the established TCP connections process `pid` holds."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    conns = []
    for line in out.splitlines():
        m = _SS_LINE.match(line.strip())
        if m and pid in {int(p) for p in re.findall(r"pid=(\d+)", m.group(5))}:
            conns.append((int(m.group(2)), int(m.group(4))))
    return conns


def assert_replication_runs_over(nodes: list[IBNode], topic: str):
    """Each follower holds an established connection to the inter-broker port of each leader it
    follows, and no node holds one to another node's CLIENT port."""
    leaders = {leader for leader, _, _ in partitions_of(nodes, topic).values()}
    by_id = {n.node_id: n for n in nodes}
    client_ports = {n.port: n.node_id for n in nodes}

    def linked():
        for n in nodes:
            remote = {r for _, r in outgoing_connections(n.proc.pid)}
            if any(by_id[l].ib_port not in remote for l in leaders if l != n.node_id):
                return False
        return True

    wait_until(linked, 15, 0.3, message=lambda: "followers hold no connection to the leaders' "
               f"{nodes[0].ib_name} ports {[by_id[l].ib_port for l in leaders]}: "
               f"{ {n.node_id: outgoing_connections(n.proc.pid) for n in nodes} }")
    for n in nodes:
        to_client = [(lp, rp) for lp, rp in outgoing_connections(n.proc.pid)
                     if rp in client_ports and client_ports[rp] != n.node_id]
        assert not to_client, f"{n.name} connects to other nodes' CLIENT listeners: {to_client}"


# ================================================================== 1. SASL_SSL + PLAIN

def test_replication_over_a_sasl_ssl_plain_listener(sasl_nodes):
    nodes = sasl_nodes
    topic = "ib-sasl-ssl"
    create_rf3(nodes, topic)
    values = [b"v%d" % i for i in range(300)]
    acked, errors = produce(nodes, topic, values)
    assert not errors and sorted(acked) == sorted(values), (len(acked), errors[:5])
    parts = partitions_of(nodes, topic)
    assert all(isr == [1, 2, 3] for _, _, isr in parts.values()), parts
    assert sorted({leader for leader, _, _ in parts.values()}) == [1, 2, 3], parts
    assert sorted(read_all(nodes, topic, 3, len(values))) == sorted(values)

    # The follower fetches run on INTERNAL, logged in as User:broker (only INTERNAL's JAAS knows
    # that user, so these logins cannot come from CLIENT).
    assert_replication_runs_over(nodes, topic)
    for n in nodes:
        text = this_run(n)
        assert re.search(BROKER_LOGIN, text), (
            f"{n.name} logged no SASL login of User:broker\n" + n.log_tail())
        assert not re.search(SASL_REFUSED, text), n.log_tail()
        assert not re.search(r"TLS handshake failed", text), n.log_tail()

    # The authorizer is on: alice, neither a super user nor holding an ACL, sees nothing.
    md = admin_of(nodes, ALICE).list_topics(timeout=10)
    assert topic not in md.topics, sorted(md.topics)
    # Clients get the CLIENT endpoints.
    md = admin_of(nodes).list_topics(timeout=10)
    assert sorted((b.id, b.port) for b in md.brokers.values()) == sorted((n.node_id, n.port) for n in nodes)


def test_inter_broker_logins_are_renewed_before_their_session_ends(sasl_nodes):
    """INTERNAL has connections.max.reauth.ms=2000: over three session lifetimes of steady
    acks=all writes (min.insync.replicas=3), every follower logs in again before its session
    ends (the leaders see new User:broker logins and never a request after a session's end),
    and the ISR stays whole."""
    from confluent_kafka import Producer
    nodes = sasl_nodes
    topic = "ib-reauth"
    create_rf3(nodes, topic)
    marks = {n.node_id: LogMark(n) for n in nodes}
    acked, errors = [], []

    def on_delivery(err, msg):
        (errors if err else acked).append(err or msg.value())

    p = Producer(client_conf(nodes, acks="all", **{"linger.ms": 5}))
    sent = 0
    end = time.monotonic() + 3 * REAUTH_MS / 1000
    while time.monotonic() < end:
        for _ in range(20):
            p.produce(topic, value=b"r%d" % sent, partition=sent % 3, on_delivery=on_delivery)
            sent += 1
        assert p.flush(10) == 0, f"acks=all writes stalled after {sent} records"
        assert not errors, errors[:5]
        parts = partitions_of(nodes, topic)
        assert all(isr == [1, 2, 3] for _, _, isr in parts.values()), parts
    assert len(acked) == sent
    for n in nodes:
        text = marks[n.node_id].text()
        assert not re.search(SESSION_EXPIRED, text), f"{n.name} saw a request after a session's end:\n{text[-3000:]}"
        logins = len(re.findall(BROKER_LOGIN, text))
        assert logins >= 2, f"{n.name}: {logins} User:broker logins in {3 * REAUTH_MS} ms\n{text[-3000:]}"


# ================================================================== 2. wrong inter-broker password

def test_a_broker_with_a_wrong_inter_broker_password_stays_out_of_the_isr(sasl_nodes, pki):
    from confluent_kafka import KafkaError
    nodes = sasl_nodes
    n3 = nodes[2]
    others = nodes[:2]
    topic = "ib-wrong-password"
    create_rf3(nodes, topic)

    n3.stop()
    wait_until(lambda: all(isr == [1, 2] for _, _, isr in partitions_of(others, topic).values()), 15,
               message=lambda: f"node 3 stayed in the ISR after stopping: {partitions_of(others, topic)}")
    marks = {n.node_id: LogMark(n) for n in others}
    n3.set_props(sasl_internal_props(pki, password="not-the-broker-secret"))
    n3.start(60)
    # node 3 is back and registered (listed as a broker) ...
    wait_until(lambda: 3 in admin_of(others).list_topics(timeout=10).brokers, 15,
               message="node 3 is not listed as a broker")
    # ... but the leaders (every partition is led by 1 or 2 now) refuse its logins on INTERNAL.
    parts = partitions_of(others, topic)
    leaders = sorted({leader for leader, _, _ in parts.values()})
    assert set(leaders) <= {1, 2}, parts
    for lid in leaders:
        line = marks[lid].wait_for(SASL_REFUSED, 20)
        assert re.search(r"listener=\"?INTERNAL\"?\s", line), line

    # For longer than replica.lag.time.max.ms, with refused logins going on, node 3 never
    # rejoins an ISR and the partitions keep the others' leadership.
    def refused_count():
        return {lid: len(re.findall(SASL_REFUSED, marks[lid].text())) for lid in leaders}

    before = refused_count()
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        parts = partitions_of(others, topic)
        assert all(isr == [1, 2] and leader in (1, 2) for leader, _, isr in parts.values()), parts
        time.sleep(0.3)
    after = refused_count()
    assert all(after[lid] > before[lid] for lid in leaders), (before, after)
    # acks=all with min.insync.replicas=3: refused while node 3 is out.
    acked, errors = produce(others, topic, [b"refused"], partitions=1,
                            **{"message.timeout.ms": 3000, "retries": 2})
    assert not acked and len(errors) == 1 and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, (acked, errors)

    # The right password: node 3 logs in, catches up and rejoins every ISR.
    n3.stop()
    n3.set_props(sasl_internal_props(pki))
    n3.start(60)
    # Rejoining an ISR takes a login on the leader's INTERNAL listener: the right password works.
    wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(nodes, topic).values()), 30,
               message=lambda: f"node 3 did not rejoin the ISR: {partitions_of(nodes, topic)}")
    # From here on no login is refused. (Marked only now: a refusal of the old process's last
    # attempts may reach the leaders' logs after it stopped, as seen once on CI.)
    marks = {n.node_id: LogMark(n) for n in others}
    values = [b"back%d" % i for i in range(30)]
    acked, errors = produce(nodes, topic, values)
    assert not errors and sorted(acked) == sorted(values), errors[:5]
    for lid, mark in marks.items():
        assert not re.search(SASL_REFUSED, mark.text()), f"node {lid} refused a login after the fix:\n{mark.text()[-3000:]}"


# ================================================================== 3. SSL with client certificates

def controller_api_versions(port: int, context=None, timeout: float = 5.0) -> dict:
    """ApiVersions v0 on a CONTROLLER listener, over TLS with `context` (else plaintext)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
    try:
        s.settimeout(timeout)
        return _api_versions(s)
    finally:
        s.close()


def tls_context(pki, cert: str, key: str | None = None):
    import ssl
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_replication_and_the_quorum_over_mtls(tmp_path, pki, request):
    """mTLS between brokers (the inter-broker listener named by Kafka's older
    `security.inter.broker.protocol=SSL`) and on the CONTROLLER listener (`CONTROLLER:SSL`,
    `ssl.client.auth=required`): the quorum forms over TLS, brokers register and replicate; the
    controller port refuses plaintext, and with the authorizer on it refuses a certificate the
    CA signed whose principal is not a super user (a client must not reach the controllers)."""
    def props(_i):
        tls = {}
        for listener in ("ssl", "controller"):
            tls.update({
                f"listener.name.{listener}.ssl.client.auth": "required",
                f"listener.name.{listener}.ssl.truststore.type": "PEM",
                f"listener.name.{listener}.ssl.truststore.location": pki.ca,
                f"listener.name.{listener}.ssl.keystore.type": "PEM",
                f"listener.name.{listener}.ssl.keystore.location": broker_keystore(pki),
            })
        return {
            "security.inter.broker.protocol": "SSL",
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:SSL",
            **tls,
            "super.users": f"User:{BROKER_DN};User:{ADMIN[0]}",
        }

    nodes = make_cluster(tmp_path, "SSL", "SSL", props)
    request.node._strata_brokers = nodes
    try:
        start_with_offsets_topic(nodes, props)
        topic = "ib-mtls"
        create_rf3(nodes, topic)
        values = [b"m%d" % i for i in range(300)]
        acked, errors = produce(nodes, topic, values)
        assert not errors and sorted(acked) == sorted(values), (len(acked), errors[:5])
        parts = partitions_of(nodes, topic)
        assert all(isr == [1, 2, 3] for _, _, isr in parts.values()), parts
        assert sorted(read_all(nodes, topic, 3, len(values))) == sorted(values)
        assert_replication_runs_over(nodes, topic)
        # Each leader saw the brokers' client certificate as User:CN=broker,O=Strata on SSL.
        for n in nodes:
            text = this_run(n)
            assert re.search(rf"TLS connection established.*listener=\"?SSL\"? .*principal=User:{BROKER_DN}", text), (
                f"{n.name} logged no mTLS connection of User:{BROKER_DN}\n" + n.log_tail())
            assert not re.search(r"TLS handshake failed|TLS client refused|controller listener: (TLS|peer)", text), \
                n.log_tail()
        # The CONTROLLER listener: the brokers' certificate is answered, plaintext is not, and a
        # certificate of a non-super user (alice, signed by the same CA) is refused and logged.
        port = nodes[0].controller_port
        assert 18 in controller_api_versions(port, tls_context(pki, broker_keystore(pki)))
        with pytest.raises((OSError, ValueError)):
            controller_api_versions(port, timeout=3)
        mark = LogMark(nodes[0])
        with pytest.raises((OSError, ValueError)):
            controller_api_versions(port, tls_context(pki, pki.alice_cert, pki.alice_key))
        mark.wait_for(r"controller listener: peer refused: with an authorizer, only super users", 5)
        check_no_panics(nodes)
    finally:
        for n in nodes:
            n.cleanup()


# ================================================================== ANONYMOUS not a super user

def test_a_fresh_cluster_starts_without_anonymous_as_a_super_user(tmp_path, pki, request):
    """The brokers authenticate to each other as User:broker, so with the authorizer only they
    (and admin) are super users, not User:ANONYMOUS: a freshly formatted cluster starts, every
    node stays up, and `__consumer_offsets` is created (as the broker's own internal topic)."""
    props_of = lambda i: sasl_internal_props(pki)  # noqa: E731
    nodes = make_cluster(tmp_path, "INTERNAL", "SASL_SSL", props_of)
    request.node._strata_brokers = nodes
    try:
        for n in nodes:
            n.spawn()
        for n in nodes:
            n.wait_ready(60)
        wait_until(lambda: offsets_topic_exists(nodes), 30, 0.2, message="__consumer_offsets was not created")
        died = [f"{n.name} exited with {n.proc.returncode}:\n{n.log_tail(5)}" for n in nodes if not n.running()]
        assert not died, "\n".join(died)
        check_no_panics(nodes)
    finally:
        for n in nodes:
            n.cleanup()


# ================================================================== 4. refused starts

def _listener_sets(port: int, ib_name: str = "INTERNAL") -> list[str]:
    """PLAINTEXT on the broker's own port (the readiness probe) and the inter-broker listener,
    on a node of a (one-voter) quorum: a node of the single-node default has no other broker
    to reach, so its inter-broker login is not read at all."""
    cport = free_port()
    listeners = f"PLAINTEXT://127.0.0.1:{port},{ib_name}://127.0.0.1:{free_port()}"
    return [f"listeners={listeners},CONTROLLER://127.0.0.1:{cport}", f"advertised.listeners={listeners}",
            "process.roles=broker,controller", "controller.listener.names=CONTROLLER",
            f"controller.quorum.voters=1@127.0.0.1:{cport}"]


def _formatted(b) -> subprocess.CompletedProcess:
    """`strata format` with the node's own flags (a node of a quorum must be formatted first)."""
    cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                check=True).stdout.strip()
    argv = b.argv()
    argv[1] = "format"
    return subprocess.run(argv + ["--cluster-id", cluster_id], capture_output=True, text=True, timeout=30,
                          cwd=b.workdir)


def _sasl_internal(jaas: str) -> list[str]:
    return ["listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=PLAIN",
            f"listener.name.internal.plain.sasl.jaas.config={jaas}"]


def _ssl_internal(pki, truststore: bool = True) -> list[str]:
    sets = ["listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SSL",
            "listener.name.internal.ssl.keystore.type=PEM",
            f"listener.name.internal.ssl.keystore.location={broker_keystore(pki)}"]
    if truststore:
        sets += ["listener.name.internal.ssl.truststore.type=PEM",
                 f"listener.name.internal.ssl.truststore.location={pki.ca}"]
    return sets


NO_LOGIN_JAAS = f'{PLAIN_MODULE} required user_{BROKER_USER}="{BROKER_PASSWORD}";'

REFUSED_STARTS = {
    # case: (sets(pki), regexes the broker's error output must all match)
    "default-gssapi": (lambda pki: _sasl_internal(internal_jaas()) + ["inter.broker.listener.name=INTERNAL"],
                       [r"sasl\.mechanism\.inter\.broker\.protocol", r"GSSAPI"]),
    "jaas-without-username-password": (
        lambda pki: _sasl_internal(NO_LOGIN_JAAS) + ["inter.broker.listener.name=INTERNAL",
                                                     "sasl.mechanism.inter.broker.protocol=PLAIN"],
        [r"INTERNAL", r"plain\.sasl\.jaas\.config", r"username", r"password"]),
    "both-listener-keys": (
        lambda pki: _sasl_internal(internal_jaas()) + ["inter.broker.listener.name=INTERNAL",
                                                       "security.inter.broker.protocol=SASL_PLAINTEXT",
                                                       "sasl.mechanism.inter.broker.protocol=PLAIN"],
        [r"inter\.broker\.listener\.name", r"security\.inter\.broker\.protocol"]),
    "ssl-without-truststore": (lambda pki: _ssl_internal(pki, truststore=False) + ["inter.broker.listener.name=INTERNAL"],
                               [r"ssl\.truststore\.location"]),
}


@pytest.mark.parametrize("case", list(REFUSED_STARTS))
def test_bad_inter_broker_config_refused_at_start(broker_factory, pki, case):
    sets_for, patterns = REFUSED_STARTS[case]
    b = broker_factory(start=False, name=case)
    b.sets = _listener_sets(b.port) + sets_for(pki)
    b.data_dir.mkdir(parents=True, exist_ok=True)
    r = _formatted(b)
    if r.returncode == 0:
        try:
            r = subprocess.run(b.argv(), capture_output=True, text=True, timeout=20, cwd=b.workdir)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{case}: the broker did not exit within 20 s (it should refuse the config)")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{case}: exit 0\n{out[-3000:]}"
    # The error itself (the start line lists the non-default keys, so not the whole output).
    errors = "\n".join(line for line in out.splitlines() if re.match(r"strata( format)?: ", line))
    assert errors, f"{case}: exit {r.returncode} without a 'strata: ...' error line:\n{out[-3000:]}"
    for pattern in patterns:
        assert re.search(pattern, errors, re.I), f"{case}: no /{pattern}/ in the error:\n{out[-3000:]}"
    assert "panicked" not in out, out[-3000:]


GOOD_STARTS = {
    "sasl-plain": lambda pki: _sasl_internal(internal_jaas()) + ["inter.broker.listener.name=INTERNAL",
                                                                 "sasl.mechanism.inter.broker.protocol=PLAIN"],
    "ssl": lambda pki: _ssl_internal(pki) + ["inter.broker.listener.name=INTERNAL"],
    # Kafka's older form names the listener after its protocol.
    "older-key": lambda pki: ["listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                              "sasl.enabled.mechanisms=PLAIN",
                              f"listener.name.sasl_plaintext.plain.sasl.jaas.config={internal_jaas()}",
                              "security.inter.broker.protocol=SASL_PLAINTEXT",
                              "sasl.mechanism.inter.broker.protocol=PLAIN"],
}


@pytest.mark.parametrize("case", list(GOOD_STARTS))
def test_good_inter_broker_configs_start(broker_factory, pki, case):
    """The refused configs above, fixed, start (so each refusal is about what it names)."""
    b = broker_factory(start=False, name=case)
    b.sets = _listener_sets(b.port, "SASL_PLAINTEXT" if case == "older-key" else "INTERNAL") + GOOD_STARTS[case](pki)
    b.data_dir.mkdir(parents=True, exist_ok=True)
    r = _formatted(b)
    assert r.returncode == 0, r.stdout + r.stderr
    b.start()
    assert b.running()
