"""Loaded workflows and their executions, off the event loop.

`WasmRuntime` owns the engine, the toolchain and a thread pool. `load()` turns a workflow file
into a `Program` (building TypeScript through the toolchain, in a thread) and runs the subscribe
phase, which tells the node the workflow's triggers; `run()` executes one trigger in the pool.
Both the node's service and `node-daemon cre simulate` use it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.cre.wasm import messages as pb
from node.cre.wasm.cron import Cron, CronError
from node.cre.wasm.host import HostServices, Limits, Outcome, Program, WasmEngine, WorkflowLoadError, new_execution_id
from node.cre.wasm.toolchain import BuildError, Toolchain

CRON_TRIGGER = "cron-trigger@1.0.0"
HTTP_TRIGGER = "http-trigger@1.0.0-alpha"
EVM_PREFIX = "evm:ChainSelector:"


@dataclass
class Subscription:
    """One handler of the workflow, as its subscribe phase declared it."""

    index: int
    capability: str
    method: str
    payload: Any
    kind: str  # cron | http | evm-log | other | unsupported (needs a TEE, a pre-hook, …)
    cron: Cron | None = None
    authorized_keys: list[str] = field(default_factory=list)
    reason: str | None = None
    selector: int | None = None  # evm-log: the chain
    log_filter: Any = None  # evm-log: FilterLogTriggerRequest

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "capability": self.capability, "kind": self.kind}
        if self.cron is not None:
            out["schedule"] = self.cron.schedule
        if self.authorized_keys:
            out["authorizedKeys"] = self.authorized_keys
        if self.reason:
            out["unsupported"] = self.reason
        if self.log_filter is not None:
            out["chainSelector"] = str(self.selector)
            out["addresses"] = ["0x" + a.hex() for a in self.log_filter.addresses]
        return out


@dataclass
class Loaded:
    name: str
    program: Program
    config: bytes
    subscriptions: list[Subscription]
    digest: str

    def first(self, kind: str) -> Subscription | None:
        return next((s for s in self.subscriptions if s.kind == kind), None)


class LoadError(Exception):
    """The workflow cannot be loaded (build failure, bad module, failed subscribe)."""


def _subscription(index: int, raw: Any) -> Subscription:
    sub = Subscription(index, raw.id, raw.method, raw.payload, "other")
    if raw.requirements or raw.pre_hook:
        sub.kind = "unsupported"
        sub.reason = "requires a TEE" if raw.requirements else "has a pre-hook (restrictions)"
        return sub
    if raw.id == CRON_TRIGGER:
        schedule = pb.unpack(raw.payload, pb.CronConfig).schedule
        try:
            sub.cron = Cron(schedule)
            sub.cron.next_after(datetime.now(UTC))  # one that never fires is refused now
        except CronError as exc:
            raise LoadError(f"handler {index}: cron schedule {exc}") from None
        sub.kind = "cron"
    elif raw.id.startswith(EVM_PREFIX) and raw.method == "LogTrigger":
        sub.log_filter = pb.unpack(raw.payload, pb.message("capabilities.blockchain.evm.v1alpha.FilterLogTriggerRequest"))
        sub.selector = int(raw.id[len(EVM_PREFIX):].partition("@")[0])
        sub.kind = "evm-log"
        if not sub.log_filter.addresses:
            sub.kind, sub.reason = "unsupported", "a log trigger without contract addresses"
    elif raw.id == HTTP_TRIGGER:
        config = pb.unpack(raw.payload, pb.HttpTriggerConfig)
        sub.kind = "http"
        sub.authorized_keys = [k.public_key for k in config.authorized_keys]
    return sub


class WasmRuntime:
    def __init__(self, toolchain: Toolchain, *, workers: int = 2, limits: Limits | None = None) -> None:
        self.toolchain = toolchain
        self.engine = WasmEngine(toolchain.cache / "modules")
        self.limits = limits or Limits()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cre-wasm")
        self._plugin: Any = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    def _plugin_module(self) -> Any:
        if self._plugin is None:
            self._plugin = self.engine.plugin(self.toolchain.plugin_path)
        return self._plugin

    def _program(self, path: Path) -> Program:
        if not path.is_file():
            raise LoadError(f"{path}: no such file")
        if path.suffix == ".wasm":
            return self.engine.program_from_wasm(path.read_bytes())
        self._plugin_module()
        built = self.toolchain.build(self.engine, path)
        return self.engine.program_from_bytecode(built.bytecode)

    async def load(self, name: str, path: Path, config: bytes, services: HostServices) -> Loaded:
        loop = asyncio.get_running_loop()
        try:
            program = await loop.run_in_executor(self._pool, self._program, path)
        except (BuildError, WorkflowLoadError) as exc:
            raise LoadError(str(exc)) from None
        outcome = await self.execute(program, _subscribe_request(config), services, new_execution_id(name, "subscribe"))
        if outcome.failure is not None or outcome.result is None:
            raise LoadError(f"{name}: the subscribe phase failed: {outcome.failure}")
        if outcome.result.WhichOneof("result") != "trigger_subscriptions":
            raise LoadError(f"{name}: the subscribe phase returned no trigger subscriptions")
        subs = [_subscription(i, s) for i, s in enumerate(outcome.result.trigger_subscriptions.subscriptions)]
        return Loaded(name, program, config, subs, program.digest)

    async def execute(self, program: Program, request: Any, services: HostServices, execution_id: str) -> Outcome:
        """One execution in the pool; the event loop only awaits it."""
        loop = asyncio.get_running_loop()
        plugin = None if program.module is not None else self._plugin_module()
        return await loop.run_in_executor(self._pool, self.engine.run, program, request, services, self.limits,
                                          execution_id, plugin)

    async def run(self, workflow: Loaded, index: int, payload: Any, services: HostServices,
                  execution_id: str) -> Outcome:
        request = pb.ExecuteRequest(config=workflow.config)
        request.trigger.id = index
        request.trigger.payload.CopyFrom(pb.pack(payload))
        return await self.execute(workflow.program, request, services, execution_id)


def _subscribe_request(config: bytes) -> Any:
    request = pb.ExecuteRequest(config=config)
    request.subscribe.SetInParent()
    return request


def cron_payload(when: datetime) -> Any:
    payload = pb.CronPayload()
    payload.scheduled_execution_time.FromDatetime(when.astimezone(UTC))
    return payload


def http_payload(input_bytes: bytes) -> Any:
    return pb.HttpTriggerPayload(input=input_bytes)


def result_json(outcome: Outcome) -> Any:
    """The workflow's returned value as JSON-friendly Python (None when it failed)."""
    if outcome.result is None or outcome.result.WhichOneof("result") != "value":
        return None
    return pb.value_to_python(outcome.result.value)
