"""Pull-style state: what the node's subsystems already know (container states, running jobs,
the chain cursor and head, rows per status in each subsystem's tables), read on demand.

Reading SQLite and the chain RPC is async, and a prometheus collector is called synchronously,
so `Sampler.refresh()` reads everything into a `Snapshot` first (at most once per `max_age`);
the collector and the status endpoint render the latest snapshot. Subsystems keep no metrics
objects of their own this way: nothing is threaded through their constructors.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from node.logs import get_logger
from node.storage import Database

log = get_logger(__name__)

RPC_TIMEOUT = 3.0


@dataclass
class ChainSample:
    address: str
    rpc_up: bool = False
    rpc_error: str | None = None
    head: int | None = None
    cursor: int | None = None
    trail: int = 0
    balance_wei: int | None = None
    min_balance_wei: int = 0
    tracked: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)  # outcome -> rows
    last_delivery: dict[str, Any] | None = None
    failing: list[tuple[int, int]] = field(default_factory=list)  # (subscription, failed attempts)
    payment_address: str | None = None
    payment_balance_wei: int | None = None  # the payment Wallet's ETH (token balances: on the chain)
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> subscriptions/intervals not served
    heads: str | None = None  # how new heads arrive: "subscription" or "polling"
    rpcs: list[dict[str, Any]] = field(default_factory=list)  # each RPC's state (node/chain/rpc.py status())
    tx_pending: int = 0  # transactions sent and not yet mined
    tx_pending_blocks: int = 0  # blocks the oldest of them has waited
    tx_pending_alert_blocks: int = 0  # chain.wallet.pending_alert_blocks
    tx_resent: int = 0  # replacements with higher fees since start
    tx_cancelled: int = 0  # nonces filled with a transfer to self (delivery made by another node)

    @property
    def lag(self) -> int | None:
        if self.head is None or self.cursor is None:
            return None
        return max(self.head - self.cursor, 0)


@dataclass
class Snapshot:
    taken_at: float = 0.0
    chain: ChainSample | None = None
    cre: dict[str, dict[str, int]] | None = None  # ingests/decisions/actions -> label -> rows
    gateway_decisions: dict[tuple[str, str], int] | None = None  # (kind, outcome) -> rows
    gateway_workflows: list[dict[str, Any]] | None = None
    registry_executions: dict[str, int] | None = None
    cre_workflows: list[dict[str, Any]] | None = None  # each CRE workflow, its last execution, its failures


async def _grouped(db: Database, sql: str, params: tuple = ()) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in await db.fetchall(sql, params)}


class Sampler:
    def __init__(self, db: Database, *, chain: Callable[[], Any] = lambda: None, cre: bool = False,
                 gateway: bool = False, registry: bool = False, subscription_failures: int = 3,
                 min_balance: int = 0, cre_workflows: Callable[[], Any] = lambda: None) -> None:
        self._db = db
        self._cre_workflows = cre_workflows  # the WasmWorkflows once started (or None)
        self._chain = chain  # the ChainService once started (or None): it is built after the server
        self._cre, self._gateway, self._registry = cre, gateway, registry
        self._failures = subscription_failures
        self._min_balance = min_balance
        self._lock = asyncio.Lock()
        self.latest = Snapshot()

    async def refresh(self, max_age: float = 1.0) -> Snapshot:
        if time.time() - self.latest.taken_at < max_age:
            return self.latest
        async with self._lock:
            if time.time() - self.latest.taken_at < max_age:
                return self.latest
            snap = Snapshot(taken_at=time.time())
            for name, part in (("chain", self._sample_chain), ("cre", self._sample_cre),
                               ("gateway", self._sample_gateway), ("registry", self._sample_registry),
                               ("cre_workflows", self._sample_cre_workflows)):
                try:
                    await part(snap)
                except (sqlite3.Error, ValueError) as exc:  # a table not there yet, a closing db
                    log.debug("observe.sample_failed", part=name, error=str(exc))
            self.latest = snap
            return snap

    async def _rpc(self, call: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(call, RPC_TIMEOUT)

    async def _sample_chain(self, snap: Snapshot) -> None:
        chain = self._chain()
        if chain is None:
            return
        listener = chain.listener
        sample = ChainSample(address=chain.address, trail=chain.config.trail_head_blocks,
                             min_balance_wei=self._min_balance,
                             tracked=chain.processor.tracked() if chain.processor else 0,
                             payment_address=chain.payment_address, skipped=dict(chain.skips))
        snap.chain = sample
        if hasattr(chain, "rpc_status"):
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
            sample.head = await self._rpc(chain.w3.eth.block_number)
            sample.rpc_up = True
            if chain.wallet is not None:
                sample.balance_wei = await self._rpc(chain.wallet.balance())
            if chain.payment_address is not None:
                sample.payment_balance_wei = await self._rpc(chain.w3.eth.get_balance(chain.payment_address))
        except Exception as exc:  # noqa: BLE001 - the RPC being down is what we report
            sample.rpc_error = str(exc)[:200] or type(exc).__name__
            sample.head = listener.head_seen if listener is not None and listener.head_seen else None
        rows = await self._db.fetchall(
            "SELECT status, error = 'reverted' AS reverted, COUNT(*) FROM chain_deliveries GROUP BY 1, 2")
        for status, reverted, count in rows:
            outcome = "reverted" if status == "failed" and reverted else status
            sample.deliveries[outcome] = sample.deliveries.get(outcome, 0) + count
        last = await self._db.fetchone(
            "SELECT subscription_id, interval, tx_hash, updated_at FROM chain_deliveries WHERE status = 'delivered'"
            " ORDER BY updated_at DESC LIMIT 1")
        sample.last_delivery = dict(last) if last is not None else None
        failing = await self._db.fetchall(
            "SELECT subscription_id, SUM(attempts) FROM chain_deliveries WHERE status = 'failed'"
            " GROUP BY subscription_id HAVING SUM(attempts) >= ? ORDER BY 2 DESC LIMIT 50", (self._failures,))
        sample.failing = [(int(r[0]), int(r[1])) for r in failing]

    async def _sample_cre(self, snap: Snapshot) -> None:
        if not self._cre:
            return
        snap.cre = {
            "ingests": await _grouped(self._db, "SELECT kind, COUNT(*) FROM cre_runtime_records GROUP BY kind"),
            "decisions": await _grouped(self._db, "SELECT status, COUNT(*) FROM cre_runtime_decisions GROUP BY status"),
            "actions": await _grouped(self._db, "SELECT status, COUNT(*) FROM cre_actions GROUP BY status"),
        }

    async def _sample_gateway(self, snap: Snapshot) -> None:
        if not self._gateway:
            return
        rows = await self._db.fetchall("SELECT kind, allowed, COUNT(*) FROM gw_executions GROUP BY kind, allowed")
        snap.gateway_decisions = {(str(k), "allowed" if a else "denied"): int(n) for k, a, n in rows}
        rows = await self._db.fetchall(
            "SELECT id, status, budget_usd, spent_usd, reserved_usd FROM gw_workflows ORDER BY id LIMIT 500")
        snap.gateway_workflows = [dict(r) for r in rows]

    async def _sample_registry(self, snap: Snapshot) -> None:
        if self._registry:
            snap.registry_executions = await _grouped(
                self._db, "SELECT status, COUNT(*) FROM reg_executions GROUP BY status")

    async def _sample_cre_workflows(self, snap: Snapshot) -> None:
        workflows = self._cre_workflows()
        if workflows is not None:
            snap.cre_workflows = await workflows.status()
