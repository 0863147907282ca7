"""`node-daemon request`: the user side of the chain from the command line.

A subscription made through the ExampleConsumer (one-shot `requestCompute` or recurring
`subscribe`), or a delegated subscription signed with EIP-712 exactly as the Infernet client
signs it and sent to a node's `POST /api/jobs`; then followed to its deliveries, each printed
with its decoded output. With `--pay`, the subscription is paid (`requestPaidCompute` /
`createPaidSubscription`): the Coordinator pays only from a Wallet its WalletFactory made, so the
tool makes one for the user, funds it and lets the consumer spend from it, and afterwards shows
what the node's payment wallet received. A one-shot command line tool: web3's blocking API.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address
from web3 import Web3

from node.chain.codec import abi, container_id, delegate_typed_data
from node.chain.payments import ERC20_ABI
from node.tools.deploy import DeployError, Deployment, connect, load_key, send
from node.tools.paywallet import PaymentWalletTool

ZERO = "0x" + "00" * 20
CREATED = "0x" + keccak(text="SubscriptionCreated(uint32)").hex()
ERC20_TRANSFER_ABI = ERC20_ABI + [
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]}]


@dataclass(frozen=True)
class Payment:
    """What a paid subscription pays: `amount` of `token` (ZERO: ETH) per delivery, from `wallet`."""

    token: str
    amount: int
    wallet: str


def describe_output(output: bytes) -> str:
    """A delivery's output for people: the JSON the node encoded (abi string), and when that is a
    hex string (containers get on-chain inputs as hex), the text it spells."""
    if not output:
        return "(empty)"
    try:
        text = abi_decode(["string"], output)[0]
    except Exception:  # noqa: BLE001 - not an abi string: some other encoding
        return "0x" + output.hex()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    shown = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        try:
            decoded = bytes.fromhex(value).decode("utf-8")
            if decoded.isprintable():
                shown += f" (hex of text: {decoded!r})"
        except ValueError:
            pass
    return shown


@dataclass(frozen=True)
class Delivery:
    subscription: int
    interval: int
    redundancy: int
    node: str
    output: bytes


class RequestClient:
    """Makes subscriptions through the ExampleConsumer and follows them to their deliveries."""

    def __init__(self, w3: Web3, dep: Deployment, key: str, out: Callable[[str], None] = print,
                 progress: Callable[[str], None] | None = None) -> None:
        self.w3 = w3
        self.key = key
        self.dep = dep
        self.account = Account.from_key(key)
        self.coordinator = w3.eth.contract(address=dep.address("Coordinator"), abi=abi("Coordinator"))
        self.consumer = w3.eth.contract(address=dep.address("ExampleConsumer"), abi=abi("ExampleConsumer"))
        self.out = out
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))

    # -- subscriptions through the consumer ---------------------------------------------------------

    def subscribe(self, containers: str, data: bytes, redundancy: int, frequency: int, period: int,
                  payment: Payment | None = None) -> int:
        one_shot = frequency == 1 and period == 0
        if payment is None and one_shot:
            fn = self.consumer.functions.requestCompute(containers, data, redundancy)
        elif payment is None:
            fn = self.consumer.functions.subscribe(containers, frequency, period, redundancy, data)
        elif one_shot:
            fn = self.consumer.functions.requestPaidCompute(containers, data, redundancy, payment.token,
                                                            payment.amount, payment.wallet, ZERO)
        else:
            fn = self.consumer.functions.createPaidSubscription(containers, frequency, period, redundancy, False,
                                                                payment.token, payment.amount, payment.wallet, ZERO)
        receipt = send(self.w3, self.account, fn, "the subscription", timeout=120)
        tx_hash = receipt["transactionHash"]
        for entry in receipt["logs"]:
            if entry["topics"] and "0x" + bytes(entry["topics"][0]).hex() == CREATED:
                sub_id = int.from_bytes(bytes(entry["topics"][1]), "big")
                self.out(f"subscription {sub_id} created (tx {tx_hash.to_0x_hex()}, block {receipt['blockNumber']})")
                return sub_id
        raise DeployError(f"no SubscriptionCreated event in {tx_hash.to_0x_hex()}")

    # -- paying ---------------------------------------------------------------------------------------

    def balance(self, holder: str, token: str) -> int:
        if int(token, 16) == 0:
            return self.w3.eth.get_balance(to_checksum_address(holder))
        erc20 = self.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI)
        return erc20.functions.balanceOf(to_checksum_address(holder)).call()

    def prepare_payment(self, token: str, amount: int, total: int) -> Payment:
        """A consumer Wallet for this subscription: made through the WalletFactory (owned by the user),
        funded with `total` (ETH sent, the devnet's MockToken minted, any other token transferred from
        the user's balance) and allowing the ExampleConsumer, the subscription's owner, to spend it."""
        token = to_checksum_address(token)
        is_eth = int(token, 16) == 0
        mock = "MockToken" in self.dep.contracts and token == self.dep.address("MockToken")
        unit = "wei" if is_eth else f"of token {token}"
        if not is_eth and not self.w3.eth.get_code(token):
            raise DeployError(f"--token {token}: no contract at that address on chain {self.w3.eth.chain_id}")
        if not mock:  # check before making anything: a Wallet nobody can fund is no use
            held = self.balance(self.account.address, token)
            if held < total:
                raise DeployError(f"--pay needs funding: the subscription pays {total} {unit} in all, and your "
                                  f"account {self.account.address} holds {held}; fund it and run again")
        tool = PaymentWalletTool(self.w3, self.w3.eth.chain_id, self.key, self.dep.address("Registry"),
                                 out=lambda line: None)
        wallet = tool.create(None)
        if is_eth:
            send(self.w3, self.account, wallet, "fund the wallet", value=total, timeout=120)
            how = "sent"
        elif mock:
            mock_token = self.w3.eth.contract(address=token, abi=abi("MockToken"))
            send(self.w3, self.account, mock_token.functions.mint(wallet, total), "mint MockToken", timeout=120)
            how = "minted (the devnet's MockToken)"
        else:
            erc20 = self.w3.eth.contract(address=token, abi=ERC20_TRANSFER_ABI)
            send(self.w3, self.account, erc20.functions.transfer(wallet, total), "fund the wallet", timeout=120)
            how = "transferred"
        tool.approve(wallet, token, total, self.consumer.address)
        self.out(f"consumer wallet {wallet} (yours, made by the WalletFactory): {total} {unit} {how}; "
                 f"the ExampleConsumer may spend it, {amount} per delivery")
        return Payment(token, amount, wallet)

    # -- delegated subscriptions (EIP-712, POST /api/jobs) ------------------------------------------

    def delegated(self, node_url: str, containers: str, data: Any, redundancy: int, frequency: int, period: int,
                  nonce: int | None = None, expiry_seconds: int = 600, timeout: float = 60.0) -> int:
        """Sign and send; returns the subscription id once a node has created it on chain."""
        signer = self.consumer.functions.getSigner().call()
        if signer.lower() != self.account.address.lower():
            raise DeployError(f"the consumer's signer is {signer}, not {self.account.address}: "
                              "sign with the consumer's signer key")
        if nonce is None:
            nonce = secrets.randbelow(2**31) + 1
        owner = self.consumer.address
        active_at = self.w3.eth.get_block("latest")["timestamp"]
        cid = container_id(containers.split(","))
        expiry = int(time.time()) + expiry_seconds
        sub = {"owner": owner, "activeAt": active_at, "period": period, "frequency": frequency,
               "redundancy": redundancy, "containerId": cid, "lazy": False, "verifier": ZERO, "paymentAmount": 0,
               "paymentToken": ZERO, "wallet": ZERO}
        typed = delegate_typed_data(self.w3.eth.chain_id, self.coordinator.address, nonce, expiry, sub)
        signed = self.account.sign_message(encode_typed_data(full_message=typed))
        body = {"subscription": {"owner": owner, "active_at": active_at, "period": period, "frequency": frequency,
                                 "redundancy": redundancy, "containers": "0x" + cid.hex(), "lazy": False,
                                 "verifier": ZERO, "payment_amount": 0, "payment_token": ZERO, "wallet": ZERO},
                "signature": {"nonce": nonce, "expiry": expiry, "v": signed.v, "r": signed.r, "s": signed.s},
                "data": data}
        status, answer = _post_json(node_url.rstrip("/") + "/api/jobs", body)
        if status != 200:
            raise DeployError(f"the node refused the delegated subscription: HTTP {status} {answer}")
        self.out(f"delegated subscription sent to {node_url} (owner {owner}, nonce {nonce})")
        key = keccak(self.w3.codec.encode(["address", "uint32"], [owner, nonce]))
        start = time.monotonic()
        next_note = start + 2
        while True:
            sub_id = self.coordinator.functions.delegateCreatedIds(key).call()
            if sub_id:
                self.out(f"subscription {sub_id} is on chain (created by the node's first delivery)")
                return sub_id
            now = time.monotonic()
            if now - start > timeout:
                raise DeployError(f"no node created the delegated subscription within {timeout:g}s "
                                  "(see the node's log: chain.delegated_*)")
            if now >= next_note:
                self.progress(f"waiting for a node to create the subscription ({now - start:.0f}s)")
                next_note = now + 2
            time.sleep(0.25)

    # -- following deliveries -----------------------------------------------------------------------

    def follow(self, sub_id: int, wanted: int, timeout: float) -> list[Delivery]:
        """Wait for `wanted` deliveries of `sub_id`, printing each as it lands."""
        functions = self.consumer.functions
        seen: list[Delivery] = []
        scanned_to: int | None = None  # deliveries are appended: after the first scan, read only new ones
        start = time.monotonic()
        next_note = start + 2
        while True:
            length = functions.deliveriesLength().call()  # first: our deliveries below it are <= count
            count = functions.deliveryCount(sub_id).call()
            if count > len(seen):
                new: list[Delivery] = []
                if scanned_to is None:  # newest first, until all counted ones are found
                    for index in range(length - 1, -1, -1):
                        if len(seen) + len(new) >= count:
                            break
                        new += self._delivery(index, sub_id)
                else:
                    for index in range(scanned_to, length):
                        new += self._delivery(index, sub_id)
                scanned_to = length
                for d in sorted(new, key=lambda d: (d.interval, d.redundancy)):
                    seen.append(d)
                    self.out(f"delivery {len(seen)}/{wanted}: subscription {sub_id} interval {d.interval} "
                             f"by node {d.node}")
                    self.out(f"output: {describe_output(d.output)}")
            if len(seen) >= wanted:
                return seen
            now = time.monotonic()
            if now - start > timeout:
                raise DeployError(f"subscription {sub_id}: {len(seen)} of {wanted} deliveries after {timeout:g}s "
                                  "(does a node serve this container chain? its log says why not)")
            if now >= next_note:
                self.progress(f"waiting for deliveries of subscription {sub_id}: {len(seen)}/{wanted} "
                              f"({now - start:.0f}s)")
                next_note = now + 2
            time.sleep(0.25)

    def _delivery(self, index: int, sub_id: int) -> list[Delivery]:
        raw = self.consumer.functions.deliveries(index).call()
        return [Delivery(raw[0], raw[1], raw[2], raw[3], bytes(raw[5]))] if raw[0] == sub_id else []


def _post_json(url: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text
    except (urllib.error.URLError, OSError) as exc:
        raise DeployError(f"cannot reach the node at {url}: {getattr(exc, 'reason', exc)}") from None


def node_payment_address(node_url: str, timeout: float = 5.0) -> str | None:
    """The node's payment wallet as its /info names it (`chain.payment_address`); None when the node
    cannot be asked or has none."""
    try:
        with urllib.request.urlopen(node_url.rstrip("/") + "/info", timeout=timeout) as resp:
            address = ((json.loads(resp.read()) or {}).get("chain") or {}).get("payment_address")
    except (OSError, ValueError, AttributeError):
        return None
    return to_checksum_address(address) if isinstance(address, str) and is_address(address) else None


def resolve_token(token: str, dep: Deployment) -> str:
    """--token: `eth` (the zero address), `mock` (the devnet's MockToken) or a token address."""
    if token.lower() == "eth":
        return ZERO
    if token.lower() == "mock":
        if "MockToken" not in dep.contracts:
            raise DeployError("--token mock: the addresses file has no MockToken (deploy with --what mocks or all)")
        return dep.address("MockToken")
    if not is_address(token):
        raise DeployError(f"--token {token!r}: give eth, mock or a token address (0x and 40 hex digits)")
    return to_checksum_address(token)


def request_main(args: Any, out: Callable[[str], None] = print) -> list[Delivery]:
    """The `request` command (argparse namespace from node.cli)."""
    dep = Deployment.load(Path(args.deployment))
    missing = [n for n in ("Coordinator", "ExampleConsumer") if n not in dep.contracts]
    if missing:
        raise DeployError(f"{args.deployment} has no {' or '.join(missing)}: deploy with --what infernet or all")
    rpc_url = args.rpc or dep.rpc_url
    w3, chain_id = connect(rpc_url)
    if chain_id != dep.chain_id:
        raise DeployError(f"{args.deployment} is for chain {dep.chain_id}, but {rpc_url} is chain {chain_id}")
    client = RequestClient(w3, dep, load_key(args.key), out)
    containers = ",".join(c.strip() for c in args.containers.split(",") if c.strip())
    if not containers:
        raise DeployError("--containers: give at least one container id")
    pay = getattr(args, "pay", None)
    if pay is not None and args.delegated:
        raise DeployError("--pay does not work with --delegated: a delegated subscription is paid by the consumer "
                          "contract's own Wallet; drop --delegated to pay from a Wallet of yours")
    payment, paid_to, before = None, None, 0
    if args.delegated:
        try:
            data = json.loads(args.input)
        except ValueError:
            data = args.input
        sub_id = client.delegated(args.node, containers, data, args.redundancy, args.frequency, args.period,
                                  args.nonce)
    else:
        if pay is not None:
            if pay <= 0:
                raise DeployError("--pay: give a positive amount (the token's smallest unit; wei for ETH)")
            token = resolve_token(getattr(args, "token", "eth"), dep)
            payment = client.prepare_payment(token, pay, pay * args.frequency * args.redundancy)
            paid_to = node_payment_address(args.node)
            if paid_to is None:
                client.progress(f"(no payment wallet from {args.node}/info: what the node receives is not shown)")
            else:
                before = client.balance(paid_to, token)
            if args.frequency > 1 or args.period > 0:
                client.progress("note: the ExampleConsumer's createPaidSubscription takes no input; intervals get "
                                "its last recurring input")
        sub_id = client.subscribe(containers, args.input.encode(), args.redundancy, args.frequency, args.period,
                                  payment)
    wanted = args.frequency * args.redundancy
    timeout = args.timeout + args.period * args.frequency
    deliveries = client.follow(sub_id, wanted, timeout)
    if payment is not None and paid_to is not None:
        after = client.balance(paid_to, payment.token)
        unit = "wei" if int(payment.token, 16) == 0 else f"of token {payment.token}"
        out(f"the node's payment wallet {paid_to} received {after - before} {unit} "
            f"(balance {before} -> {after}; paid {payment.amount * len(deliveries)}, less the protocol fee)")
    return deliveries
