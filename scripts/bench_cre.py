#!/usr/bin/env python3
"""Benchmark signed CRE ingests: strict HMAC mode on, every request with a fresh nonce and a
new idempotency key (so each one writes a nonce row and a record row to SQLite).

    .venv/bin/python scripts/bench_cre.py [--requests 5000] [--concurrency 1,8,32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.cre.client import signed_headers  # noqa: E402
from tests.helpers import NodeProcess  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def bench(args: argparse.Namespace) -> None:
    node = NodeProcess(Path(tempfile.mkdtemp(prefix="bench-cre-")), [], {
        "log": {"level": "WARNING"},
        "cre": {"api_key": KEY, "hmac_secret": SECRET, "enforce_hmac": True},
    })
    node.start()
    url = f"http://127.0.0.1:{node.port}/api/cre/runtime/ingest"
    rows = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int) -> tuple[float, int]:
                body = {"workflow": "runtime-indexer-block", "kind": "block",
                        "idempotencyKey": f"{uuid.uuid4().hex}", "payload": {"blockNumber": i, "tx": i % 7},
                        "source": "bench"}
                data = json.dumps(body).encode()
                start = time.perf_counter()
                async with session.post(url, data=data, headers=signed_headers(body, KEY, SECRET)) as r:
                    await r.read()
                    return (time.perf_counter() - start) * 1000, r.status

            for c in args.concurrency:
                n = max(args.requests, c * 10)
                counter = iter(range(n))
                latencies: list[float] = []
                errors = 0

                async def worker() -> None:
                    nonlocal errors
                    for i in counter:
                        ms, status = await one(i)
                        latencies.append(ms)
                        errors += status != 200

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(c)))
                elapsed = time.perf_counter() - started
                rows.append((c, n, n / elapsed, pct(latencies, 50), pct(latencies, 99), errors))
                print(f"  C={c:<4} {n / elapsed:7.0f} ingests/s", flush=True)
    finally:
        node.stop()
    print("\nsigned ingests (strict HMAC, fresh nonce + new record per request)")
    print(f"{'C':>4} {'N':>6} {'ingests/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for c, n, rate, p50, p99, errors in rows:
        print(f"{c:>4} {n:>6} {rate:>10.0f} {p50:>7.2f} {p99:>7.2f} {errors:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,8,32,128", type=lambda s: [int(x) for x in s.split(",")])
    args = parser.parse_args()
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
