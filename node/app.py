"""Wiring and lifecycle of the node: one SQLite file, one HTTP client session, one aiohttp
server, one orchestrator; subsystems are built here and given what they need.

Start-up order: SQLite and every subsystem's migrations, the orchestrator and the HTTP server
(so /health/startup can answer 503 while booting), then the containers; jobs are accepted once
the containers answer."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from node import __version__
from node.config import NodeConfig
from node.containers import container_manager
from node.cre import api as cre_api
from node.cre.actions import ActionRunner
from node.cre.gateway import TriggerDispatcher
from node.cre.store import CreStore
from node.fields import reveal
from node.gateway import api as gateway_api
from node.gateway.auth import GatewayAuth
from node.gateway.control import ControlHub
from node.gateway.crypto import SecretBox
from node.gateway.gate import GovernanceGate
from node.gateway.oauth import OAuthVerifier
from node.gateway.passwords import PasswordHasher
from node.gateway.webhooks import WebhookSender
from node.gateway.store import GatewayStore
from node.jobs.api import FAMILY as jobs_family
from node.jobs.api import JobsApi
from node.registry import api as registry_api
from node.registry.api import RegistryApi
from node.registry.relayer import CronRelayer
from node.registry.service import RegistryService
from node.registry.store import RegistryStore
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.jobs.store import JobStore
from node.lifecycle import Supervisor
from node.logs import get_logger
from node.observe import api as observe_api
from node.observe.wiring import Observability
from node.server.health import HealthApi
from node.server.egress import EgressPolicy
from node.server.http import ErrorShapes, RateLimiter, json_response, make_middlewares, prefix_rate_limit
from node.server.openapi import build_spec
from node.server.timeouts import TimedAppRunner
from node.storage import Database
from node.storage.prune import expiry_rules, prune_expired

if TYPE_CHECKING:
    from node.registry.watcher import EventWatcher  # web3: imported only when chains are watched

log = get_logger(__name__)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
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
        self.gateway: gateway_api.GatewayApi | None = None
        self.chain: Any = None  # ChainService, imported only when the chain is enabled (web3 is heavy)
        self.registry: RegistryApi | None = None
        self.relayer: CronRelayer | None = None
        self.watchers: list[EventWatcher] = []
        self.exit_code = 0
        self.supervisor = Supervisor(on_fatal=self._fatal)
        self._stack = AsyncExitStack()
        self._box: SecretBox | None = None
        # Metrics, the operator status endpoint/page and the problem watchdog (one registry per node).
        self.observe = Observability(self) if config.observe.enabled else None

    # -- building ---------------------------------------------------------------------------

    def secret_box(self) -> SecretBox:
        """The node's master key (sealing API secrets and agent keys), loaded once."""
        if self._box is None:
            self._box = SecretBox.from_file(Path(self.config.gateway.master_key_path))
        return self._box

    def _endpoints(self) -> dict[str, ContainerEndpoint]:
        out = {}
        for c in self.config.containers:
            state = self.containers.states[c.id]
            out[c.id] = ContainerEndpoint(
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
        return out

    async def _start_cre(self) -> None:
        assert self.orchestrator is not None and self.session is not None
        settings = self.config.cre
        store = CreStore(self.db)
        await store.start(settings.skew_seconds)
        self.cre_runner = ActionRunner(store, self.orchestrator, settings.action_routes())
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
        self.cre = cre_api.CreApi(settings, store, self.cre_runner, dispatcher, runtime)
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
            oauth=OAuthVerifier(config.oauth, self.session), hasher=PasswordHasher())
        costs = {c.id: c.cost_usd for c in self.config.containers if c.cost_usd}
        self.orchestrator.add_gate(GovernanceGate(store, dict(config.default_workflows), costs,
                                                  config.reservation_ttl))
        self.supervisor.periodic("gateway-reservation-expiry", 5, store.expire_all)
        log.info("gateway.ready", hmac_required=hmac_required, hmac_max_age=max_age,
                 oauth_signup=self.gateway.oauth.enabled, webhook_allowed_networks=len(config.webhook_allowed_networks),
                 default_workflows=len(config.default_workflows))

    def build_app(self) -> web.Application:
        assert self.orchestrator is not None
        families = [jobs_family, *(api.FAMILY for api, on in (
            (cre_api, self.cre is not None), (gateway_api, self.gateway is not None),
            (registry_api, self.registry is not None), (observe_api, self.observe is not None)) if on)]
        shapes = ErrorShapes(families)
        limiter = RateLimiter(self.config.server.rate_limit, exempt={("PUT", "/api/status")})
        auth_limiter = RateLimiter(self.config.server.auth_rate_limit)
        app = web.Application(
            middlewares=[*make_middlewares(shapes, limiter, self.config.server.max_json_depth),
                         prefix_rate_limit(auth_limiter, (f"{gateway_api.PREFIX}/auth/", "/api/auth/")),
                         *([self.gateway.binding.middleware] if self.gateway is not None else [])],
            client_max_size=self.config.server.max_body_bytes,
        )
        jobs_api = JobsApi(
            self.orchestrator,
            self.store,
            self.containers,
            max_batch=self.config.server.max_batch,
            status_allowed_ips=self.config.server.status_allowed_ips,
            chain_info=lambda: self.chain.info() if self.chain else {"enabled": False, "address": None},
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
        checks = {"sqlite": self.db.writable}
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
        stack.push_async_callback(self.store.close)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        stack.push_async_callback(self.session.close)
        stack.push_async_callback(self.supervisor.close)
        server = self.config.server
        jobs = self.config.jobs
        self.orchestrator = Orchestrator(self._endpoints(), self.session, self.store,
                                         max_inflight=server.max_inflight_jobs, max_json_depth=server.max_json_depth,
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
            relayer = self.relayer
            handle = self.supervisor.spawn("registry-relayer", relayer.run)
            stack.push_async_callback(handle.stop, relayer.stop, 10.0)
        for watcher in self.watchers:
            handle = self.supervisor.spawn(f"registry-watch-{watcher.chain_id}", watcher.run)
            stack.push_async_callback(handle.stop, watcher.stop, 10.0)
        if self.observe is not None:
            self.supervisor.spawn("observe-watchdog", self.observe.watchdog.run)
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
        self.runner = TimedAppRunner(self.build_app(), header_timeout=server.header_timeout,
                                     keepalive_timeout=server.keepalive_timeout, access_log=None,
                                     handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        self._stack.push_async_callback(self.runner.cleanup)
        site = web.TCPSite(self.runner, self.config.server.host, self.config.server.port, backlog=1024)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
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

    async def serve_forever(self) -> int:
        """Run until SIGINT/SIGTERM or a fatal background failure; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            await self.stop()
        return self.exit_code
