"""The local CRE workflow runtime (seed 001 actions) end to end on anvil with real signatures:
a market created, seeded, priced, traded (single and batch, buy and sell), resolved, redeemed,
staked; agent keys and a confidential trade; callbacks received by the node's own endpoints."""

from __future__ import annotations

import asyncio
import base64
import math
import threading
import time

import aiohttp
import pytest
from aiohttp import web
from Crypto.Cipher import AES
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from tests.chain_helpers import KEYS, Anvil, artifact
from tests.helpers import NodeProcess, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DON, TRANSMITTER, BACKEND_SIGNER = Account.from_key(KEYS[1]), Account.from_key(KEYS[2]), Account.from_key(KEYS[3])
USER, OTHER, ORACLE = Account.from_key(KEYS[4]), Account.from_key(KEYS[5]), Account.create()
BACKEND_KEY = "backend-key"
RUNTIME_KEY = "runtime-key"
AUTH = {"Authorization": f"Bearer {RUNTIME_KEY}"}
SHARE, USDC = 10**18, 10**6
DOMAIN = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
          {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]


class Chain:
    def __init__(self, url: str) -> None:
        self.w3 = Web3(Web3.HTTPProvider(url))
        self.deployer = Account.from_key(KEYS[0])

    def send(self, fn, account=None):
        account = account or self.deployer
        tx = fn.build_transaction({"from": account.address,
                                   "nonce": self.w3.eth.get_transaction_count(account.address, "pending")})
        receipt = self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction), timeout=30)
        assert receipt["status"] == 1
        return receipt

    def deploy(self, name: str, *args):
        art = artifact(name)
        contract = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.send(contract.constructor(*args))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])


class Backend:
    """The app's backend: serves resolutions and agent markets, records what CRE POSTs, and
    forwards the seed's callback paths to the node's own callback endpoints."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.seen: list[str] = []  # every path asked for, as the backend received it
        self.node_url = ""
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.seen.append(request.raw_path)
        if request.method == "GET" and path.endswith("/resolution"):
            return web.json_response({"payouts": ["1", "0"]})
        if request.method == "GET" and path == "/api/cre/agent-markets":
            return web.json_response({"markets": [{"id": "m-1", "question": "From backend?", "oracle": ORACLE.address,
                                                   "duration": 600, "creatorAddress": USER.address}]})
        body = await request.json()
        self.posts.append((path, body))
        if request.method == "POST" and path.startswith("/api/cre/") and "/markets" not in path:
            async with aiohttp.ClientSession() as session:
                async with session.post(self.node_url + path, json=body,
                                        headers={"x-api-key": request.headers.get("x-api-key", "")}) as resp:
                    return web.json_response(await resp.json(), status=resp.status)
        return web.json_response({"ok": True})

    def start(self) -> Backend:
        async def boot() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(5)
        return self


@pytest.fixture(scope="module")
def env(docker_engine, tmp_path_factory):
    anvil = Anvil(block_time=None).start()
    chain = Chain(anvil.url)
    usdc = chain.deploy("MockUSDC")
    ct = chain.deploy("ConditionalTokens")
    forwarder = chain.deploy("ReportForwarder", DON.address)
    sub0 = chain.deploy("Sub0", forwarder.address, ct.address)
    vault = chain.deploy("PredictionVault", forwarder.address, DON.address, ct.address, sub0.address, usdc.address)
    for who, amount in ((TRANSMITTER, 10_000), (USER, 1_000), (OTHER, 1_000)):
        chain.send(usdc.functions.mint(who.address, amount * USDC))
    backend = Backend().start()
    node = NodeProcess(tmp_path_factory.mktemp("creflow"), [], {"cre": {
        "api_key": "keepr", "backend_api_key": BACKEND_KEY,
        "runtime": {"api_key": RUNTIME_KEY, "rpc_url": anvil.url, "don_key": DON.key.hex(), "transmitter_key": TRANSMITTER.key.hex(),
                    "backend_signer_key": BACKEND_SIGNER.key.hex(), "tee_master_key": "ab" * 32,
                    "forwarder_address": forwarder.address, "sub0_address": sub0.address,
                    "vault_address": vault.address, "conditional_tokens_address": ct.address,
                    "usdc_address": usdc.address, "backend_url": f"http://127.0.0.1:{backend.port}",
                    "funding": {"eth_wei": 10**17}}}})
    node.start()
    backend.node_url = f"http://127.0.0.1:{node.port}"
    yield {"node": node, "chain": chain, "usdc": usdc, "ct": ct, "sub0": sub0, "vault": vault, "backend": backend,
           "anvil": anvil}
    node.stop()
    anvil.stop()


def act(env, payload, status=200, path="/api/cre/workflow"):
    resp = env["node"].http().post(path, payload, headers=AUTH)
    assert resp.status == status, resp.body
    return resp.json


def user_trade(env, account, market, outcome, buy, quantity, max_cost, nonce, deadline) -> str:
    data = {"types": {"EIP712Domain": DOMAIN, "UserTrade": [
        {"name": "marketId", "type": "bytes32"}, {"name": "outcomeIndex", "type": "uint256"},
        {"name": "buy", "type": "bool"}, {"name": "quantity", "type": "uint256"},
        {"name": "maxCostUsdc", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"}]}, "primaryType": "UserTrade",
        "domain": {"name": "PredictionVault", "version": "1", "chainId": env["chain"].w3.eth.chain_id,
                   "verifyingContract": env["vault"].address},
        "message": {"marketId": bytes.fromhex(market[2:]), "outcomeIndex": outcome, "buy": buy, "quantity": quantity,
                    "maxCostUsdc": max_cost, "nonce": nonce, "deadline": deadline}}
    return "0x" + account.sign_message(encode_typed_data(full_message=data)).signature.hex()


def compact(signature: str) -> str:
    """The 64-byte EIP-2098 form of a 65-byte signature: r ‖ (yParity << 255 | s)."""
    raw = bytes.fromhex(signature[2:])
    y_and_s = (raw[64] - 27) << 255 | int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + y_and_s.to_bytes(32, "big")).hex()


def lmsr_reference(q: list[float], b: float, outcome: int, delta: float) -> float:
    """An independent float computation (direct formula, no log-sum-exp)."""
    def c(x):
        return b * math.log(sum(math.exp(v / b) for v in x))
    after = list(q)
    after[outcome] += delta
    return c(after) - c(q)


def test_market_lifecycle(env):
    chain, usdc, ct, vault, sub0 = env["chain"], env["usdc"], env["ct"], env["vault"], env["sub0"]
    w3 = chain.w3
    total_before = sum(usdc.functions.balanceOf(a).call() for a in (TRANSMITTER.address, USER.address, OTHER.address))

    created = act(env, {"action": "createMarket", "question": "Will it rain?", "oracle": ORACLE.address,
                        "duration": 3600, "outcomeSlotCount": 2, "oracleType": 1, "marketType": 0,
                        "creatorAddress": USER.address})
    qid, cid = created["questionId"], created["conditionId"]
    expected_qid = Web3.keccak(w3.codec.encode(["address", "string", "uint256", "uint256"],
                                               [USER.address, "Will it rain?", 2, 0]))
    assert qid == "0x" + expected_qid.hex()
    seeded = act(env, {"action": "seed", "questionId": qid, "amountUsdc": str(100 * USDC), "bParameter": "50"})
    assert seeded["status"] == "ok"
    market = act(env, {"action": "getMarket", "questionId": qid})
    assert market["conditionId"] == cid and market["supplies"] == ["0", "0"] and market["prices"] == [0.5, 0.5]

    # pricing: matches an independent computation, and moves the right way after a buy
    qty = 10 * SHARE
    price = act(env, {"action": "lmsrPricing", "marketId": qid, "outcomeIndex": 0, "quantity": str(qty), "b": "50"})
    reference = lmsr_reference([0, 0], 50, 0, 10) * USDC
    assert abs(int(price["tradeCostUsdc"]) - reference) / reference < 1e-6
    cost = int(price["tradeCostUsdc"])

    # the user approves the vault (USDC and conditional tokens) and buys with a UserTrade signature
    chain.send(usdc.functions.approve(vault.address, 2**256 - 1), USER)
    chain.send(ct.functions.setApprovalForAll(vault.address, True), USER)
    deadline = int(time.time()) + 600
    sig = user_trade(env, USER, qid, 0, True, qty, cost, 0, deadline)
    buy = {"action": "buy", "questionId": qid, "conditionId": cid, "outcomeIndex": 0, "quantity": str(qty),
           "tradeCostUsdc": str(cost), "nonce": "0", "deadline": str(deadline), "userSignature": sig}
    assert act(env, buy)["txHash"].startswith("0x")
    yes = ct.functions.getPositionId(usdc.address, ct.functions.getCollectionId(b"\0" * 32, bytes.fromhex(cid[2:]), 1).call()).call()
    assert ct.functions.balanceOf(yes, USER.address).call() == qty // 10**12
    assert usdc.functions.balanceOf(USER.address).call() == 1_000 * USDC - cost
    after = act(env, {"action": "lmsrPricing", "marketId": qid, "outcomeIndex": 0, "quantity": str(qty), "b": "50"})
    assert int(after["tradeCostUsdc"]) > cost  # the price of YES went up
    ref_after = lmsr_reference([10, 0], 50, 0, 10) * USDC
    assert abs(int(after["tradeCostUsdc"]) - ref_after) / ref_after < 1e-6

    # errors, each clear and with no state change: reused nonce, expired deadline, max cost below cost, wrong signer
    state = vault.functions.getShares(bytes.fromhex(qid[2:])).call()
    reused = env["node"].http().post("/api/cre/workflow", buy, headers=AUTH)
    assert reused.status == 400 and "nonce" in reused.json["error"]
    stale = {**buy, "nonce": "1", "deadline": str(int(time.time()) - 5),
             "userSignature": user_trade(env, USER, qid, 0, True, qty, cost, 1, int(time.time()) - 5)}
    assert "deadline" in act(env, stale, 400)["error"]
    low = act(env, {**buy, "nonce": "1", "maxCostUsdc": str(cost - 1)}, 400)
    assert "maxCostUsdc must be >= tradeCostUsdc" in low["error"]
    forged = {**buy, "nonce": "1", "userSignature": user_trade(env, OTHER, qid, 0, True, qty, cost, 1, deadline)}
    forged["quantity"] = str(qty * 2)  # signed for another quantity: recovers some other address
    assert act(env, forged, 400)["error"].startswith("buy: ")
    assert vault.functions.getShares(bytes.fromhex(qid[2:])).call() == state

    # batch with one bad signature: reported in errors, the good one executes
    cost2 = int(act(env, {"action": "lmsrPricing", "marketId": qid, "outcomeIndex": 1, "quantity": str(qty),
                          "b": "50"})["tradeCostUsdc"])
    chain.send(usdc.functions.approve(vault.address, 2**256 - 1), OTHER)
    good = {"userSignature": user_trade(env, OTHER, qid, 1, True, qty, cost2 + 10, 0, deadline), "quantity": str(qty),
            "tradeCostUsdc": str(cost2), "maxCostUsdc": str(cost2 + 10), "nonce": "0", "deadline": str(deadline)}
    bad = {**good, "userSignature": "0x" + "11" * 65}
    batch = act(env, {"action": "order", "buy": True, "questionId": qid, "conditionId": cid, "outcomeIndex": 1,
                      "trades": [good, bad]})  # as the seed writes a batch: no top-level trade terms
    assert len(batch["txHashes"]) == 1 and len(batch["errors"]) == 1 and batch["errors"][0].startswith("trade[1]:")

    # sell half of the YES position back
    half = qty // 2
    proceeds = int(act(env, {"action": "lmsrPricing", "marketId": qid, "outcomeIndex": 0, "quantity": str(half),
                             "b": "50", "buy": False})["tradeCostUsdc"])
    before_sell = usdc.functions.balanceOf(USER.address).call()
    sell = {"action": "sell", "questionId": qid, "conditionId": cid, "outcomeIndex": 0, "quantity": str(half),
            "tradeCostUsdc": str(proceeds), "nonce": "1", "deadline": str(deadline),
            "userSignature": compact(user_trade(env, USER, qid, 0, False, half, proceeds, 1, deadline))}
    act(env, sell)
    assert usdc.functions.balanceOf(USER.address).call() == before_sell + proceeds

    # resolve YES, redeem with the owner's EIP-712 signature
    act(env, {"action": "resolveMarket", "questionId": qid, "payouts": ["1", "0"], "oracle": ORACLE.address})
    chain.send(ct.functions.setApprovalForAll(sub0.address, True), USER)
    redeem_msg = {"owner": USER.address, "conditionId": bytes.fromhex(cid[2:]), "indexSets": [1, 2],
                  "token": usdc.address, "deadline": deadline, "nonce": 0}
    redeem_typed = {"types": {"EIP712Domain": DOMAIN, "Redeem": [
        {"name": "owner", "type": "address"}, {"name": "conditionId", "type": "bytes32"},
        {"name": "indexSets", "type": "uint256[]"}, {"name": "token", "type": "address"},
        {"name": "deadline", "type": "uint256"}, {"name": "nonce", "type": "uint256"}]}, "primaryType": "Redeem",
        "domain": {"name": "Sub0", "version": "1", "chainId": w3.eth.chain_id, "verifyingContract": sub0.address},
        "message": redeem_msg}
    redeem = {"action": "redeem", "parentCollectionId": "0x" + "00" * 32, "conditionId": cid, "indexSets": ["1", 2],
              "token": usdc.address, "owner": USER.address, "deadline": str(deadline), "nonce": "0",
              "signature": "0x" + OTHER.sign_message(encode_typed_data(full_message=redeem_typed)).signature.hex()}
    assert "owner's Redeem signature" in act(env, redeem, 400)["error"]
    owner_sig = USER.sign_message(encode_typed_data(full_message=redeem_typed)).signature
    redeem["signature"] = compact("0x" + owner_sig.hex())  # 64-byte EIP-2098 form
    before_redeem = usdc.functions.balanceOf(USER.address).call()
    assert act(env, redeem)["result"] == "redeem"
    assert usdc.functions.balanceOf(USER.address).call() == before_redeem + (qty - half) // 10**12

    # USDC adds up: what the accounts lost is what the vault and the conditional tokens hold
    held = sum(usdc.functions.balanceOf(a).call() for a in (TRANSMITTER.address, USER.address, OTHER.address,
                                                             vault.address, ct.address, sub0.address))
    assert held == total_before

    # the node's own callback endpoints received the results
    http = env["node"].http()
    buys = http.get(f"/api/cre/buy?questionId={qid}", headers={"x-api-key": BACKEND_KEY}).json["data"]["callbacks"]
    assert buys and buys[-1]["body"]["txHash"].startswith("0x")
    assert http.get("/api/cre/redeem", headers={"x-api-key": BACKEND_KEY}).json["data"]["count"] >= 1
    assert http.get("/api/cre/lmsr-pricing", headers={"x-api-key": BACKEND_KEY}).json["data"]["count"] >= 3


def test_stake_settlement_and_backend_markets(env):
    chain, usdc, ct, sub0 = env["chain"], env["usdc"], env["ct"], env["sub0"]
    created = act(env, {"action": "createMarket", "question": "Stake me", "oracle": ORACLE.address, "duration": 60,
                        "outcomeSlotCount": 2, "oracleType": 2, "marketType": 1, "creatorAddress": OTHER.address})
    chain.send(usdc.functions.approve(sub0.address, 2**256 - 1), OTHER)
    stake = act(env, {"action": "stake", "questionId": created["questionId"], "partition": ["1", "2"],
                      "token": usdc.address, "amount": str(5 * USDC), "owner": OTHER.address})
    assert stake["result"] == "stake"
    no = ct.functions.getPositionId(usdc.address, ct.functions.getCollectionId(
        b"\0" * 32, bytes.fromhex(created["conditionId"][2:]), 2).call()).call()
    assert ct.functions.balanceOf(no, OTHER.address).call() == 5 * USDC
    settled = act(env, {"action": "runSettlement", "marketId": "m-77", "questionId": created["questionId"]})
    assert settled["result"] == "runSettlement"
    assert ct.functions.payoutDenominator(bytes.fromhex(created["conditionId"][2:])).call() == 1
    assert ("/api/cre/markets/m-77/resolved", ) == tuple(p for p, _ in env["backend"].posts if p.endswith("/resolved"))
    fetched = act(env, {"action": "createMarketsFromBackend"})
    assert fetched["created"] == 1 and fetched["markets"][0]["id"] == "m-1"


def test_a_settlement_market_id_cannot_steer_the_backend_request_to_another_path(env):
    """The attack: runSettlement's marketId went into the backend URL as sent, so `../../x`
    sent a GET and then a POST, with the node's backend API key, to any path of the backend."""
    backend, before = env["backend"], len(env["backend"].seen)
    http = env["node"].http()
    answers = [http.post("/api/cre/workflow", {"action": "runSettlement", "marketId": market,
                                               "questionId": "0x" + "11" * 32}, headers=AUTH)
               for market in ("../../admin/payouts", "m-1/../../../x", "%2e%2e%2fadmin", "m 1", "m-1?x=1")]
    assert backend.seen[before:] == [], "a marketId reached a backend path outside /api/cre/markets/{id}/"
    for resp in answers:
        assert resp.status == 400 and "marketId: String should match pattern" in resp.json["error"]


def test_agent_key_and_confidential_trade(env):
    chain, usdc, vault, w3 = env["chain"], env["usdc"], env["vault"], env["chain"].w3
    created = act(env, {"action": "createMarket", "question": "Agents?", "oracle": ORACLE.address, "duration": 600,
                        "outcomeSlotCount": 2, "oracleType": 1, "marketType": 0, "creatorAddress": USER.address})
    qid = created["questionId"]
    act(env, {"action": "seed", "questionId": qid, "amountUsdc": str(50 * USDC), "bParameter": "20"})
    agent = act(env, {"action": "createAgentKey", "agentId": "agent-1", "entropy": "c0ffee"})
    assert agent["encryptedKeyBlob"] and {"signedEthTransfer", "signedErc20", "signedCT"} <= set(agent)
    # the blob is the agent's key under AES-256-GCM with the TEE master key; the key is never logged
    raw = base64.urlsafe_b64decode(agent["encryptedKeyBlob"] + "=" * (-len(agent["encryptedKeyBlob"]) % 4))
    key = AES.new(bytes.fromhex("ab" * 32), AES.MODE_GCM, nonce=raw[:12]).decrypt_and_verify(raw[12:-16], raw[-16:])
    assert Account.from_key(key).address == agent["address"]
    assert key.hex() not in env["node"].log()
    # the agent's key is never replaced: funds sent to its address would be stranded
    again = act(env, {"action": "createAgentKey", "agentId": "agent-1", "entropy": "0xc0ffee"}, 409)
    assert "already has a key" in again["error"]
    for raw in (agent["signedEthTransfer"],):
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    chain.send(usdc.functions.mint(agent["address"], 100 * USDC))
    for raw in (agent["signedErc20"], agent["signedCT"]):
        assert w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))["status"] == 1
    qty = 3 * SHARE
    cost = int(act(env, {"action": "lmsrPricing", "marketId": qid, "outcomeIndex": 1, "quantity": str(qty),
                         "b": "20"})["tradeCostUsdc"])
    trade = act(env, {"action": "executeConfidentialTrade", "agentId": "agent-1", "marketId": qid, "outcomeIndex": 1,
                      "buy": True, "quantity": str(qty), "tradeCostUsdc": str(cost), "nonce": "0",
                      "deadline": str(int(time.time()) + 300)})
    assert trade["txHash"].startswith("0x")
    assert usdc.functions.balanceOf(agent["address"]).call() == 100 * USDC - cost
    keys = env["node"].http().get("/api/cre/agent-keys?agentId=agent-1", headers={"x-api-key": BACKEND_KEY}).json
    assert keys["data"]["callbacks"][0]["body"]["address"] == agent["address"]
    unknown = act(env, {"action": "executeConfidentialTrade", "agentId": "nobody", "marketId": qid, "outcomeIndex": 1,
                        "buy": True, "quantity": "1", "tradeCostUsdc": "1", "nonce": "0", "deadline": "9999999999"}, 400)
    assert "no agent key" in unknown["error"]
    signed = act(env, {"action": "approveErc20", "signer": "backend", "spender": vault.address, "amount": "5",
                       "userInvoke": True})
    assert signed["broadcastRequired"] is True and "txHash" not in signed and signed["signedTx"].startswith("0x")
    sent = act(env, {"action": "approveErc20", "signer": "agent", "agentId": "agent-1", "spender": vault.address,
                     "amount": "7", "userInvoke": False})
    assert sent["txHash"] and usdc.functions.allowance(agent["address"], vault.address).call() == 7


def test_bad_actions_name_the_field(env):
    resp = env["node"].http().post("/api/cre/workflow", {"action": "lmsrPricing", "outcomeIndex": 0, "quantity": "1"},
                                   headers=AUTH)
    assert resp.status == 400 and "marketId" in resp.json["error"]
    resp = env["node"].http().post("/api/cre/workflow", {"action": "nope"}, headers=AUTH)
    assert resp.status == 400
    rpc = env["node"].http().post("/api/cre/workflow", {"jsonrpc": "2.0", "id": "r1", "method": "workflows.execute",
                                                        "params": {"input": {"action": "getMarket",
                                                                             "questionId": "0x" + "00" * 32}}},
                                   headers=AUTH)
    assert rpc.status == 400 and "not found" in rpc.json["error"]


def test_quote_only_and_conditional_token_approval(env):
    vault, ct, w3 = env["vault"], env["ct"], env["chain"].w3
    qid, cid = "0x" + "42" * 32, "0x" + "43" * 32
    quote = act(env, {"action": "quote", "questionId": qid, "conditionId": cid, "outcomeIndex": 1, "buy": False,
                      "quantity": "1000000000000000000", "tradeCostUsdc": "5000000", "nonce": "0",
                      "deadline": "1735689600"})
    assert set(quote) == {"questionId", "outcomeIndex", "buy", "quantity", "tradeCostUsdc", "nonce", "deadline",
                          "signature"}
    don_quote = {"types": {"EIP712Domain": DOMAIN, "DONQuote": [
        {"name": "marketId", "type": "bytes32"}, {"name": "outcomeIndex", "type": "uint256"},
        {"name": "buy", "type": "bool"}, {"name": "quantity", "type": "uint256"},
        {"name": "tradeCostUsdc", "type": "uint256"}, {"name": "user", "type": "address"},
        {"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"}]}, "primaryType": "DONQuote",
        "domain": {"name": "PredictionVault", "version": "1", "chainId": w3.eth.chain_id,
                   "verifyingContract": vault.address},
        "message": {"marketId": bytes.fromhex(qid[2:]), "outcomeIndex": 1, "buy": False, "quantity": 10**18,
                    "tradeCostUsdc": 5 * USDC, "user": "0x" + "00" * 20, "nonce": 0, "deadline": 1735689600}}
    assert Account.recover_message(encode_typed_data(full_message=don_quote), signature=quote["signature"]) == DON.address
    quotes = env["node"].http().get(f"/api/cre/quote?questionId={qid}", headers={"x-api-key": BACKEND_KEY}).json
    assert quotes["data"]["callbacks"][0]["body"]["signature"] == quote["signature"]

    signed = act(env, {"action": "approveConditionalToken", "signer": "backend", "operator": vault.address,
                       "approved": True, "userInvoke": False})
    assert signed["broadcastRequired"] is True and signed["signerAddress"] == BACKEND_SIGNER.address
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed["signedTx"]))
    assert ct.functions.isApprovedForAll(BACKEND_SIGNER.address, vault.address).call() is True
    missing = env["node"].http().post("/api/cre/workflow", {"action": "approveConditionalToken", "signer": "agent",
                                                            "operator": vault.address, "approved": True},
                                      headers=AUTH)
    assert missing.status == 400 and "agentId" in missing.json["error"]


def test_the_workflow_refuses_callers_without_the_key(env):
    """Security item 4: the DON key must not sign for anyone who reaches the node."""
    http = env["node"].http()
    resolve = {"action": "resolveMarket", "questionId": "0x" + "99" * 32, "payouts": ["1", "0"],
               "oracle": ORACLE.address}
    agent = {"action": "createAgentKey", "agentId": "intruder"}
    for path in ("/api/cre/workflow", "/api/cre/workflow/trigger", "/trigger"):
        for body, headers in ((resolve, {}), (agent, {"Authorization": "Bearer wrong"}),
                              ({**agent, "apiKey": "wrong"}, {}), ({"input": agent}, {})):
            resp = http.post(path, body, headers=headers)
            assert resp.status == 401 and resp.json["success"] is False, (path, resp.body)
    # the seed's way: apiKey in the payload (also next to a bearer token that is not ours, e.g. a JWT)
    for headers in ({}, {"Authorization": "Bearer eyJhbGciOiJFVEgifQ.e30.c2ln"}):
        market = http.post("/api/cre/workflow", {"action": "getMarket", "questionId": "0x" + "00" * 32,
                                                 "apiKey": RUNTIME_KEY}, headers=headers)
        assert market.status == 400 and "not found" in market.json["error"], market.body


def test_what_the_cre_simulator_takes_works_unchanged(env):
    """`cre workflow simulate` listens on /trigger for {"input": {...}} (cre-cli simulate.go)."""
    created = act(env, {"input": {"action": "createMarket", "question": "Simulated?", "oracle": ORACLE.address,
                                  "duration": 600, "outcomeSlotCount": 2, "oracleType": 1, "marketType": 0,
                                  "creatorAddress": OTHER.address, "clientRef": "app-7"}}, path="/trigger")
    got = act(env, {"input": {"action": "getMarket", "questionId": created["questionId"]}},
              path="/api/cre/workflow/trigger")
    assert got["question"] == "Simulated?" and got["conditionId"] == created["conditionId"]
