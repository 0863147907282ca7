"""Attacks on the registry found in the review of issue 22 as merged (a real node process, no
containers): input the route's own checks let through and the code then chokes on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account import Account

from tests.helpers import NodeProcess
from tests.registry.test_registry import (SOLVERS, TOKEN_IN, TOKEN_OUT, WALLET, config_signature, sign_digest,
                                         sign_in)
from tests.registry.test_registry_security import (OWNER, RELAYERS, config_body, project_with_task, reg,  # noqa: F401
                                                   submit_input)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def open_swap_intent(node, version: str) -> str:
    """A submitted swap intent (minAmountOut 5) a solver may bid on."""
    http, owner = node.http(), sign_in(node, OWNER)
    project_id, task_id = project_with_task(node, owner, version)
    config_id = http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs",
                          config_body(OWNER, project_id, task_id)).json["configId"]
    input_id = submit_input(node, task_id, config_id).json["inputId"]
    intents = [{"type": "swap", "data": {"from": WALLET, "to": WALLET, "chainId": 1, "tokenIn": TOKEN_IN,
                                         "tokenOut": TOKEN_OUT, "amountIn": "10", "minAmountOut": "5",
                                         "deadline": int(time.time()) + 600}}]
    payload = {"taskId": task_id, "inputId": input_id, "intents": intents, "logs": []}
    executed = http.post(f"/api/tasks/{task_id}/executions",
                         {"inputId": input_id, "intents": intents, "signature": sign_digest(RELAYERS[0], payload)})
    assert executed.status == 201, executed.body
    return executed.json["intents"][0]["intentId"]


def test_a_swap_proposal_whose_amount_is_unicode_digits_or_over_78_digits_is_a_400_not_a_500(reg):  # noqa: F811
    # "²" and "١٢" pass str.isdigit() but not int(): anyone with a fresh key can sign a proposal,
    # so each was an anonymous 500. More digits than a uint256 has (78) is no amount either.
    intent_id = open_swap_intent(reg, "90.0.0")
    for amount in ("\u00b2", "\u0661\u0662", "9" * 79):
        data = {"amountOut": amount}
        solver = SOLVERS[0]
        resp = reg.http().post(f"/api/intents/{intent_id}/proposals", {
            "solver": solver.address, "data": data,
            "signature": sign_digest(solver, {"intentId": intent_id, "solver": solver.address, "data": data})})
        assert resp.status == 400, (amount[:8], resp.status, resp.body[:200])
        assert "data.amountOut" in resp.body.decode(), resp.body


@pytest.fixture(scope="module")
def relaying(tmp_path_factory):
    """A node with a relayer key (its cron relayer runs) and no relayed task."""
    node = NodeProcess(tmp_path_factory.mktemp("registry-review"), [], {
        "manage_containers": False, "registry": {"relayer_key": "0x" + Account.create().key.hex()}})
    node.start()
    yield node
    node.stop()


def test_a_config_whose_data_is_over_the_cap_is_refused_400_naming_data(relaying):
    # The attack: any wallet signs in, links a task of any CID to a project of its own and stores
    # 20 cron configs of up to 16 MiB of `data` each. Every relayer pass (ten a second) read and
    # parsed every live cron config's data on the event loop, relayed or not: five configs of
    # 3 MB made GET /health wait 0.17 s, twenty of 15 MB about 3 s, for good.
    attacker = Account.create()
    owner = sign_in(relaying, attacker)
    project_id, task_id = project_with_task(relaying, owner, "91.0.0")

    def create(data: dict) -> Any:
        body = {"name": "big", "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": 1,
                "trigger": {"cron": "0 0 0 1 1 *"}, "data": data}
        body["signature"] = config_signature(attacker, project_id, task_id, body)
        return relaying.http().post(f"/api/projects/{project_id}/tasks/{task_id}/configs", body, timeout=60)

    refused = create({"k": [1] * 40_000})  # 80 KB of canonical JSON
    assert refused.status == 400, refused.body[:200]
    assert refused.json["details"] == [{"field": "data", "message": refused.json["details"][0]["message"]}]
    assert "registry.max_config_bytes" in refused.json["message"], refused.json
    assert create({"k": [1] * 1000}).status == 201  # 2 KB is fine


def test_behind_a_trusted_proxy_one_client_cannot_spend_every_clients_input_rate_limit(tmp_path):
    # The inputs route counted its rate limit by the TCP peer, not by the client the edge decided:
    # behind a declared reverse proxy every client was the proxy, so an outsider's three junk
    # requests a minute locked every relayer out of POST …/inputs.
    node = NodeProcess(tmp_path, [], {
        "manage_containers": False, "server": {"trusted_proxies": ["127.0.0.1/32"]},
        "registry": {"input_rate_limit": {"num_requests": 3, "period": 60}}}).start()
    try:
        def send(client: str) -> int:
            return node.http().request("POST", "/api/tasks/task_x/inputs", raw=b"{}",
                                       headers={"X-Forwarded-For": client}).status

        assert [send("203.0.113.7") for _ in range(4)][-1] == 429  # the outsider, over its share
        assert send("198.51.100.20") != 429  # another client through the same proxy
    finally:
        node.stop()


def test_thousands_of_digits_in_a_page_or_limit_are_a_400_or_capped_not_a_500(relaying):
    # ASCII digits pass isdigit(), and int() refuses more than 4,300 of them: a 500 on the
    # registry's executions listing and on every route taking ?limit= or an integer id.
    digits = "9" * 5000
    owner = sign_in(relaying, Account.create())
    for path, headers, status in ((f"/api/tasks/task_x/executions?page={digits}", owner, 400),
                                  (f"/api/tasks/task_x/executions?limit={digits}", owner, 400),
                                  (f"/api/node/jobs?limit={'0' * 5000}", {}, 400),
                                  (f"/api/node/jobs?limit={digits}", {}, 200)):  # ?limit= is capped
        resp = relaying.http().get(path, headers=headers)
        assert resp.status == status, (path[:40], resp.status, resp.body[:200])
