"""Shared helpers for the e2e tests: polling, a raw-protocol readiness probe,
and confluent-kafka admin/consume helpers (group-free: assign() only)."""
from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent


def load_versions() -> dict[str, str]:
    out = {}
    for line in (E2E_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip().strip('"')
    return out


VERSIONS = load_versions()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float, interval: float = 0.1, message=None):
    """Poll cond() until truthy (returned) or raise AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else (message or f"condition not met within {timeout}s")
            raise AssertionError(msg)
        time.sleep(interval)


# ------------------------------------------------------- raw Kafka protocol

def recv_exact(sock, n):
    """Reads exactly n bytes; ConnectionError if the broker closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock, api_key, api_version, corr, body=b""):
    cid = b"strata-e2e-probe"
    msg = struct.pack(">hhih", api_key, api_version, corr, len(cid)) + cid + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    data = recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", data[:4])
    if got_corr != corr:
        raise ValueError(f"correlation id {got_corr} != {corr}")
    return data[4:]


class Reader:
    """Reads big-endian fields of a non-flexible Kafka response body."""

    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.i)
        self.i += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.b[self.i:self.i + n].decode()
        self.i += n
        return s

    def bytes_(self):
        n = self.take(">i")
        if n < 0:
            return None
        v = self.b[self.i:self.i + n]
        self.i += n
        return v


def uvarint(n: int) -> bytes:
    """An unsigned varint (flexible versions' lengths and tag counts)."""
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def compact_str(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def flexible_request(port: int, api_key: int, version: int, body: bytes, corr: int = 9) -> "FlexReader":
    """Sends one request of a flexible version (header v2) to 127.0.0.1:`port` and returns a
    reader over the response body (after the v1 header, whose tags must be empty)."""
    cid = b"strata-e2e"
    header = struct.pack(">hhih", api_key, version, corr, len(cid)) + cid + b"\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        msg = header + body
        s.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", recv_exact(s, 4))
        data = recv_exact(s, size)
    r = FlexReader(data)
    assert r.take(">i") == corr and r.uvarint() == 0, "correlation id, response header tags"
    return r


class FlexReader(Reader):
    """Reads fields of a flexible-version response: compact strings and arrays, tags."""

    def uvarint(self) -> int:
        shift = n = 0
        while True:
            b = self.b[self.i]
            self.i += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        v = self.b[self.i:self.i + n].decode()
        self.i += n
        return v

    def array_len(self) -> int:
        return self.uvarint() - 1

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.i += self.uvarint()


def api_versions(host, port, timeout=2.0) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 -> {api_key: (min, max)}; raises unless error_code == 0."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        return _api_versions(s)


def _api_versions(s):
    r = Reader(_request(s, 18, 0, 1))
    err = r.take(">h")
    if err != 0:
        raise ValueError(f"ApiVersions v0 error_code {err}")
    out = {}
    for _ in range(r.take(">i")):
        k, lo, hi = r.take(">hhh")
        out[k] = (lo, hi)
    return out


def probe_broker(host, port, expect_port=None, timeout=2.0):
    """Readiness: ApiVersions v0 must succeed, then (if a non-flexible version
    1..8 is offered) Metadata must list at least one broker, advertised on
    `expect_port`."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        versions = _api_versions(s)
        if 3 not in versions:
            raise ValueError("broker does not advertise Metadata (key 3)")
        lo, hi = versions[3]
        v = min(hi, 8)
        if v < max(lo, 1):
            return versions  # only flexible versions: ApiVersions is our readiness
        body = struct.pack(">i", -1)  # all topics (null array)
        if v >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        if v >= 8:
            body += b"\x00\x00"  # include cluster/topic authorized operations = false
        r = Reader(_request(s, 3, v, 2, body))
        if v >= 3:
            r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node = r.take(">i")
            h = r.string()
            p = r.take(">i")
            r.string()  # rack (v1+)
            brokers.append((node, h, p))
        if not brokers:
            raise ValueError("Metadata lists no brokers")
        if expect_port is not None and not any(p == expect_port for _, _, p in brokers):
            raise ValueError(f"Metadata brokers {brokers} do not advertise port {expect_port}")
        return versions


# ------------------------------------------------------ confluent-kafka helpers

import logging

# librdkafka logs go through Python logging (served on poll()), so pytest attaches
# them to the failing test and clients left over from finished tests stay quiet.
RDKAFKA_LOGGER = logging.getLogger("rdkafka")


def ck_conf(bootstrap, **conf):
    c = {"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOGGER}
    c.update({k.replace("_", "."): v for k, v in conf.items()})
    return c


def ck_producer(bootstrap, **conf):
    from confluent_kafka import Producer
    return Producer(ck_conf(bootstrap, **conf))


def ck_admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient(ck_conf(bootstrap, socket_timeout_ms=10000))


def ck_create_topic(bootstrap, topic, partitions=3, timeout=30.0, config=None):
    """Create via confluent-kafka AdminClient.create_topics; wait until metadata shows it."""
    from confluent_kafka.admin import NewTopic
    admin = ck_admin(bootstrap)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config or {})], operation_timeout=timeout,
                             request_timeout=timeout)
    fs[topic].result(timeout)
    wait_topic_partitions(bootstrap, topic, partitions, timeout, admin=admin)
    return admin


def wait_topic_partitions(bootstrap, topic, partitions, timeout=30.0, admin=None):
    admin = admin or ck_admin(bootstrap)

    def ok():
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 and p.error is None for p in t.partitions.values())

    wait_until(ok, timeout, 0.2, f"topic {topic} did not show {partitions} partitions with leaders")


def ck_consumer(bootstrap, **extra):
    from confluent_kafka import Consumer
    conf = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOGGER,
        # librdkafka insists on a group.id; we never subscribe(), only assign(),
        # so no group protocol is used (groups are not implemented yet).
        "group.id": "strata-e2e-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def ck_read_partitions(bootstrap, topic, partitions, timeout=60.0, expected=None):
    """Read every record from offset 0 up to the high watermark of each partition
    (or `expected[p]` records). Returns {p: [Rec]} in fetch order."""
    from confluent_kafka import KafkaError, TopicPartition
    c = ck_consumer(bootstrap)
    try:
        if expected is None:
            expected = {}
            for p in partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assert lo == 0, f"partition {p} low watermark {lo} != 0"
                expected[p] = hi
        c.assign([TopicPartition(topic, p, 0) for p in partitions])
        out = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < expected[p] for p in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out reading {topic}: got { {p: len(v) for p, v in out.items()} }, "
                    f"expected {expected}")
            for m in c.consume(num_messages=2000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {m.error()}")
                out[m.partition()].append(Rec.from_ck(m))
        return out
    finally:
        c.close()


class Rec(tuple):
    """(offset, key, value, headers, timestamp) as plain comparable values."""
    __slots__ = ()

    def __new__(cls, offset, key, value, headers=(), timestamp=None):
        return tuple.__new__(cls, (offset, key, value, tuple(headers or ()), timestamp))

    offset = property(lambda s: s[0])
    key = property(lambda s: s[1])
    value = property(lambda s: s[2])
    headers = property(lambda s: s[3])
    timestamp = property(lambda s: s[4])

    @classmethod
    def from_ck(cls, m):
        hs = tuple((k, v) for k, v in (m.headers() or []))
        return cls(m.offset(), m.key(), m.value(), hs, m.timestamp()[1])


def fail_unless(cond, msg):
    """assert without pytest's introspection (which would print huge lists)."""
    if not cond:
        raise AssertionError(msg() if callable(msg) else msg)


def assert_dense(recs_by_part):
    for p, recs in recs_by_part.items():
        offs = [r.offset for r in recs]
        fail_unless(offs == list(range(len(offs))), lambda: (
            f"partition {p}: offsets are not 0..{len(offs) - 1} in order; first (index, offset) "
            f"differences: {[(i, o) for i, o in enumerate(offs) if i != o][:10]}"))


# ------------------------------------------------------------------ Java clients

# The Java clients install-test-deps.sh installs: jar directory and the versions.env key
# listing its jars.
JAVA_CLIENTS = {
    "3": (E2E_DIR / ".deps" / "java", "JAVA_JARS"),
    "4": (E2E_DIR / ".deps" / "java4", "JAVA4_JARS"),
}


def java_program(client: str, src: Path, out_dir: Path, heap: str = "256m") -> list[str]:
    """Compiles tests/e2e/java/<src> against Java client `client` ("3": kafka-clients
    JAVA_KAFKA_CLIENTS_VERSION, "4": JAVA4_KAFKA_CLIENTS_VERSION) into `out_dir`; returns
    the command line that runs it. Fails the test (never skips) if the JDK or jars are missing."""
    import shutil
    import subprocess

    import pytest
    if not shutil.which("javac") or not shutil.which("java"):
        pytest.fail("javac/java not found (install-test-deps.sh installs a JDK when root)")
    jar_dir, key = JAVA_CLIENTS[client]
    jars = [jar_dir / f"{j}.jar" for j in VERSIONS[key].split()]
    missing = [str(j) for j in jars if not j.exists()]
    if missing:
        pytest.fail(f"missing jars {missing}: run scripts/install-test-deps.sh")
    cp = ":".join(map(str, jars))
    r = subprocess.run(["javac", "-d", str(out_dir), "-cp", cp, str(src)], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, f"javac {src.name} failed:\n{r.stdout}\n{r.stderr}"
    return ["java", f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-cp", f"{out_dir}:{cp}", src.stem]


def venv_python() -> str:
    import sys
    return sys.executable


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
