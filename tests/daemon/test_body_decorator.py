"""`@body(Model)`: one declaration both documents a handler's JSON body and parses it, in the
error shape of the handler's API family, after the family's reading step (which may refuse the
caller first). In-process: an aiohttp test client on a tiny app built like the node's."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict, Field

from node.registry.api import FAMILY as REGISTRY
from node.server.config import RateLimitConfig
from node.server.http import ApiError, ErrorShapes, RateLimiter, json_response, make_middlewares, read_json
from node.server.openapi import body, build_spec


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    times: int = Field(ge=1)


class Api:
    def __init__(self) -> None:
        self.reads: list[str] = []

    async def _authed(self, request: web.Request) -> Any:
        self.reads.append(request.path)
        if request.headers.get("Authorization") != "Bearer ok":
            raise ApiError(401, "Missing bearer token")
        return await read_json(request)

    @body(Greeting)
    async def greet(self, request: web.Request, greeting: Greeting) -> web.Response:
        """Greet someone."""
        return json_response({"type": type(greeting).__name__, "name": greeting.name, "times": greeting.times})

    @body(Greeting, read=_authed)
    async def greet_authed(self, request: web.Request, greeting: Greeting) -> web.Response:
        return json_response({"name": greeting.name})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/greet", self.greet), web.post("/api/tasks/greet", self.greet),
                web.post("/api/tasks/authed", self.greet_authed)]


API = web.AppKey("api", Api)


@pytest.fixture
async def client():
    api = Api()
    app = web.Application(middlewares=make_middlewares(ErrorShapes([REGISTRY]),
                                                       RateLimiter(RateLimitConfig(num_requests=0))))
    app.add_routes(api.routes())
    app[API] = api
    test_client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_a_valid_body_reaches_the_handler_as_the_validated_model(client):
    response = await client.post("/greet", json={"name": "ada", "times": 2})
    assert response.status == 200
    assert await response.json() == {"type": "Greeting", "name": "ada", "times": 2}


async def test_a_bad_field_is_a_400_naming_the_field_in_the_infernet_shape(client):
    response = await client.post("/greet", json={"name": "ada", "times": 0})
    assert response.status == 400
    answer = await response.json()
    assert "times" in answer["error"]
    assert [e["field"] for e in answer["params"]["errors"]] == ["times"]


async def test_a_bad_field_is_a_400_naming_the_field_in_the_registry_shape(client):
    response = await client.post("/api/tasks/greet", json={"name": "", "times": 1})
    assert response.status == 400
    answer = await response.json()
    assert answer["statusCode"] == 400 and "name" in answer["message"]
    assert [d["field"] for d in answer["details"]] == ["name"]


async def test_a_body_that_is_not_json_is_a_400_not_a_500(client):
    response = await client.post("/greet", data=b"{not json")
    assert response.status == 400
    assert "JSON" in (await response.json())["error"]


async def test_the_read_step_refuses_an_unauthenticated_caller_before_the_body_is_judged(client):
    response = await client.post("/api/tasks/authed", json={"times": "bad"})
    assert response.status == 401
    assert (await response.json())["message"] == "Missing bearer token"
    assert client.app[API].reads == ["/api/tasks/authed"]


async def test_an_authenticated_caller_with_a_bad_body_gets_the_400(client):
    bearer = {"Authorization": "Bearer ok"}
    response = await client.post("/api/tasks/authed", json={"name": "ada"}, headers=bearer)
    assert response.status == 400
    assert [d["field"] for d in (await response.json())["details"]] == ["times"]
    ok = await client.post("/api/tasks/authed", json={"name": "ada", "times": 1}, headers=bearer)
    assert ok.status == 200 and await ok.json() == {"name": "ada"}


async def test_the_openapi_document_names_the_body_model_and_keeps_the_summary(client):
    spec = build_spec(client.app, "t", "0")
    op = spec["paths"]["/greet"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Greeting"}
    assert op["summary"] == "Greet someone."
    assert set(spec["components"]["schemas"]["Greeting"]["properties"]) == {"name", "times"}
