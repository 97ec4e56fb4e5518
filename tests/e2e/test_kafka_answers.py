"""Apache Kafka's exact answers where Strata used to give its own (issue #10):

- ListOffsets by timestamp never answers below the log start, inside a kept batch too
  (DeleteRecords into the middle of a batch), and a librdkafka consumer assigned at that
  answer reads the kept records;
- a batch header's MaxTimestamp is never trusted: lookups by time, MAX_TIMESTAMP and the
  stored header follow the records, and message.timestamp.after.max.ms judges the records;
- KIP-467 per-record errors (Produce v8+ record_errors), on the wire and as librdkafka
  reports them (INVALID_RECORD for the bad records, _INVALID_DIFFERENT_RECORD for the rest);
- topic compression.type recompresses (or keeps, with `producer`) what is stored;
- Kafka 3.x topic configs (message.format.version, message.downconversion.enable) accepted;
- an acks=0 produce that fails closes the connection.

Raw requests are encoded and decoded with kafka-python's schema-generated protocol classes
(any version, flexible or not); record batches are built with kafka-python's
DefaultRecordBatchBuilder and patched where a test needs a header that lies.
"""
from __future__ import annotations

import logging
import socket
import struct
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from e2e_util import _request, ck_consumer, ck_create_topic, ck_producer, recv_exact, wait_until

# Kafka error codes
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TIMESTAMP = 32
INVALID_CONFIG = 40
INVALID_RECORD = 87
UNSUPPORTED_COMPRESSION_TYPE = 76

# ListOffsets special timestamps
LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3

# RecordBatch v2 header: byte offsets of the fields the tests read or patch
ATTRIBUTES_AT = 21          # int16; CRC32C covers from here to the end
FIRST_TIMESTAMP_AT = 27     # int64
MAX_TIMESTAMP_AT = 35       # int64 (bytes 35..43)
CRC_AT = 17                 # uint32
CODEC = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CODEC_NAME = {v: k for k, v in CODEC.items()}
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ raw protocol

class Conn:
    """One TCP connection; requests encoded by kafka-python's protocol classes."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.corr = 0

    def send(self, req, version: int) -> int:
        self.corr += 1
        req.with_header(correlation_id=self.corr, client_id="strata-e2e-answers")
        self.sock.sendall(req.encode(version=version, header=True, framed=True))
        return self.corr

    def call(self, req, resp_cls, version: int):
        corr = self.send(req, version)
        (size,) = struct.unpack(">i", recv_exact(self.sock, 4))
        resp = resp_cls.decode(recv_exact(self.sock, size), version=version, header=True)
        assert resp.header.correlation_id == corr, (
            f"correlation id {resp.header.correlation_id} != {corr}")
        return resp

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def produce_request(topic, partition, records, acks=-1):
    P = ProduceRequest
    return P(transactional_id=None, acks=acks, timeout_ms=10000, topic_data=[
        P.TopicProduceData(name=topic, partition_data=[
            P.TopicProduceData.PartitionProduceData(index=partition, records=records)])])


def produce(port, topic, partition, records, version=8, acks=-1):
    """Produce (acks=-1) on a fresh connection -> the PartitionProduceResponse."""
    with Conn(port) as c:
        resp = c.call(produce_request(topic, partition, records, acks), ProduceResponse, version)
    [t] = resp.responses
    [p] = t.partition_responses
    return p


def list_offsets(port, topic, partition, timestamp, version=7):
    """ListOffsets (v7: MAX_TIMESTAMP allowed) -> (error_code, offset, timestamp)."""
    L = ListOffsetsRequest
    req = L(replica_id=-1, isolation_level=0, topics=[L.ListOffsetsTopic(name=topic, partitions=[
        L.ListOffsetsTopic.ListOffsetsPartition(partition_index=partition, current_leader_epoch=-1,
                                                timestamp=timestamp)])])
    with Conn(port) as c:
        resp = c.call(req, ListOffsetsResponse, version)
    [t] = resp.topics
    [p] = t.partitions
    return p.error_code, p.offset, p.timestamp


def fetch_partition(port, topic, partition=0, offset=0, version=11):
    """Fetch (v4..v12) from `offset` -> the partition's response."""
    F = FetchRequest
    req = F(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=16 << 20, isolation_level=0, session_id=0,
            session_epoch=-1, forgotten_topics_data=[], rack_id="",
            topics=[F.FetchTopic(topic=topic, partitions=[F.FetchTopic.FetchPartition(
                partition=partition, current_leader_epoch=-1, fetch_offset=offset, log_start_offset=-1,
                partition_max_bytes=16 << 20)])])
    with Conn(port) as c:
        resp = c.call(req, FetchResponse, version)
    [t] = resp.responses
    [p] = t.partitions
    return p


def fetch_batches(port, topic, partition=0, offset=0):
    """Fetch v11 from `offset` -> (high_watermark, [DefaultRecordBatch]) of every stored batch."""
    p = fetch_partition(port, topic, partition, offset)
    assert p.error_code == NONE, f"Fetch {topic}-{partition}@{offset}: error_code {p.error_code}"
    data = bytes(p.records or b"")
    batches, i = [], 0
    while i + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, i + 8)
        if i + 12 + length > len(data):
            break  # a trailing partial batch
        batches.append(DefaultRecordBatch(data[i:i + 12 + length]))
        i += 12 + length
    return p.high_watermark, batches


def build_batch(records, codec=0) -> bytearray:
    """RecordBatch v2 (magic 2) of [(key, value, timestamp)], offset deltas 0..n-1."""
    b = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 1 << 24)
    for i, (key, value, ts) in enumerate(records):
        assert b.append(i, ts, key, value, []) is not None
    return b.build()


def patch_header(batch, first_timestamp=None, max_timestamp=None) -> bytes:
    """Overwrites FirstTimestamp / MaxTimestamp in a built batch and recomputes its CRC32C,
    so the batch is well-formed but its header lies about its records."""
    batch = bytearray(batch)
    if first_timestamp is not None:
        struct.pack_into(">q", batch, FIRST_TIMESTAMP_AT, first_timestamp)
    if max_timestamp is not None:
        struct.pack_into(">q", batch, MAX_TIMESTAMP_AT, max_timestamp)
    struct.pack_into(">I", batch, CRC_AT, calc_crc32c(memoryview(batch)[ATTRIBUTES_AT:]))
    return bytes(batch)


def ck_read(bootstrap, topic, start, count, timeout=20.0, **conf):
    """librdkafka consumer assigned at `start`: records until partition EOF after `count`
    records (or the deadline) -> [(offset, key, value, headers, timestamp)]."""
    c = ck_consumer(bootstrap, **conf)
    out = []
    try:
        c.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + timeout
        eof = False
        while time.monotonic() < deadline and not (eof and len(out) >= count):
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    raise AssertionError(f"consumer error on {topic}: {m.error()}")
                eof = False
                out.append((m.offset(), m.key(), m.value(), tuple(m.headers() or ()),
                            m.timestamp()[1]))
    finally:
        c.close()
    return out


def kp_read(bootstrap, topic, count, timeout=20.0):
    """kafka-python consumer (group-free), from the beginning -> same tuples as ck_read."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
    out = []
    try:
        tp = KTP(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=200, max_records=5000).values():
                out += [(m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs]
    finally:
        c.close()
    return out


# ---------------------------------------------- 1. ListOffsets below the log start

def test_list_offsets_by_time_never_below_log_start(broker, topic_name):
    """One batch of offsets 0..4 (timestamps T0..T0+4), DeleteRecords to 3: the batch stays on
    disk, but a lookup by T0 must answer the first kept record (3, T0+3), as Kafka does."""
    admin = ck_create_topic(broker.bootstrap, topic_name, 1)
    t0 = now_ms()
    p = produce(broker.port, topic_name, 0,
                build_batch([(b"k%d" % i, b"v%d" % i, t0 + i) for i in range(5)]))
    assert (p.error_code, p.base_offset) == (NONE, 0), f"Produce of one 5-record batch: {p}"
    hw, batches = fetch_batches(broker.port, topic_name)
    assert hw == 5 and len(batches) == 1, f"expected one stored batch, HW 5: {len(batches)}, HW {hw}"

    deleted = admin.delete_records([TopicPartition(topic_name, 0, 3)],
                                   request_timeout=30, operation_timeout=30)
    [fut] = deleted.values()
    low = fut.result(30).low_watermark
    assert low == 3, f"DeleteRecords to offset 3: low watermark {low}"

    assert list_offsets(broker.port, topic_name, 0, EARLIEST) == (NONE, 3, -1), \
        "ListOffsets EARLIEST after DeleteRecords to 3"
    got = list_offsets(broker.port, topic_name, 0, t0)
    assert got == (NONE, 3, t0 + 3), (
        f"ListOffsets v7 timestamp=T0 after DeleteRecords to 3: (error, offset, timestamp) = "
        f"{(got[0], got[1], got[2] - t0 if got[2] >= 0 else got[2])} (timestamp relative to T0), "
        f"expected (0, 3, T0+3)")
    got = list_offsets(broker.port, topic_name, 0, MAX_TIMESTAMP)
    assert got[0] == NONE and got[1] >= 3, f"ListOffsets MAX_TIMESTAMP below the log start: {got}"
    assert got == (NONE, 4, t0 + 4), (
        f"ListOffsets MAX_TIMESTAMP: {got}, expected offset 4 with timestamp T0+4 ({t0 + 4})")

    # kafka-python's offsets_for_times: offset and timestamp
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        ktp = KTP(topic_name, 0)
        ot = kc.offsets_for_times({ktp: t0})[ktp]
    finally:
        kc.close()
    assert ot is not None and (ot.offset, ot.timestamp) == (3, t0 + 3), (
        f"kafka-python offsets_for_times(T0): {ot}, expected offset 3 timestamp T0+3 ({t0 + 3})")

    # librdkafka: offsets_for_times, then a consumer assigned there (auto.offset.reset=latest,
    # librdkafka's default: an answer below the log start used to reset it to the end)
    c = ck_consumer(broker.bootstrap)
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic_name, 0, t0)], timeout=10)
    finally:
        c.close()
    assert tp.error is None and tp.offset == 3, (
        f"confluent-kafka offsets_for_times(T0): offset {tp.offset} error {tp.error}, expected 3")
    recs = ck_read(broker.bootstrap, topic_name, tp.offset, 2, **{"auto.offset.reset": "latest"})
    assert [(o, k, v, ts) for o, k, v, _, ts in recs] == [
        (3, b"k3", b"v3", t0 + 3), (4, b"k4", b"v4", t0 + 4)], (
        f"consumer assigned at offsets_for_times(T0)={tp.offset} read {recs}, expected records 3 and 4")


# ---------------------------------------------- 2. MaxTimestamp is not trusted

def test_batch_max_timestamp_not_trusted(broker, topic_name):
    """Records at T, T+10, T+20 in a batch whose header says MaxTimestamp -1, then one record
    at T+15: lookups and the stored header follow the records."""
    ck_create_topic(broker.bootstrap, topic_name, 1)
    t = now_ms()
    lying = patch_header(build_batch([(b"a", b"0", t), (b"b", b"1", t + 10), (b"c", b"2", t + 20)]),
                         max_timestamp=-1)
    assert DefaultRecordBatch(lying).validate_crc(), "test bug: patched batch has a bad CRC"
    p = produce(broker.port, topic_name, 0, lying)
    assert (p.error_code, p.base_offset) == (NONE, 0), f"Produce of the MaxTimestamp=-1 batch: {p}"
    p = produce(broker.port, topic_name, 0, build_batch([(b"d", b"3", t + 15)]))
    assert (p.error_code, p.base_offset) == (NONE, 3), f"Produce of the T+15 batch: {p}"

    got = list_offsets(broker.port, topic_name, 0, t + 5)
    assert got == (NONE, 1, t + 10), (
        f"ListOffsets(T+5): {got}, expected offset 1 timestamp T+10 ({t + 10})")
    got = list_offsets(broker.port, topic_name, 0, MAX_TIMESTAMP)
    assert got == (NONE, 2, t + 20), (
        f"ListOffsets v7 MAX_TIMESTAMP: {got}, expected offset 2 timestamp T+20 ({t + 20})")

    hw, batches = fetch_batches(broker.port, topic_name)
    assert hw == 4 and len(batches) == 2, f"HW {hw}, {len(batches)} batches; expected 4 and 2"
    first = batches[0]
    assert (first.base_offset, first.last_offset) == (0, 2), (first.base_offset, first.last_offset)
    assert first.max_timestamp == t + 20, (
        f"stored first batch header MaxTimestamp {first.max_timestamp}, expected T+20 ({t + 20})")
    assert first.first_timestamp == t, f"stored FirstTimestamp {first.first_timestamp} != T ({t})"
    assert first.attributes & 0x08 == 0, f"stored attributes {first.attributes:#x}: not CreateTime"
    assert first.validate_crc(), "stored first batch fails its CRC32C after the header fix"
    assert [r.timestamp for r in first] == [t, t + 10, t + 20], "stored record timestamps changed"


def test_timestamp_after_max_judges_records_not_header(broker, topic_name):
    """message.timestamp.after.max.ms=60000: a record a day ahead is INVALID_TIMESTAMP even when
    the batch header claims MaxTimestamp = now; KIP-467 names the record; nothing is appended."""
    ck_create_topic(broker.bootstrap, topic_name, 1,
                    config={"message.timestamp.after.max.ms": "60000"})
    now = now_ms()
    cases = {
        # one record a day ahead, header MaxTimestamp patched to now
        "one record": (patch_header(build_batch([(b"k", b"future", now + DAY_MS)]), max_timestamp=now),
                       [0]),
        # first record now, second a day ahead; header First = Max = now
        "second record": (patch_header(build_batch([(b"k", b"ok", now), (b"k", b"future", now + DAY_MS)]),
                                       max_timestamp=now), [1]),
    }
    for name, (batch, bad) in cases.items():
        p = produce(broker.port, topic_name, 0, batch)
        assert p.error_code == INVALID_TIMESTAMP, (
            f"{name}: Produce v8 of a batch with a record at now+1d, header MaxTimestamp=now: "
            f"error_code {p.error_code} (base_offset {p.base_offset}), expected INVALID_TIMESTAMP (32)")
        assert sorted(e.batch_index for e in p.record_errors) == bad, (
            f"{name}: record_errors {p.record_errors}, expected batch_index {bad}")
    assert list_offsets(broker.port, topic_name, 0, LATEST)[1] == 0, "a refused batch was appended"
    # the topic takes a record inside the window
    p = produce(broker.port, topic_name, 0, build_batch([(b"k", b"now", now_ms())]))
    assert (p.error_code, p.base_offset) == (NONE, 0), f"record at now refused: {p}"


# ---------------------------------------------- 3. KIP-467 per-record errors

def test_per_record_errors_on_the_wire(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, 1, config={"cleanup.policy": "compact"})
    t = now_ms()
    batch = build_batch([(b"k0", b"v0", t), (None, b"v1", t), (b"k2", b"v2", t), (None, b"v3", t)])
    p = produce(broker.port, topic_name, 0, batch, version=8)
    assert p.error_code == INVALID_RECORD, (
        f"Produce v8 of 4 records (1 and 3 keyless) to a compacted topic: error_code "
        f"{p.error_code}, expected INVALID_RECORD (87)")
    errs = sorted((e.batch_index, e.batch_index_error_message) for e in p.record_errors)
    assert [i for i, _ in errs] == [1, 3], f"record_errors {errs}, expected batch_index 1 and 3"
    assert all(m for _, m in errs), f"record_errors without a message: {errs}"
    assert p.base_offset == -1, f"base_offset {p.base_offset} for a refused batch"
    assert list_offsets(broker.port, topic_name, 0, LATEST)[:2] == (NONE, 0), \
        "log end moved: a refused batch was appended"


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_per_record_errors_librdkafka_delivery_reports(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, 1, config={"cleanup.policy": "compact"})
    cap = _Capture()
    log = logging.getLogger(f"rdkafka.{topic_name}")
    log.setLevel(logging.DEBUG)
    log.addHandler(cap)
    p = ck_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 10000, "enable.idempotence": False,
                                         "message.timeout.ms": 20000, "compression.type": "none",
                                         "debug": "msg", "logger": log})
    # warm up (metadata, leader connection): otherwise a first record produced while the
    # partition is still unknown may go out in a batch of its own
    first = []
    p.produce(topic_name, key=b"warm", value=b"up", partition=0,
              on_delivery=lambda err, msg: first.append((err, msg.offset())))
    assert p.flush(30) == 0 and first == [(None, 0)], f"keyed warm-up record: {first}"
    reports = {}
    keys = [b"k0", None, b"k2", None, b"k4"]
    for i, key in enumerate(keys):
        p.produce(topic_name, key=key, value=b"v%d" % i, partition=0,
                  on_delivery=lambda err, msg, i=i: reports.__setitem__(i, err))
    assert p.flush(30) == 0, "flush left messages undelivered"
    sets = [l for l in cap.lines if "Produce MessageSet with" in l]
    assert len(sets) == 2 and "with 5 message(s)" in sets[1], (
        f"test precondition: the 5 records must go out in one batch; librdkafka sent {sets}")
    got = {i: (e.code() if e is not None else None) for i, e in sorted(reports.items())}
    want = {i: (KafkaError.INVALID_RECORD if k is None else KafkaError._INVALID_DIFFERENT_RECORD)
            for i, k in enumerate(keys)}
    assert got == want, (
        f"delivery report error codes {got}, expected {want} (keyless: INVALID_RECORD=87, "
        f"keyed: _INVALID_DIFFERENT_RECORD={KafkaError._INVALID_DIFFERENT_RECORD})")
    assert list_offsets(broker.port, topic_name, 0, LATEST)[:2] == (NONE, 1), \
        "log end moved past the warm-up record: a refused batch was appended"


# ---------------------------------------------- 4. topic compression.type

def produce_ck(bootstrap, topic, codec, start, n):
    """n keyed records with headers, compressible values, through one librdkafka producer."""
    p = ck_producer(bootstrap, **{"acks": "all", "compression.type": codec, "linger.ms": 50,
                                  "enable.idempotence": False})
    sent, errs = [], []
    for i in range(start, start + n):
        key, value, hdrs = f"key-{i}".encode(), (f"value {i} of codec {codec}; " * 20).encode(), \
            [("i", str(i).encode()), ("codec", codec.encode())]
        p.produce(topic, key=key, value=value, headers=hdrs, partition=0,
                  on_delivery=lambda err, msg: err and errs.append(str(err)))
        sent.append((key, value, tuple(hdrs)))
    assert p.flush(30) == 0 and not errs, f"{codec} producer: {errs[:3]}"
    return sent


def first_diff(got, want):
    for i in range(max(len(got), len(want))):
        a = got[i] if i < len(got) else None
        b = want[i] if i < len(want) else None
        if a != b:
            return a, b
    return None


def check_stored_and_read_back(broker, topic, sent, want_codec):
    hw, batches = fetch_batches(broker.port, topic)
    assert hw == len(sent), f"{topic}: HW {hw}, sent {len(sent)}"
    codecs = [CODEC_NAME.get(b.compression_type, b.compression_type) for b in batches]
    assert batches and all(c == want_codec for c in codecs), (
        f"{topic}: stored batch codecs {codecs}, expected every batch {want_codec}")
    assert sum(b.last_offset - b.base_offset + 1 for b in batches) == len(sent)
    assert all(b.validate_crc() for b in batches), f"{topic}: a stored batch fails its CRC32C"
    want = [(o, k, v, h) for o, (k, v, h) in enumerate(sent)]
    ck = [(o, k, v, h) for o, k, v, h, _ in ck_read(broker.bootstrap, topic, 0, len(sent))]
    assert ck == want, (f"{topic}: confluent-kafka read {len(ck)} records, sent {len(want)}; "
                        f"first difference (read, sent): {first_diff(ck, want)}")
    kp = [(o, k, v, h) for o, k, v, h, _ in kp_read(broker.bootstrap, topic, len(sent))]
    assert kp == want, (f"{topic}: kafka-python read {len(kp)} records, sent {len(want)}; "
                        f"first difference (read, sent): {first_diff(kp, want)}")


def test_topic_compression_zstd_recompresses(broker, topic_name):
    """compression.type=zstd: lz4 and uncompressed batches are stored as zstd."""
    ck_create_topic(broker.bootstrap, topic_name, 1, config={"compression.type": "zstd"})
    sent = produce_ck(broker.bootstrap, topic_name, "lz4", 0, 200)
    sent += produce_ck(broker.bootstrap, topic_name, "none", 200, 200)
    check_stored_and_read_back(broker, topic_name, sent, "zstd")


def test_zstd_needs_produce_v7_and_fetch_v10(broker, topic_name):
    """As Kafka: a zstd batch in Produce below v7, and Fetch below v10 of a topic whose
    compression.type is zstd, are UNSUPPORTED_COMPRESSION_TYPE; v7 / v10 work."""
    ck_create_topic(broker.bootstrap, topic_name, 1, config={"compression.type": "zstd"})
    # Compressible enough that kafka-python keeps the codec (it stores a batch uncompressed
    # when compression does not make it smaller).
    batch = bytes(build_batch([(b"k", b"v" * 1000, now_ms())], codec=CODEC["zstd"]))
    assert batch[21 + 1] & 7 == CODEC["zstd"], "the test batch is not zstd"
    p = produce(broker.port, topic_name, 0, batch, version=6)
    assert p.error_code == UNSUPPORTED_COMPRESSION_TYPE, f"Produce v6 with zstd: error {p.error_code}"
    p = produce(broker.port, topic_name, 0, batch, version=7)
    assert (p.error_code, p.base_offset) == (NONE, 0), f"Produce v7 with zstd: {p}"
    old = fetch_partition(broker.port, topic_name, version=9)
    assert old.error_code == UNSUPPORTED_COMPRESSION_TYPE, f"Fetch v9 of a zstd topic: error {old.error_code}"
    new = fetch_partition(broker.port, topic_name, version=10)
    assert new.error_code == NONE and new.records, f"Fetch v10 of a zstd topic: error {new.error_code}"


def test_topic_compression_uncompressed_and_producer(broker, topic_name):
    """The same gzip producer: compression.type=uncompressed stores codec none,
    compression.type=producer keeps gzip."""
    plain, kept = topic_name + "-unc", topic_name + "-prod"
    ck_create_topic(broker.bootstrap, plain, 1, config={"compression.type": "uncompressed"})
    ck_create_topic(broker.bootstrap, kept, 1, config={"compression.type": "producer"})
    check_stored_and_read_back(broker, plain, produce_ck(broker.bootstrap, plain, "gzip", 0, 200), "none")
    check_stored_and_read_back(broker, kept, produce_ck(broker.bootstrap, kept, "gzip", 0, 200), "gzip")


# ---------------------------------------------- 5. Kafka 3.x topic configs

def test_kafka3_topic_configs_accepted(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, 1, config={
        "message.format.version": "0.10.0", "message.downconversion.enable": "false"})
    p = ck_producer(broker.bootstrap, acks="all")
    res = []
    p.produce(topic_name, key=b"k", value=b"v", partition=0,
              on_delivery=lambda err, msg: res.append((err, msg.offset())))
    assert p.flush(20) == 0 and res == [(None, 0)], f"produce to the topic: {res}"
    recs = ck_read(broker.bootstrap, topic_name, 0, 1)
    assert [(o, k, v) for o, k, v, _, _ in recs] == [(0, b"k", b"v")], f"read back {recs}"
    wait_until(lambda: "message.format.version" in broker.log_text(), 5, 0.1,
               "no broker log line mentions message.format.version")

    res_ = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("message.format.version", "3.0-IV1",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res_])[res_].result(30)

    bad = topic_name + "-bad"
    fs = admin.create_topics([NewTopic(bad, 1, 1, config={"no.such.topic.config": "1"})],
                             operation_timeout=30, request_timeout=30)
    with pytest.raises(KafkaException) as ei:
        fs[bad].result(30)
    code = ei.value.args[0].code()
    assert code == INVALID_CONFIG, f"unknown topic config: {ei.value}, expected INVALID_CONFIG (40)"


# ---------------------------------------------- 6. acks=0 errors close the connection

def answers_api_versions(conn: Conn) -> bool:
    """True if ApiVersions v0 on this connection is answered, False if the broker has closed it."""
    conn.corr += 1
    try:
        _request(conn.sock, 18, 0, conn.corr)
        return True
    except ConnectionError:  # closed, reset, or broken pipe
        return False
    except socket.timeout:
        raise AssertionError("the broker neither answered ApiVersions nor closed the connection")


@pytest.mark.parametrize("case", ["unknown-topic", "unknown-partition", "too-large"])
def test_acks0_failure_closes_connection(broker_factory, topic_name, case):
    b = broker_factory("auto.create.topics.enable=false")
    ck_create_topic(b.bootstrap, topic_name, 1, config={"max.message.bytes": "1000"})
    target = {"unknown-topic": (topic_name + "-missing", 0, b"x"),
              "unknown-partition": (topic_name, 7, b"x"),
              "too-large": (topic_name, 0, bytes(range(256)) * 20)}[case]  # 5 KB, incompressible-ish
    with Conn(b.port, timeout=5) as c:
        # a good acks=0 produce keeps the connection, and is appended
        c.send(produce_request(topic_name, 0, build_batch([(b"k", b"ok", now_ms())]), acks=0), 8)
        assert answers_api_versions(c), "connection closed after a successful acks=0 produce"
        wait_until(lambda: list_offsets(b.port, topic_name, 0, LATEST)[1] == 1, 5, 0.05,
                   "the successful acks=0 record was not appended")
        topic, partition, value = target
        c.send(produce_request(topic, partition, build_batch([(b"k", value, now_ms())]), acks=0), 8)
        assert not answers_api_versions(c), (
            f"acks=0 Produce v8 that fails ({case}: {topic}-{partition}, {len(value)} B value) must close "
            f"the connection; the broker answered the next ApiVersions on it instead")
    assert list_offsets(b.port, topic_name, 0, LATEST)[1] == 1, "the failed acks=0 batch was appended"
