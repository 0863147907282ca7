"""The node's wallet: signs and sends transactions with a locally managed nonce, gas estimated
and capped, EIP-1559 fees, receipt check and decoded reverts. The private key never leaves this
object and is never logged.

Round trips are the wallet's cost per delivery, so it makes few: the gas estimate is the
simulation (it reverts as the call would, with the same error), the base fee comes from the head
the `HeadFeed` saw, the priority fee is asked once every `TIP_REFRESH_BLOCKS` blocks, and the
receipt is asked for at once, then again on each new head (a 0.1 s poll without a feed).

A transaction must never stall the ones behind it (an oracle node's classic failure: one
under-priced transaction in a fee spike, and every later delivery queues behind its nonce). So
with a `TxStore` every transaction is recorded (nonce, fees, every hash sent for that nonce)
before it is sent, and while it waits:

- one not mined within `resend_after` blocks (and a second) is signed again with the same nonce and fees raised
  by at least `FEE_BUMP` (+12.5 %, what pools require of a replacement) or to the market, capped
  by `max_fee_per_gas`; a transaction the RPC no longer knows is sent again the same way;
- before each replacement the caller's `still_wanted()` is asked: a delivery another node has
  made meanwhile is not paid for; its nonce is filled with a zero-value transfer to itself
  (the cheapest transaction that frees the nonce) and the result says `fulfilled_elsewhere`;
- after a restart the transactions still pending are watched again (`resume()`, one task each in
  the `tasks` set the node's Supervisor drains at stop, so a watch that fails is logged and a
  shutdown waits for the ones finishing), and the local
  nonce starts after the highest nonce recorded or known to the chain; a recorded nonce the
  chain has not seen (a gap: the RPC lost it) is sent again before any new one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_account import Account
from web3 import AsyncWeb3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound

from node.chain.codec import decode_revert
from node.chain.heads import HeadFeed
from node.lifecycle import TaskSet
from node.logs import get_logger

log = get_logger(__name__)

TIP_REFRESH_BLOCKS = 10
FEE_BUMP = 1.125
RESEND_MIN_SECONDS = 1.0  # and at least this long: on a chain that mines a block per transaction
#                           (anvil automine), `resend_after` blocks can pass in milliseconds
FULFILLED_ELSEWHERE = "fulfilled_elsewhere"

StillWanted = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class TxResult:
    ok: bool
    tx_hash: str | None
    error: str | None = None
    receipt: Any = None


class TxStore(Protocol):
    async def tx_record(self, row: dict[str, Any]) -> None: ...

    async def tx_sent_again(self, address: str, nonce: int, tx_hash: str, fees: dict[str, int], block: int) -> None: ...

    async def tx_done(self, address: str, nonce: int, status: str, tx_hash: str | None) -> None: ...

    async def tx_pending(self, address: str) -> list[dict[str, Any]]: ...


def _bumped(old: dict[str, int], market: dict[str, int], cap: int | None) -> dict[str, int] | None:
    """Fees for a replacement: each at least FEE_BUMP times the old and at least the market,
    the fee cap at most `cap`; None when the cap leaves no valid replacement."""
    out = {k: max(math.ceil(v * FEE_BUMP) + 1, market.get(k, 0)) for k, v in old.items()}
    if cap is not None:
        key = "maxFeePerGas" if "maxFeePerGas" in out else "gasPrice"
        out[key] = min(out[key], cap)
        if out[key] < math.ceil(old[key] * FEE_BUMP):
            return None
        if "maxPriorityFeePerGas" in out:
            out["maxPriorityFeePerGas"] = min(out["maxPriorityFeePerGas"], out["maxFeePerGas"])
    return out


class Wallet:
    def __init__(self, w3: AsyncWeb3, private_key: str, max_gas_limit: int, chain_id: int,
                 receipt_timeout: float = 60.0, heads: HeadFeed | None = None, store: TxStore | None = None,
                 resend_after: int = 3, max_fee_per_gas: int | None = None,
                 allowed_sim_errors: list[str] | None = None, tasks: TaskSet | None = None) -> None:
        self._w3 = w3
        self._tasks = tasks if tasks is not None else TaskSet("chain-tx-watch")
        self._account = Account.from_key(private_key)
        self.address = self._account.address
        self._max_gas = max_gas_limit
        self._chain_id = chain_id
        self._receipt_timeout = receipt_timeout
        self._nonce: int | None = None
        self._lock = asyncio.Lock()
        self._heads = heads
        self._tip: tuple[int, int] | None = None  # (priority fee, head number when asked)
        self._allowed_sim_errors = [e.lower() for e in allowed_sim_errors or [] if e]
        self._store = store
        self._resend_after = resend_after
        self._max_fee = max_fee_per_gas
        self._floor = 0  # the lowest nonce a new transaction may take (after the recorded ones)
        self.inflight: dict[int, dict[str, Any]] = {}  # nonce -> {sent_block, label, hashes} (metrics)
        self.resent = 0
        self.cancelled = 0

    def __repr__(self) -> str:
        return f"Wallet({self.address})"

    async def balance(self) -> int:
        return await self._w3.eth.get_balance(self.address)

    def _head_number(self) -> int | None:
        head = self._heads.head if self._heads is not None else None
        return head.number if head is not None else None

    async def _block_number(self) -> int:
        number = self._head_number()
        return number if number is not None else await self._w3.eth.block_number

    async def _fees(self) -> dict[str, int]:
        head = self._heads.head if self._heads is not None else None
        if head is not None:
            base = head.base_fee
        else:
            base = (await self._w3.eth.get_block("latest")).get("baseFeePerGas")
        if base is None:
            price = await self._w3.eth.gas_price
            return {"gasPrice": min(price, self._max_fee) if self._max_fee else price}
        number = head.number if head is not None else None
        if self._tip is None or number is None or number - self._tip[1] >= TIP_REFRESH_BLOCKS:
            self._tip = (await self._w3.eth.max_priority_fee, number if number is not None else -TIP_REFRESH_BLOCKS)
        tip = self._tip[0]
        fee = 2 * base + tip
        if self._max_fee:
            fee = min(fee, self._max_fee)
        return {"maxFeePerGas": fee, "maxPriorityFeePerGas": min(tip, fee)}

    async def transact(self, fn: Any, label: str, still_wanted: StillWanted | None = None,
                       sim_errors_ok: tuple[str, ...] = ()) -> TxResult:
        """Simulate, then sign and send `fn` (a bound contract function) and wait for its receipt,
        replacing it with higher fees while it is not mined (see the module's docstring).
        `sim_errors_ok`: reverts this call may send anyway (as `allowed_sim_errors`), because the
        caller knows the simulation's block is older than the one the transaction will be in."""
        try:
            gas = await fn.estimate_gas({"from": self.address})  # the simulation: reverts as the call would
        except (ContractCustomError, ContractLogicError) as exc:
            reason = decode_revert(exc)
            allowed = self._sim_error_allowed(exc, reason, sim_errors_ok)
            if allowed is None:
                return TxResult(False, None, reason)
            # The Infernet node's allowed_sim_errors: the operator accepts this revert; send anyway,
            # with the gas cap as the gas (nothing to estimate from).
            log.warning("chain.simulation_bypassed", tx=label, reason=reason, matched=allowed)
            gas = self._max_gas
        else:
            gas = min(int(gas * 1.25) + 10_000, self._max_gas)
        async with self._lock:
            if self._nonce is None:
                self._nonce = max(await self._w3.eth.get_transaction_count(self.address, "pending"), self._floor)
            nonce = self._nonce
            fees = await self._fees()
            tx = await fn.build_transaction({"from": self.address, "nonce": nonce, "gas": gas,
                                             "chainId": self._chain_id, **fees})
            signed = self._account.sign_transaction(tx)
            hex_hash = "0x" + bytes(signed.hash).hex()
            block = await self._block_number()
            record = {"address": self.address, "nonce": nonce, "label": label, "to": tx["to"], "data": tx["data"],
                      "value": int(tx.get("value", 0)), "gas": gas, "fees": fees, "tx_hash": hex_hash,
                      "sent_block": block}
            if self._store is not None:
                await self._store.tx_record(record)  # durable before it is sent: a restart knows it
            try:
                await self._w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:  # noqa: BLE001 - resync the nonce and report
                self._nonce = None
                if self._store is not None:
                    await self._store.tx_done(self.address, nonce, "failed", None)
                log.warning("chain.send_failed", tx=label, error=str(exc)[:300])
                return TxResult(False, None, f"send failed: {str(exc)[:300]}")
            self._nonce += 1
        return await self._follow(record, still_wanted)

    def _sim_error_allowed(self, exc: Exception, reason: str | None, also: tuple[str, ...] = ()) -> str | None:
        """The allowed_sim_errors entry (or one of `also`) found, case-insensitive, in the
        revert's text, if any."""
        text = f"{exc} {reason or ''}".lower()
        return next((e for e in (*self._allowed_sim_errors, *(a.lower() for a in also)) if e in text), None)

    async def resume(self, on_done: Callable[[dict[str, Any], TxResult], Awaitable[None]]) -> int:
        """After a restart: watch again every transaction a previous process left pending
        (re-sending the ones the RPC lost, so no nonce stays a gap); each outcome goes to
        `on_done(record, result)`. Returns how many were pending."""
        if self._store is None:
            return 0
        rows = await self._store.tx_pending(self.address)
        if rows:
            self._floor = max(r["nonce"] for r in rows) + 1
            self._nonce = None
        for row in rows:
            async def watch(r: dict[str, Any] = row) -> None:
                result = await self._follow(r, None)
                await on_done(r, result)

            self._tasks.spawn(f"{row['label']}#{row['nonce']}", watch())
        return len(rows)

    async def _follow(self, record: dict[str, Any], still_wanted: StillWanted | None) -> TxResult:
        """Wait for the transaction of `record`'s nonce to be mined, whichever of its hashes is."""
        nonce, hashes = record["nonce"], list(record.get("hashes") or [record["tx_hash"]])
        self.inflight[nonce] = {"label": record["label"], "sent_block": record["sent_block"], "hashes": hashes}
        fees, last_sent = dict(record["fees"]), record.get("last_sent_block", record["sent_block"])
        last_sent_at = time.monotonic()
        if record.get("resumed"):  # the RPC may have lost it with the previous process: send again soon
            last_sent = min(last_sent, await self._block_number() - self._resend_after)
            last_sent_at -= RESEND_MIN_SECONDS
        deadline = time.monotonic() + self._receipt_timeout
        new_head = asyncio.Event()
        if self._heads is not None:
            self._heads.notify(new_head)
        checks = 0
        try:
            while time.monotonic() < deadline:
                head = self._head_number()
                if checks == 0 and head is not None and head <= record["sent_block"] and not record.get("resumed"):
                    checks = 1  # sent after this head: it can only be in a later block, so wait for one
                    try:
                        await asyncio.wait_for(new_head.wait(), 1.0)
                    except TimeoutError:
                        pass
                new_head.clear()
                for tx_hash in reversed(hashes):
                    try:
                        receipt = await self._w3.eth.get_transaction_receipt(tx_hash)
                    except TransactionNotFound:
                        continue
                    return await self._mined(record, tx_hash, receipt)
                checks += 1
                tracked = self._heads is not None or self._store is not None  # else: wait, as a bare wallet does
                block = await self._block_number() if tracked else last_sent
                if tracked and block - last_sent >= self._resend_after and checks > 1 \
                        and time.monotonic() - last_sent_at >= RESEND_MIN_SECONDS:
                    if await self._nonce_used(nonce):
                        for tx_hash in reversed(hashes):  # mined since the check above?
                            try:
                                receipt = await self._w3.eth.get_transaction_receipt(tx_hash)
                            except TransactionNotFound:
                                continue
                            return await self._mined(record, tx_hash, receipt)
                        await self._done(record, "replaced", None)  # mined, but none of our hashes
                        return TxResult(False, hashes[-1], "replaced by another transaction of this nonce")
                    wanted = still_wanted is None or await still_wanted()
                    replacement = await self._replace(record, fees, wanted)
                    if replacement is not None:
                        fees, tx_hash = replacement
                        hashes.append(tx_hash)
                        if not wanted:
                            record = {**record, "cancelled": True}
                    last_sent, last_sent_at = block, time.monotonic()
                if self._heads is None:
                    await asyncio.sleep(0.1)
                    continue
                try:  # mined in the next block, or not yet: ask again on each head (and each second)
                    await asyncio.wait_for(new_head.wait(), 1.0)
                except TimeoutError:
                    pass
            log.warning("chain.tx_not_mined", tx=record["label"], nonce=nonce, hashes=len(hashes),
                        s=self._receipt_timeout)
            self.resync()
            return TxResult(False, hashes[-1], "no receipt (dropped or not mined in time)")
        finally:
            self.inflight.pop(nonce, None)
            if self._heads is not None:
                self._heads.forget(new_head)

    async def _mined(self, record: dict[str, Any], tx_hash: str, receipt: Any) -> TxResult:
        if record.get("cancelled"):
            await self._done(record, "cancelled", tx_hash)
            return TxResult(False, tx_hash, FULFILLED_ELSEWHERE, receipt)
        status = "mined" if receipt["status"] == 1 else "reverted"
        await self._done(record, status, tx_hash)
        if receipt["status"] != 1:
            return TxResult(False, tx_hash, "reverted", receipt)
        return TxResult(True, tx_hash, None, receipt)

    async def _done(self, record: dict[str, Any], status: str, tx_hash: str | None) -> None:
        if self._store is not None:
            await self._store.tx_done(self.address, record["nonce"], status, tx_hash)

    async def _nonce_used(self, nonce: int) -> bool:
        return await self._w3.eth.get_transaction_count(self.address, "latest") > nonce

    async def _replace(self, record: dict[str, Any], fees: dict[str, int],
                       wanted: bool) -> tuple[dict[str, int], str] | None:
        """Sign the nonce again with bumped fees: the same call, or (not wanted any more) a
        zero-value transfer to this wallet. None when the fee cap leaves no valid replacement."""
        new_fees = _bumped(fees, await self._fees(), self._max_fee)
        nonce = record["nonce"]
        if new_fees is None:
            log.warning("chain.tx_fee_capped", tx=record["label"], nonce=nonce, fees=fees, max_fee_per_gas=self._max_fee)
            return None
        if wanted:
            tx = {"to": record["to"], "data": record["data"], "value": record["value"], "gas": record["gas"]}
        else:
            tx = {"to": self.address, "data": "0x", "value": 0, "gas": 21_000}
        signed = self._account.sign_transaction({**tx, "nonce": nonce, "chainId": self._chain_id, **new_fees})
        tx_hash = "0x" + bytes(signed.hash).hex()
        block = await self._block_number()
        if self._store is not None:
            await self._store.tx_sent_again(self.address, nonce, tx_hash, new_fees, block)
        try:
            await self._w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:  # noqa: BLE001 - e.g. already mined meanwhile: the next check sees it
            if "nonce too low" in str(exc).lower():
                log.info("chain.tx_mined_meanwhile", tx=record["label"], nonce=nonce)
            else:
                log.warning("chain.tx_resend_failed", tx=record["label"], nonce=nonce, error=str(exc)[:200])
            return None
        if wanted:
            self.resent += 1
        else:
            self.cancelled += 1
        log.warning("chain.tx_replaced", tx=record["label"], nonce=nonce, new_tx=tx_hash, fees=new_fees,
                    reason="still pending" if wanted else FULFILLED_ELSEWHERE)
        return new_fees, tx_hash

    def resync(self) -> None:
        """Forget the local nonce: the next send reads it from the chain again (after a reorg,
        a dropped transaction, or a send error)."""
        self._nonce = None

    def pending_blocks(self) -> int:
        """How many blocks the oldest transaction in flight has waited (0 when none)."""
        head = self._head_number()
        if not self.inflight or head is None:
            return 0
        return max(head - min(t["sent_block"] for t in self.inflight.values()), 0)
