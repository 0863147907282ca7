"""Attacks on the governance gateway found in the review of issue 22 as merged, each performed
against an in-process node (real aiohttp server on 127.0.0.1, real SQLite) and asserted to fail."""

from __future__ import annotations

import json

from tests.gateway.test_gateway_security import running_node


async def test_a_signature_timestamp_of_unicode_digits_or_thousands_of_digits_is_a_401_not_a_500(tmp_path):
    # "²" passes str.isdigit() and int() refuses it; 5,000 ASCII digits pass isdigit() and int()
    # refuses more than 4,300. Any self-registered org's API key reached int(): a 500 on every
    # signed SDK route and on a job bound to a workflow.
    async with running_node(tmp_path) as (_, client):
        acct = await client.account()
        raw = json.dumps({"workflow_id": "wf-1", "operation_id": "op-1"}).encode()
        for timestamp in ("\u00b2", "9" * 5000, "0" * 5000 + "1"):
            headers = {"Content-Type": "application/json", "X-API-Key": acct["api_key"],
                       "X-Signature": "ab" * 32, "X-Signature-Timestamp": timestamp}
            for path, extra in (("/api/v1/gate", {}), ("/api/jobs", {"X-Workflow-Id": "wf-1"})):
                async with client.session.post(client.base + path, data=raw, headers={**headers, **extra}) as resp:
                    body = await resp.text()
                    assert resp.status == 401, (timestamp[:6], path, resp.status, body)
                    assert "X-Signature-Timestamp" in body, body


async def test_an_ack_whose_message_id_is_unicode_digits_is_ignored_and_the_control_connection_lives_on(tmp_path):
    # "²" passed str.isdigit() and int() raised inside the control plane's message loop.
    async with running_node(tmp_path) as (_, client):
        acct = await client.account()
        async with client.session.ws_connect(f"{client.base.replace('http', 'ws')}/ws/control/{acct['org_id']}",
                                             headers={"X-API-Key": acct["api_key"]}) as ws:
            await ws.receive_json(timeout=5)  # initial_state
            for message_id in ("\u00b2", "9" * 5000):
                await ws.send_json({"type": "ack", "message_id": message_id})
            await ws.send_json({"type": "ping"})
            heard = await ws.receive_json(timeout=5)
            assert heard["type"] == "pong", heard
