"""Operator endpoints: `GET /metrics` (Prometheus text format), `GET /api/node/status` (one
document: containers, jobs, chain, subsystems, problems), `GET /api/node/jobs` (recent jobs),
`GET /api/node/charts` (the last hour as series), and the status page at `/` that renders them.

The charts draw from the node's own data, so an operator without Prometheus still sees trends:
jobs finished and failed per minute come from the jobs table (they survive a restart); container
call latency and the chain lag are kept by `ChartHistory`, a supervised loop that samples them
every `observe.interval` seconds into a ring of one hour (memory only: they restart empty).

They show the node's internals (wallet, budgets, errors), so they answer only to direct
loopback clients (not through a trusted proxy, no forwarding header: node/server/clients.py),
or to anyone presenting `Authorization: Bearer <server.admin_token>`. The page itself
is static and holds nothing; its requests carry the token the operator types in.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node import __version__
from node.jobs.queries import jobs_per_bucket, recent_jobs
from node.observe.metrics import NodeMetrics
from node.observe.sampler import Sampler
from node.observe.watchdog import Watchdog
from node.server.clients import client_of
from node.server.http import ApiError, ApiFamily, bearer_token, json_response, query_limit
from node.storage import Database

PAGE = resources.files("node.observe").joinpath("static/index.html")


FAMILY = ApiFamily("operator", ("/metrics", "/api/node/"))
CHART_SPAN = 3600.0
# The per-minute job counts scan up to 100,000 rows (about 70 ms on the database's one
# connection, measured): every caller within this many seconds shares one scan.
JOB_CHART_TTL = 10.0


class ChartHistory:
    """Container call latency (mean per interval, from the call histogram's sum and count) and
    the chain's head, cursor and lag (from the sampler), one point per `interval` seconds for the
    last hour."""

    def __init__(self, metrics: NodeMetrics, sampler: Sampler, interval: float) -> None:
        self._metrics = metrics
        self._sampler = sampler
        self.interval = max(float(interval), 0.5)
        self.points: deque[dict[str, Any]] = deque(maxlen=int(CHART_SPAN / self.interval) + 1)
        self._calls: dict[str, tuple[float, float]] = {}  # container -> (seconds, calls) so far

    def _call_totals(self) -> dict[str, tuple[float, float]]:
        totals: dict[str, list[float]] = {}
        for family in self._metrics.call_seconds.collect():
            for sample in family.samples:
                entry = totals.setdefault(sample.labels["container"], [0.0, 0.0])
                if sample.name.endswith("_sum"):
                    entry[0] = sample.value
                elif sample.name.endswith("_count"):
                    entry[1] = sample.value
        return {cid: (s, n) for cid, (s, n) in totals.items()}

    def record(self, now: float | None = None) -> dict[str, Any]:
        """One point: the mean latency (ms) of each container's calls since the last point (None
        without calls), and the chain as last sampled (None when the chain is off)."""
        totals = self._call_totals()
        latency: dict[str, float | None] = {}
        for cid, (seconds, calls) in totals.items():
            before = self._calls.get(cid, (0.0, 0.0))
            n = calls - before[1]
            latency[cid] = round((seconds - before[0]) / n * 1000, 2) if n > 0 else None
        self._calls = totals
        chain = self._sampler.latest.chain
        point = {"t": round(time.time() if now is None else now, 3), "latency_ms": latency,
                 "chain": None if chain is None else {"head": chain.head, "cursor": chain.cursor, "lag": chain.lag,
                                                      "rpc_up": chain.rpc_up}}
        self.points.append(point)
        return point

    async def round(self) -> None:
        """One point; the Supervisor's loop (`observe-charts`) runs it every `interval` seconds.
        The chain is read from the snapshot the watchdog refreshes every interval, never
        refreshed here: with the RPC down a refresh waits for the RPC's timeout under the
        sampler's lock, and a second caller of it would only make scrapes and the status page
        wait longer."""
        self.record()

    def series(self) -> dict[str, Any]:
        points = list(self.points)
        containers = sorted({cid for p in points for cid in p["latency_ms"]})
        with_chain = [p for p in points if p["chain"] is not None]
        return {
            "interval_s": self.interval,
            "latency_ms": {"t": [p["t"] for p in points],
                           "containers": {cid: [p["latency_ms"].get(cid) for p in points] for cid in containers}},
            "chain": None if not with_chain else {
                "t": [p["t"] for p in with_chain],
                **{key: [p["chain"][key] for p in with_chain] for key in ("head", "cursor", "lag", "rpc_up")}},
        }


def is_loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class OperatorAccess:
    def __init__(self, admin_token: str | None) -> None:
        self._token = admin_token.encode() if admin_token else None

    def check(self, request: web.Request) -> None:
        client = client_of(request)
        if client.direct and is_loopback(client.ip):  # a proxy on the host makes everyone loopback
            return
        if self._token is None:
            raise ApiError(403, "Operator endpoints answer only direct loopback connections (set server.admin_token "
                           "to allow others, or to reach them through a proxy)")
        given = (bearer_token(request) or "").encode()
        if not given:
            raise ApiError(401, "Operator token required: Authorization: Bearer <server.admin_token>")
        if not hmac.compare_digest(given, self._token):
            raise ApiError(401, "Invalid operator token")


class ObserveApi:
    def __init__(self, metrics: NodeMetrics, sampler: Sampler, watchdog: Watchdog, db: Database, *,
                 containers: Any, running_jobs: Callable[[], list], subsystems: Callable[[], dict[str, bool]],
                 started: Callable[[], bool], admin_token: str | None,
                 config: Callable[[], dict[str, Any] | None] = lambda: None,
                 reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                 chart_interval: float = 5.0,
                 registry_rpcs: Callable[[], list[dict[str, Any]]] = list) -> None:
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
        self._config = config
        self._reload = reload
        self._registry_rpcs = registry_rpcs  # [{chain_id, rpcs}] of the registry's event watchers
        self.charts = ChartHistory(metrics, sampler, chart_interval)
        self._job_chart: tuple[float, dict[str, Any]] | None = None  # (monotonic time, counts)
        self._job_chart_lock = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.page),
            web.get("/metrics", self.scrape),
            web.get("/api/node/status", self.status),
            web.get("/api/node/jobs", self.jobs),
            *([web.post("/api/node/reload", self.reload)] if self._reload is not None else []),
            web.get("/api/node/charts", self.chart_data),
        ]

    async def reload(self, request: web.Request) -> web.Response:
        """Re-read the config file and apply what can apply live (as SIGHUP does); 422 when the
        file is invalid (nothing changed), with the error naming the field."""
        self._access.check(request)
        assert self._reload is not None
        result = await self._reload()
        return json_response(result, 200 if result.get("ok") else 422)

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

    async def chart_data(self, request: web.Request) -> web.Response:
        """The last hour for the status page's charts: jobs finished and failed per minute (from
        the jobs table), container call latency and the chain lag (sampled every interval)."""
        self._access.check(request)
        return json_response({"now": time.time(), "jobs": await self._job_counts(), **self.charts.series()})

    async def _job_counts(self) -> dict[str, Any]:
        async with self._job_chart_lock:
            if self._job_chart is None or time.monotonic() - self._job_chart[0] > JOB_CHART_TTL:
                counts = await jobs_per_bucket(self._db, time.time(), CHART_SPAN, 60.0)
                self._job_chart = (time.monotonic(), counts)
            return self._job_chart[1]

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
            "config": self._config(),
            "subsystems": self._subsystems(),
            "containers": [
                {"id": cid, "status": s.status, "restarts": s.restarts, "url": s.url, "image": s.image,
                 "managed": s.managed, "last_error": s.last_error}
                for cid, s in self._containers.states.items()
            ],
            "jobs": {"running": len(running), "running_by_source": by_source, "recent": windows,
                     "failed_recently": await recent_jobs(self._db, 10, failed=True)},
            "chain": None,
            "cre_workflows": snap.cre_workflows,  # node/cre/wasm: each workflow, last execution, failures
            "registry_chains": self._registry_rpcs(),  # the event watchers' RPCs, as chain.rpcs
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
