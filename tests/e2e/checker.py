"""A Jepsen-style checker over real `strata` processes (issue #14): producers write unique
values with acks=all and idempotence, a nemesis injects faults, consumers read, and at the
end every claim Kafka makes to a producer is checked against what consumers can read.

The topic is replicated three times with `min.insync.replicas=2`, so every fault below hits
partition leaders and followers, and the controllers' elections and ISR changes decide what
survives.

Faults (one at a time, each healed before the next): SIGKILL of a node then a restart
(a crash), SIGSTOP then SIGCONT (a pause longer than a request timeout, shorter than the
session timeout), SIGTERM then a restart (a controlled shutdown), and network faults: on a
cluster of network namespaces (netns.py) a node cut off from every other node ("partition":
replication, Raft and heartbeats stop; clients still reach it, so a deposed leader keeps
taking requests) or one link between two nodes cut ("cut"); on the loopback cluster, a node
cut off from the other controllers through the harness's link proxies.

Checks, once every fault is healed and the producers have drained:
- lost: an acknowledged value that no consumer reads (must be 0);
- duplicated: a value read at two offsets (must be 0; idempotent producers);
- moved: an acknowledged value read at another offset than its acknowledgement said (0);
- divergent: two consumers reading the same partition from the start see different
  sequences (0);
- vanished: a value a consumer saw while the faults ran that is not at that offset at the end
  (0: no consumer may see data that later disappears);
- offsets: every partition's offsets strictly increase (no offset reused).

`run()` returns a report; `python checker.py --seconds N` (with STRATA_BIN set) runs it on a
fresh three-node cluster and prints it: the documented long run.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition


@dataclass
class Report:
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    attempted: int = 0
    acked: int = 0
    failed: int = 0
    read: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    moved: list = field(default_factory=list)
    divergent: list = field(default_factory=list)
    vanished: list = field(default_factory=list)
    offsets: list = field(default_factory=list)

    def anomalies(self) -> int:
        return sum(len(x) for x in (self.lost, self.duplicated, self.moved, self.divergent, self.vanished,
                                    self.offsets))

    def summary(self) -> str:
        return (f"{self.seconds:.0f} s, faults {dict(sorted(self.faults.items()))}, {self.attempted} values sent, "
                f"{self.acked} acknowledged, {self.failed} failed, {self.read} read; anomalies: "
                f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, moved {len(self.moved)}, "
                f"divergent {len(self.divergent)}, vanished {len(self.vanished)}, offsets {len(self.offsets)}")


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 120.0) -> dict[int, list[tuple[int, str]]]:
    """Every record of every partition from the start to its high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"checker-{random.random()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    out: dict[int, list[tuple[int, str]]] = {p: [] for p in range(partitions)}
    try:
        ends = {}
        deadline = time.monotonic() + timeout
        for p in range(partitions):
            while True:
                try:
                    ends[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                    break
                except Exception:  # noqa: BLE001 - a leader coming back
                    assert time.monotonic() < deadline, f"no watermark for {topic}-{p}"
                    time.sleep(0.2)
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        done = {p for p in range(partitions) if ends[p] == 0}
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"reading stalled: {len(done)} of {partitions} partitions read"
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error() is not None:
                continue
            out[m.partition()].append((m.offset(), m.value().decode()))
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
    finally:
        c.close()
    return out


class Watcher(threading.Thread):
    """A consumer reading while the faults run: what it saw must still be there at the end."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.seen: dict[tuple[int, int], str] = {}
        self.stop = threading.Event()

    def run(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"watcher-{random.random()}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "topic.metadata.refresh.interval.ms": 1000})
        c.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
        try:
            while not self.stop.is_set():
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    self.seen[(m.partition(), m.offset())] = m.value().decode()
        finally:
            c.close()


def fault_kinds(cluster=None) -> list[str]:
    """The faults the nemesis can inject on `cluster`: crashes, pauses and restarts always,
    network partitions and cut links when the cluster has links to cut."""
    faults = ["kill", "pause", "restart"] + (["partition"] if cluster is not None and cluster.links else [])
    if cluster is not None and hasattr(cluster, "cut"):
        faults.append("cut")
    return faults


def choose_fault(rng: random.Random, cluster=None, weights: dict[str, float] | None = None) -> str:
    """One of `fault_kinds(cluster)`, equally likely unless `weights` (fault name -> weight)."""
    faults = fault_kinds(cluster)
    return rng.choices(faults, [weights.get(f, 1.0) for f in faults])[0] if weights else rng.choice(faults)


def inject(rng: random.Random, fault: str, victim, nodes, cluster=None):
    """Injects `fault` (see `fault_kinds`) on `victim` and heals it before returning: a SIGKILL
    then a restart after 0.5-2 s, a SIGSTOP then SIGCONT after 1-4 s, a SIGTERM then a
    restart, `victim` cut off from every other node for 1-4 s, or its link to one other node
    cut for 1-6 s."""
    if fault == "kill":
        victim.kill()
        time.sleep(rng.uniform(0.5, 2.0))
        victim.start(60)
    elif fault == "pause":
        os.kill(victim.proc.pid, signal.SIGSTOP)
        time.sleep(rng.uniform(1.0, 4.0))
        os.kill(victim.proc.pid, signal.SIGCONT)
    elif fault == "partition":
        cluster.isolate(victim)
        time.sleep(rng.uniform(1.0, 4.0))
        cluster.heal()
    elif fault == "cut":
        other = rng.choice([n for n in nodes if n is not victim])
        cluster.cut(victim.node_id, other.node_id)
        time.sleep(rng.uniform(1.0, 6.0))
        cluster.heal()
    else:
        victim.stop()
        victim.start(60)


def run(nodes, bootstrap: str, topic: str, partitions: int, seconds: float, seed: int = 1,
        fault_every: float = 3.0, cluster=None, weights: dict[str, float] | None = None) -> Report:
    """Runs producers, a watcher and the nemesis against `nodes` (objects with `proc`, `kill()`,
    `stop()`, `start()`, `running()`) for `seconds`, heals, then checks (see the module docs).
    With `cluster` (having `links`, `isolate(node)` and `heal()`), partitions are injected too.
    `weights` (fault name -> weight) skews the choice of faults; by default they are equally likely."""
    rng = random.Random(seed)
    report = Report()
    acked: dict[str, tuple[int, int]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def producer_loop(pid: int):
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "delivery.timeout.ms": 60000, "message.timeout.ms": 60000,
                      "topic.metadata.refresh.interval.ms": 1000})

        def on_delivery(err, msg):
            with lock:
                if err is None:
                    acked[msg.value().decode()] = (msg.partition(), msg.offset())
                else:
                    report.failed += 1

        seq = 0
        while not stop.is_set():
            value = f"p{pid}-{seq}"
            seq += 1
            try:
                p.produce(topic, value=value.encode(), key=value.encode(), on_delivery=on_delivery)
                with lock:
                    report.attempted += 1
            except BufferError:
                pass
            p.poll(0.002)
        p.flush(120)

    watcher = Watcher(bootstrap, topic, partitions)
    watcher.start()
    producers = [threading.Thread(target=producer_loop, args=(i,), daemon=True) for i in range(2)]
    for t in producers:
        t.start()

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(fault_every * (0.5 + rng.random()))
        victim = nodes[rng.randrange(len(nodes))]
        fault = choose_fault(rng, cluster, weights)
        report.faults[fault] = report.faults.get(fault, 0) + 1
        inject(rng, fault, victim, nodes, cluster)
    report.seconds = time.monotonic() - t0

    stop.set()
    for t in producers:
        t.join(180)
    watcher.stop.set()
    watcher.join(30)

    final = read_all(bootstrap, topic, partitions)
    again = read_all(bootstrap, topic, partitions)
    where: dict[str, list[tuple[int, int]]] = {}
    for part, recs in final.items():
        offsets = [o for o, _ in recs]
        if any(b <= a for a, b in zip(offsets, offsets[1:])):
            report.offsets.append(part)
        for o, v in recs:
            where.setdefault(v, []).append((part, o))
        if recs != again[part]:
            report.divergent.append(part)
    report.read = sum(len(r) for r in final.values())
    report.acked = len(acked)
    report.duplicated = [v for v, at in where.items() if len(at) > 1]
    report.lost = [(v, acked[v]) for v in acked if v not in where]
    report.moved = [v for v, at in acked.items() if v in where and where[v][0] != at]
    at_offset = {(p, o): v for p, recs in final.items() for o, v in recs}
    report.vanished = [(k, v) for k, v in watcher.seen.items() if at_offset.get(k) != v]
    return report


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int = 3,
                 min_insync: int = 2, timeout: float = 30):
    """Creates the checked topic and waits until Metadata shows every partition with a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"min.insync.replicas": str(min_insync)} if replication_factor > 1 else {}
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor,
                                       config=config)], request_timeout=timeout)
    for f in fs.values():
        f.result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        t = admin.list_topics(topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 and len(p.isrs) == replication_factor for p in t.partitions.values()):
            return
        assert time.monotonic() < deadline, f"{topic} not ready"
        time.sleep(0.2)


def make_cluster(root, extra: dict[str, str] | None = None):
    """A cluster of network namespaces when this machine can make them, else one on loopback
    whose controller links go through the harness's proxies."""
    import netns
    from test_cluster import Cluster
    if netns.available():
        return netns.NetnsCluster(root, extra=extra)
    return Cluster(root, proxied=True, extra=extra)


if __name__ == "__main__":
    import argparse
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--fault-every", type=float, default=3.0, help="mean seconds between faults")
    ap.add_argument("--kill-weight", type=float, default=1.0, help="how much likelier a kill is than each other fault")
    ap.add_argument("--replication-factor", type=int, default=3)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="strata-checker-")
    c = make_cluster(Path(d))
    anomalies = 1
    try:
        c.start()
        create_topic(c.bootstrap, "checker", args.partitions, args.replication_factor)
        r = run(c.nodes, ",".join(n.bootstrap for n in c.nodes), "checker", args.partitions, args.seconds,
                seed=args.seed, cluster=c, fault_every=args.fault_every,
                weights={"kill": args.kill_weight} if args.kill_weight != 1.0 else None)
        print(r.summary())
        anomalies = r.anomalies()
        if anomalies:
            print("lost (value, acknowledged at (partition, offset)):", r.lost[:10])
            print("duplicated:", r.duplicated[:10], "moved:", r.moved[:10], "vanished:", r.vanished[:10])
    finally:
        c.cleanup()
        if anomalies:
            print(f"kept the nodes' directories and logs in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if anomalies else 0)
