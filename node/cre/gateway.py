"""Dispatch to the CRE HTTP trigger gateway: a JSON-RPC `workflows.execute` request carrying a
JWT signed by an authorised EVM key.

Wire format, checked against Chainlink's Go code, which is what verifies it:

  body   {"id", "jsonrpc": "2.0", "method": "workflows.execute",
          "params": {"input": <the app's input>, "workflow": {"workflowID": "<64 hex>"}}}
  header Authorization: Bearer <JWT>
  JWT    header  {"alg": "ETH", "typ": "JWT"}
         payload {"digest": "0x" + hex(sha256(JCS of the request without `auth`)),
                  "iss": <signer address>, "iat": now, "exp": now + 300, "jti": <uuid>}
         signing input base64url(header) + "." + base64url(payload) (unpadded), signed as an
         EIP-191 personal message; signature = base64url(r ‖ s ‖ v) with v in {0, 1}.

Sources:
  * smartcontractkit/chainlink-common pkg/jsonrpc2/types.go, `Request.Digest` (since commit
    bb888fec/b1fd7ca4, Oct 2025, "Use canonical json for JSON RPC request"): jsonv2.Marshal of
    {jsonrpc, id, method, params} then `jsontext.Value.Canonicalize()`, i.e. RFC 8785 (JCS):
    keys sorted by UTF-16 code units at every level, numbers as ECMAScript writes them (so
    integers beyond 2^53 lose precision), strings minimally escaped. Before that change the
    digest was Go encoding/json of the struct (field order jsonrpc, id, method, params; raw
    params kept as sent; `<`, `>`, `&` escaped as \u003c, \u003e, \u0026). JCS does not
    escape them, so we hash and send `<&>` and non-ASCII text literally.
  * smartcontractkit/chainlink core/utils/jwt.go `VerifyRequestJWT` (alg "ETH", exp - iat at
    most 5 minutes, jti and iat required, digest compared to "0x" + Request.Digest()) and
    core/utils/eth_signatures.go `GetSignersEthAddress` (65-byte r‖s‖v, v 0/1 or 27/28, EIP-191
    prefix + keccak256); core/services/gateway/handlers/capabilities/v2 http_trigger_handler.go
    (params.input must be a JSON object or array, the request id non-empty without "/",
    workflowID lowercase hex) and workflow_metadata_handler.go (signer must be an authorised key
    of the workflow; each jti once).
  * the CRE CLI's simulator (smartcontractkit/cre-cli cmd/workflow/simulate/gateway.go) hashes
    the raw body bytes instead.

We send exactly the JCS bytes we hashed, so both readings agree: JCS of canonical JSON is itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from node.cre.jsjson import stringify
from node.logs import get_logger
from node.server import safejson

log = get_logger(__name__)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of a request (NotJsSafe names a value JCS cannot carry faithfully)."""
    return stringify(value).encode()


def build_request(workflow_id: str, request_id: str, payload: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "jsonrpc": "2.0",
        "method": "workflows.execute",
        "params": {"input": payload, "workflow": {"workflowID": workflow_id}},
    }


def make_jwt(body: bytes, private_key: str, now: int | None = None, lifetime: int = 300) -> str:
    # eth_account (~10 MB of the node, with the py_ecc tables it brings) is imported by the
    # functions that sign, not at the top: a node with no trigger signer never loads it.
    from eth_account import Account
    from eth_account.messages import encode_defunct

    account = Account.from_key(private_key)
    now = int(time.time()) if now is None else now
    header = {"alg": "ETH", "typ": "JWT"}
    claims = {
        "digest": "0x" + hashlib.sha256(body).hexdigest(),
        "iss": account.address,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    signing_input = f"{b64url(json.dumps(header, separators=(',', ':')).encode())}." \
                    f"{b64url(json.dumps(claims, separators=(',', ':')).encode())}"
    signed = account.sign_message(encode_defunct(text=signing_input))
    recovery = signed.v - 27 if signed.v >= 27 else signed.v
    sig = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([recovery])
    return f"{signing_input}.{b64url(sig)}"


@dataclass
class GatewayResult:
    status: int
    body: Any


class GatewayError(Exception):
    """The CRE gateway could not be reached, or did not answer in time (`timed_out`): not a
    refusal of the trigger but a failure upstream, which the trigger handler answers as a bad
    gateway (502) or a gateway timeout (504)."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


class TriggerDispatcher:
    def __init__(self, session: aiohttp.ClientSession, gateway_url: str, private_key: str, timeout: float) -> None:
        self._session = session
        self.gateway_url = gateway_url
        self._private_key = private_key
        self._timeout = timeout
        from eth_account import Account

        self.signer = Account.from_key(private_key).address

    async def execute(self, workflow_id: str, request_id: str, payload: Any) -> GatewayResult:
        body = canonical(build_request(workflow_id, request_id, payload))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {make_jwt(body, self._private_key)}"}
        try:
            async with self._session.post(self.gateway_url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise GatewayError(f"CRE gateway did not answer within {self._timeout:g}s", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise GatewayError(f"CRE gateway unreachable: {exc}") from None
        try:
            parsed = safejson.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")[:500]
        log.info("cre.trigger_sent", request_id=request_id, workflow_id=workflow_id, status=status)
        return GatewayResult(status, parsed)
