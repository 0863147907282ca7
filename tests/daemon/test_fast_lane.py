"""The job routes' fast lane (issue #28) held to what aiohttp answers, written before the lane lands.

With `server.fast_lane: true` each connection is first served by the node's own light HTTP
protocol (node/server/fastlane.py), which answers plain `POST /api/jobs` and `GET /api/jobs?id=`
requests itself and moves anything else (another route, a request split over reads, pipelining,
chunked or compressed bodies, `Expect`, `X-Workflow-Id`, HTTP/1.0, a big body) to aiohttp for
good, with the bytes read so far. A user must not be able to tell which served them, so every
test here runs one exchange against a node with the lane and one without (the same config
otherwise) and asserts the same answer, the same connection handling, and that each edge limit
still holds on both: the header and body deadlines, the keep-alive close, the per-address
connection cap, the rate limit, forwarded addresses, the gateway's workflow binding, `wait=` and
`jobs.poll_hold`, a client leaving mid-poll, SIGTERM mid-poll, and acknowledged jobs surviving a
SIGKILL.

The nodes are real processes, as a user meets them; their containers are the shipped echo and
faulty workloads run as host processes (no Docker work). Where the bytes on the wire matter
(splitting, pipelining, trickling, HTTP/1.0, Connection: close) the client is a raw socket.
Each exchange comes from its own loopback address (127.0.0.0/8), so job listings, connection
counts and rate-limit buckets of one test never meet another's.

Until the lane lands both nodes are aiohttp: these tests pin today's behaviour, which the lane
must keep. `Case.lane` says which exchanges the lane is meant to answer itself.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NodeProcess, workload_process

pytestmark = [pytest.mark.docker]

# Small limits, so a deadline is seen in a second or two. Each deadline differs from the others,
# so a test sees the one it names: aiohttp's keep-alive timer also runs while a request's head is
# awaited (and would cut trickled headers off at keepalive_timeout), and body_timeout is above the
# 2 s grace before body_min_rate applies (node/server/timeouts.py).
SERVER = {"header_timeout": 1, "body_timeout": 3, "body_min_rate": 100, "keepalive_timeout": 2,
          "max_body_bytes": 4096, "max_connections_per_ip": 8, "max_json_depth": 16, "shutdown_grace": 1}
POLL_HOLD = 0.3
MODES = {"lane": True, "aiohttp": False}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# -- the nodes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workloads() -> Iterator[list[dict[str, Any]]]:
    """The node's containers as host processes: `echo` (output = input data) and `slow` (the
    faulty workload: `{"mode": "sleep", "seconds": s}` answers after s seconds)."""
    echo, echo_url = workload_process("echo")
    slow, slow_url = workload_process("faulty")
    yield [{"id": "echo", "url": echo_url}, {"id": "slow", "url": slow_url, "timeout": 30}]
    for proc in (echo, slow):
        proc.kill()
        proc.wait()


def _node(workdir: Path, containers: list[dict[str, Any]], lane: bool, **server: Any) -> NodeProcess:
    return NodeProcess(workdir, containers, extra={
        "manage_containers": False, "server": {**SERVER, **server, "fast_lane": lane},
        "jobs": {"poll_hold": POLL_HOLD}})


def _start_all(nodes: list[NodeProcess], timeout: float = 60) -> None:
    """Start the nodes side by side and wait until each answers /health."""
    for node in nodes:
        node.start_background()
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            assert node.proc is not None and node.proc.poll() is None, f"node exited:\n{node.log()}"
            try:
                if node.http().get("/health", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"node did not answer within {timeout}s:\n{node.log()}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def nodes(workloads, tmp_path_factory) -> Iterator[dict[str, NodeProcess]]:
    """One node with the lane and one without, the same config otherwise."""
    started = {mode: _node(tmp_path_factory.mktemp(mode), workloads, lane) for mode, lane in MODES.items()}
    _start_all(list(started.values()))
    yield started
    for node in started.values():
        node.stop()


@pytest.fixture(params=list(MODES))
def node(request, nodes) -> NodeProcess:
    return nodes[request.param]


PROXY = "127.0.0.9"


@pytest.fixture(scope="module")
def limited_nodes(workloads, tmp_path_factory) -> Iterator[dict[str, NodeProcess]]:
    """The pair again, with a rate limit of 5 requests a minute per client and route, and a
    trusted reverse proxy at PROXY."""
    started = {mode: _node(tmp_path_factory.mktemp(f"limited-{mode}"), workloads, lane,
                           rate_limit={"num_requests": 5, "period": 60}, trusted_proxies=[f"{PROXY}/32"])
               for mode, lane in MODES.items()}
    _start_all(list(started.values()))
    yield started
    for node in started.values():
        node.stop()


@pytest.fixture(params=list(MODES))
def limited(request, limited_nodes) -> NodeProcess:
    return limited_nodes[request.param]


# -- a raw HTTP/1.x client -------------------------------------------------------------------


class Closed(Exception):
    """The node closed the connection before a whole answer."""


@dataclass
class Answer:
    version: str
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header's values joined by ", "
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx answers before this one
    kept_open: bool | None = None  # a next request on the connection was answered (None: not tried)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        """The node said it closes the connection after this answer."""
        connection = self.headers.get("connection", "").lower()
        return connection == "close" or (self.version == "HTTP/1.0" and connection != "keep-alive")


class Wire:
    """One TCP connection from a chosen loopback address, read answer by answer."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.buffer = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed(self.buffer)
        self.buffer += data

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def answer(self, bodiless: bool = False) -> Answer:
        """The next answer (`bodiless`: to a HEAD request, so no body follows its head)."""
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buffer:
                self._fill()
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            version, status = status_line.split(" ")[:2]
            headers: dict[str, str] = {}
            for line in lines:
                name, value = line.split(":", 1)
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
            if 100 <= int(status) < 200:
                interim.append(int(status))
                continue
            if bodiless:
                body = b""
            elif "content-length" in headers:
                body = self._take(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while size := int(self._line().split(b";")[0], 16):
                    body += self._take(size)
                    self._take(2)
                while self._line():  # trailers
                    pass
            else:
                body = self.rest()
            return Answer(version, int(status), headers, body, interim)

    def rest(self) -> bytes:
        """Everything until the node closes the connection."""
        try:
            while True:
                self._fill()
        except Closed:
            data, self.buffer = self.buffer, b""
            return data

    def closed_within(self, seconds: float) -> bool:
        """Whether the node closes the connection (sending nothing more) within `seconds`."""
        self.sock.settimeout(seconds)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(10)


def request(method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            version: str = "HTTP/1.1") -> bytes:
    """A request's bytes: Host, a JSON Content-Type for a body, Content-Length unless the
    headers say Transfer-Encoding (then `body` is sent as given)."""
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    given = {k.lower() for k in (headers or {})}
    if body is not None and "content-type" not in given:
        lines.append("Content-Type: application/json")
    if body is not None and "transfer-encoding" not in given and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post_job(data: Any, containers: tuple[str, ...] = ("echo",), **kw: Any) -> bytes:
    return request("POST", "/api/jobs", json.dumps({"containers": list(containers), "data": data}).encode(), **kw)


def exchange(port: int, source: str, data: bytes, answers: int = 1, probe: bool = False) -> list[Answer]:
    """Send `data` in one write on a new connection; read `answers` answers. `probe`: then send
    GET /health on the same connection and note on the last answer whether it was answered
    (whether the node really kept the connection open, whatever its headers said)."""
    with Wire(port, source) as wire:
        wire.send(data)
        got = [wire.answer(bodiless=data.startswith(b"HEAD ")) for _ in range(answers)]
        if probe:
            try:
                wire.send(request("GET", "/health"))
                got[-1].kept_open = wire.answer().status == 200
            except (OSError, Closed):
                got[-1].kept_open = False
        return got


def one(port: int, source: str, data: bytes) -> Answer:
    return exchange(port, source, data)[0]


def submit(port: int, source: str, data: Any, containers: tuple[str, ...] = ("echo",), **kw: Any) -> str:
    answer = one(port, source, post_job(data, containers, **kw))
    assert answer.status == 200, answer
    return answer.json["id"]


def finished(port: int, source: str, *ids: str) -> list[dict[str, Any]]:
    """The jobs, once done (one `wait=` poll)."""
    query = "&".join(f"id={i}" for i in ids)
    answer = one(port, source, request("GET", f"/api/jobs?{query}&wait=10"))
    assert answer.status == 200 and all(j["status"] != "running" for j in answer.json), answer
    return answer.json


def slow(seconds: float) -> dict[str, Any]:
    return {"mode": "sleep", "seconds": seconds}


# -- 1. the same answers with the lane on and off --------------------------------------------


@dataclass(frozen=True)
class Case:
    """One exchange: `run(port, client address)` returns the answers a client read. `statuses`
    are the answers' statuses, `error` a text the last answer's error must hold; `lane` says
    whether the lane is meant to serve it (else it moves the connection to aiohttp)."""

    name: str
    lane: bool
    statuses: list[int]
    run: Callable[[int, str], list[Answer]]
    error: str | None = None


def sends(data: bytes, answers: int = 1) -> Callable[[int, str], list[Answer]]:
    return lambda port, me: exchange(port, me, data, answers, probe=True)


def posts(body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> Callable[[int, str], list[Answer]]:
    return sends(request("POST", "/api/jobs", body, headers, **kw))


def after_own_job(query: str, data: Any = None, **kw: Any) -> Callable[[int, str], list[Answer]]:
    """Submit an echo job and wait for it; then GET (or `method=`) `query` with {job} filled in."""
    method = kw.pop("method", "GET")

    def run(port: int, me: str) -> list[Answer]:
        job = submit(port, me, {"n": 1} if data is None else data)
        finished(port, me, job)
        return exchange(port, me, request(method, query.format(job=job), **kw), probe=True)

    return run


def submit_then_get(port: int, me: str) -> list[Answer]:
    submitted = exchange(port, me, post_job({"prompt": "hello", "n": [1, 2.5, None]}), probe=True)
    job = submitted[0].json["id"]
    return submitted + exchange(port, me, request("GET", f"/api/jobs?id={job}&wait=5"), probe=True)


def other_clients_job(port: int, me: str) -> list[Answer]:
    other = me.replace("127.0.1.", "127.0.2.", 1)
    job = submit(port, other, {"secret": True})
    finished(port, other, job)
    return exchange(port, me, request("GET", f"/api/jobs?id={job}"), probe=True)


def several_ids(port: int, me: str) -> list[Answer]:
    first, second = submit(port, me, {"n": 1}), submit(port, me, {"n": 2})
    finished(port, me, first, second)
    unknown = "00000000-0000-4000-8000-000000000000"
    return exchange(port, me, request("GET", f"/api/jobs?id={second}&id={unknown}&id={first}&id={second}"),
                    probe=True)


def listing(query: str) -> Callable[[int, str], list[Answer]]:
    """This client's job list after one finished and one running job of its own."""

    def run(port: int, me: str) -> list[Answer]:
        done = submit(port, me, {"n": 1})
        finished(port, me, done)
        submit(port, me, slow(1.5), ("slow",))
        return exchange(port, me, request("GET", query), probe=True)

    return run


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def job_body(data: Any, **extra: Any) -> bytes:
    return json.dumps({"containers": ["echo"], "data": data, **extra}).encode()


VALID = job_body({"x": 1})
CHUNKED = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, VALID[:10], len(VALID) - 10, VALID[10:])


def head_then(head: bytes, body: bytes = VALID) -> Callable[[int, str], list[Answer]]:
    """A POST /api/jobs head written by hand (the request line and Host are added unless it
    has its own), then the body: requests the HTTP parser is meant to refuse or read oddly."""
    if b" HTTP/" not in head.split(b"\r\n", 1)[0]:
        head = b"POST /api/jobs HTTP/1.1\r\nHost: x\r\n" + head
    return sends(head.replace(b"{n}", str(len(body)).encode()) + b"\r\n" + body)


def many_ids(port: int, me: str) -> list[Answer]:
    job = submit(port, me, {"n": 1})
    finished(port, me, job)
    unknown = [f"00000000-0000-4000-8000-{i:012d}" for i in range(150)]
    query = "&".join(f"id={i}" for i in [*unknown[:75], job, *unknown[75:]])
    return exchange(port, me, request("GET", f"/api/jobs?{query}"), probe=True)


CASES = [
    Case("a valid submit then its result by id", True, [200, 200], submit_then_get),
    Case("a submit with unicode, a 70-bit integer and requires_proof false", True, [200, 200], lambda port, me: [
        *exchange(port, me, request("POST", "/api/jobs", job_body({"text": "naïve ☃", "n": 2**70},
                                                                  requires_proof=False)), probe=True),
        *after_own_job("/api/jobs?id={job}", {"text": "naïve ☃", "n": 2**70})(port, me)]),
    Case("an unknown container", True, [400], posts(json.dumps({"containers": ["nope"], "data": {}}).encode()),
         "Container not supported"),
    Case("a body that is not JSON", True, [400], posts(b"{containers: echo}"), "not valid JSON"),
    Case("a body that is not UTF-8", True, [400], posts(b'{"containers": ["\xff"], "data": 1}'), "not valid JSON"),
    Case("an empty body", True, [400], posts(b""), "empty"),
    Case("a NaN literal", True, [400], posts(b'{"containers": ["echo"], "data": NaN}'), "NaN is not a JSON value"),
    Case("JSON deeper than max_json_depth", True, [400], posts(job_body(nest(20))), "16"),
    Case("a body without containers", True, [400], posts(b'{"data": {}}'), "containers"),
    Case("containers of the wrong type", True, [400], posts(b'{"containers": "echo", "data": {}}'), "containers"),
    Case("an empty container list", True, [400], posts(b'{"containers": [], "data": {}}')),
    Case("a JSON list for a body", True, [400], posts(b"[]")),
    Case("a delegated subscription with the chain off", True, [400],
         posts(b'{"subscription": {}, "signature": {}}'), "Chain is not enabled"),
    Case("a text/plain Content-Type on a JSON body", True, [200], posts(VALID, {"Content-Type": "text/plain"})),
    Case("a body over max_body_bytes", False, [413], posts(job_body("x" * 5000)), "too large"),
    Case("a gzip-encoded body", False, [415], posts(VALID, {"Content-Encoding": "gzip"}), "Content-Encoding"),
    Case("a chunked valid body", False, [200], posts(CHUNKED, {"Transfer-Encoding": "chunked"})),
    Case("Expect: 100-continue", False, [200], posts(VALID, {"Expect": "100-continue"})),
    Case("X-Workflow-Id without an API key", False, [401], posts(VALID, {"X-Workflow-Id": "wf-1"}),
         "needs a signed API key"),
    Case("a query string on POST /api/jobs", False, [200], sends(request("POST", "/api/jobs?x=1", VALID))),
    Case("PUT /api/jobs", False, [405], sends(request("PUT", "/api/jobs", VALID))),
    Case("POST /api/jobs/ with a trailing slash", False, [404], sends(request("POST", "/api/jobs/", VALID))),
    Case("a client's X-Request-Id on a submit", True, [200], posts(VALID, {"X-Request-Id": "client-7f3a"})),
    Case("a client's X-Request-Id on a poll", True, [200],
         after_own_job("/api/jobs?id={job}", headers={"X-Request-Id": "client-9c1e"})),
    Case("HTTP/1.0 submit", False, [200], posts(VALID, version="HTTP/1.0")),
    Case("HTTP/1.0 poll", False, [200], after_own_job("/api/jobs?id={job}", version="HTTP/1.0")),
    Case("GET an unknown id", True, [200], sends(request("GET", "/api/jobs?id=00000000-0000-4000-8000-00000000beef"))),
    Case("GET a malformed id", True, [200], sends(request("GET", "/api/jobs?id=not-a-job"))),
    Case("GET a finished job by id", True, [200], after_own_job("/api/jobs?id={job}")),
    Case("GET another client's job", True, [200], other_clients_job),
    Case("GET several ids, one unknown, one twice", True, [200], several_ids),
    Case("intermediate=true", True, [200], after_own_job("/api/jobs?id={job}&intermediate=true")),
    Case("intermediate=maybe", True, [400], after_own_job("/api/jobs?id={job}&intermediate=maybe"), "intermediate"),
    Case("wait=0.5 for a finished job", True, [200], after_own_job("/api/jobs?id={job}&wait=0.5")),
    Case("wait=x", True, [400], after_own_job("/api/jobs?id={job}&wait=x"), "wait"),
    Case("wait=-1", True, [400], after_own_job("/api/jobs?id={job}&wait=-1"), "wait"),
    Case("wait=31", True, [400], after_own_job("/api/jobs?id={job}&wait=31"), "wait"),
    Case("wait=nan", True, [400], after_own_job("/api/jobs?id={job}&wait=nan"), "wait"),
    Case("wait= empty", True, [400], after_own_job("/api/jobs?id={job}&wait="), "wait"),
    Case("an id percent-encoded", False, [200], after_own_job("/api/jobs?id={job}%20")),
    Case("an unknown query parameter beside id", False, [200], after_own_job("/api/jobs?id={job}&limit=5")),
    Case("the listing: GET /api/jobs with no id", True, [200], listing("/api/jobs")),
    Case("the listing with pending=true", True, [200], listing("/api/jobs?pending=true")),
    Case("the listing with pending=false", True, [200], listing("/api/jobs?pending=false")),
    Case("the listing with pending=maybe", True, [400], listing("/api/jobs?pending=maybe"), "pending"),
    Case("GET 151 ids, one known", True, [200], many_ids),
    Case("HEAD /api/jobs?id=", False, [200], after_own_job("/api/jobs?id={job}", method="HEAD")),
    Case("a GET with a body", False, [200], after_own_job("/api/jobs?id={job}", body=b"hello")),
    Case("a POST without Content-Length", False, [400], head_then(b"", b""), "empty"),
    Case("an absolute-form target", False, [200], sends(request("POST", "http://127.0.0.1/api/jobs", VALID))),
    Case("Connection: Upgrade", False, [200], posts(VALID, {"Connection": "Upgrade", "Upgrade": "websocket"})),
    Case("HTTP/2.0 in the request line", False, [200], posts(VALID, version="HTTP/2.0")),
    # What aiohttp's parser refuses (400, text/plain, closed) must stay refused, not be read leniently.
    Case("two Content-Length headers", False, [400], head_then(b"Content-Length: {n}\r\nContent-Length: 5\r\n")),
    Case("Content-Length and Transfer-Encoding", False, [400],
         head_then(b"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n", CHUNKED)),
    Case("a negative Content-Length", False, [400], head_then(b"Content-Length: -1\r\n", b"")),
    Case("a header line without a colon", False, [400], head_then(b"Bogus\r\nContent-Length: {n}\r\n")),
    Case("a folded header line", False, [400], head_then(b"X-A: 1\r\n  2\r\nContent-Length: {n}\r\n")),
    Case("a NUL in a header value", False, [400], head_then(b"X-A: a\x00b\r\nContent-Length: {n}\r\n")),
    Case("a lowercase method", False, [400],
         head_then(b"post /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n")),
    Case("no Host header", False, [400], head_then(b"POST /api/jobs HTTP/1.1\r\nContent-Length: {n}\r\n")),
    Case("bare LF line ends", False, [400], sends(b"POST /api/jobs HTTP/1.1\nHost: x\nContent-Length: %d\n\n"
                                                  % len(VALID) + VALID)),
    Case("a space in the target", False, [400], sends(request("GET", "/api/jobs?id=a b"))),
    Case("a request line without a version", False, [400], sends(b"POST /api/jobs\r\nHost: x\r\n\r\n")),
    Case("a 20 KB header", False, [400], posts(VALID, {"X-Big": "a" * 20_000})),
    Case("a 10 KB query string", False, [400], sends(request("GET", "/api/jobs?id=" + "a" * 10_000))),
]


def observed(answers: list[Answer]) -> list[tuple[Any, ...]]:
    """What a client can tell of the answers: version, 1xx answers, status, Content-Type, the
    JSON body with job ids numbered by first appearance, whether X-Request-Id is there (its
    value when the client chose it), whether Retry-After and Date are there, whether the node
    says it closes the connection and whether it kept it open."""
    numbered: dict[str, str] = {}

    def normal(value: Any) -> Any:
        if isinstance(value, str):
            return UUID.sub(lambda m: numbered.setdefault(m.group(), f"<job {len(numbered)}>"), value)
        if isinstance(value, list):
            return [normal(v) for v in value]
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        return value

    seen = []
    for answer in answers:
        try:
            body = normal(answer.json)
        except ValueError:
            body = answer.body
        request_id = answer.headers.get("x-request-id")
        seen.append((answer.version, answer.interim, answer.status, answer.headers.get("content-type"), body,
                     request_id if request_id and request_id.startswith("client-") else request_id is not None,
                     "retry-after" in answer.headers, "date" in answer.headers, answer.closes, answer.kept_open))
    return seen


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_lane_answers_exactly_as_aiohttp_does(case: Case, nodes):
    index = CASES.index(case) + 1
    me = f"127.0.1.{index}"  # this case's own client on both nodes
    answers = {mode: case.run(node.port, me) for mode, node in nodes.items()}
    assert [a.status for a in answers["lane"]] == case.statuses, answers["lane"]
    assert observed(answers["lane"]) == observed(answers["aiohttp"])
    last = answers["lane"][-1]
    if case.error is not None:
        assert case.error in last.json["error"], last.json
    if case.statuses[-1] >= 400 and last.headers.get("content-type") == "application/json":
        assert set(last.json) <= {"error", "params"} and isinstance(last.json["error"], str), last.json
    elif case.statuses[-1] >= 400:  # refused by aiohttp's HTTP parser, before the node: text, and closed
        assert last.headers["content-type"].startswith("text/plain") and last.kept_open is False, last


def test_a_submitted_job_reads_back_as_the_echo_of_its_data(nodes):
    for node in nodes.values():
        data = {"prompt": "hello", "n": [1, 2.5, None], "big": 2**70}
        job = submit(node.port, "127.0.0.1", data)
        assert finished(node.port, "127.0.0.1", job) == [
            {"id": job, "status": "success", "result": {"container": "echo", "output": data}}]


# -- 2. connections --------------------------------------------------------------------------


def test_connection_close_closes_the_connection_right_after_the_answer(node):
    with Wire(node.port, "127.0.3.1") as wire:
        wire.send(post_job({"n": 1}, headers={"Connection": "close"}))
        answer = wire.answer()
        assert answer.status == 200 and answer.closes, answer
        assert wire.closed_within(0.5)  # keepalive_timeout is 2 s: this is the close, not the idle timer


def test_three_requests_pipelined_in_one_write_are_answered_in_order(node):
    me = "127.0.3.2"
    known = submit(node.port, me, {"n": "known"})
    finished(node.port, me, known)
    with Wire(node.port, me) as wire:
        wire.send(post_job({"n": 1}, headers={"X-Request-Id": "client-1"})
                  + request("GET", f"/api/jobs?id={known}", headers={"X-Request-Id": "client-2"})
                  + post_job({"n": 3}, headers={"X-Request-Id": "client-3"}))
        answers = [wire.answer() for _ in range(3)]
    assert [a.headers["x-request-id"] for a in answers] == ["client-1", "client-2", "client-3"]
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[1].json[0]["result"]["output"] == {"n": "known"}
    first, third = answers[0].json["id"], answers[2].json["id"]
    assert [j["result"]["output"] for j in finished(node.port, me, first, third)] == [{"n": 1}, {"n": 3}]


SEQUENCES = {
    "submit, health, submit, poll": ["submit", "health", "submit", "poll"],
    "submit, poll, submit, poll": ["submit", "poll", "submit", "poll"],
}


@pytest.mark.parametrize("sequence", list(SEQUENCES))
def test_one_keepalive_connection_answers_every_request_it_carries(node, sequence):
    ids: list[str] = []
    sent: list[dict[str, int]] = []
    with Wire(node.port, "127.0.3.3") as wire:
        for step, kind in enumerate(SEQUENCES[sequence]):
            if kind == "submit":
                sent.append({"step": step})
                wire.send(post_job(sent[-1]))
                answer = wire.answer()
                ids.append(answer.json["id"])
            elif kind == "health":
                wire.send(request("GET", "/health"))
                answer = wire.answer()
                assert answer.json == {"status": "healthy"}
            else:
                wire.send(request("GET", "/api/jobs?" + "&".join(f"id={i}" for i in ids) + "&wait=5"))
                answer = wire.answer()
                assert [j["result"]["output"] for j in answer.json] == sent
            assert answer.status == 200 and not answer.closes, (kind, answer)


SPLITS = {
    "after the head": lambda data: data.index(b"\r\n\r\n") + 4,
    "inside the head": lambda data: 10,
    "inside the body": lambda data: len(data) - 5,
}


@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("after_a_request", [False, True], ids=["first request", "second request"])
def test_a_request_split_over_two_writes_is_answered(node, split, after_a_request):
    me = "127.0.3.4"
    data = post_job({"split": split})
    cut = SPLITS[split](data)
    with Wire(node.port, me) as wire:
        if after_a_request:  # a request the lane may serve comes first on the connection
            wire.send(post_job({"first": True}))
            assert wire.answer().status == 200
        wire.send(data[:cut])
        time.sleep(0.05)
        wire.send(data[cut:])
        answer = wire.answer()
        assert answer.status == 200, answer
        wire.send(request("GET", f"/api/jobs?id={answer.json['id']}&wait=5"))
        assert wire.answer().json[0]["result"]["output"] == {"split": split}


# -- 3. attacks: each limit holds with the lane on and off -----------------------------------


def _until_closed(wire: Wire, give_up: float, feed: bytes | None = None, every: float = 0.2) -> tuple[bytes, float]:
    """Read (sending `feed` every `every` s) until the node closes the connection or `give_up`
    seconds pass. Returns (what the node sent, seconds from now until the close). Data still
    arriving at a closed socket may turn the close into a reset: that is a close too."""
    started = time.monotonic()
    received = b""
    wire.sock.settimeout(every)
    while time.monotonic() - started < give_up:
        try:
            data = wire.sock.recv(65536)
            if not data:
                break
            received += data
        except TimeoutError:
            pass
        except ConnectionResetError:
            break
        if feed is not None:
            try:
                wire.send(feed)
            except OSError:
                break
    return received, time.monotonic() - started


def test_a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout(node):
    with Wire(node.port, "127.0.4.1") as wire:
        received, took = _until_closed(wire, give_up=5)
    assert received == b"" and 0.8 < took < 1.8, (received, took)  # header_timeout is 1 s


def test_headers_trickled_on_post_api_jobs_are_cut_off_at_the_header_timeout(node):
    with Wire(node.port, "127.0.4.2") as wire:
        wire.send(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        received, took = _until_closed(wire, give_up=5, feed=b"X-Slow: 1\r\n")
    assert received == b"" and 0.8 < took < 1.8, (received, took)


def test_headers_trickled_after_a_served_request_are_cut_off_at_the_header_timeout(node):
    with Wire(node.port, "127.0.4.3") as wire:
        wire.send(post_job({"n": 1}))
        assert wire.answer().status == 200
        wire.send(b"POST /api/jobs HTTP/1.1\r\n")  # the next request's first bytes: its deadline starts
        received, took = _until_closed(wire, give_up=5, feed=b"X-Slow: 1\r\n")
    assert received == b"" and 0.8 < took < 1.8, (received, took)


def test_a_body_trickled_after_a_whole_head_is_refused_with_408_for_its_rate(node):
    with Wire(node.port, "127.0.4.4") as wire:
        wire.send(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 3000\r\n\r\n{")
        received, took = _until_closed(wire, give_up=8, feed=b" ")  # 5 bytes/s; body_min_rate is 100
    assert received.startswith(b"HTTP/1.1 408 "), received[:300]
    assert b"slower than 100 bytes/s" in received and b"Connection: close" in received, received
    assert 2.0 < took < 4.0, took  # the rate is judged after 2 s


def test_a_body_sent_above_the_minimum_rate_but_never_finished_is_refused_at_the_body_timeout(node):
    with Wire(node.port, "127.0.4.5") as wire:
        wire.send(b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 4000\r\n\r\n{")
        received, took = _until_closed(wire, give_up=8, feed=b" " * 40, every=0.1)  # 400 bytes/s: 10 s
    assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received[:300]  # or a reset
    assert received == b"" or b"not complete within 3s" in received, received
    assert 2.5 < took < 5.0, took  # body_timeout is 3 s


def test_an_idle_keepalive_connection_is_closed_at_the_keepalive_timeout(node):
    with Wire(node.port, "127.0.4.6") as wire:
        wire.send(post_job({"n": 1}))
        answer = wire.answer()
        assert answer.status == 200 and not answer.closes
        received, took = _until_closed(wire, give_up=5)
    assert received == b"" and 1.8 < took < 2.8, (received, took)  # keepalive_timeout is 2 s


def test_one_address_is_refused_a_ninth_connection_while_it_holds_eight(node):
    me = "127.0.4.7"
    held = [Wire(node.port, me) for _ in range(4)]  # kept open after a served request each
    try:
        for wire in held:
            wire.send(post_job({"n": 1}))
            assert wire.answer().status == 200
        held += [Wire(node.port, me) for _ in range(4)]  # open, nothing sent yet
        with Wire(node.port, me) as ninth:
            answer = ninth.answer()
            assert answer.status == 429 and answer.closes, answer
            assert answer.json == {"error": "Too many connections from this address (the node's limit is 8)"}
        assert one(node.port, "127.0.4.8", post_job({"n": 2})).status == 200  # another address is served
    finally:
        for wire in held:
            wire.sock.close()
    deadline = time.monotonic() + 3
    while True:  # the closed connections are given back
        try:
            if one(node.port, me, post_job({"n": 3})).status == 200:
                break
        except (OSError, Closed):
            pass
        assert time.monotonic() < deadline, "the address stayed over its cap after closing its connections"
        time.sleep(0.1)


def test_x_forwarded_for_from_an_untrusted_peer_neither_files_nor_reads_jobs_as_another_client(node):
    me, victim = "127.0.4.9", "127.0.4.10"
    victims_job = submit(node.port, victim, {"private": True})
    forged = submit(node.port, me, {"n": 1}, headers={"X-Forwarded-For": victim})
    finished(node.port, me, forged)
    assert one(node.port, me, request("GET", "/api/jobs")).json == [forged]
    assert one(node.port, victim, request("GET", "/api/jobs")).json == [victims_job]
    for target in (f"/api/jobs?id={victims_job}", "/api/jobs"):
        answer = one(node.port, me, request("GET", target, headers={"X-Forwarded-For": victim}))
        assert answer.status == 200 and victims_job not in json.dumps(answer.json), answer.json


def test_x_workflow_id_without_a_valid_signed_key_is_401_and_runs_no_job(node):
    me = "127.0.4.11"
    for headers in ({"X-Workflow-Id": "wf-1"},
                    {"X-Workflow-Id": "wf-1", "X-API-Key": "nk_not_a_key"},
                    {"X-Workflow-Id": "wf-1", "X-API-Key": "nk_not_a_key", "X-Signature": "00" * 32,
                     "X-Signature-Timestamp": str(int(time.time()))}):
        answer = one(node.port, me, request("POST", "/api/jobs", VALID, headers))
        assert answer.status == 401 and set(answer.json) <= {"error", "params"}, (headers, answer)
    assert one(node.port, me, request("GET", "/api/jobs")).json == []


def test_the_rate_limit_counts_submits_and_polls_together_and_answers_429_with_retry_after(limited):
    me = "127.0.4.15"
    job = submit(limited.port, me, {"n": 1})
    statuses = [one(limited.port, me, data).status for data in (
        post_job({"n": 2}), request("GET", f"/api/jobs?id={job}"), post_job({"n": 3}),
        request("GET", f"/api/jobs?id={job}&wait=1"))]
    assert statuses == [200, 200, 200, 200]  # five requests to /api/jobs: the limit
    for data in (request("GET", f"/api/jobs?id={job}"), post_job({"n": 4})):
        answer = one(limited.port, me, data)
        assert answer.status == 429 and answer.json["error"] == "Too many requests", answer
        assert 55 < answer.json["params"]["retry_after"] <= 60 and answer.headers["retry-after"] == "60", answer
    assert one(limited.port, "127.0.4.16", post_job({"n": 5})).status == 200  # another client is not limited
    assert one(limited.port, me, request("GET", "/health")).status == 200  # nor another route


def test_a_trusted_proxy_names_the_client_whose_jobs_are_filed_and_read(limited):
    via = {"X-Forwarded-For": "203.0.113.7"}
    job = submit(limited.port, PROXY, {"n": 1}, headers=via)
    assert one(limited.port, PROXY, request("GET", "/api/jobs", headers=via)).json == [job]
    assert one(limited.port, PROXY, request("GET", f"/api/jobs?id={job}&wait=5", headers=via)).json[0]["id"] == job
    for headers in ({"X-Forwarded-For": "203.0.113.8"}, {}):  # another client behind it, or the proxy itself
        assert one(limited.port, PROXY, request("GET", f"/api/jobs?id={job}", headers=headers)).json == []
    assert one(limited.port, "127.0.4.17", request("GET", f"/api/jobs?id={job}", headers=via)).json == []


def test_a_poll_without_wait_holds_for_poll_hold_then_answers_running(node):
    me = "127.0.4.12"
    job = submit(node.port, me, slow(2), ("slow",))
    started = time.monotonic()
    answer = one(node.port, me, request("GET", f"/api/jobs?id={job}"))
    took = time.monotonic() - started
    assert answer.json == [{"id": job, "status": "running", "result": None}]
    assert POLL_HOLD - 0.05 < took < POLL_HOLD + 0.5, took
    job = submit(node.port, me, slow(0.1), ("slow",))  # ends within the hold: the poll gets its result
    answer = one(node.port, me, request("GET", f"/api/jobs?id={job}"))
    assert answer.json[0]["status"] == "success", answer.json


def test_a_wait_poll_answers_when_the_job_ends_or_at_the_wait(node):
    me = "127.0.4.13"
    job = submit(node.port, me, slow(2), ("slow",))
    started = time.monotonic()
    assert one(node.port, me, request("GET", f"/api/jobs?id={job}&wait=0.6")).json[0]["status"] == "running"
    assert 0.55 < time.monotonic() - started < 1.3
    job = submit(node.port, me, slow(0.4), ("slow",))
    started = time.monotonic()
    assert one(node.port, me, request("GET", f"/api/jobs?id={job}&wait=5")).json[0]["status"] == "success"
    assert time.monotonic() - started < 1.5


def test_a_client_gone_during_a_wait_poll_leaves_the_node_serving_without_an_error(node):
    me = "127.0.4.14"
    offset = len(node.log())
    job = submit(node.port, me, slow(1), ("slow",))
    wire = Wire(node.port, me)
    wire.send(request("GET", f"/api/jobs?id={job}&wait=5"))
    time.sleep(0.3)
    wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    wire.sock.close()
    assert one(node.port, me, request("GET", "/health")).status == 200
    assert finished(node.port, me, job)[0]["status"] == "success"
    logged = node.log()[offset:]
    assert "http.unhandled" not in logged and "Traceback" not in logged, logged


@pytest.mark.parametrize("mode", list(MODES))
def test_sigterm_during_a_wait_poll_exits_0_and_the_client_gets_an_answer_or_a_close(mode, workloads, tmp_path):
    node = _node(tmp_path, workloads, MODES[mode])
    _start_all([node])
    try:
        job = submit(node.port, "127.0.0.1", slow(20), ("slow",))
        outcome: list[Answer | bytes] = []
        wire = Wire(node.port)

        def poll() -> None:
            wire.send(request("GET", f"/api/jobs?id={job}&wait=10"))
            try:
                outcome.append(wire.answer())
            except (Closed, ConnectionResetError) as exc:
                outcome.append(exc.args[0] if isinstance(exc, Closed) else b"reset")

        client = threading.Thread(target=poll, daemon=True)
        client.start()
        time.sleep(0.3)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = node.proc.wait(10)
        assert code == 0 and time.monotonic() - started < 5, (code, node.log()[-3000:])
        client.join(3)
        wire.sock.close()
        assert not client.is_alive(), "the client was left waiting after the node exited"
        got = outcome[0]  # today: 200, the job failed "node shutting down"
        assert got in (b"", b"reset") or (isinstance(got, Answer) and got.status == 200
                                          and got.json[0]["id"] == job and got.json[0]["status"] != "success"), got
    finally:
        node.stop()


# -- 4. durability ----------------------------------------------------------------------------


def test_every_job_the_lane_acknowledged_is_found_after_a_sigkill_and_restart(workloads, tmp_path):
    node = _node(tmp_path, workloads, True)
    _start_all([node])
    acked: dict[str, int] = {}
    lock, stop = threading.Lock(), threading.Event()

    def client(worker: int) -> None:
        n = 0
        try:
            with Wire(node.port) as wire:  # keep-alive: plain submits, one after another
                while not stop.is_set():
                    n += 1
                    wire.send(post_job({"worker": worker, "n": n}))
                    answer = wire.answer()
                    if answer.status == 200:
                        with lock:
                            acked[answer.json["id"]] = n
        except (OSError, Closed):
            pass  # the node is gone: what was answered before is in `acked`

    clients = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200:
        assert time.monotonic() < deadline, f"only {len(acked)} jobs acknowledged in 30 s"
        time.sleep(0.01)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)  # while the clients are still submitting
    node.proc.wait()
    stop.set()
    for thread in clients:
        thread.join(10)
    _start_all([node])
    try:
        ids = sorted(acked)
        found = set()
        for start in range(0, len(ids), 50):
            query = "&".join(f"id={i}" for i in ids[start:start + 50])
            found |= {j["id"] for j in one(node.port, "127.0.0.1", request("GET", f"/api/jobs?{query}")).json}
        assert found == set(ids), f"{len(set(ids) - found)} of {len(ids)} acknowledged jobs lost"
    finally:
        node.stop()
