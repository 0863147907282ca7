"""A real local chain for tests: anvil from contracts/node_modules, our contracts deployed on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

from node.tools.deploy import GROUPS, Deployer
from tests.helpers import REPO, free_port

ANVIL = REPO / "contracts" / "node_modules" / ".bin" / "anvil"
ABI_DIR = REPO / "node" / "chain" / "abi"
MNEMONIC = "test test test test test test test test test test test junk"
# anvil's default accounts for MNEMONIC
Account.enable_unaudited_hdwallet_features()
KEYS = [Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex() for i in range(6)]


def artifact(name: str) -> dict:
    return json.loads((ABI_DIR / f"{name}.json").read_text())


class Anvil:
    def __init__(self, block_time: float | None = 1, state: Path | None = None) -> None:
        self.port = free_port()
        self.block_time = block_time
        self.state = state
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        args = [str(ANVIL), "--port", str(self.port), "--mnemonic", MNEMONIC, "--silent"]
        if self.block_time:
            args += ["--block-time", str(self.block_time)]
        if self.state:
            args += ["--state", str(self.state)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w3 = Web3(Web3.HTTPProvider(self.url))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                w3.eth.block_number
                return self
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        raise AssertionError("anvil did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


ETH = "0x" + "00" * 20
EXTERNAL_ARTIFACTS = os.environ.get("INFERNET_SDK_ARTIFACTS")
# Tests of what our contracts add to the SDK's interface (skipped against artifacts built elsewhere).
ours_only = pytest.mark.skipif(bool(EXTERNAL_ARTIFACTS), reason="an extension of our contracts, not in the SDK")


@dataclass
class Deployment:
    w3: Web3
    coordinator: object
    reader: object
    consumer: object
    signer_key: str
    registry: object = None
    inbox: object = None
    fee: object = None
    wallet_factory: object = None
    token: object = None
    verifier: object = None

    def wallet(self, address: str):
        return self.w3.eth.contract(address=address, abi=artifact("Wallet")["abi"])

    def create_wallet(self, owner_key: str) -> str:
        """A Wallet made by the WalletFactory (the only kind the Coordinator pays from or to)."""
        owner = Account.from_key(owner_key).address
        receipt = self.send(self.wallet_factory.functions.createWallet(owner), owner_key)
        (event,) = self.wallet_factory.events.WalletCreated().process_receipt(receipt, errors=DISCARD)
        return event["args"]["wallet"]

    def fund_wallet(self, wallet: str, token: str, amount: int, key: str = KEYS[0]) -> None:
        """ETH (token = ETH) sent to the wallet, or MockToken minted to it."""
        if token == ETH:
            account = Account.from_key(key)
            tx = {"from": account.address, "to": wallet, "value": amount, "gas": 100_000, "chainId": self.w3.eth.chain_id,
                  "gasPrice": self.w3.eth.gas_price,
                  "nonce": self.w3.eth.get_transaction_count(account.address, "pending")}
            receipt = self.w3.eth.wait_for_transaction_receipt(
                self.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction), timeout=30)
            assert receipt["status"] == 1, receipt
        else:
            self.send(self.w3.eth.contract(address=token, abi=artifact("MockToken")["abi"]).functions.mint(
                wallet, amount), key)

    def approve(self, wallet: str, owner_key: str, spender: str, token: str, amount: int) -> None:
        self.send(self.wallet(wallet).functions.approve(spender, token, amount), owner_key)

    def balance(self, address: str, token: str) -> int:
        if token == ETH:
            return self.w3.eth.get_balance(address)
        return self.token.functions.balanceOf(address).call() if token == self.token.address else \
            self.w3.eth.contract(address=token, abi=artifact("MockToken")["abi"]).functions.balanceOf(address).call()

    def send(self, fn, key: str = KEYS[0]):
        account = Account.from_key(key)
        tx = fn.build_transaction({"from": account.address,
                                   "nonce": self.w3.eth.get_transaction_count(account.address, "pending")})
        signed = account.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction),
                                                           timeout=30)
        assert receipt["status"] == 1, receipt
        return receipt

    def created_id(self, receipt) -> int:
        topic = Web3.keccak(text="SubscriptionCreated(uint32)")
        for entry in receipt["logs"]:
            if entry["topics"][0] == topic:
                return int.from_bytes(entry["topics"][1], "big")
        raise AssertionError("no SubscriptionCreated in receipt")

    def deliveries(self, sub_id: int | None = None) -> list[dict]:
        out = []
        for i in range(self.consumer.functions.deliveriesLength().call()):
            d = self.consumer.functions.deliveries(i).call()
            item = {"subscription": d[0], "interval": d[1], "redundancy": d[2], "node": d[3], "input": d[4],
                    "output": d[5], "proof": d[6], "container_id": d[7], "index": d[8]}
            if sub_id is None or item["subscription"] == sub_id:
                out.append(item)
        return out

    def wait_deliveries(self, sub_id: int, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.deliveries(sub_id)
            if len(found) >= n:
                return found
            time.sleep(0.25)
        raise AssertionError(f"subscription {sub_id}: {len(self.deliveries(sub_id))} deliveries, wanted {n}")


def decode_output(output: bytes):
    return json.loads(abi_decode(["string"], output)[0])


def deploy(url: str, signer_key: str = KEYS[5], fee_bps: int = 500, artifacts: Path | None = None) -> Deployment:
    """The Infernet set (Registry, Coordinator, Inbox, Reader, Fee, WalletFactory), the
    ExampleConsumer and the test mocks (MockToken, MockVerifier), deployed by the product's
    deployer (`node-daemon deploy`), KEYS[0] paying and receiving the protocol fee. With
    $INFERNET_SDK_ARTIFACTS set (a directory of `<Name>.json` built elsewhere, e.g. Ritual's
    own contracts), those are deployed instead of ours for the names found there."""
    w3 = Web3(Web3.HTTPProvider(url))
    if artifacts is None and EXTERNAL_ARTIFACTS:
        artifacts = Path(EXTERNAL_ARTIFACTS)
    done = Deployer(w3, w3.eth.chain_id, KEYS[0], out=lambda line: None, artifacts=artifacts).run(
        GROUPS["infernet"] + GROUPS["mocks"], None, url, signer=Account.from_key(signer_key).address,
        fee_bps=fee_bps)

    def contract(name: str):
        return w3.eth.contract(address=done.address(name), abi=artifact(name)["abi"])

    return Deployment(w3, contract("Coordinator"), contract("Reader"), contract("ExampleConsumer"), signer_key,
                      registry=contract("Registry"), inbox=contract("Inbox"), fee=contract("Fee"),
                      wallet_factory=contract("WalletFactory"), token=contract("MockToken"),
                      verifier=contract("MockVerifier"))


class CountingOrchestrator:
    """Stands in for the node's orchestrator in in-process chain tests: runs no container, answers
    each job with its input echoed after `delay` seconds, and counts the runs."""

    def __init__(self, delay: float = 0.0) -> None:
        self.runs = 0
        self.delay = delay

    async def run(self, containers, data, **kwargs):
        self.runs += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return SimpleNamespace(id=f"job-{self.runs}", status="success", result={"output": {"echo": data}})


@contextlib.asynccontextmanager
async def chain_service(db_path: Path, anvil_url: str, dep: Deployment, key: str, orchestrator, **config):
    """The node's ChainService, started in this process on its own SQLite file (containers: one
    external `echo`), stopped on exit."""
    from node.chain.config import ChainConfig
    from node.chain.service import ChainService
    from node.containers.config import ContainerConfig
    from node.lifecycle import Supervisor
    from node.storage import Database

    db = Database(str(db_path))
    await db.open()
    supervisor = Supervisor(on_fatal=lambda name: None)
    settings = chain_config(anvil_url, dep, key, start_block=dep.w3.eth.block_number) | config
    service = ChainService(ChainConfig(**settings), [ContainerConfig(id="echo", image="x")], db, orchestrator,
                           supervisor)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await supervisor.close()
        await db.close()


def chain_config(anvil_url: str, dep: Deployment, key: str, **extra) -> dict:
    return {"enabled": True, "rpc_url": anvil_url, "registry_address": dep.registry.address,
            "trail_head_blocks": 0, "poll_interval": 0.2,
            "processor_tick": 0.2, "retry_backoff": 0.5, "wallet": {"private_key": key}, **extra}


class RpcProxy:
    """A JSON-RPC proxy in front of an RPC (HTTP and WebSocket), in a thread of its own, that
    counts the calls by method and can be broken on purpose: `mode` "ok" forwards, "down" answers
    503 and drops WebSockets, "429" answers HTTP requests 429 with `Retry-After: retry_after`
    (a subscription already open goes on)."""

    def __init__(self, upstream: str, retry_after: int = 1) -> None:
        from collections import Counter

        self.upstream = upstream
        self.port = free_port()
        self.mode = "ok"
        self.retry_after = retry_after
        self.calls: Counter = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: set = set()
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RpcProxy:
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        if not self._ready.wait(10):
            raise AssertionError("proxy did not start")
        return self

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "down" and self._loop is not None:
            for ws in list(self._sockets):
                asyncio.run_coroutine_threadsafe(ws.close(), self._loop)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    async def _serve(self) -> None:
        import json as _json

        import aiohttp
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        session = aiohttp.ClientSession()
        ws_upstream = self.upstream.replace("http://", "ws://")

        def count(body) -> None:
            for item in body if isinstance(body, list) else [body]:
                if isinstance(item, dict):
                    self.calls[item.get("method")] += 1

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                if self.mode == "down":
                    return web.Response(status=503)
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                self._sockets.add(ws)
                try:
                    async with session.ws_connect(ws_upstream) as up:
                        async def pump_up() -> None:
                            async for msg in ws:
                                if msg.type == aiohttp.WSMsgType.TEXT:
                                    count(_json.loads(msg.data))
                                    await up.send_str(msg.data)
                            await up.close()

                        async def pump_down() -> None:
                            async for msg in up:
                                if msg.type == aiohttp.WSMsgType.TEXT and self.mode != "down":
                                    await ws.send_str(msg.data)
                            await ws.close()

                        await asyncio.gather(pump_up(), pump_down(), return_exceptions=True)
                finally:
                    self._sockets.discard(ws)
                return ws
            raw = await request.read()
            if self.mode == "down":
                return web.Response(status=503, text="down")
            if self.mode == "429":
                return web.Response(status=429, text="rate limited", headers={"Retry-After": str(self.retry_after)})
            count(_json.loads(raw))
            async with session.post(self.upstream, data=raw, headers={"Content-Type": "application/json"}) as resp:
                return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()
        await session.close()
