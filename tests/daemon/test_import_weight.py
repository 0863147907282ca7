"""What the default node loads (issue 28's peak RSS goal): the libraries only some requests need
are imported by those requests. eth_account (with eth_keyfile and py_ecc's BLS tables) and
eth_utils cost ~10 MB of a 90-100 MB node; the default config (config.yaml: CRE, the gateway and
the registry on, no chain, no relayer, no trigger signer) serves jobs without them, and loads
them at the first registry sign-in, which must still work.

Each check runs in a fresh interpreter (a subprocess), since this test process has long since
imported everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Loaded only by a request that needs them (a signature to check or make).
DEFERRED = ("eth_account", "eth_keyfile", "py_ecc", "eth_keys", "eth_utils")

_SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from node.app import Node
from node.config import parse_config

DEFERRED = json.loads(sys.argv[2])
tmp = Path(sys.argv[1])


def loaded():
    return sorted(m for m in DEFERRED if m in sys.modules)


async def echo_service():
    async def echo(request):
        return web.json_response((await request.json())["data"])

    async def probe(request):
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/service_output", echo)
    app.router.add_get("/", probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def main():
    out = {"after_import": loaded()}
    service, url = await echo_service()
    data = yaml.safe_load(Path("config.yaml").read_text())
    # The default config, with its containers served by the echo above instead of Docker.
    data.update(master_key_path=str(tmp / "node.key"), manage_containers=False, startup_wait=10)
    data["server"]["port"] = 0
    data["storage"]["path"] = str(tmp / "node.db")
    data["containers"] = [{"id": c["id"], "url": url} for c in data["containers"]]
    node = Node(parse_config(data, env={}))
    await node.start()
    try:
        base = f"http://127.0.0.1:{node.port}"
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/api/jobs", json={"containers": ["echo"], "data": {"n": 1}}) as r:
                job = (await r.json())["id"]
            async with s.get(f"{base}/api/jobs", params={"id": job, "wait": "5"}) as r:
                out["job"] = (await r.json())[0]
            async with s.get(f"{base}/health") as r:
                out["health"] = r.status
            out["after_serving_jobs"] = loaded()
            # A registry sign-in: the node composes the message, then checks the signature.
            from eth_account import Account
            from eth_account.messages import encode_defunct

            account = Account.create()
            async with s.post(f"{base}/api/auth/nonce", json={"address": account.address}) as r:
                issued = await r.json()
            signature = Account.sign_message(encode_defunct(text=issued["message"]), account.key).signature
            async with s.post(f"{base}/api/auth/verify",
                              json={"nonce": issued["nonce"], "signature": "0x" + bytes(signature).hex()}) as r:
                out["sign_in"] = [r.status, (await r.json()).get("address")]
            out["signer"] = account.address
    finally:
        await node.stop()
        await service.cleanup()
    print(json.dumps(out))


asyncio.run(main())
"""


def _run_default_node(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), json.dumps(DEFERRED)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_node_serves_jobs_without_loading_eth_account_py_ecc_or_eth_utils(tmp_path: Path) -> None:
    out = _run_default_node(tmp_path)
    assert out["after_import"] == []
    assert out["job"]["status"] == "success" and out["health"] == 200
    assert out["after_serving_jobs"] == []
    # The first request that needs them loads them, and is answered as before.
    assert out["sign_in"] == [200, out["signer"]]
