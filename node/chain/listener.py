"""Follows the Coordinator's events.

Snapshot sync: from the configured start block (or the persisted cursor) to `head - trail`,
in batches of blocks, reading `SubscriptionCreated` / `SubscriptionCancelled` logs and the
subscriptions themselves through the Reader in batches, with a progress log line per batch.
Then it follows the head the same way. The cursor and the last block hashes are persisted; a
block whose hash changed (a reorg deeper than the confirmations) rewinds the cursor to the
common ancestor and re-reads from there. RPC failures are retried with exponential backoff.

Given a `HeadFeed` (node/chain/heads.py), it wakes on each new head instead of sleeping
`poll_interval`, takes the head's number from it, and spares the round trips the header answers:
no reorg check when the new head's parent is the block at the cursor, and no block read for the
hash of a range that ends at the head.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial

from eth_utils import keccak
from web3 import AsyncWeb3

from node.chain.codec import Subscription
from node.chain.heads import HeadFeed
from node.chain.store import ChainStore
from node.logs import get_logger

log = get_logger(__name__)

CREATED = "0x" + keccak(text="SubscriptionCreated(uint32)").hex()
CANCELLED = "0x" + keccak(text="SubscriptionCancelled(uint32)").hex()

OnSubscriptions = Callable[[list[Subscription], int], Awaitable[None]]
OnCancelled = Callable[[list[int]], Awaitable[None]]
OnReorg = Callable[[list[int]], Awaitable[None]]


async def with_backoff(label: str, fn: Callable[[], Awaitable], stop: asyncio.Event, first: float = 0.5,
                       most: float = 10.0):
    delay = first
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - RPC errors and timeouts: wait and retry
            log.warning("chain.rpc_retry", call=label, error=str(exc)[:200], retry_in_s=round(delay, 2))
            try:
                await asyncio.wait_for(stop.wait(), delay)
                raise asyncio.CancelledError
            except TimeoutError:
                pass
            delay = min(delay * 2, most)


class Listener:
    def __init__(self, w3: AsyncWeb3, coordinator, reader, store: ChainStore, *, start_block: int,
                 trail: int, batch_blocks: int, reader_batch: int, poll_interval: float,
                 on_subscriptions: OnSubscriptions, on_cancelled: OnCancelled, on_reorg: OnReorg,
                 heads: HeadFeed | None = None) -> None:
        self._w3 = w3
        self._coordinator = coordinator
        self._reader = reader
        self._store = store
        self._start_block = start_block
        self._trail = trail
        self._batch_blocks = batch_blocks
        self._reader_batch = reader_batch
        self._poll = poll_interval
        self._on_subscriptions = on_subscriptions
        self._on_cancelled = on_cancelled
        self._on_reorg = on_reorg
        self.synced = asyncio.Event()
        self.head_seen = 0
        self._stop = asyncio.Event()
        self._heads = heads
        self._wake = asyncio.Event()
        if heads is not None:
            heads.notify(self._wake)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def _head(self) -> int:
        if self._heads is not None and self._heads.head is not None:
            return self._heads.head.number
        return await with_backoff("eth_blockNumber", lambda: self._w3.eth.block_number, self._stop)

    async def _idle(self) -> None:
        """Until the next head (or `poll_interval`, whichever is first)."""
        try:
            await asyncio.wait_for(self._wake.wait(), self._poll)
        except TimeoutError:
            pass

    async def run(self) -> None:
        cursor = await self._store.cursor()
        next_block = self._start_block if cursor is None else cursor + 1
        snapshot_started, blocks_done, subs_found = time.perf_counter(), 0, 0
        while not self._stop.is_set():
            self._wake.clear()  # before the head is read: a head that comes later wakes the wait below
            head = await self._head()
            self.head_seen = head
            target = head - self._trail
            if cursor is not None:
                rewound = await self._check_reorg(cursor)
                if rewound is not None:
                    cursor, next_block = rewound, rewound + 1
                    continue
            if next_block > target:
                if not self.synced.is_set():
                    elapsed = time.perf_counter() - snapshot_started
                    log.info("chain.synced", block=target, blocks=blocks_done, subscriptions=subs_found,
                             s=round(elapsed, 2), blocks_per_s=round(blocks_done / max(elapsed, 1e-6)),
                             subs_per_s=round(subs_found / max(elapsed, 1e-6)))
                    self.synced.set()
                await self._idle()
                continue
            end = min(target, next_block + self._batch_blocks - 1)
            found = await self._scan(next_block, end)
            blocks_done += end - next_block + 1
            subs_found += found
            cursor, next_block = end, end + 1
            if not self.synced.is_set():
                elapsed = time.perf_counter() - snapshot_started
                log.info("chain.sync_progress", block=end, target=target, blocks=blocks_done, subscriptions=subs_found,
                         s=round(elapsed, 2), blocks_per_s=round(blocks_done / max(elapsed, 1e-6)),
                         subs_per_s=round(subs_found / max(elapsed, 1e-6)))

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
        block = await with_backoff("eth_getBlockByNumber", lambda: self._w3.eth.get_block(cursor), self._stop)
        if "0x" + bytes(block["hash"]).hex() == known:
            return None
        number = cursor
        while number > self._start_block:
            number -= 1
            known = await self._store.block_hash(number)
            if known is None:
                break
            block = await with_backoff("eth_getBlockByNumber", partial(self._w3.eth.get_block, number), self._stop)
            if "0x" + bytes(block["hash"]).hex() == known:
                break
        ancestor = await with_backoff("eth_getBlockByNumber", lambda: self._w3.eth.get_block(number), self._stop)
        reopened = await self._store.rewind(number, float(ancestor["timestamp"]) - 5)
        log.warning("chain.reorg", from_block=cursor, to_block=number, reopened_subscriptions=len(reopened))
        await self._on_reorg(reopened)
        return number

    async def _scan(self, start: int, end: int) -> int:
        address = self._coordinator.address
        head = self._heads.head if self._heads is not None else None
        if head is not None and start == end == head.number:
            # The head block by its hash: an RPC that does not have it yet (one lagging behind the
            # one the head came from) answers an error, retried, instead of an empty list.
            where: dict = {"blockHash": head.hash}
            end_hash = head.hash
        else:
            # A range: its last block first, for the same reason (most RPCs clamp eth_getLogs to
            # their own head); one that lacks it answers "not found", retried until it has it.
            where = {"fromBlock": start, "toBlock": end}
            if head is not None and head.number == end:
                end_hash = head.hash
            else:
                end_block = await with_backoff("eth_getBlockByNumber", lambda: self._w3.eth.get_block(end), self._stop)
                end_hash = "0x" + bytes(end_block["hash"]).hex()
        logs = await with_backoff("eth_getLogs", lambda: self._w3.eth.get_logs(
            {**where, "address": address, "topics": [[CREATED, CANCELLED]]}), self._stop)
        created = sorted({int.from_bytes(bytes(entry["topics"][1]), "big") for entry in logs
                          if "0x" + bytes(entry["topics"][0]).hex() == CREATED})
        cancelled = sorted({int.from_bytes(bytes(entry["topics"][1]), "big") for entry in logs
                            if "0x" + bytes(entry["topics"][0]).hex() == CANCELLED})
        if created:
            subs = await self._read(created, end)
            await self._on_subscriptions(subs, end)
        if cancelled:
            await self._on_cancelled(cancelled)
        await self._store.advance(end, {end: end_hash})
        return len(created)

    async def _read(self, ids: list[int], block: int) -> list[Subscription]:
        """Read subscriptions by id through the Reader, contiguous ranges in batches."""
        out: list[Subscription] = []
        index = 0
        while index < len(ids):
            start = ids[index]
            stop = start
            while index < len(ids) and ids[index] == stop and stop - start < self._reader_batch:
                stop += 1
                index += 1
            read = self._reader.functions.readSubscriptionBatch(start, stop)
            raw = await with_backoff("readSubscriptionBatch", partial(read.call, block_identifier=block), self._stop)
            out.extend(Subscription.from_tuple(start + i, r) for i, r in enumerate(raw))
        return out
