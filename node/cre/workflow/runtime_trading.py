"""The trading actions of the workflow runtime (part of `WorkflowRuntime`): DON quotes, user-signed
and batched trades executed on the vault, LMSR pricing, and confidential trades signed with an
agent's key."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data

from node.cre.workflow import lmsr
from node.cre.workflow.errors import ActionError
from node.cre.workflow.models import (
    ConfidentialTradeAction,
    LmsrPricingAction,
    QuoteAction,
    TradeItem,
    TradeTerms,
    full_signature,
)
from node.cre.workflow.runtime_plumbing import USER_TRADE, ZERO, RuntimePlumbing, _hex


class TradeActions(RuntimePlumbing):
    if TYPE_CHECKING:  # from AgentActions, its sibling in WorkflowRuntime
        async def _agent_key(self, agent_id: str) -> str: ...

    async def _trade(self, market: str, outcome: int, buy: bool, item: TradeTerms, signature: str,
                     user: str | None = None) -> tuple[str, dict[str, Any]]:
        """Execute one trade; (tx hash, the DON-signed quote it executed, for the callback)."""
        quantity, cost, max_cost = int(item.quantity), int(item.tradeCostUsdc), int(item.cost_cap)
        nonce, deadline = int(item.nonce), int(item.deadline)
        user_sig = full_signature(signature)
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

    # -- trading ------------------------------------------------------------------------------------

    async def _do_quote(self, a: QuoteAction) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        market = a.questionId
        if a.trades:
            tx_hashes, errors, quotes = [], [], []
            for index, item in enumerate(a.trades):
                try:
                    tx_hash, quote = await self._trade(market, a.outcomeIndex, a.side, item, item.userSignature)
                    tx_hashes.append(tx_hash)
                    quotes.append(quote)
                except ActionError as exc:
                    errors.append(f"trade[{index}]: {exc}")
            return {"txHashes": tx_hashes, **({"errors": errors} if errors else {})}, quotes
        terms = a.terms()
        if a.userSignature:
            tx_hash, quote = await self._trade(market, a.outcomeIndex, a.side, terms, a.userSignature)
            return {"txHash": tx_hash}, [quote]
        signature = self._don_quote(market, a.outcomeIndex, a.side, int(terms.quantity), int(terms.tradeCostUsdc),
                                    ZERO, int(terms.nonce), int(terms.deadline))
        quote = {"questionId": market, "outcomeIndex": a.outcomeIndex, "buy": a.buy, "quantity": a.quantity,
                 "tradeCostUsdc": a.tradeCostUsdc, "nonce": a.nonce, "deadline": a.deadline, "signature": signature}
        return quote, [quote]

    _do_order = _do_buy = _do_sell = _do_quote

    async def _do_lmsrPricing(self, a: LmsrPricingAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        shares = await self.vault.functions.getShares(bytes.fromhex(a.marketId[2:])).call()
        if not shares:
            raise ActionError("market is not seeded on the vault")
        if a.outcomeIndex >= len(shares):
            raise ActionError(f"outcomeIndex {a.outcomeIndex} out of range ({len(shares)} outcomes)")
        cost = lmsr.trade_cost_usdc(list(shares), float(a.bParameter), a.outcomeIndex, int(a.quantity), a.buy)
        deadline = int(time.time()) + self.config.quote_ttl
        signature = self._don_quote(a.marketId, a.outcomeIndex, a.buy, int(a.quantity), cost, ZERO, 0, deadline)
        return {"tradeCostUsdc": str(cost), "donSignature": signature, "deadline": str(deadline), "nonce": "0"}

    async def _do_executeConfidentialTrade(self, a: ConfidentialTradeAction) -> dict[str, Any]:  # noqa: N802 - the seed's action name, dispatched as _do_<action>
        key = await self._agent_key(a.agentId)
        agent = Account.from_key(key)
        market = a.marketId
        assert market is not None  # validation sets it (from questionId) or refuses the action
        message = {"marketId": bytes.fromhex(market[2:]), "outcomeIndex": a.outcomeIndex, "buy": a.buy,
                   "quantity": int(a.quantity), "maxCostUsdc": int(a.cost_cap), "nonce": int(a.nonce),
                   "deadline": int(a.deadline)}
        user_sig = _hex(agent.sign_message(encode_typed_data(full_message=self._vault_typed(
            "UserTrade", USER_TRADE, message))).signature)
        item = TradeItem(userSignature=user_sig, quantity=a.quantity, tradeCostUsdc=a.tradeCostUsdc,
                         maxCostUsdc=a.maxCostUsdc, nonce=a.nonce, deadline=a.deadline)
        tx_hash, _ = await self._trade(market, a.outcomeIndex, a.buy, item, user_sig, user=agent.address)
        return {"txHash": tx_hash}

    _do_execute_confidential_trade = _do_executeConfidentialTrade
