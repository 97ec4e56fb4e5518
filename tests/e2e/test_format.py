"""Formatting a node for a cluster (issue #13, point 1), with the real binary, as Kafka's
`kafka-storage random-uuid` / `kafka-storage format` and KRaft's start-up rules: a node with
`controller.quorum.voters` must be formatted before its first start and refuses an unformatted
directory; `strata format` takes the same config flags as `strata server`, writes
meta.properties (cluster id, node id, directory id) and the bootstrap metadata, refuses a
directory formatted already (for another cluster even with --ignore-formatted); the formatted
node serves its cluster id; process.roles and the voters are checked at start."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import Broker, strata_bin
from e2e_util import ck_admin, free_port

ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


def strata(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(strata_bin()), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def meta_properties(d: Path) -> dict[str, str]:
    out = {}
    for line in (d / "meta.properties").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def test_random_uuid_prints_a_new_cluster_id_each_time(tmp_path):
    ids = {strata("random-uuid", cwd=tmp_path).stdout.strip() for _ in range(3)}
    assert len(ids) == 3 and all(ID_RE.match(i) for i in ids), ids


def test_a_quorum_node_is_formatted_once_then_serves_its_cluster(tmp_path):
    port, controller_port = free_port(), free_port()
    voters = f"controller.quorum.voters=1@127.0.0.1:{controller_port}"
    data = tmp_path / "node" / "data"
    cluster_id = strata("random-uuid", cwd=tmp_path).stdout.strip()

    # Unformatted, a node with voters refuses to start (it must not make up a cluster).
    r = strata("server", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--set", voters, cwd=tmp_path)
    assert r.returncode != 0 and "are not formatted" in r.stderr and "strata format" in r.stderr, r.stderr[-2000:]
    assert not (data / "meta.properties").exists()

    # A bad cluster id is refused; a good one formats the directory.
    r = strata("format", "--cluster-id", "not-an-id", "--data-dir", str(data), "--set", voters, cwd=tmp_path)
    assert r.returncode != 0 and "URL-safe base64" in r.stderr, r.stderr
    r = strata("format", "--cluster-id", cluster_id, "--data-dir", str(data), "--node-id", "1", "--set", voters,
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"cluster {cluster_id}" in r.stdout
    meta = meta_properties(data)
    assert meta["cluster.id"] == cluster_id and meta["node.id"] == "1" and ID_RE.match(meta["directory.id"]), meta
    assert (data / "__cluster_metadata-0" / "raft.snapshot").stat().st_size > 0

    # Formatting again is refused; --ignore-formatted leaves it as it is; another cluster never.
    r = strata("format", "--cluster-id", cluster_id, "--data-dir", str(data), "--set", voters, cwd=tmp_path)
    assert r.returncode != 0 and "already formatted" in r.stderr, r.stderr
    r = strata("format", "-t", cluster_id, "-g", "--data-dir", str(data), "--set", voters, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert meta_properties(data) == meta
    other = strata("random-uuid", cwd=tmp_path).stdout.strip()
    r = strata("format", "-t", other, "-g", "--data-dir", str(data), "--set", voters, cwd=tmp_path)
    assert r.returncode != 0 and f"already formatted for cluster {cluster_id}" in r.stderr, r.stderr

    # Formatted, the node starts and clients see its cluster id.
    b = Broker(tmp_path / "node", sets=[voters], name="node1")
    b.port = port
    try:
        b.start()
        md = ck_admin(b.bootstrap).list_topics(timeout=10)
        assert md.cluster_id == cluster_id
        assert not b.panic_lines()
    finally:
        b.cleanup()


def test_roles_and_voters_are_checked_at_start(tmp_path):
    port = free_port()
    base = ["server", "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}"]
    r = strata(*base, "--set", "process.roles=broker", cwd=tmp_path)
    assert r.returncode != 0 and "needs controller.quorum.voters" in r.stderr, r.stderr
    r = strata(*base, "--set", "process.roles=leader", cwd=tmp_path)
    assert r.returncode != 0 and "'process.roles'" in r.stderr and "unknown role" in r.stderr, r.stderr
    r = strata(*base, "--set", "controller.quorum.voters=2@127.0.0.1:1", cwd=tmp_path)
    assert r.returncode != 0 and "node.id 1 has the controller role but is not one of the voters" in r.stderr, r.stderr
    r = strata(*base, "--set", "controller.quorum.voters=1@127.0.0.1", cwd=tmp_path)
    assert r.returncode != 0 and "ID@HOST:PORT" in r.stderr, r.stderr
    # A broker-only node may not be a voter (Kafka's rule; the roles themselves run in
    # test_cluster_roles.py).
    voters = "controller.quorum.voters=1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3"
    r = strata(*base, "--set", voters, "--set", "process.roles=broker", cwd=tmp_path)
    assert r.returncode != 0 and "is a voter, but process.roles is broker only" in r.stderr, r.stderr
