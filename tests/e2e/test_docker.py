"""Strata in containers (issue #17): the image scripts/docker-image.sh builds from the binary
under test, and docker/compose.yaml's three-node cluster, configured only by KAFKA_*
environment variables (`strata server --env-prefix KAFKA_`, Apache Kafka's image rules) and
formatted from CLUSTER_ID at each node's first start.

What is checked, with real containers (host networking on 127.0.0.1, free ports, a unique
compose project, tag and cluster id) and confluent-kafka:
- the image runs as a non-root user, declares a volume at /var/lib/strata and starts
  `strata server --env-prefix KAFKA_` (its size is reported);
- the three nodes answer on their client ports and `/ready`; a topic with replication factor 3
  has every replica in sync, takes N records with acks=all and gives them all back;
  `/metrics` parses as OpenMetrics, has the topic's partitions on the scraped node, counts
  exactly N records in over the cluster and one active controller;
- `docker kill` (SIGKILL) of the container of partition 0's leader: acks=all writes go on
  with two of three; started again, the container keeps its volume (the same cluster id and
  directory id in meta.properties, files owned by the image's user, read from the volume on
  the host), rejoins the ISR of every partition, and every record, old and new, reads back
  exactly once;
- no container log says "panicked".

Skipped (with the reason) when docker cannot run here: no `docker` client, `docker info`
fails, or no `docker-compose`. scripts/install-test-deps.sh installs and starts them as root.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import strata_bin
from e2e_util import (
    REPO_ROOT,
    assert_dense,
    ck_admin,
    ck_producer,
    ck_read_partitions,
    fail_unless,
    free_port,
    probe_broker,
    wait_until,
)

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
IMAGE_SCRIPT = REPO_ROOT / "scripts" / "docker-image.sh"
ENTRYPOINT = ["/usr/local/bin/strata", "server", "--env-prefix", "KAFKA_"]
NODES = (1, 2, 3)
PARTITIONS = 3
N = 600  # records before the kill
M = 300  # records while one node is down


def docker_problem() -> str | None:
    """Why docker cannot run containers here, or None."""
    if not shutil.which("docker"):
        return "no `docker` client on PATH (scripts/install-test-deps.sh installs docker.io as root)"
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 60 s"
    if r.returncode != 0:
        return f"`docker info` failed (no daemon running, or no access to it): {r.stderr.strip()[-400:]}"
    if not shutil.which("docker-compose"):
        return "no `docker-compose` on PATH (scripts/install-test-deps.sh installs it as root)"
    return None


def run(argv: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def read_properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class Compose:
    """One docker-compose project of docker/compose.yaml, on its own ports."""

    def __init__(self, image: str, cluster_id: str):
        self.project = f"strata-e2e-{uuid.uuid4().hex[:10]}"
        self.cluster_id = cluster_id
        ports: set[int] = set()
        while len(ports) < 3 * len(NODES):
            ports.add(free_port())
        it = iter(sorted(ports))
        self.port = {n: next(it) for n in NODES}
        self.controller_port = {n: next(it) for n in NODES}
        self.http_port = {n: next(it) for n in NODES}
        self.env = dict(os.environ, STRATA_IMAGE=image, STRATA_CLUSTER_ID=cluster_id, STRATA_HOST="127.0.0.1")
        for n in NODES:
            self.env[f"STRATA_PORT_{n}"] = str(self.port[n])
            self.env[f"STRATA_CONTROLLER_PORT_{n}"] = str(self.controller_port[n])
            self.env[f"STRATA_HTTP_PORT_{n}"] = str(self.http_port[n])

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args],
                   timeout=timeout, check=check, env=self.env, cwd=REPO_ROOT)

    def bootstrap(self, *nodes: int) -> str:
        return ",".join(f"127.0.0.1:{self.port[n]}" for n in (nodes or NODES))

    def container(self, node: int) -> str:
        cid = self.compose("ps", "-q", f"strata-{node}").stdout.strip()
        assert cid, f"no container for strata-{node}"
        return cid

    def state(self, node: int) -> dict:
        return json.loads(run(["docker", "inspect", "-f", "{{json .State}}", self.container(node)]).stdout)

    def restart_count(self, node: int) -> int:
        return int(run(["docker", "inspect", "-f", "{{.RestartCount}}", self.container(node)]).stdout.strip())

    def volume_dir(self, node: int) -> Path:
        """The node's named volume on the host (tests run as root, so it can be read)."""
        volume = f"{self.project}_strata-{node}-data"
        return Path(run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume]).stdout.strip())

    def meta_properties(self, node: int) -> dict[str, str]:
        return read_properties(self.volume_dir(node) / "data" / "meta.properties")

    def logs(self, tail: int = 120) -> str:
        try:
            r = self.compose("logs", "--no-color", f"--tail={tail}", timeout=60, check=False)
            return f"--- docker-compose logs (last {tail} lines per node) ---\n{r.stdout}{r.stderr}"
        except Exception as e:  # noqa: BLE001 - best effort, for a failure message
            return f"(docker-compose logs failed: {e!r})"

    def full_logs(self) -> str:
        return self.compose("logs", "--no-color", timeout=60, check=False).stdout

    def down(self):
        """Removes the containers and volumes, by their compose labels if `down` left any."""
        self.compose("down", "-v", "--remove-orphans", "-t", "30", timeout=180, check=False)
        label = f"label=com.docker.compose.project={self.project}"
        left = run(["docker", "ps", "-aq", "--filter", label], check=False).stdout.split()
        if left:
            run(["docker", "rm", "-f", "-v", *left], check=False)
        volumes = run(["docker", "volume", "ls", "-q", "--filter", label], check=False).stdout.split()
        if volumes:
            run(["docker", "volume", "rm", "-f", *volumes], check=False)


@pytest.fixture
def image():
    """The image of the binary under test, built by scripts/docker-image.sh under a unique tag."""
    problem = docker_problem()
    if problem:
        pytest.skip(f"docker cannot run here: {problem}")
    binary = strata_bin()
    if not binary.exists():
        pytest.fail(f"STRATA_BIN {binary} does not exist (build it: cargo build -p strata-server)")
    tag = f"strata-e2e:{uuid.uuid4().hex[:12]}"
    try:
        t0 = time.monotonic()
        out = run([str(IMAGE_SCRIPT), "-t", tag, str(binary)], timeout=300)
        print(out.stdout, f"(built in {time.monotonic() - t0:.1f} s)")
        yield tag
    finally:
        run(["docker", "rmi", "-f", tag], check=False)


@pytest.fixture
def cluster(image):
    cluster_id = run([str(strata_bin()), "random-uuid"]).stdout.strip()
    c = Compose(image, cluster_id)
    try:
        yield c
    finally:
        c.down()


def check_image(tag: str, request) -> int:
    """The image's config: non-root user, volume, entrypoint. Returns its size in bytes."""
    info = json.loads(run(["docker", "image", "inspect", tag]).stdout)[0]
    config = info["Config"]
    user = (config.get("User") or "").split(":")[0]
    assert user not in ("", "0", "root"), f"the image runs as root (User={config.get('User')!r})"
    assert "/var/lib/strata" in (config.get("Volumes") or {}), f"no volume at /var/lib/strata: {config}"
    assert config.get("Entrypoint") == ENTRYPOINT, config.get("Entrypoint")
    size = info["Size"]
    request.node.user_properties.append(("image_size_bytes", size))
    print(f"[docker] image {tag}: {size / 2**20:.1f} MiB, user {config['User']}")
    return size


def wait_serving(c: Compose, nodes=NODES, timeout: float = 120):
    """Every node answers Metadata on its client port (advertising it) and /ready says 200;
    fails at once, with the logs, if a container exits or restarts."""
    last: dict[int, object] = {}

    def ready():
        for n in nodes:
            state = c.state(n)
            restarts = c.restart_count(n)
            if not state.get("Running") or state.get("Restarting") or restarts > 0:
                raise AssertionError(f"strata-{n}'s container exited ({restarts} restarts, state {state})\n"
                                     f"{c.logs()}")
        ok = True
        for n in nodes:
            try:
                probe_broker("127.0.0.1", c.port[n], expect_port=c.port[n])
                status, body = http_get(c.http_port[n], "/ready")
                if status != 200:
                    raise ValueError(f"/ready answered {status} {body.strip()!r}")
                last.pop(n, None)
            except Exception as e:  # noqa: BLE001 - keep polling
                last[n] = e
                ok = False
        return ok

    wait_until(ready, timeout, 0.5, lambda: f"nodes not serving after {timeout}s: {last}\n{c.logs()}")


def partitions_of(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """Partition -> (leader, replicas, isr) as Metadata answers."""
    md = ck_admin(bootstrap).list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return {}
    return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}


def wait_fully_in_sync(c: Compose, topic: str, bootstrap: str, timeout: float = 90):
    seen = {}

    def ok():
        seen["p"] = partitions_of(bootstrap, topic)
        return len(seen["p"]) == PARTITIONS and all(
            leader >= 0 and replicas == list(NODES) and isr == list(NODES)
            for leader, replicas, isr in seen["p"].values())

    wait_until(ok, timeout, 0.5,
               lambda: f"{topic}: not every partition has all of {list(NODES)} in sync: {seen.get('p')}\n{c.logs()}")


def produce(bootstrap: str, topic: str, values: list[bytes]):
    """Idempotent acks=all producer; every record must be acknowledged."""
    errors = []
    p = ck_producer(bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
                    message_timeout_ms=120000)

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for v in values:
        p.produce(topic, key=v, value=v, on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(150)
    fail_unless(left == 0 and not errors, lambda: f"{left} records unacknowledged, errors {errors[:5]}")


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    recs = ck_read_partitions(bootstrap, topic, list(range(PARTITIONS)))
    assert_dense(recs)
    return sorted(r.value for part in recs.values() for r in part)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    status, text = http_get(port, "/metrics")
    assert status == 200, (status, text[:500])
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def check_metrics(c: Compose, topic: str):
    scraped = {n: scrape(c.http_port[n]) for n in NODES}
    one = scraped[1]
    sizes = {p: one.get(("kafka_log_log_size_bytes", (("partition", str(p)), ("topic", topic))))
             for p in range(PARTITIONS)}
    assert all(s is not None and s > 0 for s in sizes.values()), f"node 1's log sizes of {topic}: {sizes}"
    messages_in = sum(v for s in scraped.values() for (name, labels), v in s.items()
                      if name == "kafka_server_brokertopicmetrics_messagesin_total" and ("topic", topic) in labels)
    assert messages_in == N, f"MessagesIn of {topic} over the cluster is {messages_in}, expected {N}"
    active = sum(s.get(("kafka_controller_kafkacontroller_activecontrollercount", ()), 0) for s in scraped.values())
    assert active == 1, f"{active} active controllers"
    for n in NODES:
        assert http_get(c.http_port[n], "/health") == (200, "ok\n")


@pytest.mark.timeout(480)
def test_compose_cluster_survives_a_killed_container(image, cluster, request):
    c = cluster
    try:
        size = check_image(image, request)
        t0 = time.monotonic()
        c.compose("up", "-d", timeout=180)
        wait_serving(c)
        started = time.monotonic() - t0

        topic = f"docker-{uuid.uuid4().hex[:8]}"
        from confluent_kafka.admin import NewTopic
        admin = ck_admin(c.bootstrap())
        fs = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)],
                                 request_timeout=30)
        fs[topic].result(30)
        wait_fully_in_sync(c, topic, c.bootstrap())

        first = [f"before-{i:05d}".encode() for i in range(N)]
        produce(c.bootstrap(), topic, first)
        got = read_all(c.bootstrap(), topic)
        fail_unless(got == sorted(first), lambda: f"read {len(got)} records back, expected the {N} produced")
        check_metrics(c, topic)

        # The volume as the node formatted it from CLUSTER_ID.
        victim = partitions_of(c.bootstrap(), topic)[0][0]
        assert victim in NODES, f"partition 0 has no leader ({victim})"
        meta_before = c.meta_properties(victim)
        assert meta_before.get("cluster.id") == c.cluster_id, meta_before
        assert meta_before.get("node.id") == str(victim), meta_before

        container = c.container(victim)
        run(["docker", "kill", container])  # SIGKILL
        wait_until(lambda: not c.state(victim).get("Running"), 30, 0.2,
                   f"strata-{victim}'s container still runs after docker kill")
        survivors = [n for n in NODES if n != victim]
        second = [f"during-{i:05d}".encode() for i in range(M)]
        produce(c.bootstrap(*survivors), topic, second)
        assert not c.state(victim).get("Running"), "the killed container was restarted before `start`"

        c.compose("start", f"strata-{victim}")
        assert c.container(victim) == container, "docker-compose start made a new container"
        wait_serving(c)
        wait_fully_in_sync(c, topic, c.bootstrap())

        meta_after = c.meta_properties(victim)
        assert meta_after == meta_before, f"meta.properties changed: {meta_before} -> {meta_after}"
        data = c.volume_dir(victim) / "data"
        user = run(["docker", "image", "inspect", "-f", "{{.Config.User}}", image]).stdout.strip().split(":")[0]
        owner = (data / "meta.properties").stat().st_uid
        assert not user.isdigit() or owner == int(user), f"meta.properties owned by {owner}, not the image's user {user}"
        for p in range(PARTITIONS):
            assert list((data / f"{topic}-{p}").glob("*.log")), f"{topic}-{p} has no segment in the volume"

        got = read_all(c.bootstrap(), topic)
        fail_unless(got == sorted(first + second), lambda: (
            f"read {len(got)} records after the restart, expected {N + M}: "
            f"missing {len(set(first + second) - set(got))}, duplicates {len(got) - len(set(got))}"))

        logs = c.full_logs()
        panics = [line for line in logs.splitlines() if "panicked" in line]
        assert not panics, "container logs contain 'panicked':\n" + "\n".join(panics)
        print(f"[docker] image {size / 2**20:.1f} MiB; cluster serving {started:.1f} s after `up -d`; "
              f"killed and restarted strata-{victim}")
    except (Exception, pytest.fail.Exception) as e:
        if "docker-compose logs" in str(e):
            raise
        raise AssertionError(f"{e}\n\n{c.logs()}") from e
