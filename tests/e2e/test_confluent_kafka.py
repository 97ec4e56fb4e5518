"""confluent-kafka (librdkafka 2.16): per codec, 20,000 keyed records with
headers through an idempotent acks=all producer, read back with a group-free
assign() consumer, checked record by record, then again after a graceful restart."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from e2e_util import assert_dense, ck_consumer, ck_create_topic, ck_producer, ck_read_partitions, fail_unless

N = 20_000
PARTS = 3


def make_record(i):
    key = f"key-{i:06d}".encode()
    # compressible but distinct payloads of varying length
    value = (f"value-{i:06d}-" + "abcdefghij" * (i % 17) + f"-{i * 7919 % 100003}").encode()
    headers = [("idx", str(i).encode()), ("codec-test", b"\x00\x01\xff" + bytes([i % 256])),
               ("empty", b"")]
    return key, value, headers


def produce_all(bootstrap, topic, codec, n):
    p = ck_producer(bootstrap, **{
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": codec,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    })
    acked = {}  # i -> (partition, offset)
    errors = []

    def cb(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append((i, str(err)))
            else:
                acked[i] = (msg.partition(), msg.offset())
        return on_delivery

    for i in range(n):
        key, value, headers = make_record(i)
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers, partition=i % PARTS,
                          on_delivery=cb(i))
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} messages still in queue after flush(60)"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    assert len(acked) == n
    return acked


@pytest.mark.timeout(240)
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_codec_roundtrip_and_restart(broker, topic_name, codec):
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    acked = produce_all(broker.bootstrap, topic_name, codec, N)

    # expected per partition, in production order; the idempotent producer keeps order
    expected = {p: [] for p in range(PARTS)}
    for i in range(N):
        key, value, headers = make_record(i)
        p = i % PARTS
        off = len(expected[p])
        assert acked[i] == (p, off), f"record {i}: delivery report {acked[i]}, expected {(p, off)}"
        expected[p].append((off, key, value, tuple(headers)))

    counts = {p: len(expected[p]) for p in range(PARTS)}

    def check(when):
        check_watermarks(broker.bootstrap, topic_name, counts, when)
        got = ck_read_partitions(broker.bootstrap, topic_name, range(PARTS), timeout=90,
                                 expected=counts)
        assert_dense(got)
        for p in range(PARTS):
            n = len(got[p])
            fail_unless(n == counts[p], f"{when}: partition {p} has {n} records, expected {counts[p]}")
            for r, e in zip(got[p], expected[p]):
                fail_unless((r.offset, r.key, r.value, r.headers) == e, lambda: (
                    f"{when}: partition {p} offset {e[0]}: got {r[:4]!r}, expected {e!r}"))
                fail_unless(r.timestamp > 0, f"{when}: offset {r.offset} has timestamp {r.timestamp}")
        return got

    first = check("before restart")
    elapsed = broker.restart()
    assert elapsed < 20
    second = check("after graceful restart")
    fail_unless(second == first, "records differ (incl. timestamps) after restart")


def check_watermarks(bootstrap, topic, counts, when):
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap)
    try:
        wm = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in counts}
    finally:
        c.close()
    want = {p: (0, n) for p, n in counts.items()}
    assert wm == want, f"{when}: (low, high) watermarks {wm}, expected {want}"


def test_metadata_and_watermarks(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, PARTS)
    md = admin.list_topics(timeout=10)
    assert topic_name in md.topics
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2]
    assert list(md.brokers) == [1], f"brokers: {md.brokers}"
    assert md.brokers[1].port == broker.port
    # duplicate creation is an error (TOPIC_ALREADY_EXISTS)
    from confluent_kafka.admin import NewTopic
    f = admin.create_topics([NewTopic(topic_name, 3, 1)])[topic_name]
    with pytest.raises(KafkaException) as ei:
        f.result(30)
    assert ei.value.args[0].name() == "TOPIC_ALREADY_EXISTS", ei.value


def test_fetch_long_poll_wakes_on_produce(broker, topic_name):
    """A consumer parked at the log end with a long fetch.wait.max.ms gets a new record
    as soon as it is produced (fetch.min.bytes=1), not after the full wait."""
    from confluent_kafka import TopicPartition
    ck_create_topic(broker.bootstrap, topic_name, 1)
    c = ck_consumer(broker.bootstrap, **{"fetch.wait.max.ms": 3000, "fetch.min.bytes": 1})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        # reach EOF first so the next fetch is parked at the end of the log
        deadline = time.monotonic() + 20
        eof = False
        while not eof and time.monotonic() < deadline:
            for m in c.consume(num_messages=10, timeout=0.2):
                eof |= bool(m.error()) and m.error().code() == KafkaError._PARTITION_EOF
        assert eof, "never reached end of the empty partition"
        time.sleep(0.3)  # let the consumer issue its parked fetch (not a readiness wait)
        p = ck_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 0})
        t0 = time.monotonic()
        p.produce(topic_name, value=b"wake", partition=0)
        assert p.flush(10) == 0
        got = None
        while got is None and time.monotonic() - t0 < 10:
            for m in c.consume(num_messages=1, timeout=0.1):
                if not m.error():
                    got = m
        latency = time.monotonic() - t0
        assert got is not None and got.value() == b"wake", "record never arrived"
        print(f"long-poll latency {latency:.3f}s")
        assert latency < 1.5, (f"record arrived {latency:.2f}s after produce: the parked fetch "
                               f"waited out fetch.wait.max.ms=3000 instead of completing on new data")
    finally:
        c.close()


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks_0_and_1(broker, topic_name, acks):
    """acks=0 produce requests get no response at all (a response would arrive under
    a correlation id librdkafka is not waiting for); acks=1 is answered normally."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    ck_create_topic(broker.bootstrap, topic_name, 1)
    log = logging.getLogger(f"rdkafka.acks{acks}")
    h = Collect()
    log.addHandler(h)
    log.setLevel(logging.DEBUG)
    try:
        p = ck_producer(broker.bootstrap, **{"acks": acks, "linger.ms": 2, "logger": log,
                                             "debug": "protocol,broker"})
        errs = []
        n = 3000
        for i in range(n):
            p.produce(topic_name, value=f"a{acks}-{i}".encode(), partition=0,
                      on_delivery=lambda e, m: e and errs.append(str(e)))
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(30) == 0 and not errs, errs[:3]
        # acks=0: records are in the log once the broker processed them
        got = ck_read_partitions(broker.bootstrap, topic_name, [0], timeout=30, expected={0: n})
        assert [r.value for r in got[0]] == [f"a{acks}-{i}".encode() for i in range(n)]
        p.poll(0.5)
        assert any("Produce" in l for l in h.lines), "librdkafka debug log not captured"
        bad = [l for l in h.lines if "CorrId" in l and ("unknown" in l.lower() or "unexpected" in l.lower())
               or "Disconnected" in l]
        assert not bad, f"librdkafka saw unexpected responses/disconnects with acks={acks}: {bad[:5]}"
    finally:
        log.removeHandler(h)
