"""The job path after its cost cuts (docs/perf.md) answers exactly what it answered before:
values orjson cannot encode still travel exactly, a finished job's poll answer is its committed
state, and the checks decided once per route still apply to the routes they guard."""

from __future__ import annotations

import contextlib
import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.jobs.api import JobsApi
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, RouteMiddleware, make_middlewares, prefix_rate_limit
from tests.jobs.stores import open_store

HUGE = 2**70 + 1  # a chain value: beyond what orjson encodes


@contextlib.asynccontextmanager
async def jobs_node(tmp_path, output, rate_limit: int = 0):
    """A jobs API in process, beside a container answering every call with `output`."""
    container = web.Application()

    async def service_output(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(output), content_type="application/json")

    container.router.add_post("/service_output", service_output)
    db, store = await open_store(tmp_path)
    containers = ContainerClient()
    async with TestServer(container) as served:
        orchestrator = Orchestrator({"c": ContainerEndpoint("c", str(served.make_url("")).rstrip("/"))},
                                    containers, store)
        api = JobsApi(orchestrator, store, None, max_batch=10, status_allowed_ips=[])  # type: ignore[arg-type]
        limiter = RateLimiter(RateLimitConfig(num_requests=rate_limit, period=60))
        app = web.Application(middlewares=make_middlewares(ErrorShapes(), limiter))
        app.add_routes(api.routes())
        async with TestClient(TestServer(app)) as client:
            yield client, store
        await containers.close()
    await db.close()


async def finished(client: TestClient, job_id: str) -> dict:
    response = await client.get("/api/jobs", params={"id": job_id, "wait": "5"})
    assert response.status == 200
    return (await response.json())[0]


async def test_a_container_integer_beyond_64_bits_comes_back_exact_from_memory_and_from_the_database(tmp_path):
    async with jobs_node(tmp_path, {"wei": HUGE, "keyed": {"1": HUGE}}) as (client, store):
        response = await client.post("/api/jobs", json={"containers": ["c"], "data": {"n": HUGE}})
        job_id = (await response.json())["id"]
        job = await finished(client, job_id)
        assert job["status"] == "success" and job["result"]["output"] == {"wei": HUGE, "keyed": {"1": HUGE}}
        row = await store._db.fetchone("SELECT result FROM jobs WHERE id = ?", (job_id,))
        assert json.loads(row["result"])["output"]["wei"] == HUGE


async def test_routed_middlewares_guard_exactly_the_routes_they_apply_to_and_unrouted_paths_by_path():
    seen: list[tuple[str, str]] = []

    async def mark(request: web.Request, handler):
        seen.append((request.method, request.path))
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    signins = RateLimiter(RateLimitConfig(num_requests=2, period=60))
    app = web.Application(middlewares=make_middlewares(ErrorShapes(), RateLimiter(RateLimitConfig()), routed=[
        prefix_rate_limit(signins, ("/api/auth/",)),
        RouteMiddleware(lambda method, path: method == "POST" and path in ("/api/jobs", "/nowhere"), mark)]))
    app.router.add_post("/api/jobs", ok)
    app.router.add_get("/api/jobs", ok)
    app.router.add_post("/api/auth/{step}", ok)
    async with TestClient(TestServer(app)) as client:
        for _ in range(3):
            assert (await client.post("/api/jobs")).status == 200
            assert (await client.get("/api/jobs")).status == 200
        assert (await client.post("/nowhere")).status == 404  # no route: judged by its path
        assert seen == [("POST", "/api/jobs")] * 3 + [("POST", "/nowhere")]
        statuses = [(await client.post(f"/api/auth/{step}")).status for step in ("a", "b", "c")]
        assert statuses == [200, 200, 429]  # one limit for the route, whatever its step
        unrouted = [(await client.post("/api/auth/x/y")).status for _ in range(3)]
        assert unrouted == [404, 404, 429]  # no route, but under the prefix: limited by its path


async def test_the_rate_limit_decided_per_route_still_counts_every_request_and_spares_exempt_routes():
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    limiter = RateLimiter(RateLimitConfig(num_requests=2, period=60), exempt={("PUT", "/api/status")})
    app = web.Application(middlewares=make_middlewares(ErrorShapes(), limiter))
    app.router.add_get("/api/jobs", ok)
    app.router.add_put("/api/status", ok)
    async with TestClient(TestServer(app)) as client:
        assert [(await client.get("/api/jobs")).status for _ in range(3)] == [200, 200, 429]
        assert [(await client.put("/api/status")).status for _ in range(3)] == [200, 200, 200]
        limiter.limit = 0  # a config reload turning it off takes effect on the next request
        assert (await client.get("/api/jobs")).status == 200
