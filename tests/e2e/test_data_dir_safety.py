"""Data-directory safety (issue #11, points 1-3), with the real binary: a second broker on a
directory in use is refused and names the holder; a missing, foreign or damaged metadata log
makes the broker refuse to start instead of starting a new cluster and deleting every
partition directory it no longer knows; another --node-id on an existing directory is refused.
In every refused case the data on disk is untouched, and once the cause is undone the broker
serves every record again."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Broker
from e2e_util import ck_create_topic, ck_producer, ck_read_partitions

METADATA_DIR = "__cluster_metadata-0"


def refused_start(argv: list[str], cwd: Path, timeout: float = 30) -> str:
    """Runs `strata server` expecting it to refuse to start: returns its stderr."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert r.returncode != 0, f"strata started where it must refuse (exit {r.returncode}):\n{r.stderr[-3000:]}"
    return r.stderr


def snapshot(data_dir: Path) -> dict[str, int]:
    """Every file under the data directory but the metadata log and lock, with its size."""
    return {str(p.relative_to(data_dir)): p.stat().st_size for p in sorted(data_dir.rglob("*"))
            if p.is_file() and METADATA_DIR not in p.parts and p.name != ".lock"}


@pytest.fixture
def loaded(broker_factory, topic_name):
    """A broker with a 3-partition topic of 300 records and a committed group offset, stopped."""
    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 3)
    p = ck_producer(b.bootstrap)
    for i in range(300):
        p.produce(topic_name, value=f"v{i}".encode(), partition=i % 3)
    assert p.flush(30) == 0
    b.stop()
    return b


def assert_serves_everything(b: Broker, topic: str):
    b.start()
    got = ck_read_partitions(b.bootstrap, topic, range(3), expected={0: 100, 1: 100, 2: 100})
    assert sorted(r.value for recs in got.values() for r in recs) == sorted(f"v{i}".encode() for i in range(300))


def test_a_second_broker_on_the_same_directory_is_refused(broker_factory, topic_name, tmp_path):
    first = broker_factory()
    ck_create_topic(first.bootstrap, topic_name, 1)
    second = Broker(tmp_path / "second", name="second")
    second.data_dir = first.data_dir
    err = refused_start(second.argv(), second.workdir)
    assert "in use by another process" in err and f"process {first.proc.pid}" in err, err
    assert first.running(), "the first broker must keep serving"
    # Once the first stops, the directory is free again.
    first.stop()
    second.start()


@pytest.mark.parametrize("damage", ["missing", "foreign", "flipped-byte"])
def test_a_bad_metadata_log_never_deletes_data(loaded, broker_factory, topic_name, tmp_path, damage):
    b = loaded
    meta = b.data_dir / METADATA_DIR
    backup = tmp_path / "metadata-backup"
    shutil.copytree(meta, backup)
    before = snapshot(b.data_dir)
    assert any(k.startswith("__consumer_offsets-") for k in before) and any(k.startswith(topic_name) for k in before)
    if damage == "missing":
        shutil.rmtree(meta)
        expect = "missing or empty"
    elif damage == "foreign":
        other = broker_factory(name="other")
        other.stop()
        shutil.rmtree(meta)
        shutil.copytree(other.data_dir / METADATA_DIR, meta)
        expect = "belongs to cluster"
    else:
        log = meta / "raft.wal"
        data = bytearray(log.read_bytes())
        data[len(data) // 2] ^= 0x20
        log.write_bytes(bytes(data))
        expect = "is damaged at byte"
    err = refused_start(b.argv(), b.workdir)
    assert expect in err, f"{damage}: {err[-2000:]}"
    assert snapshot(b.data_dir) == before, f"{damage}: the broker changed the data while refusing to start"
    # (Refusing, the broker did not even create a missing metadata directory.)
    shutil.rmtree(meta, ignore_errors=True)
    shutil.copytree(backup, meta)
    assert_serves_everything(b, topic_name)


def test_another_node_id_on_an_existing_directory_is_refused(loaded, topic_name):
    b = loaded
    argv = b.argv()
    argv[argv.index("--node-id") + 1] = "2"
    err = refused_start(argv, b.workdir)
    assert "node.id 2 does not match the stored 1" in err, err
    assert (b.data_dir / "meta.properties").read_text().count("node.id=1") == 1
    assert_serves_everything(b, topic_name)


def test_meta_properties_is_written_once_and_kept(broker):
    text = (broker.data_dir / "meta.properties").read_text()
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert props["version"] == "1" and props["node.id"] == "1", text
    assert len(props["cluster.id"]) == 22 and len(props["directory.id"]) == 22, text
    broker.restart()
    assert (broker.data_dir / "meta.properties").read_text() == text


def disk_usage(root: Path) -> int:
    """Bytes of disk the files under `root` occupy (allocated blocks, as `du` counts them)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def test_an_idle_broker_uses_a_few_mb_of_disk(broker_factory, topic_name):
    """Disk use follows data (issue #11 point 11): the indexes of an active segment are
    allocated as they fill, not preallocated to segment.index.bytes (10 MiB each, twice per
    partition: ~1 GiB for the 50 partitions of __consumer_offsets alone). A fresh broker with
    its offsets partitions and a 12-partition topic occupies a few MB, and after a clean
    restart (indexes trimmed, producer snapshots written) still does."""
    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 12)
    p = ck_producer(b.bootstrap)
    for i in range(100):
        p.produce(topic_name, value=b"x" * 100, partition=i % 12)
    assert p.flush(30) == 0
    partitions = [d for d in b.data_dir.iterdir() if d.is_dir() and d.name.startswith("__consumer_offsets-")]
    assert len(partitions) == 50, f"expected the 50 offsets partitions, found {len(partitions)}"
    used = disk_usage(b.data_dir)
    print(f"idle broker with 62 partitions: {used / 2**20:.1f} MiB on disk")
    assert used < 8 << 20, f"an idle broker occupies {used / 2**20:.1f} MiB"
    b.stop()
    b.start()
    used = disk_usage(b.data_dir)
    assert used < 8 << 20, f"after a restart the idle broker occupies {used / 2**20:.1f} MiB"
