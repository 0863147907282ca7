"""Builds the node's observability parts from the node's own objects: one `NodeMetrics` (with
its own CollectorRegistry), the sampler and collector reading the subsystems' state, the
watchdog, and the operator API. Subsystems are read through the node lazily (the chain, CRE,
gateway and registry are built during start-up, after this), so none of them is changed to
carry a metrics object."""

from __future__ import annotations

from typing import Any

from node.observe.api import ObserveApi
from node.observe.collector import NodeCollector
from node.observe.metrics import NodeMetrics
from node.observe.sampler import Sampler
from node.observe.watchdog import Watchdog


class Observability:
    def __init__(self, node: Any) -> None:
        config = node.config
        self.metrics = NodeMetrics()
        node.db.commit_observers.append(self.metrics.commit)
        self.sampler = Sampler(
            node.db, chain=lambda: node.chain, cre=config.cre.enabled, gateway=config.gateway.enabled,
            registry=config.registry.enabled, subscription_failures=config.observe.subscription_failures,
            min_balance=config.chain.wallet.min_balance, cre_workflows=lambda: node.cre_wasm)
        containers = node.containers
        self.watchdog = Watchdog(self.sampler, config.observe,
                                 restarts=lambda: {cid: s.restarts for cid, s in containers.states.items()})

        def subsystems() -> dict[str, bool]:
            return {"chain": node.chain is not None, "cre": node.cre is not None,
                    "gateway": node.gateway is not None, "registry": node.registry is not None,
                    "registry_relayer": node.relayer is not None}

        def registry_rpcs() -> list[dict[str, Any]]:
            return [{"chain_id": w.chain_id, "rpcs": w.rpcs.status()} for w in node.watchers]

        self.metrics.registry.register(NodeCollector(
            self.sampler, containers=containers, running_jobs=node.store.running, subsystems=subsystems,
            problems=self.watchdog.counts, registry_rpcs=registry_rpcs))
        self.api = ObserveApi(self.metrics, self.sampler, self.watchdog, node.db, containers=containers,
                              running_jobs=node.store.running, subsystems=subsystems,
                              started=lambda: node.started, config=node.config_status, reload=node.reload,
                              chart_interval=config.observe.interval, registry_rpcs=registry_rpcs,
                              admin_token=(config.server.admin_token.get_secret_value()
                                           if config.server.admin_token else None))
