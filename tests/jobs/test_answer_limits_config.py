"""`jobs.max_output_bytes` and `jobs.max_stream_bytes`: what a container's answer may make the
node hold is the operator's to set, and the node built from the config enforces it (a node in
this process, a stub container on 127.0.0.1 answering as many bytes as asked)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.app import Node
from node.config import ConfigError, parse_config

OUTPUT_LIMIT = 4096
STREAM_LIMIT = 8192


async def _sized(request: web.Request) -> web.StreamResponse:
    """A JSON string of `data.size` bytes (quotes included); streamed in 1 KiB pieces when asked."""
    data = (await request.json())["data"]
    body = json.dumps("x" * (data["size"] - 2)).encode()
    if not data.get("stream"):
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse()
    await response.prepare(request)
    for at in range(0, len(body), 1024):
        await response.write(body[at:at + 1024])
    await response.write_eof()
    return response


async def _probe(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture(scope="module")
async def base(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/service_output", _sized)
    app.router.add_get("/", _probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    node = Node(parse_config({
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
        "storage": {"path": str(tmp_path_factory.mktemp("limits") / f"{uuid.uuid4().hex[:6]}.db")},
        "manage_containers": False, "startup_wait": 2,
        "gateway": {"enabled": False}, "cre": {"enabled": False}, "registry": {"enabled": False},
        "observe": {"enabled": False},
        "jobs": {"max_output_bytes": OUTPUT_LIMIT, "max_stream_bytes": STREAM_LIMIT},
        "containers": [{"id": "sized", "url": f"http://127.0.0.1:{port}"}],
    }))
    await node.start()
    try:
        yield f"http://127.0.0.1:{node.port}"
    finally:
        await node.stop()
        await runner.cleanup()


async def _job(base: str, size: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/jobs", json={"containers": ["sized"], "data": {"size": size}}) as r:
            job_id = (await r.json())["id"]
        async with session.get(f"{base}/api/jobs", params={"id": job_id, "wait": "10"}) as r:
            return (await r.json())[0]


async def test_a_call_answer_over_the_configured_max_output_bytes_fails_the_job(base: str) -> None:
    failed = await _job(base, OUTPUT_LIMIT + 1)
    assert failed["status"] == "failed"
    assert f"container output over {OUTPUT_LIMIT} bytes" in json.dumps(failed)
    assert (await _job(base, OUTPUT_LIMIT))["status"] == "success"  # the limit itself is allowed


async def test_a_stream_over_the_configured_max_stream_bytes_fails_the_job(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/jobs/stream",
                                json={"containers": ["sized"], "data": {"size": STREAM_LIMIT + 2048,
                                                                        "stream": True}}) as r:
            raw = await r.read()
        job_id = raw.decode().partition("\n")[0]
        async with session.get(f"{base}/api/jobs", params={"id": job_id, "wait": "10"}) as r:
            failed = (await r.json())[0]
    assert failed["status"] == "failed"
    assert f"container output over {STREAM_LIMIT} bytes" in json.dumps(failed)
    assert len(raw) < STREAM_LIMIT + 2048  # the node stopped relaying at the limit


@pytest.mark.parametrize(("key", "value", "bound"), [
    ("max_output_bytes", 100, "greater than or equal to 1024"),
    ("max_stream_bytes", 0, "greater than or equal to 1024"),
    ("max_output_bytes", 2 * 1024 ** 3, f"less than or equal to {1024 ** 3}"),
    ("max_stream_bytes", 32 * 1024 ** 3, f"less than or equal to {16 * 1024 ** 3}"),
])
def test_an_answer_limit_out_of_bounds_is_refused_naming_the_key_and_the_bound(key: str, value: int,
                                                                               bound: str) -> None:
    with pytest.raises(ConfigError, match=f"jobs.{key}: Input should be {bound}"):
        parse_config({"jobs": {key: value}})
