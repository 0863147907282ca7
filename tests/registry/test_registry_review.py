"""Attacks on the registry found in the review of issue 22 as merged (a real node process, no
containers): input the route's own checks let through and the code then chokes on."""

from __future__ import annotations

import time

import pytest

from tests.registry.test_registry import SOLVERS, TOKEN_IN, TOKEN_OUT, WALLET, sign_digest, sign_in
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
