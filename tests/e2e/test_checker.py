"""The Jepsen-style checker's short run (issue #14; see checker.py): three nodes, each in its
own network namespace when the machine allows it (else on loopback), a topic replicated three
times with min.insync.replicas=2, idempotent acks=all producers, a watcher consumer, and a
nemesis that kills, pauses, restarts and cuts nodes off from each other one at a time. Zero
anomalies allowed. The long run is `python tests/e2e/checker.py --seconds 1200`
(docs/durability.md)."""
from __future__ import annotations

import os

from checker import create_topic, make_cluster, run


def test_acknowledged_records_survive_crashes_pauses_restarts_and_cuts(tmp_path):
    c = make_cluster(tmp_path)
    try:
        c.start()
        create_topic(c.bootstrap, "checked", 6)
        seconds = float(os.environ.get("STRATA_CHECKER_SECONDS", "45"))
        report = run(c.nodes, c.bootstrap, "checked", 6, seconds, seed=7, cluster=c)
        print("\nchecker: " + report.summary())
        assert sum(report.faults.values()) >= 8, report.summary()
        assert report.acked > 1000 and report.read >= report.acked, report.summary()
        assert report.anomalies() == 0, (report.summary(), report.lost[:5], report.duplicated[:5], report.moved[:5],
                                         report.vanished[:5], report.divergent, report.offsets)
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()
