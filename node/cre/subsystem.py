"""The CRE subsystem: the bridge API (ingest, decisions, actions, triggers), the action runner
that submits each action as a job, and, when configured, the workflow runtime and the WASM workflows
built with @chainlink/cre-sdk.

What it owns it also prunes and samples: its replay nonces expire through the node's pruner
(with the in-memory copy trimmed at the same cutoff), and its rows per kind and status, and each
WASM workflow's state, reach the metrics through the sample it yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from node.config import NodeConfig
from node.cre import api as cre_api
from node.cre.actions import ActionRunner
from node.cre.gateway import TriggerDispatcher
from node.cre.store import CreStore
from node.fields import reveal
from node.logs import get_logger
from node.storage import Database
from node.storage.prune import ExpiryRule
from node.subsystem import Context, Mount

if TYPE_CHECKING:
    from node.cre.wasm.service import WasmWorkflows
    from node.observe.sampler import Snapshot

log = get_logger(__name__)


def sample_tables(db: Database) -> Callable[[Snapshot], Awaitable[None]]:
    """Rows per kind (ingests, only growing) and per status (decisions, actions) of the CRE tables."""
    async def grouped(sql: str) -> dict[str, int]:
        return {str(row[0]): int(row[1]) for row in await db.fetchall(sql)}

    async def sample(snap: Snapshot) -> None:
        snap.cre = {
            "ingests": await grouped("SELECT kind, COUNT(*) FROM cre_runtime_records GROUP BY kind"),
            "decisions": await grouped("SELECT status, COUNT(*) FROM cre_runtime_decisions GROUP BY status"),
            "actions": await grouped("SELECT status, COUNT(*) FROM cre_actions GROUP BY status"),
        }

    return sample


def sample_workflows(wasm: WasmWorkflows) -> Callable[[Snapshot], Awaitable[None]]:
    """Each WASM workflow, its last execution and its failures."""
    async def sample(snap: Snapshot) -> None:
        snap.cre_workflows = await wasm.status()

    return sample


class CreSubsystem:
    name = "cre"

    def __init__(self, config: NodeConfig) -> None:
        self._config = config.cre

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {self.name: mount is not None}

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        settings = self._config
        store = CreStore(ctx.db)
        await store.start(settings.skew_seconds)
        runner = ActionRunner(store, ctx.core, settings.action_routes(), ctx.supervisor.group("cre-actions"))
        dispatcher = None
        trigger_key = reveal(settings.trigger_private_key)
        if settings.gateway_url and trigger_key:
            dispatcher = TriggerDispatcher(ctx.session, settings.gateway_url, trigger_key, settings.gateway_timeout)
        samples = {"cre": sample_tables(ctx.db)}
        async with AsyncExitStack() as owned:
            runtime = None
            if settings.runtime is not None and settings.runtime.enabled:
                from node.cre.workflow.runtime import WorkflowRuntime

                runtime = WorkflowRuntime(settings.runtime, ctx.db, ctx.secrets(), ctx.session,
                                          reveal(settings.backend_api_key))
                owned.push_async_callback(runtime.w3.provider.disconnect)  # its RPC session (web3's own)
                await runtime.start()
            wasm = None
            if any(w.enabled for w in settings.workflows):  # CRE workflows built with @chainlink/cre-sdk
                from node.cre.wasm.service import WasmWorkflows

                wasm = WasmWorkflows(settings, ctx.db, ctx.supervisor, secret_box=ctx.secrets, observer=ctx.metrics)
                await wasm.start()
                owned.push_async_callback(wasm.stop)
                samples["cre_workflows"] = sample_workflows(wasm)
            api = cre_api.CreApi(settings, store, runner, dispatcher, runtime, wasm)
            log.info("cre.ready", hmac_enforced=settings.enforce_hmac, bearer_configured=bool(reveal(settings.api_key)),
                     trigger_dispatch=dispatcher is not None, routed_actions=",".join(settings.actions) or "-")
            yield self._mount(api, store, runner, samples)

    def _mount(self, api: cre_api.CreApi, store: CreStore, runner: ActionRunner,
               samples: dict[str, Callable[[Snapshot], Awaitable[None]]]) -> Mount:
        @asynccontextmanager
        async def recover() -> AsyncIterator[None]:
            await runner.recover()  # actions a previous process left half-done, once the node serves
            yield

        async def close_runner() -> None:
            await runner.close(1.0)

        return Mount(self.name, family=cre_api.FAMILY, routes=api.routes(),
                     expiry=[ExpiryRule("cre_runtime_replay_nonces", forget=store.forget_nonces)],
                     samples=samples, serving=[recover], drains=[close_runner])
