"""The governance gateway subsystem (nullrun SDK compatible): accounts, workflows, budgets,
policies, approvals, audit, the control WebSocket, and the admission gate every job passes.

Its mount carries everything the rest of the node must know of it: the gate for the
orchestrator, the binding middleware on the job routes, its sign-in prefix for the auth rate
limit, its dashboard sessions for the pruner, its decisions and budgets for the metrics, and its
WebSocket pushes to stop first at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from node.config import NodeConfig
from node.gateway import api as gateway_api
from node.gateway.auth import GatewayAuth
from node.gateway.binding import JOB_PATHS
from node.gateway.control import ControlHub
from node.gateway.gate import GovernanceGate
from node.gateway.oauth import OAuthVerifier
from node.gateway.passwords import PasswordHasher
from node.gateway.store import GatewayStore
from node.gateway.webhooks import WebhookSender
from node.jobs.api import WORKFLOW_HEADER
from node.logs import get_logger
from node.server.egress import EgressPolicy
from node.server.http import RouteMiddleware
from node.storage import Database
from node.storage.prune import ExpiryRule
from node.subsystem import Context, Mount, Sample

if TYPE_CHECKING:
    from node.observe.sampler import Snapshot

log = get_logger(__name__)

EXPIRY = (ExpiryRule("gw_sessions"),)  # dashboard sessions


def sample(db: Database) -> Sample:
    """Admission decisions by kind and outcome (only growing), and each workflow's budget."""
    async def fill(snap: Snapshot) -> None:
        rows = await db.fetchall("SELECT kind, allowed, COUNT(*) FROM gw_executions GROUP BY kind, allowed")
        snap.gateway_decisions = {(str(k), "allowed" if a else "denied"): int(n) for k, a, n in rows}
        rows = await db.fetchall(
            "SELECT id, status, budget_usd, spent_usd, reserved_usd FROM gw_workflows ORDER BY id LIMIT 500")
        snap.gateway_workflows = [dict(r) for r in rows]

    return fill


class GatewaySubsystem:
    name = "gateway"

    def __init__(self, config: NodeConfig) -> None:
        self._config = config.gateway
        self._costs = {c.id: c.cost_usd for c in config.containers if c.cost_usd}
        self._export_dir = Path(config.storage.path).parent / "audit-exports"
        self.api: gateway_api.GatewayApi | None = None  # once mounted

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {self.name: mount is not None}

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        config = self._config
        store = GatewayStore(ctx.db, ctx.secrets())
        await store.start()
        hmac_required, max_age = config.hmac_required, config.hmac_max_age
        hub = ControlHub(buffer=config.ws_buffer, queue_size=config.ws_queue,
                         load_seqs=store.control_seqs, save_seq=store.save_control_seq)
        await hub.start()
        prices = {m: (p.input_usd_per_1k, p.output_usd_per_1k) for m, p in config.model_prices.items()}
        api = gateway_api.GatewayApi(
            store, GatewayAuth(store, hmac_required, max_age, config.rotation_grace), hub, ctx.core,
            ctx.session, config.reservation_ttl, prices,
            webhooks=WebhookSender(EgressPolicy(config.webhook_allowed_networks)),
            oauth=OAuthVerifier(config.oauth, ctx.session), hasher=PasswordHasher(),
            open_registration=config.open_registration, verify_returns_secret=config.verify_returns_secret,
            export_dir=self._export_dir, alert_tasks=ctx.supervisor.group("gateway-alerts"))
        self.api = api
        gate = GovernanceGate(store, {str(k): v for k, v in config.default_workflows.items()}, self._costs,
                              config.reservation_ttl)
        loops = [ctx.supervisor.periodic("gateway-reservation-expiry", 5, store.expire_all),
                 ctx.supervisor.periodic("gateway-audit-exports", 1, api.audit.run_exports),
                 ctx.supervisor.periodic("gateway-approval-expiry", 1, api.approvals.expire_due)]
        log.info("gateway.ready", hmac_required=hmac_required, hmac_max_age=max_age,
                 oauth_signup=api.oauth.enabled, webhook_allowed_networks=len(config.webhook_allowed_networks),
                 default_workflows=len(config.default_workflows), open_registration=config.open_registration,
                 verify_returns_secret=config.verify_returns_secret)
        try:
            yield Mount(
                self.name, family=gateway_api.FAMILY, routes=api.routes(), gates=[gate],
                middlewares=[RouteMiddleware(lambda method, path: method == "POST" and path in JOB_PATHS,
                                             api.binding.middleware, only_with_header=WORKFLOW_HEADER)],
                auth_prefixes=(f"{gateway_api.PREFIX}/auth/",), expiry=EXPIRY, samples={"gateway": sample(ctx.db)},
                stop_first=[hub.close])  # WebSocket pushes end with intake
        finally:
            # Here, not only at shutdown's first step: a start-up failing after this mount (the
            # port taken, a container not starting) closes it too. After the jobs drain, so the
            # alerts of the last jobs are still posted.
            await asyncio.gather(*(loop.stop(timeout=5) for loop in loops))
            await api.close()
