"""KIP-848 regex subscriptions: the coordinator resolves ConsumerGroupHeartbeat's
SubscribedTopicRegex (RE2 syntax, the whole topic name must match) against the topics and
re-resolves it when topics are created or deleted.

Clients: Apache kafka-clients 4.1.1 (`java/StrataRegexE2E.java`, `group.protocol=consumer`)
with `subscribe(SubscriptionPattern)` (broker-side RE2/J regex), with
`subscribe(java.util.regex.Pattern)` (matched by the client, sent as topic names) and with
topic names; librdkafka 2.16 (confluent-kafka) with `group.protocol=consumer` and a
`^`-prefixed regex subscription. Every group's broker runs with
`group.initial.rebalance.delay.ms=0`. A Java consumer's progress comes from the JSON lines
StrataRegexE2E prints while it runs; the coordinator's view from ConsumerGroupDescribe.
"""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest

from e2e_util import java_program as compile_java
from e2e_util import (E2E_DIR, RDKAFKA_LOGGER, VERSIONS, ck_admin, ck_create_topic, ck_producer,
                      fail_unless, wait_until)

# A 1 s KIP-848 heartbeat (Kafka's default is 5 s): members learn of a new or deleted topic at
# their next heartbeat and need two or three to converge, which stays quick on a busy machine.
GROUP_SETS = ("group.initial.rebalance.delay.ms=0", "group.consumer.heartbeat.interval.ms=1000")
PER_PART = 50          # records per partition
ASSIGN_TIMEOUT = 60.0  # first assignment + every record of the matching topics (generous: busy CI)
NEW_TOPIC_TIMEOUT = 60.0  # a topic created later is assigned and read within this
ERROR_TIMEOUT = 30.0   # an invalid regex fails the consumer within this

JAVA_SRC = E2E_DIR / "java" / "StrataRegexE2E.java"
INVALID_REGEX_CLASS = "org.apache.kafka.common.errors.InvalidRegularExpression"


# ============================================================ helpers

def produce(bootstrap, topic, partitions):
    """PER_PART records into every partition; returns {(topic, p, offset): value}."""
    p = ck_producer(bootstrap, linger_ms=5)
    for i in range(PER_PART):
        for part in range(partitions):
            p.produce(topic, value=f"{topic}:{part}:{i}".encode(), partition=part)
    assert p.flush(30) == 0, f"producer could not deliver everything to {topic}"
    return {(topic, part, i): f"{topic}:{part}:{i}" for part in range(partitions) for i in range(PER_PART)}


def make_topics(bootstrap, spec):
    """spec: {topic: partitions}; creates and fills them; returns the expected records."""
    want = {}
    for topic, parts in spec.items():
        ck_create_topic(bootstrap, topic, parts)
        want.update(produce(bootstrap, topic, parts))
    return want


def tps(want):
    """The sorted "topic:partition"s of {(topic, partition, offset): value}."""
    return sorted({f"{t}:{p}" for (t, p, _) in want})


def check_records(records, want, who):
    """records: [(topic, partition, offset, value)] as read; each wanted exactly once."""
    keys = [(t, p, o) for t, p, o, _ in records]
    dups = sorted(k for k, n in Counter(keys).items() if n > 1)
    fail_unless(not dups, lambda: f"{who}: records read more than once: {dups[:10]}")
    missing = sorted(set(want) - set(keys))
    extra = sorted(set(keys) - set(want))
    fail_unless(not missing and not extra, lambda: (
        f"{who}: {len(missing)} records missing (first {missing[:5]}), "
        f"{len(extra)} unexpected (first {extra[:5]})"))
    wrong = [(k, v) for t, p, o, v in records if want[(k := (t, p, o))] != v]
    fail_unless(not wrong, lambda: f"{who}: wrong values: {wrong[:5]}")


# ============================================================ Java 4.1.1

@pytest.fixture(scope="module")
def java4_program(tmp_path_factory):
    return compile_java("4", JAVA_SRC, tmp_path_factory.mktemp("java4-regex-classes"))


class JavaConsumer:
    """One StrataRegexE2E process; its JSON lines are collected while it runs."""

    def __init__(self, program, bootstrap, group, subscription, workdir, timeout_ms=80_000):
        self.subscription = subscription
        self.stderr_path = workdir / f"java-{uuid.uuid4().hex[:6]}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(program + [bootstrap, group, subscription, str(timeout_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True)
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "stdout", "line": line}
            with self._lock:
                self.events.append(ev)

    def snapshot(self, kind=None):
        with self._lock:
            return [e for e in self.events if kind is None or e["event"] == kind]

    def records(self):
        return [(e["topic"], e["partition"], e["offset"], e["value"]) for e in self.snapshot("record")]

    def assignments(self):
        return [e["partitions"] for e in self.snapshot("assignment")]

    def current_assignment(self):
        a = self.assignments()
        return a[-1] if a else None

    def errors(self):
        return self.snapshot("error")

    def diagnostics(self) -> str:
        try:
            err = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            err = ""
        return (f"java ({self.subscription}) exit code: {self.proc.poll()}\n"
                f"assignments: {self.assignments()}\n"
                f"records read: {len(self.snapshot('record'))}\n"
                f"errors: {self.errors()}\n"
                f"other events: {[e for e in self.snapshot() if e['event'] not in ('record', 'assignment')]}\n"
                f"--- stderr tail ---\n{err[-6000:]}")

    def wait(self, cond, timeout, what):
        """Polls cond() until truthy; fails at the deadline or as soon as the client
        reported an error (a consumer that failed will not get there any more)."""
        def check():
            v = cond()
            if v:
                return v
            if self.errors() or (self.proc.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"{what}: the Java consumer failed instead\n{self.diagnostics()}")
            return v
        return wait_until(check, timeout, 0.1, lambda: f"{what}: not within {timeout}s\n{self.diagnostics()}")

    def stop(self, timeout=20.0) -> int:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = subprocess.run(["jstack", str(self.proc.pid)], capture_output=True, text=True, timeout=30).stdout
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"java consumer did not close within {timeout}s\n{self.diagnostics()}\n"
                                 f"--- threads ---\n{stacks[-8000:]}")
        self._reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


@pytest.fixture
def java_consumers(java4_program, tmp_path):
    started: list[JavaConsumer] = []

    def start(bootstrap, group, subscription):
        c = JavaConsumer(java4_program, bootstrap, group, subscription, tmp_path)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


def java_read_all(c, want, who):
    """Waits until `c` is assigned exactly the partitions of `want` and has read all of it."""
    parts = tps(want)
    c.wait(lambda: c.current_assignment() == parts, ASSIGN_TIMEOUT,
           f"{who}: assignment {parts}")
    c.wait(lambda: {(t, p, o) for t, p, o, _ in c.records()} >= set(want), ASSIGN_TIMEOUT,
           f"{who}: all {len(want)} records")


def pattern_setup(broker_factory, java_consumers):
    """A broker with <prefix>-a (2 partitions), <prefix>-b (1) and two decoys, filled,
    and a Java consumer subscribed with SubscriptionPattern("<prefix>-.*")."""
    broker = broker_factory(*GROUP_SETS)
    uid = uuid.uuid4().hex[:8]
    prefix = f"regex-{uid}"
    want = make_topics(broker.bootstrap, {f"{prefix}-a": 2, f"{prefix}-b": 1})
    # "pre-regex-<id>-z" contains a match of the regex but is not one as a whole
    decoys = make_topics(broker.bootstrap, {f"other-{uid}": 1, f"pre-{prefix}-z": 1})
    group = f"java4-re2-{uid}"
    c = java_consumers(broker.bootstrap, group, f"re2:{prefix}-.*")
    return broker, prefix, group, want, decoys, c


def coordinator_assignment(admin, group):
    """The coordinator's view (ConsumerGroupDescribe): sorted "topic:p" of the group's one
    member, or None while it has no member (or no group)."""
    try:
        g = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)
    except Exception:  # noqa: BLE001 - group not there yet: poll again
        return None
    if len(g.members) != 1:
        return None
    return sorted(f"{tp.topic}:{tp.partition}" for tp in g.members[0].assignment.topic_partitions)


@pytest.mark.java
@pytest.mark.timeout(180)
def test_java_subscription_pattern_coordinator_assignment(broker_factory, java_consumers):
    """kafka-clients 4.1.1 subscribe(SubscriptionPattern("regex-<id>-.*")), as the
    coordinator reports it (ConsumerGroupDescribe): the member is assigned every partition
    of the matching topics and nothing else, a matching topic created later is added and a
    deleted one removed, each within NEW_TOPIC_TIMEOUT."""
    broker, prefix, group, want, decoys, c = pattern_setup(broker_factory, java_consumers)
    admin = ck_admin(broker.bootstrap)
    seen = []

    def coordinator_has(parts):
        a = coordinator_assignment(admin, group)
        if a is not None and (not seen or seen[-1] != a):
            seen.append(a)
        return a == parts

    c.wait(lambda: coordinator_has(tps(want)), ASSIGN_TIMEOUT,
           f"coordinator: member assigned {tps(want)} (seen {seen})")
    want.update(make_topics(broker.bootstrap, {f"{prefix}-c": 1}))
    c.wait(lambda: coordinator_has(tps(want)), NEW_TOPIC_TIMEOUT,
           f"coordinator: new topic {prefix}-c added, member assigned {tps(want)} (seen {seen})")
    admin.delete_topics([f"{prefix}-b"], operation_timeout=15)[f"{prefix}-b"].result(20)
    want = {k: v for k, v in want.items() if k[0] != f"{prefix}-b"}
    c.wait(lambda: coordinator_has(tps(want)), NEW_TOPIC_TIMEOUT,
           f"coordinator: deleted topic {prefix}-b removed, member assigned {tps(want)} (seen {seen})")
    ever = {tp for a in seen for tp in a}
    assert not ever & set(tps(decoys)), (
        f"non-matching topics were assigned: {sorted(ever & set(tps(decoys)))}")
    # kafka-clients 4.1.1 asks for the metadata of its assigned topics by id; when that request
    # names the just-deleted topic, the broker answers UNKNOWN_TOPIC_ID with a null name (as
    # Kafka's KafkaApis does), MetadataResponse.errors() throws in the client's network thread
    # and its leave-group heartbeat is never matched to a response, so close() waits out its
    # default 30 s timeout before it returns (docs/compatibility.md, "Client bugs").
    rc = c.stop(timeout=60.0)
    assert rc == 0, f"java consumer exited {rc}\n{c.diagnostics()}"


@pytest.mark.java
@pytest.mark.timeout(180)
def test_java_subscription_pattern_reads_new_topics(broker_factory, java_consumers):
    """kafka-clients 4.1.1 subscribe(SubscriptionPattern("regex-<id>-.*")), as the client
    sees it: assignment() is every partition of the matching topics and nothing else, every
    record is read once, and a matching topic created later is assigned and read within
    NEW_TOPIC_TIMEOUT."""
    broker, prefix, group, want, decoys, c = pattern_setup(broker_factory, java_consumers)
    admin = ck_admin(broker.bootstrap)
    coordinator = lambda: f"coordinator's assignment: {coordinator_assignment(admin, group)}"  # noqa: E731
    try:
        java_read_all(c, want, "SubscriptionPattern")
        assert c.current_assignment() == [f"{prefix}-a:0", f"{prefix}-a:1", f"{prefix}-b:0"], (
            c.diagnostics())

        # a new matching topic: the coordinator re-resolves the regex, the member gets it
        t_new = time.monotonic()
        want.update(make_topics(broker.bootstrap, {f"{prefix}-c": 1}))
        c.wait(lambda: f"{prefix}-c:0" in (c.current_assignment() or []), NEW_TOPIC_TIMEOUT,
               f"SubscriptionPattern: new topic {prefix}-c assigned")
        c.wait(lambda: {(t, p, o) for t, p, o, _ in c.records()} >= set(want), NEW_TOPIC_TIMEOUT,
               f"SubscriptionPattern: the records of {prefix}-c")
        picked_up = time.monotonic() - t_new
    except AssertionError as e:
        raise AssertionError(f"{e}\n{coordinator()}") from None
    assert c.current_assignment() == tps(want), (
        f"assignment {c.current_assignment()} != {tps(want)}\n{c.diagnostics()}")
    rc = c.stop()
    assert rc == 0, f"java consumer exited {rc}\n{c.diagnostics()}"
    closed = c.snapshot("closed")
    assert closed and closed[-1]["reason"] == "stop", c.diagnostics()
    check_records(c.records(), want, "SubscriptionPattern")
    ever = {tp for a in c.assignments() for tp in a}
    assert not ever & set(tps(decoys)), (
        f"non-matching topics were assigned: {sorted(ever & set(tps(decoys)))}")
    assert picked_up < NEW_TOPIC_TIMEOUT, picked_up


@pytest.mark.java
@pytest.mark.timeout(180)
def test_java_pattern_subscription(broker_factory, java_consumers):
    """kafka-clients 4.1.1 subscribe(java.util.regex.Pattern) with group.protocol=consumer
    (the client matches the topics in its metadata and subscribes to their names): every
    partition of the matching topics, every record once, the decoys never."""
    broker = broker_factory(*GROUP_SETS)
    uid = uuid.uuid4().hex[:8]
    prefix = f"regex-{uid}"
    want = make_topics(broker.bootstrap, {f"{prefix}-a": 2, f"{prefix}-b": 1})
    decoys = make_topics(broker.bootstrap, {f"other-{uid}": 1, f"pre-{prefix}-z": 1})
    c = java_consumers(broker.bootstrap, f"java4-pattern-{uid}", f"java:{prefix}-.*")
    java_read_all(c, want, "java.util.regex.Pattern")
    rc = c.stop()
    assert rc == 0, f"java consumer exited {rc}\n{c.diagnostics()}"
    check_records(c.records(), want, "java.util.regex.Pattern")
    ever = {tp for a in c.assignments() for tp in a}
    assert not ever & set(tps(decoys)), (
        f"non-matching topics were assigned: {sorted(ever & set(tps(decoys)))}")


@pytest.mark.java
@pytest.mark.timeout(180)
def test_java_invalid_regex_fails_fast(broker_factory, java_consumers):
    """subscribe(SubscriptionPattern("(")): the coordinator answers the heartbeat with
    INVALID_REGULAR_EXPRESSION (128) and poll() throws InvalidRegularExpression within
    ERROR_TIMEOUT instead of waiting for an assignment forever."""
    broker = broker_factory(*GROUP_SETS)
    uid = uuid.uuid4().hex[:8]
    make_topics(broker.bootstrap, {f"regex-{uid}-a": 1})
    c = java_consumers(broker.bootstrap, f"java4-bad-{uid}", "re2:(")
    t0 = time.monotonic()
    wait_until(lambda: c.errors() or c.proc.poll() is not None, ERROR_TIMEOUT, 0.1,
               lambda: f"invalid regex: no error within {ERROR_TIMEOUT}s\n{c.diagnostics()}")
    elapsed = time.monotonic() - t0
    errs = c.errors()
    assert errs, f"the consumer exited without reporting an error\n{c.diagnostics()}"
    chain = [errs[0]["type"]] + [x["type"] for x in errs[0]["causes"]]
    assert INVALID_REGEX_CLASS in chain, (
        f"expected {INVALID_REGEX_CLASS} (error 128), got {errs[0]}\n{c.diagnostics()}")
    assert c.proc.wait(20) == 1, c.diagnostics()
    assert not c.assignments() or all(a == [] for a in c.assignments()), (
        f"a member with an invalid regex was assigned partitions: {c.assignments()}")
    assert elapsed < ERROR_TIMEOUT


@pytest.mark.java
@pytest.mark.timeout(180)
def test_java4_topic_names(broker_factory, java_consumers):
    """kafka-clients 4.1.1 with group.protocol=consumer subscribing by topic names."""
    broker = broker_factory(*GROUP_SETS)
    uid = uuid.uuid4().hex[:8]
    want = make_topics(broker.bootstrap, {f"names-{uid}-a": 2, f"names-{uid}-b": 1})
    c = java_consumers(broker.bootstrap, f"java4-names-{uid}",
                       f"names:names-{uid}-a,names-{uid}-b")
    java_read_all(c, want, "topic names")
    started = c.snapshot("started")
    assert started and started[0]["client_version"] == VERSIONS["JAVA4_KAFKA_CLIENTS_VERSION"], started
    rc = c.stop()
    assert rc == 0, f"java consumer exited {rc}\n{c.diagnostics()}"
    check_records(c.records(), want, "topic names")


# ============================================================ librdkafka

@pytest.mark.timeout(120)
def test_librdkafka_regex_follows_new_topics(broker_factory, caplog):
    """confluent-kafka (librdkafka 2.16) group.protocol=consumer, subscribe(["^regex-<id>-.*"]):
    assigned every partition of the matching topics, reads every record, and a matching
    topic created later is assigned and read within NEW_TOPIC_TIMEOUT; the decoys never."""
    from confluent_kafka import Consumer, KafkaError, libversion

    assert libversion()[0].startswith("2.16"), f"librdkafka {libversion()}"
    caplog.set_level(logging.DEBUG, logger=RDKAFKA_LOGGER.name)  # debug=cgrp, shown on failure
    broker = broker_factory(*GROUP_SETS)
    uid = uuid.uuid4().hex[:8]
    prefix = f"regex-{uid}"
    want = make_topics(broker.bootstrap, {f"{prefix}-a": 2, f"{prefix}-b": 1})
    decoys = make_topics(broker.bootstrap, {f"other-{uid}": 1, f"pre-{prefix}-z": 1})
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"rdkafka-re-{uid}",
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "debug": "cgrp",
        "logger": RDKAFKA_LOGGER,
    })
    records, assignments, errors = [], [], []
    try:
        c.subscribe([f"^{prefix}-.*"])

        def pump():
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        errors.append(str(m.error()))
                    continue
                records.append((m.topic(), m.partition(), m.offset(), m.value().decode()))
            now = sorted(f"{tp.topic}:{tp.partition}" for tp in c.assignment())
            if not assignments or assignments[-1] != now:
                assignments.append(now)

        def until(cond, timeout, what):
            def check():
                pump()
                fail_unless(not errors, lambda: f"{what}: consumer errors {errors}")
                return cond()
            wait_until(check, timeout, 0, lambda: (
                f"{what}: not within {timeout}s; assignments {assignments}, "
                f"{len(records)} records read (librdkafka debug=cgrp log is in the captured log)"))

        have = lambda: {(t, p, o) for t, p, o, _ in records}  # noqa: E731
        until(lambda: assignments and assignments[-1] == tps(want), ASSIGN_TIMEOUT,
              f"librdkafka: assignment {tps(want)}")
        until(lambda: have() >= set(want), ASSIGN_TIMEOUT, f"librdkafka: all {len(want)} records")

        t_new = time.monotonic()
        want.update(make_topics(broker.bootstrap, {f"{prefix}-c": 1}))
        until(lambda: f"{prefix}-c:0" in assignments[-1], NEW_TOPIC_TIMEOUT,
              f"librdkafka: new topic {prefix}-c assigned")
        until(lambda: have() >= set(want), NEW_TOPIC_TIMEOUT,
              f"librdkafka: the records of {prefix}-c")
        assert time.monotonic() - t_new < NEW_TOPIC_TIMEOUT
        assert assignments[-1] == tps(want), f"assignment {assignments[-1]} != {tps(want)}"
        check_records(records, want, "librdkafka")
        ever = {tp for a in assignments for tp in a}
        assert not ever & set(tps(decoys)), (
            f"non-matching topics were assigned: {sorted(ever & set(tps(decoys)))}")
        # the regex went to the coordinator (librdkafka did not match the topics itself)
        sent = f'subscribed topic regex "(^{prefix}-.*)"'
        assert any(sent in r.getMessage() for r in caplog.records), (
            f"no ConsumerGroupHeartbeat with {sent} in librdkafka's debug log")
    finally:
        c.close()
