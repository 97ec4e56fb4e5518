"""`strata`'s admin subcommands (crates/cli, issue #17) against a real three-node cluster.

One module-scoped cluster (`cluster`): three `strata server` nodes, each broker and controller,
with a PLAINTEXT listener (the CLI's and confluent-kafka's, principal User:ANONYMOUS, a super
user), a SASL_PLAINTEXT listener with SCRAM-SHA-256/512 (users the CLI creates log in there),
`StandardAuthorizer` and `super.users=User:ANONYMOUS`. Every command runs as a subprocess with
`--format json`; its output is parsed and checked, most of it against what confluent-kafka
(librdkafka) sees independently.

What is checked:
- topic: create (partitions, replication factor 3, --config, --replica-assignment,
  --validate-only), an existing name (exit 1, TOPIC_ALREADY_EXISTS) and --if-not-exists, list
  (--exclude-internal), describe (every partition on the three brokers, leader in the ISR, the
  topic's dynamic configs, --under-replicated-partitions), alter --config / --delete-config (seen
  by `config describe` and confluent-kafka's describe_configs), add-partitions and alter
  --partitions (describe and confluent-kafka see the new partitions), delete (then describe is
  UNKNOWN_TOPIC_OR_PARTITION, --if-exists, a re-create right after works);
- config: describe / alter / --delete-config of a topic (--all shows defaults with their
  source), of one broker and of the broker defaults (the dynamic broker configs Strata allows:
  the replication throttles), refusals with Kafka's error names;
- produce (--value, --key, --header, stdin lines with --key-separator, --input-format json,
  --partition, --batch-records, --acks 1, every compression codec; keyed records land where
  Kafka's murmur2 partitioner puts them) and consume (--from-beginning --until-end: partitions,
  offsets, keys, values, headers and timestamps equal what confluent-kafka reads; --offset N
  --partition P, --max-messages, --from-timestamp as epoch ms and as a date-time,
  --timeout-ms, --value-format hex/base64, the text format's --print-* fields,
  --isolation-level read_committed leaves out an aborted transaction, --offset past the log end
  shows nothing older); repeated header keys (legal in Kafka) survive both ways;
- group: a confluent-kafka group consumes and commits part of a topic; while its member is
  live, list shows it Stable and describe shows the member with its assignment, per partition
  log_end_offset == the high watermark (confluent-kafka's get_watermark_offsets), current_offset
  == the committed offset (confluent-kafka's committed()) and lag == their difference;
  reset-offsets, delete and delete-offsets are refused while it is active (exit 1); once it
  left: reset-offsets dry run (nothing changes), --to-offset (clamped to the log),
  --shift-by, --to-datetime (== confluent-kafka's offsets_for_times), --to-latest, --all-topics,
  then --execute --to-earliest, after which a real confluent-kafka consumer of that group with
  auto.offset.reset=latest re-reads every record from offset 0; delete-offsets, delete (list no
  longer shows it; deleting again is GROUP_ID_NOT_FOUND); a KIP-848 (group.protocol=consumer)
  group is described too;
- acl: create (--topic, --group, --cluster, --resource-pattern-type prefixed, --deny-principal
  with --deny-host, --producer --idempotent, --consumer), list with filters (topic, principal,
  match, operation), delete, all checked through `acl list --format json`; and that they take
  effect: a SCRAM user sees no topic and may not produce until `acl create` grants it;
- user: create (SCRAM-SHA-512 and -256, iterations), list, delete one mechanism and all; the
  created user logs in with confluent-kafka and with the CLI's own --command-config, and no
  longer after the delete;
- quota: alter / describe / --delete-config for a user, a user + client id and the user
  defaults;
- cluster: describe (the three brokers and their listener's ports, the cluster id `strata
  format` was given, the active controller), quorum (three voters, the leader, high watermark),
  log-dirs (every replica of a produced topic, sizes > 0 and equal on the three brokers);
- completion: `strata completion bash` is a script that completes `strata to` to `topic`;
- exit codes: 3 when the bootstrap is unreachable, 2 for bad arguments (also when the cluster
  is down), 1 for a Kafka refusal (named in stderr) and for a wrong SASL password; writing to a
  closed pipe does not panic.

Config, ACL, quota and SCRAM changes go through the controller and reach each broker's metadata a
moment after the CLI returns (as in Kafka), so reads after such a write poll (`settles`); every
other answer is checked at once.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from conftest import strata_bin
from e2e_util import ck_admin, ck_conf, ck_consumer, ck_producer, ck_read_partitions, free_port, wait_until
from test_cluster import Cluster

CLI_TIMEOUT = 60.0
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

EXTRA = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS",
    "sasl.enabled.mechanisms": ",".join(MECHANISMS),
    "group.initial.rebalance.delay.ms": "0",
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "300",
}


# ------------------------------------------------------------------ the cluster and the CLI

def add_sasl_listener(node) -> None:
    """Adds a SASL_PLAINTEXT listener to a not yet started node's .properties (node.sasl_port)."""
    node.sasl_port = free_port()
    props = dict(line.split("=", 1) for line in node.config.read_text().splitlines() if "=" in line)
    sasl = f"SASL_PLAINTEXT://127.0.0.1:{node.sasl_port}"
    props["listeners"] = props["listeners"].replace(",CONTROLLER://", f",{sasl},CONTROLLER://")
    props["advertised.listeners"] += f",{sasl}"
    node.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cli"), extra=EXTRA)
    for n in c.nodes:
        add_sasl_listener(n)
    c.sasl_bootstrap = ",".join(f"127.0.0.1:{n.sasl_port}" for n in c.nodes)
    try:
        c.start()
        for n in c.nodes:
            wait_until(lambda: sorted(ck_admin(n.bootstrap).list_topics(timeout=10).brokers) == [1, 2, 3], 30, 0.2,
                       message=f"{n.name} does not list the three brokers")
        yield c
    finally:
        c.cleanup()


@pytest.fixture(autouse=True)
def _cluster_logs(request, cluster):
    """The nodes' logs go with a failing test's report; no node may panic."""
    request.node._strata_brokers = cluster.nodes
    yield
    panics = [f"{n.name}: {line}" for n in cluster.nodes for line in n.panic_lines()]
    assert not panics, "node log contains 'panicked':\n" + "\n".join(panics)


class Cli:
    """`cli(*args, expect_rc=0)` runs `strata *args --bootstrap-server BOOTSTRAP`, asserts the exit
    code (stdout and stderr in the message) and that nothing panicked. It returns json.loads(stdout)
    for `--format json` (a list of the lines' documents with jsonl=True: `consume`), stdout
    otherwise, and the CompletedProcess when a failure was expected."""

    def __init__(self, bootstrap: str, nodes: list):
        self.bootstrap = bootstrap
        self.nodes = nodes  # the cluster's nodes, for helpers that ask each broker

    def __call__(self, *args, expect_rc: int = 0, input: str | None = None, jsonl: bool = False,
                 bootstrap: str | None = None):
        args = [str(a) for a in args]
        argv = [str(strata_bin()), *args, "--bootstrap-server", self.bootstrap if bootstrap is None else bootstrap]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        what = f"`strata {' '.join(args)}`"
        assert "panicked" not in r.stderr, f"{what} panicked:\n{r.stderr}"
        assert r.returncode == expect_rc, (f"{what} exited with {r.returncode}, expected {expect_rc}\n"
                                           f"--- stdout:\n{r.stdout}\n--- stderr:\n{r.stderr}")
        if expect_rc != 0:
            return r
        if "--format" in args and args[args.index("--format") + 1] == "json":
            try:
                if jsonl:
                    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
                return json.loads(r.stdout)
            except json.JSONDecodeError as e:
                raise AssertionError(f"{what}: stdout is not JSON ({e}):\n{r.stdout}\n--- stderr:\n{r.stderr}")
        return r.stdout

    def succeeds(self, *args, bootstrap: str | None = None) -> bool:
        """Whether `strata *args` exits 0 (for polling a change that must take effect)."""
        argv = [str(strata_bin()), *map(str, args), "--bootstrap-server",
                self.bootstrap if bootstrap is None else bootstrap]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert "panicked" not in r.stderr, r.stderr
        return r.returncode == 0


@pytest.fixture
def cli(cluster) -> Cli:
    return Cli(cluster.bootstrap, cluster.nodes)


def uid() -> str:
    return uuid.uuid4().hex[:8]


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(ms: int, zone: str = "") -> str:
    """Milliseconds since the epoch as YYYY-MM-DDTHH:MM:SS.sss (UTC) plus `zone`."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + zone


def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 (the Java producer's key hash)."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[4 * n4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h


def java_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_helper_matches_kafka():
    # Kafka's UtilsTest.testMurmur2 values, so the partitioning checks below compare against Java.
    for data, want in [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
                       (b"a-little-bit-longer-string", -1486304829),
                       (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107)]:
        assert murmur2(data) == want, data


def create_topic(cli: Cli, name: str, partitions: int = 3) -> dict:
    out = cli("topic", "create", name, "--partitions", partitions, "--replication-factor", 3, "--format", "json")
    assert (out["topic"], out["partitions"], out["replication_factor"], out["created"]) == \
        (name, partitions, 3, True), out
    on_every_broker(cli.nodes, name, partitions)
    return out


def on_every_broker(nodes: list, topic: str, partitions: int, timeout: float = 15.0):
    """Waits until each broker's Metadata shows the topic with a leader for every partition (the
    CLI waits for its bootstrap broker only; the others apply the change a moment later, as in
    Kafka)."""
    for n in nodes:
        def shown():
            t = ck_admin(n.bootstrap).list_topics(topic, timeout=10).topics.get(topic)
            return t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 for p in t.partitions.values())

        wait_until(shown, timeout, 0.05, message=f"{n.name} does not show {topic} with {partitions} partitions")


def ck_partitions(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """confluent-kafka's Metadata: partition -> (leader, sorted replicas, sorted ISR)."""
    md = ck_admin(bootstrap).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}


def settles(read, want, what: str, timeout: float = 15.0):
    """Polls read() until it equals `want`, else fails with its last answer. Config, ACL, quota and
    SCRAM changes are committed by the controller and each broker applies them to its metadata a
    moment later (as in Kafka), so a read right after the CLI's write may still see the old state."""
    last = {}

    def ok():
        last["v"] = read()
        return last["v"] == want

    wait_until(ok, timeout, 0.1, message=lambda: f"{what}: got {last.get('v')!r}, expected {want!r}")
    return last["v"]


def dynamic_configs(cli: Cli, *entity) -> dict[str, tuple[str, str]]:
    """`config describe ENTITY --format json` of one entity: name -> (value, source)."""
    out = cli("config", "describe", *entity, "--format", "json")
    assert len(out) == 1, out
    return {c["name"]: (c["value"], c["source"]) for c in out[0]["configs"]}


def produce_lines(cli: Cli, topic: str, lines: list[str], *args) -> dict:
    return cli("produce", topic, *args, "--format", "json", input="".join(f"{line}\n" for line in lines))


def consume_all(cli: Cli, topic: str, *args, bootstrap: str | None = None) -> list[dict]:
    return cli("consume", topic, "--from-beginning", "--until-end", *args, "--format", "json", jsonl=True,
               bootstrap=bootstrap)


def watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap)
    try:
        out = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert lo == 0, (p, lo)
            out[p] = hi
        return out
    finally:
        c.close()


def ck_committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets as confluent-kafka reads them (no offset: absent)."""
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap, **{"group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        c.close()


# ================================================================== topic

def test_topic_create_list_describe(cli, cluster):
    t = f"cli-topic-{uid()}"
    out = cli("topic", "create", t, "--partitions", 3, "--replication-factor", 3, "--config", "retention.ms=3600000",
              "--config", "cleanup.policy=delete,max.message.bytes=500000", "--format", "json")
    assert (out["topic"], out["partitions"], out["replication_factor"], out["created"]) == (t, 3, 3, True), out
    topic_id = out["topic_id"]
    assert topic_id and str(uuid.UUID(topic_id)) == topic_id, out
    # The CLI returns once its bootstrap broker knows the leaders: that one answers at once.
    ck = ck_partitions(cluster.nodes[0].bootstrap, t)
    on_every_broker(cluster.nodes, t, 3)
    assert sorted(ck) == [0, 1, 2] and all(replicas == [1, 2, 3] for _, replicas, _ in ck.values()), ck

    r = cli("topic", "create", t, "--partitions", 3, "--replication-factor", 3, expect_rc=1)
    assert "TOPIC_ALREADY_EXISTS" in r.stderr, r.stderr
    out = cli("topic", "create", t, "--partitions", 3, "--if-not-exists", "--format", "json")
    assert out["topic"] == t and out["created"] is False, out

    listed = {x["name"]: x for x in cli("topic", "list", "--format", "json")}
    assert listed[t] == {"name": t, "topic_id": topic_id, "partitions": 3, "replication_factor": 3,
                         "internal": False}, listed[t]
    assert set(ck_admin(cluster.bootstrap).list_topics(timeout=10).topics) == set(listed), listed.keys()
    external = cli("topic", "list", "--exclude-internal", "--format", "json")
    assert t in {x["name"] for x in external} and not [x for x in external if x["internal"]], external

    # Every ISR is full right after a create; poll in case a follower is a moment late.
    wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in ck_partitions(cluster.bootstrap, t).values()), 15,
               message="the ISRs did not fill")
    (d,) = cli("topic", "describe", t, "--format", "json")
    assert (d["name"], d["topic_id"], d["internal"], d["partition_count"], d["replication_factor"]) == \
        (t, topic_id, False, 3, 3), d
    assert d["configs"] == {"retention.ms": "3600000", "cleanup.policy": "delete", "max.message.bytes": "500000"}, d
    ck = ck_partitions(cluster.bootstrap, t)
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2], d
    for p in d["partitions"]:
        assert sorted(p["replicas"]) == [1, 2, 3] and sorted(p["isr"]) == [1, 2, 3], p
        assert p["leader"] in p["isr"] and p["offline_replicas"] == [] and p["leader_epoch"] >= 0, p
        assert p["leader"] == ck[p["partition"]][0], (p, ck)
    # Kafka's placement: partition p's first (preferred) replica is the broker at start + p, so three
    # partitions have three different ones, and a new topic's leader is its preferred replica.
    assert sorted(p["replicas"][0] for p in d["partitions"]) == [1, 2, 3], d["partitions"]
    assert all(p["leader"] == p["replicas"][0] for p in d["partitions"]), d["partitions"]

    # As kafka-topics.sh: only topics with such partitions are listed.
    healthy = cli("topic", "describe", t, "--under-replicated-partitions", "--format", "json")
    assert healthy == [], healthy
    healthy = cli("topic", "describe", t, "--unavailable-partitions", "--format", "json")
    assert healthy == [], healthy


def test_topic_replica_assignment_and_validate_only(cli, cluster):
    t = f"cli-assigned-{uid()}"
    out = cli("topic", "create", t, "--replica-assignment", "1:2,2:3,3:1", "--format", "json")
    assert (out["partitions"], out["replication_factor"], out["created"]) == (3, 2, True), out
    on_every_broker(cluster.nodes, t, 3)
    (d,) = cli("topic", "describe", t, "--format", "json")
    assert [p["replicas"] for p in d["partitions"]] == [[1, 2], [2, 3], [3, 1]], d
    assert d["replication_factor"] == 2
    assert {p: replicas for p, (_, replicas, _) in ck_partitions(cluster.bootstrap, t).items()} == \
        {0: [1, 2], 1: [2, 3], 2: [1, 3]}

    v = f"cli-validate-{uid()}"
    out = cli("topic", "create", v, "--partitions", 2, "--replication-factor", 3, "--validate-only", "--format", "json")
    assert (out["topic"], out["partitions"], out["replication_factor"], out["created"]) == (v, 2, 3, False), out
    r = cli("topic", "describe", v, expect_rc=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr


def test_topic_alter_configs(cli, cluster):
    from confluent_kafka.admin import ConfigResource
    t = f"cli-alter-{uid()}"
    cli("topic", "create", t, "--partitions", 1, "--replication-factor", 3, "--config", "retention.ms=3600000",
        "--config", "cleanup.policy=delete")
    on_every_broker(cluster.nodes, t, 1)
    out = cli("topic", "alter", t, "--config", "max.message.bytes=2000000", "--delete-config", "retention.ms",
              "--format", "json")
    assert out["topic"] == t and sorted(out["altered"]) == ["-retention.ms", "max.message.bytes=2000000"], out
    settles(lambda: dynamic_configs(cli, "--topic", t), {
        "cleanup.policy": ("delete", "DYNAMIC_TOPIC_CONFIG"),
        "max.message.bytes": ("2000000", "DYNAMIC_TOPIC_CONFIG")}, "config describe --topic")
    (d,) = cli("topic", "describe", t, "--format", "json")
    assert d["configs"] == {"cleanup.policy": "delete", "max.message.bytes": "2000000"}, d

    # --all: the removed key is back at its default, with that source.
    (every,) = cli("config", "describe", "--topic", t, "--all", "--format", "json")
    by_name = {c["name"]: c for c in every["configs"]}
    assert by_name["retention.ms"]["source"] == "DEFAULT_CONFIG" and by_name["retention.ms"]["value"] == "604800000", \
        by_name["retention.ms"]
    assert by_name["max.message.bytes"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert len(by_name) > 10 and all(not c["sensitive"] for c in every["configs"]), by_name.keys()

    # kafka-configs.sh's spelling and several keys in one --add-config.
    out = cli("config", "alter", "--entity-type", "topics", "--entity-name", t,
              "--add-config", "retention.ms=7200000,segment.bytes=1048576", "--format", "json")
    assert out["set"] == {"retention.ms": "7200000", "segment.bytes": "1048576"}, out
    cli("config", "alter", "--topic", t, "--delete-config", "cleanup.policy,max.message.bytes")
    settles(lambda: dynamic_configs(cli, "--topic", t), {"retention.ms": ("7200000", "DYNAMIC_TOPIC_CONFIG"),
                                                        "segment.bytes": ("1048576", "DYNAMIC_TOPIC_CONFIG")},
            "config describe --topic")
    # confluent-kafka reads the same (the removed keys at their defaults).
    admin = ck_admin(cluster.bootstrap)  # kept alive until its futures complete
    res = ConfigResource(ConfigResource.Type.TOPIC, t)
    keys = ("retention.ms", "segment.bytes", "cleanup.policy", "max.message.bytes")

    def by_confluent_kafka():
        got = admin.describe_configs([res])[res].result(15)
        return {k: got[k].value for k in keys}

    settles(by_confluent_kafka, {"retention.ms": "7200000", "segment.bytes": "1048576", "cleanup.policy": "delete",
                                 "max.message.bytes": "1048588"}, "confluent-kafka's describe_configs")

    r = cli("config", "alter", "--topic", t, "--add-config", "retention.ms=abc", expect_rc=1)
    assert "INVALID_CONFIG" in r.stderr and "retention.ms" in r.stderr, r.stderr
    r = cli("config", "alter", "--topic", t, "--add-config", "no.such.config=1", expect_rc=1)
    assert "INVALID_CONFIG" in r.stderr, r.stderr
    r = cli("config", "describe", "--topic", f"missing-{uid()}", expect_rc=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr


def test_topic_add_partitions(cli, cluster):
    t = f"cli-grow-{uid()}"
    create_topic(cli, t, 2)
    out = cli("topic", "add-partitions", t, "--partitions", 4, "--format", "json")
    assert out == {"topic": t, "partitions": 4}, out
    (d,) = cli("topic", "describe", t, "--format", "json")
    assert d["partition_count"] == 4 and [p["partition"] for p in d["partitions"]] == [0, 1, 2, 3], d
    assert all(sorted(p["replicas"]) == [1, 2, 3] and p["leader"] in p["isr"] for p in d["partitions"]), d
    on_every_broker(cluster.nodes, t, 4)

    out = cli("topic", "alter", t, "--partitions", 6, "--format", "json")
    assert out == {"topic": t, "altered": ["partitions=6"]}, out
    (d,) = cli("topic", "describe", t, "--format", "json")
    assert d["partition_count"] == 6, d
    on_every_broker(cluster.nodes, t, 6)
    r = cli("topic", "add-partitions", t, "--partitions", 3, expect_rc=1)
    assert "INVALID_PARTITIONS" in r.stderr, r.stderr


def test_topic_delete(cli, cluster):
    t = f"cli-delete-{uid()}"
    create_topic(cli, t, 2)
    cli("produce", t, "--value", "x")
    out = cli("topic", "delete", t, "--format", "json")
    assert out == {"deleted": [t], "missing": []}, out
    assert t not in ck_admin(cluster.nodes[0].bootstrap).list_topics(timeout=10).topics  # the CLI's bootstrap
    for n in cluster.nodes:
        wait_until(lambda: t not in ck_admin(n.bootstrap).list_topics(timeout=10).topics, 15, 0.05,
                   message=f"{n.name} still lists the deleted topic")
    r = cli("topic", "describe", t, expect_rc=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr
    r = cli("topic", "delete", t, expect_rc=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr
    out = cli("topic", "delete", t, "--if-exists", "--format", "json")
    assert out == {"deleted": [], "missing": [t]}, out
    # "a re-create right after works", and the new topic is empty.
    create_topic(cli, t, 2)
    assert watermarks(cluster.bootstrap, t, 2) == {0: 0, 1: 0}


# ================================================================== config (brokers)

def test_config_brokers(cli, cluster):
    rate = "follower.replication.throttled.rate"
    try:
        out = cli("config", "alter", "--broker", 2, "--add-config", f"{rate}=104857600", "--format", "json")
        assert out == {"entity": "broker 2", "set": {rate: "104857600"}, "deleted": []}, out
        settles(lambda: dynamic_configs(cli, "--broker", 2), {rate: ("104857600", "DYNAMIC_BROKER_CONFIG")},
                "config describe --broker 2")
        assert dynamic_configs(cli, "--broker", 1) == {}

        out = cli("config", "alter", "--broker-defaults", "--add-config",
                  f"{rate}=209715200,leader.replication.throttled.rate=209715200", "--format", "json")
        assert out["entity"] == "broker defaults", out
        settles(lambda: dynamic_configs(cli, "--broker-defaults"), {
            rate: ("209715200", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
            "leader.replication.throttled.rate": ("209715200", "DYNAMIC_DEFAULT_BROKER_CONFIG")},
            "config describe --broker-defaults")

        # Every broker (each asked itself): the defaults, and broker 2's own value wins over them.
        def every_broker():
            every = cli("config", "describe", "--entity-type", "brokers", "--format", "json")
            assert [e["entity_name"] for e in every] == ["1", "2", "3"], every
            return {e["entity_name"]: {c["name"]: (c["value"], c["source"]) for c in e["configs"]
                                       if c["name"] == rate} for e in every}

        seen = settles(every_broker, {"1": {rate: ("209715200", "DYNAMIC_DEFAULT_BROKER_CONFIG")},
                                      "2": {rate: ("104857600", "DYNAMIC_BROKER_CONFIG")},
                                      "3": {rate: ("209715200", "DYNAMIC_DEFAULT_BROKER_CONFIG")}},
                       "config describe --entity-type brokers")

        # --all: static and default configs too, asked of broker 2 itself (its own node.id, log.dirs).
        (all_2,) = cli("config", "describe", "--broker", 2, "--all", "--format", "json")
        by_name = {c["name"]: c for c in all_2["configs"]}
        assert (by_name["node.id"]["value"], by_name["node.id"]["source"], by_name["node.id"]["read_only"]) == \
            ("2", "STATIC_BROKER_CONFIG", True), by_name["node.id"]
        assert by_name["log.dirs"]["value"] == str(cluster.nodes[1].data_dir), by_name["log.dirs"]
        assert by_name[rate]["source"] == "DYNAMIC_BROKER_CONFIG" and by_name[rate]["read_only"] is False
        assert {c["source"] for c in all_2["configs"]} >= {"DEFAULT_CONFIG", "STATIC_BROKER_CONFIG"}, by_name

        r = cli("config", "alter", "--broker-defaults", "--add-config", "log.retention.ms=1000", expect_rc=1)
        assert "INVALID_REQUEST" in r.stderr and "log.retention.ms" in r.stderr, r.stderr
        r = cli("config", "describe", "--broker", 9, expect_rc=1)
        assert "9" in r.stderr, r.stderr
    finally:
        cli("config", "alter", "--broker", 2, "--delete-config", rate)
        cli("config", "alter", "--broker-defaults", "--delete-config", rate,
            "--delete-config", "leader.replication.throttled.rate")
    settles(lambda: dynamic_configs(cli, "--broker", 2), {}, "broker 2 after --delete-config")
    settles(lambda: dynamic_configs(cli, "--broker-defaults"), {}, "broker defaults after --delete-config")


# ================================================================== produce / consume

def test_produce_and_consume(cli, cluster):
    t = f"cli-records-{uid()}"
    create_topic(cli, t, 3)

    # --value with --key and --header: one partition, the Java partitioner's.
    p_k1 = java_partition(b"k1", 3)
    out = cli("produce", t, "--value", "a", "--value", "b", "--key", "k1", "--header", "h1=x", "--header", "h2=y",
              "--format", "json")
    assert out == {"topic": t, "records": 2,
                   "partitions": {str(p_k1): {"records": 2, "first_offset": 0, "last_offset": 1}}}, out
    # stdin lines KEY:VALUE (split at the first separator).
    out = produce_lines(cli, t, ["ka:va", "kb:vb", "kc:v:c"], "--key-separator", ":")
    assert out["records"] == 3, out
    # JSON lines: key, a JSON value (kept as its text), headers, a partition, null key and value.
    out = produce_lines(cli, t, ['{"key": "jk", "value": {"n": 1}, "headers": {"hh": "hv"}, "partition": 2}', "",
                                 '{"value": "plain", "partition": 0}', '{"key": null, "value": null, "partition": 1}'],
                        "--input-format", "json")
    assert out["records"] == 3 and sorted(out["partitions"]) == ["0", "1", "2"], out
    # Many lines to one partition in small batches, acks=1.
    out = produce_lines(cli, t, [f"bulk-{i}" for i in range(50)], "--partition", 1, "--batch-records", 7, "--acks", 1)
    assert out["records"] == 50 and list(out["partitions"]) == ["1"] and out["partitions"]["1"]["records"] == 50, out
    first = out["partitions"]["1"]["first_offset"]
    assert out["partitions"]["1"]["last_offset"] == first + 49, out

    expected_keyed = {"k1": ["a", "b"], "ka": ["va"], "kb": ["vb"], "kc": ["v:c"], "jk": ['{"n":1}']}
    recs = consume_all(cli, t)
    assert len(recs) == 2 + 3 + 3 + 50, recs
    by_key: dict = {}
    for r in recs:
        assert r["topic"] == t and r["timestamp_type"] == "CreateTime", r
        by_key.setdefault(r["key"], []).append(r)
    for key, values in expected_keyed.items():
        assert [r["value"] for r in by_key[key]] == values, (key, by_key.get(key))
        if key != "jk":  # jk named its partition
            assert {r["partition"] for r in by_key[key]} == {java_partition(key.encode(), 3)}, (key, by_key[key])
    # Headers are [key, value] pairs in order (Kafka's headers are a list; a key may repeat).
    assert [r["headers"] for r in by_key["k1"]] == [[["h1", "x"], ["h2", "y"]]] * 2
    assert by_key["jk"][0]["headers"] == [["hh", "hv"]] and by_key["jk"][0]["partition"] == 2
    nulls = [r for r in by_key[None] if r["value"] is None]
    assert len(nulls) == 1 and nulls[0]["partition"] == 1, by_key[None]

    # confluent-kafka reads exactly these records: partition, offset, key, value, headers, timestamp.
    ck = ck_read_partitions(cluster.bootstrap, t, [0, 1, 2])

    def enc(s):
        return None if s is None else s.encode()

    from_cli = sorted((r["partition"], r["offset"], enc(r["key"]), enc(r["value"]),
                       tuple((k, enc(v)) for k, v in r["headers"]), r["timestamp"]) for r in recs)
    from_ck = sorted((p, *rec) for p, rs in ck.items() for rec in rs)
    assert from_cli == from_ck

    # --offset N --partition P, --max-messages.
    p1 = sorted((r for r in recs if r["partition"] == 1), key=lambda r: r["offset"])
    got = cli("consume", t, "--partition", 1, "--offset", 10, "--until-end", "--format", "json", jsonl=True)
    assert got == [r for r in p1 if r["offset"] >= 10], got
    got = cli("consume", t, "--partition", 1, "--offset", 10, "--max-messages", 3, "--format", "json", jsonl=True)
    assert got == [r for r in p1 if r["offset"] >= 10][:3], got
    got = cli("consume", t, "--from-beginning", "--max-messages", 4, "--format", "json", jsonl=True)
    assert len(got) == 4 and all(g in recs for g in got), got
    # --timeout-ms ends a consumer without --until-end once nothing more comes.
    got = cli("consume", t, "--from-beginning", "--timeout-ms", 1000, "--format", "json", jsonl=True)
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, recs))

    # Value formats, and the text format's fields (kafka-console-consumer's print.* properties).
    (raw,) = cli("consume", t, "--partition", p_k1, "--offset", 0, "--max-messages", 1, "--value-format", "hex",
                 "--format", "json", jsonl=True)
    assert (raw["key"], raw["value"], raw["headers"]) == (b"k1".hex(), b"a".hex(), [["h1", b"x".hex()], ["h2", b"y".hex()]])
    (raw,) = cli("consume", t, "--partition", p_k1, "--offset", 1, "--max-messages", 1, "--value-format", "base64",
                 "--format", "json", jsonl=True)
    assert (raw["key"], raw["value"]) == (base64.b64encode(b"k1").decode(), base64.b64encode(b"b").decode())
    (jv,) = cli("consume", t, "--partition", 2, "--offset", by_key["jk"][0]["offset"], "--max-messages", 1,
                "--value-format", "json", "--format", "json", jsonl=True)
    assert jv["value"] == {"n": 1}, jv
    text = cli("consume", t, "--partition", p_k1, "--offset", 0, "--max-messages", 1, "--print-key", "--print-offset",
               "--print-headers", "--print-timestamp", "--separator", "|")
    assert text == f"{by_key['k1'][0]['timestamp']}|{p_k1}:0|k1|h1:x,h2:y|a\n", text


def test_consume_from_timestamp(cli, cluster):
    t = f"cli-time-{uid()}"
    create_topic(cli, t, 2)
    produce_lines(cli, t, [f"early-{i}" for i in range(6)])
    before = now_ms()
    wait_until(lambda: now_ms() > before, 1, 0.001)
    mid = now_ms()
    produce_lines(cli, t, [f"late-{i}" for i in range(4)])
    recs = consume_all(cli, t)
    assert all((r["timestamp"] < mid) == r["value"].startswith("early") for r in recs), (mid, recs)
    late = sorted((r["partition"], r["offset"], r["value"]) for r in recs if r["value"].startswith("late"))
    for start in (str(mid), iso_ms(mid), iso_ms(mid, "Z"), iso_ms(mid, "+00:00")):
        got = cli("consume", t, "--from-timestamp", start, "--until-end", "--format", "json", jsonl=True)
        assert sorted((r["partition"], r["offset"], r["value"]) for r in got) == late, (start, got)
    # No record that recent: nothing (the log end), as Kafka's console consumer.
    got = cli("consume", t, "--from-timestamp", now_ms() + 3_600_000, "--until-end", "--format", "json", jsonl=True)
    assert got == []


def test_consume_from_an_offset_past_the_end_shows_nothing_older(cli, cluster):
    """`--offset N` past the log end: Kafka's console consumer (auto.offset.reset=latest without
    --from-beginning) waits at the end; it must not start over at the log start and print records
    below N."""
    t = f"cli-past-end-{uid()}"
    create_topic(cli, t, 1)
    produce_lines(cli, t, [f"v{i}" for i in range(8)])
    got = cli("consume", t, "--partition", 0, "--offset", 1000, "--timeout-ms", 1500, "--format", "json", jsonl=True)
    assert [r["offset"] for r in got if r["offset"] < 1000] == [], got
    got = cli("consume", t, "--partition", 0, "--offset", 8, "--timeout-ms", 1000, "--format", "json", jsonl=True)
    assert got == [], got


def test_compression_codecs(cli, cluster):
    t = f"cli-codecs-{uid()}"
    create_topic(cli, t, 1)
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for c in codecs:
        out = cli("produce", t, "--compression", c, "--value", f"{c}-1", "--value", f"{c}-2", "--format", "json")
        assert out["records"] == 2, out
    want = [f"{c}-{i}".encode() for c in codecs for i in (1, 2)]
    assert [r.value for r in ck_read_partitions(cluster.bootstrap, t, [0])[0]] == want
    assert [r["value"].encode() for r in consume_all(cli, t)] == want


def test_consume_read_committed_leaves_out_aborted_transactions(cli, cluster):
    t = f"cli-txn-{uid()}"
    create_topic(cli, t, 1)
    p = ck_producer(cluster.bootstrap, **{"transactional.id": f"cli-txn-{uid()}"})
    p.init_transactions(30)
    for values, commit in ((["c1"], True), (["a1", "a2"], False), (["c2"], True)):
        p.begin_transaction()
        for v in values:
            p.produce(t, value=v.encode())
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    assert [r["value"] for r in consume_all(cli, t)] == ["c1", "a1", "a2", "c2"]
    assert [r["value"] for r in consume_all(cli, t, "--isolation-level", "read_committed")] == ["c1", "c2"]


def test_repeated_header_keys_survive(cli, cluster):
    """Kafka headers are a list: a key may repeat (Java's Headers.add, librdkafka). The CLI must
    neither drop one when producing nor when showing a record."""
    t = f"cli-headers-{uid()}"
    create_topic(cli, t, 1)
    cli("produce", t, "--value", "w", "--header", "h=1", "--header", "h=2")
    (rec,) = ck_read_partitions(cluster.bootstrap, t, [0])[0]
    assert rec.headers == (("h", b"1"), ("h", b"2")), rec.headers

    p = ck_producer(cluster.bootstrap)
    p.produce(t, value=b"v", headers=[("h", b"1"), ("h", b"2")])
    assert p.flush(15) == 0
    text = cli("consume", t, "--partition", 0, "--offset", 1, "--max-messages", 1, "--print-headers")
    assert text == "h:1,h:2\tv\n", text
    (j,) = cli("consume", t, "--partition", 0, "--offset", 1, "--max-messages", 1, "--format", "json", jsonl=True)
    assert j["headers"] == [["h", "1"], ["h", "2"]], j["headers"]


# ================================================================== groups

def read_and_commit(bootstrap: str, group: str, topic: str, commit: dict[int, int], client_id: str):
    """A subscribed confluent-kafka consumer that read at least commit[p] records of each
    partition and committed exactly `commit`. Returned still in the group."""
    from confluent_kafka import TopicPartition
    c = ck_consumer(bootstrap, **{"group.id": group, "client.id": client_id, "enable.partition.eof": False})
    c.subscribe([topic])
    seen = {p: 0 for p in commit}

    def read_enough():
        for m in c.consume(num_messages=500, timeout=0.5):
            assert m.error() is None, m.error()
            seen[m.partition()] += 1
        return all(seen[p] >= n for p, n in commit.items())

    try:
        wait_until(read_enough, 30, 0, message=lambda: f"group {group} read only {seen}")
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in commit.items()], asynchronous=False)
    except BaseException:
        c.close()
        raise
    return c


def group_state(cli: Cli, group: str) -> str:
    (d,) = cli("group", "describe", group, "--format", "json")
    return d["state"]


def committed_by_cli(cli: Cli, group: str) -> dict[tuple[str, int], int | None]:
    (d,) = cli("group", "describe", group, "--format", "json")
    return {(o["topic"], o["partition"]): o["current_offset"] for o in d["offsets"]}


def test_group_lag_members_and_reset_offsets(cli, cluster):
    from confluent_kafka import TopicPartition
    boot = cluster.bootstrap
    t, g = f"cli-group-{uid()}", f"cli-group-{uid()}"
    create_topic(cli, t, 3)
    wave1 = {0: 30, 1: 40, 2: 50}
    for p, n in wave1.items():
        produce_lines(cli, t, [f"w1-{p}-{i}" for i in range(n)], "--partition", p)
    before = now_ms()
    wait_until(lambda: now_ms() > before, 1, 0.001)
    mid = now_ms()
    for p in wave1:
        produce_lines(cli, t, [f"w2-{p}-{i}" for i in range(5)], "--partition", p)
    hw = watermarks(boot, t, 3)
    assert hw == {p: n + 5 for p, n in wave1.items()}, hw

    commit = {0: 10, 1: 25, 2: hw[2]}
    consumer = read_and_commit(boot, g, t, commit, client_id="cli-e2e-reader")
    try:
        assert ck_committed(boot, g, t, 3) == commit
        listed = {x["group"]: x for x in cli("group", "list", "--format", "json")}
        assert listed[g] == {"group": g, "state": "Stable", "type": "classic", "protocol_type": "consumer"}, \
            listed.get(g)

        (d,) = cli("group", "describe", g, "--members", "--state", "--format", "json")
        assert (d["group"], d["state"], d["type"], d["protocol_type"]) == (g, "Stable", "classic", "consumer"), d
        assert d["protocol"] in ("range", "roundrobin", "cooperative-sticky"), d
        assert d["coordinator"] in {n.bootstrap for n in cluster.nodes}, d
        (member,) = d["members"]
        assert member["client_id"] == "cli-e2e-reader" and member["member_id"], member
        assert member["host"].endswith("127.0.0.1"), member
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [(t, 0), (t, 1), (t, 2)], member
        rows = {o["partition"]: o for o in d["offsets"]}
        assert sorted(rows) == [0, 1, 2] and all(o["topic"] == t for o in d["offsets"]), d["offsets"]
        for p, o in rows.items():
            assert o["log_end_offset"] == hw[p], (p, o, hw)
            assert o["current_offset"] == commit[p], (p, o, commit)
            assert o["lag"] == hw[p] - commit[p], (p, o, hw, commit)
            assert (o["member_id"], o["client_id"], o["host"]) == \
                (member["member_id"], member["client_id"], member["host"]), o
        assert d["total_lag"] == sum(hw[p] - commit[p] for p in hw), d

        # An active group's offsets are not reset, nor is it deleted, nor its topic's offsets.
        for args in (["--to-earliest", "--execute"], ["--to-earliest"]):
            r = cli("group", "reset-offsets", g, "--topic", t, *args, expect_rc=1)
            assert "inactive" in r.stderr and "Stable" in r.stderr, r.stderr
        r = cli("group", "delete", g, expect_rc=1)
        assert "NON_EMPTY_GROUP" in r.stderr, r.stderr
        r = cli("group", "delete-offsets", g, "--topic", t, expect_rc=1)
        assert "GROUP_SUBSCRIBED_TO_TOPIC" in r.stderr, r.stderr
        assert ck_committed(boot, g, t, 3) == commit
    finally:
        consumer.close()
    wait_until(lambda: group_state(cli, g) == "Empty", 15, 0.2, message="the group did not become Empty")
    (d,) = cli("group", "describe", g, "--members", "--format", "json")
    assert d["members"] == [] and all(o["member_id"] is None for o in d["offsets"]), d
    assert {o["partition"]: o["lag"] for o in d["offsets"]} == {p: hw[p] - commit[p] for p in hw}, d

    def reset(*args, execute=False):
        out = cli("group", "reset-offsets", g, *args, *(["--execute"] if execute else []), "--format", "json")
        assert out["group"] == g and out["executed"] is execute, out
        return {(o["topic"], o["partition"]): (o["previous_offset"], o["new_offset"]) for o in out["offsets"]}

    # Dry runs (the default, and --dry-run) show the plan and change nothing.
    assert reset("--topic", t, "--to-earliest") == {(t, p): (commit[p], 0) for p in hw}
    assert reset("--topic", t, "--to-latest", "--dry-run") == {(t, p): (commit[p], hw[p]) for p in hw}
    assert committed_by_cli(cli, g) == {(t, p): commit[p] for p in hw}
    assert ck_committed(boot, g, t, 3) == commit

    # --to-offset on some partitions (kept within the log), --shift-by either way (clamped).
    assert reset("--topic", f"{t}:0,1", "--to-offset", 12, execute=True) == {(t, 0): (10, 12), (t, 1): (25, 12)}
    assert ck_committed(boot, g, t, 3) == {0: 12, 1: 12, 2: hw[2]}
    assert reset("--topic", f"{t}:1", "--to-offset", 10_000, execute=True) == {(t, 1): (12, hw[1])}
    assert reset("--topic", f"{t}:0", "--shift-by", -5, execute=True) == {(t, 0): (12, 7)}
    assert reset("--topic", f"{t}:0", "--shift-by", -100, execute=True) == {(t, 0): (7, 0)}
    assert reset("--topic", f"{t}:0", "--shift-by", 4, execute=True) == {(t, 0): (0, 4)}
    assert committed_by_cli(cli, g) == {(t, 0): 4, (t, 1): hw[1], (t, 2): hw[2]}
    assert ck_committed(boot, g, t, 3) == {0: 4, 1: hw[1], 2: hw[2]}

    # --to-datetime: the first offset at or after that time, as ListOffsets (offsets_for_times) says.
    c = ck_consumer(boot)
    by_time = {tp.partition: tp.offset for tp in
               c.offsets_for_times([TopicPartition(t, p, mid) for p in hw], timeout=10)}
    c.close()
    assert by_time == wave1, by_time
    now = {0: 4, 1: hw[1], 2: hw[2]}
    assert reset("--all-topics", "--to-datetime", iso_ms(mid), execute=True) == {(t, p): (now[p], wave1[p]) for p in hw}
    assert ck_committed(boot, g, t, 3) == wave1
    assert reset("--topic", t, "--to-datetime", str(mid - 3_600_000)) == {(t, p): (wave1[p], 0) for p in hw}
    assert reset("--topic", t, "--to-datetime", iso_ms(now_ms() + 3_600_000, "Z")) == \
        {(t, p): (wave1[p], hw[p]) for p in hw}

    # --to-earliest --execute: a real consumer of the group now starts at 0 and re-reads everything,
    # although auto.offset.reset=latest would put it at the end without a committed offset.
    assert reset("--topic", t, "--to-earliest", execute=True) == {(t, p): (wave1[p], 0) for p in hw}
    assert committed_by_cli(cli, g) == {(t, p): 0 for p in hw}
    c = ck_consumer(boot, **{"group.id": g, "auto.offset.reset": "latest", "enable.partition.eof": False})
    c.subscribe([t])
    got: dict[int, list[int]] = {p: [] for p in hw}
    try:
        def reread():
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got[m.partition()].append(m.offset())
            return all(len(got[p]) >= hw[p] for p in hw)

        wait_until(reread, 30, 0, message=lambda: f"re-read only { {p: len(v) for p, v in got.items()} } of {hw}")
    finally:
        c.close()
    assert got == {p: list(range(hw[p])) for p in hw}, {p: (v[:3], len(v)) for p, v in got.items()}

    # delete-offsets of one partition, then of the topic; then the group.
    wait_until(lambda: group_state(cli, g) == "Empty", 15, 0.2, message="the group did not become Empty")
    out = cli("group", "delete-offsets", g, "--topic", f"{t}:2", "--format", "json")
    assert out == {"group": g, "deleted": [{"topic": t, "partition": 2}]}, out
    assert committed_by_cli(cli, g) == {(t, 0): 0, (t, 1): 0}
    assert ck_committed(boot, g, t, 3) == {0: 0, 1: 0}
    out = cli("group", "delete-offsets", g, "--topic", t, "--format", "json")
    assert sorted(x["partition"] for x in out["deleted"]) == [0, 1, 2], out
    assert committed_by_cli(cli, g) == {} and ck_committed(boot, g, t, 3) == {}

    out = cli("group", "delete", g, "--format", "json")
    assert out == {"deleted": [g]}, out
    assert g not in {x["group"] for x in cli("group", "list", "--format", "json")}
    r = cli("group", "delete", g, expect_rc=1)
    assert "GROUP_ID_NOT_FOUND" in r.stderr, r.stderr

    # Refusals of the arguments themselves.
    r = cli("group", "reset-offsets", g, "--topic", f"{t}:7", "--to-earliest", expect_rc=1)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, r.stderr
    cli("group", "reset-offsets", g, "--topic", t, expect_rc=2)
    cli("group", "reset-offsets", g, "--topic", t, "--to-earliest", "--to-latest", expect_rc=2)


def test_group_kip848_consumer_group(cli, cluster):
    from confluent_kafka import Consumer, TopicPartition
    boot = cluster.bootstrap
    t, g = f"cli-848-{uid()}", f"cli-848-{uid()}"
    create_topic(cli, t, 2)
    for p in (0, 1):
        produce_lines(cli, t, [f"v{i}" for i in range(20)], "--partition", p)
    c = Consumer(ck_conf(boot, **{"group.id": g, "group.protocol": "consumer", "client.id": "cli-848",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([t])
        def assigned():
            c.poll(0.2)
            return len(c.assignment()) == 2

        wait_until(assigned, 30, 0, message="the KIP-848 member got no assignment")
        c.commit(offsets=[TopicPartition(t, 0, 3), TopicPartition(t, 1, 20)], asynchronous=False)
        (d,) = cli("group", "describe", g, "--members", "--format", "json")
        assert (d["type"], d["state"], d["protocol_type"]) == ("consumer", "Stable", "consumer"), d
        (member,) = d["members"]
        assert member["client_id"] == "cli-848"
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [(t, 0), (t, 1)], member
        assert {o["partition"]: (o["current_offset"], o["log_end_offset"], o["lag"], o["member_id"])
                for o in d["offsets"]} == {0: (3, 20, 17, member["member_id"]), 1: (20, 20, 0, member["member_id"])}
        listed = {x["group"]: x for x in cli("group", "list", "--format", "json")}
        assert (listed[g]["type"], listed[g]["state"]) == ("consumer", "Stable"), listed[g]
    finally:
        c.close()
    wait_until(lambda: group_state(cli, g) == "Empty", 15, 0.2, message="the KIP-848 group did not become Empty")
    out = cli("group", "reset-offsets", g, "--topic", t, "--to-earliest", "--execute", "--format", "json")
    assert {o["partition"]: o["new_offset"] for o in out["offsets"]} == {0: 0, 1: 0}, out
    assert ck_committed(boot, g, t, 2) == {0: 0, 1: 0}
    cli("group", "delete", g)
    assert g not in {x["group"] for x in cli("group", "list", "--format", "json")}


# ================================================================== acl / user / quota

def acls_of(cli: Cli, *filters, bootstrap=None) -> set[tuple]:
    out = cli("acl", "list", *filters, "--format", "json", bootstrap=bootstrap)
    return {(a["resource_type"], a["resource_name"], a["pattern_type"], a["principal"], a["host"], a["operation"],
             a["permission"]) for a in out}


def test_acl_create_list_delete(cli, cluster):
    s = uid()
    alice, bob, carol = f"User:alice-{s}", f"User:bob-{s}", f"User:carol-{s}"
    topic, prefix, group = f"acl-topic-{s}", f"acl-pre-{s}-", f"acl-group-{s}"
    mine = {alice, bob, carol}

    out = cli("acl", "create", "--allow-principal", alice, "--operation", "Read", "--operation", "Describe",
              "--topic", topic, "--format", "json")
    assert sorted(a["operation"] for a in out) == ["Describe", "Read"] and all(
        (a["resource_type"], a["pattern_type"], a["permission"], a["host"]) == ("Topic", "Literal", "Allow", "*")
        for a in out), out
    cli("acl", "create", "--allow-principal", alice, "--operation", "Write", "--topic", prefix,
        "--resource-pattern-type", "prefixed")
    cli("acl", "create", "--deny-principal", bob, "--deny-host", "10.0.0.1", "--operation", "All", "--topic", topic)
    cli("acl", "create", "--allow-principal", carol, "--producer", "--idempotent", "--topic", topic)
    cli("acl", "create", "--allow-principal", carol, "--consumer", "--topic", topic, "--group", group)
    cli("acl", "create", "--allow-principal", alice, "--operation", "DescribeConfigs", "--cluster")

    want = {
        ("Topic", topic, "Literal", alice, "*", "Read", "Allow"),
        ("Topic", topic, "Literal", alice, "*", "Describe", "Allow"),
        ("Topic", prefix, "Prefixed", alice, "*", "Write", "Allow"),
        ("Topic", topic, "Literal", bob, "10.0.0.1", "All", "Deny"),
        # --producer: Write, Describe, Create on the topic, IdempotentWrite on the cluster (kafka-acls.sh)
        ("Topic", topic, "Literal", carol, "*", "Write", "Allow"),
        ("Topic", topic, "Literal", carol, "*", "Describe", "Allow"),
        ("Topic", topic, "Literal", carol, "*", "Create", "Allow"),
        ("Cluster", "kafka-cluster", "Literal", carol, "*", "IdempotentWrite", "Allow"),
        # --consumer: Read, Describe on the topic, Read on the group
        ("Topic", topic, "Literal", carol, "*", "Read", "Allow"),
        ("Group", group, "Literal", carol, "*", "Read", "Allow"),
        ("Cluster", "kafka-cluster", "Literal", alice, "*", "DescribeConfigs", "Allow"),
    }
    settles(lambda: {a for a in acls_of(cli) if a[3] in mine}, want, "acl list")

    assert acls_of(cli, "--topic", topic) == {a for a in want if a[:3] == ("Topic", topic, "Literal")}
    assert acls_of(cli, "--principal", carol) == {a for a in want if a[3] == carol}
    assert acls_of(cli, "--group", group) == {("Group", group, "Literal", carol, "*", "Read", "Allow")}
    assert acls_of(cli, "--topic", prefix, "--resource-pattern-type", "prefixed") == \
        {("Topic", prefix, "Prefixed", alice, "*", "Write", "Allow")}
    # match: the ACLs that apply to a topic named prefix + "x" (the prefixed one).
    assert acls_of(cli, "--topic", f"{prefix}x", "--resource-pattern-type", "match") == \
        {("Topic", prefix, "Prefixed", alice, "*", "Write", "Allow")}
    assert acls_of(cli, "--topic", topic, "--operation", "Read") == {a for a in want if a[:3] == (
        "Topic", topic, "Literal") and a[5] == "Read"}
    assert acls_of(cli, "--deny-principal", bob) == {("Topic", topic, "Literal", bob, "10.0.0.1", "All", "Deny")}
    assert {a for a in acls_of(cli, "--cluster") if a[3] in mine} == {a for a in want if a[0] == "Cluster"}

    out = cli("acl", "delete", "--topic", topic, "--allow-principal", alice, "--operation", "Read", "--format", "json")
    assert [(a["principal"], a["operation"], a["resource_name"]) for a in out] == [(alice, "Read", topic)], out
    out = cli("acl", "delete", "--topic", prefix, "--resource-pattern-type", "prefixed", "--format", "json")
    assert [(a["resource_name"], a["pattern_type"]) for a in out] == [(prefix, "Prefixed")], out
    out = cli("acl", "delete", "--principal", carol, "--format", "json")
    assert len(out) == 6 and {a["principal"] for a in out} == {carol}, out
    settles(lambda: {a for a in acls_of(cli) if a[3] in mine},
            {("Topic", topic, "Literal", alice, "*", "Describe", "Allow"),
             ("Topic", topic, "Literal", bob, "10.0.0.1", "All", "Deny"),
             ("Cluster", "kafka-cluster", "Literal", alice, "*", "DescribeConfigs", "Allow")}, "acl list after deletes")
    for p in (alice, bob):
        cli("acl", "delete", "--principal", p)
    settles(lambda: {a for a in acls_of(cli) if a[3] in mine}, set(), "acl list after deleting all")

    r = cli("acl", "create", "--allow-principal", alice, "--operation", "Fly", "--topic", topic, expect_rc=2)
    assert "Fly" in r.stderr, r.stderr
    cli("acl", "create", "--allow-principal", alice, "--operation", "Read", expect_rc=2)
    r = cli("acl", "create", "--allow-principal", "alice", "--operation", "Read", "--topic", topic, expect_rc=1)
    assert "INVALID_REQUEST" in r.stderr, r.stderr


def sasl_conf(cluster, user: str, password: str, mechanism: str = "SCRAM-SHA-512", **extra) -> dict:
    return ck_conf(cluster.sasl_bootstrap, **{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": mechanism,
                                              "sasl.username": user, "sasl.password": password}, **extra)


def login_refused(cluster, user: str, password: str, timeout: float = 15.0) -> bool:
    """Whether a confluent-kafka client's SCRAM login as `user` is refused: librdkafka reports it
    only in its log ("SASL authentication error: Authentication failed ...")."""
    import logging

    from confluent_kafka import Producer
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger(f"rdkafka.login.{uid()}")
    log.addHandler(Keep())
    log.setLevel(logging.DEBUG)
    log.propagate = False
    p = Producer({**sasl_conf(cluster, user, password), "logger": log})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("Authentication failed" in line for line in lines):
            return True
        p.poll(0.1)
    return False


def command_config(tmp_path, user: str, password: str, mechanism: str = "SCRAM-SHA-512"):
    f = tmp_path / f"{user}-{mechanism}.properties"
    f.write_text("security.protocol=SASL_PLAINTEXT\n"
                 f"sasl.mechanism={mechanism}\n"
                 "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                 f'username="{user}" password="{password}";\n')
    return f


def test_users_log_in_and_acls_take_effect(cli, cluster, tmp_path):
    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka.admin import AdminClient
    s = uid()
    user, pw512, pw256 = f"dave-{s}", f"secret-512-{s}", f"secret-256-{s}"
    topic, group = f"cli-scram-{s}", f"cli-scram-{s}"
    create_topic(cli, topic, 2)
    produce_lines(cli, topic, [f"v{i}" for i in range(10)])

    out = cli("user", "create", user, "--password", pw512, "--format", "json")
    assert out == {"user": user, "mechanism": "SCRAM-SHA-512", "iterations": 4096}, out
    pwfile = tmp_path / "pw"
    pwfile.write_text(f"{pw256}\nignored second line\n")
    out = cli("user", "create", user, "--password-file", pwfile, "--mechanism", "SCRAM-SHA-256", "--iterations", 8192,
              "--format", "json")
    assert out == {"user": user, "mechanism": "SCRAM-SHA-256", "iterations": 8192}, out
    def credentials():
        listed = {u["user"]: u["credentials"] for u in cli("user", "list", "--format", "json")}
        return sorted((c["mechanism"], c["iterations"]) for c in listed.get(user, []))

    settles(credentials, [("SCRAM-SHA-256", 8192), ("SCRAM-SHA-512", 4096)], "user list")
    assert [u["user"] for u in cli("user", "list", user, "--format", "json")] == [user]
    r = cli("user", "list", f"nobody-{s}", expect_rc=1)
    assert "RESOURCE_NOT_FOUND" in r.stderr, r.stderr
    cli("user", "create", user, "--password", "x", "--iterations", 100, expect_rc=2)
    cli("user", "create", user, "--password", "x", "--mechanism", "PLAIN", expect_rc=2)

    # Both credentials log in (confluent-kafka over SASL_PLAINTEXT); without ACLs the user sees nothing.
    for mech, pw in (("SCRAM-SHA-512", pw512), ("SCRAM-SHA-256", pw256)):
        md = AdminClient(sasl_conf(cluster, user, pw, mech)).list_topics(timeout=15)
        assert sorted(md.brokers) == [1, 2, 3] and topic not in md.topics, (mech, md.topics)
    as_user = command_config(tmp_path, user, pw512)
    sasl = cluster.sasl_bootstrap
    assert cli("topic", "list", "--command-config", as_user, "--format", "json", bootstrap=sasl) == []
    described = cli("cluster", "describe", "--command-config", as_user, "--format", "json", bootstrap=sasl)
    assert sorted((b["id"], b["port"]) for b in described["brokers"]) == \
        [(n.node_id, n.sasl_port) for n in cluster.nodes], described
    r = cli("produce", topic, "--value", "x", "--command-config", as_user, bootstrap=sasl, expect_rc=1)
    assert "TOPIC_AUTHORIZATION_FAILED" in r.stderr, r.stderr

    # --consumer grants: the topic shows, the CLI and a confluent-kafka group consumer read it.
    cli("acl", "create", "--allow-principal", f"User:{user}", "--consumer", "--topic", topic, "--group", group)
    try:
        for n in cluster.nodes:  # every broker applied the grant
            wait_until(lambda: [x["name"] for x in cli("topic", "list", "--command-config", as_user, "--format",
                                                        "json", bootstrap=f"127.0.0.1:{n.sasl_port}")] == [topic],
                       15, 0.2, message=f"the granted topic does not show for the user on {n.name}")
        assert sorted(r["value"] for r in consume_all(cli, topic, "--command-config", as_user, bootstrap=sasl)) == \
            sorted(f"v{i}" for i in range(10))
        c = Consumer(sasl_conf(cluster, user, pw256, "SCRAM-SHA-256", **{
            "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}))
        values = []
        try:
            c.subscribe([topic])

            def read_all():
                for m in c.consume(num_messages=100, timeout=0.5):
                    assert m.error() is None, m.error()
                    values.append(m.value().decode())
                return len(values) >= 10

            wait_until(read_all, 30, 0, message=lambda: f"the SCRAM user's group read {values}")
            c.commit(asynchronous=False)
        finally:
            c.close()
        assert sorted(values) == sorted(f"v{i}" for i in range(10))
        (d,) = cli("group", "describe", group, "--format", "json")
        assert sum(o["current_offset"] for o in d["offsets"]) == 10 and d["total_lag"] == 0, d
        r = cli("produce", topic, "--value", "x", "--command-config", as_user, bootstrap=sasl, expect_rc=1)
        assert "TOPIC_AUTHORIZATION_FAILED" in r.stderr, r.stderr
        cli("acl", "create", "--allow-principal", f"User:{user}", "--producer", "--topic", topic)
        wait_until(lambda: cli.succeeds("produce", topic, "--value", "granted", "--command-config", as_user,
                                        bootstrap=sasl), 15, 0.2,
                   message="the user still may not produce after --producer")
        assert "granted" in [r["value"] for r in consume_all(cli, topic)]
    finally:
        cli("acl", "delete", "--principal", f"User:{user}")
    settles(lambda: acls_of(cli, "--principal", f"User:{user}"), set(), "the user's ACLs after the delete")

    # Deleting one mechanism, then the user: logins stop working.
    out = cli("user", "delete", user, "--mechanism", "SCRAM-SHA-256", "--format", "json")
    assert out == {"user": user, "deleted": ["SCRAM-SHA-256"]}, out
    settles(credentials, [("SCRAM-SHA-512", 4096)], "user list after deleting SCRAM-SHA-256")
    out = cli("user", "delete", user, "--format", "json")
    assert out == {"user": user, "deleted": ["SCRAM-SHA-512"]}, out
    settles(credentials, [], "user list after the delete")
    r = cli("user", "delete", user, expect_rc=1)
    assert "RESOURCE_NOT_FOUND" in r.stderr, r.stderr

    assert login_refused(cluster, user, pw512), "the deleted user can still log in"


def test_quota_commands(cli, cluster):
    s = uid()
    user, client = f"quota-user-{s}", f"quota-client-{s}"

    def quotas(*entity):
        out = cli("quota", "describe", *entity, "--format", "json")
        return {tuple(sorted(e["entity"].items(), key=lambda kv: kv[0])): e["quotas"] for e in out}

    out = cli("quota", "alter", "--user", user, "--add-config", "producer_byte_rate=1048576,consumer_byte_rate=2097152",
              "--format", "json")
    assert out == {"entity": f"user={user}", "altered": True}, out
    out = cli("quota", "alter", "--user", user, "--client-id", client, "--add-config", "request_percentage=50",
              "--format", "json")
    assert out == {"entity": f"user={user},client-id={client}", "altered": True}, out
    user_key, pair_key = (("user", user),), (("client-id", client), ("user", user))
    both = {user_key: {"producer_byte_rate": 1048576.0, "consumer_byte_rate": 2097152.0},
            pair_key: {"request_percentage": 50.0}}

    def of_mine(*entity):
        return {k: v for k, v in quotas(*entity).items() if dict(k).get("user") == user}

    settles(of_mine, both, "quota describe")
    assert quotas("--user", user) == both  # the user's own and those of the user with a client id
    assert quotas("--client-id", client) == {pair_key: {"request_percentage": 50.0}}

    defaults = (("user", None),)
    try:
        cli("quota", "alter", "--user-defaults", "--add-config", "consumer_byte_rate=1e12")
        settles(lambda: quotas("--user-defaults").get(defaults), {"consumer_byte_rate": 1e12},
                "quota describe --user-defaults")
    finally:
        cli("quota", "alter", "--user-defaults", "--delete-config", "consumer_byte_rate")
    settles(lambda: quotas().get(defaults), None, "the user defaults after --delete-config")

    cli("quota", "alter", "--user", user, "--delete-config", "producer_byte_rate")
    settles(lambda: of_mine().get(user_key), {"consumer_byte_rate": 2097152.0}, "quota after --delete-config")
    cli("quota", "alter", "--user", user, "--delete-config", "consumer_byte_rate")
    cli("quota", "alter", "--user", user, "--client-id", client, "--delete-config", "request_percentage")
    settles(of_mine, {}, "quotas after deleting every one")  # an entity without quotas is gone

    r = cli("quota", "alter", "--user", user, "--add-config", "bogus_rate=1", expect_rc=1)
    assert "INVALID_REQUEST" in r.stderr, r.stderr
    cli("quota", "alter", "--user", user, "--add-config", "producer_byte_rate=abc", expect_rc=2)
    cli("quota", "alter", "--add-config", "producer_byte_rate=1", expect_rc=2)
    cli("quota", "alter", "--user", user, expect_rc=2)


# ================================================================== cluster

def test_cluster_describe_quorum_and_log_dirs(cli, cluster):
    d = cli("cluster", "describe", "--format", "json")
    assert d["cluster_id"] == cluster.cluster_id, d
    assert [(b["id"], b["host"], b["port"], b["fenced"], b["rack"]) for b in d["brokers"]] == \
        [(n.node_id, "127.0.0.1", n.port, False, None) for n in cluster.nodes], d
    assert d["controller_id"] in (1, 2, 3), d

    q = cli("cluster", "quorum", "--format", "json")
    assert q["voters"] == [1, 2, 3] and q["observers"] == [], q
    assert q["leader_id"] in q["voters"] and q["leader_epoch"] >= 1 and q["high_watermark"] > 0, q
    assert q["leader_id"] == cluster.active_controller().node_id, q
    roles = {r["node_id"]: r for r in q["replicas"]}
    assert sorted(roles) == [1, 2, 3], q
    assert [i for i, r in roles.items() if r["status"] == "Leader"] == [q["leader_id"]], q
    assert all(r["status"] == "Follower" for i, r in roles.items() if i != q["leader_id"]), q
    assert roles[q["leader_id"]]["log_end_offset"] >= q["high_watermark"], q
    assert all(r["lag"] >= 0 and r["log_end_offset"] >= 0 for r in roles.values()), q
    assert q["max_follower_lag"] == max(r["lag"] for r in roles.values()), q
    # The quorum keeps moving (broker heartbeats, our topics): the high watermark never goes back.
    later = cli("cluster", "quorum", "--format", "json")
    assert later["high_watermark"] >= q["high_watermark"], (q, later)

    t = f"cli-logdirs-{uid()}"
    create_topic(cli, t, 2)
    for p in (0, 1):
        produce_lines(cli, t, [f"record-{p}-{i}-" + "x" * 50 for i in range(40)], "--partition", p)
    dirs_of = {n.node_id: str(n.data_dir) for n in cluster.nodes}

    def sizes() -> dict:
        out = cli("cluster", "log-dirs", "--topic", t, "--format", "json")
        assert [b["broker"] for b in out] == [1, 2, 3], out
        got = {}
        for b in out:
            (ld,) = b["log_dirs"]
            assert ld["log_dir"] == dirs_of[b["broker"]] and ld["error"] is None, ld
            assert ld["partitions_size"] == sum(p["size"] for p in ld["partitions"]), ld
            assert ld["total_bytes"] is None or ld["total_bytes"] >= (ld["usable_bytes"] or 0) > 0, ld
            assert all(p["topic"] == t and p["is_future"] is False and p["offset_lag"] >= 0
                       for p in ld["partitions"]), ld
            got[b["broker"]] = {p["partition"]: p["size"] for p in ld["partitions"]}
        return got

    # acks=all: every replica holds the batches; followers store the leader's bytes as they are.
    seen = {}
    wait_until(lambda: seen.update(s=sizes()) or (
        all(sorted(v) == [0, 1] and all(x > 40 * 50 for x in v.values()) for v in seen["s"].values())
        and seen["s"][1] == seen["s"][2] == seen["s"][3]), 15, 0.2,
        message=lambda: f"log-dirs sizes: {seen.get('s')}")
    only2 = cli("cluster", "log-dirs", "--broker", 2, "--topic", t, "--format", "json")
    assert [b["broker"] for b in only2] == [2], only2
    r = cli("cluster", "log-dirs", "--broker", 9, expect_rc=1)
    assert "9" in r.stderr, r.stderr


def test_cluster_describe_names_the_active_controller(cli, cluster):
    """`cluster describe` prints "Controller: N" and marks that broker CONTROLLER; an operator
    reads it as the active controller, whichever broker the CLI bootstrapped from."""
    active = cluster.active_controller().node_id
    q = cli("cluster", "quorum", "--format", "json")
    assert q["leader_id"] == active, q
    for n in cluster.nodes:
        d = cli("cluster", "describe", "--format", "json", bootstrap=n.bootstrap)
        assert d["controller_id"] == active, f"asked through {n.name}: controller_id {d['controller_id']}, " \
                                             f"the active controller (quorum leader) is {active}"


# ================================================================== completion, exit codes

def test_completion_bash(cluster, tmp_path):
    r = subprocess.run([str(strata_bin()), "completion", "bash"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "strata" in r.stdout and "_strata()" in r.stdout, r.stderr
    script = tmp_path / "strata.bash"
    script.write_text(r.stdout)
    probe = (f"source {script}; complete -p strata; "
             "COMP_WORDS=(strata to); COMP_CWORD=1; _strata strata to strata; echo \"1:${COMPREPLY[*]}\"; "
             "COMP_WORDS=(strata group re); COMP_CWORD=2; _strata strata re group; echo \"2:${COMPREPLY[*]}\"; "
             "COMP_WORDS=(strata group reset-offsets --to-e); COMP_CWORD=3; "
             "_strata strata --to-e reset-offsets; echo \"3:${COMPREPLY[*]}\"")
    b = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True, timeout=30)
    assert b.returncode == 0, b.stderr
    assert "-F _strata strata" in b.stdout and "1:topic\n" in b.stdout and "2:reset-offsets\n" in b.stdout \
        and "3:--to-earliest\n" in b.stdout, b.stdout
    for shell in ("zsh", "fish"):
        r = subprocess.run([str(strata_bin()), "completion", shell], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "strata" in r.stdout, (shell, r.stderr)
    r = subprocess.run([str(strata_bin()), "completion", "nosh"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r


def test_exit_codes(cli, cluster):
    # 3: nothing listens at the bootstrap address.
    for args in (["topic", "list"], ["group", "list"], ["cluster", "describe"], ["consume", "x", "--from-beginning"],
                 ["produce", "x", "--value", "v"]):
        r = cli(*args, bootstrap="127.0.0.1:1", expect_rc=3)
        assert "127.0.0.1:1" in r.stderr, r.stderr
    # An unreachable first address is skipped when another one answers.
    assert cli("cluster", "describe", "--format", "json",
               bootstrap=f"127.0.0.1:1,{cluster.nodes[1].bootstrap}")["cluster_id"] == cluster.cluster_id

    # 2: arguments that make no request.
    t = f"cli-codes-{uid()}"
    create_topic(cli, t, 2)
    cli("topic", "list", "--no-such-flag", expect_rc=2)
    cli("topic", "list", "--format", "yaml", expect_rc=2)
    cli("no-such-command", expect_rc=2)
    r = cli("topic", "create", "x", "--replica-assignment", "1:2", "--partitions", 2, expect_rc=2)
    assert "--replica-assignment" in r.stderr, r.stderr
    cli("topic", "create", "x", "--replica-assignment", "1:a", expect_rc=2)
    cli("topic", "alter", t, expect_rc=2)
    cli("consume", t, "--offset", "5", expect_rc=2)  # an offset needs one --partition
    cli("consume", t, "--offset", "5", "--partition", 0, "--from-beginning", expect_rc=2)
    cli("produce", t, "--value", "v", "--header", "no-equals-sign", expect_rc=2)
    cli("config", "describe", expect_rc=2)
    cli("topic", "list", bootstrap="", expect_rc=2)

    # 1: the cluster refused, with Kafka's error name.
    for args, name in [
        (["topic", "create", f"rf5-{uid()}", "--partitions", 1, "--replication-factor", 5],
         "INVALID_REPLICATION_FACTOR"),
        (["topic", "create", "bad name!"], "INVALID_TOPIC_EXCEPTION"),
        (["topic", "describe", f"missing-{uid()}"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (["produce", t, "--partition", 9, "--value", "v"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (["produce", f"missing-{uid()}", "--value", "v"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (["consume", t, "--partition", 9, "--from-beginning"], "UNKNOWN_TOPIC_OR_PARTITION"),
        (["group", "delete", f"missing-{uid()}"], "GROUP_ID_NOT_FOUND"),
        (["topic", "add-partitions", t, "--partitions", 1], "INVALID_PARTITIONS"),
    ]:
        r = cli(*args, expect_rc=1)
        assert name in r.stderr and r.stderr.startswith("Error: "), (args, r.stderr)


@pytest.mark.parametrize("args", [
    ["topic", "create", "x", "--replica-assignment", "1:2", "--partitions", "2"],
    ["topic", "alter", "x"],
    ["acl", "create", "--allow-principal", "User:a", "--operation", "Read"],
])
def test_bad_arguments_are_exit_2_even_when_the_cluster_is_down(cli, args):
    """Exit 2 says "fix your command line"; it must not depend on the cluster being up."""
    r = cli(*args, bootstrap="127.0.0.1:1", expect_rc=2)
    assert "cannot reach" not in r.stderr, r.stderr


def test_a_wrong_password_is_a_refusal_not_an_unreachable_cluster(cli, cluster, tmp_path):
    """The cluster answered and refused the login (SASL_AUTHENTICATION_FAILED): exit 1, not 3
    ("could not be reached")."""
    user = f"erin-{uid()}"
    cli("user", "create", user, "--password", "right")
    try:
        good = command_config(tmp_path, user, "right")
        wait_until(lambda: cli.succeeds("cluster", "describe", "--command-config", good,
                                        bootstrap=cluster.sasl_bootstrap), 15, 0.2,
                   message="the new user cannot log in")
        bad = command_config(tmp_path, user, "wrong")
        r = cli("cluster", "describe", "--command-config", bad, bootstrap=cluster.sasl_bootstrap, expect_rc=1)
        assert "Authentication failed" in r.stderr, r.stderr
    finally:
        cli("user", "delete", user)


@pytest.mark.parametrize("args", [["topic", "list", "--format", "json"], ["cluster", "describe"],
                                  ["completion", "bash"]])
def test_output_to_a_closed_pipe_does_not_panic(cluster, args):
    """`strata topic list --format json | head -1` and the like: the reader went away. The
    command may fail, but must not panic (exit 101 with a backtrace)."""
    rfd, wfd = os.pipe()
    os.close(rfd)
    try:
        r = subprocess.run([str(strata_bin()), *args, "--bootstrap-server", cluster.bootstrap]
                           if args[0] != "completion" else [str(strata_bin()), *args],
                           stdout=wfd, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT)
    finally:
        os.close(wfd)
    assert "panicked" not in r.stderr and r.returncode != 101, f"exit {r.returncode}:\n{r.stderr}"
