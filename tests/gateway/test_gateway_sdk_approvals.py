"""Approvals driven by the published nullrun SDK (0.22.2) from a separate agent process
(issue 25): a policy with `action: require_approval` holds `send_money` until a member decides
on the dashboard API; the SDK waits for the `approval_resolved` push on /ws/control/{org}."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid

import pytest

from tests.gateway.accounts import Account
from tests.gateway.test_gateway_sdk import Agent, Org
from tests.gateway.test_gateway_sdk import sdk_post as _sdk_post
from tests.helpers import NodeProcess

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("sdk-approvals"), [],
                       {"gateway": {"webhook_allowed_networks": ["127.0.0.0/8"]}})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def org(node) -> Org:
    return Org(node)


def sdk_post(node, key, path: str, body: dict):
    """Each a new SDK request (its own operation id), as the SDK's are: the same signed bytes
    twice would be a replay and get the first answer."""
    return _sdk_post(node, key, path, {"operation_id": uuid.uuid4().hex, **body})


def hold_payments(org: Org, timeout: int) -> str:
    created = org.admin("POST", "/policies", {"name": "payments need a human", "action": "require_approval",
                                              "reason": "payments need a human",
                                              "match": {"tools": ["send_money"]},
                                              "approval": {"timeout_seconds": timeout, "approver_role": "admin"}})
    assert created.status == 201, created.body
    return created.json["id"]


def pending(org: Org, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = org.admin("GET", "/approvals?status=pending").json["approvals"]
        if found:
            [approval] = found
            return approval
        time.sleep(0.1)
    raise AssertionError("no approval became pending")


def test_an_approved_call_runs_its_body_once_after_the_approval_is_pushed(node, org, tmp_path):
    wid = org.workflow(budget=5)
    policy_id = hold_payments(org, 30)
    agent = Agent(node, org.key(wid), "approval", tmp_path)
    try:
        assert agent.next()["event"] == "ready"
        approval = pending(org)
        assert approval["tool"] == "send_money" and approval["workflow_id"] == wid
        assert approval["policy_id"] == policy_id and org.admin("GET", "/dashboard").json["pending_approvals"] == 1
        approved_at = time.time()
        decided = org.admin("POST", f"/approvals/{approval['id']}/approve", {"note": "ok this once"})
        assert decided.status == 200 and decided.json["status"] == "approved"
        sent = agent.next()
        assert sent["fn"] == "send_money" and sent["ok"] is True and sent["result"] == "sent 100"
        assert sent["runs"] == 1 and sent["t"] - approved_at < 5
        assert agent.next()["ok"] is True  # the next call is not held
    finally:
        agent.stop()
    final = org.admin("GET", f"/approvals/{approval['id']}").json
    assert final["status"] == "consumed" and final["decided_by"] == f"user:{org.user_id}"
    # deciding twice is refused; the decision is in the audit log
    assert org.admin("POST", f"/approvals/{approval['id']}/deny", {}).status == 409
    actions = [r["action"] for r in org.admin("GET", "/audit-log?resource_type=approval").json["data"]]
    assert actions == ["approval.consumed", "approval.approved"]


def test_a_denied_call_raises_the_sdks_denied_error_and_its_body_never_runs(node, org, tmp_path):
    wid = org.workflow(budget=5)
    hold_payments(org, 30)
    agent = Agent(node, org.key(wid), "approval", tmp_path)
    try:
        assert agent.next()["event"] == "ready"
        approval = pending(org)
        assert org.admin("POST", f"/approvals/{approval['id']}/deny", {"note": "not this one"}).status == 200
        denied = agent.next()
        assert denied["fn"] == "send_money" and denied["ok"] is False
        assert denied["error"] == "NullRunApprovalDeniedError" and "not this one" in denied["message"]
        assert denied["runs"] == 0
    finally:
        agent.stop()
    assert org.admin("GET", f"/approvals/{approval['id']}").json["status"] == "denied"


def test_an_approval_nobody_decides_raises_the_sdks_expiry_error_and_cannot_be_approved_later(node, org, tmp_path):
    wid = org.workflow(budget=5)
    hold_payments(org, 2)
    agent = Agent(node, org.key(wid), "approval", tmp_path)
    try:
        assert agent.next()["event"] == "ready"
        approval = pending(org)
        expired = agent.next(timeout=15)
        assert expired["ok"] is False and expired["error"] == "NullRunApprovalExpiredError" and expired["runs"] == 0
    finally:
        agent.stop()
    late = org.admin("POST", f"/approvals/{approval['id']}/approve")  # no body: no note
    assert late.status == 409 and org.admin("GET", f"/approvals/{approval['id']}").json["status"] == "expired"


def test_an_approval_is_used_once_for_its_own_execution_and_never_by_the_agents_key(node, org):
    """The attacks: the agent's key approving its own call, an approval replayed for another
    execution or tool, and consumed twice."""
    wid = org.workflow(budget=5)
    hold_payments(org, 30)
    key = org.key(wid)
    asked = sdk_post(node, key, "/execute", {"tool": "send_money", "execution_id": "exec-1"})
    assert asked.status == 200 and asked.json["decision"] == "require_approval"
    approval_id = asked.json["approval_id"]
    assert asked.json["approval_timeout_seconds"] == 30
    self_approve = node.http().request("POST", f"/api/v1/orgs/{org.org_id}/approvals/{approval_id}/approve", {},
                                       headers={"X-API-Key": key["api_key"]})
    assert self_approve.status == 403
    assert org.admin("POST", f"/approvals/{approval_id}/approve", {}).status == 200
    other_execution = sdk_post(node, key, "/execute", {"tool": "send_money", "execution_id": "exec-2",
                                                        "approval_id": approval_id})
    other_tool = sdk_post(node, key, "/execute", {"tool": "send_money_twice", "execution_id": "exec-1",
                                                   "approval_id": approval_id})
    assert other_execution.json["decision"] == "require_approval"
    assert other_tool.json["decision"] == "allow"  # no policy holds that tool: the approval is not needed
    wrong = sdk_post(node, key, f"/approvals/{approval_id}/consume", {"execution_id": "exec-2"})
    assert wrong.status == 409
    used = sdk_post(node, key, "/execute", {"tool": "send_money", "execution_id": "exec-1", "approval_id": approval_id})
    again = sdk_post(node, key, "/execute", {"tool": "send_money", "execution_id": "exec-1", "approval_id": approval_id})
    assert (used.json["decision"], again.json["decision"]) == ("allow", "require_approval")
    assert sdk_post(node, key, f"/approvals/{approval_id}/consume", {}).json["status"] == "already_consumed"
    stranger = Org(node)
    foreign = sdk_post(node, stranger.key(None), f"/approvals/{approval_id}/consume", {})
    assert foreign.status == 404


def test_the_orgs_alert_channels_are_told_of_a_pending_approval(node, org):
    posts: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert org.admin("POST", "/alert-channels", {"url": url}).status == 201
        wid = org.workflow()
        hold_payments(org, 30)
        asked = sdk_post(node, org.key(wid), "/execute", {"tool": "send_money", "execution_id": "exec-9"})
        deadline = time.monotonic() + 5
        while not posts and time.monotonic() < deadline:
            time.sleep(0.05)
        [post] = posts
        assert post["type"] == "approval_pending" and post["approval_id"] == asked.json["approval_id"]
        assert post["tool"] == "send_money" and post["workflow_id"] == wid and post["status"] == "pending"
    finally:
        server.shutdown()


def test_only_members_with_the_policys_role_may_decide(node, org):
    """The attack: a plain member (or a viewer) of the org approving a payment that the policy
    leaves to admins."""
    wid = org.workflow()
    hold_payments(org, 30)  # approver_role: admin
    members = {}
    for role in ("viewer", "member", "admin"):
        email = f"{role}-{uuid.uuid4().hex[:6]}@example.com"
        token = org.admin("POST", "/invites", {"email": email, "role": role}).json["token"]
        person = Account(node, email)
        assert node.http().post(f"/api/v1/invites/{token}/accept", headers=person.session).status == 200
        members[role] = person
    asked = sdk_post(node, org.key(wid), "/execute", {"tool": "send_money", "execution_id": "exec-r"})
    approval_id = asked.json["approval_id"]
    path = f"/api/v1/orgs/{org.org_id}/approvals/{approval_id}/approve"
    refused = {role: node.http().request("POST", path, {}, headers=members[role].session).status
               for role in ("viewer", "member")}
    assert refused == {"viewer": 403, "member": 403}
    assert org.admin("GET", f"/approvals/{approval_id}").json["status"] == "pending"
    approved = node.http().request("POST", path, {}, headers=members["admin"].session)
    assert approved.status == 200 and approved.json["decided_by"] == f"user:{members['admin'].user_id}"
