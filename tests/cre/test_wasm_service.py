"""CRE workflows on a real node process: `cre.workflows` loads our SDK-built workflow at start,
its cron trigger fires on schedule, its HTTP trigger answers through the API, and every
execution is recorded and listed under /api/cre/wasm."""

from __future__ import annotations

import time

import pytest

from eth_account import Account

from node.cre.gateway import build_request, canonical, make_jwt
from tests.cre.workflows.harness import PRICE_FEED, PriceServer, toolchain
from tests.helpers import NodeProcess, free_port

pytestmark = [pytest.mark.slow]

KEY = "wasm-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BRIDGE_KEY = "bridge-test-key"
SIGNER = Account.create()  # the workflow's one authorized HTTP trigger key
OTHER = Account.create()
WORKFLOW_ID = "ab" * 32


def workflow_entry(price_url: str, schedule: str = "* * * * * *") -> dict:
    return {"name": "price-feed", "file": str(PRICE_FEED), "workflow_id": WORKFLOW_ID,
            "config": {"priceUrl": price_url, "schedule": schedule, "authorizedKey": SIGNER.address},
            "secrets": {"PRICE_API_KEY": "s3cret"}}


@pytest.fixture(scope="module")
def prices():
    server = PriceServer(b"42.25")
    yield server
    server.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, prices):
    toolchain()
    port = free_port()
    proc = NodeProcess(tmp_path_factory.mktemp("crewasm"), [], {
        "cre": {"wasm": {"api_key": KEY, "http_allowed_networks": ["127.0.0.1/32"], "timeout": 20},
                "workflows": [workflow_entry(prices.url)],
                # the app bridge's trigger dispatch, pointed at this node's own gateway route
                "api_key": BRIDGE_KEY, "gateway_url": f"http://127.0.0.1:{port}/api/cre/wasm/gateway",
                "trigger_private_key": SIGNER.key.hex()},
    }, port=port)
    proc.start(timeout=90)
    yield proc
    proc.stop()


def executions(node, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    resp = node.http().get(f"/api/cre/wasm/executions?{qs}", headers=AUTH)
    assert resp.status == 200, resp.json
    return resp.json["data"]["executions"]


def test_the_node_lists_the_configured_workflow_with_its_triggers(node):
    resp = node.http().get("/api/cre/wasm/workflows", headers=AUTH)
    assert resp.status == 200
    (workflow,) = resp.json["data"]["workflows"]
    assert workflow["name"] == "price-feed"
    assert [t["kind"] for t in workflow["triggers"]] == ["cron", "http"]
    assert workflow["triggers"][0]["schedule"] == "* * * * * *"


def test_cron_trigger_fires_on_schedule_and_each_execution_is_recorded(node):
    deadline = time.monotonic() + 30
    done: list[dict] = []
    while time.monotonic() < deadline and not done:
        done = [e for e in executions(node, workflow="price-feed") if e["trigger"]["kind"] == "cron"
                and e["status"] != "running"]
        time.sleep(0.5)
    assert done, f"no cron execution within 30s:\n{node.log()[-3000:]}"
    record = done[0]
    assert (done[0]["status"], done[0]["logCount"], done[0]["callCount"]) == ("succeeded", 2, 2)
    assert "logs" not in done[0]  # a listing stays small: the logs come with the one execution
    resp = node.http().get(f"/api/cre/wasm/executions/{done[0]['executionId']}", headers=AUTH)
    record = resp.json["data"]
    assert record["status"] == "succeeded", record
    assert record["result"] == "price=42.25 onchain=none"
    assert "median price=42.25" in record["logs"]
    assert [c["capability"] for c in record["calls"]] == ["http-actions@1.0.0-alpha", "consensus@1.0.0-alpha"]
    assert "scheduled" in record["trigger"] and record["durationMs"] > 0


def test_executions_show_in_the_nodes_metrics_and_status_document(node):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not [e for e in executions(node) if e["status"] == "succeeded"]:
        time.sleep(0.5)
    scrape = node.http().get("/metrics")
    assert scrape.status == 200
    text = scrape.body.decode()
    assert 'node_cre_workflow_executions_total{outcome="succeeded",trigger="cron",workflow="price-feed"}' in text
    assert 'node_cre_workflow_duration_seconds_count{workflow="price-feed"}' in text
    part: dict = {}
    while time.monotonic() < deadline + 5 and not part.get("executions"):  # the status is sampled (<= 1 s old)
        status = node.http().get("/api/node/status")
        assert status.status == 200
        (part,) = status.json["cre_workflows"]
        time.sleep(0.3)
    assert (part["name"], part["workflowId"], part["triggers"]) == ("price-feed", WORKFLOW_ID, ["cron", "http"])
    assert part["executions"] >= 1 and part["lastExecution"]["status"] in ("running", "succeeded")


def test_http_trigger_runs_the_workflow_and_answers_with_the_execution_record(node):
    resp = node.http().post("/api/cre/wasm/workflows/price-feed/trigger", {"input": {"q": "ping"}}, headers=AUTH)
    assert resp.status == 200, resp.json
    record = resp.json["data"]
    assert (record["status"], record["result"]) == ("succeeded", 'echo: {"q":"ping"}')
    again = node.http().get(f"/api/cre/wasm/executions/{record['executionId']}", headers=AUTH)
    assert again.status == 200 and again.json["data"] == record


def test_wasm_routes_refuse_a_missing_or_wrong_bearer(node):
    assert node.http().get("/api/cre/wasm/executions").status == 401
    wrong = node.http().post("/api/cre/wasm/workflows/price-feed/trigger", {"input": {}},
                             headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert wrong.json["success"] is False


def test_http_trigger_without_input_is_a_400_naming_input(node):
    resp = node.http().post("/api/cre/wasm/workflows/price-feed/trigger", {"q": 1}, headers=AUTH)
    assert resp.status == 400
    assert resp.json["error"].startswith("input:")


def test_unknown_workflow_and_execution_are_404(node):
    assert node.http().post("/api/cre/wasm/workflows/nope/trigger", {"input": {}}, headers=AUTH).status == 404
    assert node.http().get("/api/cre/wasm/executions/" + "0" * 64, headers=AUTH).status == 404


def test_bad_status_filter_is_a_400_naming_status(node):
    resp = node.http().get("/api/cre/wasm/executions?status=done", headers=AUTH)
    assert resp.status == 400 and resp.json["error"].startswith("status:")


def test_a_workflow_that_does_not_build_stops_the_start_with_one_line_naming_it(tmp_path, prices):
    broken = tmp_path / "wf" / "broken.ts"
    broken.parent.mkdir()
    broken.write_text("import { cre } from '@chainlink/cre-sdk'\nthis is not typescript\n")
    proc = NodeProcess(tmp_path / "node", [], {
        "cre": {"workflows": [{"name": "broken", "file": str(broken)}]},
    })
    proc.start_background()
    assert proc.proc.wait(90) == 1
    assert "cre.workflows[broken]" in proc.log()


def gateway_post(node, body: dict, signer=SIGNER, raw: bytes | None = None):
    data = raw if raw is not None else canonical(body)
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {make_jwt(canonical(body), signer.key.hex())}"}
    return node.http().request("POST", "/api/cre/wasm/gateway", raw=data, headers=headers)


def test_gateway_form_trigger_signed_by_the_authorized_key_runs_the_workflow(node):
    resp = gateway_post(node, build_request(WORKFLOW_ID, "req-1", {"q": "jwt"}))
    assert resp.status == 200, resp.json
    assert resp.json["id"] == "req-1"
    result = resp.json["result"]
    assert (result["status"], result["result"], result["workflowID"]) == ("succeeded", 'echo: {"q":"jwt"}',
                                                                           WORKFLOW_ID)


def test_gateway_form_trigger_refuses_a_signer_the_workflow_did_not_authorize(node):
    resp = gateway_post(node, build_request(WORKFLOW_ID, "req-2", {"q": 1}), signer=OTHER)
    assert resp.status == 403
    assert OTHER.address in resp.json["error"]


def test_gateway_form_trigger_refuses_a_replayed_jwt(node):
    body = build_request(WORKFLOW_ID, "req-3", {"q": 1})
    headers = {"Authorization": f"Bearer {make_jwt(canonical(body), SIGNER.key.hex())}"}
    first = node.http().request("POST", "/api/cre/wasm/gateway", raw=canonical(body), headers=headers)
    again = node.http().request("POST", "/api/cre/wasm/gateway", raw=canonical(body), headers=headers)
    assert first.status == 200
    assert again.status == 401 and "jti" in again.json["error"]


def test_gateway_form_trigger_refuses_a_body_that_is_not_the_one_signed(node):
    signed = build_request(WORKFLOW_ID, "req-4", {"amount": 1})
    tampered = canonical(build_request(WORKFLOW_ID, "req-4", {"amount": 1000}))
    resp = gateway_post(node, signed, raw=tampered)
    assert resp.status == 401 and "digest" in resp.json["error"]


def test_the_app_bridge_trigger_dispatch_runs_the_workflow_on_this_same_node(node):
    before = len(executions(node, workflow="price-feed", limit=500))
    resp = node.http().post("/api/cre/runtime/trigger", {"workflowId": WORKFLOW_ID, "input": {"from": "app"}},
                            headers={"Authorization": f"Bearer {BRIDGE_KEY}"})
    assert resp.status == 200, resp.json
    assert resp.json["data"]["accepted"] is True
    http_runs = [e for e in executions(node, workflow="price-feed", limit=500) if e["trigger"]["kind"] == "http"]
    assert any(e["result"] == 'echo: {"from":"app"}' for e in http_runs)
    assert len(executions(node, workflow="price-feed", limit=500)) > before


# -- EVM log trigger ------------------------------------------------------------------------------

# A contract whose every call emits one log (PUSH1 0 PUSH1 0 LOG0 STOP), behind init code that
# returns those 6 bytes.
EMITTER = "0x6560006000a0006000526006601af3"


@pytest.mark.docker  # outer ring: a real anvil
def test_an_evm_log_trigger_fires_once_per_log_across_a_restart(tmp_path, prices):
    from web3 import Web3

    from tests.chain_helpers import Anvil

    toolchain()
    anvil = Anvil(block_time=None).start()
    proc = None
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        sender = w3.eth.accounts[0]
        emitter = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_transaction({"from": sender, "data": EMITTER}))["contractAddress"]
        entry = workflow_entry(prices.url)
        entry["config"]["logAddress"] = emitter
        entry["cron"] = False
        proc = NodeProcess(tmp_path / "node", [], {"cre": {
            "wasm": {"api_key": KEY, "chains": {"anvil-devnet": anvil.url}, "log_poll_interval": 0.2},
            "workflows": [entry]}})
        proc.start(timeout=90)

        def emit() -> str:
            return "0x" + bytes(w3.eth.wait_for_transaction_receipt(
                w3.eth.send_transaction({"from": sender, "to": emitter}))["transactionHash"]).hex()

        def log_runs() -> list[dict]:
            return [e for e in executions(proc, workflow="price-feed", limit=500)
                    if e["trigger"]["kind"] == "evm-log" and e["status"] != "running"]

        def wait_for(count: int) -> list[dict]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                runs = log_runs()
                if len(runs) >= count:
                    return runs
                time.sleep(0.3)
            raise AssertionError(f"{count} log executions expected, saw {len(log_runs())}:\n{proc.log()[-3000:]}")

        first = emit()
        (run,) = wait_for(1)
        assert (run["status"], run["result"]) == ("succeeded", f"log {first}:0")
        assert proc.stop() == 0
        second = emit()  # while the node is down
        proc.start(timeout=90)
        runs = wait_for(2)
        time.sleep(2)  # rescans would show up as extra executions by now
        runs = log_runs()
        assert sorted(r["result"] for r in runs) == sorted([f"log {first}:0", f"log {second}:0"])
    finally:
        if proc is not None:
            proc.stop()
        anvil.stop()


@pytest.mark.docker  # outer ring: a real anvil
def test_cron_writes_a_report_signed_by_the_nodes_don_key_to_a_receiver_on_anvil(tmp_path, prices):
    import json as _json
    import subprocess

    from web3 import Web3

    import os

    from node.tools.deploy import deploy_main
    from tests.chain_helpers import KEYS, Anvil
    from tests.cre.workflows.harness import WORKFLOWS
    from tests.helpers import REPO

    toolchain()
    built = _json.loads(subprocess.run(["node", str(WORKFLOWS / "compile_sol.js"), str(WORKFLOWS / "ReportReceiver.sol")],
                                       cwd=REPO, capture_output=True, text=True, check=True).stdout)
    don = Account.create()
    anvil = Anvil(block_time=None).start()
    proc = None
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))

        def deploy(name, *args):
            contract = w3.eth.contract(abi=built[name]["abi"], bytecode=built[name]["bytecode"])
            tx = contract.constructor(*args).transact({"from": w3.eth.accounts[0]})
            address = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
            return w3.eth.contract(address=address, abi=built[name]["abi"])

        # the shipped forwarder, as an operator deploys it (node-daemon deploy --what cre)
        os.environ["CREWASM_TEST_DEPLOYER"] = KEYS[0]
        try:
            dep = deploy_main(anvil.url, "CREWASM_TEST_DEPLOYER", "cre", tmp_path / "cre.json", don=don.address,
                              out=lambda line: None)
        finally:
            os.environ.pop("CREWASM_TEST_DEPLOYER", None)
        forwarder, receiver = w3.eth.contract(address=dep.address("CreForwarder")), deploy("TestReportReceiver")
        entry = workflow_entry(prices.url)
        entry["config"]["receiver"] = receiver.address
        proc = NodeProcess(tmp_path / "node", [], {"cre": {
            "wasm": {"api_key": KEY, "http_allowed_networks": ["127.0.0.1/32"], "chains": {"anvil-devnet": anvil.url},
                     "forwarders": {"anvil-devnet": forwarder.address}, "don_key": don.key.hex(),
                     "transmitter_key": KEYS[2]},
            "workflows": [entry]}})
        proc.start(timeout=90)
        deadline = time.monotonic() + 30
        while receiver.functions.reports().call() == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert receiver.functions.reports().call() >= 1, proc.log()[-3000:]
        assert receiver.functions.lastReport().call() == (4225).to_bytes(32, "big")  # 42.25 in cents
        assert receiver.functions.lastMetadata().call()[:32] == bytes.fromhex(WORKFLOW_ID)
    finally:
        if proc is not None:
            proc.stop()
        anvil.stop()
