"""The jobs API (the Infernet node's REST surface) against a node in this process and stub
container services on 127.0.0.1: no Docker engine, a few seconds for the whole file.

tests/jobs/test_jobs_api.py asserts the same shapes against the shipped workloads in real
containers (the outer ring). This ring is the one a newcomer without Docker can run, and it
goes through the whole request path all the same: the real middlewares, JobsApi, the
orchestrator's gates, the container call, SQLite's group commit, the answer. The node is the
real `Node`, built from a config with `manage_containers: false` and a `url` per container
(the mode an operator uses for services the node does not run), so no seam was needed.

The stubs misbehave on purpose: HTTP 500, output that is not JSON, too slow for the
container's timeout, and a connection dropped before any answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.app import Node
from node.config import parse_config

SLOW_TIMEOUT = 1.0  # the "slow" container's call timeout (seconds)


class Stubs:
    """Container services on two 127.0.0.1 ports: an aiohttp app serving one path per
    behaviour (`{url}/echo/service_output`, ...), and a raw TCP server that answers the
    readiness probe but drops every POST before answering."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.stopping = asyncio.Event()
        self.holds: dict[str, asyncio.Event] = {}  # "slow" answers {"hold": key} once released
        self.url = ""
        self.drop_url = ""

    async def _service(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.json()
        self.received.setdefault(name, []).append(body)
        data = body.get("data")
        if name == "upper":
            return web.json_response(_upper(data))
        if name == "wrap":
            return web.json_response({"wrapped": data})
        if name == "fail500":
            return web.Response(status=500, text="model exploded")
        if name == "nonjson":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if name == "slow":
            gate = self.holds.get(data.get("hold", ""), self.stopping)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gate.wait(), float(data.get("seconds", 10)))
            return web.json_response(data)
        if name == "streamer":
            response = web.StreamResponse()
            await response.prepare(request)
            for word in str(data.get("text", "")).upper().split():
                await response.write(f"{word} ".encode())
            await response.write_eof()
            return response
        return web.json_response(data)  # echo, inner, private

    @staticmethod
    async def _probe(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @staticmethod
    async def _drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stubs]:
        app = web.Application()
        app.router.add_post("/{name}/service_output", self._service)
        app.router.add_get("/{tail:.*}", self._probe)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        drop = await asyncio.start_server(self._drop, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.drop_url = f"http://127.0.0.1:{drop.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self.stopping.set()
            drop.close()
            await runner.cleanup()


    def hold(self) -> tuple[dict[str, str], asyncio.Event]:
        """Input for the "slow" container that keeps its job running until the event is set."""
        key = uuid.uuid4().hex
        event = self.holds[key] = asyncio.Event()
        return {"hold": key}, event


def _upper(data: Any) -> Any:
    if isinstance(data, str):
        return data.upper()
    if isinstance(data, dict):
        return {k: _upper(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_upper(v) for v in data]
    return data


class Api:
    """The node's HTTP API from chosen client addresses (127.0.0.x: each one a client)."""

    def __init__(self, node: Node, stubs: Stubs) -> None:
        self.node, self.stubs = node, stubs
        self.base = f"http://127.0.0.1:{node.port}"
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        session = self._sessions.get(source)
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
            self._sessions[source] = session
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        async with session.request(method, self.base + path, data=data,
                                   headers={"Content-Type": "application/json", **(headers or {})}) as resp:
            content = await resp.read()
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = None
            return resp.status, parsed, content

    async def submit(self, containers: list[str], data: Any, source: str = "127.0.0.1") -> str:
        status, answer, _ = await self.call("POST", "/api/jobs", {"containers": containers, "data": data},
                                            source=source)
        assert status == 200, answer
        assert set(answer) == {"id"}
        return answer["id"]

    async def job(self, job_id: str, *, intermediate: bool = False, source: str = "127.0.0.1",
                  wait: float = 5) -> dict[str, Any]:
        """The job once finished (`wait=` holds the answer until then)."""
        query = f"/api/jobs?id={job_id}&wait={wait:g}" + ("&intermediate=true" if intermediate else "")
        status, jobs, _ = await self.call("GET", query, source=source)
        assert status == 200, jobs
        assert len(jobs) == 1 and jobs[0]["status"] != "running", jobs
        return jobs[0]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()


def _config(tmp: Path, stubs: Stubs) -> dict[str, Any]:
    def stub(cid: str, path: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": cid, "url": f"{stubs.url}/{path or cid}", **extra}

    return {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1, "max_batch": 8,
                   "status_allowed_ips": ["127.0.0.1/32", "127.0.0.3/32"]},
        "storage": {"path": str(tmp / f"{uuid.uuid4().hex[:6]}.db")},
        "manage_containers": False,
        "startup_wait": 2,
        "gateway": {"enabled": False}, "cre": {"enabled": False}, "registry": {"enabled": False},
        "observe": {"enabled": False},
        "containers": [
            stub("echo", description="identity", image="stub/echo:1"),
            stub("upper"),
            stub("wrap"),
            stub("fail500"),
            stub("nonjson"),
            stub("slow", timeout=SLOW_TIMEOUT),
            {"id": "dropper", "url": stubs.drop_url},
            stub("inner", external=False),
            stub("private", allowed_ips=["127.0.0.2/32"]),
            stub("streamer"),
        ],
    }


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with Stubs().running() as stubs:
        node = Node(parse_config(_config(tmp_path_factory.mktemp("jobs"), stubs)))
        await node.start()
        client = Api(node, stubs)
        try:
            yield client
        finally:
            await client.close()
            await node.stop()


# -- the Infernet shapes ------------------------------------------------------------------------


async def test_info_lists_the_containers_and_pending_counts_in_infernets_shape(api: Api) -> None:
    status, info, _ = await api.call("GET", "/info")
    assert status == 200
    assert [c["id"] for c in info["containers"]][:3] == ["echo", "upper", "wrap"]
    assert info["containers"][0] == {"id": "echo", "description": "identity", "external": True,
                                     "image": "stub/echo:1"}
    assert info["pending"] == {"offchain": 0, "onchain": 0}
    assert info["chain"] == {"enabled": False, "address": ""}  # a str, as Infernet types it
    assert isinstance(info["version"], str)
    assert await api.call("GET", "/health") == (200, {"status": "healthy"}, b'{"status":"healthy"}')


async def test_a_three_container_chain_passes_each_output_on_and_keeps_the_intermediate_results(api: Api) -> None:
    job_id = await api.submit(["upper", "echo", "wrap"], {"text": "hello", "n": [1, 2.5]})
    job = await api.job(job_id, intermediate=True)
    assert job["status"] == "success"
    assert job["intermediate_results"] == [
        {"container": "upper", "output": {"text": "HELLO", "n": [1, 2.5]}},
        {"container": "echo", "output": {"text": "HELLO", "n": [1, 2.5]}},
    ]
    assert job["intermediate"] == job["intermediate_results"]  # Infernet's docs name it so
    assert job["result"] == {"container": "wrap", "output": {"wrapped": {"text": "HELLO", "n": [1, 2.5]}}}
    plain = await api.job(job_id)
    assert plain == {"id": job_id, "status": "success", "result": job["result"]}


async def test_each_container_in_a_chain_receives_infernets_request_body(api: Api) -> None:
    marker = uuid.uuid4().hex
    job = await api.job(await api.submit(["echo", "wrap"], {"m": marker}))
    assert job["status"] == "success"
    [to_echo] = [b for b in api.stubs.received["echo"] if b["data"] == {"m": marker}]
    [to_wrap] = [b for b in api.stubs.received["wrap"] if b["data"] == {"m": marker}]
    assert to_echo == {"source": 1, "destination": 1, "data": {"m": marker}, "requires_proof": False}
    assert to_wrap == to_echo  # the first container's output is the next one's input


async def test_get_jobs_answers_in_the_order_asked_and_drops_unknown_ids(api: Api) -> None:
    a = await api.submit(["echo"], {"a": 1})
    b = await api.submit(["echo"], {"b": 2})
    await api.job(a), await api.job(b)
    status, jobs, _ = await api.call("GET", f"/api/jobs?id={b}&id=does-not-exist&id={a}")
    assert status == 200
    assert [(j["id"], j["result"]["output"]) for j in jobs] == [(b, {"b": 2}), (a, {"a": 1})]


async def test_clients_see_only_their_own_jobs(api: Api) -> None:
    job_id = await api.submit(["echo"], {"secret": 1}, source="127.0.0.4")
    await api.job(job_id, source="127.0.0.4")
    assert (await api.call("GET", "/api/jobs", source="127.0.0.4"))[1] == [job_id]
    assert job_id not in (await api.call("GET", "/api/jobs", source="127.0.0.5"))[1]
    assert (await api.call("GET", f"/api/jobs?id={job_id}", source="127.0.0.5"))[1] == []


async def test_pending_filter_separates_running_from_finished_jobs(api: Api) -> None:
    me = "127.0.0.6"
    data, release = api.stubs.hold()
    slow = await api.submit(["slow"], data, source=me)
    fast = await api.submit(["echo"], {}, source=me)
    await api.job(fast, source=me)
    assert (await api.call("GET", "/api/jobs?pending=true", source=me))[1] == [slow]
    assert (await api.call("GET", "/api/jobs?pending=false", source=me))[1] == [fast]
    assert (await api.call("GET", "/info"))[1]["pending"]["offchain"] >= 1
    release.set()
    await api.job(slow, source=me)
    assert sorted((await api.call("GET", "/api/jobs", source=me))[1]) == sorted([slow, fast])
    status, error, _ = await api.call("GET", "/api/jobs?pending=maybe", source=me)
    assert status == 400 and error["error"].startswith("pending:")


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"containers": ["nope"], "data": {}}, "Container not supported"),
        ({"containers": [], "data": {}}, "containers:"),
        ({"data": {}}, "containers: Field required"),
        ({"containers": ["inner"], "data": {}}, "Container is not external"),
        ({"containers": ["echo"], "data": {}, "requires_proof": True}, "Container does not generate proofs"),
        ({"subscription": {}, "signature": {}}, "Chain is not enabled"),
        ([1, 2], "(body)"),
    ],
)
async def test_a_bad_job_request_is_400_with_a_message_naming_the_problem(api: Api, body: Any, message: str) -> None:
    status, answer, _ = await api.call("POST", "/api/jobs", body)
    assert status == 400 and message in answer["error"]


async def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    assert await api.call("POST", "/api/jobs", raw=b"{not json") == (
        400, {"error": "Request body is not valid JSON"}, b'{"error":"Request body is not valid JSON"}')


async def test_allowed_ips_are_enforced_per_client_address(api: Api) -> None:
    status, denied, _ = await api.call("POST", "/api/jobs", {"containers": ["private"], "data": {}})
    assert status == 403
    assert denied == {"error": "Container not allowed for address",
                      "params": {"container": "private", "address": "127.0.0.1"}}
    job_id = await api.submit(["private"], {"ok": 1}, source="127.0.0.2")
    assert (await api.job(job_id, source="127.0.0.2"))["result"] == {"container": "private", "output": {"ok": 1}}


async def test_unknown_route_is_a_json_404(api: Api) -> None:
    status, answer, _ = await api.call("GET", "/api/nothing")
    assert status == 404 and "error" in answer


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_answers_each_request_in_order_with_an_id_or_its_error(api: Api) -> None:
    status, answers, _ = await api.call("POST", "/api/jobs/batch", [
        {"containers": ["echo"], "data": {"i": 0}},
        {"containers": ["nope"], "data": {}},
        {"containers": "echo"},
        {"containers": ["inner"], "data": {}},
        42,
        {"containers": ["upper"], "data": {"t": "x"}},
    ])
    assert status == 200 and len(answers) == 6
    assert answers[1] == {"error": "Container not supported", "params": {"containers": ["nope"]}}
    assert answers[2]["error"].startswith("containers:")
    assert answers[3] == {"error": "Container is not external", "params": {"container": "inner"}}
    assert answers[4]["error"].startswith("(body)")
    assert (await api.job(answers[0]["id"]))["result"]["output"] == {"i": 0}
    assert (await api.job(answers[5]["id"]))["result"]["output"] == {"t": "X"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"containers": ["echo"]}, "Expected a list"),
        ([{"containers": ["echo"], "data": i} for i in range(9)], "Batch too large: 9 requests, at most 8"),
    ],
)
async def test_a_batch_that_is_not_a_list_or_longer_than_max_batch_is_400(api: Api, body: Any, message: str) -> None:
    status, answer, _ = await api.call("POST", "/api/jobs/batch", body)
    assert status == 400 and answer == {"error": message}


# -- wait= ----------------------------------------------------------------------------------


async def test_wait_holds_the_answer_until_the_job_is_done(api: Api) -> None:
    data, release = api.stubs.hold()
    job_id = await api.submit(["slow"], data)
    asyncio.get_running_loop().call_later(0.3, release.set)
    started = time.monotonic()
    status, jobs, _ = await api.call("GET", f"/api/jobs?id={job_id}&wait=5")
    held = time.monotonic() - started
    assert status == 200 and jobs[0]["status"] == "success"
    assert 0.25 < held < 3, held  # answered when the job ended, not at the end of the 5 s


async def test_wait_gives_up_after_the_seconds_asked_and_answers_the_job_still_running(api: Api) -> None:
    data, release = api.stubs.hold()
    job_id = await api.submit(["slow"], data)
    started = time.monotonic()
    status, jobs, _ = await api.call("GET", f"/api/jobs?id={job_id}&wait=0.2")
    held = time.monotonic() - started
    assert status == 200 and jobs == [{"id": job_id, "status": "running", "result": None}]
    assert 0.15 < held < 2, held
    release.set()
    assert (await api.job(job_id))["status"] == "success"


@pytest.mark.parametrize("value", ["soon", "-1", "31"])
async def test_wait_that_is_not_0_to_30_seconds_is_400_naming_wait(api: Api, value: str) -> None:
    status, answer, _ = await api.call("GET", f"/api/jobs?id=x&wait={value}")
    assert status == 400 and answer["error"].startswith("wait:")


# -- failing containers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "data", "error"),
    [
        ("fail500", {}, "container answered HTTP 500: model exploded"),
        ("nonjson", {}, "container returned non-JSON output: '<html>not json</html>'"),
        ("slow", {"seconds": 5}, f"container timed out after {SLOW_TIMEOUT:g}s"),
        ("dropper", {}, "container unreachable: "),
    ],
)
async def test_a_failing_container_fails_the_job_naming_it_and_keeps_the_earlier_outputs(
        api: Api, container: str, data: Any, error: str) -> None:
    job = await api.job(await api.submit(["echo", container, "upper"], data), intermediate=True)
    assert job["status"] == "failed"
    assert job["result"]["container"] == container and job["result"]["error"].startswith(error)
    assert job["intermediate_results"] == [{"container": "echo", "output": data}]  # upper never ran


# -- PUT /api/status -------------------------------------------------------------------------


async def test_put_status_records_an_out_of_band_job_from_running_to_success(api: Api) -> None:
    job_id = f"oob-{uuid.uuid4().hex[:8]}"
    running = {"id": job_id, "status": "running", "containers": ["echo"]}
    assert await api.call("PUT", "/api/status", running) == (200, None, b"null")
    assert (await api.call("GET", f"/api/jobs?id={job_id}"))[1] == [{"id": job_id, "status": "running", "result": None}]
    done = {**running, "status": "success", "data": {"v": 1}}
    assert (await api.call("PUT", "/api/status", done))[0] == 200
    assert (await api.call("GET", f"/api/jobs?id={job_id}"))[1] == [
        {"id": job_id, "status": "success", "result": {"container": "echo", "output": {"v": 1}}}]


async def test_put_status_from_outside_status_allowed_ips_is_403(api: Api) -> None:
    job_id = f"oob-{uuid.uuid4().hex[:8]}"
    status, answer, _ = await api.call("PUT", "/api/status", {"id": job_id, "status": "running",
                                                              "containers": ["echo"]}, source="127.0.0.9")
    assert status == 403 and answer == {"error": "Unauthorized"}
    assert (await api.call("GET", f"/api/jobs?id={job_id}", source="127.0.0.9"))[1] == []


async def test_put_status_with_an_unknown_status_is_400_naming_status(api: Api) -> None:
    status, answer, _ = await api.call("PUT", "/api/status", {"id": "oob-x", "status": "done", "containers": ["echo"]})
    assert status == 400 and answer["error"].startswith("status:")


async def test_a_finished_job_cannot_be_rewritten_through_put_status(api: Api) -> None:
    job_id = await api.submit(["echo"], {"value": 100})
    assert (await api.job(job_id))["result"] == {"container": "echo", "output": {"value": 100}}
    forged = {"id": job_id, "status": "success", "containers": ["echo"], "data": {"value": 999999}}
    for source in ("127.0.0.3", "127.0.0.1"):
        status, answer, _ = await api.call("PUT", "/api/status", forged, source=source)
        assert status == 409 and "finished" in answer["error"]
    assert (await api.job(job_id))["result"] == {"container": "echo", "output": {"value": 100}}


async def test_only_the_jobs_containers_may_report_on_a_running_job(api: Api) -> None:
    data, release = api.stubs.hold()
    job_id = await api.submit(["slow"], data)
    forged = {"id": job_id, "status": "success", "containers": ["slow"], "data": 999999}
    status, answer, _ = await api.call("PUT", "/api/status", forged, source="127.0.0.3")  # allowed, not its container
    assert status == 403 and "containers" in answer["error"]
    release.set()
    job = await api.job(job_id)
    assert job["result"] == {"container": "slow", "output": data}


async def test_a_status_report_relayed_from_loopback_by_an_undeclared_proxy_is_refused(api: Api) -> None:
    # A reverse proxy on the host nobody declared in server.trusted_proxies makes every outsider a
    # loopback peer; its forwarding header shows the request is not the host's own.
    data, release = api.stubs.hold()
    job_id = await api.submit(["slow"], data)
    forged = {"id": job_id, "status": "success", "containers": ["slow"], "data": 999999}
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        status, answer, _ = await api.call("PUT", "/api/status", forged, headers={header: "203.0.113.9"})
        assert status == 403 and answer == {"error": "Unauthorized"}, (header, answer)
    release.set()
    assert (await api.job(job_id))["result"] == {"container": "slow", "output": data}


# -- streaming -------------------------------------------------------------------------------


async def test_stream_relays_the_output_and_stores_it_as_the_jobs_result(api: Api) -> None:
    status, _, raw = await api.call("POST", "/api/jobs/stream", {"containers": ["streamer"],
                                                                  "data": {"text": "one two three"}})
    assert status == 200
    job_id, _, text = raw.decode().partition("\n")
    assert text == "ONE TWO THREE "
    assert await api.job(job_id) == {"id": job_id, "status": "success",
                                     "result": {"container": "streamer", "output": {"output": "ONE TWO THREE "}}}
    assert api.stubs.received["streamer"][-1] == {"source": 1, "destination": 2, "data": {"text": "one two three"}}


@pytest.mark.parametrize("containers", [["upper", "echo"], ["nope"]])
async def test_stream_refuses_a_chain_or_an_unknown_container_with_400(api: Api, containers: list[str]) -> None:
    status, answer, _ = await api.call("POST", "/api/jobs/stream", {"containers": containers, "data": {}})
    assert status == 400 and "error" in answer
