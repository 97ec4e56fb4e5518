"""kcat 1.7.1 from Debian, linking librdkafka 2.0.2: old enough to trip over
tagged-field encoding mistakes (e.g. "Read underflow")."""
import json
import os
import shutil
import subprocess

import pytest

from e2e_util import ck_create_topic, is_ci

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.kcat


@pytest.fixture(autouse=True)
def _need_kcat():
    if KCAT is None:
        if is_ci() or os.geteuid() == 0:
            # as root (CI) scripts/install-test-deps.sh installs it: missing = broken setup
            pytest.fail("kcat not found although running as root/CI: run scripts/install-test-deps.sh")
        pytest.skip("kcat not installed: scripts/install-test-deps.sh needs root for apt-get")

PARTS = 3


def kcat(broker, *args, input=None, timeout=60):
    cmd = [KCAT or "kcat", "-b", broker.bootstrap, "-m", "10", *args]
    try:
        r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not exit within {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-3000:]}")
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}; stderr:\n"
                             f"{r.stderr.decode(errors='replace')[-3000:]}")
    return r


def test_kcat_metadata(broker, topic_name):
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    r = kcat(broker, "-L", "-J", "-t", topic_name)
    md = json.loads(r.stdout)
    assert [b["id"] for b in md["brokers"]] == [1], md["brokers"]
    assert md["brokers"][0]["name"] == broker.bootstrap
    (t,) = md["topics"]
    assert t["topic"] == topic_name and "error" not in t, t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    assert all(p["leader"] == 1 for p in t["partitions"]), t
    # plain -L (all topics) works too, and mentions our topic
    r = kcat(broker, "-L")
    assert f'topic "{topic_name}" with 3 partitions' in r.stdout.decode(), r.stdout.decode()


KCAT_RECORDS = 20_000


def kcat_read_all(broker, topic):
    # -e: exit at end of every partition (needs correct empty/EOF fetch handling)
    r = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-J", timeout=120)
    got = {p: [] for p in range(PARTS)}
    for line in r.stdout.decode().splitlines():
        if line.strip():
            m = json.loads(line)
            got[m["partition"]].append((m["offset"], m["key"], m["payload"], m.get("headers")))
    return got


@pytest.mark.timeout(240)
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_consume(broker, topic_name, codec):
    """20k keyed records with headers per codec over 3 partitions, read back in
    order with dense offsets, and identical after a graceful restart."""
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    per = KCAT_RECORDS // PARTS + 1
    sent = {}
    for p in range(PARTS):
        lines = [f"key{p}-{i}\tvalue {p} {i} " + "x" * (i % 50) for i in range(per)]
        sent[p] = lines
        kcat(broker, "-P", "-t", topic_name, "-p", str(p), "-K", "\t", "-z", codec,
             "-H", f"origin=kcat-{codec}", "-H", f"partition={p}",
             "-X", "acks=all", input=("\n".join(lines) + "\n").encode(), timeout=120)
    got = kcat_read_all(broker, topic_name)
    for p in range(PARTS):
        exp = [(i, l.split("\t", 1)[0], l.split("\t", 1)[1], ["origin", f"kcat-{codec}", "partition", str(p)])
               for i, l in enumerate(sent[p])]
        assert got[p] == exp, f"partition {p}: first mismatch " + repr(
            next(((a, b) for a, b in zip(got[p], exp) if a != b), (len(got[p]), len(exp))))
    broker.restart(graceful=True)
    assert kcat_read_all(broker, topic_name) == got


def test_kcat_consume_empty_partition_exits(broker, topic_name):
    """An empty topic: kcat -C -e must reach EOF on every partition and exit."""
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    r = kcat(broker, "-C", "-t", topic_name, "-o", "beginning", "-e", timeout=30)
    assert r.stdout == b""
