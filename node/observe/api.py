"""Operator endpoints: `GET /metrics` (Prometheus text format), `GET /api/node/status` (one
document: containers, jobs, chain, subsystems, problems), `GET /api/node/jobs` (recent jobs),
and the status page at `/` that renders them.

They show the node's internals (wallet, budgets, errors), so they answer only to loopback
clients, or to anyone presenting `Authorization: Bearer <server.admin_token>`. The page itself
is static and holds nothing; its requests carry the token the operator types in.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node import __version__
from node.observe.metrics import NodeMetrics
from node.observe.queries import recent_jobs
from node.observe.sampler import Sampler
from node.observe.watchdog import Watchdog
from node.server.http import ApiError, ApiFamily, json_response, query_limit
from node.storage import Database

PAGE = resources.files("node.observe").joinpath("static/index.html")


FAMILY = ApiFamily("operator", ("/metrics", "/api/node/"))


def is_loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class OperatorAccess:
    def __init__(self, admin_token: str | None) -> None:
        self._token = admin_token.encode() if admin_token else None

    def check(self, request: web.Request) -> None:
        if is_loopback(request.remote):
            return
        if self._token is None:
            raise ApiError(403, "Operator endpoints answer only on loopback (set server.admin_token to allow others)")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip().encode()
        if not given:
            raise ApiError(401, "Operator token required: Authorization: Bearer <server.admin_token>")
        if not hmac.compare_digest(given, self._token):
            raise ApiError(401, "Invalid operator token")


class ObserveApi:
    def __init__(self, metrics: NodeMetrics, sampler: Sampler, watchdog: Watchdog, db: Database, *,
                 containers: Any, running_jobs: Callable[[], list], subsystems: Callable[[], dict[str, bool]],
                 started: Callable[[], bool], admin_token: str | None) -> None:
        self._metrics = metrics
        self._sampler = sampler
        self._watchdog = watchdog
        self._db = db
        self._containers = containers
        self._running = running_jobs
        self._subsystems = subsystems
        self._started = started
        self._access = OperatorAccess(admin_token)
        self._boot = time.time()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.page),
            web.get("/metrics", self.scrape),
            web.get("/api/node/status", self.status),
            web.get("/api/node/jobs", self.jobs),
        ]

    async def page(self, request: web.Request) -> web.Response:
        """The status page (HTML; reads /api/node/status and /api/node/jobs)."""
        return web.Response(text=PAGE.read_text(), content_type="text/html",
                            headers={"Cache-Control": "no-cache", "X-Frame-Options": "DENY"})

    async def scrape(self, request: web.Request) -> web.Response:
        """Prometheus metrics, text exposition format."""
        self._access.check(request)
        await self._sampler.refresh(max_age=1.0)
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def jobs(self, request: web.Request) -> web.Response:
        """Recent jobs, newest first: `?failed=true` for failures only, `?limit=` (default 20, at most 500)."""
        self._access.check(request)
        failed = request.query.get("failed", "false").lower()
        if failed not in ("true", "false", "1", "0"):
            raise ApiError(400, f"failed: expected true or false, got {failed!r}")
        limit = query_limit(request, 20, 500)
        return json_response({"jobs": await recent_jobs(self._db, limit, failed in ("true", "1"))})

    async def status(self, request: web.Request) -> web.Response:
        """One screen of the node: containers, jobs, chain, subsystems, problems."""
        self._access.check(request)
        return json_response(await self.document())

    async def document(self) -> dict[str, Any]:
        snap = await self._sampler.refresh(max_age=1.0)
        running = self._running()
        by_source: dict[str, int] = {}
        for job in running:
            by_source[job.source] = by_source.get(job.source, 0) + 1
        windows = {}
        for label, seconds in (("1m", 60), ("5m", 300), ("15m", 900)):
            counts = self._metrics.recent.counts(seconds)
            windows[label] = {"finished": counts.finished, "failed": counts.failed, "per_minute": counts.per_minute}
        out: dict[str, Any] = {
            "node": {"version": __version__, "uptime_s": round(time.time() - self._boot, 1),
                     "ready": self._started(), "time": time.time()},
            "subsystems": self._subsystems(),
            "containers": [
                {"id": cid, "status": s.status, "restarts": s.restarts, "url": s.url, "image": s.image,
                 "managed": s.managed, "last_error": s.last_error}
                for cid, s in self._containers.states.items()
            ],
            "jobs": {"running": len(running), "running_by_source": by_source, "recent": windows,
                     "failed_recently": await recent_jobs(self._db, 10, failed=True)},
            "chain": None,
            "problems": [p.view() for p in self._watchdog.active.values()],
            "sampled_at": snap.taken_at,
        }
        chain = snap.chain
        if chain is not None:
            out["chain"] = {
                "address": chain.address, "rpc_up": chain.rpc_up, "rpc_error": chain.rpc_error,
                "head": chain.head, "cursor": chain.cursor, "lag": chain.lag,
                "balance_wei": str(chain.balance_wei) if chain.balance_wei is not None else None,
                "min_balance_wei": str(chain.min_balance_wei), "tracked_subscriptions": chain.tracked,
                "deliveries": chain.deliveries, "last_delivery": chain.last_delivery,
                "payment_address": chain.payment_address,
                "payment_balance_wei": str(chain.payment_balance_wei) if chain.payment_balance_wei is not None
                else None,
                "skipped": chain.skipped, "heads": chain.heads, "rpcs": chain.rpcs,
                "tx_pending": chain.tx_pending, "tx_pending_blocks": chain.tx_pending_blocks,
            }
        return out
