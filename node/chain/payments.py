"""Getting paid: which subscriptions pay what this node asks, and whether they can pay now.

Two checks, at two moments, because a subscription's terms are fixed when it is created but its
consumer's wallet changes every block:
- `PaymentPolicy.check` (pure, when a subscription is first seen): the terms. A paid subscription
  needs this node's payment wallet; every container of its chain that names a price must accept
  its token, and the amount must cover the sum of their minimums (as the Infernet node reads
  `accepted_payments`); a subscription with a verifier needs a last container that generates
  proofs. A subscription that fails is never worked on: never delivered at a loss.
- `PaymentChecker.can_pay` (chain views, before each interval's container runs): the consumer's
  Wallet is one the WalletFactory made, allows the subscription owner to spend the amount and
  holds it; for a verified subscription, this node's own Wallet can lock the amount as
  collateral, as the Coordinator requires. What these views cannot see (locked balances) the
  simulation of `deliverCompute` catches before anything is sent (`PAYMENT_ERRORS`).

The contracts are the Infernet SDK's (or ours, written to the same interface); the few views used
here are declared inline so the node reads any deployment of that interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.codec import Subscription

# Reverts of deliverCompute that mean "this subscription cannot pay (now)": skipped, not sent.
PAYMENT_ERRORS = {"InsufficientFunds", "InsufficientAllowance", "InvalidWallet", "UnsupportedVerifierToken"}


def _view(name: str, inputs: Sequence[tuple[str, str]], output: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "stateMutability": "view",
            "inputs": [{"name": n, "type": t} for n, t in inputs], "outputs": [{"name": "", "type": output}]}


REGISTRY_ABI = [_view(name, (), "address") for name in ("COORDINATOR", "INBOX", "READER", "FEE", "WALLET_FACTORY")]
WALLET_FACTORY_ABI = [
    _view("isValidWallet", [("wallet", "address")], "bool"),
    {"type": "function", "name": "createWallet", "stateMutability": "nonpayable",
     "inputs": [{"name": "initialOwner", "type": "address"}], "outputs": [{"name": "", "type": "address"}]},
    {"type": "event", "name": "WalletCreated", "anonymous": False,
     "inputs": [{"name": "caller", "type": "address", "indexed": True},
                {"name": "owner", "type": "address", "indexed": True},
                {"name": "wallet", "type": "address", "indexed": False}]},
]
WALLET_ABI = [
    _view("allowance", [("spender", "address"), ("token", "address")], "uint256"),
    _view("owner", (), "address"),
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "spender", "type": "address"}, {"name": "token", "type": "address"},
                {"name": "amount", "type": "uint256"}], "outputs": []},
    {"type": "function", "name": "withdraw", "stateMutability": "nonpayable",
     "inputs": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}], "outputs": []},
]
ERC20_ABI = [_view("balanceOf", [("account", "address")], "uint256")]


@dataclass(frozen=True)
class Skip:
    """Why a subscription (or one interval of it) is not served. `kind` is a fixed word (a
    metric label); `reason` is the sentence for the log and the deliveries view."""

    kind: str
    reason: str


class PaymentPolicy:
    def __init__(self, accepted: Mapping[str, Mapping[str, int]], proofs: Mapping[str, bool],
                 payment_address: str | None) -> None:
        self._accepted = {cid: {t.lower(): amount for t, amount in prices.items()} for cid, prices in accepted.items()}
        self._proofs = dict(proofs)
        self._payment_address = payment_address

    def check(self, sub: Subscription, pipeline: Sequence[str]) -> Skip | None:
        token = sub.payment_token.lower()
        if sub.payment_amount > 0 and not self._payment_address:
            return Skip("no_payment_wallet", "the subscription pays, and this node has no payment wallet "
                                             "(chain.wallet.payment_address)")
        for cid in pipeline:
            prices = self._accepted.get(cid) or {}
            if prices and sub.payment_amount == 0:
                return Skip("below_minimum", f"container {cid} charges for its work and the subscription pays nothing")
            if prices and token not in prices:
                return Skip("token_not_accepted", f"container {cid} does not accept token {sub.payment_token}")
        minimum = sum((self._accepted.get(cid) or {}).get(token, 0) for cid in pipeline)
        if sub.payment_amount < minimum:
            return Skip("below_minimum", f"payment {sub.payment_amount} is below the minimum {minimum} "
                                         f"of token {sub.payment_token} for {','.join(pipeline)}")
        if requires_proof(sub) and not self._proofs.get(pipeline[-1], False):
            return Skip("needs_proof", f"the subscription has a verifier and container {pipeline[-1]} "
                                       "does not generate proofs")
        return None


def requires_proof(sub: Subscription) -> bool:
    return int(sub.verifier, 16) != 0


class PaymentChecker:
    """Chain views on the wallets of a paid subscription (async web3)."""

    def __init__(self, w3: Any, wallet_factory: str, node_address: str, payment_address: str | None) -> None:
        self._w3 = w3
        self._factory = w3.eth.contract(address=wallet_factory, abi=WALLET_FACTORY_ABI)
        self._node = node_address
        self._payment_address = payment_address

    async def is_valid_wallet(self, address: str) -> bool:
        return bool(await self._factory.functions.isValidWallet(address).call())

    async def _balance(self, holder: str, token: str) -> int:
        if int(token, 16) == 0:
            return await self._w3.eth.get_balance(holder)
        erc20 = self._w3.eth.contract(address=token, abi=ERC20_ABI)
        return await erc20.functions.balanceOf(holder).call()

    async def _allowance(self, wallet: str, spender: str, token: str) -> int:
        contract = self._w3.eth.contract(address=wallet, abi=WALLET_ABI)
        return await contract.functions.allowance(spender, token).call()

    async def can_pay(self, sub: Subscription) -> Skip | None:
        if sub.payment_amount == 0:
            return None
        amount, token = sub.payment_amount, sub.payment_token
        if not await self.is_valid_wallet(sub.wallet):
            return Skip("consumer_cannot_pay", f"consumer wallet {sub.wallet} was not made by the WalletFactory")
        allowance = await self._allowance(sub.wallet, sub.owner, token)
        if allowance < amount:
            return Skip("consumer_cannot_pay", f"consumer wallet {sub.wallet} allows {sub.owner} {allowance} "
                                               f"of token {token}, the subscription needs {amount}")
        balance = await self._balance(sub.wallet, token)
        if balance < amount:
            return Skip("consumer_cannot_pay", f"consumer wallet {sub.wallet} holds {balance} of token {token}, "
                                               f"the subscription needs {amount}")
        if requires_proof(sub):
            assert self._payment_address is not None  # PaymentPolicy refused paid subscriptions without one
            collateral = await self._allowance(self._payment_address, self._node, token)
            held = await self._balance(self._payment_address, token)
            if collateral < amount or held < amount:
                return Skip("no_collateral", f"a verified subscription locks {amount} of token {token} in this "
                                             f"node's wallet {self._payment_address}, which allows {collateral} "
                                             f"and holds {held} (node-daemon wallet approve / fund it)")
        return None
