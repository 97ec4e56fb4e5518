"""The web console (issue #17): `console.enable=true` on `http.listener`, driven in headless
Chromium (Debian's, through Playwright) against a real three-node cluster.

What is checked, page by page, against what the clients did:
- the cluster page shows the cluster id `strata format` wrote and all three brokers serving;
- the topics page lists the topic with its partition count and size; a click opens the topic,
  whose partitions show three replicas each, all in the ISR;
- the message browser (reached by a click on a partition's "messages" link) shows the records a
  producer wrote, keys, headers and values, as text and, after a form submit, as JSON;
- a consumer group that read 10 of 60 records lags by 50: the groups page says so, and the
  group's lag chart, sampled over time (`console.lag.sample.ms`), carries that lag, and its
  screenshot (saved in target/test-logs) shows the lag line drawn above the chart's zero line;
- the quorum page shows three voters and a leader;
- a name with HTML in it is shown as text (escaped), and an unknown page is a 404.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from e2e_util import ck_admin, ck_consumer, ck_producer, free_port, wait_until
from test_cluster import Cluster

pytestmark = pytest.mark.timeout(240)

TOPIC = "console-orders"
GROUP = "console-lagging"
CHROMIUM = "/usr/bin/chromium"
LOGS = Path(__file__).resolve().parents[2] / "target" / "test-logs"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    if not shutil.which("chromium") and not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/install-test-deps.sh installs it as root)")
    pytest.importorskip("playwright.sync_api")
    c = Cluster(tmp_path_factory.mktemp("console"))
    http_port = free_port()
    node = c.nodes[0]
    node.config.write_text(node.config.read_text()
                           + f"http.listener=127.0.0.1:{http_port}\nconsole.enable=true\nconsole.lag.sample.ms=300\n")
    try:
        c.start()
        yield c, f"http://127.0.0.1:{http_port}"
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def browser(console):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def data(console):
    """A topic of three partitions on three replicas with 60 keyed records, and a group that
    committed offsets after 10 of them."""
    from confluent_kafka.admin import NewTopic
    cluster, _ = console
    admin = ck_admin(cluster.bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])[TOPIC].result(30)
    wait_until(lambda: TOPIC in admin.list_topics(timeout=5).topics
               and all(p.leader >= 0 for p in admin.list_topics(timeout=5).topics[TOPIC].partitions.values()),
               30, message="topic has no leaders")
    producer = ck_producer(cluster.bootstrap, acks="all")
    for i in range(60):
        producer.produce(TOPIC, key=f"key-{i}", value=json.dumps({"order": i}), partition=0,
                         headers=[("source", b"console-test")])
    assert producer.flush(30) == 0
    consumer = ck_consumer(cluster.bootstrap, **{"group.id": GROUP, "enable.auto.commit": False})
    consumer.subscribe([TOPIC])

    def read_one():
        m = consumer.poll(0.5)
        return m is not None and not m.error()

    wait_until(read_one, 60, message="the consumer read nothing")
    # Commit exactly offset 10 on partition 0: the group lags by 50 there.
    from confluent_kafka import TopicPartition
    consumer.commit(offsets=[TopicPartition(TOPIC, 0, 10)], asynchronous=False)
    consumer.close()
    return {"records": 60, "committed": 10}


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    return page


def test_cluster_page_shows_the_brokers(console, browser, data):
    cluster, base = console
    page = open_page(browser, base + "/")
    assert page.locator("#cluster-id").inner_text().strip() == cluster.cluster_id
    rows = page.locator("#brokers tr").all()[1:]
    assert len(rows) == 3
    assert sorted(int(r.locator("td").nth(0).inner_text()) for r in rows) == [1, 2, 3]
    assert all(r.locator("td").nth(3).inner_text() == "serving" for r in rows)
    health = page.locator("#health tr").nth(1).locator("td")
    assert int(health.nth(2).inner_text()) == 0  # under-replicated
    assert int(health.nth(3).inner_text()) == 0  # offline
    page.screenshot(path=str(LOGS / "console-cluster.png"), full_page=True)
    page.close()


def test_topic_pages_and_the_message_browser(console, browser, data):
    _, base = console
    page = open_page(browser, base + "/")
    page.click("nav >> text=Topics")
    row = page.locator("#topics tr", has_text=TOPIC)
    assert row.locator("td").nth(1).inner_text() == "3"
    assert row.locator("td").nth(2).inner_text() == "3"
    row.locator("a").click()
    page.wait_for_selector("#partitions")
    parts = page.locator("#partitions tr").all()[1:]
    assert len(parts) == 3
    for r in parts:
        replicas = sorted(r.locator("td").nth(2).inner_text().split(", "))
        isr = sorted(r.locator("td").nth(3).inner_text().split(", "))
        assert replicas == ["1", "2", "3"] and isr == replicas
    assert parts[0].locator("td").nth(4).inner_text() != "0 B"  # partition 0 holds the records
    parts[0].locator("a", has_text="messages").click()
    page.wait_for_selector("#messages")
    # The default view: the last 50 records of partition 0, as text.
    records = page.locator("#messages tr.record").all()
    assert len(records) == 50
    first = records[0].locator("td")
    assert first.nth(0).inner_text() == "10"
    assert first.nth(2).inner_text() == "key-10"
    assert "source: console-test" in first.nth(3).inner_text()
    assert json.loads(first.nth(4).inner_text()) == {"order": 10}
    # From offset 5, three records, shown as JSON.
    page.select_option("select[name=from]", "offset")
    page.fill("input[name=offset]", "5")
    page.fill("input[name=limit]", "3")
    page.select_option("select[name=format]", "json")
    page.click("#go")
    page.wait_for_url("**format=json**")
    records = page.locator("#messages tr.record").all()
    assert [r.locator("td").nth(0).inner_text() for r in records] == ["5", "6", "7"]
    assert json.loads(records[0].locator("td").nth(4).inner_text()) == {"order": 5}
    page.screenshot(path=str(LOGS / "console-messages.png"), full_page=True)
    page.close()


def test_group_lag_chart_shows_the_lag(console, browser, data):
    from PIL import Image
    _, base = console
    expected = data["records"] - data["committed"]
    page = open_page(browser, base + "/groups")
    row = page.locator("#groups tr", has_text=GROUP)
    assert int(row.locator("td.lag").inner_text()) == expected
    row.locator("a").click()
    page.wait_for_selector("#lag-chart")
    assert int(page.locator("#total-lag").inner_text()) == expected

    def sampled():
        page.reload()
        chart = page.locator("#lag-chart")
        return int(chart.get_attribute("data-samples")) >= 3 and int(chart.get_attribute("data-latest-lag")) == expected

    wait_until(sampled, 30, message="the lag chart never held several samples of the lag")
    offsets = page.locator("#offsets tr", has_text=TOPIC).filter(has_text="10")
    assert offsets.count() >= 1
    chart = page.locator("#lag-chart")
    png = chart.screenshot(path=str(LOGS / "console-lag-chart.png"))
    # The lag line (red) is drawn well above the zero line: with the lag at the chart's maximum,
    # its pixels sit in the upper part of the plot.
    img = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = img.size
    red_rows = [y for y in range(h) for x in range(0, w, 3)
                if (lambda p: p[0] > 180 and p[1] < 90 and p[2] < 90)(img.getpixel((x, y)))]
    assert red_rows, "no lag line in the chart's screenshot"
    assert min(red_rows) < h * 0.3, f"the lag line's highest pixel is at {min(red_rows)} of {h}"
    page.close()


def test_quorum_page_and_bad_names(console, browser, data):
    _, base = console
    page = open_page(browser, base + "/quorum")
    rows = page.locator("#replicas tr").all()[1:]
    assert len(rows) == 3
    roles = sorted(r.locator("td").nth(1).inner_text() for r in rows)
    assert roles == ["Follower", "Follower", "Leader"]
    assert int(page.locator("#leader").inner_text()) in (1, 2, 3)
    # A group name with markup is shown as text, never as markup.
    hostile = "<b id=injected>x</b>"
    page.goto(base + "/groups/" + "%3Cb%20id%3Dinjected%3Ex%3C%2Fb%3E")
    assert page.locator("#injected").count() == 0
    assert hostile in page.locator("h1").inner_text()
    missing = page.goto(base + "/no/such/page")
    assert missing.status == 404
    page.close()
