"""An action whose outcome cannot be recorded is not left "running" with no task behind it
(in-process: the runner with a store that fails once, as SQLite did under load in CI), and an
action whose job is refused (a domain error from the orchestrator's gates) ends failed with the
refusal's words."""

from __future__ import annotations

import asyncio
import sqlite3
from types import SimpleNamespace

from node.cre.actions import ActionRunner


class FlakyStore:
    def __init__(self) -> None:
        self.states: list[tuple[str, dict]] = []
        self.failed_once = False

    async def set_action_state(self, action_id: int, status: str, **fields) -> None:
        if status == "succeeded" and not self.failed_once:
            self.failed_once = True
            raise sqlite3.OperationalError("database is locked")
        self.states.append((status, fields))


class Orchestrator:
    async def run(self, containers, data, **kw):
        return SimpleNamespace(id="job-1", status="success", result={"output": data})


async def test_an_action_whose_result_cannot_be_stored_ends_failed_not_running():
    store = FlakyStore()
    runner = ActionRunner(store, Orchestrator(), {"notify": ["echo"]})  # type: ignore[arg-type]
    runner.schedule({"id": 7, "actionType": "notify", "action": {}, "vaultAddress": "0x", "groupId": "g",
                     "dedupeKey": "d"})
    await runner.close(timeout=5)
    await asyncio.sleep(0)
    assert [status for status, _ in store.states] == ["running", "failed"]
    assert "database is locked" in store.states[-1][1]["error"]


class RefusingOrchestrator:
    async def run(self, containers, data, **kw):
        from node.errors import Forbidden
        raise Forbidden("Workflow wf-cre is paused", {"workflow_id": "wf-cre"})


async def test_an_action_whose_job_is_refused_ends_failed_with_the_refusals_message():
    store = FlakyStore()
    runner = ActionRunner(store, RefusingOrchestrator(), {"notify": ["echo"]})  # type: ignore[arg-type]
    runner.schedule({"id": 8, "actionType": "notify", "action": {}, "vaultAddress": "0x", "groupId": "g",
                     "dedupeKey": "d"})
    await runner.close(timeout=5)
    await asyncio.sleep(0)
    assert store.states == [("running", {}), ("failed", {"error": "Workflow wf-cre is paused"})]
