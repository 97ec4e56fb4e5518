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


def test_fetch_long_poll_parks_and_wakes_on_produce(broker, topic_name):
    """A Fetch at the log end with min_bytes=1 parks: with nothing produced it is answered
    after about max_wait_ms (not at once: a broker that never parks fails here), and a
    record produced while it waits completes it at once (not after the full wait: a broker
    that only times out fails here). Raw Fetch v4, so no client retry loop hides either."""
    import socket
    import threading

    from test_abuse import R, fetch_v4_body, frame, recv_response

    ck_create_topic(broker.bootstrap, topic_name, 1)

    sent_at = []

    def parked_fetch(max_wait_ms: int) -> tuple[float, bytes]:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=90) as s:
            s.settimeout(90)
            t0 = time.monotonic()
            s.sendall(frame(1, 4, 5, fetch_v4_body(topic_name, {0: 0}, max_wait_ms=max_wait_ms)))
            sent_at.append(t0)
            r = R(recv_response(s, 5))
            took = time.monotonic() - t0
        r.take(">i")  # throttle
        assert r.take(">i") == 1
        r.string()
        assert r.take(">i") == 1
        _p, err, _hw, _lso = r.take(">ihqq")
        assert err == 0, f"fetch error {err}"
        for _ in range(max(r.take(">i"), 0)):
            r.take(">qq")
        return took, r.bytes_() or b""

    took, records = parked_fetch(1500)
    assert records == b"", "the partition is empty"
    # At least about max_wait_ms (a broker that never parks answers at once); the upper bound
    # is generous, for a busy machine.
    assert 1.2 <= took < 20, f"an empty fetch with max_wait_ms=1500 was answered after {took:.2f}s"

    p = ck_producer(broker.bootstrap, **{"acks": "all", "linger.ms": 0})
    produced_at = []

    def produce_later():
        time.sleep(0.5)  # the fetch below is parked by then (it is sent first)
        produced_at.append(time.monotonic())
        p.produce(topic_name, value=b"wake", partition=0)
        p.flush(10)

    t = threading.Thread(target=produce_later)
    t.start()
    took, records = parked_fetch(60_000)
    t.join()
    assert produced_at[0] > sent_at[-1], "the record must be produced while the fetch waits"
    assert b"wake" in records, "the parked fetch returned without the new record"
    assert took < 30, (f"the parked fetch returned {took:.2f}s after it was sent: it waited for "
                       f"max_wait_ms=60000 instead of completing when the record arrived")


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
