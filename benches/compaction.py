#!/usr/bin/env python3
"""Log compaction: how fast the cleaner cleans, and what it does to produce latency elsewhere.

Starts `strata` with its data in a scratch directory (127.0.0.1 only, `--set
log.cleaner.backoff.ms=100`), then:

1. creates topic `compacted` (1 partition, segment.bytes --segment-mb MiB,
   min.cleanable.dirty.ratio --dirty-ratio) at cleanup.policy=delete, so the cleaner leaves it
   alone, and produces --mb MiB of key+value payload to it: --value-bytes values over --keys
   keys, round robin (acks=1, batched, no compression);
2. starts a probe producer in its own process on topic `probe` (another partition, not
   compacted): --rate records/s of --value-bytes, acks=1, linger.ms=0, one at a time on a fixed
   schedule; each record's latency is produce() to its delivery report;
3. after --baseline-s seconds (the cleaner idle), switches `compacted` to cleanup.policy=compact
   with IncrementalAlterConfigs, which takes effect live, and follows the broker's `log cleaned`
   lines for it until the cleaned section reaches the active segment (clean_to >= the active
   segment's base offset: everything the cleaner may clean is clean), then stops the probe.

Reports the cleaning throughput, sum(bytes_before) / sum(duration_ms) of those lines, the wall
time from the switch to the last line (includes the cleaner's pick-up), the partition's *.log
bytes before and after, and the probe's latency percentiles in the two phases: baseline (before
the switch) and during cleaning (the switch to the last line).

    benches/compaction.py --strata target/release/strata [--mb 1000] [--keys 10000]

The machine is noisy: run it twice, or for two binaries in a row, and compare.
"""
from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPACTED = "compacted"
PROBE = "probe"
FIELD_RE = re.compile(r'(\w[\w.]*)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, str]:
    """key=value fields of a tracing line (quoted values unquoted)."""
    return {k: v.strip('"') for k, v in FIELD_RE.findall(line)}


def wait_port(port: int, broker: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise SystemExit(f"broker exited with {broker.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"broker did not listen on {port}")


def die_with_parent() -> None:
    """preexec_fn: the broker gets SIGKILL if this script dies (no orphans)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def percentile(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def log_bytes(part_dir: Path) -> tuple[int, list[tuple[int, int]]]:
    """Sum of the partition's *.log sizes, and (base offset, size) of each segment."""
    segs = []
    for f in part_dir.glob("*.log"):
        try:
            segs.append((int(f.stem), f.stat().st_size))
        except (ValueError, FileNotFoundError):
            continue
    segs.sort()
    return sum(s for _, s in segs), segs


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(whole process, cleaner threads) CPU seconds (utime + stime) so far."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat_cpu(path: Path) -> tuple[str, float]:
        text = path.read_text()
        comm = text[text.index("(") + 1:text.rindex(")")]
        rest = text[text.rindex(")") + 2:].split()
        return comm, (int(rest[11]) + int(rest[12])) / tick  # fields 14, 15: utime, stime

    try:
        _, total = stat_cpu(Path(f"/proc/{pid}/stat"))
        cleaner = 0.0
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                comm, s = stat_cpu(t / "stat")
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            if comm.startswith("strata-cleaner"):
                cleaner += s
        return total, cleaner
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0


def probe_main(bootstrap: str, rate: float, value_bytes: int, ready, stop, conn) -> None:
    """Child process: one record every 1/rate s to PROBE; sends back [(t_produce, latency)]
    (latency None for a failed delivery) and the largest lateness behind the schedule."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0, "enable.idempotence": False,
                  "socket.nagle.disable": True, "log.connection.close": False})
    value = os.urandom(value_bytes)
    out: list[tuple[float, float | None]] = []
    clock = time.monotonic

    def sent_at(t: float):
        def cb(err, _msg) -> None:
            out.append((t, None if err is not None else clock() - t))
        return cb

    # Warm up: metadata and the connection to the partition leader.
    for _ in range(20):
        p.produce(PROBE, value=value, partition=0)
    if p.flush(30) != 0:
        conn.send(([], 0.0, "warm-up records not delivered"))
        return
    ready.set()
    interval = 1.0 / rate
    next_t = clock()
    late = 0.0
    while not stop.is_set():
        now = clock()
        if now >= next_t:
            late = max(late, now - next_t)
            while True:
                try:
                    p.produce(PROBE, value=value, partition=0, on_delivery=sent_at(clock()))
                    break
                except BufferError:
                    p.poll(0.001)
            p.poll(0)
            next_t += interval
        else:
            p.poll(next_t - now)
    left = p.flush(60)
    conn.send((out, late, f"{left} records never delivered" if left else ""))


def produce_bulk(bootstrap: str, records: int, keys: int, value_bytes: int) -> float:
    """Produces `records` records round robin over `keys` keys to COMPACTED; returns seconds."""
    from confluent_kafka import Producer
    errors: list[str] = []

    def on_error(err, _msg) -> None:
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20,
                  "batch.size": 1_000_000, "batch.num.messages": 100_000,
                  "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 2_000_000,
                  "compression.type": "none", "enable.idempotence": False, "log.connection.close": False,
                  "delivery.report.only.error": True, "on_delivery": on_error})
    key_list = [b"key-%08d" % k for k in range(keys)]
    rng = random.Random(1)
    values = [rng.randbytes(value_bytes) for _ in range(1024)]
    produce = p.produce
    t0 = time.monotonic()
    report = t0 + 10
    for i in range(records):
        while True:
            try:
                produce(COMPACTED, values[i & 1023], key_list[i % keys], 0)
                break
            except BufferError:
                p.poll(0.01)
        if i & 0x3FFF == 0:
            p.poll(0)
            if time.monotonic() > report:
                report += 10
                print(f"  ... {i:,} / {records:,} records", flush=True)
    left = p.flush(600)
    took = time.monotonic() - t0
    if left or errors:
        raise SystemExit(f"bulk produce failed: {left} undelivered, errors {errors}")
    return took


def lat_row(name: str, samples: list[tuple[float, float | None]], t0: float, t1: float) -> str:
    xs = sorted(lat * 1000 for t, lat in samples if t0 <= t < t1 and lat is not None)
    failed = sum(1 for t, lat in samples if t0 <= t < t1 and lat is None)
    if not xs:
        return f"  {name:<16} no samples"
    secs = t1 - t0
    return (f"  {name:<16} {secs:7.1f} s {len(xs):>8} {len(xs) / secs:7.0f}/s  "
            f"p50 {percentile(xs, 0.50):7.2f}  p99 {percentile(xs, 0.99):7.2f}  "
            f"p99.9 {percentile(xs, 0.999):7.2f}  max {xs[-1]:7.2f} ms"
            + (f"  ({failed} failed)" if failed else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strata", required=True, help="the broker binary")
    ap.add_argument("--port", type=int, default=19094)
    ap.add_argument("--mb", type=int, default=1000, help="MiB of key+value payload produced to the compacted topic")
    ap.add_argument("--keys", type=int, default=10000, help="distinct keys")
    ap.add_argument("--value-bytes", type=int, default=100, help="value size of every record")
    ap.add_argument("--segment-mb", type=int, default=64, help="segment.bytes of the compacted topic, MiB")
    ap.add_argument("--dirty-ratio", default="0.01", help="min.cleanable.dirty.ratio of the compacted topic")
    ap.add_argument("--rate", type=float, default=2000, help="probe records per second")
    ap.add_argument("--baseline-s", type=float, default=15, help="seconds of probe before the switch")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the cleaning")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra broker --set (repeatable)")
    ap.add_argument("--dir", default=None, help="scratch directory, kept (default: a temp dir, removed)")
    args = ap.parse_args()

    key_bytes = len(b"key-%08d" % 0)
    records = (args.mb << 20) // (key_bytes + args.value_bytes)
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="strata-compaction-"))
    scratch.mkdir(parents=True, exist_ok=True)
    data = scratch / "data"
    shutil.rmtree(data, ignore_errors=True)
    log_path = scratch / "broker.log"
    bootstrap = f"127.0.0.1:{args.port}"
    argv = [args.strata, "server", "--data-dir", str(data), "--listen", bootstrap, "--advertise", bootstrap,
            "--set", "log.cleaner.backoff.ms=100"]
    for s in args.set:
        argv += ["--set", s]
    log = open(log_path, "w")
    broker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent)
    probe = None
    try:
        wait_port(args.port, broker)
        from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                           NewTopic, ResourceType)
        admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
        futures = admin.create_topics([
            NewTopic(COMPACTED, 1, 1, config={"cleanup.policy": "delete",
                                              "segment.bytes": str(args.segment_mb << 20),
                                              "min.cleanable.dirty.ratio": args.dirty_ratio}),
            NewTopic(PROBE, 1, 1),
        ])
        for f in futures.values():
            f.result(30)

        # (1) The data to clean, with the cleaner held back by cleanup.policy=delete.
        print(f"producing {records:,} records ({args.mb} MiB of {key_bytes}+{args.value_bytes} B key+value) "
              f"over {args.keys:,} keys to {COMPACTED} ...", flush=True)
        produce_s = produce_bulk(bootstrap, records, args.keys, args.value_bytes)
        part_dir = data / f"{COMPACTED}-0"
        if not part_dir.is_dir():
            found = [d for d in data.rglob(f"{COMPACTED}-0") if d.is_dir()]
            if not found:
                raise SystemExit(f"no partition directory {COMPACTED}-0 under {data}")
            part_dir = found[0]
        before, segs = log_bytes(part_dir)
        active_base = segs[-1][0]
        dirty_bytes = sum(size for _, size in segs[:-1])
        if len(segs) < 2:
            raise SystemExit(f"all {before:,} bytes are in the active segment: nothing to clean "
                             "(raise --mb or lower --segment-mb)")
        print(f"  {produce_s:.1f}s, {args.mb / produce_s:.1f} MiB/s payload; {len(segs)} segments, "
              f"{before:,} bytes on disk, active segment from offset {active_base:,}", flush=True)

        # (2) The probe, and its baseline with the cleaner idle.
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        probe = ctx.Process(target=probe_main, args=(bootstrap, args.rate, args.value_bytes, ready, stop, child_conn),
                            daemon=True)
        probe.start()
        if not ready.wait(60):
            raise SystemExit("the probe producer did not get ready")
        time.sleep(1.0)  # let it settle
        t_base = time.monotonic()
        cpu_base = cpu_seconds(broker.pid)
        print(f"probe at {args.rate:.0f}/s to {PROBE}; baseline {args.baseline_s:.0f}s ...", flush=True)
        time.sleep(args.baseline_s)

        # (3) Switch to compact and follow the cleaner's lines.
        log.flush()
        tail = open(log_path, "r", errors="replace")
        tail.seek(0, os.SEEK_END)
        t_switch = time.monotonic()
        cpu_switch = cpu_seconds(broker.pid)
        res = ConfigResource(ResourceType.TOPIC, COMPACTED, incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(30)
        print(f"switched {COMPACTED} to cleanup.policy=compact "
              f"(acknowledged in {(time.monotonic() - t_switch) * 1000:.0f} ms); cleaning ...", flush=True)
        cleaned: list[dict[str, str]] = []
        t_last = None
        partial = ""
        deadline = t_switch + args.timeout
        while t_last is None:
            chunk = tail.read()
            now = time.monotonic()
            if chunk:
                lines = (partial + chunk).split("\n")
                partial = lines.pop()
                for line in lines:
                    if "cleaning the log failed" in line and f"{COMPACTED}-0" in line:
                        raise SystemExit(f"the cleaner failed: {line}")
                    if "log cleaned" not in line:
                        continue
                    f = fields(line)
                    if f.get("topic") != COMPACTED:
                        continue
                    cleaned.append(f)
                    print(f"  log cleaned: bytes_before={f.get('bytes_before')} bytes_after={f.get('bytes_after')} "
                          f"records_read={f.get('records_read')} records_kept={f.get('records_kept')} "
                          f"clean_to={f.get('clean_to')} duration_ms={f.get('duration_ms')}", flush=True)
                    if int(f.get("clean_to", -1)) >= active_base:
                        t_last = now
            if t_last is None:
                if broker.poll() is not None:
                    raise SystemExit(f"broker exited with {broker.returncode}; see {log_path}")
                if now > deadline:
                    raise SystemExit(f"cleaning not done after {args.timeout:.0f}s "
                                     f"({len(cleaned)} 'log cleaned' lines so far)")
                time.sleep(0.02)
        cpu_end = cpu_seconds(broker.pid)
        stop.set()
        if not parent_conn.poll(90):
            raise SystemExit("the probe producer did not report")
        samples, late, problem = parent_conn.recv()
        probe.join(10)
        tail.close()
        after, segs_after = log_bytes(part_dir)

        # Report.
        sum_before = sum(int(f["bytes_before"]) for f in cleaned)
        sum_after = sum(int(f["bytes_after"]) for f in cleaned)
        read = sum(int(f["records_read"]) for f in cleaned)
        kept = sum(int(f["records_kept"]) for f in cleaned)
        dur_ms = sum(int(f["duration_ms"]) for f in cleaned)
        wall = t_last - t_switch
        free = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.rstrip()
        print()
        print(f"command: {shlex.join([sys.executable] + sys.argv)}")
        print(f"broker:  {shlex.join(argv)}")
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
        print(f"machine: nproc {nproc}, kernel {os.uname().release}, free -g:")
        print("\n".join("  " + l for l in free.splitlines()))
        print()
        print(f"produce   {records:,} records, {args.mb} MiB payload over {args.keys:,} keys in {produce_s:.1f}s "
              f"({args.mb / produce_s:.1f} MiB/s, {records / produce_s:,.0f} records/s)")
        print(f"cleaning  {len(cleaned)} 'log cleaned' line(s): {sum_before:,} -> {sum_after:,} bytes, "
              f"{read:,} -> {kept:,} records, sum duration_ms {dur_ms:,}")
        mibs = sum_before / (1 << 20) / (dur_ms / 1000) if dur_ms else float("inf")
        print(f"          throughput {mibs:.1f} MiB/s ({sum_before / 1e6 / (dur_ms / 1000) if dur_ms else 0:.1f} MB/s, "
              f"{read / (dur_ms / 1000) if dur_ms else 0:,.0f} records/s) of cleaning time; "
              f"wall {wall:.2f}s from the switch to the last line "
              f"({sum_before / (1 << 20) / wall:.1f} MiB/s)")
        cleaner_cpu = cpu_end[1] - cpu_switch[1]
        print(f"          cleaner thread CPU {cleaner_cpu:.1f}s ({cleaner_cpu / wall:.0%} of the wall time); "
              f"dirty section at the switch "
              f"{dirty_bytes:,} bytes in {len(segs) - 1} closed segment(s)")
        print(f"disk      {COMPACTED}-0 *.log: {before:,} bytes in {len(segs)} segments before, "
              f"{after:,} bytes in {len(segs_after)} after ({after / before:.2%})")
        print(f"probe     {PROBE}-0, {args.rate:.0f}/s, {args.value_bytes} B, acks=1, linger.ms=0; "
              f"delivery latency (produce() -> delivery report):")
        print(lat_row("baseline", samples, t_base, t_switch)
              + f"  broker CPU {(cpu_switch[0] - cpu_base[0]) / (t_switch - t_base):.0%}")
        print(lat_row("during cleaning", samples, t_switch, t_last)
              + f"  broker CPU {(cpu_end[0] - cpu_switch[0]) / wall:.0%}")
        print(f"          largest lateness of a probe send behind its schedule: {late * 1000:.1f} ms"
              + (f"; {problem}" if problem else ""))
        if wall < 5:
            print("note: the cleaning took under 5 s; its latency phase has few samples (raise --mb)")
    finally:
        if probe is not None and probe.is_alive():
            probe.terminate()
            probe.join(10)
        broker.terminate()
        try:
            broker.wait(60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        log.close()
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
