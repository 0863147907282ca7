"""Attacks on the governance gateway from security issue 22 (round three), each performed against
an in-process node (real aiohttp server on 127.0.0.1, real SQLite; a "container" is a small
aiohttp app on 127.0.0.1, so no Docker) and asserted to fail:

4. taking over a bare `default_workflows` id, or running the node's own jobs ungoverned when
   their default workflow is missing; anyone registering when the operator closed registration;
5. learning the HMAC secret from `auth/verify` with the API key alone;
6. replaying a signed job submission through `/api/jobs/stream`;
9. growing the replay guard's memory with big signed answers, and evicting other tenants'
   entries by flooding it;
14. accepting an invite sent to someone else's email, or one that stopped being pending;
15. storing thousands of alert thresholds to slow down every spend of the org;
17. `Infinity` (or 1e999) as a cost or budget; a workflow-scoped key reading other workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
import tracemalloc
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from node.config import parse_config
from node.errors import Conflict
from node.gateway.replay import ReplayGuard
from node.server.http import ApiError
from tests.gateway.test_gateway_security import Client, running_node
from tests.helpers import sdk_signed


@contextlib.asynccontextmanager
async def fake_container():
    """A container on 127.0.0.1 that answers every job; yields (url, calls)."""
    calls: list[Any] = []

    async def serve(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.json_response({"echo": "ok"})

    app = web.Application()
    app.router.add_post("/service_output", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        await runner.cleanup()


async def signed_call(client: Client, key: str, secret: str, path: str, body: Any,
                      headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any, Any]:
    raw = json.dumps(body).encode() if raw is None else raw
    all_headers = {"Content-Type": "application/json", **sdk_signed(key, secret, raw), **(headers or {})}
    async with client.session.post(client.base + path, data=raw, headers=all_headers) as resp:
        text = await resp.read()
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return resp.status, data, resp.headers


async def new_workflow(client: Client, acct: dict[str, Any], budget: float | None = None,
                       wid: str | None = None) -> str:
    wid = wid or f"wf-{uuid.uuid4().hex[:8]}"
    status, out, _ = await client.call("POST", f"/api/v1/orgs/{acct['org_id']}/workflows",
                                       {"id": wid, "name": wid, "budget_usd": budget}, acct["headers"])
    assert status == 201, out
    return wid


async def workflow_view(client: Client, acct: dict[str, Any], wid: str) -> dict[str, Any]:
    status, out, _ = await client.call("GET", f"/api/v1/orgs/{acct['org_id']}/workflows/{wid}",
                                       headers=acct["headers"])
    assert status == 200, out
    return out


# -- 17. non-finite numbers ----------------------------------------------------------------------

async def test_infinite_costs_and_budgets_are_refused_with_400_naming_the_field(tmp_path):
    async with running_node(tmp_path) as (_, client):
        acct = await client.account()
        org = acct["org_id"]
        key, secret = acct["api_key"], acct["secret_key"]
        status, out, _ = await client.call("POST", f"/api/v1/orgs/{org}/workflows",
                                           {"id": "wf-inf", "name": "x", "budget_usd": float("inf")}, acct["headers"])
        assert status == 400 and out["error"]["message"].startswith("budget_usd"), out
        wid = await new_workflow(client, acct, budget=10)
        status, out, _ = await client.call("PATCH", f"/api/v1/orgs/{org}/workflows/{wid}",
                                           {"budget_usd": float("inf")}, acct["headers"])
        assert status == 400 and out["error"]["message"].startswith("budget_usd"), out
        attempts = [
            ("/api/v1/gate", b'{"workflow_id": "%s", "estimated_cost_usd": Infinity}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/gate", b'{"workflow_id": "%s", "estimated_cost_usd": 1e999}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/execute", b'{"workflow_id": "%s", "estimated_cost_usd": Infinity}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/check", b'{"workflow_id": "%s", "estimated_cost_usd": NaN}' % wid.encode(),
             "estimated_cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "cost_usd": Infinity}' % wid.encode(), "cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "cost_usd": -Infinity}' % wid.encode(), "cost_usd"),
            ("/api/v1/track", b'{"workflow_id": "%s", "tokens": 1, "metadata": {"cost_usd": Infinity}}'
             % wid.encode(), "metadata"),
            ("/api/v1/track/batch", b'{"events": [{"workflow_id": "%s", "cost_usd": 1e999}]}' % wid.encode(),
             "events.0.cost_usd"),
        ]
        for path, raw, field in attempts:
            status, out, _ = await signed_call(client, key, secret, path, None, raw=raw)
            assert status == 400, (path, raw, out)
            assert out["error"]["message"].startswith(field), (path, out)
        status, out, _ = await client.call("POST", f"/api/v1/orgs/{org}/policies",
                                           {"name": "p", "action": "deny", "match": {"cost_gt": float("inf")}},
                                           acct["headers"])
        assert status == 400 and out["error"]["message"].startswith("match.cost_gt"), out
        workflow = await workflow_view(client, acct, wid)
        assert (workflow["budget_usd"], workflow["spent_usd"], workflow["reserved_usd"]) == (10, 0, 0)
