"""The node's start and stop order after the lifespans restructuring (issue #23), in-process:
no background loop outlives the subsystems it reads, and a start-up that fails at any step
stops exactly what had started (tasks, the server, the chain's connection, the database),
whoever called `start`."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from node.app import Node
from node.config import parse_config
from node.subsystem import Context, Mount

ANVIL_KEY = "0x" + "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def _config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "rate_limit": {"num_requests": 0},
                   "auth_rate_limit": {"num_requests": 0}},
        "storage": {"path": str(tmp_path / f"{uuid.uuid4().hex[:6]}.db"), "prune_interval": 0.05},
        "master_key_path": str(tmp_path / "node.key"),
        "gateway": {"enabled": True},
        "cre": {"enabled": True, "api_key": "k"},
        "registry": {"enabled": True},
        "observe": {"enabled": True, "interval": 0.05},
        "manage_containers": False, "startup_wait": 0, "containers": [],
        **sections,
    }


def _running(node: Node) -> list[str]:
    return sorted(str(t["name"]) for t in node.supervisor.status() if t["running"])


def _other_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


class Probe:
    """A subsystem that notes, when its lifespan is left, which supervised tasks still run."""

    name = "probe"
    enabled = True

    def __init__(self, node: Node, fail: bool = False) -> None:
        self.node, self.fail = node, fail
        self.running_at_exit: list[str] | None = None

    def flags(self, mount: Mount | None) -> dict[str, bool]:
        return {}

    def lifespan(self, ctx: Context) -> Any:
        return self._lifespan(ctx)

    @asynccontextmanager
    async def _lifespan(self, ctx: Context) -> AsyncIterator[Mount]:
        if self.fail:
            raise RuntimeError("probe refuses to start")
        try:
            yield Mount(self.name)
        finally:
            self.running_at_exit = _running(self.node)


async def test_no_subsystem_loop_nor_the_pruner_still_runs_when_the_subsystems_entered_before_them_stop(tmp_path):
    node = Node(parse_config(_config(tmp_path)))
    probe = Probe(node)
    node.subsystems = {"probe": probe, **node.subsystems}  # entered first after the core: left last
    await node.start()
    await asyncio.sleep(0.2)  # every loop has run a round
    assert {"gateway-audit-exports", "observe-watchdog", "storage-pruner"} <= set(_running(node))
    await node.stop()
    # The gateway's expiries, observe's watchdog and charts and the pruner sample, expire and prune
    # what the subsystems own: they stop with their owner, not after every subsystem is gone.
    assert probe.running_at_exit == []


async def test_a_start_up_failing_in_a_subsystem_leaves_no_task_and_closes_the_database(tmp_path):
    node = Node(parse_config(_config(tmp_path)))
    node.subsystems["probe"] = Probe(node, fail=True)  # entered last, after gateway, cre, registry, observe
    with pytest.raises(RuntimeError, match="probe refuses to start"):
        await node.start()
    await asyncio.sleep(0.05)
    assert _running(node) == [] and _other_tasks() == set()
    assert node.db._conn is None  # closed
    gateway = node.subsystems["gateway"].api  # type: ignore[attr-defined]
    assert gateway is not None and gateway.hasher._pool._shutdown  # its scrypt threads are let go
    await node.stop()  # what a caller's `finally` does: nothing left to undo, no error


async def test_a_start_up_failing_to_bind_its_port_stops_every_subsystem_it_had_entered(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        node = Node(parse_config(_config(tmp_path, server={
            "host": "127.0.0.1", "port": busy.getsockname()[1], "rate_limit": {"num_requests": 0},
            "auth_rate_limit": {"num_requests": 0}})))
        with pytest.raises(OSError):
            await node.start()
        await asyncio.sleep(0.05)
        assert _running(node) == [] and _other_tasks() == set()
        assert node.db._conn is None
        gateway = node.subsystems["gateway"].api  # type: ignore[attr-defined]
        assert gateway is not None and gateway.hasher._pool._shutdown
    finally:
        busy.close()


class FailingChain:
    """Stands for ChainService: its start opens the RPC connection, then fails (a payment wallet
    the WalletFactory did not make, an RPC that stops answering)."""

    instances: list[FailingChain] = []

    def __init__(self, *args: Any) -> None:
        self.connected = False
        FailingChain.instances.append(self)

    async def start(self) -> None:
        self.connected = True
        raise RuntimeError("chain.wallet.payment_address is not a Wallet made by the WalletFactory")

    async def stop(self) -> None:
        self.connected = False

    async def ping(self) -> bool:
        return True

    async def deliveries_view(self, request: Any) -> Any:
        raise NotImplementedError

    def set_containers(self, containers: Any) -> None:
        pass


async def test_a_chain_that_fails_to_start_has_its_connection_closed_and_the_node_stops_serving(tmp_path, monkeypatch):
    import node.chain.service

    FailingChain.instances.clear()
    monkeypatch.setattr(node.chain.service, "ChainService", FailingChain)
    chain = {"enabled": True, "rpc_url": "http://127.0.0.1:9", "coordinator_address": "0x" + "11" * 20,
             "reader_address": "0x" + "22" * 20, "wallet": {"private_key": ANVIL_KEY}}
    app = Node(parse_config(_config(tmp_path, chain=chain)))
    with pytest.raises(RuntimeError, match="WalletFactory"):
        await app.start()
    assert [c.connected for c in FailingChain.instances] == [False]  # stopped although its start failed
    assert _running(app) == [] and _other_tasks() == set()
    assert app.db._conn is None
    with pytest.raises(OSError):  # the server it had started no longer listens
        socket.create_connection(("127.0.0.1", app.port), timeout=1).close()


async def test_a_reload_under_way_when_the_node_stops_finishes_before_the_containers_are_stopped(tmp_path):
    import yaml

    from node.config import read_config

    silent = socket.socket()  # a container that accepts and never answers: the reload waits for it
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        path = tmp_path / "config.yaml"
        base = {**_config(tmp_path), "gateway": {"enabled": False}, "cre": {"enabled": False},
                "registry": {"enabled": False}, "observe": {"enabled": False}}
        path.write_text(yaml.safe_dump(base))
        loaded = read_config(path)
        node = Node(loaded.config, loaded)
        reloads: list[asyncio.Task] = []
        seen: list[bool] = []
        stop_containers = node.containers.stop

        async def stop() -> None:
            seen.append(all(r.done() for r in reloads))
            await stop_containers()

        node.containers.stop = stop  # type: ignore[method-assign]
        await node.start()
        added = {"id": "late", "url": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        path.write_text(yaml.safe_dump({**base, "startup_wait": 1, "containers": [added]}))
        reload = asyncio.create_task(node.reload())
        reloads.append(reload)
        await asyncio.sleep(0.2)  # the reload has added the container and waits for it to answer
        assert not reload.done()
        await node.stop()
        # A container a reload starts after the containers were stopped would outlive the node.
        assert seen == [True]
        assert (await reload)["ok"] is True
    finally:
        silent.close()


def _open_client_sessions() -> int:
    import gc

    import aiohttp

    return sum(1 for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed)


async def test_the_cre_runtime_leaves_no_client_session_open_when_the_node_stops(tmp_path):
    from aiohttp import web

    async def rpc(request: web.Request) -> web.Response:
        call = await request.json()
        return web.json_response({"jsonrpc": "2.0", "id": call["id"], "result": "0x7a69"})  # eth_chainId

    app = web.Application()
    app.router.add_post("/", rpc)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        address = "0x" + "33" * 20
        runtime = {"rpc_url": f"http://127.0.0.1:{runner.addresses[0][1]}/", "don_key": "0x" + "01" * 32,
                   "api_key": "k", "forwarder_address": address, "sub0_address": address, "vault_address": address,
                   "conditional_tokens_address": address, "usdc_address": address}
        node = Node(parse_config({**_config(tmp_path), "gateway": {"enabled": False}, "registry": {"enabled": False},
                                  "observe": {"enabled": False},
                                  "cre": {"enabled": True, "api_key": "k", "runtime": runtime}}))
        before = _open_client_sessions()
        await node.start()
        assert _open_client_sessions() > before  # the node's own, and the runtime's RPC session
        await node.stop()
        assert _open_client_sessions() == before  # no "Unclosed client session" at exit
    finally:
        await runner.cleanup()
