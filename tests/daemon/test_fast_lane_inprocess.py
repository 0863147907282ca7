"""Which path answers: the fast lane (node/server/fastlane.py) answers plain job requests itself,
hands anything else on the connection to aiohttp, and takes the connection back once aiohttp has
answered what it was handed. tests/daemon/test_fast_lane.py checks from outside that the answers
are the same either way; these count, in process, that the lane is the one answering."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from node.app import Node
from node.config import NodeConfig


async def echo_service() -> tuple[web.AppRunner, str]:
    """A container that answers its input's data (what containers/echo does), in this process."""

    async def output(request: web.Request) -> web.Response:
        return web.json_response((await request.json())["data"])

    app = web.Application()
    app.router.add_post("/service_output", output)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def node(tmp_path, request):
    runner, url = await echo_service()
    lane = getattr(request, "param", True)
    node = Node(NodeConfig.model_validate({
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1, "fast_lane": lane},
        "storage": {"path": str(tmp_path / "node.db")},
        "manage_containers": False, "startup_wait": 5,
        "containers": [{"id": "echo", "url": url}],
        "master_key_path": str(tmp_path / "node.key"),
    }))
    await node.start()
    yield node
    await node.stop()
    await runner.cleanup()


class Wire:
    """One TCP connection, requests written whole, answers read one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Wire:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def post_job(data: object = None, headers: bytes = b"") -> bytes:
    body = json.dumps({"containers": ["echo"], "data": data or {"n": 1}}).encode()
    return (b"POST /api/jobs HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (headers, len(body), body))


def get(target: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: node\r\n\r\n" % target.encode()


async def test_a_submission_and_its_poll_are_answered_by_the_lane(node):
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job({"n": 7}))
    status, headers, body = await wire.answer()
    job = json.loads(body)["id"]
    assert status == 200 and headers["content-type"] == "application/json" and headers["x-request-id"]
    wire.send(get(f"/api/jobs?id={job}&wait=5"))
    status, _, body = await wire.answer()
    assert status == 200 and json.loads(body) == [
        {"id": job, "status": "success", "result": {"container": "echo", "output": {"n": 7}}}]
    assert (node.lane.answered, node.lane.handed_over) == (2, 0)
    await wire.close()


async def test_a_connection_that_asks_another_route_is_handed_to_aiohttp_and_taken_back_after(node):
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job())
    assert (await wire.answer())[0] == 200
    wire.send(get("/health"))
    status, _, body = await wire.answer()
    assert status == 200 and json.loads(body) == {"status": "healthy"}
    assert (node.lane.answered, node.lane.handed_over) == (1, 1)
    wire.send(post_job())  # the same connection: the lane's again
    assert (await wire.answer())[0] == 200
    assert (node.lane.answered, node.lane.handed_over) == (2, 1)
    await wire.close()


async def test_a_request_sent_while_the_lane_answers_another_is_answered_after_it_by_aiohttp(node):
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job())
    job = json.loads((await wire.answer())[2])["id"]
    wire.send(get(f"/api/jobs?id={job}&wait=5"), get("/api/jobs?id=unknown"))  # pipelined: aiohttp takes the second
    first, second = await wire.answer(), await wire.answer()
    assert json.loads(first[2])[0]["id"] == job and json.loads(second[2]) == []
    assert node.lane.handed_over == 1
    await wire.close()


async def test_a_request_binding_a_workflow_is_left_to_the_gateway_on_aiohttp(node):
    assert node.lane is not None and node.config.gateway.enabled
    wire = await Wire.open(node.port)
    wire.send(post_job(headers=b"X-Workflow-Id: wf-1\r\n"))
    status, _, body = await wire.answer()
    assert status == 401 and "X-Workflow-Id" in json.loads(body)["error"]
    assert (node.lane.answered, node.lane.handed_over) == (0, 1)
    await wire.close()


async def test_a_refusal_on_the_lane_is_the_infernet_error_with_the_clients_request_id(node):
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job(headers=b"X-Request-Id: mine-1\r\n").replace(b'"echo"', b'"nope"'))
    status, headers, body = await wire.answer()
    assert status == 400 and json.loads(body) == {"error": "Container not supported",
                                                  "params": {"containers": ["nope"]}}
    assert headers["x-request-id"] == "mine-1" and node.lane.answered == 1
    await wire.close()


@pytest.mark.parametrize("node", [False], indirect=True)
async def test_with_the_lane_off_aiohttp_answers_every_request(node):
    assert node.lane is None
    wire = await Wire.open(node.port)
    wire.send(post_job())
    status, _, body = await wire.answer()
    assert status == 200 and "id" in json.loads(body)
    await wire.close()


async def test_a_submission_saying_connection_keep_alive_as_python_requests_does_is_answered_by_the_lane(node):
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job(headers=b"Connection: keep-alive\r\n"))
    assert (await wire.answer())[0] == 200
    wire.send(post_job(headers=b"Connection: close\r\n"))  # aiohttp's: it closes after the answer
    status, headers, _ = await wire.answer()
    assert status == 200 and headers.get("connection") == "close"
    assert (node.lane.answered, node.lane.handed_over) == (1, 1)
    await wire.close()
