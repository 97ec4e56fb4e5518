"""Apache Kafka's own Java client (kafka-clients 3.9.1): admin createTopics /
describeTopics / listOffsets, a default-config (idempotent, acks=all) producer
per codec with keys and headers, and a group-less assign()/seekToBeginning()
consumer. The Java program checks every record and prints a JSON summary."""
import json
import subprocess

import pytest

from e2e_util import E2E_DIR
from e2e_util import java_program as compile_java

JAVA_SRC = E2E_DIR / "java" / "StrataE2E.java"
N = 20_000
PARTS = 3

pytestmark = pytest.mark.java


@pytest.fixture(scope="session")
def java_program(tmp_path_factory):
    return compile_java("3", JAVA_SRC, tmp_path_factory.mktemp("java-classes"), heap="512m")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_java_client(broker, topic_name, java_program, codec):
    try:
        r = subprocess.run(java_program + [broker.bootstrap, topic_name, codec, str(N)],
                           capture_output=True, text=True, timeout=200)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java client hung; stderr tail:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (
        f"java client exited {r.returncode}\nstdout:\n{r.stdout[-2000:]}\nstderr:\n{r.stderr[-6000:]}")
    res = json.loads(lines[-1])
    assert res["created"] is True
    d = res["describe"]
    assert d["name"] == topic_name and d["internal"] is False
    assert d["topic_id"] not in ("AAAAAAAAAAAAAAAAAAAAAA", "None"), f"zero topic id: {d}"
    assert sorted(p["partition"] for p in d["partitions"]) == [0, 1, 2], d
    assert all(p["leader"] == 1 and p["replicas"] == 1 and p["isr"] == 1 for p in d["partitions"]), d
    per = {p: len(range(p, N, PARTS)) for p in range(PARTS)}
    assert res["list_offsets"] == {str(p): {"earliest": 0, "latest": per[p], "ts0": 0}
                                   for p in range(PARTS)}, res["list_offsets"]
    assert res["mismatches"] == [], res["mismatches"]
    assert res["produced"] == N and res["consumed"] == N, (res["produced"], res["consumed"])
    # Everything is identical after a graceful restart.
    broker.restart(graceful=True)
    r = subprocess.run(java_program + [broker.bootstrap, topic_name, codec, str(N), "consume"],
                       capture_output=True, text=True, timeout=200)
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"java re-read failed\nstderr:\n{r.stderr[-4000:]}"
    again = json.loads(lines[-1])
    assert again["mismatches"] == [] and again["consumed"] == N, (again["consumed"], again["mismatches"])
