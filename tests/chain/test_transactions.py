"""Transactions that never stall the queue: a delivery held back by a fee spike is replaced with
higher fees (same nonce) and mined, and the deliveries behind it follow; a restart with a delivery
in flight, even one the RPC has lost meanwhile, neither loses it nor delivers it twice. In-process
chain service on anvil, mining only when the test says so, with a stand-in orchestrator."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.chain_helpers import KEYS, CountingOrchestrator, chain_service

pytestmark = [pytest.mark.docker]

ANVIL_BLOCK_TIME = None


def rpc(dep, method: str, *params):
    answer = dep.w3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer.get("result")


@pytest.fixture
def manual_mining(dep):
    rpc(dep, "evm_setAutomine", False)
    yield
    rpc(dep, "evm_setAutomine", True)


async def request(dep, payload: bytes) -> int:
    """A one-shot request, mined in a block of its own."""
    tx_hash = await asyncio.to_thread(dep.consumer.functions.requestCompute("echo", payload, 1).transact,
                                      {"from": dep.w3.eth.accounts[0]})
    rpc(dep, "evm_mine")
    receipt = dep.w3.eth.get_transaction_receipt(tx_hash)
    return dep.created_id(receipt)


async def mine_until(dep, done, blocks: int = 30, pause: float = 0.3) -> bool:
    """Mine a block every `pause` seconds until `done()` (at most `blocks` blocks)."""
    for _ in range(blocks):
        await asyncio.sleep(pause)
        if await done():
            return True
        rpc(dep, "evm_mine")
    return await done()


async def wait_for(cond, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def delivered(dep, sub_id: int) -> int:
    return dep.consumer.functions.deliveryCount(sub_id).call()


async def test_a_delivery_held_back_by_a_fee_spike_is_replaced_with_higher_fees_and_the_next_ones_follow(
        tmp_path, anvil, dep, manual_mining):
    async with chain_service(tmp_path / "c.db", anvil.url, dep, KEYS[1], CountingOrchestrator(),
                             wallet={"private_key": KEYS[1], "resend_after": 2}) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        sub_id = await request(dep, b"held back")
        assert await wait_for(lambda: bool(chain.wallet.inflight))  # sent, with fees for the base fee of now
        [(nonce, first)] = chain.wallet.inflight.items()
        base = dep.w3.eth.get_block("latest")["baseFeePerGas"]
        rpc(dep, "anvil_setNextBlockBaseFeePerGas", hex(base * 100))  # a spike: the delivery no longer fits

        async def mined() -> bool:
            return delivered(dep, sub_id) == 1

        assert await mine_until(dep, mined)
        [row] = [t for t in await chain.store.txs(chain.address) if t["nonce"] == nonce]
        assert row["status"] == "mined" and row["resends"] >= 1 and len(row["hashes"]) >= 2
        assert row["fees"]["maxFeePerGas"] > base * 100  # the replacement outbid the spike
        for payload in (b"next", b"and next"):  # the queue behind it moves
            later = await request(dep, payload)

            async def later_mined(s=later) -> bool:
                return delivered(dep, s) == 1

            assert await mine_until(dep, later_mined, blocks=10)


def crash(chain) -> None:
    """Stop a node's chain service as a crash would: its tasks cancelled, nothing finished."""
    for task in list(chain.processor._tasks) + [s.task for s in chain._tasks if s.task is not None]:
        task.cancel()
    for supervised in chain._tasks:
        supervised.stopping = True


async def test_a_restart_with_a_delivery_in_flight_that_the_rpc_lost_delivers_it_once(tmp_path, anvil, dep,
                                                                                     manual_mining):
    db = tmp_path / "c.db"
    first = CountingOrchestrator()
    async with chain_service(db, anvil.url, dep, KEYS[2], first) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        sub_id = await request(dep, b"in flight")
        assert await wait_for(lambda: bool(chain.wallet.inflight))
        [(nonce, sent)] = chain.wallet.inflight.items()
        crash(chain)
        await asyncio.sleep(0.2)
    rpc(dep, "anvil_dropTransaction", sent["hashes"][-1])  # the RPC forgot it too: the nonce is a gap now
    assert delivered(dep, sub_id) == 0 and first.runs == 1

    second = CountingOrchestrator()
    async with chain_service(db, anvil.url, dep, KEYS[2], second) as chain:
        async def done() -> bool:
            rows = await chain.store.deliveries(sub_id)
            return delivered(dep, sub_id) == 1 and rows[0]["status"] == "delivered"

        assert await mine_until(dep, done)
        later = await request(dep, b"after the restart")

        async def later_done() -> bool:
            return delivered(dep, later) == 1

        assert await mine_until(dep, later_done, blocks=10)
        for _ in range(3):
            rpc(dep, "evm_mine")
            await asyncio.sleep(0.2)
        assert delivered(dep, sub_id) == 1  # once: not run again, not sent twice
        assert second.runs == 1  # only the later request ran a container in the restarted node
        [row] = [t for t in await chain.store.txs(chain.address) if t["nonce"] == nonce]
        assert row["status"] == "mined"


async def test_a_pending_delivery_another_node_made_meanwhile_is_not_outbid_but_recorded_as_fulfilled_elsewhere(
        tmp_path, anvil, dep, manual_mining):
    slow, fast = CountingOrchestrator(), CountingOrchestrator()
    async with chain_service(tmp_path / "a.db", anvil.url, dep, KEYS[3], slow,
                             wallet={"private_key": KEYS[3], "resend_after": 10}) as a, \
            chain_service(tmp_path / "b.db", anvil.url, dep, KEYS[4], fast,
                          wallet={"private_key": KEYS[4], "resend_after": 1}) as b:
        await asyncio.wait_for(a.listener.synced.wait(), 10)
        await asyncio.wait_for(b.listener.synced.wait(), 10)
        sub_id = await request(dep, b"one of two")  # redundancy 1: one delivery settles it
        assert await wait_for(lambda: bool(a.wallet.inflight) and bool(b.wallet.inflight))
        base = dep.w3.eth.get_block("latest")["baseFeePerGas"]
        rpc(dep, "anvil_setNextBlockBaseFeePerGas", hex(base * 100))  # neither fits; b outbids first

        async def settled() -> bool:
            rows = await a.store.deliveries(sub_id)
            return bool(rows) and rows[0]["status"] == "skipped"

        assert await mine_until(dep, settled)
        [delivery] = dep.deliveries(sub_id)
        assert delivery["node"] == b.address
        [row] = await a.store.deliveries(sub_id)
        assert row["error"] == "fulfilled by another node" and row["attempts"] == 1  # not retried
        assert a.wallet.cancelled == 1  # its nonce filled by a transfer to itself, not an outbid delivery
        [tx] = [t for t in await a.store.txs(a.address) if t["label"] == f"deliverCompute({sub_id},1)"]
        assert tx["status"] == "cancelled"
        later = await request(dep, b"later")

        async def later_done() -> bool:
            return delivered(dep, later) == 1

        assert await mine_until(dep, later_done, blocks=10)


async def test_a_failing_watch_of_a_resumed_transaction_is_logged_and_shutdown_waits_for_it(
        tmp_path, anvil, dep, manual_mining, monkeypatch, caplog):
    from node.chain.service import ChainService

    db = tmp_path / "c.db"
    async with chain_service(db, anvil.url, dep, KEYS[4], CountingOrchestrator()) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        sub_id = await request(dep, b"watched after the restart")
        assert await wait_for(lambda: bool(chain.wallet.inflight))
        crash(chain)
        await asyncio.sleep(0.2)

    finished = []

    async def failing_bookkeeping(self, record, result) -> None:
        await asyncio.sleep(0.5)  # still at work when the node is asked to stop
        finished.append(record["label"])
        raise RuntimeError("bookkeeping failed")

    monkeypatch.setattr(ChainService, "_tx_resumed", failing_bookkeeping)
    with caplog.at_level(logging.INFO):
        async with chain_service(db, anvil.url, dep, KEYS[4], CountingOrchestrator()) as chain:
            assert await wait_for(lambda: bool(chain.wallet.inflight))
            rpc(dep, "evm_mine")
            assert await wait_for(lambda: not chain.wallet.inflight)  # mined: its watch is in the bookkeeping
        assert finished == [f"deliverCompute({sub_id},1)"]  # the stop waited for it
    [crashed] = [r for r in caplog.records if r.getMessage() == "task.crashed"]
    assert "bookkeeping failed" in str(crashed.exc_info[1])
    assert crashed._fields["task"].startswith(f"chain-tx-watch:deliverCompute({sub_id},1)")
