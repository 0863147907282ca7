"""The status page at `/`, in a real browser: what a person sees (the containers, job counts
that change after jobs run, failures, charts of the last hour), refreshing by itself; screenshots
are kept in build/screenshots/."""

from __future__ import annotations

import re
import shutil
import time
from types import SimpleNamespace

import pytest
from playwright.sync_api import Page, expect

from node.observe.api import ChartHistory
from node.observe.metrics import NodeMetrics
from tests.helpers import REPO
from tests.observe_browser import browser_type_launch_args  # noqa: F401 - fixture
from tests.observe_helpers import FakeContainer, ThreadNode

SCREENSHOTS = REPO / "build" / "screenshots"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    service = FakeContainer()
    proc = ThreadNode(tmp_path_factory.mktemp("page"), {
        "containers": [{"id": "echo", "url": service.url}, {"id": "upper", "url": service.url}]}).start()
    yield proc
    proc.stop()
    service.close()


def test_status_page_shows_containers_and_counts_that_move(node, page: Page, tmp_path):
    page.goto(f"http://127.0.0.1:{node.port}/?refresh=500")
    rows = page.locator("#container-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("echo")
    expect(rows.nth(0)).to_contain_text("external")
    expect(rows.nth(1)).to_contain_text("upper")
    expect(page.locator("#readiness")).to_have_text("ready")
    expect(page.locator("#jobs-finished")).to_have_text("0")
    expect(page.get_by_text("no failed jobs")).to_be_visible()

    http = node.http()
    for data in ({"n": 1}, {"n": 2}, {"n": 3}, {"fail": True}):
        http.wait_job(http.submit(["echo"], data))
    # no reload: the page refreshes itself
    expect(page.locator("#jobs-finished")).to_have_text("4", timeout=10_000)
    expect(page.locator("#jobs-failed")).to_have_text("1")
    failed = page.locator("#failed-rows tr")
    expect(failed).to_have_count(1)
    expect(failed.first).to_contain_text("HTTP 500")
    expect(page.locator("#problems")).to_be_hidden()

    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / "status-page.png")


def test_status_page_asks_for_the_token_when_the_node_refuses(node, page: Page):
    page.route("**/api/node/status", lambda route: route.fulfill(
        status=401, content_type="application/json", body='{"error": "Operator token required"}'))
    page.goto(f"http://127.0.0.1:{node.port}/")
    expect(page.get_by_label("Operator token (server.admin_token)")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Operator token required")


# -- the charts: the last hour, drawn from the node's own data -----------------------------------


@pytest.fixture
def charts_node(tmp_path):
    """A node of its own (the counts above must start from zero), sampling every 0.5 s."""
    service = FakeContainer()
    proc = ThreadNode(tmp_path, {"containers": [{"id": "echo", "url": service.url},
                                                {"id": "upper", "url": service.url}]}).start()
    yield proc
    proc.stop()
    service.close()


def run_jobs(http, ok: int, failed: int, container: str = "echo") -> None:
    for n in range(ok):
        http.wait_job(http.submit([container], {"n": n}))
    for _ in range(failed):
        http.wait_job(http.submit([container], {"fail": True}))


def test_charts_data_counts_this_minutes_jobs_and_failures_and_each_containers_latency(charts_node):
    http = charts_node.http()
    run_jobs(http, ok=5, failed=2)
    run_jobs(http, ok=1, failed=0, container="upper")
    deadline = time.monotonic() + 10
    while True:  # latency is sampled every observe.interval (0.5 s here)
        charts = http.get("/api/node/charts").json
        latency = charts["latency_ms"]["containers"]
        if {"echo", "upper"} <= set(latency) and any(v for v in latency["echo"]):
            break
        assert time.monotonic() < deadline, charts
        time.sleep(0.2)
    jobs = charts["jobs"]
    assert jobs["bucket_s"] == 60 and len(jobs["finished"]) == len(jobs["failed"]) == 60
    assert sum(jobs["finished"][-2:]) == 8 and sum(jobs["failed"][-2:]) == 2  # this minute (or the one before)
    assert sum(jobs["finished"][:-2]) == 0 and jobs["truncated"] is False
    assert 0 < max(v for v in latency["echo"] if v is not None) < 5_000  # ms
    assert len(charts["latency_ms"]["t"]) == len(latency["echo"])
    assert charts["chain"] is None  # no chain configured


def test_charts_data_survives_a_restart_for_jobs_since_they_come_from_the_jobs_table(tmp_path):
    service = FakeContainer()
    config = {"containers": [{"id": "echo", "url": service.url}]}
    try:
        node = ThreadNode(tmp_path, config).start()
        run_jobs(node.http(), ok=3, failed=1)
        node.stop()
        node = ThreadNode(tmp_path, config).start()
        jobs = node.http().get("/api/node/charts").json["jobs"]
        node.stop()
    finally:
        service.close()
    assert sum(jobs["finished"]) == 4 and sum(jobs["failed"]) == 1


def test_chart_history_keeps_one_hour_of_chain_lag_and_mean_call_latency_per_interval():
    metrics = NodeMetrics()
    sampler = SimpleNamespace(latest=SimpleNamespace(chain=None))
    history = ChartHistory(metrics, sampler, interval=10)
    metrics.container_called("echo", 0.010, True)
    metrics.container_called("echo", 0.030, True)
    assert history.record(now=0)["latency_ms"] == {"echo": 20.0}
    assert history.record(now=10)["latency_ms"] == {"echo": None}  # no calls in this interval
    sampler.latest.chain = SimpleNamespace(head=120, cursor=100, lag=20, rpc_up=True)
    metrics.container_called("echo", 0.004, True)
    assert history.record(now=20) == {"t": 20, "latency_ms": {"echo": 4.0},
                                      "chain": {"head": 120, "cursor": 100, "lag": 20, "rpc_up": True}}
    series = history.series()
    assert series["chain"] == {"t": [20], "head": [120], "cursor": [100], "lag": [20], "rpc_up": [True]}
    assert series["latency_ms"] == {"t": [0, 10, 20], "containers": {"echo": [20.0, None, 4.0]}}
    for n in range(400):  # one hour at 10 s is 361 points: the oldest go
        history.record(now=30 + n * 10)
    assert len(history.points) == 361 and history.points[0]["t"] == 30 + 39 * 10


def test_status_page_draws_the_last_hour_as_charts(charts_node, page: Page, tmp_path):
    http = charts_node.http()
    run_jobs(http, ok=6, failed=2)
    run_jobs(http, ok=2, failed=0, container="upper")
    page.goto(f"http://127.0.0.1:{charts_node.port}/?refresh=500")
    jobs = page.locator("#chart-jobs svg")
    expect(jobs.locator("polyline")).to_have_count(1)
    expect(jobs).to_have_attribute("aria-label", re.compile(r"^Jobs per second \(last hour\): finished/s 0\.\d*[1-9]"))
    expect(page.locator("#chart-jobs .now")).to_have_text(re.compile(r"^0\.\d*[1-9]\d* /s \(last 5 min\)$"))
    failures = page.locator("#chart-failures")
    expect(failures.locator(".now")).to_have_text("2 in the last hour")
    latency = page.locator("#chart-latency")
    expect(latency.locator("polyline, circle")).to_have_count(2, timeout=10_000)  # echo and upper
    expect(latency.locator(".legend")).to_contain_text("echo")
    expect(latency.locator(".legend")).to_contain_text("upper")
    expect(latency.locator(".now")).to_contain_text(" ms (slowest, latest)")
    expect(page.locator("#chart-lag .now")).to_have_text("chain not enabled")

    # A node following a chain reports the lag as a series: the page draws it.
    def with_chain(route):
        body = route.fetch().json()
        t = body["now"]
        body["chain"] = {"t": [t - 30, t - 20, t - 10, t], "head": [10, 12, 20, 22], "cursor": [10, 11, 12, 21],
                         "lag": [0, 1, 8, 1], "rpc_up": [True] * 4}
        route.fulfill(json=body)
    page.route("**/api/node/charts", with_chain)
    lag = page.locator("#chart-lag")
    expect(lag.locator(".now")).to_have_text("1 blocks behind")
    expect(lag.locator("polyline")).to_have_count(1)
    assert len(lag.locator("polyline").get_attribute("points").split()) == 4

    shot = tmp_path / "status-page-charts.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / "status-page-charts.png")
    # The page keeps polling: a poll routed while the page closes must not fail the teardown.
    page.unroute_all(behavior="ignoreErrors")


def test_charts_callers_within_ten_seconds_share_one_scan_of_the_jobs_table(charts_node, monkeypatch):
    import node.observe.api as observe_api
    scans = []
    real = observe_api.jobs_per_bucket

    async def counting(*args, **kw):
        scans.append(args[1])
        return await real(*args, **kw)

    monkeypatch.setattr(observe_api, "jobs_per_bucket", counting)
    http = charts_node.http()
    answers = [http.get("/api/node/charts").json["jobs"] for _ in range(5)]
    assert len(scans) == 1 and all(a == answers[0] for a in answers)


def test_status_page_shows_each_rpcs_state_head_lag_latency_and_errors_without_its_key(node, page: Page):
    from node.chain.rpc import Endpoint, RpcPool

    # The status JSON a chain node with three RPCs serves: the first read from, the second down
    # after errors, the third lagging; all with API keys in their paths.
    pool = RpcPool([Endpoint("https://rpc-a.example:8545/KEY-A"), Endpoint("https://rpc-b.example/v2/KEY-B"),
                    Endpoint("http://127.0.0.1:9/KEY-C", weight=2)], max_lag_blocks=5)
    a, b, c = pool.endpoints
    a.head, a.latency_ms, pool._current = 120, 12.34, a
    b.head = 119
    for _ in range(3):
        b.failed("ClientConnectorError")
    c.head, c.latency_ms, c.rate_limited = 100, 80.5, 2
    rpcs = pool.status()

    def with_chain(route):
        body = route.fetch().json()
        body["chain"] = {"address": "0x" + "ab" * 20, "rpc_up": True, "rpc_error": None, "head": 120, "cursor": 119,
                         "lag": 1, "balance_wei": "10", "min_balance_wei": "0", "tracked_subscriptions": 0,
                         "deliveries": {}, "last_delivery": None, "heads": "subscription", "rpcs": rpcs}
        route.fulfill(json=body)

    page.route("**/api/node/status", with_chain)
    page.goto(f"http://127.0.0.1:{node.port}/?refresh=500")
    rows = page.locator("#rpc-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("td")).to_have_text(
        ["https://rpc-a.example:8545 (reads)", "read", "up", "120", "0", "12.3", "0", "0"])
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("https://rpc-b.example")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text(re.compile(r"^down \(back in \d+(\.\d)? s\)$"))
    expect(rows.nth(1).locator("td").nth(2)).to_have_class("bad")
    expect(rows.nth(1).locator("td").nth(6)).to_have_text("3")
    expect(rows.nth(2).locator("td")).to_have_text(
        ["http://127.0.0.1:9", "read", "lagging", "100", "20", "80.5", "0", "2"])
    expect(page.locator("#chain-heads")).to_have_text("(heads by subscription)")
    expect(page.locator("#chain-section")).not_to_contain_text("KEY")
    page.unroute_all(behavior="ignoreErrors")


def test_status_page_shows_each_cre_workflows_runs_failures_and_last_execution_and_hides_the_part_when_null(
        node, page: Page):
    from node.timefmt import iso_utc

    page.goto(f"http://127.0.0.1:{node.port}/?refresh=500")
    expect(page.locator("#readiness")).to_have_text("ready")
    expect(page.locator("#cre-section")).to_be_hidden()  # this node runs no CRE workflow: cre_workflows is null

    # The part a node running two workflows serves: one that ran (its last run succeeded, an
    # earlier one failed with an error that looks like markup), one never triggered.
    def with_cre(route):
        body = route.fetch().json()
        now = body["node"]["time"]
        body["cre_workflows"] = [
            {"name": "price-feed", "workflowId": "ab" * 32, "triggers": ["cron", "http"], "inflight": 1,
             "executions": 5, "failures": 1, "counts": {"succeeded": 3, "failed": 1, "running": 1},
             "lastExecution": {"executionId": "e5", "trigger": "cron", "status": "succeeded",
                               "startedAt": iso_utc(now - 12), "durationMs": 34, "error": None},
             "lastFailure": {"executionId": "e2", "trigger": "http", "status": "failed",
                             "startedAt": iso_utc(now - 180), "durationMs": 5,
                             "error": "<b>trap</b>: fetch refused"}},
            {"name": "idle", "workflowId": "cd" * 32, "triggers": ["evm-log"], "inflight": 0, "executions": 0,
             "failures": 0, "counts": {}, "lastExecution": None, "lastFailure": None},
        ]
        route.fulfill(json=body)

    page.route("**/api/node/status", with_cre)
    section = page.locator("#cre-section")
    expect(section).to_be_visible()
    rows = page.locator("#cre-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td")).to_have_text(
        ["price-feed", "cron, http", "5", "1", "1", "succeeded · 12s ago · 34 ms", "<b>trap</b>: fetch refused · 3m ago"])
    expect(rows.nth(0).locator("td").nth(0)).to_have_attribute("title", "workflowId " + "ab" * 32)
    expect(rows.nth(0).locator("td").nth(2)).to_have_attribute("title", "succeeded 3, failed 1, running 1")
    expect(rows.nth(0).locator("td").nth(3)).to_have_class("num bad")
    expect(rows.nth(0).locator("td b")).to_have_count(0)  # the error is text, never markup
    expect(rows.nth(1).locator("td")).to_have_text(["idle", "evm-log", "0", "0", "0", "never", "none"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    section.screenshot(path=str(SCREENSHOTS / "status-page-cre.png"))
    page.unroute_all(behavior="ignoreErrors")


def test_status_page_shows_each_registry_chains_rpcs_and_hides_the_part_without_watchers(node, page: Page):
    page.goto(f"http://127.0.0.1:{node.port}/?refresh=500")
    expect(page.locator("#readiness")).to_have_text("ready")
    expect(page.locator("#registry-chains-section")).to_be_hidden()  # this node watches no registry chain

    def with_watchers(route):  # what a node watching one chain through two RPCs, one down, serves
        body = route.fetch().json()
        rpc = {"role": "read", "weight": 1, "requests": 9, "last_error": None}
        body["registry_chains"] = [{"chain_id": 8453, "rpcs": [
            {**rpc, "rpc": "https://a.example:443", "state": "down", "in_use": False, "head": 100, "lag": 3,
             "latency_ms": None, "errors": 4, "rate_limited": 0, "back_in_s": 7.5},
            {**rpc, "rpc": "https://b.example:443", "state": "up", "in_use": True, "head": 103, "lag": 0,
             "latency_ms": 21.4, "errors": 0, "rate_limited": 2, "back_in_s": 0}]}]
        route.fulfill(json=body)

    page.route("**/api/node/status", with_watchers)
    expect(page.locator("#registry-chains-section")).to_be_visible()
    rows = page.locator("#registry-rpc-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_text(re.compile(r"8453.*https://a\.example:443.*down \(back in 7\.5 s\).*100.*3"))
    expect(rows.nth(1)).to_have_text(re.compile(r"8453.*https://b\.example:443 \(reads\).*up.*103.*21\.4"))
    page.unroute_all(behavior="ignoreErrors")
