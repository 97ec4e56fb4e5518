"""Crash consistency: an idempotent acks=all producer runs continuously against
a 3-partition topic (log.flush.interval.messages=1) while the broker is
SIGKILLed at seeded random moments and restarted on the same port and data
dir, 5 rounds. Afterwards every acknowledged record is present exactly once,
in produce order per partition, offsets dense, and the topic's id and the
metadata (topics, partition counts) are unchanged.

Set STRATA_CRASH_SEED to replay a failing seed (it is printed)."""
from __future__ import annotations

import os
import random
import threading
import time

import pytest

from e2e_util import assert_dense, ck_admin, ck_conf, ck_create_topic, ck_read_partitions, fail_unless, wait_until

PARTS = 3
ROUNDS = 5


class Producer:
    """Values "c-<seq>" to partition seq % PARTS, as fast as a steady 5k/s allows."""

    def __init__(self, bootstrap, topic):
        from confluent_kafka import Producer as P
        c = ck_conf(bootstrap)
        c.update({"acks": "all", "enable.idempotence": True, "linger.ms": 2,
                  "message.timeout.ms": 120000, "reconnect.backoff.ms": 50,
                  "reconnect.backoff.max.ms": 300, "retry.backoff.ms": 50})
        self.p, self.topic = P(c), topic
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg):
        if err is not None:
            self.errors.append(f"{msg.value()}: {err}")
        else:
            with self.lock:
                self.acked[msg.value()] = (msg.partition(), msg.offset())

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                self.p.produce(self.topic, value=f"c-{i:08d}".encode(), partition=i % PARTS, on_delivery=self._cb)
                i += 1
            except BufferError:
                self.p.poll(0.05)
                continue
            if i % 50 == 0:
                self.p.poll(0)
                time.sleep(0.01)

    def n_acked(self):
        with self.lock:
            return len(self.acked)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(30)
        return self.p.flush(90)


def topic_state(bootstrap, topic):
    from confluent_kafka import TopicCollection
    admin = ck_admin(bootstrap)
    md = admin.list_topics(timeout=10)
    shape = {t: len(m.partitions) for t, m in md.topics.items() if not t.startswith("__")}
    desc = admin.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(10)
    return shape, str(desc.topic_id)


@pytest.mark.timeout(240)
def test_sigkill_rounds_keep_acknowledged_records_exactly_once_in_order(broker_factory, topic_name):
    seed = int(os.environ.get("STRATA_CRASH_SEED", random.randrange(1 << 32)))
    print(f"STRATA_CRASH_SEED={seed}")
    rng = random.Random(seed)
    b = broker_factory("log.flush.interval.messages=1", "log.segment.bytes=262144")
    ck_create_topic(b.bootstrap, topic_name, PARTS)
    ck_create_topic(b.bootstrap, topic_name + "-other", 2)
    before = topic_state(b.bootstrap, topic_name)
    prod = Producer(b.bootstrap, topic_name).start()
    for r in range(ROUNDS):
        target = prod.n_acked() + 200
        wait_until(lambda: prod.n_acked() >= target, 60, 0.02,
                   lambda: f"round {r}: no progress ({prod.n_acked()} acks); errors {prod.errors[:5]}\n{b.log_tail()}")
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)  # the random crash moment (seeded), not a wait for a condition
        b.kill()
        print(f"round {r}: SIGKILL after {delay:.2f}s, {prod.n_acked()} acks so far")
        b.start()
    target = prod.n_acked() + 200
    wait_until(lambda: prod.n_acked() >= target, 60, 0.02, lambda: f"no progress after the last restart: {prod.errors[:5]}")
    remaining = prod.stop()
    acked = dict(prod.acked)
    print(f"acked={len(acked)} unacked_at_end={remaining} errors={len(prod.errors)}")
    fail_unless(not prod.errors, lambda: f"an idempotent producer with infinite retries saw errors: {prod.errors[:5]}")

    got = ck_read_partitions(b.bootstrap, topic_name, range(PARTS), timeout=90)
    assert_dense(got)
    values = [r.value for recs in got.values() for r in recs]
    dups = len(values) - len(set(values))
    fail_unless(dups == 0, lambda: f"{dups} duplicated records (seed {seed})")
    by_pos = {(p, r.offset): r.value for p, recs in got.items() for r in recs}
    missing = [(v, pos) for v, pos in acked.items() if by_pos.get(pos) != v]
    fail_unless(not missing, lambda: f"{len(missing)} acknowledged records missing or moved (seed {seed}): "
                                     f"{[(v, pos, by_pos.get(pos)) for v, pos in missing[:10]]}")
    for p, recs in got.items():
        seqs = [int(r.value[2:]) for r in recs]
        fail_unless(seqs == sorted(seqs), lambda: f"partition {p} is not in produce order (seed {seed})")
        fail_unless(all(s % PARTS == p for s in seqs), lambda: f"partition {p} holds records of another")
    after = topic_state(b.bootstrap, topic_name)
    assert after == before, f"metadata changed across crashes: {before} -> {after}"
