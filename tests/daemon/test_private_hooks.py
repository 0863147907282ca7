"""The node leans on a few private internals of aiohttp and aiosqlite (pyproject.toml bounds
their versions and names each one). These fast in-process tests exercise each hook exactly as
the node does, so an upgrade that renames or reshapes one fails here, by name, rather than as a
node that silently stops enforcing a deadline or reports the wrong port."""

from __future__ import annotations

import asyncio
import sqlite3

from aiohttp import web

from node.server.clients import ClientAddresses
from node.server.config import RateLimitConfig
from node.server.fastlane import FastLane, LaneRequest
from node.server.http import ErrorShapes, RateLimiter, RequestIds
from node.server.timeouts import BodyTimeout, ConnectionCounter, TimedAppRunner
from node.storage import Database


async def _hello(request: web.Request) -> web.Response:
    try:
        return web.Response(text=await request.text() or "hello")
    except BodyTimeout as exc:  # the node's HTTP middleware answers it the same way
        return web.Response(status=408, text=str(exc))


async def _serve(**limits) -> tuple[TimedAppRunner, web.TCPSite, int]:
    app = web.Application()
    app.router.add_route("*", "/", _hello)
    runner = TimedAppRunner(app, keepalive_timeout=5, access_log=None, handle_signals=False, **limits)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    # node/app.py reads the bound port this way (server.port 0): aiohttp's TCPSite._server
    port = site._server.sockets[0].getsockname()[1]
    return runner, site, port


async def _read_all(reader: asyncio.StreamReader, within: float) -> bytes:
    return await asyncio.wait_for(reader.read(), within)


async def test_the_port_bound_for_port_0_is_read_from_the_sites_private_server_and_answers():
    runner, _site, port = await _serve(header_timeout=5)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await _read_all(reader, 5)).endswith(b"hello")
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_connection_whose_headers_stall_is_closed_at_the_header_timeout():
    # _TimedServer.__call__ (Server._handler_class, _kwargs) and RequestHandler's _request_count,
    # _messages, _payload_parser, _request_in_progress, _upgraded, _force_close
    runner, _site, port = await _serve(header_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = asyncio.get_running_loop().time()
        assert await _read_all(reader, 5) == b""
        assert asyncio.get_running_loop().time() - started < 2
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_body_that_stops_arriving_is_refused_with_408_at_the_body_timeout():
    # the body watch: RequestHandler._messages (the payload), _reading_paused, StreamReader.total_bytes
    runner, _site, port = await _serve(header_timeout=5, body_timeout=0.6)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        answer = await _read_all(reader, 6)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_second_connection_over_the_per_address_cap_is_answered_429():
    runner, _site, port = await _serve(header_timeout=5, connections=ConnectionCounter(1, lambda peer: peer))
    try:
        _first_reader, first = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        reader, second = await asyncio.open_connection("127.0.0.1", port)
        assert (await _read_all(reader, 5)).startswith(b"HTTP/1.1 429")
        first.close()
        second.close()
    finally:
        await runner.cleanup()


async def test_the_fast_lane_hands_a_connection_to_aiohttp_takes_it_back_and_lets_its_idle_close_run():
    # LaneProtocol on RequestHandler's _keepalive_handle, _keepalive_timeout, _next_keepalive_close_time,
    # _process_keepalive, _waiter, _close, _handler_waiter, _messages, _request_in_progress
    async def lane_hello(request: LaneRequest) -> dict[str, str]:
        return {"lane": request.path}

    lane = FastLane({("GET", "/lane"): lane_hello}, shapes=ErrorShapes(), limiter=RateLimiter(RateLimitConfig()),
                    clients=ClientAddresses(), ids=RequestIds(), max_json_depth=64, max_body_bytes=1024,
                    keepalive_timeout=0.5)
    app = web.Application()
    app.router.add_route("*", "/", _hello)
    runner = TimedAppRunner(app, header_timeout=5, keepalive_timeout=0.5, access_log=None, handle_signals=False,
                            lane=lane)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for target in ("/lane", "/", "/lane", "/"):
            writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            assert body == (b'{"lane":"/lane"}' if target == "/lane" else b"hello"), body
        assert (lane.answered, lane.handed_over) == (2, 2)
        assert await _read_all(reader, 5) == b""  # aiohttp's idle close, re-armed after the hand-over
        writer.close()
    finally:
        await runner.cleanup()


async def test_run_in_transaction_runs_the_unit_in_aiosqlites_thread_and_commits_it(tmp_path):
    # node/storage/db.py: aiosqlite Connection._execute(fn, Connection._conn)
    db = Database(str(tmp_path / "hooks.db"))
    await db.open()
    try:
        def unit(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TABLE t (v INTEGER)")
            conn.execute("INSERT INTO t VALUES (41), (1)")
            return conn.execute("SELECT SUM(v) FROM t").fetchone()[0]

        assert await db.run_in_transaction(unit) == 42
    finally:
        await db.close()
    check = sqlite3.connect(tmp_path / "hooks.db")
    assert check.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2  # committed, seen by another connection
    check.close()
