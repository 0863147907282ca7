"""The start-up probe and the containers, in-process (a node in this loop, a container service
that starts late or never): `/health/startup` is 503 and jobs are refused while the node waits
for its containers to answer, for at most `startup_wait` seconds. A container still silent then
does not keep the node from starting: it is logged (`containers.not_answering`), and jobs naming
it fail until it answers. (This replaced a Docker-marked test in tests/test_zz_probes.py that,
under this name, only ever started with a container that never answered.)"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from node.app import Node
from node.config import parse_config
from tests.helpers import free_port


def _config(tmp_path: Path, url: str, startup_wait: float) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
        "storage": {"path": str(tmp_path / f"{uuid.uuid4().hex[:6]}.db")},
        "manage_containers": False,
        "startup_wait": startup_wait,
        "gateway": {"enabled": False}, "cre": {"enabled": False}, "registry": {"enabled": False},
        "observe": {"enabled": False},
        "containers": [{"id": "remote", "url": url}],
    }


async def _echo_service(port: int) -> web.AppRunner:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response((await request.json())["data"])

    async def probe(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/service_output", echo)
    app.router.add_get("/", probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _status(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_startup_probe_is_503_until_containers_answer(tmp_path: Path, caplog) -> None:
    port = free_port()  # nothing listens here until the service starts, 0.8 s into the start-up
    node = Node(parse_config(_config(tmp_path, f"http://127.0.0.1:{port}", startup_wait=20)))
    service = None
    caplog.set_level(logging.INFO)
    began = time.monotonic()
    starting = asyncio.create_task(node.start())
    try:
        while node.port is None:  # the HTTP server answers before the containers are waited for
            assert not starting.done(), starting
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{node.port}"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - began < 0.8:
                assert await _status(session, "GET", f"{base}/health/startup") == (503, {"status": "starting"})
                status, refused = await _status(session, "POST", f"{base}/api/jobs",
                                                {"containers": ["remote"], "data": {}})
                assert status == 503 and "starting" in refused["error"]
                await asyncio.sleep(0.1)
            assert not starting.done()
            service = await _echo_service(port)
            await asyncio.wait_for(starting, 5)  # once the container answers, not after startup_wait's 20 s
            assert time.monotonic() - began < 5
            assert await _status(session, "GET", f"{base}/health/startup") == (200, {"status": "ok"})
            status, job = await _status(session, "POST", f"{base}/api/jobs",
                                        {"containers": ["remote"], "data": {"n": 1}})
            assert status == 200
            status, jobs = await _status(session, "GET", f"{base}/api/jobs?id={job['id']}&wait=5")
            assert jobs[0]["result"] == {"container": "remote", "output": {"n": 1}}
        assert not [r for r in caplog.records if r.getMessage() == "containers.not_answering"]
    finally:
        if not starting.done():
            starting.cancel()
        await node.stop()
        if service is not None:
            await service.cleanup()


async def test_a_container_silent_through_startup_wait_is_logged_and_the_node_starts_anyway(
        tmp_path: Path, caplog) -> None:
    silent = f"http://127.0.0.1:{free_port()}"  # nothing ever listens here
    node = Node(parse_config(_config(tmp_path, silent, startup_wait=0.5)))
    caplog.set_level(logging.INFO)
    began = time.monotonic()
    await node.start()
    try:
        assert 0.4 < time.monotonic() - began < 5
        [warning] = [r for r in caplog.records if r.getMessage() == "containers.not_answering"]
        assert warning.levelno == logging.WARNING
        base = f"http://127.0.0.1:{node.port}"
        async with aiohttp.ClientSession() as session:
            assert await _status(session, "GET", f"{base}/health/startup") == (200, {"status": "ok"})
            status, job = await _status(session, "POST", f"{base}/api/jobs", {"containers": ["remote"], "data": {}})
            assert status == 200
            status, jobs = await _status(session, "GET", f"{base}/api/jobs?id={job['id']}&wait=5")
            assert jobs[0]["status"] == "failed" and jobs[0]["result"]["error"].startswith("container unreachable")
    finally:
        await node.stop()
