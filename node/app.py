"""Wiring and lifecycle of the node: one SQLite file, one HTTP client session, one aiohttp
server, and the list of subsystems (`SUBSYSTEMS`), each one object with one lifespan
(node/subsystem.py) that starts what it owns and yields what it mounts.

Start-up order: SQLite, the HTTP client session and the supervisor; the jobs core (its
migrations and the orchestrator) and every enabled subsystem in list order (their migrations,
stores and services); the HTTP server (so /health/startup can answer 503 while booting, and the
routes, error shapes, gates and middlewares come from what was mounted); then the containers.
Jobs are accepted once every container answers or `startup_wait` seconds have passed, whichever
comes first: a container still silent then is logged (`containers.not_answering`) and the node
starts anyway; jobs naming it fail ("container unreachable") until it answers. Last, what must
run only once the node serves (each mount's `serving`: resumed jobs, CRE recovery, the chain
listener, the relayer and watchers, the watchdog), in list order.

Stop order is the reverse (see "lifecycle" below): intake first (a config reload under way
finished, no new requests, WebSocket pushes stopped), then the serving hooks, the pruner, then
in-flight jobs drained, then the containers, the server, the subsystems (each stops the loops
it started), and the shared infrastructure. A start-up that fails at any step undoes the steps
that ran, in the same order, before `start` raises."""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node import __version__
from node.chain.subsystem import ChainSubsystem
from node.config import ConfigError, LoadedConfig, NodeConfig, read_config
from node.containers import container_manager
from node.cre.subsystem import CreSubsystem
from node.gateway.subsystem import GatewaySubsystem
from node.jobs.orchestrator import Orchestrator
from node.jobs.rollout import ContainerRollout
from node.jobs.subsystem import JobsSubsystem
from node.lifecycle import Supervisor
from node.logs import get_logger, set_level
from node.observe.metrics import NodeMetrics
from node.observe.subsystem import ObserveSubsystem
from node.registry.subsystem import RegistrySubsystem
from node.reload import ReloadPlan
from node.reload import applied as applied_config
from node.reload import plan as reload_plan
from node.secrets import SecretBox
from node.server.clients import ClientAddresses, limit_key, parse_ip
from node.server.fastlane import FastLane, LaneHandler
from node.server.health import HealthApi
from node.server.http import (
    ApiFamily,
    ErrorShapes,
    RateLimiter,
    RequestIds,
    RouteMiddleware,
    json_response,
    make_middlewares,
    owner,
    prefix_rate_limit,
)
from node.server.openapi import build_spec
from node.server.timeouts import ConnectionCounter, TimedAppRunner
from node.storage import Database
from node.storage.prune import prune_expired
from node.subsystem import Context, Mount, Subsystem

log = get_logger(__name__)

# The optional subsystems, entered in this order after the jobs core (stopped in reverse). A new
# subsystem is a package with a `subsystem.py` and one line here. Observe comes last: it samples
# what the others mounted.
SUBSYSTEMS: tuple[Callable[[NodeConfig], Subsystem], ...] = (
    CreSubsystem,
    GatewaySubsystem,
    ChainSubsystem,
    RegistrySubsystem,
    ObserveSubsystem,
)


class Node:
    def __init__(self, config: NodeConfig, loaded: LoadedConfig | None = None) -> None:
        self.config = config
        self.loaded = loaded  # where the config came from (file, form, hash, load time)
        self.db = Database(config.storage.path, config.storage.synchronous)
        self.containers = container_manager(config.containers, config.docker, config.manage_containers)
        self.jobs = JobsSubsystem(config, self.db, self.containers)  # the core: every subsystem submits to it
        self.store = self.jobs.store
        self.subsystems: dict[str, Subsystem] = {s.name: s for s in (make(config) for make in SUBSYSTEMS)}
        # The metrics registry (observe renders it): made first, so every part can report from its start.
        self.metrics = NodeMetrics() if config.observe.enabled else None
        if self.metrics is not None:
            self.db.commit_observers.append(self.metrics.commit)
        self.mounts: list[Mount] = []  # what the entered subsystems mounted, in start order
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.lane: FastLane | None = None  # server.fast_lane (made by build_app)
        self.port: int | None = None
        self.started = False
        self._stopping = asyncio.Event()
        self.exit_code = 0
        self.supervisor = Supervisor(on_fatal=self._fatal)
        self._stack = AsyncExitStack()
        self._box: SecretBox | None = None
        self.clients = ClientAddresses(config.server.trusted_proxies)  # who a request's client is
        self._limiters: dict[str, RateLimiter] = {}
        self._reload_lock = asyncio.Lock()
        self._reloads = self.supervisor.group("config-reload")  # SIGHUP reloads, drained at stop
        self.restart_needed: list[str] = []  # changed keys a reload could not apply

    # -- building ---------------------------------------------------------------------------

    @property
    def orchestrator(self) -> Orchestrator | None:
        return self.jobs.orchestrator

    def secret_box(self) -> SecretBox:
        """The node's master key (sealing API secrets and agent keys), loaded once."""
        if self._box is None:
            self._box = SecretBox.from_file(Path(self.config.master_key_path))
        return self._box

    def subsystem_flags(self) -> dict[str, bool]:
        """Which optional subsystems are on (`node_subsystem_enabled`, the status page)."""
        mounted = {m.name: m for m in self.mounts}
        flags: dict[str, bool] = {}
        for name, subsystem in self.subsystems.items():
            flags.update(subsystem.flags(mounted.get(name)))
        return flags

    def build_app(self) -> web.Application:
        """The server, from what the subsystems mounted: each mount's family and routes come from
        one object, so a route cannot take another family's error shape (checked here)."""
        server = self.config.server
        families = [m.family for m in self.mounts if m.family is not None]
        shapes = ErrorShapes(families)
        limiter = RateLimiter(server.rate_limit, exempt={("PUT", "/api/status")})
        auth_limiter = RateLimiter(server.auth_rate_limit)
        self._limiters = {"rate_limit": limiter, "auth_rate_limit": auth_limiter}  # retuned by reload
        routed = [prefix_rate_limit(auth_limiter, tuple(p for m in self.mounts for p in m.auth_prefixes)),
                  *(middleware for m in self.mounts for middleware in m.middlewares)]
        ids = RequestIds()
        app = web.Application(
            middlewares=make_middlewares(shapes, limiter, server.max_json_depth, self.clients, routed=routed, ids=ids),
            client_max_size=server.max_body_bytes,
        )
        for mount in self.mounts:
            _check_family(mount, families)
            app.add_routes(mount.routes)
        self.lane = None
        if server.fast_lane:
            routes, skip = _lane_routes(self.mounts, routed)
            self.lane = FastLane(routes, shapes=shapes, limiter=limiter, clients=self.clients, ids=ids,
                                 max_json_depth=server.max_json_depth, max_body_bytes=server.max_body_bytes,
                                 keepalive_timeout=server.keepalive_timeout, skip_headers=skip)
        checks: dict[str, Callable[[], Awaitable[bool]]] = {"sqlite": self.db.writable}
        if self.config.manage_containers and any(s.managed for s in self.containers.states.values()):
            checks["docker"] = self.containers.ping
            if (services := self.containers.readiness_check()) is not None:
                checks["services"] = services
        for mount in self.mounts:
            checks.update(mount.checks)
        app.add_routes(HealthApi(checks, lambda: self.started).routes())

        async def openapi(request: web.Request) -> web.Response:
            """This document: every route of the node, with the request body schemas."""
            return json_response(spec)

        app.router.add_get("/openapi.json", openapi)
        spec = build_spec(app, "node-daemon", __version__, families)
        return app

    # -- lifecycle ---------------------------------------------------------------------------
    #
    # Each step starts one service (or enters one subsystem's lifespan) on `self._stack`, so a
    # failed start-up stops exactly what had started, and a shutdown runs the stops in reverse
    # start order. The last step ("serving jobs") is therefore the first undone: stop taking
    # requests, stop what runs only while serving, let in-flight jobs finish, and only then stop
    # subsystems and containers.

    async def start(self) -> None:
        """Run every start step; if one fails, undo the steps that ran (newest first) before the
        error propagates, so no caller leaks tasks, the server or the database."""
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        started = time.perf_counter()
        stack = self._stack
        await self.db.open()
        stack.push_async_callback(self.db.close)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(self.session.close)
        stack.push_async_callback(self.supervisor.close)
        ctx = Context(config=self.config, db=self.db, session=self.session, supervisor=self.supervisor,
                      containers=self.containers, secrets=self.secret_box, metrics=self.metrics,
                      started=lambda: self.started, subsystems=self.subsystem_flags,
                      config_status=self.config_status, reload=self.reload, mounted=self.mounts)
        self.mounts.append(await stack.enter_async_context(self.jobs.lifespan(ctx)))
        ctx.orchestrator, ctx.jobs = self.jobs.orchestrator, self.store
        for subsystem in self.subsystems.values():
            if subsystem.enabled:
                mount = await stack.enter_async_context(subsystem.lifespan(ctx))
                for gate in mount.gates:
                    ctx.core.add_gate(gate)
                self.mounts.append(mount)
        await self._start_server()
        await self._start_containers()
        stack.push_async_callback(self._drain)
        # It prunes through the subsystems' expiry rules: stopped before they are.
        pruner = self.supervisor.periodic("storage-pruner", self.config.storage.prune_interval, self._prune)
        stack.push_async_callback(pruner.stop)
        for mount in self.mounts:
            for serving in mount.serving:
                await stack.enter_async_context(serving())
        stack.push_async_callback(self._stop_intake)
        self.started = True
        log.info(
            "node.started",
            host=self.config.server.host,
            port=self.port,
            containers=len(self.config.containers),
            db=self.config.storage.path,
            s=round(time.perf_counter() - started, 2),
        )

    async def _start_server(self) -> None:
        server = self.config.server
        connections = ConnectionCounter(
            server.max_connections_per_ip,
            lambda peer: None if self.clients.is_proxy(parse_ip(peer)) else limit_key(peer))
        self.runner = TimedAppRunner(self.build_app(), header_timeout=server.header_timeout,
                                     keepalive_timeout=server.keepalive_timeout, body_timeout=server.body_timeout,
                                     body_min_rate=server.body_min_rate, connections=connections, lane=self.lane,
                                     access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        self._stack.push_async_callback(self.runner.cleanup)
        site = web.TCPSite(self.runner, self.config.server.host, self.config.server.port, backlog=1024)
        await site.start()
        # AbstractServer declares no `sockets`; asyncio's Server and uvloop's both have it.
        sockets = site._server.sockets if site._server else []  # type: ignore[attr-defined]
        self.port = sockets[0].getsockname()[1] if sockets else self.config.server.port
        for mount in self.mounts:
            for bound in mount.bound:
                bound(self.port)

    async def _prune(self) -> None:
        """Tables that only grow: finished jobs past storage.job_retention, and the expired rows
        of every mounted subsystem (each yields its own expiry rules)."""
        pruned = {"jobs": await self.store.prune(self.config.storage.job_retention)}
        pruned.update(await prune_expired(self.db, [rule for m in self.mounts for rule in m.expiry]))
        if any(pruned.values()):
            log.info("storage.pruned", **{k: v for k, v in pruned.items() if v})

    async def _start_containers(self) -> None:
        assert self.session is not None and self.orchestrator is not None
        self._stack.push_async_callback(self.containers.stop)
        if self.config.manage_containers:
            await self.containers.start()
        await self.containers.wait_ready(self.session, self.config.startup_wait)
        endpoints = self.orchestrator.endpoints
        for cid, state in self.containers.states.items():
            endpoints[cid].set_urls(state.urls())
        self.containers.on_url_change = lambda cid, urls: endpoints[cid].set_urls(urls)
        if self.containers.monitored():
            monitor = self.supervisor.periodic("container-monitor", self.containers.monitor_interval,
                                               self.containers.check)
            self._stack.push_async_callback(monitor.stop)  # before the containers are removed

    async def _stop_intake(self) -> None:
        """Undone first: refuse new requests and stop pushing to WebSocket clients (the chain
        listener and the relayer, entered as serving hooks before this was pushed, stop next)."""
        self.started = False  # no reload starts from here on
        async with self._reload_lock:
            pass  # one under way finishes first: a container it starts is then stopped with the rest
        for mount in self.mounts:
            for stop in mount.stop_first:
                await stop()
        if self.runner is not None:
            await self.runner.shutdown()

    async def _drain(self) -> None:
        """Once nothing submits work any more: let in-flight jobs finish for
        `server.shutdown_grace` seconds (then fail them), and what waits on them (the CRE action
        runner) after."""
        if self.orchestrator is not None:
            await self.orchestrator.drain(self.config.server.shutdown_grace)
        for mount in self.mounts:
            for drain in mount.drains:
                await drain()

    def _fatal(self, task: str) -> None:
        """A critical background task died: stop the node and exit non-zero, so a process manager
        restarts it rather than leaving a process that looks alive and does nothing."""
        self.exit_code = 1
        self.request_stop()

    async def stop(self) -> None:
        """Graceful: undo every start step that ran, newest first."""
        log.info("node.stopping")
        self.started = False
        await self._stack.aclose()
        log.info("node.stopped", exit_code=self.exit_code)

    def request_stop(self) -> None:
        self._stopping.set()

    # -- reload (SIGHUP, POST /api/node/reload) -----------------------------------------------

    def config_status(self) -> dict[str, Any] | None:
        """The live config's file, form, hash and load time, and what waits for a restart."""
        if self.loaded is None:
            return None
        return {**self.loaded.status(), "restart_needed": self.restart_needed}

    def request_reload(self) -> None:
        """SIGHUP: reload in the background (one at a time; the outcome is logged)."""
        self._reloads.spawn("sighup", self.reload())

    async def reload(self) -> dict[str, Any]:
        """Validate the config file again and apply what can apply live (node/reload.py). An
        invalid file changes nothing: one error line naming the field, and a metric."""
        async with self._reload_lock:
            if self.loaded is None or not self.started:
                log.warning("config.reload_refused", reason="the node is not running from a config file yet")
                return {"ok": False, "error": "the node is not running from a config file yet"}
            try:
                loaded = await asyncio.to_thread(read_config, self.loaded.path)
            except ConfigError as exc:
                message = str(exc)
                lines = message.splitlines()
                log.error("config.reload_invalid", path=str(self.loaded.path),
                          error="; ".join(line.strip() for line in lines[1:]) or message)
                self._count_reload("invalid")
                return {"ok": False, "error": message}
            containers_live = self.config.docker.mode == "local"
            changes = reload_plan(self.config, loaded.config, containers_live)
            try:
                await self._apply(loaded.config, changes)
            except Exception as exc:  # noqa: BLE001 - a failed roll keeps what was running
                log.exception("config.reload_failed", error=str(exc)[:300])
                self._count_reload("failed")
                return {"ok": False, "error": f"applying the reload failed: {exc}"}
            self.config = applied_config(self.config, loaded.config, changes)
            self.loaded = loaded
            self.restart_needed = changes.restart
            for note in loaded.notes:
                log.info("config.infernet_key", note=note)
            if changes.restart:
                log.warning("config.restart_needed", keys=",".join(changes.restart),
                            note="the running node keeps the old values until the next start")
            self._count_reload("applied")
            summary = changes.summary()
            log.info("config.reloaded", sha256=loaded.sha256[:16],
                     **{k: ",".join(v) for k, v in summary.items() if v and k != "restart_needed"})
            return {"ok": True, **summary, "sha256": loaded.sha256}

    def _count_reload(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.config_reloads.labels(outcome).inc()

    async def _apply(self, new: NodeConfig, changes: ReloadPlan) -> None:
        if "log.level" in changes.live:
            set_level(new.log.level)
        for name in ("rate_limit", "auth_rate_limit"):
            if f"server.{name}" in changes.live and name in self._limiters:
                limits = getattr(new.server, name)
                self._limiters[name].limit, self._limiters[name].period = limits.num_requests, limits.period
        assert self.orchestrator is not None and self.session is not None
        await ContainerRollout(self.orchestrator, self.containers, self.store, self.session).apply(
            self.config, new, changes)
        if changes.containers_changed:
            for mount in self.mounts:
                if mount.on_containers is not None:
                    mount.on_containers(new.containers)

    async def serve_forever(self) -> int:
        """Run until SIGINT/SIGTERM or a fatal background failure; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
            # What start-up made (the app, its routes, the subsystems) lives as long as the process,
            # like the imports main() froze: out of the collector's full scans too, which stop
            # every job for tens of ms (docs/perf.md). Collected first, so no garbage is kept.
            gc.collect()
            gc.freeze()
            await self._stopping.wait()
        finally:
            await self.stop()
        return self.exit_code


def _check_family(mount: Mount, families: list[ApiFamily]) -> None:
    """Every route a subsystem mounts answers errors in its own family's shape: a path owned by
    another family (a prefix missing from its own) would silently take that family's shape."""
    own = mount.family.error if mount.family is not None else None
    for route in mount.routes:
        path = getattr(route, "path", "")
        found = owner(families, path)
        if (found.error if found is not None else None) is not own:
            raise AssertionError(f"{mount.name}: route {path} would answer errors in the shape of "
                                 f"{found.tag if found is not None else 'no family'}; add its prefix to its family")


def _lane_routes(mounts: Sequence[Mount], routed: Sequence[RouteMiddleware]
                 ) -> tuple[dict[tuple[str, str], LaneHandler], frozenset[str]]:
    """The routes the fast lane may answer, and the headers that send a request to aiohttp: a lane
    route must be one of its mount's own routes (aiohttp answers the requests the lane does not),
    and every route middleware that applies to it must act only on requests carrying a header
    (the lane leaves those to aiohttp); a route some middleware must see on every request is
    left to aiohttp altogether."""
    routes: dict[tuple[str, str], LaneHandler] = {}
    skip: set[str] = set()
    for mount in mounts:
        own = {(getattr(r, "method", ""), getattr(r, "path", "")) for r in mount.routes}
        for (method, path), handler in mount.lane.items():
            if (method, path) not in own:
                raise AssertionError(f"{mount.name}: lane route {method} {path} is not one of its routes")
            applying = [m for m in routed if m.applies(method, path)]
            if any(m.only_with_header is None for m in applying):
                continue
            skip.update(m.only_with_header for m in applying if m.only_with_header is not None)
            routes[(method, path)] = handler
    return routes, frozenset(skip)
