"""What one client may take of the node's job capacity (issue 22, items 7, 8, 12 and 17), each
test performing the attack and asserting it fails: a kill reaches running streams, a stream
client that never reads holds neither the container nor its connection for long, a client's
share of in-flight jobs, streams and container calls is capped, a job has a total time limit,
and `GET /api/containers` shows URLs only to the operator and credentials to nobody.

In-process and fast: the job API on an aiohttp test server, with stub container services on
the same loop (no Docker). The client's address is the TCP peer's; a test middleware lets a
request say which peer it is (`X-Test-Peer`), standing for clients on other machines."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.containers.config import ContainerConfig, DockerConfig, JobsConfig
from node.containers.manager import ContainerManager
from node.jobs.api import FAMILY, JobsApi
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.models import Job
from node.jobs.orchestrator import Orchestrator
from node.observe.api import OperatorAccess
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, make_middlewares
from tests.jobs.stores import open_store

MB = 1024 * 1024


class StubContainer:
    """A container service: `/service_output` does what the job's data asks. `sleep`: answer
    after that many seconds; on a stream, `bytes`: that much output at once, `ticks`: one line
    every `every` seconds."""

    def __init__(self) -> None:
        self.calls = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def service_output(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.json()
        data = body["data"] if isinstance(body["data"], dict) else {}
        if body["destination"] == 2:
            response = web.StreamResponse()
            await response.prepare(request)
            if "bytes" in data:
                chunk = b"x" * (256 * 1024)
                for _ in range(data["bytes"] // len(chunk)):
                    await response.write(chunk)
            for i in range(data.get("ticks", 0)):
                await response.write(f"tick {i}\n".encode())
                await asyncio.sleep(data.get("every", 0.05))
            await response.write_eof()
            return response
        await asyncio.sleep(data.get("sleep", 0))
        return web.json_response(data)

    async def start(self) -> StubContainer:
        app = web.Application()
        app.router.add_post("/service_output", self.service_output)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class Ticket:
    def __init__(self) -> None:
        self.settled: list[Job] = []

    async def finished(self, job: Job) -> None:
        self.settled.append(job)


class BindGate:
    """Binds every job to the workflow `org/wf`, as the governance gate does with a default
    workflow, and hears how each ended (charged on success, released on failure)."""

    def __init__(self) -> None:
        self.ticket = Ticket()

    async def admit(self, admission):
        admission.workflow_id = "org/wf"
        return self.ticket


@web.middleware
async def as_test_peer(request: web.Request, handler):
    peer = request.headers.get("X-Test-Peer")
    return await handler(request.clone(remote=peer) if peer else request)


class Node:
    """The job API of one node, in-process."""

    def __init__(self, tmp_path, containers: dict[str, dict[str, Any]], limits: JobsConfig, gates=(),
                 admin_token: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.configs = containers
        self.limits = limits
        self.gates = list(gates)
        self.admin_token = admin_token

    async def __aenter__(self) -> Node:
        self.db, self.store = await open_store(self.tmp_path)
        self.client = ContainerClient()
        endpoints = {cid: ContainerEndpoint(cid, **spec) for cid, spec in self.configs.items()}
        self.orchestrator = Orchestrator(endpoints, self.client, self.store, self.gates, max_inflight=10_000,
                                         max_inflight_per_client=self.limits.max_inflight_per_client,
                                         max_job_seconds=self.limits.max_job_seconds)
        manager = ContainerManager([ContainerConfig(id=cid, url=spec["url"]) for cid, spec in self.configs.items()],
                                   DockerConfig(), manage=False)
        api = JobsApi(self.orchestrator, self.store, manager, max_batch=1000, status_allowed_ips=["127.0.0.0/8"],
                      limits=self.limits,
                      operator=OperatorAccess(self.admin_token))
        app = web.Application(middlewares=[as_test_peer, *make_middlewares(
            ErrorShapes([FAMILY]), RateLimiter(RateLimitConfig(num_requests=0)))])
        app.add_routes(api.routes())
        self.client = TestClient(TestServer(app, host="127.0.0.1"))
        await self.client.start_server()
        self.port = self.client.server.port
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()
        await self.orchestrator.drain(1)
        await self.client.close()
        await self.db.close()

    async def submit(self, containers: list[str], data: Any, peer: str | None = None) -> tuple[int, Any]:
        resp = await self.client.post("/api/jobs", json={"containers": containers, "data": data},
                                      headers={"X-Test-Peer": peer} if peer else {})
        return resp.status, await resp.json()

    async def job(self, job_id: str, peer: str | None = None, wait: float = 0) -> dict[str, Any]:
        resp = await self.client.get(f"/api/jobs?id={job_id}&wait={wait}",
                                     headers={"X-Test-Peer": peer} if peer else {})
        return (await resp.json())[0]


@pytest.fixture
async def stub():
    container = await StubContainer().start()
    yield container
    await container.stop()


def stuck_reader(port: int, body: dict[str, Any]) -> socket.socket:
    """A stream client that sends its request and then never reads (a tiny receive buffer, so
    the node's writes block soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    raw = json.dumps(body).encode()
    sock.sendall(b"POST /api/jobs/stream HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
    return sock


def read_to_eof(sock: socket.socket, timeout: float) -> tuple[int, bool]:
    """Bytes read until the peer closed (True) or `timeout` passed with it still open (False)."""
    sock.settimeout(timeout)
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except (TimeoutError, socket.timeout):
        return total, False
    except ConnectionResetError:
        pass
    return total, True


# -- item 7: a kill reaches running streams ---------------------------------------------------

async def test_a_kill_cancels_a_running_stream_which_ends_failed_and_uncharged(tmp_path, stub):
    gate = BindGate()
    async with Node(tmp_path, {"talk": {"url": stub.url}}, JobsConfig(), [gate]) as node:
        resp = await node.client.post("/api/jobs/stream", json={"containers": ["talk"],
                                                                "data": {"ticks": 200, "every": 0.05}})
        assert resp.status == 200
        job_id = (await resp.content.readline()).decode().strip()
        await resp.content.readline()  # the container is talking
        started = time.monotonic()
        assert node.orchestrator.cancel_workflow("org/wf", "workflow wf killed") == 1
        await asyncio.wait_for(resp.read(), 5)  # the stream ends, well before its 10 s of output
        assert time.monotonic() - started < 3
        job = await node.job(job_id)
        assert job["status"] == "failed" and job["result"]["error"] == "workflow wf killed"
        assert [(j.id, j.status) for j in gate.ticket.settled] == [(job_id, "failed")]  # released, not charged


# -- item 8: a stream client that never reads -------------------------------------------------

async def test_a_stream_client_that_never_reads_does_not_hold_the_containers_only_slot(tmp_path, stub):
    limits = JobsConfig(stream_write_timeout=60)  # the slot, not the disconnect, is what frees the container
    async with Node(tmp_path, {"one": {"url": stub.url, "concurrency": 1}}, limits) as node:
        sock = await asyncio.to_thread(stuck_reader, node.port, {"containers": ["one"], "data": {"bytes": 32 * MB}})
        try:
            await asyncio.sleep(0.5)
            status, answer = await node.submit(["one"], {"sleep": 0.1})
            assert status == 200
            job = await node.job(answer["id"], wait=5)
            assert job["status"] == "success", "the stuck stream still holds the container's slot"
        finally:
            sock.close()


async def test_a_stream_client_that_stops_reading_is_disconnected_after_the_write_timeout(tmp_path, stub):
    async with Node(tmp_path, {"one": {"url": stub.url}}, JobsConfig(stream_write_timeout=1)) as node:
        sock = await asyncio.to_thread(stuck_reader, node.port, {"containers": ["one"], "data": {"bytes": 32 * MB}})
        try:
            await asyncio.sleep(2.5)
            received, closed = await asyncio.to_thread(read_to_eof, sock, 5)
            assert closed and received < 32 * MB, "the node kept writing to a client that did not read"
        finally:
            sock.close()
        [job_id] = await (await node.client.get("/api/jobs")).json()
        job = await node.job(job_id, wait=5)  # the client did not get the whole output: not a success
        assert job["status"] == "failed" and job["result"]["error"] == "stream aborted: the client stopped reading"


async def test_open_streams_per_client_address_are_capped_with_a_429_naming_the_limit(tmp_path, stub):
    limits = JobsConfig(max_streams_per_client=1)
    async with Node(tmp_path, {"talk": {"url": stub.url}}, limits) as node:
        body = {"containers": ["talk"], "data": {"ticks": 40, "every": 0.05}}
        first = await node.client.post("/api/jobs/stream", json=body)
        assert first.status == 200
        second = await node.client.post("/api/jobs/stream", json=body)
        assert second.status == 429 and second.headers["Retry-After"]
        answer = await second.json()
        assert "streams" in answer["error"] and answer["params"] == {"max_streams_per_client": 1}
        other = await node.client.post("/api/jobs/stream", json=body, headers={"X-Test-Peer": "198.51.100.7"})
        assert other.status == 200  # another client's share is its own
        await other.read()
        await first.read()
        again = await node.client.post("/api/jobs/stream", json=body)  # the first one ended: its slot is free
        assert again.status == 200
        await again.read()


# -- item 12: a client's share of job capacity ------------------------------------------------

async def test_one_client_cannot_hold_more_in_flight_jobs_than_its_share(tmp_path, stub):
    async with Node(tmp_path, {"slow": {"url": stub.url}}, JobsConfig(max_inflight_per_client=2)) as node:
        for _ in range(2):
            assert (await node.submit(["slow"], {"sleep": 1}, peer="203.0.113.5"))[0] == 200
        status, answer = await node.submit(["slow"], {"sleep": 1}, peer="203.0.113.5")
        assert status == 429 and answer["params"] == {"max_inflight_per_client": 2}
        assert "this client" in answer["error"]
        batch = await node.client.post("/api/jobs/batch", json=[{"containers": ["slow"], "data": {}}] * 3,
                                       headers={"X-Test-Peer": "203.0.113.5"})
        assert [a.get("params") for a in await batch.json()] == [{"max_inflight_per_client": 2}] * 3
        status, answer = await node.submit(["slow"], {"sleep": 0}, peer="198.51.100.7")
        assert status == 200  # others still get in
        assert (await node.job(answer["id"], peer="198.51.100.7", wait=5))["status"] == "success"
        assert stub.calls == 3


async def test_an_ipv6_client_cannot_widen_its_share_by_rotating_addresses_inside_its_64(tmp_path, stub):
    async with Node(tmp_path, {"slow": {"url": stub.url}}, JobsConfig(max_inflight_per_client=2)) as node:
        for peer in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
            assert (await node.submit(["slow"], {"sleep": 1}, peer=peer))[0] == 200
        status, answer = await node.submit(["slow"], {"sleep": 1}, peer="2001:db8:1:2:ffff::3")
        assert status == 429 and answer["params"] == {"max_inflight_per_client": 2}
        assert (await node.submit(["slow"], {"sleep": 0}, peer="2001:db8:1:3::1"))[0] == 200  # another /64


async def test_a_batch_asking_for_more_container_calls_than_allowed_is_refused_whole(tmp_path, stub):
    async with Node(tmp_path, {"echo": {"url": stub.url}}, JobsConfig(max_links_per_request=100)) as node:
        resp = await node.client.post("/api/jobs/batch", json=[{"containers": ["echo"] * 64, "data": {}}] * 5)
        assert resp.status == 400
        answer = await resp.json()
        assert "320 container calls" in answer["error"] and answer["params"] == {"max_links_per_request": 100}
        assert stub.calls == 0 and (await node.client.get("/api/jobs")).status == 200
        assert await (await node.client.get("/api/jobs")).json() == []
        resp = await node.client.post("/api/jobs/batch", json=[{"containers": ["echo"] * 50, "data": {}}] * 2)
        assert resp.status == 200 and all("id" in a for a in await resp.json())  # exactly at the limit


async def test_a_job_past_its_total_time_limit_fails_naming_the_limit(tmp_path, stub):
    limits = JobsConfig(max_job_seconds=0.6)
    async with Node(tmp_path, {"slow": {"url": stub.url, "timeout": 180}}, limits) as node:
        started = time.monotonic()
        status, answer = await node.submit(["slow", "slow", "slow"], {"sleep": 0.4})  # 1.2 s in all
        assert status == 200
        job = await node.job(answer["id"], wait=5)
        assert time.monotonic() - started < 1.1
        assert job["status"] == "failed"
        assert job["result"] == {"container": "slow", "error": "job exceeded its time limit of 0.6s (jobs.max_job_seconds)"}


async def test_a_stream_past_the_job_time_limit_ends_failed_naming_the_limit(tmp_path, stub):
    async with Node(tmp_path, {"talk": {"url": stub.url}}, JobsConfig(max_job_seconds=0.5)) as node:
        started = time.monotonic()
        resp = await node.client.post("/api/jobs/stream", json={"containers": ["talk"],
                                                                "data": {"ticks": 100, "every": 0.05}})
        job_id = (await resp.content.readline()).decode().strip()
        await asyncio.wait_for(resp.read(), 5)
        assert time.monotonic() - started < 2
        job = await node.job(job_id)
        assert job["status"] == "failed" and "jobs.max_job_seconds" in job["result"]["error"]


# -- item 17: what /api/containers shows to whom ----------------------------------------------

async def test_container_urls_are_shown_only_to_the_operator_and_credentials_to_nobody(tmp_path, stub):
    url = stub.url.replace("http://", "http://user:s3cret@")
    async with Node(tmp_path, {"c": {"url": url}}, JobsConfig(), admin_token="op-token") as node:
        outsider = await node.client.get("/api/containers", headers={"X-Test-Peer": "203.0.113.5"})
        text = await outsider.text()
        assert outsider.status == 200 and "s3cret" not in text and "127.0.0.1" not in text
        [state] = json.loads(text)
        assert state["id"] == "c" and state["status"] == "external" and "url" not in state
        for operator in ({}, {"X-Test-Peer": "203.0.113.5", "Authorization": "Bearer op-token"}):
            resp = await node.client.get("/api/containers", headers=operator)
            text = await resp.text()
            assert "s3cret" not in text
            assert json.loads(text)[0]["url"] == stub.url.replace("http://", "http://***@")


# -- the jobs: section ------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "fragment"), [
    ({"max_job_seconds": 0}, "jobs.max_job_seconds: Input should be greater than 0"),
    ({"stream_write_timeout": -1}, "jobs.stream_write_timeout: Input should be greater than 0"),
    ({"max_inflight_per_client": -1}, "jobs.max_inflight_per_client: Input should be greater than or equal to 0"),
    ({"max_links_per_request": 0}, "jobs.max_links_per_request: Input should be greater than or equal to 1"),
    ({"max_streams": 3}, "jobs.max_streams: Extra inputs are not permitted"),
])
def test_bad_jobs_limits_are_refused_at_start_naming_the_key(section, fragment):
    from node.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=fragment):
        parse_config({"jobs": section})
    assert parse_config({}).jobs == JobsConfig(max_inflight_per_client=256, max_links_per_request=4096,
                                               max_job_seconds=600, max_streams_per_client=8,
                                               stream_write_timeout=30)
