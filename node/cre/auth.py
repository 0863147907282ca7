"""Authentication of the CRE bridge (seed 000) and of the backend callbacks (seed 001 §3)."""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.cre import signing
from node.cre.config import CreConfig
from node.cre.store import CreStore
from node.fields import reveal
from node.server.http import ApiError, bearer_token

MAX_NONCE = 200


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class RuntimeAuth:
    """Bearer KEEPR_API_KEY, plus the HMAC headers when strict mode is on (or when sent)."""

    def __init__(self, config: CreConfig, store: CreStore, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._api_key = reveal(config.api_key)
        self._hmac_secret = reveal(config.hmac_secret)
        self._store = store
        self._clock = clock

    def bearer_ok(self, request: web.Request) -> bool:
        key = self._api_key
        if not key:
            return False
        token = bearer_token(request)
        return token is not None and _same(token, key)

    async def check(self, request: web.Request, body: Any | None) -> None:
        config = self._config
        if not self._api_key:
            raise ApiError(503, "CRE runtime bridge is not configured (KEEPR_API_KEY is not set)")
        if not self.bearer_ok(request):
            raise ApiError(401, "Missing or invalid bearer token")
        timestamp = request.headers.get("x-cre-timestamp")
        nonce = request.headers.get("x-cre-nonce")
        signature = request.headers.get("x-cre-signature")
        if timestamp is None and nonce is None and signature is None:
            if config.enforce_hmac and not config.allow_unsigned_when_hmac_configured:
                raise ApiError(401, "Signed request required: x-cre-timestamp, x-cre-nonce, x-cre-signature")
            return
        missing = [n for n, v in (("x-cre-timestamp", timestamp), ("x-cre-nonce", nonce),
                                  ("x-cre-signature", signature)) if not v]
        if missing:
            raise ApiError(401, f"Incomplete request signature: missing {', '.join(missing)}")
        assert timestamp is not None and nonce is not None and signature is not None
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise ApiError(401, "x-cre-timestamp must be Unix epoch milliseconds")
        if abs(self._clock() * 1000 - int(timestamp)) > config.skew_seconds * 1000:
            raise ApiError(401, "Request timestamp outside the allowed window")
        if len(nonce) > MAX_NONCE:
            raise ApiError(401, f"x-cre-nonce longer than {MAX_NONCE} characters")
        try:
            text = signing.body_string(body)
        except signing.NotJsSafe as exc:  # no JS signer can have signed it: say why, not "bad signature"
            raise ApiError(400, str(exc), {"field": exc.path}) from None
        key = self._hmac_secret or self._api_key
        if not signing.verify_text(key, timestamp, nonce, text, signature):
            raise ApiError(401, "Invalid request signature")
        # A timestamp is accepted until timestamp + skew, so its nonce is kept until then.
        if not await self._store.use_nonce(nonce, int(timestamp) / 1000 + config.skew_seconds):
            raise ApiError(409, "Nonce already used")


class CallbackAuth:
    """The backend API key as `x-api-key`, or HTTP Basic (the key as password, or as the whole
    credential)."""

    def __init__(self, backend_key: str | None, app_key: str | None) -> None:
        self._backend_key = backend_key
        self._app_key = app_key

    def _basic(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded

    def check(self, request: web.Request, *, reading: bool = False) -> None:
        if not self._backend_key:
            raise ApiError(503, "CRE callbacks are not configured (CRE_BACKEND_API_KEY is not set)")
        key = self._backend_key
        given = request.headers.get("x-api-key")
        if given is not None and _same(given, key):
            return
        auth = request.headers.get("Authorization", "")
        basic = self._basic(auth)
        if basic is not None and (_same(basic, key) or _same(basic.partition(":")[2], key)):
            return
        # The app reads callbacks back with its own bearer key.
        bearer = bearer_token(request)
        if reading and self._app_key and bearer is not None and _same(bearer, self._app_key):
            return
        raise ApiError(401, "Missing or invalid API key")
