"""Follows a chain block by block: the one block follower the Coordinator listener
(node/chain/listener.py), the registry's event watcher (node/registry/watcher.py) and CRE log
triggers (node/cre/wasm/logtrigger.py) specialise.

`BlockFollower` keeps a cursor (the last block read) in its store, which is anything with the
four methods of `CursorStore`, so each user keeps its own. It reads from the start block (or the
block after the cursor) to `head - trail`, in batches of blocks, handing each range to `_scan`
(the subclass's: what the range means to it). A block whose hash changed under the cursor (a
reorg deeper than `trail`) rewinds the cursor to the common ancestor, calls `on_reorg` with what
the store's rewind reopened, and reads again from there. RPC failures are retried with
exponential backoff (`with_backoff`). Without a saved cursor and without a `start_block`, it
starts at the current `head - trail` (history before the first start is not replayed).

It is not a loop of its own: `round()` is one step (a batch, a reorg check, or nothing when
caught up), run by the node's Supervisor as `supervisor.loop(name, follower.round,
poll_interval, wake=follower.wake)`. A round that leaves blocks to read sets `wake`, so the next
runs at once; a `HeadFeed` (node/chain/heads.py) sets it on each new head, so a caught-up
follower reads a new block when it comes instead of after `poll_interval`. With a head feed it
also spares the round trips the header answers: no reorg check when the new head's parent is the
block at the cursor, no block read for the hash of a range that ends at the head.

`LogFollower` is the follower of arbitrary contract logs: `eth_getLogs` for the addresses
`addresses()` names at that moment, handed to `on_logs`. The walk back over a reorg stops at the
first block whose hash was not kept, so it keeps the hash of every block of the last
`hash_window` blocks of each range (all of them when following the head), and reads them before
the range's logs, so an RPC that has not seen the range's end yet fails the scan (retried)
instead of answering an empty list of logs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from node.chain.heads import HeadFeed
from node.lifecycle import retry_pause
from node.logs import get_logger

log = get_logger(__name__)


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


async def with_backoff(label: str, fn: Callable[[], Awaitable], first: float = 0.5, most: float = 10.0):
    """`fn()`, retried with exponential backoff until it answers or the Supervisor stops the loop
    (`retry_pause` then ends the round at once)."""
    delay = first
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - RPC errors and timeouts: wait and retry
            log.warning("chain.rpc_retry", call=label, error=str(exc)[:200], retry_in_s=round(delay, 2))
            await retry_pause(delay)
            delay = min(delay * 2, most)


class BlockFollower:
    """Blocks from a start block, `trail` behind the head, with reorg handling (module docstring)."""

    def __init__(self, w3: AsyncWeb3, store: CursorStore, *, start_block: int | None, trail: int,
                 batch_blocks: int, on_reorg: OnRewind, heads: HeadFeed | None = None) -> None:
        self._w3 = w3
        self._store = store
        self._start_block = start_block
        self._trail = trail
        self._batch_blocks = batch_blocks
        self._on_reorg = on_reorg
        self._heads = heads
        self.wake = asyncio.Event()  # set on each head, and by a round that leaves blocks to read
        self.synced = asyncio.Event()  # set once the first catch-up reached the head
        self.head_seen = 0
        self._cursor: int | None = None
        self._next: int | None = None  # the next block to read; None until the first round
        self._snapshot = (time.perf_counter(), 0, 0)  # catch-up started, blocks read, items found
        if heads is not None:
            heads.notify(self.wake)

    async def _head(self) -> int:
        if self._heads is not None and self._heads.head is not None:
            return self._heads.head.number
        return await with_backoff("eth_blockNumber", lambda: self._w3.eth.block_number)

    async def _begin(self) -> int:
        self._cursor = await self._store.cursor()
        if self._cursor is None and self._start_block is None:
            self._start_block = max(await self._head() - self._trail, 0)
        return (self._start_block or 0) if self._cursor is None else self._cursor + 1

    async def round(self) -> None:
        """One step: rewind over a reorg, or read one batch of blocks, or nothing when caught up.
        A round that leaves work sets `wake`, so the Supervisor runs the next one at once."""
        if self._next is None:
            self._next = await self._begin()
        head = await self._head()
        self.head_seen = head
        target = head - self._trail
        if self._cursor is not None:
            rewound = await self._check_reorg(self._cursor)
            if rewound is not None:
                self._cursor, self._next = rewound, rewound + 1
                self.wake.set()
                return
        if self._next > target:
            if not self.synced.is_set():
                self._progress("chain.synced", target, target)
                self.synced.set()
            return
        start, end = self._next, min(target, self._next + self._batch_blocks - 1)
        found = await self._scan(start, end)
        began, blocks, items = self._snapshot
        self._snapshot = (began, blocks + end - start + 1, items + found)
        self._cursor, self._next = end, end + 1
        if not self.synced.is_set():
            self._progress("chain.sync_progress", end, target)
        self.wake.set()  # read again at once: more blocks, or the check that says caught up

    def _progress(self, event: str, block: int, target: int) -> None:
        began, blocks, found = self._snapshot
        elapsed = time.perf_counter() - began
        where = {"block": block} if event == "chain.synced" else {"block": block, "target": target}
        # `subscriptions`: what `_scan` counted (the Coordinator's; logs for a LogFollower).
        log.info(event, **where, blocks=blocks, subscriptions=found, s=round(elapsed, 2),
                 blocks_per_s=round(blocks / max(elapsed, 1e-6)), subs_per_s=round(found / max(elapsed, 1e-6)))

    async def _block(self, number: int) -> Any:
        return await with_backoff("eth_getBlockByNumber", partial(self._w3.eth.get_block, number))

    async def _check_reorg(self, cursor: int) -> int | None:
        """If the block at the cursor changed, walk back to the last block whose hash we still
        agree with and return it (the new cursor)."""
        known = await self._store.block_hash(cursor)
        if known is None:
            return None
        head = self._heads.head if self._heads is not None else None
        if head is not None and ((head.number == cursor and head.hash == known)
                                 or (head.number == cursor + 1 and head.parent_hash == known)):
            return None  # the head is the block at the cursor, or builds on it
        if _hex((await self._block(cursor))["hash"]) == known:
            return None
        number = cursor
        floor = self._start_block or 0
        while number > floor:
            number -= 1
            known = await self._store.block_hash(number)
            if known is None:
                break
            if _hex((await self._block(number))["hash"]) == known:
                break
        ancestor = await self._block(number)
        reopened = await self._store.rewind(number, float(ancestor["timestamp"]) - 5)
        log.warning("chain.reorg", from_block=cursor, to_block=number, reopened_subscriptions=len(reopened))
        await self._on_reorg(reopened)
        return number

    async def _scan(self, start: int, end: int) -> int:
        """Read blocks `start`..`end`, act on them, and advance the store's cursor to `end`;
        returns how many items (subscriptions, logs) it found."""
        raise NotImplementedError


class LogFollower(BlockFollower):
    def __init__(self, w3: AsyncWeb3, store: CursorStore, *, addresses: Addresses, on_logs: OnLogs,
                 on_reorg: OnRewind, trail: int, start_block: int | None = None, batch_blocks: int = 1000,
                 hash_window: int = 64) -> None:
        super().__init__(w3, store, start_block=start_block, trail=trail, batch_blocks=batch_blocks,
                         on_reorg=on_reorg)
        self._addresses = addresses
        self._on_logs = on_logs
        self._hash_window = hash_window

    async def _scan(self, start: int, end: int) -> int:
        # The blocks first, then their logs: with several RPCs the head may come from one and the
        # logs from another that has not seen the last blocks yet, and most RPCs clamp eth_getLogs
        # to their own head (an empty list, the events skipped for good). An RPC without the block
        # answers "not found" here instead, retried until it has it; reads stay on one RPC while it
        # is fine, so the logs then come from one that has the range.
        hashes: dict[int, str] = {}
        for number in range(max(start, end - self._hash_window + 1), end + 1):
            hashes[number] = _hex((await self._block(number))["hash"])
        addresses = [to_checksum_address(a) for a in await self._addresses()]
        logs: list[dict[str, Any]] = []
        if addresses:
            raw = await with_backoff("eth_getLogs", lambda: self._w3.eth.get_logs(
                {"fromBlock": start, "toBlock": end, "address": addresses}))
            logs = [{"address": entry["address"], "topics": [_hex(t) for t in entry["topics"]],
                     "data": _hex(entry["data"]), "blockNumber": int(entry["blockNumber"]),
                     "blockHash": _hex(entry["blockHash"]), "transactionHash": _hex(entry["transactionHash"]),
                     "logIndex": int(entry["logIndex"])} for entry in raw if not entry.get("removed")]
        if logs:
            await self._on_logs(logs)
        await self._store.advance(end, hashes)
        return len(logs)
