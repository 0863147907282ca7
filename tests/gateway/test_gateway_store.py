"""The gateway's store refuses in domain terms (node/errors.py), and the HTTP edge renders those
refusals in the gateway's error shape. Fast: a store on a tmp SQLite file, an in-process app."""

from __future__ import annotations

import os

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.server.config import RateLimitConfig
from node.errors import Conflict, Forbidden, NotFound
from node.gateway import membership
from node.gateway.alerts_api import AlertsApi
from node.gateway.api import FAMILY, PREFIX
from node.gateway.auth import GatewayAuth
from node.secrets import SecretBox
from node.gateway.orgs_api import OrgsApi
from node.gateway.store import GatewayStore
from node.gateway.webhooks import WebhookSender
from node.server.egress import EgressPolicy
from node.server.http import ErrorShapes, RateLimiter, make_middlewares
from node.storage import Database


@pytest.fixture
async def store(tmp_path):
    db = Database(str(tmp_path / "gateway.db"))
    await db.open()
    gateway_store = GatewayStore(db, SecretBox(os.urandom(32)))
    await gateway_store.start()
    yield gateway_store
    await db.close()


async def test_registering_an_email_twice_is_a_conflict(store):
    await store.register("a@example.com", "A", "A org", password_hash="x")
    with pytest.raises(Conflict, match="an account with this email already exists"):
        await store.register("A@example.com", "A again", "Other org", password_hash="y")


async def test_creating_a_workflow_twice_in_one_org_is_a_conflict_but_not_across_orgs(store):
    one = await store.register("a@example.com", "A", "A org", password_hash="x")
    two = await store.register("b@example.com", "B", "B org", password_hash="x")
    await store.create_workflow(one["org_id"], "wf-1", "first", 10.0)
    with pytest.raises(Conflict, match="workflow 'wf-1' already exists"):
        await store.create_workflow(one["org_id"], "wf-1", "again", None)
    assert (await store.create_workflow(two["org_id"], "wf-1", "theirs", None))["id"] == "wf-1"


async def test_an_unknown_or_other_orgs_workflow_is_not_found(store):
    one = await store.register("a@example.com", "A", "A org", password_hash="x")
    two = await store.register("b@example.com", "B", "B org", password_hash="x")
    await store.create_workflow(one["org_id"], "wf-1", "first", None)
    assert (await store.require_workflow(one["org_id"], "wf-1"))["name"] == "first"
    with pytest.raises(NotFound, match="workflow 'wf-1' not found"):
        await store.require_workflow(two["org_id"], "wf-1")
    with pytest.raises(NotFound, match="workflow 'nope' not found"):
        await store.require_workflow(one["org_id"], "nope")


async def test_unknown_policy_key_execution_alert_and_deleted_org_are_not_found(store):
    org_id = (await store.register("a@example.com", "A", "A org", password_hash="x"))["org_id"]
    with pytest.raises(NotFound, match="policy 'pol_x' not found"):
        await store.require_policy(org_id, "pol_x")
    with pytest.raises(NotFound, match="api key 'key_x' not found"):
        await store.require_key_row(org_id, "key_x")
    with pytest.raises(NotFound, match="execution not found"):
        await store.require_execution(org_id, "exe_x")
    with pytest.raises(NotFound, match="alert not found"):
        await store.dismiss_alert(org_id, "alr_x")
    assert (await store.require_org(org_id))["name"] == "A org"
    await store.delete_org(org_id)
    with pytest.raises(NotFound, match="org not found"):
        await store.require_org(org_id)


async def test_an_invite_of_another_org_is_not_found_and_a_used_one_is_a_conflict(store):
    one = await store.register("a@example.com", "A", "A org", password_hash="x")
    two = await store.register("b@example.com", "B", "B org", password_hash="x")
    invite, token = await store.create_invite(one["org_id"], "c@example.com", "member", one["user_id"])
    with pytest.raises(NotFound, match="invite not found"):
        await store.org_invite(two["org_id"], invite["id"])
    assert (await store.pending_invite(token))["id"] == invite["id"]
    await store.set_invite_status(invite["id"], "declined")
    with pytest.raises(Conflict, match="invite is declined"):
        await store.pending_invite(token)
    with pytest.raises(NotFound, match="invite not found"):
        await store.pending_invite("inv_unknown")


async def test_removing_or_demoting_the_last_owner_is_a_conflict(store):
    acct = await store.register("a@example.com", "A", "A org", password_hash="x")
    org_id, owner = acct["org_id"], acct["user_id"]
    (member,) = await store.members(org_id)
    with pytest.raises(Conflict, match="an org needs at least one owner"):
        await membership.remove(store.db, org_id, member["id"], owner, "admin")
    with pytest.raises(Conflict, match="an org needs at least one owner"):
        await membership.set_role(store.db, org_id, member["id"], owner, "owner", "admin")
    assert [m["role"] for m in await store.members(org_id)] == ["owner"]


async def test_an_admin_cannot_remove_an_owner_and_an_outsider_is_forbidden(store):
    acct = await store.register("a@example.com", "A", "A org", password_hash="x")
    other = await store.register("b@example.com", "B", "B org", password_hash="x")
    invite, _ = await store.create_invite(acct["org_id"], "b@example.com", "admin", acct["user_id"])
    await store.accept_invite(invite, other["user_id"])
    owner_member = next(m for m in await store.members(acct["org_id"]) if m["role"] == "owner")
    with pytest.raises(Forbidden, match="Only an owner can change or remove an owner"):
        await membership.remove(store.db, acct["org_id"], owner_member["id"], other["user_id"], "admin")
    with pytest.raises(Forbidden, match="Not a member of this org"):
        await membership.remove(store.db, other["org_id"], owner_member["id"], acct["user_id"], "admin")
    with pytest.raises(NotFound, match="member 'mem_x' not found"):
        await membership.remove(store.db, acct["org_id"], "mem_x", acct["user_id"], "admin")


@pytest.fixture
async def client(store):
    shapes = ErrorShapes([FAMILY])
    app = web.Application(middlewares=make_middlewares(shapes, RateLimiter(RateLimitConfig(num_requests=0))))
    auth = GatewayAuth(store, hmac_required=False, max_age=300)
    webhooks = WebhookSender(EgressPolicy())
    app.add_routes([*OrgsApi(store, auth, hub=None).routes(), *AlertsApi(store, auth, webhooks).routes()])
    async with TestClient(TestServer(app)) as http:
        yield http
    await webhooks.close()


async def test_a_domain_error_from_a_gateway_handler_is_rendered_in_the_gateway_error_shape(store, client):
    acct = await store.register("a@example.com", "A", "A org", password_hash="x")
    token, _ = await store.new_session(acct["user_id"])
    headers = {"Authorization": f"Bearer {token}"}
    org = f"{PREFIX}/orgs/{acct['org_id']}"
    (member,) = await store.members(acct["org_id"])

    last_owner = await client.delete(f"{org}/members/{member['id']}", headers=headers)
    assert last_owner.status == 409
    assert await last_owner.json() == {"error": {"code": "conflict", "message": "an org needs at least one owner"}}

    unknown_alert = await client.post(f"{org}/alerts/alr_x/dismiss", headers=headers)
    assert unknown_alert.status == 404
    assert await unknown_alert.json() == {"error": {"code": "not_found", "message": "alert not found"}}

    unknown_invite = await client.get(f"{PREFIX}/invites/inv_unknown")
    assert unknown_invite.status == 404
    assert await unknown_invite.json() == {"error": {"code": "not_found", "message": "invite not found"}}
