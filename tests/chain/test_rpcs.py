"""Several RPCs: reads and deliveries go on when one RPC dies or rate-limits, transactions also
go to send-only RPCs, and each RPC's state is shown. In-process chain service on anvil behind
local proxies the test breaks on purpose, with a stand-in orchestrator."""

from __future__ import annotations

import asyncio
import time

import pytest

from node.chain.config import ChainConfig
from node.lifecycle import Supervisor
from node.registry.config import RegistryConfig
from tests.chain_helpers import KEYS, CountingOrchestrator, RpcProxy, chain_service

ANVIL_BLOCK_TIME = None
KEY = "0x" + "01" * 32
REGISTRY = "0x" + "11" * 20


async def delivered(dep, payload: bytes, seconds: float = 10) -> bool:
    receipt = await asyncio.to_thread(dep.send, dep.consumer.functions.requestCompute("echo", payload, 1))
    sub_id = dep.created_id(receipt)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if dep.consumer.functions.deliveryCount(sub_id).call() >= 1:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
def proxies(anvil):
    made = [RpcProxy(anvil.url, retry_after=2).start() for _ in range(3)]
    yield made
    for proxy in made:
        proxy.stop()


def by_url(chain, proxy) -> dict:
    [state] = [s for s in chain.rpc_status()["rpcs"] if s["rpc"] == proxy.url]
    return state


def test_rpc_url_takes_a_list_and_rpc_urls_weights_and_send_only_endpoints():
    config = ChainConfig(rpc_url=["http://127.0.0.1:1", "http://127.0.0.1:2"],
                         rpc_urls=[{"url": "https://rpc.example/key", "weight": 5},
                                   {"url": "http://127.0.0.1:3", "send_only": True}])
    assert [(e.url, e.weight, e.send_only) for e in config.endpoints()] == [
        ("http://127.0.0.1:1", 1, False), ("http://127.0.0.1:2", 1, False), ("https://rpc.example/key", 5, False),
        ("http://127.0.0.1:3", 1, True)]


@pytest.mark.parametrize("settings, field", [
    ({"rpc_url": ["http://127.0.0.1:1", "ftp://x"]}, "rpc_url[1]"),
    ({"rpc_urls": [{"url": "http://127.0.0.1:1", "weight": 0}]}, "rpc_urls.0.weight"),
    ({"rpc_urls": [{"url": "127.0.0.1:1"}]}, "rpc_urls.0.url"),
    ({"rpc_urls": [{"url": "http://127.0.0.1:1", "send_only": True}]}, "send_only"),
    ({"rpc_url": "http://127.0.0.1:1", "rpc_urls": [{"url": "http://127.0.0.1:1"}]}, "listed twice"),
])
def test_a_bad_rpc_list_is_refused_naming_the_field(settings, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ChainConfig(enabled=True, registry_address=REGISTRY, wallet={"private_key": KEY}, **settings)


def test_registry_chains_take_an_rpc_list_or_weighted_entries_as_chain_does():
    config = RegistryConfig(relayer_key=KEY, chains={
        1: ["http://127.0.0.1:1", "http://127.0.0.1:2"], 2: "http://127.0.0.1:3",
        3: {"rpc_url": "http://127.0.0.1:4", "rpc_urls": [{"url": "http://127.0.0.1:5", "weight": 5}],
            "confirmations": 2}})
    assert {chain_id: [(e.url, e.weight) for e in chain.endpoints()] for chain_id, chain in config.chains.items()} == {
        1: [("http://127.0.0.1:1", 1), ("http://127.0.0.1:2", 1)], 2: [("http://127.0.0.1:3", 1)],
        3: [("http://127.0.0.1:4", 1), ("http://127.0.0.1:5", 5)]}


@pytest.mark.parametrize("chain, field", [
    (["http://127.0.0.1:1", "ftp://x"], "rpc_url[1]"),
    ({"rpc_urls": [{"url": "http://127.0.0.1:1", "weight": 0}]}, "chains.1.rpc_urls.0.weight"),
    ({"confirmations": 1}, "rpc_url: no RPC given"),
    ({"rpc_url": "http://127.0.0.1:1", "rpc_urls": [{"url": "http://127.0.0.1:1"}]}, "listed twice"),
])
def test_a_bad_registry_chain_rpc_list_is_refused_naming_the_field(chain, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        RegistryConfig(relayer_key=KEY, chains={1: chain})


@pytest.mark.docker
async def test_reads_and_deliveries_continue_when_the_first_rpc_dies(tmp_path, anvil, dep, proxies):
    first, second, _ = proxies
    async with chain_service(tmp_path / "c.db", first.url, dep, KEYS[1], CountingOrchestrator(),
                             rpc_url=[first.url, second.url], rpc_health_interval=0.5) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        assert await delivered(dep, b"before")
        assert by_url(chain, first)["in_use"] and sum(second.calls.values()) <= 5  # health checks only
        first.set_mode("down")
        assert await delivered(dep, b"after one died")
        assert await delivered(dep, b"and again")
        assert by_url(chain, first)["state"] == "down" and by_url(chain, first)["errors"] >= 1
        assert by_url(chain, second)["in_use"] and second.calls["eth_sendRawTransaction"] >= 2
        first.set_mode("ok")  # back: the health check readmits it, and reads return to it (config order)
        await asyncio.sleep(2)
        assert await delivered(dep, b"first is back")
        assert by_url(chain, first)["state"] == "up" and by_url(chain, first)["in_use"]


@pytest.mark.docker
async def test_a_rate_limited_rpc_is_left_alone_for_its_retry_after(tmp_path, anvil, dep, proxies):
    first, second, _ = proxies
    async with chain_service(tmp_path / "c.db", first.url, dep, KEYS[2], CountingOrchestrator(),
                             rpc_url=[first.url, second.url], rpc_health_interval=5) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        first.set_mode("429")  # Retry-After: 2
        calls_before = sum(first.calls.values())
        assert await delivered(dep, b"while limited")
        state = by_url(chain, first)
        assert state["state"] == "rate_limited" and state["rate_limited"] >= 1 and 0 < state["back_in_s"] <= 2
        assert sum(first.calls.values()) == calls_before  # 429s are not forwarded: nothing reached anvil
        first.set_mode("ok")
        await asyncio.sleep(2.2)
        assert await delivered(dep, b"after retry-after")
        assert by_url(chain, first)["in_use"]


@pytest.mark.docker
async def test_transactions_also_go_to_send_only_rpcs_which_serve_no_reads(tmp_path, anvil, dep, proxies):
    reader, _, sender = proxies
    async with chain_service(tmp_path / "c.db", reader.url, dep, KEYS[3], CountingOrchestrator(),
                             rpc_urls=[{"url": sender.url, "send_only": True}]) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        assert await delivered(dep, b"broadcast")
        assert sender.calls["eth_sendRawTransaction"] >= 1
        assert set(sender.calls) == {"eth_sendRawTransaction", "eth_blockNumber"}  # health checks and sends
        assert by_url(chain, sender)["role"] == "send"


class LaggingView:
    """The web3 a LogFollower sees when its head comes from one RPC and its next reads from
    another that has not seen the last blocks yet (geth and most providers clamp eth_getLogs to
    their own head; a block they lack is not found). Each read lets the lagging RPC catch up one
    block."""

    def __init__(self, head: int, known: int, event_block: int, topic: bytes = b"\x01" * 32) -> None:
        self.head, self.known, self.event_block, self.topic = head, known, event_block, topic
        self.eth = self  # w3.eth.<call>

    @property
    def block_number(self):
        async def head() -> int:
            return self.head
        return head()

    async def get_logs(self, where: dict) -> list[dict]:
        seen = min(where["toBlock"], self.known)
        self.known += 1
        if not where["fromBlock"] <= self.event_block <= seen:
            return []
        return [{"address": "0x" + "11" * 20, "topics": [self.topic, (7).to_bytes(32, "big")], "data": b"",
                 "blockNumber": self.event_block, "blockHash": b"\x02" * 32, "transactionHash": b"\x03" * 32,
                 "logIndex": 0}]

    async def get_block(self, number: int) -> dict:
        from web3.exceptions import BlockNotFound

        if number > self.known:
            self.known += 1
            raise BlockNotFound(f"block {number} not found")
        return {"hash": number.to_bytes(32, "big")}


class MemoryCursor:
    def __init__(self, start: int) -> None:
        self.block, self.hashes = start, {}

    async def cursor(self) -> int:
        return self.block

    async def advance(self, block: int, hashes: dict[int, str]) -> None:
        self.block = block
        self.hashes.update(hashes)

    async def block_hash(self, number: int) -> str | None:
        return self.hashes.get(number)

    async def rewind(self, block: int, since: float) -> list:
        return []


async def test_an_rpc_behind_the_head_cannot_make_the_log_follower_skip_an_event():
    from node.chain.follow import LogFollower

    view = LaggingView(head=10, known=8, event_block=10)
    cursor, seen = MemoryCursor(start=8), []

    async def on_logs(logs) -> None:
        seen.extend(logs)

    async def addresses() -> list[str]:
        return ["0x" + "11" * 20]

    async def no_reorg(reverted) -> None:
        pass

    follower = LogFollower(view, cursor, addresses=addresses, on_logs=on_logs, on_reorg=no_reorg, trail=0)
    supervisor = Supervisor(on_fatal=lambda name: None)
    supervisor.loop("follower", follower.round, 0.05, follower.wake)
    deadline = time.monotonic() + 5
    while cursor.block < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(supervisor.close(), 5)
    assert cursor.block == 10
    assert [entry["blockNumber"] for entry in seen] == [10]  # scanned only once the RPC had the block


async def test_an_rpc_behind_the_head_cannot_make_the_coordinator_listener_skip_an_event():
    from types import SimpleNamespace

    from node.chain.listener import CANCELLED, Listener

    view = LaggingView(head=10, known=8, event_block=10, topic=bytes.fromhex(CANCELLED[2:]))
    cursor, cancelled = MemoryCursor(start=8), []

    async def on_cancelled(ids) -> None:
        cancelled.extend(ids)

    async def nothing(*args) -> None:
        pass

    listener = Listener(view, SimpleNamespace(address="0x" + "11" * 20), None, cursor, start_block=0, trail=0,
                        batch_blocks=100, reader_batch=10, on_subscriptions=nothing,
                        on_cancelled=on_cancelled, on_reorg=nothing)
    supervisor = Supervisor(on_fatal=lambda name: None)
    supervisor.loop("listener", listener.round, 0.05, listener.wake)
    deadline = time.monotonic() + 5
    while cursor.block < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(supervisor.close(), 5)
    assert cursor.block == 10 and cancelled == [7]  # the cancellation in block 10 was seen
