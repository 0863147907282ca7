"""The EVM read capabilities a workflow calls beyond CallContract and BalanceAt: EstimateGas,
FilterLogs, GetTransactionByHash and GetTransactionReceipt, each answered from the configured
chain. Our SDK-built workflow (workflows/evm_reads.ts) calls them on anvil and reports what it read;
FilterLogs is bounded per call (block range, log count) and bad requests are refused before the
chain is asked."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest

from node.cre.wasm import messages as pb
from node.cre.wasm.capabilities import Capabilities
from node.cre.wasm.host import Limits
from node.cre.wasm.runtime import WasmRuntime, cron_payload, result_json
from tests.cre.workflows.harness import WORKFLOWS, toolchain

pytestmark = pytest.mark.slow

EVM_READS = WORKFLOWS / "evm_reads.ts"
ANVIL_DEVNET = 7759470850252068959
CAPABILITY = f"evm:ChainSelector:{ANVIL_DEVNET}@1.0.0"
# A contract whose every call emits one log (PUSH1 0 PUSH1 0 LOG0 STOP), behind init code that
# returns those 6 bytes.
EMITTER = "0x6560006000a0006000526006601af3"


@pytest.fixture(scope="module")
def chain():
    return toolchain()


@pytest.fixture(scope="module")
def anvil_chain():
    """anvil with the emitter deployed and called twice (two logs), then 150 empty blocks."""
    from web3 import Web3

    from tests.chain_helpers import Anvil

    anvil = Anvil(block_time=None).start()
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        sender = w3.eth.accounts[0]
        deployed = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": sender, "data": EMITTER}))
        emitter = deployed["contractAddress"]
        calls = [w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": sender, "to": emitter}))
                 for _ in range(2)]
        w3.provider.make_request("anvil_mine", [150])
        yield anvil, w3, sender, emitter, deployed["blockNumber"], calls
    finally:
        anvil.stop()


@pytest.fixture
async def runtime(chain):
    rt = WasmRuntime(chain, workers=2, limits=Limits(timeout=20))
    yield rt
    rt.close()


async def run_evm_reads(runtime, anvil_chain, *, from_block: int, to_block: int, **limits):
    anvil, w3, sender, emitter, _, calls = anvil_chain
    caps = Capabilities(asyncio.get_running_loop(), chains={ANVIL_DEVNET: anvil.url}, **limits)
    config = json.dumps({"contract": emitter, "sender": sender, "txHash": calls[0]["transactionHash"].to_0x_hex(),
                         "fromBlock": from_block, "toBlock": to_block}).encode()
    try:
        loaded = await runtime.load("evm-reads", EVM_READS, config, caps)
        return await runtime.run(loaded, 0, cron_payload(datetime.now(timezone.utc)), caps, "e7" * 32)
    finally:
        await caps.close()


@pytest.mark.docker  # outer ring: a real anvil
async def test_a_workflow_estimates_gas_filters_logs_and_reads_a_transaction_and_its_receipt_on_anvil(
        runtime, anvil_chain):
    anvil, w3, sender, emitter, deployed_at, calls = anvil_chain
    outcome = await run_evm_reads(runtime, anvil_chain, from_block=deployed_at, to_block=deployed_at + 99)
    assert outcome.ok, outcome.failure
    read = json.loads(result_json(outcome))
    assert int(read["gas"]) == w3.eth.estimate_gas({"from": sender, "to": emitter, "data": "0x"})
    assert read["logs"] == [{"address": emitter.lower(), "txHash": call["transactionHash"].to_0x_hex(),
                             "block": str(call["blockNumber"]), "index": 0} for call in calls]
    tx = w3.eth.get_transaction(calls[0]["transactionHash"])
    assert read["tx"] == {"hash": calls[0]["transactionHash"].to_0x_hex(), "to": emitter.lower(),
                          "nonce": str(tx["nonce"]), "gas": str(tx["gas"]), "value": "0"}
    assert read["receipt"] == {"status": "1", "gasUsed": str(calls[0]["gasUsed"]),
                               "block": str(calls[0]["blockNumber"]), "logs": 1,
                               "txHash": calls[0]["transactionHash"].to_0x_hex()}
    methods = [call.method for call in outcome.calls if call.id == CAPABILITY]
    assert methods == ["EstimateGas", "FilterLogs", "GetTransactionByHash", "GetTransactionReceipt"]


@pytest.mark.docker
async def test_filter_logs_over_the_block_range_limit_is_refused_and_fails_the_execution_naming_it(
        runtime, anvil_chain):
    deployed_at = anvil_chain[4]
    outcome = await run_evm_reads(runtime, anvil_chain, from_block=deployed_at, to_block=deployed_at + 100)
    assert not outcome.ok
    assert "101 blocks, over this node's limit of 100 for one FilterLogs" in outcome.failure


@pytest.mark.docker
async def test_filter_logs_matching_more_logs_than_the_limit_is_refused_and_fails_the_execution_naming_it(
        runtime, anvil_chain):
    deployed_at = anvil_chain[4]
    outcome = await run_evm_reads(runtime, anvil_chain, from_block=deployed_at, to_block=deployed_at + 10, max_logs=1)
    assert not outcome.ok
    assert "2 logs match, over this node's limit of 1 for one FilterLogs" in outcome.failure


# -- refusals before the chain is asked (in process, no chain behind the URL) ---------------------

async def evm_call(method: str, request) -> object:
    caps = Capabilities(asyncio.get_running_loop(), chains={ANVIL_DEVNET: "http://127.0.0.1:9"})
    try:
        capability = pb.CapabilityRequest(id=CAPABILITY, method=method, payload=pb.pack(request))
        return await asyncio.wrap_future(caps.call_capability(capability, 0, "e8" * 32))
    finally:
        await caps.close()


async def test_a_transaction_hash_that_is_not_32_bytes_is_refused_naming_the_field():
    request = pb.message("capabilities.blockchain.evm.v1alpha.GetTransactionReceiptRequest")(hash=b"\x01" * 20)
    response = await evm_call("GetTransactionReceipt", request)
    assert response.error == "hash: a hash is 32 bytes, got 20"


async def test_filter_logs_with_a_block_hash_and_a_range_is_refused():
    request = pb.message("capabilities.blockchain.evm.v1alpha.FilterLogsRequest")()
    request.filter_query.block_hash = b"\x02" * 32
    request.filter_query.from_block.CopyFrom(pb.int_to_bigint(5))
    response = await evm_call("FilterLogs", request)
    assert response.error == "filterQuery: give a blockHash or a fromBlock/toBlock range, not both"


async def test_filter_logs_with_an_address_that_is_not_20_bytes_is_refused_naming_the_field():
    request = pb.message("capabilities.blockchain.evm.v1alpha.FilterLogsRequest")()
    request.filter_query.addresses.append(b"\x03" * 19)
    response = await evm_call("FilterLogs", request)
    assert response.error == "filterQuery.addresses: an address is 20 bytes, got 19"


async def test_an_evm_method_the_node_does_not_serve_is_refused_listing_the_ones_it_does():
    response = await evm_call("SubscribeHeads", pb.message("capabilities.blockchain.evm.v1alpha.EstimateGasRequest")())
    assert "evm method SubscribeHeads is not supported on this node" in response.error
    assert "FilterLogs" in response.error and "GetTransactionReceipt" in response.error


async def test_a_chain_answer_over_the_size_limit_is_refused_not_read_whole():
    """One log with 16 MiB of data (under the log count limit): the node stops reading at its cap."""
    from aiohttp import web

    log = {"address": "0x" + "11" * 20, "topics": [], "data": "0x" + "ab" * (16 << 20), "blockNumber": "0x1",
           "transactionHash": "0x" + "22" * 32, "blockHash": "0x" + "33" * 32, "logIndex": "0x0",
           "transactionIndex": "0x0", "removed": False}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": [log]}).encode()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    caps = Capabilities(asyncio.get_running_loop(), chains={ANVIL_DEVNET: f"http://127.0.0.1:{port}"})
    request = pb.message("capabilities.blockchain.evm.v1alpha.FilterLogsRequest")()
    request.filter_query.block_hash = b"\x33" * 32
    try:
        capability = pb.CapabilityRequest(id=CAPABILITY, method="FilterLogs", payload=pb.pack(request))
        response = await asyncio.wrap_future(caps.call_capability(capability, 0, "e9" * 32))
    finally:
        await caps.close()
        await runner.cleanup()
    assert response.WhichOneof("response") == "error"
    assert response.error == "eth_getLogs: the chain's answer is over 8388608 bytes (this node's limit for one call)"
