"""The chain subsystem against a real anvil chain and real containers."""

from __future__ import annotations

import signal
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from node.chain.codec import container_id, delegate_typed_data
from tests.chain_helpers import KEYS, Anvil, chain_config, decode_output, deploy
from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def containers():
    return [container_entry("echo", "echo"), container_entry("upper", "transform", env={"MODE": "upper"}),
            container_entry("stats", "numeric")]


@pytest.fixture(scope="module")
def node(docker_engine, tmp_path_factory, anvil, dep):
    proc = NodeProcess(tmp_path_factory.mktemp("chain"), containers(), {
        "chain": chain_config(anvil.url, dep, KEYS[1], pipelines=[["upper", "echo"]])})
    proc.start()
    yield proc
    proc.stop()
    proc.remove_containers()


def test_one_shot_request_receives_the_chain_output(node, dep):
    receipt = dep.send(dep.consumer.functions.requestCompute("upper,echo", b"hello chain", 1))
    sub_id = dep.created_id(receipt)
    [delivery] = dep.wait_deliveries(sub_id, 1)
    assert decode_output(delivery["output"]) == b"hello chain".hex().upper()
    assert delivery["node"] == Account.from_key(KEYS[1]).address and delivery["interval"] == 1
    info = node.http().get("/info").json
    assert info["chain"] == {"enabled": True, "address": Account.from_key(KEYS[1]).address, "payment_address": None}
    # the chain job behind the delivery is queryable
    # (the node records "delivered" once it has seen the receipt, a moment after the consumer got it)
    deadline = time.monotonic() + 15
    while True:
        [row] = node.http().get(f"/api/chain/deliveries?subscription={sub_id}").json["deliveries"]
        if row["status"] != "sending" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert row["status"] == "delivered" and row["tx_hash"].startswith("0x")
    [job] = node.http().get(f"/api/jobs?id={row['job_id']}&intermediate=true").json
    assert job["status"] == "success" and job["result"]["output"] == b"hello chain".hex().upper()
    assert job["intermediate_results"][0]["container"] == "upper"
    for bad in ("%C2%B2", "9" * 5000, "-1"):  # a non-ASCII digit and a huge number were a 500
        resp = node.http().get(f"/api/chain/deliveries?subscription={bad}")
        assert resp.status == 400 and "subscription" in resp.json["error"], (bad, resp.body[:200])
    time.sleep(2)
    assert len(dep.deliveries(sub_id)) == 1  # delivered once


def test_recurring_subscription_gets_exactly_n_deliveries(node, dep):
    receipt = dep.send(dep.consumer.functions.subscribe("echo", 3, 2, 1, b"tick"))
    sub_id = dep.created_id(receipt)
    found = dep.wait_deliveries(sub_id, 3, timeout=30)
    time.sleep(3)  # a fourth interval would have come by now
    found = dep.deliveries(sub_id)
    assert [d["interval"] for d in found] == [1, 2, 3]
    assert [decode_output(d["output"]) for d in found] == [(b"tick:" + str(i).encode()).hex() for i in (1, 2, 3)]


def test_lazy_subscription_result_goes_to_the_inbox(node, dep):
    sub_id = dep.created_id(dep.send(dep.consumer.functions.subscribeLazy("echo", 1, 0, 1, b"lazy")))
    [delivery] = dep.wait_deliveries(sub_id, 1)
    assert delivery["output"] == b"" and delivery["container_id"] == container_id(["echo"])
    item = dep.inbox.functions.read(delivery["container_id"], delivery["node"], delivery["index"]).call()
    assert item[1] == sub_id and item[2] == 1
    assert decode_output(item[4]) == (b"lazy:1").hex()


def test_container_failure_is_not_delivered_and_is_logged(node, dep):
    receipt = dep.send(dep.consumer.functions.requestCompute("stats", b"no numbers here", 1))
    sub_id = dep.created_id(receipt)
    deadline = time.monotonic() + 15
    while "chain.container_failed" not in node.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"subscription={sub_id}" in node.log() and "chain.container_failed" in node.log()
    time.sleep(3)
    assert dep.deliveries(sub_id) == []


def test_unserved_containers_are_ignored(node, dep):
    receipt = dep.send(dep.consumer.functions.requestCompute("echo,upper", b"x", 1))  # not a configured pipeline
    sub_id = dep.created_id(receipt)
    time.sleep(3)
    assert dep.deliveries(sub_id) == []


def test_delegated_subscription_via_the_rest_api(node, dep):
    signer = Account.from_key(dep.signer_key)
    chain_id = dep.w3.eth.chain_id
    now = dep.w3.eth.get_block("latest")["timestamp"]
    sub = {"owner": dep.consumer.address, "activeAt": now, "period": 0, "frequency": 1, "redundancy": 1,
           "containerId": container_id(["upper"]), "lazy": False, "verifier": "0x" + "00" * 20,
           "paymentAmount": 0, "paymentToken": "0x" + "00" * 20, "wallet": "0x" + "00" * 20}
    nonce, expiry = 7, int(time.time()) + 600
    signed = signer.sign_message(encode_typed_data(full_message=delegate_typed_data(
        chain_id, dep.coordinator.address, nonce, expiry, sub)))
    body = {"subscription": {"owner": sub["owner"], "active_at": now, "period": 0, "frequency": 1, "redundancy": 1,
                             "containers": "0x" + sub["containerId"].hex(), "lazy": False,
                             "verifier": sub["verifier"], "payment_amount": 0, "payment_token": sub["paymentToken"],
                             "wallet": sub["wallet"]},
            "signature": {"nonce": nonce, "expiry": expiry, "v": signed.v, "r": signed.r, "s": signed.s},
            "data": {"msg": "delegated"}}
    resp = node.http().post("/api/jobs", body)
    assert resp.status == 200 and resp.json == {}
    deadline = time.monotonic() + 20
    key = Web3.keccak(dep.w3.codec.encode(["address", "uint32"], [sub["owner"], nonce]))
    while time.monotonic() < deadline and dep.coordinator.functions.delegateCreatedIds(key).call() == 0:
        time.sleep(0.25)
    sub_id = dep.coordinator.functions.delegateCreatedIds(key).call()
    assert sub_id > 0
    [delivery] = dep.wait_deliveries(sub_id, 1)
    assert decode_output(delivery["output"]) == {"msg": "DELEGATED"}
    forged = {**body, "signature": {**body["signature"], "nonce": 8}}
    bad = node.http().post("/api/jobs", forged)
    assert bad.status == 401 and "signer" in bad.json["error"]


def test_redundancy_two_with_two_node_wallets(docker_engine, tmp_path, anvil, dep, node):
    second = NodeProcess(tmp_path / "second", [container_entry("echo", "echo")],
                         {"chain": chain_config(anvil.url, dep, KEYS[2], start_block=dep.w3.eth.block_number)})
    second.start()
    try:
        receipt = dep.send(dep.consumer.functions.requestCompute("echo", b"both", 2))
        sub_id = dep.created_id(receipt)
        found = dep.wait_deliveries(sub_id, 2)
        assert {d["node"] for d in found} == {Account.from_key(KEYS[1]).address, Account.from_key(KEYS[2]).address}
        assert sorted(d["redundancy"] for d in found) == [1, 2]
    finally:
        second.stop()
        second.remove_containers()


def test_restart_mid_subscription_no_duplicate_no_gap(docker_engine, tmp_path, anvil, dep):
    proc = NodeProcess(tmp_path / "restart", [container_entry("echo", "echo")], {
        "chain": chain_config(anvil.url, dep, KEYS[3], start_block=dep.w3.eth.block_number),
        "docker": {"stop_on_exit": False}})
    proc.start()
    try:
        receipt = dep.send(dep.consumer.functions.subscribe("echo", 4, 5, 1, b"r"))
        sub_id = dep.created_id(receipt)
        dep.wait_deliveries(sub_id, 1, timeout=20)
        proc.stop(signal.SIGTERM)
        proc.start()
        found = dep.wait_deliveries(sub_id, 4, timeout=40)
        time.sleep(2)
        found = dep.deliveries(sub_id)
        assert [d["interval"] for d in found] == [1, 2, 3, 4]
        assert "resumed_subscriptions=1" in proc.log()
    finally:
        proc.stop()
        proc.remove_containers()


def test_rpc_outage_is_survived(docker_engine, tmp_path):
    state = tmp_path / "anvil-state.json"
    chain = Anvil(block_time=1, state=state).start()
    dep = deploy(chain.url)
    proc = NodeProcess(tmp_path / "outage", [container_entry("echo", "echo")],
                       {"chain": chain_config(chain.url, dep, KEYS[1])})
    proc.start()
    try:
        sub1 = dep.created_id(dep.send(dep.consumer.functions.requestCompute("echo", b"before", 1)))
        dep.wait_deliveries(sub1, 1)
        chain.stop()  # anvil dumps its state on exit
        time.sleep(3)
        assert "chain.rpc_retry" in proc.log() or "chain.processor_error" in proc.log()
        chain.start()  # same port, same state: the deployment is still there
        sub2 = dep.created_id(dep.send(dep.consumer.functions.requestCompute("echo", b"after", 1)))
        [delivery] = dep.wait_deliveries(sub2, 1, timeout=40)
        assert decode_output(delivery["output"]) == b"after".hex()
        assert len(dep.deliveries(sub1)) == 1
    finally:
        proc.stop()
        proc.remove_containers()
        chain.stop()


def test_reorg_deeper_than_confirmations_does_not_deliver_twice(docker_engine, tmp_path):
    chain = Anvil(block_time=1).start()
    dep = deploy(chain.url)
    proc = NodeProcess(tmp_path / "reorg", [container_entry("echo", "echo")],
                       {"chain": chain_config(chain.url, dep, KEYS[1])})  # 0 confirmations
    proc.start()
    try:
        sub_id = dep.created_id(dep.send(dep.consumer.functions.requestCompute("echo", b"reorg me", 1)))
        dep.wait_deliveries(sub_id, 1)
        time.sleep(1.5)  # the listener has seen the blocks after the delivery
        fulfilled = dep.coordinator.events.SubscriptionFulfilled.get_logs(from_block=0)
        delivery_block = [e for e in fulfilled if e["args"]["id"] == sub_id][0]["blockNumber"]
        depth = dep.w3.eth.block_number - delivery_block + 1
        dep.w3.provider.make_request("anvil_reorg", [depth, []])  # replace the delivery's block and those after
        deadline = time.monotonic() + 30
        while "chain.reorg" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "chain.reorg" in proc.log()
        found = dep.wait_deliveries(sub_id, 1, timeout=30)
        time.sleep(3)
        assert len(dep.deliveries(sub_id)) == 1
        assert decode_output(found[0]["output"]) == b"reorg me".hex()
    finally:
        proc.stop()
        proc.remove_containers()
        chain.stop()
