"""Who is calling the gateway: an SDK API key (HMAC-signed requests) or a dashboard session."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from aiohttp import web

from node.gateway import crypto
from node.gateway.store import ApiKey, GatewayStore
from node.logs import get_logger
from node.server.http import ApiError, bearer_token

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

    @property
    def workflow_scope(self) -> str | None:
        """The one workflow a workflow-bound API key may see (None: the whole org)."""
        return self.key.workflow_id if self.key is not None else None

    def check_workflow(self, workflow_id: str) -> None:
        scope = self.workflow_scope
        if scope is not None and workflow_id != scope:
            raise ApiError(403, f"API key is scoped to workflow {scope!r}")


class GatewayAuth:
    def __init__(self, store: GatewayStore, hmac_required: bool, max_age: float,
                 rotation_grace: float = 0.0) -> None:
        self._store = store
        self.hmac_required = hmac_required
        self.max_age = max_age
        self.rotation_grace = rotation_grace

    async def sdk(self, request: web.Request, body: bytes, *, allow_unsigned: bool = False) -> ApiKey:
        """Check `X-API-Key` (+ `X-Signature`, `X-Signature-Timestamp`). `allow_unsigned`: a
        read-only route the published SDK calls without a signature (status polls, the control
        plane's handshake) takes the key alone even when signatures are required."""
        api_key = request.headers.get("X-API-Key")
        signature = request.headers.get("X-Signature")
        timestamp = request.headers.get("X-Signature-Timestamp")
        if not api_key:
            raise ApiError(401, "Missing X-API-Key")
        key = await self._store.key(api_key)
        if key is None:
            raise ApiError(401, "Invalid API key")
        if signature is None and timestamp is None:
            if self.hmac_required and not allow_unsigned:
                log.warning("gateway.unsigned_rejected", key_id=key.id, path=request.path)
                raise ApiError(401, "Signed request required: X-Signature and X-Signature-Timestamp")
            log.warning("gateway.unsigned_request", key_id=key.id, path=request.path)
            return key
        if not signature or not timestamp:
            raise ApiError(401, "Both X-Signature and X-Signature-Timestamp are required")
        # ASCII digits, few of them: "²" passes isdigit() and 5,000 digits too, and int() refuses both (a 500)
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 20:
            raise ApiError(401, "X-Signature-Timestamp must be Unix epoch seconds")
        if abs(time.time() - int(timestamp)) > self.max_age:
            raise ApiError(401, "Signature timestamp expired")
        if not self._signed_by(key, timestamp, body, signature.lower()):
            raise ApiError(401, "Invalid signature")
        return key

    def _signed_by(self, key: ApiKey, timestamp: str, body: bytes, signature: str) -> bool:
        """The current secret, or the one it replaced while the rotation grace lasts (so calls an
        SDK already signed when the key rotated still land; it re-fetches on `key_rotated`)."""
        if hmac.compare_digest(crypto.sdk_signature(key.secret, timestamp, key.api_key, body), signature):
            return True
        previous = key.previous_secret
        in_grace = (previous is not None and key.rotated_at is not None
                    and time.time() - key.rotated_at <= self.rotation_grace)
        return in_grace and previous is not None and hmac.compare_digest(
            crypto.sdk_signature(previous, timestamp, key.api_key, body), signature)

    async def session(self, request: web.Request) -> Actor:
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, "Missing session token (Authorization: Bearer <token>)")
        user = await self._store.session_user(token)
        if user is None:
            raise ApiError(401, "Invalid or expired session token")
        return Actor("user", user["id"], None)

    async def org(self, request: web.Request, org_id: str, min_role: str = "viewer",
                  allow_key: bool = False, body: bytes = b"") -> Actor:
        """A member of `org_id` with at least `min_role`, or (where allowed) an API key of it.
        An API key (in X-API-Key, or as the Bearer token the SDK also sends) is never a session:
        on another org's route, or on a route keys may not use, it is refused with 403."""
        bearer = bearer_token(request) or ""
        if "X-API-Key" in request.headers or bearer.startswith(crypto.API_KEY_PREFIX):
            if "X-API-Key" not in request.headers:
                key = await self._store.key(bearer)
                if key is None:
                    raise ApiError(401, "Invalid API key")
            else:
                key = await self.sdk(request, body, allow_unsigned=not allow_key or request.method == "GET")
            if key.org_id != org_id:
                raise ApiError(403, "API key does not belong to this org")
            if not allow_key:
                raise ApiError(403, "API keys cannot use this route; sign in to the dashboard")
            return Actor("key", key.id, org_id, key=key)
        actor = await self.session(request)
        role = await self._store.role(org_id, actor.id)
        if role is None:
            raise ApiError(403, "Not a member of this org")
        if ROLES[role] < ROLES[min_role]:
            raise ApiError(403, f"Requires the {min_role} role")
        return Actor("user", actor.id, org_id, role)
