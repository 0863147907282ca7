"""The CRE WASM host, in process: our SDK-built test workflow end to end (cron -> HTTP fetch ->
node-mode consensus -> result; HTTP trigger), and the host contract's limits and refusals,
driven by raw JS that calls the Javy plugin's globals directly."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import pytest

from node.cre.wasm import messages as pb
from node.cre.wasm.capabilities import Capabilities
from node.cre.wasm.host import Limits, WasmEngine, WorkflowLoadError, don_seed
from node.cre.wasm.runtime import WasmRuntime, cron_payload, http_payload, result_json
from node.server.egress import EgressPolicy
from tests.cre.workflows.harness import PRICE_FEED, PriceServer, js_bytes, raw_program, toolchain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain():
    return toolchain()


@pytest.fixture(scope="module")
def prices():
    server = PriceServer(b"123.5")
    yield server
    server.close()


@pytest.fixture
async def runtime(chain):
    rt = WasmRuntime(chain, workers=2, limits=Limits(timeout=20))
    yield rt
    rt.close()


async def capabilities(allow: list[str], secrets=None) -> tuple[Capabilities, object]:
    policy = EgressPolicy(allow, max_response_bytes=4096)
    session = policy.session()
    caps = Capabilities(asyncio.get_running_loop(), egress=policy, session=session,
                        secrets=secrets if secrets is not None else {("main", "PRICE_API_KEY"): "k3y!"})
    return caps, session


async def load_price_feed(runtime, prices, caps):
    config = json.dumps({"priceUrl": prices.url}).encode()
    return await runtime.load("price-feed", PRICE_FEED, config, caps)


async def test_subscribe_reports_the_workflows_cron_schedule_and_http_trigger(runtime, prices):
    caps, session = await capabilities([])
    try:
        loaded = await load_price_feed(runtime, prices, caps)
    finally:
        await session.close()
    assert [(s.index, s.kind) for s in loaded.subscriptions] == [(0, "cron"), (1, "http")]
    assert loaded.subscriptions[0].cron.schedule == "*/30 * * * * *"


async def test_cron_trigger_fetches_a_local_price_agrees_on_it_in_node_mode_and_returns_the_result(runtime, prices):
    caps, session = await capabilities(["127.0.0.1/32"])
    try:
        loaded = await load_price_feed(runtime, prices, caps)
        hits = prices.hits
        when = datetime(2026, 1, 1, tzinfo=timezone.utc)
        outcome = await runtime.run(loaded, 0, cron_payload(when), caps, "e1" * 32)
    finally:
        await session.close()
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "price=123.5 onchain=none"
    assert prices.hits == hits + 1
    assert outcome.logs == [f"cron at {int(when.timestamp())} key=4 chars", "median price=123.5"]
    http_call, consensus_call = outcome.calls
    assert (http_call.id, http_call.mode, http_call.error) == ("http-actions@1.0.0-alpha", 2, None)
    assert http_call.callback_id < 0  # node mode
    assert (consensus_call.id, consensus_call.mode, consensus_call.callback_id) == ("consensus@1.0.0-alpha", 1, 1)


async def test_http_trigger_hands_its_input_to_the_workflow(runtime, prices):
    caps, session = await capabilities([])
    try:
        loaded = await load_price_feed(runtime, prices, caps)
        outcome = await runtime.run(loaded, 1, http_payload(b'{"q":"ping"}'), caps, "e2" * 32)
    finally:
        await session.close()
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == 'echo: {"q":"ping"}'
    assert outcome.logs == ['http trigger input={"q":"ping"}']


async def test_http_action_to_loopback_is_refused_by_the_egress_policy(runtime, prices):
    caps, session = await capabilities([])  # no allowed network: 127.0.0.1 is off limits
    try:
        loaded = await load_price_feed(runtime, prices, caps)
        hits = prices.hits
        outcome = await runtime.run(loaded, 0, cron_payload(datetime.now(timezone.utc)), caps, "e3" * 32)
    finally:
        await session.close()
    assert not outcome.ok
    assert "loopback" in outcome.failure
    assert prices.hits == hits


async def test_a_missing_secret_fails_the_execution_naming_it(runtime, prices):
    caps, session = await capabilities(["127.0.0.1/32"], secrets={})
    try:
        loaded = await load_price_feed(runtime, prices, caps)
        outcome = await runtime.run(loaded, 0, cron_payload(datetime.now(timezone.utc)), caps, "e4" * 32)
    finally:
        await session.close()
    assert not outcome.ok
    assert "PRICE_API_KEY" in outcome.failure


async def test_the_event_loop_keeps_serving_while_workflows_run(runtime, prices):
    caps, session = await capabilities(["127.0.0.1/32"])
    try:
        loaded = await load_price_feed(runtime, prices, caps)
        runs = [asyncio.ensure_future(runtime.run(loaded, 1, http_payload(b"{}"), caps, f"{i:064x}"))
                for i in range(6)]
        worst = 0.0
        while not all(r.done() for r in runs):
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - started - 0.005)
        outcomes = [r.result() for r in runs]
    finally:
        await session.close()
    assert all(o.ok for o in outcomes)
    assert worst < 0.1, f"the event loop stalled {worst * 1000:.0f} ms while workflows ran"


# -- the host contract, with raw JS --------------------------------------------------------------

OK_RESPONSE = js_bytes(pb.ExecutionResult(value=pb.Value(string_value="ok")).SerializeToString())


@pytest.fixture(scope="module")
def engine(chain):
    e = WasmEngine(chain.cache / "modules")
    yield e
    e.close()


class Recorder:
    """HostServices that answer every capability with an error and remember the requests."""

    def __init__(self) -> None:
        self.requests = []

    def call_capability(self, request, mode, execution_id):
        import concurrent.futures

        self.requests.append((request.callback_id, mode))
        future = concurrent.futures.Future()
        future.set_result(pb.CapabilityResponse(error="test"))
        return future

    def get_secrets(self, request):
        raise AssertionError("not expected")


def run_js(engine, chain, js: str, limits: Limits = Limits(timeout=5), execution_id: str = "x" * 64,
           services=None):
    program = raw_program(engine, chain, js)
    request = pb.ExecuteRequest()
    request.subscribe.SetInParent()
    return engine.run(program, request, services or Recorder(), limits, execution_id,
                      engine.plugin(chain.plugin_path))


def call(callback_id: int) -> str:
    return js_bytes(pb.CapabilityRequest(id="basic-test-action@1.0.0", method="PerformAction",
                                         callback_id=callback_id).SerializeToString())


def test_a_workflow_spinning_forever_is_stopped_at_the_time_limit(engine, chain):
    started = time.monotonic()
    outcome = run_js(engine, chain, "while (true) {}", Limits(timeout=0.5))
    assert outcome.error == "the workflow ran longer than 0.5s and was stopped"
    assert time.monotonic() - started < 3


def test_a_workflow_allocating_without_bound_fails_at_the_memory_limit(engine, chain):
    outcome = run_js(engine, chain, "const a = []; while (true) { a.push(new Uint8Array(1 << 20)) }",
                     Limits(timeout=10, memory_bytes=64 << 20))
    assert outcome.error is not None and "out of memory" in outcome.error


def test_a_response_over_the_size_limit_is_refused(engine, chain):
    outcome = run_js(engine, chain, "sendResponse(new Uint8Array(3000))", Limits(max_response_bytes=1024))
    assert outcome.error == "the workflow's response of 3000 bytes is over the 1024-byte limit"
    assert outcome.result is None


def test_a_callback_id_used_twice_is_refused_and_not_dispatched(engine, chain):
    services = Recorder()
    outcome = run_js(engine, chain, f"""
        switchModes(1);
        log('first=' + callCapability({call(7)}));
        log('second=' + callCapability({call(7)}));
        sendResponse({OK_RESPONSE});""", services=services)
    assert outcome.ok, outcome.failure
    assert outcome.logs[0] == "first=0"
    assert outcome.logs[1].startswith("second=-")
    assert services.requests == [(7, 1)]


def test_callback_ids_must_be_negative_in_node_mode_and_not_negative_in_don_mode(engine, chain):
    services = Recorder()
    outcome = run_js(engine, chain, f"""
        switchModes(1);
        log('don-negative=' + callCapability({call(-1)}));
        switchModes(2);
        log('node-positive=' + callCapability({call(3)}));
        log('node-negative=' + callCapability({call(-2)}));
        sendResponse({OK_RESPONSE});""", services=services)
    assert outcome.ok, outcome.failure
    assert outcome.logs[0].startswith("don-negative=-")
    assert outcome.logs[1].startswith("node-positive=-")
    assert outcome.logs[2] == "node-negative=0"
    assert services.requests == [(-2, 2)]


def test_logs_beyond_the_limit_of_each_mode_are_dropped_and_counted(engine, chain):
    outcome = run_js(engine, chain, f"""
        switchModes(1); for (let i = 0; i < 30; i++) log('don ' + i);
        switchModes(2); for (let i = 0; i < 30; i++) log('node ' + i);
        sendResponse({OK_RESPONSE});""", Limits(max_logs_per_mode=10))
    assert outcome.logs == [f"don {i}" for i in range(10)] + [f"node {i}" for i in range(10)]
    assert outcome.logs_dropped == 40


def test_randomness_in_don_mode_is_seeded_by_the_execution_id(engine, chain):
    js = f"switchModes(1); log(String(Math.random())); sendResponse({OK_RESPONSE});"
    first = run_js(engine, chain, js, execution_id="a" * 64).logs
    again = run_js(engine, chain, js, execution_id="a" * 64).logs
    other = run_js(engine, chain, js, execution_id="b" * 64).logs
    assert first == again
    assert first != other
    assert don_seed("a" * 64) != don_seed("b" * 64)


def test_a_module_that_is_not_a_compiled_workflow_is_refused_clearly(engine, chain):
    with pytest.raises(WorkflowLoadError, match="_start"):
        engine.program_from_wasm(chain.plugin_path.read_bytes())
    with pytest.raises(WorkflowLoadError, match="not a valid WebAssembly module"):
        engine.program_from_wasm(b"\0asm garbage")


# -- EVM reads on anvil ---------------------------------------------------------------------------

# A contract whose runtime answers every call with uint256 42 (PUSH1 42 PUSH1 0 MSTORE PUSH1 32
# PUSH1 0 RETURN), behind init code that returns those 10 bytes.
ANSWER_42 = "0x69602a60005260206000f3600052600a6016f3"


@pytest.mark.docker  # outer ring: a real anvil
async def test_cron_trigger_reads_a_contract_on_anvil_through_the_evm_capability(runtime, prices):
    from web3 import Web3

    from tests.chain_helpers import Anvil

    anvil = Anvil(block_time=None).start()
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "data": ANSWER_42})
        contract = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
        w3.provider.make_request("anvil_mine", [70])  # so the contract is in a finalized block
        policy = EgressPolicy(["127.0.0.1/32"], max_response_bytes=4096)
        session = policy.session()
        caps = Capabilities(asyncio.get_running_loop(), egress=policy, session=session,
                            chains={7759470850252068959: anvil.url},
                            secrets={("main", "PRICE_API_KEY"): "k"})
        try:
            config = json.dumps({"priceUrl": prices.url, "contract": contract}).encode()
            loaded = await runtime.load("price-feed", PRICE_FEED, config, caps)
            outcome = await runtime.run(loaded, 0, cron_payload(datetime.now(timezone.utc)), caps, "e5" * 32)
        finally:
            await caps.close()
            await session.close()
    finally:
        anvil.stop()
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "price=123.5 onchain=42"
    assert outcome.calls[-1].id == "evm:ChainSelector:7759470850252068959@1.0.0"


async def report_on_anvil(runtime, prices, signer_is_the_dons: bool):
    """Deploy the test forwarder (trusting one DON signer) and receiver, run the cron trigger with
    reports signed by the DON key (or by another key), and return (outcome, what the receiver
    kept: reports, lastReport, lastMetadata, and the DON account)."""
    import subprocess

    from eth_account import Account
    from web3 import Web3

    from node.cre.wasm.reports import Reporter
    from tests.chain_helpers import KEYS, Anvil
    from tests.cre.workflows.harness import WORKFLOWS
    from tests.helpers import REPO

    built = json.loads(subprocess.run(["node", str(WORKFLOWS / "compile_sol.js"), str(WORKFLOWS / "ReportReceiver.sol")],
                                      cwd=REPO, capture_output=True, text=True, check=True).stdout)
    don, impostor = Account.create(), Account.create()
    anvil = Anvil(block_time=None).start()
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))

        def deploy(name, *args):
            contract = w3.eth.contract(abi=built[name]["abi"], bytecode=built[name]["bytecode"])
            receipt = w3.eth.wait_for_transaction_receipt(
                contract.constructor(*args).transact({"from": w3.eth.accounts[0]}))
            return w3.eth.contract(address=receipt["contractAddress"], abi=built[name]["abi"])

        forwarder, receiver = deploy("TestReportForwarder", don.address), deploy("TestReportReceiver")
        policy = EgressPolicy(["127.0.0.1/32"], max_response_bytes=4096)
        session = policy.session()
        selector = 7759470850252068959
        signer = don if signer_is_the_dons else impostor
        caps = Capabilities(asyncio.get_running_loop(), egress=policy, session=session, chains={selector: anvil.url},
                            secrets={("main", "PRICE_API_KEY"): "k"},
                            reporter=Reporter(signer.key.hex(), "ab" * 32, "price-feed"),
                            forwarders={selector: (forwarder.address, KEYS[1])})
        try:
            config = json.dumps({"priceUrl": prices.url, "receiver": receiver.address}).encode()
            loaded = await runtime.load("price-feed", PRICE_FEED, config, caps)
            outcome = await runtime.run(loaded, 0, cron_payload(datetime.now(timezone.utc)), caps, "e6" * 32)
        finally:
            await caps.close()
            await session.close()
        kept = {name: getattr(receiver.functions, name)().call() for name in ("reports", "lastReport", "lastMetadata")}
        return outcome, kept, don
    finally:
        anvil.stop()


@pytest.mark.docker  # outer ring: a real anvil
async def test_a_signed_report_reaches_the_receiver_through_the_forwarder_on_anvil(runtime, prices):
    outcome, receiver, don = await report_on_anvil(runtime, prices, signer_is_the_dons=True)
    assert outcome.ok, outcome.failure
    assert any(line.startswith("report written: status=2 tx=0x") for line in outcome.logs), outcome.logs
    assert receiver["reports"] == 1
    assert receiver["lastReport"] == (12350).to_bytes(32, "big")  # 123.50 in cents
    metadata = receiver["lastMetadata"]
    assert metadata[:32] == bytes.fromhex("ab" * 32)
    assert metadata[42:62] == bytes.fromhex(don.address[2:])  # the owner defaults to the DON signer


@pytest.mark.docker  # outer ring: a real anvil
async def test_a_report_not_signed_by_the_forwarders_don_is_reverted_and_the_workflow_is_told(runtime, prices):
    outcome, receiver, _ = await report_on_anvil(runtime, prices, signer_is_the_dons=False)
    assert outcome.ok, outcome.failure  # the write happened; its transaction reverted
    assert any(line.startswith("report written: status=1 tx=0x") for line in outcome.logs), outcome.logs
    assert receiver["reports"] == 0


def test_log_bytes_of_one_execution_are_bounded_in_total(engine, chain):
    line = "x" * 4000
    outcome = run_js(engine, chain, f"""
        switchModes(1); for (let i = 0; i < 500; i++) log('{line}');
        sendResponse({OK_RESPONSE});""", Limits(max_logs_per_mode=1000, max_log_bytes=4096, max_log_total_bytes=64 << 10))
    assert sum(len(entry) for entry in outcome.logs) <= 64 << 10
    assert outcome.logs_dropped == 500 - len(outcome.logs)
