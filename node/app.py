"""Wiring and lifecycle of the node: one SQLite file, one HTTP client session, one aiohttp
server, one orchestrator; subsystems are built here and given what they need.

Start-up order: SQLite and every subsystem's migrations, the orchestrator and the HTTP server
(so /health/startup can answer 503 while booting), then the containers. Jobs are accepted once
every container answers or `startup_wait` seconds have passed, whichever comes first: a
container still silent then is logged (`containers.not_answering`) and the node starts anyway;
jobs naming it fail ("container unreachable") until it answers."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from node import __version__
from node.config import ConfigError, LoadedConfig, NodeConfig, read_config
from node.containers import container_manager
from node.containers.config import ContainerConfig
from node.containers.manager import ContainerState
from node.cre import api as cre_api
from node.cre.actions import ActionRunner
from node.cre.gateway import TriggerDispatcher
from node.cre.store import CreStore
from node.fields import reveal
from node.gateway import api as gateway_api
from node.gateway.auth import GatewayAuth
from node.gateway.binding import JOB_PATHS
from node.gateway.control import ControlHub
from node.gateway.gate import GovernanceGate
from node.gateway.oauth import OAuthVerifier
from node.gateway.passwords import PasswordHasher
from node.gateway.store import GatewayStore
from node.gateway.webhooks import WebhookSender
from node.jobs.api import FAMILY as jobs_family
from node.jobs.api import JobsApi
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.jobs.resources import ResourcesApi
from node.jobs.store import JobStore
from node.lifecycle import Supervisor
from node.logs import get_logger, set_level
from node.observe import api as observe_api
from node.observe.wiring import Observability
from node.registry import api as registry_api
from node.registry.api import RegistryApi
from node.registry.relayer import CronRelayer
from node.registry.service import RegistryService
from node.registry.store import RegistryStore
from node.reload import ReloadPlan
from node.reload import applied as applied_config
from node.reload import plan as reload_plan
from node.secrets import SecretBox
from node.server.clients import ClientAddresses, limit_key, parse_ip
from node.server.egress import EgressPolicy
from node.server.health import HealthApi
from node.server.http import (
    ErrorShapes,
    RateLimiter,
    RouteMiddleware,
    json_response,
    make_middlewares,
    prefix_rate_limit,
)
from node.server.openapi import build_spec
from node.server.timeouts import ConnectionCounter, TimedAppRunner
from node.storage import Database
from node.storage.prune import expiry_rules, prune_expired

if TYPE_CHECKING:
    from node.registry.watcher import EventWatcher  # web3: imported only when chains are watched

log = get_logger(__name__)


class Node:
    def __init__(self, config: NodeConfig, loaded: LoadedConfig | None = None) -> None:
        self.config = config
        self.loaded = loaded  # where the config came from (file, form, hash, load time)
        self.db = Database(config.storage.path, config.storage.synchronous)
        self.store = JobStore(self.db)
        self.containers = container_manager(config.containers, config.docker, config.manage_containers)
        self.session: aiohttp.ClientSession | None = None
        self.orchestrator: Orchestrator | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.started = False
        self._stopping = asyncio.Event()
        self.cre: cre_api.CreApi | None = None
        self.cre_runner: ActionRunner | None = None
        self.cre_wasm: Any = None  # WasmWorkflows (node/cre/wasm) when cre.workflows names any
        self.gateway: gateway_api.GatewayApi | None = None
        self.chain: Any = None  # ChainService, imported only when the chain is enabled (web3 is heavy)
        self.registry: RegistryApi | None = None
        self.relayer: CronRelayer | None = None
        self.watchers: list[EventWatcher] = []
        self.exit_code = 0
        self.supervisor = Supervisor(on_fatal=self._fatal)
        self._stack = AsyncExitStack()
        self._box: SecretBox | None = None
        self.clients = ClientAddresses(config.server.trusted_proxies)  # who a request's client is
        self._limiters: dict[str, RateLimiter] = {}
        self._reload_lock = asyncio.Lock()
        self._reloads = self.supervisor.group("config-reload")  # SIGHUP reloads, drained at stop
        self.restart_needed: list[str] = []  # changed keys a reload could not apply
        # Metrics, the operator status endpoint/page and the problem watchdog (one registry per node).
        self.observe = Observability(self) if config.observe.enabled else None

    # -- building ---------------------------------------------------------------------------

    def secret_box(self) -> SecretBox:
        """The node's master key (sealing API secrets and agent keys), loaded once."""
        if self._box is None:
            self._box = SecretBox.from_file(Path(self.config.master_key_path))
        return self._box

    def _endpoints(self) -> dict[str, ContainerEndpoint]:
        return {c.id: self._endpoint(c, self.containers.states[c.id]) for c in self.config.containers}

    @staticmethod
    def _endpoint(c: ContainerConfig, state: ContainerState) -> ContainerEndpoint:
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
            retry_dropped=getattr(state, "mode", "local") == "swarm",
            idempotent=c.idempotent,
        )
        endpoint.set_urls(state.urls())
        return endpoint

    async def _start_cre(self) -> None:
        assert self.orchestrator is not None and self.session is not None
        settings = self.config.cre
        store = CreStore(self.db)
        await store.start(settings.skew_seconds)
        self.cre_runner = ActionRunner(store, self.orchestrator, settings.action_routes(),
                                       self.supervisor.group("cre-actions"))
        dispatcher = None
        trigger_key = reveal(settings.trigger_private_key)
        if settings.gateway_url and trigger_key:
            dispatcher = TriggerDispatcher(self.session, settings.gateway_url, trigger_key,
                                           settings.gateway_timeout)
        runtime = None
        if self.config.cre.runtime is not None and self.config.cre.runtime.enabled:
            from node.cre.workflow.runtime import WorkflowRuntime

            runtime = WorkflowRuntime(self.config.cre.runtime, self.db, self.secret_box(), self.session,
                                      reveal(settings.backend_api_key))
            await runtime.start()
        wasm = None
        if any(w.enabled for w in settings.workflows):  # CRE workflows built with @chainlink/cre-sdk
            from node.cre.wasm.service import WasmWorkflows

            wasm = WasmWorkflows(settings, self.db, self.supervisor, secret_box=self.secret_box,
                                 observer=self.observe.metrics if self.observe is not None else None)
            await wasm.start()
            self._stack.push_async_callback(wasm.stop)
            self.cre_wasm = wasm
        self.cre = cre_api.CreApi(settings, store, self.cre_runner, dispatcher, runtime, wasm)
        self.supervisor.periodic("cre-nonce-prune", min(settings.skew_seconds, 60),
                                 lambda: store.prune_nonces(settings.skew_seconds))
        log.info("cre.ready", hmac_enforced=settings.enforce_hmac, bearer_configured=bool(reveal(settings.api_key)),
                 trigger_dispatch=dispatcher is not None, routed_actions=",".join(settings.actions) or "-")

    async def _start_gateway(self) -> None:
        assert self.orchestrator is not None and self.session is not None
        config = self.config.gateway
        store = GatewayStore(self.db, self.secret_box())
        await store.start()
        hmac_required, max_age = config.hmac_required, config.hmac_max_age
        hub = ControlHub(buffer=config.ws_buffer, queue_size=config.ws_queue,
                         load_seqs=store.control_seqs, save_seq=store.save_control_seq)
        await hub.start()
        prices = {m: (p.input_usd_per_1k, p.output_usd_per_1k) for m, p in config.model_prices.items()}
        self.gateway = gateway_api.GatewayApi(
            store, GatewayAuth(store, hmac_required, max_age, config.rotation_grace), hub, self.orchestrator,
            self.session, config.reservation_ttl, prices,
            webhooks=WebhookSender(EgressPolicy(config.webhook_allowed_networks)),
            oauth=OAuthVerifier(config.oauth, self.session), hasher=PasswordHasher(),
            open_registration=config.open_registration, verify_returns_secret=config.verify_returns_secret,
            export_dir=Path(self.config.storage.path).parent / "audit-exports",
            alert_tasks=self.supervisor.group("gateway-alerts"))
        costs = {c.id: c.cost_usd for c in self.config.containers if c.cost_usd}
        self.orchestrator.add_gate(GovernanceGate(store, {str(k): v for k, v in config.default_workflows.items()}, costs,
                                                  config.reservation_ttl))
        self.supervisor.periodic("gateway-reservation-expiry", 5, store.expire_all)
        self.supervisor.periodic("gateway-audit-exports", 1, self.gateway.audit.run_exports)
        self.supervisor.periodic("gateway-approval-expiry", 1, self.gateway.approvals.expire_due)
        log.info("gateway.ready", hmac_required=hmac_required, hmac_max_age=max_age,
                 oauth_signup=self.gateway.oauth.enabled, webhook_allowed_networks=len(config.webhook_allowed_networks),
                 default_workflows=len(config.default_workflows), open_registration=config.open_registration,
                 verify_returns_secret=config.verify_returns_secret)

    def build_app(self) -> web.Application:
        assert self.orchestrator is not None
        families = [jobs_family, *(api.FAMILY for api, on in (
            (cre_api, self.cre is not None), (gateway_api, self.gateway is not None),
            (registry_api, self.registry is not None), (observe_api, self.observe is not None)) if on)]
        shapes = ErrorShapes(families)
        limiter = RateLimiter(self.config.server.rate_limit, exempt={("PUT", "/api/status")})
        auth_limiter = RateLimiter(self.config.server.auth_rate_limit)
        self._limiters = {"rate_limit": limiter, "auth_rate_limit": auth_limiter}  # retuned by reload
        app = web.Application(
            middlewares=make_middlewares(shapes, limiter, self.config.server.max_json_depth, self.clients, routed=[
                prefix_rate_limit(auth_limiter, (f"{gateway_api.PREFIX}/auth/", "/api/auth/")),
                *([RouteMiddleware(lambda method, path: method == "POST" and path in JOB_PATHS,
                                   self.gateway.binding.middleware)] if self.gateway is not None else [])]),
            client_max_size=self.config.server.max_body_bytes,
        )
        jobs_api = JobsApi(
            self.orchestrator,
            self.store,
            self.containers,
            max_batch=self.config.server.max_batch,
            status_allowed_ips=self.config.server.status_allowed_ips,
            chain_info=lambda: self.chain.info() if self.chain else {"enabled": False, "address": ""},  # Infernet: a str
            onchain_pending=lambda: self.chain.pending() if self.chain else 0,
            ready=lambda: self.started,
            limits=self.config.jobs,
            operator=observe_api.OperatorAccess(token.get_secret_value() if (token := self.config.server.admin_token)
                                                else None),
        )
        if self.chain is not None:
            jobs_api.delegated_handler = self.chain.delegated
            app.router.add_get("/api/chain/deliveries", self.chain.deliveries_view)
        app.add_routes(jobs_api.routes())
        assert self.session is not None
        orchestrator = self.orchestrator
        app.add_routes(ResourcesApi(lambda: orchestrator.endpoints, self.session,
                                    self.config.server.max_json_depth).routes())
        checks: dict[str, Callable[[], Awaitable[bool]]] = {"sqlite": self.db.writable}
        if self.config.manage_containers and any(s.managed for s in self.containers.states.values()):
            checks["docker"] = self.containers.ping
            if (services := self.containers.readiness_check()) is not None:
                checks["services"] = services
        if self.chain is not None:
            checks["chain_rpc"] = self.chain.ping
        app.add_routes(HealthApi(checks, lambda: self.started).routes())
        if self.cre is not None:
            app.add_routes(self.cre.routes())
        if self.gateway is not None:
            app.add_routes(self.gateway.routes())
        if self.registry is not None:
            app.add_routes(self.registry.routes())

        async def openapi(request: web.Request) -> web.Response:
            """This document: every route of the node, with the request body schemas."""
            return json_response(spec)

        if self.observe is not None:
            app.add_routes(self.observe.api.routes())
        app.router.add_get("/openapi.json", openapi)
        spec = build_spec(app, "node-daemon", __version__, families)
        return app

    # -- lifecycle ---------------------------------------------------------------------------
    #
    # Each step starts one service and pushes its stop onto `self._stack`, so a failed start-up
    # stops exactly what had started, and a shutdown runs the stops in reverse start order. The
    # last step ("serving jobs") is therefore the first undone: stop taking requests, let
    # in-flight jobs finish, and only then stop subsystems and containers.

    async def start(self) -> None:
        started = time.perf_counter()
        stack = self._stack
        await self.db.open()
        stack.push_async_callback(self.db.close)
        reruns = await self.store.start(frozenset(c.id for c in self.config.containers if c.idempotent))
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(self.session.close)
        stack.push_async_callback(self.supervisor.close)
        server = self.config.server
        jobs = self.config.jobs
        containers = ContainerClient(max_json_depth=server.max_json_depth)
        stack.push_async_callback(containers.close)
        self.orchestrator = Orchestrator(self._endpoints(), containers, self.store,
                                         max_inflight=server.max_inflight_jobs,
                                         max_inflight_per_client=jobs.max_inflight_per_client,
                                         max_job_seconds=jobs.max_job_seconds)
        if self.observe is not None:
            self.orchestrator.observers.append(self.observe.metrics)
        if self.config.cre.enabled:
            await self._start_cre()
        if self.config.gateway.enabled:
            await self._start_gateway()
        if self.config.chain.enabled:
            from node.chain.service import ChainService

            self.chain = ChainService(self.config.chain, self.config.containers, self.db, self.orchestrator,
                                      self.supervisor)
        if self.config.registry.enabled:
            registry_store = RegistryStore(self.db)
            await registry_store.start()
            service = RegistryService(registry_store, self.config.registry,
                                      f"{self.config.server.host}:{self.config.server.port}")
            await service.start()
            self.registry = RegistryApi(service)
            if service.relayer_key is not None:
                self.relayer = CronRelayer(service, self.orchestrator)
                if self.config.registry.chains:
                    from node.registry.watcher import EventWatcher

                    self.watchers = [EventWatcher(service, self.orchestrator, chain_id, chain)
                                     for chain_id, chain in self.config.registry.chains.items()]
        await self._start_server()
        await self._start_containers()
        stack.push_async_callback(self._drain)
        self.orchestrator.resume(reruns)
        self.supervisor.periodic("storage-pruner", self.config.storage.prune_interval, self._prune)
        if self.cre_runner is not None:
            await self.cre_runner.recover()
        if self.chain is not None:
            await self.chain.start()
            stack.push_async_callback(self.chain.stop)
        if self.relayer is not None:
            self.relayer.start(self.supervisor)
            stack.push_async_callback(self.relayer.stop)
        for watcher in self.watchers:
            watcher.start(self.supervisor)
            stack.push_async_callback(watcher.stop)
        if self.observe is not None:
            self.supervisor.loop("observe-watchdog", self.observe.watchdog.round, self.config.observe.interval)
            self.supervisor.loop("observe-charts", self.observe.api.charts.round, self.observe.api.charts.interval)
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
                                     body_min_rate=server.body_min_rate, connections=connections,
                                     access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        self._stack.push_async_callback(self.runner.cleanup)
        site = web.TCPSite(self.runner, self.config.server.host, self.config.server.port, backlog=1024)
        await site.start()
        # AbstractServer declares no `sockets`; asyncio's Server and uvloop's both have it.
        sockets = site._server.sockets if site._server else []  # type: ignore[attr-defined]
        self.port = sockets[0].getsockname()[1] if sockets else self.config.server.port
        if self.registry is not None:  # sign-in messages name the port actually bound (server.port 0)
            self.registry.service.set_node_address(f"{self.config.server.host}:{self.port}")

    async def _prune(self) -> None:
        """Tables that only grow: finished jobs past storage.job_retention, and the expired
        sessions, tokens and nonces of every subsystem."""
        pruned = {"jobs": await self.store.prune(self.config.storage.job_retention)}
        pruned.update(await prune_expired(self.db, expiry_rules()))
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
        listener and the relayer, started after this was pushed, stop next)."""
        self.started = False
        if self.gateway is not None:
            await self.gateway.close()
        if self.runner is not None:
            await self.runner.shutdown()

    async def _drain(self) -> None:
        """Once nothing submits work any more: let in-flight jobs finish for
        `server.shutdown_grace` seconds (then fail them), and the CRE action runner with them."""
        if self.orchestrator is not None:
            await self.orchestrator.drain(self.config.server.shutdown_grace)
        if self.cre_runner is not None:
            await self.cre_runner.close(1.0)

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
        if self.observe is not None:
            self.observe.metrics.config_reloads.labels(outcome).inc()

    async def _apply(self, new: NodeConfig, changes: ReloadPlan) -> None:
        if "log.level" in changes.live:
            set_level(new.log.level)
        for name in ("rate_limit", "auth_rate_limit"):
            if f"server.{name}" in changes.live and name in self._limiters:
                limits = getattr(new.server, name)
                self._limiters[name].limit, self._limiters[name].period = limits.num_requests, limits.period
        assert self.orchestrator is not None and self.session is not None
        endpoints = self.orchestrator.endpoints
        for c in changes.added:  # one at a time, each serving once it answers
            state = await self.containers.add(c)
            await self.containers.wait_answering(self.session, [state], new.startup_wait)
            endpoints[c.id] = self._endpoint(c, state)
            log.info("config.container_added", container=c.id, url=state.url)
        for c in changes.retuned:
            old = endpoints[c.id]
            endpoints[c.id] = self._endpoint(c, self.containers.states[c.id])
            await self._drain_calls(old)
        for c in changes.rolled:
            await self._roll(c, new.startup_wait)
        for cid in changes.removed:
            await self._retire(cid)
            await self.containers.remove(cid)
            log.info("config.container_removed", container=cid)
        if changes.containers_changed and self.chain is not None:
            self.chain.set_containers(new.containers)

    async def _roll(self, c: ContainerConfig, wait: float) -> None:
        """Replace a changed container: its successor starts beside it and takes the calls once
        it answers; the old one goes once its calls are done. On a fixed host port both cannot
        run at once: calls to it are refused (400) from the drain until the successor answers."""
        assert self.orchestrator is not None and self.session is not None
        endpoints = self.orchestrator.endpoints
        if self.containers.can_run_beside(c):
            successor = await self.containers.start_successor(c)
            await self.containers.wait_answering(self.session, [successor], wait)
            old_state = self.containers.swap(c, successor)
            old = endpoints[c.id]
            endpoints[c.id] = self._endpoint(c, successor)
            await self._drain_calls(old)
            await self.containers.retire(old_state, successor)
        else:
            await self._retire(c.id)
            await self.containers.remove(c.id)
            state = await self.containers.add(c)
            await self.containers.wait_answering(self.session, [state], wait)
            endpoints[c.id] = self._endpoint(c, state)
        log.info("config.container_rolled", container=c.id, url=self.containers.states[c.id].url)

    async def _retire(self, cid: str) -> None:
        """Take a container out of service: refuse new jobs naming it, let the running jobs that
        reach it finish (at most the longest container timeout), then its last calls."""
        assert self.orchestrator is not None
        self.orchestrator.retiring.add(cid)
        try:
            limit = max(c.timeout for c in self.config.containers)
            deadline = time.monotonic() + limit
            while any(cid in job.containers for job in self.store.running()):
                if time.monotonic() >= deadline:
                    log.warning("config.drain_timeout", container=cid, s=limit)
                    break
                await asyncio.sleep(0.05)
            old = self.orchestrator.endpoints.pop(cid)
        finally:
            self.orchestrator.retiring.discard(cid)
        await self._drain_calls(old)

    async def _drain_calls(self, endpoint: ContainerEndpoint) -> None:
        """Wait until no call is in flight on a retired endpoint (nothing new reaches it: the
        orchestrator looks endpoints up per call), at most the container's call timeout."""
        async def take_all() -> None:
            for _ in range(endpoint.concurrency):
                await endpoint.semaphore.acquire()

        try:
            await asyncio.wait_for(take_all(), endpoint.timeout)
        except TimeoutError:
            log.warning("config.drain_timeout", container=endpoint.id, s=endpoint.timeout)

    async def serve_forever(self) -> int:
        """Run until SIGINT/SIGTERM or a fatal background failure; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()
        return self.exit_code
