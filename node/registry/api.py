"""Routes of the task registry (seed 004). Errors: `{"statusCode", "error", "message"}`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from node.registry.models import (
    ConfigCreate,
    ExecutionSubmit,
    InputSubmit,
    LinkTask,
    MaintainerAdd,
    NonceRequest,
    ProjectCreate,
    ProposalSubmit,
    SignRequest,
    TaskCreate,
    VerifyRequest,
)
from node.registry.service import RegistryService
from node.server.http import (
    ApiError,
    ApiFamily,
    RateLimiter,
    bearer_token,
    client_ip,
    json_response,
    parse_digits,
    parse_json,
    read_json,
    too_many_requests,
)
from node.server.openapi import body

PREFIXES = ("/api/auth", "/api/accounts", "/api/tasks", "/api/projects", "/api/intents")
OWNER_ONLY = "You must have owner permissions on this project to link a task."
NO_ROLE = "You have no role in this project"
# What anyone may read of an intent: what a solver needs to bid and to learn who won. The
# execution, the task, the other solvers' proposals and the event log need a role in the project.
PUBLIC_INTENT = ("intentId", "status", "type", "data", "signedProposal", "relayerSignature")


def registry_error(status: int, message: str, params: dict[str, Any] | None) -> dict[str, Any]:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    if params and isinstance(params.get("error"), str):
        reason = params["error"]
    body: dict[str, Any] = {"statusCode": status, "error": reason, "message": message}
    if params and "errors" in params:
        body["details"] = params["errors"]
    return body


FAMILY = ApiFamily("registry", PREFIXES, registry_error)


class RegistryApi:
    def __init__(self, service: RegistryService) -> None:
        self.service = service
        self.store = service.store
        self.input_limiter = RateLimiter(service.config.input_rate_limit)

    def routes(self) -> list[web.RouteDef]:
        t = "/api/tasks/{task_id}"
        p = "/api/projects/{project_id}"
        return [
            web.post("/api/auth/nonce", self.nonce),
            web.post("/api/auth/verify", self.verify),
            web.get("/api/accounts/me", self.me),
            web.post("/api/tasks", self.create_task),
            web.get("/api/tasks", self.list_tasks),
            web.get(t, self.get_task),
            web.post("/api/projects", self.create_project),
            web.get(p, self.get_project),
            web.post(f"{p}/tasks", self.link_task),
            web.delete(f"{p}/tasks/{{task_ref}}", self.unlink_task),
            web.post(f"{p}/maintainers", self.add_maintainer),
            web.delete(f"{p}/maintainer/{{address}}", self.remove_maintainer),
            web.delete(f"{p}/maintainers/{{address}}", self.remove_maintainer),
            web.get(f"{p}/account", self.project_account),
            web.post(f"{p}/tasks/{{task_id}}/configs", self.create_config),
            web.get(f"{p}/tasks/{{task_id}}/configs/{{config_id}}", self.get_config),
            web.delete(f"{p}/tasks/{{task_id}}/configs/{{config_id}}", self.delete_config),
            web.post(f"{t}/inputs", self.submit_inputs),
            web.post(f"{t}/executions", self.submit_execution),
            web.get(f"{t}/executions", self.list_executions),
            web.get(f"{t}/executions/{{execution_id}}", self.get_execution),
            web.get(f"{t}/executions/{{execution_id}}/intents/{{intent_id}}", self.get_execution_intent),
            web.get("/api/intents/{intent_id}", self.get_intent),
            web.post("/api/intents/{intent_id}/proposals", self.propose),
            web.post("/api/intents/{intent_id}/sign", self.sign),
        ]

    async def _account(self, request: web.Request) -> str:
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, "Missing bearer token")
        address = await self.store.token_address(token)
        if address is None:
            raise ApiError(401, "Invalid or expired token")
        return address

    async def _maybe_account(self, request: web.Request) -> str | None:
        """The caller's account when a bearer is sent (a wrong one is still a 401), else None."""
        return await self._account(request) if "Authorization" in request.headers else None

    async def _input_json(self, request: web.Request) -> Any:
        """POST …/inputs is open to relayers without a session: a per-IP rate limit, then at most
        `registry.max_input_bytes` read (the whole body is never buffered past it)."""
        wait = self.input_limiter.hit(client_ip(request), "POST", "registry.inputs")  # the client, not a proxy
        if wait is not None:
            raise too_many_requests(wait)
        limit = self.service.config.max_input_bytes
        too_large = ApiError(413, f"Request body too large (registry.max_input_bytes: {limit})")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        raw = bytearray()
        async for chunk in request.content.iter_chunked(65536):
            raw += chunk
            if len(raw) > limit:
                raise too_large
        return parse_json(bytes(raw))

    # -- auth -------------------------------------------------------------------------------------

    async def _json_or_empty(self, request: web.Request) -> Any:
        return (await read_json(request)) if (await request.read()).strip() else {}

    async def _authed_json(self, request: web.Request) -> Any:
        """The bearer is checked before the body is read; its account is kept as request["account"]."""
        request["account"] = await self._account(request)
        return await read_json(request)

    @staticmethod
    def _owner_json(refusal: str):
        """A reading step: only the project's owner (403 `refusal`) gets the body judged."""
        async def read(self: RegistryApi, request: web.Request) -> Any:
            account = await self._account(request)
            await self.service.require_owner(request.match_info["project_id"], account, refusal)
            return await read_json(request)

        return read

    async def _settler_json(self, request: web.Request) -> Any:
        """Only a project owner or maintainer of the intent's task may settle it (401/404/403 before
        the body, which may be empty, is judged)."""
        account = await self._account(request)
        intent = await self.service.intent_or_404(request.match_info["intent_id"])
        execution = await self.store.execution(intent["taskId"], intent["executionId"])
        config = await self.store.config(execution["configId"]) if execution else None
        if config is None or await self.store.role(config["projectId"], account) is None:
            raise ApiError(403, "You must be the project owner or a maintainer to settle its intents.")
        return (await read_json(request)) if await request.read() else {}

    @body(NonceRequest, read=_json_or_empty)
    async def nonce(self, request: web.Request, body: NonceRequest) -> web.Response:
        """Issue a single-use sign-in nonce; with `address`, also the EIP-4361 message to sign."""
        return json_response(await self.service.issue_nonce(body.address))

    @body(VerifyRequest)
    async def verify(self, request: web.Request, body: VerifyRequest) -> web.Response:
        return json_response(await self.service.verify(body.nonce, body.signature, body.message))

    async def me(self, request: web.Request) -> web.Response:
        account = await self.store.account(await self._account(request))
        return json_response(account)

    # -- tasks ------------------------------------------------------------------------------------

    @body(TaskCreate, read=_authed_json)
    async def create_task(self, request: web.Request, body: TaskCreate) -> web.Response:
        task = await self.store.create_task(request["account"], body.cid, body.version, body.name, body.description)
        if task is None:
            raise ApiError(409, f"A task named '{body.name}' (version {body.version}) already exists for this user.")
        task.pop("creator")
        return json_response(task, 201)

    async def list_tasks(self, request: web.Request) -> web.Response:
        return json_response(await self.store.tasks_by(await self._account(request)))

    async def get_task(self, request: web.Request) -> web.Response:
        task = await self.store.task(request.match_info["task_id"])
        if task is None:
            raise ApiError(404, f"Task {request.match_info['task_id']} not found")
        task.pop("version")
        task.pop("description")
        return json_response(task)

    # -- projects -----------------------------------------------------------------------------------

    @body(ProjectCreate, read=_authed_json)
    async def create_project(self, request: web.Request, body: ProjectCreate) -> web.Response:
        project = await self.store.create_project(request["account"], body.name)
        project.pop("owner")
        return json_response(project, 201)

    async def get_project(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        project = await self.service.project_or_404(request.match_info["project_id"])
        if not await self.service.can_read(project["projectId"], account):
            raise ApiError(403, NO_ROLE)
        return json_response(project)

    @body(LinkTask, read=_owner_json(OWNER_ONLY))
    async def link_task(self, request: web.Request, body: LinkTask) -> web.Response:
        project_id = request.match_info["project_id"]
        if await self.store.task(body.taskId) is None:
            raise ApiError(404, f"Task {body.taskId} not found")
        await self.store.link(project_id, body.taskId)
        return json_response(await self.store.project(project_id))

    async def unlink_task(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        project_id, ref = request.match_info["project_id"], request.match_info["task_ref"]
        project = await self.service.require_owner(project_id, account, OWNER_ONLY)
        task_ids = [t for t in project["tasks"] if t == ref]
        if not task_ids:  # the seed names the path parameter task_cid: accept a CID too
            for linked in project["tasks"]:
                task = await self.store.task(linked)
                if task and task["cid"] == ref:
                    task_ids.append(linked)
        if not task_ids:
            raise ApiError(404, f"Task {ref} is not linked to the project")
        for task_id in task_ids:
            await self.store.unlink(project_id, task_id)
        return json_response(await self.store.project(project_id))

    @body(MaintainerAdd, read=_owner_json("You must have owner permissions on this project to add a maintainer."))
    async def add_maintainer(self, request: web.Request, body: MaintainerAdd) -> web.Response:
        """Needs the owner's session and the owner's signature (single use)."""
        project_id = request.match_info["project_id"]
        return json_response(await self.service.add_maintainer(project_id, body.maintainer, body.signature,
                                                               body.nonce, body.deadline), 201)

    async def remove_maintainer(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        project_id, address = request.match_info["project_id"], request.match_info["address"]
        await self.service.require_owner(project_id, account, "You must have owner permissions on this project to "
                                                              "remove a maintainer.")
        role = await self.store.remove_maintainer(project_id, address)
        if role is None:
            raise ApiError(404, f"Maintainer {address} does not belong to the project")
        return json_response({"projectId": project_id, "maintainer": role["account"], "signature": role["signature"],
                              "createdAt": role["createdAt"]})

    async def project_account(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        project_id = request.match_info["project_id"]
        await self.service.project_or_404(project_id)
        role = await self.store.role(project_id, account)
        if role is None:
            raise ApiError(403, "You have no role in this project")
        role.pop("signature")
        return json_response(role)

    # -- configs ----------------------------------------------------------------------------------------

    @body(ConfigCreate)
    async def create_config(self, request: web.Request, body: ConfigCreate) -> web.Response:
        config = await self.service.create_config(request.match_info["project_id"], request.match_info["task_id"], body)
        return json_response(config, 201)

    async def _config(self, request: web.Request) -> dict[str, Any]:
        config = await self.store.config(request.match_info["config_id"])
        if config is None or config["projectId"] != request.match_info["project_id"] \
                or config["taskId"] != request.match_info["task_id"]:
            raise ApiError(404, f"Config {request.match_info['config_id']} does not belong to the project")
        return config

    async def get_config(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        config = await self._config(request)
        if not await self.service.can_read(config["projectId"], account):
            raise ApiError(403, NO_ROLE)
        return json_response(config)

    async def delete_config(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        config = await self._config(request)
        role = await self.store.role(config["projectId"], account)
        if role is None:
            raise ApiError(403, "You must be the project owner or a maintainer to delete a config.")
        await self.store.deprecate_config(config["configId"])
        return json_response({k: config[k] for k in ("projectId", "taskId", "configId", "signature", "createdAt",
                                                     "data")})

    # -- inputs, executions, intents -------------------------------------------------------------------

    @body(InputSubmit, read=_input_json)
    async def submit_inputs(self, request: web.Request, body: InputSubmit) -> web.Response:
        """A relayer's signature or a project member's bearer; rate-limited and size-capped."""
        account = await self._maybe_account(request)
        return json_response(await self.service.submit_inputs(request.match_info["task_id"], body, account), 201)

    @body(ExecutionSubmit)
    async def submit_execution(self, request: web.Request, body: ExecutionSubmit) -> web.Response:
        result = await self.service.submit_execution(request.match_info["task_id"], body)
        return json_response(result, 201 if result["created"] else 200)

    async def list_executions(self, request: web.Request) -> web.Response:
        """Only the executions of configs in projects where the caller has a role."""
        account = await self._account(request)
        page, limit = parse_digits(request.query.get("page", "0")), parse_digits(request.query.get("limit", "20"))
        if page is None or limit is None or page > 10**9 or not 1 <= limit <= 200:
            raise ApiError(400, "page must be >= 0 and limit between 1 and 200")
        data, total = await self.store.executions(request.match_info["task_id"], page, limit, account)
        return json_response({"data": data, "page": page, "total": total})

    async def _readable_execution(self, request: web.Request, account: str) -> dict[str, Any]:
        """The execution named in the path, if the caller has a role in its config's project
        (else the same 404 as for none: whether it exists is not an outsider's business)."""
        execution = await self.store.execution(request.match_info["task_id"], request.match_info["execution_id"])
        config = await self.store.config(execution["configId"]) if execution else None
        if execution is None or config is None or not await self.service.can_read(config["projectId"], account):
            raise ApiError(404, f"Execution {request.match_info['execution_id']} not found")
        return execution

    async def get_execution(self, request: web.Request) -> web.Response:
        return json_response(await self._readable_execution(request, await self._account(request)))

    async def get_execution_intent(self, request: web.Request) -> web.Response:
        await self._readable_execution(request, await self._account(request))
        intent = await self.service.intent_or_404(request.match_info["intent_id"])
        if intent["executionId"] != request.match_info["execution_id"] or intent["taskId"] != request.match_info["task_id"]:
            raise ApiError(404, f"Intent {request.match_info['intent_id']} not found in this execution")
        return json_response(intent)

    async def get_intent(self, request: web.Request) -> web.Response:
        """Public: what a solver needs (PUBLIC_INTENT); everything with a role in the project."""
        account = await self._maybe_account(request)
        intent = await self.service.intent_or_404(request.match_info["intent_id"])
        if account is not None:
            execution = await self.store.execution(intent["taskId"], intent["executionId"])
            config = await self.store.config(execution["configId"]) if execution else None
            if config is not None and await self.service.can_read(config["projectId"], account):
                return json_response(intent)
        return json_response({k: intent[k] for k in PUBLIC_INTENT})

    @body(ProposalSubmit)
    async def propose(self, request: web.Request, body: ProposalSubmit) -> web.Response:
        return json_response(await self.service.propose(request.match_info["intent_id"], body), 201)

    @body(SignRequest, read=_settler_json)
    async def sign(self, request: web.Request, body: SignRequest) -> web.Response:
        """The node (as relayer) signs the winning proposal; by a project owner or maintainer."""
        return json_response(await self.service.sign_best(request.match_info["intent_id"], body.proposalId))
