"""Who may bind a job to a workflow. A job request naming `X-Workflow-Id` spends that workflow's
budget, counts against its rate policies and writes its execution log, so it must carry a
credential of the workflow's org: a gateway API key, HMAC-signed over the request body as the
SDK signs. Without one (or with another org's key) the answer is the same whether the workflow
exists or not, so ids of other tenants cannot be probed. Jobs without the header stay bound by
`gateway.default_workflows` (the node's own sources) or not at all.

A signed job submission acts once per signature: the same bytes again get the first answer,
and a signed stream (`/api/jobs/stream`, whose answer cannot be given twice) claims its
signature, so sending it again is 409 (it once ran and charged the job every time).
"""

from __future__ import annotations

from contextvars import ContextVar

from aiohttp import web

from node.gateway.auth import GatewayAuth
from node.gateway.replay import ReplayGuard
from node.gateway.store import GatewayStore
from node.jobs.api import WORKFLOW_HEADER
from node.logs import get_logger
from node.server.http import ApiError, client_ip

log = get_logger(__name__)

# The org whose key authorised this request's X-Workflow-Id (read by the admission gate, which
# runs inside the same request task).
BOUND_ORG: ContextVar[str | None] = ContextVar("gateway_bound_org", default=None)
JOB_PATHS = ("/api/jobs", "/api/jobs/batch", "/api/jobs/stream")


class JobBinding:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, replay: ReplayGuard) -> None:
        self._store = store
        self._auth = auth
        self._replay = replay

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        workflow_id = request.headers.get(WORKFLOW_HEADER)
        if request.method != "POST" or request.path not in JOB_PATHS or not workflow_id:
            return await handler(request)
        raw = await request.read()
        signature = request.headers.get("X-Signature")
        if "X-API-Key" not in request.headers or signature is None:
            log.warning("gateway.unauthenticated_binding", path=request.path, client=client_ip(request))
            raise ApiError(401, f"{WORKFLOW_HEADER} needs a signed API key of the workflow's org "
                                "(X-API-Key, X-Signature, X-Signature-Timestamp over the body)")
        key = await self._auth.sdk(request, raw)
        if key.workflow_id is not None and key.workflow_id != workflow_id:
            raise ApiError(403, f"API key is scoped to workflow {key.workflow_id!r}")
        if await self._store.workflow(workflow_id, key.org_id) is None:
            raise ApiError(404, f"Unknown workflow {workflow_id!r}", {"workflow_id": workflow_id})
        token = BOUND_ORG.set(key.org_id)
        try:
            guard = self._replay.claim if request.path == "/api/jobs/stream" else self._replay.once
            return await guard(key.id, signature, request.headers["X-Signature-Timestamp"], request.path,
                               lambda: handler(request))
        finally:
            BOUND_ORG.reset(token)
