"""The supervisor (node/lifecycle.py), in-process: background work that dies is seen, restarted
or fatal, and stops when asked. Then the same through a real (in-process) node."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from node.app import Node
from node.config import NodeConfig
from node.lifecycle import Supervisor


def fast_supervisor(fatal: list[str]) -> Supervisor:
    return Supervisor(on_fatal=fatal.append, backoff_initial=0.01, backoff_max=0.05)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_background_loop_that_crashes_is_logged_and_restarted(caplog):
    fatal: list[str] = []
    sup = fast_supervisor(fatal)
    runs = []

    async def loop() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # the third run stays up

    with caplog.at_level(logging.INFO):
        handle = sup.spawn("flaky", loop)
        await wait_for(lambda: len(runs) == 3)
    assert handle.restarts == 2 and handle.running and fatal == []
    assert "RuntimeError('boom')" in handle.last_error
    crashed = [r for r in caplog.records if r.getMessage() == "task.crashed"]
    assert len(crashed) == 2 and crashed[0].exc_info is not None  # logged with its traceback
    await sup.close()
    assert not handle.running


async def test_a_loop_that_returns_while_meant_to_run_is_restarted():
    sup = fast_supervisor([])
    runs = []

    async def quits() -> None:
        runs.append(1)
        if len(runs) > 1:
            await asyncio.Event().wait()

    handle = sup.spawn("quits", quits)
    await wait_for(lambda: len(runs) == 2)
    assert handle.restarts == 1 and handle.last_error == "returned while it was meant to run"
    await sup.close()


async def test_a_critical_task_that_dies_is_fatal_and_not_restarted():
    fatal: list[str] = []
    sup = fast_supervisor(fatal)
    runs = []

    async def critical() -> None:
        runs.append(1)
        raise ValueError("state is corrupt")

    handle = sup.spawn("core", critical, critical=True)
    await wait_for(lambda: fatal == ["core"])
    await asyncio.sleep(0.1)
    assert len(runs) == 1 and not handle.running
    await sup.close()


async def test_periodic_work_goes_on_after_a_failing_round():
    sup = fast_supervisor([])
    rounds = []

    async def work() -> None:
        rounds.append(1)
        if len(rounds) == 2:
            raise OSError("disk hiccup")

    handle = sup.periodic("prune", 0.01, work)
    await wait_for(lambda: len(rounds) >= 4)
    assert handle.restarts == 0 and handle.running  # a failed round is not a dead loop
    await sup.close()


async def test_stopping_with_the_tasks_own_signal_lets_it_finish_its_work():
    sup = fast_supervisor([])
    stop = asyncio.Event()
    finished = []

    async def worker() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # in-flight work after the stop signal
        finished.append(1)

    handle = sup.spawn("worker", worker)
    await asyncio.sleep(0.01)
    await handle.stop(stop.set, timeout=5)
    assert finished == [1] and handle.restarts == 0 and not handle.running


async def test_a_task_that_ignores_its_stop_signal_is_cancelled_after_the_timeout():
    sup = fast_supervisor([])

    async def stubborn() -> None:
        await asyncio.Event().wait()

    handle = sup.spawn("stubborn", stubborn)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(handle.stop(lambda: None, timeout=0.05), 2)
    assert not handle.running and handle.restarts == 0


async def test_a_one_shot_task_that_fails_is_logged_with_its_traceback_and_not_restarted(caplog):
    sup = fast_supervisor([])
    runs = []

    async def once() -> None:
        runs.append(1)
        raise RuntimeError("watch failed")

    with caplog.at_level(logging.INFO):
        await sup.group("watches").spawn("tx#7", once())
        await asyncio.sleep(0.05)
    assert runs == [1]
    [crashed] = [r for r in caplog.records if r.getMessage() == "task.crashed"]
    assert crashed.exc_info is not None and "watch failed" in str(crashed.exc_info[1])
    assert crashed._fields["task"] == "watches:tx#7"


async def test_closing_the_supervisor_waits_for_one_shot_tasks_then_cancels_and_logs_the_stragglers(caplog):
    sup = fast_supervisor([])
    finished, cancelled = [], []

    async def quick() -> None:
        await asyncio.sleep(0.1)
        finished.append("quick")

    async def endless() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("endless")
            raise

    tasks = sup.group("deliveries")
    tasks.spawn("a", quick())
    tasks.spawn("b", endless())
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(sup.close(timeout=0.5), 3)
    assert finished == ["quick"] and cancelled == ["endless"] and len(tasks) == 0
    [stragglers] = [r for r in caplog.records if r.getMessage() == "task.stragglers"]
    assert stragglers._fields["names"] == ["deliveries:b"]


# -- through a node -------------------------------------------------------------------------------


def bare_node(tmp_path) -> Node:
    config = NodeConfig.model_validate({
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace": 1},
        "storage": {"path": str(tmp_path / "node.db")},
        "manage_containers": False,
        "containers": [],
    })
    return Node(config)


async def test_a_node_whose_critical_background_task_dies_stops_and_exits_non_zero(tmp_path):
    node = bare_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started, timeout=15)

    async def corrupt() -> None:
        raise RuntimeError("cannot go on")

    node.supervisor.spawn("critical-loop", corrupt, critical=True)
    assert await asyncio.wait_for(serving, 15) == 1


async def test_a_node_restarts_a_crashed_background_loop_and_keeps_serving(tmp_path):
    node = bare_node(tmp_path)
    serving = asyncio.create_task(node.serve_forever())
    await wait_for(lambda: node.started, timeout=15)
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("transient")
        await asyncio.Event().wait()

    node.supervisor.spawn("flaky-loop", flaky)
    await wait_for(lambda: len(runs) == 2, timeout=10)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{node.port}/health") as resp:
            assert resp.status == 200
    status = {t["name"]: t for t in node.supervisor.status()}
    assert status["flaky-loop"]["restarts"] == 1 and status["flaky-loop"]["running"]
    node.request_stop()
    assert await asyncio.wait_for(serving, 15) == 0


async def test_a_failed_start_up_stops_only_what_had_started(tmp_path):
    """The port is taken: start-up fails at the server step; the database, opened before it, is
    closed again."""
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    node = bare_node(tmp_path)
    node.config = node.config.model_copy(update={
        "server": node.config.server.model_copy(update={"port": busy.getsockname()[1]})})
    try:
        with pytest.raises(OSError):
            await node.serve_forever()
    finally:
        busy.close()
    assert node.db._conn is None
