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

A container may be remote, https or hostile, so what it sends is bounded: the head of an answer
(status line and headers, interim 1xx answers included) at `MAX_HEAD_BYTES` (aiohttp's client
allowed 8190 bytes a line and 128 headers), the body at the caller's `limit` (`TooLarge`, as soon
as a Content-Length announces more or the bytes pass it), the whole call at its timeout. What the
node sends is checked as well: a URL path or a header that would add or break a line of the
request fails the call before anything is sent. https verifies the certificate and the host name
against the system's CAs, as aiohttp's client did.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

# Where an answer's body goes as it arrives, with the answer's status.
Sink = Callable[[int, bytes], None]


class Unreached(OSError):
    """The connection could not be opened: nothing was sent."""


class Unsendable(Unreached):
    """The request cannot be written as HTTP/1.1 (a header or path would break a line): nothing was sent,
    and sending it again would not help."""


class Dropped(ConnectionError):
    """The connection ended before any byte of an answer."""


class Broken(ConnectionError):
    """The answer began, then failed (ended early, or not HTTP)."""


class TooLarge(Broken):
    """The answer's body is over the caller's limit."""


# An answer's status line and headers, 1xx answers before it included; the same again for a
# chunked body's trailers, and 64 bytes a chunk for its chunk lines.
MAX_HEAD_BYTES = 64 * 1024
_CHUNK_LINE_BYTES = 64


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
        self.reused = False  # it has carried a call before
        self.idle_timer: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._limit = 0
        self._wire = self._body = self._chunks = 0  # this call's: bytes received, of them body, chunks
        self._refused: Broken | None = None  # why a callback stopped the parser
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
              deadline: tuple[asyncio.Timeout, float] | None, limit: int) -> asyncio.Future:
        """Send a request; the returned future resolves to the status when the whole answer
        has been handed to `sink` (at most `limit` bytes of body)."""
        done = self._loop.create_future()
        self._reset(done, sink, deadline)
        self._limit, self._refused = limit, None
        self._wire = self._body = self._chunks = 0
        assert self.transport is not None
        self.transport.write(payload)
        return done

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed

    @property
    def usable(self) -> bool:
        """Not closed, nor closing (an end of connection read but not yet handled)."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport (TCP or TLS, asyncio's or uvloop's) is a Transport;
        # the Protocol API types it as the base class.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._done is None or self._done.done():  # no call waits: whatever this is, the next must not read it
            self.abort()
            return
        self._answered = True
        if self._deadline is not None:
            timeout, seconds = self._deadline
            if not timeout.expired():  # expired: the call is being cancelled, this read is too late
                timeout.reschedule(self._loop.time() + seconds)
        self._wire += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("the container switched protocols (HTTP 101): an answer must be HTTP/1.1"))
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(self._refused or Broken(f"the answer is not HTTP: {exc}"))
            self.abort()
        else:
            # All that is not body: a head (a header line, or headers, without end), or chunk
            # lines and trailers without end. Bounded here: the parser keeps a header whole.
            if not self._headers_done and self._wire > MAX_HEAD_BYTES:
                self._fail(Broken(f"the answer's head over {MAX_HEAD_BYTES} bytes"))
                self.abort()
            elif self._wire - self._body > 2 * MAX_HEAD_BYTES + _CHUNK_LINE_BYTES * self._chunks:
                self._fail(Broken(f"the answer's chunk lines or trailers over {MAX_HEAD_BYTES} bytes"))
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

    def _refuse(self, exc: Broken) -> None:
        """Stop the parser from a callback (feed_data raises; data_received fails the call with `exc`)."""
        self._refused = exc
        raise exc

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self._sized = True
            if value.strip().isdigit() and int(value) > self._limit:
                self._refuse(TooLarge(f"container output over {self._limit} bytes (Content-Length {int(value)})"))
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            self._sized = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        if self._status in _BODYLESS:
            self._sized = True

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_begin(self) -> None:
        if self._done is None or self._done.done():  # bytes after the answer (in its last read)
            self._keep = False
            self.closed = True

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > self._limit:
            self._refuse(TooLarge(f"container output over {self._limit} bytes"))
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

    def __init__(self, keepalive: float = 15.0, tls: ssl.SSLContext | None = None) -> None:
        self._keepalive = keepalive
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[tuple[str, tuple[tuple[str, str], ...]], _Target] = {}
        self._tls = tls  # None: the system's CAs, made at the first https call

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], sink: Sink, *,
                   timeout: float | None, limit: int, read_timeout: bool = False) -> int:
        """POST `body` to `url`; the answer's body (at most `limit` bytes) goes to `sink` as it
        arrives; returns the status once the answer is whole. `timeout`: for the whole call, or
        with `read_timeout` for the connect and then for each silence between two reads. Raises
        Unreached, Dropped, Broken (TooLarge) or TimeoutError."""
        target = self._target(url, headers)
        async with asyncio.timeout(timeout) as deadline:
            connection = await self._connection(target.key)
            if connection.reused:
                # Its end may have been read but not yet handled (a container closing right
                # after its answer, without "Connection: close"): one turn of the loop lets it
                # be, and the call goes on another connection instead of failing as dropped.
                await asyncio.sleep(0)
                if not connection.usable:
                    connection.abort()
                    connection = await self._connection(target.key)
            try:
                payload = target.head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                status = await connection.begin(
                    payload, sink, (deadline, timeout) if read_timeout and timeout is not None else None, limit)
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
            if connection.usable:
                connection.reused = True
                return connection
            connection.abort()
        if idle is not None and not idle:
            del self._idle[key]
        host, port, tls = key
        loop = asyncio.get_running_loop()
        if tls and self._tls is None:  # loads the CA files: not on the loop
            self._tls = await asyncio.to_thread(_verified_context)
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
            if not idle and self._idle.get(key) is idle:  # Swarm task addresses come and go
                del self._idle[key]

        connection.idle_timer = asyncio.get_running_loop().call_later(self._keepalive, expire)


def _verified_context() -> ssl.SSLContext:
    """What aiohttp's client used by default: the system's CAs, certificate and host name checked."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _checked(what: str, text: str, spaces: bool = False) -> str:
    """`text`, if it cannot add or break a line of the request: no control character (CR, LF,
    NUL, DEL...), no space or tab unless `spaces`, latin-1 only. Else Unsendable: nothing was sent."""
    for at, c in enumerate(text):  # the value is not told: it may be a secret (a bearer token)
        if (c <= " " or c == "\x7f" or c > "\xff") and not (spaces and c in " \t"):
            raise Unsendable(f"the request's {what} has a character HTTP/1.1 does not allow there "
                            f"(U+{ord(c):04X} at {at}); nothing was sent")
    return text


def _parse(url: str, headers: Mapping[str, str]) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:  # the URL is not told: it may hold a password
        raise Unsendable(f"not an http(s) URL with a host (scheme {parts.scheme!r})")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise Unsendable(f"not a valid port in the URL of host {parts.hostname!r}") from None
    host = parts.hostname
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority += f":{port}"
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    lines = [f"POST {_checked('path', path)} HTTP/1.1", f"Host: {_checked('Host', authority)}"]
    lines += [f"{_checked('header name', name)}: {_checked(name, value, spaces=True)}" for name, value in headers.items()]
    if parts.username is not None and not any(name.lower() == "authorization" for name in headers):
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(credentials).decode()}")
    return _Target((host, port, tls), ("\r\n".join(lines) + "\r\n").encode("latin-1"))
