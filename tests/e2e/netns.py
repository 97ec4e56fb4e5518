"""A cluster whose nodes each run in their own network namespace (issue #14's network faults).

Each node gets a namespace with one veth link to a bridge in the test's namespace: node i
listens at 10.213.S.i (S picked per cluster), the test reaches every node through the bridge
(10.213.S.254), and the harness cuts the link between two nodes by adding a blackhole route to
the other's address inside each of the two namespaces: replication, Raft and controller traffic
between them stops, while clients still reach both (as when a switch between two racks
fails). Everything is torn down with the cluster. Needs root (CAP_NET_ADMIN) and `ip`;
`available()` says whether this machine can do it.

All traffic stays inside these namespaces and their bridge; nothing leaves the machine.
"""
from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from conftest import Broker, strata_bin
from e2e_util import probe_broker, wait_until
from test_cluster import Cluster, Node

CLIENT_PORT = 9092
CONTROLLER_PORT = 9093


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> bool:
    """Whether namespaces and bridges can be made here (root with CAP_NET_ADMIN, `ip`)."""
    name = f"strata-probe-{random.randrange(1 << 30):x}"
    try:
        if ip("netns", "add", name, check=False).returncode != 0:
            return False
        ip("netns", "del", name, check=False)
        return True
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


class NetnsNode(Node):
    """One broker+controller node inside namespace `ns` at `host` (a loopback cluster's Node
    whose listeners and command line differ)."""

    def __init__(self, workdir: Path, node_id: int, ns: str, host: str, voters: str, extra: dict[str, str]):
        Broker.__init__(self, workdir, name=f"node{node_id}")
        self.node_id, self.ns, self.host = node_id, ns, host
        self.port = CLIENT_PORT
        self.config = workdir / f"node{node_id}.properties"
        lines = {
            "node.id": str(node_id),
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://{host}:{CLIENT_PORT},CONTROLLER://{host}:{CONTROLLER_PORT}",
            "advertised.listeners": f"PLAINTEXT://{host}:{CLIENT_PORT}",
            "log.dirs": str(self.data_dir),
            **extra,
        }
        self.config.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{CLIENT_PORT}"

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns, str(strata_bin()), "server", "--config", str(self.config)]

    def wait_ready(self, timeout: float = 60):
        def ready():
            assert self.proc.poll() is None, f"{self.name} exited\n{self.log_tail()}"
            try:
                probe_broker(self.host, CLIENT_PORT, expect_port=CLIENT_PORT)
                return True
            except Exception:  # noqa: BLE001 - keep polling
                return False
        wait_until(ready, timeout, interval=0.05, message=lambda: f"{self.name} not ready\n{self.log_tail()}")

class NetnsCluster(Cluster):
    """`size` nodes, node i in namespace `strata-<tag>-i` at 10.213.S.i (see the module docs): a
    loopback Cluster (its `bootstrap`, `start` and `active_controller`) whose links are cut by
    routes instead of proxies."""

    def __init__(self, root: Path, size: int = 3, extra: dict[str, str] | None = None):
        self.tag = f"{random.randrange(1 << 16):04x}"
        self.subnet = f"10.213.{random.randrange(1, 250)}"
        self.bridge = f"sbr{self.tag}"
        self.cuts: set[tuple[int, int]] = set()
        ids = list(range(1, size + 1))
        self.namespaces = {i: f"strata-{self.tag}-{i}" for i in ids}
        self.hosts = {i: f"{self.subnet}.{i}" for i in ids}
        # Test traffic never leaves the machine: while a cluster's bridge exists its /24 route
        # wins; once the bridge is gone, clients the test could not close (librdkafka instances
        # abandoned in a hung call) meet this blackhole instead of the default route.
        ip("route", "add", "blackhole", "10.213.0.0/16", check=False)
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        # Traffic between the nodes crosses the bridge. Where br_netfilter is loaded (Docker
        # loads it, and sets the FORWARD policy to DROP), bridged frames go through iptables'
        # FORWARD chain: let this bridge's own traffic through, and only it.
        self.forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        if shutil.which("iptables"):
            subprocess.run(["iptables", "-I", *self.forward_rule], capture_output=True, timeout=30)
        for i in ids:
            ns, host_end, ns_end = self.namespaces[i], f"vh{self.tag}{i}", f"vn{self.tag}{i}"
            ip("netns", "add", ns)
            ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            ip("link", "set", ns_end, "netns", ns)
            ip("link", "set", host_end, "master", self.bridge)
            ip("link", "set", host_end, "up")
            ip("-n", ns, "addr", "add", f"{self.hosts[i]}/24", "dev", ns_end)
            ip("-n", ns, "link", "set", ns_end, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        voters = ",".join(f"{i}@{self.hosts[i]}:{CONTROLLER_PORT}" for i in ids)
        self.nodes = [NetnsNode(root / f"n{i}", i, self.namespaces[i], self.hosts[i], voters, extra or {})
                      for i in ids]
        cluster_id = subprocess.run([str(strata_bin()), "random-uuid"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        for n in self.nodes:
            r = subprocess.run([str(strata_bin()), "format", "--config", str(n.config), "--cluster-id", cluster_id],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        self.cluster_id = cluster_id
        # The checker's nemesis cuts links when a cluster has any.
        self.links = {(i, j): None for i in ids for j in ids if i != j}

    def cut(self, a: int, b: int):
        """No traffic between nodes a and b, either way."""
        for x, y in ((a, b), (b, a)):
            ip("-n", self.namespaces[x], "route", "add", "blackhole", f"{self.hosts[y]}/32", check=False)
        self.cuts.add((min(a, b), max(a, b)))

    def isolate(self, node: NetnsNode):
        """`node` reaches no other node and no other node reaches it (clients still do)."""
        for other in self.nodes:
            if other is not node:
                self.cut(node.node_id, other.node_id)

    def heal(self):
        for a, b in sorted(self.cuts):
            for x, y in ((a, b), (b, a)):
                ip("-n", self.namespaces[x], "route", "del", "blackhole", f"{self.hosts[y]}/32", check=False)
        self.cuts.clear()

    def cleanup(self):
        for n in self.nodes:
            n.cleanup()
        for ns in self.namespaces.values():
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)
        if shutil.which("iptables") and getattr(self, "forward_rule", None):
            subprocess.run(["iptables", "-D", *self.forward_rule], capture_output=True, timeout=30)
