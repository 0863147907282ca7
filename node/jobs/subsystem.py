"""The jobs subsystem, the core: the job store, the orchestrator (the one funnel every way work
enters ends in), the Infernet-compatible jobs API and `/resources`.

It is entered first: every other subsystem submits to its orchestrator, so the node puts the
orchestrator and the store into the `Context` the others get (node/subsystem.py). Jobs left
`running` by a previous process are resumed only once the node serves (the containers answer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from node.config import NodeConfig
from node.containers.config import ContainerConfig
from node.containers.manager import ContainerManager, ContainerState
from node.jobs.api import FAMILY, JobsApi
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.jobs.resources import ResourcesApi
from node.jobs.store import JobStore
from node.observe.api import OperatorAccess
from node.storage import Database
from node.subsystem import Context, Mount


def endpoint_for(c: ContainerConfig, state: ContainerState) -> ContainerEndpoint:
    """The orchestrator's view of one configured container in its current state."""
    endpoint = ContainerEndpoint(
        id=c.id,
        url=state.url,
        external=c.external,
        timeout=c.timeout,
        concurrency=c.concurrency,
        bearer=c.bearer.get_secret_value() if c.bearer else None,
        generates_proofs=c.generates_proofs,
        allowed_networks=[ipaddress.ip_network(n, strict=False) for n in c.allowed_ips],
        description=c.description,
        image=state.image,
        retry_dropped=state.retry_dropped,
        idempotent=c.idempotent,
    )
    endpoint.set_urls(state.urls())
    return endpoint


class JobsSubsystem:
    name = "jobs"
    enabled = True  # the core is always on

    def __init__(self, config: NodeConfig, db: Database, containers: ContainerManager) -> None:
        self._config = config
        self._containers = containers
        self.store = JobStore(db)
        self.orchestrator: Orchestrator | None = None  # built by the lifespan (it needs the session)

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {}  # always on: not listed among the optional subsystems

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        config = self._config
        server, jobs = config.server, config.jobs
        reruns = await self.store.start(frozenset(c.id for c in config.containers if c.idempotent))
        client = ContainerClient(max_json_depth=server.max_json_depth, max_output_bytes=jobs.max_output_bytes,
                                 max_stream_bytes=jobs.max_stream_bytes)  # the one way containers are called
        orchestrator = Orchestrator(
            {c.id: endpoint_for(c, self._containers.states[c.id]) for c in config.containers}, client,
            self.store, max_inflight=server.max_inflight_jobs,
            max_inflight_per_client=jobs.max_inflight_per_client, max_job_seconds=jobs.max_job_seconds)
        if ctx.metrics is not None:
            orchestrator.observers.append(ctx.metrics)
        self.orchestrator = orchestrator
        token = server.admin_token
        api = JobsApi(orchestrator, self.store, self._containers, max_batch=server.max_batch,
                      status_allowed_ips=server.status_allowed_ips, onchain=ctx.onchain, ready=ctx.started,
                      limits=jobs, operator=OperatorAccess(token.get_secret_value() if token else None))
        resources = ResourcesApi(lambda: orchestrator.endpoints, ctx.session, server.max_json_depth)

        @asynccontextmanager
        async def resume() -> AsyncIterator[None]:
            orchestrator.resume(reruns)  # jobs a previous process left running, once containers answer
            yield

        try:
            yield Mount(self.name, family=FAMILY, routes=[*api.routes(), *resources.routes()], lane=api.lane_routes(),
                        serving=[resume])
        finally:
            await client.close()  # its kept-alive connections to the containers
