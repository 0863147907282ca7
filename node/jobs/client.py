"""The one container client: how the node POSTs a container's `/service_output`, whether it
wants the whole answer (a job's link in a chain) or its bytes as they arrive (a stream).

Both ways share what a caller must be able to rely on, so they cannot drift apart: the call
runs under the container's concurrency slot, a call the container never received (refused at
connect, or for Swarm tasks dropped before any answer) is tried once more on another task,
every failure becomes one `ContainerFailure` whose message says what happened (timed out,
unreachable, an HTTP status with the start of its body, output that is not JSON), and every
call is counted by the observers (metrics) with its time and whether it succeeded.

A call is retried only while no answer has begun: once a byte of an answer has come back the
container has the request, and running it again could do its work twice. A container's output is
bounded (DEFAULT_MAX_OUTPUT_BYTES a call, DEFAULT_MAX_STREAM_BYTES a stream): over it the call
fails, never retried, and a request the node cannot write (a header that would break a line)
fails before anything is sent, not retried either. The connections are
this module's own (node/jobs/http1.py), not aiohttp's client: that is a third of the CPU.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from node.jobs.endpoint import ContainerEndpoint, ContainerFailure
from node.jobs.http1 import Broken, Dropped, Http1Pool, Sink, TooLarge, Unreached, Unsendable
from node.logs import get_logger
from node.server import safejson
from node.server.http import dumps

log = get_logger(__name__)

_SNIPPET = 300
# The most a container may answer. A call's JSON: as much as the node takes in one request by
# default (server.max_body_bytes), since one container's output is the next one's input. A
# stream's whole output (kept as its job's result): more, a stream may run long. aiohttp's
# client, before, read any size: a container could fill the node's memory within its timeout.
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_STREAM_BYTES = 64 * 1024 * 1024


class CallObserver(Protocol):
    """Hears each container call (metrics): called synchronously, must be cheap, never raises."""

    def container_called(self, container: str, seconds: float, ok: bool) -> None: ...


class ContainerClient:
    """Calls containers over pooled keep-alive connections (node/jobs/http1.py)."""

    def __init__(self, *, max_json_depth: int = safejson.DEFAULT_MAX_DEPTH, keepalive: float = 15.0,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
                 tls: ssl.SSLContext | None = None) -> None:
        # tls: how https containers are verified (None: the system's CAs, as aiohttp's client did).
        self._http = Http1Pool(keepalive, tls)
        self._max_output = max_output_bytes
        self._max_stream = max_stream_bytes
        # Who hears each call (metrics): the orchestrator shares its observers list here.
        self.observers: Sequence[CallObserver] = ()
        self._max_json_depth = max_json_depth

    async def close(self) -> None:
        """Close the idle connections (calls in flight close their own when they end)."""
        await self._http.close()

    async def call(self, endpoint: ContainerEndpoint, body: dict[str, Any]) -> Any:
        """The container's whole answer, parsed; any failure raises ContainerFailure."""
        parts: list[bytes] = []
        status = await self._post(endpoint, body, lambda _status, part: parts.append(part), self._max_output,
                                  read_timeout=False)
        raw = b"".join(parts)
        if not 200 <= status < 300:
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
        any failure raises ContainerFailure, after the chunks already handed over. An answer
        that is not a success is not handed over: its start is the failure's message."""
        parts: list[bytes] = []

        def relay(status: int, part: bytes) -> None:
            parts.append(part)
            if 200 <= status < 300:
                chunk(part)

        status = await self._post(endpoint, body, relay, self._max_stream, read_timeout=True)
        raw = b"".join(parts)
        if not 200 <= status < 300:
            raise _refused(status, raw)
        return raw

    async def _post(self, endpoint: ContainerEndpoint, body: dict[str, Any], sink: Sink, limit: int, *,
                    read_timeout: bool) -> int:
        """One call under the container's slot, tried once more (on another task, if the
        service has several) when the container never received it; counted by the observers."""
        if not endpoint.url:
            raise ContainerFailure("container unreachable: no running task (see /api/containers)")
        payload = dumps(body)
        async with endpoint.semaphore:  # the container's limit, however many tasks serve it
            started = time.perf_counter()
            status = 0
            try:
                url = None
                for attempt in (1, 2):
                    url = endpoint.next_service_url(avoid=url)
                    try:
                        status = await self._http.post(url, payload, endpoint.headers, sink, timeout=endpoint.timeout,
                                                       limit=limit, read_timeout=read_timeout)
                        return status
                    except TimeoutError:
                        raise ContainerFailure(f"container timed out after {endpoint.timeout:g}s") from None
                    except Unsendable as exc:  # the same request would break the same way again
                        raise ContainerFailure(f"container unreachable: {exc}") from None
                    except (Unreached, Dropped) as exc:
                        # Refused at connect (or, for Swarm tasks, dropped before any answer): a
                        # task being replaced must not fail the job.
                        if attempt == 1 and (isinstance(exc, Unreached) or endpoint.retry_dropped):
                            log.info("container.call_retried", container=endpoint.id, error=str(exc))
                            continue
                        raise ContainerFailure(f"container unreachable: {exc}") from None
                    except TooLarge as exc:
                        raise ContainerFailure(str(exc)) from None
                    except Broken as exc:
                        raise ContainerFailure(f"container unreachable: {exc}") from None
                raise AssertionError("unreachable")  # the second attempt returns or raises
            finally:
                self._observe(endpoint.id, started, 200 <= status < 300)

    def _observe(self, container: str, started: float, ok: bool) -> None:
        seconds = time.perf_counter() - started
        for observer in self.observers:
            try:
                observer.container_called(container, seconds, ok)
            except Exception:  # noqa: BLE001 - an observer (metrics) must never fail the call it watches
                log.exception("job.observer_failed", container=container)


def _refused(status: int, raw: bytes) -> ContainerFailure:
    text = raw[:_SNIPPET * 4].decode("utf-8", "replace")
    return ContainerFailure(f"container answered HTTP {status}: {text[:_SNIPPET]}")
