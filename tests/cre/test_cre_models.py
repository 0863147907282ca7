"""The typed seed-001 action models: defaults and validation rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from node.cre.workflow.models import parse_action

Q = "0x" + "11" * 32
C = "0x" + "22" * 32
A = "0x" + "33" * 20
TRADE = {"questionId": Q, "conditionId": C, "outcomeIndex": 0, "quantity": "10", "tradeCostUsdc": "5", "nonce": "0",
         "deadline": "1735689600"}


def test_trade_defaults_and_forced_side():
    buy = parse_action({"action": "buy", **TRADE, "buy": False})
    assert buy.buy is True and buy.maxCostUsdc == "5"
    assert parse_action({"action": "sell", **TRADE}).buy is False
    with pytest.raises(ValidationError, match="buy"):
        parse_action({"action": "quote", **TRADE})  # quote/order must say which side
    with pytest.raises(ValidationError, match="maxCostUsdc must be >= tradeCostUsdc"):
        parse_action({"action": "order", **TRADE, "buy": True, "maxCostUsdc": "4"})
    batch = parse_action({"action": "order", **TRADE, "buy": True, "trades": [
        {"userSignature": "0x" + "ab" * 65, "quantity": "1", "tradeCostUsdc": "2", "nonce": "0", "deadline": "9"}]})
    assert batch.trades[0].maxCostUsdc == "2"


def test_numbers_are_decimal_strings_and_hex_is_checked():
    for bad in ({"quantity": "1.5"}, {"quantity": 10}, {"tradeCostUsdc": "-1"}, {"questionId": "0x1234"}):
        with pytest.raises(ValidationError):
            parse_action({"action": "buy", **TRADE, **bad})


def test_defaults_of_other_actions():
    pricing = parse_action({"action": "lmsrPricing", "marketId": Q, "outcomeIndex": 1, "quantity": "1"})
    assert pricing.bParameter == "1"
    assert parse_action({"action": "lmsrPricing", "marketId": Q, "outcomeIndex": 1, "quantity": "1",
                         "b": "25"}).bParameter == "25"
    stake = parse_action({"action": "stake", "questionId": Q, "partition": ["1", "2"], "token": A, "amount": "5",
                          "owner": A})
    assert stake.parentCollectionId == "0x" + "00" * 32
    redeem = parse_action({"action": "redeem", "parentCollectionId": Q, "conditionId": C, "indexSets": ["1", 2],
                           "token": A, "owner": A, "deadline": "1", "nonce": "0", "signature": "0x" + "ab" * 65})
    assert redeem.indexSets == [1, 2]
    trade = parse_action({"action": "execute-confidential-trade", "agentId": "a", "questionId": Q, "outcomeIndex": 0,
                          "buy": True, "quantity": "1", "tradeCostUsdc": "1", "nonce": "0", "deadline": "1"})
    assert trade.marketId == Q


def test_conditional_fields_and_unknown_input():
    with pytest.raises(ValidationError, match="agentId"):
        parse_action({"action": "approveErc20", "signer": "agent", "spender": A, "amount": "1", "userInvoke": True})
    assert parse_action({"action": "approveErc20", "signer": "backend", "spender": A, "amount": "1",
                         "userInvoke": True}).token is None
    with pytest.raises(ValidationError):
        parse_action({"action": "createMarket", "question": "q", "oracle": A, "duration": 1, "outcomeSlotCount": 2,
                      "oracleType": 4, "marketType": 0, "creatorAddress": A})
    # a field the seed does not name is ignored, as the JavaScript workflow ignores it
    assert parse_action({"action": "getMarket", "questionId": Q, "surprise": 1}).questionId == Q
    with pytest.raises(ValidationError):
        parse_action({"action": "launchRocket"})


def test_a_batch_written_from_the_seed_shares_only_market_and_side():
    item = {"userSignature": "0x" + "ab" * 65, "quantity": "1", "tradeCostUsdc": "2", "nonce": "0", "deadline": "9"}
    batch = parse_action({"action": "buy", "questionId": Q, "conditionId": C, "outcomeIndex": 0, "trades": [item]})
    assert batch.buy is True and batch.trades[0].maxCostUsdc == "2" and batch.quantity is None
    with pytest.raises(ValidationError, match="quantity"):  # without trades[] the top level is the trade
        parse_action({"action": "buy", "questionId": Q, "conditionId": C, "outcomeIndex": 0, "tradeCostUsdc": "1",
                      "nonce": "0", "deadline": "9"})
    with pytest.raises(ValidationError, match="tradeCostUsdc"):  # each item carries its terms
        parse_action({"action": "buy", "questionId": Q, "conditionId": C, "outcomeIndex": 0,
                      "trades": [{k: v for k, v in item.items() if k != "tradeCostUsdc"}]})


def test_entropy_is_hex_with_or_without_0x():
    for entropy in ("0xdeadbeef", "deadbeef", "DEADBEEF"):
        assert parse_action({"action": "createAgentKey", "agentId": "a", "entropy": entropy}).entropy == entropy
    with pytest.raises(ValidationError, match="entropy"):
        parse_action({"action": "createAgentKey", "agentId": "a", "entropy": "not-hex"})


def test_compact_eip2098_signatures_are_accepted_and_expanded():
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from node.cre.workflow.models import full_signature

    account = Account.create()
    for text in ("one", "two", "three", "four"):  # both y parities show up over a few messages
        signed = account.sign_message(encode_defunct(text=text))
        compact = signed.r.to_bytes(32, "big") + (((signed.v - 27) << 255) | signed.s).to_bytes(32, "big")
        full = full_signature("0x" + compact.hex())
        assert full == "0x" + bytes(signed.signature).hex()
        assert Account.recover_message(encode_defunct(text=text), signature=full) == account.address
    item = {"userSignature": "0x" + "ab" * 64, "quantity": "1", "tradeCostUsdc": "2", "nonce": "0", "deadline": "9"}
    assert parse_action({"action": "order", "buy": True, "questionId": Q, "conditionId": C, "outcomeIndex": 0,
                         **item}).userSignature == item["userSignature"]
    redeem = {"action": "redeem", "parentCollectionId": Q, "conditionId": C, "indexSets": [1], "token": A,
              "owner": A, "deadline": "1", "nonce": "0"}
    assert parse_action({**redeem, "signature": "0x" + "cd" * 64}).signature
    with pytest.raises(ValidationError, match="signature"):
        parse_action({**redeem, "signature": "0x" + "cd" * 63})
