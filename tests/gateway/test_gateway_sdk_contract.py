"""The rest of the nullrun SDK's (0.22.2) public calls against a real node (issue 25): the
approximate budget and the audit log, driven from a separate agent process exactly as
tests/gateway/test_gateway_sdk.py drives init, @protect and tracking."""

from __future__ import annotations

import pytest

from tests.gateway.test_gateway_sdk import PRICES, Agent, Org
from tests.helpers import NodeProcess

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("sdk-contract"), [], {"gateway": {"model_prices": PRICES}})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def org(node) -> Org:
    return Org(node)


def lines_of(agent: Agent, event: str) -> list[dict]:
    agent.proc.wait(60)
    found = []
    while True:
        try:
            line = agent.next(timeout=2)
        except AssertionError:
            break
        if line.get("event") == event:
            found.append(line)
    assert agent.proc.returncode == 0, "".join(agent.stderr)[-3000:]
    return found


def test_the_sdks_approximate_budget_matches_the_dashboard_after_tracked_spend(node, org, tmp_path):
    wid = org.workflow(budget=10)
    agent = Agent(node, org.key(wid), "approximate", tmp_path, NR_IN="1000", NR_OUT="500")
    [line] = lines_of(agent, "approximate")
    estimate = line["budget"]
    workflow = org.admin("GET", f"/workflows/{wid}").json
    assert workflow["spent_usd"] == pytest.approx(2.0)  # gpt-x: $1 + $1 for this call
    assert estimate["is_approximate"] is True and estimate["workflow_id"] == wid
    assert estimate["current_spend_cents_estimate"] == 200
    for field in ("budget_usd", "spent_usd", "reserved_usd", "remaining_usd"):
        assert estimate[field] == pytest.approx(workflow[field]), field
    assert estimate["remaining_usd"] == pytest.approx(8.0)


def test_the_approximate_budget_needs_a_workflow_and_stays_inside_the_keys_scope(node, org):
    wid, other = org.workflow(budget=1), org.workflow(budget=1)
    http = node.http()
    unbound = org.key(None)["api_key"]
    missing = http.request("GET", "/api/v1/budget/approximate", headers={"X-API-Key": unbound})
    assert missing.status == 400 and "workflow_id" in missing.json["error"]["message"]
    bound = org.key(wid)["api_key"]
    foreign = http.request("GET", f"/api/v1/budget/approximate?workflow_id={other}", headers={"X-API-Key": bound})
    assert foreign.status == 403
    stranger = Org(node).key(None)["api_key"]
    probe = http.request("GET", f"/api/v1/budget/approximate?workflow_id={wid}", headers={"X-API-Key": stranger})
    assert probe.status == 404
    assert http.request("GET", "/api/v1/budget/approximate").status == 401
