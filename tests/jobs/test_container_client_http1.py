"""The container client's own HTTP/1.1 connections (node/jobs/http1.py): every way a container
may frame its answer arrives whole, connections are kept alive and reused only when the answer
allows it, credentials in a container URL are sent, and a container that breaks the protocol
fails the call (once, never retried). In process, against raw sockets, no Docker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint, ContainerFailure

BODY = b'{"answer": 42}'


def content_length(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def chunked(body: bytes = BODY) -> bytes:
    half = len(body) // 2
    parts = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + parts + b"0\r\n\r\n"


def until_close(body: bytes = BODY) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body


class Container:
    """A raw HTTP/1.1 peer: reads each request whole, answers with `answer(n)` (n: the request's
    number), closes the connection after it when `close` says so; counts what it sees."""

    def __init__(self, answer: Callable[[int], bytes], close: bool = False) -> None:
        self.answer, self.close = answer, close
        self.connections = 0
        self.requests: list[bytes] = []
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.requests.append(head)
                writer.write(self.answer(len(self.requests)))
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@contextlib.asynccontextmanager
async def serving(container: Container) -> AsyncIterator[ContainerEndpoint]:
    server = await asyncio.start_server(container.handle, "127.0.0.1", 0)
    try:
        yield ContainerEndpoint("c", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", timeout=2)
    finally:
        server.close()


@pytest.mark.parametrize("framing", [content_length, chunked, until_close])
async def test_an_answer_framed_by_length_by_chunks_or_by_closing_arrives_whole(framing):
    container = Container(lambda _: framing(), close=framing is until_close)
    client = ContainerClient()
    async with serving(container) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(3)]
        await client.close()
    assert answers == [{"answer": 42}] * 3


async def test_calls_one_after_another_reuse_one_kept_alive_connection():
    container = Container(lambda _: content_length())
    client = ContainerClient()
    async with serving(container) as endpoint:
        for i in range(5):
            await client.call(endpoint, {"n": i})
        await client.close()
    assert (container.connections, len(container.requests)) == (1, 5)


@pytest.mark.parametrize("framing", [lambda: content_length(extra=b"Connection: close\r\n"), until_close],
                         ids=["Connection: close", "body until close"])
async def test_a_connection_whose_answer_ends_it_is_never_used_again(framing):
    container = Container(lambda _: framing(), close=True)
    client = ContainerClient()
    async with serving(container) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(3)]
        await client.close()
    assert answers == [{"answer": 42}] * 3 and container.connections == 3


async def test_an_idle_connection_is_closed_after_the_keepalive_time():
    container = Container(lambda _: content_length())
    client = ContainerClient(keepalive=0.1)
    async with serving(container) as endpoint:
        await client.call(endpoint, {})
        assert container.open == 1
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not container.open:
                break
        assert container.open == 0
        await client.call(endpoint, {})  # a new connection, not the closed one
        await client.close()
    assert container.connections == 2


async def test_credentials_in_a_container_url_are_sent_as_basic_authorization():
    container = Container(lambda _: content_length())
    client = ContainerClient()
    async with serving(container) as endpoint:
        secret = ContainerEndpoint("c", endpoint.url.replace("http://", "http://me:p%40ss@"))
        await client.call(secret, {})
        await client.close()
    expected = b"Authorization: Basic " + base64.b64encode(b"me:p@ss")
    assert expected in container.requests[0].split(b"\r\n")


@pytest.mark.parametrize(("answer", "message"), [
    (b"SMTP ready\r\n\r\n", "the answer is not HTTP"),
    (content_length()[:-5], "closed in the middle of the answer"),
], ids=["not HTTP", "closed mid-body"])
async def test_a_container_that_breaks_off_or_is_not_http_fails_the_call_once_never_retried(answer, message):
    container = Container(lambda _: answer, close=True)
    client = ContainerClient()
    async with serving(container) as endpoint:
        endpoint.retry_dropped = True  # even where a dropped call is retried: this one was answered
        with pytest.raises(ContainerFailure, match=f"container unreachable: .*{message}"):
            await client.call(endpoint, {})
        await client.close()
    assert len(container.requests) == 1


async def test_bytes_a_container_sends_after_its_answer_close_that_connection_and_the_next_call_opens_one():
    container = Container(lambda _: content_length() + b"junk after the answer")
    client = ContainerClient()
    async with serving(container) as endpoint:
        answers = [await client.stream(endpoint, {"n": i}, lambda _: None) for i in range(2)]
        await client.close()
    assert answers == [BODY, BODY] and container.connections == 2
