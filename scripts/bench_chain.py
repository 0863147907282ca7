#!/usr/bin/env python3
"""Benchmark the chain subsystem on a local anvil.

1. Snapshot sync: create N recurring subscriptions (active only in a day, so nothing runs),
   spread over many blocks, plus empty blocks; start a node from block 0 and report how fast
   it syncs (subscriptions/s, blocks/s) from its own progress log.
2. Event-to-delivery latency: R one-shot requests, one at a time; for each, the time from the
   request's receipt to the consumer holding the delivery. Prints p50/p99.

    .venv/bin/python scripts/bench_chain.py [--subscriptions 10000] [--empty-blocks 20000] [--requests 100]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chain_helpers import KEYS, Anvil, chain_config, deploy  # noqa: E402
from tests.helpers import NodeProcess, container_entry  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def progress(done: int, total: int, started: float, label: str) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    bar = "#" * int(30 * done / total)
    if done != total and done % max(1, total // 10) >= max(1, total // 100) and sys.stdout.isatty() is False:
        return  # not a terminal: print about ten lines, not one per step
    print(f"\r  {label} [{bar:<30}] {done}/{total} ({rate:.0f}/s)", end="" if sys.stdout.isatty() else "\n",
          flush=True)
    if done == total and sys.stdout.isatty():
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--per-tx", type=int, default=100)
    parser.add_argument("--empty-blocks", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()

    anvil = Anvil(block_time=None).start()  # automine: one block per transaction
    workdir = Path(tempfile.mkdtemp(prefix="bench-chain-"))
    node = None
    try:
        dep = deploy(anvil.url)
        started, mined = time.perf_counter(), 0
        while mined < args.empty_blocks:
            step = min(500, args.empty_blocks - mined)
            dep.w3.provider.make_request("anvil_mine", [hex(step)])
            mined += step
            progress(mined, args.empty_blocks, started, "empty blocks")
        print(f"creating {args.subscriptions} subscriptions ({args.per_tx} per transaction) ...")
        started = time.perf_counter()
        made = 0
        while made < args.subscriptions:
            count = min(args.per_tx, args.subscriptions - made)
            dep.send(dep.consumer.functions.subscribeMany("echo", count, 1, 86_400))
            made += count
            progress(made, args.subscriptions, started, "subscriptions")
        head = dep.w3.eth.block_number
        print(f"chain head {head} ({args.empty_blocks} empty blocks added)")

        node = NodeProcess(workdir, [container_entry("echo", "echo")], {
            "log": {"level": "INFO"},
            "chain": chain_config(anvil.url, dep, KEYS[1], snapshot_batch_blocks=5000, reader_batch=1000)})
        t0 = time.perf_counter()
        node.start()
        while "chain.synced" not in node.log():
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        synced = [line for line in node.log().splitlines() if "chain.synced" in line][-1]
        fields = dict(re.findall(r"(\w+)=([^ ]+)", synced))
        print("\nsnapshot sync (node's own measurement, from its chain.synced log line):")
        print(f"  blocks {fields['blocks']}, subscriptions {fields['subscriptions']}, {fields['s']} s"
              f" -> {fields['blocks_per_s']} blocks/s, {fields['subs_per_s']} subscriptions/s"
              f"  (node start to synced, containers included: {wall:.1f} s)")

        print(f"\nevent-to-delivery latency over {args.requests} one-shot requests ...")
        latencies = []
        started = time.perf_counter()
        for i in range(args.requests):
            receipt = dep.send(dep.consumer.functions.requestCompute("echo", f"req {i}".encode(), 1))
            t_event = time.perf_counter()
            sub_id = dep.created_id(receipt)
            while dep.consumer.functions.deliveryCount(sub_id).call() < 1:
                time.sleep(0.005)
            latencies.append((time.perf_counter() - t_event) * 1000)
            progress(i + 1, args.requests, started, "requests")
        print(f"  p50 {pct(latencies, 50):.0f} ms, p99 {pct(latencies, 99):.0f} ms, max {max(latencies):.0f} ms"
              f"  (poll_interval 0.2 s, 0 confirmations, anvil automine)")
    finally:
        if node:
            node.stop()
            node.remove_containers()
        anvil.stop()


if __name__ == "__main__":
    main()
