"""A poll for a running job holds briefly for its commit (`jobs.poll_hold`, docs/perf.md): a
polling client learns the result in one poll, and an answer that says "running" comes no later
than the hold, in the Infernet shape. In process, no Docker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.config import ConfigError, parse_config
from node.containers.config import JobsConfig
from node.jobs.api import JobsApi
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint
from node.jobs.orchestrator import Orchestrator
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, make_middlewares
from tests.jobs.stores import open_store


@contextlib.asynccontextmanager
async def jobs_node(tmp_path, delay: float, poll_hold: float) -> AsyncIterator[TestClient]:
    """A jobs API in process, beside a container that answers after `delay` seconds."""

    async def service_output(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.json_response({"done": True})

    container = web.Application()
    container.router.add_post("/service_output", service_output)
    db, store = await open_store(tmp_path)
    containers = ContainerClient()
    async with TestServer(container) as served:
        orchestrator = Orchestrator({"c": ContainerEndpoint("c", str(served.make_url("")).rstrip("/"))},
                                    containers, store)
        api = JobsApi(orchestrator, store, None, max_batch=10, status_allowed_ips=[],  # type: ignore[arg-type]
                      limits=JobsConfig(poll_hold=poll_hold))
        app = web.Application(middlewares=make_middlewares(ErrorShapes(), RateLimiter(RateLimitConfig())))
        app.add_routes(api.routes())
        async with TestClient(TestServer(app)) as client:
            yield client
        await containers.close()
    await db.close()


async def submit_then_poll(client: TestClient, **params: str) -> tuple[dict, float]:
    """Submit a job, poll it once at once; the job as answered and the poll's seconds."""
    response = await client.post("/api/jobs", json={"containers": ["c"], "data": {}})
    job_id = (await response.json())["id"]
    started = time.perf_counter()
    response = await client.get("/api/jobs", params={"id": job_id, **params})
    assert response.status == 200
    jobs = await response.json()
    return jobs[0], time.perf_counter() - started


async def test_one_poll_answers_the_result_of_a_job_that_finishes_within_the_hold(tmp_path):
    async with jobs_node(tmp_path, delay=0.05, poll_hold=1.0) as client:
        job, _ = await submit_then_poll(client)
    assert job["status"] == "success" and job["result"] == {"container": "c", "output": {"done": True}}


async def test_a_poll_for_a_job_still_running_answers_running_once_the_hold_is_over(tmp_path):
    async with jobs_node(tmp_path, delay=0.8, poll_hold=0.1) as client:
        job, seconds = await submit_then_poll(client)
    assert job["status"] == "running" and "result" in job and job["result"] is None
    assert 0.1 <= seconds < 0.6


@pytest.mark.parametrize(("poll_hold", "params"), [(0.0, {}), (1.0, {"wait": "0"})],
                         ids=["poll_hold 0", "wait=0 asked"])
async def test_a_poll_with_no_hold_or_asking_wait_0_answers_a_running_job_at_once(tmp_path, poll_hold, params):
    async with jobs_node(tmp_path, delay=0.8, poll_hold=poll_hold) as client:
        job, seconds = await submit_then_poll(client, **params)
    assert job["status"] == "running" and seconds < 0.5


def test_a_poll_hold_beyond_one_second_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"jobs\.poll_hold"):
        parse_config({"jobs": {"poll_hold": 5}})
