#!/usr/bin/env python3
"""Benchmark the gateway's SDK path and kill switch on a real node:

- decisions: one `@protect`ed call of the published SDK costs a signed /gate then a signed
  /execute (with the execution id /gate minted); pairs per second at each concurrency;
- kill: pause/kill a workflow while N WebSocket clients listen, and one more client never reads;
  time from the kill request to each listening client receiving the state change.

    .venv/bin/python scripts/bench_gateway.py [--calls 1000] [--concurrency 1,8,32] [--clients 20] [--kills 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import NodeProcess  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def signed(key: dict, body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    message = f"{ts}:{key['api_key']}:{hashlib.sha256(body).hexdigest()}".encode()
    return {"X-API-Key": key["api_key"], "X-Signature-Timestamp": ts, "Content-Type": "application/json",
            "X-Signature": hmac.new(key["secret_key"].encode(), message, hashlib.sha256).hexdigest()}


async def bench(args: argparse.Namespace) -> None:
    node = NodeProcess(Path(tempfile.mkdtemp(prefix="bench-gw-")), [], {"log": {"level": "WARNING"}})
    node.start()
    base = f"http://127.0.0.1:{node.port}"
    try:
        async with aiohttp.ClientSession() as http:
            email = f"{uuid.uuid4().hex[:8]}@example.com"
            reg = await (await http.post(f"{base}/api/v1/auth/register", json={
                "email": email, "password": "correct horse", "name": "B", "org_name": "Bench"})).json()
            login = await (await http.post(f"{base}/api/v1/auth/login", json={
                "email": email, "password": "correct horse"})).json()
            session = {"Authorization": f"Bearer {login['token']}"}
            org = f"{base}/api/v1/orgs/{reg['org_id']}"
            await http.post(f"{org}/workflows", json={"id": "bench", "name": "bench"}, headers=session)
            key = await (await http.post(f"{org}/api-keys", json={"name": "k", "workflow_id": "bench"},
                                         headers=session)).json()

            async def protected_call() -> None:
                body = json.dumps({"estimated_tokens": 1, "operation_id": uuid.uuid4().hex}).encode()
                async with http.post(f"{base}/api/v1/gate", data=body, headers=signed(key, body)) as resp:
                    execution_id = (await resp.json())["reservation_id"]
                body = json.dumps({"execution_id": execution_id, "tool": "work"}).encode()
                async with http.post(f"{base}/api/v1/execute", data=body, headers=signed(key, body)) as resp:
                    assert resp.status == 200, await resp.text()

            for concurrency in args.concurrency:
                sem = asyncio.Semaphore(concurrency)

                async def one() -> None:
                    async with sem:
                        await protected_call()

                start = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(args.calls)))
                took = time.perf_counter() - start
                print(f"decisions concurrency={concurrency}: {args.calls / took:.0f} protected calls/s "
                      f"(gate+execute), {args.calls} in {took:.2f}s")

            stuck = socket.create_connection(("127.0.0.1", node.port))
            stuck.sendall(f"GET /ws/control/{reg['org_id']} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {'A' * 22}==\r\nSec-WebSocket-Version: 13\r\n"
                          f"X-API-Key: {key['api_key']}\r\n\r\n".encode())  # and never reads
            clients = [await http.ws_connect(f"{base.replace('http', 'ws')}/ws/control/{reg['org_id']}",
                                             headers={"X-API-Key": key["api_key"]}) for _ in range(args.clients)]
            for ws in clients:
                await ws.receive_json()
            latencies: list[float] = []
            for i in range(args.kills):
                wid = f"k{i}"
                await http.post(f"{org}/workflows", json={"id": wid, "name": wid}, headers=session)
                for ws in clients:
                    await ws.receive_json()  # its creation
                sent = time.perf_counter()
                await http.post(f"{org}/workflows/{wid}/kill", headers=session)
                for ws in clients:
                    msg = await ws.receive_json(timeout=10)
                    assert msg["state"] == "Killed"
                    latencies.append(time.perf_counter() - sent)
            print(f"kill -> {args.clients} clients (+1 that never reads), {args.kills} kills: "
                  f"p50 {pct(latencies, 50) * 1000:.1f} ms, p99 {pct(latencies, 99) * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms")
            stuck.close()
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8, 32])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--kills", type=int, default=20)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
