"""Workflows of an org: create, list, read, rename/re-budget, and the pause/resume/kill state
machine (a kill cancels the workflow's running jobs before anything is published)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from node.errors import Conflict
from node.gateway.auth import GatewayAuth
from node.gateway.control import ControlHub
from node.gateway.models import WORKFLOW_ID, Body, read_as
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore, wf_key
from node.jobs.orchestrator import Orchestrator
from node.logs import get_logger
from node.server.http import json_response
from node.server.openapi import body

log = get_logger(__name__)


class WorkflowCreate(Body):
    id: str | None = Field(None, pattern=WORKFLOW_ID)
    name: str = Field(min_length=1, max_length=200)
    budget_usd: float | None = Field(None, ge=0)


class WorkflowPatch(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    budget_usd: float | None = Field(None, ge=0)


class WorkflowsApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub, orchestrator: Orchestrator) -> None:
        self.store = store
        self.auth = auth
        self.hub = hub
        self._orchestrator = orchestrator

    def routes(self) -> list[web.RouteDef]:
        o = f"{PREFIX}/orgs/{{org_id}}"
        w = f"{o}/workflows/{{workflow_id}}"
        return [
            web.post(f"{o}/workflows", self.create_workflow),
            web.get(f"{o}/workflows", self.list_workflows),
            web.get(w, self.get_workflow),
            web.patch(w, self.patch_workflow),
            web.post(f"{w}/pause", self.pause),
            web.post(f"{w}/resume", self.resume),
            web.post(f"{w}/kill", self.kill),
        ]

    @body(WorkflowCreate, read=read_as("admin"))
    async def create_workflow(self, request: web.Request, req: WorkflowCreate) -> web.Response:
        org_id = request.match_info["org_id"]
        actor = request["actor"]
        workflow = await self.store.create_workflow(org_id, req.id, req.name, req.budget_usd)
        await self.store.audit(org_id, actor.label, "workflow.created", "workflow", workflow["id"], after=workflow)
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow["id"], "status": "active",
                                                       "previous_status": None})
        return json_response(workflow, 201)

    async def list_workflows(self, request: web.Request) -> web.Response:
        """The org's workflows; a workflow-bound API key sees its own only."""
        org_id = request.match_info["org_id"]
        scope = (await self.auth.org(request, org_id, allow_key=True)).workflow_scope
        workflows = await self.store.workflows(org_id)
        return json_response({"workflows": [w for w in workflows if scope is None or w["id"] == scope]})

    async def get_workflow(self, request: web.Request) -> web.Response:
        org_id, workflow_id = request.match_info["org_id"], request.match_info["workflow_id"]
        (await self.auth.org(request, org_id, allow_key=True)).check_workflow(workflow_id)
        return json_response(await self.store.require_workflow(org_id, workflow_id))

    async def _workflow(self, request: web.Request) -> dict[str, Any]:
        return await self.store.require_workflow(request.match_info["org_id"], request.match_info["workflow_id"])

    @body(WorkflowPatch, read=read_as("admin", before=_workflow))
    async def patch_workflow(self, request: web.Request, req: WorkflowPatch) -> web.Response:
        org_id, workflow_id = request.match_info["org_id"], request.match_info["workflow_id"]
        actor, before = request["actor"], request["before"]
        await self.store.patch_workflow(wf_key(org_id, workflow_id), req.name, req.budget_usd,
                                        "budget_usd" in req.model_fields_set)
        after = await self.store.require_workflow(org_id, workflow_id)
        await self.store.audit(org_id, actor.label, "workflow.updated", "workflow", workflow_id, before, after)
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow_id, "status": after["status"],
                                                       "budget_usd": after["budget_usd"], "name": after["name"]})
        return json_response(after)

    async def _transition(self, request: web.Request, status: str, allowed_from: tuple[str, ...]) -> web.Response:
        org_id, workflow_id = request.match_info["org_id"], request.match_info["workflow_id"]
        actor = await self.auth.org(request, org_id, "admin")
        before = await self.store.require_workflow(org_id, workflow_id)
        if before["status"] not in allowed_from:
            raise Conflict(f"workflow is {before['status']}; cannot {request.path.rsplit('/', 1)[-1]}")
        await self.store.set_status(wf_key(org_id, workflow_id), status)
        # Stop running work first: publishing must never stand between a kill and its effect.
        cancelled = 0
        if status == "killed":
            cancelled = self._orchestrator.cancel_workflow(wf_key(org_id, workflow_id),
                                                           f"workflow {workflow_id} killed")
        await self.hub.publish(org_id, "StateChange", {"workflow_id": workflow_id, "status": status,
                                                       "previous_status": before["status"]})
        after = await self.store.require_workflow(org_id, workflow_id)
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
