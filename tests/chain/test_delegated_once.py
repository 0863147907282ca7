"""A delegated subscription (`POST /api/jobs` with an EIP-712 signature) runs and is delivered
once, however many copies of it arrive (in-process node chain service on a real anvil, with a
stand-in orchestrator that counts container runs)."""

from __future__ import annotations

import asyncio
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from node.chain.codec import container_id, delegate_typed_data
from node.errors import Conflict
from node.jobs.models import DelegatedSubscriptionRequest
from tests.chain_helpers import KEYS, CountingOrchestrator, chain_service

pytestmark = [pytest.mark.docker]

ZERO = "0x" + "00" * 20


@pytest.fixture
async def service(tmp_path, anvil, dep):
    orchestrator = CountingOrchestrator(delay=0.3)
    async with chain_service(tmp_path / "chain.db", anvil.url, dep, KEYS[4], orchestrator) as chain:
        yield chain, orchestrator


def signed_request(dep, nonce: int) -> DelegatedSubscriptionRequest:
    now = dep.w3.eth.get_block("latest")["timestamp"]
    sub = {"owner": dep.consumer.address, "activeAt": now, "period": 0, "frequency": 1, "redundancy": 1,
           "containerId": container_id(["echo"]), "lazy": False, "verifier": ZERO, "paymentAmount": 0,
           "paymentToken": ZERO, "wallet": ZERO}
    expiry = int(time.time()) + 600
    signed = Account.from_key(dep.signer_key).sign_message(encode_typed_data(full_message=delegate_typed_data(
        dep.w3.eth.chain_id, dep.coordinator.address, nonce, expiry, sub)))
    return DelegatedSubscriptionRequest(
        subscription={"owner": sub["owner"], "active_at": now, "period": 0, "frequency": 1, "redundancy": 1,
                      "containers": "0x" + sub["containerId"].hex(), "lazy": False, "verifier": ZERO,
                      "payment_amount": 0, "payment_token": ZERO, "wallet": ZERO},
        signature={"nonce": nonce, "expiry": expiry, "v": signed.v, "r": signed.r, "s": signed.s},
        data={"msg": "once"})


async def test_concurrent_copies_of_one_delegated_subscription_run_once_and_send_one_transaction(service, dep):
    chain, orchestrator = service
    sent_before = dep.w3.eth.get_transaction_count(chain.address)
    request = signed_request(dep, nonce=41)
    answers = await asyncio.gather(*(chain.delegated(request, "127.0.0.1") for _ in range(5)),
                                   return_exceptions=True)
    assert all(a == {} for a in answers), answers  # every copy is answered as the Infernet node does
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and dep.w3.eth.get_transaction_count(chain.address) == sent_before:
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # a second copy's job and transaction would be done by now
    assert orchestrator.runs == 1
    assert dep.w3.eth.get_transaction_count(chain.address) == sent_before + 1


async def test_a_copy_arriving_after_the_delivery_is_not_run_again(service, dep):
    chain, orchestrator = service
    request = signed_request(dep, nonce=42)
    assert await chain.delegated(request, "127.0.0.1") == {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and orchestrator.runs == 0:
        await asyncio.sleep(0.1)
    sent = dep.w3.eth.get_transaction_count(chain.address)
    while time.monotonic() < deadline and dep.w3.eth.get_transaction_count(chain.address) == sent:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    try:
        assert await chain.delegated(request, "127.0.0.1") == {}
    except Conflict:  # a refusal naming the duplicate is fine too
        pass
    await asyncio.sleep(2)
    assert orchestrator.runs == 1
