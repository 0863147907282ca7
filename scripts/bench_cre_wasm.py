#!/usr/bin/env python3
"""Benchmark the CRE WASM host: executions per second and per-execution latency of our test
workflow (tests/cre/workflows/price_feed.ts), and how responsive the event loop stays meanwhile.

Two loads, each for --seconds with --concurrency executions in flight:
- http: the HTTP trigger (no capability calls): the cost of one execution (a fresh instance,
  QuickJS evaluating the SDK bundle, the handler);
- cron: the cron trigger: a secret, an HTTP fetch from a local server in node mode, one-node
  consensus (two capability calls through the event loop).

While it runs, a probe task sleeps 10 ms in a loop on the same event loop and records how late
it wakes: the loop's responsiveness under the load.

    .venv/bin/python scripts/bench_cre_wasm.py [--seconds 15] [--workers 2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.cre.wasm.capabilities import Capabilities  # noqa: E402
from node.cre.wasm.host import Limits, new_execution_id  # noqa: E402
from node.cre.wasm.runtime import WasmRuntime, cron_payload, http_payload  # noqa: E402
from node.cre.wasm.toolchain import Toolchain  # noqa: E402
from node.server.egress import EgressPolicy  # noqa: E402
from tests.cre.workflows.harness import PRICE_FEED, PriceServer  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append((time.perf_counter() - started - 0.01) * 1000)


async def load(runtime, loaded, caps, kind: str, seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            if kind == "http":
                index, payload = 1, http_payload(b'{"q":"bench"}')
            else:
                index, payload = 0, cron_payload(datetime.now(timezone.utc))
            started = time.perf_counter()
            outcome = await runtime.run(loaded, index, payload, caps, new_execution_id("bench", kind))
            latencies.append((time.perf_counter() - started) * 1000)
            failures += not outcome.ok

    lags: list[float] = []
    stop = asyncio.Event()
    probing = asyncio.ensure_future(probe(stop, lags))
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stop.set()
    await probing
    return {
        "trigger": kind, "executions": len(latencies), "failed": failures,
        "per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(pct(latencies, 50), 1), "p95": round(pct(latencies, 95), 1),
                       "max": round(max(latencies), 1), "mean": round(statistics.mean(latencies), 1)},
        "loop_lag_ms": {"p50": round(pct(lags, 50), 2), "p99": round(pct(lags, 99), 2),
                        "max": round(max(lags), 2)},
    }


async def main(args: argparse.Namespace) -> None:
    chain = Toolchain()
    chain.require()
    prices = PriceServer(b"123.5")
    policy = EgressPolicy(["127.0.0.1/32"])
    session = policy.session()
    caps = Capabilities(asyncio.get_running_loop(), egress=policy, session=session,
                        secrets={("main", "PRICE_API_KEY"): "bench"})
    runtime = WasmRuntime(chain, workers=args.workers, limits=Limits(timeout=30))
    try:
        loaded = await runtime.load("bench", PRICE_FEED, json.dumps({"priceUrl": prices.url}).encode(), caps)
        await runtime.run(loaded, 1, http_payload(b"{}"), caps, new_execution_id("bench", "warm"))  # warm-up
        idle: list[float] = []
        stop = asyncio.Event()
        idle_probe = asyncio.ensure_future(probe(stop, idle))
        await asyncio.sleep(2)
        stop.set()
        await idle_probe
        results = {"workers": args.workers, "concurrency": args.concurrency,
                   "idle_loop_lag_ms": {"p50": round(pct(idle, 50), 2), "p99": round(pct(idle, 99), 2)},
                   "loads": [await load(runtime, loaded, caps, kind, args.seconds, args.concurrency)
                             for kind in ("http", "cron")]}
    finally:
        runtime.close()
        await session.close()
        prices.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per load (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="executions run at once (threads)")
    parser.add_argument("--concurrency", type=int, default=4, help="executions in flight (default: %(default)s)")
    asyncio.run(main(parser.parse_args()))
