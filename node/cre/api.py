"""Routes of the CRE bridge. Success: `{"success": true, "data": …}`; failure:
`{"success": false, "error": "<message>"[, "details": …]}` with a 4xx/5xx status."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from pydantic import ValidationError

from node.cre.actions import ActionRunner
from node.cre.auth import CallbackAuth, RuntimeAuth
from node.cre.config import CreConfig
from node.cre.gateway import GatewayError, TriggerDispatcher
from node.cre.jsjson import NotJsSafe, stringify
from node.cre.models import (
    CALLBACKS,
    AckRequest,
    ClaimRequest,
    DecisionRequest,
    IngestRequest,
    TriggerRequest,
)
from node.cre.store import Conflict, CreStore
from node.cre.workflow.errors import ActionConflict, ActionError
from node.cre.workflow.models import KNOWN_ACTIONS, parse_action
from node.fields import reveal
from node.logs import get_logger
from node.server.http import (
    ApiError,
    ApiFamily,
    bearer_token,
    int_param,
    json_response,
    parse_json,
    parse_model,
    query_limit,
    validation_message,
)
from node.server.openapi import accepts, body

if TYPE_CHECKING:
    from node.cre.wasm.service import WasmWorkflows
    from node.cre.workflow.runtime import WorkflowRuntime

log = get_logger(__name__)

PREFIX = "/api/cre"


def cre_error(status: int, message: str, params: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "error": message}
    if params:
        body["details"] = params
    return body


# `/trigger` is the CRE simulator's HTTP trigger path, served by the local workflow runtime.
FAMILY = ApiFamily("cre", (PREFIX, "/trigger"), cre_error)


def ok(data: Any, status: int = 200) -> web.Response:
    return json_response({"success": True, "data": data}, status)


async def _body(request: web.Request) -> Any | None:
    raw = await request.read()
    return parse_json(raw) if raw else None


class CreApi:
    def __init__(self, config: CreConfig, store: CreStore, runner: ActionRunner,
                 dispatcher: TriggerDispatcher | None, runtime: WorkflowRuntime | None = None,
                 wasm: WasmWorkflows | None = None) -> None:
        self._runtime = runtime
        self._wasm = wasm
        self._config = config
        self._store = store
        self._runner = runner
        self._dispatcher = dispatcher
        self._auth = RuntimeAuth(config, store)
        self._callback_auth = CallbackAuth(reveal(config.backend_api_key), reveal(config.api_key))

    def routes(self) -> list[web.RouteDef]:
        runtime = f"{PREFIX}/runtime"
        routes = [
            web.post(f"{runtime}/ingest", self.ingest),
            web.get(f"{runtime}/ingest", self.readback),
            web.post(f"{runtime}/decisions", self.decide),
            web.get(f"{runtime}/decisions", self.get_decision),
            web.post(f"{runtime}/trigger", self.trigger),
            web.get(f"{runtime}/actions", self.list_actions),
            web.post(f"{runtime}/actions/claim", self.claim),
            web.get(f"{runtime}/actions/{{id:\\d+}}", self.get_action),
            web.post(f"{runtime}/actions/{{id:\\d+}}/ack", self.ack),
            web.post(f"{PREFIX}/workflow", self.workflow),
            web.post(f"{PREFIX}/workflow/trigger", self.workflow),
        ]
        if self._runtime is not None:  # the path `cre workflow simulate` listens on
            routes.append(web.post("/trigger", self.workflow))
        if self._wasm is not None:  # CRE workflows built with @chainlink/cre-sdk (node/cre/wasm)
            routes += self._wasm.routes()
        for name in CALLBACKS:
            routes.append(web.post(f"{PREFIX}/{name}", self._callback_post(name)))
            routes.append(web.get(f"{PREFIX}/{name}", self._callback_get(name)))
        return routes

    async def _authed(self, request: web.Request) -> Any | None:
        body = await _body(request)
        await self._auth.check(request, body)
        return body

    # -- ingest ----------------------------------------------------------------------------

    @body(IngestRequest, read=_authed)
    async def ingest(self, request: web.Request, req: IngestRequest) -> web.Response:
        allowed = self._config.ingest_policy.get(req.workflow)
        if allowed is None or req.kind not in allowed:
            raise ApiError(403, f"workflow/kind pair not allowed: {req.workflow}:{req.kind}")
        try:
            inserted = await self._store.ingest(req.workflow, req.kind, req.idempotencyKey, req.payload, req.source)
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        return ok({"stored": True, "inserted": inserted, "idempotencyKey": req.idempotencyKey})

    async def readback(self, request: web.Request) -> web.Response:
        await self._authed(request)
        limit = query_limit(request, 100, self._config.max_readback)
        records = await self._store.records(request.query.get("kind"), request.query.get("workflow"), limit)
        return ok({"records": records, "count": len(records)})

    # -- decisions -------------------------------------------------------------------------

    @body(DecisionRequest, read=_authed)
    async def decide(self, request: web.Request, req: DecisionRequest) -> web.Response:
        if req.workflow not in self._config.decision_workflows:
            raise ApiError(403, f"workflow not allowed for decisions: {req.workflow}")
        action = req.enqueueAction.model_dump(exclude_none=True) if req.enqueueAction else None
        try:
            stored, new_action = await self._store.decide(req.workflow, req.idempotencyKey, req.decision, action)
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        if new_action and action is not None and stored.action_id is not None \
                and self._runner.routed(action["actionType"]):
            queued = await self._store.action(stored.action_id)
            if queued is not None:
                self._runner.schedule(queued)
        data: dict[str, Any] = {"stored": True, "inserted": stored.inserted, "idempotencyKey": req.idempotencyKey}
        if stored.action_id is not None:
            data["actionId"] = stored.action_id
        return ok(data)

    async def get_decision(self, request: web.Request) -> web.Response:
        await self._authed(request)
        workflow, key = request.query.get("workflow"), request.query.get("idempotencyKey")
        if not workflow or not key:
            raise ApiError(400, "workflow and idempotencyKey query parameters are required")
        found = await self._store.decision(workflow, key)
        if found is None:
            raise ApiError(404, "decision not found")
        return ok(found)

    # -- actions queue ---------------------------------------------------------------------

    async def list_actions(self, request: web.Request) -> web.Response:
        await self._authed(request)
        status = request.query.get("status")
        if status and status not in ("queued", "claimed", "running", "succeeded", "failed"):
            raise ApiError(400, f"status: unknown status {status!r}")
        actions = await self._store.actions(status, request.query.get("actionType"), query_limit(request, 100, 500))
        return ok({"actions": actions, "count": len(actions)})

    async def get_action(self, request: web.Request) -> web.Response:
        await self._authed(request)
        action = await self._store.action(int_param(request.match_info["id"], "id"))
        if action is None:
            raise ApiError(404, "action not found")
        return ok(action)

    @body(ClaimRequest, read=_authed)
    async def claim(self, request: web.Request, req: ClaimRequest) -> web.Response:
        lease = req.leaseSeconds or self._config.action_lease_seconds
        claimed = await self._store.claim(req.workerId, req.limit, lease, req.actionTypes,
                                          list(self._runner.routes))
        return ok({"actions": claimed, "leaseSeconds": lease})

    @body(AckRequest, read=_authed)
    async def ack(self, request: web.Request, req: AckRequest) -> web.Response:
        action_id = int_param(request.match_info["id"], "id")
        outcome = await self._store.ack(action_id, req.workerId, req.status == "succeeded", req.result, req.error)
        if outcome == "missing":
            raise ApiError(404, "action not found")
        if outcome == "not-owner":
            raise ApiError(409, "action is not claimed by this worker (lease expired or never claimed)")
        return ok(await self._store.action(action_id))

    # -- trigger -----------------------------------------------------------------------------

    @body(TriggerRequest, read=_authed)
    async def trigger(self, request: web.Request, req: TriggerRequest) -> web.Response:
        allowed = self._config.allowed_trigger_workflow_ids
        if allowed is not None and req.workflowId not in allowed:
            raise ApiError(403, f"workflowId not in the allowed trigger workflows: {req.workflowId}")
        payload = req.input
        if not isinstance(payload, (dict, list)):  # the gateway's rule (http_trigger_handler.go)
            raise ApiError(400, "input: must be a JSON object or array ({} if none)")
        try:  # the gateway hashes JCS (JS numbers): refuse what would not survive it
            stringify(payload, "input")
        except NotJsSafe as exc:
            raise ApiError(400, str(exc), {"field": exc.path}) from None
        if isinstance(payload, dict) and payload.get("action") in KNOWN_ACTIONS:
            # Checked with the models the local runtime executes, for an early, clear 400; the
            # input is then sent exactly as the app wrote it (no defaults, nothing dropped).
            try:
                parse_action(payload)
            except ValidationError as exc:
                message, problems = validation_message(exc)
                raise ApiError(400, f"input.{message}", {"errors": problems}) from None
        if self._dispatcher is None:
            raise ApiError(503, "CRE trigger dispatch is not configured (CRE_GATEWAY_URL and "
                                "CRE_HTTP_TRIGGER_PRIVATE_KEY are required)")
        request_id = req.requestId or str(uuid.uuid4())
        try:
            result = await self._dispatcher.execute(req.workflowId, request_id, payload)
        except NotJsSafe as exc:  # e.g. a lone surrogate in requestId
            raise ApiError(400, f"requestId: {exc.problem}" if exc.path == "id" else str(exc),
                           {"field": exc.path}) from None
        except GatewayError as exc:
            raise ApiError(exc.status, exc.message, {"requestId": request_id,
                                                     "gatewayUrl": self._dispatcher.gateway_url}) from None
        rpc_error = isinstance(result.body, dict) and result.body.get("error") is not None
        data = {
            "accepted": 200 <= result.status < 300 and not rpc_error,
            "requestId": request_id,
            "statusCode": result.status,
            "gatewayUrl": self._dispatcher.gateway_url,
            "response": result.body,
        }
        if not 200 <= result.status < 300:
            raise ApiError(502, f"CRE gateway answered HTTP {result.status}", data)
        return ok(data)

    # -- local workflow runtime -------------------------------------------------------------

    async def workflow(self, request: web.Request) -> web.Response:
        """The local CRE workflow's HTTP trigger: a seed-001 action payload (`action` selects),
        bare, inside a JSON-RPC `workflows.execute` envelope, or as `{"input": {...}}` (what the
        CRE CLI's `cre workflow simulate` HTTP trigger takes at /trigger); answers the action's
        response. The key is the payload's `apiKey` or an `Authorization: Bearer` token."""
        if self._runtime is None:
            raise ApiError(503, "The local workflow runtime is not configured (cre.runtime)")
        body = await _body(request)
        rpc_id = None
        if isinstance(body, dict) and body.get("method") == "workflows.execute":
            rpc_id = body.get("id")
            params = body.get("params")
            body = params.get("input") if isinstance(params, dict) else None
        elif isinstance(body, dict) and "action" not in body and isinstance(body.get("input"), dict):
            body = body["input"]  # the simulator's {"input": {...}}
        bearer = bearer_token(request)  # may also be a gateway-style JWT
        try:
            self._runtime.authorize(bearer, body.get("apiKey") if isinstance(body, dict) else None)
        except PermissionError as exc:
            raise ApiError(401, str(exc)) from None
        try:
            action = parse_action(body)
        except ValidationError as exc:
            message, problems = validation_message(exc)
            raise ApiError(400, message, {"errors": problems}) from None
        try:
            result = await self._runtime.execute(action)
        except ActionConflict as exc:
            raise ApiError(409, f"{action.action}: {exc}") from None
        except ActionError as exc:
            raise ApiError(400, f"{action.action}: {exc}") from None
        log.info("cre.workflow_action", action=action.action)
        if rpc_id is not None:
            return json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})
        return json_response(result)

    # -- callbacks ---------------------------------------------------------------------------

    def _callback_post(self, name: str):
        model = CALLBACKS[name]

        async def handler(request: web.Request) -> web.Response:
            self._callback_auth.check(request)
            body = await _body(request)
            parse_model(model, body)  # validated (so a JSON object); stored exactly as received
            callback_id = await self._store.add_callback(name, cast(dict[str, Any], body))
            log.info("cre.callback", action=name, id=callback_id)
            return ok({"id": callback_id, "received": True}, 201)

        handler.__doc__ = f"CRE callback after the {name} action (stored as received)"
        return accepts(model)(handler)

    def _callback_get(self, name: str):
        async def handler(request: web.Request) -> web.Response:
            self._callback_auth.check(request, reading=True)
            filters = {column: request.query[param] for param, column in
                       (("questionId", "question_id"), ("agentId", "agent_id"), ("txHash", "tx_hash"))
                       if param in request.query}
            items = await self._store.callbacks(name, filters, query_limit(request, 100, self._config.max_readback))
            return ok({"callbacks": items, "count": len(items)})

        handler.__doc__ = f"Read back {name} callbacks (filters: questionId, agentId, txHash)"
        return handler
