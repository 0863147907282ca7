"""API families, in-process: each family declares its URL space once, and both the error
middleware (which shape a path's errors take) and the OpenAPI document (which tag a path has)
read that one declaration."""

from __future__ import annotations

from aiohttp import web

from node.cre.api import FAMILY as CRE
from node.gateway.api import FAMILY as GATEWAY
from node.jobs.api import FAMILY as JOBS
from node.observe.api import FAMILY as OPERATOR
from node.registry.api import FAMILY as REGISTRY
from node.server.http import ErrorShapes, owner
from node.server.openapi import build_spec

FAMILIES = [JOBS, CRE, GATEWAY, REGISTRY, OPERATOR]


def test_each_path_belongs_to_the_family_with_the_longest_matching_prefix():
    assert owner(FAMILIES, "/health") is JOBS  # the Infernet node's health
    assert owner(FAMILIES, "/health/ready") is GATEWAY  # the gateway's probes
    assert owner(FAMILIES, "/api/v1/gate") is GATEWAY
    assert owner(FAMILIES, "/api/cre/runtime/ingest") is CRE
    assert owner(FAMILIES, "/api/projects/p1/configs") is REGISTRY
    assert owner(FAMILIES, "/api/node/status") is OPERATOR
    assert owner(FAMILIES, "/openapi.json") is None


def test_errors_take_the_shape_of_the_family_owning_the_path():
    shapes = ErrorShapes(FAMILIES)
    assert shapes.render("/api/jobs", 400, "containers: required") == {"error": "containers: required"}
    assert shapes.render("/api/cre/quote", 400, "bad") == {"success": False, "error": "bad"}
    assert shapes.render("/api/v1/track", 404, "gone")["error"] == {"code": "not_found", "message": "gone"}
    assert shapes.render("/api/tasks", 409, "taken")["statusCode"] == 409
    assert shapes.render("/nowhere", 404, "no route") == {"error": "no route"}  # the Infernet shape


def test_the_openapi_document_tags_each_route_by_its_family_and_lists_only_served_routes():
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.add_routes([web.post("/api/jobs", handler), web.get("/health/live", handler),
                    web.post("/api/cre/quote", handler), web.get("/api/tasks", handler),
                    web.get("/metrics", handler), web.get("/openapi.json", handler)])
    spec = build_spec(app, "t", "0", FAMILIES)
    tags = {path: next(iter(ops.values()))["tags"] for path, ops in spec["paths"].items()}
    assert tags == {"/api/jobs": ["jobs"], "/health/live": ["gateway"], "/api/cre/quote": ["cre"],
                    "/api/tasks": ["registry"], "/metrics": ["operator"], "/openapi.json": ["node"]}
