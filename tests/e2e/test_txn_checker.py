"""The exactly-once checker's short run (issue #15; see txn_checker.py): three nodes, each in
its own network namespace when the machine allows it (else on loopback), input, output,
`__transaction_state` and `__consumer_offsets` replicated three times with
min.insync.replicas=2; three consume-transform-produce workers (librdkafka's transactional
producer, a read_committed consumer group) copy the input to the output while a nemesis kills,
pauses, restarts and cuts off nodes, preferring the transaction and group coordinators, and
workers crash and are replaced (their zombies must be fenced). Every input value must be read
once from the output with read_committed, no aborted record returned to a read_committed
consumer, no transaction torn, the group's offsets at the input's end. Zero anomalies allowed.
The long run is `python tests/e2e/txn_checker.py --seconds 600`."""
from __future__ import annotations

import os

import pytest

from checker import make_cluster
from txn_checker import BROKER_CONFIG, Attempt, Report, check, run


@pytest.mark.timeout(900)
def test_exactly_once_through_coordinator_crashes_pauses_restarts_and_cuts(tmp_path):
    c = make_cluster(tmp_path, extra={**BROKER_CONFIG, "transaction.state.log.num.partitions": "10",
                                      "offsets.topic.num.partitions": "10"})
    try:
        c.start()
        seconds = float(os.environ.get("STRATA_TXN_CHECKER_SECONDS", "50"))
        seed = int(os.environ.get("STRATA_TXN_CHECKER_SEED", "11"))
        report = run(c, seconds, seed=seed, prefill=2000, crash_prob=0.02, dump_dir=tmp_path)
        print("\ntxn checker: " + report.summary())
        print("\n".join(report.timeline))
        print(report.details())
        summary = report.summary() + "\n" + report.details()
        assert not report.errors, summary
        assert not report.stalled, summary
        assert report.anomalies() == 0, summary
        assert sum(report.faults.values()) >= 8, summary
        assert report.coordinator_faults.get("kill:txn", 0) >= 1, summary
        assert report.coordinator_faults.get("kill:group", 0) >= 1, summary
        assert report.values >= 2000 and report.copied == report.values, summary
        assert report.attempts.get("committed", 0) >= 20, summary
        # The coordinators' state was loaded from the log by a new leader, and all held.
        assert report.coordinator_loads.get("txn", 0) >= 1 and report.coordinator_loads.get("group", 0) >= 1, summary
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()


def test_the_checks_catch_each_kind_of_anomaly():
    """check() on made-up logs: clean, then one fault at a time (no brokers involved)."""
    attempts = {"w0.1": Attempt("w0.1", 0, 1, ["v0", "v1"], [0, 1], 0.0, "committed"),
                "w0.2": Attempt("w0.2", 0, 1, ["v2"], [1], 0.0, "aborted"),
                "w0.3": Attempt("w0.3", 0, 1, ["v2"], [1], 0.0, "committed"),
                "w1.1": Attempt("w1.1", 1, 1, ["v3"], [0], 0.0, "abandoned", zombie="_FENCED")}
    source = {0: [(0, "v0"), (1, "v1")], 1: [(0, "v2"), (1, "v3")]}
    final = {0: [(0, "v0|w0.1"), (4, "v3|w1.2")], 1: [(1, "v1|w0.1"), (5, "v2|w0.3")]}
    raw = {0: [(0, "v0|w0.1"), (2, "v3|w1.1"), (4, "v3|w1.2")], 1: [(0, "v2|w0.2"), (1, "v1|w0.1"), (5, "v2|w0.3")]}
    seen = {(0, 0): "v0|w0.1", (1, 5): "v2|w0.3"}
    ends, offsets = {0: 2, 1: 2}, {0: 2, 1: 2}

    def anomalies(final=final, again=None, raw=raw, seen=seen, offsets=offsets, attempts=attempts, source=source):
        r = Report()
        check(r, attempts, source, final, again if again is not None else final, raw, seen, offsets, ends)
        return {a: getattr(r, a) for a in Report.ANOMALIES if getattr(r, a)}

    assert anomalies() == {}
    assert set(anomalies(seen={**seen, (1, 0): "v2|w0.2"})) == {"aborted_read"}
    assert set(anomalies(final={**final, 1: [(0, "v2|w0.2"), (1, "v1|w0.1"), (5, "v2|w0.3")]})) == {
        "duplicated", "aborted_visible"}
    assert set(anomalies(final={**final, 1: [(5, "v2|w0.3")]})) == {"missing", "torn", "lost_committed"}
    assert set(anomalies(final={**final, 0: [(0, "v0|w0.1"), (2, "v3|w1.1"), (4, "v3|w1.2")]})) == {
        "duplicated", "aborted_visible"}
    assert set(anomalies(final={**final, 0: [(0, "v0|w0.1"), (3, "v9|w9.9"), (4, "v3|w1.2")]},
                         raw={**raw, 0: raw[0] + [(3, "v9|w9.9")]})) == {"unexpected"}
    unknown = {**attempts, "w2.1": Attempt("w2.1", 2, 1, ["v1", "v3"], [0], 0.0, "unknown")}
    assert set(anomalies(attempts=unknown, final={**final, 0: final[0] + [(6, "v1|w2.1")]},
                         raw={**raw, 0: raw[0] + [(6, "v1|w2.1"), (7, "v3|w2.1")]})) == {"torn", "duplicated"}
    assert set(anomalies(attempts=unknown, raw={**raw, 0: raw[0] + [(6, "v1|w2.1"), (7, "v3|w2.1")]})) == set()
    assert set(anomalies(raw={**raw, 1: raw[1] + [(6, "late|w1.1")]})) == {"zombie"}
    assert set(anomalies(attempts={**attempts, "w1.1": Attempt("w1.1", 1, 1, ["v3"], [0], 0.0, "abandoned",
                                                               zombie="committed")})) == {"zombie"}
    assert set(anomalies(raw={**raw, 1: raw[1] + [(6, "v2|w0.2")]})) == {"duplicate_writes"}
    assert set(anomalies(source={**source, 1: source[1] + [(2, "v3")]})) == {"input_duplicated"}
    assert set(anomalies(offsets={0: 2, 1: 1})) == {"offsets"}
    assert set(anomalies(again={**final, 1: final[1][:1]})) == {"divergent"}
