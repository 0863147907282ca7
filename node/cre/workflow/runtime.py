"""The local workflow runtime: executes the seed-001 actions itself, the way the CRE workflow
would, against our contracts on a chain (reports signed by the node's DON key and delivered
through the ReportForwarder), then POSTs each result to `backend_url` per the seed's table
(failures logged, never failing the action)."""

from __future__ import annotations

import base64
import hmac
import os
import sqlite3
import time
from typing import Any

import aiohttp
from Crypto.Cipher import AES
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider

from node.chain import codec
from node.chain.wallet import Wallet
from node.cre.config import CreRuntimeConfig
from node.cre.workflow import lmsr
from node.cre.workflow.errors import ActionConflict, ActionError
from node.cre.workflow.models import (
    CALLBACK_PATHS,
    ApproveConditionalTokenAction,
    ApproveErc20Action,
    BackendMarket,
    ConfidentialTradeAction,
    CreateAgentKeyAction,
    CreateMarketAction,
    CreateMarketsFromBackendAction,
    GetMarketAction,
    LmsrPricingAction,
    QuoteAction,
    RedeemAction,
    ResolveMarketAction,
    RunSettlementAction,
    SeedAction,
    StakeAction,
    TradeItem,
    full_signature,
    response_model,
)
from node.gateway.crypto import SecretBox
from node.logs import get_logger
from node.server import safejson
from node.storage import Database, Migration

log = get_logger(__name__)

ZERO = "0x" + "00" * 20
MIGRATIONS = [Migration("cre_workflow.0001", """
    CREATE TABLE cre_agent_keys (agent_id TEXT PRIMARY KEY, address TEXT NOT NULL, key_sealed TEXT NOT NULL,
                                 created_at REAL NOT NULL)
""")]

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


class WorkflowRuntime:
    def __init__(self, config: CreRuntimeConfig, db: Database, box: SecretBox, session: aiohttp.ClientSession,
                 backend_api_key: str | None) -> None:
        self.config = config
        self._db = db
        self._box = box
        self._session = session
        self._backend_key = backend_api_key
        key = config.api_key.get_secret_value() if config.api_key is not None else ""
        self._api_key = key.encode() if key else None
        self.w3 = AsyncWeb3(AsyncHTTPProvider(config.rpc_url, request_kwargs={"timeout": 15}))
        self._don = Account.from_key(config.don_key.get_secret_value())
        self._transmitter_key = (config.transmitter_key or config.don_key).get_secret_value()
        self._backend_signer = (Account.from_key(config.backend_signer_key.get_secret_value())
                                if config.backend_signer_key else None)
        c = lambda name, address: self.w3.eth.contract(address=to_checksum_address(address), abi=codec.abi(name))  # noqa: E731
        self.forwarder = c("ReportForwarder", config.forwarder_address)
        self.sub0 = c("Sub0", config.sub0_address)
        self.vault = c("PredictionVault", config.vault_address)
        self.ct = c("ConditionalTokens", config.conditional_tokens_address)
        self.usdc = c("MockUSDC", config.usdc_address)
        self.chain_id: int | None = None
        self.wallet: Wallet | None = None

    async def start(self) -> None:
        if self._api_key is None:
            log.warning("cre.runtime_unauthenticated",
                        detail="cre.runtime.allow_unauthenticated is true: anyone who reaches /api/cre/workflow can "
                               "have the DON key sign trades and reports, resolve markets and use backend and "
                               "agent keys")
        await self._db.migrate(MIGRATIONS)
        self.chain_id = await self.w3.eth.chain_id
        self.wallet = Wallet(self.w3, self._transmitter_key, 8_000_000, self.chain_id)
        log.info("cre.runtime_ready", don=self._don.address, transmitter=self.wallet.address, chain_id=self.chain_id)

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
        if not result.ok:
            raise ActionError(f"{label} failed: {result.error}")
        return result.tx_hash

    def _vault_typed(self, primary: str, fields: list, message: dict) -> dict:
        return typed("PredictionVault", self.vault.address, self.chain_id, primary, fields, message)

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
        except Exception as exc:  # noqa: BLE001
            raise ActionError(f"invalid userSignature: {exc}") from None

    async def _trade(self, market: str, outcome: int, buy: bool, item: TradeItem | QuoteAction,
                     user: str | None = None) -> tuple[str, dict[str, Any]]:
        """Execute one trade; (tx hash, the DON-signed quote it executed, for the callback)."""
        quantity, cost, max_cost = int(item.quantity), int(item.tradeCostUsdc), int(item.maxCostUsdc)
        nonce, deadline = int(item.nonce), int(item.deadline)
        user_sig = full_signature(item.userSignature)
        if user is None:
            user = self._recover_user(market, outcome, buy, quantity, max_cost, nonce, deadline, user_sig)
        if deadline < time.time():
            raise ActionError("deadline has passed")
        expected = await self.vault.functions.nonces(user, bytes.fromhex(market[2:])).call()
        if nonce != expected:
            raise ActionError(f"nonce {nonce} is not the user's next nonce ({expected})")
        don_sig = self._don_quote(market, outcome, buy, quantity, cost, user, nonce, deadline)
        trade = (bytes.fromhex(market[2:]), outcome, buy, quantity, cost, max_cost, user, nonce, deadline,
                 bytes.fromhex(user_sig[2:]), bytes.fromhex(don_sig[2:]))
        body = abi_encode(["(bytes32,uint256,bool,uint256,uint256,uint256,address,uint256,uint256,bytes,bytes)"],
                          [trade])
        tx_hash = await self._report(self.vault, 0x05, body, f"executeTrade({market[:10]},{user})")
        quote = {"questionId": market, "outcomeIndex": outcome, "buy": buy, "quantity": str(quantity),
                 "tradeCostUsdc": str(cost), "nonce": str(nonce), "deadline": str(deadline), "signature": don_sig,
                 "user": user, "txHash": tx_hash}
        return tx_hash, quote

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

    # -- dispatch -----------------------------------------------------------------------------------

    def authorize(self, *given: Any) -> None:
        """Passes if any of the caller's keys (bearer token, payload apiKey) is ours; each is
        compared in constant time."""
        if self._api_key is None:  # allow_unauthenticated, warned at start
            return
        matches = [hmac.compare_digest(g.encode(), self._api_key) for g in given if isinstance(g, str)]
        if not any(matches):
            raise PermissionError("missing or invalid apiKey")

    async def execute(self, action: Any) -> dict[str, Any]:
        """Run an action; the caller has been authorised (`authorize`)."""
        handler = getattr(self, "_do_" + action.action.replace("-", "_"))
        result = await handler(action)
        if isinstance(result, tuple):  # (response, callback bodies)
            result, callbacks = result
        elif action.action == "createAgentKey":
            callbacks = [{"agentId": action.agentId, **result}]
        else:
            callbacks = [result]
        response_model(action, result).model_validate(result)  # the seed's shape, or a bug here
        for body in callbacks:
            await self._callback(action.action, body)
        return result

    # -- trading ------------------------------------------------------------------------------------

    async def _do_quote(self, a: QuoteAction) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        market = a.questionId
        if a.trades:
            tx_hashes, errors, quotes = [], [], []
            for index, item in enumerate(a.trades):
                try:
                    tx_hash, quote = await self._trade(market, a.outcomeIndex, a.buy, item)
                    tx_hashes.append(tx_hash)
                    quotes.append(quote)
                except ActionError as exc:
                    errors.append(f"trade[{index}]: {exc}")
            return {"txHashes": tx_hashes, **({"errors": errors} if errors else {})}, quotes
        if a.userSignature:
            tx_hash, quote = await self._trade(market, a.outcomeIndex, a.buy, a)
            return {"txHash": tx_hash}, [quote]
        signature = self._don_quote(market, a.outcomeIndex, a.buy, int(a.quantity), int(a.tradeCostUsdc), ZERO,
                                    int(a.nonce), int(a.deadline))
        quote = {"questionId": market, "outcomeIndex": a.outcomeIndex, "buy": a.buy, "quantity": a.quantity,
                 "tradeCostUsdc": a.tradeCostUsdc, "nonce": a.nonce, "deadline": a.deadline, "signature": signature}
        return quote, [quote]

    _do_order = _do_buy = _do_sell = _do_quote

    async def _do_lmsrPricing(self, a: LmsrPricingAction) -> dict[str, Any]:  # noqa: N802 - the seed's name
        shares = await self.vault.functions.getShares(bytes.fromhex(a.marketId[2:])).call()
        if not shares:
            raise ActionError("market is not seeded on the vault")
        if a.outcomeIndex >= len(shares):
            raise ActionError(f"outcomeIndex {a.outcomeIndex} out of range ({len(shares)} outcomes)")
        cost = lmsr.trade_cost_usdc(list(shares), float(a.bParameter), a.outcomeIndex, int(a.quantity), a.buy)
        deadline = int(time.time()) + self.config.quote_ttl
        signature = self._don_quote(a.marketId, a.outcomeIndex, a.buy, int(a.quantity), cost, ZERO, 0, deadline)
        return {"tradeCostUsdc": str(cost), "donSignature": signature, "deadline": str(deadline), "nonce": "0"}

    async def _agent_key(self, agent_id: str) -> str:
        row = await self._db.fetchone("SELECT key_sealed FROM cre_agent_keys WHERE agent_id = ?", (agent_id,))
        if row is None:
            raise ActionError(f"no agent key for agentId {agent_id!r}")
        return self._box.open(row[0])

    async def _do_executeConfidentialTrade(self, a: ConfidentialTradeAction) -> dict[str, Any]:  # noqa: N802
        key = await self._agent_key(a.agentId)
        agent = Account.from_key(key)
        message = {"marketId": bytes.fromhex(a.marketId[2:]), "outcomeIndex": a.outcomeIndex, "buy": a.buy,
                   "quantity": int(a.quantity), "maxCostUsdc": int(a.maxCostUsdc), "nonce": int(a.nonce),
                   "deadline": int(a.deadline)}
        user_sig = _hex(agent.sign_message(encode_typed_data(full_message=self._vault_typed(
            "UserTrade", USER_TRADE, message))).signature)
        item = TradeItem(userSignature=user_sig, quantity=a.quantity, tradeCostUsdc=a.tradeCostUsdc,
                         maxCostUsdc=a.maxCostUsdc, nonce=a.nonce, deadline=a.deadline)
        tx_hash, _ = await self._trade(a.marketId, a.outcomeIndex, a.buy, item, user=agent.address)
        return {"txHash": tx_hash}

    _do_execute_confidential_trade = _do_executeConfidentialTrade

    # -- agents and approvals ---------------------------------------------------------------------------

    async def _do_createAgentKey(self, a: CreateAgentKeyAction) -> dict[str, Any]:  # noqa: N802
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
        signed = _hex(account.sign_transaction(tx).raw_transaction)
        out = {"status": "ok", "result": result, "signedTx": signed, "signerAddress": account.address,
               "broadcastRequired": not broadcast}
        if broadcast:
            tx_hash = await self.w3.eth.send_raw_transaction(signed)
            receipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
            if receipt["status"] != 1:
                raise ActionError(f"{result} reverted")
            out["txHash"] = _hex(tx_hash)
        return out

    async def _do_approveErc20(self, a: ApproveErc20Action) -> dict[str, Any]:  # noqa: N802
        account = await self._signer(a.signer, a.agentId)
        token = self.w3.eth.contract(address=to_checksum_address(a.token or self.usdc.address), abi=codec.abi("MockUSDC"))
        fn = token.functions.approve(to_checksum_address(a.spender), int(a.amount))
        # seed: userInvoke true = return the signed tx for the client to broadcast
        return await self._sign_or_send(account, fn, a.nonce, broadcast=not a.userInvoke, result="approveErc20")

    async def _do_approveConditionalToken(self, a: ApproveConditionalTokenAction) -> dict[str, Any]:  # noqa: N802
        account = await self._signer(a.signer, a.agentId)
        ct = self.w3.eth.contract(address=to_checksum_address(a.conditionalTokens or self.ct.address),
                                  abi=codec.abi("ConditionalTokens"))
        fn = ct.functions.setApprovalForAll(to_checksum_address(a.operator), a.approved)
        # seed: userInvoke false = return the signed tx for the client to broadcast
        return await self._sign_or_send(account, fn, a.nonce, broadcast=a.userInvoke,
                                        result="approveConditionalToken")

    # -- markets ------------------------------------------------------------------------------------------

    async def _create_market(self, question: str, oracle: str, duration: int, slots: int, oracle_type: int,
                             market_type: int, creator: str) -> dict[str, Any]:
        creator = to_checksum_address(creator)
        nonce = await self.sub0.functions.marketNonce(creator).call()
        question_id = _hex(await self.sub0.functions.questionIdFor(creator, question, slots, nonce).call())
        body = abi_encode(["string", "address", "uint64", "uint256", "uint8", "uint8", "address"],
                          [question, to_checksum_address(oracle), duration, slots, oracle_type, market_type, creator])
        tx_hash = await self._report(self.sub0, 0x00, body, f"createMarket({question[:30]})")
        condition_id = _hex(await self.ct.functions.getConditionId(self.sub0.address, bytes.fromhex(question_id[2:]),
                                                                    slots).call())
        return {"questionId": question_id, "conditionId": condition_id, "createMarketTxHash": tx_hash}

    async def _do_createMarket(self, a: CreateMarketAction) -> dict[str, Any]:  # noqa: N802
        out = await self._create_market(a.question, a.oracle, a.duration, a.outcomeSlotCount, a.oracleType,
                                        a.marketType, a.creatorAddress)
        if a.amountUsdc:
            out["seedTxHash"] = (await self._seed(out["questionId"], int(a.amountUsdc), "1"))["txHash"]
        return out

    async def _seed(self, question_id: str, amount: int, b: str) -> dict[str, Any]:
        """The transmitter funds the vault with `amount` USDC, then the seed report splits it."""
        assert self.wallet is not None
        funded = await self.wallet.transact(self.usdc.functions.transfer(self.vault.address, amount), "fund vault")
        if not funded.ok:
            raise ActionError(f"funding the vault failed: {funded.error}")
        b_units = int(float(b) * lmsr.SHARE)
        tx_hash = await self._report(self.vault, 0x01, abi_encode(["bytes32", "uint256", "uint256"],
                                                                  [bytes.fromhex(question_id[2:]), amount, b_units]),
                                     f"seed({question_id[:10]})")
        return {"status": "ok", "result": "seed", "txHash": tx_hash, "questionId": question_id}

    async def _do_seed(self, a: SeedAction) -> dict[str, Any]:
        return await self._seed(a.questionId, int(a.amountUsdc), a.bParameter)

    async def _do_getMarket(self, a: GetMarketAction) -> dict[str, Any]:  # noqa: N802
        qid = bytes.fromhex(a.questionId[2:])
        m = await self.sub0.functions.getMarket(qid).call()
        if int(m[1], 16) == 0:
            raise ActionError(f"market {a.questionId} not found")
        shares = await self.vault.functions.getShares(qid).call()
        b = await self.vault.functions.liquidity(qid).call()
        condition = m[3]
        den = await self.ct.functions.payoutDenominator(condition).call()
        return {"questionId": a.questionId, "question": m[0], "creator": m[1], "oracle": m[2],
                "conditionId": _hex(condition), "outcomeSlotCount": m[4], "createdAt": m[5], "closesAt": m[6],
                "oracleType": m[7], "marketType": m[8], "resolved": m[9],
                "supplies": [str(x) for x in shares], "bParameter": str(b),
                "seededUsdc": str(await self.vault.functions.seeded(qid).call()),
                "prices": lmsr.prices(list(shares), b / lmsr.SHARE) if shares and b else None,
                "payoutDenominator": str(den)}

    async def _do_stake(self, a: StakeAction) -> dict[str, Any]:
        body = abi_encode(["bytes32", "bytes32", "uint256[]", "address", "uint256", "address"],
                          [bytes.fromhex(a.questionId[2:]), bytes.fromhex(a.parentCollectionId[2:]),
                           [int(p) for p in a.partition], to_checksum_address(a.token), int(a.amount),
                           to_checksum_address(a.owner)])
        return {"status": "ok", "result": "stake", "txHash": await self._report(self.sub0, 0x02, body, "stake")}

    async def _do_redeem(self, a: RedeemAction) -> dict[str, Any]:
        message = {"owner": to_checksum_address(a.owner), "conditionId": bytes.fromhex(a.conditionId[2:]),
                   "indexSets": a.indexSets, "token": to_checksum_address(a.token), "deadline": int(a.deadline),
                   "nonce": int(a.nonce)}
        data = typed("Sub0", self.sub0.address, self.chain_id, "Redeem", REDEEM, message)
        signature = full_signature(a.signature)
        try:
            signer = Account.recover_message(encode_typed_data(full_message=data), signature=signature)
        except Exception:  # noqa: BLE001
            signer = None
        if signer is None or signer.lower() != a.owner.lower():
            raise ActionError("signature is not the owner's Redeem signature")
        if int(a.deadline) < time.time():
            raise ActionError("deadline has passed")
        body = abi_encode(["bytes32", "bytes32", "uint256[]", "address", "address", "uint256", "uint256", "bytes"],
                          [bytes.fromhex(a.parentCollectionId[2:]), bytes.fromhex(a.conditionId[2:]), a.indexSets,
                           to_checksum_address(a.token), to_checksum_address(a.owner), int(a.deadline), int(a.nonce),
                           bytes.fromhex(signature[2:])])
        return {"status": "ok", "result": "redeem", "txHash": await self._report(self.sub0, 0x03, body, "redeem")}

    async def _resolve(self, question_id: str, payouts: list[int]) -> str:
        body = abi_encode(["bytes32", "uint256[]"], [bytes.fromhex(question_id[2:]), payouts])
        return await self._report(self.sub0, 0x04, body, f"resolve({question_id[:10]})")

    async def _do_resolveMarket(self, a: ResolveMarketAction) -> dict[str, Any]:  # noqa: N802
        return {"status": "ok", "result": "resolveMarket",
                "txHash": await self._resolve(a.questionId, [int(p) for p in a.payouts])}

    async def _do_runSettlement(self, a: RunSettlementAction) -> dict[str, Any]:  # noqa: N802
        resolution = await self._backend("GET", f"/api/cre/markets/{a.marketId}/resolution")
        payouts = (resolution or {}).get("payouts")
        if not isinstance(payouts, list) or len(payouts) < 2:
            raise ActionError("backend resolution has no payouts list")
        tx_hash = await self._resolve(a.questionId, [int(p) for p in payouts])
        await self._backend("POST", f"/api/cre/markets/{a.marketId}/resolved",
                            {"marketId": a.marketId, "questionId": a.questionId, "payouts": [str(p) for p in payouts],
                             "txHash": tx_hash})
        return {"status": "ok", "result": "runSettlement", "txHash": tx_hash, "questionId": a.questionId}

    async def _do_createMarketsFromBackend(self, a: CreateMarketsFromBackendAction) -> dict[str, Any]:  # noqa: N802
        given = a.markets is not None
        markets = a.markets if given else [BackendMarket.model_validate(m) for m in
                                           (await self._backend("GET", "/api/cre/agent-markets") or {}).get("markets", [])]
        created, errors = [], []
        for index, m in enumerate(markets):
            try:
                out = await self._create_market(m.question, m.oracle, m.duration, m.outcomeSlotCount, m.oracleType,
                                                m.marketType, m.creatorAddress)
                item = {"id": m.id, **out}
                created.append(item)
                if not given:
                    await self._backend("POST", "/api/cre/markets/onchain-created", item)
            except ActionError as exc:
                errors.append(f"market[{index}]: {exc}")
        if given and created:
            await self._backend("POST", "/api/cre/markets/onchain-created", {"markets": created})
        return {"status": "ok" if not errors else "partial", "created": len(created), "markets": created,
                **({"errors": errors} if errors else {})}
