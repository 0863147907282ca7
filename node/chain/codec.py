"""On-chain encodings shared by the listener, processor and delegated subscriptions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eth_abi import encode as abi_encode
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address

CANCELLED = 2**32 - 1
# Custom errors of the Coordinator, by 4-byte selector (as the Infernet node maps them).
ERRORS = {
    keccak(text=f"{name}()")[:4].hex(): name
    for name in ("InvalidWallet", "IntervalMismatch", "IntervalCompleted", "NodeRespondedAlready",
                 "SubscriptionNotFound", "NotSubscriptionOwner", "SubscriptionCompleted", "SubscriptionNotActive",
                 "SignerMismatch", "SignatureExpired", "UnsupportedPayment", "NotCoordinator",
                 # payments (Coordinator and Wallet)
                 "InsufficientFunds", "InsufficientAllowance", "UnsupportedVerifierToken", "UnauthorizedVerifier",
                 "ProofRequestNotFound", "TransferFailed", "Reentrancy")
}
# Reverts that mean "nothing left for this node to do for that interval".
SETTLED_ERRORS = {"IntervalCompleted", "NodeRespondedAlready", "SubscriptionCompleted"}


def abi(name: str) -> list[dict[str, Any]]:
    return json.loads(resources.files("node.chain.abi").joinpath(f"{name}.json").read_text())["abi"]


def bytecode(name: str) -> str:
    return json.loads(resources.files("node.chain.abi").joinpath(f"{name}.json").read_text())["bytecode"]


def container_id(containers: list[str] | tuple[str, ...]) -> bytes:
    """keccak256(abi.encode(string "a,b,c")), the on-chain id of a container chain."""
    return keccak(abi_encode(["string"], [",".join(containers)]))


@dataclass(frozen=True)
class Subscription:
    id: int
    owner: ChecksumAddress  # from_tuple checksums it: web3 takes it as a contract address as is
    active_at: int
    period: int
    frequency: int
    redundancy: int
    container_id: bytes
    lazy: bool
    verifier: str
    payment_amount: int
    payment_token: str
    wallet: str

    @classmethod
    def from_tuple(cls, sub_id: int, raw: tuple | list) -> Subscription:
        return cls(sub_id, to_checksum_address(raw[0]), raw[1], raw[2], raw[3], raw[4], bytes(raw[5]), raw[6],
                   raw[7], raw[8], raw[9], raw[10])

    @property
    def exists(self) -> bool:
        return int(self.owner, 16) != 0

    @property
    def cancelled(self) -> bool:
        return self.active_at == CANCELLED

    def interval_at(self, timestamp: int) -> int:
        if self.period == 0:
            return 1
        return (timestamp - self.active_at) // self.period + 1

    def as_tuple(self) -> tuple:
        return (self.owner, self.active_at, self.period, self.frequency, self.redundancy, self.container_id,
                self.lazy, self.verifier, self.payment_amount, self.payment_token, self.wallet)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "active_at": self.active_at, "period": self.period,
                "frequency": self.frequency, "redundancy": self.redundancy,
                "container_id": "0x" + self.container_id.hex(), "lazy": self.lazy}


def _hex_bytes(value: Any) -> bytes:
    if value is None:  # as the Infernet node reads it: a missing part is empty
        return b""
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)


def serialize_output(output: Any, encoding: str = "json") -> tuple[bytes, bytes, bytes]:
    """(input, output, proof) for deliverCompute from a container's JSON output.

    The Infernet convention: an object with the five hex keys raw_input, processed_input,
    raw_output, processed_output, proof (with or without 0x) becomes
    input = abi.encode(bytes, bytes)(raw_input, processed_input), output likewise, proof raw.
    Anything else: input and proof empty, output = abi.encode(string)(text) where text is
    - `json` (the default): the output as compact JSON with sorted keys, which any consumer can
      parse (`{"a":1,"ok":true}`);
    - `infernet`: what the Infernet node sends, Python's str() of the parsed output
      (`{'a': 1, 'ok': True}`), for consumers written against it."""
    keys = ("raw_input", "processed_input", "raw_output", "processed_output", "proof")
    if isinstance(output, dict) and all(k in output for k in keys):
        try:
            parts = {k: _hex_bytes(output[k]) for k in keys}
        except ValueError:
            parts = None
        if parts is not None:
            return (abi_encode(["bytes", "bytes"], [parts["raw_input"], parts["processed_input"]]),
                    abi_encode(["bytes", "bytes"], [parts["raw_output"], parts["processed_output"]]),
                    parts["proof"])
    text = str(output) if encoding == "infernet" else json.dumps(output, separators=(",", ":"), sort_keys=True)
    return b"", abi_encode(["string"], [text]), b""


def decode_revert(error: Exception | str) -> str:
    """A readable name for a revert: the Coordinator's custom error, or the message."""
    text = str(error)
    data = getattr(error, "data", None)
    candidates = [str(data) if data else "", text]
    for candidate in candidates:
        lowered = candidate.lower()
        for selector, name in ERRORS.items():
            if selector in lowered:
                return name
    return text[:300]


def delegate_key(owner: str, nonce: int) -> bytes:
    """The Coordinator's `delegateCreatedIds` key of a delegated subscription: keccak(owner, nonce)."""
    return keccak(abi_encode(["address", "uint32"], [owner, nonce]))


def delegate_typed_data(chain_id: int, coordinator: str, nonce: int, expiry: int, sub: dict[str, Any]) -> dict:
    """EIP-712 typed data of a delegated subscription (domain InfernetCoordinator / 1)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
            ],
            "DelegateSubscription": [
                {"name": "nonce", "type": "uint32"}, {"name": "expiry", "type": "uint32"},
                {"name": "sub", "type": "Subscription"},
            ],
            "Subscription": [
                {"name": "owner", "type": "address"}, {"name": "activeAt", "type": "uint32"},
                {"name": "period", "type": "uint32"}, {"name": "frequency", "type": "uint32"},
                {"name": "redundancy", "type": "uint16"}, {"name": "containerId", "type": "bytes32"},
                {"name": "lazy", "type": "bool"}, {"name": "verifier", "type": "address"},
                {"name": "paymentAmount", "type": "uint256"}, {"name": "paymentToken", "type": "address"},
                {"name": "wallet", "type": "address"},
            ],
        },
        "primaryType": "DelegateSubscription",
        "domain": {"name": "InfernetCoordinator", "version": "1", "chainId": chain_id,
                   "verifyingContract": coordinator},
        "message": {"nonce": nonce, "expiry": expiry, "sub": sub},
    }
