"""Routes of the governance gateway under /api/v1 and the control plane at /ws/control/{org_id}.

Errors: `{"error": {"code": "<code>", "message": "<text>"}[, "details": …]}`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from node.config import OAuthConfig
from node.gateway import policies
from node.gateway.auth import Actor, GatewayAuth
from node.gateway.control import STATES, ControlHub
from node.gateway.binding import JobBinding
from node.gateway.sdk import SdkApi
from node.gateway.models import (
    AlertChannelCreate,
    ApiKeyCreate,
    InviteCreate,
    LoginRequest,
    MemberPatch,
    NotificationSettings,
    OAuthRegisterRequest,
    OrgPatch,
    PolicyCreate,
    PolicyPatch,
    PolicyToggle,
    RegisterRequest,
    WorkflowCreate,
    WorkflowPatch,
)
from node.gateway import membership
from node.gateway.oauth import OAuthVerifier
from node.gateway.passwords import PasswordHasher
from node.gateway.store import GatewayStore, wf_key
from node.gateway.webhooks import WebhookSender
from node.jobs.orchestrator import Orchestrator
from node.logs import get_logger
from node.server.openapi import accepts
from node.server.egress import EgressPolicy
from node.server.http import ApiError, ApiFamily, int_param, json_response, parse_json, parse_model, query_limit

log = get_logger(__name__)

PREFIX = "/api/v1"
CODES = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 429: "rate_limited",
         502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}


def gateway_error(status: int, message: str, params: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": CODES.get(status, "internal_error"), "message": message}}
    if params:
        body["details"] = params
    return body


# The SDK and dashboard API, its WebSocket control plane and its health probes (`/health` alone
# is the Infernet node's).
FAMILY = ApiFamily("gateway", (PREFIX, "/ws/", "/health/", "/healthz"), gateway_error)


class GatewayApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub, orchestrator: Orchestrator,
                 session: aiohttp.ClientSession, reservation_ttl: float,
                 prices: dict[str, tuple[float, float]] | None = None, *,
                 webhooks: WebhookSender | None = None, oauth: OAuthVerifier | None = None,
                 hasher: PasswordHasher | None = None) -> None:
        self.store = store
        # Security-relevant collaborators (see README "Security"): client-supplied URLs go
        # through the egress policy, OAuth sign-up needs proof, scrypt runs off the loop.
        self.webhooks = webhooks or WebhookSender(EgressPolicy())
        self.oauth = oauth or OAuthVerifier(OAuthConfig())
        self.hasher = hasher or PasswordHasher()
        self.auth = auth
        self.hub = hub
        self._orchestrator = orchestrator
        self._session = session
        self._ttl = reservation_ttl
        self._background: set[asyncio.Task] = set()
        self.sdk = SdkApi(store, auth, hub, reservation_ttl, prices or {}, self._after_spend)
        self.binding = JobBinding(store, auth, self.sdk.replay)

    def routes(self) -> list[web.RouteDef]:
        p, o = PREFIX, f"{PREFIX}/orgs/{{org_id}}"
        w = f"{o}/workflows/{{workflow_id}}"
        return [
            web.post(f"{p}/auth/register", self.register),
            web.post(f"{p}/auth/login", self.login),
            web.post(f"{p}/auth/oauth/register", self.oauth_register),
            *self.sdk.routes(),
            web.post(f"{o}/workflows", self.create_workflow),
            web.get(f"{o}/workflows", self.list_workflows),
            web.get(w, self.get_workflow),
            web.patch(w, self.patch_workflow),
            web.post(f"{w}/pause", self.pause),
            web.post(f"{w}/resume", self.resume),
            web.post(f"{w}/kill", self.kill),
            web.post(f"{o}/policies", self.create_policy),
            web.get(f"{o}/policies", self.list_policies),
            web.get(f"{o}/policies/templates", self.list_templates),
            web.post(f"{o}/policies/templates/{{template_id}}/enable", self.enable_template),
            web.delete(f"{o}/policies/templates/{{template_id}}", self.disable_template),
            web.patch(f"{o}/policies/{{policy_id}}", self.patch_policy),
            web.delete(f"{o}/policies/{{policy_id}}", self.delete_policy),
            web.post(f"{p}/policies/toggle", self.toggle_policy),
            web.get(f"{o}/executions", self.list_executions),
            web.get(f"{o}/executions/{{execution_id}}", self.get_execution),
            web.get(f"{o}/audit-log", self.audit_log),
            web.get(f"{o}/dashboard", self.dashboard),
            web.get(f"{o}/quota", self.quota),
            web.get(f"{o}/status", self.status),
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
            web.get(f"{o}/alerts", self.list_alerts),
            web.post(f"{o}/alerts/{{alert_id}}/dismiss", self.dismiss_alert),
            web.get(f"{o}/alert-channels", self.list_channels),
            web.post(f"{o}/alert-channels", self.add_channel),
            web.get(f"{o}/notification-settings", self.get_notifications),
            web.patch(f"{o}/notification-settings", self.patch_notifications),
            web.get("/ws/control/{org_id}", self.control),
        ]

    # -- helpers -----------------------------------------------------------------------------

    async def _body(self, request: web.Request, model):
        return parse_model(model, parse_json(await request.read()))

    async def _workflow(self, org_id: str, workflow_id: str) -> dict[str, Any]:
        workflow = await self.store.workflow(workflow_id, org_id)
        if workflow is None:
            raise ApiError(404, f"workflow {workflow_id!r} not found")
        return workflow

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _after_spend(self, org_id: str, workflow: dict[str, Any]) -> None:
        """Raise budget-threshold alerts (once each) and post them to the org's webhooks."""
        budget = workflow.get("budget_usd")
        if not budget:
            return
        settings = await self.store.org_notification_settings(org_id) or [NotificationSettings().model_dump()]
        thresholds = sorted({t for s in settings if s.get("budget_alerts", True) for t in s.get("thresholds", [])})
        used = (workflow["spent_usd"]) / budget
        for threshold in thresholds:
            if used + 1e-12 < threshold:
                continue
            alert = await self.store.raise_alert(
                org_id, workflow["id"], threshold,
                f"workflow {workflow['id']} has spent {used:.0%} of its ${budget:g} budget")
            if alert is not None:
                log.warning("gateway.budget_alert", org_id=org_id, workflow_id=workflow["id"], threshold=threshold)
                self._spawn(self._notify(org_id, {"type": "budget_threshold", **alert,
                                                  "spent_usd": workflow["spent_usd"], "budget_usd": budget}))

    async def _notify(self, org_id: str, payload: dict[str, Any]) -> None:
        for channel in await self.store.channels(org_id):
            if channel["enabled"]:
                await self.webhooks.send(channel["id"], channel["url"], payload)

    # -- accounts ------------------------------------------------------------------------------

    @accepts(RegisterRequest)
    async def register(self, request: web.Request) -> web.Response:
        req = await self._body(request, RegisterRequest)
        try:
            out = await self.store.register(req.email, req.name, req.org_name,
                                            password_hash=await self.hasher.hash(req.password))
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        await self.store.audit(out["org_id"], f"user:{out['user_id']}", "account.registered", "user", out["user_id"])
        return json_response(out, 201)

    @accepts(OAuthRegisterRequest)
    async def oauth_register(self, request: web.Request) -> web.Response:
        req = await self._body(request, OAuthRegisterRequest)
        proof = await self.oauth.prove(request, req.provider, req.subject, req.email, req.id_token)
        existing = await self.store.user_by_oauth(req.provider, req.subject)
        if existing is not None:
            token, expires = await self.store.new_session(existing["id"])
            return json_response({"user_id": existing["id"], "org_id": await self.store.first_org(existing["id"]),
                                  "token": token, "expires_at": expires, "created": False})
        try:
            out = await self.store.register(req.email, req.name, req.org_name or f"{req.name}'s org",
                                            oauth=(req.provider, req.subject))
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        token, expires = await self.store.new_session(out["user_id"])
        await self.store.audit(out["org_id"], f"user:{out['user_id']}", "account.registered", "user",
                               out["user_id"], after={"oauth": req.provider, "proof": proof})
        return json_response({**out, "token": token, "expires_at": expires, "created": True}, 201)

    @accepts(LoginRequest)
    async def login(self, request: web.Request) -> web.Response:
        req = await self._body(request, LoginRequest)
        user = await self.store.user_by_email(req.email)
        # Unknown emails check a dummy hash: same time, same answer as a wrong password.
        if not await self.hasher.verify(req.password, user["password_hash"] if user is not None else None):
            raise ApiError(401, "Invalid email or password")
        token, expires = await self.store.new_session(user["id"])
        return json_response({"token": token, "expires_at": expires, "user_id": user["id"],
                              "org_id": await self.store.first_org(user["id"])})

    # -- workflows -------------------------------------------------------------------------------

    @accepts(WorkflowCreate)
    async def create_workflow(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        req = await self._body(request, WorkflowCreate)
        try:
            workflow = await self.store.create_workflow(org_id, req.id, req.name, req.budget_usd)
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        await self.store.audit(org_id, actor.label, "workflow.created", "workflow", workflow["id"], after=workflow)
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow["id"], "status": "active",
                                                       "previous_status": None})
        return json_response(workflow, 201)

    async def list_workflows(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, allow_key=True)
        return json_response({"workflows": await self.store.workflows(org_id)})

    async def get_workflow(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, allow_key=True)
        return json_response(await self._workflow(org_id, request.match_info["workflow_id"]))

    @accepts(WorkflowPatch)
    async def patch_workflow(self, request: web.Request) -> web.Response:
        org_id, workflow_id = request.match_info["org_id"], request.match_info["workflow_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self._workflow(org_id, workflow_id)
        req = await self._body(request, WorkflowPatch)
        await self.store.patch_workflow(wf_key(org_id, workflow_id), req.name, req.budget_usd,
                                        "budget_usd" in req.model_fields_set)
        after = await self._workflow(org_id, workflow_id)
        await self.store.audit(org_id, actor.label, "workflow.updated", "workflow", workflow_id, before, after)
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow_id, "status": after["status"],
                                                       "budget_usd": after["budget_usd"], "name": after["name"]})
        return json_response(after)

    async def _transition(self, request: web.Request, status: str, allowed_from: tuple[str, ...]) -> web.Response:
        org_id, workflow_id = request.match_info["org_id"], request.match_info["workflow_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self._workflow(org_id, workflow_id)
        if before["status"] not in allowed_from:
            raise ApiError(409, f"workflow is {before['status']}; cannot {request.path.rsplit('/', 1)[-1]}")
        await self.store.set_status(wf_key(org_id, workflow_id), status)
        # Stop running work first: publishing must never stand between a kill and its effect.
        cancelled = 0
        if status == "killed":
            cancelled = self._orchestrator.cancel_workflow(wf_key(org_id, workflow_id),
                                                           f"workflow {workflow_id} killed")
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow_id, "status": status,
                                                       "previous_status": before["status"]})
        after = await self._workflow(org_id, workflow_id)
        await self.store.audit(org_id, actor.label, f"workflow.{request.path.rsplit('/', 1)[-1]}", "workflow",
                               workflow_id, before, {**after, "cancelled_jobs": cancelled})
        log.info("gateway.workflow_state", workflow_id=workflow_id, status=status, cancelled_jobs=cancelled)
        return json_response({**after, "cancelled_jobs": cancelled})

    async def pause(self, request: web.Request) -> web.Response:
        return await self._transition(request, "paused", ("active",))

    async def resume(self, request: web.Request) -> web.Response:
        # Killed is terminal (the SDK treats a kill as final): only a pause can be resumed.
        return await self._transition(request, "active", ("paused",))

    async def kill(self, request: web.Request) -> web.Response:
        return await self._transition(request, "killed", ("active", "paused"))

    # -- policies --------------------------------------------------------------------------------

    async def _invalidate(self, org_id: str, policy_id: str | None, change: str) -> None:
        await self.hub.publish(org_id, "PolicyInvalidated", {"policy_id": policy_id, "change": change})

    @accepts(PolicyCreate)
    async def create_policy(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        req = await self._body(request, PolicyCreate)
        policy = await self.store.create_policy(org_id, req.model_dump(exclude_none=True))
        await self.store.audit(org_id, actor.label, "policy.created", "policy", policy["id"], after=policy)
        await self._invalidate(org_id, policy["id"], "created")
        return json_response(policy, 201)

    async def list_policies(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, allow_key=True)
        return json_response({"policies": await self.store.policies(org_id)})

    async def _policy(self, org_id: str, policy_id: str) -> dict[str, Any]:
        policy = await self.store.policy(org_id, policy_id)
        if policy is None:
            raise ApiError(404, f"policy {policy_id!r} not found")
        return policy

    @accepts(PolicyPatch)
    async def patch_policy(self, request: web.Request) -> web.Response:
        org_id, policy_id = request.match_info["org_id"], request.match_info["policy_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self._policy(org_id, policy_id)
        req = await self._body(request, PolicyPatch)
        changes = {k: v for k, v in req.model_dump(exclude_unset=True).items()}
        if "match" in changes and changes["match"] is not None:
            changes["match"] = req.match.model_dump(exclude_none=True)
        await self.store.update_policy(policy_id, changes)
        after = await self._policy(org_id, policy_id)
        await self.store.audit(org_id, actor.label, "policy.updated", "policy", policy_id, before, after)
        await self._invalidate(org_id, policy_id, "updated")
        return json_response(after)

    async def delete_policy(self, request: web.Request) -> web.Response:
        org_id, policy_id = request.match_info["org_id"], request.match_info["policy_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self._policy(org_id, policy_id)
        await self.store.delete_policy(policy_id)
        await self.store.audit(org_id, actor.label, "policy.deleted", "policy", policy_id, before, None)
        await self._invalidate(org_id, policy_id, "deleted")
        return json_response({"deleted": True, "id": policy_id})

    @accepts(PolicyToggle)
    async def toggle_policy(self, request: web.Request) -> web.Response:
        await self.auth.session(request)  # 401 before anything about the policy is revealed
        req = await self._body(request, PolicyToggle)
        policy = await self.store.policy_any_org(req.policy_id)
        if policy is None:
            raise ApiError(404, f"policy {req.policy_id!r} not found")
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
        raise ApiError(404, f"template {template_id!r} not found")

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
            raise ApiError(404, f"template {template_id!r} is not enabled")
        await self.store.delete_policy(existing["id"])
        await self.store.audit(org_id, actor.label, "policy.template_disabled", "policy", existing["id"], existing)
        await self._invalidate(org_id, existing["id"], "deleted")
        return json_response({"disabled": True, "template_id": template_id})

    # -- observability ---------------------------------------------------------------------------

    async def list_executions(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        items = await self.store.executions(org_id, request.query.get("workflow_id"), query_limit(request, 100, 1000))
        return json_response({"executions": items})

    async def get_execution(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        item = await self.store.execution(org_id, request.match_info["execution_id"])
        if item is None:
            raise ApiError(404, "execution not found")
        return json_response(item)

    async def audit_log(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        before = request.query.get("before_id")
        before_id = int_param(before, "before_id") if before else None
        entries = await self.store.audit_log(org_id, query_limit(request, 100, 1000), before_id)
        return json_response({"entries": entries})

    async def dashboard(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({**await self.store.dashboard(org_id), "control_clients": self.hub.clients(org_id)})

    async def quota(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({"keys": [{k: key[k] for k in ("id", "name", "prefix", "revoked", "request_count",
                                                             "cost_usd", "last_used_at")}
                                       for key in await self.store.keys(org_id)]})

    async def status(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, allow_key=True)
        out = []
        for workflow in await self.store.workflows(org_id):
            rate = await self.store.burn_rate(org_id, workflow["id"])
            remaining = workflow["remaining_usd"]
            tte = None if remaining is None or rate <= 0 else remaining / rate
            out.append({**workflow, "burn_rate_usd_per_hour": rate * 3600, "time_to_exhaustion_seconds": tte})
        return json_response({"org_id": org_id, "workflows": out, "generated_at": time.time()})

    # -- org, keys, members, invites ---------------------------------------------------------------

    async def get_org(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        org = await self.store.org(org_id)
        if org is None:
            raise ApiError(404, "org not found")
        return json_response(org)

    @accepts(OrgPatch)
    async def patch_org(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self.store.org(org_id)
        req = await self._body(request, OrgPatch)
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

    @accepts(ApiKeyCreate)
    async def create_key(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        req = await self._body(request, ApiKeyCreate)
        if req.workflow_id is not None:
            await self._workflow(org_id, req.workflow_id)
        created = await self.store.create_key(org_id, req.name, req.workflow_id, actor.id)
        await self.store.audit(org_id, actor.label, "api_key.created", "api_key", created["id"],
                               after={"name": req.name, "workflow_id": req.workflow_id})
        return json_response(created, 201)

    async def _key(self, org_id: str, key_id: str):
        row = await self.store.key_row(org_id, key_id)
        if row is None:
            raise ApiError(404, f"api key {key_id!r} not found")
        return row

    async def revoke_key(self, request: web.Request) -> web.Response:
        org_id, key_id = request.match_info["org_id"], request.match_info["key_id"]
        actor = await self.auth.org(request, org_id, "admin")
        await self._key(org_id, key_id)
        await self.store.revoke_key(key_id)
        await self.store.audit(org_id, actor.label, "api_key.revoked", "api_key", key_id)
        await self.hub.publish(org_id, "KeyRotated", {"key_id": key_id, "revoked": True})
        return json_response({"revoked": True, "id": key_id})

    async def rotate_key(self, request: web.Request) -> web.Response:
        org_id, key_id = request.match_info["org_id"], request.match_info["key_id"]
        actor = await self.auth.org(request, org_id, "admin")
        row = await self._key(org_id, key_id)
        if row["revoked_at"] is not None:
            raise ApiError(409, "api key is revoked")
        secret = await self.store.rotate_key(key_id)
        await self.store.audit(org_id, actor.label, "api_key.rotated", "api_key", key_id)
        version = (await self._key(org_id, key_id))["key_version"]
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
        raise ApiError(404, f"workflow {workflow_id!r} not found")

    async def list_members(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({"members": await self.store.members(org_id)})

    @accepts(MemberPatch)
    async def patch_member(self, request: web.Request) -> web.Response:
        org_id, member_id = request.match_info["org_id"], request.match_info["member_id"]
        actor = await self.auth.org(request, org_id, "owner")
        req = await self._body(request, MemberPatch)
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

    @accepts(InviteCreate)
    async def create_invite(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        req = await self._body(request, InviteCreate)
        invite, token = await self.store.create_invite(org_id, req.email, req.role, actor.id)
        await self.store.audit(org_id, actor.label, "invite.created", "invite", invite["id"], after=invite)
        # No mail server here: the token is returned once, for the inviter to pass on.
        return json_response({**invite, "token": token}, 201)

    async def _org_invite(self, org_id: str, invite_id: str) -> dict[str, Any]:
        invite = await self.store.invite(invite_id)
        if invite is None or invite["org_id"] != org_id:
            raise ApiError(404, "invite not found")
        return invite

    async def revoke_invite(self, request: web.Request) -> web.Response:
        org_id, invite_id = request.match_info["org_id"], request.match_info["invite_id"]
        actor = await self.auth.org(request, org_id, "admin")
        invite = await self._org_invite(org_id, invite_id)
        await self.store.set_invite_status(invite_id, "revoked")
        await self.store.audit(org_id, actor.label, "invite.revoked", "invite", invite_id, invite)
        return json_response({"revoked": True, "id": invite_id})

    async def resend_invite(self, request: web.Request) -> web.Response:
        org_id, invite_id = request.match_info["org_id"], request.match_info["invite_id"]
        actor = await self.auth.org(request, org_id, "admin")
        invite = await self._org_invite(org_id, invite_id)
        if invite["status"] not in ("pending", "expired"):
            raise ApiError(409, f"invite is {invite['status']}")
        token = await self.store.resend_invite(invite_id)
        await self.store.audit(org_id, actor.label, "invite.resent", "invite", invite_id)
        return json_response({**(await self.store.invite(invite_id)), "token": token})

    async def _pending_invite(self, token: str) -> dict[str, Any]:
        invite = await self.store.invite_by_token(token)
        if invite is None:
            raise ApiError(404, "invite not found")
        if invite["status"] != "pending":
            raise ApiError(409, f"invite is {invite['status']}")
        return invite

    async def invite_info(self, request: web.Request) -> web.Response:
        invite = await self.store.invite_by_token(request.match_info["token"])
        if invite is None:
            raise ApiError(404, "invite not found")
        org = await self.store.org(invite["org_id"])
        return json_response({**invite, "org_name": org["name"] if org else None})

    async def accept_invite(self, request: web.Request) -> web.Response:
        invite = await self._pending_invite(request.match_info["token"])
        actor: Actor = await self.auth.session(request)
        await self.store.accept_invite(invite, actor.id)
        await self.store.audit(invite["org_id"], actor.label, "invite.accepted", "invite", invite["id"])
        return json_response({"accepted": True, "org_id": invite["org_id"], "role": invite["role"]})

    async def decline_invite(self, request: web.Request) -> web.Response:
        invite = await self._pending_invite(request.match_info["token"])
        await self.store.set_invite_status(invite["id"], "declined")
        await self.store.audit(invite["org_id"], "public", "invite.declined", "invite", invite["id"])
        return json_response({"declined": True})

    # -- alerts ------------------------------------------------------------------------------------

    async def list_alerts(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response({"alerts": await self.store.alerts(org_id)})

    async def dismiss_alert(self, request: web.Request) -> web.Response:
        org_id, alert_id = request.match_info["org_id"], request.match_info["alert_id"]
        actor = await self.auth.org(request, org_id, "member")
        await self.store.dismiss_alert(org_id, alert_id)
        await self.store.audit(org_id, actor.label, "alert.dismissed", "alert", alert_id)
        return json_response({"dismissed": True, "id": alert_id})

    async def list_channels(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id, "admin")
        return json_response({"channels": await self.store.channels(org_id)})

    @accepts(AlertChannelCreate)
    async def add_channel(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id, "admin")
        req = await self._body(request, AlertChannelCreate)
        await self.webhooks.check(req.url)
        channel = await self.store.add_channel(org_id, req.type, req.url, req.enabled)
        await self.store.audit(org_id, actor.label, "alert_channel.created", "alert_channel", channel["id"],
                               after=channel)
        return json_response(channel, 201)

    async def get_notifications(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id)
        settings = await self.store.notification_settings(org_id, actor.id)
        return json_response(settings or NotificationSettings().model_dump())

    @accepts(NotificationSettings)
    async def patch_notifications(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = await self.auth.org(request, org_id)
        current = await self.store.notification_settings(org_id, actor.id) or NotificationSettings().model_dump()
        changes = parse_json(await request.read())
        if not isinstance(changes, dict):
            raise ApiError(400, "body: expected a JSON object of settings to change")
        merged = {**current, **changes}
        settings = parse_model(NotificationSettings, merged).model_dump()
        await self.store.set_notification_settings(org_id, actor.id, settings)
        await self.store.audit(org_id, actor.label, "notifications.updated", "user", actor.id, current, settings)
        return json_response(settings)

    # -- control plane -------------------------------------------------------------------------------

    async def control(self, request: web.Request) -> web.StreamResponse:
        """Authenticated on connect by headers, as the SDK sends them: X-API-Key (plus
        X-Signature / X-Signature-Timestamp over an empty body, checked when present; the
        published SDK does not sign the handshake). Keys are refused in the query string, where
        proxies and access logs would keep them."""
        org_id = request.match_info["org_id"]
        q = request.query
        if any(name in q for name in ("api_key", "signature", "timestamp")):
            raise ApiError(401, "Credentials are not accepted in the query string; send X-API-Key headers")
        key = await self.auth.sdk(request, b"", allow_unsigned=True)
        if key.org_id != org_id:
            raise ApiError(403, "API key does not belong to this org")
        last_seq = q.get("last_seq")
        last = int_param(last_seq, "last_seq") if last_seq is not None else None
        version = self.hub.current_seq(org_id)
        workflows = [w for w in await self.store.workflows(org_id)
                     if key.workflow_id is None or w["id"] == key.workflow_id]
        initial = {"workflows": [{"id": w["id"], "workflow_id": w["id"], "status": w["status"],
                                  "state": STATES[w["status"]], "version": version,
                                  "budget_usd": w["budget_usd"], "remaining_usd": w["remaining_usd"]}
                                 for w in workflows],
                   "policies": [p["id"] for p in await self.store.policies(org_id)]}
        return await self.hub.serve(request, org_id, {**initial, "seq": version}, last)

    async def close(self) -> None:
        await self.hub.close()
        await self.webhooks.close()
        self.hasher.close()
        for task in list(self._background):
            task.cancel()
