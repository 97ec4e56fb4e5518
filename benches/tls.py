#!/usr/bin/env python3
"""Produce and consume over TLS next to plaintext (issue #16).

Makes a throwaway CA and server certificate with the openssl CLI, starts `strata` (data in a
scratch directory, 127.0.0.1 only) with a PLAINTEXT and an SSL listener (TLS 1.3), and in
interleaved rounds, so that the machine's drift hits each alike, per listener:

- produces --records 1 KiB records (acks=all, idempotent, linger.ms=5, one confluent-kafka /
  librdkafka producer) to a fresh 8-partition topic;
- consumes them all from the start (one consumer, `assign()`, no group).

Prints MB/s and the broker's CPU seconds per GB (user + system, /proc/<pid>/stat) for each run,
and the TLS run's ratios to the plaintext run of the same round. Over TLS the broker encrypts
every byte in user space (no sendfile, no kernel TLS), which is what CPU/GB shows.

    benches/tls.py --strata target/release/strata [--records 500000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from bench_util import cpu_seconds, free_port, wait_for_port
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

RECORD = b"x" * 1024
PARTITIONS = 8




def make_pki(d: str) -> None:
    def run(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    with open(os.path.join(d, "server.pem"), "w") as out:
        for part in ("server.key", "server.crt"):
            with open(os.path.join(d, part)) as f:
                out.write(f.read())


def produce(conf: dict, topic: str, records: int) -> float:
    p = Producer({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5, "batch.size": 1_000_000,
                  "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 1_000_000})
    start = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, RECORD)
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return time.monotonic() - start


def consume(conf: dict, topic: str, records: int) -> float:
    c = Consumer({**conf, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                  "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    start = time.monotonic()
    seen = 0
    deadline = start + 300
    while seen < records:
        for m in c.consume(num_messages=10_000, timeout=1):
            if m.error() is None:
                seen += 1
        assert time.monotonic() < deadline, f"consumed {seen} of {records}"
    secs = time.monotonic() - start
    c.close()
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="strata-bench-tls-")
    make_pki(data)
    plain, tls = free_port(), free_port()
    listeners = f"PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{tls}"
    broker = subprocess.Popen(
        [args.strata, "server", "--data-dir", os.path.join(data, "data"), "--listen", f"127.0.0.1:{plain}",
         "--set", f"listeners={listeners}", "--set", f"advertised.listeners={listeners}",
         "--set", f"ssl.keystore.location={os.path.join(data, 'server.pem')}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "broker.log"), "w"))
    confs = {
        "plaintext": {"bootstrap.servers": f"127.0.0.1:{plain}"},
        "tls": {"bootstrap.servers": f"127.0.0.1:{tls}", "security.protocol": "SSL",
                "ssl.ca.location": os.path.join(data, "ca.pem")},
    }
    try:
        wait_for_port(plain)
        admin = AdminClient(confs["plaintext"])
        gb = args.records * len(RECORD) / 1e9
        print(f"strata {args.strata}, {args.records} records x 1024 B, {PARTITIONS} partitions, acks=all, "
              f"idempotent, one producer then one consumer per listener (confluent-kafka)")
        for r in range(1, args.rounds + 1):
            base: dict[str, tuple[float, float]] = {}
            for name, conf in confs.items():
                topic = f"r{r}-{name}"
                admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
                for what, run in (("produce", produce), ("consume", consume)):
                    cpu0 = cpu_seconds(broker.pid)
                    secs = run(conf, topic, args.records)
                    cpu = cpu_seconds(broker.pid) - cpu0
                    mbs = gb * 1000 / secs
                    ratio = ""
                    if what in base:
                        b_mbs, b_cpu = base[what]
                        ratio = f" ({mbs / b_mbs:.2f} x plaintext MB/s, {cpu / gb / b_cpu:.2f} x CPU/GB)"
                    else:
                        base[what] = (mbs, cpu / gb)
                    print(f"round {r}: {name} {what}: {mbs:.1f} MB/s, broker {cpu / gb:.2f} CPU s/GB{ratio}",
                          flush=True)
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
