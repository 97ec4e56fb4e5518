"""Log compaction (Kafka's log cleaner), black box: what clients read from a compacted
topic and what stays on disk.

Every topic here has small segments, `min.cleanable.dirty.ratio=0.01` and a short
`segment.ms`; every broker runs with `log.cleaner.backoff.ms=200` (Kafka's 15 s would make
each idle check slow). As in Kafka the active (last) segment is never cleaned and segments
roll only on append, so after producing, `roll()` appends records under the key `roll`
until a new segment starts after the data: every data record is then cleanable.

Keys are spread (`key_index`): key k is written once per round of `keys` records up to
round k * rounds / keys and never after, so the record each key keeps lies anywhere in
the log, not only at its end, and cleaning leaves offset gaps in every segment.

1. Java kafka-clients 4.1.1: 1,000,000 records over 1,000 keys; the Java consumer reads
   every key once, with its latest value at its original offset; *.log bytes shrink to
   a bound far below the data written.
2. librdkafka (confluent-kafka), lz4 and zstd batches with headers and timestamps: the same,
   and the cleaned batches keep the codec (Kafka rewrites a batch in its own codec).
3. kcat (librdkafka 2.0.2) `-C -e -o beginning` across the gaps; `-o <removed offset>`
   starts at the next kept record; the log start offset stays 0; the same after SIGKILL +
   restart, and the idempotent producer goes on producing.
4. Tombstones: visible after the first cleaning, gone after delete.retention.ms and a
   later cleaning (never before delete.retention.ms has passed).
5. cleanup.policy delete -> compact with IncrementalAlterConfigs: nothing is cleaned
   before, compaction starts without a restart.
6. __consumer_offsets (1 partition, 100 KiB segments): 100,000 commits by a group member
   (~44 MB uncompacted with these names) shrink below 400 KiB; after a restart the group
   coordinator replays a few thousand records (not 300,000) and OffsetFetch answers the
   latest commit.
7. When not to clean: min.compaction.lag.ms holds young records back; with
   log.cleaner.enable=false nothing is cleaned.

Against a broker without a cleaner every test but 7's second fails at start, as
log.cleaner.* keys are refused; without those keys they fail waiting for the cleaning
(CLEAN_TIMEOUT), their messages naming the partition's bytes and segments and the
broker's 'log cleaned' lines (none).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from e2e_util import (
    E2E_DIR,
    ck_admin,
    ck_consumer,
    ck_create_topic,
    ck_producer,
    fail_unless,
    is_ci,
    java_program as compile_java,
    Rec,
    wait_until,
)

# Broker: the cleaner checks for work every 200 ms when idle (Kafka's default is 15 s).
CLEANER_SETS = ("log.cleaner.backoff.ms=200",)
# How long a test waits for the cleaner to finish before failing.
CLEAN_TIMEOUT = 60.0
ROLL_KEY = b"roll"
SEGMENT_BYTES = 1 << 20
SEGMENT_MS = 1000
# A cleaned partition holds at most this many *.log bytes per kept key, plus ROLL_SLACK
# (the roll records in the active segment, empty segment files). A kept record is ~25-40
# bytes; alone in a batch (the spread keys make that the common case) ~100-120 bytes.
PER_KEY_BOUND = 200
ROLL_SLACK = 64 * 1024

JAVA_SRC = E2E_DIR / "java" / "StrataCompactionE2E.java"
JAVA_RECORDS = 1_000_000  # ~5 s to produce with a debug broker on 2 cores; ~28 MB on disk
JAVA_KEYS = 1_000
# librdkafka: 1M records as the Java test (the figure) in lz4, fewer in zstd.
CK_RECORDS = {"lz4": 1_000_000, "zstd": 300_000}
CK_KEYS = 1_000
KCAT_RECORDS = 100_000
KCAT_KEYS = 500
SWITCH_RECORDS = 100_000
SWITCH_KEYS = 500

CODEC_IDS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


# ------------------------------------------------------------------ key scheme

def key_index(i: int, n: int, keys: int) -> int:
    """Key of record i of n over `keys` keys (StrataCompactionE2E.keyFor is the same)."""
    rounds = (n + keys - 1) // keys
    k = i % keys
    if i // keys > k * rounds // keys:
        k = keys - 1 - i % 7
    return k


def key_name(k: int) -> bytes:
    return b"key-%05d" % k


def value_of(i: int) -> bytes:
    return b"value-%d" % i


def latest_by_key(n: int, keys: int) -> dict[bytes, tuple[int, bytes]]:
    """{key: (offset, value)} of the last record of each key when record i sits at offset i."""
    last = {}
    for i in range(n):
        last[key_index(i, n, keys)] = i
    fail_unless(len(last) == keys, f"key scheme writes {len(last)} of {keys} keys")
    return {key_name(k): (i, value_of(i)) for k, i in last.items()}


def payload_bytes(n: int, keys: int) -> int:
    """Key + value bytes of all n records: a lower bound of the uncompacted log's size."""
    return sum(len(key_name(key_index(i, n, keys))) + len(value_of(i)) for i in range(n))


def compact_config(**over) -> dict[str, str]:
    c = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES), "segment.ms": str(SEGMENT_MS),
         "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"}
    c.update({k.replace("_", "."): str(v) for k, v in over.items()})
    return c


# ------------------------------------------------------------------ disk and broker log

def partition_dir(broker, topic, partition=0):
    d = broker.data_dir / f"{topic}-{partition}"
    if d.is_dir():
        return d
    dirs = [p for p in broker.data_dir.rglob(f"{topic}-{partition}") if p.is_dir()]
    assert len(dirs) == 1, f"partition dir {topic}-{partition} not found under {broker.data_dir}: {dirs}"
    return dirs[0]


def segments(broker, topic, partition=0) -> list[tuple[int, int]]:
    """[(base offset, *.log size)] of the partition's segment files, by base offset. Files
    the cleaner is replacing (.cleaned, .swap, .deleted) do not count."""
    out = []
    for f in partition_dir(broker, topic, partition).iterdir():
        if re.fullmatch(r"\d{20}\.log", f.name):
            try:
                out.append((int(f.name[:20]), f.stat().st_size))
            except FileNotFoundError:  # deleted by the cleaner meanwhile
                pass
    return sorted(out)


def log_bytes(broker, topic, partition=0) -> int:
    return sum(size for _, size in segments(broker, topic, partition))


def fields(line: str) -> dict[str, str]:
    """key=value fields of a tracing line (quoted values unquoted)."""
    return {k: v.strip('"') for k, v in re.findall(r'(\w[\w.]*)=("(?:[^"\\]|\\.)*"|\S+)', line)}


def cleaned_lines(broker, topic) -> list[str]:
    """The broker's 'log cleaned' lines for `topic`."""
    return [l for l in broker.log_text().splitlines() if "log cleaned" in l and topic in l]


def assert_cleaned_logged(broker, topic):
    lines = cleaned_lines(broker, topic)
    assert lines, f"no 'log cleaned' line for {topic} in the broker log"
    shrank = [l for l in lines if "bytes_before" in fields(l) and "bytes_after" in fields(l)
              and int(fields(l)["bytes_after"]) < int(fields(l)["bytes_before"])]
    assert shrank, f"no 'log cleaned' line for {topic} with bytes_after < bytes_before: {lines[-3:]}"
    return lines


def assert_not_cleaned_until(broker, topic, until, why):
    """An invariant over a window (checked every 0.25 s until monotonic time `until`): the
    partition's segment files keep their sizes and the broker logs no cleaning of it."""
    before = segments(broker, topic)
    while time.monotonic() < until:
        now = segments(broker, topic)
        assert now == before, f"{why}: {topic}-0 changed on disk: {before[:4]}... -> {now[:4]}..."
        assert not cleaned_lines(broker, topic), f"{why}: {cleaned_lines(broker, topic)}"
        time.sleep(0.25)


def clean_offset(broker, topic, partition=0) -> int:
    """How far the cleaner has cleaned `topic`-`partition` (the first dirty offset in Kafka's
    cleaner-offset-checkpoint file), 0 before its first cleaning."""
    path = broker.data_dir / "cleaner-offset-checkpoint"
    if not path.exists():
        return 0
    for line in path.read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] == topic and parts[1] == str(partition):
            return int(parts[2])
    return 0


def wait_compacted(broker, topic, bound, through=None, timeout=CLEAN_TIMEOUT) -> tuple[int, float]:
    """Polls until the partition's *.log files hold at most `bound` bytes and, with `through`,
    the cleaner has cleaned past that offset (one cleaning may shrink the log below the bound
    before the last dirty segment is cleaned); returns (bytes, seconds waited)."""
    t0 = time.monotonic()
    last = {"bytes": None}

    def small():
        last["bytes"] = log_bytes(broker, topic)
        return last["bytes"] <= bound and (through is None or clean_offset(broker, topic) > through)

    wait_until(small, timeout, 0.25, message=lambda: (
        f"{topic}-0 not compacted within {timeout}s: its *.log files hold {last['bytes']} bytes "
        f"(bound {bound}) in {len(segments(broker, topic))} segments {segments(broker, topic)[:8]}...; "
        f"cleaned up to {clean_offset(broker, topic)} (waiting past {through}); "
        f"'log cleaned' lines for it: {cleaned_lines(broker, topic)[-3:] or 'none'}"))
    return last["bytes"], time.monotonic() - t0


def stored_batches(broker, topic, partition=0) -> list[tuple[int, int, str, int]]:
    """(segment base, batch base offset, codec, record count) of every record batch in the
    partition's segment files (Kafka's on-disk format)."""
    out = []
    for base, _ in segments(broker, topic, partition):
        data = (partition_dir(broker, topic, partition) / f"{base:020d}.log").read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            (base_offset, length) = struct.unpack_from(">qi", data, pos)
            if length <= 0:
                break  # zero tail of a preallocated file
            magic = data[pos + 16]
            (attrs,) = struct.unpack_from(">h", data, pos + 21)
            (count,) = struct.unpack_from(">i", data, pos + 57)
            fail_unless(magic == 2, f"{topic}-{partition} segment {base}@{pos}: magic {magic}")
            out.append((base, base_offset, CODEC_IDS.get(attrs & 7, f"codec-{attrs & 7}"), count))
            pos += 12 + length
    return out


# ------------------------------------------------------------------ clients

def produce_all(producer, topic, records, timeout=120.0) -> list[int]:
    """Produces (key, value, headers, timestamp) tuples to partition 0; returns their offsets
    from the delivery reports, in order."""
    offsets: list[int | None] = []
    errors = []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                offsets[i] = msg.offset()
        return cb

    for i, (key, value, headers, ts) in enumerate(records):
        offsets.append(None)
        kw = {"headers": headers} if headers else {}
        if ts is not None:
            kw["timestamp"] = ts
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=0, on_delivery=report(i), **kw)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0 and not errors, f"produce to {topic}: {left} undelivered, errors {errors[:3]}"
    missing = [i for i, o in enumerate(offsets) if o is None]
    assert not missing, f"no delivery report for records {missing[:5]}"
    return offsets


def roll(broker, producer, topic, after_offset, timeout=30.0) -> list[int]:
    """Appends records under ROLL_KEY until the active segment starts after `after_offset`
    (segment.ms has passed since it was created); returns the roll records' offsets."""
    offsets = []
    deadline = time.monotonic() + timeout
    while True:
        offsets += produce_all(producer, topic, [(ROLL_KEY, b"roll-%d" % len(offsets), None, None)])
        if segments(broker, topic)[-1][0] > after_offset:
            return offsets
        assert time.monotonic() < deadline, (
            f"{topic}-0 did not roll a segment after offset {after_offset} within {timeout}s "
            f"(segment.ms); segments {segments(broker, topic)[-3:]}")
        time.sleep(0.25)


def read_all(bootstrap, topic, timeout=60.0) -> list[Rec]:
    """Every record of partition 0 from the beginning up to the high watermark."""
    c = ck_consumer(bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        _, hi = c.get_watermark_offsets(tp, timeout=10)
        out: list[Rec] = []
        if hi <= 0:
            return out
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while not out or out[-1].offset < hi - 1:
            assert time.monotonic() < deadline, (
                f"timed out reading {topic}: {len(out)} records, last offset "
                f"{out[-1].offset if out else None}, high watermark {hi}")
            for m in c.consume(num_messages=5000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= hi:
                            return out
                        continue
                    raise AssertionError(f"consumer error on {topic}: {m.error()}")
                out.append(Rec.from_ck(m))
        return out
    finally:
        c.close()


def check_compacted(recs, expected, roll_offsets, label, compare=lambda r: (r.offset, r.value)):
    """recs: what a consumer read. expected: {key: compare(record it must keep)}. Every data key
    exactly once with its expected record; the roll records read are roll records (the
    latest always, as it sits in the active segment); offsets increasing."""
    offs = [r.offset for r in recs]
    fail_unless(offs == sorted(set(offs)), lambda: f"{label}: offsets not strictly increasing: "
                f"{[(a, b) for a, b in zip(offs, offs[1:]) if b <= a][:5]}")
    data = [r for r in recs if r.key != ROLL_KEY]
    dups = [k for k, n in Counter(r.key for r in data).items() if n > 1]
    fail_unless(not dups, lambda: (
        f"{label}: {len(dups)} keys read more than once (not compacted?), {len(recs)} records in all; "
        f"e.g. {dups[0]!r} at offsets {[r.offset for r in data if r.key == dups[0]][:10]}"))
    got = {r.key: compare(r) for r in data}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = [(k, got[k], expected[k]) for k in sorted(set(got) & set(expected)) if got[k] != expected[k]]
        raise AssertionError(f"{label}: kept records differ: {len(missing)} keys missing {missing[:5]}, "
                             f"{len(extra)} unexpected {extra[:5]}, {len(wrong)} with the wrong record "
                             f"(key, got, expected) {wrong[:3]}")
    rolls = [r.offset for r in recs if r.key == ROLL_KEY]
    fail_unless(set(rolls) <= set(roll_offsets) and roll_offsets[-1] in rolls,
                lambda: f"{label}: roll records at {rolls}, produced at {roll_offsets}")


def shrink_report(label, written, after, waited):
    print(f"\n{label}: {written} payload bytes written, {after} *.log bytes after cleaning "
          f"({written / max(after, 1):.0f}x smaller), compacted {waited:.1f}s after the roll")


# ------------------------------------------------------------------ 1. Java client

@pytest.fixture(scope="module")
def java_compaction(tmp_path_factory):
    return compile_java("4", JAVA_SRC, tmp_path_factory.mktemp("java-compaction"), heap="512m")


def run_java(cmd, timeout=150):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java client hung; stderr tail:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (
        f"java client exited {r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-6000:]}")
    return json.loads(lines[-1])


@pytest.mark.java
@pytest.mark.timeout(240)
def test_java_million_records_compacted(broker_factory, topic_name, java_compaction):
    """1,000,000 records over 1,000 keys from the Java producer: once cleaned, the Java
    consumer reads each key once, with its latest value at the offset it was written at,
    and the partition's *.log files shrink from ~28 MB to ~1000 kept records."""
    b = broker_factory(*CLEANER_SETS)
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config())
    res = run_java(java_compaction + ["produce", b.bootstrap, topic_name, str(JAVA_RECORDS), str(JAVA_KEYS)])
    assert res["errors"] == [] and res["offset_mismatches"] == [], res
    assert res["acked"] == JAVA_RECORDS, res
    print(f"\njava produced {JAVA_RECORDS} records in {res['seconds']}s")
    p = ck_producer(b.bootstrap, acks="all")
    rolls = roll(b, p, topic_name, JAVA_RECORDS - 1)
    bound = JAVA_KEYS * PER_KEY_BOUND + ROLL_SLACK
    after, waited = wait_compacted(b, topic_name, bound, through=JAVA_RECORDS - 1)
    written = payload_bytes(JAVA_RECORDS, JAVA_KEYS)
    shrink_report("java", written, after, waited)
    assert written / after >= 20, (written, after)

    got = run_java(java_compaction + ["consume", b.bootstrap, topic_name, "100000"])
    assert got["end"] == rolls[-1] + 1, got["end"]
    assert got["records"] is not None, f"the Java consumer read {got['count']} records (not compacted)"
    recs = [Rec(o, k.encode(), v.encode() if v is not None else None) for o, k, v in got["records"]]
    check_compacted(recs, latest_by_key(JAVA_RECORDS, JAVA_KEYS), rolls, "java consumer")
    assert_cleaned_logged(b, topic_name)


# ------------------------------------------------------------------ 2. librdkafka, compressed

@pytest.mark.timeout(180)
@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_librdkafka_compressed_batches_compacted(broker_factory, topic_name, codec):
    """1,000,000 (lz4) or 300,000 (zstd) records over 1,000 keys with headers and timestamps, in batches from
    an idempotent librdkafka producer: each key keeps its latest record (offset, value,
    headers, timestamp), and the cleaned batches on disk are still in the codec."""
    b = broker_factory(*CLEANER_SETS)
    # compression.type=<codec> on the topic too: batches librdkafka sends uncompressed (when
    # compressing would not make them smaller) are stored in the codec, so every batch is.
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config(compression_type=codec))
    p = ck_producer(b.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 20,
                                    "compression.type": codec, "batch.num.messages": 10000})
    n, keys = CK_RECORDS[codec], CK_KEYS
    stamps = []

    def records():
        for i in range(n):
            if i % 1000 == 0:
                stamps.append(int(time.time() * 1000))
            yield key_name(key_index(i, n, keys)), value_of(i), [("i", b"%d" % i)], stamps[-1]

    t0 = time.monotonic()
    offsets = produce_all(p, topic_name, records())
    print(f"\n{codec}: produced {n} records in {time.monotonic() - t0:.1f}s")
    fail_unless(offsets == list(range(n)), "offsets from the delivery reports are not 0..n-1")
    rolls = roll(b, p, topic_name, n - 1)
    after, waited = wait_compacted(b, topic_name, keys * PER_KEY_BOUND + ROLL_SLACK, through=n - 1)
    shrink_report(codec, payload_bytes(n, keys), after, waited)

    expected = {k: (o, v, (("i", b"%d" % o),), stamps[o // 1000]) for k, (o, v) in latest_by_key(n, keys).items()}
    recs = read_all(b.bootstrap, topic_name)
    check_compacted(recs, expected, rolls, f"{codec} read-back",
                    compare=lambda r: (r.offset, r.value, r.headers, r.timestamp))

    # Kafka rewrites a batch that lost records in the batch's own codec. A batch left with no
    # record at all is a bare header, which Kafka writes uncompressed (writeEmptyHeader).
    batches = [x for x in stored_batches(b, topic_name) if x[3] > 0]
    fail_unless(batches and all(c == codec for _, _, c, _ in batches), lambda: (
        f"batches on disk after cleaning by codec {Counter(c for _, _, c, _ in batches)}, expected all "
        f"{codec}; e.g. (segment, base offset, codec, records) {[x for x in batches if x[2] != codec][:5]}"))
    assert_cleaned_logged(b, topic_name)


# ------------------------------------------------------------------ 3. kcat across the gaps

KCAT = shutil.which("kcat")


def need_kcat():
    if KCAT is None:
        if is_ci() or os.geteuid() == 0:
            pytest.fail("kcat not found although running as root/CI: run scripts/install-test-deps.sh")
        pytest.skip("kcat not installed: scripts/install-test-deps.sh needs root for apt-get")


def kcat_read(broker, topic, *args, timeout=60) -> list[Rec]:
    cmd = [KCAT, "-b", broker.bootstrap, "-m", "10", "-C", "-t", topic, "-p", "0", "-e", "-J", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not exit within {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-3000:]}")
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')[-3000:]}"
    out = []
    for line in r.stdout.decode().splitlines():
        if line.strip():
            m = json.loads(line)
            out.append(Rec(m["offset"], m["key"].encode() if m["key"] is not None else None,
                           m["payload"].encode() if m["payload"] is not None else None))
    return out


@pytest.mark.kcat
@pytest.mark.timeout(180)
def test_kcat_reads_across_offset_gaps(broker_factory, topic_name):
    """kcat (librdkafka 2.0.2) `-C -e -o beginning` on a cleaned topic: exactly the latest record
    of each key at the offset its delivery report gave; starting at a removed offset reads
    from the next kept one; the same after SIGKILL and restart."""
    need_kcat()
    b = broker_factory(*CLEANER_SETS)
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config())
    p = ck_producer(b.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 10})
    n, keys = KCAT_RECORDS, KCAT_KEYS
    offsets = produce_all(p, topic_name, ((key_name(key_index(i, n, keys)), value_of(i), None, None)
                                          for i in range(n)))
    expected = {}
    for i, off in enumerate(offsets):  # offsets as the delivery reports gave them
        expected[key_name(key_index(i, n, keys))] = (off, value_of(i))
    rolls = roll(b, p, topic_name, offsets[-1])
    after, waited = wait_compacted(b, topic_name, keys * PER_KEY_BOUND + ROLL_SLACK, through=offsets[-1])
    shrink_report("kcat", payload_bytes(n, keys), after, waited)

    recs = kcat_read(b, topic_name, "-o", "beginning")
    check_compacted(recs, expected, rolls, "kcat -o beginning")
    kept = sorted(o for o, _ in expected.values())
    kept_set = set(kept)
    removed = [o for o in range(kept[-1]) if o not in kept_set]
    for g in (removed[0], removed[len(removed) // 2], removed[-1]):
        got = kcat_read(b, topic_name, "-o", str(g), "-c", "1")
        want = min(o for o in kept + rolls if o > g)
        assert [r.offset for r in got] == [want], f"kcat -o {g} (a removed offset) read {got}, expected offset {want}"

    assert_cleaned_logged(b, topic_name)
    c = ck_consumer(b.bootstrap)
    try:  # cleaning never moves the log start offset
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10) == (0, rolls[-1] + 1)
    finally:
        c.close()

    b.restart(graceful=False)
    again = kcat_read(b, topic_name, "-o", "beginning")
    assert again == recs, f"after SIGKILL + restart kcat reads {len(again)} records, before {len(recs)}"
    # The same idempotent producer goes on (Kafka's cleaner keeps each producer's last batch,
    # so its sequence numbers stay known); its records follow the old end.
    more = produce_all(p, topic_name, [(b"more-%d" % i, b"more", None, None) for i in range(100)])
    assert more == list(range(rolls[-1] + 1, rolls[-1] + 101)), more[:3]
    assert len(kcat_read(b, topic_name, "-o", str(rolls[-1] + 1))) == 100


# ------------------------------------------------------------------ 4. tombstones

TOMBSTONE_KEYS = 100
DELETED_KEYS = 10  # key-00000 .. key-00009 get a tombstone
DELETE_RETENTION_MS = 4000


@pytest.mark.timeout(180)
def test_tombstones_kept_for_delete_retention_then_dropped(broker_factory, topic_name):
    """A deleted key's tombstone (null value) is what a consumer reads for it after the first
    cleaning; it is never gone before delete.retention.ms has passed, and once it has, a
    later cleaning (more dirty data) removes it while every other key keeps its latest value."""
    b = broker_factory(*CLEANER_SETS)
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config(
        segment_ms=500, delete_retention_ms=DELETE_RETENTION_MS))
    p = ck_producer(b.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    deleted = {key_name(k) for k in range(DELETED_KEYS)}
    latest: dict[bytes, bytes | None] = {}
    recs = []
    for r in range(5):
        recs += [(key_name(k), b"r%d-k%d" % (r, k), None, None) for k in range(TOMBSTONE_KEYS)]
    recs += [(k, None, None, None) for k in sorted(deleted)]
    offsets = produce_all(p, topic_name, recs)
    written_at = {}
    for (k, v, _, _), off in zip(recs, offsets):
        latest[k] = v
        written_at[k] = (off, v)

    t_roll = time.monotonic()  # the tombstones' segment can only be cleaned after this
    roll(b, p, topic_name, offsets[-1], timeout=15)

    # (1) After the first cleaning: every key once; the deleted ones as tombstones.
    state = {}

    def first_cleaning():
        state["recs"] = read_all(b.bootstrap, topic_name)
        data = [r for r in state["recs"] if r.key != ROLL_KEY]
        return len(data) == TOMBSTONE_KEYS and {r.key: (r.offset, r.value) for r in data} == written_at

    wait_until(first_cleaning, CLEAN_TIMEOUT, 0.2, message=lambda: (
        f"not compacted within {CLEAN_TIMEOUT}s: {len(state['recs'])} records, tombstones at "
        f"{[r.offset for r in state['recs'] if r.key in deleted and r.value is None]}; "
        f"'log cleaned' lines: {cleaned_lines(b, topic_name)[-3:] or 'none'}"))
    t_first = time.monotonic()
    print(f"\nfirst cleaning seen {t_first - t_roll:.1f}s after the roll; tombstones read at "
          f"{sorted(r.offset for r in state['recs'] if r.value is None)}")

    # (2) Keep adding dirty data (updates of the other keys, which also roll segments) until a
    # cleaning drops the tombstones; that must not happen before delete.retention.ms.
    cleanings_at_first = len(cleaned_lines(b, topic_name))
    cleanings_keeping = 0  # cleanings logged after the first one, tombstones still read after them
    round_ = 0
    deadline = t_first + DELETE_RETENTION_MS / 1000 + CLEAN_TIMEOUT
    while True:
        round_ += 1
        batch = [(key_name(k), b"u%d-k%d" % (round_, k), None, None) for k in range(DELETED_KEYS, TOMBSTONE_KEYS)]
        last_off = produce_all(p, topic_name, batch)[-1]
        for k, v, _, _ in batch:
            latest[k] = v
        now_recs = read_all(b.bootstrap, topic_name)
        still = [r for r in now_recs if r.key in deleted]
        if not still:
            break
        assert all(r.value is None for r in still), f"a deleted key came back: {still[:3]}"
        cleanings_keeping = max(cleanings_keeping, len(cleaned_lines(b, topic_name)) - cleanings_at_first)
        assert time.monotonic() < deadline, (
            f"tombstones still there {time.monotonic() - t_first:.1f}s after the first cleaning "
            f"(delete.retention.ms={DELETE_RETENTION_MS}): {still[:3]}; "
            f"'log cleaned' lines: {cleaned_lines(b, topic_name)[-3:]}")
        time.sleep(0.4)
    gone_after = time.monotonic() - t_roll
    assert gone_after * 1000 >= DELETE_RETENTION_MS, (
        f"tombstones dropped {gone_after:.1f}s after the roll, before delete.retention.ms={DELETE_RETENTION_MS}")
    print(f"tombstones gone {gone_after:.1f}s after the roll ({round_} update rounds; "
          f"{cleanings_keeping} later cleanings kept them)")
    assert len(cleaned_lines(b, topic_name)) >= 2, cleaned_lines(b, topic_name)

    # (3) Once the last updates are cleaned too: the other keys once each, latest values.
    rolls2 = roll(b, p, topic_name, last_off)
    expected = {k: v for k, v in latest.items() if k not in deleted}

    def final():
        state["recs"] = read_all(b.bootstrap, topic_name)
        data = [r for r in state["recs"] if r.key != ROLL_KEY]
        return len(data) == len(expected) and {r.key: r.value for r in data} == expected

    wait_until(final, CLEAN_TIMEOUT, 0.2, message=lambda: (
        f"final state not reached: {Counter(r.key for r in state['recs']).most_common(3)}, "
        f"{len(state['recs'])} records"))
    assert rolls2[-1] in [r.offset for r in state["recs"]]


# ------------------------------------------------------------------ 5. delete -> compact

NO_CLEANING_WINDOW = 3.0  # 15 cleaner backoffs


@pytest.mark.timeout(180)
def test_switch_delete_to_compact_live(broker_factory, topic_name):
    """A cleanup.policy=delete topic is never compacted; IncrementalAlterConfigs
    cleanup.policy=compact makes the running broker compact it."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    b = broker_factory(*CLEANER_SETS)
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config(cleanup_policy="delete"))
    p = ck_producer(b.bootstrap, **{"acks": "all", "enable.idempotence": True, "linger.ms": 10})
    n, keys = SWITCH_RECORDS, SWITCH_KEYS
    offsets = produce_all(p, topic_name, ((key_name(key_index(i, n, keys)), value_of(i), None, None)
                                          for i in range(n)))
    fail_unless(offsets == list(range(n)), "offsets from the delivery reports are not 0..n-1")
    rolls = roll(b, p, topic_name, n - 1)

    assert_not_cleaned_until(b, topic_name, time.monotonic() + NO_CLEANING_WINDOW, "cleanup.policy=delete")

    admin = ck_admin(b.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(30)
    desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic_name)])
    (cfg,) = [f.result(30) for f in desc.values()]
    assert cfg["cleanup.policy"].value == "compact", cfg["cleanup.policy"]

    after, waited = wait_compacted(b, topic_name, keys * PER_KEY_BOUND + ROLL_SLACK, through=n - 1)
    shrink_report("delete->compact", payload_bytes(n, keys), after, waited)
    check_compacted(read_all(b.bootstrap, topic_name), latest_by_key(n, keys), rolls, "after the switch")
    assert_cleaned_logged(b, topic_name)


# ------------------------------------------------------------------ 6. __consumer_offsets

OFFSET_COMMITS = 100_000  # ~20 s with a debug broker on 2 cores (~5,000 commits/s)
COMMIT_PARTS = 3
# Uncompacted, one commit of 3 partitions is one ~245-byte batch: 100,000 commits ~24.5 MB in
# ~240 segments of 100 KiB. Compacted: the active segment (<= 100 KiB, ~1,250 records) plus
# the cleaned rest (a few records, and segment files of a few hundred bytes if the cleaner
# does not merge them).
OFFSETS_DIR_BOUND = 400 * 1024
# Records the coordinator may replay at the restart: at most what fits in OFFSETS_DIR_BOUND
# (~80 bytes a record in 3-record batches), against 300,000 uncompacted.
OFFSETS_LOAD_RECORDS_BOUND = 6_000


def coordinator_loaded(broker, start: int) -> dict[str, str]:
    """Fields of the 'group coordinator loaded' line of broker start #start."""
    text = broker.log_text().split(f"----- [e2e] start #{start}:")[-1]
    lines = [l for l in text.splitlines() if "group coordinator loaded" in l]
    assert lines, f"no 'group coordinator loaded' line after start #{start}"
    return fields(lines[-1])


@pytest.mark.timeout(240)
def test_consumer_offsets_compacted_and_reload_fast(broker_factory, closer, topic_name):
    """100,000 commits of the same 3 partitions by a group member (librdkafka, asynchronous,
    pipelined): __consumer_offsets-0 (compact, 100 KiB segments) shrinks below 400 KiB
    (uncompacted: ~24.5 MB); after a restart the coordinator replays a few thousand records
    and OffsetFetch returns the latest commit."""
    b = broker_factory(*CLEANER_SETS, "offsets.topic.num.partitions=1", "offsets.topic.segment.bytes=102400",
                       "group.initial.rebalance.delay.ms=0")
    ck_create_topic(b.bootstrap, topic_name, COMMIT_PARTS)
    group = f"compact-{uuid.uuid4().hex[:8]}"
    done = {"n": 0, "errors": []}

    def on_commit(err, parts):
        done["n"] += 1
        bad = [str(tp.error) for tp in parts or [] if tp.error]
        if (err or bad) and len(done["errors"]) < 5:
            done["errors"].append(str(err or bad))

    c = closer(ck_consumer(b.bootstrap, **{"group.id": group, "on_commit": on_commit, "enable.partition.eof": False}))
    c.subscribe([topic_name])
    deadline = time.monotonic() + 30
    while len(c.assignment()) < COMMIT_PARTS:
        assert time.monotonic() < deadline, f"group member got {c.assignment()} only"
        c.poll(0.1)
    t0 = time.monotonic()
    biggest = 0
    for i in range(1, OFFSET_COMMITS + 1):
        c.commit(offsets=[TopicPartition(topic_name, p, 3 * i + p) for p in range(COMMIT_PARTS)], asynchronous=True)
        if i % 500 == 0:
            c.poll(0)
    while done["n"] < OFFSET_COMMITS:
        assert time.monotonic() - t0 < 150, f"only {done['n']} of {OFFSET_COMMITS} commits answered"
        c.poll(0.1)
        biggest = max(biggest, log_bytes(b, "__consumer_offsets"))
    commit_s = time.monotonic() - t0
    assert not done["errors"], done["errors"]
    want = {p: 3 * OFFSET_COMMITS + p for p in range(COMMIT_PARTS)}
    tps = [TopicPartition(topic_name, p) for p in range(COMMIT_PARTS)]
    assert {tp.partition: tp.offset for tp in c.committed(tps, timeout=15)} == want

    after, waited = wait_compacted(b, "__consumer_offsets", OFFSETS_DIR_BOUND)
    print(f"\n{OFFSET_COMMITS} commits in {commit_s:.1f}s; __consumer_offsets-0 peaked at {biggest} bytes seen, "
          f"{after} bytes {waited:.1f}s after the last commit")
    assert_cleaned_logged(b, "__consumer_offsets")
    c.close()

    b.stop()
    t_start = time.monotonic()
    b.start()
    c2 = ck_consumer(b.bootstrap, **{"group.id": group})
    try:
        def fetched():
            try:
                r = c2.committed(tps, timeout=10)
            except KafkaException as e:
                last_err[0] = e
                return None
            return r if all(tp.error is None and tp.offset >= 0 for tp in r) else None

        last_err = [None]
        got = wait_until(fetched, 30, 0.05, lambda: f"OffsetFetch after the restart: {last_err[0]}")
        first_fetch = time.monotonic() - t_start
    finally:
        c2.close()
    loaded = coordinator_loaded(b, 2)
    print(f"after restart: coordinator loaded {loaded.get('records')} records in {loaded.get('elapsed_ms')} ms; "
          f"first OffsetFetch answered {first_fetch:.2f}s after the start")
    assert {tp.partition: tp.offset for tp in got} == want
    assert int(loaded["records"]) <= OFFSETS_LOAD_RECORDS_BOUND, loaded
    # Uncompacted (300,000 records) the load takes ~1 s with a debug broker on 2 cores; a few
    # thousand records take milliseconds.
    assert int(loaded["elapsed_ms"]) < 1000, loaded
    assert first_fetch < 10, first_fetch


# ------------------------------------------------------------------ 7. when not to clean

MIN_COMPACTION_LAG_MS = 6000


@pytest.mark.timeout(120)
def test_min_compaction_lag_delays_cleaning(broker_factory, topic_name):
    """min.compaction.lag.ms: no record younger than the lag is cleaned (nothing changes on
    disk while every record is), then the topic is compacted as usual."""
    b = broker_factory(*CLEANER_SETS)
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config(min_compaction_lag_ms=MIN_COMPACTION_LAG_MS))
    p = ck_producer(b.bootstrap, **{"acks": "all", "linger.ms": 10})
    n, keys = 20_000, 100
    t0 = time.monotonic()  # every record's CreateTime is after this
    offsets = produce_all(p, topic_name, ((key_name(key_index(i, n, keys)), value_of(i), None, None)
                                          for i in range(n)))
    fail_unless(offsets == list(range(n)), "offsets from the delivery reports are not 0..n-1")
    rolls = roll(b, p, topic_name, n - 1)
    # 0.5 s of margin for the clocks (CreateTime is the client's wall clock).
    assert_not_cleaned_until(b, topic_name, t0 + MIN_COMPACTION_LAG_MS / 1000 - 0.5,
                             f"min.compaction.lag.ms={MIN_COMPACTION_LAG_MS}")
    after, waited = wait_compacted(b, topic_name, keys * PER_KEY_BOUND + ROLL_SLACK, through=n - 1)
    print(f"\ncompacted {time.monotonic() - t0:.1f}s after the first record "
          f"(min.compaction.lag.ms={MIN_COMPACTION_LAG_MS})")
    check_compacted(read_all(b.bootstrap, topic_name), latest_by_key(n, keys), rolls, "after the lag")


@pytest.mark.timeout(120)
def test_cleaner_disabled(broker_factory, topic_name):
    """log.cleaner.enable=false: a compacted topic keeps every record."""
    b = broker_factory(*CLEANER_SETS, "log.cleaner.enable=false")
    ck_create_topic(b.bootstrap, topic_name, 1, config=compact_config())
    p = ck_producer(b.bootstrap, **{"acks": "all", "linger.ms": 10})
    n, keys = 20_000, 100
    produce_all(p, topic_name, ((key_name(key_index(i, n, keys)), value_of(i), None, None) for i in range(n)))
    rolls = roll(b, p, topic_name, n - 1)
    assert_not_cleaned_until(b, topic_name, time.monotonic() + NO_CLEANING_WINDOW, "log.cleaner.enable=false")
    recs = read_all(b.bootstrap, topic_name)
    assert [r.offset for r in recs] == list(range(rolls[-1] + 1)), "records missing with the cleaner disabled"
