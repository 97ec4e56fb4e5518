"""Topic metadata durability: topic ids survive restarts (Fetch v13+ addresses
topics by id), a deleted topic stays deleted, and a topic re-created under the
same name starts empty with a new id."""
from confluent_kafka import TopicCollection

from e2e_util import ck_admin, ck_create_topic, ck_producer, ck_read_partitions, wait_until


def topic_id(admin, topic):
    d = admin.describe_topics(TopicCollection([topic]), request_timeout=30)[topic].result(30)
    return str(d.topic_id)


def produce(bootstrap, topic, values):
    p = ck_producer(bootstrap, acks="all")
    errs = []
    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=lambda e, m: e and errs.append(str(e)))
    assert p.flush(30) == 0 and not errs, errs[:3]


def test_topic_ids_survive_restart_and_delete_is_durable(broker, topic_name):
    keep, gone = topic_name + "-keep", topic_name + "-gone"
    admin = ck_create_topic(broker.bootstrap, keep, 3)
    ck_create_topic(broker.bootstrap, gone, 3)
    ids = {t: topic_id(admin, t) for t in (keep, gone)}
    assert len(set(ids.values())) == 2 and all(i and set(i) != {"A"} for i in ids.values()), ids
    admin.delete_topics([gone], operation_timeout=30)[gone].result(30)
    wait_until(lambda: gone not in admin.list_topics(timeout=10).topics, 20, 0.2, f"{gone} still listed")

    broker.restart()
    admin = ck_admin(broker.bootstrap)
    topics = admin.list_topics(timeout=10).topics
    assert keep in topics and len(topics[keep].partitions) == 3
    assert gone not in topics, f"deleted topic {gone} is back after restart"
    assert topic_id(admin, keep) == ids[keep], "topic id changed across restart"


def test_recreated_topic_starts_empty(broker, topic_name):
    admin = ck_create_topic(broker.bootstrap, topic_name, 1)
    old_id = topic_id(admin, topic_name)
    produce(broker.bootstrap, topic_name, [f"old-{i}".encode() for i in range(100)])
    admin.delete_topics([topic_name], operation_timeout=30)[topic_name].result(30)
    wait_until(lambda: topic_name not in admin.list_topics(timeout=10).topics, 20, 0.2,
               f"{topic_name} still listed after delete")

    admin = ck_create_topic(broker.bootstrap, topic_name, 1)
    assert topic_id(admin, topic_name) != old_id, "re-created topic reuses the old topic id"
    produce(broker.bootstrap, topic_name, [f"new-{i}".encode() for i in range(10)])
    got = ck_read_partitions(broker.bootstrap, topic_name, [0], timeout=30)
    assert [(r.offset, r.value) for r in got[0]] == [(i, f"new-{i}".encode()) for i in range(10)]

    broker.restart()
    got = ck_read_partitions(broker.bootstrap, topic_name, [0], timeout=30)
    assert [(r.offset, r.value) for r in got[0]] == [(i, f"new-{i}".encode()) for i in range(10)], \
        "after restart"


def test_many_topics_in_one_request(broker, topic_name):
    """One CreateTopics request with 30 topics x 3 partitions; every partition takes
    writes and reads back; all survive a restart."""
    from confluent_kafka.admin import NewTopic
    names = [f"{topic_name}-{i:02d}" for i in range(30)]
    admin = ck_admin(broker.bootstrap)
    fs = admin.create_topics([NewTopic(n, 3, 1) for n in names], operation_timeout=30)
    assert set(fs) == set(names)
    for n, f in fs.items():
        f.result(30)
    wait_until(lambda: all(len(t.partitions) == 3 for n, t in admin.list_topics(timeout=10).topics.items()
                           if n in names) and set(names) <= set(admin.list_topics(timeout=10).topics),
               30, 0.2, "not all 30 topics visible with 3 partitions")
    p = ck_producer(broker.bootstrap, acks="all")
    errs = []
    for n in names:
        for part in range(3):
            for i in range(5):
                p.produce(n, value=f"{n}/{part}/{i}".encode(), partition=part,
                          on_delivery=lambda e, m: e and errs.append(str(e)))
    assert p.flush(30) == 0 and not errs, errs[:3]
    broker.restart()
    for n in names[::7]:
        got = ck_read_partitions(broker.bootstrap, n, range(3), timeout=30)
        for part in range(3):
            assert [r.value for r in got[part]] == [f"{n}/{part}/{i}".encode() for i in range(5)], (n, part)
