"""The one container client: how the node POSTs a container's `/service_output`, whether it
wants the whole answer (a job's link in a chain) or its bytes as they arrive (a stream).

Both ways share what a caller must be able to rely on, so they cannot drift apart: the call
runs under the container's concurrency slot, a call the container never received (refused at
connect, or for Swarm tasks dropped before any answer) is tried once more on another task,
every failure becomes one `ContainerFailure` whose message says what happened (timed out,
unreachable, an HTTP status with the start of its body, output that is not JSON), and every
call is counted by the observers (metrics) with its time and whether it succeeded.

A call is retried only while no answer has begun: once a status line has come back the
container has the request, and running it again could do its work twice.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp

from node.jobs.endpoint import ContainerEndpoint, ContainerFailure, unanswered
from node.logs import get_logger
from node.server import safejson
from node.server.http import dumps

log = get_logger(__name__)

_SNIPPET = 300


class CallObserver(Protocol):
    """Hears each container call (metrics): called synchronously, must be cheap, never raises."""

    def container_called(self, container: str, seconds: float, ok: bool) -> None: ...


class ContainerClient:
    """Calls containers over one shared aiohttp session (its pool keeps connections alive)."""

    def __init__(self, session: aiohttp.ClientSession, observers: Sequence[CallObserver] = (), *,
                 max_json_depth: int = safejson.DEFAULT_MAX_DEPTH) -> None:
        self._session = session
        # Read at each call, so observers added after construction (the orchestrator's list) count.
        self._observers = observers
        self._max_json_depth = max_json_depth

    async def call(self, endpoint: ContainerEndpoint, body: dict[str, Any]) -> Any:
        """The container's whole answer, parsed; any failure raises ContainerFailure."""
        timeout = aiohttp.ClientTimeout(total=endpoint.timeout)
        async with endpoint.semaphore:  # the container's limit, however many tasks serve it
            started = time.perf_counter()
            ok = False
            try:
                response = await self._open(endpoint, dumps(body), timeout)
                async with response:
                    raw = await _read(endpoint, response.read)
                    status = response.status
                ok = 200 <= status < 300
            finally:
                self._observe(endpoint.id, started, ok)
        if not ok:
            raise _refused(status, raw)
        try:
            return safejson.loads(raw, self._max_json_depth)
        except safejson.JsonTooDeep as exc:
            raise ContainerFailure(f"container output refused: {exc}") from None
        except ValueError:
            text = raw[:_SNIPPET * 4].decode("utf-8", "replace")
            raise ContainerFailure(f"container returned non-JSON output: {text[:_SNIPPET]!r}") from None

    async def stream(self, endpoint: ContainerEndpoint, body: dict[str, Any],
                     chunk: Callable[[bytes], None]) -> bytes:
        """Hand the container's output to `chunk` as it arrives; returns all of it. The
        container's timeout is the longest silence between two reads (a stream may run long);
        any failure raises ContainerFailure, after the chunks already handed over."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=endpoint.timeout)
        collected: list[bytes] = []
        async with endpoint.semaphore:  # held only while the container answers
            started = time.perf_counter()
            ok = False
            try:
                response = await self._open(endpoint, dumps(body), timeout)
                async with response:
                    if not 200 <= response.status < 300:
                        raise _refused(response.status, await _read(endpoint, response.read))

                    async def relay() -> None:
                        async for part in response.content.iter_any():
                            collected.append(part)
                            chunk(part)

                    await _read(endpoint, relay)
                ok = True
            finally:
                self._observe(endpoint.id, started, ok)
        return b"".join(collected)

    async def _open(self, endpoint: ContainerEndpoint, payload: bytes,
                    timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """Send the request and wait for the status line, once more (on another task, if the
        service has several) when the container never received it."""
        if not endpoint.url:
            raise ContainerFailure("container unreachable: no running task (see /api/containers)")
        url = None
        for attempt in (1, 2):
            url = endpoint.next_service_url(avoid=url)
            try:
                return await self._session.post(url, data=payload, headers=endpoint.headers, timeout=timeout)
            except TimeoutError:
                raise ContainerFailure(f"container timed out after {endpoint.timeout:g}s") from None
            except aiohttp.ClientError as exc:
                # Refused at connect (or, for Swarm tasks, dropped before any answer): a task
                # being replaced must not fail the job.
                if attempt == 1 and unanswered(exc, endpoint.retry_dropped):
                    log.info("container.call_retried", container=endpoint.id, error=str(exc) or type(exc).__name__)
                    continue
                raise ContainerFailure(f"container unreachable: {exc}") from None
        raise AssertionError("unreachable")  # the second attempt returns or raises

    def _observe(self, container: str, started: float, ok: bool) -> None:
        seconds = time.perf_counter() - started
        for observer in self._observers:
            try:
                observer.container_called(container, seconds, ok)
            except Exception:  # noqa: BLE001 - an observer (metrics) must never fail the call it watches
                log.exception("job.observer_failed", container=container)


async def _read(endpoint: ContainerEndpoint, read: Callable[[], Awaitable[Any]]) -> Any:
    """Read an answer that has begun; its failures in the one taxonomy (never retried)."""
    try:
        return await read()
    except TimeoutError:
        raise ContainerFailure(f"container timed out after {endpoint.timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise ContainerFailure(f"container unreachable: {exc}") from None


def _refused(status: int, raw: bytes) -> ContainerFailure:
    text = raw[:_SNIPPET * 4].decode("utf-8", "replace")
    return ContainerFailure(f"container answered HTTP {status}: {text[:_SNIPPET]}")
