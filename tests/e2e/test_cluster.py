"""A three-node cluster on loopback (issue #13): three `strata server` processes, each broker
and controller, formatted with one cluster id, with `controller.quorum.voters` and a
CONTROLLER listener each, configured with Kafka's own keys in `.properties` files.

What is checked, with real clients (confluent-kafka / librdkafka, kafka-python):
- every client sees the three brokers; a topic created through one broker appears on all with
  its partitions spread over the three; records produced to all of them are consumed by a
  group (so FindCoordinator, the group coordinator and the offsets topic work across brokers);
- SIGKILL of the active controller: another one takes over and CreateTopics through a
  surviving broker succeeds within 5 s; the killed node restarts and sees what changed;
- a node that was down while many topics were created catches up from a snapshot (the
  controllers snapshot every few KiB here) and serves them;
- SIGTERM stops every node cleanly.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import Broker, strata_bin
from e2e_util import ck_admin, ck_consumer, ck_producer, free_port, java_program, wait_until

class LinkProxy:
    """A TCP proxy the harness owns for one directed link between two nodes: node A reaches node
    B's CONTROLLER listener only through it. `block()` closes its connections and refuses new
    ones (a network partition of that link); `unblock()` heals it."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.blocked = False
        self.conns: list = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def block(self):
        import socket

        self.blocked = True
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def unblock(self):
        self.blocked = False

    def close(self):
        self.closed = True
        self.block()
        self.listener.close()


class Node(Broker):
    """One node of the cluster: broker and controller, configured by a .properties file."""

    def __init__(self, workdir: Path, node_id: int, voters: str, controller_port: int, extra: dict[str, str]):
        super().__init__(workdir, name=f"node{node_id}")
        self.node_id = node_id
        self.controller_port = controller_port
        self.config = workdir / f"node{node_id}.properties"
        lines = {
            "node.id": str(node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.data_dir),
            **extra,
        }
        self.config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def argv(self) -> list[str]:
        return [str(strata_bin()), "server", "--config", str(self.config)]

    def spawn(self):
        """Starts the process without waiting: a quorum node is ready only once a majority runs."""
        assert not self.running()
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"\n----- [e2e] start #{self.starts}: {' '.join(self.argv())}\n".encode())
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         cwd=self.workdir)
        finally:
            logf.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def is_active_controller(self) -> bool:
        """The node's own log says whether it is the active controller (its last leader line)."""
        text = self.log_text()
        text = text[text.rfind("----- [e2e] start"):]
        lines = [line for line in text.splitlines() if "metadata quorum leader" in line]
        return bool(lines) and ("active=true" in lines[-1] or '"active":true' in lines[-1])  # text or JSON


class Cluster:
    """`size` nodes. With `proxied`, node i reaches node j's controller only through
    `self.links[(i, j)]` (its own view of `controller.quorum.voters` names the proxies), so the
    harness can cut any node off."""

    def __init__(self, root: Path, size: int = 3, extra: dict[str, str] | None = None, proxied: bool = False):
        controller_ports = [free_port() for _ in range(size)]
        ids = range(1, size + 1)
        self.links: dict[tuple[int, int], LinkProxy] = {}
        if proxied:
            self.links = {(i, j): LinkProxy(controller_ports[j - 1]) for i in ids for j in ids if i != j}

        def voters_of(i: int) -> str:
            port = lambda j: self.links[(i, j)].port if (i, j) in self.links else controller_ports[j - 1]  # noqa: E731
            return ",".join(f"{j}@127.0.0.1:{port(j)}" for j in ids)

        self.nodes = [Node(root / f"n{i}", i, voters_of(i), controller_ports[i - 1], extra or {}) for i in ids]
        cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        for n in self.nodes:
            r = subprocess.run([str(strata_bin()), "format", "--config", str(n.config), "--cluster-id", cluster_id],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        self.cluster_id = cluster_id

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes if n.running())

    def start(self):
        for n in self.nodes:
            n.spawn()
        for n in self.nodes:
            n.wait_ready(60)

    def active_controller(self, timeout: float = 15) -> Node:
        found = {}

        def one():
            active = [n for n in self.nodes if n.running() and n.is_active_controller()]
            if len(active) == 1:
                found["n"] = active[0]
                return True
            return False

        wait_until(one, timeout, message="no single active controller")
        return found["n"]

    def isolate(self, node: "Node"):
        for (i, j), link in self.links.items():
            if node.node_id in (i, j):
                link.block()

    def heal(self):
        for link in self.links.values():
            link.unblock()

    def cleanup(self):
        for n in self.nodes:
            n.cleanup()
        for link in self.links.values():
            link.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


def leaders_seen_by(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> leader as Metadata answers (-1 while a partition has no leader)."""
    md = ck_admin(bootstrap).list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p: t.partitions[p].leader for p in t.partitions}


def create(bootstrap: str, topic: str, partitions: int, timeout: float = 15):
    from confluent_kafka.admin import NewTopic
    admin = ck_admin(bootstrap)  # kept alive until the futures complete
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                             request_timeout=timeout)
    for f in fs.values():
        f.result(timeout)


def test_three_brokers_serve_one_cluster(cluster):
    from kafka import KafkaAdminClient

    nodes = cluster.nodes
    for n in nodes:
        md = ck_admin(n.bootstrap).list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3], (n.name, md.brokers)
        assert md.cluster_id == cluster.cluster_id
    kp = KafkaAdminClient(bootstrap_servers=nodes[0].bootstrap, client_id="e2e-cluster")
    try:
        described = kp.describe_cluster()
        assert sorted(b.get("node_id", b.get("broker_id")) for b in described["brokers"]) == [1, 2, 3], described
    finally:
        kp.close()

    # Created through the third broker, visible on every broker, spread over all three.
    create(nodes[2].bootstrap, "spread", 6)
    for n in nodes:
        wait_until(lambda: len(leaders_seen_by(n.bootstrap, "spread")) == 6, 10,
                   message=f"{n.name} does not see the topic")
        assert sorted(set(leaders_seen_by(n.bootstrap, "spread").values())) == [1, 2, 3]

    # Produce through the whole cluster, consume with a group.
    p = ck_producer(cluster.bootstrap, acks="all")
    sent = {f"k{i}": f"v{i}" for i in range(300)}
    for k, v in sent.items():
        p.produce("spread", key=k, value=v)
    assert p.flush(30) == 0
    c = ck_consumer(cluster.bootstrap, **{"group.id": "cluster-group", "auto.offset.reset": "earliest",
                                          "enable.auto.commit": False})
    c.subscribe(["spread"])
    got, next_offsets = {}, {}
    deadline = time.time() + 60
    while len(got) < len(sent) and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got[m.key().decode()] = m.value().decode()
            next_offsets[m.partition()] = m.offset() + 1
    assert got == sent
    # The group's offsets live on the coordinator (the leader of its __consumer_offsets partition).
    from confluent_kafka import TopicPartition
    c.commit(offsets=[TopicPartition("spread", p, o) for p, o in next_offsets.items()], asynchronous=False)
    committed = c.committed([TopicPartition("spread", p) for p in range(6)], timeout=10)
    c.close()
    assert sum(tp.offset for tp in committed) == len(sent), committed
    for n in nodes:
        assert not n.panic_lines(), n.log_tail()


def test_the_active_controller_is_killed_and_another_takes_over(cluster):
    victim = cluster.active_controller()
    survivors = [n for n in cluster.nodes if n is not victim]
    victim.kill()
    t0 = time.monotonic()

    def created():
        try:
            create(survivors[0].bootstrap, "after-failover", 3, timeout=5)
            return True
        except Exception as e:  # noqa: BLE001 - NOT_CONTROLLER while the election runs
            # An attempt the client gave up on may have gone through meanwhile.
            return "TOPIC_ALREADY_EXISTS" in str(e)

    wait_until(created, 20, interval=0.1, message="CreateTopics never succeeded after the controller died")
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"CreateTopics succeeded only {elapsed:.1f}s after the active controller died"
    new_active = cluster.active_controller()
    assert new_active is not victim
    # The old controller comes back as a follower and learns what it missed.
    victim.start(60)
    wait_until(lambda: "after-failover" in ck_admin(victim.bootstrap).list_topics(timeout=10).topics, 20,
               message="the restarted node never saw the topic created while it was down")
    for n in cluster.nodes:
        assert not n.panic_lines(), n.log_tail()


def test_a_node_that_missed_many_changes_catches_up_from_a_snapshot(tmp_path):
    # Snapshots every 4 KiB of metadata records, so the log behind them is dropped.
    c = Cluster(tmp_path, extra={"metadata.log.max.record.bytes.between.snapshots": "4096"})
    try:
        c.start()
        late = c.nodes[2]
        if late.is_active_controller():
            late = c.nodes[1]
        late.stop()
        others = [n for n in c.nodes if n is not late]
        for i in range(30):
            create(others[0].bootstrap, f"while-down-{i}", 2)
        late.start(60)
        wait_until(lambda: sum(1 for t in ck_admin(late.bootstrap).list_topics(timeout=10).topics
                               if t.startswith("while-down-")) == 30, 30,
                   message="the returning node did not catch up")
        assert "installed a metadata snapshot from the leader" in late.log_text(), late.log_tail()
        # Stopped cleanly, it was fenced, so the topics created meanwhile avoided it; back and
        # heartbeating, it is listed again and gets its share of new partitions.
        assert all(late.node_id not in leaders_seen_by(late.bootstrap, f"while-down-{i}").values() for i in range(30))
        wait_until(lambda: late.node_id in ck_admin(late.bootstrap).list_topics(timeout=10).brokers, 15,
                   message="the returning broker was not unfenced")
        create(late.bootstrap, "after-return", 6)
        wait_until(lambda: len(leaders_seen_by(late.bootstrap, "after-return")) == 6, 10,
                   message="the new topic did not reach the returning broker")
        assert late.node_id in leaders_seen_by(late.bootstrap, "after-return").values()
        for n in c.nodes:
            assert n.stop() < 15
    finally:
        c.cleanup()


def test_a_silent_broker_is_fenced_and_returns_and_a_stopping_one_hands_over_at_once(tmp_path):
    c = Cluster(tmp_path, extra={"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "300"})
    try:
        c.start()
        create(c.nodes[0].bootstrap, "fence", 6)
        controller = c.active_controller()
        victim = next(n for n in c.nodes if n is not controller)
        other = next(n for n in c.nodes if n is not controller and n is not victim)
        wait_until(lambda: len(leaders_seen_by(controller.bootstrap, "fence")) == 6, 10,
                   message="the topic did not reach the controller's broker")
        before = leaders_seen_by(controller.bootstrap, "fence")
        owned = sorted(p for p, l in before.items() if l == victim.node_id)
        assert owned, before

        # No heartbeats (killed): fenced after the session timeout; its partitions have no
        # leader and it is no longer listed.
        victim.kill()
        wait_until(lambda: all(leaders_seen_by(controller.bootstrap, "fence")[p] == -1 for p in owned), 15,
                   message="the silent broker's partitions kept their leader")
        md = ck_admin(other.bootstrap).list_topics(timeout=10)
        assert victim.node_id not in md.brokers
        assert all(md.topics["fence"].partitions[p].leader == -1 for p in owned)
        # New partitions avoid it.
        create(controller.bootstrap, "while-fenced", 4)
        assert victim.node_id not in leaders_seen_by(controller.bootstrap, "while-fenced").values()

        # It comes back: unfenced, leads its partitions again, takes writes.
        victim.start(60)
        wait_until(lambda: leaders_seen_by(other.bootstrap, "fence") == before, 15,
                   message="the returning broker did not lead its partitions again")
        p = ck_producer(c.bootstrap, acks="all")
        for part in owned:
            p.produce("fence", value=b"back", partition=part)
        assert p.flush(20) == 0

        # SIGTERM: a controlled shutdown fences it before it exits, not a session later.
        victim.stop()
        wait_until(lambda: all(leaders_seen_by(controller.bootstrap, "fence")[p] == -1 for p in owned), 1.5,
                   interval=0.05, message="a cleanly stopping broker was not fenced at once")
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def describe_quorum_v1(port: int) -> dict:
    """DescribeQuorum v1 (flexible) for __cluster_metadata-0."""
    import struct

    from e2e_util import compact_str, flexible_request, uvarint

    body = uvarint(2) + compact_str("__cluster_metadata") + uvarint(2) + struct.pack(">i", 0) + b"\x00" * 3
    r = flexible_request(port, 55, 1, body, corr=7)
    out = {"error_code": r.take(">h")}
    assert r.array_len() == 1  # topics
    r.compact_string()
    assert r.array_len() == 1  # partitions
    part = {"partition": r.take(">i"), "error_code": r.take(">h"), "leader_id": r.take(">i"),
            "leader_epoch": r.take(">i"), "high_watermark": r.take(">q"), "voters": {}, "observers": {}}
    for kind in ("voters", "observers"):
        for _ in range(r.array_len()):
            rid, leo, _fetch, _caught = r.take(">i"), r.take(">q"), r.take(">q"), r.take(">q")
            r.skip_tags()
            part[kind][rid] = leo
    out["partition"] = part
    return out


def test_describe_quorum_names_the_leader_and_the_voters_through_any_broker(cluster):
    active = cluster.active_controller()
    for n in cluster.nodes:
        q = describe_quorum_v1(n.port)
        p = q["partition"]
        assert q["error_code"] == 0 and p["error_code"] == 0, q
        assert p["leader_id"] == active.node_id and p["leader_epoch"] >= 1, q
        assert sorted(p["voters"]) == [1, 2, 3], q
        assert p["high_watermark"] > 0 and max(p["voters"].values()) >= p["high_watermark"], q


def test_a_controller_cut_off_from_the_others_steps_down_and_rejoins(tmp_path):
    c = Cluster(tmp_path, proxied=True)
    try:
        c.start()
        old = c.active_controller()
        majority = [n for n in c.nodes if n is not old]
        c.isolate(old)

        # The majority elects a new leader; the isolated one stops being active (check-quorum:
        # it hears from no majority within an election timeout).
        def new_leader():
            try:
                q = describe_quorum_v1(majority[0].port)["partition"]
            except Exception:  # noqa: BLE001 - NOT_LEADER_OR_FOLLOWER during the election
                return False
            return q["error_code"] == 0 and q["leader_id"] in (majority[0].node_id, majority[1].node_id)

        wait_until(new_leader, 20, message="the majority elected no leader")
        wait_until(lambda: not old.is_active_controller(), 20, message="the isolated controller kept acting")
        # Writes: through the majority they commit; through the isolated node they cannot.
        create(majority[0].bootstrap, "during-partition", 2)
        from confluent_kafka.admin import NewTopic
        admin = ck_admin(old.bootstrap)
        fs = admin.create_topics([NewTopic("on-the-minority", num_partitions=1, replication_factor=1)],
                                 request_timeout=5)
        with pytest.raises(Exception):
            list(fs.values())[0].result(20)

        # Nothing was committed on the minority side, and the majority did not see it either.
        for n in c.nodes:
            assert "on-the-minority" not in ck_admin(n.bootstrap).list_topics(timeout=10).topics

        # Healed: the old controller follows the new leader and learns what it missed; every
        # node ends with the same topics (the timed-out request may still be relayed to the
        # new leader once the link is back: a timeout is not a refusal).
        c.heal()
        wait_until(lambda: "during-partition" in ck_admin(old.bootstrap).list_topics(timeout=10).topics, 30,
                   message="the healed node never learned the majority's change")

        def same_topics():
            seen = [frozenset(ck_admin(n.bootstrap).list_topics(timeout=10).topics) for n in c.nodes]
            return len(set(seen)) == 1

        wait_until(same_topics, 30, message="the nodes disagree on the topics after healing")
        leaders = {describe_quorum_v1(n.port)["partition"]["leader_id"] for n in c.nodes}
        assert len(leaders) == 1, leaders
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def java_string_hash(s: str) -> int:
    h = 0
    for ch in s.encode("utf-16-be").decode("utf-16-be"):
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def test_only_the_leader_of_a_groups_offsets_partition_coordinates_it(cluster):
    """Heartbeat v0 for one group to each broker: the leader of the group's __consumer_offsets
    partition answers it (UNKNOWN_MEMBER_ID: no such member), the others NOT_COORDINATOR."""
    import socket
    import struct

    from e2e_util import _request

    group = "coordinated-group"
    h = java_string_hash(group)
    index = (0 if h == -(1 << 31) else abs(h)) % 50  # Kafka's Utils.abs(hashCode) % partitions
    owner = leaders_seen_by(cluster.nodes[0].bootstrap, "__consumer_offsets")[index]
    body = struct.pack(">h", len(group)) + group.encode() + struct.pack(">i", 1) + struct.pack(">h", 1) + b"m"
    answers = {}
    for n in cluster.nodes:
        with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
            (answers[n.node_id],) = struct.unpack(">h", _request(s, 12, 0, 3, body)[:2])
    assert answers[owner] == 25, answers  # UNKNOWN_MEMBER_ID
    assert all(code == 16 for node, code in answers.items() if node != owner), answers  # NOT_COORDINATOR


def test_controllers_describe_the_controllers_on_their_listener(cluster):
    """DescribeCluster v1 with endpoint type 2 (KIP-919) on a CONTROLLER listener lists the voters."""
    import socket
    import struct

    from e2e_util import recv_exact

    active = cluster.active_controller()
    for n in cluster.nodes:
        cid = b"e2e"
        msg = struct.pack(">hhih", 60, 1, 5, len(cid)) + cid + b"\x00" + b"\x00" + b"\x02" + b"\x00"
        with socket.create_connection(("127.0.0.1", n.controller_port), timeout=10) as s:
            s.sendall(struct.pack(">i", len(msg)) + msg)
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            data = recv_exact(s, size)
        i = 5  # correlation id + empty tagged fields
        _throttle, error = struct.unpack_from(">ih", data, i)
        assert error == 0, (n.name, error)
        i += 6
        msg_len = data[i]
        i += 1 + max(msg_len - 1, 0)
        endpoint_type = data[i]
        i += 1
        cluster_len = data[i] - 1
        cluster_id = data[i + 1:i + 1 + cluster_len].decode()
        i += 1 + cluster_len
        (controller_id,) = struct.unpack_from(">i", data, i)
        i += 4
        count = data[i] - 1
        i += 1
        ports = {}
        for _ in range(count):
            (bid,) = struct.unpack_from(">i", data, i)
            i += 4
            hlen = data[i] - 1
            i += 1 + hlen
            (port,) = struct.unpack_from(">i", data, i)
            i += 4
            i += 1 if data[i] == 0 else 1 + data[i] - 1  # rack (null or short)
            i += 1  # tagged fields
            ports[bid] = port
        assert endpoint_type == 2 and cluster_id == cluster.cluster_id
        assert controller_id == active.node_id
        assert ports == {m.node_id: m.controller_port for m in cluster.nodes}, ports


def test_a_controller_joins_and_leaves_the_quorum_at_run_time(tmp_path):
    """KIP-853 style: a fourth node, formatted with --no-initial-controllers, starts and waits;
    `strata quorum add-voter` makes it a learner, then a voter once caught up; the quorum then
    survives the loss of one original controller (three of four left); the Java Admin's
    removeRaftVoter (what kafka-metadata-quorum.sh remove-controller sends) takes it out again."""
    c = Cluster(tmp_path, size=3)
    try:
        c.start()
        cport4 = free_port()
        voters4 = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in c.nodes) + f",4@127.0.0.1:{cport4}"
        n4 = Node(tmp_path / "n4", 4, voters4, cport4, {})
        r = subprocess.run([str(strata_bin()), "format", "--config", str(n4.config), "--cluster-id", c.cluster_id,
                            "--no-initial-controllers"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        n4.spawn()
        bootstrap = ",".join(f"127.0.0.1:{n.controller_port}" for n in c.nodes)
        r = subprocess.run([str(strata_bin()), "quorum", "add-voter", "--bootstrap-controller", bootstrap,
                            "--controller-id", "4", "--controller-listener", f"127.0.0.1:{cport4}"],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr + n4.log_tail()
        n4.wait_ready(60)
        c.nodes.append(n4)
        wait_until(lambda: sorted(describe_quorum_v1(c.nodes[0].port)["partition"]["voters"]) == [1, 2, 3, 4], 20,
                   message="node 4 is not a voter")
        # Its broker serves the cluster's metadata.
        create(n4.bootstrap, "with-four", 4)
        wait_until(lambda: len(leaders_seen_by(n4.bootstrap, "with-four")) == 4, 10, message="node 4 lags")

        # Four voters: losing one original still leaves a majority (3 of 4).
        victim = next(n for n in c.nodes[:3] if not n.is_active_controller())
        victim.kill()
        create(n4.bootstrap, "three-of-four", 2)
        victim.start(60)

        # Remove voter 4 again, with the Java Admin that kafka-metadata-quorum.sh uses
        # (bootstrap.controllers, RemoveRaftVoter); the others go on as three.
        import json
        program = java_program("4", Path(__file__).parent / "java" / "StrataQuorumAdmin.java", tmp_path / "java")

        def quorum_admin(*args: str) -> dict:
            r = subprocess.run(program + [bootstrap, *args], capture_output=True, text=True, timeout=180)
            lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
            assert lines, r.stdout + r.stderr[-3000:]
            return json.loads(lines[-1][7:])

        assert quorum_admin("describe")["voters"] == [1, 2, 3, 4]
        assert quorum_admin("remove", "4")["voters"] == [1, 2, 3]
        wait_until(lambda: sorted(describe_quorum_v1(c.nodes[0].port)["partition"]["voters"]) == [1, 2, 3], 20,
                   message="voter 4 was not removed")
        create(c.nodes[0].bootstrap, "after-removal", 1)
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def test_the_whole_cluster_restarts_with_its_topics_records_and_offsets(tmp_path):
    """Every node stopped (SIGTERM, one after the other: the last ones cannot reach a quorum to
    be fenced and stop anyway), then all started again: the metadata, the records and a group's
    committed offsets are all back, and every partition has its leader again."""
    from confluent_kafka import TopicPartition

    c = Cluster(tmp_path)
    try:
        c.start()
        create(c.nodes[0].bootstrap, "durable", 6)
        wait_until(lambda: all(len(leaders_seen_by(n.bootstrap, "durable")) == 6 for n in c.nodes), 10,
                   message="the topic did not reach every broker")
        p = ck_producer(c.bootstrap, acks="all")
        for i in range(120):
            p.produce("durable", key=f"k{i}", value=f"v{i}")
        assert p.flush(30) == 0
        consumer = ck_consumer(c.bootstrap, **{"group.id": "durable-group"})
        consumer.commit(offsets=[TopicPartition("durable", part, 7) for part in range(6)], asynchronous=False)
        consumer.close()
        before = leaders_seen_by(c.nodes[0].bootstrap, "durable")

        for n in c.nodes:
            n.stop(30)
        for n in c.nodes:
            n.spawn()
        for n in c.nodes:
            n.wait_ready(60)

        wait_until(lambda: leaders_seen_by(c.nodes[1].bootstrap, "durable") == before, 30,
                   message="the partitions did not get their leaders back")
        got = {}
        reader = ck_consumer(c.bootstrap, **{"group.id": "durable-reader", "auto.offset.reset": "earliest"})
        reader.subscribe(["durable"])
        deadline = time.time() + 60
        while len(got) < 120 and time.time() < deadline:
            m = reader.poll(1.0)
            if m is not None and m.error() is None:
                got[m.key().decode()] = m.value().decode()
        reader.close()
        assert got == {f"k{i}": f"v{i}" for i in range(120)}
        group = ck_consumer(c.bootstrap, **{"group.id": "durable-group"})
        committed = group.committed([TopicPartition("durable", part) for part in range(6)], timeout=20)
        group.close()
        assert [tp.offset for tp in committed] == [7] * 6, committed
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def test_the_java_client_sees_and_uses_the_cluster(cluster, tmp_path):
    """kafka-clients 4.x: describeCluster lists the three brokers, a topic created through one
    broker is spread over all three, and a producer and a group consumer work across them."""
    import json

    program = java_program("4", Path(__file__).parent / "java" / "StrataClusterE2E.java", tmp_path / "java")
    r = subprocess.run(program + [cluster.nodes[1].bootstrap, cluster.bootstrap, "java-spread"],
                       capture_output=True, text=True, timeout=180)
    results = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            results.update(json.loads(line[7:]))
    assert "DONE" in r.stdout, r.stdout + r.stderr[-3000:]
    assert results["brokers"] == [1, 2, 3], results
    assert results["quorum_voters"] == [1, 2, 3] and results["quorum_leader"] in (1, 2, 3), results
    assert results["quorum_epoch"] > 0 and results["quorum_hw"] > 0, results
    assert results["leaders"] == [1, 2, 3], results
    assert results["consumed"] == 200, results


def alter_partition_v2(port: int, broker_id: int, broker_epoch: int, topic_id: bytes) -> int:
    """AlterPartition v2 (flexible) for partition 0 of `topic_id`, ISR [broker_id]: the
    response's top-level error code."""
    import struct

    from e2e_util import flexible_request, uvarint

    partition = struct.pack(">iib", 0, 0, 2) + struct.pack(">i", broker_id) + struct.pack(">bi", 0, 0) + b"\x00"
    body = struct.pack(">iq", broker_id, broker_epoch) + uvarint(2) + topic_id + uvarint(2) + partition + b"\x00\x00"
    r = flexible_request(port, 56, 2, body)
    r.take(">i")  # throttle
    return r.take(">h")


def test_the_controller_listener_lists_and_serves_the_controller_apis(cluster):
    """ApiVersions on a CONTROLLER listener lists the controller's APIs (what Kafka's admin
    client with bootstrap.controllers checks), not the broker's; AlterPartition (KIP-497) is
    decided by the active controller only: from a sender at a broker epoch it never had,
    STALE_BROKER_EPOCH there, NOT_CONTROLLER elsewhere."""
    from e2e_util import api_versions

    keys = api_versions("127.0.0.1", cluster.nodes[0].controller_port)
    assert keys[56] == (2, 3) and keys[80] == (0, 0) and keys[81] == (0, 0) and keys[62] == (0, 4), keys
    assert 0 not in keys and 1 not in keys, "the controller listener does not serve Produce or Fetch"
    active = cluster.active_controller()
    create(active.bootstrap, "alter-me", 1)
    codes = {n.node_id: alter_partition_v2(n.controller_port, active.node_id, -5, b"\x01" * 16)
             for n in cluster.nodes}
    assert codes[active.node_id] == 77, codes  # STALE_BROKER_EPOCH
    assert all(code == 41 for node, code in codes.items() if node != active.node_id), codes  # NOT_CONTROLLER
