"""The node as a relayer of the registry: fires the cron triggers of the configs whose task it
can run, runs the task's container chain through the node's orchestrator, and records the
execution (with the intents the containers return) signed with the node's relayer key.

Whose configs: only those `registry.tasks.<cid>` names by project or owner (or `anyone: true`),
whose cron ticks at least `registry.min_cron_period` apart (`service.route_for`). Jobs go through
the orchestrator like every other job, so the governance gate admits them (`source: registry`,
`gateway.default_workflows.registry` binds them to a workflow that can be paused, killed or
budgeted).

Timing: each config's ticks are computed from absolute cron times (no drift from sleeping);
the last fired tick is persisted before the run, so a restart never fires a tick twice.
Missed ticks follow `registry.missed_ticks`: "latest" fires only the most recent missed tick, if
it is at most `catch_up_window` old; "skip" fires none. A config that never fired starts with
the first tick after both the node's start and the config's creation.

Claims: a tick is claimed in the node's own namespace of inputs (`RegistryStore.claim`), which
`POST …/inputs` cannot write, as `(0, keccak256("cron:<configId>:<tick>"), 0)`: unique, so even
two nodes sharing the database fire a tick once. The claim keeps what its run needs until the run
ended; a claim still open at start (the process died during the run) is run again, unless the
node's execution of it was recorded: at least once, the execution recorded once. Event claims of
the watcher are recovered here too.

Isolation: each config is handled on its own; one that fails (a cron stored before crons were
checked, that never matches) is reported once (`registry.config_broken`) and skipped, so no
config can stop another. The cron pass, the auctions and the intent expiry are three Supervisor
loops (`registry-relayer`, `registry-auctions`, `registry-intent-expiry`, every `tick`), so a
failed round of one is logged and stops neither the others nor its own next round. Each fired
tick and each resumed claim runs as a one-shot task of the `registry-cron-runs` group, drained at
stop.

The containers get `{"taskId", "configId", "tick", "trigger", "config": <config data>,
"inputs": <the latest oracle inputs submitted for the config, or {}>}` and answer
`{"intents": [...], "logs": [...]}`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from node.errors import DomainError
from node.jobs.orchestrator import Orchestrator
from node.lifecycle import GRACE, Supervised, Supervisor, TaskSet
from node.logs import get_logger
from node.registry.cron import Cron, CronError
from node.registry.models import ExecutionSubmit
from node.registry.service import RegistryService

log = get_logger(__name__)

# Failures that are the config's own (its stored trigger): skipped until the node restarts.
CONFIG_FAULTS = (CronError, ValueError, KeyError, TypeError)


class CronRelayer:
    def __init__(self, service: RegistryService, orchestrator: Orchestrator, tick: float = 0.1) -> None:
        self._service = service
        self._store = service.store
        self._orchestrator = orchestrator
        self._tick = tick
        self._born = time.time()
        self._started = int(self._born)
        self._runs = TaskSet("registry-cron-runs")  # replaced by the Supervisor's group in start()
        self._loops: list[Supervised] = []
        self._crons: dict[str, Cron] = {}  # configs whose cron passed the checks
        self._broken: set[str] = set()  # configs whose trigger cannot be run here (reported once)
        self._reported: set[str] = set()  # configs refused or failing, reported once until they run again
        self._recovered = False

    def start(self, supervisor: Supervisor) -> None:
        """Run the cron pass, the auctions (if any) and the intent expiry as Supervisor loops."""
        self._runs = supervisor.group("registry-cron-runs")
        self._loops = [supervisor.loop("registry-relayer", self.round, self._tick),
                       supervisor.loop("registry-intent-expiry", self._store.expire_intents, self._tick)]
        if self._service.config.auction_seconds:
            self._loops.append(supervisor.loop("registry-auctions", self._settle_auctions, self._tick))

    async def stop(self, grace: float = GRACE) -> None:
        """Stop the loops after their round, then give the runs under way `grace` seconds."""
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        await self._runs.drain(grace)

    async def round(self) -> None:
        """One cron pass; the first also runs again the claims a stopped process left open."""
        if not self._recovered:  # once per relayer: a failed recovery is logged, not retried
            self._recovered = True
            await self.recover()
        await self._once()

    def _report(self, config: dict[str, Any], event: str, **fields: Any) -> None:
        if config["configId"] not in self._reported:
            self._reported.add(config["configId"])
            log.warning(event, config_id=config["configId"], project_id=config["projectId"], **fields)

    async def _once(self) -> None:
        now = int(time.time())
        for config in await self._store.cron_configs(self._service.config.tasks):
            if config["configId"] in self._broken:
                continue
            try:
                await self._consider(config, now)
            except asyncio.CancelledError:
                raise
            except CONFIG_FAULTS as exc:
                self._broken.add(config["configId"])
                log.error("registry.config_broken", config_id=config["configId"], project_id=config["projectId"],
                          error=str(exc)[:300])
            except Exception as exc:  # noqa: BLE001 - e.g. the database: tried again next pass
                self._report(config, "registry.config_failed", error=str(exc)[:300])

    async def _consider(self, config: dict[str, Any], now: int) -> None:
        containers = self._service.route_for(config)
        if containers is None:
            if config["cid"] in self._service.config.tasks:  # relayed, but not for this project
                self._report(config, "registry.config_not_relayed", cid=config["cid"])
            return
        if not await self._service.config_usable(config):
            return
        cron = self._crons.get(config["configId"])
        if cron is None:  # checked once per config (a config's trigger never changes)
            cron = Cron.parse(config["trigger"]["cron"])
            if not cron.fires_within(now, 366):
                raise CronError("matches no time in the next year")
            gap = cron.shortest_gap(now)
            if gap < self._service.config.min_cron_period:
                self._broken.add(config["configId"])  # skipped until the node restarts (its settings may change)
                self._report(config, "registry.config_too_frequent", gap_s=gap,
                             min_cron_period=self._service.config.min_cron_period)
                return
            self._crons[config["configId"]] = cron
        last = await self._store.last_tick(config["configId"])
        if last is None:
            # Never fired: start with the first tick after both start-up and the config's creation.
            last = max(self._started, int(config["created_ts"])) - 1
            await self._store.set_last_tick(config["configId"], last)
        due = cron.last_at_or_before(now, last)
        if due is None:
            return
        policy = self._service.config.missed_ticks
        first_due = cron.next_after(last)
        missed = due != first_due
        if missed and (policy == "skip" or now - due > self._service.config.catch_up_window):
            await self._store.set_last_tick(config["configId"], due)
            log.warning("registry.ticks_missed", config_id=config["configId"], last=last, latest=due, policy=policy)
            return
        await self._store.set_last_tick(config["configId"], due)
        self._reported.discard(config["configId"])
        if missed:
            log.info("registry.catch_up", config_id=config["configId"], tick=due)
        self._runs.spawn(f"{config['configId']}@{due}", self._fire(config, containers, due))

    async def _fire(self, config: dict[str, Any], containers: list[str], tick: int) -> None:
        task_id, config_id = config["taskId"], config["configId"]
        from eth_utils import keccak  # here, not at the top: only a relaying node needs it

        trigger = {"chainId": 0, "transactionHash": "0x" + keccak(text=f"cron:{config_id}:{tick}").hex(), "logIndex": 0}
        latest = await self._store.latest_input(config_id)
        inputs = latest["inputs"] if latest else {}
        data = {"taskId": task_id, "configId": config_id, "tick": tick, "trigger": trigger,
                "config": await self._store.config_data(config_id), "inputs": inputs}
        fields = {"config_id": config_id, "tick": tick}
        row = await self._store.claim(task_id, config_id, trigger, inputs, latest["proofs"] if latest else {},
                                      {"data": data, "fields": fields, "default_ts": tick})
        if row is None:
            log.info("registry.tick_already_fired", config_id=config_id, tick=tick)
            return
        await run_claim(self._service, self._orchestrator, containers, row, data, fields, tick)

    async def recover(self) -> None:
        """Run again the claims a stopped process left open (claimed before this relayer was
        made), unless the node's execution of one was recorded before the stop."""
        for claim in await self._store.open_claims(self._born):
            input_id, run = claim["inputId"], claim["run"]
            row = await self._store.input(input_id)
            config = await self._live_config(row["configId"]) if row else None
            containers = self._service.route_for(config) if config else None
            if (row is None or row["reverted"] or config is None or containers is None
                    or not await self._service.config_usable(config)):
                log.warning("registry.claim_dropped", input_id=input_id, **run["fields"])
                await self._store.finish_claim(input_id)
            elif await self._store.executed_by(input_id, self._service.relayer_address):
                await self._store.finish_claim(input_id)
            else:
                log.info("registry.claim_resumed", input_id=input_id, **run["fields"])
                self._runs.spawn(input_id, run_claim(self._service, self._orchestrator, containers, row, run["data"], run["fields"],
                                      run["default_ts"]))

    async def _live_config(self, config_id: str) -> dict[str, Any] | None:
        config = await self._store.config(config_id)
        if config is None or config["deprecated"]:
            return None
        task, project = await self._store.task(config["taskId"]), await self._store.project(config["projectId"])
        if task is None or project is None:
            return None
        return {**config, "cid": task["cid"], "owner": project["owner"]}

    async def _settle_auctions(self) -> None:
        window = self._service.config.auction_seconds
        for intent_id in await self._store.auctions_closed(time.time() - window):
            try:
                signed = await self._service.sign_best(intent_id)
                log.info("registry.intent_signed", intent_id=intent_id, solver=signed["solver"])
            except DomainError as exc:
                log.warning("registry.sign_failed", intent_id=intent_id, error=exc.message)


async def run_claim(service: RegistryService, orchestrator: Orchestrator, containers: list[str],
                    row: dict[str, Any], data: dict[str, Any], fields: dict[str, Any],
                    default_ts: int | None = None) -> str | None:
    """Run one of the node's claims and close it once the run ended, whatever its outcome (a
    claim left open, by a crash, is run again at the next start)."""
    execution_id = await run_and_record(service, orchestrator, containers, row, data, fields, default_ts)
    await service.store.finish_claim(row["inputId"])
    return execution_id


async def run_and_record(service: RegistryService, orchestrator: Orchestrator, containers: list[str],
                         row: dict[str, Any], data: dict[str, Any], fields: dict[str, Any],
                         default_ts: int | None = None) -> str | None:
    """Run a task's containers on `data` for an input the node recorded (`row`) and record what
    they answer as an execution signed with the node's relayer key. Returns the execution id, or
    None (each failure is one log line with `fields`)."""
    task_id = row["taskId"]
    started = time.perf_counter()
    try:
        job = await orchestrator.run(containers, data, client="registry", source="registry")
    except DomainError as exc:
        log.warning("registry.job_refused", **fields, error=exc.message)
        return None
    result = job.result or {}
    output = result.get("output")
    if job.status != "success" or not isinstance(output, dict):
        log.warning("registry.task_failed", **fields, job_id=job.id,
                    error=result.get("error", "output is not an object"))
        return None
    intents = output.get("intents") or []
    ts = int(time.time()) if default_ts is None else default_ts
    logs = output.get("logs") or [{"timestamp": ts, "level": "info", "message": "Task finished"}]
    try:
        body = ExecutionSubmit.model_validate({"inputId": row["inputId"], "signature": "0x" + "00" * 65,
                                               "intents": intents, "logs": logs})
        canonical_intents = [i.model_dump(by_alias=True) for i in body.intents]
        canonical_logs = [line.model_dump() for line in body.logs]
        body = body.model_copy(update={"signature": service.sign_execution(
            task_id, row["inputId"], canonical_intents, canonical_logs)})
        result = await service.submit_execution(task_id, body)
    except (ValueError, DomainError) as exc:
        log.warning("registry.execution_invalid", **fields, job_id=job.id,
                    error=str(getattr(exc, "message", exc))[:300])
        return None
    extra = {"lag_ms": round((time.time() - default_ts) * 1000)} if default_ts is not None else {}
    log.info("registry.executed", **fields, job_id=job.id, execution_id=result["executionId"],
             intents=len(result["intents"]), **extra, ms=round((time.perf_counter() - started) * 1000, 1))
    return result["executionId"]
