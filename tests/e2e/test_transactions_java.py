"""Transactions with Apache Kafka's Java client, kafka-clients 3.9.1 (first protocol) and 4.1.1
(transactions V2, since Strata finalizes transaction.version 2): tests/e2e/java/StrataTxnE2E.java
commits, aborts, gets fenced (with a transaction open and idle), abandons a transaction for a new
producer with the same transactional.id to abort, leaves one open when the broker is killed, and
reads both topics back with read_committed and read_uncommitted consumers;
tests/e2e/java/StrataTxnVersion.java checks which protocol each client chose and
sendOffsetsToTransaction.

Every value is "<tag>|<topic>|<partition>|<i>"; the tags are described in the Java file:
committed c1 c3 c5 c6 c7 (and r1 r2 after the restart), aborted after being flushed a2 (abort),
z1 (fenced while open), o7 (abandoned), p9 (open when the broker was killed), and z2 z3 sent by
fenced producers, which the broker must reject."""
from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter

import pytest

from e2e_util import E2E_DIR
from e2e_util import java_program as compile_java

pytestmark = pytest.mark.java

JAVA_SRC = E2E_DIR / "java" / "StrataTxnE2E.java"
PARTS = 3
N = 4  # records per partition per transaction (StrataTxnE2E.N)

COMMITTED = ("c1", "c3", "c5", "c6", "c7")
ABORTED_IN_LOG = ("a2", "z1", "o7")  # written, then aborted: read_uncommitted sees them
FENCED = ("z2", "z3")  # sent by a fenced producer: must never reach the log
FENCING_ERRORS = ("org.apache.kafka.common.errors.ProducerFencedException",
                  "org.apache.kafka.common.errors.InvalidProducerEpochException")


def run_java(program, broker, prefix, mode):
    try:
        r = subprocess.run(program + [broker.bootstrap, prefix, mode], capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"StrataTxnE2E {mode} hung; stderr tail:\n{err[-6000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, (f"java exited {r.returncode} without RESULT\nstdout:\n{r.stdout[-2000:]}\n"
                   f"stderr:\n{r.stderr[-6000:]}")
    res = json.loads(lines[-1])
    assert "error" not in res, (
        f"StrataTxnE2E {mode} failed at stage {res['stage']}: {res['type']}: {res['error']} "
        f"{res.get('error_detail')}\nexceptions: {res['exceptions']}\nstages: {res['stages']}\n"
        f"stderr:\n{r.stderr[-8000:]}")
    assert r.returncode == 0, f"java exited {r.returncode}\nstderr:\n{r.stderr[-4000:]}"
    res["stderr"] = r.stderr
    return res


def values_of(sent, tags):
    return [v for t in tags for v in sent[t]]


def check_read(res, sent, committed, aborted_in_log, never):
    """read_committed: exactly `committed`, each once; read_uncommitted: exactly committed +
    aborted_in_log, each once; nothing of `never` anywhere; both consumers reached the end
    offsets, and with no transaction open the last stable offsets are the high watermarks."""
    rc, ru = res["read_committed"], res["read_uncommitted"]
    for name, r in (("read_committed", rc), ("read_uncommitted", ru)):
        assert not r["misplaced"], f"{name}: records in the wrong place: {r['misplaced'][:20]}"
        assert r["complete"], (f"{name} did not reach the end offsets {r['end_offsets']} "
                               f"(positions {r['positions']})")
        dup = [v for v, n in Counter(r["values"]).items() if n > 1]
        assert not dup, f"{name} saw values more than once: {dup[:20]}"
        seen_never = sorted(set(r["values"]) & set(values_of(sent, never)))
        assert not seen_never, f"{name} saw values a fenced producer sent: {seen_never[:20]}"

    want_c = sorted(values_of(sent, committed))
    got_c = sorted(rc["values"])
    assert got_c == want_c, (
        f"read_committed: missing {sorted(set(want_c) - set(got_c))[:20]}, "
        f"unexpected {sorted(set(got_c) - set(want_c))[:20]} "
        f"(unexpected by tag: {Counter(v.split('|')[0] for v in set(got_c) - set(want_c))})")
    want_u = sorted(values_of(sent, committed + aborted_in_log))
    got_u = sorted(ru["values"])
    assert got_u == want_u, (
        f"read_uncommitted: missing {sorted(set(want_u) - set(got_u))[:20]}, "
        f"unexpected {sorted(set(got_u) - set(want_u))[:20]}")
    # no transaction is open: LSO == HW on every partition
    assert rc["end_offsets"] == ru["end_offsets"], (
        f"read_committed end offsets (LSO) {rc['end_offsets']} != read_uncommitted (HW) {ru['end_offsets']}")
    assert rc["end_offsets_after"] == ru["end_offsets_after"] == ru["end_offsets"], (
        rc["end_offsets_after"], ru["end_offsets_after"])
    # each partition holds its data records plus exactly one control record (commit or
    # abort marker) per transaction that wrote to it, and nothing else
    for tp, end in ru["end_offsets"].items():
        here = [v for v in ru["values"] if f"{v.split('|')[1]}-{v.split('|')[2]}" == tp]
        txns = sorted({v.split("|")[0] for v in here})
        assert end == len(here) + len(txns), (
            f"{tp}: high watermark {end} != {len(here)} data records + {len(txns)} markers "
            f"(transactions {txns})")


def fencing_error(exc):
    """The fencing exception class in exc's type or cause chain (clients may wrap it)."""
    if exc is None:
        return None
    for name in [exc["type"]] + [c.split(":")[0] for c in exc["causes"]]:
        if name in FENCING_ERRORS:
            return name
    return None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("client", ["3", "4"])
def test_java_transactions(broker, tmp_path, client):
    program = compile_java(client, JAVA_SRC, tmp_path / "java")
    prefix = f"txn-j{client}-{uuid.uuid4().hex[:6]}"

    res = run_java(program, broker, prefix, "run")
    sent = res["sent"]
    for tag in COMMITTED + ABORTED_IN_LOG + FENCED:
        assert len(sent[tag]) == N * PARTS * (1 if tag == "z1" else 2), (tag, len(sent[tag]))
    exc = res["exceptions"]
    report = (f"exceptions: {json.dumps(exc, indent=1)}\nzombie sends: {res['zombie_send_errors'][:12]}")

    # the zombies: commitTransaction() failed with a fencing error (recorded which)
    assert "fence_idle_begin" not in exc, f"beginTransaction() of the idle zombie threw\n{report}"
    for name in ("fence_open", "fence_idle"):
        assert exc.get(f"{name}_commit") is not None, f"{name}: the fenced producer committed\n{report}"
        assert fencing_error(exc[f"{name}_commit"]) or (
            fencing_error(exc.get(f"{name}_abort"))), f"{name}: not a fencing error\n{report}"
    # every record a zombie sent failed (none was acknowledged). (A record's callback may run
    # twice: once from send() when the producer already knows it is fenced, once when its
    # batch, already appended, is aborted. That is the client's doing.)
    zs = res["zombie_send_errors"]
    acked = [e for e in zs if " ACKED " in e]
    outcomes = Counter(e.split(" ", 1)[0] for e in zs)
    assert not acked, f"the broker acknowledged records of a fenced producer: {acked[:12]}\n{report}"
    assert set(outcomes) == set(sent["z2"] + sent["z3"]), (
        f"records of fenced producers without a failure: "
        f"{sorted(set(sent['z2'] + sent['z3']) - set(outcomes))[:12]}\n{report}")

    check_read(res, sent, COMMITTED, ABORTED_IN_LOG, FENCED)

    # ---- crash with a transaction (p9) open; then both ids are usable again
    broker.restart(graceful=False)
    after = run_java(program, broker, prefix, "after-restart")
    sent.update(after["sent"])
    check_read(after, sent, COMMITTED + ("r1", "r2"), ABORTED_IN_LOG + ("p9",), FENCED)
    print(f"kafka-clients {client}: fenced with a transaction open: "
          f"{exc['fence_open_commit']['type']} (abort: {(exc.get('fence_open_abort') or {}).get('type')}); "
          f"fenced idle: {exc['fence_idle_commit']['type']}; stage times {res['elapsed_ms']} / "
          f"{after['elapsed_ms']}")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("client,epoch", [("3", 0), ("4", 3)])
def test_the_transaction_protocol_each_client_chooses(broker, tmp_path, client, epoch):
    """kafka-clients 3.9 keeps its epoch across commits (the first protocol); 4.x sees
    transaction.version 2 finalized and bumps it at every commit (KIP-890 part 2: EndTxn v5,
    Produce v12 and TxnOffsetCommit v5 add the partitions). DescribeTransactions,
    ListTransactions and the group's committed offset agree."""
    program = compile_java(client, E2E_DIR / "java" / "StrataTxnVersion.java", tmp_path, heap="256m")
    topic = f"tv-{client}-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(program + [broker.bootstrap, f"{topic}-txn", topic], capture_output=True, text=True,
                       timeout=150)
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"java exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    res = json.loads(lines[-1])
    assert res == {"state": "CompleteCommit", "epoch": epoch, "listed": True, "committed": 3,
                   "producer_shown": True}, res
