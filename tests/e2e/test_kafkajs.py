"""kafkajs 2.2.4 (node): admin createTopics/fetchTopicMetadata/fetchTopicOffsets and
produce with none + gzip. kafkajs consumers always use a consumer group, which
Strata does not implement yet, so the records are verified with a group-free
confluent-kafka consumer and the kafkajs consumer is an xfail."""
import json
import shutil
import subprocess

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


def run_node(mode, broker, topic, count, timeout=90):
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("tests/e2e/node/node_modules missing: run scripts/install-test-deps.sh")
    cmd = [NODE, str(NODE_DIR / "kafkajs_e2e.js"), mode, broker.bootstrap, topic, str(count)]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kafkajs {mode} hung for {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-4000:]}")
    out = r.stdout.decode(errors="replace")
    err = r.stderr.decode(errors="replace")
    lines = [l[7:] for l in out.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT from kafkajs {mode} (exit {r.returncode}); stdout:\n{out[-2000:]}\nstderr:\n{err[-4000:]}"
    res = json.loads(lines[-1])
    assert r.returncode == 0 and "error" not in res, (
        f"kafkajs {mode} failed (exit {r.returncode}): {res.get('error')}\nstderr:\n{err[-4000:]}")
    return res


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


@pytest.mark.xfail(reason="consumer groups: issue 4", strict=False)
def test_kafkajs_group_consumer(broker, topic_name):
    run_node("produce", broker, topic_name, 300)
    res = run_node("consume", broker, topic_name, 600, timeout=60)
    assert res["consumed"] == 600
    got = sorted((r["key"].encode(), r["value"].encode()) for r in res["records"])
    want = sorted(expected_record(i, c)[:2] for c in ("none", "gzip") for i in range(300))
    assert got == want
