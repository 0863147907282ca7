"""`GET /resources[?model_id=]`: what each container serves, as the Infernet node 1.4 answers it.

The node asks every configured container `GET /service-resources` (with `?model_id=` passed on:
the container then says whether it serves that model) at once, and answers a map of container id
to the container's JSON; a container that fails, is slow or answers something that is not JSON
is left out, as Infernet leaves it out. Unlike Infernet, remote containers (`url`, with their
bearer) are asked too, and each answer is bounded in time, size and nesting, so one caller's
request cannot hold the node or fill its memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from node.jobs.endpoint import ContainerEndpoint
from node.logs import get_logger
from node.server.http import ApiError, json_response
from node.server.safejson import loads

log = get_logger(__name__)

MAX_MODEL_ID = 512
MAX_ANSWER_BYTES = 1 << 20
TIMEOUT = 5.0


class ResourcesApi:
    def __init__(self, endpoints: Callable[[], Mapping[str, ContainerEndpoint]], session: aiohttp.ClientSession,
                 max_json_depth: int = 64, timeout: float = TIMEOUT) -> None:
        self._endpoints = endpoints
        self._session = session
        self._depth = max_json_depth
        self._timeout = timeout

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/resources", self.resources)]

    async def resources(self, request: web.Request) -> web.Response:
        """Each container's `/service-resources` answer, by container id (failures left out)."""
        model_id = request.query.get("model_id")
        if model_id is not None and not 0 < len(model_id) <= MAX_MODEL_ID:
            raise ApiError(400, f"model_id: expected 1 to {MAX_MODEL_ID} characters")
        params = {"model_id": model_id} if model_id else None
        endpoints = list(self._endpoints().values())
        answers = await asyncio.gather(*(self._ask(e, params) for e in endpoints))
        return json_response({e.id: a for e, a in zip(endpoints, answers, strict=True) if a is not None})

    async def _ask(self, endpoint: ContainerEndpoint, params: dict[str, str] | None) -> Any | None:
        url = f"{endpoint.url}/service-resources"
        headers = {k: v for k, v in endpoint.headers.items() if k == "Authorization"}
        try:
            async with self._session.get(url, params=params, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
                resp.raise_for_status()
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ValueError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                return loads(raw, self._depth)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning("resources.container_failed", container=endpoint.id, error=str(exc)[:200] or repr(exc))
            return None
