"""A local stand-in for the CRE HTTP trigger gateway, on 127.0.0.1, written from Chainlink's
documented wire format (independently of node/cre/gateway.py). It verifies each request's JWT
cryptographically (digest of the body, EIP-191 signature recovering an authorised address,
expiry) and answers like the gateway."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.helpers import free_port


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeGateway:
    def __init__(self, authorized: set[str], delay: float = 0.0, status: int = 200) -> None:
        self.authorized = {a.lower() for a in authorized}
        self.delay = delay
        self.status = status
        self.received: list[dict] = []
        self.rejected: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def verify(self, body: bytes, auth: str) -> str | None:
        if not auth.startswith("Bearer "):
            return "no bearer token"
        parts = auth[7:].split(".")
        if len(parts) != 3:
            return "not a JWT"
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        if header != {"alg": "ETH", "typ": "JWT"}:
            return f"bad header {header}"
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        if claims["digest"] != "0x" + hashlib.sha256(canonical).hexdigest():
            return "digest mismatch"
        if not claims["iat"] <= time.time() + 5 <= claims["exp"] + 5:
            return "expired"
        sig = _unb64(parts[2])
        if len(sig) != 65 or sig[64] not in (0, 1):
            return "bad signature encoding"
        vrs = (sig[64] + 27, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"))
        signer = Account.recover_message(encode_defunct(text=f"{parts[0]}.{parts[1]}"), vrs=vrs)
        if signer.lower() not in self.authorized or signer.lower() != claims["iss"].lower():
            return f"signer {signer} not authorised"
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = self.verify(body, request.headers.get("Authorization", ""))
        if problem:
            self.rejected.append(problem)
            return web.json_response({"jsonrpc": "2.0", "error": {"code": -32600, "message": problem}}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        rpc = json.loads(body)
        self.received.append(rpc)
        if self.status != 200:
            return web.json_response({"jsonrpc": "2.0", "id": rpc["id"], "error": {"message": "boom"}},
                                     status=self.status)
        return web.json_response({"jsonrpc": "2.0", "id": rpc["id"], "result": {"status": "ACCEPTED"}})

    def start(self) -> FakeGateway:
        self._thread.start()

        async def boot() -> None:
            app = web.Application()
            app.router.add_post("/", self.handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            self.port = free_port()  # outside the ephemeral range: see tests.helpers.free_port
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
