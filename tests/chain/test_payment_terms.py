"""Which subscriptions a node serves for the pay it asks, and how it encodes output for a consumer
(in-process: the rules alone, no chain)."""

from __future__ import annotations

import json

import pytest
from eth_abi import decode as abi_decode

from node.chain.codec import Subscription, serialize_output
from node.chain.config import ChainConfig
from node.chain.payments import PaymentPolicy
from node.config import ConfigError, parse_config

ETH = "0x" + "00" * 20
USDC = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
VERIFIER = "0x" + "11" * 20
NODE_WALLET = "0x" + "22" * 20


def sub(amount: int = 0, token: str = ETH, verifier: str = ETH) -> Subscription:
    return Subscription(1, "0x" + "33" * 20, 0, 0, 1, 1, b"\0" * 32, False, verifier, amount, token, "0x" + "44" * 20)


def policy(payment_address: str | None = NODE_WALLET, proofs: bool = False) -> PaymentPolicy:
    accepted = {"llm": {ETH: 100, USDC: 5}, "post": {USDC: 2}, "free": {}}
    return PaymentPolicy(accepted, {"llm": proofs, "post": proofs, "free": False}, payment_address)


def test_a_container_without_prices_serves_free_subscriptions():
    assert policy().check(sub(), ["free"]) is None


def test_a_payment_at_the_sum_of_the_chain_minimums_is_served():
    assert policy().check(sub(7, USDC), ["llm", "post"]) is None
    assert policy().check(sub(100, ETH), ["llm"]) is None


def test_a_payment_below_the_minimum_is_skipped_with_the_minimum_named():
    skip = policy().check(sub(6, USDC), ["llm", "post"])
    assert skip is not None and skip.kind == "below_minimum"
    assert "6" in skip.reason and "7" in skip.reason


def test_a_token_one_container_of_the_chain_does_not_accept_is_skipped():
    skip = policy().check(sub(1_000, ETH), ["llm", "post"])
    assert skip is not None and skip.kind == "token_not_accepted" and "post" in skip.reason
    assert policy().check(sub(1_000, OTHER), ["llm"]).kind == "token_not_accepted"


def test_a_free_subscription_to_a_priced_container_is_skipped():
    assert policy().check(sub(), ["llm"]).kind == "below_minimum"


def test_a_paid_subscription_needs_the_nodes_payment_wallet():
    assert policy(payment_address=None).check(sub(100, ETH), ["llm"]).kind == "no_payment_wallet"
    assert policy(payment_address=None).check(sub(), ["free"]) is None


def test_a_subscription_with_a_verifier_needs_a_proof_generating_last_container():
    assert policy(proofs=False).check(sub(100, ETH, verifier=VERIFIER), ["llm"]).kind == "needs_proof"
    assert policy(proofs=True).check(sub(100, ETH, verifier=VERIFIER), ["llm"]) is None


def test_accepted_payments_are_validated_with_the_field_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"containers": [{"id": "a", "image": "x", "accepted_payments": {"0x12": 1}}]})
    assert "accepted_payments" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"containers": [{"id": "a", "image": "x", "accepted_payments": {ETH: -1}}]})
    assert "accepted_payments" in str(err.value)


def test_a_registry_alone_configures_the_chain_and_a_payment_wallet_needs_one():
    key = "0x" + "01" * 32
    ChainConfig(enabled=True, rpc_url="http://127.0.0.1:1", registry_address=USDC, wallet={"private_key": key})
    with pytest.raises(ValueError, match="registry_address"):
        ChainConfig(enabled=True, rpc_url="http://127.0.0.1:1", wallet={"private_key": key})
    with pytest.raises(ValueError, match="payment_address needs chain.registry_address"):
        ChainConfig(enabled=True, rpc_url="http://127.0.0.1:1", coordinator_address=USDC, reader_address=USDC,
                    wallet={"private_key": key, "payment_address": NODE_WALLET})


def test_output_is_compact_json_by_default_and_python_str_in_infernet_encoding():
    output = {"ok": True, "text": "hi", "n": None}
    _, encoded, _ = serialize_output(output)
    assert json.loads(abi_decode(["string"], encoded)[0]) == output
    assert abi_decode(["string"], encoded)[0] == '{"n":null,"ok":true,"text":"hi"}'
    _, encoded, _ = serialize_output(output, "infernet")
    assert abi_decode(["string"], encoded)[0] == "{'ok': True, 'text': 'hi', 'n': None}"


def test_the_five_key_form_passes_input_output_and_proof_through_in_both_encodings():
    output = {"raw_input": "0x01", "processed_input": "02", "raw_output": "0x03", "processed_output": "",
              "proof": "0xbeef"}
    for encoding in ("json", "infernet"):
        tx_input, tx_output, proof = serialize_output(output, encoding)
        assert abi_decode(["bytes", "bytes"], tx_input) == (b"\x01", b"\x02")
        assert abi_decode(["bytes", "bytes"], tx_output) == (b"\x03", b"")
        assert proof == b"\xbe\xef"
    _, _, proof = serialize_output(dict(output, proof=None))
    assert proof == b""
