"""Market lifecycle actions of the workflow runtime (part of `WorkflowRuntime`): creating (also
from the backend's list), seeding, reading, staking, redeeming and resolving markets, and the
settlement that takes its payouts from the backend."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from node.cre.workflow import lmsr
from node.cre.workflow.errors import ActionError
from node.cre.workflow.models import (
    BackendMarket,
    CreateMarketAction,
    CreateMarketsFromBackendAction,
    GetMarketAction,
    RedeemAction,
    ResolveMarketAction,
    RunSettlementAction,
    SeedAction,
    StakeAction,
    full_signature,
)
from node.cre.workflow.runtime_plumbing import REDEEM, RuntimePlumbing, _hex, typed


class MarketActions(RuntimePlumbing):
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

    async def _do_createMarket(self, a: CreateMarketAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
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

    async def _do_getMarket(self, a: GetMarketAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
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
        data = typed("Sub0", self.sub0.address, self._known_chain_id(), "Redeem", REDEEM, message)
        signature = full_signature(a.signature)
        try:
            signer = Account.recover_message(encode_typed_data(full_message=data), signature=signature)
        except Exception:  # noqa: BLE001 - eth_account raises many unrelated types for a malformed signature
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

    async def _do_resolveMarket(self, a: ResolveMarketAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        return {"status": "ok", "result": "resolveMarket",
                "txHash": await self._resolve(a.questionId, [int(p) for p in a.payouts])}

    async def _do_runSettlement(self, a: RunSettlementAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        market = quote(a.marketId, safe="")  # one path segment (the model allows nothing to escape)
        resolution = await self._backend("GET", f"/api/cre/markets/{market}/resolution")
        payouts = (resolution or {}).get("payouts")
        if not isinstance(payouts, list) or len(payouts) < 2:
            raise ActionError("backend resolution has no payouts list")
        tx_hash = await self._resolve(a.questionId, [int(p) for p in payouts])
        await self._backend("POST", f"/api/cre/markets/{market}/resolved",
                            {"marketId": a.marketId, "questionId": a.questionId, "payouts": [str(p) for p in payouts],
                             "txHash": tx_hash})
        return {"status": "ok", "result": "runSettlement", "txHash": tx_hash, "questionId": a.questionId}

    async def _do_createMarketsFromBackend(self, a: CreateMarketsFromBackendAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        given = a.markets is not None
        markets = a.markets if a.markets is not None else [BackendMarket.model_validate(m) for m in
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
