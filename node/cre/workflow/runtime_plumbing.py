"""Shared plumbing of the workflow runtime (the base of every `WorkflowRuntime` part): the EIP-712
types the vault and Sub0 sign, delivery of DON-signed reports through the ReportForwarder, DON
quotes and user-signature recovery, and the calls to the backend (`backend_url`)."""

from __future__ import annotations

from typing import Any

import aiohttp
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak
from web3 import AsyncWeb3

from node.chain.wallet import Wallet
from node.cre.config import CreRuntimeConfig
from node.cre.workflow.errors import ActionError
from node.cre.workflow.models import CALLBACK_PATHS
from node.logs import get_logger
from node.secrets import SecretBox
from node.server import safejson
from node.storage import Database

# One logger name for the whole runtime, as before it was split into parts.
log = get_logger("node.cre.workflow.runtime")

ZERO = "0x" + "00" * 20
USER_TRADE = [{"name": "marketId", "type": "bytes32"}, {"name": "outcomeIndex", "type": "uint256"},
              {"name": "buy", "type": "bool"}, {"name": "quantity", "type": "uint256"},
              {"name": "maxCostUsdc", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
              {"name": "deadline", "type": "uint256"}]
DON_QUOTE = [{"name": "marketId", "type": "bytes32"}, {"name": "outcomeIndex", "type": "uint256"},
             {"name": "buy", "type": "bool"}, {"name": "quantity", "type": "uint256"},
             {"name": "tradeCostUsdc", "type": "uint256"}, {"name": "user", "type": "address"},
             {"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"}]
REDEEM = [{"name": "owner", "type": "address"}, {"name": "conditionId", "type": "bytes32"},
          {"name": "indexSets", "type": "uint256[]"}, {"name": "token", "type": "address"},
          {"name": "deadline", "type": "uint256"}, {"name": "nonce", "type": "uint256"}]
DOMAIN = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
          {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]


def typed(name: str, contract: str, chain_id: int, primary: str, fields: list, message: dict) -> dict:
    return {"types": {"EIP712Domain": DOMAIN, primary: fields}, "primaryType": primary,
            "domain": {"name": name, "version": "1", "chainId": chain_id, "verifyingContract": contract},
            "message": message}


def _hex(raw: bytes) -> str:
    return "0x" + bytes(raw).hex()


class RuntimePlumbing:
    """What every part relies on; `WorkflowRuntime.__init__` sets these attributes."""

    config: CreRuntimeConfig
    _db: Database
    _box: SecretBox
    _session: aiohttp.ClientSession
    _backend_key: str | None
    _don: Any
    _backend_signer: Any
    w3: AsyncWeb3
    forwarder: Any
    sub0: Any
    vault: Any
    ct: Any
    usdc: Any
    chain_id: int | None
    wallet: Wallet | None

    # -- plumbing -----------------------------------------------------------------------------------

    async def _report(self, receiver, kind: int, body: bytes, label: str) -> str:
        """Sign a report with the DON key and deliver it through the forwarder; the tx hash."""
        assert self.wallet is not None
        report = abi_encode(["uint8", "bytes"], [kind, body])
        metadata = b""
        report_id = keccak(abi_encode(["address", "bytes", "bytes"], [receiver.address, metadata, report]))
        signature = self._don.sign_message(encode_defunct(primitive=report_id)).signature
        result = await self.wallet.transact(self.forwarder.functions.report(receiver.address, metadata, report,
                                                                            bytes(signature)), label)
        if not result.ok or result.tx_hash is None:
            raise ActionError(f"{label} failed: {result.error or 'no transaction hash'}")
        return result.tx_hash

    def _vault_typed(self, primary: str, fields: list, message: dict) -> dict:
        return typed("PredictionVault", self.vault.address, self._known_chain_id(), primary, fields, message)

    def _known_chain_id(self) -> int:
        """The chain id read at start: signed typed data names it."""
        if self.chain_id is None:
            raise ActionError("the workflow runtime is not connected to its chain yet")
        return self.chain_id

    def _don_quote(self, market: str, outcome: int, buy: bool, quantity: int, cost: int, user: str, nonce: int,
                   deadline: int) -> str:
        message = {"marketId": bytes.fromhex(market[2:]), "outcomeIndex": outcome, "buy": buy, "quantity": quantity,
                   "tradeCostUsdc": cost, "user": user, "nonce": nonce, "deadline": deadline}
        return _hex(self._don.sign_message(encode_typed_data(full_message=self._vault_typed(
            "DONQuote", DON_QUOTE, message))).signature)

    def _recover_user(self, market: str, outcome: int, buy: bool, quantity: int, max_cost: int, nonce: int,
                      deadline: int, signature: str) -> str:
        message = {"marketId": bytes.fromhex(market[2:]), "outcomeIndex": outcome, "buy": buy, "quantity": quantity,
                   "maxCostUsdc": max_cost, "nonce": nonce, "deadline": deadline}
        try:
            return Account.recover_message(encode_typed_data(full_message=self._vault_typed(
                "UserTrade", USER_TRADE, message)), signature=signature)
        except Exception as exc:  # noqa: BLE001 - eth_account raises many unrelated types for a malformed signature
            raise ActionError(f"invalid userSignature: {exc}") from None

    async def _callback(self, action: str, body: dict[str, Any]) -> None:
        path = CALLBACK_PATHS.get(action)
        if not path or not self.config.backend_url:
            return
        await self._backend("POST", path, body)

    async def _backend(self, method: str, path: str, body: Any = None) -> Any:
        url = self.config.backend_url.rstrip("/") + path if self.config.backend_url else None
        if url is None:
            raise ActionError("backend_url is not configured")
        headers = {"x-api-key": self._backend_key} if self._backend_key else {}
        try:
            async with self._session.request(method, url, json=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=10)) as resp:
                data = await resp.json(content_type=None, loads=safejson.loads)
                if resp.status >= 300:
                    log.warning("cre.backend_failed", method=method, path=path, status=resp.status)
                    if method == "GET":
                        raise ActionError(f"backend answered HTTP {resp.status} for {path}")
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("cre.backend_failed", method=method, path=path, error=str(exc)[:200])
            if method == "GET":
                raise ActionError(f"backend unreachable for {path}: {exc}") from None
            return None
