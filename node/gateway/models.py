"""What the gateway API's request bodies (`/api/v1`) share: strict parsing (unknown fields are
errors, and so are non-finite numbers: `Infinity`, `NaN` or `1e999` as a cost or budget would
poison every sum and comparison it meets), the id and email patterns, roles, and reading a body (the reading steps `@body` runs
before parsing, so the caller is checked before the body is judged). Each resource's
models live with its handlers."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from node.server.http import parse_json

Role = Literal["owner", "admin", "member", "viewer"]
WORKFLOW_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def finite_json(value: Any) -> Any:
    """For free-form JSON fields (settings, metadata): every number in it must be finite, so
    what is stored reads back as JSON anywhere (a ValueError names where it is not)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{where.lstrip('.') or 'value'} must be a finite number")
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}", v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}.{i}", v) for i, v in enumerate(item))
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


async def read_body(_api: Any, request: web.Request) -> Any:
    """The gateway's reading step for `@body`: the raw body as JSON."""
    return parse_json(await request.read())


async def read_signed_in(api: Any, request: web.Request) -> Any:
    """A session is required (401) before the body is read."""
    await api.auth.session(request)
    return await read_body(api, request)


def read_as(role: Role, before: Callable[[Any, web.Request], Awaitable[Any]] | None = None):
    """A reading step requiring `role` in the path's org (401/403 before any 400 about the body);
    the acting user or key is kept as request["actor"]. With `before`, the resource the path
    names is then looked up (404 before the body is judged) and kept as request["before"]."""
    async def read(api: Any, request: web.Request) -> Any:
        request["actor"] = await api.auth.org(request, request.match_info["org_id"], role)
        if before is not None:
            request["before"] = await before(api, request)
        return await read_body(api, request)

    return read
