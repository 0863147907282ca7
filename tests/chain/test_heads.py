"""The node follows the chain as it moves: a request is worked and delivered as soon as its block
is seen (head subscription over WebSocket), not at the next poll or processor tick; an RPC without
WebSocket is polled. In-process chain service on anvil mining on demand (automine), with a
stand-in orchestrator."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chain_helpers import KEYS, CountingOrchestrator, chain_service
from tests.helpers import free_port

pytestmark = [pytest.mark.docker]

ANVIL_BLOCK_TIME = None  # automine: the request's block is mined at once


async def delivered_within(dep, sub_id: int, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if dep.consumer.functions.deliveryCount(sub_id).call() >= 1:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    return None


async def request(dep, payload: bytes) -> int:
    receipt = await asyncio.to_thread(dep.send, dep.consumer.functions.requestCompute("echo", payload, 1))
    return dep.created_id(receipt)


async def test_a_request_is_delivered_within_a_second_though_poll_and_tick_are_five_seconds(tmp_path, anvil, dep):
    async with chain_service(tmp_path / "c.db", anvil.url, dep, KEYS[1], CountingOrchestrator(),
                             poll_interval=5.0, processor_tick=5.0) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        assert chain.heads.mode == "subscription"
        for i in range(3):
            sub_id = await request(dep, f"fast {i}".encode())
            took = await delivered_within(dep, sub_id, 4.5)
            assert took is not None and took < 1.0, took


async def test_an_rpc_without_websocket_is_polled_and_still_served(tmp_path, anvil, dep):
    closed = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    async with chain_service(tmp_path / "c.db", anvil.url, dep, KEYS[2], CountingOrchestrator(),
                             ws_url=closed, poll_interval=0.3, processor_tick=0.3) as chain:
        await asyncio.wait_for(chain.listener.synced.wait(), 10)
        assert chain.heads.mode == "polling"
        sub_id = await request(dep, b"polled")
        assert await delivered_within(dep, sub_id, 5) is not None
