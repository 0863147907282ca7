#!/usr/bin/env python3
"""Benchmark the streaming relay in-process: one node's job API and a stub container on one
event loop (no Docker), so what is measured is the node's own relay of the output.

For each round: `--mb` MB streamed by the container and read by a client that reads as fast
as it can (MB/s), and `--jobs` plain jobs submitted one after another from one client
(submit-to-result, jobs/s). Pass a checkout with `--repo` to measure another version of the
node the same way (it needs only the constructor arguments every version takes).

    .venv/bin/python scripts/bench_stream.py [--mb 64] [--jobs 300] [--rounds 3] [--repo PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path


async def main(args: argparse.Namespace) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from node.containers.config import ContainerConfig, DockerConfig
    from node.containers.manager import ContainerManager
    from node.jobs.api import JobsApi
    from node.jobs.client import ContainerClient
    from node.jobs.endpoint import ContainerEndpoint
    from node.jobs.orchestrator import Orchestrator
    from node.jobs.store import JobStore
    from node.server.config import RateLimitConfig
    from node.server.http import ErrorShapes, RateLimiter, make_middlewares
    from node.storage import Database

    chunk = b"x" * (64 * 1024)

    async def service_output(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["destination"] != 2:
            return web.json_response(body["data"])
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(args.mb * 16):
            await response.write(chunk)
        await response.write_eof()
        return response

    container = web.Application()
    container.router.add_post("/service_output", service_output)
    runner = web.AppRunner(container)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    db = Database(str(Path(tempfile.mkdtemp()) / "bench.db"))
    await db.open()
    store = JobStore(db)
    await store.start()
    containers = ContainerClient()
    orchestrator = Orchestrator({"c": ContainerEndpoint("c", url)}, containers, store)
    api = JobsApi(orchestrator, store, ContainerManager([ContainerConfig(id="c", url=url)], DockerConfig(), False),
                  max_batch=1000, status_allowed_ips=["127.0.0.0/8"])
    app = web.Application(middlewares=make_middlewares(ErrorShapes(), RateLimiter(RateLimitConfig())))
    app.add_routes(api.routes())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()

    rates, jobs = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        resp = await client.post("/api/jobs/stream", json={"containers": ["c"], "data": {}})
        size = 0
        async for part in resp.content.iter_any():
            size += len(part)
        assert size > args.mb * 1024 * 1024, size
        rates.append(args.mb / (time.perf_counter() - started))
        started = time.perf_counter()
        for i in range(args.jobs):
            job_id = (await (await client.post("/api/jobs", json={"containers": ["c"], "data": {"i": i}})).json())["id"]
            await (await client.get(f"/api/jobs?id={job_id}&wait=5")).read()
        jobs.append(args.jobs / (time.perf_counter() - started))
    print(f"stream: {statistics.median(rates):.0f} MB/s (median of {args.rounds}: "
          f"{', '.join(f'{r:.0f}' for r in rates)}); jobs: {statistics.median(jobs):.0f} jobs/s "
          f"({', '.join(f'{j:.0f}' for j in jobs)})")
    await client.close()
    await containers.close()
    await db.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    arguments = parser.parse_args()
    sys.path.insert(0, arguments.repo)
    asyncio.run(main(arguments))
