"""Nothing a client sends takes the node down or holds its resources: deep JSON, slow headers,
aborted streams, too many jobs at once; and what the node stored is private and pruned."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import time

import pytest

from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def guarded(docker_engine, tmp_path_factory):
    proc = NodeProcess(
        tmp_path_factory.mktemp("guarded"),
        [container_entry("echo", "echo"), container_entry("faulty", "faulty", timeout=10)],
        extra={"server": {"header_timeout": 1, "keepalive_timeout": 3, "max_inflight_jobs": 3}},
    )
    proc.start()
    yield proc
    proc.stop()
    proc.remove_containers()


def _pending(node) -> int:
    return node.http().get("/info").json["pending"]["offchain"]


def _wait_pending(node, value: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while _pending(node) != value:
        assert time.monotonic() < deadline, f"pending.offchain stayed {_pending(node)}, expected {value}"
        time.sleep(0.1)


def test_deeply_nested_json_is_a_400_naming_the_limit_and_the_node_lives_on(guarded):
    http = guarded.http()
    for path in ("/api/jobs", "/api/jobs/batch", "/api/jobs/stream"):
        resp = http.post(path, raw=b"[" * 100_000)
        assert resp.status == 400 and "64" in resp.json["error"], resp.body
    resp = http.post("/api/jobs", raw=json.dumps({"containers": ["echo"], "data": _nest(70)}).encode())
    assert resp.status == 400 and resp.json["params"] == {"max_json_depth": 64}
    assert guarded.proc.poll() is None
    job_id = http.submit(["echo"], _nest(40))
    assert http.wait_job(job_id)["status"] == "success"


def _nest(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_client_trickling_header_lines_is_disconnected(guarded):
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n")
        closed = False
        while time.monotonic() - started < 8:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            sock.settimeout(0.3)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        assert closed, "the node kept a connection whose headers never ended"
        assert time.monotonic() - started < 4
    finally:
        sock.close()


def test_an_idle_keepalive_connection_is_closed(guarded):
    conn = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().read()
    time.sleep(4)  # keepalive_timeout is 3 s
    assert conn.sock.recv(1) == b""
    conn.close()


def test_an_aborted_stream_fails_its_job_and_frees_its_slot(guarded):
    before = _pending(guarded)
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=10)
    body = json.dumps({"containers": ["faulty"], "data": {"mode": "sleep", "seconds": 1}}).encode()
    sock.sendall(b"POST /api/jobs/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    received = b""
    while received.count(b"\r\n", received.find(b"\r\n\r\n") + 4) < 2:  # headers, chunk size, id line
        received += sock.recv(4096)
    chunk = received.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1]  # chunked: size line, then data
    job_id = chunk.split(b"\n")[0].decode()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    sock.close()
    _wait_pending(guarded, before)
    job = guarded.http().wait_job(job_id)
    assert job["status"] == "failed" and "client went away" in job["result"]["error"], job


def test_over_max_inflight_jobs_is_a_429_with_retry_after(guarded):
    http = guarded.http()
    ids = [http.submit(["faulty"], {"mode": "sleep", "seconds": 2}) for _ in range(3)]
    resp = http.post("/api/jobs", {"containers": ["echo"], "data": {}})
    assert resp.status == 429 and int(resp.headers["retry-after"]) >= 1
    assert resp.json["params"] == {"max_inflight_jobs": 3}
    for job_id in ids:
        assert http.wait_job(job_id)["status"] == "success"
    assert http.wait_job(http.submit(["echo"], {"after": True}))["status"] == "success"


def test_the_database_and_its_wal_are_private_to_the_node(guarded):
    guarded.http().wait_job(guarded.http().submit(["echo"], {}))
    db = guarded.workdir / "node.db"
    for path in (db, db.with_name("node.db-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
