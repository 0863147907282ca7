"""A local stand-in for the CRE HTTP trigger gateway, on 127.0.0.1, written from Chainlink's Go
verifier (independently of node/cre/gateway.py and node/cre/jsjson.py):

  * chainlink-common pkg/jsonrpc2/types.go `Request.Digest`: sha256 of the RFC 8785 (JCS) form of
    {jsonrpc, id, method, params}, recomputed here from the *parsed* body, so the bytes on the
    wire do not matter, only what they mean; JCS numbers are IEEE doubles (an integer beyond 2^53
    is rounded, as Go rounds it) and strings are not HTML-escaped;
  * chainlink core/utils/jwt.go `VerifyRequestJWT`: alg ETH, jti/iat/exp required, exp - iat at
    most 5 minutes, not expired; eth_signatures.go: 65-byte r‖s‖v (v 0/1 or 27/28), EIP-191;
  * the http trigger handler: method workflows.execute, id non-empty without "/", params.input
    an object or array, workflowID lowercase hex; the signer an authorised key; each jti once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from decimal import ROUND_FLOOR, Decimal

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.helpers import free_port


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _es_number(value: float) -> str:
    """ECMAScript Number::toString, found by trying precisions until the value round-trips."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _es_number(-value)
    exact = Decimal(value)
    for precision in range(1, 18):  # fewest digits that read back as the value; closest, then even
        scale = Decimal(1).scaleb(exact.adjusted() - precision + 1)
        below = (exact / scale).to_integral_value(ROUND_FLOOR) * scale
        found = sorted((c for c in (below, below + scale) if float(c) == value),
                       key=lambda c: (abs(c - exact), (c / scale) % 2))
        if found:
            break
    sign_, digit_tuple, exponent = found[0].normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = exponent + k
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    tail = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return (digits[0] + ("." + digits[1:] if k > 1 else "")) + tail


def jcs(value) -> str:
    """RFC 8785 canonical JSON of a parsed value."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return _es_number(float(value))  # JCS numbers are doubles: big integers round, as in Go
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    keys = sorted(value, key=lambda k: [u for u in k.encode("utf-16-be")])
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k]) for k in keys) + "}"


def request_digest(rpc: dict) -> str:
    """chainlink-common jsonrpc2 Request.Digest(): `auth` excluded."""
    request = {"jsonrpc": rpc.get("jsonrpc"), "id": rpc.get("id"), "method": rpc.get("method"),
               "params": rpc.get("params")}
    return hashlib.sha256(jcs(request).encode()).hexdigest()


class FakeGateway:
    def __init__(self, authorized: set[str], delay: float = 0.0, status: int = 200) -> None:
        self.authorized = {a.lower() for a in authorized}
        self.delay = delay
        self.status = status
        self.received: list[dict] = []
        self.raw: list[bytes] = []
        self.rejected: list[str] = []
        self.seen_jti: set[str] = set()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def verify(self, rpc: dict, auth: str) -> str | None:
        if not auth.startswith("Bearer "):
            return "no bearer token"
        parts = auth[7:].split(".")
        if len(parts) != 3:
            return "not a JWT"
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        if header.get("alg") != "ETH":
            return f"bad header {header}"
        if claims.get("digest") != "0x" + request_digest(rpc):
            return "JWT digest does not match request digest"
        if not claims.get("jti"):
            return "JWT ID (jti) is required but missing"
        if not isinstance(claims.get("iat"), int) or not isinstance(claims.get("exp"), int):
            return "iat and exp are required"
        if claims["exp"] - claims["iat"] > 300:
            return "expiry duration exceeds maximum allowed 5 minutes"
        if claims["exp"] <= time.time():
            return "expired"
        sig = bytearray(_unb64(parts[2]))
        if len(sig) != 65:
            return "invalid signature: signature length must be 65 bytes"
        if sig[64] in (27, 28):
            sig[64] -= 27
        if sig[64] not in (0, 1):
            return "invalid signature: invalid V component"
        vrs = (sig[64] + 27, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"))
        signer = Account.recover_message(encode_defunct(text=f"{parts[0]}.{parts[1]}"), vrs=vrs)
        if signer.lower() not in self.authorized:
            return f"signer {signer} not authorised"
        if claims["jti"] in self.seen_jti:
            return "JWT token has already been used"
        self.seen_jti.add(claims["jti"])
        return None

    @staticmethod
    def check_request(rpc: dict) -> str | None:
        if rpc.get("jsonrpc") != "2.0" or rpc.get("method") != "workflows.execute":
            return "not a workflows.execute JSON-RPC 2.0 request"
        if not rpc.get("id") or "/" in rpc["id"]:
            return "request id empty or with '/'"
        params = rpc.get("params") or {}
        if not isinstance(params.get("input"), (dict, list)):
            return "'params' must be {} or []"
        workflow_id = (params.get("workflow") or {}).get("workflowID", "")
        if workflow_id != workflow_id.lower() or len(workflow_id.removeprefix("0x")) != 64:
            return "workflowID must be lowercase 64 hex"
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append(body)
        rpc = json.loads(body)
        problem = self.check_request(rpc) or self.verify(rpc, request.headers.get("Authorization", ""))
        if problem:
            self.rejected.append(problem)
            return web.json_response({"jsonrpc": "2.0", "error": {"code": -32600, "message": problem}}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
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
