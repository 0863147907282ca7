"""`node-daemon deploy` of the Infernet SDK's core set: the Registry first, holding the addresses
of the five contracts after it, the six reused or redeployed together, and artifacts built
elsewhere (e.g. by Foundry) deployable through the same path."""

from __future__ import annotations

import json

import pytest
from web3 import Web3

from node.tools.deploy import CORE, Deployer, DeployError
from tests.chain_helpers import ABI_DIR, KEYS, artifact

ANVIL_BLOCK_TIME = None  # blocks mined on demand
pytestmark = pytest.mark.slow


def run(anvil, names, path=None, **kwargs):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    lines: list[str] = []
    artifacts = kwargs.pop("artifacts", None)
    dep = Deployer(w3, w3.eth.chain_id, KEYS[0], out=lines.append, artifacts=artifacts).run(
        names, path, anvil.url, **kwargs)
    return w3, dep, lines


def registry_view(w3, dep) -> dict[str, str]:
    registry = w3.eth.contract(address=dep.address("Registry"), abi=artifact("Registry")["abi"])
    f = registry.functions
    return {"Coordinator": f.COORDINATOR().call(), "Inbox": f.INBOX().call(), "Reader": f.READER().call(),
            "Fee": f.FEE().call(), "WalletFactory": f.WALLET_FACTORY().call()}


def test_the_registry_records_the_addresses_its_siblings_were_deployed_at(anvil, tmp_path):
    w3, dep, _ = run(anvil, ["ExampleConsumer"], tmp_path / "a.json", fee_bps=250)
    assert registry_view(w3, dep) == {n: dep.address(n) for n in CORE[1:]}
    fee = w3.eth.contract(address=dep.address("Fee"), abi=artifact("Fee")["abi"])
    assert fee.functions.FEE().call() == 250 and fee.functions.FEE_RECIPIENT().call() == dep.deployer
    consumer = dep.contracts["ExampleConsumer"]
    assert consumer["args"][0] == dep.address("Registry")


def test_one_changed_core_contract_redeploys_all_six_and_what_uses_them(anvil, tmp_path):
    path = tmp_path / "a.json"
    w3, first, _ = run(anvil, ["ExampleConsumer"], path)
    data = json.loads(path.read_text())
    data["contracts"]["Fee"]["code_hash"] = "0x" + "00" * 32  # as if the Fee at that address were another
    path.write_text(json.dumps(data))
    _, second, lines = run(anvil, ["ExampleConsumer"], path)
    assert any(line.startswith("Fee: not reusing") for line in lines), lines
    assert all(second.address(n) != first.address(n) for n in (*CORE, "ExampleConsumer"))
    assert registry_view(w3, second) == {n: second.address(n) for n in CORE[1:]}
    _, third, lines = run(anvil, ["ExampleConsumer"], path)
    assert sum("(code verified)" in line for line in lines) == 7 and not any("sent" in line for line in lines)
    assert third.contracts == second.contracts


def test_artifacts_built_elsewhere_are_deployed_in_place_of_ours(anvil, tmp_path):
    # Foundry's layout ({"bytecode": {"object": ...}}) under the SDK's name for the Coordinator; a
    # stand-in with the same constructor (the MockVerifier) shows whose code went on chain
    built = tmp_path / "built"
    built.mkdir()
    stand_in = json.loads((ABI_DIR / "MockVerifier.json").read_text())
    (built / "EIP712Coordinator.json").write_text(json.dumps(
        {"abi": stand_in["abi"], "bytecode": {"object": stand_in["bytecode"].removeprefix("0x")}}))
    w3, dep, _ = run(anvil, ["Reader"], tmp_path / "a.json", artifacts=built)
    deployed = w3.eth.contract(address=dep.address("Coordinator"), abi=stand_in["abi"])
    assert deployed.functions.nextValidity().call() is True
    assert registry_view(w3, dep)["Coordinator"] == dep.address("Coordinator")
    # the same artifacts a second time: everything reused
    _, again, lines = run(anvil, ["Reader"], tmp_path / "a.json", artifacts=built)
    assert again.contracts == dep.contracts and not any("sent" in line for line in lines)
    # without them, our Coordinator differs from the one recorded: the core set is deployed again
    _, ours, lines = run(anvil, ["Reader"], tmp_path / "a.json")
    assert any("Coordinator: not reusing" in line and "compiled contract changed" in line for line in lines)
    assert ours.address("Registry") != dep.address("Registry")
    assert bytes(w3.eth.get_code(ours.address("Coordinator"))) != bytes(w3.eth.get_code(dep.address("Coordinator")))


def test_an_unreadable_artifact_is_a_clear_error_before_any_transaction(anvil, tmp_path):
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    block = w3.eth.block_number
    for text in ("{not json", '{"abi": []}', '{"abi": [], "bytecode": {"object": "zz"}}'):
        (tmp_path / "Fee.json").write_text(text)
        with pytest.raises(DeployError, match="Fee.json: not a readable artifact"):
            run(anvil, ["Fee"], tmp_path / "a.json", artifacts=tmp_path)
    assert w3.eth.block_number == block


def test_a_core_set_cut_short_is_deployed_again_whole(anvil, tmp_path):
    path = tmp_path / "a.json"
    w3, first, _ = run(anvil, ["Coordinator"], path)
    data = json.loads(path.read_text())
    del data["contracts"]["Fee"], data["contracts"]["WalletFactory"]  # as if the run had stopped there
    path.write_text(json.dumps(data))
    _, second, _ = run(anvil, ["Coordinator"], path)
    assert set(second.contracts) == set(CORE) and second.address("Registry") != first.address("Registry")
    assert registry_view(w3, second) == {n: second.address(n) for n in CORE[1:]}


def test_a_protocol_fee_above_half_is_refused_before_any_transaction(anvil, tmp_path):
    with pytest.raises(DeployError, match="basis points"):
        run(anvil, ["Coordinator"], tmp_path / "a.json", fee_bps=5001)
    assert not (tmp_path / "a.json").exists()
