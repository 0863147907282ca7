"""The one container client (node/jobs/client.py): a streaming job reaches its container the way
a called job does, so it is retried when the container never received the call, counted in the
metrics, and fails with the same messages. In process, no Docker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.models import Job
from node.jobs.orchestrator import Orchestrator
from tests.helpers import free_port
from tests.jobs.stores import open_store

WHOLE = b'{"hello": "world"}'


class Calls:
    """A JobObserver that keeps what it heard."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def job_finished(self, job: Job, seconds: float) -> None:
        pass

    def container_called(self, container: str, seconds: float, ok: bool) -> None:
        self.calls.append((container, ok))


@contextlib.asynccontextmanager
async def container(status: int = 200, delay: float = 0.0) -> AsyncIterator[str]:
    """A container streaming its JSON answer in two chunks (after `delay`), answering `status`; yields its URL."""

    async def service_output(request: web.Request) -> web.StreamResponse:
        await request.read()
        await asyncio.sleep(delay)
        if status != 200:
            return web.Response(status=status, text="broken")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"hello": ')
        await response.write(b'"world"}')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/service_output", service_output)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def hangup() -> AsyncIterator[str]:
    """A port whose peer accepts and closes at once (a dead Swarm task behind Docker's proxy)."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def orchestrator(tmp_path, endpoint: ContainerEndpoint) -> AsyncIterator[tuple[Orchestrator, Calls]]:
    db, store = await open_store(tmp_path)
    client = ContainerClient()
    try:
        node = Orchestrator({endpoint.id: endpoint}, client, store)
        calls = Calls()
        node.observers.append(calls)
        yield node, calls
    finally:
        await client.close()
        await db.close()


async def streamed(node: Orchestrator, container: str) -> tuple[bytes, dict[str, Any]]:
    """Run a streaming job to its end; the bytes relayed and the job's committed wire form."""
    job, stream = await node.stream(container, {"x": 1}, client="127.0.0.1")
    received = b""
    try:
        async for chunk in stream:
            received += chunk
    finally:
        await stream.close(None)
    return received, job.to_wire(False)


async def test_a_stream_refused_at_connect_is_retried_on_another_task_and_succeeds(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused, the container never saw it
    async with container() as alive:
        endpoint = ContainerEndpoint("svc", dead)
        endpoint.set_urls([dead, alive])
        async with orchestrator(tmp_path, endpoint) as (node, _):
            runs = [await streamed(node, "svc") for _ in range(4)]  # tasks taken in turn: dead twice
    assert [received for received, _ in runs] == [WHOLE] * 4
    assert [job["result"] for _, job in runs] == [{"container": "svc", "output": {"output": WHOLE.decode()}}] * 4


async def test_a_swarm_stream_dropped_before_any_answer_is_retried_on_another_task(tmp_path):
    async with hangup() as dead, container() as alive:
        endpoint = ContainerEndpoint("svc", dead, retry_dropped=True)
        endpoint.set_urls([dead, alive])
        async with orchestrator(tmp_path, endpoint) as (node, _):
            runs = [await streamed(node, "svc") for _ in range(4)]  # tasks taken in turn: dead twice
    assert [(received, job["status"]) for received, job in runs] == [(WHOLE, "success")] * 4


async def test_a_stream_is_counted_in_the_container_call_metrics_as_a_call_is(tmp_path):
    async with container() as url:
        async with orchestrator(tmp_path, ContainerEndpoint("svc", url)) as (node, calls):
            await streamed(node, "svc")
            job = await node.run(["svc"], {"x": 1}, client="test", source="test")
    assert job.status == "success"
    assert calls.calls == [("svc", True), ("svc", True)]


async def test_a_failed_stream_is_counted_as_a_failed_call_with_the_calls_message(tmp_path):
    async with container(status=500) as url:
        async with orchestrator(tmp_path, ContainerEndpoint("svc", url)) as (node, calls):
            _, streamed_job = await streamed(node, "svc")
            called = await node.run(["svc"], {"x": 1}, client="test", source="test")
    assert calls.calls == [("svc", False), ("svc", False)]
    assert streamed_job["result"]["error"] == called.result["error"] == "container answered HTTP 500: broken"


async def test_a_silent_container_times_out_with_the_same_message_streamed_or_called(tmp_path):
    async with container(delay=0.6) as url:
        async with orchestrator(tmp_path, ContainerEndpoint("svc", url, timeout=0.2)) as (node, calls):
            _, streamed_job = await streamed(node, "svc")
            called = await node.run(["svc"], {"x": 1}, client="test", source="test")
    assert streamed_job["result"]["error"] == called.result["error"] == "container timed out after 0.2s"
    assert calls.calls == [("svc", False), ("svc", False)]
