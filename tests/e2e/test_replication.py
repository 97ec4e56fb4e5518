"""Partition replication on three nodes (issue #14): topics with replication factor 3, real
clients, brokers killed and paused.

What is checked:
- a topic of replication factor 3 has every partition on the three brokers, all in the ISR;
  acks=all produces are acknowledged, and consumers read them from the leader;
- SIGKILL of a leader while an idempotent acks=all producer (librdkafka) writes: another
  in-sync replica takes over, the producer goes on (retries only), and every acknowledged
  value is there exactly once afterwards; the killed broker comes back, catches up and
  rejoins the ISR; kafka-python reads the same records;
- a paused follower (SIGSTOP) leaves the ISR after `replica.lag.time.max.ms`, and acks=all
  writes go on with two; resumed, it catches up and rejoins;
- `min.insync.replicas=3` with a broker down: acks=all is refused with NOT_ENOUGH_REPLICAS and
  nothing is appended; acks=1 is appended but consumers see it only once the ISR is back
  (the high watermark does not move below min.insync.replicas);
- partition reassignment (KIP-455) through the Java Admin client: replicas move to another
  broker and the replication factor grows, the old replica's log is deleted, bad targets are
  refused with Kafka's errors, and the moved data is whole on the new replica;
- the Java producer (idempotent, acks=all) and consumer work through a leader's SIGKILL with
  no error reaching the application;
- operator logs (issue #17): with `logger.format=json` every line is a JSON object, and an
  acks=all produce held up by a paused follower is logged as a slow request with its API and
  client id, while a consumer's long polls are not.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from e2e_util import ck_admin, ck_producer, java_program, wait_until
from test_cluster import Cluster, leaders_seen_by

FAST = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "300",
    "replica.lag.time.max.ms": "3000",
    "replica.fetch.backoff.ms": "200",
}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, extra=FAST)
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


def create_replicated(bootstrap: str, topic: str, partitions: int, config: dict | None = None):
    from confluent_kafka.admin import NewTopic
    admin = ck_admin(bootstrap)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3,
                                       config=config or {})], request_timeout=15)
    for f in fs.values():
        f.result(15)
    wait_until(lambda: len(leaders_seen_by(bootstrap, topic)) == partitions, 15,
               message="the topic did not appear")


def partitions_of(bootstrap: str, topic: str) -> dict:
    """Partition -> (leader, replicas, isr) as Metadata answers."""
    md = ck_admin(bootstrap).list_topics(topic, timeout=10)
    return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in md.topics[topic].partitions.items()}


def read_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 60) -> list[bytes]:
    """Every value of the topic, read from the start of each partition (no group)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replication-reader",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values = []
    deadline = time.time() + timeout
    while len(values) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            values.append(m.value())
    # Anything beyond what was expected (a duplicate) shows up within a moment.
    end = time.time() + 1
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            values.append(m.value())
    c.close()
    return values


def test_acknowledged_records_survive_the_leader_being_killed(cluster):
    boot = cluster.bootstrap
    create_replicated(boot, "r3", 3, {"min.insync.replicas": "2"})
    for p, (leader, replicas, isr) in partitions_of(boot, "r3").items():
        assert replicas == [1, 2, 3] and isr == [1, 2, 3], (p, leader, replicas, isr)

    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err else acked).append(err or msg.value())

    producer = ck_producer(boot, acks="all", **{"enable.idempotence": True, "linger.ms": 5,
                                                 "message.timeout.ms": 60000})
    for i in range(3000):
        producer.produce("r3", value=b"v%d" % i, partition=i % 3, on_delivery=on_delivery)
    assert producer.flush(30) == 0 and not failed, failed

    victim_id = leaders_seen_by(boot, "r3")[0]
    victim = cluster.nodes[victim_id - 1]
    survivors = [n for n in cluster.nodes if n is not victim]
    for i in range(3000, 4500):
        producer.produce("r3", value=b"v%d" % i, partition=i % 3, on_delivery=on_delivery)
        if i == 3300:
            producer.poll(0)
            victim.kill()
        if i % 100 == 0:
            producer.poll(0)
    survivor_boot = ",".join(n.bootstrap for n in survivors)
    wait_until(lambda: leaders_seen_by(survivor_boot, "r3").get(0) not in (None, -1, victim_id), 20,
               message="no other replica took over partition 0")
    assert producer.flush(60) == 0, "acknowledgements outstanding"
    assert not failed, failed[:5]
    assert len(acked) == 4500
    parts = partitions_of(survivor_boot, "r3")
    assert all(victim_id not in isr for _, _, isr in parts.values()), parts

    values = read_all(survivor_boot, "r3", 3, len(acked))
    assert sorted(values) == sorted(acked), "acknowledged values lost or duplicated"

    # The killed broker returns, catches up and rejoins every ISR.
    victim.start(60)
    wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(cluster.bootstrap, "r3").values()),
               30, message="the returning broker did not rejoin the ISR")
    # kafka-python reads the same, whoever leads now.
    from kafka import KafkaConsumer, TopicPartition as KTP
    kc = KafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    kc.assign([KTP("r3", p) for p in range(3)])
    kc.seek_to_beginning()
    got = [m.value for m in kc]
    kc.close()
    assert sorted(got) == sorted(acked)
    for n in cluster.nodes:
        assert not n.panic_lines(), n.log_tail()


def test_a_paused_follower_leaves_the_isr_and_rejoins(cluster):
    boot = cluster.bootstrap
    create_replicated(boot, "lag", 1, {"min.insync.replicas": "2"})
    leader = leaders_seen_by(boot, "lag")[0]
    follower = next(n for n in cluster.nodes if n.node_id != leader and not n.is_active_controller())
    others = ",".join(n.bootstrap for n in cluster.nodes if n is not follower)
    follower.proc.send_signal(signal.SIGSTOP)
    try:
        producer = ck_producer(others, acks="all")
        for i in range(200):
            producer.produce("lag", value=b"x%d" % i)
        # acks=all waits while the paused follower is in the ISR, then goes on without it.
        assert producer.flush(30) == 0
        wait_until(lambda: follower.node_id not in partitions_of(others, "lag")[0][2], 15,
                   message="the paused follower stayed in the ISR")
    finally:
        follower.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: partitions_of(boot, "lag")[0][2] == [1, 2, 3], 30,
               message="the resumed follower did not rejoin the ISR")
    assert sorted(read_all(boot, "lag", 1, 200)) == sorted(b"x%d" % i for i in range(200))


def test_a_produce_held_up_by_a_paused_follower_is_logged_as_a_slow_request_in_json(tmp_path):
    """logger.format=json and logger.slow.request.threshold.ms (issue #17): the leader logs the
    acks=all produce that waited for the paused follower to leave the ISR (a warn line with the
    API, version, client id, address, time and threshold); a consumer's long polls, which wait
    by design, are not logged; every line each node writes is one JSON object."""
    from confluent_kafka import Consumer
    c = Cluster(tmp_path, extra={**FAST, "logger.format": "json", "logger.slow.request.threshold.ms": "1000"})
    try:
        c.start()
        boot = c.bootstrap
        create_replicated(boot, "slow", 1)
        leader_id = leaders_seen_by(boot, "slow")[0]
        leader = next(n for n in c.nodes if n.node_id == leader_id)
        follower = next(n for n in c.nodes if n.node_id != leader_id and not n.is_active_controller())
        others = ",".join(n.bootstrap for n in c.nodes if n is not follower)
        follower.proc.send_signal(signal.SIGSTOP)
        try:
            producer = ck_producer(others, acks="all", **{"client.id": "held-producer"})
            producer.produce("slow", value=b"held")
            assert producer.flush(30) == 0
        finally:
            follower.proc.send_signal(signal.SIGCONT)
        consumer = Consumer({"bootstrap.servers": others, "group.id": "long-pollers", "client.id": "long-poller",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 3000})
        try:
            consumer.subscribe(["slow"])
            got, deadline = [], time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    got.append(m.value())
            assert got == [b"held"]
            end = time.monotonic() + 7  # two more long polls of 3 s on the idle partition
            while time.monotonic() < end:
                consumer.poll(0.5)
        finally:
            consumer.close()

        def events(node) -> list[dict]:
            out = []
            for line in node.log_text().splitlines():
                if not line.strip() or line.startswith("----- [e2e]"):
                    continue  # the harness's own marker lines
                try:
                    event = json.loads(line)
                except ValueError:
                    raise AssertionError(f"{node.name}: not a JSON line: {line!r}")
                assert isinstance(event, dict) and {"timestamp", "level", "target"} <= event.keys(), line
                out.append(event)
            return out

        def slow(client_id):
            return [e for n in c.nodes for e in events(n)
                    if e.get("message") == "slow request" and e.get("client_id") == client_id]

        wait_until(lambda: slow("held-producer"), 10, message="no slow-request line for the held-up produce")
        line = slow("held-producer")[0]
        assert line["level"] == "WARN" and line["api"] == "Produce", line
        assert line["elapsed_ms"] >= 1000 and line["threshold_ms"] == 1000, line
        assert line["peer"] == "/127.0.0.1" and line["principal"] == "User:ANONYMOUS", line
        assert line in [e for e in events(leader) if e.get("message") == "slow request"], "not logged by the leader"
        # Only its fetches: the group's offset commits are acks=all writes to __consumer_offsets,
        # which may rightly be slow while the resumed follower rejoins.
        assert [e for e in slow("long-poller") if e.get("api") == "Fetch"] == [], \
            "a consumer's long polls were logged as slow"
        assert all(events(n) for n in c.nodes)
    finally:
        c.cleanup()


def test_acks_all_is_refused_below_min_insync_replicas(cluster):
    from confluent_kafka import KafkaError
    boot = cluster.bootstrap
    create_replicated(boot, "strict", 1, {"min.insync.replicas": "3"})
    leader = leaders_seen_by(boot, "strict")[0]
    victim = next(n for n in cluster.nodes if n.node_id != leader and not n.is_active_controller())
    others = ",".join(n.bootstrap for n in cluster.nodes if n is not victim)
    victim.kill()
    wait_until(lambda: victim.node_id not in partitions_of(others, "strict")[0][2], 15,
               message="the killed follower stayed in the ISR")
    errors = []
    p = ck_producer(others, acks="all", **{"message.timeout.ms": 3000, "retries": 2})
    p.produce("strict", value=b"refused", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors[0]
    # acks=1 does not ask for the ISR, but while the ISR is below min.insync.replicas the high
    # watermark stays (Kafka's isUnderMinIsr): consumers see the record once the ISR is back.
    one = ck_producer(others, acks=1)
    one.produce("strict", value=b"one")
    assert one.flush(20) == 0
    assert read_all(others, "strict", 1, 1, timeout=3) == [], "committed below min.insync.replicas"
    victim.start(60)
    wait_until(lambda: partitions_of(others, "strict")[0][2] == [1, 2, 3], 30, message="not back in the ISR")
    assert read_all(others, "strict", 1, 1) == [b"one"], "the refused acks=all record was appended"


@pytest.mark.timeout(240)
def test_a_group_keeps_its_offsets_when_its_coordinator_is_killed(tmp_path):
    """The 30,000-record, three-member group of test_groups.py on three nodes, the topic and
    `__consumer_offsets` replicated three times: SIGKILL of the group's coordinator moves the
    coordination to the new leader of its offsets partition, which loads the group from its
    replica; every record is consumed and the committed offsets reach the log ends."""
    import uuid
    from test_cluster import java_string_hash
    from test_groups import PARTS, Member, check_no_fatal, committed_offsets, produce_spread, stop_members

    c = Cluster(tmp_path, extra={**FAST, "group.initial.rebalance.delay.ms": "0"})
    members = []
    try:
        c.start()
        boot = c.bootstrap
        create_replicated(boot, "grouped", PARTS, {"min.insync.replicas": "2"})
        per_part = 30_000 // PARTS
        produce_spread(boot, "grouped", per_part)
        group = f"coordinated-{uuid.uuid4().hex[:8]}"
        pace = tmp_path / "pace"
        pace.write_text("slow\n")
        members = [Member(tmp_path, f"m{i}", boot, "grouped", group, "classic", "range", pace) for i in range(3)]
        everyone = lambda: "\n".join(m.describe() for m in members)  # noqa: E731

        def balanced():
            check_no_fatal(members)
            a = [m.assignment() for m in members]
            return (all(x is not None and len(x) == 2 for x in a)
                    and all(m.records_since_last_assignment() > 0 for m in members))
        wait_until(balanced, 90, 0.1, lambda: f"group never balanced\n{everyone()}")
        offsets_partition = abs(java_string_hash(group)) % 50
        parts = partitions_of(boot, "__consumer_offsets")
        coordinator, _, isr = parts[offsets_partition]
        assert isr == [1, 2, 3], parts[offsets_partition]
        victim = c.nodes[coordinator - 1]
        before = committed_offsets(boot, group, "grouped")
        assert sum(o for o in before.values() if o > 0) > 0, before
        victim.kill()
        survivors = ",".join(n.bootstrap for n in c.nodes if n is not victim)
        wait_until(lambda: partitions_of(survivors, "__consumer_offsets")[offsets_partition][0] not in (-1, coordinator),
                   20, message="no new coordinator")
        # The new coordinator has every offset committed before the kill (none goes back).
        after = {}

        def reloaded():
            try:
                after.update(committed_offsets(survivors, group, "grouped"))
            except Exception:  # noqa: BLE001 - the coordinator is moving
                return False
            return True
        wait_until(reloaded, 20, 0.5, message="the new coordinator does not answer OffsetFetch")
        assert all(after[p] >= before[p] for p in before), (before, after)
        pace.unlink()
        want = {(p, o) for p in range(PARTS) for o in range(per_part)}

        def all_consumed():
            check_no_fatal(members)
            return want <= set().union(*(m.records() for m in members))
        wait_until(all_consumed, 90, 0.2, lambda: f"not every record consumed\n{everyone()}")
        wait_until(lambda: committed_offsets(survivors, group, "grouped") == {p: per_part for p in range(PARTS)},
                   30, 0.3, lambda: f"committed offsets {committed_offsets(survivors, group, 'grouped')}")
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        stop_members(members)
        c.cleanup()


def test_preferred_leaders_are_elected_on_request(cluster):
    """ElectLeaders (KIP-460) through confluent-kafka's admin client, sent to a broker that is
    not the active controller (it forwards): after a leader was killed and came back, a
    preferred election gives it its partition back; asked again, ELECTION_NOT_NEEDED; an
    unclean election of a partition that has a leader is not needed either."""
    from confluent_kafka import ElectionType, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient
    boot = cluster.bootstrap
    create_replicated(boot, "elect", 1, {"min.insync.replicas": "2"})
    preferred = partitions_of(boot, "elect")[0][0]
    victim = cluster.nodes[preferred - 1]
    victim.kill()
    others = ",".join(n.bootstrap for n in cluster.nodes if n is not victim)
    wait_until(lambda: partitions_of(others, "elect")[0][0] not in (-1, preferred), 20, message="no failover")
    victim.start(60)
    # Asked of the brokers that stayed up: the returning one may answer from its own metadata
    # before it has caught up.
    wait_until(lambda: partitions_of(others, "elect")[0][2] == [1, 2, 3], 30, message="not back in the ISR")
    assert partitions_of(others, "elect")[0][0] != preferred
    via = next(n for n in cluster.nodes if not n.is_active_controller())
    admin = AdminClient({"bootstrap.servers": via.bootstrap})
    result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("elect", 0)]).result(30)
    assert result[TopicPartition("elect", 0)] is None, result
    wait_until(lambda: partitions_of(others, "elect")[0][0] == preferred, 10, message="the preferred replica does not lead")
    again = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("elect", 0)]).result(30)
    assert again[TopicPartition("elect", 0)].code() == KafkaError.ELECTION_NOT_NEEDED, again
    unclean = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition("elect", 0)]).result(30)
    assert unclean[TopicPartition("elect", 0)].code() == KafkaError.ELECTION_NOT_NEEDED, unclean
    missing = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("elect", 7)]).result(30)
    assert missing[TopicPartition("elect", 7)].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, missing


JAVA_DIR = Path(__file__).parent / "java"


def java_checks(stdout: str, stderr: str, returncode: int) -> dict:
    """The {check: result} of a Java driver's CHECK lines; fails unless it ran to DONE."""
    lines = stdout.splitlines()
    assert returncode == 0 and "DONE" in lines, f"java exited {returncode}\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return {d["check"]: d["result"] for d in (json.loads(x[6:]) for x in lines if x.startswith("CHECK "))}


def reassign(program: list[str], bootstrap: str, topic: str, *targets: str) -> dict:
    r = subprocess.run(program + [bootstrap, topic, *targets], capture_output=True, text=True, timeout=120)
    return java_checks(r.stdout, r.stderr, r.returncode)


@pytest.mark.java
@pytest.mark.timeout(300)
def test_partitions_move_to_other_brokers_by_reassignment(cluster, tmp_path):
    """AlterPartitionReassignments / ListPartitionReassignments (KIP-455) from kafka-clients 4's
    Admin, sent to any broker (those that are not the active controller forward them): one
    partition moves from brokers [1, 2] to [3, 2] (its leader, 1, leaves), the other grows
    from two replicas to three. The reassignments complete once the new replicas caught up,
    broker 1 deletes the log it no longer holds, and the data is whole on broker 3 alone."""
    from confluent_kafka.admin import NewTopic
    boot = cluster.bootstrap
    admin = ck_admin(boot)
    fs = admin.create_topics([NewTopic("moving", num_partitions=2, replica_assignment=[[1, 2], [2, 1]],
                                       config={"min.insync.replicas": "1"})], request_timeout=15)
    for f in fs.values():
        f.result(15)
    wait_until(lambda: len(leaders_seen_by(boot, "moving")) == 2, 15, message="the topic did not appear")
    acked = []
    producer = ck_producer(boot, acks="all", **{"enable.idempotence": True, "linger.ms": 5})
    for i in range(4000):
        producer.produce("moving", value=b"m%d" % i, partition=i % 2,
                         on_delivery=lambda err, msg: err or acked.append(msg.value()))
    assert producer.flush(30) == 0 and len(acked) == 4000

    program = java_program("4", JAVA_DIR / "StrataReassign.java", tmp_path / "java")
    checks = reassign(program, boot, "moving", "0=3,2", "1=2,3,1")
    assert (checks["alter-0"], checks["alter-1"]) == ("ok", "ok"), checks
    after = checks["after"]
    assert after["0"]["replicas"] == [3, 2] and sorted(after["0"]["isr"]) == [2, 3], after
    assert after["0"]["leader"] in (2, 3), after
    assert after["1"]["replicas"] == [2, 3, 1] and sorted(after["1"]["isr"]) == [1, 2, 3], after
    wait_until(lambda: not list(cluster.nodes[0].data_dir.rglob("moving-0")), 15,
               message="broker 1 kept the log of the partition that moved away")

    bad = reassign(program, boot, "moving", "0=3,9")
    assert bad["alter-0"].endswith("InvalidReplicaAssignmentException"), bad
    none = reassign(program, boot, "moving", "1=cancel")
    assert none["alter-1"].endswith("NoReassignmentInProgressException"), none

    # Broker 2 goes: partition 0 has only its new replica, broker 3, and every record is there.
    cluster.nodes[1].kill()
    others = ",".join(n.bootstrap for n in cluster.nodes if n.node_id != 2)
    wait_until(lambda: partitions_of(others, "moving")[0][0] == 3, 20, message="broker 3 does not lead partition 0")
    values = read_all(others, "moving", 2, len(acked))
    assert sorted(values) == sorted(acked), "records lost or duplicated by the move"
    for n in cluster.nodes:
        assert not n.panic_lines(), n.log_tail()


@pytest.mark.java
@pytest.mark.timeout(300)
def test_java_clients_carry_on_through_a_leader_failover(cluster, tmp_path):
    """kafka-clients 4: an idempotent acks=all producer and an assign-mode consumer, while the
    leader of partition 0 is SIGKILLed: every send is acknowledged (no exception reaches a
    callback), the consumer reads each acknowledged value exactly once."""
    boot = cluster.bootstrap
    create_replicated(boot, "jfail", 3, {"min.insync.replicas": "2"})
    program = java_program("4", JAVA_DIR / "StrataFailover.java", tmp_path / "java")
    proc = subprocess.Popen(program + [boot, "jfail", "3", "6000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        head = []
        for line in proc.stdout:
            head.append(line)
            if line.strip() == "STARTED":
                break
        assert head and head[-1].strip() == "STARTED", "".join(head)
        victim = cluster.nodes[leaders_seen_by(boot, "jfail")[0] - 1]
        victim.kill()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    checks = java_checks("".join(head) + out, err, proc.returncode)
    assert checks["produced"] == {"acked": 6000, "failures": "{}"}, checks
    assert checks["consumed"] == {"records": 6000, "distinct": 6000, "all_acked_read": True}, checks


@pytest.mark.timeout(180)
def test_consumers_fetch_from_a_replica_in_their_rack(tmp_path):
    """KIP-392 with `replica.selector.class` = Kafka's RackAwareReplicaSelector and one rack per
    broker: a librdkafka consumer whose `client.rack` is a follower's rack is sent there by the
    leader (its statistics name that broker as the one it fetches from), reads every record,
    and keeps reading new ones as the follower's high watermark moves."""
    c = Cluster(tmp_path, extra={**FAST, "replica.selector.class":
                                 "org.apache.kafka.common.replica.RackAwareReplicaSelector"})
    for n in c.nodes:
        n.config.write_text(n.config.read_text() + f"broker.rack=rack{n.node_id}\n")
    try:
        c.start()
        boot = c.bootstrap
        create_replicated(boot, "racks", 1, {"min.insync.replicas": "2"})
        wait_until(lambda: partitions_of(boot, "racks")[0][2] == [1, 2, 3], 20, message="ISR not full")
        leader = partitions_of(boot, "racks")[0][0]
        follower = next(n.node_id for n in c.nodes if n.node_id != leader)
        producer = ck_producer(boot, acks="all", **{"linger.ms": 5})
        for i in range(1000):
            producer.produce("racks", value=b"k%d" % i, partition=0)
        assert producer.flush(30) == 0

        from confluent_kafka import Consumer, TopicPartition
        fetched_from = []

        def stats(raw):
            part = json.loads(raw).get("topics", {}).get("racks", {}).get("partitions", {}).get("0")
            if part:
                fetched_from.append((part.get("leader"), part.get("broker")))

        consumer = Consumer({"bootstrap.servers": boot, "group.id": "rack-reader", "enable.auto.commit": False,
                             "client.rack": f"rack{follower}", "statistics.interval.ms": 200,
                             "stats_cb": stats, "fetch.wait.max.ms": 100})
        consumer.assign([TopicPartition("racks", 0, 0)])
        values = []

        def read(n):
            deadline = time.time() + 40
            while len(values) < n and time.time() < deadline:
                m = consumer.poll(0.2)
                if m is not None and m.error() is None:
                    values.append(m.value())
            return len(values) >= n

        assert read(1000), f"read {len(values)} of 1000"
        for i in range(1000, 1500):
            producer.produce("racks", value=b"k%d" % i, partition=0)
        assert producer.flush(30) == 0
        assert read(1500), f"read {len(values)} of 1500 after the second batch"
        wait_until(lambda: (leader, follower) in fetched_from, 10,
                   message=lambda: f"the consumer never fetched from broker {follower}: {fetched_from[-5:]}")
        consumer.close()
        assert values == [b"k%d" % i for i in range(1500)]
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def log_bytes(node, topic_partition: str) -> int:
    """Bytes of a replica's segment files on `node`'s disk (0 while it has none)."""
    return sum(f.stat().st_size for f in node.data_dir.rglob(f"{topic_partition}/*.log"))


def alter_configs(bootstrap: str, resources: list):
    """IncrementalAlterConfigs, one resource per call (librdkafka sends a broker's to it alone)."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for r in resources:
        for f in admin.incremental_alter_configs([r]).values():
            f.result(30)


@pytest.mark.java
@pytest.mark.timeout(300)
def test_replication_throttles_hold_back_a_new_replica(cluster, tmp_path):
    """KIP-73 replication throttles, set at run time as kafka-configs.sh / kafka-reassign-partitions.sh
    --throttle do (IncrementalAlterConfigs on the brokers and the topic): a replica added by a
    reassignment copies ~5 MB at no more than the throttled rate's pace, first throttled on
    the leader side, then on the follower side; with the throttles removed it catches up and
    the reassignment completes. Broker 1's DescribeConfigs shows the dynamic rate."""
    from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic,
                                       ResourceType)
    boot = cluster.bootstrap
    admin = ck_admin(boot)  # kept alive until the futures complete
    fs = admin.create_topics([NewTopic("thr", num_partitions=1, replica_assignment=[[1]])], request_timeout=15)
    for f in fs.values():
        f.result(15)
    wait_until(lambda: len(leaders_seen_by(boot, "thr")) == 1, 15, message="the topic did not appear")
    producer = ck_producer(boot, acks="all", **{"linger.ms": 20})
    for i in range(5000):
        producer.produce("thr", value=b"%05d" % i + b"x" * 995, partition=0)
    assert producer.flush(30) == 0
    total = log_bytes(cluster.nodes[0], "thr-0")
    assert total >= 5_000_000, total

    def entry(name, value=None):
        op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
        return ConfigEntry(name, value, incremental_operation=op)

    rate = "20000"
    alter_configs(boot, [ConfigResource(ResourceType.BROKER, "1",
                                        incremental_configs=[entry("leader.replication.throttled.rate", rate)]),
                         ConfigResource(ResourceType.TOPIC, "thr",
                                        incremental_configs=[entry("leader.replication.throttled.replicas", "*")])])
    first_broker = ck_admin(cluster.nodes[0].bootstrap)
    described = first_broker.describe_configs([ConfigResource(ResourceType.BROKER, "1")])
    cfg = next(iter(described.values())).result(30)["leader.replication.throttled.rate"]
    assert cfg.value == rate and cfg.source == 2 and not cfg.is_read_only, (cfg.value, cfg.source)

    program = java_program("4", JAVA_DIR / "StrataReassign.java", tmp_path / "java")
    assert reassign(program, boot, "thr", "0=1,2", "--no-wait")["alter-0"] == "ok"
    new_replica = cluster.nodes[1]

    def held_back(limit: int, seconds: float) -> int:
        """The new replica's size, checked for `seconds`: it must stay below `limit`."""
        end = time.monotonic() + seconds
        size = 0
        while time.monotonic() < end:
            size = log_bytes(new_replica, "thr-0")
            assert size < limit, f"{size} bytes copied despite the throttle (limit {limit})"
            assert partitions_of(boot, "thr")[0][2] == [1], "the throttled replica joined the ISR"
            time.sleep(0.2)
        return size

    # Leader side: one fetch's worth (replica.fetch.max.bytes, 1 MiB) passes before the meter
    # says the rate is exceeded; then almost nothing for the ~50 s the rate needs to fall back.
    first = held_back(1_400_000, 4)
    # Follower side instead (a fresh meter: one fetch's worth, and maybe one more fetched as
    # the leader's throttle goes before this broker has the topic's follower list).
    alter_configs(boot, [ConfigResource(ResourceType.BROKER, "2",
                                        incremental_configs=[entry("follower.replication.throttled.rate", rate)]),
                         ConfigResource(ResourceType.TOPIC, "thr",
                                        incremental_configs=[entry("follower.replication.throttled.replicas", "*")]),
                         ConfigResource(ResourceType.BROKER, "1",
                                        incremental_configs=[entry("leader.replication.throttled.rate")]),
                         ConfigResource(ResourceType.TOPIC, "thr",
                                        incremental_configs=[entry("leader.replication.throttled.replicas")])])
    held_back(first + 2_400_000, 4)
    # No throttle: the replica catches up, and the reassignment completes.
    alter_configs(boot, [ConfigResource(ResourceType.BROKER, "2",
                                        incremental_configs=[entry("follower.replication.throttled.rate")])])
    wait_until(lambda: partitions_of(boot, "thr")[0][2] == [1, 2], 30,
               message=lambda: f"not caught up: {log_bytes(new_replica, 'thr-0')} of {total} bytes")
    assert log_bytes(new_replica, "thr-0") == total


@pytest.mark.java
@pytest.mark.timeout(240)
def test_a_replica_leaving_an_isr_below_min_insync_replicas_stays_eligible(cluster, tmp_path):
    """KIP-966 as kafka-clients 4's describeTopics shows it (DescribeTopicPartitions): with
    `min.insync.replicas=3`, a follower killed leaves the ISR but becomes an eligible leader
    replica (it holds every acks=all record); back and caught up, it rejoins the ISR and the
    ELR empties. An acks=all write is refused with NOT_ENOUGH_REPLICAS meanwhile."""
    boot = cluster.bootstrap
    create_replicated(boot, "elr", 1, {"min.insync.replicas": "3"})
    wait_until(lambda: partitions_of(boot, "elr")[0][2] == [1, 2, 3], 20, message="ISR not full")
    program = java_program("4", JAVA_DIR / "StrataReassign.java", tmp_path / "java")
    leader = partitions_of(boot, "elr")[0][0]
    victim = next(n for n in cluster.nodes if n.node_id != leader)
    victim.kill()
    others = ",".join(n.bootstrap for n in cluster.nodes if n is not victim)

    def described():
        return reassign(program, others, "elr")["after"]["0"]

    wait_until(lambda: victim.node_id not in partitions_of(others, "elr")[0][2], 20, message="still in the ISR")
    left = {}

    def eligible():
        left["d"] = described()
        return left["d"]["elr"] == [victim.node_id] and victim.node_id not in left["d"]["isr"]

    wait_until(eligible, 30, interval=0.5, message=lambda: f"not an eligible leader replica: {left.get('d')}")
    from confluent_kafka import KafkaError
    errors = []
    producer = ck_producer(others, acks="all", **{"message.timeout.ms": 5000, "retries": 0})
    producer.produce("elr", value=b"refused", partition=0, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors

    victim.start(60)
    # Each broker answers from its own metadata, which may trail the other's by a moment.
    last = {}

    def rejoined():
        last["d"] = described()
        return last["d"]["elr"] == [] and sorted(last["d"]["isr"]) == [1, 2, 3]

    wait_until(rejoined, 40, interval=0.5, message=lambda: f"not back in the ISR: {last.get('d')}")


@pytest.mark.timeout(180)
def test_delete_records_waits_for_every_replica(cluster):
    """DeleteRecords on a replicated partition (confluent-kafka's admin): the answer comes once
    every live replica has moved its log start (Kafka's DelayedDeleteRecords), so when the
    leader is then killed, the new leader's log starts at the deleted offset too."""
    from confluent_kafka import Consumer, TopicPartition
    boot = cluster.bootstrap
    create_replicated(boot, "trim", 1, {"min.insync.replicas": "2"})
    producer = ck_producer(boot, acks="all", **{"linger.ms": 5})
    for i in range(1000):
        producer.produce("trim", value=b"t%d" % i, partition=0)
    assert producer.flush(30) == 0
    admin = ck_admin(boot)
    done = admin.delete_records([TopicPartition("trim", 0, 600)], request_timeout=30, operation_timeout=30)
    result = done[TopicPartition("trim", 0, 600)].result(30)
    assert result.low_watermark == 600, result
    victim = cluster.nodes[partitions_of(boot, "trim")[0][0] - 1]
    victim.kill()
    others = ",".join(n.bootstrap for n in cluster.nodes if n is not victim)
    wait_until(lambda: partitions_of(others, "trim")[0][0] not in (-1, victim.node_id), 20, message="no failover")
    c = Consumer({"bootstrap.servers": others, "group.id": "trim-reader"})
    low, high = c.get_watermark_offsets(TopicPartition("trim", 0), timeout=10)
    c.close()
    assert (low, high) == (600, 1000), (low, high)


def describe_topic_partitions(port: int, topic: str) -> dict:
    """DescribeTopicPartitions v0 (KIP-966's view) of `topic`'s partition 0, sent raw so that
    it can be polled quickly: leader, ISR, ELR and last known ELR."""
    import struct

    from e2e_util import compact_str, flexible_request, uvarint

    body = uvarint(2) + compact_str(topic) + b"\x00" + struct.pack(">i", 100) + struct.pack(">b", -1) + b"\x00"
    r = flexible_request(port, 75, 0, body)
    r.take(">i")  # throttle
    assert r.array_len() == 1
    error = r.take(">h")
    r.compact_string()
    r.i += 16 + 1  # topic id, is_internal
    if error != 0:  # a broker that has not seen the topic yet
        return {"topic_error": error}
    assert r.array_len() >= 1

    def ids():
        n = r.array_len()
        return [r.take(">i") for _ in range(max(n, 0))]

    part = {"error": r.take(">h"), "partition": r.take(">i"), "leader": r.take(">i"), "leader_epoch": r.take(">i")}
    part.update(replicas=ids(), isr=sorted(ids()), elr=sorted(ids()), last_known_elr=ids(), offline=ids())
    return part


@pytest.mark.timeout(240)
def test_an_unclean_shutdown_leaves_the_eligible_replicas_and_the_last_leader_recovers(tmp_path):
    """KIP-966 across unclean and clean shutdowns, with the controllers on their own nodes so
    the partition's brokers can all be down while the quorum runs. A partition on brokers
    A (leader) and B, `min.insync.replicas=2`:
    - B is SIGKILLed, then A: both become eligible leader replicas (ELR), the ISR is empty and
      A is the last known leader;
    - B comes back: it crashed (no clean-shutdown record), so it may have lost what it had not
      fsynced; it leaves the ELR and does not lead (Kafka's `handleBrokerUncleanShutdown`);
    - A comes back, crashed too: no eligible replica is left, so the last known leader leads
      again, and B catches up and rejoins the ISR; every acknowledged record is there;
    - B stops cleanly (SIGTERM) and A is SIGKILLed: B comes back still eligible and leads
      with every acknowledged record."""
    from confluent_kafka.admin import NewTopic
    from test_cluster_roles import make_cluster

    controllers, brokers = make_cluster(tmp_path)
    for n in controllers + brokers:
        n.config.write_text(n.config.read_text() + "".join(f"{k}={v}\n" for k, v in FAST.items()))
    a, b = brokers
    try:
        for n in controllers + brokers:
            n.spawn()
        for n in controllers + brokers:
            n.wait_ready(60)
        admin = ck_admin(a.bootstrap)
        fs = admin.create_topics([NewTopic("kip966", num_partitions=1, replica_assignment=[[a.node_id, b.node_id]],
                                           config={"min.insync.replicas": "2"})], request_timeout=15)
        for f in fs.values():
            f.result(15)
        wait_until(lambda: describe_topic_partitions(a.port, "kip966").get("isr") == [a.node_id, b.node_id], 20,
                   message="ISR not full")
        producer = ck_producer(a.bootstrap, acks="all", **{"enable.idempotence": True})
        for i in range(500):
            producer.produce("kip966", value=b"v%d" % i, partition=0)
        assert producer.flush(30) == 0
        acked = {b"v%d" % i for i in range(500)}

        def seen(node, want):
            last = {}

            def ok():
                last["d"] = describe_topic_partitions(node.port, "kip966")
                return all(last["d"].get(k) == v for k, v in want.items())
            wait_until(ok, 40, interval=0.2, message=lambda: f"{node.name}: {last.get('d')} is not {want}")

        b.kill()
        seen(a, {"leader": a.node_id, "isr": [a.node_id], "elr": [b.node_id]})
        a.kill()
        b.start(60)
        # Whether A was fenced before or after B registered, B is out of the ELR and A alone is
        # eligible: no leader while A is down.
        seen(b, {"leader": -1, "isr": [], "elr": [a.node_id], "last_known_elr": [a.node_id]})
        assert "leaves the eligible leader replicas" in "".join(c.log_text() for c in controllers)

        a.start(60)
        seen(b, {"leader": a.node_id, "isr": [a.node_id, b.node_id], "elr": [], "last_known_elr": []})
        assert sorted(read_all(b.bootstrap, "kip966", 1, len(acked))) == sorted(acked)

        b.stop()
        seen(a, {"leader": a.node_id, "isr": [a.node_id], "elr": [b.node_id]})
        a.kill()
        b.start(60)
        seen(b, {"leader": b.node_id, "isr": [b.node_id]})
        assert sorted(read_all(b.bootstrap, "kip966", 1, len(acked))) == sorted(acked)
        for n in controllers + brokers:
            assert not n.panic_lines(), n.log_tail()
    finally:
        for n in controllers + brokers:
            n.cleanup()
