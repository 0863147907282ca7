"""The governance gateway's HTTP surface under /api/v1 and the control plane at /ws/control/{org_id}.

`GatewayApi` only assembles: it builds one handler set per resource (accounts, SDK calls,
workflows, policies, reads, org administration, alerts, control plane) with the collaborators
each needs, and serves the union of their routes. Handlers and stores raise `node/errors.py`'s
domain errors (or `ApiError` for purely HTTP-level problems); the error middleware renders both
with `gateway_error` below.

Errors: `{"error": {"code": "<code>", "message": "<text>"}[, "details": …]}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from node.gateway.accounts_api import AccountsApi
from node.gateway.alerts_api import AlertsApi, BudgetAlerts
from node.gateway.approvals import ApprovalDesk
from node.gateway.approvals_api import ApprovalsApi
from node.gateway.audit_api import AuditApi
from node.gateway.auth import GatewayAuth
from node.gateway.binding import JobBinding
from node.gateway.budget_api import BudgetApi
from node.gateway.config import OAuthConfig
from node.gateway.control import ControlHub
from node.gateway.control_api import ControlApi
from node.gateway.oauth import OAuthVerifier
from node.gateway.orgs_api import OrgsApi
from node.gateway.passwords import PasswordHasher
from node.gateway.paths import PREFIX
from node.gateway.policies_api import PoliciesApi
from node.gateway.reads_api import ReadsApi
from node.gateway.sdk import SdkApi
from node.gateway.store import GatewayStore
from node.gateway.webhooks import WebhookSender
from node.gateway.workflows_api import WorkflowsApi
from node.jobs.orchestrator import Orchestrator
from node.lifecycle import TaskSet
from node.server.egress import EgressPolicy
from node.server.http import ApiFamily

__all__ = ["CODES", "FAMILY", "PREFIX", "GatewayApi", "gateway_error"]

CODES = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 429: "rate_limited",
         502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}


def gateway_error(status: int, message: str, params: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": CODES.get(status, "internal_error"), "message": message}}
    if params:
        body["details"] = params
    return body


# The SDK and dashboard API, its WebSocket control plane and its health probes (`/health` alone
# is the Infernet node's).
FAMILY = ApiFamily("gateway", (PREFIX, "/ws/", "/health/", "/healthz"), gateway_error)


class _Part(Protocol):
    """One of the gateway's API classes: it names its routes."""

    def routes(self) -> list[web.RouteDef]: ...


class GatewayApi:
    def __init__(self, store: GatewayStore, auth: GatewayAuth, hub: ControlHub, orchestrator: Orchestrator,
                 session: aiohttp.ClientSession, reservation_ttl: float,
                 prices: dict[str, tuple[float, float]] | None = None, *,
                 webhooks: WebhookSender | None = None, oauth: OAuthVerifier | None = None,
                 hasher: PasswordHasher | None = None, open_registration: bool = True,
                 verify_returns_secret: bool | None = None, export_dir: Path | None = None,
                 alert_tasks: TaskSet | None = None) -> None:
        self.store = store
        # Security-relevant collaborators (see README "Security"): client-supplied URLs go
        # through the egress policy, OAuth sign-up needs proof, scrypt runs off the loop.
        self.webhooks = webhooks or WebhookSender(EgressPolicy())
        self.oauth = oauth or OAuthVerifier(OAuthConfig())
        self.hasher = hasher or PasswordHasher()
        self.auth = auth
        self.hub = hub
        self.alerts = BudgetAlerts(store, self.webhooks, alert_tasks)
        self.approvals = ApprovalDesk(store, hub, self.alerts.notify)
        self.sdk = SdkApi(store, auth, hub, reservation_ttl, prices or {}, self.alerts.after_spend,
                          verify_returns_secret=verify_returns_secret, approvals=self.approvals)
        self.binding = JobBinding(store, auth, self.sdk.replay)
        self.audit = AuditApi(store, auth, export_dir or Path("audit-exports"))
        # In the order their routes were always registered (aiohttp matches in order).
        self._parts: list[_Part] = [
            AccountsApi(store, self.oauth, self.hasher, open_registration),
            self.sdk,
            WorkflowsApi(store, auth, hub, orchestrator),
            PoliciesApi(store, auth, hub),
            ReadsApi(store, auth, hub),
            OrgsApi(store, auth, hub),
            AlertsApi(store, auth, self.webhooks),
            ControlApi(store, auth, hub),
            BudgetApi(store, auth),
            self.audit,
            ApprovalsApi(self.approvals, auth, self.sdk),
        ]

    def routes(self) -> list[web.RouteDef]:
        return [route for part in self._parts for route in part.routes()]

    async def close(self) -> None:
        await self.alerts.close()  # first: its posts under way use the webhook sender
        await self.hub.close()
        await self.webhooks.close()
        self.hasher.close()
