"""Consumer groups with confluent-kafka (librdkafka 2.16): failover of group members
(SIGKILL, clean leave) with the range and cooperative-sticky assignors and with the
KIP-848 consumer protocol, committed offsets across broker restarts, static membership,
and ListGroups / DescribeGroups / DeleteGroups (confluent-kafka and kafka-python admin).

The failover test runs every group member in its own process: this file doubles as the
member program (`python test_groups.py member ...`, see `member_main`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

if __name__ != "__main__":
    import pytest
    from e2e_util import (ck_admin, ck_conf, ck_create_topic, ck_producer, fail_unless,
                          venv_python, wait_until)

PARTS = 6
SESSION_MS = 6000
# Brokers for group tests: no 3 s initial-rebalance wait; KIP-848 members get the same
# 6 s session timeout as the classic members (the KIP-848 session timeout is server-side).
GROUP_SETS = ("group.initial.rebalance.delay.ms=0",
              f"group.consumer.session.timeout.ms={SESSION_MS}",
              "group.consumer.heartbeat.interval.ms=1000")


# ============================================================ member process
# python test_groups.py member <bootstrap> <topic> <group> <protocol> <strategy> <out> <pace>
#   Subscribes to <topic> in <group>, and after every consumed batch appends the
#   batch's records ("R <partition> <offset>") to <out>, flushes, then commits the
#   consumed positions synchronously (enable.auto.commit=false). While the file <pace>
#   exists it reads at most 50 records per 50 ms (so that a failover happens
#   mid-topic). Other lines: "A <p,p,..>" when the assignment changes, "C <error>" for a
#   failed commit, "E <error>" for a fatal error (exit 2), "X" after a clean close on
#   SIGTERM (LeaveGroup for a dynamic member).

def member_main(argv):
    import ctypes
    try:  # die with the test process
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except OSError:
        pass
    from confluent_kafka import Consumer, KafkaError, KafkaException
    bootstrap, topic, group, protocol, strategy, out_path, pace_path = argv
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": Path(out_path).stem,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    }
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1000,
                     "max.poll.interval.ms": 30000, "partition.assignment.strategy": strategy})
    out = open(out_path, "a", buffering=1)

    def die(err):
        out.write(f"E {err}\n")
        out.flush()
        os._exit(2)

    conf["error_cb"] = lambda err: (err.fatal() or err.code() == KafkaError._FATAL) and die(err)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))
    c = Consumer(conf)
    c.subscribe([topic])
    last_assignment = None
    try:
        while not stop["flag"]:
            pacing = os.path.exists(pace_path)
            msgs = c.consume(num_messages=50 if pacing else 5000, timeout=0.2)
            assignment = sorted(tp.partition for tp in c.assignment())
            if assignment != last_assignment:
                out.write("A " + ",".join(map(str, assignment)) + "\n")
                last_assignment = assignment
            recs = []
            for m in msgs:
                err = m.error()
                if err is None:
                    recs.append(f"R {m.partition()} {m.offset()}\n")
                elif err.fatal() or err.code() == KafkaError._FATAL:
                    die(err)
            if recs:
                out.write("".join(recs))
                out.flush()
                try:
                    c.commit(asynchronous=False)
                except KafkaException as e:  # e.g. REBALANCE_IN_PROGRESS: re-read later
                    out.write(f"C {e.args[0]}\n")
            if pacing:
                time.sleep(0.05)
        c.close()
        out.write("X\n")
    except KafkaException as e:
        die(e.args[0])
    out.close()


if __name__ == "__main__":
    if sys.argv[1] == "member":
        member_main(sys.argv[2:])
        sys.exit(0)
    sys.exit(f"usage: {sys.argv[0]} member ...")


# ============================================================ test helpers

def librdkafka_version():
    import confluent_kafka
    v = confluent_kafka.libversion()[1]
    return (v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff


def produce_spread(bootstrap, topic, per_partition, parts=PARTS):
    """per_partition records to each partition (value "p-i"); returns high watermarks."""
    p = ck_producer(bootstrap, linger_ms=20, batch_num_messages=2000)
    errors = []
    for i in range(per_partition):
        for part in range(parts):
            p.produce(topic, value=f"{part}-{i}".encode(), partition=part,
                      on_delivery=lambda e, m: e and errors.append(e))
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "producer did not flush within 60 s"
    assert not errors, f"delivery errors: {errors[:5]}"
    return {part: per_partition for part in range(parts)}


class Member:
    """A group member in its own process (see member_main)."""

    def __init__(self, workdir: Path, name, bootstrap, topic, group, protocol, strategy, pace):
        self.name = name
        self.out = workdir / f"{name}.out"
        self.stderr = workdir / f"{name}.stderr"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [venv_python(), __file__, "member", bootstrap, topic, group, protocol, strategy,
                 str(self.out), str(pace)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    def lines(self):
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]

    def records(self):
        out = set()
        for l in self.lines():
            if l.startswith("R "):
                _, p, o = l.split()
                out.add((int(p), int(o)))
        return out

    def assignment(self):
        a = [l for l in self.lines() if l.startswith("A ")]
        return None if not a else {int(x) for x in a[-1][2:].split(",") if x}

    def records_since_last_assignment(self):
        n = 0
        for l in self.lines():
            if l.startswith("A "):
                n = 0
            elif l.startswith("R "):
                n += 1
        return n

    def fatal(self):
        return [l for l in self.lines() if l.startswith("E ")]

    def describe(self):
        ls = self.lines()
        tail = "\n".join(l for l in ls if not l.startswith("R "))[-2000:]
        try:
            err = self.stderr.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            err = ""
        return (f"--- {self.name}: exit {self.proc.poll()}, {len(self.records())} records, "
                f"non-record lines:\n{tail}\nstderr:\n{err}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def terminate(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def stop_members(members):
    """Closes every member (SIGTERM: LeaveGroup), killing those that do not exit in 15 s."""
    for m in members:
        m.terminate()
    for m in members:
        try:
            m.proc.wait(15)
        except subprocess.TimeoutExpired:
            m.kill()


class MemberFatal(AssertionError):
    """A member process hit a fatal client error."""


def check_no_fatal(members):
    for m in members:
        if m.fatal():
            raise MemberFatal(f"member {m.name} hit a fatal error: {m.fatal()}\n" +
                                 "\n".join(x.describe() for x in members))


def committed_offsets(bootstrap, group, topic, parts=PARTS):
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    admin = ck_admin(bootstrap)
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(parts)])
    res = admin.list_consumer_group_offsets([req], request_timeout=15)[group].result(20)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def describe_group(admin, group, timeout=20):
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout)


def group_consumer(bootstrap, group, **extra):
    from confluent_kafka import Consumer
    conf = dict(group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                fetch_wait_max_ms=100, session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000)
    conf.update(extra)  # names with "_" for "."
    return Consumer(ck_conf(bootstrap, **conf))


# ============================================================ 1. failover

@pytest.mark.timeout(150)
@pytest.mark.parametrize("protocol,strategy", [
    pytest.param("classic", "range", id="classic-range"),
    pytest.param("classic", "cooperative-sticky", id="classic-cooperative-sticky"),
    pytest.param("consumer", "-", id="kip848-consumer"),
])
def test_failover_every_record_consumed(broker_factory, topic_name, tmp_path, protocol, strategy):
    """30,000 records on 6 partitions, three members in their own processes (sync commit
    after each processed batch). SIGKILL one member (no LeaveGroup), close() another (clean
    LeaveGroup): the survivor owns all 6 partitions within session timeout + one
    rebalance, and every record is consumed at least once; the final committed offsets are
    the log ends and the killed member is gone from the group."""
    if protocol == "consumer" and librdkafka_version() < (2, 12, 0):
        pytest.skip(f"librdkafka {librdkafka_version()} has no KIP-848 consumer (2.12+)")
    per_part = 30_000 // PARTS
    broker = broker_factory(*GROUP_SETS)
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    produce_spread(broker.bootstrap, topic_name, per_part)
    group = f"failover-{uuid.uuid4().hex[:8]}"
    pace = tmp_path / "pace"
    pace.write_text("slow\n")
    members = [Member(tmp_path, f"m{i}", broker.bootstrap, topic_name, group, protocol, strategy,
                      pace) for i in range(3)]
    doomed, leaver, survivor = members
    everyone = lambda: "\n".join(m.describe() for m in members)  # noqa: E731
    try:
        # all three own two partitions each and have consumed from them
        def balanced():
            check_no_fatal(members)
            for m in members:
                assert m.proc.poll() is None, f"{m.name} exited early\n{everyone()}"
            a = [m.assignment() for m in members]
            return (all(x is not None and len(x) == 2 for x in a)
                    and set().union(*a) == set(range(PARTS))
                    and all(m.records_since_last_assignment() > 0 for m in members))
        wait_until(balanced, 60, 0.1, lambda: f"group never balanced 2/2/2\n{everyone()}")

        doomed.kill()                      # SIGKILL: no LeaveGroup, the session must expire
        t_kill = time.monotonic()
        leaver.terminate()                 # close(): LeaveGroup
        wait_until(lambda: leaver.proc.poll() is not None, 30, 0.1,
                   lambda: f"leaver did not close\n{everyone()}")
        assert leaver.proc.returncode == 0 and leaver.lines()[-1] == "X", leaver.describe()

        def survivor_owns_all():
            check_no_fatal(members)
            return survivor.assignment() == set(range(PARTS))
        # session timeout + one rebalance (+ slack for a loaded 2-core machine)
        limit = SESSION_MS / 1000 + 12
        wait_until(survivor_owns_all, limit, 0.1, lambda: (
            f"survivor did not own all {PARTS} partitions within {limit}s of the SIGKILL\n"
            f"{everyone()}"))
        takeover = time.monotonic() - t_kill
        pace.unlink()

        want = {(p, o) for p in range(PARTS) for o in range(per_part)}

        def all_consumed():
            check_no_fatal(members)
            return want <= set().union(*(m.records() for m in members))
        wait_until(all_consumed, 60, 0.2, lambda: (
            f"not every record consumed: missing "
            f"{len(want - set().union(*(m.records() for m in members)))}\n{everyone()}"))
        got = set().union(*(m.records() for m in members))
        fail_unless(got == want, lambda: f"records outside the log: {sorted(got - want)[:10]}")

        # the survivor commits after every batch: the group's offsets reach the log end
        wait_until(lambda: committed_offsets(broker.bootstrap, group, topic_name)
                   == {p: per_part for p in range(PARTS)}, 20, 0.3,
                   lambda: f"committed offsets {committed_offsets(broker.bootstrap, group, topic_name)}")
        desc = describe_group(ck_admin(broker.bootstrap), group)
        assert [m.client_id for m in desc.members] == ["m2"], (
            f"group members after failover: {[(m.member_id, m.client_id) for m in desc.members]}")
        print(f"takeover {takeover:.1f}s after SIGKILL")
    finally:
        stop_members(members)


# ============================================================ 2. offsets across restarts

@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_committed_offsets_survive_broker_restart(broker_factory, topic_name, how):
    """Explicit mid-topic commits (offset, metadata, leader epoch) survive a SIGTERM restart
    and a SIGKILL: OffsetFetch returns them unchanged and a new member of the same group
    starts every partition exactly at its committed offset."""
    from confluent_kafka import TopicPartition
    broker = broker_factory(*GROUP_SETS)
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    produce_spread(broker.bootstrap, topic_name, 200)
    group = f"restart-{uuid.uuid4().hex[:8]}"

    c = group_consumer(broker.bootstrap, group, client_id="before-restart")
    try:
        c.subscribe([topic_name])
        epochs = {}  # partition -> leader epoch of the records read from it
        deadline = time.monotonic() + 30
        while len(epochs) < PARTS:
            assert time.monotonic() < deadline, f"first member read partitions {sorted(epochs)} only"
            m = c.poll(0.1)
            if m is not None:
                assert m.error() is None or not m.error().fatal(), m.error()
                if m.error() is None:
                    epochs.setdefault(m.partition(), m.leader_epoch())
        assert all(e is not None and e >= 0 for e in epochs.values()), f"record leader epochs {epochs}"
        want = {p: (17 + 23 * p, f"meta-{p}-ünï", epochs[p]) for p in range(PARTS)}
        res = c.commit(offsets=[TopicPartition(topic_name, p, o, metadata=md, leader_epoch=e)
                                for p, (o, md, e) in want.items()], asynchronous=False)
        assert all(tp.error is None for tp in res), [(tp.partition, tp.error) for tp in res]
        before = {tp.partition: (tp.offset, tp.metadata, tp.leader_epoch) for tp in
                  c.committed([TopicPartition(topic_name, p) for p in range(PARTS)], timeout=15)}
        assert before == want, f"OffsetFetch right after the commit: {before} != {want}"
    finally:
        c.close()

    broker.restart(graceful=(how == "sigterm"))

    first = {}
    c2 = group_consumer(broker.bootstrap, group, client_id="after-restart")
    try:
        c2.subscribe([topic_name])
        deadline = time.monotonic() + 40
        while len(first) < PARTS:
            assert time.monotonic() < deadline, f"after restart: first offsets {first} only"
            m = c2.poll(0.1)
            if m is None:
                continue
            assert m.error() is None or not m.error().fatal(), m.error()
            if m.error() is None:
                first.setdefault(m.partition(), m.offset())
        after = {tp.partition: (tp.offset, tp.metadata, tp.leader_epoch) for tp in
                 c2.committed([TopicPartition(topic_name, p) for p in range(PARTS)], timeout=15)}
    finally:
        c2.close()
    assert first == {p: o for p, (o, _, _) in want.items()}, (
        f"first consumed offset per partition {first} != committed {want}")
    assert after == want, f"OffsetFetch after {how}: {after} != {want}"


# ============================================================ 3. static membership

class Tracked:
    """A confluent-kafka group consumer (range assignor) that records its rebalance
    callbacks; poll() serves them."""

    def __init__(self, bootstrap, group, topic, name, **extra):
        self.name = name
        self.events = []  # ("assign"|"revoke"|"lost", [partitions])
        self.closed = False
        self.c = group_consumer(bootstrap, group, client_id=name,
                                partition_assignment_strategy="range", **extra)

        def ev(kind):
            return lambda c, ps: self.events.append((kind, sorted(tp.partition for tp in ps)))
        self.c.subscribe([topic], on_assign=ev("assign"), on_revoke=ev("revoke"),
                         on_lost=ev("lost"))

    def poll(self):
        m = self.c.poll(0.05)
        if m is not None and m.error() is not None and m.error().fatal():
            raise AssertionError(f"{self.name}: fatal error {m.error()}")

    def assignment(self):
        return sorted(tp.partition for tp in self.c.assignment())

    def close(self):
        if not self.closed:
            self.closed = True
            self.c.close()


def poll_all(consumers, cond, timeout, message):
    def step():
        for t in consumers:
            t.poll()
        return cond()
    return wait_until(step, timeout, 0, message)


def members_by_instance(admin, group):
    d = describe_group(admin, group)
    return d, {m.group_instance_id: m for m in d.members}


@pytest.mark.timeout(120)
def test_static_member_restart_keeps_assignment_without_rebalance(broker_factory, topic_name,
                                                                  closer):
    """KIP-345: a static member (group.instance.id) that closes (librdkafka sends no
    LeaveGroup for static members) stays in the group; the same instance rejoining within
    the session timeout gets its old partitions back, and the other member sees no
    rebalance (no callbacks, same assignment, OffsetCommit still accepts its generation)."""
    from confluent_kafka import TopicPartition
    broker = broker_factory(*GROUP_SETS)
    ck_create_topic(broker.bootstrap, topic_name, PARTS)
    produce_spread(broker.bootstrap, topic_name, 20)
    group = f"static-{uuid.uuid4().hex[:8]}"
    admin = ck_admin(broker.bootstrap)
    # long sessions: the restart must not race the session timeout on a loaded machine
    a = closer(Tracked(broker.bootstrap, group, topic_name, "static-a-1",
                       group_instance_id="inst-a", session_timeout_ms=30000))
    b = closer(Tracked(broker.bootstrap, group, topic_name, "static-b",
                       group_instance_id="inst-b", session_timeout_ms=30000))
    poll_all([a, b], lambda: len(a.assignment()) == 3 and len(b.assignment()) == 3, 40,
             lambda: f"no 3/3 split: a={a.assignment()} b={b.assignment()} "
                     f"events a={a.events} b={b.events}")
    a_parts, b_parts = a.assignment(), b.assignment()
    d, by_inst = members_by_instance(admin, group)
    assert str(d.state) == "ConsumerGroupState.STABLE" and set(by_inst) == {"inst-a", "inst-b"}, (
        d.state, list(by_inst))
    old_a_member = by_inst["inst-a"].member_id
    b_events = list(b.events)

    a.close()  # static member: no LeaveGroup
    d, by_inst = members_by_instance(admin, group)
    assert set(by_inst) == {"inst-a", "inst-b"} and by_inst["inst-a"].member_id == old_a_member, (
        f"after the static member's close: {[(m.group_instance_id, m.member_id) for m in d.members]}")
    assert str(d.state) == "ConsumerGroupState.STABLE", d.state

    a2 = closer(Tracked(broker.bootstrap, group, topic_name, "static-a-2",
                        group_instance_id="inst-a", session_timeout_ms=30000))
    poll_all([a2, b], lambda: a2.assignment(), 30,
             lambda: f"restarted static member got no assignment; events {a2.events}")
    assert a2.assignment() == a_parts, f"restarted static member got {a2.assignment()}, had {a_parts}"
    assert a2.events == [("assign", a_parts)], a2.events
    # keep both polling through several heartbeats: still no rebalance for b
    t_end = time.monotonic() + 4
    poll_all([a2, b], lambda: time.monotonic() > t_end, 10, "")
    assert b.events == b_events, f"the other member saw callbacks: {b.events[len(b_events):]}"
    assert b.assignment() == b_parts
    d, by_inst = members_by_instance(admin, group)
    assert str(d.state) == "ConsumerGroupState.STABLE", d.state
    m_a = by_inst["inst-a"]
    assert (m_a.client_id, m_a.member_id != old_a_member) == ("static-a-2", True), vars(m_a)
    assert sorted(tp.partition for tp in m_a.assignment.topic_partitions) == a_parts
    assert sorted(tp.partition for tp in by_inst["inst-b"].assignment.topic_partitions) == b_parts
    # b's generation is still the current one
    res = b.c.commit(offsets=[TopicPartition(topic_name, p, 5) for p in b_parts],
                     asynchronous=False)
    assert all(tp.error is None for tp in res), [(tp.partition, tp.error) for tp in res]


# ============================================================ 4. list / describe / delete

@pytest.mark.timeout(120)
def test_list_describe_delete_groups(broker_factory, topic_name, closer):
    """ListGroups and DescribeGroups (confluent-kafka AdminClient and kafka-python
    KafkaAdminClient) show a live group's state, members, client ids, hosts and
    assignments, and an offsets-only group as Empty; DeleteGroups fails with
    NON_EMPTY_GROUP for the live group and deletes empty groups with their offsets."""
    from confluent_kafka import KafkaException, TopicPartition
    from kafka import KafkaAdminClient
    broker = broker_factory(*GROUP_SETS)
    # (an AdminClient that knows the broker: a new one may send ListGroups to no broker)
    admin = ck_create_topic(broker.bootstrap, topic_name, PARTS)
    produce_spread(broker.bootstrap, topic_name, 10)
    live = f"live-{uuid.uuid4().hex[:8]}"
    empty = f"empty-{uuid.uuid4().hex[:8]}"
    kp = closer(KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="e2e-kp-admin",
                                 request_timeout_ms=30000))

    # an offsets-only ("simple") group: assign() + commit, never joins
    s = group_consumer(broker.bootstrap, empty, client_id="simple")
    s.assign([TopicPartition(topic_name, 0, 0)])
    res = s.commit(offsets=[TopicPartition(topic_name, 0, 3)], asynchronous=False)
    assert res[0].error is None, res[0].error
    s.close()

    c1 = closer(Tracked(broker.bootstrap, live, topic_name, "e2e-desc-1"))
    c2 = closer(Tracked(broker.bootstrap, live, topic_name, "e2e-desc-2"))
    poll_all([c1, c2], lambda: len(c1.assignment()) == 3 and len(c2.assignment()) == 3, 40,
             lambda: f"no 3/3 split: {c1.assignment()} {c2.assignment()}")
    want_members = {c1.c.memberid(): ("e2e-desc-1", c1.assignment()),
                    c2.c.memberid(): ("e2e-desc-2", c2.assignment())}

    # ---- confluent-kafka
    listed = {g.group_id: g for g in admin.list_consumer_groups(request_timeout=15).result(20).valid}
    assert live in listed and empty in listed, sorted(listed)
    assert (str(listed[live].state), listed[live].is_simple_consumer_group) == (
        "ConsumerGroupState.STABLE", False), vars(listed[live])
    assert (str(listed[empty].state), listed[empty].is_simple_consumer_group) == (
        "ConsumerGroupState.EMPTY", True), vars(listed[empty])
    d = describe_group(admin, live)
    assert (str(d.state), d.partition_assignor, d.is_simple_consumer_group) == (
        "ConsumerGroupState.STABLE", "range", False), vars(d)
    got = {m.member_id: (m.client_id, sorted(tp.partition for tp in m.assignment.topic_partitions))
           for m in d.members}
    assert got == want_members
    assert {m.host for m in d.members} == {"/127.0.0.1"}, [m.host for m in d.members]
    assert all(tp.topic == topic_name for m in d.members for tp in m.assignment.topic_partitions)
    d = describe_group(admin, empty)
    assert (str(d.state), d.members) == ("ConsumerGroupState.EMPTY", []), vars(d)

    # ---- kafka-python
    kl = {g["group_id"]: g for g in kp.list_groups()}
    assert (kl[live]["protocol_type"], kl[live]["group_state"]) == ("consumer", "Stable"), kl[live]
    assert (kl[empty]["protocol_type"], kl[empty]["group_state"]) == ("", "Empty"), kl[empty]
    kd = kp.describe_groups([live])[live]
    assert (kd["error"], kd["group_state"], kd["protocol_type"], kd["protocol_data"]) == (
        None, "Stable", "consumer", "range"), kd
    kgot = {}
    for m in kd["members"]:
        assert m["client_host"] == "/127.0.0.1" and m["member_metadata"]["topics"] == [topic_name], m
        parts = m["member_assignment"]["assigned_partitions"]
        assert [x["topic"] for x in parts] == [topic_name], parts
        kgot[m["member_id"]] = (m["client_id"], sorted(parts[0]["partitions"]))
    assert kgot == want_members

    # ---- DeleteGroups
    with pytest.raises(KafkaException) as ei:
        admin.delete_consumer_groups([live], request_timeout=15)[live].result(20)
    assert ei.value.args[0].name() == "NON_EMPTY_GROUP", ei.value
    assert kp.delete_groups([live]) == {live: "NonEmptyGroupError"}
    assert admin.delete_consumer_groups([empty], request_timeout=15)[empty].result(20) is None
    assert committed_offsets(broker.bootstrap, empty, topic_name, 1) == {0: -1001}, (
        "offsets of a deleted group are still there")

    c1.close()
    c2.close()  # LeaveGroup x2: the group is Empty (its offsets stay)
    wait_until(lambda: str(describe_group(admin, live).state) == "ConsumerGroupState.EMPTY", 20,
               0.2, lambda: f"group not Empty after both members left: {vars(describe_group(admin, live))}")
    assert kp.delete_groups([live]) == {live: "OK"}
    left = {g.group_id for g in admin.list_consumer_groups(request_timeout=15).result(20).valid}
    assert live not in left and empty not in left, sorted(left)
    assert {g["group_id"] for g in kp.list_groups()} & {live, empty} == set()
