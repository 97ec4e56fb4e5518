"""Protocol abuse against a live broker, over raw sockets: garbage, absurd frame
lengths, truncated frames, unknown APIs, an unsupported ApiVersions version, a
bad-CRC Produce followed by a good one on the same connection, clients that
hang up mid-response, 1000 concurrent connections, 200 connections announcing
90 MiB frames, and slow readers that never read their responses. After every
case a fresh client must be served and the broker must not have panicked.

The module also holds the small raw-protocol helpers (RecordBatch v2, Produce
v3, Fetch v4) that test_disk_faults.py uses."""
from __future__ import annotations

import random
import resource
import socket
import struct
import time

import pytest

from e2e_util import Reader as R
from e2e_util import ck_create_topic, ck_producer, probe_broker, recv_exact, wait_until

# ------------------------------------------------------------- raw protocol helpers

CORRUPT_MESSAGE = 2
UNSUPPORTED_VERSION = 35
KAFKA_STORAGE_ERROR = 56


def crc32c(data: bytes) -> int:
    from kafka.record import _crc32c
    return _crc32c.crc(data)


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(values: list[bytes], ts: int | None = None, good_crc: bool = True) -> bytes:
    """An uncompressed RecordBatch v2 of keyless records."""
    ts = int(time.time() * 1000) if ts is None else ts
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + zigzag(0) + zigzag(i) + zigzag(-1) + zigzag(len(v)) + v + zigzag(0)
        recs += zigzag(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, -1, -1, -1, len(values)) + recs
    crc = crc32c(after_crc) ^ (0 if good_crc else 0xFFFF)
    after_len = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def frame(api_key: int, version: int, corr: int, body: bytes) -> bytes:
    msg = struct.pack(">hhih", api_key, version, corr, 10) + b"strata-e2e" + body
    return struct.pack(">i", len(msg)) + msg


def recv_response(s: socket.socket, corr: int) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    data = recv_exact(s, size)
    (got,) = struct.unpack(">i", data[:4])
    assert got == corr, f"correlation id {got} != {corr}"
    return data[4:]


def kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def produce_v3_body(topic: str, partition: int, records: bytes, acks: int = -1) -> bytes:
    return (struct.pack(">hhi", -1, acks, 10000) + struct.pack(">i", 1) + kstr(topic)
            + struct.pack(">ii", 1, partition) + struct.pack(">i", len(records)) + records)


def produce(s: socket.socket, topic: str, partition: int, records: bytes, corr: int) -> tuple[int, int]:
    """Produce v3 on an open connection -> (error_code, base_offset)."""
    s.sendall(frame(0, 3, corr, produce_v3_body(topic, partition, records)))
    r = R(recv_response(s, corr))
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    _, err, base, _ = r.take(">ihqq")
    return err, base


def fetch_v4_body(topic: str, partitions: dict[int, int], max_bytes: int = 1 << 20,
                  max_wait_ms: int = 0) -> bytes:
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", len(partitions))
    for p, off in partitions.items():
        body += struct.pack(">iqi", p, off, max_bytes)
    return body


def fetch(port: int, topic: str, partitions: dict[int, int], max_bytes: int = 1 << 20):
    """Fetch v4 -> {partition: (error_code, high_watermark, records bytes)}."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        s.sendall(frame(1, 4, 11, fetch_v4_body(topic, partitions, max_bytes)))
        r = R(recv_response(s, 11))
    r.take(">i")  # throttle
    out = {}
    for _ in range(r.take(">i")):
        r.string()
        for _ in range(r.take(">i")):
            p, err, hw, _lso = r.take(">ihqq")
            n = r.take(">i")
            for _ in range(max(n, 0)):
                r.take(">qq")
            out[p] = (err, hw, r.bytes_() or b"")
    return out


def batches(records: bytes) -> list[tuple[int, int]]:
    """(base_offset, last_offset) of each whole batch in a record set."""
    out, i = [], 0
    while i + 61 <= len(records):
        base, length = struct.unpack_from(">qi", records, i)
        if i + 12 + length > len(records):
            break
        (delta,) = struct.unpack_from(">i", records, i + 23)
        out.append((base, base + delta))
        i += 12 + length
    return out


# --------------------------------------------------------------------- helpers

def assert_serves(b, what: str, timeout: float = 5):
    """A fresh client gets ApiVersions + Metadata answered (each within `timeout` s), and the
    broker is alive."""
    assert b.running(), f"broker died after {what}\n{b.log_tail()}"
    try:
        probe_broker("127.0.0.1", b.port, expect_port=b.port, timeout=timeout)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"fresh client not served after {what}: {e!r}\n{b.log_tail()}") from e
    assert not b.panic_lines(), f"panic after {what}: {b.panic_lines()}"


def closed_by_broker(s: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the broker closes the connection (EOF or reset) without sending a frame."""
    s.settimeout(timeout)
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return data == b""


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raise_nofile(want: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def broker_nofile(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no fd limit")


# ----------------------------------------------------------------------- tests

def test_garbage_and_bad_frames(broker):
    b = broker
    rng = random.Random(511)
    # Random bytes: whatever they announce, the broker closes or waits; never crashes.
    for i in range(20):
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
            s.sendall(junk)
    assert_serves(b, "random bytes")
    # Absurd frame lengths are refused before anything is allocated: the connection closes.
    for size in (2**31 - 1, 0, -1, -2**31, 100 * 1024 * 1024 + 1):
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
            s.sendall(struct.pack(">i", size) + b"\x00" * 16)
            assert closed_by_broker(s), f"frame length {size}: connection left open"
    assert_serves(b, "absurd frame lengths")
    # A truncated frame, then hang-up.
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        full = frame(18, 0, 1, b"")
        s.sendall(full[:len(full) - 3])
    assert_serves(b, "a truncated frame")
    # Unknown API keys: Kafka closes the connection; so do we, without answering.
    for key in (999, 77, -1):
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
            s.sendall(frame(key, 0, 5, b"\x00" * 8))
            assert closed_by_broker(s), f"api key {key}: connection left open"
    # A known API with a version it does not support, and a body that does not decode.
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(frame(3, 999, 6, b"\xff" * 3))
        assert closed_by_broker(s)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(frame(0, 3, 6, b"\x7f\xff"))  # Produce v3 cut inside its first field
        assert closed_by_broker(s)
    assert_serves(b, "unknown API keys and undecodable bodies")
    # ApiVersions v999 (KIP-511): a v0 body with UNSUPPORTED_VERSION and ApiVersions' range;
    # the connection stays usable.
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(frame(18, 999, 42, b""))
        r = R(recv_response(s, 42))
        assert r.take(">h") == UNSUPPORTED_VERSION
        keys = [r.take(">hhh") for _ in range(r.take(">i"))]
        assert len(keys) == 1 and keys[0][0] == 18 and keys[0][1] == 0 and keys[0][2] >= 3, keys
        s.sendall(frame(18, 0, 43, b""))
        assert R(recv_response(s, 43)).take(">h") == 0
    assert_serves(b, "ApiVersions v999")


def test_bad_crc_then_good_batch_on_the_same_connection(broker, topic_name):
    b = broker
    ck_create_topic(b.bootstrap, topic_name, 1)
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.settimeout(10)
        err, _ = produce(s, topic_name, 0, record_batch([b"bad"], good_crc=False), corr=1)
        assert err == CORRUPT_MESSAGE, f"bad CRC answered with {err}"
        err, base = produce(s, topic_name, 0, record_batch([b"good-1", b"good-2"]), corr=2)
        assert (err, base) == (0, 0), (err, base)
    got = fetch(b.port, topic_name, {0: 0})
    err, hw, recs = got[0]
    assert (err, hw) == (0, 2) and batches(recs) == [(0, 1)], (err, hw, batches(recs))
    assert b"good-2" in recs and b"bad" not in recs
    assert_serves(b, "a bad-CRC produce")


def test_client_hangs_up_mid_response(broker, topic_name):
    b = broker
    ck_create_topic(b.bootstrap, topic_name, 1)
    p = ck_producer(b.bootstrap, linger_ms=20)
    payload = b"x" * 10_000
    for i in range(1000):  # ~10 MB
        p.produce(topic_name, value=payload, partition=0)
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(frame(1, 4, 9, fetch_v4_body(topic_name, {0: 0}, max_bytes=50 << 20)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()
    assert_serves(b, "clients hanging up mid-response")
    err, hw, recs = fetch(b.port, topic_name, {0: 0}, max_bytes=50 << 20)[0]
    assert err == 0 and hw == 1000 and batches(recs)[-1][1] == 999


def test_1000_concurrent_connections(broker):
    b = broker
    n = 1000
    have = raise_nofile(n + 200)
    if have < n + 100:
        pytest.skip(f"cannot raise this process's open-file limit to {n + 100} (have {have})")
    bl = broker_nofile(b.proc.pid)
    assert bl >= n + 100, f"the broker inherited an open-file limit of {bl}, too low for {n} connections"
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", b.port), timeout=10))
        for i, s in enumerate(socks):
            s.sendall(frame(18, 0, i, b""))
        for i, s in enumerate(socks):
            s.settimeout(20)
            assert R(recv_response(s, i)).take(">h") == 0
    finally:
        for s in socks:
            s.close()
    assert_serves(b, f"{n} concurrent connections")


def test_200_connections_announcing_90_mib_frames(broker):
    b = broker
    raise_nofile(1024)
    before = rss_bytes(b.proc.pid)
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            s.sendall(struct.pack(">i", 90 * 1024 * 1024) + frame(18, 0, 1, b"")[4:] + b"\x00" * 1000)
            socks.append(s)
        # A fresh client is served while they hang (a generous bound: the machine may be busy;
        # a broker blocked by the hanging frames never answers).
        t0 = time.monotonic()
        assert_serves(b, "200 connections announcing 90 MiB frames", timeout=30)
        served_in = time.monotonic() - t0
        after = rss_bytes(b.proc.pid)
        print(f"RSS before {before >> 20} MiB, with 200 big announced frames {after >> 20} MiB, "
              f"fresh client served in {served_in:.2f}s")
        assert after - before < 1 << 30, f"RSS grew by {(after - before) >> 20} MiB"
    finally:
        for s in socks:
            s.close()
    assert_serves(b, "closing the big-frame connections")


def test_slow_readers_do_not_grow_memory(broker, topic_name):
    """Clients that pipeline fetches but never read the responses: the broker reads a few
    frames ahead, then stops reading their sockets (backpressure), so their requests back up
    in the kernel and its memory stays flat; other clients are served meanwhile."""
    b = broker
    ck_create_topic(b.bootstrap, topic_name, 1)
    p = ck_producer(b.bootstrap, linger_ms=20)
    for i in range(200):  # ~2 MB
        p.produce(topic_name, value=b"y" * 10_000, partition=0)
    assert p.flush(30) == 0
    raise_nofile(1024)
    before = rss_bytes(b.proc.pid)
    one = frame(1, 4, 1, fetch_v4_body(topic_name, {0: 0}, max_bytes=4 << 20))
    # 4 MiB of pipelined fetches per connection: far more than the kernel buffers between the
    # client and the broker (a few hundred KiB here), so only a broker that keeps reading
    # requests it cannot answer would take them all.
    req = one * ((4 << 20) // len(one))
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            s.setblocking(False)
            socks.append([s, 0])
        # Push as many requests as the broker will take, until every connection is blocked
        # (or a generous deadline passes).
        deadline = time.monotonic() + 10
        idle_rounds = 0
        while time.monotonic() < deadline and idle_rounds < 20:
            progress = False
            for entry in socks:
                s, sent = entry
                if sent < len(req):
                    try:
                        n = s.send(req[sent:sent + 65536])
                        entry[1] += n
                        progress = progress or n > 0
                    except BlockingIOError:
                        pass
            idle_rounds = 0 if progress else idle_rounds + 1
            if not progress:
                time.sleep(0.05)
        stuck = sum(1 for _, sent in socks if sent < len(req))
        accepted = max(sent for _, sent in socks)
        after = rss_bytes(b.proc.pid)
        print(f"slow readers: {stuck}/20 blocked by the broker after at most {accepted >> 10} KiB each; "
              f"RSS {before >> 20} -> {after >> 20} MiB")
        assert stuck == len(socks), (
            f"only {stuck}/20 connections were blocked: the broker kept reading requests it could "
            f"not answer (one took {accepted} of {len(req)} bytes)")
        assert after - before < 512 << 20, f"RSS grew by {(after - before) >> 20} MiB"
        assert_serves(b, "slow readers")
        err, _, recs = fetch(b.port, topic_name, {0: 0})[0]
        assert err == 0 and recs, "a normal fetch is not served next to slow readers"
    finally:
        for s, _ in socks:
            s.close()
    wait_until(lambda: b.running(), 1)
    assert_serves(b, "closing the slow readers")


@pytest.mark.parametrize("body_hex", [
    # Metadata v0 whose topic array claims 2^31-1 entries (kafka-protocol 0.18.0
    # sizes the Vec from the count and aborted the broker; vendor/ has the fix).
    "00030000000000010000" + "7fffffff",
    # Metadata v12 (flexible): client id, empty tags, then a compact topic
    # array claiming ~2^32 entries.
    "0003000c0000000100" + "00" + "00" + "ffffffff0f",
], ids=["int32-count", "varint-count"])
def test_huge_array_counts_do_not_kill_the_broker(broker, body_hex):
    """A few bytes claiming billions of array elements: the connection is
    closed (or answered), the broker keeps serving and its memory stays put."""
    body = bytes.fromhex(body_hex)
    before = rss_bytes(broker.proc.pid)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            closed_by_broker(s)
    assert broker.proc.poll() is None, "broker died"
    assert_serves(broker, "after huge array counts")
    assert rss_bytes(broker.proc.pid) - before < 256 * 1024 * 1024


def fetch_v4_repeated_body(topic: str, partitions: list[int], max_wait_ms: int) -> bytes:
    """Fetch v4, min_bytes 1, naming each partition of `partitions` (repeats allowed) at
    offset 0."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iqi", p, 0, 1 << 20)
    return body


def long_polls(port: int, body: bytes, count: int, connections: int = 20, pipeline: int = 50):
    """`count` Fetch v4 requests with `body` over `connections` connections, `pipeline` in
    flight on each; every answer must come back, without error."""
    import threading
    errors = []

    def run(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.settimeout(30)
                done = 0
                while done < n:
                    k = min(pipeline, n - done)
                    s.sendall(b"".join(frame(1, 4, done + i, body) for i in range(k)))
                    for i in range(k):
                        r = R(recv_response(s, done + i))
                        r.take(">i")  # throttle
                        for _ in range(r.take(">i")):
                            r.string()
                            for _ in range(r.take(">i")):
                                _p, err, _hw, _lso = r.take(">ihqq")
                                assert err == 0, f"long poll answered error {err}"
                                for _ in range(max(r.take(">i"), 0)):
                                    r.take(">qq")
                                r.bytes_()
                    done += k
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(count // connections,)) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_long_polls_on_idle_partitions_leave_memory_flat(broker, topic_name):
    """100,000 long-poll fetches that time out on idle partitions, each naming 8 partitions
    eight times over: a parked fetch watches each partition it names once and stops watching
    when it completes (Kafka's fetch purgatory), so the broker's memory stays flat. (It used
    to add a waiter per named partition per poll that only an append removed: ~64 waiters per
    poll, tens of MiB over this test.)"""
    b = broker
    ck_create_topic(b.bootstrap, topic_name, partitions=8)
    body = fetch_v4_repeated_body(topic_name, list(range(8)) * 8, max_wait_ms=1)
    long_polls(b.port, body, 10_000)  # warm up allocator pools and buffers
    before = rss_bytes(b.proc.pid)
    t0 = time.monotonic()
    long_polls(b.port, body, 100_000)
    took = time.monotonic() - t0
    after = rss_bytes(b.proc.pid)
    print(f"100,000 long polls on 8 idle partitions in {took:.1f}s: broker RSS {before / 2**20:.1f} -> "
          f"{after / 2**20:.1f} MiB")
    assert after - before < 4 << 20, f"RSS grew by {(after - before) / 2**20:.1f} MiB across 100,000 long polls"
    assert_serves(b, "100,000 long polls")
