"""How a refused job reaches its client: the orchestrator and its gates raise domain errors
(node/errors.py) and the HTTP edge gives each kind its status, the jobs family's body
(`{"error", "params"}`) and, for `Busy`, a `Retry-After` header; a batch answers each refused
item with that body. In-process against a stub container (no Docker)."""

from __future__ import annotations

import ipaddress

import pytest

from node.containers.config import JobsConfig
from node.errors import (
    Busy,
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    PaymentRequired,
    Unauthenticated,
    Unavailable,
)
from tests.jobs.test_jobs_limits import Node, StubContainer


@pytest.fixture
async def stub():
    container = await StubContainer().start()
    yield container
    await container.stop()


class Refuse:
    """A job gate that refuses every job with one domain error."""

    def __init__(self, error: DomainError) -> None:
        self.error = error

    async def admit(self, admission):
        raise self.error


KINDS = [(Invalid, 400), (Unauthenticated, 401), (PaymentRequired, 402), (Forbidden, 403), (NotFound, 404),
         (Conflict, 409), (Unavailable, 503)]


@pytest.mark.parametrize(("kind", "status"), KINDS, ids=[k.__name__ for k, _ in KINDS])
async def test_a_gates_refusal_reaches_post_jobs_and_streams_with_its_kinds_status_and_params(
        tmp_path, stub, kind, status):
    gate = Refuse(kind("Workflow wf is paused", {"workflow_id": "wf"}))
    async with Node(tmp_path, {"echo": {"url": stub.url}}, JobsConfig(), gates=[gate]) as node:
        answer = await node.client.post("/api/jobs", json={"containers": ["echo"], "data": {}})
        assert answer.status == status
        assert await answer.json() == {"error": "Workflow wf is paused", "params": {"workflow_id": "wf"}}
        assert "Retry-After" not in answer.headers
        streamed = await node.client.post("/api/jobs/stream", json={"containers": ["echo"], "data": {}})
        assert streamed.status == status
        assert await streamed.json() == {"error": "Workflow wf is paused", "params": {"workflow_id": "wf"}}
    assert stub.calls == 0


async def test_a_busy_refusal_is_429_with_retry_after_in_whole_seconds_at_least_one(tmp_path, stub):
    gate = Refuse(Busy("Too busy", {"retry_after": 2.2}, retry_after=2.2))
    async with Node(tmp_path, {"echo": {"url": stub.url}}, JobsConfig(), gates=[gate]) as node:
        answer = await node.client.post("/api/jobs", json={"containers": ["echo"], "data": {}})
        assert answer.status == 429 and answer.headers["Retry-After"] == "3"
        assert await answer.json() == {"error": "Too busy", "params": {"retry_after": 2.2}}
        gate.error = Busy("Too busy", retry_after=0.1)
        answer = await node.client.post("/api/jobs", json={"containers": ["echo"], "data": {}})
        assert answer.status == 429 and answer.headers["Retry-After"] == "1"


async def test_a_batch_answers_each_refused_item_with_the_refusals_message_and_params(tmp_path, stub):
    gate = Refuse(Forbidden("Denied by policy: no", {"workflow_id": "wf", "policy_id": "p1"}))
    async with Node(tmp_path, {"echo": {"url": stub.url}}, JobsConfig(), gates=[gate]) as node:
        answer = await node.client.post("/api/jobs/batch", json=[{"containers": ["echo"], "data": {}}] * 2)
        assert answer.status == 200
        assert await answer.json() == [{"error": "Denied by policy: no",
                                        "params": {"workflow_id": "wf", "policy_id": "p1"}}] * 2


async def test_a_job_over_the_clients_share_is_429_with_retry_after_one_second(tmp_path, stub):
    async with Node(tmp_path, {"slow": {"url": stub.url}}, JobsConfig(max_inflight_per_client=1)) as node:
        assert (await node.submit(["slow"], {"sleep": 1}))[0] == 200
        answer = await node.client.post("/api/jobs", json={"containers": ["slow"], "data": {}})
        assert answer.status == 429 and answer.headers["Retry-After"] == "1"
        assert (await answer.json())["params"] == {"max_inflight_per_client": 1}


async def test_a_container_not_allowed_for_the_clients_address_is_403_naming_container_and_address(tmp_path, stub):
    containers = {"echo": {"url": stub.url, "allowed_networks": [ipaddress.ip_network("192.0.2.0/24")]}}
    async with Node(tmp_path, containers, JobsConfig()) as node:
        status, answer = await node.submit(["echo"], {}, peer="203.0.113.9")
        assert status == 403
        assert answer == {"error": "Container not allowed for address",
                          "params": {"container": "echo", "address": "203.0.113.9"}}
