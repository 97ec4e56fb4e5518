"""The operator's HTTP listener (issue #17): `http.listener=HOST:PORT` serves `/metrics`
(OpenMetrics text, parsed here with the Prometheus project's own Python parser), `/health`
and `/ready`.

A scrape before and after a produce/consume run with confluent-kafka checks that:
- the text parses as OpenMetrics (prometheus_client's strict parser);
- BytesIn of the topic moved by exactly the bytes its log grew by (the batches the producer
  sent, stored as they came), MessagesIn by the records sent, BytesOut by at least what the
  consumer read;
- request counters moved for Produce and Fetch, and each API's time histogram counted as
  many requests as its counters;
- the consumer group's committed offset and lag (0 after it read everything, 50 after 50 more
  records);
- connection count, partition and leader counts, the metadata quorum (active controller,
  leader, epoch, high watermark moving), and the process's CPU, memory and open files are there
  and plausible.
"""
from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest

from e2e_util import ck_consumer, ck_create_topic, ck_producer, free_port, wait_until

N = 500


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, after the strict OpenMetrics parser read it."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    status, ctype, text = get(port, "/metrics")
    assert status == 200, (status, text)
    assert ctype.startswith("application/openmetrics-text"), ctype
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    """The sample's value; a missing series fails (a renamed or dropped metric must not pass
    as zero)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no {name}{labels} in the scrape"
    return samples[key]


def total(samples, name, **labels) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def http_broker(broker_factory):
    port = free_port()
    b = broker_factory(f"http.listener=127.0.0.1:{port}")
    b.http_port = port
    return b


def test_health_ready_and_unknown_paths(http_broker):
    port = http_broker.http_port
    assert get(port, "/health")[::2] == (200, "ok\n")
    assert get(port, "/ready")[::2] == (200, "ready\n")
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405
    # Not HTTP at all: the connection closes, the listener goes on.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        s.settimeout(5)
        closed = False
        try:
            while s.recv(4096):
                pass
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
        assert closed, "the listener kept a garbage connection open"
    assert get(port, "/health")[0] == 200


def test_metrics_move_with_a_produce_and_consume_run(http_broker):
    port, boot = http_broker.http_port, http_broker.bootstrap
    before = scrape(port)
    ck_create_topic(boot, "metered", partitions=1)  # moves the metadata log's high watermark
    producer = ck_producer(boot, **{"linger.ms": 5})
    for i in range(N):
        producer.produce("metered", key=b"k%d" % i, value=b"v" * (100 + i % 50))
    assert producer.flush(30) == 0
    consumer = ck_consumer(boot, **{"group.id": "metered-readers"})
    consumer.subscribe(["metered"])
    got = 0
    import time
    deadline = time.monotonic() + 60
    while got < N and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            consumer.store_offsets(m)
            got += 1
    assert got == N
    consumer.commit(asynchronous=False)
    consumer.close()
    after = scrape(port)

    assert ("kafka_server_brokertopicmetrics_bytesin_total", (("topic", "metered"),)) not in before
    size = value(after, "kafka_log_log_size_bytes", topic="metered", partition="0")
    assert size > N * 100, size
    bytes_in = value(after, "kafka_server_brokertopicmetrics_bytesin_total", topic="metered")
    assert bytes_in == size, f"BytesIn {bytes_in} but the log holds {size} bytes"
    assert value(after, "kafka_server_brokertopicmetrics_messagesin_total", topic="metered") == N
    assert value(after, "kafka_server_brokertopicmetrics_bytesout_total", topic="metered") >= size

    for api in ("Produce", "FetchConsumer", "Metadata"):
        moved = total(after, "kafka_network_requestmetrics_requests_total", request=api) - \
            total(before, "kafka_network_requestmetrics_requests_total", request=api)
        assert moved >= 1, f"no {api} request counted"
        # The histogram counts every request its counter counts (scraped at the same moment).
        assert value(after, "kafka_network_requestmetrics_totaltime_seconds_count", request=api) == \
            total(after, "kafka_network_requestmetrics_requests_total", request=api), api
        assert value(after, "kafka_network_requestmetrics_totaltime_seconds_bucket", request=api, le="+Inf") == \
            value(after, "kafka_network_requestmetrics_totaltime_seconds_count", request=api)
    assert value(after, "kafka_server_socketservermetrics_connection_count", listener="PLAINTEXT") >= 1
    partitions = value(after, "kafka_server_replicamanager_partitioncount")
    assert partitions >= 1 and value(after, "kafka_server_replicamanager_leadercount") == partitions
    assert value(after, "kafka_server_replicamanager_underreplicatedpartitions") == 0
    assert value(after, "kafka_server_replicamanager_underminisrpartitioncount") == 0
    # A single node: its own active controller and quorum leader, nothing offline.
    assert value(after, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(after, "kafka_server_raftmetrics_current_leader") == 1
    assert value(after, "kafka_server_raftmetrics_current_epoch") >= 1
    hw = value(after, "kafka_server_raftmetrics_high_watermark")
    assert value(after, "kafka_server_brokermetadatametrics_last_applied_record_offset") <= hw
    assert hw > value(before, "kafka_server_raftmetrics_high_watermark") > 0, "creating the topic did not move it"
    assert value(after, "kafka_server_raftmetrics_log_end_offset") >= hw
    assert value(after, "kafka_controller_kafkacontroller_offlinepartitionscount") == 0
    # The group's committed offset and lag; then 50 records more, not consumed: lag 50.
    group = dict(consumergroup="metered-readers", topic="metered", partition="0")
    assert value(after, "kafka_consumergroup_current_offset", **group) == N
    assert value(after, "kafka_consumergroup_lag", **group) == 0
    for i in range(50):
        producer.produce("metered", value=b"unread")
    assert producer.flush(30) == 0
    later = scrape(port)
    assert value(later, "kafka_consumergroup_lag", **group) == 50
    assert value(later, "kafka_server_brokertopicmetrics_messagesin_total", topic="metered") == N + 50
    # Per-directory log sizes add up to the partitions' sizes; the producer's acks=all
    # requests passed through the Produce purgatory and left it.
    assert total(after, "kafka_log_logdir_size_bytes") == total(after, "kafka_log_log_size_bytes") > 0
    assert value(after, "kafka_server_delayedoperationpurgatory_purgatorysize", delayedoperation="Produce") == 0
    # One node: no ISR changes, no cleanings yet (the figures are there, at zero).
    assert value(after, "kafka_server_replicamanager_isrshrinks_total") == 0
    assert value(after, "kafka_server_replicamanager_isrexpands_total") == 0
    assert value(after, "kafka_log_logcleaner_cleanings_total") == 0
    assert value(after, "kafka_log_logcleaner_failed_cleanings_total") == 0
    # A Metadata request for a topic that does not exist counts its error by Kafka's name.
    # (strata's own admin client: librdkafka's Metadata for one topic would auto-create it)
    import subprocess
    from conftest import strata_bin
    r = subprocess.run([str(strata_bin()), "topic", "describe", "metered-no-such-topic", "--bootstrap-server", boot],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr, (r.returncode, r.stderr)
    errors = scrape(port)
    assert value(errors, "kafka_network_requestmetrics_errors_total", request="Metadata",
                 error="UNKNOWN_TOPIC_OR_PARTITION") >= 1
    assert total(errors, "kafka_network_requestmetrics_errors_total", request="Produce") == 0
    # A consumer's long poll on an empty topic waits in the Fetch purgatory.
    ck_create_topic(boot, "metered-empty", partitions=1)
    idle = ck_consumer(boot, **{"group.id": "metered-idle", "fetch.wait.max.ms": 5000})
    idle.subscribe(["metered-empty"])
    stop = threading.Event()
    poller = threading.Thread(target=lambda: [idle.poll(0.2) for _ in iter(stop.is_set, True)], daemon=True)
    poller.start()
    try:
        wait_until(lambda: value(scrape(port), "kafka_server_delayedoperationpurgatory_purgatorysize",
                                 delayedoperation="Fetch") >= 1, 30, message="no fetch waited in the purgatory")
    finally:
        stop.set()
        poller.join(10)
        idle.close()
    assert value(after, "process_cpu_seconds_total") > 0
    assert value(after, "process_resident_memory_bytes") > 1 << 20
    assert value(after, "process_open_fds") > 5


def test_a_bad_http_listener_stops_the_start(broker_factory):
    import subprocess
    b = broker_factory("http.listener=not-a-port", start=False)
    b.data_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(b.argv(), capture_output=True, text=True, timeout=30, cwd=b.workdir)
    assert r.returncode != 0 and "http.listener=not-a-port is not HOST:PORT" in r.stderr, r.stderr[-2000:]
