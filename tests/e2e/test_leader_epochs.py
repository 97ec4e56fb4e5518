"""Leader epochs (issue #14's foundation; KIP-101, KIP-279, KIP-320) with the real binary:

- every batch the leader appends is stamped with the partition's leader epoch, on disk;
- OffsetForLeaderEpoch (key 23) answers Kafka's `endOffsetFor`: an epoch ends where the next
  begins, the newest at the log end, across restarts (which start new epochs) and crashes;
- ListOffsets v4+ reports the epoch of the offset it answers;
- a `current_leader_epoch` older than the partition's is FENCED_LEADER_EPOCH, a newer one
  UNKNOWN_LEADER_EPOCH (OffsetForLeaderEpoch, ListOffsets, Fetch);
- the Java consumer commits offsets with their leader epoch and, after the broker restarted
  into a new epoch, validates its position with OffsetForLeaderEpoch and goes on without a
  truncation (`auto.offset.reset=none`, so a wrong answer would fail it).
"""
from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path

from e2e_util import Reader, _request, ck_create_topic, ck_producer, java_program

FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH = 74, 75


def produce(bootstrap: str, topic: str, n: int, tag: str):
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 0})
    for i in range(n):
        p.produce(topic, key=f"{tag}{i}", value=f"{tag}-{i}", partition=0)
        p.flush(10)  # one batch per record: each carries the epoch it was appended in
    assert p.flush(30) == 0


def stored_epochs(broker, topic: str) -> list[tuple[int, int]]:
    """(base offset, partitionLeaderEpoch) of every batch in the partition's segment files."""
    out = []
    for f in sorted((broker.data_dir / f"{topic}-0").glob("*.log")):
        data, pos = f.read_bytes(), 0
        while pos + 61 <= len(data):
            base, length, epoch = struct.unpack_from(">qii", data, pos)
            if length <= 0:
                break
            out.append((base, epoch))
            pos += 12 + length
    return out


def offset_for_leader_epoch(port: int, topic: str, epoch: int, current: int = -1) -> tuple[int, int, int]:
    """OffsetForLeaderEpoch v3 for partition 0: (error, leader_epoch, end_offset)."""
    t = topic.encode()
    body = struct.pack(">ii", -1, 1) + struct.pack(">h", len(t)) + t + struct.pack(">iiii", 1, 0, current, epoch)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        r = Reader(_request(s, 23, 3, 11, body))
    r.take(">i")  # throttle
    assert r.take(">i") == 1 and r.string() == topic and r.take(">i") == 1
    error, partition, leader_epoch, end = r.take(">h"), r.take(">i"), r.take(">i"), r.take(">q")
    assert partition == 0
    return error, leader_epoch, end


def list_offsets(port: int, topic: str, timestamp: int, current: int = -1) -> tuple[int, int, int]:
    """ListOffsets v4 for partition 0: (error, offset, leader_epoch)."""
    t = topic.encode()
    body = (struct.pack(">ibi", -1, 0, 1) + struct.pack(">h", len(t)) + t
            + struct.pack(">iiiq", 1, 0, current, timestamp))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        r = Reader(_request(s, 2, 4, 12, body))
    r.take(">i")
    assert r.take(">i") == 1 and r.string() == topic and r.take(">i") == 1
    assert r.take(">i") == 0
    error, _ts, offset, epoch = r.take(">h"), r.take(">q"), r.take(">q"), r.take(">i")
    return error, offset, epoch


def test_batches_carry_the_leader_epoch_and_offset_for_leader_epoch_follows_kafka(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, 1)
    produce(broker.bootstrap, topic_name, 4, "a")
    first = stored_epochs(broker, topic_name)
    e1 = first[0][1]
    assert e1 >= 0 and all(e == e1 for _, e in first), first
    assert offset_for_leader_epoch(broker.port, topic_name, e1) == (0, e1, 4)
    assert list_offsets(broker.port, topic_name, -1) == (0, 4, e1)

    # A restart is a new leader epoch (controlled shutdown, then registration): new batches
    # carry it, and the old epoch ends where the new one starts.
    broker.restart()
    produce(broker.bootstrap, topic_name, 3, "b")
    after = stored_epochs(broker, topic_name)
    e2 = after[-1][1]
    assert e2 > e1 and [e for _, e in after[4:]] == [e2] * 3, after
    assert offset_for_leader_epoch(broker.port, topic_name, e1) == (0, e1, 4)
    assert offset_for_leader_epoch(broker.port, topic_name, e2) == (0, e2, 7)
    # An epoch between them that appended nothing: the one below, ending at the next start.
    assert offset_for_leader_epoch(broker.port, topic_name, e2 - 1) == (0, e1, 4)
    # An epoch newer than any: -1/-1, no error (Kafka's UNDEFINED_EPOCH_OFFSET).
    assert offset_for_leader_epoch(broker.port, topic_name, e2 + 10) == (0, -1, -1)
    assert list_offsets(broker.port, topic_name, -2) == (0, 0, e1), "earliest: the epoch of offset 0"
    assert list_offsets(broker.port, topic_name, -1) == (0, 7, e2)

    # KIP-320 fencing: the client's view of the epoch is checked.
    assert offset_for_leader_epoch(broker.port, topic_name, e1, current=e1)[0] == FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(broker.port, topic_name, e1, current=e2 + 3)[0] == UNKNOWN_LEADER_EPOCH
    assert offset_for_leader_epoch(broker.port, topic_name, e1, current=e2) == (0, e1, 4)
    assert list_offsets(broker.port, topic_name, -1, current=e1)[0] == FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(broker.port, "no-such-topic", e1)[0] == 3  # UNKNOWN_TOPIC_OR_PARTITION

    # Kafka's checkpoint file, and the same answers after a crash.
    text = (broker.data_dir / f"{topic_name}-0" / "leader-epoch-checkpoint").read_text().split("\n")
    assert text[0] == "0" and f"{e1} 0" in text and f"{e2} 4" in text, text
    # A kill faster than the session timeout is a new epoch too (KRaft fences a re-registering
    # broker): what the old incarnation served is validated, never reused at the same epoch.
    broker.restart(graceful=False)
    assert offset_for_leader_epoch(broker.port, topic_name, e1) == (0, e1, 4)
    produce(broker.bootstrap, topic_name, 2, "c")
    e3 = stored_epochs(broker, topic_name)[-1][1]
    assert e3 > e2, (e2, e3)
    assert offset_for_leader_epoch(broker.port, topic_name, e2) == (0, e2, 7)
    assert not broker.panic_lines()


def test_the_java_consumer_validates_its_position_after_a_new_leader_epoch(broker_factory, topic_name, tmp_path):
    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 1)
    produce(b.bootstrap, topic_name, 20, "a")
    program = java_program("4", Path(__file__).parent / "java" / "StrataEpochE2E.java", tmp_path / "java")

    def run(mode: str, n: int) -> dict:
        r = subprocess.run(program + [mode, b.bootstrap, topic_name, "epoch-group", str(n)],
                           capture_output=True, text=True, timeout=120)
        lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, r.stdout + r.stderr[-3000:]
        return json.loads(lines[-1][7:])

    first = run("consume", 20)
    assert first["consumed"] == 20 and first["committed"] == 20 and first["committed_epoch"] >= 0, first
    b.restart()
    produce(b.bootstrap, topic_name, 5, "b")
    resumed = run("resume", 5)
    assert resumed.get("error") is None, resumed
    assert resumed["first_offset"] == 20 and resumed["consumed"] == 5, resumed
    assert resumed["epoch_of_new_records"] > first["committed_epoch"], (first, resumed)
