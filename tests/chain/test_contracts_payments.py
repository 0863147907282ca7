"""Payments on the Infernet contracts, without a node: a test account delivers directly.

The node only ever gets paid through these contracts, so their money paths are checked here
against real contracts on anvil (automine: one transaction, one block): who ends up with what
after a paid delivery, with and without a proof verifier, and which mistakes revert and why."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from node.chain.codec import container_id
from tests.chain_helpers import ETH, KEYS, artifact, ours_only

ANVIL_BLOCK_TIME = None  # blocks mined on demand
pytestmark = pytest.mark.slow

FEE_BPS = 500
CONSUMER_OWNER, NODE_KEY = KEYS[2], KEYS[3]
NODE = Account.from_key(NODE_KEY).address
FEE_RECIPIENT = Account.from_key(KEYS[0]).address
ZERO = "0x" + "00" * 20


def protocol_fee(amount: int) -> int:
    return amount * FEE_BPS * 2 // 10000


def reverts_with(fn, sender: str, error: str) -> bool:
    """Whether calling `fn` from `sender` reverts with the custom error `error()`."""
    try:
        fn.call({"from": sender})
    except ContractCustomError as exc:
        data = exc.data if isinstance(exc.data, str) else exc.args[0]
        return data.removeprefix("0x")[:8] == keccak(text=f"{error}()")[:4].hex()
    return False


def paid_subscription(dep, token: str, amount: int, *, fund: int | None = None, allow: int | None = None,
                      verifier: str = ZERO, lazy: bool = False) -> tuple[int, str]:
    """A one-interval subscription of the ExampleConsumer paid from a fresh consumer wallet."""
    wallet = dep.create_wallet(CONSUMER_OWNER)
    dep.fund_wallet(wallet, token, amount if fund is None else fund)
    if allow != 0:
        dep.approve(wallet, CONSUMER_OWNER, dep.consumer.address, token, amount if allow is None else allow)
    receipt = dep.send(dep.consumer.functions.createPaidSubscription(
        "echo", 1, 0, 1, lazy, token, amount, wallet, verifier))
    return dep.created_id(receipt), wallet


def node_wallet(dep, token: str, collateral: int = 0) -> str:
    wallet = dep.create_wallet(NODE_KEY)
    if collateral:
        dep.fund_wallet(wallet, token, collateral)
        dep.approve(wallet, NODE_KEY, NODE, token, collateral)
    return wallet


def deliver(dep, sub_id: int, wallet: str, proof: bytes = b"proof"):
    return dep.coordinator.functions.deliverCompute(sub_id, 1, b"in", b"out", proof, wallet)


@pytest.mark.parametrize("token_kind", ["eth", "erc20"])
def test_a_paid_delivery_pays_the_node_wallet_the_amount_less_both_protocol_fees(dep, token_kind):
    token = ETH if token_kind == "eth" else dep.token.address
    amount = 10**15 if token == ETH else 1_000_000  # 1 token of 6 decimals
    sub_id, consumer_wallet = paid_subscription(dep, token, amount)
    wallet = node_wallet(dep, token)
    recipient_before = dep.balance(FEE_RECIPIENT, token)
    receipt = dep.send(deliver(dep, sub_id, wallet), NODE_KEY)
    assert dep.balance(wallet, token) == amount - protocol_fee(amount) == amount * 9 // 10
    assert dep.balance(FEE_RECIPIENT, token) - recipient_before == protocol_fee(amount)
    assert dep.balance(consumer_wallet, token) == 0
    assert dep.wallet(consumer_wallet).functions.allowance(dep.consumer.address, token).call() == 0
    transfers = dep.wallet(consumer_wallet).events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert [(t["args"]["to"], t["args"]["amount"]) for t in transfers] == [
        (FEE_RECIPIENT, protocol_fee(amount)), (wallet, amount - protocol_fee(amount))]
    # the node's owner can take its earnings out of its wallet, nobody else can
    assert reverts_with(dep.wallet(wallet).functions.withdraw(token, 1), FEE_RECIPIENT, "Unauthorized")
    assert reverts_with(dep.wallet(wallet).functions.withdraw(token, amount), NODE, "InsufficientFunds")
    before = dep.balance(NODE, token)
    dep.send(dep.wallet(wallet).functions.withdraw(token, amount - protocol_fee(amount)), NODE_KEY)
    assert dep.balance(wallet, token) == 0
    if token != ETH:
        assert dep.balance(NODE, token) - before == amount - protocol_fee(amount)


def test_a_node_wallet_not_made_by_the_factory_is_refused(dep):
    sub_id, _ = paid_subscription(dep, ETH, 10**15)
    # a genuine Wallet contract, deployed directly: the Coordinator trusts only the factory's
    direct = dep.w3.eth.contract(abi=artifact("Wallet")["abi"], bytecode=artifact("Wallet")["bytecode"])
    receipt = dep.send(direct.constructor(dep.registry.address, NODE), NODE_KEY)
    assert reverts_with(deliver(dep, sub_id, receipt["contractAddress"]), NODE, "InvalidWallet")
    assert reverts_with(deliver(dep, sub_id, NODE), NODE, "InvalidWallet")  # an EOA
    assert dep.wallet_factory.functions.isValidWallet(node_wallet(dep, ETH)).call()
    assert not dep.wallet_factory.functions.isValidWallet(receipt["contractAddress"]).call()


def test_a_consumer_wallet_without_allowance_cannot_pay(dep):
    sub_id, _ = paid_subscription(dep, ETH, 10**15, allow=0)
    assert reverts_with(deliver(dep, sub_id, node_wallet(dep, ETH)), NODE, "InsufficientAllowance")


def test_only_the_coordinator_moves_wallet_funds(dep):
    wallet = dep.create_wallet(CONSUMER_OWNER)
    dep.fund_wallet(wallet, ETH, 10**15)
    dep.approve(wallet, CONSUMER_OWNER, NODE, ETH, 10**15)
    fn = dep.wallet(wallet).functions.cTransfer(NODE, ETH, NODE, 10**15)
    assert reverts_with(fn, NODE, "NotCoordinator")


def _verified_delivery(dep, valid: bool, verifier_fee: int = 100_000, amount: int = 1_000_000):
    token = dep.token.address
    dep.send(dep.verifier.functions.updateSupportedToken(token, True))
    dep.send(dep.verifier.functions.updateFee(token, verifier_fee))
    dep.send(dep.verifier.functions.setNextValidity(valid))
    sub_id, consumer_wallet = paid_subscription(dep, token, amount, verifier=dep.verifier.address)
    wallet = node_wallet(dep, token, collateral=amount)
    before = {a: dep.balance(a, token) for a in (FEE_RECIPIENT, dep.verifier.address)}
    receipt = dep.send(deliver(dep, sub_id, wallet, proof=b"the proof"), NODE_KEY)
    gained = {a: dep.balance(a, token) - before[a] for a in before}
    return sub_id, consumer_wallet, wallet, receipt, gained


def test_a_valid_proof_pays_the_verifier_its_fee_and_the_node_the_rest(dep):
    amount, verifier_fee = 1_000_000, 100_000
    sub_id, consumer_wallet, wallet, receipt, gained = _verified_delivery(dep, True, verifier_fee, amount)
    verifier_share = verifier_fee * FEE_BPS // 10000
    assert gained[dep.verifier.address] == verifier_fee - verifier_share
    assert gained[FEE_RECIPIENT] == protocol_fee(amount) + verifier_share
    rest = amount - protocol_fee(amount) - verifier_fee
    assert dep.balance(wallet, dep.token.address) == amount + rest  # collateral back, plus the payment
    assert dep.balance(consumer_wallet, dep.token.address) == 0
    assert dep.wallet(wallet).functions.allowance(NODE, dep.token.address).call() == amount  # unlocked again
    dep.send(dep.wallet(wallet).functions.withdraw(dep.token.address, amount + rest), NODE_KEY)  # nothing locked
    assert dep.verifier.functions.lastProof().call() == b"the proof"
    (event,) = dep.coordinator.events.ProofVerified().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["id"], event["args"]["node"], event["args"]["active"], event["args"]["valid"]) == (
        sub_id, NODE, True, True)
    key = keccak(b"".join(x.to_bytes(32, "big") for x in (sub_id, 1, int(NODE, 16))))
    assert dep.coordinator.functions.proofRequests(key).call()[0] == 0  # settled and removed
    assert dep.deliveries(sub_id)[0]["output"] == b"out"


def test_an_invalid_proof_slashes_the_node_collateral_to_the_consumer_wallet(dep):
    amount, verifier_fee = 1_000_000, 100_000
    sub_id, consumer_wallet, wallet, receipt, gained = _verified_delivery(dep, False, verifier_fee, amount)
    assert gained[dep.verifier.address] == verifier_fee - verifier_fee * FEE_BPS // 10000  # paid either way
    assert dep.balance(wallet, dep.token.address) == 0
    rest = amount - protocol_fee(amount) - verifier_fee
    assert dep.balance(consumer_wallet, dep.token.address) == rest + amount  # its escrow back and the collateral
    (event,) = dep.coordinator.events.ProofVerified().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["valid"] is False
    dep.send(dep.verifier.functions.setNextValidity(True))


def test_a_verifier_that_does_not_take_the_token_is_refused(dep):
    sub_id, _ = paid_subscription(dep, ETH, 10**15, verifier=dep.verifier.address)
    dep.send(dep.verifier.functions.updateSupportedToken(ETH, False))
    assert reverts_with(deliver(dep, sub_id, node_wallet(dep, ETH, collateral=10**15)), NODE,
                        "UnsupportedVerifierToken")


def test_settling_a_proof_that_was_never_requested_reverts(dep):
    assert reverts_with(dep.coordinator.functions.finalizeProofVerification(1, 1, NODE, True), NODE,
                        "ProofRequestNotFound")


def test_a_lazy_delivery_lands_in_the_inbox_and_the_consumer_gets_a_pointer(dep):
    sub_id = dep.created_id(dep.send(dep.consumer.functions.subscribeLazy("echo", 1, 0, 1, b"x")))
    receipt = dep.send(dep.coordinator.functions.deliverCompute(sub_id, 1, b"in", b"lazy out", b"p", ZERO), NODE_KEY)
    (event,) = dep.inbox.events.NewInboxItem().process_receipt(receipt, errors=DISCARD)
    cid, index = container_id(["echo"]), event["args"]["index"]
    assert event["args"]["containerId"] == cid and event["args"]["node"] == NODE
    item = dep.inbox.functions.read(cid, NODE, index).call()
    assert (item[1], item[2], item[3], item[4], item[5]) == (sub_id, 1, b"in", b"lazy out", b"p")
    [delivery] = dep.deliveries(sub_id)
    assert (delivery["output"], delivery["container_id"], delivery["index"]) == (b"", cid, index)
    # only the Coordinator writes on a node's behalf; anyone may write as themselves
    assert reverts_with(dep.inbox.functions.writeViaCoordinator(cid, NODE, sub_id, 1, b"", b"forged", b""),
                        NODE, "NotCoordinator")
    dep.send(dep.inbox.functions.write(cid, b"i", b"o", b"p"), KEYS[4])
    assert dep.inbox.functions.read(cid, Account.from_key(KEYS[4]).address, 0).call()[1] == 0


def test_only_the_fee_owner_changes_the_fee(dep):
    assert dep.fee.functions.FEE().call() == FEE_BPS
    assert dep.fee.functions.FEE_RECIPIENT().call() == FEE_RECIPIENT
    assert reverts_with(dep.fee.functions.updateFee(0), NODE, "Unauthorized")


@ours_only
def test_a_fee_the_payment_could_not_cover_is_refused(dep):
    assert reverts_with(dep.fee.functions.updateFee(5001), FEE_RECIPIENT, "FeeTooHigh")


def test_the_registry_points_at_the_deployed_set(dep):
    r = dep.registry.functions
    assert (r.COORDINATOR().call(), r.INBOX().call(), r.READER().call(), r.FEE().call(),
            r.WALLET_FACTORY().call()) == (dep.coordinator.address, dep.inbox.address, dep.reader.address,
                                           dep.fee.address, dep.wallet_factory.address)
    # the Reader reads through the Registry's Coordinator
    sub_id = dep.created_id(dep.send(dep.consumer.functions.requestCompute("echo", b"r", 1)))
    assert dep.reader.functions.readSubscriptionBatch(sub_id, sub_id + 1).call() == [
        dep.coordinator.functions.getSubscription(sub_id).call()]


def test_a_pending_proof_keeps_both_sides_locked_and_after_a_week_anyone_settles_it_for_the_node(dep):
    token, amount, verifier_fee = dep.token.address, 1_000_000, 100_000
    dep.send(dep.verifier.functions.updateSupportedToken(token, True))
    dep.send(dep.verifier.functions.updateFee(token, verifier_fee))
    dep.send(dep.verifier.functions.setDeferred(True))
    try:
        sub_id, consumer_wallet = paid_subscription(dep, token, amount, verifier=dep.verifier.address)
        wallet = node_wallet(dep, token, collateral=amount)
        dep.send(deliver(dep, sub_id, wallet), NODE_KEY)
        rest = amount - protocol_fee(amount) - verifier_fee
        # the collateral and the escrow (each wallet's whole balance) cannot be taken out meanwhile
        assert (dep.balance(wallet, token), dep.balance(consumer_wallet, token)) == (amount, rest)
        assert reverts_with(dep.wallet(wallet).functions.withdraw(token, 1), NODE, "InsufficientFunds")
        assert reverts_with(dep.wallet(consumer_wallet).functions.withdraw(token, 1),
                            Account.from_key(CONSUMER_OWNER).address, "InsufficientFunds")
        settle = dep.coordinator.functions.finalizeProofVerification(sub_id, 1, NODE, False)
        assert reverts_with(settle, NODE, "UnauthorizedVerifier")  # only the verifier, within the week
        dep.w3.provider.make_request("evm_increaseTime", [7 * 24 * 3600 + 1])
        dep.w3.provider.make_request("evm_mine", [])
        receipt = dep.send(settle, KEYS[4])  # anyone; the node is paid whatever `valid` says
        assert dep.balance(wallet, token) == amount + rest
        (event,) = dep.coordinator.events.ProofVerified().process_receipt(receipt, errors=DISCARD)
        assert event["args"]["active"] is False and event["args"]["verifier"] == Account.from_key(KEYS[4]).address
        assert reverts_with(settle, NODE, "ProofRequestNotFound")  # settled once
    finally:
        dep.send(dep.verifier.functions.setDeferred(False))


def test_a_paid_one_shot_request_is_paid_on_delivery_and_answered_its_inputs(dep):
    token, amount = dep.token.address, 2_000_000
    wallet = dep.create_wallet(CONSUMER_OWNER)
    dep.fund_wallet(wallet, token, amount)
    dep.approve(wallet, CONSUMER_OWNER, dep.consumer.address, token, amount)
    sub_id = dep.created_id(dep.send(dep.consumer.functions.requestPaidCompute(
        "echo", b"paid input", 1, token, amount, wallet, ZERO)))
    sub = dep.coordinator.functions.getSubscription(sub_id).call()
    assert (sub[3], sub[8], sub[9], sub[10]) == (1, amount, token, wallet)  # frequency, amount, token, wallet
    assert dep.consumer.functions.getContainerInputs(sub_id, 1, 0, NODE).call() == b"paid input"
    receiving = node_wallet(dep, token)
    dep.send(deliver(dep, sub_id, receiving), NODE_KEY)
    assert dep.balance(receiving, token) == amount - protocol_fee(amount)
    assert reverts_with(deliver(dep, sub_id, receiving), NODE, "IntervalCompleted")  # paid once
