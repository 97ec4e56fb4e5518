#!/usr/bin/env python3
"""Fetch latency on a quiet partition while another partition rolls big segments (issue #11,
point 12: nothing on an async worker waits on the disk).

Starts `strata` with its data in a scratch directory, creates a quiet topic holding one small
record and a busy topic whose segments roll every --segment-mb MiB, then runs the load
generator against the busy topic (acks=1, as fast as it goes) while one connection fetches the
quiet partition back to back (Fetch v4, max_wait_ms 0). Every roll of the busy partition
fsyncs the segment it closes; if that fsync ran on an async worker, the fetches queued behind
it on that worker would wait for it. Prints the fetch round-trip percentiles and the rolls.

    benches/fetch_during_rolls.py --strata target/release/strata \\
        --loadgen benches/loadgen/target/release/strata-loadgen [--mb 3000] [--segment-mb 64]

Run it for two binaries in a row and compare the ratios: the machine is noisy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def frame(api_key: int, version: int, corr: int, body: bytes) -> bytes:
    msg = struct.pack(">hhih", api_key, version, corr, 5) + b"bench" + body
    return struct.pack(">i", len(msg)) + msg


def kstr(s: str) -> bytes:
    return struct.pack(">h", len(s)) + s.encode()


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def fetch_body(topic: str) -> bytes:
    # replica -1, max_wait 0, min_bytes 0, max_bytes 1 MiB, read_uncommitted; one partition.
    return (struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0) + struct.pack(">i", 1) + kstr(topic)
            + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20))


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"broker did not listen on {port}")


def percentile(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True)
    ap.add_argument("--loadgen", required=True)
    ap.add_argument("--port", type=int, default=19093)
    ap.add_argument("--mb", type=int, default=3000, help="MB produced to the busy topic")
    ap.add_argument("--segment-mb", type=int, default=64, help="segment.bytes of the busy topic, MiB")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="strata-rolls-"))
    scratch.mkdir(parents=True, exist_ok=True)
    data = scratch / "data"
    shutil.rmtree(data, ignore_errors=True)
    log = open(scratch / "broker.log", "w")
    broker = subprocess.Popen([args.strata, "server", "--data-dir", str(data),
                               "--listen", f"127.0.0.1:{args.port}", "--advertise", f"127.0.0.1:{args.port}"],
                              stdout=log, stderr=log)
    try:
        wait_port(args.port)
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        bootstrap = f"127.0.0.1:{args.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.create_topics([
            NewTopic("quiet", 1, 1),
            NewTopic("busy", 1, 1, config={"segment.bytes": str(args.segment_mb << 20)}),
        ])
        for f in futures.values():
            f.result(30)
        p = Producer({"bootstrap.servers": bootstrap})
        p.produce("quiet", value=b"x" * 100, partition=0)
        assert p.flush(30) == 0

        record_size = 1024
        records = args.mb * 1_000_000 // record_size
        load = subprocess.Popen([args.loadgen, "--bootstrap-servers", bootstrap, "--topic", "busy",
                                 "--partitions", "1", "--record-size", str(record_size),
                                 "--records", str(records), "--acks", "1", "--consumers", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lat: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            body = fetch_body("quiet")
            with socket.create_connection(("127.0.0.1", args.port)) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                corr = 0
                while not stop.is_set():
                    corr += 1
                    t0 = time.perf_counter()
                    s.sendall(frame(1, 4, corr, body))
                    (size,) = struct.unpack(">i", recv_exact(s, 4))
                    recv_exact(s, size)
                    lat.append(time.perf_counter() - t0)
                    time.sleep(0.001)

        prober = threading.Thread(target=probe)
        t0 = time.monotonic()
        prober.start()
        out, _ = load.communicate()
        stop.set()
        prober.join()
        took = time.monotonic() - t0
        segments = len(list((data / "busy-0").glob("*.log")))
        lat.sort()
        ms = [x * 1000 for x in lat]
        print(f"binary: {args.strata}")
        print(f"busy topic: {args.mb} MB in {took:.1f}s, {segments} segments of {args.segment_mb} MiB "
              f"({segments - 1} rolls)")
        print(f"quiet fetches: {len(ms)}  p50 {percentile(ms, 0.50):.2f} ms  p99 {percentile(ms, 0.99):.2f} ms  "
              f"p99.9 {percentile(ms, 0.999):.2f} ms  max {ms[-1]:.2f} ms")
        if load.returncode != 0:
            print(out, file=sys.stderr)
            raise SystemExit(f"loadgen failed ({load.returncode})")
    finally:
        broker.terminate()
        broker.wait(60)
        log.close()
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
