"""Replay protection for signed SDK requests and signed job submissions.

The seed's signature covers timestamp, API key and body only, so within its max age a captured
request can be sent again, and sent to another endpoint that accepts the same body. The
signature itself is kept (the SDK computes it); instead every signature a mutating endpoint
accepted is remembered until it can no longer pass the timestamp check (its timestamp plus the
max age):

- the same signed request again, to the same path, acts only once: it gets the first answer
  again while that answer is kept (idempotent replay: a retrying SDK gets its answer, an
  attacker gets nothing new), else 409 naming the first answer's status and SHA-256;
- the same signature on another path is refused: a signature is valid only for the path it was
  first used on;
- a stream (`claim`) cannot be answered twice: the same signature again is 409, whether the
  first stream is still running or done.

Concurrent identical requests wait for the first one's answer instead of acting in parallel.

What it costs is bounded, and one tenant cannot spend another's share (issue 22, item 9: 300
signed 4 KB batch requests once kept 32 MB, and a flood of one key's signatures evicted other
keys' entries, making their requests replayable again):

- an answer is kept whole only while it is small (`max_answer_bytes`) and fits its key's byte
  share (`max_bytes_per_key`) and the total (`max_bytes`); otherwise only its status and digest
  are kept, which is all a replay needs to be refused;
- an entry is never dropped before its signature is dead: a key over its share of entries
  (`max_entries_per_key`), or a heavy key (more than 1% of `max_entries`) once the table holds
  `max_entries`, gets 429 for new signatures until old ones expire; the table never holds more
  than twice `max_entries` (503 beyond). An entry without its answer costs about 0.5 KB, so the
  defaults (100,000 entries, 10,000 per key, 16 MiB of answers, 1 MiB per key) stay under
  about 70 MB, and 120 MB only once a hundred keys flood at once.

The memory of answers does not survive a restart, so a signature made before this process
started is refused (401, the SDK signs every attempt anew): a request captured before a restart
cannot be replayed after it. (Storing every answer in SQLite did the same at half the throughput.)
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from node.errors import DomainError
from node.logs import get_logger
from node.server.http import ApiError

log = get_logger(__name__)


@dataclass(slots=True)
class _Seen:
    key_id: str
    path: str
    expires_at: float
    stream: bool = False
    done: asyncio.Future | None = field(default=None)  # while the first request runs
    status: int = 0
    body: bytes | None = None  # the first answer, while kept
    content_type: str | None = None
    digest: bytes = b""  # SHA-256 of the first answer


@dataclass(slots=True)
class _Share:
    entries: int = 0
    kept_bytes: int = 0


class ReplayGuard:
    def __init__(self, max_age: float, max_entries: int = 100_000, not_before: int | None = None, *,
                 max_entries_per_key: int = 10_000, max_bytes: int = 16 * 2**20,
                 max_bytes_per_key: int = 2**20, max_answer_bytes: int = 64 * 2**10) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._per_key = max_entries_per_key
        self._heavy = max(1, max_entries // 100)
        self._max_bytes = max_bytes
        self._per_key_bytes = max_bytes_per_key
        self._max_answer = max_answer_bytes
        self._not_before = int(time.time()) if not_before is None else not_before
        self._seen: dict[tuple[str, bytes], _Seen] = {}
        self._expiry: list[tuple[float, tuple[str, bytes]]] = []  # heap of (expires_at, slot)
        self._shares: dict[str, _Share] = {}
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._seen)

    def _forget(self, slot: tuple[str, bytes]) -> None:
        entry = self._seen.pop(slot, None)
        if entry is None:
            return
        share = self._shares[entry.key_id]
        share.entries -= 1
        if entry.body is not None:
            share.kept_bytes -= len(entry.body)
            self.kept_bytes -= len(entry.body)
        if share.entries == 0:
            del self._shares[entry.key_id]

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, slot = heapq.heappop(self._expiry)
            entry = self._seen.get(slot)
            if entry is None or entry.expires_at != expires_at:
                continue
            if entry.done is not None:  # still acting: its waiters need it; look again shortly
                entry.expires_at = now + 1
                heapq.heappush(self._expiry, (entry.expires_at, slot))
                continue
            self._forget(slot)

    def _admit(self, key_id: str) -> None:
        """Room for one more entry of `key_id`, or 429/503 (entries are never evicted early)."""
        held = self._shares[key_id].entries if key_id in self._shares else 0
        total = len(self._seen)
        retry = {"Retry-After": str(int(self._max_age) + 1)}
        if held >= self._per_key or (total >= self._max_entries and held >= self._heavy):
            log.warning("gateway.replay_share_full", key_id=key_id, entries=held, total=total)
            raise ApiError(429, "Too many signed requests from this API key within the signature max age;"
                                " slow down", {"entries": held}, headers=retry)
        if total >= 2 * self._max_entries:
            log.warning("gateway.replay_memory_full", total=total)
            raise ApiError(503, "Too many signed requests in flight on this node; retry later", None, headers=retry)

    def _claim(self, key_id: str, signature: str, timestamp: str, path: str,
               stream: bool) -> tuple[tuple[str, bytes], _Seen | None]:
        """The slot of this signature, and the entry of its earlier use (None: first use, now claimed)."""
        if int(timestamp) < self._not_before:
            raise ApiError(401, "Request was signed before this node started; sign it again")
        now = time.time()
        self._prune(now)
        try:
            digest = bytes.fromhex(signature)
        except ValueError:
            digest = hashlib.sha256(signature.lower().encode()).digest()
        slot = (key_id, digest)
        seen = self._seen.get(slot)
        if seen is not None:
            if seen.path != path:
                log.warning("gateway.signature_reused", key_id=key_id, first_path=seen.path, path=path)
                raise ApiError(401, f"Signature was already used for {seen.path}; sign each request for its endpoint")
            return slot, seen
        self._admit(key_id)
        # A signature is dead once its timestamp is more than max_age away from now.
        expires_at = int(timestamp) + self._max_age + 1
        entry = self._seen[slot] = _Seen(key_id, path, expires_at, stream,
                                         asyncio.get_running_loop().create_future())
        self._shares.setdefault(key_id, _Share()).entries += 1
        heapq.heappush(self._expiry, (expires_at, slot))
        if len(self._expiry) > 2 * len(self._seen) + 1024:  # refused requests left stale items behind
            self._expiry = [(e.expires_at, s) for s, e in self._seen.items()]
            heapq.heapify(self._expiry)
        return slot, None

    def _finish(self, slot: tuple[str, bytes], entry: _Seen, response: web.StreamResponse | None) -> None:
        if response is not None and isinstance(response, web.Response) and not entry.stream:
            body = response.body if isinstance(response.body, bytes) else b""
            entry.status, entry.content_type = response.status, response.content_type
            entry.digest = hashlib.sha256(body).digest()
            share = self._shares[entry.key_id]
            if (len(body) <= self._max_answer and share.kept_bytes + len(body) <= self._per_key_bytes
                    and self.kept_bytes + len(body) <= self._max_bytes):
                entry.body = body
                share.kept_bytes += len(body)
                self.kept_bytes += len(body)
        elif response is not None:
            entry.status = response.status
        done, entry.done = entry.done, None
        if done is not None and not done.done():
            done.set_result(None)

    def _refused(self, slot: tuple[str, bytes], entry: _Seen) -> None:
        """The first request was refused or failed before acting: forget it, so the same bytes
        get the same refusal (or act, once what refused them changed)."""
        self._forget(slot)
        done, entry.done = entry.done, None
        if done is not None and not done.done():
            done.cancel()

    async def _again(self, key_id: str, path: str, seen: _Seen) -> web.Response:
        if seen.stream:
            raise ApiError(409, "This signed stream request was already used; sign each request anew",
                           {"first_status": seen.status or None})
        if seen.done is not None:
            try:
                await asyncio.shield(seen.done)
            except asyncio.CancelledError:
                if not seen.done.cancelled():
                    raise
                raise ApiError(409, "An identical request was refused while this one waited; retry") from None
        log.info("gateway.replayed_answer", key_id=key_id, path=path, kept=seen.body is not None)
        if seen.body is None:
            raise ApiError(409, f"This signed request was already processed (HTTP {seen.status}) and its answer is"
                                " no longer kept; sign a new request to act again",
                           {"first_status": seen.status, "answer_sha256": seen.digest.hex()},
                           headers={"X-Idempotent-Replay": "true"})
        return web.Response(status=seen.status, body=seen.body, content_type=seen.content_type,
                            headers={"X-Idempotent-Replay": "true"})

    async def once(self, key_id: str, signature: str, timestamp: str, path: str,
                   act: Callable[[], Awaitable[web.Response]]) -> web.Response:
        slot, seen = self._claim(key_id, signature, timestamp, path, stream=False)
        if seen is not None:
            return await self._again(key_id, path, seen)
        entry = self._seen[slot]
        try:
            response = await act()
        except BaseException:
            self._refused(slot, entry)
            raise
        self._finish(slot, entry, response)
        return response

    async def claim(self, key_id: str, signature: str, timestamp: str, path: str,
                    act: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """`once` for an answer that cannot be given twice (a stream): the signature is claimed
        before `act` runs; using it again is 409. A refusal (ApiError or a domain error, raised
        before anything was streamed) releases the claim; any other end keeps it, since the job
        may have run."""
        slot, seen = self._claim(key_id, signature, timestamp, path, stream=True)
        if seen is not None:
            return await self._again(key_id, path, seen)
        entry = self._seen[slot]
        try:
            response = await act()
        except (ApiError, DomainError):
            self._refused(slot, entry)
            raise
        except BaseException:
            self._finish(slot, entry, None)
            raise
        self._finish(slot, entry, response)
        return response
