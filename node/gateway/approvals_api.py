"""The approvals' HTTP surface (see approvals.py for their life):

- `GET /orgs/{org}/approvals[?status=pending|approved|denied|expired|consumed]`: members (any
  role) and the org's API keys (a workflow-bound key sees its workflow's), newest first.
- `GET /orgs/{org}/approvals/{id}`.
- `POST /orgs/{org}/approvals/{id}/approve` and `…/deny` (no body, or `{"note": "..."}`): signed-in
  members only (an agent's key can never approve its own call), with at least the role the
  policy names; audited and pushed as `approval_resolved`.
- `POST /approvals/{id}/consume`: the SDK's signed call (`{"organization_id", "execution_id"}`).
"""

from __future__ import annotations

from typing import Literal, get_args

from aiohttp import web
from pydantic import Field

from node.gateway.approvals import ApprovalDesk
from node.gateway.auth import GatewayAuth
from node.gateway.models import Body
from node.gateway.paths import PREFIX
from node.gateway.sdk import SdkApi
from node.gateway.sdk_models import UUIDISH, _SdkBody
from node.gateway.store import ApiKey
from node.server.http import ApiError, json_response, parse_json, query_limit
from node.server.openapi import body

Status = Literal["pending", "approved", "denied", "expired", "consumed"]


class Decide(Body):
    note: str | None = Field(None, max_length=500)


async def read_decision(api: ApprovalsApi, request: web.Request) -> dict:
    """A member of the path's org (401/403 before the body is judged); no body means no note."""
    request["actor"] = await api.auth.org(request, request.match_info["org_id"], "member")
    raw = await request.read()
    return parse_json(raw) if raw.strip() else {}


class Consume(_SdkBody):
    organization_id: str | None = Field(None, max_length=128)
    execution_id: str | None = Field(None, pattern=UUIDISH)


class ApprovalsApi:
    def __init__(self, desk: ApprovalDesk, auth: GatewayAuth, sdk: SdkApi) -> None:
        self.desk = desk
        self.auth = auth
        self.sdk = sdk

    def routes(self) -> list[web.RouteDef]:
        o = f"{PREFIX}/orgs/{{org_id}}/approvals"
        return [
            web.get(o, self.list_approvals),
            web.get(f"{o}/{{approval_id}}", self.get_approval),
            web.post(f"{o}/{{approval_id}}/approve", self.approve),
            web.post(f"{o}/{{approval_id}}/deny", self.deny),
            web.post(f"{PREFIX}/approvals/{{approval_id}}/consume", self.sdk.signed(self.consume, Consume)),
        ]

    async def list_approvals(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, allow_key=True)
        status = request.query.get("status")
        if status is not None and status not in get_args(Status):
            raise ApiError(400, f"status: expected one of {', '.join(get_args(Status))}, got {status[:40]!r}")
        items = await self.desk.listing(org_id, status, actor.workflow_scope, query_limit(request, 100, 1000))
        return json_response({"approvals": items, "data": items})

    async def get_approval(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, allow_key=True)
        approval = await self.desk.require(org_id, request.match_info["approval_id"])
        if actor.workflow_scope is not None and approval["workflow_id"] != actor.workflow_scope:
            raise ApiError(404, f"approval {approval['id']!r} not found")
        return json_response(approval)

    @body(Decide, read=read_decision)
    async def approve(self, request: web.Request, req: Decide) -> web.Response:
        return json_response(await self.desk.resolve(request.match_info["org_id"], request.match_info["approval_id"],
                                                     request["actor"], True, req.note))

    @body(Decide, read=read_decision)
    async def deny(self, request: web.Request, req: Decide) -> web.Response:
        return json_response(await self.desk.resolve(request.match_info["org_id"], request.match_info["approval_id"],
                                                     request["actor"], False, req.note))

    async def consume(self, request: web.Request, key: ApiKey, req: Consume) -> web.Response:
        if req.organization_id is not None and req.organization_id != key.org_id:
            raise ApiError(403, "organization_id: not this API key's org")
        approval_id = request.match_info["approval_id"]
        status = await self.desk.consume(key, approval_id, req.execution_id)
        return json_response({"status": status, "approval_id": approval_id})
