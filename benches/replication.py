#!/usr/bin/env python3
"""Replication on a three-node cluster (issue #14): what acks=all on three replicas costs, and
how long a partition is unavailable when its leader dies.

Formats and starts three `strata` nodes on loopback (as benches/cluster.py does), creates two
topics of --partitions partitions, `rf1` (one replica) and `rf3` (three replicas,
`min.insync.replicas=2`), then:

1. produce: benches/loadgen (librdkafka) writes --records records of --record-size bytes with
   one producer, alternating `rf1` acks=1, `rf3` acks=1 and `rf3` acks=all, --rounds times, and
   prints each run's throughput and produce latency percentiles (at full speed the latency is
   mostly the client's queue); then the same three at a fixed --rate records/s, whose
   latency is the broker's and the replication's;
2. failover: --failovers times, a probe producer (acks=all, idempotent, no batching) writes one
   record every 10 ms to partition 0 of `rf3`; its leader is stopped (SIGKILL, then SIGTERM on
   alternate rounds) and the time from the signal to the first record acknowledged after it is
   printed, counting only records sent after the signal. The stopped node is restarted and
   back in the ISR before the next round.

    benches/replication.py --strata target/release/strata \\
        --loadgen benches/loadgen/target/release/strata-loadgen

The machine is noisy: compare the runs of one invocation with each other.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cluster import admin, formatted_nodes, stop_nodes, wait  # noqa: E402


def create(a, name: str, partitions: int, rf: int, config: dict | None = None):
    from confluent_kafka.admin import NewTopic
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
                         request_timeout=30)
    for f in fs.values():
        f.result(30)


def partition0(a, topic: str):
    md = a.list_topics(topic=topic, timeout=10).topics[topic].partitions[0]
    return md.leader, sorted(md.isrs)


def loadgen(binary: str, bootstrap: str, topic: str, acks: str, records: int, size: int, partitions: int,
            rate: int = 0) -> dict:
    out = subprocess.run([binary, "--bootstrap-servers", bootstrap, "--topic", topic, "--partitions", str(partitions),
                          "--records", str(records), "--record-size", str(size), "--consumers", "0",
                          "--acks", acks, "--rate", str(rate), "--json"], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stderr[-2000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--failovers", type=int, default=4)
    ap.add_argument("--rate", type=int, default=20_000, help="records/s of the fixed-rate latency runs")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="strata-replication-bench-"))
    nodes = formatted_nodes(args.strata, root)
    bootstrap = ",".join(n.bootstrap for n in nodes)
    ok = False
    try:
        for n in nodes:
            n.start()
        a = admin(bootstrap)
        wait(lambda: len(a.list_topics(timeout=10).brokers) == 3, 60, "three brokers")
        create(a, "rf1", args.partitions, 1)
        create(a, "rf3", args.partitions, 3, {"min.insync.replicas": "2"})
        wait(lambda: all(len(p.isrs) == 3 for p in a.list_topics(topic="rf3", timeout=10).topics["rf3"].partitions.values()),
             30, "rf3 in sync", 0.05)

        # 1. Produce throughput and latency.
        runs = [(f"round {r + 1}", 0) for r in range(args.rounds)] + [(f"at {args.rate}/s", args.rate)]
        for label, rate in runs:
            for topic, acks in (("rf1", "1"), ("rf3", "1"), ("rf3", "all")):
                records = args.records if rate == 0 else min(args.records, rate * 10)
                res = loadgen(args.loadgen, bootstrap, topic, acks, records, args.record_size, args.partitions, rate)
                print(f"{label} {topic} acks={acks}: {res['produce_records_per_s']:.0f} records/s, "
                      f"{res['produce_mb_per_s']:.1f} MB/s; latency p50 {res['latency_us_p50'] / 1000:.1f} ms, "
                      f"p99 {res['latency_us_p99'] / 1000:.1f} ms, p99.9 {res['latency_us_p999'] / 1000:.1f} ms; "
                      f"failed {res['produce_failed']}", flush=True)

        # 2. Failover of partition 0's leader.
        from confluent_kafka import Producer
        for r in range(args.failovers):
            sig = signal.SIGKILL if r % 2 == 0 else signal.SIGTERM
            wait(lambda: partition0(a, "rf3")[1] == [1, 2, 3], 60, "rf3-0 in sync", 0.05)
            leader, _ = partition0(a, "rf3")
            victim = nodes[leader - 1]
            acked: list[tuple[float, float]] = []  # (sent, acknowledged)
            stop = threading.Event()
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                          "linger.ms": 0, "message.timeout.ms": 120000, "log_level": 0,
                          "topic.metadata.refresh.interval.ms": 1000})

            def probe():
                while not stop.is_set():
                    sent = time.monotonic()
                    p.produce("rf3", value=b"probe", partition=0,
                              on_delivery=lambda err, msg, sent=sent: err is None and acked.append(
                                  (sent, time.monotonic())))
                    p.poll(0.01)
                p.flush(60)
            t = threading.Thread(target=probe, daemon=True)
            t.start()
            wait(lambda: len(acked) > 10, 30, "the probe produces", 0.01)
            victim.proc.send_signal(sig)
            t0 = time.monotonic()
            wait(lambda: any(s > t0 for s, _ in acked), 120, "an acks=all produce after the leader stopped", 0.001)
            took = min(a for s, a in acked if s > t0) - t0
            stop.set()
            t.join(60)
            victim.proc.wait(30)
            new_leader, isr = partition0(a, "rf3")
            print(f"failover {r + 1} ({signal.Signals(sig).name} of broker {leader}): first acks=all produce "
                  f"{took * 1000:.0f} ms later; new leader {new_leader}, ISR {isr}", flush=True)
            victim.start()
        ok = True
    finally:
        stop_nodes(nodes)
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept the nodes' directories and logs in {root}")


if __name__ == "__main__":
    sys.exit(main())
