"""Connection timeouts aiohttp does not have: a deadline for a request's headers.

aiohttp closes an idle keep-alive connection after `keepalive_timeout` (its default, 3,630 s, is
replaced by `server.keepalive_timeout`), but a client that trickles header lines one at a time
keeps a connection (and its buffers) for as long as it likes. `TimedAppRunner` serves every
connection with a request handler that closes it when a request's headers are not complete
within `server.header_timeout` seconds of their first byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from node.logs import get_logger

log = get_logger(__name__)


class _HeaderDeadlineHandler(RequestHandler):
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are complete
            self._disarm()
        elif (self._header_timer is None and not self._request_in_progress and not self._messages
              and self._payload_parser is None and not self._upgraded and not self._force_close):
            # bytes of a new request whose headers are not complete yet
            self._header_timer = self._loop.call_later(self.header_timeout, self._headers_too_slow)

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

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _TimedServer(Server):
    __slots__ = ()

    def __call__(self) -> RequestHandler:
        return self._handler_class(self, loop=self._loop, **self._kwargs)  # type: ignore[attr-defined]


class TimedAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections have a header deadline (and the given keep-alive)."""

    def __init__(self, app: web.Application, *, header_timeout: float, keepalive_timeout: float,
                 **kwargs: Any) -> None:
        # auto_decompress off: request bodies are never inflated (see http.refuse_compressed_body)
        super().__init__(app, keepalive_timeout=keepalive_timeout, auto_decompress=False, **kwargs)
        self._handler_class = type("HeaderDeadlineHandler", (_HeaderDeadlineHandler,),
                                   {"header_timeout": header_timeout})

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _TimedServer
        server._handler_class = self._handler_class  # type: ignore[attr-defined]
        return server
