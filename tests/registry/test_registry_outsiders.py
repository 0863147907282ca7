"""What an outsider could do to the registry and its relayer (issue 22, round three), each attack
performed and refused. In-process: the registry's routes on an aiohttp test server built like the
node's, its relayer and event watcher driven directly with a stand-in orchestrator (no Docker)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from eth_account import Account
from eth_utils import keccak

from node.jobs.models import Job
from node.lifecycle import Supervisor
from node.registry.api import FAMILY, RegistryApi
from node.registry.config import RegistryConfig
from node.registry.relayer import CronRelayer
from node.registry.service import RegistryService
from node.registry.store import RegistryStore
from node.server.config import RateLimitConfig
from node.server.http import ErrorShapes, RateLimiter, make_middlewares
from node.storage import Database
from tests.registry.test_registry import CID, ORACLES, TOKEN_IN, config_signature, oracle_response, sign_digest

OWNER, STRANGER, RELAYER = Account.create(), Account.create(), Account.create()
NODE_KEY = "0x" + Account.create().key.hex()
ROUTE = {"containers": ["strategy"], "anyone": True}
BASE = {"oracles": [o.address for o in ORACLES], "relayers": [RELAYER.address], "relayer_key": NODE_KEY,
        "tasks": {CID: ROUTE}, "min_cron_period": 1}


class FakeOrchestrator:
    """Answers every job with an empty execution; `hold` keeps jobs running until it is set."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.hold = hold

    async def run(self, containers, data, *, client: str, source: str) -> Job:
        self.calls.append(data)
        if self.hold is not None:
            await self.hold.wait()
        return Job(id=f"job-{len(self.calls)}", client=client, containers=list(containers), source=source,
                   status="success", result={"output": {"intents": [], "logs": [
                       {"timestamp": 1, "level": "info", "message": "ok"}]}})


class Registry:
    """The registry of one node, in-process: its store, service, routes and an HTTP client."""

    def __init__(self, db: Database, service: RegistryService, http: TestClient) -> None:
        self.db, self.service, self.store, self.http = db, service, service.store, http

    async def bearer(self, account) -> dict[str, str]:
        token, _ = await self.store.sign_in(account.address, 3600)
        return {"Authorization": f"Bearer {token}"}

    async def project(self, owner=OWNER, version: str = "1.0.0") -> tuple[str, str, dict]:
        headers = await self.bearer(owner)
        task = await self.http.post("/api/tasks", json={"cid": CID, "version": version, "name": "t"}, headers=headers)
        task_id = (await task.json())["taskId"]
        project = await self.http.post("/api/projects", json={"name": "p"}, headers=headers)
        project_id = (await project.json())["projectId"]
        linked = await self.http.post(f"/api/projects/{project_id}/tasks", json={"taskId": task_id}, headers=headers)
        assert linked.status == 200
        return project_id, task_id, headers

    async def create_config(self, project_id: str, task_id: str, trigger: dict, signer=OWNER, name: str = "cfg"):
        body = {"name": name, "requriedOracleConfirmations": 1, "requriedRelayerConfirmations": 1,
                "trigger": trigger, "data": {"n": name}}
        body["signature"] = config_signature(signer, project_id, task_id, body)
        return await self.http.post(f"/api/projects/{project_id}/tasks/{task_id}/configs", json=body)

    async def config(self, project_id: str, task_id: str, trigger: dict, **kw) -> dict:
        created = await self.create_config(project_id, task_id, trigger, **kw)
        assert created.status == 201, await created.text()
        return await self.store.config((await created.json())["configId"])

    async def executions(self, task_id: str) -> int:
        return (await self.db.fetchone("SELECT COUNT(*) FROM reg_executions WHERE task_id = ?", (task_id,)))[0]

    async def inputs(self, config_id: str) -> int:
        return (await self.db.fetchone("SELECT COUNT(*) FROM reg_inputs WHERE config_id = ?", (config_id,)))[0]


@pytest.fixture
async def registry_factory(tmp_path):
    opened: list[tuple[Database, TestClient]] = []

    async def make(**settings: Any) -> Registry:
        db = Database(str(tmp_path / f"reg{len(opened)}.db"))
        await db.open()
        store = RegistryStore(db)
        await store.start()
        service = RegistryService(store, RegistryConfig.model_validate(BASE | settings))
        await service.start()
        app = web.Application(middlewares=make_middlewares(ErrorShapes([FAMILY]), RateLimiter(RateLimitConfig())),
                              client_max_size=16 * 1024 * 1024)
        app.add_routes(RegistryApi(service).routes())
        http = TestClient(TestServer(app, host="127.0.0.1"))
        await http.start_server()
        opened.append((db, http))
        return Registry(db, service, http)

    yield make
    for db, http in opened:
        await http.close()
        await db.close()


@pytest.fixture
async def reg(registry_factory) -> Registry:
    return await registry_factory()


EVENT = {"event": {"chainId": 1, "address": TOKEN_IN}}


def prices(ts: int | None = None) -> dict:
    return {"getPrice": [{"params": [TOKEN_IN], "responses": [oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 2.0,
                                                                               ts=ts)]}]}


def input_body(task_id: str, config_id: str, raw: dict, tx: str | None = None, chain_id: int = 1,
               signer=None) -> dict:
    trigger = {"chainId": chain_id, "transactionHash": tx or "0x" + keccak(text=str(time.time_ns())).hex(),
               "logIndex": 0}
    body = {"configId": config_id, "trigger": trigger, "rawInputs": raw}
    if signer is not None:
        body["signature"] = sign_digest(signer, {"taskId": task_id, "configId": config_id, "trigger": trigger,
                                                 "rawInputs": raw})
    return body


# -- item 2: inputs only from someone entitled, never in the node's own namespace ----------------------


async def test_an_input_needs_a_relayer_signature_or_a_role_in_the_project_and_is_not_stored_otherwise(reg):
    project_id, task_id, owner = await reg.project()
    config = await reg.config(project_id, task_id, EVENT)
    url, config_id = f"/api/tasks/{task_id}/inputs", config["configId"]
    anonymous = await reg.http.post(url, json=input_body(task_id, config_id, prices()))
    assert anonymous.status == 401, await anonymous.text()
    forged = await reg.http.post(url, json=input_body(task_id, config_id, prices(), signer=STRANGER))
    assert forged.status == 401 and (await forged.json())["message"] == "Invalid relayer signature"
    stranger = await reg.http.post(url, json=input_body(task_id, config_id, prices()),
                                   headers=await reg.bearer(STRANGER))
    assert stranger.status == 403
    assert await reg.inputs(config_id) == 0
    relayed = await reg.http.post(url, json=input_body(task_id, config_id, prices(), signer=RELAYER))
    assert relayed.status == 201, await relayed.text()
    member = await reg.http.post(url, json=input_body(task_id, config_id, prices()), headers=owner)
    assert member.status == 201, await member.text()


async def test_inputs_without_oracle_answers_are_refused_naming_raw_inputs(reg):
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    for raw in ({}, {"junk": []}):
        refused = await reg.http.post(f"/api/tasks/{task_id}/inputs",
                                      json=input_body(task_id, config_id, raw, signer=RELAYER))
        assert refused.status == 400, await refused.text()
        assert "rawInputs" in (await refused.json())["message"]
    assert await reg.inputs(config_id) == 0


async def test_outsiders_cannot_pre_claim_the_nodes_next_cron_ticks(reg):
    project_id, task_id, owner = await reg.project()
    config = await reg.config(project_id, task_id, {"cron": "0 0 0 1 1 *"})
    config_id = config["configId"]
    ticks = [int(time.time()) + 60 * i for i in range(1, 6)]
    for tick in ticks:  # the node's own trigger ids are predictable: keccak256("cron:<configId>:<tick>")
        squat = "0x" + keccak(text=f"cron:{config_id}:{tick}").hex()
        for headers, body in (({}, input_body(task_id, config_id, {}, squat, chain_id=0)),
                              (owner, input_body(task_id, config_id, prices(), squat, chain_id=0))):
            refused = await reg.http.post(f"/api/tasks/{task_id}/inputs", json=body, headers=headers)
            assert refused.status in (400, 401), await refused.text()
    orchestrator = FakeOrchestrator()
    relayer = CronRelayer(reg.service, orchestrator)
    for tick in ticks:
        await relayer._fire({**config, "cid": CID}, ["strategy"], tick)
    assert len(orchestrator.calls) == 5 and await reg.executions(task_id) == 5


async def test_an_input_on_a_chain_event_does_not_stop_the_node_firing_that_event(reg):
    from node.registry.config import RegistryChain
    from node.registry.watcher import EventWatcher

    project_id, task_id, owner = await reg.project()
    config = await reg.config(project_id, task_id, EVENT)
    tx = "0x" + "ab" * 32
    first = await reg.http.post(f"/api/tasks/{task_id}/inputs",
                                json=input_body(task_id, config["configId"], prices(), tx, signer=RELAYER))
    assert first.status == 201  # a relayer's input for the event, in the confirmation window
    orchestrator = FakeOrchestrator()
    watcher = EventWatcher(reg.service, orchestrator, 1, RegistryChain(rpc_url="http://127.0.0.1:9"))
    entry = {"address": TOKEN_IN, "topics": [], "data": "0x", "blockNumber": 5, "blockHash": "0x" + "cd" * 32,
             "transactionHash": tx, "logIndex": 0}
    await watcher._claim({**config, "cid": CID}, ["strategy"], entry)
    await asyncio.gather(*watcher._runs)
    assert len(orchestrator.calls) == 1 and await reg.executions(task_id) == 1


async def test_an_oversized_input_is_refused_and_not_stored(reg):
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    junk = {f"q{i:07d}" + "x" * 200: [] for i in range(5000)}  # ~1 MB of query names with no answers
    refused = await reg.http.post(f"/api/tasks/{task_id}/inputs", json=input_body(task_id, config_id, junk))
    assert refused.status == 413, await refused.text()
    assert await reg.inputs(config_id) == 0


async def test_an_input_with_more_oracle_answers_than_the_cap_is_refused_before_any_is_checked(reg):
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    answer = oracle_response(ORACLES[0], "getPrice", [TOKEN_IN], 2.0)
    many = {"getPrice": [{"params": [TOKEN_IN], "responses": [answer] * 33}]}  # 33 signature recoveries
    refused = await reg.http.post(f"/api/tasks/{task_id}/inputs", json=input_body(task_id, config_id, many),
                                  headers=owner)
    assert refused.status == 400, await refused.text()
    assert "registry.max_oracle_responses" in (await refused.json())["message"]
    assert await reg.inputs(config_id) == 0


async def test_inputs_are_rate_limited_per_client(registry_factory):
    reg = await registry_factory(input_rate_limit={"num_requests": 3, "period": 60})
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    statuses = [(await reg.http.post(f"/api/tasks/{task_id}/inputs",
                                     json=input_body(task_id, config_id, prices(), signer=RELAYER))).status
                for _ in range(4)]
    assert statuses == [201, 201, 201, 429]


# -- item 3: a cron that never fires, and one config that cannot stop the others ------------------------


async def test_a_cron_that_never_fires_is_refused_at_creation_naming_the_field(reg):
    project_id, task_id, owner = await reg.project()
    refused = await reg.create_config(project_id, task_id, {"cron": "0 0 0 30 2 *"})
    assert refused.status == 400, await refused.text()
    answer = await refused.json()
    assert [d["field"] for d in answer["details"]] == ["trigger.cron"]
    assert "no time in the next year" in answer["message"]


async def test_one_broken_config_does_not_stop_the_relayer_for_the_others(reg, caplog):
    project_id, task_id, owner = await reg.project()
    broken = await reg.config(project_id, task_id, {"cron": "0 0 0 1 1 *"}, name="broken")
    # stored before crons were checked at creation: February 30th never comes
    await reg.db.execute("UPDATE reg_configs SET trigger = ? WHERE id = ?",
                         ('{"cron":"0 0 0 30 2 *"}', broken["configId"]))
    await reg.config(project_id, task_id, {"cron": "* * * * * *"}, name="good")
    orchestrator = FakeOrchestrator()
    relayer = CronRelayer(reg.service, orchestrator)
    relayer._started -= 5
    caplog.set_level(logging.INFO)
    for _ in range(3):
        await relayer._once()
        await asyncio.sleep(0.4)
    await asyncio.gather(*relayer._runs)
    assert orchestrator.calls and {c["configId"] for c in orchestrator.calls} != {broken["configId"]}
    reported = [r for r in caplog.records if r.getMessage() == "registry.config_broken"]
    assert len(reported) == 1


# -- item 13: reads need a role in the project; solvers see the public part of an intent -------------------


async def test_a_signed_in_stranger_reads_no_other_projects_config_executions_or_proofs(reg):
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    given = await reg.http.post(f"/api/tasks/{task_id}/inputs", json=input_body(task_id, config_id, prices()),
                                headers=owner)
    input_id = (await given.json())["inputId"]
    intents = [{"type": "transfer", "data": {"from": TOKEN_IN, "to": TOKEN_IN, "chainId": 1, "token": TOKEN_IN,
                                             "amount": "5"}}]
    payload = {"taskId": task_id, "inputId": input_id, "intents": intents, "logs": []}
    executed = await reg.http.post(f"/api/tasks/{task_id}/executions", json={
        "inputId": input_id, "intents": intents, "signature": sign_digest(RELAYER, payload)})
    execution = await executed.json()
    execution_id, intent_id = execution["executionId"], execution["intents"][0]["intentId"]
    stranger = await reg.bearer(STRANGER)
    paths = [f"/api/projects/{project_id}", f"/api/projects/{project_id}/tasks/{task_id}/configs/{config_id}",
             f"/api/tasks/{task_id}/executions/{execution_id}",
             f"/api/tasks/{task_id}/executions/{execution_id}/intents/{intent_id}"]
    for path in paths:
        assert (await reg.http.get(path, headers=owner)).status == 200
        refused = await reg.http.get(path, headers=stranger)
        assert refused.status in (403, 404), (path, await refused.text())
    listing = await (await reg.http.get(f"/api/tasks/{task_id}/executions", headers=stranger)).json()
    assert listing["data"] == [] and listing["total"] == 0
    public = await (await reg.http.get(f"/api/intents/{intent_id}")).json()
    assert set(public) == {"intentId", "status", "type", "data", "signedProposal", "relayerSignature"}
    full = await (await reg.http.get(f"/api/intents/{intent_id}", headers=owner)).json()
    assert full["executionId"] == execution_id and "proposals" in full


# -- while in the relayer: a claim interrupted by a crash runs again at start, recorded once ----------------


async def test_a_tick_claimed_before_a_crash_is_run_again_at_start_and_recorded_once(reg):
    project_id, task_id, owner = await reg.project()
    config = {**await reg.config(project_id, task_id, {"cron": "0 0 0 1 1 *"}), "cid": CID}
    stuck = FakeOrchestrator(hold=asyncio.Event())
    crashed = CronRelayer(reg.service, stuck)
    firing = asyncio.create_task(crashed._fire(config, ["strategy"], 1_700_000_000))
    while not stuck.calls:
        await asyncio.sleep(0.01)
    firing.cancel()  # the process dies with the job running: the tick is claimed, nothing recorded
    await asyncio.gather(firing, return_exceptions=True)
    assert await reg.executions(task_id) == 0

    for expected_runs in (1, 0):  # the first start runs it again; the next finds it done
        await asyncio.sleep(0.01)
        orchestrator = FakeOrchestrator()
        relayer = CronRelayer(reg.service, orchestrator)
        relayer.start(Supervisor(on_fatal=lambda name: None))
        deadline = time.monotonic() + 3
        while await reg.executions(task_id) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await relayer.stop()
        assert len(orchestrator.calls) == expected_runs
        assert [c["tick"] for c in orchestrator.calls] == [1_700_000_000] * expected_runs
        assert await reg.executions(task_id) == 1


# -- item 11: whose configs the relayer runs, how often, how many, and under the governance gate -----------


def test_a_relayed_task_must_name_whose_configs_the_node_runs():
    with pytest.raises(ValueError, match="owners, projects"):
        RegistryConfig.model_validate({"tasks": {CID: {"containers": ["strategy"]}}})
    assert RegistryConfig.model_validate({"tasks": {CID: {"containers": ["s"], "owners": [OWNER.address]}}})


def test_a_route_names_configs_by_project_or_by_owner_or_everyone():
    def route(**allow):
        return RegistryService(None, RegistryConfig.model_validate(
            {"tasks": {CID: {"containers": ["s"], **allow}}})).route_for
    config = {"cid": CID, "projectId": "project_a", "owner": OWNER.address}
    assert route(projects=["project_a"])(config) == ["s"]
    assert route(projects=["project_b"])(config) is None
    assert route(owners=[OWNER.address.lower()])(config) == ["s"]
    assert route(owners=[STRANGER.address])(config) is None
    assert route(anyone=True)(config) == ["s"]
    assert route(anyone=True)({**config, "cid": "bafyother"}) is None


async def test_the_relayer_runs_only_the_configs_of_allowed_owners_or_projects(registry_factory):
    reg = await registry_factory(tasks={CID: {"containers": ["strategy"], "owners": [OWNER.address]}})
    mine = await reg.project(OWNER)
    theirs = await reg.project(STRANGER)  # an outsider links the relayed CID to a project of their own
    allowed = await reg.config(mine[0], mine[1], {"cron": "* * * * * *"})
    await reg.config(theirs[0], theirs[1], {"cron": "* * * * * *"}, signer=STRANGER)
    orchestrator = FakeOrchestrator()
    relayer = CronRelayer(reg.service, orchestrator)
    relayer._started -= 5
    for _ in range(3):
        await relayer._once()
        await asyncio.sleep(0.4)
    await asyncio.gather(*relayer._runs)
    assert orchestrator.calls and {c["configId"] for c in orchestrator.calls} == {allowed["configId"]}


async def test_the_event_watcher_follows_only_the_configs_of_allowed_owners(registry_factory):
    from node.registry.config import RegistryChain
    from node.registry.watcher import EventWatcher

    reg = await registry_factory(tasks={CID: {"containers": ["strategy"], "owners": [OWNER.address]}})
    mine, theirs = await reg.project(OWNER), await reg.project(STRANGER)
    allowed = await reg.config(mine[0], mine[1], EVENT)
    await reg.config(theirs[0], theirs[1], {"event": {"chainId": 1, "address": "0x" + "99" * 20}}, signer=STRANGER)
    watcher = EventWatcher(reg.service, FakeOrchestrator(), 1, RegistryChain(rpc_url="http://127.0.0.1:9"))
    assert [c["configId"] for c, _, _ in await watcher._configs()] == [allowed["configId"]]
    assert await watcher._addresses() == [TOKEN_IN]


async def test_a_cron_firing_more_often_than_the_minimum_period_is_refused_naming_the_field(registry_factory):
    reg = await registry_factory(min_cron_period=60)
    project_id, task_id, owner = await reg.project()
    for cron in ("* * * * * *", "*/30 * * * * *", "0,1 0 0 * * *"):
        refused = await reg.create_config(project_id, task_id, {"cron": cron}, name=cron)
        assert refused.status == 400, (cron, await refused.text())
        assert [d["field"] for d in (await refused.json())["details"]] == ["trigger.cron"]
    assert (await reg.create_config(project_id, task_id, {"cron": "0 * * * * *"})).status == 201


async def test_a_project_cannot_keep_more_live_configs_than_the_cap(registry_factory):
    reg = await registry_factory(max_configs_per_project=2)
    project_id, task_id, owner = await reg.project()
    made = [await reg.config(project_id, task_id, EVENT, name=f"c{i}") for i in range(2)]
    third = await reg.create_config(project_id, task_id, EVENT, name="c2")
    assert third.status == 409 and "live configs" in (await third.json())["message"]
    deleted = await reg.http.delete(f"/api/projects/{project_id}/tasks/{task_id}/configs/{made[0]['configId']}",
                                    headers=owner)
    assert deleted.status == 200
    assert (await reg.create_config(project_id, task_id, EVENT, name="c3")).status == 201


async def test_relayer_jobs_pass_the_orchestrators_admission_gates(reg, caplog):
    import aiohttp

    from node.jobs.endpoint import ContainerEndpoint
    from node.jobs.orchestrator import JobRejected, Orchestrator
    from node.jobs.store import JobStore

    class PausedWorkflow:  # what GovernanceGate does for a paused `gateway.default_workflows.registry`
        def __init__(self) -> None:
            self.seen = []

        async def admit(self, admission):
            self.seen.append(admission.source)
            raise JobRejected("Workflow wf-registry is paused", None, 403)

    project_id, task_id, owner = await reg.project()
    config = {**await reg.config(project_id, task_id, {"cron": "0 0 0 1 1 *"}), "cid": CID}
    gate = PausedWorkflow()
    async with aiohttp.ClientSession() as session:
        orchestrator = Orchestrator({"strategy": ContainerEndpoint(id="strategy", url="http://127.0.0.1:9")}, session,
                                    JobStore(reg.db))
        orchestrator.add_gate(gate)
        caplog.set_level(logging.INFO)
        await CronRelayer(reg.service, orchestrator)._fire(config, ["strategy"], 1_700_000_000)
    assert gate.seen == ["registry"] and await reg.executions(task_id) == 0
    assert [r.getMessage() for r in caplog.records].count("registry.job_refused") == 1


# -- solvers: anyone with a fresh key may propose, so what one intent keeps is bounded ---------------------


async def test_an_intent_keeps_a_bounded_number_of_proposals_of_bounded_size(registry_factory):
    reg = await registry_factory(max_proposals_per_intent=3)
    project_id, task_id, owner = await reg.project()
    config_id = (await reg.config(project_id, task_id, EVENT))["configId"]
    given = await reg.http.post(f"/api/tasks/{task_id}/inputs", json=input_body(task_id, config_id, prices()),
                                headers=owner)
    input_id = (await given.json())["inputId"]
    intents = [{"type": "transfer", "data": {"from": TOKEN_IN, "to": TOKEN_IN, "chainId": 1, "token": TOKEN_IN,
                                             "amount": "5"}}]
    payload = {"taskId": task_id, "inputId": input_id, "intents": intents, "logs": []}
    executed = await reg.http.post(f"/api/tasks/{task_id}/executions", json={
        "inputId": input_id, "intents": intents, "signature": sign_digest(RELAYER, payload)})
    intent_id = (await executed.json())["intents"][0]["intentId"]

    async def propose(data: dict):
        solver = Account.create()  # a fresh key per proposal costs an attacker nothing
        return await reg.http.post(f"/api/intents/{intent_id}/proposals", json={
            "solver": solver.address, "data": data,
            "signature": sign_digest(solver, {"intentId": intent_id, "solver": solver.address, "data": data})})

    big = await propose({"note": "x" * 5000})
    assert big.status == 400 and "data" in (await big.json())["message"]
    assert [(await propose({"n": i})).status for i in range(4)] == [201, 201, 201, 409]
    kept = (await reg.db.fetchone("SELECT COUNT(*) FROM reg_proposals WHERE intent_id = ?", (intent_id,)))[0]
    assert kept == 3


async def test_an_event_claimed_before_a_crash_is_run_again_at_start_with_the_same_event(reg):
    from node.registry.config import RegistryChain
    from node.registry.watcher import EventWatcher

    project_id, task_id, owner = await reg.project()
    config = {**await reg.config(project_id, task_id, EVENT), "cid": CID, "owner": OWNER.address}
    stuck = FakeOrchestrator(hold=asyncio.Event())
    watcher = EventWatcher(reg.service, stuck, 1, RegistryChain(rpc_url="http://127.0.0.1:9"))
    entry = {"address": TOKEN_IN, "topics": [], "data": "0x", "blockNumber": 5, "blockHash": "0x" + "cd" * 32,
             "transactionHash": "0x" + "ef" * 32, "logIndex": 3}
    await watcher._claim(config, ["strategy"], entry)
    while not stuck.calls:
        await asyncio.sleep(0.01)
    for run in watcher._runs:
        run.cancel()  # the process dies with the job running
    await asyncio.gather(*watcher._runs, return_exceptions=True)
    await asyncio.sleep(0.01)
    orchestrator = FakeOrchestrator()
    relayer = CronRelayer(reg.service, orchestrator)
    relayer.start(Supervisor(on_fatal=lambda name: None))
    deadline = time.monotonic() + 3
    while await reg.executions(task_id) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await relayer.stop()
    assert [c["event"] for c in orchestrator.calls] == [entry] and await reg.executions(task_id) == 1
    assert await watcher._store.claim(task_id, config["configId"], orchestrator.calls[0]["trigger"], {}, {},
                                      {}, block=(5, "0x" + "cd" * 32)) is None  # the event stays claimed once
