"""Follows the chain's head as it moves.

Polling learns of a block up to one `poll_interval` late, and a processor that then waits for its
own next tick adds as much again: hundreds of milliseconds between a request's block and the
container, on a chain that mines in one. So the head comes from `eth_subscribe("newHeads")` over
WebSocket where an RPC offers it (each RPC's `ws_url`, or the `ws://` twin of its URL, which anvil
and most providers serve; the first that subscribes is used), and each part of the node that waits for the chain (listener,
processor, wallet) waits on an `asyncio.Event` this feed sets on every new head instead of
sleeping. An RPC without WebSocket, or a socket that drops, falls back to polling
`eth_getBlockByNumber("latest")` every `poll_interval` (one round trip, as the `eth_blockNumber`
poll was), and the sockets are tried again every `resubscribe_after` seconds. A subscription
quiet for `4 * poll_interval` (at least 2 s) is checked with one poll, since a socket can go
silent without closing.

The header carries what the node would otherwise ask for in more round trips: the block's hash
and its parent's (the listener's reorg check), its timestamp (intervals) and its base fee
(transaction fees).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from web3 import AsyncWeb3

from node.chain.rpc import redact
from node.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Head:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    base_fee: int | None
    seen_at: float  # monotonic time this node learnt of it


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _hex(value: Any) -> str:
    return value.lower() if isinstance(value, str) else "0x" + bytes(value).hex()


def head_of(block: Any) -> Head:
    """A Head from a newHeads notification (hex strings) or a web3 block (ints and bytes)."""
    base = block.get("baseFeePerGas")
    return Head(_int(block["number"]), _hex(block["hash"]), _hex(block["parentHash"]), _int(block["timestamp"]),
                None if base is None else _int(base), time.monotonic())


def ws_twin(rpc_url: str) -> str | None:
    """The WebSocket URL at the same place as an HTTP RPC URL (None for another scheme)."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    return urlunsplit((scheme, *parts[1:])) if scheme else None


class HeadFeed:
    def __init__(self, w3: AsyncWeb3, ws_urls: list[str], poll_interval: float, *,
                 resubscribe_after: float = 30.0) -> None:
        self._w3 = w3
        self._ws_urls = ws_urls  # tried in order; the first that subscribes is used
        self.ws_url: str | None = None  # the one in use
        self._poll = poll_interval
        self._resubscribe_after = resubscribe_after
        self._quiet = max(4 * poll_interval, 2.0)  # no head for this long: ask for it once
        self.head: Head | None = None
        self.mode = "starting"  # "subscription" or "polling": how heads arrive now
        self.heads_seen = 0
        self._events: set[asyncio.Event] = set()

    def notify(self, event: asyncio.Event) -> None:
        """Set `event` on every new head (the waiter clears it before it reads the head)."""
        self._events.add(event)

    def forget(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    def _publish(self, head: Head) -> None:
        current = self.head
        if current is not None and head.number < current.number:
            return  # a late notification; a reorg shows as a new head at or above the old number
        if current is not None and head.number == current.number and head.hash == current.hash:
            return
        self.head = head
        self.heads_seen += 1
        for event in self._events:
            event.set()

    async def _poll_once(self) -> None:
        self._publish(head_of(await self._w3.eth.get_block("latest")))

    async def run(self) -> None:
        """Until the Supervisor stops it (by cancellation: the WebSocket and its session close on
        the way out, awaited, so nothing is left to a task nobody waits for)."""
        while True:
            for url in self._ws_urls:
                try:
                    await self._subscribe(url)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - no WebSocket here (or it dropped): the next, or poll
                    log.info("chain.head_subscription_failed", ws_url=redact(url),
                             error=str(exc)[:200] or type(exc).__name__)
            if self._ws_urls:
                log.info("chain.head_polling", retry_subscription_in_s=self._resubscribe_after)
            self.mode, self.ws_url = "polling", None
            await self._poll_for(self._resubscribe_after if self._ws_urls else None)

    async def _poll_for(self, seconds: float | None) -> None:
        until = None if seconds is None else time.monotonic() + seconds
        delay = self._poll
        while until is None or time.monotonic() < until:
            try:
                await self._poll_once()
                delay = self._poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - RPC trouble: back off, the listener reports it too
                log.warning("chain.rpc_retry", call="eth_getBlockByNumber", error=str(exc)[:200],
                            retry_in_s=round(delay, 2))
                delay = min(delay * 2, 10.0)
            await asyncio.sleep(delay)

    async def _subscribe(self, url: str) -> None:
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(url, heartbeat=20, timeout=timeout, max_msg_size=1 << 20) as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
            answer = await ws.receive_json(timeout=10)
            if "error" in answer or not answer.get("result"):
                raise RuntimeError(f"eth_subscribe refused: {answer.get('error')}")
            self.mode, self.ws_url = "subscription", url
            log.info("chain.head_subscription", ws_url=redact(url))
            await self._poll_once()  # the head as of now, not at the next block
            while True:
                try:
                    message = await ws.receive(timeout=self._quiet)
                except TimeoutError:  # a quiet chain, or a socket gone silent: ask once
                    await self._poll_once()
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                header = (json.loads(message.data).get("params") or {}).get("result")
                if isinstance(header, dict) and "number" in header:
                    self._publish(head_of(header))
            raise ConnectionError("head subscription closed by the RPC")
