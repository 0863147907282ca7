"""Drives a node with infernet-client's public API, in the client's own venv (web3 6).

Run by tests/daemon/test_infernet_client.py as `<client venv>/bin/python drive.py '<json>'`
with this directory on PYTHONPATH (for the infernet_ml stand-in). The JSON names the node's
URL and container ids, and for the delegated subscription the anvil URL, the coordinator,
the consumer and its signer's key. Prints one JSON object: for each call, what the client
returned (`{"ok": …}`) or what it raised (`{"raised": type, "status": …, "message": …}`), so
the test asserts each answer as a client user would see it, and one failing call does not
hide the others.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from infernet_client import NodeClient
from infernet_client.chain.rpc import RPC
from infernet_client.chain.subscription import Subscription
from infernet_client.chain.wallet_factory import WalletFactory
from infernet_client.error import APIError

ZERO = "0x" + "00" * 20


def raised(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"raised": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, APIError):
        out.update(status=exc.status_code, message=exc.message, params=exc.params)
    elif hasattr(exc, "status"):
        out["status"] = exc.status
    return out


async def call(results: dict[str, Any], name: str, coro) -> Any:
    try:
        value = await coro
    except Exception as exc:  # noqa: BLE001 - every failure is reported, by type
        results[name] = raised(exc)
        return None
    results[name] = {"ok": value}
    return value


async def stream(client: NodeClient, job: dict[str, Any]) -> dict[str, Any]:
    chunks: list[str] = []
    async for chunk in client.request_stream(job, timeout=30):
        chunks.append(chunk if isinstance(chunk, str) else chunk.decode())
    return {"job_id": chunks[0] if chunks else None, "output": "".join(chunks[1:])}


async def delegated(client: NodeClient, spec: dict[str, Any], active_at: int, nonce: int, msg: str) -> None:
    rpc = RPC(spec["rpc_url"])
    sub = Subscription(owner=spec["consumer"], active_at=active_at, period=0, frequency=1, redundancy=1,
                       containers=[spec["container"]], lazy=False, verifier=ZERO, payment_amount=0,
                       payment_token=ZERO, wallet=ZERO)
    await client.request_delegated_subscription(
        sub, rpc, spec["coordinator"], expiry=int(time.time()) + 600, nonce=nonce, private_key=spec["signer_key"],
        data={"msg": msg})


async def payment_wallet(spec: dict[str, Any]) -> dict[str, Any]:
    """The client's own way to a payment wallet: WalletFactory.create_wallet, then approve a
    spender on it, on the node's contracts (the client's ABIs against our SDK-shaped ones)."""
    rpc = await RPC(spec["rpc_url"]).initialize_with_private_key(spec["user_key"])
    factory = WalletFactory(rpc.get_checksum_address(spec["wallet_factory"]), rpc)
    wallet = await factory.create_wallet(rpc.account.address)
    token = rpc.get_checksum_address(spec["token"])
    await wallet.approve(rpc.get_checksum_address(spec["consumer"]), token, 5)
    return {"wallet": wallet.address, "valid": await factory.is_valid_wallet(wallet.address),
            "owner": await wallet.owner(), "token_balance": await wallet.get_token_balance(token),
            "balance": await wallet.get_balance()}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    client = NodeClient(spec["url"])
    cid, results = spec["container"], {}
    await call(results, "health", client.health())
    await call(results, "get_info", client.get_info())
    await call(results, "get_resources", client.get_resources(timeout=10))
    await call(results, "check_model_support", client.check_model_support("llama", timeout=10))
    job_id = await call(results, "request_job", client.request_job({"containers": [cid], "data": {"prompt": "hi"}}))
    if job_id:
        await call(results, "get_job_result_sync", client.get_job_result_sync(job_id, retries=30))
    batch = await call(results, "request_jobs", client.request_jobs(
        [{"containers": [cid], "data": {"i": i}} for i in range(3)] + [{"containers": ["nope"], "data": {}}]))
    if batch:
        ids = [b["id"] for b in batch if "id" in b]
        for i in ids:
            await client.get_job_result_sync(i, retries=30)
        await call(results, "get_job_results", client.get_job_results(ids))
    await call(results, "get_jobs", client.get_jobs())
    await call(results, "get_jobs_pending", client.get_jobs(pending=True))
    await call(results, "get_jobs_done", client.get_jobs(pending=False))
    chained = await call(results, "request_job_chained",
                         client.request_job({"containers": [cid, cid], "data": {"twice": True}}))
    if chained:
        await client.get_job_result_sync(chained, retries=30)
        await call(results, "get_job_results_intermediate", client.get_job_results([chained], intermediate=True))
    recorded = {"containers": [cid], "data": {"out": "of band"}}
    await call(results, "record_status_running", client.record_status(spec["recorded_id"], "running", recorded))
    await call(results, "get_job_results_recorded_running", client.get_job_results([spec["recorded_id"]]))
    await call(results, "record_status_success", client.record_status(spec["recorded_id"], "success", recorded))
    await call(results, "get_job_results_recorded_success", client.get_job_results([spec["recorded_id"]]))
    await call(results, "request_stream", stream(client, {"containers": [cid], "data": {"say": "streamed"}}))
    await call(results, "request_job_unknown_container", client.request_job({"containers": ["nope"], "data": {}}))
    await call(results, "get_job_result_sync_unknown_id", client.get_job_result_sync("not-a-job", retries=1))
    if spec.get("rpc_url"):
        # active from the chain's latest block (as the node's own `chain request --delegated` does)
        await call(results, "request_delegated_subscription",
                   delegated(client, spec, spec["chain_now"], 7, "hello from infernet-client"))
        # active a few seconds from now by the wall clock, as a client user writes `int(time())` + a margin
        await call(results, "request_delegated_subscription_later",
                   delegated(client, spec, int(time.time()) + 6, 8, "later from infernet-client"))
        await call(results, "payment_wallet", payment_wallet(spec))
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
