"""Attacks on the registry's signed changes and sign-in, and the seed's error rules (a real node
process, no containers)."""

from __future__ import annotations

import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from tests.helpers import NodeProcess
from tests.registry.test_registry import (CID, ORACLES, SOLVERS, TOKEN_IN, TOKEN_OUT, WALLET, config_signature, oracle_response,
                                 relayed_input, sign_digest, sign_in, sign_typed, typed)

OWNER, MAINTAINER, STRANGER = Account.create(), Account.create(), Account.create()
RELAYERS = [Account.create(), Account.create()]
MAINTAINER_FIELDS = [{"name": "projectId", "type": "string"}, {"name": "maintainer", "type": "address"}]
REPLAY_FIELDS = [{"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"}]

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("registry-security"), [], {
        "manage_containers": False,
        "registry": {"oracles": [o.address for o in ORACLES], "relayers": [r.address for r in RELAYERS]}})
    node.start()
    yield node
    node.stop()


def project_with_task(node, owner: dict, version: str) -> tuple[str, str]:
    http = node.http()
    task_id = http.post("/api/tasks", {"cid": CID, "version": version, "name": "Security"}, headers=owner).json["taskId"]
    project_id = http.post("/api/projects", {"name": f"p{version}"}, headers=owner).json["projectId"]
    assert http.post(f"/api/projects/{project_id}/tasks", {"taskId": task_id}, headers=owner).status == 200
    return project_id, task_id


def maintainer_body(project_id: str, who, nonce: int | None = None, deadline: int | None = None, signer=OWNER):
    message = {"projectId": project_id, "maintainer": who.address}
    fields = MAINTAINER_FIELDS
    body = {"maintainer": who.address}
    if nonce is not None:
        message |= {"nonce": nonce, "deadline": deadline}
        fields = MAINTAINER_FIELDS + REPLAY_FIELDS
        body |= {"nonce": nonce, "deadline": deadline}
    return body | {"signature": sign_typed(signer, typed("AddMaintainer", fields, message))}


def config_body(signer, project_id: str, task_id: str, name: str = "cfg", relayers: int = 1) -> dict:
    body = {"name": name, "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": relayers,
            "trigger": {"event": {"chainId": 1, "address": TOKEN_IN}}, "data": {"n": name}}
    return body | {"signature": config_signature(signer, project_id, task_id, body)}


def submit_input(node, task_id: str, config_id: str, tx: str | None = None, ts: int | None = None):
    tx = tx or "0x" + keccak(text=str(time.time_ns())).hex()
    raw = {"getPrice": [{"params": [TOKEN_IN], "responses": [
        oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 2.0, ts=ts)]}]}
    return node.http().post(f"/api/tasks/{task_id}/inputs", relayed_input(task_id, config_id, raw, tx,
                                                                          relayer=RELAYERS[0]))


# -- security 3: registry removals undone by replay --------------------------------------------------


def test_a_removed_maintainer_cannot_be_readded_by_replay(reg):
    http, owner = reg.http(), sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "1.0.0")
    add = maintainer_body(project_id, MAINTAINER)  # the seed's format: no nonce, no deadline
    assert http.post(f"/api/projects/{project_id}/maintainers", add, headers=owner).status == 201
    config = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", config_body(MAINTAINER, project_id, task_id))
    assert config.status == 201
    config_id = config.json["configId"]
    assert submit_input(reg, task_id, config_id).status == 201
    removed = http.request("DELETE", f"/api/projects/{project_id}/maintainer/{MAINTAINER.address}", headers=owner)
    assert removed.status == 200

    replay = http.post(f"/api/projects/{project_id}/maintainers", add, headers=owner)  # even with the owner's session
    assert replay.status == 401, replay.body
    assert sign_in(reg, MAINTAINER) and http.get(f"/api/projects/{project_id}/account",
                                                 headers=sign_in(reg, MAINTAINER)).status == 403
    revived = submit_input(reg, task_id, config_id)
    assert revived.status == 401 and revived.json["message"] == "Invalid config signature"


def test_a_readded_maintainer_does_not_revive_the_configs_signed_before(reg):
    http, owner = reg.http(), sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "2.0.0")
    http.post(f"/api/projects/{project_id}/maintainers", maintainer_body(project_id, MAINTAINER), headers=owner)
    config_id = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs",
                          config_body(MAINTAINER, project_id, task_id)).json["configId"]
    http.request("DELETE", f"/api/projects/{project_id}/maintainer/{MAINTAINER.address}", headers=owner)
    fresh = maintainer_body(project_id, MAINTAINER, nonce=1, deadline=int(time.time()) + 600)
    assert http.post(f"/api/projects/{project_id}/maintainers", fresh, headers=owner).status == 201
    assert submit_input(reg, task_id, config_id).json["message"] == "Invalid config signature"
    again = http.post(f"/api/projects/{project_id}/maintainers", fresh, headers=owner)
    assert again.status == 409  # still a maintainer; and after a removal the nonce'd signature is spent too
    http.request("DELETE", f"/api/projects/{project_id}/maintainer/{MAINTAINER.address}", headers=owner)
    assert http.post(f"/api/projects/{project_id}/maintainers", fresh, headers=owner).status == 401


def test_a_deleted_config_cannot_be_restored_by_replay(reg):
    http, owner = reg.http(), sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "3.0.0")
    body = config_body(OWNER, project_id, task_id)
    config_id = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body).json["configId"]
    deleted = http.request("DELETE", f"/api/projects/{project_id}/tasks/{task_id}/configs/{config_id}", headers=owner)
    assert deleted.status == 200
    replay = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body)
    assert replay.status == 401, replay.body
    assert replay.json["error"] == "Unauthorized" and replay.json["message"].startswith("Invalid config signature")


def test_adding_a_maintainer_needs_the_owners_session_and_a_live_signature(reg):
    http, owner = reg.http(), sign_in(reg, OWNER)
    project_id, _ = project_with_task(reg, owner, "4.0.0")
    body = maintainer_body(project_id, MAINTAINER, nonce=7, deadline=int(time.time()) + 600)
    assert http.post(f"/api/projects/{project_id}/maintainers", body).status == 401  # no session
    assert http.post(f"/api/projects/{project_id}/maintainers", body, headers=sign_in(reg, STRANGER)).status == 403
    expired = maintainer_body(project_id, MAINTAINER, nonce=8, deadline=int(time.time()) - 1)
    refused = http.post(f"/api/projects/{project_id}/maintainers", expired, headers=owner)
    assert refused.status == 401 and "expired" in refused.json["message"]
    half = {**body}
    del half["deadline"]
    assert http.post(f"/api/projects/{project_id}/maintainers", half, headers=owner).status == 400
    assert http.post(f"/api/projects/{project_id}/maintainers", body, headers=owner).status == 201


# -- security 13: sign-in bound to this node (EIP-4361) ------------------------------------------------


def siwe_text(node, account, nonce: str, domain: str | None = None, chain_id: int = 1, uri: str | None = None) -> str:
    domain = domain or f"127.0.0.1:{node.port}"
    uri = uri or f"http://127.0.0.1:{node.port}"
    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f"{domain} wants you to sign in with your Ethereum account:\n{account.address}\n\nSign in, please.\n\n"
            f"URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {issued}")


def verify(node, account, nonce: str, text: str, signer=None):
    signature = "0x" + (signer or account).sign_message(encode_defunct(text=text)).signature.hex()
    return node.http().post("/api/auth/verify", {"nonce": nonce, "signature": signature, "message": text})


def test_a_sign_in_for_another_site_or_chain_is_refused(reg):
    nonce = reg.http().post("/api/auth/nonce", {}).json["nonce"]
    for bad in (siwe_text(reg, STRANGER, nonce, domain="evil.example"),
                siwe_text(reg, STRANGER, nonce, uri="https://evil.example/login"),
                siwe_text(reg, STRANGER, nonce, chain_id=5)):
        refused = verify(reg, STRANGER, nonce, bad)
        assert refused.status == 401, refused.body
    # a bare nonce (the old message) is not a sign-in message
    assert verify(reg, STRANGER, nonce, f"Sign in to the task registry\nNonce: {nonce}").status == 401
    signed_in = verify(reg, STRANGER, nonce, siwe_text(reg, STRANGER, nonce))  # a wallet-built message is fine
    assert signed_in.status == 200 and signed_in.json["address"] == STRANGER.address


def test_a_failed_sign_in_signature_does_not_burn_the_nonce(reg):
    nonce = reg.http().post("/api/auth/nonce", {"address": OWNER.address}).json
    garbage = "0x" + "00" * 64 + "1b"  # recovers nobody
    wrong = "0x" + STRANGER.sign_message(encode_defunct(text=nonce["message"])).signature.hex()  # not the address named
    for bad in (garbage, wrong):
        refused = reg.http().post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": bad})
        assert refused.status == 401 and refused.json["message"] == "Invalid signature"
    right = "0x" + OWNER.sign_message(encode_defunct(text=nonce["message"])).signature.hex()
    ok = reg.http().post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": right})
    assert ok.status == 200, ok.body
    assert reg.http().post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": right}).status == 401


# -- the seed's rules: confirmations, trigger uniqueness, oracle clocks ---------------------------------------


def test_an_oracle_timestamp_in_the_future_is_refused_as_such(reg):
    owner = sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "5.0.0")
    config_id = reg.http().post(f"/api/projects/{project_id}/tasks/{task_id}/configs",
                                config_body(OWNER, project_id, task_id)).json["configId"]
    refused = submit_input(reg, task_id, config_id, ts=int(time.time()) + 3600)
    assert refused.status == 409
    assert refused.json["message"] == "Oracle response for getPrice is timestamped in the future"


def test_one_trigger_may_feed_several_configs_once_each(reg):
    owner = sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "6.0.0")
    configs = [reg.http().post(f"/api/projects/{project_id}/tasks/{task_id}/configs",
                               config_body(OWNER, project_id, task_id, name)).json["configId"] for name in ("a", "b")]
    tx = "0x" + "ee" * 32
    assert [submit_input(reg, task_id, c, tx).status for c in configs] == [201, 201]
    assert submit_input(reg, task_id, configs[0], tx).json["message"] == "Trigger already submitted"


def test_intents_open_only_after_the_required_relayer_confirmations(reg):
    http, owner = reg.http(), sign_in(reg, OWNER)
    project_id, task_id = project_with_task(reg, owner, "7.0.0")
    config_id = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs",
                          config_body(OWNER, project_id, task_id, relayers=2)).json["configId"]
    input_id = submit_input(reg, task_id, config_id).json["inputId"]
    intents = [{"type": "swap", "data": {"from": WALLET, "to": WALLET, "chainId": 1, "tokenIn": TOKEN_IN,
                                         "tokenOut": TOKEN_OUT, "amountIn": "10", "minAmountOut": "5",
                                         "deadline": int(time.time()) + 600}}]
    payload = {"taskId": task_id, "inputId": input_id, "intents": intents, "logs": []}

    def execute(relayer):
        return http.post(f"/api/tasks/{task_id}/executions",
                         {"inputId": input_id, "intents": intents, "signature": sign_digest(relayer, payload)})

    first = execute(RELAYERS[0])
    assert first.status == 201
    intent_id = first.json["intents"][0]["intentId"]
    data = {"amountOut": "6"}
    proposal = {"solver": SOLVERS[0].address, "data": data,
                "signature": sign_digest(SOLVERS[0], {"intentId": intent_id, "solver": SOLVERS[0].address, "data": data})}
    early = http.post(f"/api/intents/{intent_id}/proposals", proposal)
    assert early.json == {"statusCode": 409, "error": "Unauthorized",
                          "message": "Config required relayer confirmations not reached"}
    assert execute(RELAYERS[0]).status == 200  # the same relayer again does not count twice
    assert http.post(f"/api/intents/{intent_id}/proposals", proposal).status == 409
    assert execute(RELAYERS[1]).status == 200
    assert http.get(f"/api/intents/{intent_id}").json["status"] == "submitted"
    assert http.post(f"/api/intents/{intent_id}/proposals", proposal).status == 201
