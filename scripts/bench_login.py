#!/usr/bin/env python3
"""Benchmark: what failed logins cost everyone else.

Starts an in-process node (gateway only, no containers) from the code at --repo (default: this
checkout, so a checkout of another commit can be compared in the same run), then:

1. /health latency from another thread: idle, and while N concurrent wrong-password logins run;
2. median time of a refused login for a known email and for an unknown one.

    .venv/bin/python scripts/bench_login.py [--repo PATH] [--logins 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    asyncio.run(run(args))


def probe(port: int, stop: threading.Event, out: list[float]) -> None:
    import http.client

    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        out.append(time.perf_counter() - started)
        conn.close()
        time.sleep(0.002)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(args) -> None:
    import aiohttp

    from node.app import Node
    from node.config import parse_config
    from node.server.config import ServerConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-login-"))
    server: dict = {"port": 0}
    if "auth_rate_limit" in ServerConfig.model_fields:  # measure the hashing, not the limiter
        server["auth_rate_limit"] = {"num_requests": 0}
    node = Node(parse_config({"server": server, "storage": {"path": str(tmp / "node.db")},
                              "master_key_path": str(tmp / "node.key"), "manage_containers": False,
                              "startup_wait": 0, "cre": {"enabled": False}, "registry": {"enabled": False}}))
    await node.start()
    base = f"http://127.0.0.1:{node.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def login(email: str, password: str) -> tuple[int, float]:
                started = time.perf_counter()
                async with session.post(f"{base}/api/v1/auth/login", json={"email": email, "password": password}) as r:
                    await r.read()
                    return r.status, time.perf_counter() - started

            email = "bench@example.com"
            async with session.post(f"{base}/api/v1/auth/register", json={
                    "email": email, "password": "correct horse", "name": "B", "org_name": "B"}) as r:
                assert r.status == 201, await r.text()
            idle: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=probe, args=(node.port, stop, idle))
            thread.start()
            await asyncio.sleep(0.5)
            stop.set()
            thread.join()
            busy: list[float] = []
            statuses = []
            burst = 0.0
            for _ in range(args.rounds):
                stop = threading.Event()
                thread = threading.Thread(target=probe, args=(node.port, stop, busy))
                thread.start()
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                statuses += await asyncio.gather(*(login(email, f"wrong-{i}") for i in range(args.logins)))
                burst += time.perf_counter() - started
                stop.set()
                thread.join()
            known, unknown = [], []
            for i in range(9):
                known.append((await login(email, "wrong"))[1])
                unknown.append((await login(f"nobody{i}@example.com", "wrong"))[1])
    finally:
        await node.stop()
    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    print(f"repo={args.repo}")
    print(f"/health idle: n={len(idle)} p50={ms(pct(idle, 50))}ms max={ms(max(idle))}ms")
    print(f"/health during {args.logins} concurrent bad logins x{args.rounds}: n={len(busy)} "
          f"p50={ms(pct(busy, 50))}ms p99={ms(pct(busy, 99))}ms max={ms(max(busy))}ms "
          f"({len(busy) / burst:.0f} /health answers per second over {burst:.2f}s of login bursts)")
    print(f"login statuses: {sorted(set(s for s, _ in statuses))}")
    print(f"refused login median: known email {ms(statistics.median(known))}ms, "
          f"unknown email {ms(statistics.median(unknown))}ms")


if __name__ == "__main__":
    main()
