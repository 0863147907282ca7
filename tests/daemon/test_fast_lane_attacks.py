"""Attacks on the fast lane (node/server/fastlane.py, issue #28): requests the lane must not
read differently from aiohttp, and connections it must not keep or answer after aiohttp would
have stopped. Each test performs the attack against a node in this process (its container an
in-process echo, as in test_fast_lane_inprocess.py) and asserts it fails."""

from __future__ import annotations

import asyncio
import json
import time

from typing import Any

import pytest

from node.app import Node
from node.config import NodeConfig
from node.jobs.api import JobsApi
from node.server.fastlane import LaneProtocol
from node.server.timeouts import _DeadlineHandler
from tests.daemon.test_fast_lane_inprocess import Wire, echo_service, get, post_job


@pytest.fixture
async def node(tmp_path, request):
    """A node with the lane on (and `request.param`'s server settings), its container an echo
    served in this process."""
    runner, url = await echo_service()
    server: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1, **getattr(request, "param", {})}
    node = Node(NodeConfig.model_validate({
        "server": server, "storage": {"path": str(tmp_path / "node.db")},
        "manage_containers": False, "startup_wait": 5,
        "containers": [{"id": "echo", "url": url}], "master_key_path": str(tmp_path / "node.key"),
    }))
    await node.start()
    yield node
    await node.stop()
    await runner.cleanup()


async def closed(wire: Wire, timeout: float = 2.0) -> bool:
    """The node closed the connection (EOF) within `timeout`, with nothing more sent."""
    try:
        return await asyncio.wait_for(wire.reader.read(1), timeout) == b""
    except TimeoutError:
        return False


async def jobs_of_client(node: Node) -> list[str]:
    wire = await Wire.open(node.port)
    wire.send(get("/api/jobs"))
    status, _, body = await wire.answer()
    await wire.close()
    assert status == 200
    return json.loads(body)


# -- requests aiohttp refuses ---------------------------------------------------------------


@pytest.mark.parametrize("header", [b"Content-Type", b"User-Agent", b"Content-Location", b"Max-Forwards"])
async def test_a_submission_with_a_singleton_header_twice_is_refused_400_and_runs_no_job(node, header):
    """aiohttp refuses a second Content-Type, User-Agent, ... (RFC 9110 singletons: which one
    counts is ambiguous, a classic desync between a proxy and a server); the lane must too."""
    wire = await Wire.open(node.port)
    wire.send(post_job(headers=b"%s: a\r\n%s: b\r\n" % (header, header)))
    status, _, body = await wire.answer()
    assert status == 400 and b"Duplicate" in body
    assert await closed(wire)
    assert await jobs_of_client(node) == []


async def test_a_poll_with_an_old_websocket_key_header_is_refused_400(node):
    wire = await Wire.open(node.port)
    wire.send(b"GET /api/jobs?id=x HTTP/1.1\r\nHost: node\r\nSec-WebSocket-Key1: 1\r\n\r\n")
    status, _, body = await wire.answer()
    assert status == 400 and b"Sec-WebSocket-Key1" in body
    assert await closed(wire)


# -- work per read ---------------------------------------------------------------------------


async def test_a_read_of_a_quarter_megabyte_of_tiny_headers_costs_the_lane_itself_under_a_tenth_of_a_millisecond(
        node, monkeypatch):
    """aiohttp stops reading a head at its 128th header (400). The lane parsed every header of a
    read (a Python call each: 50,000 in 256 KB, some 7-13 ms of the event loop per read), and then
    its tracker of aiohttp's request boundaries parsed the read again (half a millisecond), so one
    client reconnecting at line rate held the loop. Measured: the lane's own CPU time per read,
    aiohttp's share (the same with the lane off) taken out."""
    spent: list[float] = []
    aiohttp_spent: list[float] = []

    def timed(receive: Any, into: list[float]) -> Any:
        def data_received(self: Any, data: bytes) -> None:
            started = time.thread_time()
            receive(self, data)
            into.append(time.thread_time() - started)
        return data_received

    monkeypatch.setattr(LaneProtocol, "data_received", timed(LaneProtocol.data_received, spent))
    monkeypatch.setattr(_DeadlineHandler, "data_received", timed(_DeadlineHandler.data_received, aiohttp_spent))
    flood = b"POST /api/jobs HTTP/1.1\r\nHost: node\r\n" + b"a:b\r\n" * (256 * 1024 // 5)
    connections = 5
    for _ in range(connections):
        wire = await Wire.open(node.port)
        wire.send(flood)
        status, _, body = await wire.answer()
        assert status == 400 and b"Too many headers" in body  # aiohttp's refusal, as without the lane
        await wire.close()
    lane_ms = (sum(spent) - sum(aiohttp_spent)) * 1000 / len(spent)
    assert lane_ms < 0.1, f"the lane spent {lane_ms:.2f} ms a read"


# -- what the lane reads from a request ------------------------------------------------------


async def test_a_request_id_with_trailing_whitespace_is_echoed_without_it_as_aiohttp_does(node):
    """RFC 9110: a field value's trailing whitespace is not part of it (aiohttp strips it); the
    lane echoed the client's X-Request-Id with it, and kept it in the id its logs carry."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"GET /api/jobs?id=x HTTP/1.1\r\nHost: node\r\nX-Request-Id: mine-2 \t \r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"\r\nX-Request-Id: mine-2\r\n" in head and node.lane is not None and node.lane.answered == 1
    writer.close()
    await writer.wait_closed()


# -- timers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("node", [{"header_timeout": 0.5, "keepalive_timeout": 5}], indirect=True)
async def test_a_head_trickled_after_the_lane_took_the_connection_back_is_cut_off_at_the_header_timeout(node):
    """The take-back hands the idle close to the lane and leaves no timer of aiohttp's running: a
    head begun then must still meet the header deadline, not the keep-alive close."""
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(post_job())
    assert (await wire.answer())[0] == 200  # the lane's
    wire.send(get("/health"))
    assert (await wire.answer())[0] == 200  # aiohttp's
    wire.send(post_job())
    assert (await wire.answer())[0] == 200  # the lane's again
    assert (node.lane.answered, node.lane.handed_over) == (2, 1)
    started = time.monotonic()
    wire.send(b"POST /api/jobs HTTP/1.1\r\nHost: node\r\n")
    assert await closed(wire, timeout=3)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("node", [{"keepalive_timeout": 0.5}], indirect=True)
async def test_an_idle_connection_after_aiohttp_answered_a_request_the_lane_handed_it_is_closed_at_the_keepalive_timeout(
        node):
    wire = await Wire.open(node.port)
    wire.send(post_job())
    assert (await wire.answer())[0] == 200
    wire.send(get("/health"))
    assert (await wire.answer())[0] == 200
    started = time.monotonic()
    assert await closed(wire, timeout=3)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("target", ["/api/jobs#x", "/api/jobs;x", "/api%2Fjobs", "/api/jobs/", "/api//jobs",
                                    "/api/./jobs", "/API/jobs", "/api/jobs?id=a#b", "/api/jobs?id=a%20b",
                                    "/api/jobs?id=a+b", "/api/jobs?id=a;b", "/api/jobs??id=a"])
async def test_a_target_that_is_not_exactly_the_routes_path_and_a_plain_query_is_left_to_aiohttp(node, target):
    """The lane matches the path's bytes exactly and reads only a query of plain characters: a
    target aiohttp (yarl) decodes or normalises is aiohttp's to read, so both never disagree on
    which route or which ids a request names."""
    assert node.lane is not None
    wire = await Wire.open(node.port)
    wire.send(get(target))
    await wire.answer()
    assert (node.lane.answered, node.lane.handed_over) == (0, 1)
    await wire.close()


# -- shutdown --------------------------------------------------------------------------------


async def test_a_lane_answer_stuck_on_a_dependency_at_shutdown_is_cancelled_as_aiohttps_handler_would_be(
        node, monkeypatch):
    """aiohttp waits `shutdown_timeout` for a handler still running when the server stops, then
    cancels it. The lane's answer ran in a task nobody held or cancelled: a submission stuck on
    a slow dependency (a chain RPC, a locked disk: here a handler that hangs) outlived
    `node.stop()`, to run on against a closed database or be destroyed pending with the loop."""

    async def stuck(*args: Any) -> Any:
        await asyncio.sleep(60)

    monkeypatch.setattr(JobsApi, "_create", stuck)
    wire = await Wire.open(node.port)
    wire.send(post_job())
    await asyncio.sleep(0.2)
    assert node.lane is not None and node.lane.handed_over == 0
    started = time.monotonic()
    await node.stop()
    assert time.monotonic() - started < 5
    assert not [task for task in asyncio.all_tasks() if "LaneProtocol._answer" in repr(task.get_coro())]
    assert await closed(wire, timeout=1)
    node.stop = _stopped  # type: ignore[method-assign]  # the fixture's stop: done here


async def _stopped() -> None:
    return None
