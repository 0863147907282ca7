"""The HTTP trigger in the CRE gateway's form: a JSON-RPC `workflows.execute` request with an
ETH-signed JWT, verified as Chainlink's gateway verifies it.

The wire format is the one `node/cre/gateway.py` sends (its docstring cites the Go sources):
the JWT's header is `{"alg": "ETH", "typ": "JWT"}`; its claims carry `digest` = "0x" +
sha256 of the request's RFC 8785 (JCS) bytes (the CRE CLI's simulator hashes the raw body
instead: both are accepted, each commits the signer to this request), `iss`, `iat`, `exp`
(at most 5 minutes after `iat`) and a `jti` used once; the signature is EIP-191 over
`base64url(header).base64url(claims)`, 65 bytes r‖s‖v. The recovered signer must be `iss` and one
of the `authorized_keys` the workflow's HTTP trigger subscribed with: a workflow that authorizes no
key cannot be triggered this way.

So `TriggerDispatcher` (the app bridge's `/api/cre/runtime/trigger`) can target this node itself:
point `cre.gateway_url` at `/api/cre/wasm/gateway` and the app <-> CRE loop runs in one process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from node.cre.jsjson import NotJsSafe, stringify
from node.errors import Invalid, Unauthenticated
from node.server import safejson

MAX_LIFETIME = 300  # seconds between iat and exp, as the gateway allows
SKEW = 30  # seconds of clock difference tolerated on iat
_WORKFLOW_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GatewayRequest:
    request_id: str
    input: Any
    workflow_id: str | None
    workflow_name: str | None
    signer: str  # checksummed address
    jti: str
    expires_at: int


def _b64(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, TypeError):
        raise Unauthenticated(f"JWT {what} is not base64url") from None


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise Unauthenticated(f"JWT {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"JWT {what} is not an object")
    return value


def parse(raw_body: bytes, authorization: str, now: float) -> GatewayRequest:
    """The request and its verified signer, or Invalid/Unauthenticated naming what is wrong."""
    try:
        body = safejson.loads(raw_body)
    except ValueError:
        raise Invalid("body: not JSON") from None
    if not isinstance(body, dict):
        raise Invalid("body: expected a JSON-RPC request object")
    if body.get("jsonrpc") != "2.0":
        raise Invalid('jsonrpc: must be "2.0"')
    if body.get("method") != "workflows.execute":
        raise Invalid('method: only "workflows.execute" is served')
    request_id = body.get("id")
    if not isinstance(request_id, str) or not request_id or "/" in request_id or len(request_id) > 200:
        raise Invalid("id: a non-empty string without '/' (at most 200 characters)")
    params = body.get("params")
    if not isinstance(params, dict):
        raise Invalid("params: required object")
    if not isinstance(params.get("input"), (dict, list)):
        raise Invalid("params.input: must be a JSON object or array")
    workflow = params.get("workflow")
    if not isinstance(workflow, dict):
        raise Invalid("params.workflow: required object")
    workflow_id = workflow.get("workflowID")
    workflow_name = workflow.get("workflowName")
    if workflow_id is not None and (not isinstance(workflow_id, str) or not _WORKFLOW_ID.fullmatch(workflow_id)):
        raise Invalid("params.workflow.workflowID: 64 lowercase hex characters")
    if workflow_name is not None and not isinstance(workflow_name, str):
        raise Invalid("params.workflow.workflowName: a string")
    if workflow_id is None and workflow_name is None:
        raise Invalid("params.workflow: workflowID or workflowName is required")

    if not authorization.startswith("Bearer "):
        raise Unauthenticated("Authorization: Bearer <JWT> is required")
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        raise Unauthenticated("Authorization: not a JWT")
    header = _json(_b64(parts[0], "header"), "header")
    claims = _json(_b64(parts[1], "claims"), "claims")
    if header.get("alg") != "ETH":
        raise Unauthenticated('JWT header: alg must be "ETH"')
    for claim, kind in (("digest", str), ("iss", str), ("jti", str), ("iat", int), ("exp", int)):
        if not isinstance(claims.get(claim), kind) or isinstance(claims.get(claim), bool):
            raise Unauthenticated(f"JWT claims: {claim} is required")
    iat, exp = claims["iat"], claims["exp"]
    if exp - iat > MAX_LIFETIME or exp <= iat:
        raise Unauthenticated(f"JWT claims: exp must be after iat and at most {MAX_LIFETIME}s later")
    if now > exp:
        raise Unauthenticated("JWT expired")
    if iat > now + SKEW:
        raise Unauthenticated("JWT claims: iat is in the future")
    request_view = {k: body[k] for k in ("jsonrpc", "id", "method", "params")}
    try:
        canonical = stringify(request_view).encode()
    except NotJsSafe as exc:
        raise Invalid(str(exc)) from None
    digests = {"0x" + hashlib.sha256(canonical).hexdigest(), "0x" + hashlib.sha256(raw_body).hexdigest()}
    if claims["digest"].lower() not in digests:
        raise Unauthenticated("JWT digest does not match the request")
    signature = _b64(parts[2], "signature")
    if len(signature) != 65:
        raise Unauthenticated("JWT signature: expected 65 bytes (r, s, v)")
    v = signature[64]
    if v in (0, 1):
        signature = signature[:64] + bytes([v + 27])
    try:
        signer = Account.recover_message(encode_defunct(text=f"{parts[0]}.{parts[1]}"), signature=signature)
    except Exception:  # noqa: BLE001 - any malformed signature is the caller's
        raise Unauthenticated("JWT signature does not verify") from None
    if signer.lower() != claims["iss"].lower():
        raise Unauthenticated("JWT signature is not by its iss")
    return GatewayRequest(request_id, params["input"], workflow_id, workflow_name, signer, claims["jti"], exp)
