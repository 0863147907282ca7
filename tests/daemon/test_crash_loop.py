"""Crash loop: what the node acknowledged survives a SIGKILL at any moment.

Start a real node, drive mixed load from threads (echo jobs over HTTP, HMAC-signed CRE ingests
and decisions, governance gateway execute and track, registry project writes), SIGKILL it at a
random moment, check the SQLite file while it is down, restart, check again through the API.
Every cycle asserts:

- every job id, CRE record and decision, gateway execution and event, and registry project the
  node answered is in the database, and the registry token issued before the first crash still
  works; every job result a client read is unchanged (before and after the restart);
- a CRE nonce accepted before the crash is refused after it (no request accepted twice);
- `PRAGMA integrity_check` is ok.

`CRASH_CYCLES` (default 10) sets the number of cycles; `scripts/crash_loop.sh N` runs more.
The containers run as plain processes (the shipped echo service) so a cycle costs no Docker work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from node.cre.client import signed_headers
from tests.helpers import Http, NodeProcess, workload_process

pytestmark = [pytest.mark.crash_loop, pytest.mark.docker, pytest.mark.slow]

CYCLES = int(os.environ.get("CRASH_CYCLES", "10"))
CRE_KEY = "crash-loop-key"
RESTART_ERROR = "node stopped while the job was running"


class Ledger:
    """What clients were told, recorded only when the answer arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, object] = {}  # acked job id -> its input
        self.read: dict[str, dict] = {}  # job id -> the finished result a client read
        self.ingests: set[str] = set()  # idempotency keys answered inserted: true
        self.decisions: set[str] = set()
        self.events: set[str] = set()  # gateway event ids
        self.executions: set[str] = set()  # gateway execution ids (allowed, with a reservation)
        self.projects: set[str] = set()  # registry project ids (created: 201)
        self.signed: list[tuple[bytes, dict[str, str], str]] = []  # accepted CRE requests (to replay)


def _jobs_worker(http: Http, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        data = {"n": uuid.uuid4().hex}
        try:
            resp = http.post("/api/jobs", {"containers": ["echo"], "data": data}, timeout=5)
            if resp.status != 200:
                continue
            job_id = resp.json["id"]
            with ledger.lock:
                ledger.jobs[job_id] = data
            got = http.get(f"/api/jobs?id={job_id}&wait=5", timeout=10)
            if got.status == 200 and got.json and got.json[0]["status"] != "running":
                with ledger.lock:
                    ledger.read[job_id] = got.json[0]["result"]
        except OSError:
            time.sleep(0.05)


def _cre_worker(http: Http, ledger: Ledger, stop: threading.Event) -> None:
    while not stop.is_set():
        key = uuid.uuid4().hex
        if random.random() < 0.7:
            path, body = "/api/cre/runtime/ingest", {"workflow": "runtime-reference-feeds", "kind": "feeds",
                                                     "idempotencyKey": key, "payload": {"price": random.random()}}
        else:
            path, body = "/api/cre/runtime/decisions", {"workflow": "runtime-orchestrator", "idempotencyKey": key,
                                                        "decision": {"go": True}}
        raw = json.dumps(body).encode()
        headers = signed_headers(body, CRE_KEY)
        try:
            resp = http.request("POST", path, raw=raw, headers=headers, timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        if resp.status in (200, 201) and resp.json.get("success"):
            with ledger.lock:
                (ledger.ingests if path.endswith("ingest") else ledger.decisions).add(key)
                ledger.signed.append((raw, headers, path))


def _gateway_worker(http: Http, ledger: Ledger, stop: threading.Event, api_key: str, workflow: str) -> None:
    headers = {"X-API-Key": api_key}
    while not stop.is_set():
        try:
            resp = http.post("/api/v1/execute", {"workflow_id": workflow, "estimated_cost_usd": 0.01},
                             headers=headers, timeout=5)
            if resp.status != 200 or not resp.json.get("allowed"):
                continue
            with ledger.lock:
                ledger.executions.add(resp.json["execution_id"])
            resp = http.post("/api/v1/track", {"workflow_id": workflow, "cost_usd": 0.005,
                                               "reservation_id": resp.json["reservation_id"]},
                             headers=headers, timeout=5)
            if resp.status == 200 and resp.json.get("tracked"):
                with ledger.lock:
                    ledger.events.add(resp.json["event_id"])
        except OSError:
            time.sleep(0.05)


def _registry_worker(http: Http, ledger: Ledger, stop: threading.Event, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        try:
            resp = http.post("/api/projects", {"name": uuid.uuid4().hex[:12]}, headers=headers, timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        if resp.status in (200, 201):
            with ledger.lock:
                ledger.projects.add(resp.json["projectId"])


def _registry_token(http: Http) -> str:
    account = Account.create()
    nonce = http.post("/api/auth/nonce", {"address": account.address}).json  # an EIP-4361 message
    signature = "0x" + account.sign_message(encode_defunct(text=nonce["message"])).signature.hex()
    resp = http.post("/api/auth/verify", {"nonce": nonce["nonce"], "signature": signature})
    assert resp.status == 200, resp.body
    return resp.json["token"]


def _check_database(db: Path, ledger: Ledger) -> None:
    """The node is dead: everything it acknowledged must be in the file."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, status, result FROM jobs")}
        lost = [job_id for job_id in ledger.jobs if job_id not in rows]
        assert not lost, f"{len(lost)} acknowledged jobs lost, e.g. {lost[:3]}"
        changed = [j for j, result in ledger.read.items() if json.loads(rows[j][1] or "null") != result]
        assert not changed, f"{len(changed)} results a client read changed, e.g. {changed[:3]}"

        def present(sql: str, wanted: set[str]) -> set[str]:
            return wanted - {r[0] for r in conn.execute(sql)}

        assert not present("SELECT idempotency_key FROM cre_runtime_records", ledger.ingests)
        assert not present("SELECT idempotency_key FROM cre_runtime_decisions", ledger.decisions)
        assert not present("SELECT id FROM gw_events", ledger.events)
        assert not present("SELECT id FROM gw_executions", ledger.executions)
        assert not present("SELECT id FROM reg_projects", ledger.projects)
    finally:
        conn.close()


def _check_after_restart(http: Http, ledger: Ledger, token: str) -> None:
    sample = random.sample(sorted(ledger.jobs), min(200, len(ledger.jobs)))
    jobs = {}
    for start in range(0, len(sample), 50):
        query = "&".join(f"id={j}" for j in sample[start:start + 50])
        jobs.update({j["id"]: j for j in http.get(f"/api/jobs?{query}").json})
    assert set(jobs) == set(sample), "acknowledged jobs unknown after the restart"
    for job_id, job in jobs.items():
        assert job["status"] != "running" or job_id not in ledger.read
        if job_id in ledger.read:
            assert job["result"] == ledger.read[job_id]
    assert http.get("/api/accounts/me", headers={"Authorization": f"Bearer {token}"}).status == 200
    for raw, headers, path in ledger.signed[-20:]:  # replays of requests accepted before the crash
        resp = http.request("POST", path, raw=raw, headers=headers)
        assert resp.status == 409, (path, resp.status, resp.body)


@pytest.fixture
def echo_service():
    proc, url = workload_process("echo")
    yield url
    proc.kill()
    proc.wait()


def test_nothing_acknowledged_is_lost_across_sigkills(tmp_path, echo_service):
    node = NodeProcess(tmp_path, [{"id": "echo", "url": echo_service}],
                       extra={"manage_containers": False,
                              "cre": {"api_key": CRE_KEY, "enforce_hmac": True}})
    node.start(timeout=60)
    http = node.http()
    reg = http.post("/api/v1/auth/register", {"email": "crash@example.com", "password": "correct horse",
                                              "name": "C", "org_name": "C"})
    token = http.post("/api/v1/auth/login", {"email": "crash@example.com", "password": "correct horse"}).json["token"]
    workflow = "wf-crash"
    resp = http.request("POST", f"/api/v1/orgs/{reg.json['org_id']}/workflows",
                        {"id": workflow, "name": workflow, "budget_usd": 1e9},
                        headers={"Authorization": f"Bearer {token}"})
    assert resp.status in (200, 201), resp.body
    registry_token = _registry_token(http)  # signed in once: the token must outlive every crash
    ledger = Ledger()
    rng = random.Random(os.environ.get("CRASH_SEED"))
    for cycle in range(CYCLES):
        stop = threading.Event()
        threads = [threading.Thread(target=_jobs_worker, args=(http, ledger, stop)) for _ in range(6)]
        threads += [threading.Thread(target=_cre_worker, args=(http, ledger, stop)) for _ in range(2)]
        threads += [threading.Thread(target=_gateway_worker, args=(http, ledger, stop, reg.json["api_key"], workflow))]
        threads += [threading.Thread(target=_registry_worker, args=(http, ledger, stop, registry_token))]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.4, 1.5))
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        stop.set()
        for thread in threads:
            thread.join()
        _check_database(tmp_path / "node.db", ledger)
        node.start(timeout=60)
        _check_after_restart(http, ledger, registry_token)
    assert (len(ledger.jobs) > 50 * CYCLES and ledger.read and ledger.ingests and ledger.events
            and ledger.executions and ledger.projects), (
        len(ledger.jobs), len(ledger.read), len(ledger.ingests), len(ledger.events), len(ledger.executions),
        len(ledger.projects))
    node.stop()
