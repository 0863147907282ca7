"""A container that misbehaves, on purpose or not, against the node's own HTTP/1.1 client
(node/jobs/http1.py through node/jobs/client.py): each test performs the misbehaviour with a raw
socket peer on 127.0.0.1 and asserts the node bounds it (memory, time, sockets), fails the call
with a message that says why, and retries only a call the container never received. Also what
the node itself sends: nothing an operator or a client controls can add a header line. In
process, no Docker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint, ContainerFailure
from node.jobs.http1 import MAX_HEAD_BYTES

BODY = b'{"answer": 42}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
MiB = 1 << 20

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A raw socket peer: `answer(reader, writer)` runs for each request read whole; counts
    connections, requests and the connections still open."""

    def __init__(self, answer: Handler, keep: bool = True) -> None:
        self.answer, self.keep = answer, keep
        self.connections = self.open = self.most_open = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
                if not self.keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def closed(self) -> None:
        """Wait (up to 2 s) until the node has closed every connection it opened."""
        for _ in range(100):
            if not self.open:
                return
            await asyncio.sleep(0.02)


def send(data: bytes) -> Handler:
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
    return answer


def endless(head: bytes, piece: bytes) -> Handler:
    """`head`, then `piece` again and again until the node stops reading."""
    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        while True:
            writer.write(piece)
            await writer.drain()
    return answer


@contextlib.asynccontextmanager
async def serving(peer: Peer, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                  timeout: float = 5.0) -> AsyncIterator[ContainerEndpoint]:
    server = await asyncio.start_server(peer.handle, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    authority = f"[{host}]" if ":" in host else host
    try:
        yield ContainerEndpoint("c", f"{'https' if tls else 'http'}://{authority}:{port}", timeout=timeout)
    finally:
        server.close()


# -- https ------------------------------------------------------------------------------------

def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (no CA the system trusts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test container")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = self_signed(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_an_https_container_with_a_certificate_no_trusted_ca_signed_is_refused_before_any_request(tmp_path):
    context, _ = server_tls(tmp_path)
    peer = Peer(send(OK))
    client = ContainerClient()
    async with serving(peer, tls=context) as endpoint:
        with pytest.raises(ContainerFailure, match="container unreachable: .*certificate verify failed"):
            await client.call(endpoint, {})
        await client.close()
    assert peer.requests == []


async def test_an_https_container_whose_certificate_is_trusted_answers_over_tls_with_its_host(tmp_path):
    context, cert = server_tls(tmp_path)
    peer = Peer(send(OK))
    client = ContainerClient(tls=ssl.create_default_context(cafile=str(cert)))
    async with serving(peer, tls=context) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(2)]
        await client.close()
        port = endpoint.url.rsplit(":", 1)[1]
    assert answers == [{"answer": 42}] * 2 and peer.connections == 1
    assert f"Host: 127.0.0.1:{port}".encode() in peer.requests[0].split(b"\r\n")


async def test_an_https_container_that_never_finishes_the_handshake_times_out_within_its_timeout():
    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)  # accepts the TCP connection, never answers the TLS hello

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ContainerClient()
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(ContainerFailure, match="timed out after 0.5s"):
            await client.call(ContainerEndpoint("c", f"https://127.0.0.1:{port}", timeout=0.5), {})
    finally:
        server.close()
    assert asyncio.get_running_loop().time() - started < 1.5


# -- bounds on the answer ------------------------------------------------------------------------

async def test_a_header_line_of_megabytes_fails_the_call_once_the_head_passes_its_limit():
    peer = Peer(endless(b"HTTP/1.1 200 OK\r\nX-Big: ", b"a" * 65536))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        endpoint.retry_dropped = True
        with pytest.raises(ContainerFailure, match=f"head over {MAX_HEAD_BYTES} bytes"):
            await client.call(endpoint, {})
        await client.close()
        await peer.closed()
    assert len(peer.requests) == 1 and peer.open == 0


async def test_endless_header_lines_fail_the_call_once_the_head_passes_its_limit():
    peer = Peer(endless(b"HTTP/1.1 200 OK\r\n", b"X-More: yes\r\n" * 100))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        with pytest.raises(ContainerFailure, match=f"head over {MAX_HEAD_BYTES} bytes"):
            await client.call(endpoint, {})
        await client.close()
    assert len(peer.requests) == 1


async def test_endless_interim_answers_fail_the_call_once_their_heads_pass_the_limit():
    peer = Peer(endless(b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 100))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        with pytest.raises(ContainerFailure, match=f"head over {MAX_HEAD_BYTES} bytes"):
            await client.call(endpoint, {})
        await client.close()
    assert len(peer.requests) == 1


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;extension=",
], ids=["a trailer", "a chunk extension"])
async def test_an_endless_line_after_the_headers_of_a_chunked_answer_fails_the_call_before_its_timeout(head):
    peer = Peer(endless(head, b"a" * 65536))
    client = ContainerClient()
    async with serving(peer, timeout=30) as endpoint:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ContainerFailure, match=f"chunk lines or trailers over {MAX_HEAD_BYTES} bytes"):
            await client.call(endpoint, {})
        await client.close()
    assert asyncio.get_running_loop().time() - started < 5


async def test_many_small_chunks_are_not_taken_for_endless_chunk_lines():
    body = b'{"answer": "' + b"x" * 100_000 + b'"}'
    chunks = b"".join(b"1\r\n%s\r\n" % body[i:i + 1] for i in range(len(body)))
    peer = Peer(send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        assert await client.call(endpoint, {}) == {"answer": "x" * 100_000}
        await client.close()


async def test_the_head_of_an_answer_sent_before_its_request_is_never_read_as_the_next_calls_answer():
    early = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n"  # the next answer's head, ahead of its request
    peer = Peer(send(OK + early))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(3)]
        await client.close()
    assert answers == [{"answer": 42}] * 3 and peer.connections == 3


async def test_a_content_length_over_the_output_limit_fails_the_call_before_its_body_is_read():
    peer = Peer(send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n{"))
    client = ContainerClient(max_output_bytes=MiB)
    async with serving(peer) as endpoint:
        with pytest.raises(ContainerFailure, match=f"container output over {MiB} bytes"):
            await client.call(endpoint, {})
        await client.close()


@pytest.mark.parametrize(("head", "piece"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"x" * 65536 + b"\r\n"),
    (b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 65536),
], ids=["chunked", "until close"])
async def test_an_endless_body_fails_the_call_at_the_default_output_limit_not_at_its_timeout(head, piece):
    peer = Peer(endless(head, piece))
    client = ContainerClient()  # the default limit: 16 MiB
    async with serving(peer, timeout=30) as endpoint:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ContainerFailure, match=f"container output over {16 * MiB} bytes"):
            await client.call(endpoint, {})
        await client.close()
        await peer.closed()
    assert asyncio.get_running_loop().time() - started < 10 and peer.open == 0


async def test_an_endless_stream_fails_at_the_default_stream_limit_after_handing_over_what_came_before_it():
    peer = Peer(endless(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"x" * 65536 + b"\r\n"))
    client = ContainerClient()  # the default stream limit: 64 MiB
    handed: list[int] = []
    async with serving(peer, timeout=30) as endpoint:
        with pytest.raises(ContainerFailure, match=f"container output over {64 * MiB} bytes"):
            await client.stream(endpoint, {}, lambda part: handed.append(len(part)))
        await client.close()
    assert 63 * MiB < sum(handed) <= 64 * MiB


async def test_an_answer_trickled_one_byte_at_a_time_times_out_at_the_calls_timeout():
    async def slowloris(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in OK:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    peer = Peer(slowloris)
    client = ContainerClient()
    async with serving(peer, timeout=0.5) as endpoint:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ContainerFailure, match="timed out after 0.5s"):
            await client.call(endpoint, {})
        await client.close()
        await peer.closed()
    assert asyncio.get_running_loop().time() - started < 1.5 and peer.open == 0


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
], ids=["100", "103", "100 then 102"])
async def test_interim_answers_before_the_real_one_are_skipped(interim):
    peer = Peer(send(interim + OK))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(2)]
        await client.close()
    assert answers == [{"answer": 42}] * 2 and peer.connections == 1


async def test_a_101_switching_protocols_answer_fails_the_call_and_closes_the_connection():
    peer = Peer(send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx"))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        with pytest.raises(ContainerFailure, match="container unreachable: .*101"):
            await client.call(endpoint, {})
        await client.close()
        await peer.closed()
    assert len(peer.requests) == 1 and peer.open == 0


@pytest.mark.parametrize("answer", [
    b"HTTP/1.0 200 OK\r\n\r\n" + BODY,
    b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
], ids=["until close", "Content-Length"])
async def test_an_http_1_0_answer_arrives_whole_and_its_connection_is_not_reused(answer):
    peer = Peer(send(answer), keep=False)
    client = ContainerClient()
    async with serving(peer) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(2)]
        await client.close()
    assert answers == [{"answer": 42}] * 2 and peer.connections == 2


@pytest.mark.parametrize(("answer", "message"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (
        len(BODY), BODY), "not HTTP"),
    (b"\r\nnoise\r\n" + OK, "not HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n{}  ", "not HTTP"),
], ids=["Transfer-Encoding with Content-Length", "bytes before the status line", "two Content-Lengths"])
async def test_an_ambiguous_or_garbled_answer_fails_the_call_once_never_retried(answer, message):
    peer = Peer(send(answer), keep=False)
    client = ContainerClient()
    async with serving(peer) as endpoint:
        endpoint.retry_dropped = True
        with pytest.raises(ContainerFailure, match=f"container unreachable: .*{message}"):
            await client.call(endpoint, {})
        await client.close()
    assert len(peer.requests) == 1


async def test_a_kept_alive_connection_the_container_closes_right_after_answering_does_not_fail_the_next_call():
    # No "Connection: close": the node may take the connection for reusable until its end is read.
    peer = Peer(send(OK), keep=False)
    client = ContainerClient()
    async with serving(peer) as endpoint:
        answers = [await client.call(endpoint, {"n": i}) for i in range(20)]
        await client.close()
    assert answers == [{"answer": 42}] * 20 and peer.connections == 20


async def test_many_concurrent_calls_open_no_more_connections_than_the_containers_concurrency():
    async def slow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.01)
        writer.write(OK)
        await writer.drain()

    peer = Peer(slow)
    client = ContainerClient()
    async with serving(peer) as endpoint:
        endpoint.semaphore = asyncio.Semaphore(4)
        answers = await asyncio.gather(*(client.call(endpoint, {"n": i}) for i in range(200)))
        await client.close()
        await peer.closed()
    assert answers == [{"answer": 42}] * 200
    assert peer.most_open <= 4 and peer.open == 0


async def test_a_call_cancelled_mid_answer_closes_its_connection_and_the_next_call_opens_a_new_one():
    first = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not first.is_set():
            first.set()
            writer.write(OK[:20])  # half an answer, then the node gives up
            await writer.drain()
            await reader.read()  # until the node closes the connection
        writer.write(OK)
        await writer.drain()

    peer = Peer(answer)
    client = ContainerClient()
    async with serving(peer) as endpoint:
        call = asyncio.create_task(client.call(endpoint, {}))
        await first.wait()
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await client.call(endpoint, {}) == {"answer": 42}
        await client.close()
        await peer.closed()
    assert peer.connections == 2 and len(peer.requests) == 2 and peer.open == 0


# -- the request ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bearer", ["token\r\nX-Injected: yes", "token\nX-Injected: yes", "tök€n"],
                         ids=["CRLF", "LF", "not latin-1"])
async def test_a_bearer_token_that_would_break_the_header_fails_the_call_and_sends_nothing(bearer):
    peer = Peer(send(OK))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        bad = ContainerEndpoint("c", endpoint.url, bearer=bearer)
        with pytest.raises(ContainerFailure, match="container unreachable: .*Authorization"):
            await client.call(bad, {})
        await client.close()
    assert peer.requests == []


@pytest.mark.parametrize("path", ["/a b", "/a\x00b", "/a\x7fb"], ids=["space", "NUL", "DEL"])
async def test_a_container_url_whose_path_would_break_the_request_line_fails_the_call_and_sends_nothing(path):
    peer = Peer(send(OK))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        with pytest.raises(ContainerFailure, match="container unreachable: .*path"):
            await client.call(ContainerEndpoint("c", endpoint.url + path), {})
        await client.close()
    assert peer.requests == []


async def test_a_container_url_with_a_password_and_a_bad_port_fails_without_telling_the_password():
    client = ContainerClient()
    with pytest.raises(ContainerFailure, match="container unreachable: not a valid port") as failure:
        await client.call(ContainerEndpoint("c", "http://me:hunter2@127.0.0.1:99999"), {})
    assert "hunter2" not in str(failure.value)


async def test_an_ipv6_container_gets_a_bracketed_host_with_its_port():
    peer = Peer(send(OK))
    client = ContainerClient()
    async with serving(peer, host="::1") as endpoint:
        assert await client.call(endpoint, {}) == {"answer": 42}
        await client.close()
        port = endpoint.url.rsplit(":", 1)[1]
    assert f"Host: [::1]:{port}".encode() in peer.requests[0].split(b"\r\n")


@pytest.mark.parametrize(("url", "host"), [
    ("http://Container.example/x", "container.example"),
    ("https://container.example/x", "container.example"),
    ("http://container.example:8080/x", "container.example:8080"),
    ("http://[2001:db8::1]/x", "[2001:db8::1]"),
], ids=["http default port", "https default port", "other port", "IPv6 default port"])
def test_the_host_sent_carries_the_port_only_when_the_url_names_one(url, host):
    from node.jobs.http1 import _parse

    assert f"\r\nHost: {host}\r\n".encode() in _parse(url, {}).head


async def test_the_content_length_sent_counts_the_bytes_of_a_non_ascii_body():
    peer = Peer(send(OK))
    client = ContainerClient()
    async with serving(peer) as endpoint:
        await client.call(endpoint, {"text": "héllo €"})
        await client.close()
    head, body = peer.requests[0].split(b"\r\n\r\n", 1)
    assert f"Content-Length: {len(body)}".encode() in head.split(b"\r\n") and "€".encode() in body
