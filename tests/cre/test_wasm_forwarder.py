"""The shipped CreForwarder (contracts/src/CreForwarder.sol), deployed by `node-daemon deploy
--what cre` on anvil: the command prints the cre.wasm config it needs, and reports the node signs
(node/cre/wasm/reports.py) reach a receiver through it once per execution, while reports signed
by another key or sent again are reverted."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import aiohttp
import pytest
import yaml
from eth_account import Account

from node.tools.deploy import deploy_main
from node.config import parse_config
from node.cre.wasm import messages as pb
from node.cre.wasm.reports import TX_REVERTED, TX_SUCCESS, Reporter, ReportWriter
from tests.chain_helpers import KEYS, Anvil
from tests.cre.workflows.harness import WORKFLOWS
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.docker]  # outer ring: a real anvil

DON = Account.create()
WORKFLOW_ID = "cd" * 32


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    anvil = Anvil(block_time=None).start()
    out = tmp_path_factory.mktemp("deploy") / "cre.json"
    lines: list[str] = []
    os.environ["CREWASM_TEST_DEPLOYER"] = KEYS[0]
    try:
        dep = deploy_main(anvil.url, "CREWASM_TEST_DEPLOYER", "cre", out, don=DON.address, out=lines.append)
        yield anvil, dep, lines, out
    finally:
        os.environ.pop("CREWASM_TEST_DEPLOYER", None)
        anvil.stop()


def test_deploy_what_cre_deploys_the_forwarder_and_prints_its_cre_wasm_config(deployed):
    anvil, dep, lines, out = deployed
    address = dep.address("CreForwarder")
    printed = "\n".join(lines)
    assert f"CreForwarder: deployed at {address}" in printed
    shown = yaml.safe_load("\n".join(lines[lines.index("for CRE workflows' WriteReport, in config.yaml:") + 1:]))
    assert shown["cre"]["wasm"]["forwarders"] == {"anvil-devnet": address}
    snippet = yaml.safe_load(out.with_suffix(".yaml").read_text())
    config = parse_config(snippet, env={"CRE_DON_KEY": DON.key.hex(), "CRE_RUNTIME_API_KEY": "k"})
    assert config.cre.wasm.forwarders == {"anvil-devnet": address}
    assert str(config.cre.wasm.chains["anvil-devnet"]).rstrip("/") == anvil.url
    assert config.cre.wasm.forwarder_selectors()[7759470850252068959][0] == address


@pytest.fixture(scope="module")
def receiver(deployed):
    from web3 import Web3

    anvil = deployed[0]
    built = json.loads(subprocess.run(["node", str(WORKFLOWS / "compile_sol.js"), str(WORKFLOWS / "ReportReceiver.sol")],
                                      cwd=REPO, capture_output=True, text=True, check=True).stdout)["TestReportReceiver"]
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    tx = w3.eth.contract(abi=built["abi"], bytecode=built["bytecode"]).constructor().transact({"from": w3.eth.accounts[0]})
    return w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx)["contractAddress"], abi=built["abi"])


async def write(deployed, receiver, signer: Account, execution_id: str, payload: bytes) -> Any:
    """A report as a workflow's runtime.report makes it, written as its EVM WriteReport does."""
    anvil, dep = deployed[0], deployed[1]
    report = Reporter(signer.key.hex(), WORKFLOW_ID, "feed").report(
        pb.message("sdk.v1alpha.ReportRequest")(encoded_payload=payload, encoder_name="evm"), execution_id)
    request = pb.message("capabilities.blockchain.evm.v1alpha.WriteReportRequest")(
        receiver=bytes.fromhex(receiver.address[2:]))
    request.report.CopyFrom(report)
    request.gas_config.gas_limit = 500_000
    async with aiohttp.ClientSession() as session:
        async def rpc(url: str, method: str, params: list[Any]) -> Any:
            async with session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) as r:
                return (await r.json())["result"]

        return await ReportWriter(rpc, anvil.url, dep.address("CreForwarder"), KEYS[1]).write(pb.pack(request))


async def test_a_report_signed_by_the_don_key_reaches_the_receiver_through_the_shipped_forwarder(deployed, receiver):
    before = receiver.functions.reports().call()
    reply = await write(deployed, receiver, DON, "01" * 32, (77).to_bytes(32, "big"))
    assert reply.tx_status == TX_SUCCESS
    assert receiver.functions.reports().call() == before + 1
    assert receiver.functions.lastReport().call() == (77).to_bytes(32, "big")
    assert receiver.functions.lastMetadata().call()[:32] == bytes.fromhex(WORKFLOW_ID)


async def test_the_same_executions_report_sent_again_is_reverted_and_not_delivered_twice(deployed, receiver):
    assert (await write(deployed, receiver, DON, "02" * 32, b"\x01" * 32)).tx_status == TX_SUCCESS
    count = receiver.functions.reports().call()
    again = await write(deployed, receiver, DON, "02" * 32, b"\x01" * 32)  # an execution run again
    assert again.tx_status == TX_REVERTED
    assert receiver.functions.reports().call() == count


async def test_a_report_signed_by_another_key_is_reverted(deployed, receiver):
    count = receiver.functions.reports().call()
    reply = await write(deployed, receiver, Account.create(), "03" * 32, b"\x02" * 32)
    assert reply.tx_status == TX_REVERTED
    assert receiver.functions.reports().call() == count
