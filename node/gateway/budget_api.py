"""`GET /api/v1/budget/approximate`: the SDK's `runtime.approximate_budget()`.

The SDK shows this to people (a cost panel), never enforces with it; it expects
`current_spend_cents_estimate`, `is_approximate`, `source`, `confidence` and `last_updated_at`.
Here the figures come from the same workflow row `/gate` reserves against and `/track` settles
into, read in one statement, so the estimate is exact at the moment it is read: spent is
settled spend, reserved is what open pre-flights hold, remaining is what `/gate` would still
grant. `is_approximate` stays true because holds come and go between the read and the display.
"""

from __future__ import annotations

from aiohttp import web

from node.gateway.auth import GatewayAuth
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.jobs.api import WORKFLOW_HEADER
from node.server.http import ApiError, json_response


class BudgetApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth) -> None:
        self.store = store
        self.auth = auth

    def routes(self) -> list[web.RouteDef]:
        return [web.get(f"{PREFIX}/budget/approximate", self.approximate)]

    async def approximate(self, request: web.Request) -> web.Response:
        # A GET with no body: the SDK sends the key alone (as for its status polls).
        key = await self.auth.sdk(request, b"", allow_unsigned=True)
        asked = request.query.get("workflow_id") or request.headers.get(WORKFLOW_HEADER) or None
        if asked is not None and key.workflow_id is not None and asked != key.workflow_id:
            raise ApiError(403, f"API key is scoped to workflow {key.workflow_id!r}")
        workflow_id = asked or key.workflow_id
        if workflow_id is None:
            raise ApiError(400, "workflow_id: Field required (a workflow-bound key, ?workflow_id= or "
                                f"{WORKFLOW_HEADER})")
        workflow = await self.store.workflow(workflow_id, key.org_id)
        if workflow is None:
            raise ApiError(404, f"workflow {workflow_id!r} not found",
                           {"error_code": "WORKFLOW_NOT_FOUND", "workflow_id": workflow_id})
        spent, reserved = workflow["spent_usd"], workflow["reserved_usd"]
        budget, remaining = workflow["budget_usd"], workflow["remaining_usd"]
        return json_response({
            "organization_id": key.org_id, "workflow_id": workflow_id, "status": workflow["status"],
            "is_approximate": True, "source": "node_ledger", "confidence": "High",
            "last_updated_at": workflow["updated_at"],
            "current_spend_cents_estimate": round(spent * 100),
            "budget_usd": budget, "spent_usd": spent, "reserved_usd": reserved, "remaining_usd": remaining,
            "budget_cents": None if budget is None else round(budget * 100),
            "reserved_cents": round(reserved * 100),
            "remaining_cents": None if remaining is None else round(remaining * 100),
        })
