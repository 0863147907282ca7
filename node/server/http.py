"""Server plumbing shared by every API family: request ids, JSON errors, rate limits, body
parsing with pydantic, and the error shape each family uses (chosen by path prefix)."""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from node.errors import (
    Busy,
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    PaymentRequired,
    Unauthenticated,
    Unavailable,
)
from node.logs import get_logger
from node.server import safejson
from node.server.clients import ClientAddresses, client_of, limit_key
from node.server.config import RateLimitConfig
from node.server.timeouts import BodyTimeout

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[[int, str, dict[str, Any] | None], dict[str, Any]]
M = TypeVar("M", bound=BaseModel)

REQUEST_ID = "request_id"


def dumps(value: Any) -> bytes:
    """Compact JSON as bytes: orjson (a fifth of the stdlib's cost on the job path's small
    bodies), falling back to the stdlib for what orjson refuses, integers beyond 64 bits (chain
    values) and non-string keys, so no value that encoded before fails now. One difference:
    NaN and Infinity (which a container's output may hold) encode as null, valid JSON, where
    the stdlib wrote literals no strict parser reads."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":")).encode()


def infernet_error(status: int, message: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The Infernet node's error body: `{"error": str[, "params": object]}`."""
    body: dict[str, Any] = {"error": message}
    if params:
        body["params"] = params
    return body


@dataclass(frozen=True)
class ApiFamily:
    """One API family's URL space, declared once by the family and read by both the app builder
    (which error shape a path gets) and the OpenAPI builder (which tag it has)."""

    tag: str
    prefixes: tuple[str, ...]
    error: ErrorRenderer | None = None  # None: the Infernet shape

    def match(self, path: str) -> int:
        """Length of the longest prefix of `path` this family owns (0: none)."""
        return max((len(p) for p in self.prefixes if path.startswith(p)), default=0)


def owner(families: Sequence[ApiFamily], path: str) -> ApiFamily | None:
    """The family owning `path`: the one with the longest matching prefix."""
    best, length = None, 0
    for family in families:
        n = family.match(path)
        if n > length:
            best, length = family, n
    return best


class ErrorShapes:
    """Which JSON error body a path gets: its family's; anything no family owns gets the
    Infernet shape."""

    def __init__(self, families: Sequence[ApiFamily] = ()) -> None:
        self._families = list(families)

    def render(self, path: str, status: int, message: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        family = owner(self._families, path)
        renderer = family.error if family is not None and family.error is not None else infernet_error
        return renderer(status, message, params)


# Where the domain's refusals (node/errors.py) become HTTP: the one place that knows both.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    Invalid: 400, Unauthenticated: 401, PaymentRequired: 402, Forbidden: 403, NotFound: 404, Conflict: 409,
    Busy: 429, Unavailable: 503,
}


def domain_status(exc: DomainError) -> int:
    """The status of a refusal: its kind's, or the nearest kind it specialises."""
    for kind in type(exc).__mro__:
        if kind in DOMAIN_STATUS:
            return DOMAIN_STATUS[kind]
    raise TypeError(f"{type(exc).__name__} is a DomainError of no kind in DOMAIN_STATUS")


def retry_header(seconds: float | None) -> dict[str, str] | None:
    """`Retry-After` in whole seconds, at least 1 (None: no header)."""
    return None if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


class ApiError(Exception):
    """Raise from a handler: rendered as JSON in the error shape of the request's API family."""

    def __init__(self, status: int, message: str, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status
        self.message = message
        self.params = params
        self.headers = headers


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def validation_message(error: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """A one-line message naming the first bad field, and every problem as {field, message}."""
    problems = [
        {"field": ".".join(str(p) for p in item["loc"]) or "(body)", "message": item["msg"].removeprefix("Value error, ")}
        for item in error.errors()
    ]
    first = problems[0]
    return f"{first['field']}: {first['message']}", problems


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, problems = validation_message(exc)
        raise ApiError(400, message, {"errors": problems}) from None


def parse_json(raw: bytes, max_depth: int | None = None) -> Any:
    if not raw:
        raise ApiError(400, "Request body is empty; expected JSON")
    try:
        return safejson.loads(raw, max_depth, strict=True)
    except safejson.JsonTooDeep as exc:
        raise ApiError(400, f"Request body: {exc}", {"max_json_depth": exc.limit}) from None
    except safejson.NonStandardJson as exc:
        raise ApiError(400, f"Request body: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON") from None


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "Request body too large") from None
    return parse_json(raw)


SQLITE_MAX_INT = 2**63 - 1


def parse_digits(value: str) -> int | None:
    """`value` as a non-negative integer when it is ASCII digits, else None. A number with more
    significant digits than SQLite's largest integer reads as SQLITE_MAX_INT + 1, without int()
    (which refuses more than 4,300 digits: "9" * 5000 in a query string was a 500)."""
    if not (value.isascii() and value.isdigit()):
        return None
    significant = value.lstrip("0")
    return int(significant or "0") if len(significant) <= len(str(SQLITE_MAX_INT)) else SQLITE_MAX_INT + 1


def int_param(value: str, name: str) -> int:
    """A non-negative integer from a path or query string, within what SQLite can store:
    anything else (signs, non-ASCII digits, 20-digit numbers) is a 400 naming `name`."""
    number = parse_digits(value)
    if number is None or number > SQLITE_MAX_INT:
        raise ApiError(400, f"{name}: expected an integer from 0 to {SQLITE_MAX_INT}, got {value[:40]!r}")
    return number


def query_limit(request: web.Request, default: int, maximum: int) -> int:
    """`?limit=` as a positive integer, capped at `maximum`."""
    value = request.query.get("limit")
    if value is None:
        return default
    number = parse_digits(value)
    if number is None or number < 1:
        raise ApiError(400, f"limit: expected a positive integer, got {value[:40]!r}")
    return min(number, maximum)


class RateLimiter:
    """Fixed-window counter per (client, route): an IPv4 address, or an IPv6 /64 (one
    subscriber's block: rotating addresses inside it buys nothing). `num_requests == 0`
    disables it."""

    def __init__(self, config: RateLimitConfig, exempt: set[tuple[str, str]] | None = None) -> None:
        self.limit = config.num_requests
        self.period = config.period
        self.exempt = exempt or set()
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._last_prune = time.monotonic()

    def hit(self, ip: str | None, method: str, route: str) -> float | None:
        """Count a request from `ip`; return seconds to wait if it is over the limit, else None."""
        if self.limit == 0 or (method, route) in self.exempt:
            return None
        now = time.monotonic()
        if now - self._last_prune > self.period:
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.period}
            self._last_prune = now
        key = (limit_key(ip), route)
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.period:
            start, count = now, 0
        if count >= self.limit:
            return self.period - (now - start)
        self._windows[key] = (start, count + 1)
        return None


class RoutedMiddleware(Protocol):
    """An aiohttp-style middleware whose second parameter is named `handler`: the routed chain
    binds it by keyword (functools.partial), so the name is part of the contract."""

    def __call__(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]: ...


@dataclass(frozen=True)
class RouteMiddleware:
    """A middleware only some routes need. `applies(method, path)` is asked once per route (its
    canonical path) when the route is first requested, not on every request: a route it does not
    apply to never passes through it (each middleware layer costs every request a coroutine
    frame and a resume per await). A request no route matched (404, 405) is judged by its path."""

    applies: Callable[[str, str], bool]
    middleware: RoutedMiddleware
    # The middleware passes a request without this header straight on (it acts only on requests
    # carrying it): the fast lane (node/server/fastlane.py) may then serve the route's requests
    # that lack it. None: it may act on any request of its routes, which the lane never serves.
    only_with_header: str | None = None


def prefix_rate_limit(limiter: RateLimiter, prefixes: tuple[str, ...]) -> RouteMiddleware:
    """`limiter` applied to the routes under `prefixes` only, per client IP and route: the
    sign-in routes, where every guess costs a password hash and an unlimited client could
    guess at line rate. (For `make_middlewares(..., routed=[...])`.)"""

    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limiter.limit:  # read per request: a config reload retunes it
            route = request.match_info.route.resource
            wait = limiter.hit(client_ip(request), request.method,
                               route.canonical if route is not None else request.path)
            if wait is not None:
                log.warning("http.rate_limited", path=request.path, client=client_ip(request))
                raise too_many_requests(wait)
        return await handler(request)

    return RouteMiddleware(lambda method, path: path.startswith(prefixes), limit)


def refuse_compressed_body(request: web.Request) -> None:
    """A compressed request body is refused (415) before a byte of it is read.

    aiohttp would inflate it while reading (its parser runs before any limit of ours), so a
    kilobyte on the wire became megabytes for the JSON pre-scan and `max_body_bytes` counted
    the inflated size: a gzip bomb's inflation cost CPU on the event loop before anything could
    refuse it. No client of the node's APIs (the Infernet and nullrun SDKs, CRE workers,
    containers reporting status) compresses request bodies, so refusing costs nothing, where
    capping the inflated size would still mean inflating on the event loop. The server also
    runs with aiohttp's request decompression off (`TimedAppRunner`), so a body that slipped
    past this check would reach a handler as the compressed bytes and fail to parse."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        request.protocol.close()  # no keep-alive: the rest of the body is never read
        raise ApiError(415, f"Content-Encoding {encoding[:40]!r} is not accepted: send the request body "
                       "uncompressed", {"content_encoding": encoding[:40]})


class RequestIds:
    """Request ids: a per-process random prefix and a counter (unique, and cheaper than a uuid4,
    which costs a getrandom() call on every request); a client's own X-Request-Id is kept."""

    def __init__(self) -> None:
        self._prefix, self._counter = uuid.uuid4().hex[:8], itertools.count(1)

    def next(self, given: str | None = None) -> str:
        return given or f"{self._prefix}-{next(self._counter):x}"


def error_answer(exc: Exception, shapes: ErrorShapes, method: str, path: str,
                 request_id: str) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """How a refusal (ApiError, a domain error) or a bug is answered: (status, body in the path's
    family shape, extra headers). The one place both HTTP paths (aiohttp's middleware below and
    the fast lane) turn exceptions into answers."""
    if isinstance(exc, ApiError):
        return exc.status_code, shapes.render(path, exc.status_code, exc.message, exc.params), exc.headers
    if isinstance(exc, DomainError):
        status = domain_status(exc)
        return status, shapes.render(path, status, exc.message, exc.params), retry_header(exc.retry_after)
    log.exception("http.unhandled", request_id=request_id, method=method, path=path)  # called in the except
    return 500, shapes.render(path, 500, "Internal server error", {"request_id": request_id}), None


def make_middlewares(shapes: ErrorShapes, limiter: RateLimiter,
                     max_json_depth: int = safejson.DEFAULT_MAX_DEPTH,
                     clients: ClientAddresses | None = None,
                     routed: Sequence[RouteMiddleware] = (), ids: RequestIds | None = None) -> list:
    """The server's one middleware: request id, client address, error shape, the rate limit,
    and, for the routes they apply to, the `routed` middlewares (outermost first), composed once
    per route."""
    clients = clients or ClientAddresses()
    ids = ids or RequestIds()
    # Per route: (the handler aiohttp gave us for it, that handler inside the routed middlewares
    # that apply to the route, whether the rate limit applies). aiohttp hands us the same handler
    # object for a route every time (it caches its own chain per route); a new one rebuilds.
    plans: dict[Any, tuple[Handler, Handler, bool]] = {}

    def plan(request: web.Request, handler: Handler) -> tuple[Handler, Handler, bool]:
        route = request.match_info.route
        resource = route.resource
        path = resource.canonical if resource is not None else request.path
        method = request.method
        chain = handler
        for routed_middleware in reversed([r for r in routed if r.applies(method, path)]):
            chain = functools.partial(routed_middleware.middleware, handler=chain)
        limited = (method, path) not in limiter.exempt
        made = (handler, chain, limited)
        if resource is not None:  # 404/405 answers get a new handler each time: not kept
            plans[route] = made
        return made

    def rate_limit(request: web.Request) -> None:
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else request.path
        wait = limiter.hit(client_ip(request), request.method, canonical)
        if wait is not None:
            raise too_many_requests(wait)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = ids.next(request.headers.get("X-Request-Id"))
        request[REQUEST_ID] = request_id
        clients.attach(request)  # the client's address, decided once (node/server/clients.py)
        safejson.max_depth_var.set(max_json_depth)
        try:
            refuse_compressed_body(request)
            known = plans.get(request.match_info.route)
            if known is None or known[0] is not handler:
                known = plan(request, handler)
            if limiter.limit and known[2]:  # the limit is read per request: a reload retunes it
                rate_limit(request)
            response = await known[1](request)
        except BodyTimeout as exc:
            response = json_response(shapes.render(request.path, 408, str(exc), exc.params), 408)
            response.force_close()  # the rest of the body is never read
        except web.HTTPException as exc:
            if exc.status_code < 400:
                raise
            message = exc.reason if exc.status_code != 404 else f"Not found: {request.method} {request.path}"
            response = json_response(shapes.render(request.path, exc.status_code, message), exc.status_code)
        except Exception as exc:  # noqa: BLE001 - refusals in the family's shape; never a stack trace or HTML
            status, body, headers = error_answer(exc, shapes, request.method, request.path, request_id)
            response = json_response(body, status, headers)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    return [errors]


def client_ip(request: web.Request) -> str | None:
    """The client's address: the one way to read it (node/server/clients.py decides it)."""
    return client_of(request).ip


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, else None: the one way every API reads it."""
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


def too_many_requests(wait: float) -> ApiError:
    """The answer of every rate limit: 429 with the seconds to wait in the body and Retry-After."""
    return ApiError(429, "Too many requests", {"retry_after": round(wait, 3)},
                    headers={"Retry-After": str(max(1, int(wait + 0.999)))})
