"""EVM log triggers run each log at least once: a node that stops between claiming a log and
finishing its execution runs that log at its next start, and records it once."""

from __future__ import annotations

import asyncio
import time

import pytest

from node.cre.config import CreConfig
from node.cre.wasm.service import WasmWorkflows
from node.lifecycle import Supervisor
from node.storage import Database
from tests.cre.workflows.harness import PRICE_FEED, PriceServer, toolchain

pytestmark = [pytest.mark.slow, pytest.mark.docker]  # outer ring: a real anvil

# A contract whose every call emits one log (PUSH1 0 PUSH1 0 LOG0 STOP), behind init code that
# returns those 6 bytes.
EMITTER = "0x6560006000a0006000526006601af3"


@pytest.fixture(scope="module")
def prices():
    server = PriceServer(b"1.0")
    yield server
    server.close()


@pytest.fixture
def chain():
    from web3 import Web3

    from tests.chain_helpers import Anvil

    anvil = Anvil(block_time=None).start()
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    emitter = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "data": EMITTER}))["contractAddress"]
    yield anvil, w3, emitter
    anvil.stop()


def emit(w3, emitter: str) -> str:
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": emitter}))
    return "0x" + bytes(receipt["transactionHash"]).hex()


async def log_runs(wasm: WasmWorkflows) -> list[dict]:
    return [e for e in await wasm.store.list("price-feed", None, 500) if e["trigger"]["kind"] == "evm-log"]


@pytest.mark.parametrize("crash", ["before_the_record", "during_the_execution"])
async def test_a_log_claimed_before_a_crash_runs_at_the_next_start_and_is_recorded_once(tmp_path, prices, chain,
                                                                                        crash):
    toolchain()
    anvil, w3, emitter = chain
    config = CreConfig.model_validate({
        "wasm": {"chains": {"anvil-devnet": anvil.url}, "log_poll_interval": 0.1},
        "workflows": [{"name": "price-feed", "file": str(PRICE_FEED), "cron": False,
                       "config": {"priceUrl": prices.url, "logAddress": emitter}}]}, context={"env": {}})
    db = Database(str(tmp_path / "node.db"))
    await db.open()

    def node() -> WasmWorkflows:
        return WasmWorkflows(config, db, Supervisor(on_fatal=lambda reason: None))

    try:
        first = node()
        claimed = asyncio.Event()

        async def dies(name, sub, payload, trigger, *rest) -> None:
            """The process dies here: the log is claimed; its execution never ends."""
            if crash == "during_the_execution":
                await first.store.begin(rest[0] if rest else "f" * 64, name, sub, trigger)
            claimed.set()

        first._fire_logged = dies
        await first.start()
        tx = await asyncio.to_thread(emit, w3, emitter)
        await asyncio.wait_for(claimed.wait(), 20)
        await first.stop()
        assert [r["status"] for r in await log_runs(first)] == ([] if crash == "before_the_record" else ["running"])

        second = node()
        await second.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not [r for r in await log_runs(second) if r["status"] == "succeeded"]:
                await asyncio.sleep(0.1)
            (run,) = await log_runs(second)
            assert (run["status"], run["result"]) == ("succeeded", f"log {tx}:0"), run
            assert run["trigger"]["runAgain"] is True
        finally:
            await second.stop()

        third = node()  # a later start neither runs it again nor scans it as new
        await third.start()
        try:
            await asyncio.sleep(1.0)
            assert [(r["executionId"], r["status"]) for r in await log_runs(third)] == [(run["executionId"],
                                                                                        "succeeded")]
        finally:
            await third.stop()
    finally:
        await db.close()
