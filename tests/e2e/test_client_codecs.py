"""Every codec (none, gzip, snappy, lz4, zstd) through kafka-python, aiokafka and
kafkajs: create a 3-partition topic with the client's own admin API, produce
20,000 keyed records with headers, read every one back intact, in order per
partition, with dense offsets 0..n-1; then SIGTERM-restart the broker and read
again: everything (offsets, keys, values, headers, timestamps) must be identical.

- kafka-python 3: KafkaAdminClient, idempotent acks=all producer, assign/seek consumer.
- aiokafka: AIOKafkaAdminClient, idempotent producer, assign consumer.
- kafkajs 2.2.4 (node/kafkajs_codecs.js): admin createTopics + producer with the codec
  plugins registered in CompressionCodecs; the assertion is a group-free confluent-kafka
  read-back; a kafkajs group consumer additionally reads a mixed-codec topic.
(confluent-kafka, the Java client and kcat have their own files.)

The per-codec tests start their broker with offsets.topic.num.partitions=1: none of
them uses a consumer group, and creating/loading/closing the 50 empty default
__consumer_offsets partitions costs ~1.5 s per start and ~2.5 s per SIGTERM here,
which would be most of this file's run time (the default is covered by the kafkajs
group consumer test below and by the other files).
"""
from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import struct
import subprocess
import time
from collections import Counter

import pytest

from e2e_util import E2E_DIR, Rec, assert_dense, ck_read_partitions, fail_unless, wait_until

N = 20_000
PARTS = 3
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
NODE_DIR = E2E_DIR / "node"
NODE = shutil.which("node")


@pytest.fixture
def codec_broker(broker_factory):
    return broker_factory("offsets.topic.num.partitions=1")


def make_record(client, codec, i):
    """(key, value, headers) of record i; kafkajs_codecs.js record() builds the same."""
    key = f"{client}-{codec}-{i:06d}".encode()
    value = (f"value-{codec}-{i}-" + "abcdefghij" * (i % 13) + f"-{i * 7919 % 100003}").encode()
    headers = (("idx", str(i).encode()), ("codec", codec.encode()),
               ("bin", bytes([0, 1, 255, i % 256])), ("empty", b""))
    return key, value, headers


def expected_by_partition(client, codecs, n=N):
    """{p: [(key, value, headers)]} for codecs produced one after the other,
    record i of each to partition i % PARTS."""
    exp = {p: [] for p in range(PARTS)}
    for codec in codecs:
        for i in range(n):
            exp[i % PARTS].append(make_record(client, codec, i))
    return exp


def check_records(got, expected, label):
    """got: {p: [Rec]} in fetch order. Dense offsets 0..n-1 and every record intact."""
    fail_unless(sorted(got) == sorted(expected), f"{label}: partitions {sorted(got)}")
    assert_dense(got)
    for p, recs in got.items():
        exp = expected[p]
        fail_unless(len(recs) == len(exp), lambda: f"{label} p{p}: {len(recs)} records, expected {len(exp)}")
        for r, (k, v, h) in zip(recs, exp):
            if (r.key, r.value, tuple(r.headers)) != (k, v, h):
                raise AssertionError(f"{label} p{p}@{r.offset}: got key={r.key!r} value={r.value[:80]!r} "
                                     f"headers={r.headers!r}; expected key={k!r} value={v[:80]!r} headers={h!r}")
            fail_unless(r.timestamp is not None and r.timestamp > 0,
                        lambda: f"{label} p{p}@{r.offset}: timestamp {r.timestamp}")


CODEC_IDS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def stored_codecs(broker, topic):
    """Counter of the compression codec of every record batch in the topic's
    segment files (Kafka's on-disk format: a batch's attributes sit at byte 21).
    Read after a graceful stop/restart, so everything is flushed. Proves the
    client really compressed with the codec and the broker kept its batches."""
    seen = Counter()
    for p in range(PARTS):
        (pdir,) = [d for d in broker.data_dir.rglob(f"{topic}-{p}") if d.is_dir()]
        for seg in sorted(f for f in pdir.iterdir() if re.fullmatch(r"\d{20}\.log", f.name)):
            data = seg.read_bytes()
            pos = 0
            while pos + 23 <= len(data):
                (length,) = struct.unpack_from(">i", data, pos + 8)
                magic = data[pos + 16]
                (attrs,) = struct.unpack_from(">h", data, pos + 21)
                fail_unless(magic == 2 and length > 0, f"{seg}@{pos}: magic {magic}, batch length {length}")
                seen[CODEC_IDS.get(attrs & 7, f"codec-{attrs & 7}")] += 1
                pos += 12 + length
    return seen


def check_stored_codec(broker, topic, codec):
    """Every batch carries the codec — except that a client may send a batch
    uncompressed when compressing would not make it smaller (kafka-python
    does this for tiny batches); the broker stores batches as sent."""
    seen = stored_codecs(broker, topic)
    allowed = {codec} if codec == "none" else {codec, "none"}
    fail_unless(seen.get(codec, 0) > 0 and set(seen) <= allowed,
                f"{topic}: record batches on disk by codec {dict(seen)}, expected {codec}")


def check_identical(before, after, label):
    for p in before:
        if before[p] != after[p]:
            diff = [(a, b) for a, b in zip(before[p], after[p]) if a != b][:3]
            raise AssertionError(f"{label} p{p}: records differ after restart ({len(before[p])} before, "
                                 f"{len(after[p])} after); first differences: {diff}")


# ----------------------------------------------------------------- kafka-python

def codec_support(codec_module):
    """kafka.codec / aiokafka.codec -> {codec: usable here}"""
    return {"none": True, "gzip": codec_module.has_gzip(), "snappy": codec_module.has_snappy(),
            "lz4": codec_module.has_lz4(), "zstd": codec_module.has_zstd()}


def kp_read(bootstrap, topic, counts, timeout=60.0):
    from kafka import KafkaConsumer, TopicPartition
    cons = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100,
                         max_partition_fetch_bytes=4 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTS)]
        ends = cons.end_offsets(tps)
        fail_unless({tp.partition: o for tp, o in ends.items()} == counts,
                    lambda: f"kafka-python end_offsets {ends}, expected {counts}")
        begins = cons.beginning_offsets(tps)
        fail_unless(set(begins.values()) == {0}, lambda: f"beginning_offsets {begins}")
        cons.assign(tps)
        cons.seek_to_beginning(*tps)
        got = {p: [] for p in range(PARTS)}
        deadline = time.monotonic() + timeout
        while any(len(got[p]) < counts[p] for p in range(PARTS)):
            fail_unless(time.monotonic() < deadline,
                        lambda: f"kafka-python read timed out: { {p: len(v) for p, v in got.items()} } of {counts}")
            for tp, msgs in cons.poll(timeout_ms=500, max_records=10000).items():
                got[tp.partition].extend(
                    Rec(m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs)
        return got
    finally:
        cons.close()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_codec_roundtrip_restart(codec_broker, closer, topic_name, codec):
    broker = codec_broker
    from kafka import codec as kp_codec
    if not codec_support(kp_codec)[codec]:
        pytest.skip(f"kafka-python has no {codec} codec here (python package missing)")
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = closer(KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="e2e-codecs",
                                    request_timeout_ms=30000))
    admin.create_topics([NewTopic(topic_name, num_partitions=PARTS, replication_factor=1)],
                        timeout_ms=30000)

    def described():
        (t,) = admin.describe_topics([topic_name])
        return t["error_code"] == 0 and len(t["partitions"]) == PARTS and all(
            p["error_code"] == 0 and p["leader_id"] >= 0 for p in t["partitions"])
    wait_until(described, 30, 0.2, f"describe_topics never showed {PARTS} partitions with leaders")

    prod = closer(KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True,
        compression_type=None if codec == "none" else codec, linger_ms=20,
        batch_size=256 * 1024, request_timeout_ms=30000))
    futs = []
    for i in range(N):
        k, v, h = make_record("kp", codec, i)
        futs.append(prod.send(topic_name, key=k, value=v, headers=list(h), partition=i % PARTS))
    prod.flush(60)
    metas = [f.get(timeout=30) for f in futs]
    prod.close(10)
    next_off = [0] * PARTS
    for i, m in enumerate(metas):
        want = (i % PARTS, next_off[i % PARTS])
        fail_unless((m.partition, m.offset) == want, lambda: f"record {i}: acked at {(m.partition, m.offset)}, "
                                                             f"expected {want}")
        next_off[i % PARTS] += 1
    counts = dict(enumerate(next_off))

    expected = expected_by_partition("kp", [codec])
    before = kp_read(broker.bootstrap, topic_name, counts)
    check_records(before, expected, f"kafka-python {codec}")

    broker.restart(graceful=True)
    after = kp_read(broker.bootstrap, topic_name, counts)
    check_records(after, expected, f"kafka-python {codec} after restart")
    check_identical(before, after, f"kafka-python {codec}")
    check_stored_codec(broker, topic_name, codec)


# --------------------------------------------------------------------- aiokafka

async def aio_create_topic(bootstrap, topic):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTS, replication_factor=1)],
                                  timeout_ms=30000)
        deadline = time.monotonic() + 30
        while True:
            md = await admin.describe_topics([topic])
            if md and md[0].get("error_code", 0) == 0 and len(md[0].get("partitions", [])) == PARTS:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"describe_topics never showed {PARTS} partitions: {md}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def aio_produce(bootstrap, topic, codec):
    from aiokafka import AIOKafkaProducer
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                            compression_type=None if codec == "none" else codec, linger_ms=20,
                            max_batch_size=256 * 1024, request_timeout_ms=30000)
    await prod.start()
    try:
        futs = []
        for i in range(N):
            k, v, h = make_record("aio", codec, i)
            futs.append(await prod.send(topic, key=k, value=v, headers=list(h), partition=i % PARTS))
        metas = await asyncio.wait_for(asyncio.gather(*futs), 60)
    finally:
        await prod.stop()
    return [(m.partition, m.offset) for m in metas]


async def aio_read(bootstrap, topic, counts, timeout=60.0):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", fetch_max_wait_ms=100,
                            max_partition_fetch_bytes=4 << 20)
    await cons.start()
    got = {p: [] for p in range(PARTS)}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTS)]
        ends = await cons.end_offsets(tps)
        fail_unless({tp.partition: o for tp, o in ends.items()} == counts,
                    lambda: f"aiokafka end_offsets {ends}, expected {counts}")
        cons.assign(tps)
        await cons.seek_to_beginning(*tps)

        async def drain():
            while any(len(got[p]) < counts[p] for p in range(PARTS)):
                batch = await cons.getmany(timeout_ms=500, max_records=10000)
                for tp, msgs in batch.items():
                    got[tp.partition].extend(
                        Rec(m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in msgs)
        try:
            await asyncio.wait_for(drain(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"aiokafka read timed out: { {p: len(v) for p, v in got.items()} } "
                                 f"of {counts}") from None
    finally:
        await cons.stop()
    return got


@pytest.mark.timeout(150)
@pytest.mark.parametrize("codec", CODECS)
def test_aiokafka_codec_roundtrip_restart(codec_broker, topic_name, codec):
    broker = codec_broker
    from aiokafka import codec as aio_codec
    if not codec_support(aio_codec)[codec]:
        pytest.skip(f"aiokafka has no {codec} codec here (python package missing)")

    asyncio.run(aio_create_topic(broker.bootstrap, topic_name))
    acked = asyncio.run(aio_produce(broker.bootstrap, topic_name, codec))
    next_off = [0] * PARTS
    for i, got in enumerate(acked):
        want = (i % PARTS, next_off[i % PARTS])
        fail_unless(got == want, lambda: f"record {i}: acked at {got}, expected {want}")
        next_off[i % PARTS] += 1
    counts = dict(enumerate(next_off))

    expected = expected_by_partition("aio", [codec])
    before = asyncio.run(aio_read(broker.bootstrap, topic_name, counts))
    check_records(before, expected, f"aiokafka {codec}")

    broker.restart(graceful=True)
    after = asyncio.run(aio_read(broker.bootstrap, topic_name, counts))
    check_records(after, expected, f"aiokafka {codec} after restart")
    check_identical(before, after, f"aiokafka {codec}")
    check_stored_codec(broker, topic_name, codec)


# ---------------------------------------------------------------------- kafkajs

def run_node(args, timeout=90):
    if NODE is None:
        pytest.skip("node not installed")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("tests/e2e/node/node_modules missing: run scripts/install-test-deps.sh")
    cmd = [NODE, str(NODE_DIR / "kafkajs_codecs.js"), *map(str, args)]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kafkajs_codecs.js {args[0]} hung for {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-4000:]}") from None
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    lines = [l[7:] for l in out.splitlines() if l.startswith("RESULT ")]
    fail_unless(lines, lambda: f"no RESULT from kafkajs_codecs.js {args[0]} (exit {r.returncode}); "
                               f"stdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}")
    res = json.loads(lines[-1])
    fail_unless(r.returncode == 0 and "error" not in res, lambda: (
        f"kafkajs_codecs.js {args[0]} failed (exit {r.returncode}): {res.get('error')}\nstderr:\n{err[-4000:]}"))
    return res


@functools.lru_cache(maxsize=None)
def kafkajs_unavailable() -> dict:
    """codec -> None, or the reason its kafkajs plugin cannot be used here."""
    return run_node(["codecs"], timeout=60)["unavailable"]


def skip_unless_kafkajs_codec(codec):
    reason = kafkajs_unavailable().get(codec)
    if reason:
        pytest.skip(f"kafkajs {codec} codec plugin not usable here: {reason}")


def check_kafkajs_produce(res, codecs, n=N):
    """Every send acked without error at exactly the next offset of its partition
    (one batch per partition per send of `chunk` records), fetchTopicOffsets
    low 0 / high = count."""
    fail_unless(all(s["errorCode"] == 0 for s in res["sends"]),
                lambda: f"kafkajs send errors: {[s for s in res['sends'] if s['errorCode']][:5]}")
    chunk = res["chunk"]
    want_bases = {p: [] for p in range(PARTS)}
    counts = {p: 0 for p in range(PARTS)}
    for _ in codecs:
        for start in range(0, n, chunk):
            for i in range(start, min(n, start + chunk)):
                if i - start < PARTS:  # first record of this send for partition i % PARTS
                    want_bases[i % PARTS].append(counts[i % PARTS])
                counts[i % PARTS] += 1
    bases = {p: [s["baseOffset"] for s in res["sends"] if s["partition"] == p] for p in range(PARTS)}
    fail_unless(bases == want_bases, lambda: f"kafkajs produce base offsets {bases}, expected {want_bases}")
    offsets = {o["partition"]: (o["low"], o["high"]) for o in res["offsets"]}
    fail_unless(offsets == {p: (0, c) for p, c in counts.items()},
                lambda: f"kafkajs fetchTopicOffsets {offsets}, expected {counts}")
    return counts


@pytest.mark.node
@pytest.mark.timeout(150)
@pytest.mark.parametrize("codec", CODECS)
def test_kafkajs_codec_produce_restart(codec_broker, topic_name, codec):
    broker = codec_broker
    skip_unless_kafkajs_codec(codec)
    res = run_node(["produce", broker.bootstrap, topic_name, codec, N])
    assert res["created"] is True
    counts = check_kafkajs_produce(res, [codec])

    # group-free read-back with confluent-kafka (assign), record by record
    expected = expected_by_partition("js", [codec])
    before = ck_read_partitions(broker.bootstrap, topic_name, range(PARTS), timeout=60, expected=counts)
    check_records(before, expected, f"kafkajs {codec}")

    broker.restart(graceful=True)
    after = ck_read_partitions(broker.bootstrap, topic_name, range(PARTS), timeout=60, expected=counts)
    check_records(after, expected, f"kafkajs {codec} after restart")
    check_identical(before, after, f"kafkajs {codec}")
    check_stored_codec(broker, topic_name, codec)


@pytest.mark.node
@pytest.mark.timeout(150)
def test_kafkajs_group_consumer_decodes_every_codec(broker_factory, topic_name):
    """kafkajs produces 2,000 records with each usable codec into one topic and a
    kafkajs group consumer (subscribe, fromBeginning) reads them all back: this
    decompresses broker-served batches of every codec with kafkajs's own codecs.
    Default __consumer_offsets; no 3 s wait for more members before the first join."""
    broker = broker_factory("group.initial.rebalance.delay.ms=0")
    n = 2000
    codecs = [c for c in CODECS if not kafkajs_unavailable().get(c)]
    res = run_node(["produce", broker.bootstrap, topic_name, ",".join(codecs), n])
    counts = check_kafkajs_produce(res, codecs, n)
    total = sum(counts.values())
    res = run_node(["consume", broker.bootstrap, topic_name, total], timeout=90)
    got = {p: [] for p in range(PARTS)}
    for p, off, key, value, headers, ts in res["records"]:
        hs = tuple((k, bytes.fromhex(v)) for k, v in headers.items())
        got[p].append(Rec(off, key.encode(), value.encode(), hs, ts))
    for p in got:  # a batch may be delivered again around a rebalance: keep first sightings
        seen = set()
        got[p] = [r for r in got[p] if not (r.offset in seen or seen.add(r.offset))]
    check_records(got, expected_by_partition("js", codecs, n), "kafkajs group consumer")
