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
- entries are capped per key (`max_entries_per_key`) and in total (`max_entries`). Room is made
  by dropping the oldest finished entry of the key that needs it, or, when the table is full, of
  a key holding more than its fair share (the requester if it does, else the largest). A key
  whose entry was dropped gets a floor: its signatures with a timestamp at or below the dropped
  one's are refused (401, sign again), so a dropped entry can never be replayed, whoever
  flooded. A flood raises the floor of the keys holding the most, which trails their newest
  signatures by (their entries / their request rate): the SDK, which signs every attempt anew,
  does not meet it. Entries still acting are never dropped; 25% over `max_entries` of those is
  503. An entry without its answer costs about 0.5 KB: the defaults (100,000 entries, 50,000
  per key, 16 MiB of answers, 1 MiB per key) hold about 80 MB at most.

The memory of answers does not survive a restart, so a signature made before this process
started is refused (401, the SDK signs every attempt anew): a request captured before a restart
cannot be replayed after it. (Storing every answer in SQLite did the same at half the throughput.)

This is edge code, and so it refuses with `ApiError`: it wraps handlers and keeps and gives back
their HTTP answers (status, body, an `X-Idempotent-Replay` header, on a refusal too), and it
releases a stream's claim when the handler refused, whether with an `ApiError` or a domain error.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from node.errors import DomainError
from node.logs import get_logger
from node.server.http import ApiError

log = get_logger(__name__)


@dataclass(slots=True)
class _Seen:
    path: str
    ts: int  # the signature's timestamp; it is dead after ts + max_age
    stream: bool = False
    done: asyncio.Future | None = field(default=None)  # while the first request runs
    status: int = 0
    body: bytes | None = None  # the first answer, while kept
    content_type: str | None = None
    digest: bytes = b""  # SHA-256 of the first answer


_Slot = tuple[str, bytes]  # (key id, signature)


@dataclass(slots=True)
class _Share:
    """One key's part of the memory: its entries in arrival order, and its floor."""

    entries: int = 0
    kept_bytes: int = 0
    floor: int = 0  # this key's signatures at or below this timestamp are refused (entries were dropped)
    order: deque[_Slot] = field(default_factory=deque)  # arrival order (may hold forgotten slots)


class ReplayGuard:
    def __init__(self, max_age: float, max_entries: int = 100_000, not_before: int | None = None, *,
                 max_entries_per_key: int = 50_000, max_bytes: int = 16 * 2**20,
                 max_bytes_per_key: int = 2**20, max_answer_bytes: int = 64 * 2**10) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._per_key = max_entries_per_key
        self._max_bytes = max_bytes
        self._per_key_bytes = max_bytes_per_key
        self._max_answer = max_answer_bytes
        self._not_before = int(time.time()) if not_before is None else not_before
        self._seen: dict[_Slot, _Seen] = {}
        self._shares: dict[str, _Share] = {}
        self._swept_at = 0.0
        self.kept_bytes = 0

    def __len__(self) -> int:
        return len(self._seen)

    def _forget(self, slot: _Slot) -> None:
        entry = self._seen.pop(slot, None)
        if entry is None or entry.body is None:
            return
        share = self._shares[slot[0]]
        share.kept_bytes -= len(entry.body)
        self.kept_bytes -= len(entry.body)

    def _trim(self, key_id: str, share: _Share, now: float) -> None:
        """Forget the key's dead entries from the front of its arrival order (arrival order is
        about timestamp order: one signed late merely stays a little longer)."""
        order = share.order
        while order:
            entry = self._seen.get(order[0])
            if entry is not None and (entry.ts + self._max_age >= now or entry.done is not None):
                break
            slot = order.popleft()
            if entry is not None:
                self._forget(slot)
                share.entries -= 1
        if share.entries == 0 and share.floor + self._max_age < now:
            del self._shares[key_id]  # nothing left to remember, and its floor is dead too

    def _prune(self, now: float) -> None:
        """At most once a second, every key's dead entries go (each request trims its own key)."""
        if now - self._swept_at < 1:
            return
        self._swept_at = now
        for key_id, share in list(self._shares.items()):
            self._trim(key_id, share, now)

    def _drop_oldest(self, share: _Share) -> bool:
        """Drop the key's oldest finished entry and raise its floor to that entry's timestamp."""
        order = share.order
        while order:
            entry = self._seen.get(order[0])
            if entry is None:
                order.popleft()  # forgotten already (a refused request)
                continue
            if entry.done is not None:
                return False  # its oldest is still acting; leave it be
            share.floor = max(share.floor, entry.ts)
            self._forget(order.popleft())
            share.entries -= 1
            return True
        return False

    def _make_room(self, share: _Share) -> None:
        """Room for one more entry (entries are dropped only with a floor: see above)."""
        if share.entries >= self._per_key:
            self._drop_oldest(share)
        if len(self._seen) >= self._max_entries:
            fair = len(self._seen) / len(self._shares)
            victim = share if share.entries >= fair else max(self._shares.values(), key=lambda s: s.entries)
            if not self._drop_oldest(victim) and victim is not share:
                self._drop_oldest(share)
        if len(self._seen) >= self._max_entries + self._max_entries // 4:  # all of it still acting
            log.warning("gateway.replay_memory_full", total=len(self._seen))
            raise ApiError(503, "Too many signed requests in flight on this node; retry later", None,
                           headers={"Retry-After": "1"})

    def _claim(self, key_id: str, signature: str, timestamp: str, path: str,
               stream: bool) -> tuple[_Slot, _Seen | None]:
        """The slot of this signature, and the entry of its earlier use (None: first use, now claimed)."""
        ts = int(timestamp)
        if ts < self._not_before:
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
        share = self._shares.get(key_id)
        if share is None:
            share = self._shares[key_id] = _Share()
        else:
            self._trim(key_id, share, now)
            share = self._shares.setdefault(key_id, share)
        if ts <= share.floor:
            log.warning("gateway.signature_below_floor", key_id=key_id, timestamp=ts, floor=share.floor)
            raise ApiError(401, "Request was signed too long ago for this API key's replay memory; sign it again")
        self._make_room(share)
        self._seen[slot] = _Seen(path, ts, stream, asyncio.get_running_loop().create_future())
        share.entries += 1
        share.order.append(slot)
        return slot, None

    def _finish(self, slot: _Slot, entry: _Seen, response: web.StreamResponse | None) -> None:
        if response is not None and isinstance(response, web.Response) and not entry.stream:
            body = response.body if isinstance(response.body, bytes) else b""
            entry.status, entry.content_type = response.status, response.content_type
            entry.digest = hashlib.sha256(body).digest()
            share = self._shares[slot[0]]
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

    def _refused(self, slot: _Slot, entry: _Seen) -> None:
        """The first request was refused or failed before acting: forget it, so the same bytes
        get the same refusal (or act, once what refused them changed)."""
        if self._seen.get(slot) is entry:
            self._forget(slot)
            share = self._shares[slot[0]]
            share.entries -= 1
            if share.order and share.order[-1] == slot:
                share.order.pop()
            elif len(share.order) > 2 * share.entries + 64:  # refusals left forgotten slots behind
                share.order = deque(s for s in share.order if s in self._seen)
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
