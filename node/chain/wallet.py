"""The node's wallet: signs and sends transactions with a locally managed nonce, gas estimated
and capped, EIP-1559 fees, receipt check and decoded reverts. The private key never leaves this
object and is never logged.

Round trips are the wallet's cost per delivery, so it makes few: the gas estimate is the
simulation (it reverts as the call would, with the same error), the base fee comes from the head
the `HeadFeed` saw, the priority fee is asked once every `TIP_REFRESH_BLOCKS` blocks, and the
receipt is asked for at once, then again on each new head (a 0.1 s poll without a feed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import AsyncWeb3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound

from node.chain.codec import decode_revert
from node.chain.heads import HeadFeed
from node.logs import get_logger

log = get_logger(__name__)

TIP_REFRESH_BLOCKS = 10


@dataclass(frozen=True)
class TxResult:
    ok: bool
    tx_hash: str | None
    error: str | None = None
    receipt: Any = None


class Wallet:
    def __init__(self, w3: AsyncWeb3, private_key: str, max_gas_limit: int, chain_id: int,
                 receipt_timeout: float = 60.0, heads: HeadFeed | None = None,
                 allowed_sim_errors: list[str] | None = None) -> None:
        self._w3 = w3
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

    def __repr__(self) -> str:
        return f"Wallet({self.address})"

    async def balance(self) -> int:
        return await self._w3.eth.get_balance(self.address)

    async def _fees(self) -> dict[str, int]:
        head = self._heads.head if self._heads is not None else None
        if head is not None:
            base = head.base_fee
        else:
            base = (await self._w3.eth.get_block("latest")).get("baseFeePerGas")
        if base is None:
            return {"gasPrice": await self._w3.eth.gas_price}
        number = head.number if head is not None else None
        if self._tip is None or number is None or number - self._tip[1] >= TIP_REFRESH_BLOCKS:
            self._tip = (await self._w3.eth.max_priority_fee, number if number is not None else -TIP_REFRESH_BLOCKS)
        tip = self._tip[0]
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    async def transact(self, fn: Any, label: str) -> TxResult:
        """Simulate, then sign and send `fn` (a bound contract function) and wait for its receipt."""
        try:
            gas = await fn.estimate_gas({"from": self.address})  # the simulation: reverts as the call would
        except (ContractCustomError, ContractLogicError) as exc:
            reason = decode_revert(exc)
            allowed = self._sim_error_allowed(exc, reason)
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
                self._nonce = await self._w3.eth.get_transaction_count(self.address, "pending")
            tx = await fn.build_transaction({"from": self.address, "nonce": self._nonce, "gas": gas,
                                             "chainId": self._chain_id, **await self._fees()})
            signed = self._account.sign_transaction(tx)
            try:
                tx_hash = await self._w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:  # noqa: BLE001 - resync the nonce and report
                self._nonce = None
                log.warning("chain.send_failed", tx=label, error=str(exc)[:300])
                return TxResult(False, None, f"send failed: {str(exc)[:300]}")
            self._nonce += 1
        hex_hash = "0x" + bytes(tx_hash).hex()
        receipt = await self._receipt(tx_hash)
        if receipt is None:
            self.resync()
            return TxResult(False, hex_hash, "no receipt (dropped or not mined in time)")
        if receipt["status"] != 1:
            return TxResult(False, hex_hash, "reverted", receipt)
        return TxResult(True, hex_hash, None, receipt)

    def _sim_error_allowed(self, exc: Exception, reason: str | None) -> str | None:
        """The allowed_sim_errors entry found (case-insensitive) in the revert's text, if any."""
        text = f"{exc} {reason or ''}".lower()
        return next((e for e in self._allowed_sim_errors if e in text), None)

    def resync(self) -> None:
        """Forget the local nonce: the next send reads it from the chain again (after a reorg,
        a dropped transaction, or a send error)."""
        self._nonce = None

    async def _receipt(self, tx_hash: Any) -> Any | None:
        """Wait for a receipt; None when the transaction disappears from the node (dropped by a
        reorg or eviction) or the timeout passes."""
        deadline = asyncio.get_running_loop().time() + self._receipt_timeout
        checks = 0
        new_head = asyncio.Event()
        if self._heads is not None:
            self._heads.notify(new_head)
        try:
            while asyncio.get_running_loop().time() < deadline:
                new_head.clear()
                try:
                    return await self._w3.eth.get_transaction_receipt(tx_hash)
                except TransactionNotFound:
                    pass
                checks += 1
                if checks % 20 == 0:
                    try:
                        await self._w3.eth.get_transaction(tx_hash)
                    except TransactionNotFound:
                        log.warning("chain.tx_dropped", tx="0x" + bytes(tx_hash).hex())
                        return None
                if self._heads is None:
                    await asyncio.sleep(0.1)
                    continue
                try:  # mined in the next block, or not yet: ask again on each head (and each second)
                    await asyncio.wait_for(new_head.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
            return None
        finally:
            if self._heads is not None:
                self._heads.forget(new_head)
