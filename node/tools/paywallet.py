"""`node-daemon wallet`: the node's payment Wallet, made and set up through the Infernet contracts.

The Coordinator pays a paid subscription only into a Wallet its WalletFactory made, so an operator
needs one before the node can be paid: `wallet create` makes it (owned by the node's own account
unless `--owner` says otherwise) and prints the config line. A subscription with a verifier also
locks its amount in the node's Wallet as collateral, spent on the node's behalf by the node's
account, so `wallet approve` lets that account lock up to an amount of a token. `wallet show`
prints what the Wallet holds and allows. Everything is read from the node's config file (RPC, key,
Registry); like `deploy`, this is a one-shot tool on web3's blocking API.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_utils import to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from node.chain.payments import ERC20_ABI, REGISTRY_ABI, WALLET_ABI, WALLET_FACTORY_ABI
from node.config import load_config
from node.tools.deploy import DeployError, connect, send


class PaymentWalletTool:
    def __init__(self, w3: Web3, chain_id: int, key: str, registry: str, out: Callable[[str], None] = print) -> None:
        self.w3, self.chain_id, self.out = w3, chain_id, out
        self.account = Account.from_key(key)
        reg = w3.eth.contract(address=to_checksum_address(registry), abi=REGISTRY_ABI)
        if not w3.eth.get_code(reg.address):
            raise DeployError(f"chain.registry_address {reg.address}: no contract there on chain {chain_id}")
        self.factory = w3.eth.contract(address=reg.functions.WALLET_FACTORY().call(), abi=WALLET_FACTORY_ABI)

    def create(self, owner: str | None) -> str:
        owner = to_checksum_address(owner or self.account.address)
        receipt = send(self.w3, self.account, self.factory.functions.createWallet(owner), "createWallet", out=self.out)
        events = self.factory.events.WalletCreated().process_receipt(receipt, errors=DISCARD)  # the Wallet's own events
        if not events:
            raise DeployError("createWallet: no WalletCreated event in the receipt")
        address = to_checksum_address(events[0]["args"]["wallet"])
        self.out(f"payment wallet {address} (owner {owner}, made by WalletFactory {self.factory.address})")
        self.out("put it in the config:\n  chain:\n    wallet:\n      payment_address: \"" + address + "\"")
        return address

    def _wallet(self, address: str | None) -> Any:
        if not address:
            raise DeployError("chain.wallet.payment_address is not set in the config (make one: wallet create)")
        if not self.factory.functions.isValidWallet(address).call():
            raise DeployError(f"{address} is not a Wallet made by the WalletFactory {self.factory.address}")
        return self.w3.eth.contract(address=to_checksum_address(address), abi=WALLET_ABI)

    def approve(self, address: str | None, token: str, amount: int, spender: str | None) -> None:
        wallet = self._wallet(address)
        owner = wallet.functions.owner().call()
        if owner.lower() != self.account.address.lower():
            raise DeployError(f"the Wallet's owner is {owner}, not the node's account {self.account.address}: "
                              "approve from the owner")
        spender = to_checksum_address(spender or self.account.address)
        send(self.w3, self.account, wallet.functions.approve(spender, to_checksum_address(token), amount), "approve",
             out=self.out)
        self.out(f"{spender} may now lock or spend {amount} of token {token} from {wallet.address}")

    def show(self, address: str | None, token: str) -> None:
        wallet = self._wallet(address)
        token = to_checksum_address(token)
        if int(token, 16) == 0:
            balance = self.w3.eth.get_balance(wallet.address)
        else:
            balance = self.w3.eth.contract(address=token, abi=ERC20_ABI).functions.balanceOf(wallet.address).call()
        allowance = wallet.functions.allowance(self.account.address, token).call()
        self.out(f"wallet {wallet.address}: owner {wallet.functions.owner().call()}")
        self.out(f"token {token}: balance {balance}; the node's account {self.account.address} may lock {allowance}")


def wallet_main(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    chain = load_config(args.config).chain
    endpoints = chain.endpoints()  # rpc_url may be a list: the tool talks to the first RPC
    if not (endpoints and chain.registry_address and chain.wallet.private_key):
        raise DeployError(f"{args.config}: chain.rpc_url, chain.registry_address and chain.wallet.private_key "
                          "are needed")
    w3, chain_id = connect(endpoints[0].url)
    tool = PaymentWalletTool(w3, chain_id, chain.wallet.private_key.get_secret_value(), chain.registry_address, out)
    if args.action == "create":
        tool.create(args.owner)
    elif args.action == "approve":
        if args.amount is None:
            raise DeployError("approve needs --amount")
        tool.approve(chain.wallet.payment_address, args.token, args.amount, args.spender)
    else:
        tool.show(chain.wallet.payment_address, args.token)
