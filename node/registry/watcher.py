"""The node as relayer of event-triggered configs: watches each chain of `registry.chains` for the
events the live configs name, runs the config's task once per `(chainId, txHash, logIndex)` and
records the execution signed with the node's relayer key.

The following is `node.chain.follow.LogFollower` (the block follower the Coordinator listener
also specialises): a cursor per chain in SQLite, `confirmations` blocks behind the head,
block-hash reorg detection. Each
matching event is first claimed as an input of the config (with its block) in the node's own
namespace, which `POST …/inputs` cannot write (so nobody can claim the event first in the
confirmation window), unique per (config, trigger), and only then run, so a restart that scans
the block again never fires it twice; a claim whose run a crash interrupted is run again at start
by the relayer (`CronRelayer.recover`: at least once, the execution recorded once). Only configs
`service.route_for` names are watched (the task's allow-list of projects and owners). A reorg that replaces the event's block reverts the input, its execution and its
intents in one transaction (`WatchCursor.rewind`); if the event reappears in another block it
fires again. The loops are the node's Supervisor's (`registry-watch-<chain>`, one follower round
each, and `registry-rpc-health-<chain>`): RPC errors are retried inside the follower with
backoff, anything else fails the round (logged) and the next round reads the same blocks again.
Each fired event's run is a one-shot task of the `registry-events-<chain>` group, drained at stop.

A chain may have several RPCs (`registry.chains.<id>.rpc_url` as a list, or `rpc_urls` with
weights), read through `node.chain.rpc.RpcPool` as the Coordinator's chain is: a dead or
rate-limited RPC is skipped for the same request and backed off, and each RPC's head and latency
are checked every `rpc_health_interval` seconds while the watcher runs (so one lagging behind the
others is not read from). The follower polls the head (`poll_interval`); it does not subscribe.

The containers get `{"taskId", "configId", "trigger": {chainId, transactionHash, logIndex},
"event": {address, topics, data, blockNumber, blockHash, transactionHash, logIndex},
"config": <config data>, "inputs": <the latest oracle inputs submitted for the config, or {}>}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from web3 import AsyncWeb3

from node.chain.follow import LogFollower
from node.chain.rpc import Endpoint, RpcPool
from node.jobs.orchestrator import Orchestrator
from node.lifecycle import GRACE, Supervised, Supervisor, TaskSet
from node.logs import get_logger
from node.registry.config import RegistryChain
from node.registry.models import EventTrigger
from node.registry.relayer import run_claim
from node.registry.service import RegistryService
from node.registry.watch_store import WatchCursor

log = get_logger(__name__)


class EventWatcher:
    """Watches one chain."""

    def __init__(self, service: RegistryService, orchestrator: Orchestrator, chain_id: int,
                 chain: RegistryChain) -> None:
        self._service = service
        self._store = service.store
        self._orchestrator = orchestrator
        self.chain_id = chain_id
        self._chain = chain
        self.rpcs = RpcPool([Endpoint(e.url, e.weight, e.send_only) for e in chain.endpoints()],
                            max_lag_blocks=chain.rpc_max_lag_blocks, timeout=chain.rpc_timeout)
        self._w3 = AsyncWeb3(self.rpcs)
        self.cursor = WatchCursor(service.store.db, chain_id)
        self._follower = LogFollower(
            self._w3, self.cursor, addresses=self._addresses, on_logs=self._on_logs, on_reorg=self._on_reorg,
            trail=chain.confirmations, start_block=chain.start_block, batch_blocks=chain.batch_blocks)
        self._runs = TaskSet(f"registry-events-{chain_id}")  # each fired event's run (the Supervisor's from start())
        self._loops: list[Supervised] = []

    def start(self, supervisor: Supervisor) -> None:
        """Follow the chain and check its RPCs as Supervisor loops (the follower reads its cursor
        from SQLite in its first round)."""
        self._runs = supervisor.group(f"registry-events-{self.chain_id}")
        chain = self._chain
        self._loops = [
            supervisor.loop(f"registry-watch-{self.chain_id}", self._follower.round, chain.poll_interval,
                            self._follower.wake),
            # Every RPC's head and latency, so one lagging behind the others is not read from.
            supervisor.loop(f"registry-rpc-health-{self.chain_id}", self.rpcs.check, chain.rpc_health_interval)]
        log.info("registry.watching", chain_id=self.chain_id, confirmations=chain.confirmations,
                 rpcs=[e.name for e in self.rpcs.endpoints])

    async def stop(self, grace: float = GRACE) -> None:
        """Stop the loops after their round, give the event runs under way `grace` seconds, then
        close the RPC connections."""
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        await self._runs.drain(grace)
        await self.rpcs.disconnect()

    async def _configs(self) -> list[tuple[dict[str, Any], EventTrigger, list[str]]]:
        out = []
        for config in await self._store.event_configs(self.chain_id, self._service.config.tasks):
            containers = self._service.route_for(config)
            if containers is None or not await self._service.config_usable(config):
                continue
            out.append((config, EventTrigger.model_validate(config["trigger"]["event"]), containers))
        return out

    async def _addresses(self) -> list[str]:
        return sorted({trigger.address.lower() for _, trigger, _ in await self._configs()})

    async def _on_logs(self, logs: list[dict[str, Any]]) -> None:
        configs = await self._configs()
        for entry in logs:
            for config, trigger, containers in configs:
                if trigger.matches(entry):
                    await self._claim(config, containers, entry)

    async def _claim(self, config: dict[str, Any], containers: list[str], entry: dict[str, Any]) -> None:
        task_id, config_id = config["taskId"], config["configId"]
        trigger = {"chainId": self.chain_id, "transactionHash": entry["transactionHash"], "logIndex": entry["logIndex"]}
        latest = await self._store.latest_input(config_id)
        inputs = latest["inputs"] if latest else {}
        fields = {"config_id": config_id, "chain_id": self.chain_id, "tx": entry["transactionHash"],
                  "log_index": entry["logIndex"], "block": entry["blockNumber"]}
        data = {"taskId": task_id, "configId": config_id, "trigger": trigger, "event": entry,
                "config": await self._store.config_data(config_id), "inputs": inputs}
        row = await self._store.claim(task_id, config_id, trigger, inputs, latest["proofs"] if latest else {},
                                      {"data": data, "fields": fields, "default_ts": None},
                                      block=(entry["blockNumber"], entry["blockHash"]))
        if row is None:
            log.info("registry.event_already_fired", **fields)
            return
        log.info("registry.event", **fields, input_id=row["inputId"])
        self._runs.spawn(row["inputId"], run_claim(self._service, self._orchestrator, containers, row, data, fields))

    async def _on_reorg(self, reverted: list[str]) -> None:
        log.warning("registry.event_reverted", chain_id=self.chain_id, inputs=len(reverted), input_ids=reverted[:20])
