"""The status page at `/`, in a real browser: what a person sees (the containers, job counts
that change after jobs run, failures), refreshing by itself; a screenshot is kept."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import Page, expect

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
