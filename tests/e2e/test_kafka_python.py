"""kafka-python 3.x (pure Python): produce with every codec it can use here,
consume via assign/seek (no group), DeleteTopics, ListOffsets by timestamp and
earliest/latest."""
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka import codec as kcodec

from e2e_util import wait_until

PARTS = 3
CODEC_AVAILABLE = {None: True, "gzip": kcodec.has_gzip(), "snappy": kcodec.has_snappy(),
                   "lz4": kcodec.has_lz4(), "zstd": kcodec.has_zstd()}


def admin_for(broker, closer):
    return closer(KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="e2e-admin",
                            request_timeout_ms=30000))


def create_topic(broker, closer, topic, parts=PARTS):
    admin = admin_for(broker, closer)
    admin.create_topics([NewTopic(topic, num_partitions=parts, replication_factor=1)],
                        timeout_ms=30000)
    wait_until(lambda: topic in admin.list_topics(), 30, 0.2, f"{topic} not in list_topics()")
    return admin


def consumer_for(broker, closer):
    # group_id=None: kafka-python's group-free mode (assign/seek only)
    return closer(KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         consumer_timeout_ms=1000, fetch_max_wait_ms=100))


def read_exactly(consumer, counts, timeout=60):
    got = {tp: [] for tp in counts}
    deadline = time.monotonic() + timeout
    while any(len(got[tp]) < n for tp, n in counts.items()):
        assert time.monotonic() < deadline, (
            f"timeout: got { {tp.partition: len(v) for tp, v in got.items()} } of "
            f"{ {tp.partition: n for tp, n in counts.items()} }")
        for tp, msgs in consumer.poll(timeout_ms=500, max_records=5000).items():
            got[tp].extend(msgs)
    return got


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_assign(broker, closer, topic_name, codec):
    c = None if codec == "none" else codec
    if not CODEC_AVAILABLE[c]:
        pytest.skip(f"kafka-python has no {codec} support here (python package missing)")
    n = 2000
    create_topic(broker, closer, topic_name)
    prod = closer(KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=c,
                         linger_ms=5, request_timeout_ms=30000))
    futs = []
    for i in range(n):
        futs.append(prod.send(topic_name, key=f"k{i}".encode(), value=f"v{i}".encode() * 3,
                              headers=[("i", str(i).encode())], partition=i % PARTS))
    prod.flush(60)
    metas = [f.get(timeout=30) for f in futs]
    prod.close(10)
    per_part = {p: [m.offset for m in metas if m.partition == p] for p in range(PARTS)}
    for p, offs in per_part.items():
        assert offs == list(range(len(offs))), f"partition {p}: acked offsets not dense: {offs[:20]}"

    cons = consumer_for(broker, closer)
    tps = [TopicPartition(topic_name, p) for p in range(PARTS)]
    cons.assign(tps)
    cons.seek_to_beginning(*tps)
    got = read_exactly(cons, {tp: len(per_part[tp.partition]) for tp in tps})
    cons.close()
    for tp, msgs in got.items():
        assert [m.offset for m in msgs] == list(range(len(msgs))), f"{tp}: offsets out of order"
        for j, m in enumerate(msgs):
            i = j * PARTS + tp.partition
            assert (m.key, m.value, list(m.headers)) == (
                f"k{i}".encode(), f"v{i}".encode() * 3, [("i", str(i).encode())]), f"{tp}@{m.offset}"


def test_delete_topics(broker, closer, topic_name):
    admin = create_topic(broker, closer, topic_name)
    assert topic_name in admin.list_topics()
    admin.delete_topics([topic_name], timeout_ms=30000)
    wait_until(lambda: topic_name not in admin.list_topics(), 30, 0.2,
               lambda: f"{topic_name} still listed after DeleteTopics: {admin.list_topics()}")
    # a fresh client's metadata does not show it either
    cons = consumer_for(broker, closer)
    wait_until(lambda: topic_name not in cons.topics(), 10, 0.2, f"{topic_name} still in Metadata")
    cons.close()


def test_list_offsets_by_timestamp(broker, closer, topic_name):
    create_topic(broker, closer, topic_name)
    base = int(time.time() * 1000) - 3_600_000  # an hour ago: inside any timestamp window
    # partition 0: 5 batches x 20 records, timestamps base + 1000*b + 10*j (strictly increasing)
    # partition 1: 3 batches x 7 records, base + 5000 + 100*k;  partition 2: empty
    p0 = [base + 1000 * b + 10 * j for b in range(5) for j in range(20)]
    p1 = [base + 5000 + 100 * k for k in range(21)]
    prod = closer(KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0))
    for part, tss, per_batch in [(0, p0, 20), (1, p1, 7)]:
        for start in range(0, len(tss), per_batch):
            futs = [prod.send(topic_name, value=f"{part}-{i}".encode(), partition=part,
                              timestamp_ms=tss[i]) for i in range(start, start + per_batch)]
            prod.flush(30)  # one batch per flush
            [f.get(10) for f in futs]
    prod.close(10)

    cons = consumer_for(broker, closer)
    tp0, tp1, tp2 = (TopicPartition(topic_name, p) for p in range(3))
    assert cons.beginning_offsets([tp0, tp1, tp2]) == {tp0: 0, tp1: 0, tp2: 0}
    assert cons.end_offsets([tp0, tp1, tp2]) == {tp0: 100, tp1: 21, tp2: 0}

    def first_at_or_after(tss, t):
        for i, ts in enumerate(tss):
            if ts >= t:
                return i
        return None

    queries = [base - 10_000, base, base + 1, base + 10, base + 195, base + 190, base + 999,
               base + 1000, base + 2005, base + 4190, base + 4191, base + 5000, base + 5050,
               base + 6999, base + 7000, base + 7001, base + 99_999]
    for t in queries:
        res = cons.offsets_for_times({tp0: t, tp1: t, tp2: t})
        for tp, tss in [(tp0, p0), (tp1, p1), (tp2, [])]:
            want = first_at_or_after(tss, t)
            got = res[tp]
            if want is None:
                assert got is None, f"p{tp.partition} t=base+{t - base}: expected no offset, got {got}"
            else:
                assert got is not None, f"p{tp.partition} t=base+{t - base}: expected {want}, got None"
                assert (got.offset, got.timestamp) == (want, tss[want]), (
                    f"p{tp.partition} t=base+{t - base}: got offset {got.offset} ts "
                    f"base+{got.timestamp - base}, expected offset {want} ts base+{tss[want] - base}")
    # the stored timestamps are the ones we sent
    cons.assign([tp0])
    cons.seek_to_beginning(tp0)
    got = read_exactly(cons, {tp0: 100})[tp0]
    assert [m.timestamp for m in got] == p0
    cons.close()
