"""Follows the Coordinator's events: the block follower (node/chain/follow.py) specialised.

Snapshot sync: from the configured start block (or the persisted cursor) to `head - trail`,
in batches of blocks, reading `SubscriptionCreated` / `SubscriptionCancelled` logs and the
subscriptions themselves through the Reader in batches, with a progress log line per batch.
Then it follows the head the same way. The cursor and the last block hashes are persisted; a
block whose hash changed (a reorg deeper than the confirmations) rewinds the cursor to the
common ancestor and re-reads from there. RPC failures are retried with exponential backoff.
The loop is the Supervisor's (`chain-listener`, one `round()` per step).

Given a `HeadFeed` (node/chain/heads.py), it wakes on each new head instead of sleeping
`poll_interval`, takes the head's number from it, and spares the round trips the header answers:
no reorg check when the new head's parent is the block at the cursor, and no block read for the
hash of a range that ends at the head.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from eth_utils import keccak
from web3 import AsyncWeb3

from node.chain.codec import Subscription
from node.chain.follow import BlockFollower, with_backoff
from node.chain.heads import HeadFeed
from node.chain.store import ChainStore
from node.logs import get_logger

log = get_logger(__name__)

CREATED = "0x" + keccak(text="SubscriptionCreated(uint32)").hex()
CANCELLED = "0x" + keccak(text="SubscriptionCancelled(uint32)").hex()

OnSubscriptions = Callable[[list[Subscription], int], Awaitable[None]]
OnCancelled = Callable[[list[int]], Awaitable[None]]
OnReorg = Callable[[list[int]], Awaitable[None]]


class Listener(BlockFollower):
    def __init__(self, w3: AsyncWeb3, coordinator, reader, store: ChainStore, *, start_block: int,
                 trail: int, batch_blocks: int, reader_batch: int,
                 on_subscriptions: OnSubscriptions, on_cancelled: OnCancelled, on_reorg: OnReorg,
                 heads: HeadFeed | None = None) -> None:
        super().__init__(w3, store, start_block=start_block, trail=trail, batch_blocks=batch_blocks,
                         on_reorg=on_reorg, heads=heads)
        self._coordinator = coordinator
        self._reader = reader
        self._reader_batch = reader_batch
        self._on_subscriptions = on_subscriptions
        self._on_cancelled = on_cancelled

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
                end_hash = "0x" + bytes((await self._block(end))["hash"]).hex()
        logs = await with_backoff("eth_getLogs", lambda: self._w3.eth.get_logs(
            {**where, "address": address, "topics": [[CREATED, CANCELLED]]}))
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
            raw = await with_backoff("readSubscriptionBatch", partial(read.call, block_identifier=block))
            out.extend(Subscription.from_tuple(start + i, r) for i, r in enumerate(raw))
        return out
