"""The fast lane (`server.fast_lane`): the job routes' plain requests served without aiohttp's
request and response machinery.

Why: a polled job costs the node two requests (the submission, one poll), and aiohttp's server
spends about 85 µs of CPU on each (its protocol, parser, request and response objects, the
middleware chain), where a protocol on `httptools` (llhttp, the parser uvicorn uses) that writes
its answer as one buffer spends about 30 µs, most of it the kernel's. That difference was the
largest share left of a job's cost (docs/perf.md).

How it stays one server with one behaviour. Every connection gets a `LaneProtocol` wrapped around
the aiohttp handler it would have had anyway (created and connected at once, so aiohttp's
per-address connection cap, header deadline and shutdown see every connection). The lane answers
a request itself only when it is *plain*: a route a subsystem offered (`Mount.lane`, the same
handlers' code as its aiohttp route), the whole request in one read, HTTP/1.1 with keep-alive, a
Content-Length body of at most `MAX_BODY` bytes, a short query of plain characters, and none of
the headers that ask for more (Transfer-Encoding, Expect, Upgrade, Content-Encoding, Connection
other than keep-alive, a routed middleware's header such as X-Workflow-Id), and no header twice
that may come once (which aiohttp refuses, so neither reader picks one). Anything else, from
the first request that is not plain on, hands the connection to aiohttp, with every byte not yet
answered, so aiohttp answers it exactly as it would have from the start: a slow or split request,
a pipelined one, a big body, another route. The lane takes the connection back only when aiohttp
is idle after answering every request it was handed, each whole and of at most `MAX_TRACKED`
bytes (`_take_back`); otherwise aiohttp keeps it. The lane never waits for bytes, so it needs no
deadlines of its own but the keep-alive idle close. It reads no further than its own limits
(64 headers, 8 KB of head, one request a read), so no read costs it more than it costs aiohttp.

What the lane does for a request is what aiohttp's middleware does (node/server/http.py), through
the same objects: the request id (`RequestIds`), the client address (`ClientAddresses`), the
rate limit (`RateLimiter`), the JSON depth limit, and refusals answered by `error_answer` in the
path's family shape. A request is answered in order; the next is read only once it has been.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

import httptools
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict, MultiDict

from node.logs import get_logger
from node.server import safejson
from node.server.clients import ClientAddress, ClientAddresses
from node.server.http import ErrorShapes, RateLimiter, RequestIds, dumps, error_answer, too_many_requests

log = get_logger(__name__)

MAX_BODY = 64 * 1024  # a bigger body goes to aiohttp (its pre-scan, its body deadline)
MAX_HEAD = 8 * 1024  # the request line and headers; aiohttp's limits apply to anything bigger
MAX_HEADERS = 64
MAX_PENDING = 64 * 1024  # bytes held while a request is being answered (then handed to aiohttp)
MAX_TRACKED = 64 * 1024  # a request handed to aiohttp that is bigger keeps the connection there (_Boundaries)
# Headers that ask for something only aiohttp does (a body in chunks, 100-continue, an upgrade, a
# compressed body to refuse): their requests go to aiohttp, as does one with a Connection header
# other than `keep-alive` (which Python's requests sends on every request).
_AIOHTTP_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-encoding",
                              b"sec-websocket-key1"})  # the old WebSocket draft: aiohttp answers 400
# Headers a request may carry once (RFC 9110), as aiohttp's parser counts them: it refuses a second
# one (400), where llhttp takes both and a reader would have to pick one, so a request with two
# goes to aiohttp. Host is one of them: HTTP/1.1 requires exactly one.
_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
_SERVER = SERVER_SOFTWARE.encode()  # the same Server header as aiohttp's answers
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9=&._~-]*")
_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
            404: b"Not Found", 409: b"Conflict", 413: b"Request Entity Too Large", 429: b"Too Many Requests",
            500: b"Internal Server Error", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class LaneRequest:
    """A plain request, whole: what a lane handler reads."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    client: ClientAddress
    request_id: str


# A lane handler: returns the JSON answer (200) or raises a refusal (ApiError, a domain error).
LaneHandler = Callable[[LaneRequest], Awaitable[Any]]


class FastLane:
    """What every lane connection of one server shares: its routes and the edge's objects."""

    def __init__(self, routes: Mapping[tuple[str, str], LaneHandler], *, shapes: ErrorShapes,
                 limiter: RateLimiter, clients: ClientAddresses, ids: RequestIds, max_json_depth: int,
                 max_body_bytes: int, keepalive_timeout: float, skip_headers: frozenset[str] = frozenset()) -> None:
        self.routes = {(method.encode(), path.encode()): handler for (method, path), handler in routes.items()}
        self.shapes = shapes
        self.limiter = limiter
        self.clients = clients
        self.ids = ids
        self.max_json_depth = max_json_depth
        self.max_body = min(MAX_BODY, max_body_bytes)
        self.keepalive_timeout = keepalive_timeout
        self.skip = _AIOHTTP_HEADERS | {h.lower().encode() for h in skip_headers}
        self._date = (0, b"")
        # Requests the lane answered, and times a connection was handed to aiohttp (docs/perf.md).
        self.answered = self.handed_over = 0

    def date(self) -> bytes:
        """The Date header's value, made once a second."""
        now = int(asyncio.get_running_loop().time())
        if self._date[0] != now:
            self._date = (now, formatdate(usegmt=True).encode())
        return self._date[1]

    def protocol(self, inner: Callable[[], asyncio.Protocol]) -> LaneProtocol:
        return LaneProtocol(self, inner())


class _NotPlain(Exception):
    """Raised from a parser callback to stop reading a request the lane will not answer."""


class _Parsed:
    """httptools' callbacks for the requests of one read. A head past the lane's limits stops the
    parse at once (`_NotPlain`): aiohttp stops at its own limits (128 headers), where reading on
    cost a Python call per header, some 13 ms of the event loop for a 256 KB read of tiny ones."""

    __slots__ = ("begun", "complete", "url", "headers", "body", "head_bytes")

    def __init__(self) -> None:
        self.begun = self.complete = self.head_bytes = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        if self.begun:  # a second request in the read: pipelined, aiohttp's
            raise _NotPlain
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD:
            raise _NotPlain

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if len(self.headers) >= MAX_HEADERS or self.head_bytes > MAX_HEAD or not value.isascii():
            raise _NotPlain
        self.headers.append((name, value.rstrip(b" \t")))  # llhttp strips the whitespace before a value only

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete += 1


class _Boundaries:
    """Follows the bytes handed to aiohttp (with the same parser, llhttp) to know whether they
    end where a request ends: only then may the lane read the next request itself.

    It follows requests of up to `MAX_TRACKED` bytes only: a bigger one (a big body, a flood of
    headers aiohttp refuses at its 128th) leaves the connection with aiohttp for good, unparsed
    here, so a read costs the lane no more than it costs aiohttp (llhttp parsing a 256 KB read
    of tiny headers took a millisecond, where aiohttp's parser stops after a few hundred bytes)."""

    __slots__ = ("_parser", "_unended", "begun", "complete", "lost")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._unended = 0  # bytes fed since the last request ended
        self.begun = self.complete = 0
        self.lost = False

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.complete += 1

    def feed(self, data: bytes) -> None:
        self._unended += len(data)
        if self._unended > MAX_TRACKED:
            self.lost = True
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.lost = True
        if self.begun == self.complete:
            self._unended = 0

    def at_boundary(self) -> bool:
        return not self.lost and self.begun == self.complete


class LaneProtocol(asyncio.Protocol):
    """One connection: plain requests answered here, the rest by `inner` (aiohttp's handler)."""

    def __init__(self, lane: FastLane, inner: asyncio.Protocol) -> None:
        self._lane = lane
        self._inner = cast(Any, inner)  # aiohttp's RequestHandler (our _DeadlineHandler): private parts used
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._handed = False  # aiohttp is serving the connection
        self._refused = False  # for good: the lane never takes this connection back
        self._track: _Boundaries | None = None  # where the requests handed to aiohttp end
        self._busy = False  # a request is being answered
        self._pending = b""  # bytes that came while it was
        self._write_paused = False
        self._idle_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        inner = self._inner
        inner.connection_made(transport)  # the cap per address, the first request's header deadline
        if inner._force_close:  # refused (over the cap): aiohttp has answered and closes it
            self._handed = self._refused = True
            return
        # The idle close is the lane's while it serves (aiohttp's would close a connection whose
        # requests it never saw); aiohttp arms its own again after the first answer it gives.
        if inner._keepalive_handle is not None:
            inner._keepalive_handle.cancel()
            inner._keepalive_handle = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        return cast(bool | None, self._inner.eof_received())

    # -- requests ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._handed:
            if not self._take_back():
                self._feed_inner(data)
                return
        if self._busy:  # a request is being answered: the next waits (it goes to aiohttp then)
            self._pending += data
            if len(self._pending) > MAX_PENDING and self._transport is not None:
                self._transport.pause_reading()
            return
        request = None if self._write_paused else self._parse(data)
        if request is None:
            self._hand_over(data)
            return
        self._busy = True
        inner = self._inner
        inner._disarm()  # the header deadline: this request's head is whole
        inner._request_in_progress = True  # aiohttp's own flag: its handler is busy
        # Held by the handler: a shutdown waits for the answer, then cancels it, and closes the
        # connection only after it (_DeadlineHandler.shutdown, .close).
        inner.lane_task = asyncio.get_running_loop().create_task(self._answer(*request))

    def _parse(self, data: bytes) -> tuple[LaneHandler, bytes, bytes, bytes, _Parsed] | None:
        """The request in `data` when it is whole, alone and plain, with its handler; else None."""
        parsed = _Parsed()
        parser = httptools.HttpRequestParser(parsed)
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # aiohttp answers (or refuses) these
            return None  # (a _NotPlain from a callback comes as an HttpParserCallbackError)
        if parsed.complete != 1:
            return None
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            return None
        path, _, query = parsed.url.partition(b"?")
        method = parser.get_method()
        handler = self._lane.routes.get((method, path))
        if handler is None or _PLAIN_QUERY.fullmatch(query) is None:
            return None
        skip, seen = self._lane.skip, set()
        for name, value in parsed.headers:
            lowered = name.lower()
            if lowered in skip:
                return None
            if lowered == b"connection" and value.lower() != b"keep-alive":  # what `requests` sends
                return None
            if lowered in _SINGLETONS:
                if lowered in seen:
                    return None
                seen.add(lowered)
        if b"host" not in seen:  # HTTP/1.1 requires one (aiohttp refuses a request without)
            return None
        size = sum(len(part) for part in parsed.body)
        if size > self._lane.max_body or (method == b"GET" and size):
            return None
        return handler, method, path, query, parsed

    def _hand_over(self, data: bytes) -> None:
        """aiohttp serves the connection from here, starting with `data`, until it is idle again
        at the end of a request (`_take_back`)."""
        self._handed = True
        self._track = _Boundaries()
        self._lane.handed_over += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        inner = self._inner
        if inner._keepalive_handle is None and inner._keepalive_timeout:
            # Its idle close, until its first answer arms it again (aiohttp closes only while idle).
            loop = asyncio.get_running_loop()
            inner._next_keepalive_close_time = loop.time() + inner._keepalive_timeout
            inner._keepalive_handle = loop.call_at(inner._next_keepalive_close_time, inner._process_keepalive)
        if self._transport is not None:
            self._transport.resume_reading()
        if data:
            self._feed_inner(data)

    def _feed_inner(self, data: bytes) -> None:
        track = self._track
        if track is not None and not track.lost:
            track.feed(data)
            if track.lost:  # an upgrade, or bytes that are not HTTP: aiohttp keeps the connection
                self._refused = True
        self._inner.data_received(data)

    def _take_back(self) -> bool:
        """The lane serves the connection again when aiohttp has answered every request it was
        given, all whole (the bytes it got end where a request ends), and is waiting for the next."""
        if self._refused or self._track is None or not self._track.at_boundary():
            return False
        inner = self._inner
        if (inner._request_in_progress or inner._messages or inner._force_close or inner._close or inner._upgraded
                or inner._payload_parser is not None or inner._waiter is None or inner._waiter.done()
                or inner._header_timer is not None):
            return False
        self._handed, self._track = False, None
        if inner._keepalive_handle is not None:  # the idle close is the lane's again
            inner._keepalive_handle.cancel()
            inner._keepalive_handle = None
        return True

    async def _answer(self, handler: LaneHandler, method_b: bytes, path_b: bytes, query_b: bytes,
                      parsed: _Parsed) -> None:
        lane = self._lane
        headers = CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in parsed.headers)
        method, path = method_b.decode(), path_b.decode()
        request_id = lane.ids.next(headers.get("X-Request-Id"))
        extra: Mapping[str, str] | None = None
        try:
            safejson.max_depth_var.set(lane.max_json_depth)
            client = lane.clients.resolve(self._peer, headers)
            if lane.limiter.limit and (wait := lane.limiter.hit(client.ip, method, path)) is not None:
                raise too_many_requests(wait)  # hit() itself passes the routes the limit exempts
            query: MultiDict[str] = MultiDict()
            if query_b:
                for pair in query_b.split(b"&"):
                    if pair:
                        key, _, value = pair.partition(b"=")
                        query.add(key.decode(), value.decode())
            request = LaneRequest(method, path, query, headers, b"".join(parsed.body), client, request_id)
            status, body = 200, dumps(await handler(request))
        except Exception as exc:  # noqa: BLE001 - answered as aiohttp's middleware would (error_answer)
            status, answer, extra = error_answer(exc, lane.shapes, method, path, request_id)
            body = dumps(answer)
        except asyncio.CancelledError:  # the server stopped waiting for it: no answer, and no connection
            if self._transport is not None:
                self._transport.close()
            self._done()
            raise
        lane.answered += 1
        self._write(status, body, request_id, extra)
        self._done()

    def _write(self, status: int, body: bytes, request_id: str, extra: Mapping[str, str] | None) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        more = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in extra.items()) if extra else b""
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"X-Request-Id: %s\r\n%sDate: %s\r\nServer: %s\r\n\r\n%s" % (
                            status, _REASONS.get(status, b"Unknown"), len(body), request_id.encode(), more,
                            self._lane.date(), _SERVER, body))

    def _done(self) -> None:
        self._busy = False
        inner = self._inner
        inner._request_in_progress, inner.lane_task = False, None
        if inner._handler_waiter is not None and not inner._handler_waiter.done():
            inner._handler_waiter.set_result(None)  # a shutdown was waiting for this answer
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if inner._force_close or inner._close:  # shutting down: the answer was the last
            transport.close()
            return
        pending, self._pending = self._pending, b""
        if pending:  # the client sent more while it waited: aiohttp takes it from here
            self._hand_over(pending)
            return
        loop = asyncio.get_running_loop()
        self._idle_at = loop.time() + self._lane.keepalive_timeout
        if self._idle_timer is None:
            self._idle_timer = loop.call_at(self._idle_at, self._check_idle)

    def _check_idle(self) -> None:
        """The keep-alive idle close, checked lazily: one timer a connection, moved on by each
        answer without being cancelled and armed again."""
        self._idle_timer = None
        if self._handed or self._transport is None:
            return  # aiohttp's own idle close runs meanwhile
        loop = asyncio.get_running_loop()
        if self._busy or loop.time() < self._idle_at:
            self._idle_timer = loop.call_at(max(self._idle_at, loop.time() + 0.5), self._check_idle)
            return
        self._transport.close()
