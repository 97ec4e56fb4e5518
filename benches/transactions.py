#!/usr/bin/env python3
"""Transactional produce next to idempotent produce (issue #15).

Starts `strata` with its data in a scratch directory (127.0.0.1 only), creates an 8-partition
topic per run, and produces --records 1 KiB records (acks=all, linger.ms=5, one producer,
confluent-kafka / librdkafka) three ways, in interleaved rounds so that the machine's drift
hits each alike:

- idempotent: `enable.idempotence=true`;
- transactions of 10,000 records: `transactional.id`, commit every 10,000;
- transactions of 100 records: commit every 100 (fewer records in total, --small-records).

Prints records/s and MB/s for each run, the broker's CPU seconds per GB (user + system, from
/proc/<pid>/stat), and per transaction mode its ratio to the idempotent run of the same round.

    benches/transactions.py --strata target/release/strata [--records 500000] [--rounds 3]

(The Rust load generator is not used here: with rust-rdkafka 0.39 / librdkafka 2.12.1 every
transaction takes about 100 ms in the client, whatever the broker; confluent-kafka 2.16's
librdkafka commits in about 2 ms.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from bench_util import cpu_seconds, free_port, wait_for_port
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

RECORD = b"x" * 1024




def produce(bootstrap: str, topic: str, records: int, txn_every: int) -> float:
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 1_000_000}
    if txn_every:
        conf["transactional.id"] = f"bench-{topic}"
    else:
        conf["enable.idempotence"] = True
    p = Producer(conf)
    if txn_every:
        p.init_transactions(30)
        p.begin_transaction()
    start = time.monotonic()
    for i in range(records):
        if txn_every and i and i % txn_every == 0:
            p.commit_transaction(60)
            p.begin_transaction()
        while True:
            try:
                p.produce(topic, RECORD)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    if txn_every:
        p.commit_transaction(60)
    assert p.flush(60) == 0
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--small-records", type=int, default=100_000, help="records of the 100-record runs")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="strata-bench-txn-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen([args.strata, "server", "--data-dir", data, "--listen", bootstrap],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "broker.log"), "w"))
    try:
        wait_for_port(port)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        print(f"strata {args.strata}, {args.records} records x 1024 B (100-record transactions: "
              f"{args.small_records}), 8 partitions, acks=all, linger.ms=5, one producer")
        for r in range(1, args.rounds + 1):
            base = None
            for name, every, n in (("idempotent", 0, args.records), ("transactions of 10,000", 10_000, args.records),
                                   ("transactions of 100", 100, args.small_records)):
                topic = f"t{r}-{every}"
                admin.create_topics([NewTopic(topic, 8, 1)])[topic].result(30)
                cpu0 = cpu_seconds(broker.pid)
                secs = produce(bootstrap, topic, n, every)
                cpu = cpu_seconds(broker.pid) - cpu0
                rate = n / secs
                gb = n * len(RECORD) / 1e9
                ratio = "" if base is None else f", {rate / base:.2f} x idempotent"
                base = rate if base is None else base
                print(f"round {r}: {name}: {n} records in {secs:.2f} s = {rate:,.0f} records/s, "
                      f"{rate * len(RECORD) / 1e6:.1f} MB/s; broker {cpu / gb:.2f} CPU s/GB{ratio}", flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
