"""Auto-creation of topics on produce (num.partitions) and its opt-out."""
from confluent_kafka import KafkaError

from e2e_util import ck_admin, ck_producer, wait_topic_partitions


def test_produce_to_unknown_topic_autocreates_with_num_partitions(broker_factory, topic_name):
    b = broker_factory("num.partitions=3")
    p = ck_producer(b.bootstrap, **{"acks": "all", "message.timeout.ms": 30000})
    results = []
    for i in range(30):
        p.produce(topic_name, key=f"k{i}".encode(), value=b"v",
                  on_delivery=lambda err, msg: results.append((err, msg.partition(), msg.offset())))
    assert p.flush(40) == 0
    errs = [r for r in results if r[0] is not None]
    assert not errs, f"delivery errors producing to an auto-created topic: {errs[:3]}"
    wait_topic_partitions(b.bootstrap, topic_name, 3, timeout=20)
    md = ck_admin(b.bootstrap).list_topics(topic=topic_name, timeout=10).topics[topic_name]
    assert sorted(md.partitions) == [0, 1, 2]


def test_autocreate_disabled_gives_unknown_topic(broker_factory, topic_name):
    b = broker_factory("auto.create.topics.enable=false")
    p = ck_producer(b.bootstrap, **{"acks": "all", "message.timeout.ms": 8000,
                                    "topic.metadata.propagation.max.ms": 3000})
    results = []
    p.produce(topic_name, value=b"v", on_delivery=lambda err, msg: results.append(err))
    assert p.flush(30) == 0
    assert len(results) == 1 and results[0] is not None, f"expected a delivery error, got {results}"
    assert results[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), (
        f"delivery error {results[0]!r}, expected UNKNOWN_TOPIC_OR_PARTITION")
    # metadata for it reports the error and the topic was not created
    admin = ck_admin(b.bootstrap)
    t = admin.list_topics(topic=topic_name, timeout=10).topics.get(topic_name)
    assert t is not None and t.error is not None and \
        t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"metadata for {topic_name}: {t and t.error}"
    assert topic_name not in admin.list_topics(timeout=10).topics
