"""Who is calling the gateway: an SDK API key (HMAC-signed requests) or a dashboard session."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from aiohttp import web

from node.gateway import crypto
from node.gateway.store import ApiKey, GatewayStore
from node.logs import get_logger
from node.server.http import ApiError

log = get_logger(__name__)

ROLES = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


@dataclass(frozen=True)
class Actor:
    kind: str  # "user" | "key"
    id: str
    org_id: str | None
    role: str | None = None
    key: ApiKey | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


class GatewayAuth:
    def __init__(self, store: GatewayStore, hmac_required: bool, max_age: float) -> None:
        self._store = store
        self.hmac_required = hmac_required
        self.max_age = max_age

    async def sdk(self, request: web.Request, body: bytes, *, api_key: str | None = None,
                  signature: str | None = None, timestamp: str | None = None) -> ApiKey:
        """Check `X-API-Key` (+ `X-Signature`, `X-Signature-Timestamp`)."""
        api_key = api_key or request.headers.get("X-API-Key")
        signature = signature or request.headers.get("X-Signature")
        timestamp = timestamp or request.headers.get("X-Signature-Timestamp")
        if not api_key:
            raise ApiError(401, "Missing X-API-Key")
        key = await self._store.key(api_key)
        if key is None:
            raise ApiError(401, "Invalid API key")
        if signature is None and timestamp is None:
            if self.hmac_required:
                log.warning("gateway.unsigned_rejected", key_id=key.id, path=request.path)
                raise ApiError(401, "Signed request required: X-Signature and X-Signature-Timestamp")
            log.warning("gateway.unsigned_request", key_id=key.id, path=request.path)
            return key
        if not signature or not timestamp:
            raise ApiError(401, "Both X-Signature and X-Signature-Timestamp are required")
        if not timestamp.isdigit():
            raise ApiError(401, "X-Signature-Timestamp must be Unix epoch seconds")
        if abs(time.time() - int(timestamp)) > self.max_age:
            raise ApiError(401, "Signature timestamp expired")
        expected = crypto.sdk_signature(key.secret, timestamp, api_key, body)
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(401, "Invalid signature")
        return key

    async def session(self, request: web.Request) -> Actor:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise ApiError(401, "Missing session token (Authorization: Bearer <token>)")
        user = await self._store.session_user(header[7:])
        if user is None:
            raise ApiError(401, "Invalid or expired session token")
        return Actor("user", user["id"], None)

    async def org(self, request: web.Request, org_id: str, min_role: str = "viewer",
                  allow_key: bool = False, body: bytes = b"") -> Actor:
        """A member of `org_id` with at least `min_role`, or (where allowed) an API key of it."""
        if allow_key and "X-API-Key" in request.headers:
            key = await self.sdk(request, body)
            if key.org_id != org_id:
                raise ApiError(403, "API key does not belong to this org")
            return Actor("key", key.id, org_id, key=key)
        actor = await self.session(request)
        role = await self._store.role(org_id, actor.id)
        if role is None:
            raise ApiError(403, "Not a member of this org")
        if ROLES[role] < ROLES[min_role]:
            raise ApiError(403, f"Requires the {min_role} role")
        return Actor("user", actor.id, org_id, role)
