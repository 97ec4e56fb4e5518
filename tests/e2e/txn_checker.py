"""An exactly-once checker under faults (issue #15), over real `strata` processes and
librdkafka's transactional clients, in the style of checker.py (whose cluster harness and
nemesis it uses).

A consume-transform-produce pipeline copies unique values from an input topic to an output
topic while a nemesis SIGKILLs, pauses, restarts and cuts off brokers, preferring the leaders
of the workers' `__transaction_state` partitions (their transaction coordinators) and of the
group's `__consumer_offsets` partition (the group coordinator). Every topic, the two internal
ones included, is replicated three times with `min.insync.replicas=2`.

- The input (6 partitions) is filled with unique values `v00000042` by an idempotent
  producer: some before the faults, then, while they run, a feeder keeps at most a backlog
  ahead of what the pipeline has copied.
- K workers, as a real exactly-once application is written: a consumer in one group
  (`isolation.level=read_committed`, no auto commit) and a transactional producer each
  (`transactional.id` per worker). A worker consumes a batch, begins a transaction, writes
  `value|w<worker>.<attempt>` for each input value to the output (spread over its
  partitions), sends the batch's offsets to the transaction and commits. On an error it
  aborts when the error is abortable, replaces the producer when it is fatal (or the outcome
  cannot be known), and rewinds its consumer to the group's committed offsets. Every
  transaction attempt and its outcome as the client saw it is recorded: committed, aborted,
  unknown, or abandoned.
- Workers crash (right after a kill of their coordinator, and now and then on their own): the
  open transaction is abandoned with its records written, the consumer closed, and a new
  producer instance with the same transactional id initialised, which must fence the old one
  and abort its transaction. The old instance (the zombie) then writes one more record to the
  partitions of its transaction and tries to commit: both must fail.
- A watcher, a read_committed consumer of the output, records every record it is returned
  while the faults run.

When the run ends the faults are healed, the input is complete, the workers drain until the
group's committed offsets reach the end of the input, and every open transaction is decided
(the output's last stable offsets reach its high watermarks). Then (each must be empty):
- missing / duplicated / unexpected: a fresh read_committed consumer of the output reads
  each input value exactly once (as the value part of a record), and nothing else;
- aborted read: a record the watcher was returned is not in the final read_committed output
  at the same offset (it belonged to a transaction that was aborted, or it vanished);
- torn: a transaction attempt with some of its records committed and others (present in a
  read_uncommitted read) not;
- lost committed: an attempt whose commit_transaction() succeeded lacks records in the
  read_committed output; aborted visible: an attempt whose abort_transaction() succeeded,
  or that was abandoned and fenced, has records in it;
- zombie: a fenced instance's late record was appended, or its commit succeeded;
- duplicate writes: one output record (value and attempt) at two offsets of the
  read_uncommitted log (the idempotent, transactional producer's retries must not repeat);
- input duplicated: an input value at two offsets (the idempotent feeder);
- offsets: the group's committed offsets differ from the input's end offsets;
- divergent: two read_committed reads of the output differ;
- hanging: a partition of the output whose last stable offset never reached its high
  watermark (a transaction nobody decides).
A drain that does not finish in time is reported as `stalled` (a liveness failure).

`run()` returns a report; `python txn_checker.py --seconds N --seed S` (with STRATA_BIN set)
runs it on a fresh three-node cluster and prints it: the long run.
"""
from __future__ import annotations

import json
import random
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from checker import choose_fault, create_topic, inject, make_cluster

INPUT, OUTPUT, GROUP = "eos-input", "eos-output", "eos-pipeline"
TXN_STATE, OFFSETS = "__transaction_state", "__consumer_offsets"

# Brokers as a careful operator runs them for exactly-once: the internal topics replicated
# three times and acknowledged by two (the broker-wide min.insync.replicas is what
# __consumer_offsets gets), abandoned transactions aborted soon after their timeout, no delay
# before a group's first rebalance.
BROKER_CONFIG = {
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "offsets.topic.replication.factor": "3",
    "min.insync.replicas": "2",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    "group.initial.rebalance.delay.ms": "0",
}

# librdkafka logs to stderr: confluent-kafka's `logger` option, with a fenced transactional
# producer, leaves a Python exception set in flush() ("SystemError: <built-in function
# isinstance> returned a result with an exception set", confluent-kafka 2.16.1).


def java_partition(key: str, partitions: int) -> int:
    """Kafka's `Utils.abs(key.hashCode()) % partitions` (the coordinator's partition), with
    Java's String.hashCode over UTF-16 code units."""
    units = key.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def _utc() -> str:
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def txn_id(worker: int) -> str:
    return f"eos-worker-{worker}"


@dataclass
class Attempt:
    """One transaction of a worker: what it copied and how it ended as the client saw it."""
    tag: str
    worker: int
    instance: int
    values: list[str]
    partitions: list[int]
    started: float
    outcome: str = "open"  # committed, aborted, unknown, abandoned
    errors: list[str] = field(default_factory=list)
    zombie: str = ""  # for an abandoned attempt: what its fenced producer got
    wall: str = field(default_factory=lambda: _utc())  # when it began, as the brokers' logs write time
    ended: str = ""


@dataclass
class Report:
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    coordinator_faults: dict[str, int] = field(default_factory=dict)
    coordinator_loads: dict[str, int] = field(default_factory=dict)  # state loaded by a (new) leader
    crashes: int = 0
    client_hangs: int = 0  # send_offsets_to_transaction calls abandoned (librdkafka ignoring its timeout)
    fed: int = 0
    feed_failed: int = 0
    values: int = 0  # unique input values
    copied: int = 0  # input values read from the final read_committed output
    attempts: dict[str, int] = field(default_factory=dict)
    zombies: dict[str, int] = field(default_factory=dict)  # what the fenced instances' commits got
    committed_records: int = 0
    uncommitted_records: int = 0
    watched: int = 0
    drain_seconds: float = 0.0
    stalled: str = ""
    errors: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    missing: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    aborted_read: list = field(default_factory=list)
    torn: list = field(default_factory=list)
    lost_committed: list = field(default_factory=list)
    aborted_visible: list = field(default_factory=list)
    zombie: list = field(default_factory=list)
    duplicate_writes: list = field(default_factory=list)
    input_duplicated: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    divergent: list = field(default_factory=list)
    hanging: list = field(default_factory=list)

    ANOMALIES = ("missing", "duplicated", "unexpected", "aborted_read", "torn", "lost_committed", "aborted_visible",
                 "zombie", "duplicate_writes", "input_duplicated", "offsets", "divergent", "hanging")

    def anomalies(self) -> int:
        return sum(len(getattr(self, a)) for a in self.ANOMALIES)

    def summary(self) -> str:
        counts = ", ".join(f"{a} {len(getattr(self, a))}" for a in self.ANOMALIES)
        return (f"{self.seconds:.0f} s, faults {dict(sorted(self.faults.items()))}, on coordinators "
                f"{dict(sorted(self.coordinator_faults.items()))}, coordinator state loaded "
                f"{dict(sorted(self.coordinator_loads.items()))}, worker crashes {self.crashes}, "
                f"client hangs abandoned {self.client_hangs}; "
                f"zombies fenced with {dict(sorted(self.zombies.items()))}; {self.values} input values ({self.fed} fed during the faults, {self.feed_failed} failed), "
                f"{self.copied} copied; transactions {dict(sorted(self.attempts.items()))}; output "
                f"{self.committed_records} records read_committed, {self.uncommitted_records} read_uncommitted, "
                f"{self.watched} seen by the watcher; drained in {self.drain_seconds:.0f} s"
                f"{', STALLED: ' + self.stalled if self.stalled else ''}"
                f"{f', {len(self.errors)} harness errors' if self.errors else ''}; anomalies: {counts}")

    def details(self, n: int = 5) -> str:
        out = [f"{a}: {getattr(self, a)[:n]}" for a in self.ANOMALIES if getattr(self, a)]
        if self.errors:
            out.append("harness errors: " + " | ".join(self.errors[:n]))
        return "\n".join(out)


# librdkafka 2.16.1's send_offsets_to_transaction can wait far past its own timeout (for ever,
# seen here) when the group coordinator moves under it. The call runs on its own thread; after
# this long the instance is abandoned (never destroyed: that thread still holds it) and the
# worker goes on with a new one, which fences it.
SEND_OFFSETS_WAIT = 60.0


class _ClientHang(Exception):
    """The client did not return from a call within its own timeout and our margin."""


# Producer instances abandoned inside a hung call: kept alive for the process's lifetime.
_ABANDONED: list = []


def retire(producer: Producer):
    """Gets rid of a producer instance. Its queued and in-flight records are purged and their
    delivery reports served first: librdkafka 2.16.1 corrupts its heap ("unaligned tcache chunk
    detected", then SIGABRT) when a fenced transactional producer whose commit failed with
    records still queued is destroyed before those reports are served."""
    try:
        producer.purge()
    except KafkaException:
        pass
    try:
        producer.flush(10)
    except KafkaException:  # confluent-kafka raises the producer's fatal error here
        pass


class Pipeline:
    """What the workers share: the attempts, and how far the copying has got."""

    def __init__(self, bootstrap: str, out_partitions: int, report: Report, crash_prob: float, abort_prob: float,
                 max_batch: int):
        self.bootstrap, self.out_partitions, self.report = bootstrap, out_partitions, report
        self.crash_prob, self.abort_prob, self.max_batch = crash_prob, abort_prob, max_batch
        self.attempts: dict[str, Attempt] = {}
        self.lock = threading.Lock()
        self.copied = 0  # values of attempts whose commit the client saw succeed

    def error(self, what: str):
        with self.lock:
            self.report.errors.append(what)


class Worker(threading.Thread):
    """One instance of the exactly-once application (see the module docs)."""

    def __init__(self, pipeline: Pipeline, worker: int, seed: int):
        super().__init__(daemon=True, name=f"eos-worker-{worker}")
        self.p, self.w, self.rng = pipeline, worker, random.Random(seed)
        self.stop = threading.Event()
        self.crash = threading.Event()
        self.producer: Producer | None = None
        self.consumer: Consumer | None = None
        self.instance = 0
        self.seq = 0

    # -- clients

    def new_consumer(self):
        self.consumer = Consumer({
            "bootstrap.servers": self.p.bootstrap, "group.id": GROUP, "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000, "topic.metadata.refresh.interval.ms": 1000,
            "client.id": f"{txn_id(self.w)}-consumer"})
        # Rebalance callbacks make librdkafka serve rebalances inside consume(), between two
        # transactions, as a Java application's poll() does: never while one is open.
        self.consumer.subscribe([INPUT], on_assign=lambda c, ps: None, on_revoke=lambda c, ps: None,
                                on_lost=lambda c, ps: None)

    def new_producer(self):
        """A new instance of this worker's transactional id, initialised (which fences every
        older instance and aborts the transaction one left open)."""
        while not self.stop.is_set():
            self.instance += 1
            producer = Producer({
                "bootstrap.servers": self.p.bootstrap, "transactional.id": txn_id(self.w),
                "transaction.timeout.ms": 15000, "linger.ms": 5, "topic.metadata.refresh.interval.ms": 1000,
                "client.id": f"{txn_id(self.w)}-{self.instance}"})
            while not self.stop.is_set():
                try:
                    producer.init_transactions(30)
                    self.producer = producer
                    return
                except KafkaException as e:
                    err = e.args[0]
                    if not err.retriable() or err.fatal():
                        break
            retire(producer)
            time.sleep(0.5)
        raise _Stopped()

    def replace_producer(self):
        old, self.producer = self.producer, None
        if old is not None:
            retire(old)
        del old
        self.new_producer()

    # -- the loop

    def run(self):
        try:
            self.new_consumer()
            self.new_producer()
            while not self.stop.is_set():
                try:
                    self.step()
                except _Stopped:
                    break
                except Exception:  # noqa: BLE001 - a harness bug: note it, start afresh
                    self.p.error(f"worker {self.w}: {traceback.format_exc()}")
                    for close in (lambda: retire(self.producer), lambda: self.consumer.close()):
                        try:
                            close()
                        except Exception:  # noqa: BLE001 - starting afresh
                            pass
                    self.consumer = self.producer = None
                    time.sleep(1)
                    self.new_consumer()
                    self.new_producer()
        except _Stopped:
            pass
        except Exception:  # noqa: BLE001
            self.p.error(f"worker {self.w} died: {traceback.format_exc()}")
        finally:
            if self.consumer is not None:
                try:
                    self.consumer.close()
                except Exception:  # noqa: BLE001 - closing at the end
                    pass

    def step(self):
        msgs = self.consumer.consume(num_messages=self.rng.randint(1, self.p.max_batch), timeout=0.5)
        assigned = {tp.partition for tp in self.consumer.assignment()}
        msgs = [m for m in msgs if m.error() is None and m.partition() in assigned]
        if msgs:
            self.transact(msgs)

    def transact(self, msgs):
        self.seq += 1
        tag = f"w{self.w}.{self.seq}"
        parts = [(m.partition() + i) % self.p.out_partitions for i, m in enumerate(msgs)]
        att = Attempt(tag, self.w, self.instance, [m.value().decode() for m in msgs], sorted(set(parts)),
                      time.monotonic())
        with self.p.lock:
            self.p.attempts[tag] = att
        offsets: dict[int, int] = {}
        for m in msgs:
            offsets[m.partition()] = m.offset() + 1
        try:
            self.producer.begin_transaction()
            for m, part in zip(msgs, parts):
                self.produce(f"{m.value().decode()}|{tag}", part)
            self.send_offsets(offsets)
            if self.crash.is_set() or self.rng.random() < self.p.crash_prob:
                self.crash.clear()
                self.crash_now(att)
                return
            if self.rng.random() < self.p.abort_prob:
                # The application changes its mind (say, a record it cannot process): the
                # records are written, then the transaction aborted.
                self.producer.flush(10)
                if self.abort(att):
                    att.outcome = "aborted"
                    self.rewind()
                else:
                    att.outcome = "unknown"
                    self.replace_producer()
                    self.rewind()
                return
            self.commit(att)
        except KafkaException as e:
            self.failed(att, e.args[0])
        except _ClientHang:
            # What became of the transaction is for the coordinator to say: the next
            # instance's InitProducerId aborts it (or it times out).
            att.outcome = "unknown"
            att.errors.append(f"send_offsets_to_transaction did not return in {SEND_OFFSETS_WAIT:.0f} s")
            with self.p.lock:
                self.p.report.client_hangs += 1
            _ABANDONED.append(self.producer)
            self.producer = None
            self.new_producer()
            self.rewind()
        finally:
            att.ended = _utc()

    def send_offsets(self, offsets: dict[int, int]):
        """`send_offsets_to_transaction` with a bound on the client's own wait (see
        SEND_OFFSETS_WAIT)."""
        producer, meta = self.producer, self.consumer.consumer_group_metadata()
        tps = [TopicPartition(INPUT, q, o) for q, o in sorted(offsets.items())]
        outcome: dict[str, BaseException] = {}

        def call():
            try:
                producer.send_offsets_to_transaction(tps, meta, 30)
            except BaseException as e:  # noqa: BLE001 - handed to the worker
                outcome["error"] = e

        t = threading.Thread(target=call, daemon=True, name=f"eos-send-offsets-{self.w}")
        t.start()
        t.join(SEND_OFFSETS_WAIT)
        if t.is_alive():
            raise _ClientHang()
        if "error" in outcome:
            raise outcome["error"]

    def produce(self, value: str, partition: int, producer: Producer | None = None):
        producer = producer or self.producer
        while True:
            try:
                producer.produce(OUTPUT, value=value.encode(), partition=partition)
                producer.poll(0)
                return
            except BufferError:
                producer.poll(0.05)

    def commit(self, att: Attempt):
        t0 = time.monotonic()
        while True:
            try:
                self.producer.commit_transaction(30)
                att.outcome = "committed"
                with self.p.lock:
                    self.p.copied += len(att.values)
                return
            except KafkaException as e:
                err = e.args[0]
                # A retriable error: the commit may go on (librdkafka's rule: call it again).
                if err.retriable() and not err.fatal() and not err.txn_requires_abort() \
                        and time.monotonic() - t0 < 90 and not self.stop.is_set():
                    att.errors.append(f"commit: {err}")
                    continue
                raise

    def failed(self, att: Attempt, err: KafkaError):
        att.errors.append(str(err))
        if not err.fatal() and self.abort(att):
            att.outcome = "aborted"
        else:
            # Fenced, or neither a commit nor an abort could be finished: what became of the
            # transaction is for the coordinator to say (the data will tell).
            att.outcome = "unknown"
            self.replace_producer()
        self.rewind()

    def abort(self, att: Attempt) -> bool:
        t0 = time.monotonic()
        while True:
            try:
                self.producer.abort_transaction(30)
                return True
            except KafkaException as e:
                err = e.args[0]
                att.errors.append(f"abort: {err}")
                if not (err.retriable() and not err.fatal() and time.monotonic() - t0 < 90):
                    return False

    def rewind(self):
        """Back to the group's committed offsets (librdkafka asks for stable offsets, so it
        waits for a transaction that committed offsets to be decided)."""
        for _ in range(10):
            try:
                parts = self.consumer.assignment()
                if not parts:
                    return
                committed = self.consumer.committed(parts, timeout=15)
                bad = [tp for tp in committed if tp.error is not None]
                if bad:
                    raise KafkaException(bad[0].error)
                for tp in committed:
                    self.consumer.seek(TopicPartition(INPUT, tp.partition, tp.offset if tp.offset >= 0 else 0))
                return
            except KafkaException:
                time.sleep(0.5)
        # Could not rewind: this consumer goes, a new one starts at the committed offsets.
        old, self.consumer = self.consumer, None
        try:
            old.close()
        except Exception:  # noqa: BLE001
            pass
        self.new_consumer()

    def crash_now(self, att: Attempt):
        """The application dies with its transaction open and written; a new instance starts."""
        zombie = self.producer
        zombie.flush(10)
        att.outcome = "abandoned"
        with self.p.lock:
            self.p.report.crashes += 1
        try:
            self.consumer.close()
        except Exception:  # noqa: BLE001 - gone either way
            pass
        self.consumer = None
        self.producer = None
        self.new_producer()
        # The old instance comes back to life: one more record to each partition of its
        # transaction, then a commit. The new instance fenced it: both must fail.
        try:
            for part in att.partitions:
                self.produce(f"late|{att.tag}", part, zombie)
            zombie.commit_transaction(15)
            att.zombie = "committed"
        except KafkaException as e:
            att.zombie = str(e.args[0])
        retire(zombie)
        del zombie
        self.new_consumer()


class _Stopped(Exception):
    pass


class Watcher(threading.Thread):
    """A read_committed consumer of the output while the faults run: what it is returned must
    be committed, there, at the end."""

    def __init__(self, bootstrap: str, partitions: int):
        super().__init__(daemon=True, name="eos-watcher")
        self.bootstrap, self.partitions = bootstrap, partitions
        self.seen: dict[tuple[int, int], str] = {}
        self.stop = threading.Event()

    def run(self):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "eos-watcher", "isolation.level": "read_committed",
                      "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000})
        c.assign([TopicPartition(OUTPUT, p, 0) for p in range(self.partitions)])
        try:
            while not self.stop.is_set():
                for m in c.consume(num_messages=1000, timeout=0.2):
                    if m.error() is None:
                        self.seen[(m.partition(), m.offset())] = m.value().decode()
        finally:
            c.close()


def ends(bootstrap: str, topic: str, partitions: int, isolation: str, timeout: float = 60) -> dict[int, int]:
    """Each partition's end for `isolation`: the high watermark, or the last stable offset."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-ends", "isolation.level": isolation})
    out = {}
    deadline = time.monotonic() + timeout
    try:
        for p in range(partitions):
            while True:
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        c.close()
    return out


def read_log(bootstrap: str, topic: str, partitions: int, isolation: str,
             timeout: float = 180) -> dict[int, list[tuple[int, str]]]:
    """Every record `isolation` returns of every partition, from the start to its end."""
    upto = ends(bootstrap, topic, partitions, isolation)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "eos-reader", "isolation.level": isolation,
                  "enable.auto.commit": False, "enable.partition.eof": True})
    out: dict[int, list[tuple[int, str]]] = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        done = {p for p, end in upto.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < partitions:
            assert time.monotonic() < deadline, f"reading {topic} ({isolation}) stalled: {sorted(done)} of {upto}"
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= upto[m.partition()]:
                        done.add(m.partition())
                    continue
                if m.offset() < upto[m.partition()]:
                    out[m.partition()].append((m.offset(), m.value().decode()))
                if m.offset() + 1 >= upto[m.partition()]:
                    done.add(m.partition())
    finally:
        c.close()
    return out


def group_offsets(bootstrap: str, partitions: int, timeout: float = 15) -> dict[int, int]:
    """The group's committed offsets of the input (stable ones: a read_committed consumer asks
    with require_stable)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "isolation.level": "read_committed",
                  "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(INPUT, p) for p in range(partitions)], timeout=timeout)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


class Nemesis:
    """checker.py's faults, on a victim that is, with probability `bias`, the current leader of
    a worker's `__transaction_state` partition or of the group's `__consumer_offsets` one."""

    def __init__(self, cluster, bootstrap: str, workers: list[Worker], rng: random.Random, report: Report,
                 weights: dict[str, float] | None, bias: float, log):
        from confluent_kafka.admin import AdminClient
        self.cluster, self.workers, self.rng, self.report = cluster, workers, rng, report
        self.weights, self.bias, self.log = weights, bias, log
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        # The first faults kill a transaction coordinator, then the group coordinator.
        self.forced = [("kill", "txn"), ("kill", "group")]

    def coordinators(self) -> dict[str, int]:
        """Role (`txn:<worker>`, `group`) -> the node leading its partition now."""
        try:
            md = self.admin.list_topics(timeout=5)
        except KafkaException:
            return {}
        roles = {}
        ts, gs = md.topics.get(TXN_STATE), md.topics.get(OFFSETS)
        if ts is not None and ts.partitions:
            for w in self.workers:
                roles[f"txn:{w.w}"] = ts.partitions[java_partition(txn_id(w.w), len(ts.partitions))].leader
        if gs is not None and gs.partitions:
            roles["group"] = gs.partitions[java_partition(GROUP, len(gs.partitions))].leader
        return {r: n for r, n in roles.items() if n >= 0}

    def step(self, t0: float):
        nodes = self.cluster.nodes
        by_id = {n.node_id: n for n in nodes}
        roles = self.coordinators()
        victim = None
        if self.forced:
            fault, kind = self.forced[0]
            ids = [n for r, n in sorted(roles.items()) if r.split(":")[0] == kind and n in by_id]
            if ids:
                self.forced.pop(0)
                victim = by_id[self.rng.choice(ids)]
        if victim is None:
            fault = choose_fault(self.rng, self.cluster, self.weights)
            ids = [n for _, n in sorted(roles.items()) if n in by_id]
            if ids and self.rng.random() < self.bias:
                victim = by_id[self.rng.choice(ids)]
            else:
                victim = nodes[self.rng.randrange(len(nodes))]
        held = sorted(r for r, n in roles.items() if n == victim.node_id)
        self.report.faults[fault] = self.report.faults.get(fault, 0) + 1
        for kind in sorted({r.split(":")[0] for r in held}):
            key = f"{fault}:{kind}"
            self.report.coordinator_faults[key] = self.report.coordinator_faults.get(key, 0) + 1
        crashed = []
        if fault == "kill":
            for r in held:
                if r.startswith("txn:") and self.rng.random() < 0.5:
                    w = int(r.split(":")[1])
                    self.workers[w].crash.set()
                    crashed.append(w)
        line = (f"{time.monotonic() - t0:6.1f}s ({_utc()}) {fault} node{victim.node_id} (coordinator of {held or 'nothing'})"
                f"{f', crashing workers {crashed}' if crashed else ''}")
        self.report.timeline.append(line)
        self.log(line)
        inject(self.rng, fault, victim, nodes, self.cluster)


def run(cluster, seconds: float, seed: int = 1, workers: int = 3, prefill: int = 2000, backlog: int = 2000,
        partitions: int = 6, fault_every: float = 3.0, weights: dict[str, float] | None = None, bias: float = 0.7,
        crash_prob: float = 0.01, abort_prob: float = 0.05, max_batch: int = 50, drain_timeout: float = 300,
        dump_dir=None, log=print) -> Report:
    """Creates the topics on the started `cluster` (checker.make_cluster's, with BROKER_CONFIG),
    runs the pipeline, the watcher and the nemesis for `seconds`, heals, drains and checks
    (see the module docs). With `dump_dir`, every attempt is written to `attempts.jsonl` there,
    and, when something is wrong, the final reads and the watcher's records too."""
    t0 = time.monotonic()
    say = lambda msg: log(f"[txn_checker {time.monotonic() - t0:6.1f}s] {msg}")  # noqa: E731
    rng = random.Random(seed)
    report = Report()
    bootstrap = ",".join(n.bootstrap for n in cluster.nodes)
    for topic in (INPUT, OUTPUT):
        create_topic(bootstrap, topic, partitions)

    fed = {"acked": 0, "failed": 0}
    fed_lock = threading.Lock()

    def on_delivery(err, _msg):
        with fed_lock:
            fed["acked" if err is None else "failed"] += 1

    feeder_conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                   "message.timeout.ms": 120000, "topic.metadata.refresh.interval.ms": 1000}
    p = Producer(feeder_conf)
    for i in range(prefill):
        p.produce(INPUT, value=f"v{i:08d}".encode(), partition=i % partitions, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(120) == 0 and fed["acked"] == prefill, f"prefill: {fed}"
    say(f"{prefill} values in {INPUT}")

    pipeline = Pipeline(bootstrap, partitions, report, crash_prob, abort_prob, max_batch)
    ws = [Worker(pipeline, w, seed * 1000 + w) for w in range(workers)]
    watcher = Watcher(bootstrap, partitions)
    watcher.start()
    for w in ws:
        w.start()

    stop_feed = threading.Event()

    def feed():
        i = prefill
        while not stop_feed.is_set():
            with fed_lock:
                ahead = fed["acked"] - pipeline.copied
            if ahead >= backlog:
                p.poll(0.05)
                continue
            try:
                p.produce(INPUT, value=f"v{i:08d}".encode(), partition=i % partitions, on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0.001 if i % 50 else 0.01)
        p.flush(180)

    feeder = threading.Thread(target=feed, daemon=True, name="eos-feeder")
    feeder.start()
    try:
        nemesis = Nemesis(cluster, bootstrap, ws, rng, report, weights, bias, say)
        last = time.monotonic()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(fault_every * (0.5 + rng.random()))
            nemesis.step(t0)
            if time.monotonic() - last > 15:
                last = time.monotonic()
                say(f"copied {pipeline.copied}, fed {fed['acked']}, attempts "
                    f"{dict(Counter(a.outcome for a in list(pipeline.attempts.values())))}")
        report.seconds = time.monotonic() - start
        assert all(n.running() for n in cluster.nodes), "a node is down after the faults"

        stop_feed.set()
        feeder.join(240)
        report.fed = fed["acked"] - prefill
        report.feed_failed = fed["failed"]
        input_ends = ends(bootstrap, INPUT, partitions, "read_uncommitted")
        say(f"faults over; draining to the input's end {sum(input_ends.values())} (copied {pipeline.copied})")

        # Drain: until the group's committed offsets reach the input's end.
        drain0 = time.monotonic()
        committed: dict[int, int] = {}
        while True:
            try:
                committed = group_offsets(bootstrap, partitions)
            except KafkaException as e:
                committed = {"error": str(e)}
            if committed == input_ends:
                break
            if time.monotonic() - drain0 > drain_timeout:
                report.stalled = (f"the group's committed offsets {committed} did not reach the input's end {input_ends} "
                                  f"in {drain_timeout:.0f} s")
                break
            time.sleep(1)
        report.drain_seconds = time.monotonic() - drain0
        say(f"drained in {report.drain_seconds:.0f} s{': ' + report.stalled if report.stalled else ''}")
        for w in ws:
            w.stop.set()
        for w in ws:
            w.join(180)
            if w.is_alive():
                report.errors.append(f"worker {w.w} did not stop")

        # Every transaction decided: each output partition's last stable offset reaches its end.
        deadline = time.monotonic() + 120
        while True:
            hw, lso = ends(bootstrap, OUTPUT, partitions, "read_uncommitted"), ends(bootstrap, OUTPUT, partitions, "read_committed")
            if hw == lso:
                break
            if time.monotonic() > deadline:
                report.hanging = [(p, lso[p], hw[p]) for p in range(partitions) if lso[p] != hw[p]]
                say(f"hanging transactions: (partition, last stable offset, high watermark) {report.hanging}")
                break
            time.sleep(0.5)
        watcher.stop.set()
        watcher.join(30)
    finally:
        # Whatever happened, no client of this run outlives it.
        stop_feed.set()
        watcher.stop.set()
        for w in ws:
            w.stop.set()

    final = read_log(bootstrap, OUTPUT, partitions, "read_committed")
    again = read_log(bootstrap, OUTPUT, partitions, "read_committed")
    raw = read_log(bootstrap, OUTPUT, partitions, "read_uncommitted")
    source = read_log(bootstrap, INPUT, partitions, "read_uncommitted")
    final_offsets = group_offsets(bootstrap, partitions)
    md = nemesis.admin.list_topics(timeout=10)
    report.coordinator_loads = coordinator_loads(
        cluster.nodes, workers, len(md.topics[TXN_STATE].partitions) if TXN_STATE in md.topics else 0,
        len(md.topics[OFFSETS].partitions) if OFFSETS in md.topics else 0)
    check(report, pipeline.attempts, source, final, again, raw, watcher.seen, final_offsets, input_ends)
    if dump_dir is not None:
        dump(Path(dump_dir), report, pipeline.attempts, source, final, raw, watcher.seen)
    say(report.summary())
    return report


def dump(d: Path, report: Report, attempts: dict[str, Attempt], source, final, raw, seen):
    """The attempts (always) and, when the report is not clean, the logs as read, for a post-mortem."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "attempts.jsonl", "w") as f:
        for a in attempts.values():
            f.write(json.dumps({"tag": a.tag, "worker": a.worker, "instance": a.instance, "outcome": a.outcome,
                                "values": len(a.values), "first": a.values[0], "partitions": a.partitions,
                                "began": a.wall, "ended": a.ended, "errors": a.errors, "zombie": a.zombie}) + "\n")
    if report.anomalies() or report.stalled:
        for name, log in (("input", source), ("output-committed", final), ("output-uncommitted", raw)):
            with open(d / f"{name}.txt", "w") as f:
                for p, recs in sorted(log.items()):
                    f.writelines(f"{p} {o} {v}\n" for o, v in recs)
        with open(d / "watcher.txt", "w") as f:
            f.writelines(f"{p} {o} {v}\n" for (p, o), v in sorted(seen.items()))


def check(report: Report, attempts: dict[str, Attempt], source, final, again, raw, seen, offsets, input_ends):
    """Fills the report's counts and anomalies (see the module docs)."""
    report.attempts = dict(Counter(a.outcome for a in attempts.values()))
    report.zombies = dict(Counter(_error_name(a.zombie) for a in attempts.values() if a.outcome == "abandoned"))
    report.watched = len(seen)
    where_in: dict[str, list] = defaultdict(list)
    for p, recs in source.items():
        for o, v in recs:
            where_in[v].append((p, o))
    report.input_duplicated = [(v, at) for v, at in where_in.items() if len(at) > 1]
    report.values = len(where_in)

    committed_by_tag: dict[str, list] = defaultdict(list)
    copies: dict[str, list] = defaultdict(list)
    at_offset = {}
    for p, recs in final.items():
        for o, v in recs:
            at_offset[(p, o)] = v
            value, _, tag = v.partition("|")
            committed_by_tag[tag].append((p, o))
            copies[value].append((p, o, tag))
    report.committed_records = len(at_offset)
    report.missing = sorted(v for v in where_in if v not in copies)
    report.duplicated = [(v, at, [attempts[t].outcome if t in attempts else "?" for _, _, t in at])
                         for v, at in sorted(copies.items()) if len(at) > 1 and v in where_in]
    report.unexpected = [(v, at) for v, at in sorted(copies.items()) if v not in where_in]
    report.copied = sum(1 for v in where_in if v in copies)
    report.divergent = [p for p in final if final[p] != again.get(p)]

    def outcome(v: str) -> str:
        a = attempts.get(v.partition("|")[2])
        return a.outcome if a else "?"

    report.aborted_read = [((p, o), v, outcome(v), at_offset.get((p, o))) for (p, o), v in sorted(seen.items())
                           if at_offset.get((p, o)) != v]

    written_by_tag: dict[str, list] = defaultdict(list)
    where_out: dict[str, list] = defaultdict(list)
    for p, recs in raw.items():
        report.uncommitted_records += len(recs)
        for o, v in recs:
            written_by_tag[v.partition("|")[2]].append((p, o))
            where_out[v].append((p, o))
    report.duplicate_writes = [(v, at) for v, at in sorted(where_out.items()) if len(at) > 1]
    for tag, got in sorted(committed_by_tag.items()):
        # Committed in part: fewer records than were written, or than the attempt produced
        # (librdkafka commits only once every record of the transaction is acknowledged).
        written = written_by_tag.get(tag, [])
        produced = len(attempts[tag].values) if tag in attempts else 0
        if len(got) < max(len(written), produced):
            report.torn.append((tag, attempts[tag].outcome if tag in attempts else "?",
                                f"{len(got)} committed of {len(written)} written, {produced} produced",
                                sorted(set(written) - set(got))[:5]))
    for tag, a in sorted(attempts.items()):
        got = committed_by_tag.get(tag, [])
        if a.outcome == "committed" and len(got) != len(a.values):
            report.lost_committed.append((tag, f"{len(got)} of {len(a.values)} read", a.errors[-3:]))
        if a.outcome in ("aborted", "abandoned") and got:
            report.aborted_visible.append((tag, a.outcome, got[:5], a.errors[-3:]))
        if a.outcome == "abandoned" and a.zombie == "committed":
            report.zombie.append((tag, "the fenced instance committed"))
    for v, at in sorted(where_out.items()):
        if v.startswith("late|"):
            report.zombie.append((v, "a fenced instance's record was appended", at))
    report.offsets = [(p, offsets.get(p), end) for p, end in sorted(input_ends.items()) if offsets.get(p) != end]


def coordinator_loads(nodes, workers: int, txn_partitions: int, group_partitions: int) -> dict[str, int]:
    """How often, as the brokers' logs say, a broker became the leader of a worker's
    `__transaction_state` partition or of the group's `__consumer_offsets` partition and loaded
    the coordinator's state from it (records > 0): each is a restart or a failover that the
    coordinator's state had to survive."""
    import re
    mine = {java_partition(txn_id(w), txn_partitions) for w in range(workers)} if txn_partitions else set()
    group = java_partition(GROUP, group_partitions) if group_partitions else -1
    txn_re = re.compile(r"loaded the transaction coordinator shard partition=(\d+) coordinator_epoch=\d+ records=(\d+)")
    group_re = re.compile(r"loaded the group coordinator shard \(now its leader\) partition=(\d+) records=(\d+)")
    out = {"txn": 0, "group": 0}
    for n in nodes:
        text = n.log_text()
        out["txn"] += sum(1 for p, r in txn_re.findall(text) if int(p) in mine and int(r) > 0)
        out["group"] += sum(1 for p, r in group_re.findall(text) if int(p) == group and int(r) > 0)
    return out


def _error_name(err: str) -> str:
    """`KafkaError{code=_FENCED,val=-144,str="..."}` -> `_FENCED`."""
    return err.split("code=", 1)[1].split(",", 1)[0] if "code=" in err else err


if __name__ == "__main__":
    import argparse
    import faulthandler
    import os
    import shutil
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600, help="how long the faults run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=6, help="of the input and of the output")
    ap.add_argument("--prefill", type=int, default=2000, help="input values written before the faults")
    ap.add_argument("--backlog", type=int, default=2000, help="how far the feeder may run ahead of the copying")
    ap.add_argument("--fault-every", type=float, default=3.0, help="mean seconds between faults")
    ap.add_argument("--kill-weight", type=float, default=3.0, help="how much likelier a kill is than each other fault")
    ap.add_argument("--bias", type=float, default=0.7, help="probability that a fault hits a coordinator")
    ap.add_argument("--crash-prob", type=float, default=0.01, help="probability that a worker crashes in a transaction")
    ap.add_argument("--abort-prob", type=float, default=0.05, help="probability that a worker aborts a transaction")
    ap.add_argument("--internal-partitions", type=int, default=10,
                    help="partitions of __transaction_state and __consumer_offsets")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' directories even without anomalies")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="strata-txn-checker-")
    # librdkafka's logs (it writes them to file descriptor 2) go to clients.log; Python's
    # own errors still reach the terminal.
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    sys.stderr = terminal
    faulthandler.enable(file=terminal)
    clients_log = open(Path(d) / "clients.log", "ab")
    os.dup2(clients_log.fileno(), 2)
    c = make_cluster(Path(d), extra={**BROKER_CONFIG,
                                     "transaction.state.log.num.partitions": str(args.internal_partitions),
                                     "offsets.topic.num.partitions": str(args.internal_partitions)})
    failed = True
    try:
        c.start()
        r = run(c, args.seconds, seed=args.seed, workers=args.workers, prefill=args.prefill, backlog=args.backlog,
                partitions=args.partitions, fault_every=args.fault_every, weights={"kill": args.kill_weight},
                bias=args.bias, crash_prob=args.crash_prob, abort_prob=args.abort_prob, dump_dir=d,
                log=lambda m: print(m, flush=True))
        print(r.summary())
        failed = bool(r.anomalies() or r.stalled or r.errors)
        if failed:
            print(r.details(10))
        panics = [f"{n.name}: {line}" for n in c.nodes for line in n.panic_lines()]
        if panics:
            print("panics:", panics[:10])
            failed = True
    finally:
        c.cleanup()
        if failed or args.keep:
            print(f"kept the nodes' directories and logs in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(1 if failed else 0)
