"""One OpenAPI 3 document for every API the node serves, generated from the routes of the
running app and the same pydantic models that validate the request bodies.

A handler declares its body model once, with `@body(Model)`: that both marks it for the document
and parses the body, so the model named in the document is the one that validates. `@accepts(Model)`
only marks (for the few handlers that keep the raw body, merge it, or choose the model by it); the
summary is the first line of its docstring or its name."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from node.server.http import ApiFamily, owner, parse_model, read_json

_ATTR = "__openapi_body__"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def accepts(model: type[BaseModel]):
    def mark(fn):
        setattr(fn, _ATTR, model)
        return fn

    return mark


Reader = Callable[[Any, web.Request], Awaitable[Any]]


async def _read_json(_self: Any, request: web.Request) -> Any:
    return await read_json(request)


def body(model: type[BaseModel], read: Reader = _read_json):
    """Declare `model` as a handler method's JSON body and parse it: the handler is called as
    `handler(self, request, body)` with the validated model (a 400 naming the field otherwise).

    `read(self, request)` is the family's step that reads the raw body and returns its JSON, and
    may check the caller first (CRE's bearer+HMAC over the raw bytes, a registry bearer): it runs
    before parsing, so an unauthenticated caller with a bad body still gets the family's 401."""
    def wrap(fn):
        @functools.wraps(fn)
        async def handler(self: Any, request: web.Request) -> web.StreamResponse:
            return await fn(self, request, parse_model(model, await read(self, request)))

        return accepts(model)(handler)

    return wrap


def build_spec(app: web.Application, title: str, version: str, families: Sequence[ApiFamily] = ()) -> dict[str, Any]:
    """The OpenAPI document of every route of `app`, tagged by the API family owning its path."""
    operations: list[tuple[str, str, Any]] = []
    models: dict[str, type[BaseModel]] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        raw = info.get("path") or info.get("formatter")
        if not raw:
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", raw)
        handler = route.handler
        model = getattr(handler, _ATTR, None)
        if model is not None:
            models[model.__name__] = model
        operations.append((route.method.lower(), path, handler))

    _, schemas = models_json_schema([(m, "validation") for m in models.values()],
                                    ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in sorted(operations, key=lambda o: (o[1], o[0])):
        doc = (getattr(handler, "__doc__", None) or "").strip().splitlines()
        name = getattr(handler, "__name__", "handler")
        op: dict[str, Any] = {
            "operationId": f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
            "summary": doc[0] if doc else name.replace("_", " "),
            "tags": [family.tag if (family := owner(families, path)) else "node"],
            "responses": {"200": {"description": "Success"}, "400": {"description": "Invalid input (names the field)"},
                          "401": {"description": "Not authenticated"}, "403": {"description": "Not allowed"}},
        }
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _PARAM.findall(path)]
        if params:
            op["parameters"] = params
        model = getattr(handler, _ATTR, None)
        if model is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }
