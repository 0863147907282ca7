"""The node's RPCs: one or several JSON-RPC endpoints behind one web3 provider.

The complaint node operators make most is a node that stalls with its provider: an RPC that
rate-limits (429), drops, lags or answers 5xx. So `chain.rpc_url` takes a list (or
`chain.rpc_urls` with weights and send-only endpoints), and `RpcPool`:

- sends each read to the healthiest endpoint: not failing, not lagging more than `max_lag_blocks`
  behind the best head seen, not inside a 429 `Retry-After`; among those the highest `weight`,
  then the order of the config (so reads stay on one endpoint while it is fine);
- on a transport error, a timeout, a 5xx or a 429 tries the next endpoint for the same request,
  and keeps the failed one out with exponential backoff (0.5 s doubling to 30 s); a 429 stays out
  for its `Retry-After` (seconds, at most 60; 1 s when absent). A JSON-RPC error (a revert, a
  nonce too low) is an answer, not a failure: it goes back to the caller;
- sends a transaction to the read endpoint chosen and to every send-only endpoint at once (as
  Chainlink nodes do): the first acceptance is the answer;
- checks every endpoint's head and latency every `health_interval` seconds (`check()`, run by the
  Supervisor), which also brings a backed-off endpoint back.

It is a web3 provider, so the rest of the node keeps using `AsyncWeb3`; it talks HTTP itself with
one aiohttp session (web3's HTTP provider takes a thread-pool hop per request for its session
cache, several milliseconds on a busy host), and it answers `eth_chainId` from memory after the
first time. `status()` feeds `node-daemon status`, the status page and the metrics; URLs are shown
as scheme://host:port only, since providers put API keys in paths and queries.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from web3.providers.async_base import AsyncJSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from node.logs import get_logger

log = get_logger(__name__)

BACKOFF_FIRST, BACKOFF_MOST = 0.5, 30.0
RETRY_AFTER_DEFAULT, RETRY_AFTER_MOST = 1.0, 60.0
RATE_LIMIT_CODES = (-32005, 429)


class RpcUnavailable(ConnectionError):
    """No endpoint answered the request."""


def redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def retry_after_seconds(value: str | None) -> float:
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MOST) if value is not None else RETRY_AFTER_DEFAULT
    except ValueError:  # an HTTP date: not worth parsing, wait the default
        return RETRY_AFTER_DEFAULT


@dataclass
class Endpoint:
    url: str
    weight: int = 1
    send_only: bool = False
    head: int | None = None
    latency_ms: float | None = None
    errors: int = 0  # failures since start
    rate_limited: int = 0  # 429 answers since start
    failures: int = 0  # consecutive failures (the backoff's exponent)
    out_until: float = 0.0  # monotonic time before which it is not asked (backoff or Retry-After)
    rate_limited_until: float = 0.0
    last_error: str | None = None
    requests: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = redact(self.url)

    def available(self, now: float) -> bool:
        return now >= self.out_until

    def failed(self, error: str) -> None:
        self.errors += 1
        self.failures += 1
        self.last_error = error[:200]
        self.out_until = time.monotonic() + min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MOST)

    def limited(self, seconds: float) -> None:
        self.rate_limited += 1
        self.last_error = f"429: retry after {seconds:g} s"
        self.rate_limited_until = self.out_until = time.monotonic() + seconds

    def answered(self, ms: float) -> None:
        self.failures = 0
        self.latency_ms = ms if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * ms


class _Failed(Exception):
    pass


class RpcPool(AsyncJSONBaseProvider):
    def __init__(self, endpoints: list[Endpoint], *, max_lag_blocks: int = 5, timeout: float = 10.0) -> None:
        super().__init__()
        if not any(not e.send_only for e in endpoints):
            raise ValueError("at least one RPC must serve reads (not send_only)")
        self.endpoints = endpoints
        self._max_lag = max_lag_blocks
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 3.0))
        self._session: aiohttp.ClientSession | None = None
        self._chain_id: RPCResponse | None = None
        self._current: Endpoint | None = None

    # -- choosing --------------------------------------------------------------------------------

    @property
    def best_head(self) -> int | None:
        heads = [e.head for e in self.endpoints if e.head is not None and not e.send_only]
        return max(heads) if heads else None

    def lag(self, endpoint: Endpoint) -> int | None:
        best = self.best_head
        return None if best is None or endpoint.head is None else best - endpoint.head

    def readers(self) -> list[Endpoint]:
        """Read endpoints, best first: available and not lagging, by weight then config order;
        then the ones backed off (a last resort), soonest back first. Rate-limited ones are left out."""
        now = time.monotonic()
        order = {id(e): i for i, e in enumerate(self.endpoints)}
        reads = [e for e in self.endpoints if not e.send_only]
        good = [e for e in reads if e.available(now) and (self.lag(e) or 0) <= self._max_lag]
        good.sort(key=lambda e: (-e.weight, order[id(e)]))
        rest = [e for e in reads if e not in good and now >= e.rate_limited_until]
        rest.sort(key=lambda e: e.out_until)
        return good + rest

    # -- web3 provider ---------------------------------------------------------------------------

    async def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in await self.make_request(RPCEndpoint("eth_chainId"), [])
        except Exception:  # noqa: BLE001 - web3's is_connected contract: any failure is 'not connected'
            if show_traceback:
                raise
            return False

    async def disconnect(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _post(self, endpoint: Endpoint, body: bytes) -> RPCResponse:
        """One request to one endpoint; _Failed when the endpoint (not the request) is at fault."""
        started = time.perf_counter()
        endpoint.requests += 1
        try:
            async with self._http().post(endpoint.url, data=body,
                                         headers={"Content-Type": "application/json"}) as resp:
                if resp.status == 429:
                    endpoint.limited(retry_after_seconds(resp.headers.get("Retry-After")))
                    raise _Failed(f"{endpoint.name}: 429")
                if resp.status >= 500 or resp.status in (401, 403, 404, 408):
                    endpoint.failed(f"HTTP {resp.status}")
                    raise _Failed(f"{endpoint.name}: HTTP {resp.status}")
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            endpoint.failed(f"{type(exc).__name__}: {exc}")
            raise _Failed(f"{endpoint.name}: {type(exc).__name__}") from None
        try:
            answer = self.decode_rpc_response(raw)
        except (ValueError, UnicodeDecodeError):
            endpoint.failed("not JSON-RPC")
            raise _Failed(f"{endpoint.name}: not JSON-RPC") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict) and (error.get("code") in RATE_LIMIT_CODES
                                        or "rate limit" in str(error.get("message", "")).lower()):
            endpoint.limited(RETRY_AFTER_DEFAULT)
            raise _Failed(f"{endpoint.name}: rate limited")
        endpoint.answered((time.perf_counter() - started) * 1000)
        return answer

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_chainId" and self._chain_id is not None:
            return {**self._chain_id, "id": next(self.request_counter)}
        body = self.encode_rpc_request(method, params)
        if method == "eth_sendRawTransaction":
            return await self._send(body)
        last = "no RPC configured for reads"
        for endpoint in self.readers():
            try:
                answer = await self._post(endpoint, body)
            except _Failed as exc:
                last = str(exc)
                continue
            if endpoint is not self._current:
                if self._current is not None:
                    log.warning("chain.rpc_switched", to=endpoint.name, previous=self._current.name, reason=last)
                self._current = endpoint
            if method == "eth_chainId" and "result" in answer:
                self._chain_id = answer
            return answer
        raise RpcUnavailable(f"no RPC answered {method}: {last}")

    async def _send(self, body: bytes) -> RPCResponse:
        """A transaction to the read endpoint chosen and every send-only endpoint at once."""
        readers = self.readers()
        targets = readers[:1] + [e for e in self.endpoints if e.send_only
                                 and e.available(time.monotonic())]
        answers = await asyncio.gather(*(self._post(e, body) for e in targets), return_exceptions=True)
        accepted = [a for a in answers if isinstance(a, dict) and "result" in a]
        if accepted:
            return accepted[0]
        refused = [a for a in answers if isinstance(a, dict)]
        if refused:
            return refused[0]
        for endpoint in readers[1:]:  # the first reader failed, no send-only took it: the next reader
            try:
                return await self._post(endpoint, body)
            except _Failed:
                continue
        raise RpcUnavailable(f"no RPC took the transaction: {answers}")

    # -- health ------------------------------------------------------------------------------------

    async def check(self) -> None:
        """Head and latency of every endpoint whose backoff is over (each in parallel)."""
        body = self.encode_rpc_request(RPCEndpoint("eth_blockNumber"), [])
        now = time.monotonic()

        async def one(endpoint: Endpoint) -> None:
            if not endpoint.available(now):
                return
            try:
                answer = await self._post(endpoint, body)
            except _Failed:
                return
            if isinstance(answer.get("result"), str):
                endpoint.head = int(answer["result"], 16)

        await asyncio.gather(*(one(e) for e in self.endpoints))

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for e in self.endpoints:
            lag = self.lag(e)
            if not e.available(now):
                state = "rate_limited" if now < e.rate_limited_until else "down"
            elif lag is not None and lag > self._max_lag and not e.send_only:
                state = "lagging"
            else:
                state = "up"
            out.append({"rpc": e.name, "role": "send" if e.send_only else "read", "state": state,
                        "in_use": e is self._current, "head": e.head, "lag": lag, "weight": e.weight,
                        "latency_ms": None if e.latency_ms is None else round(e.latency_ms, 1),
                        "errors": e.errors, "rate_limited": e.rate_limited, "requests": e.requests,
                        "last_error": e.last_error,
                        "back_in_s": round(max(e.out_until - now, 0), 1) if state in ("down", "rate_limited") else 0})
        return out
