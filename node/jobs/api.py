"""The Infernet node's REST surface (seed 003 plus the rest of what the Infernet node serves):
`GET /health`, `GET /info`, `POST /api/jobs`, `POST /api/jobs/batch`, `POST /api/jobs/stream`,
`GET /api/jobs`, `PUT /api/status`, and `GET /api/containers` (per-container state).

Errors are `{"error": str[, "params": object]}` with a 4xx status; nothing a client sends
produces a 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiMapping

from node import __version__
from node.containers.config import JobsConfig
from node.containers.manager import ContainerManager
from node.errors import DomainError
from node.jobs.models import DelegatedSubscriptionRequest, Job, JobRequest, StatusUpdate, over_time_limit
from node.jobs.orchestrator import Orchestrator
from node.jobs.store import JobStore
from node.jobs.stream import ABORTED, STALLED
from node.logs import get_logger
from node.server.clients import client_of, limit_key
from node.server.fastlane import LaneHandler, LaneRequest
from node.server.http import ApiError, ApiFamily, client_ip, json_response, parse_json, parse_model, read_json
from node.server.openapi import accepts, body

log = get_logger(__name__)

WORKFLOW_HEADER = "X-Workflow-Id"

NO_CHAIN = {"enabled": False, "address": ""}  # /api/info's chain block with the chain off (Infernet: a str)


class OnChain(Protocol):
    """What the jobs API asks of the chain subsystem when it is mounted: /api/info's chain block,
    the on-chain work pending, and delegated subscriptions (POST /api/jobs with a signature)."""

    def info(self) -> dict[str, Any]: ...

    def pending(self) -> int: ...

    async def delegated(self, request: DelegatedSubscriptionRequest, client_ip: str | None) -> dict[str, Any]: ...


class OperatorCheck(Protocol):
    """Decides whether a request comes from the node's operator (node/observe/api.py's
    OperatorAccess): returns, or raises ApiError for anyone else."""

    def check(self, request: web.Request) -> None: ...


# The Infernet node's API (its error shape is the default for paths no family owns).
FAMILY = ApiFamily("jobs", ("/api/jobs", "/api/status", "/api/containers", "/info", "/health"))


def _bool_param(query: Mapping[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ApiError(400, f"{name}: expected true or false, got {value!r}")


MAX_WAIT = 30.0


def _wait_param(query: Mapping[str, str]) -> float:
    """`wait=<seconds>` (our extension, ignored by the Infernet node): hold the answer until the
    listed jobs are done or the time is up, so a client needs one poll instead of many."""
    value = query.get("wait")
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise ApiError(400, f"wait: expected seconds, got {value!r}") from None
    if not 0 <= seconds <= MAX_WAIT:
        raise ApiError(400, f"wait: must be between 0 and {MAX_WAIT:g} seconds")
    return seconds


class JobsApi:
    def __init__(
        self,
        orchestrator: Orchestrator,
        store: JobStore,
        containers: ContainerManager,
        *,
        max_batch: int,
        status_allowed_ips: list[str],
        onchain: Callable[[], OnChain | None] = lambda: None,
        ready: Callable[[], bool] = lambda: True,
        limits: JobsConfig | None = None,
        operator: OperatorCheck | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._store = store
        self._containers = containers
        self._max_batch = max_batch
        self._status_networks = [ipaddress.ip_network(n, strict=False) for n in status_allowed_ips]
        self._onchain = onchain  # the chain subsystem, when mounted (it is mounted after jobs)
        self._ready = ready
        self._limits = limits if limits is not None else JobsConfig()
        self._operator = operator
        self._streams: dict[str, int] = {}  # open stream responses per client address

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/info", self.info),
            web.get("/api/containers", self.container_states),
            web.post("/api/jobs", self.create_job),
            web.post("/api/jobs/batch", self.create_batch),
            web.post("/api/jobs/stream", self.create_stream),
            web.get("/api/jobs", self.get_jobs),
            web.put("/api/status", self.put_status),
        ]

    # -- info ----------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """Infernet's probe: healthy once the node has started (its containers answered, or
        startup_wait passed) and until it stops."""
        if self._ready():
            return json_response({"status": "healthy"})
        return json_response({"status": "unhealthy"}, 503)

    async def info(self, request: web.Request) -> web.Response:
        containers = [
            {"id": e.id, "description": e.description, "external": e.external, "image": e.image}
            for e in self._orchestrator.endpoints.values()
        ]
        chain = self._onchain()
        return json_response(
            {
                "version": __version__,
                "containers": containers,
                "pending": {
                    "offchain": self._store.count_running() - self._store.count_running("chain"),
                    "onchain": chain.pending() if chain is not None else 0,
                },
                "chain": chain.info() if chain is not None else NO_CHAIN,
            }
        )

    async def container_states(self, request: web.Request) -> web.Response:
        """Each container's state. Credentials in URLs are never shown; the URLs themselves (the
        node's internal addresses) only to the operator."""
        operator = self._is_operator(request)
        return json_response([_redacted(s.public(), operator) for s in self._containers.states.values()])

    def _is_operator(self, request: web.Request) -> bool:
        if self._operator is None:
            return False
        try:
            self._operator.check(request)
        except ApiError:
            return False
        return True

    # -- jobs ----------------------------------------------------------------------------

    def _accepting(self) -> None:
        if not self._ready():
            raise ApiError(503, "Node is starting; try again shortly")

    async def _create(self, body: Any, ip: str | None, workflow_id: str | None) -> dict[str, Any]:
        """Create one job from a parsed body; returns the wire answer or raises ApiError."""
        if isinstance(body, dict) and "subscription" in body:
            delegated = parse_model(DelegatedSubscriptionRequest, body)
            chain = self._onchain()
            if chain is None:
                raise ApiError(400, "Chain is not enabled on this node; delegated subscriptions are refused")
            return await chain.delegated(delegated, ip)
        job_request = parse_model(JobRequest, body)
        job = await self._orchestrator.submit(
            job_request.containers,
            job_request.data,
            client=ip or "unknown",
            requires_proof=job_request.requires_proof,
            workflow_id=workflow_id,
            client_ip=ip,
        )
        return {"id": job.id}

    @accepts(JobRequest)
    async def create_job(self, request: web.Request) -> web.Response:
        self._accepting()
        return json_response(await self._create(await read_json(request), client_ip(request),
                                                request.headers.get(WORKFLOW_HEADER)))

    def lane_routes(self) -> dict[tuple[str, str], LaneHandler]:
        """The routes the fast lane (node/server/fastlane.py) may serve: the same answers as
        `create_job` and `get_jobs`, for its plain requests (never one with X-Workflow-Id)."""
        return {("POST", "/api/jobs"): self._lane_create, ("GET", "/api/jobs"): self._lane_jobs}

    async def _lane_create(self, request: LaneRequest) -> Any:
        self._accepting()
        return await self._create(parse_json(request.body), request.client.ip, None)

    async def _lane_jobs(self, request: LaneRequest) -> Any:
        return await self._jobs(request.query, request.client.ip)

    async def create_batch(self, request: web.Request) -> web.Response:
        self._accepting()
        body = await read_json(request)
        if not isinstance(body, list):
            raise ApiError(400, "Expected a list")
        if len(body) > self._max_batch:
            raise ApiError(400, f"Batch too large: {len(body)} requests, at most {self._max_batch}")
        links = sum(len(c) for item in body if isinstance(item, dict) and isinstance(c := item.get("containers"), list))
        if links > self._limits.max_links_per_request:
            raise ApiError(400, f"Batch too large: {links} container calls, at most "
                           f"{self._limits.max_links_per_request} (jobs.max_links_per_request)",
                           {"max_links_per_request": self._limits.max_links_per_request})
        answers: list[dict[str, Any]] = []
        for item in body:
            try:
                answers.append(await self._create(item, client_ip(request), request.headers.get(WORKFLOW_HEADER)))
            except (ApiError, DomainError) as exc:  # each item answered as POST /api/jobs would refuse it
                answers.append({"error": exc.message, **({"params": exc.params} if exc.params else {})})
        return json_response(answers)

    @accepts(JobRequest)
    async def create_stream(self, request: web.Request) -> web.StreamResponse:
        self._accepting()
        body = await read_json(request)
        if isinstance(body, dict) and "subscription" in body:
            raise ApiError(405, "Streaming only supported for OffchainJob requests.")
        job_request = parse_model(JobRequest, body)
        if len(job_request.containers) != 1:
            raise ApiError(400, "Streaming runs exactly one container", {"containers": job_request.containers})
        ip = client_ip(request)
        holder = limit_key(ip)  # an IPv4 address, or an IPv6 client's /64
        cap = self._limits.max_streams_per_client
        if cap and self._streams.get(holder, 0) >= cap:
            raise ApiError(429, "Too many open streams from this client; try again when one has finished",
                           {"max_streams_per_client": cap}, {"Retry-After": "1"})
        self._streams[holder] = self._streams.get(holder, 0) + 1
        try:
            return await self._relay(request, job_request, ip)
        finally:
            if (left := self._streams[holder] - 1) > 0:
                self._streams[holder] = left
            else:
                del self._streams[holder]

    async def _relay(self, request: web.Request, job_request: JobRequest, ip: str | None) -> web.StreamResponse:
        job, chunks = await self._orchestrator.stream(
            job_request.containers[0],
            job_request.data,
            client=ip or "unknown",
            client_ip=ip,
            workflow_id=request.headers.get(WORKFLOW_HEADER),
        )
        # Every write may wait for the client to read, for at most jobs.stream_write_timeout,
        # and the client has that long after the job's time limit to take the rest: a client
        # that stops reading is dropped (the container was never waiting on it).
        timeout = self._limits.stream_write_timeout
        whole = asyncio.timeout(self._limits.max_job_seconds + timeout)
        reason: str | None = ABORTED  # unless the client receives everything
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        try:
            async with whole:
                async with asyncio.timeout(timeout):
                    await response.prepare(request)
                    await response.write(f"{job.id}\n".encode())
                async for chunk in chunks:
                    async with asyncio.timeout(timeout):
                        await response.write(chunk)
                async with asyncio.timeout(timeout):
                    await response.write_eof()
            reason = None
        except TimeoutError:
            reason = over_time_limit(self._limits.max_job_seconds) if whole.expired() else STALLED
            log.info("jobs.stream_client_dropped", job_id=job.id, client=ip, reason=reason)
            if request.transport is not None:
                request.transport.abort()  # what it did not read is dropped with the connection
        finally:
            # A client that did not receive the whole output fails the job (not charged). Shielded:
            # the handler is cancelled when its client disconnects (if the server cancels handlers),
            # and the job must end all the same.
            await asyncio.shield(chunks.close(reason))
        return response

    async def get_jobs(self, request: web.Request) -> web.Response:
        return json_response(await self._jobs(request.query, client_ip(request)))

    async def _jobs(self, query: MultiMapping[str], ip: str | None) -> Any:
        """GET /api/jobs: the jobs named by `id=` (several allowed), else the client's job ids."""
        client = ip or "unknown"
        ids = query.getall("id", [])
        if ids:
            intermediate = bool(_bool_param(query, "intermediate"))
            # Without wait=, a poll for a running job holds briefly (jobs.poll_hold) for its
            # commit: a polling client needs about one poll per job instead of two or more, and
            # an answer that would say "running" comes at most the hold later, in the same shape.
            wait = _wait_param(query) if "wait" in query else self._limits.poll_hold
            if wait:
                await self._store.wait_finished(ids, wait)
            jobs = await self._store.get_many(ids, client=client)
            return [job.to_wire(intermediate) for job in jobs]
        return await self._store.list_ids(client, _bool_param(query, "pending"))

    async def _reporter_json(self, request: web.Request) -> Any:
        """Only the status networks may report (403 before the body is judged); the reporter's
        address is kept as request["reporter"]. Containers call the node directly: a report
        that came through a proxy (a trusted one, or a forwarding header from an undeclared one
        on the host, which would make every outsider a loopback peer) is refused."""
        client = client_of(request)
        try:
            address = ipaddress.ip_address(client.ip or "")
        except ValueError:
            address = None
        if address is None or not client.direct or not any(address in net for net in self._status_networks):
            raise ApiError(403, "Unauthorized")
        request["reporter"] = address
        return await read_json(request)

    @body(StatusUpdate, read=_reporter_json)
    async def put_status(self, request: web.Request, update: StatusUpdate) -> web.Response:
        ip, address = client_ip(request), request["reporter"]
        existing = self._store.cached(update.id)
        if existing is None:
            found = await self._store.get_many([update.id])
            existing = found[0] if found else None
        if existing is not None:
            # A finished job is a fact a client may already have read: never rewritten. A
            # running one is reported on only by its own containers (or the host itself).
            if not existing.pending:
                raise ApiError(409, "Job already finished; its result cannot be changed", {"id": update.id})
            if str(address) not in self._reporters(existing.containers):
                raise ApiError(403, "Only the job's containers may report its status", {"id": update.id})
        job = existing or Job(id=update.id, client=ip or "unknown", containers=update.containers, source="status")
        if update.status == "running":
            job.status = "running"
        else:
            last = update.containers[-1]
            result = {"container": last, "output": update.data} if update.status == "success" else {
                "container": last, "error": update.data if isinstance(update.data, str) else "failed"}
            job.finish([*job.intermediate, result])
        await self._store.save(job)
        return json_response(None)

    def _reporters(self, containers: list[str]) -> set[str]:
        """Addresses allowed to report on a job of these containers: each container's own
        address (from the URL the node calls it on) and the host's loopback."""
        allowed = {"127.0.0.1", "::1"}
        for cid in containers:
            endpoint = self._orchestrator.endpoints.get(cid)
            host = urlsplit(endpoint.url).hostname if endpoint is not None else None
            if host:
                allowed.add("127.0.0.1" if host == "localhost" else host)
        return allowed


_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")
_URL_KEYS = ("url", "urls")


def _redacted(state: dict[str, Any], operator: bool) -> dict[str, Any]:
    """A container's public state as a caller may see it: no `user:password@` in any string,
    and for anyone but the operator no URL at all (url, published_url, task_urls, ...)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not operator and key.endswith(_URL_KEYS):
            continue
        if isinstance(value, str):
            value = _USERINFO.sub("***@", value)
        elif isinstance(value, list):
            value = [_USERINFO.sub("***@", v) if isinstance(v, str) else v for v in value]
        out[key] = value
    return out

