"""Every background loop and task group of a real (in-process) node is the Supervisor's: each loop
outlives a failed round and a run killed from outside, each group's failing task is logged by
name, a critical loop that dies stops the node with exit code 1, and stop drains the groups the
one way (wait, then cancel and log the stragglers). See node/lifecycle.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from eth_account import Account

from node.app import Node
from node.config import NodeConfig
from node.lifecycle import Supervisor


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# Loops that run every second or faster in `busy_node` (the gateway's reservation expiry runs
# every 5 s, too slow to wait for here; it is the same Supervisor.loop). CRE's replay nonces are
# pruned by `storage-pruner` (the CRE subsystem yields their expiry rule).
FAST_LOOPS = {"registry-relayer", "registry-intent-expiry", "observe-watchdog", "storage-pruner",
              "gateway-approval-expiry", "gateway-audit-exports", "observe-charts"}


def busy_node(tmp_path) -> Node:
    """A node with every subsystem whose loops run without Docker or a chain, on short intervals."""
    return Node(NodeConfig.model_validate({
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
        "storage": {"path": str(tmp_path / "node.db"), "prune_interval": 0.2},
        "manage_containers": False, "startup_wait": 0, "containers": [],
        "master_key_path": str(tmp_path / "node.key"),
        "cre": {"skew_seconds": 0.5},
        "registry": {"relayer_key": "0x" + Account.create().key.hex()},
        "observe": {"interval": 0.2},
    }))


def rounds_counted(monkeypatch, *, broken_first: bool) -> dict[str, int]:
    """Count each loop's rounds by name (every loop the node starts), the first one raising if asked."""
    rounds: dict[str, int] = {}
    original = Supervisor.loop

    def loop(self, name, fn, every, wake=None, **kw):
        rounds[name] = 0

        async def counted() -> Any:
            rounds[name] += 1
            if broken_first and rounds[name] == 1:
                raise RuntimeError(f"{name}: its first round is broken")
            return await fn()

        return original(self, name, counted, every, wake, **kw)

    monkeypatch.setattr(Supervisor, "loop", loop)
    return rounds


@pytest.fixture
def logged(caplog):
    caplog.set_level(logging.INFO)
    return lambda event: [r for r in caplog.records if r.getMessage() == event]


async def test_every_loop_of_a_node_logs_a_failed_round_with_its_name_and_runs_the_next(tmp_path, monkeypatch,
                                                                                        logged):
    rounds = rounds_counted(monkeypatch, broken_first=True)
    node = busy_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started)
    assert FAST_LOOPS <= set(rounds)
    await wait_for(lambda: all(rounds[name] >= 2 for name in FAST_LOOPS))
    failed = {r._fields["task"]: r for r in logged("task.round_failed")}
    for name in FAST_LOOPS:
        assert "its first round is broken" in str(failed[name].exc_info[1]), name  # with its traceback
        status = node.supervisor.task(name)
        assert status is not None and status.running and status.restarts == 0, name  # not a dead loop
    node.request_stop()
    assert await asyncio.wait_for(serving, 20) == 0


async def test_every_task_of_a_node_whose_run_is_killed_from_outside_is_logged_and_started_again(tmp_path,
                                                                                              monkeypatch, logged):
    rounds = rounds_counted(monkeypatch, broken_first=False)
    node = busy_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started and all(rounds[name] >= 1 for name in FAST_LOOPS))
    tasks = [node.supervisor.task(str(t["name"])) for t in node.supervisor.status()]
    assert FAST_LOOPS <= {t.name for t in tasks if t is not None}
    for task in tasks:
        assert task is not None and task.current is not None and not task.critical
        task.current.cancel()  # its run dies; nobody asked it to stop
    await wait_for(lambda: all(t is not None and t.restarts == 1 and t.running for t in tasks))
    before = {name: rounds[name] for name in FAST_LOOPS}
    await wait_for(lambda: all(rounds[name] > before[name] for name in FAST_LOOPS))  # running again
    crashed = {r._fields["task"] for r in logged("task.crashed")}
    assert {t.name for t in tasks if t is not None} <= crashed
    assert node.exit_code == 0 and not serving.done()
    node.request_stop()
    assert await asyncio.wait_for(serving, 20) == 0


async def test_a_task_that_fails_in_any_group_of_a_node_is_logged_with_its_group_and_label(tmp_path, logged):
    node = busy_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started)
    groups = node.supervisor.groups()
    assert {"config-reload", "cre-actions", "gateway-alerts", "registry-cron-runs"} <= {g.name for g in groups}

    async def broken() -> None:
        raise RuntimeError("one-shot work failed")

    await asyncio.gather(*(group.spawn("boom", broken()) for group in groups))
    crashed = {r._fields["task"]: r for r in logged("task.crashed")}
    for group in groups:
        record = crashed[f"{group.name}:boom"]
        assert "one-shot work failed" in str(record.exc_info[1])
    node.request_stop()
    assert await asyncio.wait_for(serving, 20) == 0  # a failed one-shot task is not fatal


async def test_stopping_a_node_waits_for_each_groups_tasks_then_cancels_and_logs_the_stragglers(tmp_path, logged):
    node = busy_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started)
    finished, cancelled = [], []

    async def quick(name: str) -> None:
        await asyncio.sleep(0.3)
        finished.append(name)

    async def stuck(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    groups = node.supervisor.groups()
    for group in groups:
        group.spawn("quick", quick(group.name))
    # Stuck tasks where the owner's grace is short (CRE actions 1 s, budget alerts 2 s).
    stuck_in = {"cre-actions", "gateway-alerts"}
    for group in groups:
        if group.name in stuck_in:
            group.spawn("stuck", stuck(group.name))
    started = time.monotonic()
    node.request_stop()
    assert await asyncio.wait_for(serving, 30) == 0
    assert sorted(finished) == sorted(g.name for g in groups)  # waited for
    assert sorted(cancelled) == sorted(stuck_in)  # then cancelled
    stragglers = {r._fields["task"]: r._fields["names"] for r in logged("task.stragglers")}
    assert stragglers == {name: [f"{name}:stuck"] for name in stuck_in}
    assert all(len(g) == 0 for g in groups) and time.monotonic() - started < 10


@pytest.mark.docker  # anvil
async def test_a_node_whose_critical_chain_loop_is_killed_stops_with_exit_code_1(tmp_path, logged):
    from tests.chain_helpers import KEYS, Anvil, chain_config, deploy

    anvil = Anvil(block_time=1).start()
    try:
        dep = await asyncio.to_thread(deploy, anvil.url)
        node = Node(NodeConfig.model_validate({
            "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
            "storage": {"path": str(tmp_path / "node.db")},
            "manage_containers": False, "startup_wait": 0, "containers": [],
            "chain": chain_config(anvil.url, dep, KEYS[2])}))
        serving = asyncio.create_task(node.serve_forever())
        await wait_for(lambda: node.started, timeout=30)
        await asyncio.wait_for(node.subsystems["chain"].service.listener.synced.wait(), 10)
        listener = node.supervisor.task("chain-listener")
        assert listener is not None and listener.critical and node.supervisor.task("chain-processor").critical
        assert listener.current is not None
        killed = time.monotonic()
        listener.current.cancel()  # the Coordinator listener dies: this node no longer serves the chain
        assert await asyncio.wait_for(serving, 30) == 1
        assert time.monotonic() - killed < 10  # at once, not after a restart backoff
        [fatal] = logged("task.fatal")
        assert fatal._fields["task"] == "chain-listener"
    finally:
        anvil.stop()


# -- the Supervisor's loop on its own ---------------------------------------------------------------


async def test_a_loop_runs_its_next_round_at_once_when_its_wake_event_is_set():
    supervisor = Supervisor(on_fatal=lambda name: None)
    wake, rounds = asyncio.Event(), []

    async def round_() -> None:
        rounds.append(time.monotonic())

    supervisor.loop("woken", round_, 60, wake)
    await wait_for(lambda: len(rounds) == 1)
    wake.set()
    await wait_for(lambda: len(rounds) == 2, timeout=1)  # not after the 60 s of `every`
    await supervisor.close()


async def test_stopping_a_loop_whose_round_is_retrying_a_dead_rpc_ends_it_at_once():
    from node.chain.follow import with_backoff

    supervisor = Supervisor(on_fatal=lambda name: None)
    calls = []

    async def dead_rpc() -> int:
        calls.append(1)
        raise ConnectionError("connection refused")

    async def round_() -> None:
        await with_backoff("eth_blockNumber", dead_rpc, first=30)

    handle = supervisor.loop("follower", round_, 1.0)
    await wait_for(lambda: calls)
    started = time.monotonic()
    await handle.stop(timeout=20)
    assert time.monotonic() - started < 2 and not handle.running and handle.restarts == 0
