"""The registry subsystem: tasks, projects and accounts behind sign-in with Ethereum, and, when
the node holds a relayer key, the node as relayer (the cron relayer and one event watcher per
configured chain; web3 is imported only then).

The relayer and the watchers start only once the node serves and stop before in-flight jobs are
drained. Sign-in messages name the address the server actually bound (`server.port: 0`). Its
tokens and nonces expire through the node's pruner, its executions reach the metrics through its
sample, and its watchers' RPCs the status page through its status block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from node.config import NodeConfig
from node.registry import api as registry_api
from node.registry.relayer import CronRelayer
from node.registry.service import RegistryService
from node.registry.store import RegistryStore
from node.storage import Database
from node.storage.prune import ExpiryRule
from node.subsystem import Context, Mount, Sample

if TYPE_CHECKING:
    from node.observe.sampler import Snapshot
    from node.registry.watcher import EventWatcher

EXPIRY = (
    ExpiryRule("reg_tokens"),  # bearer tokens
    ExpiryRule("reg_nonces"),  # sign-in nonces (single use, short-lived)
)


def sample(db: Database) -> Sample:
    """Executions by current status."""
    async def fill(snap: Snapshot) -> None:
        rows = await db.fetchall("SELECT status, COUNT(*) FROM reg_executions GROUP BY status")
        snap.registry_executions = {str(r[0]): int(r[1]) for r in rows}

    return fill


class RegistrySubsystem:
    name = "registry"

    def __init__(self, config: NodeConfig) -> None:
        self._config = config.registry
        self._address = f"{config.server.host}:{config.server.port}"
        self._host = config.server.host
        self.relayer: CronRelayer | None = None
        self.watchers: list[EventWatcher] = []

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {self.name: mount is not None, "registry_relayer": mount is not None and self.relayer is not None}

    @asynccontextmanager
    async def lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        store = RegistryStore(ctx.db)
        await store.start()
        service = RegistryService(store, self._config, self._address)
        await service.start()
        serving = []
        if service.relayer_key is not None:
            relayer = CronRelayer(service, ctx.core)
            self.relayer = relayer
            if self._config.chains:
                from node.registry.watcher import EventWatcher

                self.watchers = [EventWatcher(service, ctx.core, chain_id, chain)
                                 for chain_id, chain in self._config.chains.items()]

            @asynccontextmanager
            async def relay() -> AsyncIterator[None]:
                async with AsyncExitStack() as running:  # stopped in reverse: the watchers, then the relayer
                    relayer.start(ctx.supervisor)
                    running.push_async_callback(relayer.stop)
                    for watcher in self.watchers:
                        watcher.start(ctx.supervisor)
                        running.push_async_callback(watcher.stop)
                    yield

            serving.append(relay)

        def chains() -> list[dict[str, Any]]:
            return [{"chain_id": w.chain_id, "rpcs": w.rpcs.status()} for w in self.watchers]

        def bound(port: int) -> None:  # sign-in messages name the port actually bound
            service.set_node_address(f"{self._host}:{port}")

        yield Mount(self.name, family=registry_api.FAMILY, routes=registry_api.RegistryApi(service).routes(),
                    auth_prefixes=("/api/auth/",), expiry=EXPIRY, samples={"registry": sample(ctx.db)},
                    status={"registry_chains": chains}, serving=serving, bound=[bound])
