"""A small HTTP/1.1 client for container calls: one POST, its answer whole or as it arrives,
over keep-alive connections pooled per container address.

Why not aiohttp's client, which the node uses everywhere else: a container call is the one
request the node makes for every job, and through aiohttp's client it cost about 120 µs of CPU
(request and response objects, the connector, a writer task), three times what the same call
costs over a plain asyncio protocol (measured in docs/perf.md). The response is parsed by
`httptools` (llhttp, the parser uvicorn uses); this module only keeps connections and says how
a call failed, in the terms a retry decision needs:

- `Unreached`: the connection could not be opened, nothing was sent;
- `Dropped`: the connection ended before any byte of an answer (the container may or may not
  have received the request);
- `Broken`: the answer began and then failed (the connection ended mid-body, or the answer is
  not HTTP).

Bodies may be Content-Length, chunked or close-delimited. A connection goes back to the pool
only after a whole answer that allows keep-alive; one left idle for `keepalive` seconds is
closed; any failure or cancellation (a timeout, a job cancelled) closes the connection it was on.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httptools

# Where an answer's body goes as it arrives, with the answer's status.
Sink = Callable[[int, bytes], None]


class Unreached(OSError):
    """The connection could not be opened: nothing was sent."""


class Dropped(ConnectionError):
    """The connection ended before any byte of an answer."""


class Broken(ConnectionError):
    """The answer began, then failed (ended early, or not HTTP)."""


@dataclass(frozen=True)
class _Target:
    """What a URL says about where and how to send."""

    key: tuple[str, int, bool]  # host, port, TLS: the pool a connection belongs to
    head: bytes  # "POST <path> HTTP/1.1", Host and any Basic credentials from the URL


_BODYLESS = frozenset({204, 304})


class _Connection(asyncio.Protocol):
    """One connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset(None, None, None)

    def _reset(self, done: asyncio.Future | None, sink: Sink | None,
               deadline: tuple[asyncio.Timeout, float] | None) -> None:
        self._done = done
        self._sink = sink
        self._deadline = deadline  # (timeout, seconds): pushed back by every read (a stream's)
        self._answered = False  # a byte of the answer has arrived
        self._headers_done = False
        self._sized = False  # Content-Length or chunked: else the body ends with the connection
        self._status = 0
        self._keep = False

    def begin(self, payload: bytes, sink: Sink,
              deadline: tuple[asyncio.Timeout, float] | None) -> asyncio.Future:
        """Send a request; the returned future resolves to the status when the whole answer
        has been handed to `sink`."""
        done = self._loop.create_future()
        self._reset(done, sink, deadline)
        assert self.transport is not None
        self.transport.write(payload)
        return done

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._answered = True
        if self._deadline is not None:
            timeout, seconds = self._deadline
            timeout.reschedule(self._loop.time() + seconds)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"the answer is not HTTP: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self._done is None or self._done.done():
            return
        if self._headers_done and not self._sized:  # a close-delimited body ends here
            self._done.set_result(self._status)
        elif not self._answered:
            self._fail(Dropped(f"connection closed before any answer{f': {exc}' if exc else ''}"))
        else:
            self._fail(Broken(f"connection closed in the middle of the answer{f': {exc}' if exc else ''}"))

    def _fail(self, exc: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._sized = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._status in _BODYLESS:
            self._sized = True

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            self._sink(self._status, body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset(self._done, self._sink, self._deadline)
            self._answered = True
            return
        self._keep = self._parser.should_keep_alive() and self._sized
        if self._done is not None and not self._done.done():
            self._done.set_result(self._status)
        self._sink = self._deadline = None  # the call is over: bytes arriving idle reach neither


class Http1Pool:
    """POSTs over pooled keep-alive connections, any number at once per address."""

    def __init__(self, keepalive: float = 15.0) -> None:
        self._keepalive = keepalive
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], _Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], sink: Sink, *,
                   timeout: float | None, read_timeout: bool = False) -> int:
        """POST `body` to `url`; the answer's body goes to `sink` as it arrives; returns the
        status once the answer is whole. `timeout`: for the whole call, or with `read_timeout`
        for the connect and then for each silence between two reads. Raises Unreached,
        Dropped, Broken or TimeoutError."""
        target = self._target(url, headers)
        async with asyncio.timeout(timeout) as deadline:
            connection = await self._connection(target.key)
            try:
                payload = target.head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                status = await connection.begin(
                    payload, sink, (deadline, timeout) if read_timeout and timeout is not None else None)
            except BaseException:
                connection.abort()
                raise
        self._release(target.key, connection)
        return status

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
        self._idle.clear()

    def _target(self, url: str, headers: Mapping[str, str]) -> _Target:
        key = (url, tuple(headers.items()))
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) > 1024:  # Swarm task addresses come and go
                self._targets.clear()
            target = self._targets[key] = _parse(url, headers)
        return target

    async def _connection(self, key: tuple[str, int, bool]) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if not connection.closed:
                return connection
        host, port, tls = key
        loop = asyncio.get_running_loop()
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(loop), host, port, ssl=self._tls if tls else None)
        except OSError as exc:
            raise Unreached(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        return connection

    def _release(self, key: tuple[str, int, bool], connection: _Connection) -> None:
        if not connection.reusable:
            connection.abort()
            return
        idle = self._idle.setdefault(key, [])
        idle.append(connection)

        def expire() -> None:
            connection.abort()
            if connection in idle:
                idle.remove(connection)

        connection.idle_timer = asyncio.get_running_loop().call_later(self._keepalive, expire)


def _parse(url: str, headers: Mapping[str, str]) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unreached(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority += f":{port}"
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if parts.username is not None and not any(name.lower() == "authorization" for name in headers):
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}")
    return _Target((host, port, tls), ("\r\n".join(lines) + "\r\n").encode("latin-1"))
