"""Operator-facing configuration and logging (issue #11, point 13), with the real binary:
`log.dirs` is a comma-separated list of directories that partitions are spread over; values
that would panic later, unsupported listener protocols and a 0.0.0.0 listener without an
advertised address are refused at start naming the key; SIGHUP stops the broker cleanly; an
invalid STRATA_LOG warns and falls back to info; crash recovery logs one INFO line per
partition and no warnings; the start-up log shows the version, the config file and the
non-default settings; admin changes each leave one INFO line."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import strata_bin
from e2e_util import ck_admin, ck_create_topic, ck_producer, ck_read_partitions, free_port, wait_until

METADATA_DIR = "__cluster_metadata-0"


def refused_start(argv: list[str], cwd: Path, timeout: float = 15) -> str:
    """Runs `strata server` expecting it to refuse to start: returns its stderr."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"strata started where it must refuse (still running after {timeout}s)") from e
    assert r.returncode != 0, f"strata started where it must refuse (exit {r.returncode}):\n{r.stderr[-3000:]}"
    return r.stderr


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int):
    p = ck_producer(bootstrap)
    for i in range(partitions * per_partition):
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(30) == 0


def partition_dirs(d: Path, topic: str) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name.rsplit("-", 1)[0] == topic)


def log_since_last_start(b) -> str:
    return b.log_text().rsplit("----- [e2e] start #", 1)[-1]


# ------------------------------------------------------------------ log.dirs


def test_log_dirs_is_a_list_that_partitions_spread_over(broker_factory, tmp_path, topic_name):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    b = broker_factory(f"log.dirs={d1}, {d2}")
    ck_create_topic(b.bootstrap, topic_name, 4)
    produce(b.bootstrap, topic_name, 4, 10)

    # Two directories (not one named "d1, d2"), each with its own lock and identity; the
    # metadata log in the first; the partitions spread evenly.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("d")) == ["d1", "d2"]
    props = [dict(l.split("=", 1) for l in (d / "meta.properties").read_text().splitlines()
                  if "=" in l and not l.startswith("#")) for d in (d1, d2)]
    assert props[0]["cluster.id"] == props[1]["cluster.id"] and props[0]["node.id"] == props[1]["node.id"] == "1"
    assert props[0]["directory.id"] != props[1]["directory.id"]
    assert (d1 / ".lock").exists() and (d2 / ".lock").exists()
    assert (d1 / METADATA_DIR).is_dir() and not (d2 / METADATA_DIR).exists()
    assert len(partition_dirs(d1, topic_name)) == 2 and len(partition_dirs(d2, topic_name)) == 2
    assert len(partition_dirs(d1, "__consumer_offsets")) == len(partition_dirs(d2, "__consumer_offsets")) == 25

    # DescribeLogDirs (kafka-log-dirs.sh / Admin.describeLogDirs) names both directories
    # with the partitions each holds and their sizes, and the volume's bytes (v4).
    from kafka import KafkaAdminClient
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap, client_id="e2e-log-dirs")
    try:
        described = kp.describe_log_dirs()
    finally:
        kp.close()
    text = repr(described)
    assert str(d1) in text and str(d2) in text and topic_name in text, text[:2000]
    sizes = raw_log_dir_sizes(b.port, topic_name)
    on_disk = {d: {int(n.rsplit("-", 1)[1]) for n in partition_dirs(d, topic_name)} for d in (d1, d2)}
    assert {d: set(parts) for d, (parts, _, _) in sizes.items()} == {str(d): on_disk[d] for d in (d1, d2)}, sizes
    for d, (parts, total, usable) in sizes.items():
        assert all(size > 0 for size in parts.values()) and total >= usable > 0, sizes

    # A partition moved to the other directory while the broker is stopped is found there.
    b.stop()
    moved = partition_dirs(d1, topic_name)[0]
    shutil.move(str(d1 / moved), str(d2 / moved))
    b.start()
    got = ck_read_partitions(b.bootstrap, topic_name, range(4), expected={p: 10 for p in range(4)})
    assert sorted(r.value for recs in got.values() for r in recs) == sorted(f"v{i}".encode() for i in range(40))
    assert not (d1 / moved).exists(), "the moved partition must not be created again in its old directory"

    # The metadata log stays where it is: with the directories listed the other way round the
    # broker refuses to start, saying where the metadata log is.
    b.stop()
    b.sets = [f"log.dirs={d2},{d1}"]
    err = refused_start(b.argv(), b.workdir)
    assert f"the metadata log ({METADATA_DIR}) is in {d1}" in err, err
    # With metadata.log.dir pointing at it, that order works.
    b.sets = [f"log.dirs={d2},{d1}", f"metadata.log.dir={d1}"]
    b.start()
    ck_read_partitions(b.bootstrap, topic_name, range(4), expected={p: 10 for p in range(4)})


def test_an_unusable_or_missing_log_dir_fails_startup_naming_it(broker_factory, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad = blocker / "data"
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    b = broker_factory(f"log.dirs={d1},{bad}", start=False)
    err = refused_start(b.argv(), b.workdir)
    assert f"cannot create the data directory {bad}" in err, err

    # Once the node has data, a directory that is gone (a disk not mounted) is refused rather
    # than created empty, which would start its partitions empty elsewhere.
    b.sets = [f"log.dirs={d1},{d2}"]
    b.start()
    b.stop()
    d2.rename(tmp_path / "d2-unmounted")
    err = refused_start(b.argv(), b.workdir)
    assert f"the data directory {d2} does not exist" in err, err
    assert not d2.exists()
    (tmp_path / "d2-unmounted").rename(d2)
    b.start()


# ------------------------------------------------------------------ refused values


def server_argv(tmp_path: Path, *args: str) -> list[str]:
    return [str(strata_bin()), "server", "--data-dir", str(tmp_path / "data"), *args]


@pytest.mark.parametrize("args, says", [
    (["--set", "queued.max.request.bytes=9223372036854775807"],
     "'queued.max.request.bytes': must be at most 2305843009213693951"),
    (["--listen", "SSL://127.0.0.1:{port}"],
     "listener SSL: a TLS listener needs ssl.keystore.location"),
    (["--set", "listeners=SASL_PLAINTEXT://127.0.0.1:{port}", "--set", "sasl.enabled.mechanisms=PLAIN"],
     "listener SASL_PLAINTEXT: PLAIN is enabled but the listener has no users"),
    (["--set", "listeners=TLS://127.0.0.1:{port}"],
     "'listeners': no security protocol is defined for listener TLS"),
    (["--listen", "0.0.0.0:{port}"],
     "'listeners': binding 0.0.0.0 needs advertised.listeners"),
    (["--listen", "127.0.0.1:{port}", "--advertise", "0.0.0.0:{port}"],
     "'advertised.listeners': advertised.listeners cannot use the nonroutable meta-address 0.0.0.0"),
], ids=["queued-bytes-beyond-a-semaphore", "ssl-without-keystore", "plain-without-users", "unmapped-listener-name",
        "wildcard-without-advertised", "advertised-wildcard"])
def test_bad_values_are_refused_at_start_naming_the_key(tmp_path, args, says):
    port = free_port()
    err = refused_start(server_argv(tmp_path, *[a.format(port=port) for a in args]), tmp_path)
    assert says in err, err


def test_the_longest_intervals_are_accepted_and_never_panic(broker_factory, topic_name):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    never = "9223372036854775807"  # Kafka's Long.MAX_VALUE: "never"
    b = broker_factory(f"offsets.retention.check.interval.ms={never}", f"log.retention.check.interval.ms={never}",
                       f"connections.max.idle.ms={never}")
    admin = ck_create_topic(b.bootstrap, topic_name, 1)
    produce(b.bootstrap, topic_name, 1, 5)
    req = ConsumerGroupTopicPartitions(f"{topic_name}-g", [TopicPartition(topic_name, 0, 3)])
    for f in admin.alter_consumer_group_offsets([req]).values():
        f.result(10)
    b.stop()
    assert not b.panic_lines(), b.log_tail()


# ------------------------------------------------------------------ signals and logging


def test_sighup_shuts_down_cleanly(broker_factory, topic_name):
    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 1)
    produce(b.bootstrap, topic_name, 1, 5)
    b.proc.send_signal(signal.SIGHUP)
    rc = b.proc.wait(20)
    assert rc == 0, f"exit {rc} after SIGHUP\n{b.log_tail()}"
    text = b.log_text()
    assert "SIGHUP" in text and "logs flushed and closed" in text, b.log_tail()
    assert (b.data_dir / f"{topic_name}-0" / ".clean_shutdown").exists()


@pytest.mark.parametrize("value", ["verbose", "warn,strata=loud"])
def test_an_invalid_strata_log_warns_and_falls_back_to_info(broker_factory, monkeypatch, value):
    monkeypatch.setenv("STRATA_LOG", value)
    b = broker_factory()
    assert re.search(r"WARN .*invalid STRATA_LOG", b.log_text()), b.log_tail()
    # "strata is serving" follows the listeners' start, which the readiness probe may beat.
    wait_until(lambda: re.search(r"INFO .*strata is serving", b.log_text()), 10,
               message=lambda: f"no INFO 'strata is serving' line\n{b.log_tail()}")


def test_crash_recovery_logs_one_info_line_per_partition_and_no_warnings(broker_factory, topic_name):
    b = broker_factory()
    ck_create_topic(b.bootstrap, topic_name, 3)
    produce(b.bootstrap, topic_name, 3, 20)
    b.kill()
    # A write the crash tore: the start of a batch header without the rest.
    torn = b.data_dir / f"{topic_name}-1" / "00000000000000000000.log"
    with open(torn, "ab") as f:
        f.write(bytes(20))
    b.start()
    text = log_since_last_start(b)
    warnings = [l for l in text.splitlines() if " WARN " in l or " ERROR " in l]
    assert not warnings, "\n".join(warnings)
    for p in range(3):
        lines = [l for l in text.splitlines()
                 if "recovered the log after an unclean shutdown" in l and f"{topic_name}-{p}" in l]
        assert len(lines) == 1 and " INFO " in lines[0], (p, lines)
        assert "log_end=20" in lines[0], lines[0]
        assert ("truncated_bytes=20" in lines[0]) == (p == 1), lines[0]
    got = ck_read_partitions(b.bootstrap, topic_name, range(3), expected={p: 20 for p in range(3)})
    assert all(len(v) == 20 for v in got.values())


def test_the_startup_log_shows_version_config_file_and_non_default_settings(broker_factory, tmp_path):
    config = tmp_path / "strata.toml"
    config.write_text('"num.partitions" = 3\n"log.segment.bytes" = 1073741824\n')
    version = subprocess.run([str(strata_bin()), "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    b = broker_factory("log.retention.hours=1", start=False)
    argv = b.argv
    b.argv = lambda: argv() + ["--config", str(config)]
    b.start()
    (line,) = [l for l in b.log_text().splitlines() if "starting strata" in l]
    assert " INFO " in line and version in line and str(config) in line, line
    settings = re.search(r"non_default=(.*)$", line).group(1)
    for shown in ["num.partitions=3", "log.retention.hours=1", f"log.dirs={b.data_dir}"]:
        assert shown in settings, line
    # Set, but to the default: not shown.
    assert "log.segment.bytes" not in settings and "node.id" not in settings, line


# ------------------------------------------------------------------ admin changes


def test_admin_changes_each_leave_one_info_line(broker_factory, topic_name):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                       ResourceType)
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition

    b = broker_factory()
    admin = ck_create_topic(b.bootstrap, topic_name, 2)
    produce(b.bootstrap, topic_name, 2, 10)
    group = f"{topic_name}-g"
    seen = len(b.log_text().splitlines())

    def one_new_line(message: str, *fields: str) -> str:
        """Waits for exactly one new INFO line with `message`, containing every field."""
        nonlocal seen

        def found():
            lines = b.log_text().splitlines()
            new = [l for l in lines[seen:] if message in l]
            return new if new else None

        new = wait_until(found, 10, 0.05, lambda: f"no INFO line '{message}'\n{b.log_tail()}")
        assert len(new) == 1 and " INFO " in new[0], new
        for f in fields:
            assert f in new[0], (f, new[0])
        seen = len(b.log_text().splitlines())
        return new[0]

    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(10)
    one_new_line("configs altered", f"topic {topic_name}", "retention.ms=3600000")

    admin.create_partitions([NewPartitions(topic_name, 3)])[topic_name].result(10)
    one_new_line("partitions added", f"topic={topic_name}", "partitions=3")

    for f in admin.delete_records([TopicPartition(topic_name, 0, 4)]).values():
        f.result(10)
    one_new_line("records deleted", f"topic={topic_name}", "partition=0", "log_start=4")

    def alter_offsets(offset: int):
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, 0, offset)])
        for f in admin.alter_consumer_group_offsets([req]).values():
            f.result(10)

    alter_offsets(7)
    one_new_line("committed offsets set outside a group generation", f"group={group}", f"{topic_name}-0: 7")
    alter_offsets(5)
    one_new_line("committed offsets set outside a group generation", f"{topic_name}-0: 7 -> 5")
    # Committing the same offset again changes nothing and logs nothing (as a consumer that
    # assigns its own partitions re-committing its positions).
    mark = seen
    alter_offsets(5)

    kadmin = KafkaAdminClient(bootstrap_servers=b.bootstrap, client_id="e2e-admin")
    try:
        kadmin.delete_group_offsets(group, [KTopicPartition(topic_name, 0)])
        one_new_line("committed offsets deleted", f"group={group}", f"{topic_name}-0")
    finally:
        kadmin.close()
    assert not [l for l in b.log_text().splitlines()[mark:] if "outside a group generation" in l]

    alter_offsets(3)
    one_new_line("committed offsets set outside a group generation", f"{topic_name}-0: 3")
    for f in admin.delete_consumer_groups([group]).values():
        f.result(10)
    one_new_line("group deleted", f"group={group}")


def raw_log_dir_sizes(port: int, topic: str) -> dict[str, tuple[dict[int, int], int, int]]:
    """DescribeLogDirs v4 (flexible) for `topic`'s partitions 0-3: {log_dir: ({partition:
    size}, total_bytes, usable_bytes)}."""
    import struct

    from e2e_util import compact_str, flexible_request, uvarint

    body = uvarint(2) + compact_str(topic) + uvarint(5) + struct.pack(">iiii", 0, 1, 2, 3) + b"\x00\x00"
    r = flexible_request(port, 35, 4, body)
    r.take(">i")  # throttle
    assert r.take(">h") == 0
    out = {}
    for _ in range(r.array_len()):
        assert r.take(">h") == 0
        log_dir = r.compact_string()
        parts = {}
        for _ in range(r.array_len()):
            r.compact_string()
            for _ in range(r.array_len()):
                index, size, _lag, _future = r.take(">i"), r.take(">q"), r.take(">q"), r.take(">b")
                r.skip_tags()
                parts[index] = size
            r.skip_tags()
        total, usable = r.take(">q"), r.take(">q")
        r.skip_tags()
        out[log_dir] = (parts, total, usable)
    return out
