"""Wires the chain subsystem: web3 connection, contracts, wallet, listener, processor, and the
delegated-subscription door of `POST /api/jobs`.

The contracts come from `registry_address` as the Infernet node finds them (the Registry names
the Coordinator, Inbox, Reader and WalletFactory), or from `coordinator_address`/`reader_address`
directly (no payments then). A configured payment wallet is checked against the WalletFactory at
start: a node that would deliver paid work into a wallet the Coordinator refuses does not start.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from node.chain import codec
from node.chain.codec import Subscription
from node.chain.config import ChainConfig
from node.chain.heads import HeadFeed, ws_twin
from node.chain.listener import CREATED, Listener
from node.chain.payments import REGISTRY_ABI, PaymentChecker, PaymentPolicy, requires_proof
from node.chain.processor import Processor
from node.chain.rpc import Endpoint, RpcPool, redact
from node.chain.store import ChainStore
from node.chain.wallet import TxResult, Wallet
from node.containers.config import ContainerConfig
from node.errors import StartupError
from node.jobs.models import DelegatedSubscriptionRequest, JobLocation
from node.jobs.orchestrator import JobRejected, Orchestrator
from node.lifecycle import Supervised, Supervisor
from node.logs import get_logger
from node.server.http import ApiError, int_param, json_response
from node.storage import Database

log = get_logger(__name__)


class ChainService:
    def __init__(self, config: ChainConfig, containers: list[ContainerConfig], db: Database,
                 orchestrator: Orchestrator, supervisor: Supervisor) -> None:
        assert config.endpoints() and (config.registry_address or (config.coordinator_address and config.reader_address))
        assert config.wallet.private_key is not None
        self.config = config
        endpoints = config.endpoints()
        self.rpcs = RpcPool([Endpoint(e.url, e.weight, e.send_only) for e in endpoints],
                            max_lag_blocks=config.rpc_max_lag_blocks, timeout=config.rpc_timeout)
        self.w3 = AsyncWeb3(self.rpcs)
        ws_urls = [e.ws_url or ws_twin(e.url) for e in endpoints if not e.send_only] if config.head_subscription \
            else []
        self.heads = HeadFeed(self.w3, [u for u in ws_urls if u], config.poll_interval)
        self.coordinator: Any = None  # contracts: resolved at start (from the Registry when configured)
        self.reader: Any = None
        self.addresses: dict[str, ChecksumAddress] = {}
        self.store = ChainStore(db, config.coordinator_address)
        self._orchestrator = orchestrator
        self._private_key = config.wallet.private_key.get_secret_value()
        self.address = Account.from_key(self._private_key).address
        self.payment_address = to_checksum_address(config.wallet.payment_address) \
            if config.wallet.payment_address else None
        self.set_containers(containers)
        self.payments: PaymentChecker | None = None
        self.skips: Counter = Counter()  # subscriptions and intervals not served, by kind (metric node_chain_skipped)
        self.wallet: Wallet | None = None
        self.processor: Processor | None = None
        self.listener: Listener | None = None
        self._supervisor = supervisor
        self._tasks: list[Supervised] = []
        # One-shot work, drained at stop: each subscription interval's run, delegated deliveries,
        # and watches of the transactions a previous process left in flight.
        self._intervals = supervisor.group("chain-intervals")
        self._delegated_tasks = supervisor.group("chain-delegated")
        self._tx_watches = supervisor.group("chain-tx-watch")
        self.chain_id: int | None = None

    # -- which subscriptions this node serves -------------------------------------------------

    def set_containers(self, containers: list[ContainerConfig]) -> None:
        """The containers (and their allow-lists and prices) served from now on; a config reload
        calls it again. Configured pipelines naming a removed container are no longer served."""
        self._containers = {c.id: c for c in containers}
        pipelines = [[c.id] for c in containers] + [list(p) for p in self.config.pipelines
                                                    if all(cid in self._containers for cid in p)]
        self._by_hash = {codec.container_id(p): p for p in pipelines}
        self.policy = PaymentPolicy({c.id: c.accepted_payments for c in containers},
                                    {c.id: c.generates_proofs for c in containers}, self.payment_address)

    def serves(self, sub: Subscription, delegated: bool = False) -> tuple[list[str] | None, str]:
        pipeline = self._by_hash.get(sub.container_id)
        if pipeline is None:
            return None, "container chain not served by this node"
        if not self._containers[pipeline[0]].external:
            return None, f"container {pipeline[0]} is not external"
        owner = sub.owner.lower()
        for cid in pipeline:
            container = self._containers[cid]
            allowed = container.allowed_delegate_addresses if delegated else container.allowed_addresses
            if allowed and owner not in allowed:
                return None, f"owner {sub.owner} not allowed for container {cid}"
        return pipeline, "ok"

    async def _on_subscriptions(self, subs: list[Subscription], block: int) -> None:
        assert self.processor is not None
        keep: list[tuple[Subscription, list[str], str]] = []
        for sub in subs:
            if sub.id <= self.config.starting_sub_id:
                continue
            pipeline, reason = self.serves(sub)
            if pipeline is None:
                log.debug("chain.subscription_ignored", subscription=sub.id, reason=reason)
                continue
            skip = self.policy.check(sub, pipeline)
            if skip is not None:  # ours to run, but not for these terms
                if not sub.cancelled:
                    self.skips[skip.kind] += 1
                    log.info("chain.subscription_skipped", subscription=sub.id, kind=skip.kind, reason=skip.reason,
                             payment_token=sub.payment_token, payment_amount=sub.payment_amount)
                continue
            status = "cancelled" if sub.cancelled else "active"
            keep.append((sub, pipeline, status))
        if keep:
            await self.store.save_subscriptions(keep, block)
            for sub, pipeline, status in keep:
                if status == "active":
                    self.processor.track(sub, pipeline)

    async def _on_cancelled(self, ids: list[int]) -> None:
        assert self.processor is not None
        for sub_id in ids:
            self.processor.untrack(sub_id)
            await self.store.set_subscription_status(sub_id, "cancelled")
            log.info("chain.subscription_cancelled", subscription=sub_id)

    async def _on_reorg(self, reopened: list[int]) -> None:
        assert self.processor is not None and self.wallet is not None
        self.wallet.resync()
        active = {sub.id: (sub, pipeline) for sub, pipeline in await self.store.active_subscriptions()}
        for sub_id in reopened:
            if sub_id in active:
                self.processor.track(*active[sub_id])
                self.processor.reopen(sub_id)

    # -- lifecycle --------------------------------------------------------------------------------

    async def _resolve_contracts(self) -> None:
        """Coordinator, Reader (and Inbox, WalletFactory) from the Registry, or as configured."""
        c = self.config
        found: dict[str, ChecksumAddress] = {}
        if c.registry_address:
            registry = self.w3.eth.contract(address=to_checksum_address(c.registry_address), abi=REGISTRY_ABI)
            if not await self.w3.eth.get_code(registry.address):
                raise StartupError(f"chain.registry_address {registry.address}: no contract there on this chain")
            for name in ("COORDINATOR", "INBOX", "READER", "FEE", "WALLET_FACTORY"):
                found[name.lower()] = to_checksum_address(await getattr(registry.functions, name)().call())
            found["registry"] = registry.address
            for key, given in (("coordinator", c.coordinator_address), ("reader", c.reader_address)):
                if given and to_checksum_address(given) != found[key]:
                    raise StartupError(f"chain.{key}_address {given} is not the {key} of the Registry "
                                       f"{registry.address} ({found[key]}): set one or the other")
        else:
            assert c.coordinator_address and c.reader_address, "ChainConfig requires both without a registry_address"
            found = {"coordinator": to_checksum_address(c.coordinator_address),
                     "reader": to_checksum_address(c.reader_address)}
        self.addresses = found
        self.coordinator = self.w3.eth.contract(address=found["coordinator"], abi=codec.abi("Coordinator"))
        self.reader = self.w3.eth.contract(address=found["reader"], abi=codec.abi("Reader"))

    async def _check_payment_wallet(self) -> None:
        if self.payment_address is None:
            if any(c.accepted_payments for c in self._containers.values()):
                log.warning("chain.no_payment_wallet", hint="containers name accepted_payments but "
                            "chain.wallet.payment_address is unset: paid subscriptions are skipped")
            return
        self.payments = PaymentChecker(self.w3, self.addresses["wallet_factory"], self.address, self.payment_address)
        if not await self.payments.is_valid_wallet(self.payment_address):
            raise StartupError(
                f"chain.wallet.payment_address {self.payment_address} is not a Wallet made by the WalletFactory "
                f"{self.addresses['wallet_factory']}, so the Coordinator would refuse every paid delivery "
                "(make one with: node-daemon wallet create --config <this file>)")
        log.info("chain.payment_wallet", address=self.payment_address, wallet_factory=self.addresses["wallet_factory"])

    async def start(self) -> None:
        await self.rpcs.check()
        await self._resolve_contracts()
        await self.store.start(self.coordinator.address)
        await self._check_payment_wallet()
        self.chain_id = await self.w3.eth.chain_id
        w = self.config.wallet
        self.wallet = Wallet(self.w3, self._private_key, w.max_gas_limit, self.chain_id, heads=self.heads,
                             store=self.store, resend_after=w.resend_after, max_fee_per_gas=w.max_fee_per_gas,
                             receipt_timeout=w.receipt_timeout, allowed_sim_errors=w.allowed_sim_errors,
                             tasks=self._tx_watches)
        balance = await self.wallet.balance()
        if balance == 0:
            log.warning("chain.wallet_empty", address=self.address, hint="fund the node's wallet to deliver results")
        log.info("chain.wallet", address=self.address, balance_wei=balance, chain_id=self.chain_id)
        self.processor = Processor(self.w3, self.coordinator, self.store, self.wallet, self._orchestrator,
                                   consumer_abi=codec.abi("ExampleConsumer"), max_attempts=self.config.max_attempts,
                                   retry_backoff=self.config.retry_backoff,
                                   payments=self.payments, node_wallet=self.payment_address or self.address,
                                   output_encoding=self.config.output_encoding, skips=self.skips,
                                   heads=self.heads, tasks=self._intervals)
        in_flight = {r["label"] for r in await self.store.tx_pending(self.address)}
        for row in await self.store.interrupted():
            if f"deliverCompute({row['subscription_id']},{row['interval']})" in in_flight:
                continue  # its transaction is in flight: the wallet watches it to the end (resume below)
            # A previous process stopped mid-way: let it be retried; the on-chain check before any
            # delivery (nodeResponded / redundancyCount) keeps it from being delivered twice.
            await self.store.mark(row["subscription_id"], row["interval"], "failed", error="interrupted by restart")
        delegated = {(label[len("deliverComputeDelegatee("):-1].split(",")[0], int(label[:-1].split(",")[1]))
                     for label in in_flight if label.startswith("deliverComputeDelegatee(")}
        await self.store.release_interrupted_delegated(delegated)
        resumed = await self.store.active_subscriptions()
        for sub, pipeline in resumed:
            self.processor.track(sub, pipeline)
        self.listener = Listener(self.w3, self.coordinator, self.reader, self.store,
                                 start_block=self.config.start_block, trail=self.config.trail_head_blocks,
                                 batch_blocks=self.config.snapshot_batch_blocks, reader_batch=self.config.reader_batch,
                                 on_subscriptions=self._on_subscriptions,
                                 on_cancelled=self._on_cancelled, on_reorg=self._on_reorg, heads=self.heads)
        # Critical: the listener and the processor are this node's chain job (node/lifecycle.py).
        supervisor = self._supervisor
        self._tasks = [supervisor.spawn("chain-heads", self.heads.run),
                       supervisor.periodic("chain-rpc-health", self.config.rpc_health_interval, self.rpcs.check),
                       supervisor.loop("chain-listener", self.listener.round, self.config.poll_interval,
                                       self.listener.wake, critical=True),
                       supervisor.loop("chain-processor", self.processor.round, self.config.processor_tick,
                                       self.processor.wake, critical=True)]
        watched = await self.wallet.resume(self._tx_resumed)
        log.info("chain.started", coordinator=self.coordinator.address, registry=self.addresses.get("registry"),
                 resumed_subscriptions=len(resumed), transactions_in_flight=watched)

    async def _tx_resumed(self, record: dict[str, Any], result: TxResult) -> None:
        """A transaction a previous process sent is mined (or given up): record what it was for."""
        assert self.processor is not None
        label = record["label"]
        if label.startswith("deliverCompute("):
            sub_id, interval = (int(x) for x in label[len("deliverCompute("):-1].split(","))
            await self.processor.resumed(sub_id, interval, result)
        elif label.startswith("deliverComputeDelegatee("):
            owner, nonce = label[len("deliverComputeDelegatee("):-1].split(",")
            await self.store.finish_delegated(owner, int(nonce), "delivered" if result.ok else "failed",
                                              tx_hash=result.tx_hash, error=result.error)
        log.info("chain.tx_resumed", tx=label, ok=result.ok, error=result.error)

    async def stop(self) -> None:
        """Stop the listener and the processor after their round, then give in-flight interval
        runs, delegated deliveries and resumed transaction watches up to 15 s (then they are
        cancelled and logged). The head feed stops last: the transactions still in flight wait
        for heads."""
        if self._tasks:
            heads, health, listener, processor = self._tasks
            await asyncio.gather(listener.stop(timeout=5), processor.stop(timeout=5))
        await asyncio.gather(*(group.drain(15) for group in (self._intervals, self._delegated_tasks,
                                                             self._tx_watches)))
        if self._tasks:
            await asyncio.gather(heads.stop(), health.stop(timeout=1))
        await self.w3.provider.disconnect()

    async def ping(self) -> bool:
        return (await self.w3.eth.block_number) >= 0

    async def deliveries_view(self, request) -> Any:
        """GET /api/chain/deliveries[?subscription=<id>]: what this node did per (subscription,
        interval): status, attempts, job id (readable at /api/jobs?id=), tx hash, error."""
        raw = request.query.get("subscription")
        rows = await self.store.deliveries(int_param(raw, "subscription") if raw is not None else None)
        return json_response({"address": self.address, "tracked": self.processor.tracked() if self.processor else 0,
                              "deliveries": rows})

    def rpc_status(self) -> dict[str, Any]:
        """Each RPC's state and how heads arrive (node-daemon status, the status page, metrics)."""
        return {"heads": self.heads.mode, "head_ws": redact(self.heads.ws_url) if self.heads.ws_url else None,
                "rpcs": self.rpcs.status()}

    def info(self) -> dict[str, Any]:
        return {"enabled": True, "address": self.address, "payment_address": self.payment_address}

    def pending(self) -> int:
        return self.processor.pending() if self.processor else 0

    # -- delegated subscriptions (POST /api/jobs) ---------------------------------------------------

    async def delegated(self, request: DelegatedSubscriptionRequest, client_ip: str | None) -> dict[str, Any]:
        """Check an EIP-712 signed subscription, run its first interval, and deliver it with
        deliverComputeDelegatee (which creates the subscription on chain atomically)."""
        assert self.wallet is not None and self.chain_id is not None
        sub_raw, sig = request.subscription, request.signature
        try:
            sub = Subscription.from_tuple(0, [
                sub_raw["owner"], int(sub_raw["active_at"]), int(sub_raw["period"]), int(sub_raw["frequency"]),
                int(sub_raw["redundancy"]), bytes.fromhex(str(sub_raw["containers"]).removeprefix("0x")),
                bool(sub_raw["lazy"]), sub_raw.get("verifier") or "0x" + "00" * 20,
                int(sub_raw.get("payment_amount", 0)), sub_raw.get("payment_token") or "0x" + "00" * 20,
                sub_raw.get("wallet") or "0x" + "00" * 20])
            nonce, expiry = int(sig["nonce"]), int(sig["expiry"])
            v, r, s = int(sig["v"]), int(sig["r"]), int(sig["s"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, f"Invalid delegated subscription: {exc}") from None
        if len(sub.container_id) != 32:
            raise ApiError(400, "subscription.containers: expected a 32-byte hash")
        if expiry <= time.time():
            raise ApiError(400, "Signature expired", {"expiry": expiry})
        pipeline, reason = self.serves(sub, delegated=True)
        if pipeline is None:
            raise ApiError(403 if "allowed" in reason else 400, reason.capitalize())
        terms = self.policy.check(sub, pipeline)
        if terms is not None:
            raise ApiError(400, terms.reason.capitalize(), {"kind": terms.kind})
        typed = codec.delegate_typed_data(self.chain_id, self.coordinator.address, nonce, expiry, {
            "owner": sub.owner, "activeAt": sub.active_at, "period": sub.period, "frequency": sub.frequency,
            "redundancy": sub.redundancy, "containerId": sub.container_id, "lazy": sub.lazy,
            "verifier": sub.verifier, "paymentAmount": sub.payment_amount, "paymentToken": sub.payment_token,
            "wallet": sub.wallet})
        signer = Account.recover_message(encode_typed_data(full_message=typed), vrs=(v, r, s))
        consumer = self.w3.eth.contract(address=sub.owner, abi=codec.abi("ExampleConsumer"))
        try:
            expected = await consumer.functions.getSigner().call()
        except Exception:  # noqa: BLE001 - any failure of the call means the owner cannot vouch for a signer
            raise ApiError(400, "subscription.owner has no getSigner()") from None
        if signer.lower() != expected.lower():
            raise ApiError(401, "Signature does not match the owner's signer", {"signer": signer})
        if sub.payment_amount > 0:
            skip = await self.payments.can_pay(sub) if self.payments is not None else None
            if skip is not None:
                self.skips[skip.kind] += 1
                raise ApiError(402, skip.reason.capitalize(), {"kind": skip.kind})
        # One run per (owner, nonce), whatever the number of copies: the Coordinator creates the
        # subscription once, so a second run could only burn gas on a reverted delivery.
        key = codec.delegate_key(sub.owner, nonce)
        if await self.coordinator.functions.delegateCreatedIds(key).call() != 0:
            log.info("chain.delegated_duplicate", owner=sub.owner, nonce=nonce, reason="already created on chain")
            return {}
        if not await self.store.claim_delegated(sub.owner, nonce):
            log.info("chain.delegated_duplicate", owner=sub.owner, nonce=nonce, reason="a copy is running or done")
            return {}
        self._delegated_tasks.spawn(f"{sub.owner}#{nonce}",
                                    self._deliver_delegated(sub, pipeline, request.data, nonce, expiry, (v, r, s)))
        return {}

    async def _deliver_delegated(self, sub: Subscription, pipeline: list[str], data: Any, nonce: int, expiry: int,
                                 vrs: tuple[int, int, int]) -> None:
        status, job_id, tx_hash = "failed", None, None
        error: str | None = "internal error"
        try:
            status, job_id, tx_hash, error = await self._run_delegated(sub, pipeline, data, nonce, expiry, vrs)
        except Exception as exc:  # noqa: BLE001 - recorded below, never lost silently
            log.exception("chain.delegated_crashed", owner=sub.owner, nonce=nonce)
            error = f"internal error: {str(exc)[:200]}"
        finally:
            await self.store.finish_delegated(sub.owner, nonce, status, job_id=job_id, tx_hash=tx_hash, error=error)

    async def _run_delegated(self, sub: Subscription, pipeline: list[str], data: Any, nonce: int, expiry: int,
                             vrs: tuple[int, int, int]) -> tuple[str, str | None, str | None, str | None]:
        """Run and deliver one delegated subscription: (status, job id, tx hash, error).

        A subscription signed to become active later is run once it is active, as the Infernet
        node does (the Coordinator reverts `SubscriptionNotActive` before then): the next block,
        stamped with the time it is mined, is then at or past `activeAt`."""
        assert self.wallet is not None
        if sub.active_at > expiry:
            log.warning("chain.delegated_refused", owner=sub.owner, nonce=nonce,
                        error="active only after its signature expires")
            return "failed", None, None, "the subscription becomes active only after its signature expires"
        wait = sub.active_at + 1 - time.time()  # a block mined after this is stamped at or past activeAt
        if wait > 0:
            log.info("chain.delegated_waiting", owner=sub.owner, nonce=nonce, seconds=round(wait, 1))
            await asyncio.sleep(wait)
        try:
            job = await self._orchestrator.run(pipeline, data, client="chain", source="chain",
                                               destination=JobLocation.ONCHAIN, requires_proof=requires_proof(sub))
        except JobRejected as exc:
            log.warning("chain.delegated_refused", owner=sub.owner, nonce=nonce, error=exc.message)
            return "failed", None, None, exc.message
        if job.status != "success" or job.result is None:
            error = (job.result or {}).get("error")
            log.warning("chain.delegated_container_failed", owner=sub.owner, nonce=nonce, job_id=job.id, error=error)
            return "failed", job.id, None, str(error)
        tx_input, tx_output, proof = codec.serialize_output(job.result["output"], self.config.output_encoding)
        v, r, s = vrs
        fn = self.coordinator.functions.deliverComputeDelegatee(
            nonce, expiry, sub.as_tuple(), v, r.to_bytes(32, "big"), s.to_bytes(32, "big"), 1, tx_input, tx_output,
            proof, self.payment_address or self.address)
        # The simulation runs on the latest block, which on a quiet chain (anvil automine) may be
        # stamped before activeAt though the next one cannot be: that one revert is sent anyway.
        late = ("SubscriptionNotActive",) if sub.active_at > time.time() - 60 else ()
        result = await self.wallet.transact(fn, f"deliverComputeDelegatee({sub.owner},{nonce})", sim_errors_ok=late)
        if not result.ok:
            log.error("chain.delegated_delivery_failed", owner=sub.owner, nonce=nonce, reason=result.error)
            return "failed", job.id, result.tx_hash, result.error
        for entry in result.receipt["logs"]:
            if "0x" + bytes(entry["topics"][0]).hex() == CREATED:
                sub_id = int.from_bytes(bytes(entry["topics"][1]), "big")
                await self.store.mark(sub_id, 1, "delivered", job_id=job.id, tx_hash=result.tx_hash)
                log.info("chain.delivered", subscription=sub_id, interval=1, job_id=job.id, tx=result.tx_hash,
                         delegated=True)
        return "delivered", job.id, result.tx_hash, None
