"""Attacks on the governance gateway from security issue 22 (round three), each performed against
an in-process node (real aiohttp server on 127.0.0.1, real SQLite; a "container" is a small
aiohttp app on 127.0.0.1, so no Docker) and asserted to fail:

4. taking over a bare `default_workflows` id, or running the node's own jobs ungoverned when
   their default workflow is missing; anyone registering when the operator closed registration;
5. learning the HMAC secret from `auth/verify` with the API key alone;
6. replaying a signed job submission through `/api/jobs/stream`;
9. growing the replay guard's memory with big signed answers, and evicting other tenants'
   entries by flooding it;
14. accepting an invite sent to someone else's email, or one that stopped being pending;
15. storing thousands of alert thresholds to slow down every spend of the org;
17. `Infinity` (or 1e999) as a cost or budget; a workflow-scoped key reading other workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import time
import tracemalloc
import uuid
from typing import Any

import pytest
from aiohttp import web

from node.config import ConfigError, parse_config
from node.errors import Conflict
from node.gateway.replay import ReplayGuard
from node.server.http import ApiError
from tests.gateway.test_gateway_security import Client, running_node
from tests.helpers import sdk_signed


@contextlib.asynccontextmanager
async def fake_container():
    """A container on 127.0.0.1 that answers every job; yields (url, calls)."""
    calls: list[Any] = []

    async def serve(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.json_response({"echo": "ok"})

    app = web.Application()
    app.router.add_post("/service_output", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        await runner.cleanup()


async def signed_call(client: Client, key: str, secret: str, path: str, body: Any,
                      headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any, Any]:
    raw = json.dumps(body).encode() if raw is None else raw
    all_headers = {"Content-Type": "application/json", **sdk_signed(key, secret, raw), **(headers or {})}
    async with client.session.post(client.base + path, data=raw, headers=all_headers) as resp:
        text = await resp.read()
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return resp.status, data, resp.headers


async def new_workflow(client: Client, acct: dict[str, Any], budget: float | None = None,
                       wid: str | None = None) -> str:
    wid = wid or f"wf-{uuid.uuid4().hex[:8]}"
    status, out, _ = await client.call("POST", f"/api/v1/orgs/{acct['org_id']}/workflows",
                                       {"id": wid, "name": wid, "budget_usd": budget}, acct["headers"])
    assert status == 201, out
    return wid


async def workflow_view(client: Client, acct: dict[str, Any], wid: str) -> dict[str, Any]:
    status, out, _ = await client.call("GET", f"/api/v1/orgs/{acct['org_id']}/workflows/{wid}",
                                       headers=acct["headers"])
    assert status == 200, out
    return out


# -- 17. non-finite numbers ----------------------------------------------------------------------

EDGE_NON_FINITE = "is not a JSON value (numbers must be finite)"


def refused_naming(status: int, out: dict, field: str, raw: bytes = b"") -> bool:
    """A 400 naming the field; a literal `Infinity`/`NaN` (not JSON at all) may instead be refused
    by the HTTP edge before any model sees it (node/server/safejson.py), which names the literal.
    An overflowing number (`1e999`) parses, so only the model can refuse it, naming the field."""
    message = out["error"]["message"]
    literal = b"Infinity" in raw or b"NaN" in raw
    return status == 400 and (message.startswith(field) or (literal and EDGE_NON_FINITE in message))


async def call_overflowing(client: Client, method: str, path: str, body: dict, headers: dict) -> tuple[int, Any]:
    """`body` sent with each infinity written as `1e999`: valid JSON that parses to infinity, so it
    passes the edge and only the model can refuse it."""
    raw = json.dumps(body).replace("Infinity", "1e999").encode()
    async with client.session.request(method, client.base + path, data=raw,
                                      headers={**headers, "Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()

async def test_infinite_costs_and_budgets_are_refused_with_400_naming_the_field(tmp_path):
    async with running_node(tmp_path) as (_, client):
        acct = await client.account()
        org = acct["org_id"]
        key, secret = acct["api_key"], acct["secret_key"]
        status, out = await call_overflowing(client, "POST", f"/api/v1/orgs/{org}/workflows",
                                             {"id": "wf-inf", "name": "x", "budget_usd": float("inf")}, acct["headers"])
        assert refused_naming(status, out, "budget_usd"), out
        wid = await new_workflow(client, acct, budget=10)
        status, out = await call_overflowing(client, "PATCH", f"/api/v1/orgs/{org}/workflows/{wid}",
                                             {"budget_usd": float("inf")}, acct["headers"])
        assert refused_naming(status, out, "budget_usd"), out
        attempts = [
            ("/api/v1/gate", b'{"workflow_id": "%s", "estimated_cost_usd": Infinity}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/gate", b'{"workflow_id": "%s", "estimated_cost_usd": 1e999}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/execute", b'{"workflow_id": "%s", "estimated_cost_usd": Infinity}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/check", b'{"workflow_id": "%s", "estimated_cost_usd": NaN}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "cost_usd": Infinity}' % wid.encode(), "cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "cost_usd": -Infinity}' % wid.encode(), "cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "tokens": 1, "metadata": {"cost_usd": Infinity}}'
             % wid.encode(), "metadata"),
            ("/api/v1/track/batch", b'{"events": [{"workflow_id": "%s", "cost_usd": 1e999}]}' % wid.encode(),
             "events.0.cost_usd"),
        ]
        for path, raw, field in attempts:
            status, out, _ = await signed_call(client, key, secret, path, None, raw=raw)
            assert refused_naming(status, out, field, raw), (path, raw, out)
        status, out = await call_overflowing(client, "POST", f"/api/v1/orgs/{org}/policies",
                                             {"name": "p", "action": "deny", "match": {"cost_gt": float("inf")}},
                                             acct["headers"])
        assert refused_naming(status, out, "match.cost_gt"), out
        status, out = await call_overflowing(client, "PATCH", f"/api/v1/orgs/{org}",
                                             {"settings": {"caps": [1, float("inf")]}}, acct["headers"])
        assert status == 400 and out["error"]["message"].startswith("settings: caps.1 must be a finite"), out
        workflow = await workflow_view(client, acct, wid)
        assert (workflow["budget_usd"], workflow["spent_usd"], workflow["reserved_usd"]) == (10, 0, 0)


# -- 5. the HMAC secret is not handed to whoever holds the API key -----------------------------

async def _verify(client: Client, api_key: str) -> dict[str, Any]:
    status, out, _ = await client.call("POST", "/api/v1/auth/verify", {"api_key": api_key})
    assert status == 200, out
    return out


async def test_auth_verify_does_not_return_the_secret_when_signatures_are_required(tmp_path):
    async with running_node(tmp_path, {"gateway": {"hmac_required": True}}) as (_, client):
        acct = await client.account()
        answer = await _verify(client, acct["api_key"])  # the attack: only the API key, seen in any request
        assert "secret_key" not in answer and acct["secret_key"] not in json.dumps(answer)
        assert answer["organization_id"] == acct["org_id"]  # what the SDK's init needs is still there
        # and the key alone still cannot act
        status, _, _ = await client.call("POST", "/api/v1/track", {"workflow_id": "w", "cost_usd": 1},
                                         {"X-API-Key": acct["api_key"]})
        assert status == 401


async def test_auth_verify_returns_the_secret_only_when_the_operator_chose_it(tmp_path):
    async with running_node(tmp_path, {"gateway": {"verify_returns_secret": False}}) as (_, client):
        acct = await client.account()
        assert "secret_key" not in await _verify(client, acct["api_key"])
    async with running_node(tmp_path) as (_, client):  # the default keeps the SDK's key-only init working
        acct = await client.account()
        assert (await _verify(client, acct["api_key"]))["secret_key"] == acct["secret_key"]


def test_verify_returns_secret_is_forced_off_whenever_signatures_are_required():
    config = parse_config({"gateway": {"hmac_required": True, "verify_returns_secret": True}})
    assert config.gateway.verify_returns_secret is False
    assert parse_config({}).gateway.verify_returns_secret is True
    assert parse_config({"gateway": {"hmac_required": True}}).gateway.verify_returns_secret is False


# -- 4. default workflows cannot be taken over; registration can be closed -----------------------

def test_a_bare_default_workflow_id_is_refused_at_start_up(tmp_path):
    """A bare id names whichever org has it: an outsider who registers and creates `wf-main`
    first captures the node's own traffic, or makes the binding ambiguous (ungoverned)."""
    with pytest.raises(ConfigError) as refused:
        parse_config({"gateway": {"default_workflows": {"offchain": "wf-main"}}})
    assert "gateway.default_workflows: offchain" in str(refused.value)
    assert "org_id/workflow_id" in str(refused.value)
    with pytest.raises(ConfigError) as typo:
        parse_config({"gateway": {"default_workflows": {"offchian": "org_1/wf-main"}}})
    assert "default_workflows" in str(typo.value)
    ok = parse_config({"gateway": {"default_workflows": {"offchain": "org_1/wf-main"}}})
    assert ok.gateway.default_workflows == {"offchain": "org_1/wf-main"}


async def test_the_nodes_jobs_are_refused_while_their_default_workflow_is_missing(tmp_path):
    async with fake_container() as (url, calls):
        config = {"containers": [{"id": "echo", "url": url}],
                  "gateway": {"default_workflows": {"offchain": "org_operator/wf-main"}}}
        async with running_node(tmp_path, config) as (node, client):
            # an outsider creates the same workflow id in her own org: it binds nothing
            outsider = await client.account()
            await new_workflow(client, outsider, wid="wf-main")
            status, out, _ = await client.call("POST", "/api/jobs", {"containers": ["echo"], "data": {}})
            assert status == 503, out
            assert "wf-main" in out["error"] and calls == []


async def test_closed_registration_refuses_new_accounts(tmp_path):
    async with running_node(tmp_path, {"gateway": {"open_registration": False,
                                                   "oauth": {"backend_secret": "s3cret-shared-with-the-dashboard"}}}
                            ) as (node, client):
        status, out, _ = await client.call("POST", "/api/v1/auth/register",
                                           {"email": "x@example.com", "password": "correct horse", "name": "X",
                                            "org_name": "X"})
        assert status == 403 and "registration is closed" in out["error"]["message"].lower(), out
        oauth = {"provider": "google", "subject": "1", "email": "y@example.com", "name": "Y"}
        status, out, _ = await client.call("POST", "/api/v1/auth/oauth/register", oauth,
                                           {"X-Backend-Secret": "s3cret-shared-with-the-dashboard"})
        assert status == 403 and "registration is closed" in out["error"]["message"].lower(), out
        # an account the operator made still signs in
        await node.subsystems["gateway"].api.store.register("op@example.com", "Op", "Ops", oauth=("google", "2"))
        status, out, _ = await client.call("POST", "/api/v1/auth/oauth/register",
                                           {**oauth, "subject": "2", "email": "op@example.com"},
                                           {"X-Backend-Secret": "s3cret-shared-with-the-dashboard"})
        assert status == 200 and out["created"] is False, out
        # someone the operator's org invited signs up with the invite, then accepts it
        op = await node.subsystems["gateway"].api.store.user_by_email("op@example.com")
        org_id = await node.subsystems["gateway"].api.store.first_org(op["id"])
        _, token = await node.subsystems["gateway"].api.store.create_invite(org_id, "new@example.com", "member", op["id"])
        signup = {"email": "new@example.com", "password": "correct horse", "name": "N", "org_name": "N"}
        for wrong in ({}, {"invite_token": "inv_guess"}, {"email": "other@example.com", "invite_token": token}):
            status, out, _ = await client.call("POST", "/api/v1/auth/register", {**signup, **wrong})
            assert status == 403, (wrong, out)
        status, out, _ = await client.call("POST", "/api/v1/auth/register", {**signup, "invite_token": token})
        assert status == 201, out
        status, login, _ = await client.call("POST", "/api/v1/auth/login",
                                             {"email": "new@example.com", "password": "correct horse"})
        status, out, _ = await client.call("POST", f"/api/v1/invites/{token}/accept", None,
                                           {"Authorization": f"Bearer {login['token']}"})
        assert status == 200 and out["org_id"] == org_id, out


# -- 6. a signed stream submission acts once -------------------------------------------------------

async def test_a_signed_stream_job_replayed_runs_and_charges_once(tmp_path):
    async with fake_container() as (url, calls):
        config = {"containers": [{"id": "echo", "url": url, "cost_usd": 1.0}]}
        async with running_node(tmp_path, config) as (_, client):
            acct = await client.account()
            wid = await new_workflow(client, acct, budget=10)
            raw = json.dumps({"containers": ["echo"], "data": {"n": 1}}).encode()
            headers = {"Content-Type": "application/json", "X-Workflow-Id": wid,
                       **sdk_signed(acct["api_key"], acct["secret_key"], raw)}

            async def send() -> tuple[int, bytes]:
                async with client.session.post(client.base + "/api/jobs/stream", data=raw, headers=headers) as resp:
                    return resp.status, await resp.read()

            first = await send()
            assert first[0] == 200 and b'"echo"' in first[1], first
            # the attack: the captured request sent again, three times in a row and three at once
            replays = [await send() for _ in range(3)] + list(await asyncio.gather(*(send() for _ in range(3))))
            assert [status for status, _ in replays] == [409] * 6, replays
            assert b"already" in replays[0][1]
            assert len(calls) == 1
            workflow = await workflow_view(client, acct, wid)
            assert (workflow["spent_usd"], workflow["reserved_usd"]) == (1.0, 0)
            # a stream the node refused did not act: the same bytes may be sent again once allowed
            other = await new_workflow(client, acct, budget=0.5)
            raw = json.dumps({"containers": ["echo"], "data": {"n": 2}}).encode()
            headers = {"Content-Type": "application/json", "X-Workflow-Id": other,
                       **sdk_signed(acct["api_key"], acct["secret_key"], raw)}
            assert (await send())[0] == 403  # over budget
            await client.call("PATCH", f"/api/v1/orgs/{acct['org_id']}/workflows/{other}", {"budget_usd": 5},
                              acct["headers"])
            assert (await send())[0] == 200 and len(calls) == 2


# -- 9. the replay guard's memory is bounded, and per key --------------------------------------------

def _signature(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


async def test_a_flood_of_one_keys_signatures_does_not_make_another_keys_request_replayable():
    guard = ReplayGuard(300, max_entries=1000)
    runs: list[str] = []

    async def act(who: str) -> web.Response:
        runs.append(who)
        return web.json_response({"charged": who})

    ts = int(time.time())
    victim = await guard.once("key_victim", _signature(0), str(ts), "/api/v1/execute", lambda: act("victim"))
    assert victim.status == 200
    for n in range(1, 3000):  # the attacker's own, validly signed requests, over a few seconds
        await guard.once("key_attacker", _signature(n), str(ts + n // 1000), "/api/v1/execute",
                         lambda: act("attacker"))
    # the victim's captured request, replayed after the flood: it does not act again
    again = await guard.once("key_victim", _signature(0), str(ts), "/api/v1/execute", lambda: act("victim"))
    assert runs.count("victim") == 1
    assert again.status == 200 and json.loads(again.body) == {"charged": "victim"}
    assert len(guard) <= 1000
    # the flooder's own first requests, whose entries made room, cannot be replayed either
    with pytest.raises(ApiError) as refused:
        await guard.once("key_attacker", _signature(1), str(ts), "/api/v1/execute", lambda: act("attacker"))
    assert refused.value.status_code == 401 and runs.count("attacker") == 2999


async def test_a_key_over_its_share_keeps_acting_on_fresh_signatures_and_never_twice_on_old_ones():
    guard = ReplayGuard(300, max_entries_per_key=100, not_before=0)
    runs = 0

    async def act() -> web.Response:
        nonlocal runs
        runs += 1
        return web.json_response({"n": runs})

    start = int(time.time()) - 10
    for n in range(500):  # 50 signed requests a second for 10 seconds
        assert (await guard.once("key_a", _signature(n), str(start + n // 50), "/api/v1/track", act)).status == 200
    assert runs == 500 and len(guard) <= 100
    for n in (0, 200, 399):  # dropped entries: refused, never acted on again
        with pytest.raises(ApiError) as refused:
            await guard.once("key_a", _signature(n), str(start + n // 50), "/api/v1/track", act)
        assert refused.value.status_code == 401
    assert json.loads((await guard.once("key_a", _signature(499), str(start + 9), "/api/v1/track", act)).body) == {
        "n": 500}
    assert runs == 500
    # a fresh signature still acts
    assert (await guard.once("key_a", _signature(500), str(int(time.time())), "/api/v1/track", act)).status == 200


async def test_big_signed_answers_are_kept_as_digests_and_replays_still_act_once():
    guard = ReplayGuard(300)
    runs = 0
    answer = b"x" * 111_000  # a 100-event batch answer

    async def act() -> web.Response:
        nonlocal runs
        runs += 1
        return web.Response(body=answer + str(runs).encode(), content_type="application/json")

    ts = str(int(time.time()))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(300):
            assert (await guard.once("key_a", _signature(n), ts, "/api/v1/track/batch", act)).status == 200
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert runs == 300
    assert held < 3 * 2**20, f"{held / 2**20:.1f} MiB kept for 300 answers"
    with pytest.raises(ApiError) as replay:
        await guard.once("key_a", _signature(7), ts, "/api/v1/track/batch", act)
    assert replay.value.status_code == 409 and runs == 300
    assert replay.value.params["first_status"] == 200 and len(replay.value.params["answer_sha256"]) == 64
    # a small answer (what the SDK's own retries meet) is still given back whole
    small = await guard.once("key_a", _signature(1000), ts, "/api/v1/track",
                             lambda: asyncio.sleep(0, web.json_response({"tracked": True})))
    again = await guard.once("key_a", _signature(1000), ts, "/api/v1/track", act)
    assert again.body == small.body and again.headers["X-Idempotent-Replay"] == "true"


# -- 14. invites are for the invited email, accepted once ------------------------------------------

async def test_an_admin_invite_is_accepted_only_by_its_email_and_only_once(tmp_path):
    async with running_node(tmp_path) as (_, client):
        owner = await client.account()
        org = owner["org_id"]
        invitee_email = f"invitee-{uuid.uuid4().hex[:6]}@example.com"
        status, invite, _ = await client.call("POST", f"/api/v1/orgs/{org}/invites",
                                              {"email": invitee_email, "role": "admin"}, owner["headers"])
        assert status == 201, invite
        accept = f"/api/v1/invites/{invite['token']}/accept"
        # the attack: four accounts that saw the link accept it at once
        outsiders = [await client.account() for _ in range(4)]
        answers = await asyncio.gather(*(client.call("POST", accept, None, o["headers"]) for o in outsiders))
        assert [status for status, _, _ in answers] == [403] * 4, answers
        status, members, _ = await client.call("GET", f"/api/v1/orgs/{org}/members", headers=owner["headers"])
        assert [m["role"] for m in members["members"]] == ["owner"]
        # the invitee, signed in as the invited email, accepts it; four tries at once make one admin
        invitee = await client.account(email=invitee_email.upper())
        answers = await asyncio.gather(*(client.call("POST", accept, None, invitee["headers"]) for _ in range(4)))
        assert sorted(status for status, _, _ in answers) == [200, 409, 409, 409], answers
        status, members, _ = await client.call("GET", f"/api/v1/orgs/{org}/members", headers=owner["headers"])
        assert sorted(m["role"] for m in members["members"]) == ["admin", "owner"]


async def test_an_invite_revoked_after_it_was_read_cannot_be_accepted(tmp_path):
    """The status is checked in the accepting transaction, not before it."""
    async with running_node(tmp_path) as (node, client):
        owner = await client.account()
        invitee = await client.account()
        store = node.subsystems["gateway"].api.store
        invite, token = await store.create_invite(owner["org_id"], invitee["email"], "admin", owner["user_id"])
        seen = await store.pending_invite(token)  # read while pending...
        await store.set_invite_status(invite["id"], "revoked")  # ...revoked before the accept commits
        with pytest.raises(Conflict):
            await store.accept_invite(seen, invitee["user_id"])
        assert await store.role(owner["org_id"], invitee["user_id"]) is None


# -- 15. alert thresholds are bounded, and a spend raises only what it crossed -------------------------

async def test_a_viewer_cannot_store_thousands_of_alert_thresholds(tmp_path):
    async with running_node(tmp_path) as (node, client):
        owner = await client.account()
        org = owner["org_id"]
        email = f"viewer-{uuid.uuid4().hex[:6]}@example.com"
        _, invite, _ = await client.call("POST", f"/api/v1/orgs/{org}/invites", {"email": email, "role": "viewer"},
                                         owner["headers"])
        viewer = await client.account(email=email)
        status, _, _ = await client.call("POST", f"/api/v1/invites/{invite['token']}/accept", None, viewer["headers"])
        assert status == 200
        many = [round((i + 1) / 20_000, 6) for i in range(20_000)]
        status, out, _ = await client.call("PATCH", f"/api/v1/orgs/{org}/notification-settings",
                                           {"thresholds": many}, viewer["headers"])
        assert status == 400 and out["error"]["message"].startswith("thresholds"), out
        status, out, _ = await client.call("PATCH", f"/api/v1/orgs/{org}/notification-settings",
                                           {"thresholds": [0.25, 0.5, 0.75, 1.0]}, viewer["headers"])
        assert status == 200 and out["thresholds"] == [0.25, 0.5, 0.75, 1.0]


async def test_a_spend_raises_only_the_thresholds_it_crossed_and_stays_fast_with_a_huge_stored_list(tmp_path):
    async with running_node(tmp_path) as (node, client):
        owner = await client.account()
        org = owner["org_id"]
        # a list stored before the cap existed
        many = [round((i + 1) / 20_000, 6) for i in range(20_000)]
        await node.subsystems["gateway"].api.store.set_notification_settings(org, owner["user_id"],
                                                           {"budget_alerts": True, "thresholds": many})
        wid = await new_workflow(client, owner, budget=10)
        started = time.monotonic()
        status, out, _ = await client.call("POST", "/api/v1/track", {"workflow_id": wid, "cost_usd": 6},
                                           {"X-API-Key": owner["api_key"]})
        elapsed = time.monotonic() - started
        assert status == 200, out
        alerts = (await client.call("GET", f"/api/v1/orgs/{org}/alerts", headers=owner["headers"]))[1]["alerts"]
        assert 0 < len(alerts) <= 20, len(alerts)
        assert elapsed < 1.0, elapsed
        # the default thresholds: a spend from 60 % to 70 % crosses none, one to 85 % crosses 80 % only
        await node.subsystems["gateway"].api.store.set_notification_settings(org, owner["user_id"],
                                                           {"budget_alerts": True, "thresholds": [0.5, 0.8, 1.0]})
        other = await new_workflow(client, owner, budget=10)
        crossed = []
        for cost in (6, 1, 1.5):
            await client.call("POST", "/api/v1/track", {"workflow_id": other, "cost_usd": cost},
                              {"X-API-Key": owner["api_key"]})
            status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/alerts", headers=owner["headers"])
            crossed.append(sorted(a["threshold"] for a in out["alerts"] if a["workflow_id"] == other))
        assert crossed == [[0.5], [0.5], [0.5, 0.8]]


# -- 17. a workflow-scoped key sees its workflow only ------------------------------------------------

async def test_a_workflow_scoped_key_reads_and_hears_only_its_own_workflow(tmp_path):
    async with running_node(tmp_path) as (_, client):
        acct = await client.account()
        org = acct["org_id"]
        mine, other = await new_workflow(client, acct), await new_workflow(client, acct)
        status, key, _ = await client.call("POST", f"/api/v1/orgs/{org}/api-keys",
                                           {"name": "agent", "workflow_id": mine}, acct["headers"])
        assert status == 201, key
        policies = {}
        for name, match in (("all", {}), ("mine", {"workflows": [mine]}), ("other", {"workflows": [other]})):
            status, policy, _ = await client.call("POST", f"/api/v1/orgs/{org}/policies",
                                                  {"name": name, "action": "allow", "match": match}, acct["headers"])
            policies[name] = policy["id"]
        as_key = {"X-API-Key": key["api_key"]}
        status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/workflows", headers=as_key)
        assert status == 200 and [w["id"] for w in out["workflows"]] == [mine]
        status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/workflows/{other}", headers=as_key)
        assert status == 403 and "scoped" in out["error"]["message"]
        status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/workflows/{mine}", headers=as_key)
        assert status == 200 and out["id"] == mine
        status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/policies", headers=as_key)
        assert status == 200 and sorted(p["id"] for p in out["policies"]) == sorted([policies["all"], policies["mine"]])
        status, out, _ = await client.call("GET", f"/api/v1/orgs/{org}/status", headers=as_key)
        assert status == 200 and [w["id"] for w in out["workflows"]] == [mine]
        status, out, _ = await client.call("POST", "/api/v1/check", {"workflow_id": other}, as_key)
        assert status == 200 and "status" not in out and "remaining_usd" not in out, out

        async with client.session.ws_connect(f"{client.base.replace('http', 'ws')}/ws/control/{org}",
                                             headers=as_key) as ws:
            initial = await ws.receive_json(timeout=5)
            assert [w["id"] for w in initial["workflows"]] == [mine]
            assert sorted(initial["data"]["policies"]) == sorted([policies["all"], policies["mine"]])
            for wid in (other, mine):
                await client.call("POST", f"/api/v1/orgs/{org}/workflows/{wid}/pause", None, acct["headers"])
            status, keys, _ = await client.call("GET", f"/api/v1/orgs/{org}/api-keys", headers=acct["headers"])
            default = [k["id"] for k in keys["api_keys"] if k["id"] != key["id"]][0]
            await client.call("POST", f"/api/v1/orgs/{org}/api-keys/{default}/rotate", None, acct["headers"])
            await ws.send_json({"type": "ping"})
            heard = []
            while not heard or heard[-1]["type"] != "pong":
                heard.append(await ws.receive_json(timeout=5))
        assert [(m["type"], m.get("workflow_id")) for m in heard] == [("state_change", mine), ("pong", None)]


async def test_signed_requests_that_were_refused_leave_nothing_behind_in_the_replay_guard():
    guard = ReplayGuard(300)

    async def refuse() -> web.Response:
        raise ApiError(400, "cost_usd: Field required")

    ts = str(int(time.time()))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):
            with pytest.raises(ApiError):
                await guard.once("key_a", _signature(n), ts, "/api/v1/track", refuse)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 512 * 2**10, f"{held / 2**10:.0f} KiB held"
    assert len(guard) == 0
