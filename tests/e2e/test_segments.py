"""Many small segments (log.segment.bytes=1 MiB): random-access fetches at and
around segment boundaries, ListOffsets by timestamp across segments, and the
same answers after a graceful restart and after SIGKILL (index recovery)."""
import re

import pytest
from confluent_kafka import KafkaError, TopicPartition

from e2e_util import ck_consumer, ck_create_topic, ck_producer, fail_unless

N = 24_000
SEGMENT_BYTES = 1_048_576


def value(i):
    return f"seg-{i:06d}-".encode() + bytes([65 + i % 26]) * 180


def segment_bases(broker, topic, partition=0):
    d = broker.data_dir
    dirs = [p for p in d.rglob(f"{topic}-{partition}") if p.is_dir()]
    assert len(dirs) == 1, f"partition dir {topic}-{partition} not found under {d}: {dirs}"
    return sorted(int(m.group(1)) for f in dirs[0].iterdir()
                  if (m := re.fullmatch(r"(\d{20})\.log", f.name)))


def read_at(bootstrap, topic, offset, count):
    c = ck_consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        out = []
        for _ in range(200):
            for m in c.consume(num_messages=count, timeout=0.2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"fetch at {offset}: {m.error()}")
                out.append((m.offset(), m.value(), m.timestamp()[1]))
            if len(out) >= count:
                return out[:count]
        raise AssertionError(f"fetch at offset {offset}: only {len(out)} of {count} records")
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_segment_boundaries_and_time_index(broker_factory, topic_name):
    b = broker_factory(f"log.segment.bytes={SEGMENT_BYTES}", "log.flush.interval.messages=1000")
    ck_create_topic(b.bootstrap, topic_name, 1)
    base_ts = 1_700_000_000_000
    p = ck_producer(b.bootstrap, **{"acks": "all", "linger.ms": 5, "enable.idempotence": True})
    errors = []
    for i in range(N):
        while True:
            try:
                p.produce(topic_name, value=value(i), partition=0, timestamp=base_ts + 2 * i,
                          on_delivery=lambda err, msg: err and errors.append(str(err)))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0 and not errors, errors[:3]

    bases = segment_bases(b, topic_name)
    assert len(bases) >= 4, f"expected >= 4 segments of {SEGMENT_BYTES} bytes, got bases {bases}"
    assert bases[0] == 0

    probe = sorted({0, 1, N // 2, N - 3} | {x for s in bases[1:] for x in (s - 1, s)})

    def check(when):
        for off in probe:
            got = read_at(b.bootstrap, topic_name, off, 3 if off <= N - 3 else N - off)
            want = [(o, value(o), base_ts + 2 * o) for o in range(off, min(off + 3, N))]
            fail_unless(got == want, lambda: f"{when}: fetch at {off}: got "
                        f"{[(o, v[:12], t) for o, v, t in got]}, expected {[(o, v[:12], t) for o, v, t in want]}")
        c = ck_consumer(b.bootstrap)
        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10)
            assert (lo, hi) == (0, N), f"{when}: watermarks {(lo, hi)}"
            # ts = base + 2*i exactly -> i; base + 2*i - 1 (between two records) -> i
            queries = {base_ts - 1000: 0, base_ts: 0, base_ts + 2 * (N - 1): N - 1,
                       base_ts + 2 * N: -1}
            for s in bases[1:]:
                queries[base_ts + 2 * s] = s
                queries[base_ts + 2 * s - 1] = s
                queries[base_ts + 2 * s + 1] = s + 1
            for ts, want in queries.items():
                (r,) = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)
                assert r.error is None, f"{when}: offsets_for_times({ts}): {r.error}"
                assert r.offset == want, (f"{when}: offsets_for_times(base+{ts - base_ts}) = "
                                          f"{r.offset}, expected {want} (segment bases {bases})")
        finally:
            c.close()

    check("before restart")
    b.restart()
    check("after graceful restart")
    b.restart(graceful=False)
    check("after SIGKILL + restart")
    assert segment_bases(b, topic_name)[:len(bases)] == bases
