"""The container monitor runs its Docker calls in a worker thread, but a container that moved
is announced on the event loop: the jobs' endpoints that listen are the loop's and are read
there without locks. In-process, with a stand-in for the Docker engine."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from node.containers.config import ContainerConfig, DockerConfig
from node.containers.manager import ContainerManager
from node.containers.swarm import ServiceState, SwarmManager


class ExitedContainer:
    """What `containers.get` returns for a container that died: the monitor starts it again."""

    id = "abc123"
    status = "exited"
    attrs: dict[str, Any] = {"State": {"ExitCode": 1},
                             "NetworkSettings": {"Networks": {"n": {"IPAddress": "10.0.0.9"}}}}

    def start(self) -> None:
        pass

    def reload(self) -> None:
        pass


class Engine:
    class containers:  # noqa: N801 - the docker SDK's attribute name
        @staticmethod
        def get(name: str) -> ExitedContainer:
            return ExitedContainer()


def _heard() -> tuple[list[tuple[str, list[str], int, bool]], Any]:
    heard: list[tuple[str, list[str], int, bool]] = []

    def on_url_change(cid: str, urls: list[str]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is not None
        except RuntimeError:
            on_loop = False
        heard.append((cid, urls, threading.get_ident(), on_loop))

    return heard, on_url_change


async def _settle(heard: list) -> None:
    for _ in range(100):
        if heard:
            return
        await asyncio.sleep(0.01)


async def test_a_restarted_container_is_announced_on_the_loop_thread_not_the_docker_worker() -> None:
    manager = ContainerManager([ContainerConfig(id="echo", image="echo:latest")], DockerConfig(), manage=True,
                               client=Engine())  # type: ignore[arg-type]
    heard, manager.on_url_change = _heard()
    await manager.check()
    await _settle(heard)
    [(cid, urls, thread, on_loop)] = heard
    assert cid == "echo" and urls == [manager.states["echo"].url]
    assert thread == threading.get_ident() and on_loop
    assert manager.states["echo"].restarts == 1


async def test_a_swarm_service_whose_tasks_moved_is_announced_on_the_loop_thread() -> None:
    manager = SwarmManager([ContainerConfig(id="echo", image="echo:latest")],
                           DockerConfig(mode="swarm"), client=Engine())  # type: ignore[arg-type]
    state = manager.states["echo"]
    assert isinstance(state, ServiceState)

    def refresh(s: ServiceState) -> bool:  # the tasks moved: new call addresses
        s.task_urls = ["http://10.0.0.7:3000", "http://10.0.0.8:3000"]
        return True

    manager._refresh = refresh  # type: ignore[method-assign]
    heard, manager.on_url_change = _heard()
    await manager.check()
    await _settle(heard)
    [(cid, urls, thread, on_loop)] = heard
    assert cid == "echo" and urls == ["http://10.0.0.7:3000", "http://10.0.0.8:3000"]
    assert thread == threading.get_ident() and on_loop
