"""Read-only views of an org: executions, the audit log, the dashboard, per-key quota, and each
workflow's burn rate and time to exhaustion."""

from __future__ import annotations

import time

from aiohttp import web

from node.gateway.auth import GatewayAuth
from node.gateway.control import ControlHub
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.server.http import int_param, json_response, query_limit


class ReadsApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub) -> None:
        self.store = store
        self.auth = auth
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        o = f"{PREFIX}/orgs/{{org_id}}"
        return [
            web.get(f"{o}/executions", self.list_executions),
            web.get(f"{o}/executions/{{execution_id}}", self.get_execution),
            web.get(f"{o}/audit-log", self.audit_log),
            web.get(f"{o}/dashboard", self.dashboard),
            web.get(f"{o}/quota", self.quota),
            web.get(f"{o}/status", self.status),
        ]

    async def list_executions(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        items = await self.store.executions(org_id, request.query.get("workflow_id"), query_limit(request, 100, 1000))
        return json_response({"executions": items})

    async def get_execution(self, request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        await self.auth.org(request, org_id)
        return json_response(await self.store.require_execution(org_id, request.match_info["execution_id"]))

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
        scope = (await self.auth.org(request, org_id, allow_key=True)).workflow_scope
        out = []
        for workflow in await self.store.workflows(org_id):
            if scope is not None and workflow["id"] != scope:
                continue  # a workflow-bound key sees its own workflow only
            rate = await self.store.burn_rate(org_id, workflow["id"])
            remaining = workflow["remaining_usd"]
            tte = None if remaining is None or rate <= 0 else remaining / rate
            out.append({**workflow, "burn_rate_usd_per_hour": rate * 3600, "time_to_exhaustion_seconds": tte})
        return json_response({"org_id": org_id, "workflows": out, "generated_at": time.time()})
