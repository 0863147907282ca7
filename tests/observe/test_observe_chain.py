"""A silent failure made loud: the chain RPC stops answering while every container is up. The
node's metrics, `node-daemon status` and the status page all say so, and the chain families
(head, cursor, deliveries, wallet) move when a subscription is delivered."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page, expect

from tests.chain_helpers import KEYS, Anvil, chain_config, deploy
from tests.helpers import REPO
from tests.observe_browser import browser_type_launch_args  # noqa: F401 - fixture
from tests.observe_helpers import FakeContainer, ThreadNode
from tests.observe.test_observe import scrape, value

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def start(tmp_path):
    service, broken = FakeContainer(), FakeContainer(broken=True)
    chain = Anvil(block_time=1).start()
    dep = deploy(chain.url)
    config = chain_config(chain.url, dep, KEYS[1])
    config["wallet"]["min_balance"] = 10**30  # more than anvil's accounts hold: the wallet is "low"
    node = ThreadNode(tmp_path, {
        "containers": [{"id": "echo", "url": service.url}, {"id": "broken", "url": broken.url}],
        "chain": config,
        "observe": {"interval": 0.5, "cursor_stall_seconds": 2},
    }).start()

    def stop() -> None:
        node.stop()
        chain.stop()
        service.close()
        broken.close()

    return node, chain, dep, stop


@pytest.fixture
def chain_node(tmp_path):
    """Each test its own chain and node: pytest may reorder tests that use the browser."""
    node, chain, dep, stop = start(tmp_path)
    yield node, chain, dep
    stop()


def wait_for(check, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_deliveries_move_the_chain_metrics_and_a_low_wallet_and_a_failing_subscription_are_problems(chain_node):
    node, chain, dep = chain_node
    http = node.http()
    sub = dep.created_id(dep.send(dep.consumer.functions.requestCompute("echo", b"hello", 1)))
    dep.wait_deliveries(sub, 1)
    samples = wait_for(lambda: (s := scrape(http)) and value(s, "node_chain_deliveries", outcome="delivered") >= 1
                       and s, what="a delivered row in the metrics")
    assert value(samples, "node_chain_rpc_up") == 1
    assert value(samples, "node_chain_head_block") >= value(samples, "node_chain_cursor_block") > 0
    assert value(samples, "node_chain_wallet_balance_wei") > 0
    assert value(samples, "node_chain_last_delivery_timestamp_seconds") > time.time() - 120
    assert value(samples, "node_jobs_total", source="chain", containers="echo", outcome="success") >= 1
    assert value(samples, "node_problems", problem="wallet_balance_low") == 1

    # a subscription whose container always fails: three attempts, then a problem
    sub = dep.created_id(dep.send(dep.consumer.functions.requestCompute("broken", b"doomed", 1)))
    samples = wait_for(lambda: (s := scrape(http)) and value(s, "node_problems", problem="subscription_failing") == 1
                       and s, what="the failing-subscription problem")
    assert value(samples, "node_chain_deliveries", outcome="failed") >= 1
    assert value(samples, "node_jobs_total", source="chain", containers="broken", outcome="failed") == 3
    [problem] = [p for p in http.get("/api/node/status").json["problems"] if p["problem"] == "subscription_failing"]
    assert problem["subject"] == str(sub) and "3 failed delivery attempts" in problem["detail"]


def test_a_stopped_chain_rpc_shows_in_metrics_status_and_page(chain_node, page: Page):
    node, chain, dep = chain_node
    http = node.http()
    chain.stop()
    samples = wait_for(lambda: (s := scrape(http)) and value(s, "node_problems", problem="chain_cursor_stalled") == 1
                       and s, what="the stalled-cursor problem")
    assert value(samples, "node_chain_rpc_up") == 0
    assert value(samples, "node_container_state", container="echo", state="external") == 1  # "all up"

    out = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(node.config_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Problems" in out.stdout and "chain_cursor_stalled" in out.stdout
    assert "DOWN" in out.stdout

    page.goto(f"http://127.0.0.1:{node.port}/?refresh=500")
    problems = page.locator("#problems")
    expect(problems).to_be_visible()
    expect(problems).to_contain_text("chain_cursor_stalled")
    expect(page.locator("#chain-rows")).to_contain_text("down")
    page.screenshot(path=str(REPO / "build" / "screenshots" / "status-page-rpc-down.png"), full_page=True)
