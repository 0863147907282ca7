"""A streaming job (`POST /api/jobs/stream`): the container's raw output relayed as it arrives.

However the relay stops (the end of the output, a container failure, the client going away,
cancellation), `close()` ends the job exactly once: its result committed, its gate tickets
settled (a budget reservation is not left held) and its in-flight slot freed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from node.jobs.models import Job, JobLocation

if TYPE_CHECKING:
    from node.jobs.endpoint import ContainerEndpoint

_SNIPPET = 300
ABORTED = "stream aborted: the client went away"


class _Failed(Exception):
    pass


class JobStream:
    """`async for chunk in stream` relays the container's output; always `await close()`."""

    def __init__(self, job: Job, endpoint: ContainerEndpoint, data: Any, session: aiohttp.ClientSession,
                 finish: Callable[[], Awaitable[None]], release: Callable[[], None]) -> None:
        self.job = job
        self._endpoint = endpoint
        self._data = data
        self._session = session
        self._finish = finish
        self._release = release
        self._ended = False
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self._relay()
        return self._chunks

    async def close(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        await self._end({"container": self._endpoint.id, "error": ABORTED})

    async def _end(self, result: dict[str, Any]) -> None:
        if self._ended:
            return
        self._ended = True
        self.job.finish([result])
        try:
            await asyncio.shield(self._finish())
        finally:
            self._release()

    async def _relay(self) -> AsyncIterator[bytes]:
        endpoint = self._endpoint
        container = endpoint.id
        body = {"source": int(JobLocation.OFFCHAIN), "destination": int(JobLocation.STREAM), "data": self._data}
        collected: list[bytes] = []
        result: dict[str, Any] | None = None
        try:
            async with endpoint.semaphore:
                async with self._session.post(
                    endpoint.next_service_url(),
                    data=json.dumps(body),
                    headers=endpoint.headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=endpoint.timeout),
                ) as response:
                    if not 200 <= response.status < 300:
                        text = (await response.read()).decode("utf-8", "replace")
                        raise _Failed(f"container answered HTTP {response.status}: {text[:_SNIPPET]}")
                    async for chunk in response.content.iter_any():
                        collected.append(chunk)
                        yield chunk
            text = b"".join(collected).decode("utf-8", "replace")
            result = {"container": container, "output": {"output": text}}
        except _Failed as exc:
            result = {"container": container, "error": str(exc)}
        except asyncio.TimeoutError:
            result = {"container": container, "error": f"container timed out after {endpoint.timeout:g}s"}
        except aiohttp.ClientError as exc:
            result = {"container": container, "error": f"container unreachable: {exc}"}
        finally:
            # result is None when the iteration was abandoned (GeneratorExit) or cancelled.
            await self._end(result or {"container": container, "error": ABORTED})
