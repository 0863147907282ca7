"""What the gateway API's request bodies (`/api/v1`) share: strict parsing (unknown fields are
errors), the id and email patterns, roles, and reading a body into its model. Each resource's
models live with its handlers."""

from __future__ import annotations

from typing import Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from node.server.http import parse_json, parse_model

Role = Literal["owner", "admin", "member", "viewer"]
M = TypeVar("M", bound=BaseModel)
WORKFLOW_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def read_model(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model` (400 naming the field otherwise)."""
    return parse_model(model, parse_json(await request.read()))
