"""`GET /resources[?model_id=]` as the Infernet node 1.4 answers it: a map of container id to the
container's own `/service-resources` answer, failing containers left out. In-process, with small
aiohttp services standing in for the containers."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.jobs.api import FAMILY
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.resources import ResourcesApi
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, make_middlewares


def service(answer) -> web.Application:
    async def resources(request: web.Request) -> web.StreamResponse:
        return await answer(request)

    app = web.Application()
    app.router.add_get("/service-resources", resources)
    return app


async def models(request: web.Request) -> web.Response:
    model_id = request.query.get("model_id")
    if model_id is not None:
        return web.json_response({"supported": model_id == "llama"})
    return web.json_response({"models": ["llama"], "bearer": request.headers.get("Authorization")})


async def broken(request: web.Request) -> web.Response:
    return web.json_response({"error": "down"}, status=500)


async def not_json(request: web.Request) -> web.Response:
    return web.Response(text="<html>hello</html>")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({"late": True})


async def start(apps: dict[str, tuple[web.Application, str | None]]):
    servers, endpoints = [], {}
    for cid, (app, bearer) in apps.items():
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        endpoints[cid] = ContainerEndpoint(id=cid, url=str(server.make_url("")).rstrip("/"), bearer=bearer)
    session = aiohttp.ClientSession()
    node = web.Application(middlewares=make_middlewares(ErrorShapes([FAMILY]), RateLimiter(RateLimitConfig()), 64))
    node.add_routes(ResourcesApi(lambda: endpoints, session, timeout=1.0).routes())
    client = TestClient(TestServer(node, host="127.0.0.1"))
    await client.start_server()
    return client, servers, session


async def test_resources_maps_each_container_to_its_answer_and_leaves_failing_ones_out():
    client, servers, session = await start({
        "llm": (service(models), None), "remote": (service(models), "tok"), "broken": (service(broken), None),
        "html": (service(not_json), None), "slow": (service(slow), None)})
    try:
        started = asyncio.get_running_loop().time()
        resp = await client.get("/resources")
        assert resp.status == 200
        assert await resp.json() == {"llm": {"models": ["llama"], "bearer": None},
                                     "remote": {"models": ["llama"], "bearer": "Bearer tok"}}
        assert asyncio.get_running_loop().time() - started < 3  # a slow container is not waited for
        resp = await client.get("/resources", params={"model_id": "llama"})
        assert await resp.json() == {"llm": {"supported": True}, "remote": {"supported": True}}
        resp = await client.get("/resources", params={"model_id": "x" * 600})
        assert resp.status == 400 and (await resp.json())["error"].startswith("model_id:")
    finally:
        await client.close()
        await session.close()
        for server in servers:
            await server.close()
