"""The house rules of ARCHITECTURE.md that a machine can check, checked on the source tree.

One way to refuse: below the HTTP edge a refusal is a domain error from node/errors.py, and the
edge alone (`DOMAIN_STATUS` in node/server/http.py) knows which HTTP status each kind gets. The
edge is node/server/ and the subsystems' HTTP handler modules (`api.py`, `*_api.py`, and the
few handler modules named in `EDGE_MODULES`, each with why)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from node import errors
from node.server.http import DOMAIN_STATUS

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node"

# Handler modules whose names do not say so: they turn a request into an answer.
EDGE_MODULES = {
    "node/jobs/resources.py": "the GET /resources handler",
    "node/gateway/sdk.py": "the SDK endpoints' handlers; a refusal there is the SDK's envelope with its status",
    "node/gateway/replay.py": "wraps handlers and gives their HTTP answers back (status, body, headers)",
}
STATUS_KEYWORDS = {"status", "status_code", "http_status"}
STATUS_POSITION = {"json_response": 1, "refusal": 0}  # callees taking a status positionally, and where


def is_edge(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return (relative.startswith("node/server/") or name == "api.py" or name.endswith("_api.py")
            or relative in EDGE_MODULES)


def callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def http_status(value: ast.expr) -> bool:
    return isinstance(value, ast.Constant) and type(value.value) is int and 400 <= value.value <= 599


def refusals_below_the_edge(source: str) -> list[tuple[int, str]]:
    """What in one module's source refuses the HTTP way: `ApiError` or `JobRejected` named at
    all (raised, caught or imported), an aiohttp `HTTPException` made, or an int HTTP status
    passed as a status (a `status=` keyword, the first argument of an error class, the status
    argument of `json_response` or the SDK's `refusal`)."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in ("ApiError", "JobRejected"):
            found.add((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom) and {a.name for a in node.names} & {"ApiError", "JobRejected"}:
            found.add((node.lineno, "import"))
        elif isinstance(node, ast.Call):
            name = callee(node) or ""
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "web" \
                    and name.startswith("HTTP"):
                found.add((node.lineno, f"{name}(...)"))
            for keyword in node.keywords:
                if keyword.arg in STATUS_KEYWORDS and http_status(keyword.value):
                    found.add((node.lineno, f"{name}({keyword.arg}={ast.unparse(keyword.value)})"))
            at = 0 if name.endswith(("Error", "Exception", "Rejected")) else STATUS_POSITION.get(name)
            if at is not None and len(node.args) > at and http_status(node.args[at]):
                found.add((node.lineno, f"{name}(... {ast.unparse(node.args[at])} ...)"))
    return sorted(found)


def test_the_guard_sees_each_way_of_refusing_with_an_http_status() -> None:
    source = inspect.cleandoc("""
        from node.server.http import ApiError
        raise ApiError(403, "no")
        raise JobRejected("no", None, 403)
        raise GatewayError(504, "slow")
        raise web.HTTPForbidden()
        return json_response(body, 402)
        return web.Response(status=429)
        raise Forbidden("no")
        return json_response(body)
        limit = query_limit(request, 50, 500)
    """)
    assert {line for line, _ in refusals_below_the_edge(source)} == {1, 2, 3, 4, 5, 6, 7}


def test_no_module_below_the_edge_raises_api_error_or_names_an_http_status() -> None:
    offenders = {}
    for path in sorted(NODE.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if is_edge(relative):
            continue
        found = refusals_below_the_edge(path.read_text())
        if found:
            offenders[relative] = found
    assert not offenders, "raise a domain error from node/errors.py below the edge (ARCHITECTURE.md):\n" + \
        "\n".join(f"{module}:{line}: {what}" for module, found in offenders.items() for line, what in found)


def test_every_kind_of_domain_error_has_its_status_at_the_edge() -> None:
    kinds = {k for k in vars(errors).values()
             if inspect.isclass(k) and issubclass(k, errors.DomainError) and k is not errors.DomainError}
    assert kinds == set(DOMAIN_STATUS)
