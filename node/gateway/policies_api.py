"""An org's policies and the built-in policy templates. Every change is audited and published as
PolicyInvalidated on the control plane, so SDK clients drop cached decisions."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field, model_validator

from node.errors import Invalid, NotFound
from node.gateway import policies
from node.gateway.auth import GatewayAuth
from node.gateway.control import ControlHub
from node.gateway.models import Body, read_as, read_signed_in
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.server.http import json_response
from node.server.openapi import body


class TimeWindow(Body):
    """Matches when the current time (UTC) is within [start, end) on one of `days`."""

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None


class RateMatch(Body):
    """Matches when the workflow already had `max` allowed executions in the last `per_seconds`."""

    max: int = Field(ge=0)
    per_seconds: float = Field(gt=0, le=86400)


class PolicyMatch(Body):
    """All given conditions must hold (AND); an empty match matches everything."""

    workflows: list[str] | None = None
    containers: list[str] | None = None
    models: list[str] | None = None
    tools: list[str] | None = None
    cost_gt: float | None = Field(None, ge=0)
    time_window: TimeWindow | None = None
    rate: RateMatch | None = None


class ApprovalRule(Body):
    """For `action: require_approval`: how long a person has to decide (the SDK waits as long)
    and the least role that may decide."""

    timeout_seconds: int = Field(300, ge=1, le=3600)
    approver_role: Literal["member", "admin", "owner"] = "admin"


Action = Literal["allow", "deny", "require_approval"]


class PolicyCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    priority: int = Field(100, ge=0, le=1_000_000)
    enabled: bool = True
    action: Action
    reason: str | None = Field(None, max_length=500)
    match: PolicyMatch = PolicyMatch()
    approval: ApprovalRule | None = None

    @model_validator(mode="after")
    def _approval_only_when_asked(self) -> PolicyCreate:
        if self.approval is not None and self.action != "require_approval":
            raise ValueError("approval: only for action require_approval")
        if self.action == "require_approval" and self.approval is None:
            self.approval = ApprovalRule()
        return self


class PolicyPatch(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    priority: int | None = Field(None, ge=0, le=1_000_000)
    enabled: bool | None = None
    action: Action | None = None
    reason: str | None = Field(None, max_length=500)
    match: PolicyMatch | None = None
    approval: ApprovalRule | None = None


class PolicyToggle(Body):
    policy_id: str
    enabled: bool | None = None


class PoliciesApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub) -> None:
        self.store = store
        self.auth = auth
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        p, o = PREFIX, f"{PREFIX}/orgs/{{org_id}}"
        return [
            web.post(f"{o}/policies", self.create_policy),
            web.get(f"{o}/policies", self.list_policies),
            web.get(f"{o}/policies/templates", self.list_templates),
            web.post(f"{o}/policies/templates/{{template_id}}/enable", self.enable_template),
            web.delete(f"{o}/policies/templates/{{template_id}}", self.disable_template),
            web.patch(f"{o}/policies/{{policy_id}}", self.patch_policy),
            web.delete(f"{o}/policies/{{policy_id}}", self.delete_policy),
            web.post(f"{p}/policies/toggle", self.toggle_policy),
        ]

    async def _invalidate(self, org_id: str, policy_id: str | None, change: str) -> None:
        await self.hub.publish(org_id, "PolicyInvalidated", {"policy_id": policy_id, "change": change})

    @body(PolicyCreate, read=read_as("admin"))
    async def create_policy(self, request: web.Request, req: PolicyCreate) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = request["actor"]
        policy = await self.store.create_policy(org_id, req.model_dump(exclude_none=True))
        await self.store.audit(org_id, actor.label, "policy.created", "policy", policy["id"], after=policy)
        await self._invalidate(org_id, policy["id"], "created")
        return json_response(policy, 201)

    async def list_policies(self, request: web.Request) -> web.Response:
        """The org's policies; a workflow-bound API key sees those that can apply to its workflow."""
        org_id = request.match_info["org_id"]
        scope = (await self.auth.org(request, org_id, allow_key=True)).workflow_scope
        found = await self.store.policies(org_id)
        return json_response({"policies": [p for p in found if scope is None or policies.applies_to(p, scope)]})

    async def _policy(self, request: web.Request) -> dict[str, Any]:
        return await self.store.require_policy(request.match_info["org_id"], request.match_info["policy_id"])

    @body(PolicyPatch, read=read_as("admin", before=_policy))
    async def patch_policy(self, request: web.Request, req: PolicyPatch) -> web.Response:
        org_id, policy_id = request.match_info["org_id"], request.match_info["policy_id"]
        actor, before = request["actor"], request["before"]
        changes = {k: v for k, v in req.model_dump(exclude_unset=True).items()}
        if "match" in changes and req.match is not None:
            changes["match"] = req.match.model_dump(exclude_none=True)
        action = changes.get("action", before["action"])
        if changes.get("approval") is not None and action != "require_approval":
            raise Invalid("approval: only for action require_approval")
        if action == "require_approval" and before.get("approval") is None and changes.get("approval") is None:
            changes["approval"] = ApprovalRule().model_dump()
        await self.store.update_policy(policy_id, changes)
        after = await self.store.require_policy(org_id, policy_id)
        await self.store.audit(org_id, actor.label, "policy.updated", "policy", policy_id, before, after)
        await self._invalidate(org_id, policy_id, "updated")
        return json_response(after)

    async def delete_policy(self, request: web.Request) -> web.Response:
        org_id, policy_id = request.match_info["org_id"], request.match_info["policy_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self.store.require_policy(org_id, policy_id)
        await self.store.delete_policy(policy_id)
        await self.store.audit(org_id, actor.label, "policy.deleted", "policy", policy_id, before, None)
        await self._invalidate(org_id, policy_id, "deleted")
        return json_response({"deleted": True, "id": policy_id})

    @body(PolicyToggle, read=read_signed_in)  # 401 before anything about the policy is revealed
    async def toggle_policy(self, request: web.Request, req: PolicyToggle) -> web.Response:
        policy = await self.store.policy_any_org(req.policy_id)
        if policy is None:
            raise NotFound(f"policy {req.policy_id!r} not found")
        org_actor = await self.auth.org(request, policy["org_id"], "admin")
        enabled = (not policy["enabled"]) if req.enabled is None else req.enabled
        await self.store.update_policy(req.policy_id, {"enabled": enabled})
        after = await self.store.policy_any_org(req.policy_id)
        await self.store.audit(policy["org_id"], org_actor.label, "policy.toggled", "policy",
                               req.policy_id, policy, after)
        await self._invalidate(policy["org_id"], req.policy_id, "toggled")
        return json_response(after)

    async def list_templates(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        enabled = {p["template_id"] for p in await self.store.policies(org_id) if p["template_id"]}
        return json_response({"templates": [{**t, "enabled": t["id"] in enabled} for t in policies.TEMPLATES]})

    def _template(self, template_id: str) -> dict[str, Any]:
        for template in policies.TEMPLATES:
            if template["id"] == template_id:
                return template
        raise NotFound(f"template {template_id!r} not found")

    async def enable_template(self, request: web.Request) -> web.Response:
        org_id, template_id = request.match_info["org_id"], request.match_info["template_id"]
        actor = await self.auth.org(request, org_id, "admin")
        template = self._template(template_id)
        existing = await self.store.template_policy(org_id, template_id)
        if existing is not None:
            return json_response(existing)
        body = {k: template[k] for k in ("name", "priority", "action", "reason", "match")}
        policy = await self.store.create_policy(org_id, body, template_id=template_id)
        await self.store.audit(org_id, actor.label, "policy.template_enabled", "policy", policy["id"], after=policy)
        await self._invalidate(org_id, policy["id"], "created")
        return json_response(policy, 201)

    async def disable_template(self, request: web.Request) -> web.Response:
        org_id, template_id = request.match_info["org_id"], request.match_info["template_id"]
        actor = await self.auth.org(request, org_id, "admin")
        self._template(template_id)
        existing = await self.store.template_policy(org_id, template_id)
        if existing is None:
            raise NotFound(f"template {template_id!r} is not enabled")
        await self.store.delete_policy(existing["id"])
        await self.store.audit(org_id, actor.label, "policy.template_disabled", "policy", existing["id"], existing)
        await self._invalidate(org_id, existing["id"], "deleted")
        return json_response({"disabled": True, "template_id": template_id})
