"""Health probes (seed 002): `/healthz`, `/health/live`, `/health/ready`, `/health/startup`.
(`/health` itself is the Infernet node's `{"status": "healthy"}`, served by the jobs API.)

Readiness checks each dependency (SQLite writable, the Docker engine when containers are
managed, the chain RPC when the chain is enabled) and answers 503 with each one's status when
one fails. Startup answers 503 until migrations and container start-up are done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.server.http import json_response

Check = Callable[[], Awaitable[bool]]


class HealthApi:
    def __init__(self, checks: dict[str, Check], started: Callable[[], bool], timeout: float = 3.0) -> None:
        self._checks = checks
        self._started = started
        self._timeout = timeout
        self._boot = time.time()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.live),
            web.get("/health/live", self.live),
            web.get("/health/ready", self.ready),
            web.get("/health/startup", self.startup),
        ]

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "uptime_s": round(time.time() - self._boot, 1)})

    async def _run(self, name: str, check: Check) -> tuple[str, dict]:
        started = time.perf_counter()
        try:
            ok = await asyncio.wait_for(check(), self._timeout)
            error = None if ok else "check failed"
        except TimeoutError:
            ok, error = False, f"no answer within {self._timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
            ok, error = False, str(exc)
        result = {"status": "ok" if ok else "unavailable",
                  "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
        if error:
            result["error"] = error
        return name, result

    async def ready(self, request: web.Request) -> web.Response:
        results = dict(await asyncio.gather(*(self._run(n, c) for n, c in self._checks.items())))
        if not self._started():
            results["startup"] = {"status": "unavailable", "error": "node is starting"}
        ok = all(r["status"] == "ok" for r in results.values())
        return json_response({"status": "ok" if ok else "unavailable", "checks": results}, 200 if ok else 503)

    async def startup(self, request: web.Request) -> web.Response:
        if self._started():
            return json_response({"status": "ok"})
        return json_response({"status": "starting"}, 503)
