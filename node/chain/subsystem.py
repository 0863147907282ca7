"""The chain subsystem (Infernet Coordinator): the listener, the processor, the wallet and
delegated subscriptions. web3 is heavy, so this module imports `node.chain.service` only when the
chain is enabled and its lifespan is entered.

The service is built with the other subsystems (its deliveries route and its face for the jobs
API are mounted with them) but starts only once the node serves: the listener's first
subscriptions must find the containers answering. It is stopped, in turn, before in-flight jobs
are drained. Its deliveries and its RPCs reach the metrics through the sample it yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node.config import NodeConfig
from node.observe.sampler import ChainSample
from node.server.http import ApiFamily
from node.storage import Database
from node.subsystem import Context, Mount, Sample

if TYPE_CHECKING:
    from node.chain.service import ChainService
    from node.observe.sampler import Snapshot

FAMILY = ApiFamily("chain", ("/api/chain/",))  # the Infernet error shape, as the jobs API
RPC_TIMEOUT = 3.0


def sample(chain: ChainService, db: Database, *, min_balance: int, failing_attempts: int) -> Sample:
    """The chain as the metrics and the status page show it: the head and the listener's cursor,
    the wallets, the RPCs, transactions in flight, and the deliveries by outcome."""
    async def rpc(call: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(call, RPC_TIMEOUT)

    async def fill(snap: Snapshot) -> None:
        listener = chain.listener
        sample = ChainSample(address=chain.address, trail=chain.config.trail_head_blocks,
                             min_balance_wei=min_balance,
                             tracked=chain.processor.tracked() if chain.processor else 0,
                             payment_address=chain.payment_address, skipped=dict(chain.skips))
        snap.chain = sample
        status = chain.rpc_status()
        sample.heads, sample.rpcs = status["heads"], status["rpcs"]
        if chain.wallet is not None and hasattr(chain.wallet, "inflight"):
            sample.tx_pending, sample.tx_pending_blocks = len(chain.wallet.inflight), chain.wallet.pending_blocks()
            sample.tx_pending_alert_blocks = chain.config.wallet.pending_alert_blocks
            sample.tx_resent, sample.tx_cancelled = chain.wallet.resent, chain.wallet.cancelled
        # The cursor before the head: read the other way round, a block the listener reads in
        # between would put the cursor ahead of the head (it learns of heads the moment they come).
        sample.cursor = await chain.store.cursor()
        try:
            sample.head = await rpc(chain.w3.eth.block_number)
            sample.rpc_up = True
            if chain.wallet is not None:
                sample.balance_wei = await rpc(chain.wallet.balance())
            if chain.payment_address is not None:
                sample.payment_balance_wei = await rpc(chain.w3.eth.get_balance(chain.payment_address))
        except Exception as exc:  # noqa: BLE001 - the RPC being down is what we report
            sample.rpc_error = str(exc)[:200] or type(exc).__name__
            sample.head = listener.head_seen if listener is not None and listener.head_seen else None
        rows = await db.fetchall(
            "SELECT status, error = 'reverted' AS reverted, COUNT(*) FROM chain_deliveries GROUP BY 1, 2")
        for status_, reverted, count in rows:
            outcome = "reverted" if status_ == "failed" and reverted else status_
            sample.deliveries[outcome] = sample.deliveries.get(outcome, 0) + count
        last = await db.fetchone(
            "SELECT subscription_id, interval, tx_hash, updated_at FROM chain_deliveries WHERE status = 'delivered'"
            " ORDER BY updated_at DESC LIMIT 1")
        sample.last_delivery = dict(last) if last is not None else None
        failing = await db.fetchall(
            "SELECT subscription_id, SUM(attempts) FROM chain_deliveries WHERE status = 'failed'"
            " GROUP BY subscription_id HAVING SUM(attempts) >= ? ORDER BY 2 DESC LIMIT 50", (failing_attempts,))
        sample.failing = [(int(r[0]), int(r[1])) for r in failing]

    return fill


class ChainSubsystem:
    name = "chain"

    def __init__(self, config: NodeConfig) -> None:
        self._config = config.chain
        self._containers = config.containers
        self._failing_attempts = config.observe.subscription_failures
        self.service: ChainService | None = None  # once mounted

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {self.name: mount is not None}

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        from node.chain.service import ChainService

        service = ChainService(self._config, self._containers, ctx.db, ctx.core, ctx.supervisor)
        self.service = service

        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            try:  # a start failing half-way still closes what it opened (the RPC connection)
                await service.start()
                yield
            finally:
                await service.stop()

        yield Mount(self.name, family=FAMILY, routes=[web.get("/api/chain/deliveries", service.deliveries_view)], checks={"chain_rpc": service.ping},
                    samples={"chain": sample(service, ctx.db, min_balance=self._config.wallet.min_balance,
                                             failing_attempts=self._failing_attempts)},
                    serving=[run], onchain=service, on_containers=service.set_containers)
