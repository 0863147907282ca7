"""Proof of identity for POST /api/v1/auth/oauth/register.

The route signs up, or signs in, the user named by `(provider, subject)`. Naming it proves
nothing, so the caller must prove it one of two ways, both configured by the operator
(`gateway.oauth` in config.yaml):

- an OpenID Connect `id_token` in the body, signed by a key of the provider's JWKS (from a
  configured URL or file), RS256 or ES256, whose `iss`, `aud` and `exp` are right, whose `sub`
  is the subject and whose (verified) `email` is the email of the request;
- or the header `X-Backend-Secret` carrying the configured secret: a backend of the operator's
  (a dashboard that ran the OAuth flow itself) vouches for the identity.

With neither configured the route answers 404: OAuth sign-up is off, never open.

It reads the request (the backend header), but refuses in the domain's terms (node/errors.py:
NotFound, Unauthenticated, Invalid, Unavailable when the provider's keys cannot be fetched).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from node.errors import DomainError, Invalid, NotFound, Unauthenticated, Unavailable
from node.gateway.config import OAuthConfig, OAuthProvider
from node.logs import get_logger

if TYPE_CHECKING:  # PyJWT and cryptography (some 20 MB of RSS) are imported when a token is verified
    import jwt

log = get_logger(__name__)

BACKEND_HEADER = "X-Backend-Secret"
_KTY = {"RS256": "RSA", "ES256": "EC"}
_MAX_JWKS_BYTES = 1 << 20
_MIN_REFRESH_SECONDS = 30.0


@dataclass
class _KeySet:
    keys: list[jwt.PyJWK] = field(default_factory=list)
    fetched_at: float = 0.0


class OAuthVerifier:
    def __init__(self, config: OAuthConfig, session: aiohttp.ClientSession | None = None) -> None:
        self._providers = dict(config.providers)
        self._secret = config.backend_secret.get_secret_value().encode() if config.backend_secret else None
        self._session = session
        self._cache: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._providers) or self._secret is not None

    async def prove(self, request: web.Request, provider: str, subject: str, email: str,
                    id_token: str | None) -> str:
        """How the identity was proven ("id_token" | "backend"); a domain error otherwise."""
        if not self.enabled:
            raise NotFound(f"Not found: {request.method} {request.path} (OAuth sign-up is not configured)")
        offered = request.headers.get(BACKEND_HEADER)
        if offered is not None:
            if self._secret is None or not hmac.compare_digest(offered.encode(), self._secret):
                log.warning("gateway.oauth_refused", provider=provider, reason="bad backend secret")
                raise Unauthenticated(f"Invalid {BACKEND_HEADER}")
            return "backend"
        if not id_token:
            raise Unauthenticated(f"id_token: required (or a trusted backend's {BACKEND_HEADER})")
        config = self._providers.get(provider)
        if config is None:
            raise Invalid(f"provider: {provider!r} is not a configured OAuth provider")
        import jwt

        try:
            claims = await self._verify(provider, config, id_token)
        except DomainError:
            raise
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("gateway.oauth_refused", provider=provider, reason=str(exc))
            raise Unauthenticated(f"id_token: {exc}") from None
        if claims.get("sub") != subject:
            raise Unauthenticated("id_token: its subject is not the subject of the request")
        token_email = claims.get("email")
        if not isinstance(token_email, str) or token_email.lower() != email.lower():
            raise Unauthenticated("id_token: its email is not the email of the request")
        if str(claims.get("email_verified", True)).lower() == "false":
            raise Unauthenticated("id_token: the provider has not verified this email")
        return "id_token"

    async def _verify(self, name: str, config: OAuthProvider, token: str) -> dict[str, Any]:
        import jwt

        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in config.algorithms:
            raise Unauthenticated(f"id_token: algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        candidates = await self._keys(name, config, kid, _KTY[alg])
        if not candidates:
            raise Unauthenticated("id_token: signed with an unknown key")
        last: Exception | None = None
        for key in candidates:
            try:
                return jwt.decode(token, key.key, algorithms=[alg], audience=config.audiences, issuer=config.issuer,
                                  leeway=config.leeway_seconds,
                                  options={"require": ["exp", "iat", "iss", "aud", "sub"]})
            except jwt.InvalidSignatureError as exc:
                last = exc
        raise last or jwt.InvalidSignatureError("Signature verification failed")

    async def _keys(self, name: str, config: OAuthProvider, kid: str | None, kty: str) -> list[jwt.PyJWK]:
        def matching(keyset: _KeySet) -> list[jwt.PyJWK]:
            return [k for k in keyset.keys if k.key_type == kty and (kid is None or k.key_id == kid)]

        keyset = self._cache.get(name)
        now = time.monotonic()
        stale = keyset is None or now - keyset.fetched_at > config.jwks_cache_seconds
        if keyset is not None and not stale and (matching(keyset) or now - keyset.fetched_at < _MIN_REFRESH_SECONDS):
            return matching(keyset)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = self._cache.get(name)
            if current is keyset or current is None:
                current = _KeySet(await self._fetch(name, config), time.monotonic())
                self._cache[name] = current
        return matching(current)

    async def _fetch(self, name: str, config: OAuthProvider) -> list[jwt.PyJWK]:
        import jwt

        try:
            if config.jwks_file is not None:
                raw = await asyncio.to_thread(Path(config.jwks_file).read_bytes)
            else:
                assert config.jwks_url is not None
                session = self._session or aiohttp.ClientSession()
                try:
                    async with session.get(config.jwks_url, allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        if resp.status != 200:
                            raise OSError(f"HTTP {resp.status}")
                        raw = await resp.content.read(_MAX_JWKS_BYTES)
                finally:
                    if session is not self._session:
                        await session.close()
            keys = []
            for item in json.loads(raw)["keys"]:
                try:
                    keys.append(jwt.PyJWK.from_dict(item))
                except jwt.PyJWTError:
                    continue  # a key type or curve we do not use
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
            log.error("gateway.jwks_unavailable", provider=name, error=str(exc))
            raise Unavailable(f"the signing keys of provider {name!r} are unavailable") from None
        log.info("gateway.jwks_loaded", provider=name, keys=len(keys))
        return keys
