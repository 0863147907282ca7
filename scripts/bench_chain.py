#!/usr/bin/env python3
"""Benchmark the chain subsystem on a local anvil (automine) with the echo container.

1. Event-to-delivery latency, polling and head subscription side by side (one node each, the
   node's default `poll_interval`/`processor_tick` of 0.5 s, 0 confirmations):
   - R one-shot requests, one at a time, a random 0-0.5 s apart (so the requests do not fall
     in step with the node's polls): from the request's receipt (asked for every millisecond) to
     the consumer holding the delivery;
   - B requests mined in one block: from the block to each delivery; all must be delivered, and
     the node's log must hold no nonce error.
2. The node's own RPC round trips per one-shot delivery, by method, counted by a proxy between the
   node and anvil (a separate short run per mode, so the proxy does not weigh on the latencies).
3. Failover (`--failover`): the node on two RPCs, the first behind a proxy that is killed half way
   through a load of one-shot requests; every request must still be delivered.
4. Snapshot sync (`--subscriptions N`): N recurring subscriptions (active only in a day) over many
   blocks; how fast a node started from block 0 syncs, from its own progress log.

    .venv/bin/python scripts/bench_chain.py [--requests 30] [--burst 100] [--failover] [--subscriptions 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eth_account import Account  # noqa: E402
from web3.exceptions import TransactionNotFound  # noqa: E402

from tests.chain_helpers import KEYS, Anvil, RpcProxy, chain_config, deploy  # noqa: E402
from tests.helpers import NodeProcess, container_entry  # noqa: E402

MODES = {"polling": {"head_subscription": False}, "heads": {"head_subscription": True}}
DEFAULTS = {"poll_interval": 0.5, "processor_tick": 0.5}  # the node's defaults (chain_config's are faster)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):6.1f} ms  p99 {pct(values, 99):6.1f} ms  max {max(values):6.1f} ms"


class Bench:
    def __init__(self, anvil: Anvil, workdir: Path) -> None:
        self.anvil = anvil
        self.dep = deploy(anvil.url)
        self.workdir = workdir
        self.runs = 0

    def node(self, rpc: str | list, key: str, **chain) -> NodeProcess:
        self.runs += 1
        config = chain_config(self.anvil.url, self.dep, key, start_block=self.dep.w3.eth.block_number,
                              **(DEFAULTS | chain))
        config["rpc_url"] = rpc
        proc = NodeProcess(self.workdir / f"run{self.runs}", [container_entry("echo", "echo")],
                           {"log": {"level": "INFO"}, "chain": config})
        proc.start()
        deadline = time.monotonic() + 30
        while "chain.synced" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    def one_shot(self, label: str) -> float:
        dep, w3 = self.dep, self.dep.w3
        account = Account.from_key(KEYS[0])
        tx = dep.consumer.functions.requestCompute("echo", label.encode(), 1).build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending"),
             "gas": 400_000})
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        while True:  # the receipt, asked for every millisecond (web3's own wait polls every 100 ms)
            try:
                receipt = w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                time.sleep(0.001)
        t_event = time.perf_counter()
        sub_id = dep.created_id(receipt)
        while dep.consumer.functions.deliveryCount(sub_id).call() < 1:
            time.sleep(0.002)
            if time.perf_counter() - t_event > 30:
                raise AssertionError(f"request {label}: no delivery in 30 s")
        return (time.perf_counter() - t_event) * 1000

    def burst(self, count: int) -> tuple[list[float], int]:
        """`count` requests mined in one block: ms from the block to each delivery; deliveries made."""
        dep, w3 = self.dep, self.dep.w3
        account = Account.from_key(KEYS[0])
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        before = dep.consumer.functions.deliveriesLength().call()
        w3.provider.make_request("evm_setAutomine", [False])
        try:
            for i in range(count):
                tx = dep.consumer.functions.requestCompute("echo", f"burst {i}".encode(), 1).build_transaction(
                    {"from": account.address, "nonce": nonce + i, "gas": 400_000})
                w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
            w3.provider.make_request("evm_mine", [])
            t_block = time.perf_counter()
        finally:
            w3.provider.make_request("evm_setAutomine", [True])
        seen: list[float] = []
        while len(seen) < count and time.perf_counter() - t_block < 60:
            now = dep.consumer.functions.deliveriesLength().call() - before
            seen += [(time.perf_counter() - t_block) * 1000] * (now - len(seen))
            time.sleep(0.005)
        return seen, len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30, help="one-shot requests per mode")
    parser.add_argument("--burst", type=int, default=100, help="requests in one block per mode")
    parser.add_argument("--count-requests", type=int, default=10, help="one-shot requests of the RPC count runs")
    parser.add_argument("--modes", default="polling,heads", help="which of polling,heads to run")
    parser.add_argument("--failover", action="store_true", help="also the failover run (two RPCs)")
    parser.add_argument("--subscriptions", type=int, default=0, help="snapshot sync of N subscriptions (0: skip)")
    parser.add_argument("--per-tx", type=int, default=100)
    parser.add_argument("--empty-blocks", type=int, default=5_000)
    args = parser.parse_args()

    anvil = Anvil(block_time=None).start()  # automine: one block per transaction
    bench = Bench(anvil, Path(tempfile.mkdtemp(prefix="bench-chain-")))
    nodes: list[NodeProcess] = []
    try:
        print(f"event-to-delivery, echo container, anvil automine, 0 confirmations, "
              f"poll_interval/processor_tick {DEFAULTS['poll_interval']} s")
        results = {}
        modes = {m: MODES[m] for m in args.modes.split(",")}
        for mode, settings in modes.items():
            node = bench.node(anvil.url, KEYS[1], **settings)
            nodes.append(node)
            for i in range(3):  # warm-up: first container call, first transaction
                bench.one_shot(f"warm {i}")
            one = []
            for i in range(args.requests):
                time.sleep(random.uniform(0, DEFAULTS["poll_interval"]))  # no lock-step with the node's polls
                one.append(bench.one_shot(f"{mode} {i}"))
            burst, done = bench.burst(args.burst) if args.burst else ([0.0], 0)
            node.stop()
            nonce_errors = len(re.findall(r"chain\.send_failed|nonce too", node.log(), re.IGNORECASE))
            results[mode] = (one, burst, done, nonce_errors)
        for mode, (one, burst, done, nonce_errors) in results.items():
            print(f"  {mode:8} one-shot x{len(one)}: {summary(one)}")
            if args.burst:
                print(f"  {'':8} {args.burst} in one block: {summary(burst)}  delivered {done}/{args.burst},"
                      f" send/nonce errors in log: {nonce_errors}")

        if args.count_requests:
            print(f"\nthe node's RPC round trips per one-shot delivery ({args.count_requests} requests, counted by a"
                  " proxy; bench's own calls excluded)")
        for mode, settings in (modes if args.count_requests else {}).items():
            proxy = RpcProxy(anvil.url).start()
            node = bench.node(proxy.url, KEYS[2], **settings)
            nodes.append(node)
            bench.one_shot("warm")
            proxy.calls.clear()
            started = time.perf_counter()
            for i in range(args.count_requests):
                bench.one_shot(f"count {i}")
            elapsed = time.perf_counter() - started
            calls = dict(proxy.calls)
            node.stop()
            proxy.stop()
            total = sum(calls.values())
            per = ", ".join(f"{m} {n / args.count_requests:.1f}" for m, n in sorted(calls.items(), key=lambda x: -x[1]))
            print(f"  {mode:8} {total / args.count_requests:.1f} per delivery over {elapsed:.1f} s: {per}")

        if args.failover:
            failover(bench, args.requests, nodes)
        if args.subscriptions:
            snapshot(bench, args, nodes)
    finally:
        for node in nodes:
            node.stop()
            node.remove_containers()
        anvil.stop()


def failover(bench: Bench, requests: int, nodes: list[NodeProcess]) -> None:
    """Two RPCs (both in front of the one anvil); the first is killed half way through the load."""
    first, second = RpcProxy(bench.anvil.url).start(), RpcProxy(bench.anvil.url).start()
    node = bench.node([first.url, second.url], KEYS[3], head_subscription=True)
    nodes.append(node)
    latencies, killed_at = [], requests // 2
    for i in range(requests):
        if i == killed_at:
            first.set_mode("down")
        latencies.append(bench.one_shot(f"failover {i}"))
    node.stop()
    after = latencies[killed_at:]
    print(f"\nfailover: 2 RPCs, the first down after request {killed_at}: delivered {len(latencies)}/{requests}")
    print(f"  before: {summary(latencies[:killed_at])}")
    print(f"  after:  {summary(after)}  (second RPC calls: {sum(second.calls.values())})")
    first.stop()
    second.stop()


def snapshot(bench: Bench, args, nodes: list[NodeProcess]) -> None:
    dep = bench.dep
    mined = 0
    while mined < args.empty_blocks:
        step = min(500, args.empty_blocks - mined)
        dep.w3.provider.make_request("anvil_mine", [hex(step)])
        mined += step
    made = 0
    while made < args.subscriptions:
        count = min(args.per_tx, args.subscriptions - made)
        dep.send(dep.consumer.functions.subscribeMany("echo", count, 1, 86_400))
        made += count
    node = NodeProcess(bench.workdir / "sync", [container_entry("echo", "echo")], {
        "log": {"level": "INFO"},
        "chain": chain_config(bench.anvil.url, dep, KEYS[4], snapshot_batch_blocks=5000, reader_batch=1000)})
    nodes.append(node)
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


if __name__ == "__main__":
    main()
