"""Administration of an org: the org itself, its API keys, its members (owner rules in
membership.py) and its invites (the token is returned once, to the inviter; only an account with
the invited email can accept it, once)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from node.errors import Conflict, NotFound
from node.gateway import membership
from node.gateway.auth import Actor, GatewayAuth
from node.gateway.control import ControlHub
from node.gateway.models import EMAIL, WORKFLOW_ID, Body, Role, finite_json, read_as
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.server.http import json_response
from node.server.openapi import body


class ApiKeyCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    workflow_id: str | None = Field(None, pattern=WORKFLOW_ID)


class MemberPatch(Body):
    role: Role


class InviteCreate(Body):
    email: str = Field(pattern=EMAIL, max_length=320)
    role: Role = "member"

    @field_validator("role")
    @classmethod
    def _not_owner(cls, value: str) -> str:
        if value == "owner":
            raise ValueError("an invite cannot grant the owner role")
        return value


class OrgPatch(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    settings: dict[str, Any] | None = None

    _finite_settings = field_validator("settings")(finite_json)


class OrgsApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub) -> None:
        self.store = store
        self.auth = auth
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        p, o = PREFIX, f"{PREFIX}/orgs/{{org_id}}"
        return [
            web.get(o, self.get_org),
            web.patch(o, self.patch_org),
            web.delete(o, self.delete_org),
            web.get(f"{o}/api-keys", self.list_keys),
            web.post(f"{o}/api-keys", self.create_key),
            web.delete(f"{o}/api-keys/{{key_id}}", self.revoke_key),
            web.post(f"{o}/api-keys/{{key_id}}/rotate", self.rotate_key),
            web.get(f"{p}/workflows/{{workflow_id}}/api-keys", self.workflow_keys),
            web.get(f"{o}/members", self.list_members),
            web.patch(f"{o}/members/{{member_id}}", self.patch_member),
            web.delete(f"{o}/members/{{member_id}}", self.remove_member),
            web.post(f"{o}/invites", self.create_invite),
            web.delete(f"{o}/invites/{{invite_id}}", self.revoke_invite),
            web.post(f"{o}/invites/{{invite_id}}/resend", self.resend_invite),
            web.get(f"{p}/invites/{{token}}", self.invite_info),
            web.post(f"{p}/invites/{{token}}/accept", self.accept_invite),
            web.post(f"{p}/invites/{{token}}/decline", self.decline_invite),
        ]

    async def get_org(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response(await self.store.require_org(org_id))

    @body(OrgPatch, read=read_as("admin"))
    async def patch_org(self, request: web.Request, req: OrgPatch) -> web.Response:
        org_id, actor = request.match_info["org_id"], request["actor"]
        before = await self.store.org(org_id)
        await self.store.patch_org(org_id, req.name, req.settings)
        after = await self.store.org(org_id)
        await self.store.audit(org_id, actor.label, "org.updated", "org", org_id, before, after)
        return json_response(after)

    async def delete_org(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "owner")
        before = await self.store.org(org_id)
        await self.store.delete_org(org_id)
        await self.store.audit(org_id, actor.label, "org.deleted", "org", org_id, before, None)
        return json_response({"deleted": True, "id": org_id})

    async def list_keys(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, "admin")
        return json_response({"api_keys": await self.store.keys(org_id)})

    @body(ApiKeyCreate, read=read_as("admin"))
    async def create_key(self, request: web.Request, req: ApiKeyCreate) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = request["actor"]
        if req.workflow_id is not None:
            await self.store.require_workflow(org_id, req.workflow_id)
        created = await self.store.create_key(org_id, req.name, req.workflow_id, actor.id)
        await self.store.audit(org_id, actor.label, "api_key.created", "api_key", created["id"],
                               after={"name": req.name, "workflow_id": req.workflow_id})
        return json_response(created, 201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        org_id, key_id = request.match_info["org_id"], request.match_info["key_id"]
        actor = await self.auth.org(request, org_id, "admin")
        await self.store.require_key_row(org_id, key_id)
        await self.store.revoke_key(key_id)
        await self.store.audit(org_id, actor.label, "api_key.revoked", "api_key", key_id)
        await self.hub.publish(org_id, "KeyRotated", {"key_id": key_id, "revoked": True})
        return json_response({"revoked": True, "id": key_id})

    async def rotate_key(self, request: web.Request) -> web.Response:
        org_id, key_id = request.match_info["org_id"], request.match_info["key_id"]
        actor = await self.auth.org(request, org_id, "admin")
        row = await self.store.require_key_row(org_id, key_id)
        if row["revoked_at"] is not None:
            raise Conflict("api key is revoked")
        secret = await self.store.rotate_key(key_id)
        await self.store.audit(org_id, actor.label, "api_key.rotated", "api_key", key_id)
        version = (await self.store.require_key_row(org_id, key_id))["key_version"]
        await self.hub.publish(org_id, "KeyRotated", {"key_id": key_id, "revoked": False, "key_version": version})
        return json_response({"id": key_id, "secret_key": secret})

    async def workflow_keys(self, request: web.Request) -> web.Response:
        """No org in this path: the caller's orgs are looked in (ids are per org)."""
        workflow_id = request.match_info["workflow_id"]
        actor = await self.auth.session(request)
        for org_id in await self.store.workflow_orgs(workflow_id):
            if await self.store.role(org_id, actor.id) is not None:
                await self.auth.org(request, org_id, "admin")
                return json_response({"api_keys": await self.store.keys(org_id, workflow_id)})
        raise NotFound(f"workflow {workflow_id!r} not found")

    async def list_members(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({"members": await self.store.members(org_id)})

    @body(MemberPatch, read=read_as("owner"))
    async def patch_member(self, request: web.Request, req: MemberPatch) -> web.Response:
        org_id, member_id = request.match_info["org_id"], request.match_info["member_id"]
        actor = request["actor"]
        before = await membership.set_role(self.store.db, org_id, member_id, actor.id, "owner", req.role)
        await self.store.audit(org_id, actor.label, "member.updated", "member", member_id,
                               {"role": before}, {"role": req.role})
        return json_response({"id": member_id, "role": req.role})

    async def remove_member(self, request: web.Request) -> web.Response:
        org_id, member_id = request.match_info["org_id"], request.match_info["member_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await membership.remove(self.store.db, org_id, member_id, actor.id, "admin")
        await self.store.audit(org_id, actor.label, "member.removed", "member", member_id, {"role": before})
        return json_response({"removed": True, "id": member_id})

    @body(InviteCreate, read=read_as("admin"))
    async def create_invite(self, request: web.Request, req: InviteCreate) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = request["actor"]
        invite, token = await self.store.create_invite(org_id, req.email, req.role, actor.id)
        await self.store.audit(org_id, actor.label, "invite.created", "invite", invite["id"], after=invite)
        # No mail server here: the token is returned once, for the inviter to pass on.
        return json_response({**invite, "token": token}, 201)

    async def revoke_invite(self, request: web.Request) -> web.Response:
        org_id, invite_id = request.match_info["org_id"], request.match_info["invite_id"]
        actor = await self.auth.org(request, org_id, "admin")
        invite = await self.store.org_invite(org_id, invite_id)
        await self.store.set_invite_status(invite_id, "revoked")
        await self.store.audit(org_id, actor.label, "invite.revoked", "invite", invite_id, invite)
        return json_response({"revoked": True, "id": invite_id})

    async def resend_invite(self, request: web.Request) -> web.Response:
        org_id, invite_id = request.match_info["org_id"], request.match_info["invite_id"]
        actor = await self.auth.org(request, org_id, "admin")
        invite = await self.store.org_invite(org_id, invite_id)
        if invite["status"] not in ("pending", "expired"):
            raise Conflict(f"invite is {invite['status']}")
        token = await self.store.resend_invite(invite_id)
        await self.store.audit(org_id, actor.label, "invite.resent", "invite", invite_id)
        resent = await self.store.invite(invite_id)
        if resent is None:  # revoked while it was being resent
            raise NotFound(f"Invite {invite_id} not found")
        return json_response({**resent, "token": token})

    async def invite_info(self, request: web.Request) -> web.Response:
        invite = await self.store.require_invite_by_token(request.match_info["token"])
        org = await self.store.org(invite["org_id"])
        return json_response({**invite, "org_name": org["name"] if org else None})

    async def accept_invite(self, request: web.Request) -> web.Response:
        """Only the invited email's account accepts, once (see `GatewayStore.accept_invite`)."""
        actor: Actor = await self.auth.session(request)
        invite = await self.store.pending_invite(request.match_info["token"])
        await self.store.accept_invite(invite, actor.id)
        await self.store.audit(invite["org_id"], actor.label, "invite.accepted", "invite", invite["id"])
        return json_response({"accepted": True, "org_id": invite["org_id"], "role": invite["role"]})

    async def decline_invite(self, request: web.Request) -> web.Response:
        invite = await self.store.pending_invite(request.match_info["token"])
        await self.store.decline_invite(invite["id"])
        await self.store.audit(invite["org_id"], "public", "invite.declined", "invite", invite["id"])
        return json_response({"declined": True})
