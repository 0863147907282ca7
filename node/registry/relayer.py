"""The node as a relayer of the registry: fires the cron triggers of the configs whose task it
can run, runs the task's container chain through the node's orchestrator, and records the
execution (with the intents the containers return) signed with the node's relayer key.

Timing: each config's ticks are computed from absolute cron times (no drift from sleeping);
the last fired tick is persisted before the run, so a restart never fires a tick twice, and the
synthetic trigger `(0, keccak256("cron:<configId>:<tick>"), 0)` is unique in the inputs table,
so even two nodes sharing the database fire a tick once. Missed ticks follow
`registry.missed_ticks`: "latest" fires only the most recent missed tick, if it is at most
`catch_up_window` old; "skip" fires none. A config that never fired starts with the first tick
after both the node's start and the config's creation.

The containers get `{"taskId", "configId", "tick", "trigger", "config": <config data>,
"inputs": <the latest oracle inputs submitted for the config, or {}>}` and answer
`{"intents": [...], "logs": [...]}`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from eth_utils import keccak

from node.jobs.orchestrator import JobRejected, Orchestrator
from node.logs import get_logger
from node.registry.cron import Cron
from node.registry.models import ExecutionSubmit
from node.registry.service import RegistryService
from node.errors import DomainError

log = get_logger(__name__)


class CronRelayer:
    def __init__(self, service: RegistryService, orchestrator: Orchestrator, tick: float = 0.1) -> None:
        self._service = service
        self._store = service.store
        self._orchestrator = orchestrator
        self._routes = {cid: list(route.containers) for cid, route in service.config.tasks.items()}
        self._tick = tick
        self._started = int(time.time())
        self._tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._once()
                if self._service.config.auction_seconds:
                    await self._settle_auctions()
                await self._store.expire_intents()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the scheduler alive
                log.exception("registry.relayer_error")
            try:
                await asyncio.wait_for(self._stop.wait(), self._tick)
            except asyncio.TimeoutError:
                pass
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _once(self) -> None:
        now = int(time.time())
        policy = self._service.config.missed_ticks
        for config in await self._store.cron_configs():
            containers = self._routes.get(config["cid"])
            if containers is None or not await self._service.config_usable(config):
                continue
            cron = Cron.parse(config["trigger"]["cron"])
            last = await self._store.last_tick(config["configId"])
            if last is None:
                # Never fired: start with the first tick after both start-up and the config's creation.
                last = max(self._started, int(config["created_ts"])) - 1
                await self._store.set_last_tick(config["configId"], last)
            due = cron.last_at_or_before(now, last)
            if due is None:
                continue
            first_due = cron.next_after(last)
            missed = due != first_due
            if missed and (policy == "skip" or now - due > self._service.config.catch_up_window):
                await self._store.set_last_tick(config["configId"], due)
                log.warning("registry.ticks_missed", config_id=config["configId"], last=last, latest=due,
                            policy=policy)
                continue
            await self._store.set_last_tick(config["configId"], due)
            if missed:
                log.info("registry.catch_up", config_id=config["configId"], tick=due)
            task = asyncio.create_task(self._fire(config, containers, due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fire(self, config: dict[str, Any], containers: list[str], tick: int) -> None:
        task_id, config_id = config["taskId"], config["configId"]
        trigger = {"chainId": 0, "transactionHash": "0x" + keccak(text=f"cron:{config_id}:{tick}").hex(), "logIndex": 0}
        latest = await self._store.latest_input(config_id)
        inputs = latest["inputs"] if latest else {}
        row = await self._store.add_input(task_id, config_id, trigger, {}, inputs, latest["proofs"] if latest else {},
                                          0)
        if row is None:
            log.info("registry.tick_already_fired", config_id=config_id, tick=tick)
            return
        data = {"taskId": task_id, "configId": config_id, "tick": tick, "trigger": trigger,
                "config": config["data"], "inputs": inputs}
        await run_and_record(self._service, self._orchestrator, containers, row, data,
                             {"config_id": config_id, "tick": tick}, default_ts=tick)

    async def _settle_auctions(self) -> None:
        window = self._service.config.auction_seconds
        for intent_id in await self._store.auctions_closed(time.time() - window):
            try:
                signed = await self._service.sign_best(intent_id)
                log.info("registry.intent_signed", intent_id=intent_id, solver=signed["solver"])
            except DomainError as exc:
                log.warning("registry.sign_failed", intent_id=intent_id, error=exc.message)


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
    except JobRejected as exc:
        log.warning("registry.job_refused", **fields, error=exc.message)
        return None
    if job.status != "success" or not isinstance((job.result or {}).get("output"), dict):
        log.warning("registry.task_failed", **fields, job_id=job.id,
                    error=(job.result or {}).get("error", "output is not an object"))
        return None
    output = job.result["output"]
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
