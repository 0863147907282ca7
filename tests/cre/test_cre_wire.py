"""What real clients send through the CRE bridge, in process (aiohttp test server, a tmp SQLite,
the fake gateway on 127.0.0.1): the trigger forwards the app's input exactly, the gateway
verifies its JWT digest the way Chainlink's Go code does, stableJsonBody is JavaScript's (checked
against real Node.js when it is installed), and replayed nonces stay refused while their
timestamp is still accepted (issue 14, security item 7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account

from node.cre.actions import ActionRunner
from node.cre.api import FAMILY, CreApi
from node.cre.config import CreConfig
from node.cre.gateway import TriggerDispatcher
from node.cre.store import CreStore
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, make_middlewares
from node.storage import Database
from tests.fake_gateway import FakeGateway

API_KEY = "wire-key"
TRIGGER_KEY = Account.create()
WORKFLOW_ID = "ef" * 32
Q, C, A = "0x" + "11" * 32, "0x" + "22" * 32, "0x" + "33" * 20
SIG = "0x" + "ab" * 65


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def settings(**changes) -> CreConfig:
    """The bridge's config as the node parses it, against an empty environment."""
    base = {"api_key": API_KEY, "skew_seconds": 5, "ingest_policy": {"runtime-indexer-block": ["block"]},
            "max_readback": 100, "gateway_timeout": 5}
    return CreConfig.model_validate({**base, **changes}, context={"env": {}})


@pytest.fixture(scope="module")
def gateway():
    gw = FakeGateway({TRIGGER_KEY.address}).start()
    yield gw
    gw.stop()


class Bridge:
    def __init__(self, client: TestClient, clock: Clock) -> None:
        self.client = client
        self.clock = clock

    async def post(self, path: str, body, headers: dict | None = None) -> tuple[int, dict]:
        async with self.client.post(path, data=json.dumps(body), headers={
                "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **(headers or {})}) as r:
            return r.status, await r.json()


@pytest.fixture
async def bridge(tmp_path, gateway) -> AsyncIterator[Bridge]:
    clock = Clock()
    db = Database(str(tmp_path / "cre.db"))
    await db.open()
    store = CreStore(db, clock)
    conf = settings(gateway_url=gateway.url, trigger_private_key=TRIGGER_KEY.key.hex())
    await store.start(conf.skew_seconds)
    session = aiohttp.ClientSession()
    api = CreApi(conf, store, ActionRunner(store, None, {}),  # type: ignore[arg-type]
                 TriggerDispatcher(session, gateway.url, TRIGGER_KEY.key.hex(), 5))
    api._auth._clock = clock  # the same fake clock for the timestamp window
    shapes = ErrorShapes([FAMILY])
    app = web.Application(middlewares=make_middlewares(shapes, RateLimiter(RateLimitConfig(num_requests=0))))
    app.add_routes(api.routes())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Bridge(client, clock)
    finally:
        await client.close()
        await session.close()
        await db.close()


async def trigger(bridge: Bridge, gateway: FakeGateway, data) -> tuple[int, dict, dict | None]:
    """POST the trigger; (status, answer, what the gateway received for it or None)."""
    request_id = f"wire-{uuid.uuid4().hex[:8]}"
    status, answer = await bridge.post("/api/cre/runtime/trigger",
                                       {"workflowId": WORKFLOW_ID, "requestId": request_id, "input": data})
    got = [r for r in gateway.received if r["id"] == request_id]
    return status, answer, got[0] if got else None


# -- the trigger forwards what the app sent ---------------------------------------------------------


@pytest.mark.parametrize("data", [
    # unknown field on a quote (the app's own bookkeeping) and no maxCostUsdc: nothing added
    {"action": "quote", "questionId": Q, "conditionId": C, "outcomeIndex": 0, "buy": True, "quantity": "10",
     "tradeCostUsdc": "5", "nonce": "0", "deadline": "1735689600", "marketId": "m-123", "clientTag": {"x": [1, 2]}},
    # lmsrPricing has no `buy` in the seed: none added
    {"action": "lmsrPricing", "marketId": Q, "outcomeIndex": 1, "quantity": "1000", "b": "25"},
    # string index sets stay strings
    {"action": "redeem", "parentCollectionId": Q, "conditionId": C, "indexSets": ["1", "2"], "token": A,
     "owner": A, "deadline": "1", "nonce": "0", "signature": SIG},
    # no default parentCollectionId
    {"action": "stake", "questionId": Q, "partition": ["1", "2"], "token": A, "amount": "5", "owner": A},
    # userInvoke is optional for approveConditionalToken: not added
    {"action": "approveConditionalToken", "signer": "backend", "operator": A, "approved": True},
    # an action the seed does not name is the workflow's business: passed through
    {"action": "futureAction", "anything": [1, "two", None]},
], ids=["quote+unknown-field", "lmsrPricing", "redeem-string-indexSets", "stake", "approveCT", "unknown-action"])
async def test_the_trigger_forwards_the_apps_input_unchanged(bridge, gateway, data):
    status, answer, sent = await trigger(bridge, gateway, data)
    assert status == 200, answer
    assert answer["data"]["accepted"] is True
    assert sent["params"]["input"] == data  # same meaning: nothing added, dropped or coerced


async def test_a_batch_written_from_the_seed_reaches_the_gateway_unchanged(bridge, gateway):
    item = {"userSignature": SIG, "quantity": "1000000000000000000", "tradeCostUsdc": "5000000", "nonce": "0",
            "deadline": "1735689600"}
    batch = {"action": "order", "questionId": Q, "conditionId": C, "outcomeIndex": 1, "buy": True,
             "trades": [item, {**item, "nonce": "1", "maxCostUsdc": "6000000"}]}
    status, answer, sent = await trigger(bridge, gateway, batch)
    assert status == 200, answer
    assert sent["params"]["input"] == batch


async def test_the_gateway_verifies_the_digest_of_html_characters_and_non_ascii_text(bridge, gateway):
    data = {"note": "a <b> & c > d", "名前": "日本語 é ü ß", "emoji": "🙂 \u2028 \u2029", "ctl": "tab\there\x01",
            "floats": [0.1, 1e-7, 1e21, 1e16, -0.0, 2.5], "nested": {"z": "<&>", "a": ["&amp;", "\\u003c"]},
            "\U0001F600key": 1, "\uff01key": 2}
    rejected = len(gateway.rejected)
    status, answer, sent = await trigger(bridge, gateway, data)
    assert status == 200, answer
    assert len(gateway.rejected) == rejected  # the Go-style verifier accepted the JWT digest
    assert sent["params"]["input"] == data
    # the bytes carry `<&>` literally (JCS does not HTML-escape), non-ASCII as UTF-8
    raw = gateway.raw[-1]
    assert b"a <b> & c > d" in raw and "日本語".encode() in raw


async def test_the_trigger_refuses_what_javascript_cannot_carry_with_a_clear_400(bridge, gateway):
    before = len(gateway.received)
    status, answer, _ = await trigger(bridge, gateway, {"action": "futureAction", "amount": 2**53 + 1})
    assert status == 400 and answer["error"].startswith("input.amount:") and "2^53" in answer["error"]
    assert len(gateway.received) == before


async def test_known_actions_are_checked_for_what_the_seed_requires(bridge, gateway):
    before = len(gateway.received)
    status, answer, _ = await trigger(bridge, gateway, {"action": "lmsrPricing", "outcomeIndex": 0,
                                                        "quantity": "1"})
    assert status == 400 and "marketId" in answer["error"] and answer["error"].startswith("input.")
    status, answer, _ = await trigger(bridge, gateway, {"action": "buy", "questionId": Q, "conditionId": C,
                                                        "outcomeIndex": 0, "trades": [{"quantity": "1"}]})
    assert status == 400 and "trades" in answer["error"]
    status, answer, _ = await trigger(bridge, gateway, 7)
    assert status == 400 and answer["error"].startswith("input:")
    status, answer = await bridge.post("/api/cre/runtime/trigger",
                                       {"workflowId": WORKFLOW_ID, "requestId": "a/b", "input": {}})
    assert status == 400 and answer["error"].startswith("requestId:")
    assert len(gateway.received) == before


# -- stableJsonBody is JavaScript's ------------------------------------------------------------------

JS_STABLE = r"""
const stable = (v) => Array.isArray(v) ? `[${v.map(stable).join(",")}]`
  : v !== null && typeof v === "object"
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable(v[k])}`).join(",")}}`
    : JSON.stringify(v);
const crypto = require("crypto");
const [ts, nonce, secret] = process.argv.slice(1);
const body = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(crypto.createHmac("sha256", secret).update(`${ts}.${nonce}.${stable(body)}`).digest("hex"));
"""


def js_signature(body, ts: str, nonce: str) -> str:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    out = subprocess.run(["node", "-e", JS_STABLE, ts, nonce, API_KEY], input=json.dumps(body),
                         capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


def ingest(payload) -> dict:
    return {"workflow": "runtime-indexer-block", "kind": "block", "idempotencyKey": uuid.uuid4().hex,
            "payload": payload}


async def test_a_body_signed_by_javascript_verifies(bridge):
    body = ingest({"tiny": 1e-7, "huge": 1e21, "round": 1e16, "third": 1 / 3, "neg": -2.5e-8, "whole": 3.0,
                   "text": "<é & 😀>", "keys": {"b": 1, "a": 2, "\U0001F600": 3, "\uff01": 4}})
    ts, nonce = str(int(bridge.clock() * 1000)), uuid.uuid4().hex
    headers = {"x-cre-timestamp": ts, "x-cre-nonce": nonce, "x-cre-signature": js_signature(body, ts, nonce)}
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, headers)
    assert status == 200, answer


def python_signed(body, ts: int, nonce: str, text: str) -> dict:
    mac = hmac.new(API_KEY.encode(), f"{ts}.{nonce}.{text}".encode(), hashlib.sha256).hexdigest()
    return {"x-cre-timestamp": str(ts), "x-cre-nonce": nonce, "x-cre-signature": mac}


async def test_numbers_sign_as_json_stringify_writes_them(bridge):
    body = ingest({"n": [1e-7, 1e21, 1e16, 1.0]})
    text = ('{"idempotencyKey":"%s","kind":"block","payload":{"n":[1e-7,1e+21,10000000000000000,1]},'
            '"workflow":"runtime-indexer-block"}' % body["idempotencyKey"])
    ts = int(bridge.clock() * 1000)
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, python_signed(body, ts, "n1", text))
    assert status == 200, answer


async def test_integers_beyond_2_53_are_a_clear_400_not_a_bad_signature(bridge):
    body = ingest({"blockNumber": 2**53 + 1})
    ts = int(bridge.clock() * 1000)
    headers = python_signed(body, ts, "big-1", json.dumps(body, sort_keys=True, separators=(",", ":")))
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, headers)
    assert status == 400 and answer["error"].startswith("payload.blockNumber:") and "2^53" in answer["error"]


# -- replay (security item 7) -------------------------------------------------------------------------


async def test_a_replay_is_refused_for_as_long_as_its_timestamp_is_accepted(bridge):
    """skew 5 s: a request stamped 4.9 s ahead is accepted until 9.9 s from now; its replay
    5.6 s later (within the window) must be refused."""
    body = ingest({"blockNumber": 1})
    ts = int((bridge.clock() + 4.9) * 1000)
    headers = python_signed(body, ts, "replay-later", json.dumps(body, sort_keys=True, separators=(",", ":")))
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, headers)
    assert status == 200, answer
    bridge.clock.now += 5.6
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, headers)
    assert status == 409 and answer["error"] == "Nonce already used"
    bridge.clock.now += 4.5  # now past timestamp + skew: the timestamp itself is refused
    status, answer = await bridge.post("/api/cre/runtime/ingest", body, headers)
    assert status == 401 and "window" in answer["error"]


# -- the local runtime is never open by accident (security item 4) ---------------------------------

RUNTIME = {"rpc_url": "http://127.0.0.1:8545", "don_key": "0x" + "01" * 32, "forwarder_address": A,
           "sub0_address": A, "vault_address": A, "conditional_tokens_address": A, "usdc_address": A}


def test_a_runtime_without_a_key_is_refused_at_config_load():
    from pydantic import ValidationError


    with pytest.raises(ValidationError, match="cre.runtime needs api_key"):
        CreConfig.model_validate({"runtime": RUNTIME})
    with pytest.raises(ValidationError, match="cre.runtime needs api_key"):
        CreConfig.model_validate({"runtime": {**RUNTIME, "api_key": ""}})
    assert CreConfig.model_validate({"runtime": {**RUNTIME, "api_key": "k"}}).runtime.api_key
    # only an explicit choice runs it open (and the runtime logs a warning when it starts)
    assert CreConfig.model_validate({"runtime": {**RUNTIME, "allow_unauthenticated": True}}).runtime
    assert CreConfig.model_validate({"runtime": {**RUNTIME, "enabled": False}}).runtime


def test_the_request_digest_matches_chainlinks_published_test_vector():
    """chainlink-common pkg/jsonrpc2/types_test.go pins Request.Digest() of this request."""
    from node.cre.gateway import canonical
    from tests.fake_gateway import request_digest

    request = {"jsonrpc": "2.0", "id": "1", "method": "service.method",
               "params": {"id": "1", "namespace": "test", "owner": "test"}}
    vector = "0d390d82191fcc4fe7b321124f55e3880bf3f754c725d10bcc0668cebf6a6ded"
    assert hashlib.sha256(canonical(request)).hexdigest() == vector
    assert request_digest(request) == vector
