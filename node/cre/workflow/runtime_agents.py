"""Agent keys and token approvals of the workflow runtime (part of `WorkflowRuntime`): agent keys
are created once, sealed at rest and never replaced; approvals are signed by an agent or the
backend signer and broadcast or handed back per the seed."""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from typing import Any

from Crypto.Cipher import AES
from eth_account import Account
from eth_utils import to_checksum_address

from node.chain import codec
from node.cre.workflow.errors import ActionConflict, ActionError
from node.cre.workflow.models import ApproveConditionalTokenAction, ApproveErc20Action, CreateAgentKeyAction
from node.cre.workflow.runtime_plumbing import RuntimePlumbing, _hex, log


class AgentActions(RuntimePlumbing):
    async def _agent_key(self, agent_id: str) -> str:
        row = await self._db.fetchone("SELECT key_sealed FROM cre_agent_keys WHERE agent_id = ?", (agent_id,))
        if row is None:
            raise ActionError(f"no agent key for agentId {agent_id!r}")
        return self._box.open(row[0])

    # -- agents and approvals ---------------------------------------------------------------------------

    async def _do_createAgentKey(self, a: CreateAgentKeyAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        agent = Account.create(extra_entropy=(a.entropy or "") + os.urandom(16).hex())
        key_hex = agent.key.hex()
        # Never replace an agent's key: funds sent to its address would be stranded.
        try:
            await self._db.execute("INSERT INTO cre_agent_keys (agent_id, address, key_sealed, created_at)"
                                   " VALUES (?, ?, ?, ?)",
                                   (a.agentId, agent.address, self._box.seal(key_hex), time.time()))
        except sqlite3.IntegrityError:
            raise ActionConflict(f"agentId {a.agentId!r} already has a key") from None
        blob = ""
        if self.config.tee_master_key is not None:
            master = bytes.fromhex(self.config.tee_master_key.get_secret_value().removeprefix("0x"))
            nonce = os.urandom(12)
            ciphertext, tag = AES.new(master, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(bytes.fromhex(
                key_hex.removeprefix("0x")))
            blob = base64.urlsafe_b64encode(nonce + ciphertext + tag).rstrip(b"=").decode()
        out: dict[str, Any] = {"address": agent.address, "encryptedKeyBlob": blob}
        funding = self.config.funding
        if funding is not None and self._backend_signer is not None:
            fees = await self._fees()
            funder_nonce = a.funderNonce if a.funderNonce is not None else \
                await self.w3.eth.get_transaction_count(self._backend_signer.address, "pending")
            eth_tx = {"to": agent.address, "value": funding.eth_wei, "gas": 21_000, "nonce": funder_nonce,
                      "chainId": self.chain_id, **fees}
            out["signedEthTransfer"] = _hex(self._backend_signer.sign_transaction(eth_tx).raw_transaction)
            approve = await self.usdc.functions.approve(self.vault.address, funding.usdc_allowance).build_transaction(
                {"from": agent.address, "nonce": 0, "gas": 80_000, "chainId": self.chain_id, **fees})
            out["signedErc20"] = _hex(agent.sign_transaction(approve).raw_transaction)
            ct_tx = await self.ct.functions.setApprovalForAll(self.vault.address, True).build_transaction(
                {"from": agent.address, "nonce": 1, "gas": 80_000, "chainId": self.chain_id, **fees})
            out["signedCT"] = _hex(agent.sign_transaction(ct_tx).raw_transaction)
        log.info("cre.agent_created", agent_id=a.agentId, address=agent.address, funded="signedEthTransfer" in out)
        return out

    async def _fees(self) -> dict[str, int]:
        block = await self.w3.eth.get_block("latest")
        tip = await self.w3.eth.max_priority_fee
        return {"maxFeePerGas": 2 * block["baseFeePerGas"] + tip, "maxPriorityFeePerGas": tip}

    async def _signer(self, kind: str, agent_id: str | None) -> Any:
        if kind == "agent":
            return Account.from_key(await self._agent_key(agent_id or ""))
        if self._backend_signer is None:
            raise ActionError("no backend signer configured (backend_signer_key)")
        return self._backend_signer

    async def _sign_or_send(self, account: Any, fn: Any, nonce: str | None, broadcast: bool, result: str) -> dict:
        fees = await self._fees()
        tx_nonce = int(nonce) if nonce is not None else await self.w3.eth.get_transaction_count(account.address,
                                                                                               "pending")
        tx = await fn.build_transaction({"from": account.address, "nonce": tx_nonce, "gas": 100_000,
                                         "chainId": self.chain_id, **fees})
        raw = account.sign_transaction(tx).raw_transaction
        signed = _hex(raw)
        out = {"status": "ok", "result": result, "signedTx": signed, "signerAddress": account.address,
               "broadcastRequired": not broadcast}
        if broadcast:
            tx_hash = await self.w3.eth.send_raw_transaction(raw)
            receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
            if receipt["status"] != 1:
                raise ActionError(f"{result} reverted")
            out["txHash"] = _hex(tx_hash)
        return out

    async def _do_approveErc20(self, a: ApproveErc20Action) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        account = await self._signer(a.signer, a.agentId)
        token = self.w3.eth.contract(address=to_checksum_address(a.token or self.usdc.address), abi=codec.abi("MockUSDC"))
        fn = token.functions.approve(to_checksum_address(a.spender), int(a.amount))
        # seed: userInvoke true = return the signed tx for the client to broadcast
        return await self._sign_or_send(account, fn, a.nonce, broadcast=not a.userInvoke, result="approveErc20")

    async def _do_approveConditionalToken(self, a: ApproveConditionalTokenAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        account = await self._signer(a.signer, a.agentId)
        ct = self.w3.eth.contract(address=to_checksum_address(a.conditionalTokens or self.ct.address),
                                  abi=codec.abi("ConditionalTokens"))
        fn = ct.functions.setApprovalForAll(to_checksum_address(a.operator), a.approved)
        # seed: userInvoke false = return the signed tx for the client to broadcast
        return await self._sign_or_send(account, fn, a.nonce, broadcast=a.userInvoke,
                                        result="approveConditionalToken")
