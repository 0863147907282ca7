"""The governance gateway (seed 002) on a real node: SDK HMAC auth, workflows and the kill
switch reaching WebSocket clients and running container jobs, atomic budget reservations,
policies, key rotation, audit and alerts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
from aiohttp import web

from tests.gateway.accounts import Account
from tests.helpers import NodeProcess, container_entry, sdk_signed

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def gw(docker_engine, tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("gw"), [
        container_entry("echo", "echo"),
        container_entry("paid", "echo", cost_usd=0.25),
        container_entry("faulty", "faulty", timeout=30),
    ], {
        # The webhook receiver of the alert test runs on 127.0.0.1, which the egress guard
        # refuses unless the operator allows it; the module signs up dozens of accounts.
        "gateway": {"webhook_allowed_networks": ["127.0.0.0/8"]},
        "server": {"auth_rate_limit": {"num_requests": 1000}},
    })
    node.start()
    yield node
    node.stop()
    node.remove_containers()


@pytest.fixture
def acct(gw) -> Account:
    return Account(gw)


def test_register_login_verify(gw, acct):
    resp = gw.http().post("/api/v1/auth/verify", {"api_key": acct.api_key})
    assert resp.status == 200 and resp.json["secret_key"] == acct.secret and resp.json["org_id"] == acct.org_id
    assert gw.http().post("/api/v1/auth/verify", {"api_key": "nr_live_nope"}).status == 401
    dup = gw.http().post("/api/v1/auth/login", {"email": "nobody@example.com", "password": "x" * 8})
    assert dup.status == 401 and dup.json["error"]["code"] == "unauthorized"


def test_signed_and_unsigned_sdk_calls(gw, acct):
    wid = acct.workflow(10)
    ok = acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0.5, "model": "gpt", "input_tokens": 10})
    assert ok.status == 200 and ok.json["workflow"]["spent_usd"] == 0.5
    # unsigned: accepted (HMAC_REQUIRED is off here) but warned about
    raw = json.dumps({"workflow_id": wid, "cost_usd": 0.25}).encode()
    unsigned = gw.http().request("POST", "/api/v1/track", raw=raw, headers={"X-API-Key": acct.api_key})
    assert unsigned.status == 200
    assert "gateway.unsigned_request" in gw.log()
    expired = acct.sdk("/track", {"workflow_id": wid, "cost_usd": 1}, ts=int(time.time()) - 301)
    assert expired.status == 401 and "expired" in expired.json["error"]["message"]
    forged = acct.sdk("/track", {"workflow_id": wid, "cost_usd": 1}, secret="nr_secret_wrong")
    assert forged.status == 401 and forged.json["error"]["message"] == "Invalid signature"
    bad = acct.sdk("/track", {"workflow_id": wid})
    assert bad.status == 400 and "cost_usd: Field required" in bad.json["error"]["message"]


def test_org_in_url_must_match_the_key(gw, acct):
    other = Account(gw)
    raw = b""
    mine = gw.http().get(f"/api/v1/orgs/{acct.org_id}/policies", headers=sdk_signed(acct.api_key, acct.secret, raw))
    assert mine.status == 200
    theirs = gw.http().get(f"/api/v1/orgs/{other.org_id}/policies", headers=sdk_signed(acct.api_key, acct.secret, raw))
    assert theirs.status == 403


def test_unknown_workflow_is_created_by_track_and_batches_are_bounded(gw, acct):
    wid = f"auto-{uuid.uuid4().hex[:6]}"
    assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0.1}).status == 200
    assert acct.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(0.1)
    events = [{"workflow_id": wid, "cost_usd": 0.01} for _ in range(100)]
    assert acct.sdk("/track/batch", {"events": events}).json["tracked"] == 100
    too_many = acct.sdk("/track/batch", {"events": events + events[:1]})
    assert too_many.status == 400


def test_200_concurrent_reservations_never_overspend(gw, acct):
    wid = acct.workflow(budget=5.0)  # fits exactly 50 reservations of 0.10
    body = {"workflow_id": wid, "estimated_cost_usd": 0.10, "model": "m"}
    with ThreadPoolExecutor(50) as pool:  # distinct bodies: identical signed bytes would be replays
        answers = list(pool.map(lambda i: acct.sdk("/execute", {**body, "operation_id": str(i)}), range(200)))
    assert {a.status for a in answers} == {200, 402}  # 402: the SDK's budget refusal
    granted = [a.json for a in answers if a.json["allowed"]]
    assert len(granted) == 50
    assert {a.json["reason"] for a in answers if not a.json["allowed"]} == {"budget exhausted"}
    workflow = acct.admin("GET", f"/workflows/{wid}").json
    assert workflow["reserved_usd"] == pytest.approx(5.0) and workflow["remaining_usd"] == pytest.approx(0)
    # settle one reservation with its actual cost: the rest of it returns to the budget
    first = granted[0]
    acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0.04, "reservation_id": first["reservation_id"]})
    workflow = acct.admin("GET", f"/workflows/{wid}").json
    assert workflow["spent_usd"] == pytest.approx(0.04) and workflow["remaining_usd"] == pytest.approx(0.06)
    assert acct.sdk("/gate", {"workflow_id": wid, "estimated_cost_usd": 0.05}).json["allowed"] is True
    assert acct.sdk("/gate", {"workflow_id": wid, "estimated_cost_usd": 0.07}).json["allowed"] is False


def test_policies_first_match_wins(gw, acct):
    wid = acct.workflow()
    assert acct.admin("POST", "/policies", {"name": "deny gpt-4", "priority": 20, "action": "deny",
                                            "match": {"models": ["gpt-4"]}}).status == 201
    allow = acct.admin("POST", "/policies", {"name": "allow cheap gpt-4", "priority": 10, "action": "allow",
                                             "match": {"models": ["gpt-4"], "workflows": [wid]}}).json
    assert acct.sdk("/execute", {"workflow_id": wid, "model": "gpt-4"}).json["policy_id"] == allow["id"]
    other = acct.workflow()
    denied = acct.sdk("/execute", {"workflow_id": other, "model": "gpt-4"}).json
    assert denied["allowed"] is False and "deny gpt-4" in denied["reason"]
    # reorder: the deny rule first now wins for both
    acct.admin("PATCH", f"/policies/{allow['id']}", {"priority": 30})
    assert acct.sdk("/execute", {"workflow_id": wid, "model": "gpt-4"}).json["allowed"] is False
    # toggling the deny rule off lets the allow rule decide again
    deny_id = [p for p in acct.admin("GET", "/policies").json["policies"] if p["name"] == "deny gpt-4"][0]["id"]
    toggled = gw.http().post("/api/v1/policies/toggle", {"policy_id": deny_id}, headers=acct.session)
    assert toggled.json["enabled"] is False
    assert acct.sdk("/execute", {"workflow_id": wid, "model": "gpt-4"}).json["allowed"] is True
    assert acct.sdk("/execute", {"workflow_id": wid, "model": "other"}).json["reason"].startswith("no policy")
    templates = acct.admin("GET", "/policies/templates").json["templates"]
    assert {t["id"] for t in templates} >= {"deny-expensive-calls"}
    assert acct.admin("POST", "/policies/templates/deny-expensive-calls/enable").status == 201
    assert acct.sdk("/execute", {"workflow_id": wid, "model": "x", "estimated_cost_usd": 2}).json["allowed"] is False
    assert acct.admin("DELETE", "/policies/templates/deny-expensive-calls").status == 200


def test_key_rotation_refuses_the_old_secret(gw, acct):
    wid = acct.workflow()
    keys = acct.admin("GET", "/api-keys").json["api_keys"]
    rotated = acct.admin("POST", f"/api-keys/{keys[0]['id']}/rotate").json
    assert rotated["secret_key"] != acct.secret
    assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0}).status == 401
    assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0}, secret=rotated["secret_key"]).status == 200
    assert acct.admin("DELETE", f"/api-keys/{keys[0]['id']}").status == 200
    assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0}, secret=rotated["secret_key"]).status == 401


def test_audit_log_records_changes(gw, acct):
    wid = acct.workflow(budget=3)
    acct.admin("PATCH", f"/workflows/{wid}", {"budget_usd": 4})
    acct.admin("POST", f"/workflows/{wid}/pause")
    entries = acct.admin("GET", "/audit-log").json["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["workflow.pause", "workflow.updated", "workflow.created"]
    updated = entries[1]
    assert updated["before"]["budget_usd"] == 3 and updated["after"]["budget_usd"] == 4
    assert updated["actor"] == f"user:{acct.user_id}"


def test_paused_workflow_refuses_jobs_and_budget_charges_jobs(gw, acct):
    wid = acct.workflow(budget=0.5)  # two calls of the 0.25 container
    http = gw.http()
    for n in range(2):
        job = acct.job(wid, ["paid"], {"n": n})
        assert job.status == 200, job.body
        assert http.wait_job(job.json["id"])["status"] == "success"
    over = acct.job(wid, ["paid"], {})
    assert over.status == 403 and "budget exhausted" in over.json["error"]
    assert acct.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(0.5)
    free = acct.workflow()
    acct.admin("POST", f"/workflows/{free}/pause")
    paused = acct.job(free, ["echo"], {})
    assert paused.status == 403 and paused.json["error"] == f"Workflow {free} is paused"
    acct.admin("POST", f"/workflows/{free}/resume")
    assert acct.job(free, ["echo"], {}).status == 200
    assert acct.job("nope", ["echo"], {}).status == 404
    # without a credential of the workflow's org the header binds nothing
    unsigned = http.post("/api/jobs", {"containers": ["echo"], "data": {}}, headers={"X-Workflow-Id": free})
    assert unsigned.status == 401


async def _listen(url: str, received: list, ready: asyncio.Event, n: int, headers: dict) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=headers) as ws:
            initial = await ws.receive_json()
            assert initial["type"] == "initial_state"
            await ws.send_json({"type": "subscribed"})
            ready.set()
            while len(received) < n:
                msg = await ws.receive_json(timeout=10)
                received.append((time.monotonic(), msg))


def test_kill_reaches_two_clients_fast_and_cancels_a_running_job(gw, acct):
    wid = acct.workflow()
    http = gw.http()
    job_id = acct.job(wid, ["faulty"], {"mode": "sleep", "seconds": 20}).json["id"]
    time.sleep(0.3)
    url = f"ws://127.0.0.1:{gw.port}/ws/control/{acct.org_id}"
    headers = sdk_signed(acct.api_key, acct.secret, b"")
    inboxes: list[list] = [[], []]
    done = threading.Event()

    def clients() -> None:
        async def main() -> None:
            readies = [asyncio.Event(), asyncio.Event()]
            tasks = [asyncio.create_task(_listen(url, inboxes[i], readies[i], 1, headers)) for i in range(2)]
            await asyncio.gather(*(r.wait() for r in readies))
            done.set()
            await asyncio.gather(*tasks)
        asyncio.run(main())

    thread = threading.Thread(target=clients)
    thread.start()
    assert done.wait(10)
    sent = time.monotonic()
    killed = acct.admin("POST", f"/workflows/{wid}/kill")
    thread.join(10)
    assert killed.status == 200 and killed.json["cancelled_jobs"] == 1
    for inbox in inboxes:
        [(arrived, msg)] = inbox
        assert msg["type"] == "state_change" and msg["data"] == {"workflow_id": wid, "status": "killed",
                                                                 "previous_status": "active"}
        assert (msg["workflow_id"], msg["state"], msg["version"]) == (wid, "Killed", msg["seq"])
        assert arrived - sent < 0.1, f"kill took {arrived - sent:.3f}s to reach a client"
    job = http.wait_job(job_id, timeout=5)
    assert job["status"] == "failed" and job["result"]["error"] == f"workflow {wid} killed"
    refused = acct.job(wid, ["echo"], {})
    assert refused.status == 403 and "killed" in refused.json["error"]


def test_control_plane_replays_or_asks_for_resync(gw, acct):
    wid = acct.workflow()
    acct.admin("POST", f"/workflows/{wid}/pause")
    acct.admin("POST", f"/workflows/{wid}/resume")

    async def connect(last_seq: int | None, signed: bool = True) -> list[dict]:
        headers = sdk_signed(acct.api_key, acct.secret if signed else "x", b"")
        url = f"ws://127.0.0.1:{gw.port}/ws/control/{acct.org_id}"
        if last_seq is not None:
            url += f"?last_seq={last_seq}"
        out = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers=headers) as ws:
                await ws.send_json({"type": "ping"})
                while True:
                    msg = await ws.receive_json(timeout=5)
                    out.append(msg)
                    if msg["type"] == "pong":
                        return out

    first = asyncio.run(connect(None))
    assert first[0]["type"] == "initial_state" and first[-1]["type"] == "pong"
    [mine] = [w for w in first[0]["workflows"] if w["workflow_id"] == wid]
    assert (mine["status"], mine["state"], mine["budget_usd"], mine["remaining_usd"]) == ("active", "Normal", None, None)
    replay = asyncio.run(connect(0))
    kinds = [m["type"] for m in replay]
    assert kinds[0] == "initial_state" and kinds.count("state_change") >= 3 and kinds[-1] == "pong"
    seqs = [m["seq"] for m in replay if m["type"] == "state_change"]
    assert seqs == sorted(seqs) and seqs[0] == 1
    with pytest.raises(aiohttp.WSServerHandshakeError):
        asyncio.run(connect(None, signed=False))


def test_alerts_at_budget_thresholds_post_to_webhooks(gw, acct):
    posts: list[dict] = []
    loop = asyncio.new_event_loop()
    port_box: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        posts.append(await request.json())
        return web.json_response({"ok": True})

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_box.append(site._server.sockets[0].getsockname()[1])
        return runner

    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = asyncio.run_coroutine_threadsafe(serve(), loop).result(5)
    try:
        assert acct.admin("POST", "/alert-channels", {"url": f"http://127.0.0.1:{port_box[0]}/hook"}).status == 201
        wid = acct.workflow(budget=10)
        acct.sdk("/track", {"workflow_id": wid, "cost_usd": 6})  # crosses 50%
        acct.sdk("/track", {"workflow_id": wid, "cost_usd": 3})  # crosses 80%
        acct.sdk("/track", {"workflow_id": wid, "cost_usd": 0.1})  # nothing new
        deadline = time.monotonic() + 5
        while len(posts) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(p["threshold"] for p in posts) == [0.5, 0.8]
        alerts = acct.admin("GET", "/alerts").json["alerts"]
        assert sorted(a["threshold"] for a in alerts if a["workflow_id"] == wid) == [0.5, 0.8]
        status = acct.admin("GET", "/status").json["workflows"]
        mine = [w for w in status if w["id"] == wid][0]
        assert mine["remaining_usd"] == pytest.approx(0.9) and mine["time_to_exhaustion_seconds"] > 0
        dismissed = acct.admin("POST", f"/alerts/{alerts[0]['id']}/dismiss")
        assert dismissed.status == 200
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)


def test_members_and_invites(gw, acct):
    email = f"bob-{uuid.uuid4().hex[:6]}@example.com"
    invite = acct.admin("POST", "/invites", {"email": email, "role": "admin"})
    assert invite.status == 201
    token = invite.json["token"]
    info = gw.http().get(f"/api/v1/invites/{token}").json
    assert info["org_name"] == "Acme" and info["status"] == "pending"
    bob = Account(gw, email)
    accepted = gw.http().post(f"/api/v1/invites/{token}/accept", headers=bob.session)
    assert accepted.status == 200 and accepted.json["role"] == "admin"
    assert gw.http().post(f"/api/v1/invites/{token}/accept", headers=bob.session).status == 409
    members = acct.admin("GET", "/members").json["members"]
    assert {m["role"] for m in members} == {"owner", "admin"}
    owner = [m for m in members if m["role"] == "owner"][0]
    assert acct.admin("PATCH", f"/members/{owner['id']}", {"role": "member"}).status == 409  # last owner
    viewer = Account(gw)
    assert gw.http().get(f"/api/v1/orgs/{acct.org_id}/workflows", headers=viewer.session).status == 403


def test_health_probes(gw):
    http = gw.http()
    assert http.get("/healthz").json["status"] == "ok"
    ready = http.get("/health/ready")
    assert ready.status == 200 and set(ready.json["checks"]) == {"sqlite", "docker"}
    assert http.get("/health/startup").status == 200


def test_openapi_document_covers_every_api(gw):
    spec = gw.http().get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/jobs", "/api/cre/runtime/ingest", "/api/v1/execute", "/api/v1/orgs/{org_id}/workflows/{workflow_id}/kill"):
        assert path in paths, path
    ref = paths["/api/v1/execute"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"workflow_id", "execution_id", "estimated_cost_usd", "tool"} <= set(schema["properties"])
    job = spec["components"]["schemas"]["JobRequest"]
    assert job["properties"]["containers"]["minItems"] == 1


def test_hmac_required_refuses_unsigned_calls(docker_engine, tmp_path):
    node = NodeProcess(tmp_path, [], {"gateway": {"hmac_required": True, "hmac_max_age": 60}}).start()
    try:
        acct = Account(node)
        wid = acct.workflow()
        raw = json.dumps({"workflow_id": wid, "cost_usd": 1}).encode()
        unsigned = node.http().request("POST", "/api/v1/track", raw=raw, headers={"X-API-Key": acct.api_key})
        assert unsigned.status == 401 and "Signed request required" in unsigned.json["error"]["message"]
        assert "gateway.unsigned_rejected" in node.log()
        assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 1}).status == 200
        assert acct.sdk("/track", {"workflow_id": wid, "cost_usd": 1}, ts=int(time.time()) - 61).status == 401
    finally:
        node.stop()


def test_unsettled_reservations_expire_and_free_the_budget(docker_engine, tmp_path):
    node = NodeProcess(tmp_path, [], {"gateway": {"reservation_ttl": 1}}).start()
    try:
        acct = Account(node)
        wid = acct.workflow(budget=1.0)
        assert acct.sdk("/execute", {"workflow_id": wid, "estimated_cost_usd": 1.0}).json["allowed"] is True
        assert acct.sdk("/execute", {"workflow_id": wid, "estimated_cost_usd": 0.5}).json["reason"] == "budget exhausted"
        time.sleep(1.3)
        again = acct.sdk("/execute", {"workflow_id": wid, "estimated_cost_usd": 0.5}).json
        assert again["allowed"] is True and again["remaining_usd"] == pytest.approx(0.5)
    finally:
        node.stop()


def test_a_client_that_never_acks_still_gets_every_message(gw, acct):
    """Acks are informational (the SDK acks only kills and pauses): falling behind on acks is no
    reason to resync; falling behind on reading is (tests/gateway/test_gateway_sdk.py)."""
    async def scenario() -> list[str]:
        url = f"ws://127.0.0.1:{gw.port}/ws/control/{acct.org_id}"
        kinds = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers=sdk_signed(acct.api_key, acct.secret, b"")) as ws:
                kinds.append((await ws.receive_json())["type"])
                wid = acct.workflow()
                loop = asyncio.get_running_loop()
                for _ in range(30):
                    await loop.run_in_executor(None, acct.admin, "POST", f"/workflows/{wid}/pause")
                    await loop.run_in_executor(None, acct.admin, "POST", f"/workflows/{wid}/resume")
                while kinds.count("state_change") < 61:
                    kinds.append((await ws.receive_json(timeout=10))["type"])
        return kinds

    kinds = asyncio.run(scenario())
    assert kinds[0] == "initial_state" and kinds.count("state_change") == 61 and "resync_required" not in kinds
