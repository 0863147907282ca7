"""Replay protection for signed SDK requests.

The seed's signature covers timestamp, API key and body only, so within its max age a captured
request can be sent again, and sent to another endpoint that accepts the same body. The
signature itself is kept (the SDK computes it); instead every signature a mutating endpoint
accepted is remembered until it can no longer pass the timestamp check:

- the same signed request again, to the same path, gets the first answer again and acts only
  once (idempotent replay: a retrying SDK gets its answer, an attacker gets nothing new);
- the same signature on another path is refused: a signature is valid only for the path it was
  first used on.

Concurrent identical requests wait for the first one's answer instead of acting in parallel.
The memory of answers does not survive a restart, so a signature made before this process
started is refused (401, the SDK signs every attempt anew): a request captured before a restart
cannot be replayed after it. (Storing every answer in SQLite did the same at half the throughput.)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from node.logs import get_logger
from node.server.http import ApiError

log = get_logger(__name__)


@dataclass
class _Seen:
    path: str
    expires_at: float
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ReplayGuard:
    def __init__(self, max_age: float, max_entries: int = 100_000, not_before: int | None = None) -> None:
        # A timestamp is accepted up to max_age either side of now: a signature is dead 2x later.
        self._ttl = 2 * max_age + 5
        self._max_entries = max_entries
        self._not_before = int(time.time()) if not_before is None else not_before
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()

    def _prune(self, now: float) -> None:
        while self._seen:
            key, entry = next(iter(self._seen.items()))
            if entry.expires_at > now and len(self._seen) <= self._max_entries:
                break
            self._seen.pop(key)

    async def once(self, key_id: str, signature: str, timestamp: str, path: str,
                   act: Callable[[], Awaitable[web.Response]]) -> web.Response:
        if int(timestamp) < self._not_before:
            raise ApiError(401, "Request was signed before this node started; sign it again")
        now = time.time()
        self._prune(now)
        slot = (key_id, signature.lower())
        seen = self._seen.get(slot)
        if seen is not None:
            if seen.path != path:
                log.warning("gateway.signature_reused", key_id=key_id, first_path=seen.path, path=path)
                raise ApiError(401, f"Signature was already used for {seen.path}; sign each request for its endpoint")
            try:
                status, body, content_type = await asyncio.shield(seen.answer)
            except asyncio.CancelledError:
                if not seen.answer.cancelled():
                    raise
                raise ApiError(409, "An identical request was refused while this one waited; retry") from None
            log.info("gateway.replayed_answer", key_id=key_id, path=path)
            return web.Response(status=status, body=body, content_type=content_type,
                                headers={"X-Idempotent-Replay": "true"})
        seen = self._seen[slot] = _Seen(path, now + self._ttl)
        try:
            response = await act()
        except ApiError as exc:
            # A refused request did not act: forget it, so the same bytes get the same refusal.
            self._seen.pop(slot, None)
            seen.answer.cancel()
            raise exc
        except BaseException:
            self._seen.pop(slot, None)
            seen.answer.cancel()
            raise
        seen.answer.set_result((response.status, response.body, response.content_type))
        return response
