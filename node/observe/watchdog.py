"""Problems said out loud. The silent failures operators meet ("all containers are up but
nothing happens") each get a detector that looks at the sampled state every few seconds:

- `chain_cursor_stalled`: the listener's cursor has not moved for `cursor_stall_seconds` while
  the chain is ahead of it (or the RPC does not answer);
- `subscription_failing`: a subscription's failed delivery attempts reach `subscription_failures`;
- `wallet_balance_low`: the wallet holds less than `chain.wallet.min_balance`;
- `container_restarting`: a container restarted `container_restarts` times within `restart_window`;
- `tx_pending_long`: the node's oldest transaction in flight has waited
  `chain.wallet.pending_alert_blocks` blocks (replacements have not got it mined: fee cap, RPC).

A problem is logged once as a warning when it starts (`problem.detected`) and once when it ends
(`problem.cleared`), shows in the `node_problems{problem}` gauge and in GET /api/node/status.

The loop is the Supervisor's (`observe-watchdog`, a `round()` every `observe.interval` seconds):
a round that fails (the sampler's database read) is logged there and the next one runs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from node.logs import get_logger
from node.observe.config import ObserveConfig
from node.observe.sampler import Sampler, Snapshot

log = get_logger(__name__)

PROBLEMS = ("chain_cursor_stalled", "subscription_failing", "wallet_balance_low", "container_restarting",
            "tx_pending_long")


@dataclass
class Problem:
    problem: str
    subject: str
    detail: str
    since: float

    def view(self) -> dict:
        return {"problem": self.problem, "subject": self.subject, "detail": self.detail, "since": self.since}


class Watchdog:
    def __init__(self, sampler: Sampler, config: ObserveConfig, restarts: Callable[[], dict[str, int]]) -> None:
        self._sampler = sampler
        self._config = config
        self._restarts = restarts  # container id -> restarts so far
        self.active: dict[tuple[str, str], Problem] = {}
        self._cursor: tuple[int | None, float] | None = None  # (value, when it last changed)
        self._restart_log: dict[str, deque[tuple[float, int]]] = {}

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(PROBLEMS, 0)
        for problem, _ in self.active:
            out[problem] += 1
        return out

    async def round(self) -> None:
        """Sample (or reuse a fresh sample) and check it."""
        self.check(await self._sampler.refresh(max_age=self._config.interval / 2))

    def check(self, snap: Snapshot, now: float | None = None) -> None:
        now = time.time() if now is None else now
        found: dict[tuple[str, str], str] = {}
        chain = snap.chain
        if chain is not None:
            if self._cursor is None or self._cursor[0] != chain.cursor:
                self._cursor = (chain.cursor, now)
            stalled_for = now - self._cursor[1]
            behind = not chain.rpc_up or (chain.lag is not None and chain.lag > chain.trail)
            if behind and stalled_for >= self._config.cursor_stall_seconds:
                why = f"RPC not answering: {chain.rpc_error}" if not chain.rpc_up else f"{chain.lag} blocks behind"
                found[("chain_cursor_stalled", "chain")] = (
                    f"cursor at block {chain.cursor} for {stalled_for:.0f}s; {why}")
            for sub_id, attempts in chain.failing:
                found[("subscription_failing", str(sub_id))] = f"{attempts} failed delivery attempts"
            if chain.balance_wei is not None and chain.balance_wei < chain.min_balance_wei:
                found[("wallet_balance_low", chain.address)] = (
                    f"balance {chain.balance_wei} wei < min_balance {chain.min_balance_wei} wei")
            if chain.tx_pending and chain.tx_pending_alert_blocks and \
                    chain.tx_pending_blocks >= chain.tx_pending_alert_blocks:
                found[("tx_pending_long", chain.address)] = (
                    f"{chain.tx_pending} transaction(s) pending, the oldest for {chain.tx_pending_blocks} blocks")
        window = self._config.restart_window
        for cid, restarts in self._restarts().items():
            history = self._restart_log.setdefault(cid, deque())
            if not history or history[-1][1] != restarts:
                history.append((now, restarts))
            while len(history) > 1 and history[1][0] <= now - window:
                history.popleft()
            # Restarts count from 0 at boot: before any sample is a window old, all are recent.
            baseline = history[0][1] if history[0][0] <= now - window else 0
            if restarts - baseline >= self._config.container_restarts:
                found[("container_restarting", cid)] = f"{restarts - baseline} restarts in the last {window:.0f}s"
        self._update(found, now)

    def _update(self, found: dict[tuple[str, str], str], now: float) -> None:
        for key, detail in found.items():
            current = self.active.get(key)
            if current is None:
                self.active[key] = Problem(key[0], key[1], detail, now)
                log.warning("problem.detected", problem=key[0], subject=key[1], detail=detail)
            else:
                current.detail = detail
        for key in [k for k in self.active if k not in found]:
            problem = self.active.pop(key)
            log.info("problem.cleared", problem=key[0], subject=key[1], lasted_s=round(now - problem.since, 1))
