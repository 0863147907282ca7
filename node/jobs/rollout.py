"""Containers changed by a config reload, applied to a serving node without dropping a job.

The reload plan (node/reload.py) says which containers were added, retuned (only how the node
calls them changed), rolled (the container itself changed) or removed; this applies it to the
orchestrator's endpoints and the container manager, one container at a time:

- added: started, and serving once it answers;
- retuned: a new endpoint takes the calls at once, the old one's calls finish;
- rolled: the successor starts beside the old container and takes the calls once it answers,
  the old one goes once its calls are done; on a fixed host port both cannot run at once, so the
  old one is retired first (calls naming it are refused, 400, until the successor answers);
- removed: new jobs naming it are refused, the running jobs that reach it finish (at most the
  longest container timeout), then its last calls.

Nothing new reaches a replaced endpoint, because the orchestrator looks endpoints up per call."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from node.config import NodeConfig
from node.containers.config import ContainerConfig
from node.containers.manager import ContainerManager
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.jobs.store import JobStore
from node.jobs.subsystem import endpoint_for
from node.logs import get_logger
from node.reload import ReloadPlan

log = get_logger(__name__)


class ContainerRollout:
    def __init__(self, orchestrator: Orchestrator, containers: ContainerManager, store: JobStore,
                 session: aiohttp.ClientSession) -> None:
        self._orchestrator = orchestrator
        self._containers = containers
        self._store = store
        self._session = session  # for the "does it answer yet" probes

    async def apply(self, old: NodeConfig, new: NodeConfig, changes: ReloadPlan) -> None:
        endpoints = self._orchestrator.endpoints
        longest = max((c.timeout for c in old.containers), default=0.0)
        for c in changes.added:  # one at a time, each serving once it answers
            state = await self._containers.add(c)
            await self._containers.wait_answering(self._session, [state], new.startup_wait)
            endpoints[c.id] = endpoint_for(c, state)
            log.info("config.container_added", container=c.id, url=state.url)
        for c in changes.retuned:
            previous = endpoints[c.id]
            endpoints[c.id] = endpoint_for(c, self._containers.states[c.id])
            await self._drain_calls(previous)
        for c in changes.rolled:
            await self._roll(c, new.startup_wait, longest)
        for cid in changes.removed:
            await self._retire(cid, longest)
            await self._containers.remove(cid)
            log.info("config.container_removed", container=cid)

    async def _roll(self, c: ContainerConfig, wait: float, longest: float) -> None:
        endpoints = self._orchestrator.endpoints
        if self._containers.can_run_beside(c):
            successor = await self._containers.start_successor(c)
            await self._containers.wait_answering(self._session, [successor], wait)
            old_state = self._containers.swap(c, successor)
            previous = endpoints[c.id]
            endpoints[c.id] = endpoint_for(c, successor)
            await self._drain_calls(previous)
            await self._containers.retire(old_state, successor)
        else:
            await self._retire(c.id, longest)
            await self._containers.remove(c.id)
            state = await self._containers.add(c)
            await self._containers.wait_answering(self._session, [state], wait)
            endpoints[c.id] = endpoint_for(c, state)
        log.info("config.container_rolled", container=c.id, url=self._containers.states[c.id].url)

    async def _retire(self, cid: str, longest: float) -> None:
        """Take a container out of service: refuse new jobs naming it, let the running jobs that
        reach it finish (at most `longest` seconds), then its last calls."""
        orchestrator = self._orchestrator
        orchestrator.retiring.add(cid)
        try:
            deadline = time.monotonic() + longest
            while any(cid in job.containers for job in self._store.running()):
                if time.monotonic() >= deadline:
                    log.warning("config.drain_timeout", container=cid, s=longest)
                    break
                await asyncio.sleep(0.05)
            previous = orchestrator.endpoints.pop(cid)
        finally:
            orchestrator.retiring.discard(cid)
        await self._drain_calls(previous)

    @staticmethod
    async def _drain_calls(endpoint: ContainerEndpoint) -> None:
        """Wait until no call is in flight on a replaced endpoint, at most its call timeout."""
        async def take_all() -> None:
            for _ in range(endpoint.concurrency):
                await endpoint.semaphore.acquire()

        try:
            await asyncio.wait_for(take_all(), endpoint.timeout)
        except TimeoutError:
            log.warning("config.drain_timeout", container=endpoint.id, s=endpoint.timeout)
