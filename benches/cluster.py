#!/usr/bin/env python3
"""A three-node cluster on loopback: how fast metadata moves.

Formats and starts three `strata` nodes (each broker and controller, Kafka's keys in
.properties files, data in a scratch directory, 127.0.0.1 only), then measures:

1. topic visibility: --visibility-runs times, CreateTopics (3 partitions) through node 1, then
   Metadata polled on all three brokers every 2 ms; the time from the request to the last
   broker listing the topic with its leaders;
2. bulk creation: --topics topics of --partitions partitions, created through node 2 (not
   always the active controller, so requests travel in Envelopes) in CreateTopics requests of
   --batch topics, 4 in flight; the time until every broker lists every topic;
3. controller failover: --failovers times, SIGKILL of the active controller (found from the
   nodes' `metadata quorum leader ... active=true` lines), then CreateTopics through a
   survivor retried every 20 ms with a 1 s timeout; the time from the kill to the first
   success. The killed node is restarted and caught up before the next round.

    benches/cluster.py --strata target/release/strata [--topics 1000] [--partitions 10]

The machine is noisy: compare runs of two binaries made back to back.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary: str, root: Path, node_id: int, voters: str, port: int, cport: int):
        self.binary, self.node_id, self.port = binary, node_id, port
        self.dir = root / f"node{node_id}"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "server.properties"
        self.config.write_text(
            f"node.id={node_id}\nprocess.roles=broker,controller\ncontroller.quorum.voters={voters}\n"
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n"
            f"log.dirs={self.dir / 'data'}\n")
        self.log = self.dir / "stderr.log"
        self.proc: subprocess.Popen | None = None

    def start(self):
        env = dict(os.environ, STRATA_LOG="info,strata::raft=warn")
        self.proc = subprocess.Popen([self.binary, "server", "--config", str(self.config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)

    def active(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        text = self.log.read_text(errors="replace")
        lines = [l for l in text.splitlines() if "metadata quorum leader" in l]
        return bool(lines) and "active=true" in lines[-1]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def formatted_nodes(binary: str, root: Path, size: int = 3) -> list[Node]:
    """`size` nodes under `root`, each on its own ports, formatted with one cluster id."""
    ports = [free_port() for _ in range(size)]
    cports = [free_port() for _ in range(size)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(cports))
    nodes = [Node(binary, root, i + 1, voters, ports[i], cports[i]) for i in range(size)]
    cluster_id = subprocess.run([binary, "random-uuid"], capture_output=True, text=True, check=True).stdout.strip()
    for n in nodes:
        subprocess.run([binary, "format", "--config", str(n.config), "--cluster-id", cluster_id],
                       check=True, capture_output=True)
    return nodes


def stop_nodes(nodes: list[Node]):
    """SIGTERM to every running node; SIGKILL to any still there after 20 s."""
    for n in nodes:
        if n.proc and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        if n.proc:
            try:
                n.proc.wait(20)
            except subprocess.TimeoutExpired:
                n.proc.kill()


def admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def topics_on(bootstrap: str, a=None) -> dict:
    return (a or admin(bootstrap)).list_topics(timeout=10).topics


def wait(cond, timeout: float, what: str, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out: {what}")


def create(a, names: list[str], partitions: int, timeout: float = 30):
    from confluent_kafka.admin import NewTopic
    fs = a.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
                         request_timeout=timeout)
    for f in fs.values():
        f.result(timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--visibility-runs", type=int, default=20)
    ap.add_argument("--failovers", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the nodes' directories and logs")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="strata-cluster-bench-"))
    nodes = formatted_nodes(args.strata, root)
    try:
        for n in nodes:
            n.start()
        admins = [admin(n.bootstrap) for n in nodes]
        wait(lambda: all(len(a.list_topics(timeout=10).brokers) == 3 for a in admins), 60, "three brokers")

        # 1. Topic visibility.
        took = []
        for r in range(args.visibility_runs):
            name = f"visible-{r}"
            t0 = time.monotonic()
            create(admins[0], [name], 3)
            wait(lambda: all(name in a.list_topics(topic=name, timeout=10).topics
                             and not a.list_topics(topic=name, timeout=10).topics[name].error for a in admins),
                 30, f"{name} on every broker")
            took.append((time.monotonic() - t0) * 1000)
        print(f"topic visible on all 3 brokers: p50 {statistics.median(took):.1f} ms, "
              f"max {max(took):.1f} ms ({len(took)} runs)")

        # 2. Bulk creation.
        names = [f"bulk-{i:05d}" for i in range(args.topics)]
        batches = [names[i:i + args.batch] for i in range(0, len(names), args.batch)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda b: create(admin(nodes[1].bootstrap), b, args.partitions, 120), batches))
        created = time.monotonic() - t0
        wait(lambda: all(sum(1 for t in a.list_topics(timeout=30).topics if t.startswith("bulk-")) == args.topics
                         for a in admins), 300, "every topic on every broker", interval=0.05)
        visible = time.monotonic() - t0
        print(f"{args.topics} topics x {args.partitions} partitions: created in {created:.2f} s, "
              f"on every broker after {visible:.2f} s")

        # 3. Controller failover.
        for r in range(args.failovers):
            wait(lambda: sum(1 for n in nodes if n.active()) == 1, 30, "one active controller", 0.05)
            victim = next(n for n in nodes if n.active())
            survivor = next(n for n in nodes if n is not victim)
            a = admin(survivor.bootstrap)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            t0 = time.monotonic()
            while True:
                try:
                    create(a, [f"failover-{r}"], 1, timeout=1)
                    break
                except Exception as e:  # noqa: BLE001 - NOT_CONTROLLER / timeout during the election
                    # An earlier attempt that timed out on the client may have gone through.
                    if "TOPIC_ALREADY_EXISTS" in str(e):
                        break
                    if time.monotonic() - t0 > 60:
                        raise SystemExit("no controller after 60 s")
                    time.sleep(0.02)
            print(f"failover {r + 1}: CreateTopics through a survivor succeeded "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms after SIGKILL of the active controller")
            victim.start()
            va = admin(victim.bootstrap)
            wait(lambda: f"failover-{r}" in topics_on(victim.bootstrap, va), 60, "the victim caught up", 0.05)
    finally:
        stop_nodes(nodes)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
