"""The Jepsen-style checker's short run (issue #14; see checker.py): three nodes on loopback,
idempotent acks=all producers, a watcher consumer, and a nemesis that kills, pauses,
restarts and partitions nodes (from the other controllers, through the harness's proxies)
one at a time. Zero anomalies allowed. The long run is `python
tests/e2e/checker.py --seconds 600` (docs/durability.md)."""
from __future__ import annotations

import os

from checker import run
from test_cluster import Cluster, create


def test_acknowledged_records_survive_crashes_pauses_and_restarts(tmp_path):
    c = Cluster(tmp_path, proxied=True)
    try:
        c.start()
        create(c.nodes[0].bootstrap, "checked", 6)
        seconds = float(os.environ.get("STRATA_CHECKER_SECONDS", "45"))
        report = run(c.nodes, ",".join(n.bootstrap for n in c.nodes), "checked", 6, seconds, seed=7, cluster=c)
        print("\nchecker: " + report.summary())
        assert sum(report.faults.values()) >= 5, report.summary()
        assert report.acked > 1000 and report.read >= report.acked, report.summary()
        assert report.anomalies() == 0, (report.summary(), report.lost[:5], report.duplicated[:5], report.moved[:5],
                                         report.vanished[:5], report.divergent, report.offsets)
        for n in c.nodes:
            assert not n.panic_lines(), n.log_tail()
    finally:
        c.cleanup()
