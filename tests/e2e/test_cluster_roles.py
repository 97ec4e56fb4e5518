"""Controller-only and broker-only nodes (issue #13, `process.roles`), as Kafka's production
layout runs them: three controllers (`process.roles=controller`, only a CONTROLLER listener)
form the quorum; two brokers (`process.roles=broker`, no CONTROLLER listener) register with
it, follow the metadata log as observers (Raft learners) and serve the clients.

Checked with real clients (confluent-kafka / librdkafka, kafka-python):
- clients see the two brokers and not the controllers; DescribeQuorum through a broker names
  the controllers as voters and the brokers as observers; a topic created through a broker is
  spread over both brokers; a group produces and consumes through them;
- SIGKILL of the active controller: the brokers keep serving, and CreateTopics through a
  broker succeeds again once another controller is active;
- a broker that was stopped while a topic was created comes back, catches up with the
  metadata log before it serves (its first Metadata answer has the new topic, placed on the
  live broker) and leads its partitions again;
- a broker-only node whose id is a voter, and a controller-only node that is not one, are
  refused at start.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import strata_bin
from e2e_util import ck_admin, ck_consumer, ck_producer, free_port, wait_until
from test_cluster import Node, create, describe_quorum_v1, leaders_seen_by

CONTROLLERS = (1, 2, 3)
BROKERS = (4, 5)


class RoleNode(Node):
    """A node with one role: a controller listens only on CONTROLLER, a broker only for clients."""

    def __init__(self, workdir: Path, node_id: int, voters: str, controller_port: int, role: str):
        super().__init__(workdir, node_id, voters, controller_port, {})
        self.role = role
        lines = {
            "node.id": str(node_id),
            "process.roles": role,
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir),
        }
        if role == "controller":
            lines["listeners"] = f"CONTROLLER://127.0.0.1:{controller_port}"
        else:
            lines["listeners"] = f"PLAINTEXT://127.0.0.1:{self.port}"
            lines["advertised.listeners"] = f"PLAINTEXT://127.0.0.1:{self.port}"
            # Two brokers: Kafka's default of 3 could never be placed.
            lines["offsets.topic.replication.factor"] = "2"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def wait_ready(self, timeout: float = 60):
        if self.role == "broker":
            return super().wait_ready(timeout)

        def serving():
            assert self.proc.poll() is None, f"{self.name} exited\n{self.log_tail()}"
            text = self.log_text()
            return "strata is serving" in text[text.rfind("----- [e2e] start"):]

        wait_until(serving, timeout, message=lambda: f"{self.name} never served\n{self.log_tail()}")


def make_cluster(root: Path) -> tuple[list[RoleNode], list[RoleNode]]:
    ports = {i: free_port() for i in CONTROLLERS}
    voters = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in CONTROLLERS)
    controllers = [RoleNode(root / f"c{i}", i, voters, ports[i], "controller") for i in CONTROLLERS]
    brokers = [RoleNode(root / f"b{i}", i, voters, 0, "broker") for i in BROKERS]
    cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                check=True).stdout.strip()
    for n in controllers + brokers:
        r = subprocess.run([str(strata_bin()), "format", "--config", str(n.config), "--cluster-id", cluster_id],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    return controllers, brokers


def bootstrap_of(brokers: list[RoleNode]) -> str:
    return ",".join(b.bootstrap for b in brokers if b.running())


def active_controller(controllers: list[RoleNode], timeout: float = 20) -> RoleNode:
    found = {}

    def one():
        active = [c for c in controllers if c.running() and c.is_active_controller()]
        found["c"] = active[0] if len(active) == 1 else None
        return found["c"] is not None

    wait_until(one, timeout, message="no single active controller")
    return found["c"]


def create_eventually(bootstrap: str, topic: str, partitions: int, within: float):
    def created():
        try:
            create(bootstrap, topic, partitions, timeout=5)
            return True
        except Exception as e:  # noqa: BLE001 - NOT_CONTROLLER while an election runs
            return "TOPIC_ALREADY_EXISTS" in str(e)

    wait_until(created, within, interval=0.2, message=f"CreateTopics {topic} never succeeded")


def test_controller_only_and_broker_only_nodes(tmp_path):
    controllers, brokers = make_cluster(tmp_path)
    nodes = controllers + brokers
    try:
        for n in nodes:
            n.spawn()
        for n in nodes:
            n.wait_ready(60)

        # Clients see the brokers only; a controller-only node has no client listener at all.
        for b in brokers:
            md = ck_admin(b.bootstrap).list_topics(timeout=10)
            assert sorted(md.brokers) == list(BROKERS), (b.name, md.brokers)
        from kafka import KafkaAdminClient
        kp = KafkaAdminClient(bootstrap_servers=brokers[0].bootstrap, client_id="e2e-roles")
        try:
            described = kp.describe_cluster()
            ids = sorted(b.get("node_id", b.get("broker_id")) for b in described["brokers"])
            assert ids == list(BROKERS), described
        finally:
            kp.close()
        active = active_controller(controllers)
        # DescribeQuorum through a broker: the controllers vote, the brokers observe.
        wait_until(lambda: sorted(describe_quorum_v1(brokers[0].port)["partition"]["observers"]) == list(BROKERS),
                   10, message=lambda: f"observers: {describe_quorum_v1(brokers[0].port)}")
        q = describe_quorum_v1(brokers[1].port)["partition"]
        assert sorted(q["voters"]) == list(CONTROLLERS) and q["leader_id"] == active.node_id, q
        for b in brokers:
            assert (b.data_dir / "__cluster_metadata-0" / "raft.wal").exists(), "a broker follows the metadata log"
            assert "controller listening" not in b.log_text()

        # A topic created through a broker is spread over both; a group uses it.
        create(brokers[1].bootstrap, "split", 4)
        for b in brokers:
            wait_until(lambda: len(leaders_seen_by(b.bootstrap, "split")) == 4, 10,
                       message=f"{b.name} does not see the topic")
            assert sorted(set(leaders_seen_by(b.bootstrap, "split").values())) == list(BROKERS)
        p = ck_producer(bootstrap_of(brokers), acks="all")
        sent = {f"k{i}": f"v{i}" for i in range(200)}
        for k, v in sent.items():
            p.produce("split", key=k, value=v)
        assert p.flush(30) == 0
        c = ck_consumer(bootstrap_of(brokers), **{"group.id": "roles-group", "auto.offset.reset": "earliest"})
        c.subscribe(["split"])
        got = {}
        deadline = time.time() + 60
        while len(got) < len(sent) and time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got[m.key().decode()] = m.value().decode()
        c.close()
        assert got == sent

        # The active controller dies: the brokers go on serving, and admin requests through a
        # broker work again once another controller is active.
        active.kill()
        for i in range(50):
            p.produce("split", key=f"after-{i}", value="x")
        assert p.flush(30) == 0
        create_eventually(brokers[0].bootstrap, "after-failover", 2, within=20)
        assert active_controller([c for c in controllers if c.running()]) is not active
        active.start(60)

        # A broker down while topics are created catches up when it returns.
        late = brokers[0]
        late.stop()
        create_eventually(brokers[1].bootstrap, "while-down", 4, within=20)
        late.start(60)
        # It serves only once its metadata holds its new registration (KRaft's catch-up
        # before unfencing), so its very first answer knows the topic created while it was down.
        assert len(leaders_seen_by(late.bootstrap, "while-down")) == 4, \
            "the returning broker served metadata older than its registration"
        assert "unfenced by the controller" in late.log_text()
        # Placed while it was down, the new topic lives on the other broker; the returning one
        # leads its partitions of the first topic again (their leader was -1 meanwhile).
        assert set(leaders_seen_by(late.bootstrap, "while-down").values()) == {brokers[1].node_id}
        wait_until(lambda: sorted(set(leaders_seen_by(late.bootstrap, "split").values())) == list(BROKERS), 20,
                   message="the returning broker does not lead its partitions again")
        p2 = ck_producer(late.bootstrap, acks="all")
        for part in range(4):
            p2.produce("split", key=b"k", value=b"v", partition=part)
            p2.produce("while-down", key=b"k", value=b"v", partition=part)
        assert p2.flush(30) == 0
        for n in nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        for n in nodes:
            n.cleanup()


def test_roles_and_voters_must_agree(tmp_path):
    ports = {i: free_port() for i in CONTROLLERS}
    voters = ",".join(f"{i}@127.0.0.1:{ports[i]}" for i in CONTROLLERS)
    cases = [
        # A broker-only node cannot be a voter; a controller must be one.
        (["--node-id", "2", "--set", "process.roles=broker"], "broker only"),
        (["--node-id", "9", "--set", "process.roles=controller",
          "--set", f"listeners=CONTROLLER://127.0.0.1:{free_port()}"], "is not one of the voters"),
    ]
    for args, expect in cases:
        r = subprocess.run([str(strata_bin()), "server", "--data-dir", str(tmp_path / "d"),
                            "--set", f"controller.quorum.voters={voters}", *args],
                           capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert r.returncode != 0 and expect in r.stderr, (args, r.stderr[-2000:])
