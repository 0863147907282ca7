"""Pull-style state: what the node's subsystems already know (the chain cursor and head, rows
per status in each subsystem's tables), read on demand.

Reading SQLite and the chain RPC is async, and a prometheus collector is called synchronously,
so `Sampler.refresh()` reads everything into a `Snapshot` first (at most once per `max_age`);
the collector and the status endpoint render the latest snapshot. Subsystems keep no metrics
objects of their own this way: nothing is threaded through their constructors.

The sampler names no table: each subsystem yields its own sample parts from its lifespan
(`Mount.samples`, node/subsystem.py), each filling its block of the `Snapshot`; this module
declares only the snapshot's shape, which the collector, the watchdog and the status page read.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.logs import get_logger

log = get_logger(__name__)

Sample = Callable[["Snapshot"], Awaitable[None]]  # a subsystem's part: fills its block of the snapshot


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


class Sampler:
    def __init__(self, parts: Callable[[], Mapping[str, Sample]] = dict) -> None:
        self._parts = parts  # name -> fill(snapshot), of every subsystem mounted (read at each refresh)
        self._lock = asyncio.Lock()
        self.latest = Snapshot()

    async def refresh(self, max_age: float = 1.0) -> Snapshot:
        if time.time() - self.latest.taken_at < max_age:
            return self.latest
        async with self._lock:
            if time.time() - self.latest.taken_at < max_age:
                return self.latest
            snap = Snapshot(taken_at=time.time())
            for name, part in self._parts().items():
                try:
                    await part(snap)
                except (sqlite3.Error, ValueError) as exc:  # a table not there yet, a closing db
                    log.debug("observe.sample_failed", part=name, error=str(exc))
            self.latest = snap
            return snap
