"""The CRE runtime bridge (seed 000) and backend callbacks (seed 001 §3) on a real node."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account

from tests.fake_gateway import FakeGateway
from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]

API_KEY = "keepr-test-key"
HMAC_SECRET = "hmac-test-secret"
BACKEND_KEY = "backend-test-key"
TRIGGER_KEY = Account.create()
WORKFLOW_ID = "ab" * 32
OTHER_WORKFLOW = "cd" * 32


def stable(value) -> str:
    """Independent stableJsonBody: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed(body, key=API_KEY, secret=HMAC_SECRET, ts=None, nonce=None):
    ts = str(ts if ts is not None else int(time.time() * 1000))
    nonce = nonce or uuid.uuid4().hex
    text = "" if body is None else stable(body)
    mac = hmac.new(secret.encode(), f"{ts}.{nonce}.{text}".encode(), hashlib.sha256).hexdigest()
    return {"Authorization": f"Bearer {key}", "x-cre-timestamp": ts, "x-cre-nonce": nonce, "x-cre-signature": mac}


def ingest_body(key="k1", payload=None, workflow="runtime-indexer-block", kind="block"):
    return {"workflow": workflow, "kind": kind, "idempotencyKey": key,
            "payload": payload if payload is not None else {"blockNumber": 9704813, "matchedTransactions": 1},
            "source": "cre-runtime-indexer-block"}


@pytest.fixture(scope="module")
def gateway():
    gw = FakeGateway({TRIGGER_KEY.address}).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def strict(docker_engine, tmp_path_factory, gateway):
    """A node in strict HMAC mode with a separate HMAC secret and a routed action type."""
    node = NodeProcess(tmp_path_factory.mktemp("cre"), [container_entry("echo", "echo")], {
        "cre": {"api_key": API_KEY, "enforce_hmac": True, "hmac_secret": HMAC_SECRET, "skew_seconds": 60,
                "backend_api_key": BACKEND_KEY, "gateway_url": gateway.url, "gateway_timeout": 2,
                "trigger_private_key": TRIGGER_KEY.key.hex(),
                "allowed_trigger_workflow_ids": [WORKFLOW_ID],
                "actions": {"notify": {"containers": ["echo"]}}},
    })
    node.start()
    yield node
    node.stop()
    node.remove_containers()


def post(node, path, body, headers):
    return node.http().post(path, body, headers=headers)


def test_signed_ingest_is_stored_and_idempotent(strict):
    body = ingest_body("idem-1")
    first = post(strict, "/api/cre/runtime/ingest", body, signed(body))
    assert first.status == 200
    assert first.json == {"success": True, "data": {"stored": True, "inserted": True, "idempotencyKey": "idem-1"}}
    again = post(strict, "/api/cre/runtime/ingest", body, signed(body))
    assert again.json["data"]["inserted"] is False


def test_replayed_nonce_is_409(strict):
    body = ingest_body("replay-1")
    headers = signed(body, nonce="fixed-nonce-1")
    assert post(strict, "/api/cre/runtime/ingest", body, headers).status == 200
    replay = post(strict, "/api/cre/runtime/ingest", body, headers)
    assert replay.status == 409 and replay.json == {"success": False, "error": "Nonce already used"}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (lambda b: signed(b, ts=int(time.time() * 1000) - 120_000), "outside the allowed window"),
        (lambda b: signed(b, key="wrong-key"), "bearer"),
        (lambda b: signed(b, secret="wrong-secret"), "Invalid request signature"),
        (lambda b: signed(b, secret=API_KEY), "Invalid request signature"),  # the secret is set: bearer key no good
        (lambda b: {"Authorization": f"Bearer {API_KEY}"}, "Signed request required"),
        (lambda b: {k: v for k, v in signed(b).items() if k != "x-cre-nonce"}, "missing x-cre-nonce"),
    ],
)
def test_bad_auth_is_401(strict, headers, message):
    body = ingest_body("auth-1")
    resp = post(strict, "/api/cre/runtime/ingest", body, headers(body))
    assert resp.status == 401 and message in resp.json["error"] and resp.json["success"] is False


def test_tampered_body_fails_the_signature(strict):
    body = ingest_body("tamper-1")
    headers = signed(body)
    body["payload"]["blockNumber"] += 1
    assert post(strict, "/api/cre/runtime/ingest", body, headers).status == 401


def test_signature_is_over_stable_json_not_bytes(strict):
    body = {"source": "x", "payload": {"b": 1, "a": [3, {"z": 1, "y": "é"}]}, "kind": "block",
            "idempotencyKey": "stable-1", "workflow": "runtime-indexer-block"}
    headers = signed(body)
    raw = json.dumps(body, indent=2).encode()  # different bytes, same JSON
    resp = strict.http().request("POST", "/api/cre/runtime/ingest", raw=raw, headers=headers)
    assert resp.status == 200, resp.body


def test_50_concurrent_identical_ingests_insert_once(strict):
    body = ingest_body(f"conc-{uuid.uuid4().hex}")
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: post(strict, "/api/cre/runtime/ingest", body, signed(body)), range(50)))
    assert all(r.status == 200 for r in results)
    assert sum(r.json["data"]["inserted"] for r in results) == 1


def test_conflicting_payload_is_409(strict):
    body = ingest_body("conflict-1", {"blockNumber": 1})
    assert post(strict, "/api/cre/runtime/ingest", body, signed(body)).status == 200
    other = ingest_body("conflict-1", {"blockNumber": 2})
    resp = post(strict, "/api/cre/runtime/ingest", other, signed(other))
    assert resp.status == 409 and "different payload" in resp.json["error"]


def test_policy_refuses_unknown_pairs(strict):
    body = ingest_body("policy-1", workflow="runtime-indexer-block", kind="feeds")
    resp = post(strict, "/api/cre/runtime/ingest", body, signed(body))
    assert resp.status == 403 and "runtime-indexer-block:feeds" in resp.json["error"]


def test_bad_body_names_the_field(strict):
    body = {"workflow": "runtime-indexer-block", "kind": "block", "payload": {}}
    resp = post(strict, "/api/cre/runtime/ingest", body, signed(body))
    assert resp.status == 400 and resp.json["error"].startswith("idempotencyKey:")


def test_readback_newest_first_with_limit(strict):
    keys = [f"rb-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for i, key in enumerate(keys):
        body = ingest_body(key, {"blockNumber": 100 + i}, workflow="runtime-reference-feeds", kind="feeds")
        assert post(strict, "/api/cre/runtime/ingest", body, signed(body)).status == 200
    resp = strict.http().get("/api/cre/runtime/ingest?kind=feeds&workflow=runtime-reference-feeds&limit=2",
                             headers=signed(None))
    assert resp.status == 200
    records = resp.json["data"]["records"]
    assert [r["idempotencyKey"] for r in records] == [keys[2], keys[1]]
    assert records[0]["payload"] == {"blockNumber": 102}
    assert strict.http().get("/api/cre/runtime/ingest?limit=0", headers=signed(None)).status == 400


def _decide(node, key, action=None, decision=None):
    body = {"workflow": "runtime-orchestrator", "idempotencyKey": key,
            "decision": decision or {"shouldAct": True, "latestBlockNumber": 9705000}}
    if action:
        body["enqueueAction"] = action
    return post(node, "/api/cre/runtime/decisions", body, signed(body))


def _action(node, action_id, until=("succeeded", "failed"), timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        data = node.http().get(f"/api/cre/runtime/actions/{action_id}", headers=signed(None)).json["data"]
        if data["status"] in until or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_decision_enqueues_an_action_run_as_a_container_job(strict):
    dedupe = f"dedupe-{uuid.uuid4().hex[:8]}"
    action = {"vaultAddress": "0x" + "11" * 20, "groupId": "group-1", "actionType": "notify",
              "action": {"command": "ping"}, "dedupeKey": dedupe}
    resp = _decide(strict, f"slot-{dedupe}", action)
    assert resp.status == 200
    data = resp.json["data"]
    assert data["stored"] and data["inserted"] and isinstance(data["actionId"], int)
    done = _action(strict, data["actionId"])
    assert done["status"] == "succeeded" and done["jobId"]
    assert done["result"]["action"] == {"command": "ping"} and done["result"]["actionType"] == "notify"
    # the same dedupeKey from another decision returns the same action
    again = _decide(strict, f"slot2-{dedupe}", action)
    assert again.json["data"]["actionId"] == data["actionId"] and again.json["data"]["inserted"] is True
    # a repeated decision is not inserted again, a changed one conflicts
    repeat = _decide(strict, f"slot-{dedupe}", action)
    assert repeat.json["data"] == {**data, "inserted": False}
    assert _decide(strict, f"slot-{dedupe}", action, {"shouldAct": False}).status == 409


def test_unrouted_actions_wait_for_workers(strict):
    kind = f"manual-{uuid.uuid4().hex[:6]}"
    action_id = _decide(strict, f"w-{kind}", {"actionType": kind, "action": {"n": 1}}).json["data"]["actionId"]
    body = {"workerId": "w1", "limit": 5, "actionTypes": [kind], "leaseSeconds": 30}
    claimed = post(strict, "/api/cre/runtime/actions/claim", body, signed(body)).json["data"]["actions"]
    assert [a["id"] for a in claimed] == [action_id] and claimed[0]["leaseOwner"] == "w1"
    body2 = {"workerId": "w2", "limit": 5, "actionTypes": [kind]}
    assert post(strict, "/api/cre/runtime/actions/claim", body2, signed(body2)).json["data"]["actions"] == []
    wrong = {"workerId": "w2", "status": "succeeded"}
    assert post(strict, f"/api/cre/runtime/actions/{action_id}/ack", wrong, signed(wrong)).status == 409
    ack = {"workerId": "w1", "status": "succeeded", "result": {"done": True}}
    done = post(strict, f"/api/cre/runtime/actions/{action_id}/ack", ack, signed(ack)).json["data"]
    assert done["status"] == "succeeded" and done["result"] == {"done": True}


def test_trigger_reaches_the_gateway_signed(strict, gateway):
    body = {"workflowId": WORKFLOW_ID, "requestId": "req-manual-1",
            "input": {"checkpointKey": "manual-recovery", "latestBlockNumber": 9705000}}
    resp = post(strict, "/api/cre/runtime/trigger", body, signed(body))
    assert resp.status == 200, resp.body
    assert resp.json == {"success": True, "data": {
        "accepted": True, "requestId": "req-manual-1", "statusCode": 200, "gatewayUrl": gateway.url,
        "response": {"jsonrpc": "2.0", "id": "req-manual-1", "result": {"status": "ACCEPTED"}}}}
    rpc = gateway.received[-1]
    assert rpc["method"] == "workflows.execute" and rpc["params"]["workflow"] == {"workflowID": WORKFLOW_ID}
    assert rpc["params"]["input"] == body["input"]


def test_trigger_allowlist_and_ids(strict):
    other = {"workflowId": OTHER_WORKFLOW, "input": {}}
    assert post(strict, "/api/cre/runtime/trigger", other, signed(other)).status == 403
    bad = {"workflowId": "not-hex", "input": {}}
    resp = post(strict, "/api/cre/runtime/trigger", bad, signed(bad))
    assert resp.status == 400 and resp.json["error"].startswith("workflowId:")


def test_trigger_gateway_failures(docker_engine, tmp_path):
    down_port = FakeGateway(set()).start()
    url = down_port.url
    down_port.stop()  # nothing listens there any more
    slow = FakeGateway({TRIGGER_KEY.address}, delay=3).start()
    failing = FakeGateway({TRIGGER_KEY.address}, status=500).start()
    try:
        for target, status in ((url, 502), (slow.url, 504), (failing.url, 502)):
            node = NodeProcess(tmp_path / str(status) / uuid.uuid4().hex[:4], [], {"cre": {
                "api_key": API_KEY, "gateway_url": target, "gateway_timeout": 1,
                "trigger_private_key": TRIGGER_KEY.key.hex()}})
            node.start()
            try:
                body = {"workflowId": WORKFLOW_ID, "input": {"x": 1}}
                resp = node.http().post("/api/cre/runtime/trigger", body,
                                        headers={"Authorization": f"Bearer {API_KEY}"})
                assert resp.status == status, resp.body
                assert resp.json["success"] is False
            finally:
                node.stop()
    finally:
        slow.stop()
        failing.stop()


def test_callbacks_round_trip(strict):
    quote = {"questionId": "0x" + "aa" * 32, "outcomeIndex": 0, "buy": True, "quantity": "1000000000000000000",
             "tradeCostUsdc": "5000000", "nonce": "0", "deadline": "1735689600", "signature": "0x" + "12" * 65}
    http = strict.http()
    assert http.post("/api/cre/buy", quote, headers={"x-api-key": BACKEND_KEY}).status == 201
    sell = http.post("/api/cre/sell", quote, headers={"x-api-key": BACKEND_KEY})
    assert sell.status == 400 and "buy" in sell.json["error"]
    assert http.post("/api/cre/quote", quote, headers={"x-api-key": "nope"}).status == 401
    blob = "c2VjcmV0LWJsb2ItZG8tbm90LWxvZw"
    agent = {"agentId": "agent-7", "address": "0x" + "22" * 20, "encryptedKeyBlob": blob,
             "signedEthTransfer": "0x" + "01" * 40}
    import base64
    basic = base64.b64encode(f"cre:{BACKEND_KEY}".encode()).decode()
    assert http.post("/api/cre/agent-keys", agent, headers={"Authorization": f"Basic {basic}"}).status == 201
    stake = {"status": "ok", "result": "stake", "txHash": "0x" + "33" * 32}
    assert http.post("/api/cre/stake", stake, headers={"x-api-key": BACKEND_KEY}).status == 201
    bad_amount = {**quote, "tradeCostUsdc": "5.5"}
    assert http.post("/api/cre/quote", bad_amount, headers={"x-api-key": BACKEND_KEY}).status == 400

    read = http.get("/api/cre/agent-keys?agentId=agent-7", headers={"Authorization": f"Bearer {API_KEY}"})
    assert read.status == 200
    [item] = read.json["data"]["callbacks"]
    assert item["body"] == agent
    buys = http.get("/api/cre/buy?questionId=" + quote["questionId"], headers={"x-api-key": BACKEND_KEY})
    assert buys.json["data"]["callbacks"][0]["body"] == quote
    assert blob not in strict.log()


def test_non_strict_modes_and_the_client_helper(docker_engine, tmp_path):
    from node.cre.client import signed_headers

    lax = NodeProcess(tmp_path / "lax", [], {"cre": {"api_key": API_KEY}}).start()
    override = NodeProcess(tmp_path / "override", [], {"cre": {
        "api_key": API_KEY, "enforce_hmac": True, "allow_unsigned_when_hmac_configured": True}}).start()
    try:
        for node in (lax, override):
            body = ingest_body(f"lax-{uuid.uuid4().hex[:6]}")
            bearer_only = node.http().post("/api/cre/runtime/ingest", body, headers={"Authorization": f"Bearer {API_KEY}"})
            assert bearer_only.status == 200, bearer_only.body
            # a signature that is sent is still checked; with no HMAC secret the bearer key signs
            assert post(node, "/api/cre/runtime/ingest", body, signed(body, secret="wrong")).status == 401
            helper = signed_headers(body, API_KEY)
            assert node.http().post("/api/cre/runtime/ingest", body, headers=helper).status == 200
            assert node.http().post("/api/cre/runtime/ingest", body, headers=helper).status == 409  # same nonce
            assert node.http().post("/api/cre/runtime/ingest", body).status == 401  # no bearer at all
    finally:
        lax.stop()
        override.stop()
