"""Follows arbitrary contract logs on one chain with the Coordinator listener's machinery.

`LogFollower` is the `Listener` (same loop: persisted cursor, `trail` confirmations, block-hash
reorg detection and rewind to the common ancestor, RPC retries with backoff) with another scan:
`eth_getLogs` for the addresses `addresses()` names at that moment, handed to `on_logs`. Its
store is anything with the listener store's four methods (`cursor`, `advance`, `block_hash`,
`rewind`), so each user keeps its own cursor. Without a saved cursor it starts at the current
`head - trail` (history before the first start is not replayed) unless `start_block` is given.

The listener's walk back over a reorg stops at the first block whose hash it did not keep, so
this scan keeps the hash of every block of the last `hash_window` blocks of each range (all of
them when following the head), not only the range's last block. It reads them before the range's
logs, so an RPC that has not seen the range's end yet fails the scan (retried) instead of
answering an empty list of logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from node.chain.listener import Listener, with_backoff


class CursorStore(Protocol):
    async def cursor(self) -> int | None: ...

    async def advance(self, block: int, hashes: dict[int, str]) -> None: ...

    async def block_hash(self, number: int) -> str | None: ...

    async def rewind(self, block: int, since: float) -> list: ...


OnLogs = Callable[[list[dict[str, Any]]], Awaitable[None]]
Addresses = Callable[[], Awaitable[list[str]]]
OnRewind = Callable[[list], Awaitable[None]]


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


class LogFollower(Listener):
    def __init__(self, w3: AsyncWeb3, store: CursorStore, *, addresses: Addresses, on_logs: OnLogs,
                 on_reorg: OnRewind, trail: int, start_block: int | None = None, batch_blocks: int = 1000,
                 poll_interval: float = 1.0, hash_window: int = 64) -> None:
        # Only the Listener's head, reorg and idle machinery is used: _scan (the one user of the Coordinator,
        # the Reader and the subscription callbacks) is overridden, so those are None; the store is a
        # CursorStore (the part of ChainStore those methods use), not a ChainStore: hence the two ignores.
        super().__init__(w3, None, None, store, start_block=start_block or 0, trail=trail,  # type: ignore[arg-type]
                         batch_blocks=batch_blocks, reader_batch=1, poll_interval=poll_interval,
                         on_subscriptions=None, on_cancelled=None, on_reorg=on_reorg)  # type: ignore[arg-type]
        self._explicit_start = start_block
        self._addresses = addresses
        self._on_logs = on_logs
        self._hash_window = hash_window

    async def run(self) -> None:
        if await self._store.cursor() is None and self._explicit_start is None:
            head = await with_backoff("eth_blockNumber", lambda: self._w3.eth.block_number, self._stop)
            self._start_block = max(head - self._trail, 0)
        await super().run()

    async def _scan(self, start: int, end: int) -> int:
        # The blocks first, then their logs: with several RPCs the head may come from one and the
        # logs from another that has not seen the last blocks yet, and most RPCs clamp eth_getLogs
        # to their own head (an empty list, the events skipped for good). An RPC without the block
        # answers "not found" here instead, retried until it has it; reads stay on one RPC while it
        # is fine, so the logs then come from one that has the range.
        hashes: dict[int, str] = {}
        for number in range(max(start, end - self._hash_window + 1), end + 1):
            block = await with_backoff("eth_getBlockByNumber", partial(self._w3.eth.get_block, number), self._stop)
            hashes[number] = _hex(block["hash"])
        addresses = [to_checksum_address(a) for a in await self._addresses()]
        logs: list[dict[str, Any]] = []
        if addresses:
            raw = await with_backoff("eth_getLogs", lambda: self._w3.eth.get_logs(
                {"fromBlock": start, "toBlock": end, "address": addresses}), self._stop)
            logs = [{"address": entry["address"], "topics": [_hex(t) for t in entry["topics"]],
                     "data": _hex(entry["data"]), "blockNumber": int(entry["blockNumber"]),
                     "blockHash": _hex(entry["blockHash"]), "transactionHash": _hex(entry["transactionHash"]),
                     "logIndex": int(entry["logIndex"])} for entry in raw if not entry.get("removed")]
        if logs:
            await self._on_logs(logs)
        await self._store.advance(end, hashes)
        return len(logs)
