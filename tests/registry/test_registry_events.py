"""The node as relayer watches chains for event-triggered configs (real anvil, real containers)."""

from __future__ import annotations

import sqlite3
import time

import pytest
from eth_account import Account
from web3 import Web3

from tests.chain_helpers import KEYS, Anvil, RpcProxy, artifact
from tests.helpers import NodeProcess, container_entry
from tests.registry.test_registry import CID, OWNER, SOLVERS, TOKEN_IN, TOKEN_OUT, WALLET, config_signature, sign_digest, sign_in

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRANSFER = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
ANVIL_CHAIN = 31337


class Token:
    """MockUSDC on anvil: its mint emits Transfer(0, to, amount), approve emits Approval."""

    def __init__(self, url: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(url))
        art = artifact("MockUSDC")
        account = Account.from_key(KEYS[0])
        tx = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor().build_transaction(
            {"from": account.address, "nonce": self.w3.eth.get_transaction_count(account.address, "pending")})
        receipt = self._send(tx)
        self.contract = self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    def _send(self, tx):
        signed = Account.from_key(KEYS[0]).sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction),
                                                           timeout=30)
        assert receipt["status"] == 1
        return receipt

    def call(self, fn):
        sender = Account.from_key(KEYS[0]).address
        return self._send(fn.build_transaction(
            {"from": sender, "nonce": self.w3.eth.get_transaction_count(sender, "pending")}))

    def mint(self, amount: int = 5):
        return self.call(self.contract.functions.mint(WALLET, amount))


def relayer_node(path, anvil: Anvil, confirmations: int, rpc_url: str | list[str] | None = None) -> NodeProcess:
    return NodeProcess(path, [container_entry("strategy", "strategy")], {
        "docker": {"stop_on_exit": False},
        "registry": {"relayer_key": "0x" + Account.create().key.hex(), "tasks": {CID: {"containers": ["strategy"], "owners": [OWNER.address]}},
                     "chains": {ANVIL_CHAIN: {"rpc_url": rpc_url or anvil.url, "confirmations": confirmations,
                                              "poll_interval": 0.2}}}})


def event_config(node: NodeProcess, owner: dict, token: Token, version: str, topic: str = TRANSFER) -> tuple[str, str]:
    """A task with a config fired by the token's events with topic0 `topic`: (task id, config id)."""
    http = node.http()
    task_id = http.post("/api/tasks", {"cid": CID, "version": version, "name": "On transfer"}, headers=owner).json["taskId"]
    project_id = http.post("/api/projects", {"name": f"events {version}"}, headers=owner).json["projectId"]
    http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=owner)
    body = {"name": "on-transfer", "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": 1,
            "trigger": {"event": {"chainId": ANVIL_CHAIN, "address": token.contract.address, "topic": topic}},
            "data": {"from": WALLET, "tokenIn": TOKEN_IN, "tokenOut": TOKEN_OUT, "amountIn": "100"}}
    body["signature"] = config_signature(OWNER, project_id, task_id, body)
    created = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body)
    assert created.status == 201, created.body
    return task_id, created.json["configId"]


def executions(node: NodeProcess, owner: dict, task_id: str) -> list[dict]:
    return node.http().get(f"/api/tasks/{task_id}/executions?limit=200", headers=owner).json["data"]


def wait_executions(node, owner, task_id, n: int, timeout: float = 40) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = executions(node, owner, task_id)
        if len(found) >= n:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{len(executions(node, owner, task_id))} executions, wanted {n}:\n{node.log()[-3000:]}")


def wait_log(node: NodeProcess, text: str, count: int = 1, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while node.log().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.log().count(text) >= count, f"no {text} in the log:\n{node.log()[-3000:]}"


@pytest.fixture
def anvil():
    chain = Anvil(block_time=1).start()
    yield chain
    chain.stop()


def test_a_chain_event_fires_each_config_watching_it_once(docker_engine, tmp_path, anvil):
    token = Token(anvil.url)
    node = relayer_node(tmp_path, anvil, confirmations=1).start()
    try:
        owner = sign_in(node, OWNER)
        first, _ = event_config(node, owner, token, "1.0.0")
        second, _ = event_config(node, owner, token, "1.0.1")  # the same event feeds another task
        approval = "0x" + Web3.keccak(text="Approval(address,address,uint256)").hex().removeprefix("0x")
        approvals, _ = event_config(node, owner, token, "1.0.2", topic=approval)
        receipt = token.mint()
        [log_entry] = receipt["logs"]
        for task_id in (first, second):
            [execution] = wait_executions(node, owner, task_id, 1)
            tx_hash = "0x" + receipt["transactionHash"].hex().removeprefix("0x")
            assert execution["trigger"] == {"chainId": ANVIL_CHAIN, "transactionHash": tx_hash,
                                            "logIndex": log_entry["logIndex"]}
            assert execution["intents"] == 1 and execution["status"] == "confirmed"
            detail = node.http().get(f"/api/tasks/{task_id}/executions/{execution['executionId']}", headers=owner).json
            assert detail["intents"][0]["data"]["amountIn"] == "100" and detail["intents"][0]["status"] == "submitted"
        time.sleep(3)  # more blocks pass: nothing fires again, and the Approval config never fired
        assert len(executions(node, owner, first)) == 1 and len(executions(node, owner, second)) == 1
        assert executions(node, owner, approvals) == []
    finally:
        node.stop()
        node.remove_containers()


def test_a_restart_that_rescans_the_event_does_not_fire_it_twice(docker_engine, tmp_path, anvil):
    token = Token(anvil.url)
    node = relayer_node(tmp_path, anvil, confirmations=1).start()
    try:
        owner = sign_in(node, OWNER)
        task_id, config_id = event_config(node, owner, token, "2.0.0")
        receipt = token.mint()
        wait_executions(node, owner, task_id, 1)
        node.stop(9)  # SIGKILL, then pretend it died before its cursor moved past the event
        with sqlite3.connect(tmp_path / "node.db") as db:
            db.execute("UPDATE reg_watch_cursor SET block = ? WHERE chain_id = ?",
                       (receipt["blockNumber"] - 1, ANVIL_CHAIN))
        node.start()
        wait_log(node, "registry.event_already_fired")
        owner = sign_in(node, OWNER)
        assert len(executions(node, owner, task_id)) == 1
        token.mint()  # the watcher is live after the restart: a new event fires once
        assert len(wait_executions(node, owner, task_id, 2)) == 2
        time.sleep(2)
        assert len(executions(node, owner, task_id)) == 2
    finally:
        node.stop()
        node.remove_containers()


def test_a_reorg_that_removes_the_event_leaves_no_valid_execution(docker_engine, tmp_path, anvil):
    token = Token(anvil.url)
    node = relayer_node(tmp_path, anvil, confirmations=0).start()
    try:
        owner = sign_in(node, OWNER)
        task_id, _ = event_config(node, owner, token, "3.0.0")
        receipt = token.mint()
        [execution] = wait_executions(node, owner, task_id, 1)
        detail = node.http().get(f"/api/tasks/{task_id}/executions/{execution['executionId']}", headers=owner).json
        intent_id = detail["intents"][0]["intentId"]
        time.sleep(1.5)  # the watcher has seen blocks after the event's
        depth = token.w3.eth.block_number - receipt["blockNumber"] + 1
        token.w3.provider.make_request("anvil_reorg", [depth, []])  # the event's block and those after, without it
        wait_log(node, "registry.event_reverted")
        [after] = executions(node, owner, task_id)
        assert after["status"] == "reverted"
        intent = node.http().get(f"/api/intents/{intent_id}").json
        assert intent["status"] == "reverted"
        data = {"amountOut": "999999999"}
        proposal = node.http().post(f"/api/intents/{intent_id}/proposals", {
            "solver": SOLVERS[0].address, "data": data,
            "signature": sign_digest(SOLVERS[0], {"intentId": intent_id, "solver": SOLVERS[0].address, "data": data})})
        assert proposal.status == 409, proposal.body
        time.sleep(3)  # the event is gone from the chain: it does not fire again
        assert len(executions(node, owner, task_id)) == 1
    finally:
        node.stop()
        node.remove_containers()


def test_the_watcher_rides_out_an_rpc_outage(docker_engine, tmp_path):
    chain = Anvil(block_time=1, state=tmp_path / "anvil-state.json").start()
    token = Token(chain.url)
    node = relayer_node(tmp_path / "node", chain, confirmations=1).start()
    try:
        owner = sign_in(node, OWNER)
        task_id, _ = event_config(node, owner, token, "4.0.0")
        token.mint()
        wait_executions(node, owner, task_id, 1)
        chain.stop()  # anvil dumps its state on exit
        wait_log(node, "chain.rpc_retry")
        chain.start()  # same port, same state
        token.mint()
        assert len(wait_executions(node, owner, task_id, 2)) == 2
        time.sleep(2)
        assert len(executions(node, owner, task_id)) == 2
        assert node.proc.poll() is None
    finally:
        node.stop()
        node.remove_containers()
        chain.stop()


def test_the_watcher_keeps_firing_on_the_second_rpc_when_the_first_dies(docker_engine, tmp_path, anvil):
    token = Token(anvil.url)
    first, second = RpcProxy(anvil.url).start(), RpcProxy(anvil.url).start()
    node = relayer_node(tmp_path, anvil, confirmations=1, rpc_url=[first.url, second.url]).start()
    try:
        owner = sign_in(node, OWNER)
        task_id, _ = event_config(node, owner, token, "5.0.0")
        token.mint()
        wait_executions(node, owner, task_id, 1)
        assert first.calls["eth_getLogs"] >= 1 and second.calls["eth_getLogs"] == 0  # reads stay on the first
        first.set_mode("down")
        token.mint()
        assert len(wait_executions(node, owner, task_id, 2, timeout=20)) == 2
        assert second.calls["eth_getLogs"] >= 1
        time.sleep(2)
        assert len(executions(node, owner, task_id)) == 2
        assert "chain.rpc_switched" in node.log() and node.proc.poll() is None
        # Each RPC's state is visible to the operator: the status document, the metrics, the page.
        [watched] = node.http().get("/api/node/status").json["registry_chains"]
        states = {r["rpc"]: r["state"] for r in watched["rpcs"]}
        assert watched["chain_id"] == ANVIL_CHAIN and len(states) == 2, watched
        assert states[f"http://127.0.0.1:{second.port}"] == "up" and states[f"http://127.0.0.1:{first.port}"] == "down"
        metrics = node.http().get("/metrics").body.decode()
        assert (f'node_registry_rpc_endpoint_up{{chain_id="{ANVIL_CHAIN}",rpc="http://127.0.0.1:{first.port}"}} 0.0'
                in metrics), metrics[-3000:]
    finally:
        node.stop()
        node.remove_containers()
        first.stop()
        second.stop()
