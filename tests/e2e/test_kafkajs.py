"""kafkajs 2.2.4 (node): admin createTopics/fetchTopicMetadata/fetchTopicOffsets and
produce with none + gzip (verified with a group-free confluent-kafka consumer), and the
kafkajs group consumer (node/kafkajs_group.js): consume, commit, resume."""
import json
import shutil
import subprocess
import uuid

import pytest

from e2e_util import E2E_DIR, ck_read_partitions

NODE_DIR = E2E_DIR / "node"
NODE = shutil.which("node")
N = 2000
PARTS = 3

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(NODE is None, reason="node not installed"),
]


def run_node_script(script, args, timeout):
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("tests/e2e/node/node_modules missing: run scripts/install-test-deps.sh")
    cmd = [NODE, str(NODE_DIR / script)] + [str(a) for a in args]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kafkajs {args} hung for {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-4000:]}")
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    lines = [l[7:] for l in out.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT from {script} {args} (exit {r.returncode}); stdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}"
    res = json.loads(lines[-1])
    assert r.returncode == 0 and "error" not in res, (
        f"{script} {args} failed (exit {r.returncode}): {res.get('error')}\nstderr:\n{err[-4000:]}")
    return res


def run_node(mode, broker, topic, count, timeout=90):
    return run_node_script("kafkajs_e2e.js", [mode, broker.bootstrap, topic, count], timeout)


def expected_record(i, codec):
    return (f"k-{codec}-{i}".encode(), f"v-{codec}-{i}-".encode() + b"z" * (i % 40),
            {"i": str(i).encode(), "codec": codec.encode()})


def test_kafkajs_admin_and_produce(broker, topic_name):
    res = run_node("produce", broker, topic_name, N)
    assert res["created"] is True
    assert sorted(p["id"] for p in res["partitions"]) == [0, 1, 2], res["partitions"]
    assert all(p["leader"] == 1 and p["err"] == 0 for p in res["partitions"]), res["partitions"]
    for s in res["sends"]:
        assert all(r["errorCode"] == 0 for r in s["results"]), s["codec"]
    counts = {p: len([i for i in range(N) if i % PARTS == p]) * 2 for p in range(PARTS)}
    offsets = {int(o["partition"]): o for o in res["offsets"]}
    assert {p: (int(o["low"]), int(o["high"])) for p, o in offsets.items()} == {
        p: (0, counts[p]) for p in range(PARTS)}, f"fetchTopicOffsets: {res['offsets']}"

    # verify content with a group-free consumer (kafkajs can't consume without groups)
    got = ck_read_partitions(broker.bootstrap, topic_name, range(PARTS), timeout=60)
    for p in range(PARTS):
        exp = [expected_record(i, c) for c in ("none", "gzip") for i in range(N) if i % PARTS == p]
        assert [r.offset for r in got[p]] == list(range(len(exp)))
        for r, (k, v, h) in zip(got[p], exp):
            assert (r.key, r.value, dict(r.headers)) == (k, v, h), f"p{p}@{r.offset}"


@pytest.mark.timeout(150)
def test_kafkajs_group_consumer_commit_and_resume(broker_factory, topic_name):
    """kafkajs consumer in a group (autoCommit off): the first run processes 250 of the
    600 records (none + gzip batches) and commits the positions after them; a second run
    in the same group starts every partition at its committed offset; together they read
    every record exactly once, with the produced keys, values and headers."""
    broker = broker_factory("group.initial.rebalance.delay.ms=0")
    n = 300
    run_node("produce", broker, topic_name, n)
    total, first_n = 2 * n, 250
    group = f"kafkajs-{uuid.uuid4().hex[:8]}"
    r1 = run_node_script("kafkajs_group.js", [broker.bootstrap, topic_name, group, first_n], 70)
    r2 = run_node_script("kafkajs_group.js", [broker.bootstrap, topic_name, group, total - first_n], 70)

    committed = {int(p): o for p, o in r1["committed"].items()}
    positions = {}
    for r in r1["records"]:
        positions[r["partition"]] = r["offset"] + 1
    assert len(r1["records"]) == first_n and committed == positions, (committed, positions)
    assert {int(p): o for p, o in r1["fetched"].items()} == {
        p: committed.get(p, -1) for p in range(PARTS)}, f"fetchOffsets {r1['fetched']}"
    starts = {}
    for r in r2["records"]:
        starts.setdefault(r["partition"], r["offset"])
    per_part = {p: len([i for i in range(n) if i % PARTS == p]) * 2 for p in range(PARTS)}
    assert starts == {p: committed.get(p, 0) for p in range(PARTS) if committed.get(p, 0) < per_part[p]}, (
        f"second run started at {starts}, committed {committed}")
    assert {int(p): o for p, o in r2["fetched"].items()} == per_part, f"final offsets {r2['fetched']}"

    got = {(r["partition"], r["offset"]): r for r in r1["records"] + r2["records"]}
    assert len(got) == len(r1["records"]) + len(r2["records"]) == total, "duplicates or missing"
    for p in range(PARTS):
        exp = [expected_record(i, c) for c in ("none", "gzip") for i in range(n) if i % PARTS == p]
        for off, (k, v, h) in enumerate(exp):
            r = got.get((p, off))
            assert r is not None, f"p{p}@{off} never consumed"
            assert (r["key"].encode(), r["value"].encode(), {a: b.encode() for a, b in r["headers"].items()}) == (k, v, h), f"p{p}@{off}"
