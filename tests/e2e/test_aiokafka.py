"""aiokafka: 1,000 records through an idempotent producer, read back with a
group-free consumer (assign + seek_to_beginning)."""
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from e2e_util import assert_dense, Rec

N = 1000
PARTS = 3


async def scenario(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTS, replication_factor=1)])
        for _ in range(100):
            md = await admin.describe_topics([topic])
            if md and md[0].get("error_code", 0) == 0 and len(md[0].get("partitions", [])) == PARTS:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"describe_topics never showed {PARTS} partitions: {md}")
    finally:
        await admin.close()

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                            linger_ms=5)
    await prod.start()
    try:
        futs = [await prod.send(topic, key=f"k{i}".encode(), value=f"aio-{i}".encode(),
                                partition=i % PARTS, headers=[("n", str(i).encode())])
                for i in range(N)]
        metas = await asyncio.gather(*futs)
    finally:
        await prod.stop()
    acked = {i: (m.partition, m.offset) for i, m in enumerate(metas)}

    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await cons.start()
    got = {p: [] for p in range(PARTS)}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTS)]
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)
        async def drain():
            while sum(map(len, got.values())) < N:
                batch = await cons.getmany(timeout_ms=500, max_records=1000)
                for tp, msgs in batch.items():
                    got[tp.partition].extend(
                        Rec(m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs)
        await asyncio.wait_for(drain(), 60)
    finally:
        await cons.stop()
    return acked, got


def test_aiokafka_idempotent_produce_consume(broker, topic_name):
    acked, got = asyncio.run(scenario(broker.bootstrap, topic_name))
    assert_dense(got)
    assert sum(map(len, got.values())) == N
    for i in range(N):
        p, off = acked[i]
        assert p == i % PARTS
        r = got[p][off]
        assert (r.key, r.value, r.headers) == (f"k{i}".encode(), f"aio-{i}".encode(),
                                              (("n", str(i).encode()),)), f"record {i} at p{p}@{off}"
