"""Transactions with librdkafka's transactional producer (confluent-kafka): commits and
aborts across partitions and topics as read_committed and read_uncommitted consumers see
them, zombie fencing of two producers with one transactional.id, the abort of a transaction
whose producer vanished (transaction.timeout.ms), and coordinator state that survives a
SIGKILL of the broker."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from e2e_util import ck_consumer, ck_create_topic, ck_producer, fail_unless, wait_until

PARTS = 3


def txn_producer(bootstrap, txn_id, **conf):
    return ck_producer(bootstrap, **{"transactional.id": txn_id, "transaction.timeout.ms": 30000,
                                     "linger.ms": 5, **conf})


def send(p, topics, tag, n):
    """`n` records per topic, spread over every partition; returns the values sent."""
    values = []
    for t in topics:
        for i in range(n):
            v = f"{tag}-{t}-{i}"
            p.produce(t, key=str(i).encode(), value=v.encode(), partition=i % PARTS)
            values.append(v)
    return values


def read_all(bootstrap, topics, isolation, timeout=30.0):
    """Every value of `topics` a consumer with `isolation` returns, reading each partition up
    to the end offset that isolation level reports (the LSO for read_committed)."""
    c = ck_consumer(bootstrap, **{"isolation.level": isolation})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTS)]
        ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        c.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in tps])
        done = {k for k, end in ends.items() if end == 0}
        values = []
        deadline = time.monotonic() + timeout
        while len(done) < len(tps):
            fail_unless(time.monotonic() < deadline, lambda: f"{isolation}: timed out, read {len(values)}, done {done}")
            for m in c.consume(num_messages=1000, timeout=0.5):
                key = (m.topic(), m.partition())
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= ends[key]:
                            done.add(key)
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                values.append(m.value().decode())
                if m.offset() + 1 >= ends[key]:
                    done.add(key)
        return values, ends
    finally:
        c.close()


def assert_exactly(got, expected, what):
    fail_unless(sorted(got) == sorted(expected), lambda: (
        f"{what}: {len(got)} values, expected {len(expected)}; missing {sorted(set(expected) - set(got))[:5]}, "
        f"unexpected {sorted(set(got) - set(expected))[:5]}, duplicated {len(got) - len(set(got))}"))


@pytest.mark.timeout(120)
def test_commits_and_aborts_across_topics_as_each_isolation_level_sees_them(broker, topic_name, closer):
    topics = [f"{topic_name}-a", f"{topic_name}-b"]
    for t in topics:
        ck_create_topic(broker.bootstrap, t, PARTS)
    p = txn_producer(broker.bootstrap, f"{topic_name}-txn")
    p.init_transactions(30)
    committed, aborted = [], []
    for round_ in range(4):
        p.begin_transaction()
        values = send(p, topics, f"r{round_}", 40)
        if round_ % 2 == 1:
            p.flush(30)  # so that the aborted records are really written before the abort
            p.abort_transaction(30)
            aborted += values
        else:
            p.commit_transaction(30)
            committed += values
    p.flush(10)

    got, committed_ends = read_all(broker.bootstrap, topics, "read_committed")
    assert_exactly(got, committed, "read_committed")
    got, uncommitted_ends = read_all(broker.bootstrap, topics, "read_uncommitted")
    assert_exactly(got, committed + aborted, "read_uncommitted")
    # Every transaction is decided: the last stable offset is the high watermark (and both
    # count the markers).
    assert committed_ends == uncommitted_ends
    assert sum(committed_ends.values()) == len(committed) + len(aborted) + 4 * len(topics) * PARTS


@pytest.mark.timeout(120)
def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    txn_id = f"{topic_name}-txn"
    zombie = txn_producer(broker.bootstrap, txn_id)
    zombie.init_transactions(30)
    zombie.begin_transaction()
    open_values = send(zombie, [topic_name], "zombie-open", 30)
    zombie.flush(30)

    # The new instance aborts what the old one left open and fences it.
    fresh = txn_producer(broker.bootstrap, txn_id)
    fresh.init_transactions(30)
    with pytest.raises(KafkaException) as fenced:
        send(zombie, [topic_name], "zombie-late", 5)
        zombie.commit_transaction(30)
    err = fenced.value.args[0]
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), err
    assert err.fatal(), err

    fresh.begin_transaction()
    good = send(fresh, [topic_name], "fresh", 30)
    fresh.commit_transaction(30)
    got, _ = read_all(broker.bootstrap, [topic_name], "read_committed")
    assert_exactly(got, good, "read_committed")
    got, _ = read_all(broker.bootstrap, [topic_name], "read_uncommitted")
    fail_unless(set(open_values) <= set(got), "the zombie's flushed records were written, then aborted")
    fail_unless(not any(v.startswith("zombie-late") for v in got), "a fenced producer's records were appended")


@pytest.mark.timeout(120)
def test_a_transaction_whose_producer_vanished_is_aborted_after_its_timeout(broker_factory, topic_name):
    broker = broker_factory("transaction.abort.timed.out.transaction.cleanup.interval.ms=200")
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    before = txn_producer(broker.bootstrap, f"{topic_name}-ok")
    before.init_transactions(30)
    before.begin_transaction()
    first = send(before, [topic_name], "first", 10)
    before.commit_transaction(30)

    # This producer opens a transaction, writes, and is never heard from again.
    gone = txn_producer(broker.bootstrap, f"{topic_name}-gone", **{"transaction.timeout.ms": 2000})
    gone.init_transactions(30)
    gone.begin_transaction()
    lost = send(gone, [topic_name], "lost", 10)
    gone.flush(30)

    after = txn_producer(broker.bootstrap, f"{topic_name}-after")
    after.init_transactions(30)
    after.begin_transaction()
    later = send(after, [topic_name], "later", 10)
    after.commit_transaction(30)

    # The open transaction holds the last stable offset back until the coordinator aborts it.
    def stable():
        c = ck_consumer(broker.bootstrap, **{"isolation.level": "read_committed"})
        try:
            lso = sum(c.get_watermark_offsets(TopicPartition(topic_name, p), timeout=10)[1] for p in range(PARTS))
        finally:
            c.close()
        return lso == len(first) + len(lost) + len(later) + 3 * PARTS
    wait_until(stable, 30, 0.2, "the abandoned transaction was never aborted")
    got, _ = read_all(broker.bootstrap, [topic_name], "read_committed")
    assert_exactly(got, first + later, "read_committed")
    assert set(lost) <= set(read_all(broker.bootstrap, [topic_name], "read_uncommitted")[0])


@pytest.mark.timeout(150)
def test_coordinator_state_survives_a_sigkill(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    txn_id = f"{topic_name}-txn"
    old = txn_producer(broker.bootstrap, txn_id)
    old.init_transactions(30)
    old.begin_transaction()
    first = send(old, [topic_name], "first", 20)
    old.commit_transaction(30)

    broker.kill()
    broker.start()
    # The coordinator reloads the id with its epoch: a new instance bumps it and so fences
    # the old one, which would write on unfenced had the state been lost.
    fresh = txn_producer(broker.bootstrap, txn_id)
    fresh.init_transactions(60)
    with pytest.raises(KafkaException):
        old.begin_transaction()
        send(old, [topic_name], "old-late", 5)
        old.commit_transaction(30)
    fresh.begin_transaction()
    second = send(fresh, [topic_name], "second", 20)
    fresh.commit_transaction(30)
    got, _ = read_all(broker.bootstrap, [topic_name], "read_committed")
    assert_exactly(got, first + second, "read_committed")


@pytest.mark.timeout(150)
def test_consume_transform_produce_commits_offsets_in_the_transaction(broker, topic_name):
    """sendOffsetsToTransaction: the group's offsets are committed with the output records and
    only then; an aborted round leaves both the output and the offsets as they were."""
    from confluent_kafka import Consumer
    src, dst, group = f"{topic_name}-in", f"{topic_name}-out", f"{topic_name}-group"
    ck_create_topic(broker.bootstrap, src, PARTS)
    ck_create_topic(broker.bootstrap, dst, PARTS)
    plain = ck_producer(broker.bootstrap, acks="all")
    n = 300
    for i in range(n):
        plain.produce(src, value=f"v{i}".encode(), partition=i % PARTS)
    assert plain.flush(30) == 0

    consumer = ck_consumer(broker.bootstrap, **{"group.id": group, "isolation.level": "read_committed",
                                                "enable.partition.eof": False})
    consumer.subscribe([src])
    p = txn_producer(broker.bootstrap, f"{topic_name}-txn")
    p.init_transactions(30)
    copied, rounds, aborted_once = [], 0, False
    deadline = time.monotonic() + 90
    while len(copied) < n:
        fail_unless(time.monotonic() < deadline, lambda: f"copied only {len(copied)} of {n}")
        msgs = [m for m in consumer.consume(num_messages=50, timeout=1.0) if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        out = [m.value().decode() for m in msgs]
        for v in out:
            p.produce(dst, value=f"copy-{v}".encode(), partition=int(v[1:]) % PARTS)
        p.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                      consumer.consumer_group_metadata(), 30)
        rounds += 1
        if rounds == 2 and not aborted_once:
            aborted_once = True
            p.flush(30)
            p.abort_transaction(30)
            # The group's offsets stayed where the last commit put them: rewind to them.
            committed = consumer.committed(consumer.assignment(), timeout=30)
            for tp in committed:
                consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        p.commit_transaction(30)
        copied += out
    consumer.close()

    assert aborted_once
    assert_exactly(copied, [f"v{i}" for i in range(n)], "values copied in committed rounds")
    got, _ = read_all(broker.bootstrap, [dst], "read_committed")
    assert_exactly(got, [f"copy-v{i}" for i in range(n)], "read_committed output")
    # The committed offsets are exactly the ends of the input (a fresh read_committed consumer
    # asks for stable offsets).
    check = ck_consumer(broker.bootstrap, **{"group.id": group, "isolation.level": "read_committed"})
    try:
        committed = check.committed([TopicPartition(src, i) for i in range(PARTS)], timeout=30)
        assert {tp.partition: tp.offset for tp in committed} == {i: len(range(i, n, PARTS)) for i in range(PARTS)}
    finally:
        check.close()
