"""A streaming job (`POST /api/jobs/stream`): the container's raw output relayed as it arrives.

The container is read by the stream's own task (the pump), not by the request handler: the
orchestrator registers that task as the job's, so a kill or a shutdown cancels a stream as it
cancels any job, and the job's time limit covers the container's whole output. The pump reads
the output whatever the client does and gives the container's concurrency slot back as soon as
the container has answered: a client that does not read holds the bytes it has not read (which
the handler drops after its write timeout), never the container.

The job ends in `close()`, exactly once: with the pump's failure if the container failed (or a
kill, a shutdown or the time limit stopped it), failed with the caller's reason if the client
did not receive the whole output (it went away, stopped reading), and a success otherwise; its
result committed, its gate tickets settled (a budget reservation is not left held, and a
client that went away is not charged) and its in-flight slot freed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from node.jobs.endpoint import ContainerFailure
from node.jobs.models import Job, JobLocation, over_time_limit
from node.logs import get_logger

if TYPE_CHECKING:
    from node.jobs.client import ContainerClient
    from node.jobs.endpoint import ContainerEndpoint

log = get_logger(__name__)

ABORTED = "stream aborted: the client went away"
STALLED = "stream aborted: the client stopped reading"


class JobStream:
    """`async for chunk in stream` relays the container's output; always `await close()`."""

    def __init__(self, job: Job, endpoint: ContainerEndpoint, data: Any, client: ContainerClient,
                 finish: Callable[[], Awaitable[None]], release: Callable[[], None], *,
                 time_limit: float | None = None, cancel_reason: Callable[[], str | None] = lambda: None) -> None:
        self.job = job
        self._endpoint = endpoint
        self._data = data
        self._client = client
        self._finish = finish
        self._release = release
        self._time_limit = time_limit
        self._cancel_reason = cancel_reason
        self._close_reason: str | None = None
        self._outcome: dict[str, Any] | None = None  # the pump's: the container's output or a failure
        self._ended = False
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the output ended
        self._task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        """Start reading the container; returns the pump's task (the job's task)."""
        self._task = asyncio.create_task(self._pump())
        self._task.add_done_callback(self._pumped)
        return self._task

    def _pumped(self, _task: asyncio.Task) -> None:
        # A task cancelled before its first step never runs its body: no outcome, no end of
        # output. Say why now (the orchestrator forgets the reason once the task is done).
        if self._outcome is None:
            self._outcome = self._cancelled()
        self._queue.put_nowait(None)

    def _cancelled(self) -> dict[str, Any]:
        return {"container": self._endpoint.id,
                "error": self._cancel_reason() or self._close_reason or "job cancelled"}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def close(self, reason: str | None = ABORTED) -> None:
        """End the job. `reason` None: the client received the whole output; otherwise why it
        did not (a pump still reading the container is cancelled) and the job fails with it,
        unless the container had failed already."""
        outcome = None
        if self._task is not None:
            if not self._task.done():
                self._close_reason = reason or ABORTED
                self._task.cancel()
                await asyncio.wait([self._task])
            outcome = self._outcome
        if outcome is None or (reason is not None and "error" not in outcome):
            outcome = {"container": self._endpoint.id, "error": reason or ABORTED}
        await self._end(outcome)

    async def _end(self, result: dict[str, Any]) -> None:
        if self._ended:
            return
        self._ended = True
        self.job.finish([result])
        try:
            await asyncio.shield(self._finish())
        finally:
            self._release()

    async def _pump(self) -> None:
        container = self._endpoint.id
        try:
            limit = asyncio.timeout(self._time_limit)
            try:
                async with limit:
                    text = await self._read()
                result = {"container": container, "output": {"output": text}}
            except TimeoutError as exc:  # the job's time limit (the client turns the container's own into a failure)
                if limit.expired() and self._time_limit is not None:
                    error = over_time_limit(self._time_limit)
                else:
                    log.exception("job.stream_crashed", job_id=self.job.id)
                    error = f"internal error: {exc}"
                result = {"container": container, "error": error}
            except ContainerFailure as exc:  # the container's own timeout among them
                result = {"container": container, "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not leave it running
                log.exception("job.stream_crashed", job_id=self.job.id)
                result = {"container": container, "error": f"internal error: {exc}"}
        except asyncio.CancelledError:  # a kill or shutdown (with its reason), or close()
            result = self._cancelled()
        finally:
            self._queue.put_nowait(None)
        self._outcome = result

    async def _read(self) -> str:
        """Call the container and queue its output as it arrives (the client holds the
        container's slot only while it answers)."""
        body = {"source": int(JobLocation.OFFCHAIN), "destination": int(JobLocation.STREAM), "data": self._data}
        output = await self._client.stream(self._endpoint, body, self._queue.put_nowait)
        return output.decode("utf-8", "replace")
