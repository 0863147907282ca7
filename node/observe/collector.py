"""The pull-style metric families: rendered at scrape time from live in-memory state (container
states, jobs in flight) and from the sampler's latest snapshot (chain, CRE, gateway, registry).

Row counts that only grow (CRE ingests, gateway decisions) are counters; counts of rows per
current status (deliveries, actions, executions) are gauges, since a row moves between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node import __version__
from node.observe.sampler import Sampler

CONTAINER_STATES = ("starting", "running", "restarting", "exited", "failed", "external", "unknown")


class NodeCollector(Collector):
    def __init__(self, sampler: Sampler, *, containers: Any, running_jobs: Callable[[], list],
                 subsystems: Callable[[], dict[str, bool]], problems: Callable[[], dict[str, int]],
                 registry_rpcs: Callable[[], list[dict[str, Any]]] = list) -> None:
        self._sampler = sampler
        self._registry_rpcs = registry_rpcs  # [{chain_id, rpcs}] of the registry's event watchers
        self._containers = containers  # ContainerManager: .states
        self._running = running_jobs
        self._subsystems = subsystems
        self._problems = problems

    def describe(self) -> list[Metric]:
        return []  # families depend on which subsystems are on: no fixed description

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("node_info", "The node's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        on = GaugeMetricFamily("node_subsystem_enabled", "1 when a subsystem is on", labels=["subsystem"])
        for name, enabled in self._subsystems().items():
            on.add_metric([name], 1 if enabled else 0)
        yield on
        yield from self._jobs()
        yield from self._container_families()
        problems = GaugeMetricFamily("node_problems", "Active problems by kind (see the problem.detected log)",
                                     labels=["problem"])
        for name, count in self._problems().items():
            problems.add_metric([name], count)
        yield problems
        yield from self._registry_chains()
        snap = self._sampler.latest
        if snap.chain is not None:
            yield from self._chain(snap.chain)
        if snap.cre is not None:
            yield _family(CounterMetricFamily, "node_cre_ingests", "CRE records ingested, by kind", "kind",
                          snap.cre["ingests"])
            yield _family(GaugeMetricFamily, "node_cre_decisions", "CRE decisions, by status", "status",
                          snap.cre["decisions"])
            yield _family(GaugeMetricFamily, "node_cre_actions", "CRE actions, by current status", "status",
                          snap.cre["actions"])
        if snap.gateway_decisions is not None:
            decisions = CounterMetricFamily("node_gateway_decisions", "Gateway admission decisions",
                                            labels=["kind", "outcome"])
            for (kind, outcome), count in sorted(snap.gateway_decisions.items()):
                decisions.add_metric([kind, outcome], count)
            yield decisions
        if snap.gateway_workflows is not None:
            spent = GaugeMetricFamily("node_gateway_budget_spent_usd", "Budget spent, per workflow", labels=["workflow"])
            reserved = GaugeMetricFamily("node_gateway_budget_reserved_usd", "Budget reserved by running work",
                                         labels=["workflow"])
            budget = GaugeMetricFamily("node_gateway_budget_usd", "Budget per workflow (absent: unlimited)",
                                       labels=["workflow"])
            for wf in snap.gateway_workflows:
                spent.add_metric([wf["id"]], wf["spent_usd"])
                reserved.add_metric([wf["id"]], wf["reserved_usd"])
                if wf["budget_usd"] is not None:
                    budget.add_metric([wf["id"]], wf["budget_usd"])
            yield from (spent, reserved, budget)
        if snap.registry_executions is not None:
            yield _family(GaugeMetricFamily, "node_registry_executions", "Registry executions, by status", "status",
                          snap.registry_executions)

    def _jobs(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily("node_jobs_in_flight", "Jobs running now, by source", labels=["source"])
        counts: dict[str, int] = {}
        for job in self._running():
            counts[job.source] = counts.get(job.source, 0) + 1
        for source in sorted(counts | dict.fromkeys(("offchain", "chain"), 0)):
            in_flight.add_metric([source], counts.get(source, 0))
        yield in_flight

    def _container_families(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("node_container_state", "1 for each container's current state",
                                  labels=["container", "state"])
        restarts = CounterMetricFamily("node_container_restarts", "Container restarts by the node's monitor",
                                       labels=["container"])
        for cid, s in self._containers.states.items():
            for name in CONTAINER_STATES:
                state.add_metric([cid, name], 1 if s.status == name else 0)
            restarts.add_metric([cid], s.restarts)
        yield state
        yield restarts

    def _registry_chains(self) -> Iterator[Metric]:
        chains = self._registry_rpcs()
        if not chains:
            return
        up = GaugeMetricFamily("node_registry_rpc_endpoint_up", "1 when a registry chain's RPC serves (not down, "
                               "rate limited or lagging)", labels=["chain_id", "rpc"])
        errors = CounterMetricFamily("node_registry_rpc_endpoint_errors", "A registry chain's RPC's failed requests "
                                     "and 429 answers", labels=["chain_id", "rpc", "kind"])
        for chain in chains:
            cid = str(chain["chain_id"])
            for r in chain["rpcs"]:
                up.add_metric([cid, r["rpc"]], 1 if r["state"] == "up" else 0)
                errors.add_metric([cid, r["rpc"], "error"], r["errors"])
                errors.add_metric([cid, r["rpc"], "rate_limited"], r["rate_limited"])
        yield from (up, errors)

    def _chain(self, chain: Any) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

        yield from gauge("node_chain_rpc_up", "1 when the chain RPC answered the last sample", int(chain.rpc_up))
        yield from gauge("node_chain_head_block", "Latest block seen", chain.head)
        yield from gauge("node_chain_cursor_block", "Last block the listener has read", chain.cursor)
        yield from gauge("node_chain_lag_blocks", "Head minus cursor", chain.lag)
        yield from gauge("node_chain_wallet_balance_wei", "The node wallet's balance", chain.balance_wei)
        yield from gauge("node_chain_wallet_min_balance_wei", "chain.wallet.min_balance", chain.min_balance_wei)
        yield from gauge("node_chain_subscriptions_tracked", "Subscriptions the processor works on", chain.tracked)
        yield from gauge("node_chain_payment_wallet_balance_wei", "The payment Wallet's ETH balance",
                         chain.payment_balance_wei)
        yield _family(CounterMetricFamily, "node_chain_skipped",
                      "Subscriptions (terms) and intervals (consumer cannot pay) not served, by kind", "kind",
                      dict.fromkeys(("below_minimum", "token_not_accepted", "no_payment_wallet", "needs_proof",
                                     "consumer_cannot_pay", "invalid_wallet", "no_collateral"), 0) | chain.skipped)
        yield from gauge("node_chain_tx_pending", "Transactions sent and not yet mined", chain.tx_pending)
        yield from gauge("node_chain_tx_pending_blocks", "Blocks the oldest pending transaction has waited",
                         chain.tx_pending_blocks)
        yield _family(CounterMetricFamily, "node_chain_tx_replaced",
                      "Pending transactions sent again with the same nonce, by why", "reason",
                      {"fee_bump": chain.tx_resent, "fulfilled_elsewhere": chain.tx_cancelled})
        if chain.rpcs:
            rpc_up = GaugeMetricFamily("node_chain_rpc_endpoint_up", "1 when the RPC serves (not down, "
                                       "rate limited or lagging)", labels=["rpc", "role"])
            rpc_head = GaugeMetricFamily("node_chain_rpc_endpoint_head_block", "The RPC's head at its last check",
                                         labels=["rpc"])
            rpc_latency = GaugeMetricFamily("node_chain_rpc_endpoint_latency_ms", "The RPC's answer time (moving "
                                            "average)", labels=["rpc"])
            rpc_errors = CounterMetricFamily("node_chain_rpc_endpoint_errors", "Failed requests (transport, "
                                             "timeout, 5xx) and 429 answers", labels=["rpc", "kind"])
            for r in chain.rpcs:
                rpc_up.add_metric([r["rpc"], r["role"]], 1 if r["state"] == "up" else 0)
                if r["head"] is not None:
                    rpc_head.add_metric([r["rpc"]], r["head"])
                if r["latency_ms"] is not None:
                    rpc_latency.add_metric([r["rpc"]], r["latency_ms"])
                rpc_errors.add_metric([r["rpc"], "error"], r["errors"])
                rpc_errors.add_metric([r["rpc"], "rate_limited"], r["rate_limited"])
            yield from (rpc_up, rpc_head, rpc_latency, rpc_errors)
        if chain.last_delivery is not None:
            yield from gauge("node_chain_last_delivery_timestamp_seconds", "When the last delivery landed",
                             chain.last_delivery["updated_at"])
        outcomes = dict.fromkeys(("delivered", "failed", "reverted", "skipped"), 0) | chain.deliveries
        yield _family(GaugeMetricFamily, "node_chain_deliveries",
                      "(subscription, interval) rows by outcome: delivered, failed, reverted, skipped, running, sending",
                      "outcome", outcomes)


def _family(kind: type, name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
