"""Disk faults with the broker stopped or the disk full: bytes flipped in the
middle of a closed segment (the partition reports CORRUPT_MESSAGE at the
damaged offset, data before it and other partitions serve normally), a torn
tail of the active segment after SIGKILL, missing or garbled index files, a
full disk (ENOSPC on a small tmpfs: KAFKA_STORAGE_ERROR, nothing damaged,
service resumes), and an unwritable data directory at start."""
from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from e2e_util import assert_dense, ck_consumer, ck_create_topic, ck_producer, ck_read_partitions, fail_unless
from test_abuse import (
    CORRUPT_MESSAGE,
    KAFKA_STORAGE_ERROR,
    batches,
    fetch,
    produce,
    record_batch,
)

SEGMENT = "log.segment.bytes=65536"


def segment_files(b, topic, p) -> list[Path]:
    return sorted((b.data_dir / f"{topic}-{p}").glob("*.log"))


def batch_positions(path: Path) -> list[tuple[int, int, int]]:
    """(position, base_offset, size) of each whole batch in a .log file."""
    data = path.read_bytes()
    out, i = [], 0
    while i + 61 <= len(data):
        base = int.from_bytes(data[i:i + 8], "big")
        size = 12 + int.from_bytes(data[i + 8:i + 12], "big")
        if i + size > len(data):
            break
        out.append((i, base, size))
        i += size
    return out


def produce_values(b, topic, per_partition, parts, size=300, ts0=None):
    p = ck_producer(b.bootstrap, linger_ms=5, batch_num_messages=20, acks="all")
    acked = {}

    def cb(err, msg):
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value()

    for i in range(per_partition):
        for part in range(parts):
            kw = {"timestamp": ts0 + i * 10} if ts0 is not None else {}
            p.produce(topic, value=f"p{part}-{i:06d}-".encode() + b"v" * size, partition=part,
                      on_delivery=cb, **kw)
        if i % 100 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return acked


def test_corrupt_batch_in_closed_segment(broker_factory, topic_name):
    b = broker_factory(SEGMENT)
    ck_create_topic(b.bootstrap, topic_name, 3)
    produce_values(b, topic_name, 1500, 3)
    b.stop()
    segs = segment_files(b, topic_name, 0)
    assert len(segs) >= 4, f"expected several segments, got {segs}"
    victim = segs[len(segs) // 2 - 1]  # a closed one in the middle
    bs = batch_positions(victim)
    pos, bad_offset, size = bs[len(bs) // 2]
    seg_base = bs[0][1]
    with open(victim, "r+b") as f:  # flip 8 bytes inside the batch's records
        f.seek(pos + 61 + (size - 61) // 2)
        chunk = f.read(8)
        f.seek(pos + 61 + (size - 61) // 2)
        f.write(bytes(x ^ 0xFF for x in chunk))
    b.start()

    # Up to the damage: served, ending right before the damaged batch.
    err, hw, recs = fetch(b.port, topic_name, {0: seg_base}, max_bytes=1 << 20)[0]
    assert err == 0 and recs, (err, len(recs))
    assert batches(recs)[-1][1] == bad_offset - 1, (batches(recs)[-1], bad_offset)
    # At the damage: CORRUPT_MESSAGE, no records; again on a retry.
    for _ in range(2):
        err, hw2, recs = fetch(b.port, topic_name, {0: bad_offset})[0]
        assert (err, recs) == (CORRUPT_MESSAGE, b""), (err, len(recs))
        assert hw2 == hw
    # The rest of the partition and the other partitions serve normally, in the same request too.
    later = segment_files(b, topic_name, 0)[-1]
    later_base = int(later.stem)
    got = fetch(b.port, topic_name, {0: later_base, 1: 0, 2: 0})
    assert got[0][0] == 0 and batches(got[0][2])[0][0] == later_base
    for p in (1, 2):
        assert got[p][0] == 0 and batches(got[p][2])[0][0] == 0
    # The broker said where, at error level.
    lines = [l for l in b.log_text().splitlines() if "damaged or unreadable" in l]
    assert lines, "no error logged for the corrupt batch\n" + b.log_tail()
    assert "ERROR" in lines[0] and topic_name in lines[0] and f"offset={bad_offset}" in lines[0], lines[0]
    assert victim.name in lines[0], lines[0]
    # A real client is told as well (librdkafka reports the partition error).
    from confluent_kafka import KafkaError, TopicPartition
    c = ck_consumer(b.bootstrap)
    try:
        c.assign([TopicPartition(topic_name, 0, bad_offset)])
        seen = None
        for _ in range(40):
            for m in c.consume(10, timeout=0.5):
                if m.error() and m.error().code() != KafkaError._PARTITION_EOF:
                    seen = m.error()
                elif not m.error():
                    raise AssertionError(f"got a record at {m.offset()} from the damaged batch")
            if seen:
                break
        assert seen is not None, "the consumer was not told about the corrupt batch"
        print(f"consumer error at the damaged offset: {seen}")
    finally:
        c.close()
    assert b.running()


def test_torn_active_tail_after_crash(broker_factory, topic_name):
    b = broker_factory(SEGMENT, "log.flush.interval.messages=1")
    ck_create_topic(b.bootstrap, topic_name, 1)
    acked = produce_values(b, topic_name, 400, 1)
    b.kill()  # no clean-shutdown marker
    active = segment_files(b, topic_name, 0)[-1]
    bs = batch_positions(active)
    pos, last_base, size = bs[-1]
    # The last batch loses its end, and garbage follows.
    with open(active, "r+b") as f:
        f.truncate(pos + size // 2)
        f.seek(0, os.SEEK_END)
        f.write(random.Random(7).randbytes(1000))
    b.start()
    expect = {off: v for (_, off), v in acked.items() if off < last_base}
    got = ck_read_partitions(b.bootstrap, topic_name, [0], expected={0: last_base})
    assert_dense(got)
    fail_unless({r.offset: r.value for r in got[0]} == expect, "records before the torn batch differ")
    err, hw, _ = fetch(b.port, topic_name, {0: 0})[0]
    assert (err, hw) == (0, last_base)
    p = ck_producer(b.bootstrap, acks="all")
    offsets = []
    p.produce(topic_name, value=b"after-crash", partition=0,
              on_delivery=lambda e, m: offsets.append((e, m.offset())))
    assert p.flush(30) == 0 and offsets == [(None, last_base)], offsets


def test_missing_and_garbled_index_files_are_rebuilt(broker_factory, topic_name):
    b = broker_factory(SEGMENT, "log.index.interval.bytes=1024")
    ck_create_topic(b.bootstrap, topic_name, 1)
    ts0 = 1_700_000_000_000
    produce_values(b, topic_name, 1200, 1, ts0=ts0)

    def lookups():
        from kafka import KafkaConsumer, TopicPartition as KTP
        c = KafkaConsumer(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False)
        try:
            tp = KTP(topic_name, 0)
            probes = [ts0 + k * 10 for k in (0, 1, 137, 555, 1000, 1199)] + [ts0 + 5, ts0 + 99999]
            out = []
            for t in probes:
                r = c.offsets_for_times({tp: t})[tp]
                out.append(None if r is None else r.offset)
            return out
        finally:
            c.close()

    before = lookups()
    assert before == [0, 1, 137, 555, 1000, 1199, 1, None], before
    reads_before = {o: fetch(b.port, topic_name, {0: o})[0] for o in (0, 333, 777, 1199)}
    b.stop()
    d = b.data_dir / f"{topic_name}-0"
    rng = random.Random(3)
    indexes = sorted(d.glob("*.index"))
    timeindexes = sorted(d.glob("*.timeindex"))
    assert len(indexes) >= 3
    for i, f in enumerate(indexes):
        if i % 2 == 0:
            f.unlink()
        else:
            f.write_bytes(rng.randbytes(f.stat().st_size or 24))
    for i, f in enumerate(timeindexes):
        if i % 2 == 0:
            f.write_bytes(rng.randbytes(36))
        else:
            f.unlink()
    b.start()
    assert "rebuilding" in b.log_text() or all(p.exists() for p in indexes)
    assert lookups() == before
    for o, r in reads_before.items():
        assert fetch(b.port, topic_name, {0: o})[0] == r, f"fetch at {o} differs after the index rebuild"
    assert all(p.exists() for p in indexes + timeindexes), "index files were not rebuilt"


def test_a_partition_whose_log_cannot_be_opened_is_offline(broker_factory, topic_name):
    """A partition whose log fails to open at start (here: its segment file is a directory;
    on a real disk, an I/O error while recovery reads it) is offline: Produce, Fetch and
    ListOffsets earliest/latest answer KAFKA_STORAGE_ERROR, not UNKNOWN_TOPIC_OR_PARTITION
    (which makes clients drop their metadata) nor offsets it cannot serve; the other
    partition of the topic serves."""
    from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse

    from test_kafka_answers import Conn

    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 2)
    produce_values(b, topic_name, 10, 2)
    b.kill()
    seg = segment_files(b, topic_name, 1)[0]
    seg.unlink()
    seg.mkdir()
    b.start()
    L = ListOffsetsRequest
    for ts in (-1, -2):
        req = L(replica_id=-1, isolation_level=0, topics=[L.ListOffsetsTopic(name=topic_name, partitions=[
            L.ListOffsetsTopic.ListOffsetsPartition(partition_index=p, current_leader_epoch=-1, timestamp=ts)
            for p in (0, 1)])])
        with Conn(b.port) as c:
            r = c.call(req, ListOffsetsResponse, 7)
        got = {p.partition_index: (p.error_code, p.offset) for p in r.topics[0].partitions}
        assert got[0] == (0, 10 if ts == -1 else 0), got
        assert got[1][0] == KAFKA_STORAGE_ERROR, f"ListOffsets({ts}) of the offline partition: {got[1]}"
    import socket
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.settimeout(10)
        assert produce(s, topic_name, 1, record_batch([b"x"]), 1)[0] == KAFKA_STORAGE_ERROR
        assert produce(s, topic_name, 0, record_batch([b"x"]), 2) == (0, 10)
    assert fetch(b.port, topic_name, {1: 0})[1][0] == KAFKA_STORAGE_ERROR
    assert "cannot open partition log" in b.log_text()


def _mount_tmpfs(path: Path, opts: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root and "
                    f"CAP_SYS_ADMIN")


def _umount(path: Path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.timeout(120)
def test_full_disk(broker_factory, topic_name):
    b = broker_factory("log.segment.bytes=1048576", "log.index.size.max.bytes=4096", start=False)
    _mount_tmpfs(b.data_dir, "size=8m")
    try:
        b.start()
        ck_create_topic(b.bootstrap, topic_name, 1)
        acked = produce_values(b, topic_name, 300, 1)
        seg = segment_files(b, topic_name, 0)[-1]
        # Fill the disk.
        filler = b.data_dir / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        size_before = seg.stat().st_size
        # A produce now fails with KAFKA_STORAGE_ERROR (librdkafka's delivery report)...
        from confluent_kafka import KafkaError
        p = ck_producer(b.bootstrap, acks="all", retries=0, message_timeout_ms=10000)
        reports = []
        p.produce(topic_name, value=b"F" * 30000, partition=0, on_delivery=lambda e, m: reports.append(e))
        p.flush(20)
        assert len(reports) == 1 and reports[0] is not None, reports
        assert reports[0].code() == KafkaError.KAFKA_STORAGE_ERROR, reports[0]
        # ... and over the raw protocol, on one connection, twice.
        import socket
        with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
            s.settimeout(10)
            for corr in (1, 2):
                err, _ = produce(s, topic_name, 0, record_batch([b"G" * 30000]), corr)
                assert err == KAFKA_STORAGE_ERROR, err
        # Nothing was damaged: the partial write was rolled back, in memory and on disk.
        assert seg.stat().st_size == size_before, (seg.stat().st_size, size_before)
        err, hw, _ = fetch(b.port, topic_name, {0: 0})[0]
        assert (err, hw) == (0, 300)
        assert b.running()
        # Space returns: service resumes at the right offset.
        filler.unlink()
        offsets = []
        p.produce(topic_name, value=b"after-space-returned", partition=0,
                  on_delivery=lambda e, m: offsets.append((e, m.offset())))
        assert p.flush(30) == 0 and offsets == [(None, 300)], offsets
        acked[(0, 300)] = b"after-space-returned"
        # Every acknowledged record is intact after a restart.
        b.restart()
        got = ck_read_partitions(b.bootstrap, topic_name, [0])
        assert_dense(got)
        fail_unless({(0, r.offset): r.value for r in got[0]} == acked,
                    "acknowledged records differ after the full disk and a restart")
        assert "panicked" not in b.log_text()
    finally:
        b.cleanup()
        _umount(b.data_dir)


def _run_refused(b, data_dir: Path) -> subprocess.CompletedProcess:
    b.data_dir = data_dir
    return subprocess.run(b.argv(), capture_output=True, text=True, timeout=30)


def test_unwritable_data_dir_is_refused(broker_factory, tmp_path):
    b = broker_factory(start=False)
    # A path under a regular file cannot be created, even by root.
    (tmp_path / "a-file").write_text("x")
    r = _run_refused(b, tmp_path / "a-file" / "data")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert str(tmp_path / "a-file" / "data") in out and "data directory" in out, out
    assert "panicked" not in out
    # A read-only file system: the directory exists but cannot be written.
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "size=1m,ro")
    try:
        r = _run_refused(b, ro)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert str(ro) in out and "not writable" in out, out
        assert "panicked" not in out
    finally:
        _umount(ro)
