"""The governance gateway driven by the published nullrun SDK (0.22.2), unchanged, against a
real node: agents are separate processes (tests/sdk_agent.py) that know only the node's URL
and an API key the node minted. No container is needed: these are the SDK's own calls."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway.accounts import Account
from tests.helpers import NodeProcess, REPO, container_entry, sdk_signed

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PRICES = {"gpt-x": {"input_usd_per_1k": 1.0, "output_usd_per_1k": 2.0}}


class Org(Account):
    """A dashboard user with an org (as in the gateway tests), plus API keys for agents."""

    def key(self, workflow_id: str | None) -> dict[str, Any]:
        created = self.admin("POST", "/api-keys", {"name": "agent", "workflow_id": workflow_id})
        assert created.status == 201, created.body
        return created.json


class Agent:
    """`python -m tests.sdk_agent <scenario>` with its output lines readable as they come."""

    def __init__(self, node: NodeProcess, key: dict[str, Any], scenario: str, tmp: Path, **env: str) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NULLRUN_")}
        clean.update({"NR_KEY": key["api_key"], "NR_URL": f"http://127.0.0.1:{node.port}",
                      "NULLRUN_WAL_PATH": str(tmp / f"wal-{uuid.uuid4().hex[:6]}"), "NULLRUN_ENV": "test",
                      "PYTHONUNBUFFERED": "1", **env})
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.sdk_agent", scenario], cwd=REPO, env=clean,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put({"event": "exit"})

    def next(self, timeout: float = 30) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"agent said nothing for {timeout}s; stderr:\n{''.join(self.stderr)[-3000:]}")
        assert line.get("event") != "exit", f"agent exited early; stderr:\n{''.join(self.stderr)[-3000:]}"
        return line

    def run(self, timeout: float = 60) -> list[dict]:
        """All outcome lines, once the agent is done."""
        self.proc.wait(timeout)
        time.sleep(0.1)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get())
        assert self.proc.returncode == 0, f"agent failed; stderr:\n{''.join(self.stderr)[-3000:]}"
        return [line for line in lines if "fn" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = NodeProcess(tmp_path_factory.mktemp("sdk"), [], {"gateway": {"model_prices": PRICES,
                                                                       "rotation_grace": 3}})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def org(node) -> Org:
    return Org(node)


def test_the_sdk_starts_and_protected_sync_and_async_functions_run_and_are_recorded(node, org, tmp_path):
    wid = org.workflow(budget=5)
    key = org.key(wid)
    outcomes = Agent(node, key, "basic", tmp_path).run()
    assert [(o["fn"], o["ok"], o.get("result")) for o in outcomes] == [("work", True, 42), ("awork", True, 2)]
    executions = org.admin("GET", f"/executions?workflow_id={wid}").json["executions"]
    assert sorted((e["tool"], e["allowed"], e["api_key_id"]) for e in executions) == [
        ("awork", True, key["id"]), ("work", True, key["id"])]
    audit = org.admin("GET", "/audit-log").json["entries"]
    allowed = [e for e in audit if e["action"] == "execution.allowed"]
    assert {e["after"]["tool"] for e in allowed} == {"work", "awork"}
    assert all(e["actor"] == f"key:{key['id']}" for e in allowed)


def test_tracked_token_usage_is_priced_and_adds_up_on_the_dashboard(node, org, tmp_path):
    wid = org.workflow(budget=100)
    outcomes = Agent(node, org.key(wid), "spend", tmp_path, NR_CALLS="3", NR_IN="1000", NR_OUT="500").run()
    assert [o["ok"] for o in outcomes] == [True, True, True]
    # gpt-x: $1 per 1k input tokens + $2 per 1k output tokens = $2 a call
    workflow = org.admin("GET", f"/workflows/{wid}").json
    assert workflow["spent_usd"] == pytest.approx(6.0) and workflow["reserved_usd"] == pytest.approx(0)
    dashboard = org.admin("GET", "/dashboard").json
    assert dashboard["spend_usd_total"] == pytest.approx(6.0)


def test_a_budget_that_runs_out_raises_the_sdks_budget_error_and_the_body_does_not_run(node, org, tmp_path):
    wid = org.workflow(budget=3)
    outcomes = Agent(node, org.key(wid), "spend", tmp_path, NR_CALLS="4", NR_IN="1000", NR_OUT="500").run()
    # $2 a call against $3: the second call still finds budget left, the third finds none
    assert [o["ok"] for o in outcomes] == [True, True, False, False]
    refused = outcomes[2]
    assert refused["error"] == "NullRunBudgetError" and "budget exhausted" in refused["message"]
    assert refused["runs"] == 2 and outcomes[3]["runs"] == 2  # the body did not run again
    assert org.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(4.0)


def test_the_sdks_own_track_and_cancel_settle_what_its_pre_flight_held(node, org, tmp_path):
    """Each pre-flight holds gpt-x's price of 1 input + 1000 output tokens ($2.001) of a $2.50
    budget: the crashed call's /cancel must release its hold for the next call to fit, whose
    /track settles at the actual $1; the third call's hold no longer fits."""
    wid = org.workflow(budget=2.5)
    crashed, spent, refused = Agent(node, org.key(wid), "priced", tmp_path, NR_IN="500", NR_OUT="250").run()
    assert crashed["error"] == "ValueError" and spent["ok"] is True
    assert refused["error"] == "NullRunBudgetError" and refused["runs"] == 1
    workflow = org.admin("GET", f"/workflows/{wid}").json
    assert workflow["reserved_usd"] == pytest.approx(0) and workflow["spent_usd"] == pytest.approx(1.0)


def test_a_policy_deny_raises_the_denied_error_with_the_policys_reason_for_the_agent(node, org, tmp_path):
    wid = org.workflow()
    reason = "payments need a human to approve them"
    assert org.admin("POST", "/policies", {"name": "no payments", "action": "deny", "reason": reason,
                                           "match": {"tools": ["send_money"]}}).status == 201
    denied, allowed = Agent(node, org.key(wid), "deny", tmp_path, NR_ON_DENIED="message").run()
    assert denied["error"] == "NullRunDeniedError" and denied["agent_message"] == reason
    assert denied["runs"] == 0
    assert allowed["ok"] is True
    # without the message mode the same deny is the SDK's typed tool-blocked error
    denied, _ = Agent(node, org.key(wid), "deny", tmp_path).run()
    assert denied["error"] == "NullRunToolBlockedError" and reason in denied["message"] and denied["runs"] == 0
    executions = org.admin("GET", f"/executions?workflow_id={wid}").json["executions"]
    assert [e["reason"] for e in executions if not e["allowed"]] == [reason, reason]


HALTED = {("NullRunBlockedException", "NR-W002"), ("NullRunBlockedException", "WORKFLOW_KILLED"),
          ("NullRunWorkflowInactiveError", "NR-W004")}


def _kill_while_looping(node, org, tmp_path, action: str = "kill", refusals: int = 3,
                        **env: str) -> tuple[float, list[dict], list[dict]]:
    """An agent calls a protected function every 200 ms; the dashboard kills its workflow. Returns
    the kill time, the agent's first refusals and the calls before the kill.

    Not every 50 ms: SDK 0.22.2's retry loop (`_retry_with_backoff`, which retries any exception
    it does not list) retried, with backoff, a NullRunWorkflowKilledError raised inside one of
    its HTTP calls when the kill landed while a protected call was under way, stalling the agent
    for seconds (about one run in ten at 50 ms). At 200 ms the agent spends far less of its loop
    inside such calls; the SDK's own flaw, not the node's answer."""
    wid = org.workflow()
    agent = Agent(node, org.key(wid), "loop", tmp_path, NR_STOP_AFTER_ERRORS=str(refusals), NR_INTERVAL="0.2", **env)
    try:
        assert agent.next()["event"] == "ready"
        before = [agent.next() for _ in range(5)]
        assert all(line["ok"] for line in before)
        time.sleep(1.2)  # long enough for the poll fallback to have polled in between
        while not agent.lines.empty():
            agent.lines.get()
        killed_at = time.time()
        assert org.admin("POST", f"/workflows/{wid}/{action}").status == 200
        refused: list[dict] = []
        while len(refused) < refusals:
            line = agent.next(timeout=10)
            assert line["t"] < killed_at + 0.5 or not line["ok"], "a call ran after the kill"
            if not line["ok"]:
                refused.append(line)
        return killed_at, refused, before
    finally:
        agent.stop()


def test_a_pause_stops_a_looping_agent_with_the_sdks_halt_error(node, org, tmp_path):
    killed_at, refused, _ = _kill_while_looping(node, org, tmp_path, action="pause", refusals=10)
    assert refused[0]["t"] - killed_at < 1.0
    assert {(r["error"], r["code"]) for r in refused} <= {("NullRunBlockedException", "NR-W003"),
                                                          ("NullRunBlockedException", "WORKFLOW_PAUSED")}
    assert refused[-1]["code"] == "NR-W003"  # from the pushed state


def test_a_kill_from_the_dashboard_stops_a_looping_agent_within_a_second_over_the_websocket(node, org, tmp_path):
    killed_at, refused, _ = _kill_while_looping(node, org, tmp_path, refusals=10)
    assert refused[0]["t"] - killed_at < 1.0, f"the kill took {refused[0]['t'] - killed_at:.3f}s to stop the agent"
    assert all((r["error"], r["code"]) in HALTED for r in refused), refused
    # the pushed state: the SDK refuses by itself (NR-W002) without asking the node
    assert refused[-1]["code"] == "NR-W002"


def test_a_kill_stops_a_looping_agent_within_a_second_when_the_websocket_is_down(node, org, tmp_path):
    killed_at, refused, _ = _kill_while_looping(node, org, tmp_path, refusals=12, NULLRUN_TRANSPORT="http")
    assert refused[0]["t"] - killed_at < 1.0, f"the kill took {refused[0]['t'] - killed_at:.3f}s to stop the agent"
    assert all((r["error"], r["code"]) in HALTED for r in refused), refused
    # the node refuses at once; within about a second the SDK's own poll has the state too
    assert refused[-1]["code"] == "NR-W002" and refused[-1]["t"] - killed_at < 3


def test_a_key_rotation_is_picked_up_by_a_running_agent_without_a_restart(node, org, tmp_path):
    """SDK 0.22.2 hears key_rotated but never re-fetches (its async callback is not awaited), so
    the node keeps the previous secret valid for `rotation_grace` (3 s here): a running agent
    goes on working through the rotation, and when the grace ends its next call is refused
    until it initialises again in the same process, which fetches the new secret and version."""
    wid = org.workflow()
    key = org.key(wid)
    agent = Agent(node, key, "loop", tmp_path, NR_INTERVAL="0.1", NR_SECONDS="20", NR_REINIT_ON_AUTH="1")
    try:
        first = agent.next()
        assert first["event"] == "ready"
        assert agent.next()["ok"]
        rotated_at = time.time()
        assert org.admin("POST", f"/api-keys/{key['id']}/rotate").status == 200
        lines = []
        while not (len(lines) > 3 and all(line.get("ok") for line in lines[-3:]) and
                   any(line.get("event") == "reinit" for line in lines)):
            lines.append(agent.next(timeout=10))
    finally:
        agent.stop()
    in_grace = [line for line in lines if line["t"] - rotated_at < 2.5]
    assert in_grace and all(line["ok"] for line in in_grace)
    refused = [line for line in lines if line.get("ok") is False]
    assert [line["error"] for line in refused] == ["NullRunAuthError"]
    assert refused[0]["t"] - rotated_at > 3
    reinit = next(line for line in lines if line.get("event") == "reinit")
    assert reinit["secret"] != first["secret"] and lines[-1]["secret"] == reinit["secret"]
    assert node.http().post("/api/v1/auth/verify", {"api_key": key["api_key"]}).json["key_version"] == 2


def test_a_killed_workflow_cannot_be_resumed(node, org):
    wid = org.workflow()
    assert org.admin("POST", f"/workflows/{wid}/pause").status == 200
    assert org.admin("POST", f"/workflows/{wid}/resume").status == 200
    assert org.admin("POST", f"/workflows/{wid}/kill").status == 200
    resumed = org.admin("POST", f"/workflows/{wid}/resume")
    assert resumed.status == 409 and org.admin("GET", f"/workflows/{wid}").json["status"] == "killed"


# -- the seed's open items, by hand (the same wire the SDK uses) ------------------------------

def signed(key: dict[str, Any], body: bytes, ts: int | None = None) -> dict[str, str]:
    return sdk_signed(key["api_key"], key["secret_key"], body, ts)


def sdk_post(node: NodeProcess, key: dict[str, Any], path: str, body: Any, **headers: str):
    raw = json.dumps(body).encode()
    return node.http().request("POST", f"/api/v1{path}", raw=raw, headers={**signed(key, raw), **headers})


async def ws_messages(node: NodeProcess, org_id: str, headers: dict[str, str], query: str = "",
                      until: str = "pong") -> list[dict]:
    out: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{node.port}/ws/control/{org_id}{query}",
                                      headers=headers) as ws:
            await ws.send_json({"type": "ping"})
            while not out or out[-1]["type"] != until:
                out.append(await ws.receive_json(timeout=5))
    return out


def test_x_workflow_id_binds_sdk_calls_of_an_unbound_key(node, org):
    wid = org.workflow(budget=1)
    key = org.key(None)
    gate = sdk_post(node, key, "/gate", {"estimated_tokens": 1}, **{"X-Workflow-Id": wid})
    assert gate.status == 200 and gate.json["workflow_id"] == wid
    execute = sdk_post(node, key, "/execute", {"execution_id": gate.json["reservation_id"], "tool": "t"})
    assert execute.status == 200 and execute.json["workflow_id"] == wid
    track = sdk_post(node, key, "/track", {"cost_usd": 0.25, "reservation_id": gate.json["reservation_id"]},
                     **{"X-Workflow-Id": wid})
    assert track.status == 200 and org.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(0.25)
    bound = org.key(wid)
    other = org.workflow()
    refused = sdk_post(node, bound, "/gate", {}, **{"X-Workflow-Id": other})
    assert refused.status == 403 and "scoped" in refused.json["error"]["message"]


def test_an_api_key_on_another_orgs_routes_is_403_not_401(node, org):
    key = org.key(None)
    other = Org(node)
    for path in ("", "/workflows", "/policies", "/status", "/audit-log", "/dashboard", "/api-keys", "/executions"):
        by_header = node.http().get(f"/api/v1/orgs/{other.org_id}{path}", headers=signed(key, b""))
        by_bearer = node.http().get(f"/api/v1/orgs/{other.org_id}{path}",
                                    headers={"Authorization": f"Bearer {key['api_key']}"})
        assert (path, by_header.status, by_bearer.status) == (path, 403, 403)
    assert node.http().get(f"/api/v1/orgs/{org.org_id}/workflows", headers=signed(key, b"")).status == 200
    forged = {**signed(key, b""), "X-API-Key": "nr_live_forged"}
    assert node.http().get(f"/api/v1/orgs/{other.org_id}/workflows", headers=forged).status == 401


def test_the_control_plane_takes_keys_in_headers_never_in_the_query_string(node, org):
    key = org.key(None)
    ts = int(time.time())
    sig = signed(key, b"", ts)["X-Signature"]
    query = f"?api_key={key['api_key']}&timestamp={ts}&signature={sig}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(ws_messages(node, org.org_id, {}, query))
    assert refused.value.status == 401
    messages = asyncio.run(ws_messages(node, org.org_id, {"X-API-Key": key["api_key"]}))
    assert messages[0]["type"] == "initial_state" and messages[-1]["type"] == "pong"


def test_control_plane_sequence_numbers_survive_a_restart(tmp_path):
    proc = NodeProcess(tmp_path / "n", []).start()
    try:
        org = Org(proc)
        key = org.key(None)
        wid = org.workflow()
        org.admin("POST", f"/workflows/{wid}/pause")
        org.admin("POST", f"/workflows/{wid}/resume")
        replay = asyncio.run(ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=0"))
        seqs = [m["seq"] for m in replay if m["type"] == "state_change"]
        assert seqs == [1, 2, 3]  # created, paused, resumed
        proc.stop()
        proc.start()
        after = asyncio.run(ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=3"))
        assert after[0]["type"] == "initial_state" and after[0]["seq"] == 3
        missed = asyncio.run(ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=2"))
        assert [m["type"] for m in missed] == ["initial_state", "resync_required", "pong"]
        org.admin("POST", f"/workflows/{wid}/kill")
        killed = asyncio.run(ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=0"))
        change = [m for m in killed if m["type"] == "state_change"]
        assert killed[1]["type"] == "resync_required" and change == []
        latest = asyncio.run(ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=3"))
        [kill] = [m for m in latest if m["type"] == "state_change"]
        assert kill["seq"] == 4 and kill["state"] == "Killed" and kill["workflow_id"] == wid
    finally:
        proc.stop()


# -- attacks (security issue items 6, 11) -------------------------------------------------------

def test_a_signed_request_replayed_to_another_endpoint_or_again_does_not_spend_twice(node, org):
    wid = org.workflow(budget=10)
    key = org.key(None)
    raw = json.dumps({"workflow_id": wid, "estimated_cost_usd": 2.0}).encode()
    headers = signed(key, raw)
    http = node.http()
    assert http.request("POST", "/api/v1/gate", raw=raw, headers=headers).status == 200
    # the attack: the same signed bytes sent to /execute, three times
    replays = [http.request("POST", "/api/v1/execute", raw=raw, headers=headers) for _ in range(3)]
    assert [r.status for r in replays] == [401, 401, 401]
    assert "already used for /api/v1/gate" in replays[0].json["error"]["message"]
    assert org.admin("GET", f"/workflows/{wid}").json["reserved_usd"] == pytest.approx(0)
    # an identical signed /execute sent again gets its first answer and reserves once
    raw = json.dumps({"workflow_id": wid, "estimated_cost_usd": 2.0, "tool": "x"}).encode()
    headers = signed(key, raw)
    answers = [http.request("POST", "/api/v1/execute", raw=raw, headers=headers) for _ in range(4)]
    assert {a.status for a in answers} == {200} and len({a.json["execution_id"] for a in answers}) == 1
    assert org.admin("GET", f"/workflows/{wid}").json["reserved_usd"] == pytest.approx(2.0)
    assert len(org.admin("GET", f"/executions?workflow_id={wid}").json["executions"]) == 1


def _stuck_client(port: int, org_id: str, api_key: str) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that asks for a pong 60 000 times and never
    reads an answer: its backlog on the server grows without bound unless the server drops it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws/control/{org_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
                 f"X-API-Key: {api_key}\r\n\r\n".encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    payload, mask = b'{"type":"ping"}', os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.settimeout(30)
    sock.sendall(frame * 60_000)
    return sock


def test_a_websocket_client_that_never_reads_is_dropped_and_does_not_delay_the_kill_switch(tmp_path):
    proc = NodeProcess(tmp_path / "n", [], {"gateway": {"ws_queue": 8}}).start()
    try:
        org = Org(proc)
        key = org.key(None)
        wid = org.workflow()

        async def scenario() -> tuple[float, dict, list[dict]]:
            async with aiohttp.ClientSession() as session:
                url = f"ws://127.0.0.1:{proc.port}/ws/control/{org.org_id}"
                live = await session.ws_connect(url, headers={"X-API-Key": key["api_key"]})
                assert (await live.receive_json(timeout=5))["type"] == "initial_state"
                loop = asyncio.get_running_loop()
                stuck = await loop.run_in_executor(None, _stuck_client, proc.port, org.org_id, key["api_key"])
                deadline = time.monotonic() + 30
                while "control.client_dropped" not in proc.log() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                killed_at = time.monotonic()
                answer = await loop.run_in_executor(None, org.admin, "POST", f"/workflows/{wid}/kill")
                assert answer.status == 200 and time.monotonic() - killed_at < 1.0
                kill = await live.receive_json(timeout=5)
                latency = time.monotonic() - killed_at
                await live.close()
                stuck.close()
            again = await ws_messages(proc, org.org_id, {"X-API-Key": key["api_key"]}, "?last_seq=0")
            return latency, kill, again

        latency, kill, again = asyncio.run(scenario())
        assert kill["type"] == "state_change" and kill["state"] == "Killed" and latency < 1.0
        assert "control.client_dropped" in proc.log()
        assert [m["type"] for m in again][:2] == ["initial_state", "state_change"]  # still buffered: replayed
    finally:
        proc.stop()


def test_binding_a_job_to_another_orgs_workflow_is_refused_and_reveals_nothing(node, org):
    victim = org.workflow(budget=10)
    org.admin("POST", f"/workflows/{victim}/pause")
    attacker = Org(node)
    attacker_key = attacker.key(None)
    job = {"containers": ["echo"], "data": {}}
    raw = json.dumps(job).encode()
    http = node.http()
    anonymous = http.request("POST", "/api/jobs", raw=raw, headers={"X-Workflow-Id": victim})
    foreign = http.request("POST", "/api/jobs", raw=raw, headers={"X-Workflow-Id": victim, **signed(attacker_key, raw)})
    missing = http.request("POST", "/api/jobs", raw=raw,
                           headers={"X-Workflow-Id": "no-such-workflow", **signed(attacker_key, raw)})
    batch = http.request("POST", "/api/jobs/batch", raw=b"[" + raw + b"]", headers={"X-Workflow-Id": victim})
    assert (anonymous.status, foreign.status, missing.status, batch.status) == (401, 404, 404, 401)
    # the same answer for a paused workflow of another org as for one that does not exist
    assert foreign.json["error"].replace(victim, "X") == missing.json["error"].replace("no-such-workflow", "X")
    assert org.admin("GET", f"/executions?workflow_id={victim}").json["executions"] == []
    assert org.admin("GET", f"/workflows/{victim}").json["reserved_usd"] == 0
    # the workflow's own org, signed, gets through to the job API (which knows no such container here)
    own = http.request("POST", "/api/jobs", raw=raw, headers={"X-Workflow-Id": victim, **signed(org.key(victim), raw)})
    assert own.status == 400 and own.json["error"] == "Container not supported"


def test_workflow_ids_are_per_org_so_nobody_can_squat_or_probe_them(node, org):
    squatter = Org(node)
    wid = f"prod-{uuid.uuid4().hex[:6]}"
    # the squatter takes the id first: the victim is neither refused nor told it exists
    assert squatter.admin("POST", "/workflows", {"id": wid, "name": "mine", "budget_usd": 1}).status == 201
    assert org.admin("POST", "/workflows", {"id": wid, "name": "ours", "budget_usd": 5}).status == 201
    assert org.admin("POST", "/workflows", {"id": wid, "name": "again"}).status == 409  # within one org: taken
    squatter_key, key = squatter.key(wid), org.key(wid)
    assert sdk_post(node, squatter_key, "/track", {"workflow_id": wid, "cost_usd": 0.75}).status == 200
    assert sdk_post(node, key, "/track", {"workflow_id": wid, "cost_usd": 2}).status == 200
    assert org.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(2)
    assert squatter.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(0.75)
    # killing one org's workflow leaves the other's untouched
    assert squatter.admin("POST", f"/workflows/{wid}/kill").status == 200
    assert org.admin("GET", f"/workflows/{wid}").json["status"] == "active"
    gate = sdk_post(node, key, "/gate", {"estimated_tokens": 1})
    assert gate.status == 200 and gate.json["workflow_id"] == wid
    assert sdk_post(node, squatter_key, "/gate", {}).json["error_code"] == "WORKFLOW_KILLED"


@pytest.mark.docker
def test_the_nodes_own_jobs_follow_a_default_workflow_named_with_its_org(docker_engine, tmp_path):
    proc = NodeProcess(tmp_path / "n", [container_entry("echo", "echo")]).start()
    try:
        owner, squatter = Org(proc), Org(proc)
        wid = "node-traffic"
        assert squatter.admin("POST", "/workflows", {"id": wid, "name": "squat"}).status == 201
        assert owner.admin("POST", "/workflows", {"id": wid, "name": "node"}).status == 201
        proc.stop()
        proc.extra = {"gateway": {"default_workflows": {"offchain": f"{owner.org_id}/{wid}"}}}
        proc.write_config()
        proc.start()
        http = proc.http()
        assert http.post("/api/jobs", {"containers": ["echo"], "data": {}}).status == 200
        squatter.admin("POST", f"/workflows/{wid}/pause")  # the squatter's pause changes nothing here
        assert http.post("/api/jobs", {"containers": ["echo"], "data": {}}).status == 200
        owner.admin("POST", f"/workflows/{wid}/pause")
        refused = http.post("/api/jobs", {"containers": ["echo"], "data": {}})
        assert refused.status == 403 and refused.json["error"] == f"Workflow {wid} is paused"
        executions = owner.admin("GET", f"/executions?workflow_id={wid}").json["executions"]
        assert [e["allowed"] for e in executions] == [True, True]
        assert squatter.admin("GET", f"/executions?workflow_id={wid}").json["executions"] == []
    finally:
        proc.stop()
        proc.remove_containers()


def test_the_sdk_works_when_the_node_requires_signatures_given_its_secret_in_nullrun_secret_key(tmp_path):
    """With signatures required, auth/verify no longer hands out the secret (issue 22, item 5):
    the SDK signs with NULLRUN_SECRET_KEY, the secret shown once when the key was minted."""
    proc = NodeProcess(tmp_path / "n", [], {"gateway": {"hmac_required": True}}).start()
    try:
        org = Org(proc)
        wid = org.workflow(budget=1)
        key = org.key(wid)
        agent = Agent(proc, key, "basic", tmp_path, NULLRUN_SECRET_KEY=key["secret_key"])
        assert agent.next()["secret"] == hashlib.sha256(key["secret_key"].encode()).hexdigest()[:12]
        outcomes = agent.run()
        assert [(o["fn"], o["ok"]) for o in outcomes] == [("work", True), ("awork", True)]
        assert "gateway.unsigned_rejected" not in proc.log()
        # the same SDK with the API key alone learns no secret, so it cannot act
        lone = Agent(proc, key, "basic", tmp_path)
        assert lone.next()["secret"] == hashlib.sha256(b"").hexdigest()[:12]
        assert [(o["fn"], o["ok"]) for o in lone.run()] == [("work", False), ("awork", False)]
        assert "gateway.unsigned_rejected" in proc.log()
        raw = json.dumps({"workflow_id": wid, "cost_usd": 1}).encode()
        unsigned = proc.http().request("POST", "/api/v1/track", raw=raw, headers={"X-API-Key": org.key(wid)["api_key"]})
        assert unsigned.status == 401
    finally:
        proc.stop()


def test_the_sdk_signs_with_nullrun_secret_key_when_the_operator_keeps_the_secret_out_of_verify(tmp_path):
    proc = NodeProcess(tmp_path / "n", [], {"gateway": {"verify_returns_secret": False}}).start()
    try:
        org = Org(proc)
        wid = org.workflow(budget=1)
        key = org.key(wid)
        assert "secret_key" not in proc.http().post("/api/v1/auth/verify", {"api_key": key["api_key"]}).json
        agent = Agent(proc, key, "basic", tmp_path, NULLRUN_SECRET_KEY=key["secret_key"])
        outcomes = agent.run()
        assert [(o["fn"], o["ok"]) for o in outcomes] == [("work", True), ("awork", True)]
        unsigned = [line for line in proc.log().splitlines() if "gateway.unsigned_request" in line]
        assert all("path=/ws/control/" in line for line in unsigned)  # only the handshake is unsigned
    finally:
        proc.stop()


def test_an_sdk_batch_with_an_event_outside_the_keys_workflow_refuses_only_that_event(node, org):
    wid, other = org.workflow(), org.workflow()
    key = org.key(wid)
    events = [{"event_id": "e1", "workflow_id": wid, "type": "tool_call", "tokens": 0, "cost_usd": 0.5},
              {"event_id": "e2", "workflow_id": other, "type": "tool_call", "tokens": 0, "cost_usd": 9}]
    answer = sdk_post(node, key, "/track/batch", {"events": events})
    assert answer.status == 200 and answer.json["accepted_event_ids"] == ["e1"]
    assert [(r["event_id"], r["reason"]) for r in answer.json["rejection_details"]] == [("e2", "workflow_out_of_scope")]
    assert org.admin("GET", f"/workflows/{wid}").json["spent_usd"] == pytest.approx(0.5)
    assert org.admin("GET", f"/workflows/{other}").json["spent_usd"] == 0


def test_a_key_bound_to_no_workflow_still_runs_under_the_orgs_policies(node, org, tmp_path):
    assert org.admin("POST", "/policies", {"name": "no payments", "action": "deny", "reason": "not today",
                                           "match": {"tools": ["send_money"]}}).status == 201
    denied, allowed = Agent(node, org.key(None), "deny", tmp_path, NR_ON_DENIED="message").run()
    assert denied["error"] == "NullRunDeniedError" and denied["agent_message"] == "not today" and denied["runs"] == 0
    assert allowed["ok"] is True
    tools = {(e["tool"], e["allowed"], e["workflow_id"]) for e in org.admin("GET", "/executions").json["executions"]}
    assert tools == {("send_money", False, None), ("work", True, None)}


def test_a_signed_request_replayed_after_a_restart_is_refused(tmp_path):
    proc = NodeProcess(tmp_path / "n", []).start()
    try:
        org = Org(proc)
        wid = org.workflow(budget=10)
        key = org.key(wid)
        raw = json.dumps({"estimated_cost_usd": 3.0, "tool": "x"}).encode()
        headers = signed(key, raw)
        assert proc.http().request("POST", "/api/v1/execute", raw=raw, headers=headers).status == 200
        proc.stop()
        time.sleep(1)  # a new second: the restart's
        proc.start()
        again = proc.http().request("POST", "/api/v1/execute", raw=raw, headers=headers)
        assert again.status == 401 and "signed before this node started" in again.json["error"]["message"]
        assert org.admin("GET", f"/workflows/{wid}").json["reserved_usd"] == pytest.approx(3.0)
        # signed anew (as the SDK signs every attempt), the same call goes through
        assert sdk_post(proc, key, "/execute", {"estimated_cost_usd": 3.0, "tool": "x"}).status == 200
    finally:
        proc.stop()
