"""The SDK-facing endpoints of the gateway, answered the way the published nullrun SDK (0.22)
reads them: /auth/verify, /capabilities, /gate, /execute, /check, /track, /track/batch,
/cancel, /heartbeat and /status/{workflow_id}.

Flow of one `@protect`ed call: /status (first call: is the workflow paused or killed?) ->
/gate (budget pre-flight; mints the execution id, returned as `reservation_id`, a UUID the SDK
keeps) -> /execute (policies, with that id) -> the body runs -> /track settles the hold, or
/cancel releases it when the body raised.

A call is bound to a workflow by the body's `workflow_id`, else `X-Workflow-Id`, else the
workflow the key is bound to. Refusals are 4xx with the SDK's refusal envelope (`decision:
block`, `category` denied|budget|halt, `error_code` from its catalogue), which it maps to its
typed errors; a policy deny carries the policy's reason as `agent_message`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node import __version__
from node.gateway import policies
from node.gateway.approvals import ApprovalDesk
from node.gateway.auth import GatewayAuth
from node.gateway.control import STATES, ControlHub
from node.gateway.paths import PREFIX
from node.gateway.replay import ReplayGuard
from node.gateway.sdk_models import SdkCancel, SdkExecute, SdkGate, SdkHeartbeat, SdkTrackBatch, SdkTrackEvent
from node.gateway.store import ApiKey, GatewayStore, wf_key
from node.jobs.api import WORKFLOW_HEADER
from node.logs import get_logger
from node.server.http import ApiError, json_response, parse_json, parse_model
from node.server.openapi import accepts

log = get_logger(__name__)

QUIET_EVENTS = {"span_start", "span_end"}  # accepted, not billed rows: they carry no usage


def refusal(http_status: int, category: str, code: str, reason: str, **extra: Any) -> web.Response:
    details = {"error_code": code, **{k: v for k, v in extra.items() if k in ("workflow_id", "policy_id")}}
    body = {"decision": "block", "decision_source": "gateway", "category": category, "error_code": code,
            "explanation": reason, "explanations": [reason], "message": reason, "allowed": False,
            "reason": reason, "details": details, **extra}
    if category == "denied":
        body["agent_message"] = reason  # the policy's own words: safe to put in a model's context
    return json_response(body, http_status)


def not_found(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(404, message, {"error_code": code, **details})


class SdkApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub, reservation_ttl: float,
                 prices: dict[str, tuple[float, float]],
                 after_spend: Callable[[str, dict[str, Any], float], Awaitable[None]], *,
                 verify_returns_secret: bool | None = None, approvals: ApprovalDesk | None = None) -> None:
        self.store = store
        self.approvals = approvals
        # auth/verify hands out the HMAC secret to a key-only caller only if the operator chose it
        # (never while signatures are required: the secret would then add nothing to the key).
        self._returns_secret = (not auth.hmac_required) if verify_returns_secret is None else (
            verify_returns_secret and not auth.hmac_required)
        self.auth = auth
        self.hub = hub
        self._ttl = reservation_ttl
        self._prices = prices
        self._after_spend = after_spend
        self.replay = ReplayGuard(auth.max_age)

    def routes(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.post(f"{p}/auth/verify", self.verify),
            web.get(f"{p}/capabilities", self.capabilities),
            web.post(f"{p}/gate", self._signed(self.gate, SdkGate)),
            web.post(f"{p}/check", self._signed(self.check, SdkGate)),
            web.post(f"{p}/execute", self._signed(self.execute, SdkExecute)),
            web.post(f"{p}/track", self._signed(self.track, SdkTrackEvent)),
            web.post(f"{p}/track/batch", self._signed(self.track_batch, SdkTrackBatch)),
            web.post(f"{p}/cancel", self._signed(self.cancel, SdkCancel)),
            web.post(f"{p}/heartbeat", self._signed(self.heartbeat, SdkHeartbeat)),
            web.get(f"{p}/status/{{workflow_id}}", self.status),
        ]

    # -- plumbing ------------------------------------------------------------------------------

    def _signed(self, handler: Callable[[web.Request, ApiKey, Any], Awaitable[web.Response]], model: type):
        """Authenticate, then run `handler` with the body parsed as `model`, at most once per
        signature (see replay.py): the signature is checked before the body is judged."""

        async def route(request: web.Request) -> web.Response:
            raw = await request.read()
            key = await self.auth.sdk(request, raw)
            body = parse_json(raw)
            signature = request.headers.get("X-Signature")

            async def act() -> web.Response:
                response = await handler(request, key, parse_model(model, body))
                await self.store.note_key_use(key.id)
                return response

            if signature is None:
                return await act()
            timestamp = request.headers["X-Signature-Timestamp"]
            return await self.replay.once(key.id, signature, timestamp, request.path, act)

        return accepts(model)(route)

    signed = _signed  # for the routes of other handler sets the SDK calls signed (approvals' consume)

    def _workflow_id(self, request: web.Request, key: ApiKey, in_body: str | None) -> str | None:
        header = request.headers.get(WORKFLOW_HEADER) or None
        if in_body and header and in_body != header:
            raise ApiError(400, f"workflow_id: body says {in_body!r} but {WORKFLOW_HEADER} says {header!r}",
                           {"error_code": "WORKFLOW_ID_BODY_MISMATCH"})
        workflow_id = in_body or header or key.workflow_id
        if workflow_id is not None and key.workflow_id is not None and workflow_id != key.workflow_id:
            raise ApiError(403, f"API key is scoped to workflow {key.workflow_id!r}")
        return workflow_id

    async def _workflow(self, key: ApiKey, workflow_id: str) -> dict[str, Any]:
        workflow = await self.store.workflow(workflow_id, key.org_id)
        if workflow is None:
            raise not_found("WORKFLOW_NOT_FOUND", f"workflow {workflow_id!r} not found", workflow_id=workflow_id)
        return workflow

    def price(self, model: str | None, input_tokens: int, output_tokens: int) -> float:
        rates = self._prices.get(model or "")
        if rates is None:
            return 0.0
        return input_tokens / 1000 * rates[0] + output_tokens / 1000 * rates[1]

    @staticmethod
    def _halt(workflow: dict[str, Any], on_execute: bool) -> web.Response:
        status = workflow["status"]
        code = "WORKFLOW_PAUSED" if status == "paused" else ("WORKFLOW_INACTIVE" if on_execute else "WORKFLOW_KILLED")
        return refusal(403, "halt", code, f"workflow {workflow['id']} is {status}", workflow_id=workflow["id"],
                       status=status)

    # -- identity -------------------------------------------------------------------------------

    async def verify(self, request: web.Request) -> web.Response:
        """The SDK's init: who this API key is (org, workflow, key version), plus the HMAC secret
        only where `gateway.verify_returns_secret` allows it."""
        raw = await request.read()
        api_key = request.headers.get("X-API-Key")
        if not api_key:
            body = parse_json(raw) if raw else {}
            api_key = body.get("api_key") if isinstance(body, dict) else None
        if not isinstance(api_key, str) or not api_key:
            raise ApiError(400, "api_key: Field required")
        key = await self.store.key(api_key)
        if key is None:
            raise ApiError(401, "Invalid API key")
        answer = {"valid": True, "key_id": key.id, "org_id": key.org_id, "organization_id": key.org_id,
                  "workflow_id": key.workflow_id, "key_version": key.version}
        if self._returns_secret:
            answer["secret_key"] = key.secret
        # Without it the SDK keeps signing with NULLRUN_SECRET_KEY (it only takes a secret_key
        # that the answer carries), so the secret never has to cross the wire after minting.
        return json_response(answer)

    async def capabilities(self, request: web.Request) -> web.Response:
        return json_response({
            "min_protocol_version": 1, "max_protocol_version": 4, "protocol_version": 4,
            "server_version": f"node/{__version__}", "sdk_min_version": "0.0.0",
            "capabilities": {"server_minted_execution_id": True, "per_execution_reservations": True,
                             "heartbeat_time_based": True, "idempotency_keys": True,
                             "chain_idle_ttl_seconds": int(self._ttl)},
        })

    # -- decisions ------------------------------------------------------------------------------

    async def gate(self, request: web.Request, key: ApiKey, req: SdkGate) -> web.Response:
        workflow_id = self._workflow_id(request, key, req.workflow_id)
        if workflow_id is None:
            return json_response({"decision": "allow", "decision_source": "gateway", "allowed": True,
                                  "reason": "no workflow bound: nothing to govern", "workflow_id": None})
        workflow = await self._workflow(key, workflow_id)
        if workflow["status"] != "active":
            await self.store.record_execution(key.org_id, "gate", False, f"workflow is {workflow['status']}",
                                              workflow_id=workflow_id, api_key_id=key.id)
            return self._halt(workflow, on_execute=False)
        # The SDK's pre-flight names a model and tokens: that priced estimate is held for the call.
        # A caller's own estimated_cost_usd is only checked here (the seed's binary pre-flight;
        # /execute reserves it).
        priced = self.price(req.model, req.estimated_tokens or 0, req.max_output_tokens or 0)
        cost = req.estimated_cost_usd if req.estimated_cost_usd is not None else priced
        hold = 0.0 if req.estimated_cost_usd is not None else priced
        remaining = workflow["remaining_usd"]
        if remaining is not None and (remaining <= 1e-12 or cost > remaining + 1e-12):
            await self.store.record_execution(key.org_id, "gate", False, "budget exhausted", workflow_id=workflow_id,
                                              model=req.model, cost=cost, api_key_id=key.id)
            return refusal(402, "budget", "BUDGET_HARD_BLOCKED", "budget exhausted", workflow_id=workflow_id,
                           remaining_usd=remaining, remaining_budget_cents=round(remaining * 100))
        # The execution id names the hold: settled by /track, released by /cancel, else it expires.
        execution_id = str(uuid.uuid4())
        held = await self.store.reserve(wf_key(key.org_id, workflow_id), hold, self._ttl, execution_id)
        if not held.granted:
            return refusal(402, "budget", "BUDGET_HARD_BLOCKED", held.reason, workflow_id=workflow_id)
        return json_response({"decision": "allow", "decision_source": "gateway", "allowed": True, "reason": "ok",
                              "workflow_id": workflow_id, "status": workflow["status"], "remaining_usd": remaining,
                              "execution_id": execution_id, "reservation_id": execution_id,
                              "remaining_budget_cents": None if remaining is None else round(remaining * 100)})

    async def check(self, request: web.Request, key: ApiKey, req: SdkGate) -> web.Response:
        """Legacy, advisory: no scope check (never a 403), no reservation. A workflow-bound key
        asking about another workflow is answered as for an unknown one: nothing is revealed."""
        workflow_id = req.workflow_id or request.headers.get(WORKFLOW_HEADER) or key.workflow_id
        if key.workflow_id is not None and workflow_id != key.workflow_id:
            workflow_id = None
        workflow = await self.store.workflow(workflow_id, key.org_id) if workflow_id else None
        if workflow is None:
            return json_response({"allowed": True, "advisory": True, "reason": "unknown workflow"})
        cost = req.estimated_cost_usd or 0.0
        ok = workflow["status"] == "active" and (workflow["remaining_usd"] is None
                                                 or cost <= workflow["remaining_usd"] + 1e-12)
        return json_response({"allowed": ok, "advisory": True, "status": workflow["status"],
                              "remaining_usd": workflow["remaining_usd"]})

    async def execute(self, request: web.Request, key: ApiKey, req: SdkExecute) -> web.Response:
        hold = None
        if req.execution_id is not None:
            hold = await self.store.reservation_by_execution(req.execution_id)
            if hold is not None and hold["org_id"] != key.org_id:
                hold = None
        workflow_id = self._workflow_id(request, key, req.workflow_id or (hold["workflow_id"] if hold else None))
        tool = req.tool or (req.tools[0] if req.tools else None)
        if workflow_id is None:
            return await self._execute_unbound(key, req, tool)
        workflow = await self._workflow(key, workflow_id)
        cost = req.estimated_cost_usd or 0.0
        common = {"workflow_id": workflow_id, "model": req.model, "tool": tool, "container": req.container,
                  "cost": cost, "api_key_id": key.id}
        release = hold["id"] if hold is not None and hold["status"] == "held" else None
        if workflow["status"] != "active":
            reason = f"workflow is {workflow['status']}"
            await self._decided(key, False, reason, None, common, release)
            return self._halt(workflow, on_execute=True)
        subject = policies.Subject(workflow_id, (req.container,) if req.container else (), req.model, tool, cost)
        decision = await policies.evaluate(await self.store.policies(key.org_id), subject,
                                           self.store.rate_counter(key.org_id))
        if decision.action == "require_approval":
            outcome = await self._approval(key, req, decision, common, release)
            if isinstance(outcome, web.Response):
                return outcome
            decision = outcome
        if not decision.allowed:
            execution_id = await self._decided(key, False, decision.reason, decision.policy_id, common, release)
            return refusal(403, "denied", "TOOL_BLOCKED", decision.reason, workflow_id=workflow_id,
                           policy_id=decision.policy_id, execution_id=execution_id, tool_name=tool)
        reservation = None
        if cost > 0 or hold is None:
            reservation = await self.store.reserve(wf_key(key.org_id, workflow_id), cost, self._ttl, None)
            if not reservation.granted:
                execution_id = await self._decided(key, False, reservation.reason, decision.policy_id, common, release)
                return refusal(402, "budget", "BUDGET_HARD_BLOCKED", reservation.reason, workflow_id=workflow_id,
                               remaining_usd=reservation.remaining_usd, execution_id=execution_id)
        if reservation is not None:
            reservation_id = reservation.reservation_id
        else:
            assert hold is not None  # no new reservation only when a hold was found above
            reservation_id = hold["id"]
        execution_id = await self._decided(key, True, decision.reason, decision.policy_id,
                                           {**common, "reservation_id": reservation_id}, None)
        if reservation is not None:
            remaining = reservation.remaining_usd
        else:
            remaining = (await self._workflow(key, workflow_id))["remaining_usd"]
        answer = {"decision": "allow", "decision_source": "gateway", "allowed": True, "reason": decision.reason,
                  "policy_id": decision.policy_id, "execution_id": execution_id, "workflow_id": workflow_id,
                  "reservation_id": reservation_id, "remaining_usd": remaining}
        if hold is not None:
            answer["reservation_id"] = req.execution_id  # the SDK keeps the id /gate minted
        if reservation is not None:
            answer["reservation_expires_at"] = reservation.expires_at
        return json_response(answer)

    async def _execute_unbound(self, key: ApiKey, req: SdkExecute, tool: str | None) -> web.Response:
        """A key bound to no workflow, and no X-Workflow-Id: no budget or kill switch applies,
        the org's policies still do (as the SDK warns, such a key is only partly governed)."""
        subject = policies.Subject(None, (req.container,) if req.container else (), req.model, tool, 0.0)
        decision = await policies.evaluate(await self.store.policies(key.org_id), subject,
                                           self.store.rate_counter(key.org_id))
        common = {"workflow_id": None, "model": req.model, "tool": tool, "container": req.container,
                  "cost": 0.0, "api_key_id": key.id}
        if decision.action == "require_approval":
            outcome = await self._approval(key, req, decision, common, None)
            if isinstance(outcome, web.Response):
                return outcome
            decision = outcome
        execution_id = await self._decided(key, decision.allowed, decision.reason, decision.policy_id, common, None)
        if not decision.allowed:
            return refusal(403, "denied", "TOOL_BLOCKED", decision.reason, policy_id=decision.policy_id,
                           execution_id=execution_id, tool_name=tool)
        return json_response({"decision": "allow", "decision_source": "gateway", "allowed": True,
                              "reason": decision.reason, "policy_id": decision.policy_id,
                              "execution_id": execution_id, "workflow_id": None})

    async def _decided(self, key: ApiKey, allowed: bool, reason: str, policy_id: str | None,
                       common: dict[str, Any], release: str | None, action: str | None = None,
                       **audited: Any) -> str:
        """Record the decision in the executions and the audit log; a refused call's hold goes."""
        if release is not None:
            await self.store.release(release)
        execution_id = await self.store.record_execution(key.org_id, "execute", allowed, reason,
                                                         policy_id=policy_id, **common)
        action = action or ("execution.allowed" if allowed else "execution.denied")
        await self.store.audit(key.org_id, f"key:{key.id}", action, "execution", execution_id,
                               after={"workflow_id": common["workflow_id"], "tool": common["tool"],
                                      "model": common["model"], "reason": reason, "policy_id": policy_id,
                                      **audited})
        return execution_id

    async def _approval(self, key: ApiKey, req: SdkExecute, decision: policies.Decision, common: dict[str, Any],
                        release: str | None) -> policies.Decision | web.Response:
        """A policy asks for a person (approvals.py). Without an `approval_id`: a pending approval
        is written and the SDK told to wait for it. With one (the SDK's re-check once approved):
        the call goes on as allowed if that approval is good for this very execution, once;
        otherwise `require_approval` again, which the SDK raises as its replay-rejected error."""
        if self.approvals is None:
            return policies.Decision(False, decision.policy_id, f"{decision.reason} (approvals are not served)")
        if req.approval_id is not None:
            refused = await self.approvals.use(key, req.approval_id, req.execution_id, common["tool"],
                                               common["workflow_id"])
            if refused is None:
                return policies.Decision(True, decision.policy_id, f"approved ({req.approval_id})")
            await self._decided(key, False, refused, decision.policy_id, common, release,
                                approval_id=req.approval_id)
            return json_response({"decision": "require_approval", "decision_source": "gateway", "allowed": False,
                                  "reason": refused, "explanation": refused, "approval_id": req.approval_id,
                                  "error_code": "APPROVAL_NOT_ACCEPTED", "workflow_id": common["workflow_id"],
                                  "policy_id": decision.policy_id})
        record_id = await self.store.record_execution(key.org_id, "execute", False, "awaiting approval",
                                                      policy_id=decision.policy_id, **common)
        approval = await self.approvals.ask(
            key, execution_id=req.execution_id or record_id, record_id=record_id,
            workflow_id=common["workflow_id"], tool=common["tool"], model=common["model"],
            policy_id=decision.policy_id, reason=decision.reason, rule=decision.approval)
        await self.store.audit(key.org_id, f"key:{key.id}", "execution.require_approval", "execution", record_id,
                               after={"workflow_id": common["workflow_id"], "tool": common["tool"],
                                      "model": common["model"], "reason": decision.reason,
                                      "policy_id": decision.policy_id, "approval_id": approval["id"],
                                      "execution_id": approval["execution_id"]})
        return json_response({
            "decision": "require_approval", "decision_source": "gateway", "allowed": False,
            "reason": decision.reason, "explanation": decision.reason, "explanations": [decision.reason],
            "approval_id": approval["id"], "approval_timeout_seconds": approval["timeout_seconds"],
            "approval_expires_at": approval["expires_at"], "execution_id": approval["execution_id"],
            "reservation_id": approval["execution_id"], "workflow_id": common["workflow_id"],
            "policy_id": decision.policy_id, "tool_name": common["tool"]})

    # -- usage ----------------------------------------------------------------------------------

    async def _record(self, request: web.Request, key: ApiKey, event: SdkTrackEvent) -> dict[str, Any] | None:
        workflow_id = self._workflow_id(request, key, event.workflow_id)
        if workflow_id is None:
            return None
        cost = event.cost_usd
        metadata = event.metadata or {}
        if cost is None and isinstance(metadata.get("cost_usd"), (int, float)) and metadata["cost_usd"] >= 0:
            cost = float(metadata["cost_usd"])
        if cost is None:
            inp, out = event.input_tokens, event.output_tokens
            if inp is None and out is None:
                inp, out = event.tokens or 0, 0
            cost = self.price(event.model, inp or 0, out or 0)
        reservation_id = event.reservation_id
        if reservation_id is not None and not reservation_id.startswith("res_"):
            hold = await self.store.reservation_by_execution(reservation_id)
            reservation_id = hold["id"] if hold is not None and hold["org_id"] == key.org_id else None
        if event.type in QUIET_EVENTS:
            return {"event_id": None, "workflow": None}
        if event.type or event.tool_name:
            metadata = {**metadata, **({"type": event.type} if event.type else {}),
                        **({"tool_name": event.tool_name} if event.tool_name else {})}
        record = {"workflow_id": workflow_id, "cost_usd": cost, "model": event.model,
                  "input_tokens": event.input_tokens if event.input_tokens is not None else event.tokens,
                  "output_tokens": event.output_tokens, "latency_ms": event.latency_ms,
                  "metadata": metadata or None, "reservation_id": reservation_id}
        tracked = await self.store.track(key.org_id, record, key.id)
        await self._after_spend(key.org_id, tracked["workflow"], cost)
        return tracked

    async def track(self, request: web.Request, key: ApiKey, event: SdkTrackEvent) -> web.Response:
        if self._workflow_id(request, key, event.workflow_id) is None:
            raise ApiError(400, f"workflow_id: Field required (in the body, {WORKFLOW_HEADER},"
                                " or a workflow-bound key)")
        out = await self._record(request, key, event)
        return json_response({"tracked": True, "status": "ok", **(out or {})})

    async def track_batch(self, request: web.Request, key: ApiKey, batch: SdkTrackBatch) -> web.Response:
        per_event = all(event.event_id for event in batch.events)  # the SDK's batches name each event
        rejected: list[dict[str, Any]] = []
        for event in batch.events:  # scope check before anything is written
            try:
                self._workflow_id(request, key, event.workflow_id)
            except ApiError as exc:
                if not per_event:
                    raise
                rejected.append({"event_id": event.event_id, "reason": "workflow_out_of_scope",
                                 "message": exc.message})
        refused = {r["event_id"] for r in rejected}
        recorded, accepted, ids = 0, [], []
        for event in batch.events:
            if event.event_id in refused:
                continue
            out = await self._record(request, key, event)
            if out is not None and out["event_id"] is not None:
                recorded += 1
                ids.append(out["event_id"])
            accepted.append(event.event_id or (out or {}).get("event_id") or str(uuid.uuid4()))
        return json_response({"tracked": recorded, "event_ids": ids, "accepted_event_ids": accepted,
                              "rejection_details": rejected})

    async def cancel(self, request: web.Request, key: ApiKey, req: SdkCancel) -> web.Response:
        hold = await self.store.reservation_by_execution(req.execution_id)
        if hold is None or hold["org_id"] != key.org_id:
            raise not_found("EXECUTION_NOT_FOUND", f"execution {req.execution_id!r} not found",
                            execution_id=req.execution_id)
        released = hold["status"] == "held"
        if released:
            await self.store.release(hold["id"])
        return json_response({"status": "cancelled", "execution_id": req.execution_id, "released": released})

    async def heartbeat(self, request: web.Request, key: ApiKey, req: SdkHeartbeat) -> web.Response:
        return json_response({"status": "ok", "chain_id": req.chain_id, "last_active": time.time()})

    async def status(self, request: web.Request) -> web.Response:
        """The SDK's poll fallback (GET, X-API-Key; the SDK does not sign it)."""
        key = await self.auth.sdk(request, b"", allow_unsigned=True)
        workflow_id = self._workflow_id(request, key, request.match_info["workflow_id"])
        assert workflow_id is not None  # the path names one
        workflow = await self._workflow(key, workflow_id)
        rate = await self.store.burn_rate(key.org_id, workflow_id)
        return json_response({"workflow_id": workflow_id, "state": STATES[workflow["status"]],
                              "status": workflow["status"], "version": self.hub.current_seq(key.org_id),
                              "reason": None if workflow["status"] == "active" else f"workflow is {workflow['status']}",
                              "updated_at": workflow["updated_at"], "current_cost": workflow["spent_usd"],
                              "budget_usd": workflow["budget_usd"], "remaining_usd": workflow["remaining_usd"],
                              "rate_per_minute": rate * 60})
