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


# -- the audit log through the SDK -----------------------------------------------------------

def events(agent: Agent) -> dict[str, list[dict]]:
    agent.proc.wait(90)
    found: dict[str, list[dict]] = {}
    while True:
        try:
            line = agent.next(timeout=2)
        except AssertionError:
            break
        found.setdefault(line.get("event") or line.get("fn"), []).append(line)
    assert agent.proc.returncode == 0, "".join(agent.stderr)[-3000:]
    return found


def deny_payments(org: Org) -> str:
    created = org.admin("POST", "/policies", {"name": "no payments", "action": "deny", "reason": "not today",
                                              "match": {"tools": ["send_money"]}})
    assert created.status == 201
    return created.json["id"]


def test_the_sdk_lists_filters_verifies_and_exports_the_orgs_audit_log(node, org, tmp_path):
    wid = org.workflow(budget=5)
    policy_id = deny_payments(org)
    key = org.key(wid)
    out = events(Agent(node, key, "audit", tmp_path))
    decisions, denials = out["audit_list"]
    assert decisions["ok"] and denials["ok"], out["audit_list"]
    assert [(r["action"], r["decision"], r["tool_name"]) for r in decisions["rows"]] == [
        ("execution.denied", "deny", "send_money"), ("execution.allowed", "allow", "work")]
    assert decisions["meta"] == {"total_returned": 2, "total_matching": 2, "filtered": True, "limit": 50}
    [denied] = denials["rows"]
    assert denied["policy_id"] == policy_id and denied["outcome"] == "denied"
    assert denied["actor"] == f"key:{key['id']}" and denied["execution_id"].startswith("exe_")
    # the two rows are linked: the newer names the older's hash
    newer, older = decisions["rows"]
    assert newer["previous_event_hash"] == older["current_event_hash"]
    [verified] = out["audit_verify"]
    assert verified["verified"] is True and verified["first_failure_reason"] is None
    assert verified["record_count"] >= 4  # registration, policy, key, the two decisions
    [status] = out["export_status"]
    assert status["status"] == "completed"
    assert out["export_created"][0]["job"]["job_id"] in status["jobs"]
    # the file: JSON lines, served to the same key (the SDK hands back the URL, not the bytes)
    path = status["file_url"].split(str(node.port), 1)[1]
    got = node.http().request("GET", path, headers={"X-API-Key": key["api_key"]})
    assert got.status == 200
    rows = [__import__("json").loads(line) for line in got.body.decode().splitlines()]
    # the key's workflow only: its own creation and the two decisions, oldest first
    assert [r["action"] for r in rows] == ["api_key.created", "execution.allowed", "execution.denied"]
    assert status["record_count"] == 3 and {r["workflow_id"] for r in rows} == {wid}
    # another org's key gets nothing of it
    stranger = Org(node).key(None)["api_key"]
    assert node.http().request("GET", path, headers={"X-API-Key": stranger}).status == 403


def test_a_workflow_bound_key_lists_only_its_workflows_rows_and_an_org_key_lists_all(node, org, tmp_path):
    wid, other = org.workflow(budget=5), org.workflow(budget=5)
    events(Agent(node, org.key(other), "basic", tmp_path))
    mine = events(Agent(node, org.key(wid), "audit", tmp_path))["audit_list"][0]
    assert {r["tool_name"] for r in mine["rows"]} == {"work", "send_money"}  # not the other's work/awork
    listed = org.admin("GET", "/audit-log?event_type=authorization_decision").json
    assert listed["meta"]["total_matching"] == 4
    assert node.http().request("GET", f"/api/v1/orgs/{org.org_id}/audit-log?since=yesterday",
                               headers=org.session).status == 400


def _tamper(node, sql: str, params=()) -> None:
    import sqlite3

    conn = sqlite3.connect(node.workdir / "node.db")
    try:
        conn.execute("DROP TRIGGER IF EXISTS gw_audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS gw_audit_no_delete")
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_a_row_altered_or_deleted_directly_in_sqlite_makes_the_sdks_verify_report_it(node, org, tmp_path):
    wid = org.workflow(budget=5)
    deny_payments(org)
    key = org.key(wid)
    rows = events(Agent(node, key, "audit", tmp_path))["audit_list"][0]["rows"]
    denied = next(r for r in rows if r["action"] == "execution.denied")
    # the attack: the denial rewritten as an allow, straight in the database file
    _tamper(node, "UPDATE gw_audit SET action = 'execution.allowed' WHERE id = ?", (int(denied["id"]),))
    [verdict] = events(Agent(node, key, "audit_verify", tmp_path))["audit_verify"]
    assert verdict["verified"] is False and verdict["chain_valid"] is False
    assert verdict["first_failure_reason"] == "content_hash_mismatch"
    # and in another org, a row deleted from the middle of the chain
    victim = Org(node)
    deny_payments(victim)
    deny_payments(victim)
    chain = victim.admin("GET", "/audit-log").json["data"]  # newest first
    assert len(chain) >= 3
    middle = chain[1]["id"]
    assert victim.admin("GET", "/audit-log/verify").json["verified"] is True
    _tamper(node, "DELETE FROM gw_audit WHERE id = ?", (int(middle),))
    broken = victim.admin("GET", "/audit-log/verify").json
    assert broken["verified"] is False and broken["first_failure_reason"] == "previous_hash_mismatch"
    assert int(broken["first_failure_id"]) > int(middle)
