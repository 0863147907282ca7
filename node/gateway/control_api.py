"""The control plane's WebSocket endpoint: authenticates the SDK client by headers on connect,
then hands the connection to the ControlHub with the org's current workflows and policies (a
workflow-bound key: its workflow, the policies that can apply to it, and only its events)."""

from __future__ import annotations

from aiohttp import web

from node.gateway import policies
from node.gateway.auth import GatewayAuth
from node.gateway.control import STATES, ControlHub
from node.gateway.store import GatewayStore
from node.server.http import ApiError, int_param


class ControlApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub) -> None:
        self.store = store
        self.auth = auth
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws/control/{org_id}", self.control)]

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
                   "policies": [p["id"] for p in await self.store.policies(org_id)
                                if key.workflow_id is None or policies.applies_to(p, key.workflow_id)]}
        return await self.hub.serve(request, org_id, {**initial, "seq": version}, last,
                                    workflow_id=key.workflow_id, key_id=key.id)
