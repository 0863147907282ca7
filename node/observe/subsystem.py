"""Builds the node's observability parts from what it is given, explicitly: the node's one
`NodeMetrics` (`Context.metrics`, made by the node first, so the jobs core and the CRE workflows
report to it from their start), the sampler and collector reading the sample parts and status
blocks the other subsystems mounted, the watchdog, and the operator API.

Nothing here reaches into the node: the other subsystems' state comes through their `Mount`s
(node/subsystem.py), read at each sample, and the few node-level facts (is it serving, the loaded
config, a reload) through the `Context`. So none of them is changed to carry a metrics object,
and observe names none of their tables.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from node.config import NodeConfig
from node.observe.api import FAMILY, ObserveApi
from node.observe.collector import NodeCollector
from node.observe.sampler import Sample, Sampler
from node.observe.watchdog import Watchdog
from node.subsystem import Context, Mount


class ObserveSubsystem:
    """Metrics (`/metrics`), the operator status endpoint and page, and the problem watchdog.
    Entered last: it samples what every subsystem before it mounted."""

    name = "observe"

    def __init__(self, config: NodeConfig) -> None:
        self._config = config

    @property
    def enabled(self) -> bool:
        return self._config.observe.enabled

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {}  # not listed in node_subsystem_enabled (it is what renders it)

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        metrics = ctx.metrics
        assert metrics is not None and ctx.jobs is not None
        config = self._config
        mounted = ctx.mounted

        def parts() -> dict[str, Sample]:
            return {name: part for m in mounted for name, part in m.samples.items()}

        def registry_rpcs() -> list[dict[str, Any]]:
            return [block for m in mounted if (chains := m.status.get("registry_chains")) for block in chains()]

        sampler = Sampler(parts)
        containers = ctx.containers
        watchdog = Watchdog(sampler, config.observe,
                            restarts=lambda: {cid: s.restarts for cid, s in containers.states.items()})
        metrics.registry.register(NodeCollector(
            sampler, containers=containers, running_jobs=ctx.jobs.running, subsystems=ctx.subsystems,
            problems=watchdog.counts, registry_rpcs=registry_rpcs))
        token = config.server.admin_token
        api = ObserveApi(metrics, sampler, watchdog, ctx.db, containers=containers, running_jobs=ctx.jobs.running,
                         subsystems=ctx.subsystems, started=ctx.started, config=ctx.config_status, reload=ctx.reload,
                         chart_interval=config.observe.interval, registry_rpcs=registry_rpcs,
                         admin_token=token.get_secret_value() if token else None)

        @asynccontextmanager
        async def watch() -> AsyncIterator[None]:
            loops = [ctx.supervisor.loop("observe-watchdog", watchdog.round, config.observe.interval),
                     ctx.supervisor.loop("observe-charts", api.charts.round, api.charts.interval)]
            try:
                yield
            finally:  # they sample every subsystem: stopped before any of them is
                await asyncio.gather(*(loop.stop(timeout=5) for loop in loops))

        yield Mount(self.name, family=FAMILY, routes=api.routes(), serving=[watch])
