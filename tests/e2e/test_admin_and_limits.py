"""Admin APIs consoles rely on (DescribeConfigs, CreatePartitions, DescribeCluster)
and the size limits clients run into (MESSAGE_TOO_LARGE, fetch sizes smaller than
a batch), plus keyless records on a compacted topic (INVALID_RECORD)."""
import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, ResourceType

from e2e_util import ck_admin, ck_consumer, ck_create_topic, ck_producer, wait_topic_partitions


def produce_one(bootstrap, topic, value, key=None, **conf):
    p = ck_producer(bootstrap, **{"acks": "all", "message.timeout.ms": 20000, **conf})
    res = []
    p.produce(topic, value=value, key=key, partition=0,
              on_delivery=lambda err, msg: res.append((err, msg.offset())))
    assert p.flush(30) == 0
    assert len(res) == 1
    return res[0]


def test_describe_configs_topic_and_broker(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, 3, config={"retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    entries = admin.describe_configs([res])[res].result(30)
    assert entries, "DescribeConfigs(topic) returned no entries"
    for name in ("cleanup.policy", "retention.ms", "segment.bytes", "max.message.bytes"):
        assert name in entries, f"topic config {name} missing; got {sorted(entries)[:40]}"
    assert entries["retention.ms"].value == "3600000"
    assert entries["retention.ms"].source == 1, (  # DYNAMIC_TOPIC_CONFIG
        f"retention.ms source {entries['retention.ms'].source}, expected DYNAMIC_TOPIC_CONFIG (1)")
    assert entries["cleanup.policy"].value == "delete"
    assert entries["cleanup.policy"].is_default, "cleanup.policy should report its default"

    bres = ConfigResource(ResourceType.BROKER, "1")
    bentries = admin.describe_configs([bres])[bres].result(30)
    assert bentries, "DescribeConfigs(broker 1) returned no entries"
    assert "log.segment.bytes" in bentries or "num.partitions" in bentries, sorted(bentries)[:40]


def test_create_partitions(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, 3)
    fs = admin.create_partitions([NewPartitions(topic_name, 5)], operation_timeout=30,
                                 request_timeout=30)
    assert set(fs) == {topic_name}, f"CreatePartitions result keys {set(fs)}"
    fs[topic_name].result(30)
    wait_topic_partitions(broker.bootstrap, topic_name, 5, timeout=30, admin=admin)
    # the new partitions take writes
    err, off = produce_one(broker.bootstrap, topic_name, b"x")
    assert err is None and off == 0, err


def test_message_too_large(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, 1)
    # client limit raised so the broker (default message.max.bytes ~1 MiB) decides
    err, _ = produce_one(broker.bootstrap, topic_name, b"a" * (3 * 1024 * 1024),
                         **{"message.max.bytes": 10_000_000, "compression.type": "none"})
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, (
        f"3 MiB record: {err!r}, expected MESSAGE_TOO_LARGE")
    # just under the limit is fine and reads back
    big = bytes(range(256)) * (900 * 1024 // 256)
    err, off = produce_one(broker.bootstrap, topic_name, big, **{"compression.type": "none"})
    assert err is None and off == 0, err


def test_fetch_size_smaller_than_batch_still_progresses(broker, topic_name):
    """KIP-74: the first batch is returned even if larger than the fetch limits."""
    ck_create_topic(broker.bootstrap, topic_name, 1)
    vals = [bytes([i]) * 300_000 for i in range(5)]
    for v in vals:
        err, _ = produce_one(broker.bootstrap, topic_name, v, **{"compression.type": "none"})
        assert err is None, err
    c = ck_consumer(broker.bootstrap, **{"max.partition.fetch.bytes": 1024, "fetch.max.bytes": 1024,
                                         "message.max.bytes": 1000,
                                         "receive.message.max.bytes": 2000000})
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        got = []
        for _ in range(100):
            for m in c.consume(num_messages=10, timeout=0.3):
                if not m.error():
                    got.append((m.offset(), m.value()))
            if len(got) >= 5:
                break
        assert [o for o, _ in got] == [0, 1, 2, 3, 4], f"offsets read: {[o for o, _ in got]}"
        assert [v for _, v in got] == vals
    finally:
        c.close()


def test_compacted_topic_rejects_keyless_records(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, 1, config={"cleanup.policy": "compact"})
    res = ConfigResource(ResourceType.TOPIC, topic_name)
    policy = admin.describe_configs([res])[res].result(30)["cleanup.policy"].value
    assert policy == "compact", f"cleanup.policy={policy!r} after CreateTopics with compact"
    err, _ = produce_one(broker.bootstrap, topic_name, b"no key", key=None)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, (
        f"keyless record on a compacted topic: {err!r}, expected INVALID_RECORD")
    err, off = produce_one(broker.bootstrap, topic_name, b"with key", key=b"k")
    assert err is None and off == 0, err
