"""The node gets paid: paid subscriptions in ETH and in an ERC-20, a verifier, and the ones it must
not serve, on anvil with the Infernet SDK's contract interface (our contracts; the same tests run
on Ritual's own compiled contracts when INFERNET_SDK_ARTIFACTS names a folder of them).

The node is configured with `registry_address` alone, its payment Wallet is made with
`node-daemon wallet create` and set up with `node-daemon wallet approve`, as an operator would.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import pytest
import yaml
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from node.chain.codec import container_id, delegate_typed_data

from tests.chain_helpers import KEYS, artifact
from tests.helpers import REPO, NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ETH = "0x" + "00" * 20
FEE_BPS = 500  # the deploy's protocol fee, charged on both sides of a payment
NODE_KEY, CONSUMER_KEY = KEYS[1], KEYS[2]
NODE = Account.from_key(NODE_KEY).address
CONSUMER_OWNER = Account.from_key(CONSUMER_KEY).address
PRICE_ETH, PRICE_TOKEN = 10**15, 50_000


@pytest.fixture(scope="module")
def other_token(dep):
    """An ERC-20 no container accepts."""
    mock = artifact("MockToken")
    receipt = dep.send(dep.w3.eth.contract(abi=mock["abi"], bytecode=mock["bytecode"]).constructor())
    return dep.w3.eth.contract(address=receipt["contractAddress"], abi=mock["abi"])


def wallet_cli(config_path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "node", "wallet", *args, "--config", str(config_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def chain_section(anvil, dep, payment_address: str | None = None) -> dict:
    wallet = {"private_key": NODE_KEY}
    if payment_address:
        wallet["payment_address"] = payment_address
    return {"enabled": True, "rpc_url": anvil.url, "registry_address": dep.registry.address,
            "trail_head_blocks": 0, "poll_interval": 0.2, "processor_tick": 0.2, "retry_backoff": 0.5,
            "wallet": wallet}


def containers(dep) -> list[dict]:
    return [
        container_entry("paid-echo", "echo", accepted_payments={ETH: PRICE_ETH, dep.token.address: PRICE_TOKEN}),
        container_entry("prover", "echo", env={"PROOFS": "1"}, generates_proofs=True,
                        accepted_payments={ETH: PRICE_ETH}),
    ]


@pytest.fixture(scope="module")
def payment_wallet(tmp_path_factory, anvil, dep) -> str:
    """Made, funded for collateral and approved through the wallet command, as an operator would."""
    config = tmp_path_factory.mktemp("wallet") / "config.yaml"
    config.write_text(yaml.safe_dump({"chain": chain_section(anvil, dep)}))
    out = wallet_cli(config, "create")
    address = next(word.strip('"') for line in out.splitlines() if "payment_address" in line
                   for word in line.split() if word.strip('"').startswith("0x"))
    assert dep.wallet_factory.functions.isValidWallet(address).call()
    config.write_text(yaml.safe_dump({"chain": chain_section(anvil, dep, address)}))
    wallet_cli(config, "approve", "--amount", str(10 * PRICE_ETH))
    dep.fund_wallet(address, ETH, 10 * PRICE_ETH)  # collateral for verified subscriptions
    assert "may lock 10000000000000000" in wallet_cli(config, "show")
    return address


@pytest.fixture(scope="module")
def node(docker_engine, tmp_path_factory, anvil, dep, payment_wallet):
    proc = NodeProcess(tmp_path_factory.mktemp("paid"), containers(dep),
                       {"chain": chain_section(anvil, dep, payment_wallet)})
    proc.start()
    yield proc
    proc.stop()
    proc.remove_containers()


def consumer_wallet(dep, token: str, amount: int, allowance: int) -> str:
    """A consumer Wallet holding `amount` of `token` that lets the consumer contract spend `allowance`."""
    wallet = dep.create_wallet(CONSUMER_KEY)
    dep.fund_wallet(wallet, token, amount)
    dep.approve(wallet, CONSUMER_KEY, dep.consumer.address, token, allowance)
    return wallet


def balance(dep, holder: str, token: str) -> int:
    if token == ETH:
        return dep.w3.eth.get_balance(holder)
    return dep.token.functions.balanceOf(holder).call()


def subscribe(dep, containers: str, token: str, amount: int, wallet: str, verifier: str = ETH,
              lazy: bool = False) -> int:
    receipt = dep.send(dep.consumer.functions.createPaidSubscription(
        containers, 1, 0, 1, lazy, token, amount, wallet, verifier), CONSUMER_KEY)
    return dep.created_id(receipt)


def wait_status(node, sub_id: int, status: str, timeout: float = 40) -> dict:
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = node.http().get(f"/api/chain/deliveries?subscription={sub_id}").json["deliveries"]
        if rows and rows[0]["status"] == status:
            return rows[0]
        time.sleep(0.3)
    raise AssertionError(f"subscription {sub_id}: {rows}, wanted {status}\n{node.log()[-3000:]}")


def node_sent(dep) -> int:
    return dep.w3.eth.get_transaction_count(NODE)


@pytest.mark.parametrize("token_name", ["eth", "erc20"])
def test_a_paid_subscription_is_delivered_and_the_node_is_paid_less_the_protocol_fee(node, dep, payment_wallet,
                                                                                     token_name):
    token = ETH if token_name == "eth" else dep.token.address
    amount = 2 * (PRICE_ETH if token_name == "eth" else PRICE_TOKEN)
    wallet = consumer_wallet(dep, token, amount, amount)
    before = balance(dep, payment_wallet, token)
    recipient_before = balance(dep, dep.fee.functions.FEE_RECIPIENT().call(), token)
    sub_id = subscribe(dep, "paid-echo", token, amount, wallet)
    assert dep.wait_deliveries(sub_id, 1)
    wait_status(node, sub_id, "delivered")
    assert node.http().get("/info").json["chain"]["payment_address"] == payment_wallet
    protocol = amount * FEE_BPS * 2 // 10_000
    assert balance(dep, payment_wallet, token) - before == amount - protocol
    if token != ETH:  # (the fee recipient is the deployer, who also pays gas in ETH)
        assert balance(dep, dep.fee.functions.FEE_RECIPIENT().call(), token) - recipient_before == protocol
    assert balance(dep, wallet, token) == 0


@pytest.mark.parametrize("case", ["below_minimum", "token_not_accepted"])
def test_a_payment_below_the_minimum_or_in_another_token_is_not_delivered(node, dep, other_token, case):
    if case == "below_minimum":
        token, amount = ETH, PRICE_ETH - 1
    else:
        token, amount = other_token.address, 10**9
    wallet = consumer_wallet(dep, token, amount, amount)
    sent = node_sent(dep)
    sub_id = subscribe(dep, "paid-echo", token, amount, wallet)
    wanted = f"event=chain.subscription_skipped subscription={sub_id} kind={case} "
    deadline = time.monotonic() + 20
    while wanted not in node.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert wanted in node.log()
    time.sleep(2)
    assert dep.deliveries(sub_id) == []
    assert node_sent(dep) == sent
    metrics = node.http().get("/metrics").body.decode()
    assert f'node_chain_skipped_total{{kind="{case}"}}' in metrics


def test_a_consumer_wallet_without_allowance_is_skipped_without_a_reverted_transaction(node, dep):
    wallet = consumer_wallet(dep, ETH, PRICE_ETH, 0)
    sent = node_sent(dep)
    sub_id = subscribe(dep, "paid-echo", ETH, PRICE_ETH, wallet)
    row = wait_status(node, sub_id, "skipped")
    assert "allows" in row["error"] and row["job_id"] is None  # the container did not run either
    assert dep.deliveries(sub_id) == []
    assert node_sent(dep) == sent  # nothing sent, so nothing reverted


def test_a_subscription_with_a_verifier_is_proven_and_the_verifier_and_node_are_paid(node, dep, payment_wallet):
    verifier_fee = 10**13
    dep.send(dep.verifier.functions.updateSupportedToken(ETH, True))
    dep.send(dep.verifier.functions.updateFee(ETH, verifier_fee))
    amount = 2 * PRICE_ETH
    wallet = consumer_wallet(dep, ETH, amount, amount)
    node_before = balance(dep, payment_wallet, ETH)
    verifier_before = balance(dep, dep.verifier.address, ETH)
    sub_id = subscribe(dep, "prover", ETH, amount, wallet, verifier=dep.verifier.address)
    [delivery] = dep.wait_deliveries(sub_id, 1)
    wait_status(node, sub_id, "delivered")
    inputs = dep.consumer.functions.getContainerInputs(sub_id, 1, 0, NODE).call()
    assert delivery["proof"] == hashlib.sha256(inputs).digest()
    assert dep.verifier.functions.lastProof().call() == delivery["proof"]
    protocol = amount * FEE_BPS * 2 // 10_000
    assert balance(dep, dep.verifier.address, ETH) - verifier_before == verifier_fee - verifier_fee * FEE_BPS // 10_000
    assert balance(dep, payment_wallet, ETH) - node_before == amount - protocol - verifier_fee


def test_a_lazy_paid_subscription_lands_in_the_inbox(node, dep, payment_wallet):
    wallet = consumer_wallet(dep, ETH, PRICE_ETH, PRICE_ETH)
    before = balance(dep, payment_wallet, ETH)
    sub_id = subscribe(dep, "paid-echo", ETH, PRICE_ETH, wallet, lazy=True)
    [delivery] = dep.wait_deliveries(sub_id, 1)
    assert delivery["output"] == b""
    item = dep.inbox.functions.read(delivery["container_id"], NODE, delivery["index"]).call()
    assert item[1] == sub_id and item[4] != b""
    assert balance(dep, payment_wallet, ETH) > before


def test_a_payment_address_the_factory_did_not_make_stops_the_node_at_start(docker_engine, tmp_path, anvil, dep):
    proc = NodeProcess(tmp_path, [], {"chain": chain_section(anvil, dep, Account.create().address)})
    proc.start_background()
    assert proc.proc.wait(60) == 1
    assert "is not a Wallet made by the WalletFactory" in proc.log()


def delegated_body(dep, wallet: str, amount: int, nonce: int, data) -> dict:
    """A paid delegated subscription signed by the consumer's signer, as the Infernet client sends it."""
    now = dep.w3.eth.get_block("latest")["timestamp"]
    sub = {"owner": dep.consumer.address, "activeAt": now, "period": 0, "frequency": 1, "redundancy": 1,
           "containerId": container_id(["paid-echo"]), "lazy": False, "verifier": ETH, "paymentAmount": amount,
           "paymentToken": ETH, "wallet": wallet}
    expiry = int(time.time()) + 600
    signed = Account.from_key(dep.signer_key).sign_message(encode_typed_data(full_message=delegate_typed_data(
        dep.w3.eth.chain_id, dep.coordinator.address, nonce, expiry, sub)))
    return {"subscription": {"owner": sub["owner"], "active_at": now, "period": 0, "frequency": 1, "redundancy": 1,
                             "containers": "0x" + sub["containerId"].hex(), "lazy": False, "verifier": ETH,
                             "payment_amount": amount, "payment_token": ETH, "wallet": wallet},
            "signature": {"nonce": nonce, "expiry": expiry, "v": signed.v, "r": signed.r, "s": signed.s},
            "data": data}


def test_a_paid_delegated_subscription_is_paid_and_one_that_cannot_pay_is_refused_with_402(node, dep,
                                                                                          payment_wallet):
    broke = consumer_wallet(dep, ETH, PRICE_ETH, 0)
    refused = node.http().post("/api/jobs", delegated_body(dep, broke, PRICE_ETH, 41, {"n": 1}))
    assert refused.status == 402 and "allows" in refused.json["error"]
    wallet = consumer_wallet(dep, ETH, PRICE_ETH, PRICE_ETH)
    before = balance(dep, payment_wallet, ETH)
    accepted = node.http().post("/api/jobs", delegated_body(dep, wallet, PRICE_ETH, 42, {"n": 2}))
    assert accepted.status == 200
    key = Web3.keccak(dep.w3.codec.encode(["address", "uint32"], [dep.consumer.address, 42]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dep.coordinator.functions.delegateCreatedIds(key).call() == 0:
        time.sleep(0.25)
    sub_id = dep.coordinator.functions.delegateCreatedIds(key).call()
    assert sub_id > 0 and dep.wait_deliveries(sub_id, 1)
    assert balance(dep, payment_wallet, ETH) - before == PRICE_ETH - PRICE_ETH * FEE_BPS * 2 // 10_000
