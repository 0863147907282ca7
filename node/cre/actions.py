"""Enqueued CRE actions as real work: an `actionType` mapped to a container chain in
config.yaml runs as a job through the node's orchestrator, and its outcome is recorded on the
action. Other types wait in the queue for workers (list, claim with a lease, acknowledge).

Each scheduled action runs as a one-shot task of the Supervisor's `cre-actions` group: a crash is
recorded on the action and logged, and `close(grace)` drains the group the one way (wait up to
`grace`, then cancel and log the stragglers; a cancelled action stays "running" and the next
start runs it again, `recover`)."""

from __future__ import annotations

import asyncio
from typing import Any

from node.cre.store import CreStore
from node.jobs.orchestrator import JobRejected, Orchestrator
from node.lifecycle import TaskSet
from node.logs import get_logger

log = get_logger(__name__)


class ActionRunner:
    def __init__(self, store: CreStore, orchestrator: Orchestrator, routes: dict[str, list[str]],
                 tasks: TaskSet | None = None) -> None:
        self._store = store
        self._orchestrator = orchestrator
        self.routes = routes
        self._tasks = tasks if tasks is not None else TaskSet("cre-actions")

    def routed(self, action_type: str) -> bool:
        return action_type in self.routes

    async def recover(self) -> None:
        """Run actions a previous process left queued or running."""
        for action in await self._store.actions_to_run(list(self.routes)):
            self.schedule(action)

    def schedule(self, action: dict[str, Any]) -> None:
        self._tasks.spawn(str(action["id"]), self._run(action))

    async def _run(self, action: dict[str, Any]) -> None:
        try:
            await self._work(action)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave an action "running" with no task behind it
            log.exception("cre.action_crashed", action_id=action["id"])
            try:
                await self._store.set_action_state(action["id"], "failed", error=f"internal error: {exc}")
            except Exception:  # still "running": the next start runs it again (recover)
                log.exception("cre.action_state_lost", action_id=action["id"])

    async def _work(self, action: dict[str, Any]) -> None:
        action_id = action["id"]
        containers = self.routes[action["actionType"]]
        await self._store.set_action_state(action_id, "running")
        data = {k: action[k] for k in ("id", "actionType", "action", "vaultAddress", "groupId", "dedupeKey")}
        try:
            job = await self._orchestrator.run(containers, data, client="cre", source="cre")
        except JobRejected as exc:
            await self._store.set_action_state(action_id, "failed", error=exc.message)
            log.warning("cre.action_rejected", action_id=action_id, error=exc.message)
            return
        result = job.result or {}
        if job.status == "success":
            await self._store.set_action_state(action_id, "succeeded", job_id=job.id, result=result.get("output"))
        else:
            await self._store.set_action_state(action_id, "failed", job_id=job.id, error=result.get("error"))
        log.info("cre.action_done", action_id=action_id, job_id=job.id, status=job.status)

    async def close(self, timeout: float) -> None:
        await self._tasks.drain(timeout)
