"""Connection limits aiohttp does not have: a deadline for a request's headers, a deadline and a
minimum rate for its body, and a cap on connections per client address.

aiohttp closes an idle keep-alive connection after `keepalive_timeout` (its default, 3,630 s, is
replaced by `server.keepalive_timeout`), but a client that trickles header lines, or a body one
byte every few seconds, keeps a connection (and its buffers, and a handler waiting on the body)
for as long as it likes, and one address could open as many such connections as it liked.
`TimedAppRunner` serves every connection with a request handler that:

- closes it when a request's headers are not complete within `server.header_timeout` seconds of
  their first byte (or of the connection's opening, for its first request);
- refuses a request body (408, then the connection closes) not complete within
  `server.body_timeout` seconds of the end of the headers, or arriving slower than
  `server.body_min_rate` bytes a second on average once `BODY_RATE_GRACE` seconds have passed
  (time the node itself stopped reading, because a handler was not reading yet, is not held
  against the client);
- answers 429 and closes a new connection when its peer already holds
  `server.max_connections_per_ip` (an IPv4 address, or an IPv6 /64; `server.trusted_proxies`
  are not capped: one proxy carries many clients).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from node.logs import get_logger

if TYPE_CHECKING:
    from node.server.fastlane import FastLane

log = get_logger(__name__)

BODY_RATE_GRACE = 2.0  # seconds before the minimum body rate is enforced
_TICK = 0.5


class BodyTimeout(TimeoutError):
    """A request body did not arrive in time. Raised to whoever reads the body (the HTTP
    middleware answers 408); a TimeoutError so that aiohttp, discarding an unread body after
    the answer, treats it as the end of that body."""

    def __init__(self, reason: str, params: dict[str, Any]) -> None:
        super().__init__(reason)
        self.params = params


class ConnectionCounter:
    """Open connections per client key (one per server; shared by its connections)."""

    def __init__(self, cap: int, key: Callable[[str | None], str | None]) -> None:
        self.cap = cap
        self._key = key  # None: not counted (a trusted proxy)
        self._open: Counter[str] = Counter()

    def acquire(self, peer: str | None) -> tuple[bool, str | None]:
        """(admitted, key to release later)."""
        key = self._key(peer) if self.cap else None
        if key is None:
            return True, None
        if self._open[key] >= self.cap:
            return False, None
        self._open[key] += 1
        return True, key

    def release(self, key: str | None) -> None:
        if key is not None:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]


class _DeadlineHandler(RequestHandler):
    header_timeout = 10.0
    body_timeout = 60.0
    body_min_rate = 0
    connections: ConnectionCounter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.lane_task: asyncio.Task[None] | None = None  # the fast lane's answer in progress (node/server/fastlane.py)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._conn_key: str | None = None
        super().connection_made(transport)
        # A connection that never sends a byte gets the header deadline too.
        self._header_timer = self._loop.call_later(self.header_timeout, self._headers_too_slow)
        if self.connections is not None:
            peer = transport.get_extra_info("peername")
            admitted, self._conn_key = self.connections.acquire(peer[0] if isinstance(peer, tuple) else None)
            if not admitted:
                log.warning("http.too_many_connections", peer=str(peer), cap=self.connections.cap)
                body = json.dumps({"error": f"Too many connections from this address (the node's limit is "
                                            f"{self.connections.cap})"}).encode()
                head = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n" % len(body))
                if self.transport is not None:  # set by super().connection_made
                    self.transport.write(head + body)
                self.force_close()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are complete
            self._disarm()
            payload = self._messages[-1][1] if self._messages else None
            if isinstance(payload, StreamReader) and not payload.is_eof() and not self._force_close:
                self._watch_body(payload)
        elif (self._header_timer is None and not self._request_in_progress and not self._messages
              and self._payload_parser is None and not self._upgraded and not self._force_close):
            # bytes of a new request whose headers are not complete yet
            self._header_timer = self._loop.call_later(self.header_timeout, self._headers_too_slow)

    def close(self) -> None:
        """Close once the request being answered has been: aiohttp's own close() ends an idle
        connection at once, and while the fast lane answers, aiohttp's side of it is idle."""
        if self.lane_task is not None:
            self._close = True  # the lane closes it after its answer
            return
        super().close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """aiohttp's, for the fast lane's answer too: wait up to `timeout` for it, then cancel it,
        as aiohttp does its own handlers (which alone it knows of: a lane answer stuck on a slow
        dependency outlived the server, to run on against a closed database)."""
        task = self.lane_task
        if task is not None and not task.done():
            self._force_close = True  # its answer is the connection's last
            await asyncio.wait([task], timeout=timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=timeout)
        await super().shutdown(timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport is not None:
            log.info("http.header_timeout", peer=str(self.transport.get_extra_info("peername")),
                     timeout_s=self.header_timeout)
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    # -- the body deadline ------------------------------------------------------------------

    def _watch_body(self, payload: StreamReader) -> None:
        self._stop_body_watch()
        self._body = payload
        self._body_started = self._body_last = self._loop.time()
        self._body_waited = 0.0  # seconds the node itself was not reading
        self._body_timer = self._loop.call_later(_TICK, self._check_body)

    def _stop_body_watch(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _check_body(self) -> None:
        self._body_timer = None
        payload = self._body
        if payload is None or payload.is_eof() or payload.exception() is not None or self.transport is None:
            self._body = None
            return
        now = self._loop.time()
        if self._reading_paused:  # the node is not reading: not the client's time
            self._body_waited += now - self._body_last
        self._body_last = now
        elapsed = now - self._body_started - self._body_waited
        reason = None
        if elapsed >= self.body_timeout:
            reason = f"Request body not complete within {self.body_timeout:g}s"
        elif (self.body_min_rate and elapsed >= BODY_RATE_GRACE
              and payload.total_bytes < self.body_min_rate * (elapsed - BODY_RATE_GRACE)):
            reason = f"Request body arriving slower than {self.body_min_rate} bytes/s"
        if reason is None:
            self._body_timer = self._loop.call_later(_TICK, self._check_body)
            return
        self._body = None
        log.info("http.body_timeout", peer=str(self.transport.get_extra_info("peername")), reason=reason,
                 received=payload.total_bytes, s=round(elapsed, 1))
        payload.set_exception(BodyTimeout(reason, {"body_timeout": self.body_timeout,
                                                   "body_min_rate": self.body_min_rate}))
        self.close()  # no keep-alive, and no more of this body is read
        self._loop.call_later(2.0, self._force_close_if_open)  # the 408 has had its chance

    def _force_close_if_open(self) -> None:
        if self.transport is not None:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._stop_body_watch()
        if self.connections is not None:
            self.connections.release(self._conn_key)
            self._conn_key = None
        super().connection_lost(exc)


class _TimedServer(Server):
    __slots__ = ()
    _handler_class: type[_DeadlineHandler]  # set by TimedAppRunner._make_server
    _lane: FastLane | None

    def __call__(self) -> RequestHandler:
        if self._lane is not None:  # plain job requests answered by the lane, the rest by the handler
            # The loop's protocol factory: any asyncio.Protocol serves (aiohttp keeps the handler
            # inside, registered by its own connection_made).
            return cast(RequestHandler, self._lane.protocol(
                lambda: self._handler_class(self, loop=self._loop, **self._kwargs)))
        return self._handler_class(self, loop=self._loop, **self._kwargs)


class TimedAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections have header and body deadlines and a per-client cap
    (and the given keep-alive), and, given a `lane`, the fast lane in front of each
    (node/server/fastlane.py)."""

    def __init__(self, app: web.Application, *, header_timeout: float, keepalive_timeout: float,
                 body_timeout: float = 60.0, body_min_rate: int = 0,
                 connections: ConnectionCounter | None = None, lane: FastLane | None = None, **kwargs: Any) -> None:
        # auto_decompress off: request bodies are never inflated (see http.refuse_compressed_body)
        super().__init__(app, keepalive_timeout=keepalive_timeout, auto_decompress=False, **kwargs)
        self._handler_class = type("DeadlineHandler", (_DeadlineHandler,), {
            "header_timeout": header_timeout, "body_timeout": body_timeout, "body_min_rate": body_min_rate,
            "connections": connections})
        self._lane = lane

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _TimedServer
        timed = cast(_TimedServer, server)  # the class just swapped: mypy cannot follow __class__
        timed._handler_class = self._handler_class
        timed._lane = self._lane
        return timed
