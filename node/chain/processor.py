"""Runs subscriptions: for each active subscription this node serves, at each interval, fetch
the inputs, run the container chain through the node's orchestrator, deliver with
`deliverCompute`.

Each (subscription, interval) is claimed in SQLite before anything runs, so this node delivers
it at most once, across restarts. Skipped: intervals already fulfilled to `redundancy` or
answered by this node on chain. A container failure is logged and not delivered; it is retried
after a backoff, up to `max_attempts` times per interval. Interval arithmetic uses the chain's
block time, not the local clock.

A paid subscription's interval is checked before its container runs (node/chain/payments.py: can
its consumer pay now?) and simulated before it is sent; one that cannot pay is skipped for that
interval (logged, counted), never sent to revert. Later intervals are checked again, since a
consumer may fund its wallet in between (the Infernet node stops tracking it instead).

The loop is the Supervisor's (`chain-processor`): `round()` is one pass over the tracked
subscriptions, run every `processor_tick` seconds or at once when `wake` is set. Each interval it
starts runs as a one-shot task of the `chain-intervals` group, drained at stop.

With a `HeadFeed` it wakes on each new head (and at once when the listener hands it a new
subscription), reads the chain's time from the header, and asks the Coordinator whether the
interval is settled and the consumer for its inputs in one go, so a request's interval reaches
the container within a few round trips of its block.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3 import AsyncWeb3

from node.chain.codec import SETTLED_ERRORS, Subscription, serialize_output
from node.chain.heads import HeadFeed
from node.chain.payments import PAYMENT_ERRORS, PaymentChecker, Skip, requires_proof
from node.chain.store import ChainStore
from node.chain.wallet import FULFILLED_ELSEWHERE, TxResult, Wallet
from node.jobs.models import JobLocation
from node.jobs.orchestrator import JobRejected, Orchestrator
from node.lifecycle import TaskSet
from node.logs import get_logger

log = get_logger(__name__)


@dataclass
class Tracked:
    sub: Subscription
    containers: list[str]
    busy: set[int] = field(default_factory=set)
    done: int = 0  # highest interval finished (delivered, skipped or given up) by this node


class Processor:
    def __init__(self, w3: AsyncWeb3, coordinator, store: ChainStore, wallet: Wallet, orchestrator: Orchestrator,
                 *, consumer_abi: list, max_attempts: int, retry_backoff: float,
                 payments: PaymentChecker | None = None, node_wallet: str | None = None,
                 output_encoding: str = "json", skips: Counter | None = None, concurrency: int = 32,
                 heads: HeadFeed | None = None, tasks: TaskSet | None = None) -> None:
        self._w3 = w3
        self._coordinator = coordinator
        self._store = store
        self._wallet = wallet
        self._orchestrator = orchestrator
        self._consumer_abi = consumer_abi
        self._max_attempts = max_attempts
        self._backoff = retry_backoff
        self._payments = payments
        self._node_wallet = node_wallet or wallet.address  # the Wallet payments go to (deliverCompute's nodeWallet)
        self._encoding = output_encoding
        self.skips = skips if skips is not None else Counter()
        self._subs: dict[int, Tracked] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks = tasks if tasks is not None else TaskSet("chain-intervals")  # each interval's run
        self.wake = asyncio.Event()  # a new head or subscription: the Supervisor runs the next round at once
        self.delivered = 0
        self._heads = heads
        if heads is not None:
            heads.notify(self.wake)

    # -- tracking --------------------------------------------------------------------------

    def track(self, sub: Subscription, containers: list[str]) -> None:
        self._subs[sub.id] = Tracked(sub, containers)
        self.wake.set()

    def reopen(self, sub_id: int) -> None:
        """After a reorg: this subscription's finished intervals are checked again."""
        tracked = self._subs.get(sub_id)
        if tracked is not None:
            tracked.done = 0
        self.wake.set()

    def untrack(self, sub_id: int) -> None:
        self._subs.pop(sub_id, None)

    def tracked(self) -> int:
        return len(self._subs)

    def pending(self) -> int:
        return sum(len(t.busy) for t in self._subs.values())

    # -- one round (the loop is the Supervisor's) ----------------------------------------------

    async def round(self) -> None:
        """Start the run of each tracked subscription's current interval not finished or under way."""
        if not self._subs:
            return
        head = self._heads.head if self._heads is not None else None
        now = head.timestamp if head is not None else int((await self._w3.eth.get_block("latest"))["timestamp"])
        for tracked in list(self._subs.values()):
            sub = tracked.sub
            if sub.cancelled:
                self.untrack(sub.id)
                continue
            if now < sub.active_at:
                continue
            interval = sub.interval_at(now)
            if interval > sub.frequency:
                self.untrack(sub.id)
                await self._store.set_subscription_status(sub.id, "completed")
                continue
            if interval in tracked.busy or interval <= tracked.done:
                continue
            tracked.busy.add(interval)
            self._tasks.spawn(f"{sub.id}#{interval}", self._process(tracked, interval, now))

    async def _process(self, tracked: Tracked, interval: int, timestamp: int) -> None:
        sub = tracked.sub
        try:
            async with self._slots:
                attempt = await self._store.claim(sub.id, interval, self._max_attempts)
                if attempt is None:
                    return
                if await self._run(tracked, interval, timestamp, attempt) or attempt >= self._max_attempts:
                    tracked.done = max(tracked.done, interval)
                    if interval >= sub.frequency:
                        self.untrack(sub.id)
                        await self._store.set_subscription_status(sub.id, "completed")
        except Exception as exc:  # noqa: BLE001 - never lose the interval silently
            log.exception("chain.process_crashed", subscription=sub.id, interval=interval)
            await self._store.mark(sub.id, interval, "failed", error=f"internal error: {exc}", retry_in=self._backoff)
        finally:
            tracked.busy.discard(interval)

    async def _settled_on_chain(self, sub: Subscription, interval: int) -> bool:
        key = keccak(abi_encode(["uint32", "uint32"], [sub.id, interval]))
        node_key = keccak(abi_encode(["uint32", "uint32", "address"], [sub.id, interval, self._wallet.address]))
        count, responded = await asyncio.gather(self._coordinator.functions.redundancyCount(key).call(),
                                                self._coordinator.functions.nodeResponded(node_key).call())
        return count >= sub.redundancy or responded

    async def _inputs(self, sub: Subscription, interval: int, timestamp: int) -> bytes:
        consumer = self._w3.eth.contract(address=sub.owner, abi=self._consumer_abi)
        try:
            return bytes(await consumer.functions.getContainerInputs(sub.id, interval, timestamp,
                                                                     self._wallet.address).call())
        except Exception as exc:  # noqa: BLE001 - a consumer without inputs gets none
            log.debug("chain.no_inputs", subscription=sub.id, error=str(exc)[:200])
            return b""

    async def _run(self, tracked: Tracked, interval: int, timestamp: int, attempt: int) -> bool:
        """Work one interval; True when it is finished for this node (delivered or skipped)."""
        sub = tracked.sub
        # Both read-only calls at once (a view call has no effect; the inputs of a settled
        # interval are simply not used).
        settled, inputs = await asyncio.gather(self._settled_on_chain(sub, interval),
                                               self._inputs(sub, interval, timestamp))
        if settled:
            await self._store.mark(sub.id, interval, "skipped", error="already fulfilled on chain")
            return True
        if sub.payment_amount > 0:
            skip = await self._payments.can_pay(sub) if self._payments is not None else \
                Skip("no_payment_wallet", "paid subscription, and this node has no payment wallet")
            if skip is not None:
                return await self._skip(sub, interval, skip)
        try:
            job = await self._orchestrator.run(tracked.containers, inputs.hex(), client="chain",
                                               source="chain", source_location=JobLocation.ONCHAIN,
                                               destination=JobLocation.ONCHAIN, requires_proof=requires_proof(sub))
        except JobRejected as exc:
            await self._store.mark(sub.id, interval, "failed", error=exc.message, retry_in=self._backoff * attempt)
            log.warning("chain.job_refused", subscription=sub.id, interval=interval, error=exc.message)
            return False
        if job.status != "success" or job.result is None:
            error = (job.result or {}).get("error", "no result")
            await self._store.mark(sub.id, interval, "failed", job_id=job.id, error=error,
                                   retry_in=self._backoff * attempt)
            log.warning("chain.container_failed", subscription=sub.id, interval=interval, job_id=job.id,
                        attempt=attempt, max_attempts=self._max_attempts, error=error)
            return False
        tx_input, tx_output, proof = serialize_output(job.result["output"], self._encoding)
        await self._store.mark(sub.id, interval, "sending", job_id=job.id)
        fn = self._coordinator.functions.deliverCompute(sub.id, interval, tx_input, tx_output, proof,
                                                        self._node_wallet)
        started = time.perf_counter()
        async def still_wanted() -> bool:  # asked before the wallet bids more for a pending delivery
            return not await self._settled_on_chain(sub, interval)

        result = await self._wallet.transact(fn, f"deliverCompute({sub.id},{interval})", still_wanted)
        if result.ok:
            self.delivered += 1
            await self._store.mark(sub.id, interval, "delivered", tx_hash=result.tx_hash)
            log.info("chain.delivered", subscription=sub.id, interval=interval, job_id=job.id, tx=result.tx_hash,
                     ms=round((time.perf_counter() - started) * 1000, 1))
            return True
        if result.tx_hash is None and result.error in PAYMENT_ERRORS:  # refused by the simulation: nothing sent
            return await self._skip(sub, interval, Skip("consumer_cannot_pay" if result.error != "InvalidWallet"
                                                        else "invalid_wallet",
                                                        f"deliverCompute would revert with {result.error}"),
                                    job_id=job.id)
        if result.error == FULFILLED_ELSEWHERE or (result.error == "reverted"
                                                   and await self._settled_on_chain(sub, interval)):
            # Another node delivered while ours waited: recorded as such, not retried.
            await self._store.mark(sub.id, interval, "skipped", tx_hash=result.tx_hash,
                                   error="fulfilled by another node")
            log.info("chain.delivery_skipped", subscription=sub.id, interval=interval, reason=FULFILLED_ELSEWHERE)
            return True
        if result.error in SETTLED_ERRORS:
            await self._store.mark(sub.id, interval, "skipped", tx_hash=result.tx_hash, error=result.error)
            log.info("chain.delivery_skipped", subscription=sub.id, interval=interval, reason=result.error)
            return True
        await self._store.mark(sub.id, interval, "failed", tx_hash=result.tx_hash, error=result.error,
                               retry_in=self._backoff * attempt)
        log.error("chain.delivery_failed", subscription=sub.id, interval=interval, tx=result.tx_hash,
                  reason=result.error)
        return False

    async def resumed(self, sub_id: int, interval: int, result: TxResult) -> None:
        """The outcome of a delivery a previous process sent and this one watched to the end."""
        if result.ok:
            self.delivered += 1
            await self._store.mark(sub_id, interval, "delivered", tx_hash=result.tx_hash)
            log.info("chain.delivered", subscription=sub_id, interval=interval, tx=result.tx_hash, resumed=True)
        elif result.error in (FULFILLED_ELSEWHERE, "reverted"):
            await self._store.mark(sub_id, interval, "skipped", tx_hash=result.tx_hash,
                                   error="fulfilled by another node" if result.error == FULFILLED_ELSEWHERE
                                   else "reverted")
        else:
            await self._store.mark(sub_id, interval, "failed", tx_hash=result.tx_hash, error=result.error,
                                   retry_in=self._backoff)
        self.wake.set()

    async def _skip(self, sub: Subscription, interval: int, skip: Skip, job_id: str | None = None) -> bool:
        """This interval is not served (payment): recorded, logged, counted; finished for this node."""
        self.skips[skip.kind] += 1
        await self._store.mark(sub.id, interval, "skipped", job_id=job_id, error=skip.reason)
        log.info("chain.delivery_skipped", subscription=sub.id, interval=interval, kind=skip.kind, reason=skip.reason)
        return True
