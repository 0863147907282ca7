"""The task registry (seed 004) and the node as its relayer: the full story with real keys."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak

from node.canonical import stable_json
from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CID = "bafybeigpecpfw5r7mxuaugil2htb64tl5sf5n3gvbu6h4uwq7d27zr6mau"
OWNER, MAINTAINER, STRANGER = Account.create(), Account.create(), Account.create()
ORACLES = [Account.create(), Account.create()]
ROGUE_ORACLE = Account.create()
RELAYER = Account.create()
SOLVERS = [Account.create(), Account.create()]
TOKEN_IN, TOKEN_OUT, WALLET = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20
DOMAIN_TYPE = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
               {"name": "chainId", "type": "uint256"}]


def typed(primary: str, fields: list, message: dict) -> dict:
    return {"types": {"EIP712Domain": DOMAIN_TYPE, primary: fields}, "primaryType": primary,
            "domain": {"name": "TaskRegistry", "version": "1", "chainId": 1}, "message": message}


def sign_typed(account, data: dict) -> str:
    return "0x" + account.sign_message(encode_typed_data(full_message=data)).signature.hex()


def sign_digest(account, payload) -> str:
    return "0x" + account.sign_message(encode_defunct(primitive=keccak(text=stable_json(payload)))).signature.hex()


def oracle_response(oracle, query: str, params: list, data, ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    return {"data": data, "timestamp": ts,
            "signature": sign_digest(oracle, {"query": query, "params": params, "data": data, "timestamp": ts})}


@pytest.fixture(scope="module")
def reg(docker_engine, tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("registry"), [container_entry("strategy", "strategy")], {
        "registry": {"oracles": [o.address for o in ORACLES], "relayers": [RELAYER.address],
                     "relayer_key": "0x" + Account.create().key.hex(), "min_cron_period": 1,
                     "tasks": {CID: {"containers": ["strategy"], "owners": [OWNER.address]}}},
    })
    node.start()
    yield node
    node.stop()
    node.remove_containers()


def sign_in(node, account) -> dict[str, str]:
    """Sign-In with Ethereum: the node composes the EIP-4361 message for the address."""
    nonce = node.http().post("/api/auth/nonce", {"address": account.address}).json
    lines = nonce["message"].split("\n")
    assert lines[:2] == [f"127.0.0.1:{node.port} wants you to sign in with your Ethereum account:", account.address]
    assert f"URI: http://127.0.0.1:{node.port}" in lines and "Chain ID: 1" in lines
    assert f"Nonce: {nonce['nonce']}" in lines and any(line.startswith("Expiration Time: ") for line in lines)
    signature = "0x" + account.sign_message(encode_defunct(text=nonce["message"])).signature.hex()
    resp = node.http().post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": signature})
    assert resp.status == 200, resp.body
    assert resp.json["address"] == account.address
    replay = node.http().post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": signature})
    assert replay.status == 401 and replay.json["message"] == "Nonce already used"
    return {"Authorization": f"Bearer {resp.json['token']}"}


def relayed_input(task_id: str, config_id: str, raw: dict, tx: str | None = None, log_index: int = 0,
                  relayer=RELAYER) -> dict:
    """A POST …/inputs body signed by a relayer: {taskId, configId, trigger, rawInputs}."""
    trigger = {"chainId": 1, "transactionHash": tx or "0x" + keccak(text=str(time.time_ns())).hex(),
               "logIndex": log_index}
    body = {"configId": config_id, "trigger": trigger, "rawInputs": raw}
    return body | {"signature": sign_digest(relayer, {"taskId": task_id, **body})}


def config_signature(account, project_id, task_id, body) -> str:
    fields = [{"name": "projectId", "type": "string"}, {"name": "taskId", "type": "string"},
              {"name": "name", "type": "string"}, {"name": "oracleConfirmations", "type": "uint32"},
              {"name": "relayerConfirmations", "type": "uint32"}, {"name": "trigger", "type": "string"},
              {"name": "dataHash", "type": "bytes32"}]
    return sign_typed(account, typed("Config", fields, {
        "projectId": project_id, "taskId": task_id, "name": body["name"],
        "oracleConfirmations": body["requriedOracleConfirmations"],
        "relayerConfirmations": body["requriedRelayerConfirmations"],
        "trigger": stable_json(body["trigger"]), "dataHash": keccak(text=stable_json(body["data"]))}))


def test_full_story(reg):
    http = reg.http()
    owner = sign_in(reg, OWNER)
    me = http.get("/api/accounts/me", headers=owner).json
    assert me["address"] == OWNER.address and me["deploymentKey"].startswith("DEPLOYMENT-KEY-")

    # a task, and the seed's 409 for the same (name, version)
    task_body = {"cid": CID, "version": "1.0.0", "name": "Balance Monitoring Task", "description": "swaps"}
    task = http.post("/api/tasks", task_body, headers=owner)
    assert task.status == 201
    task_id = task.json["taskId"]
    dup = http.post("/api/tasks", task_body, headers=owner)
    assert dup.status == 409 and dup.json == {"statusCode": 409, "error": "Conflict", "message":
        "A task named 'Balance Monitoring Task' (version 1.0.0) already exists for this user."}
    assert http.post("/api/tasks", {**task_body, "cid": "not-a-cid"}, headers=owner).json["message"].startswith("cid:")
    assert http.post("/api/tasks", {**task_body, "version": "1.0"}, headers=owner).status == 400
    assert [t["taskId"] for t in http.get("/api/tasks", headers=owner).json] == [task_id]
    assert http.get(f"/api/tasks/{task_id}").json["cid"] == CID  # public

    # a project, linking (owner only)
    project = http.post("/api/projects", {"name": "Fee collection"}, headers=owner).json
    project_id = project["projectId"]
    assert project["tasks"] == []
    stranger = sign_in(reg, STRANGER)
    forbidden = http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=stranger)
    assert forbidden.status == 403 and forbidden.json["message"] == \
        "You must have owner permissions on this project to link a task."
    assert http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=owner).json["tasks"] == [task_id]

    # a maintainer, authorised by the owner's EIP-712 signature (a stranger's is refused)
    fields = [{"name": "projectId", "type": "string"}, {"name": "maintainer", "type": "address"}]
    msg = {"projectId": project_id, "maintainer": MAINTAINER.address}
    bad = http.post(f"/api/projects/{project_id}/maintainers",
                    {"maintainer": MAINTAINER.address, "signature": sign_typed(STRANGER, typed("AddMaintainer", fields, msg))},
                    headers=owner)
    assert bad.status == 403
    added = http.post(f"/api/projects/{project_id}/maintainers",
                      {"maintainer": MAINTAINER.address, "signature": sign_typed(OWNER, typed("AddMaintainer", fields, msg))},
                      headers=owner)
    assert added.status == 201 and added.json["maintainer"] == MAINTAINER.address
    maintainer = sign_in(reg, MAINTAINER)
    account = http.get(f"/api/projects/{project_id}/account", headers=maintainer).json
    assert account["role"] == "maintainer" and account["projectKey"].startswith("PROJECT-KEY-")

    # the maintainer signs a config firing every 2 seconds (the seed's misspelt keys)
    body = {"name": "mainnet", "requriedOracleConfirmations": 2, "requriedRelayerConfirmations": 1,
            "trigger": {"cron": "*/2 * * * * *"},
            "data": {"from": WALLET, "tokenIn": TOKEN_IN, "tokenOut": TOKEN_OUT, "amountIn": "1000000", "chainId": 1}}
    forged = {**body, "signature": config_signature(STRANGER, project_id, task_id, body)}
    assert http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", forged).status == 403
    body["signature"] = config_signature(MAINTAINER, project_id, task_id, body)
    config = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body)
    assert config.status == 201, config.body
    config_id = config.json["configId"]

    # oracles post signed inputs: good, forged, stale, too few, duplicate trigger
    def submit(raw, tx=None):
        return http.post(f"/api/tasks/{task_id}/inputs", relayed_input(task_id, config_id, raw, tx))

    good = {
        "getRelevantTokens": [{"params": [WALLET], "responses": [
            oracle_response(ORACLES[0], "getRelevantTokens", [WALLET], [TOKEN_IN, TOKEN_OUT]),
            oracle_response(ORACLES[1], "getRelevantTokens", [WALLET], [TOKEN_IN])]}],
        "getPrice": [
            {"params": [TOKEN_IN], "responses": [oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 192.57),
                                                 oracle_response(ORACLES[1], "getPrice", [TOKEN_IN], 190.56)]},
            {"params": [TOKEN_OUT], "responses": [oracle_response(ORACLES[0], "getPrice", [TOKEN_OUT], 1.0),
                                                  oracle_response(ORACLES[1], "getPrice", [TOKEN_OUT], 1.0)]}],
    }
    trigger_tx = "0x" + "ab" * 32
    accepted = submit(good, trigger_tx)
    assert accepted.status == 201, accepted.body
    inputs = accepted.json["inputs"]
    assert inputs["prices"][TOKEN_IN] == pytest.approx(191.565)
    assert inputs["relevantTokens"][WALLET] == [TOKEN_IN]  # only what both oracles confirm
    assert submit(good, trigger_tx).json == {"statusCode": 409, "error": "Conflict", "message": "Trigger already submitted"}
    forged_raw = {"getPrice": [{"params": [TOKEN_IN], "responses": [
        oracle_response(ROGUE_ORACLE, "getPrice", [TOKEN_IN], 1.0), oracle_response(ORACLES[1], "getPrice", [TOKEN_IN], 1.0)]}]}
    assert submit(forged_raw).json["message"] == "Invalid oracle signature for getPrice"
    stale = {"getPrice": [{"params": [TOKEN_IN], "responses": [
        oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 1.0, ts=int(time.time()) - 3600),
        oracle_response(ORACLES[1], "getPrice", [TOKEN_IN], 1.0)]}]}
    assert submit(stale).json == {"statusCode": 409, "error": "Conflict", "message": "Outdated oracle response for getPrice"}
    too_few = {"getPrice": [{"params": [TOKEN_IN], "responses": [oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 1.0)]}]}
    assert submit(too_few).json == {"statusCode": 409, "error": "Unauthorized",  # as the seed shows
                                    "message": "Config required oracle confirmations not reached"}

    # the cron fires on the node: the container chain yields a swap intent, recorded as an execution
    # (ticks before the oracle inputs arrived ran without prices: wait for one that has them)
    deadline = time.monotonic() + 20
    execution = None
    while execution is None and time.monotonic() < deadline:
        listing = http.get(f"/api/tasks/{task_id}/executions", headers=owner).json
        for item in listing["data"]:
            detail = http.get(f"/api/tasks/{task_id}/executions/{item['executionId']}", headers=owner).json
            if detail["inputs"].get("prices"):
                execution, execution_id = detail, item["executionId"]
                break
        time.sleep(0.3)
    assert execution is not None and listing["page"] == 0 and listing["total"] >= 1
    [intent] = execution["intents"]
    assert intent["type"] == "swap" and intent["status"] == "submitted"
    assert intent["data"]["tokenIn"] == TOKEN_IN and intent["data"]["amountIn"] == "1000000"
    # the oracle prices reached the container: min out = 1e6 * 191.565 / 1.0 * 0.99
    assert int(intent["data"]["minAmountOut"]) == int(1_000_000 * 191.565 * 0.99)
    assert execution["inputs"]["prices"][TOKEN_IN] == pytest.approx(191.565)
    assert "registry.executed" in reg.log()

    # solvers propose; the node signs the best one
    intent_id = intent["intentId"]
    for solver, extra in zip(SOLVERS, (5, 9)):
        data = {"amountOut": str(int(intent["data"]["minAmountOut"]) + extra)}
        resp = http.post(f"/api/intents/{intent_id}/proposals",
                         {"solver": solver.address, "data": data,
                          "signature": sign_digest(solver, {"intentId": intent_id, "solver": solver.address, "data": data})})
        assert resp.status == 201, resp.body
    signed = http.post(f"/api/intents/{intent_id}/sign", None, headers=owner)
    assert signed.status == 200, signed.body
    assert signed.json["solver"] == SOLVERS[1].address and signed.json["status"] == "signed"
    view = http.get(f"/api/tasks/{task_id}/executions/{execution_id}/intents/{intent_id}", headers=owner).json
    assert view["status"] == "signed" and len(view["proposals"]) == 2
    assert [e["message"] for e in view["events"]][-1] == f"Proposal signed for solver {SOLVERS[1].address}"

    # an execution from an unknown relayer is refused; one from a configured relayer is accepted
    payload = {"taskId": task_id, "inputId": accepted.json["inputId"], "intents": [], "logs": []}
    assert http.post(f"/api/tasks/{task_id}/executions",
                     {"inputId": accepted.json["inputId"], "signature": sign_digest(STRANGER, payload)}).status == 401
    assert http.post(f"/api/tasks/{task_id}/executions",
                     {"inputId": accepted.json["inputId"], "signature": sign_digest(RELAYER, payload)}).status == 201

    # removing the maintainer deprecates its config signature
    removed = http.request("DELETE", f"/api/projects/{project_id}/maintainer/{MAINTAINER.address}", headers=owner)
    assert removed.status == 200
    refused = submit(good)
    assert refused.status == 401 and refused.json["message"] == "Invalid config signature"
    before = http.get(f"/api/tasks/{task_id}/executions", headers=owner).json["total"]
    time.sleep(4.5)
    assert http.get(f"/api/tasks/{task_id}/executions", headers=owner).json["total"] == before  # cron stopped
    gone = http.request("DELETE", f"/api/projects/{project_id}/maintainer/{MAINTAINER.address}", headers=owner)
    assert gone.status == 404 and gone.json["message"] == f"Maintainer {MAINTAINER.address} does not belong to the project"


def test_two_identical_triggers_at_once_one_accepted(reg):
    http = reg.http()
    owner = sign_in(reg, OWNER)
    task_id = http.post("/api/tasks", {"cid": CID, "version": "2.0.0", "name": "Concurrent"}, headers=owner).json["taskId"]
    project_id = http.post("/api/projects", {"name": "c"}, headers=owner).json["projectId"]
    http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=owner)
    body = {"name": "event", "requiredOracleConfirmations": 1, "requiredRelayerConfirmations": 1,
            "trigger": {"event": {"chainId": 1, "address": TOKEN_IN}}, "data": {}}
    body["signature"] = config_signature(OWNER, project_id, task_id, {
        **body, "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": 1})
    config_id = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body).json["configId"]
    raw = {"getPrice": [{"params": [TOKEN_IN], "responses": [oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 3)]}]}
    request = relayed_input(task_id, config_id, raw, "0x" + "cd" * 32, log_index=7)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: reg.http().post(f"/api/tasks/{task_id}/inputs", request), range(2)))
    assert sorted(r.status for r in results) == [201, 409]


def test_cron_survives_a_restart_without_double_fire(docker_engine, tmp_path):
    node = NodeProcess(tmp_path, [container_entry("strategy", "strategy")], {
        "docker": {"stop_on_exit": False},
        "registry": {"oracles": [o.address for o in ORACLES], "relayer_key": "0x" + Account.create().key.hex(),
                     "min_cron_period": 1, "tasks": {CID: {"containers": ["strategy"], "owners": [OWNER.address]}}}})
    node.start()
    try:
        http = node.http()
        owner = sign_in(node, OWNER)
        task_id = http.post("/api/tasks", {"cid": CID, "version": "3.0.0", "name": "Restart"}, headers=owner).json["taskId"]
        project_id = http.post("/api/projects", {"name": "r"}, headers=owner).json["projectId"]
        http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=owner)
        body = {"name": "every2", "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": 1,
                "trigger": {"cron": "*/2 * * * * *"},
                "data": {"from": WALLET, "tokenIn": TOKEN_IN, "tokenOut": TOKEN_OUT, "amountIn": "10"}}
        body["signature"] = config_signature(OWNER, project_id, task_id, body)
        assert http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body).status == 201
        time.sleep(4.5)
        node.stop(9)  # SIGKILL: no clean shutdown
        time.sleep(4.2)  # at least two ticks are missed
        node.start()
        time.sleep(3)
        executions = http.get(f"/api/tasks/{task_id}/executions?limit=200", headers=sign_in(node, OWNER)).json["data"]
        hashes = [e["trigger"]["transactionHash"] for e in executions]
        assert len(hashes) == len(set(hashes)) >= 3
        log = node.log()
        assert log.count("registry.catch_up") == 1 and "registry.tick_already_fired" not in log
    finally:
        node.stop()
        node.remove_containers()
