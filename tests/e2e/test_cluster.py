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
from e2e_util import ck_admin, ck_consumer, ck_producer, free_port, wait_until

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
        return bool(lines) and "active=true" in lines[-1]


class Cluster:
    def __init__(self, root: Path, size: int = 3, extra: dict[str, str] | None = None):
        controller_ports = [free_port() for _ in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(controller_ports))
        self.nodes = [Node(root / f"n{i + 1}", i + 1, voters, controller_ports[i], extra or {}) for i in range(size)]
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

    def cleanup(self):
        for n in self.nodes:
            n.cleanup()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


def leaders_seen_by(bootstrap: str, topic: str) -> dict[int, int]:
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
        except Exception:  # noqa: BLE001 - NOT_CONTROLLER while the election runs
            return False

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
        # It serves its share of the new partitions.
        leaders = [l for i in range(30) for l in leaders_seen_by(late.bootstrap, f"while-down-{i}").values()]
        assert late.node_id in leaders
        for n in c.nodes:
            assert n.stop() < 15
    finally:
        c.cleanup()
