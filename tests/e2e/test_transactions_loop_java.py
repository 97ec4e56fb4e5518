"""A consume-transform-produce (exactly-once) loop with Apache Kafka's Java client,
kafka-clients 3.9.1 (first transaction protocol) and 4.1.1 (transactions V2):
tests/e2e/java/StrataTxnLoop.java fills an input topic with unique values (idempotent producer),
then a read_committed KafkaConsumer of a group and a transactional KafkaProducer copy every
record ("copy-"+value, same partition number) to an output topic, committing the consumed
offsets with sendOffsetsToTransaction(offsets, consumer.groupMetadata()) in the same
transaction. Every third batch is sent, flushed, its offsets added to the transaction, and then
aborted; the consumer rewinds to the group's committed offsets and copies the batch again.
Small fetches (max.partition.fetch.bytes) make many batches span two or three partitions.

What must hold: read_committed sees each input value copied exactly once and nothing else; after
every abort the group's committed offsets are those of the transactions committed so far; the
group's final committed offsets (Admin listConsumerGroupOffsets) equal the input's end offsets, so the
aborted transactions' offsets were discarded and the committed ones kept; and the aborted copies
are in the log (read_uncommitted sees more records)."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from e2e_util import E2E_DIR
from e2e_util import java_program as compile_java

pytestmark = pytest.mark.java

JAVA_SRC = E2E_DIR / "java" / "StrataTxnLoop.java"
PARTS = 3
N = 3000  # input records
LOOP_DEADLINE_MS = 40000
MAX_POLL_RECORDS = 100
MIN_COMMITTED = 5


def run_loop(program, broker, prefix):
    args = [broker.bootstrap, prefix, str(N), str(LOOP_DEADLINE_MS), str(MAX_POLL_RECORDS)]
    try:
        r = subprocess.run(program + args, capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"StrataTxnLoop hung; stderr tail:\n{err[-6000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, (f"java exited {r.returncode} without RESULT\nstdout:\n{r.stdout[-2000:]}\n"
                   f"stderr:\n{r.stderr[-6000:]}")
    res = json.loads(lines[-1])
    assert "error" not in res, (
        f"StrataTxnLoop failed at stage {res['stage']}: {res['type']}: {res['error']} "
        f"{res.get('error_detail')}\ncommitted {res.get('committed_txns')} aborted {res.get('aborted_txns')} "
        f"txn log {res.get('txn_log')}\nstages: {res['stages']}\nstderr:\n{r.stderr[-8000:]}")
    assert r.returncode == 0, f"java exited {r.returncode}\nstderr:\n{r.stderr[-4000:]}"
    res["stderr"] = r.stderr
    return res


@pytest.mark.timeout(150)
@pytest.mark.parametrize("client", ["3", "4"])
def test_java_consume_transform_produce_loop(broker, tmp_path, client):
    program = compile_java(client, JAVA_SRC, tmp_path / "java")
    prefix = f"ctp-j{client}-{uuid.uuid4().hex[:6]}"
    res = run_loop(program, broker, prefix)

    in_topic, out_topic = f"{prefix}-in", f"{prefix}-out"
    input_ends = res["input_end_offsets"]
    summary = (f"committed {res['committed_txns']} aborted {res['aborted_txns']} batches {res['batches']} "
               f"loop_done {res['loop_done']}; txn log {res['txn_log']}; rewinds {res['rewinds'][:10]}; "
               f"group offsets (consumer) {res['group_offsets_consumer']}; stage times {res['elapsed_ms']}")
    assert input_ends == {f"{in_topic}-{p}": N // PARTS for p in range(PARTS)}, (
        f"input end offsets {input_ends} (expected {N // PARTS} per partition)")

    # the loop copied everything before its deadline
    assert res["loop_done"], f"the loop did not finish within {LOOP_DEADLINE_MS} ms: {summary}"

    # read_committed: each input value copied exactly once, nothing else, in the right partition
    rc, ru = res["read_committed"], res["read_uncommitted"]
    for name, r in (("read_committed", rc), ("read_uncommitted", ru)):
        assert r["complete"], (f"{name} did not reach the end offsets {r['end_offsets']} "
                               f"(positions {r['positions']})\n{summary}")
        assert not r["unexpected"], f"{name}: values that are no input's copy: {r['unexpected'][:20]}"
        assert not r["misplaced"], f"{name}: records in the wrong place: {r['misplaced'][:20]}"
    assert rc["missing_count"] == 0, (
        f"read_committed is missing {rc['missing_count']} copies, e.g. {rc['missing'][:20]}\n{summary}")
    assert rc["duplicate_count"] == 0, (
        f"read_committed saw {rc['duplicate_count']} values more than once, e.g. {rc['duplicates'][:20]}\n"
        f"{summary}")
    assert rc["values_copied"] == N and rc["count"] == N and rc["distinct"] == N, (
        f"read_committed: {rc['count']} records, {rc['distinct']} distinct, {rc['values_copied']} copies "
        f"of inputs (expected {N} of each)\n{summary}")

    # transactions: some aborted (and retried), several committed
    assert res["aborted_txns"] >= 1, f"no transaction was aborted\n{summary}"
    assert res["committed_txns"] >= MIN_COMMITTED, f"fewer than {MIN_COMMITTED} commits\n{summary}"
    # (the loop's small fetches make some batches span partitions: offsets of several
    # partitions committed in one transaction)
    assert res["multi_partition_commits"] >= 1, f"no transaction committed offsets of 2+ partitions\n{summary}"
    # at every rewind, after an abort, the group's committed offsets were exactly those of the
    # transactions committed so far (the aborted transaction's offsets were discarded)
    assert not res["rewind_mismatches"], (
        f"consumer.committed() after an abort: {res['rewind_mismatches'][:10]}\n{summary}")

    # the group's committed offsets are the input's end offsets (the aborted transactions'
    # offsets were discarded, the committed ones applied)
    assert res["group_offsets"] == input_ends, (
        f"group {res['group']} committed offsets (Admin listConsumerGroupOffsets) {res['group_offsets']} "
        f"!= input end offsets {input_ends}\n{summary}")
    assert res["group_offsets_consumer"] == input_ends, (
        f"consumer.committed() {res['group_offsets_consumer']} != input end offsets {input_ends}")

    # the aborted copies are in the log: read_uncommitted sees them, read_committed does not
    assert res["aborted_records_acked"] > 0, f"no aborted copy was acknowledged\n{summary}"
    assert ru["count"] > rc["count"], (
        f"read_uncommitted saw {ru['count']} records, read_committed {rc['count']}: the aborted copies "
        f"({res['aborted_records_acked']} acknowledged) are not in the log\n{summary}")
    assert ru["count"] == rc["count"] + res["aborted_records_acked"], (
        f"read_uncommitted saw {ru['count']} records != {rc['count']} committed + "
        f"{res['aborted_records_acked']} aborted copies acknowledged\n{summary}")
    assert ru["missing_count"] == 0, f"read_uncommitted is missing copies: {ru['missing'][:20]}"

    # no transaction is open: the output's last stable offsets are its high watermarks
    admin_ends = res["output_end_offsets_admin"]
    assert admin_ends["latest_committed"] == admin_ends["latest"] == ru["end_offsets"] == rc["end_offsets"], (
        f"output end offsets: LSO (admin) {admin_ends['latest_committed']}, HW (admin) {admin_ends['latest']}, "
        f"read_committed consumer {rc['end_offsets']}, read_uncommitted consumer {ru['end_offsets']}")
    print(f"kafka-clients {client}: {summary}")
