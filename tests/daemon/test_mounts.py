"""The subsystem contract (node/subsystem.py), in-process: what a subsystem mounts is what the
node serves, each route in its own family's error shape, and the node enters and leaves every
subsystem's lifespan, serving hooks, drains and first stops in the documented order."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.app import Node, _check_family
from node.config import parse_config
from node.server.http import ApiFamily, infernet_error
from node.subsystem import Context, Mount

METHODS = ("PATCH", "PUT", "DELETE", "POST", "GET")


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "rate_limit": {"num_requests": 0},
                   "auth_rate_limit": {"num_requests": 0}},
        "storage": {"path": str(tmp_path / f"{uuid.uuid4().hex[:6]}.db")},
        "gateway": {"enabled": True, "master_key_path": str(tmp_path / "node.key")},
        "cre": {"enabled": True, "api_key": "k"},
        "registry": {"enabled": True},
        "observe": {"enabled": True},
        "manage_containers": False, "startup_wait": 0, "containers": [],
    }


def _shape(value: Any) -> Any:
    """The key structure of a JSON body (values only by type)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


async def test_every_mounted_route_answers_errors_in_its_own_familys_shape(tmp_path):
    node = Node(parse_config(_config(tmp_path)))
    await node.start()
    try:
        assert {m.name for m in node.mounts} == {"jobs", "cre", "gateway", "registry", "observe"}
        served: dict[str, set[str]] = {}
        for mount in node.mounts:
            for route in mount.routes:
                served.setdefault(route.path, set()).add(route.method)  # type: ignore[attr-defined]
        checked = 0
        async with aiohttp.ClientSession() as session:
            for mount in node.mounts:
                render = mount.family.error if mount.family and mount.family.error else infernet_error
                for route in mount.routes:
                    path = re.sub(r"\{[^}]*\}", "1", route.path)  # type: ignore[attr-defined]
                    method = next(m for m in METHODS if m not in served[route.path])  # type: ignore[attr-defined]
                    async with session.request(method, f"http://127.0.0.1:{node.port}{path}") as resp:
                        assert resp.status >= 400, (mount.name, method, path)
                        body = await resp.json()
                    expected = render(resp.status, "message", None)
                    assert _shape(body).keys() == _shape(expected).keys(), (mount.name, method, path, body)
                    checked += 1
        assert checked > 100  # every family's routes were asked, not a handful
    finally:
        await node.stop()


def test_a_route_outside_its_own_familys_prefixes_is_refused_at_start():
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    own = ApiFamily("own", ("/api/own",), lambda status, message, params: {"own": message})
    other = ApiFamily("other", ("/api/other",), lambda status, message, params: {"other": message})
    _check_family(Mount("own", family=own, routes=[web.get("/api/own/x", handler)]), [own, other])
    with pytest.raises(AssertionError, match="/api/other/x would answer errors in the shape of other"):
        _check_family(Mount("own", family=own, routes=[web.get("/api/other/x", handler)]), [own, other])


class Recorder:
    """A subsystem that writes down when each part of its lifespan runs."""

    name = "recorder"
    enabled = True

    def __init__(self, events: list[str], node: Node) -> None:
        self.events, self.node = events, node

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {}

    def lifespan(self, ctx: Context) -> Any:
        return self._lifespan(ctx)

    def _note(self, event: str) -> None:
        self.events.append(f"{event} serving={self.node.started}")

    @asynccontextmanager
    async def _lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        assert ctx.orchestrator is not None, "the jobs core is entered first"
        self._note("enter")

        @asynccontextmanager
        async def serving() -> AsyncIterator[None]:
            self._note("serving")
            yield
            self._note("serving-exit")

        async def stop_first() -> None:
            self._note("stop-first")

        async def drain() -> None:
            assert ctx.orchestrator is not None and not ctx.orchestrator._tasks, "jobs drained before"
            self._note("drain")

        yield Mount(self.name, serving=[serving], stop_first=[stop_first], drains=[drain],
                    bound=[lambda port: self._note(f"bound {port == self.node.port}")])
        self._note("exit")


async def test_subsystems_start_before_serving_and_stop_in_reverse_after_intake_and_the_jobs_drain(tmp_path):
    events: list[str] = []
    node = Node(parse_config({**_config(tmp_path), "gateway": {"enabled": False}, "cre": {"enabled": False},
                              "registry": {"enabled": False}}))
    node.subsystems["recorder"] = Recorder(events, node)
    await node.start()
    assert node.started
    await node.stop()
    assert events == ["enter serving=False", "bound True serving=False", "serving serving=False",
                      "stop-first serving=False", "serving-exit serving=False", "drain serving=False",
                      "exit serving=False"]
