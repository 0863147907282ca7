"""The gateway's secrets at rest: passwords (scrypt), tokens and API keys (SHA-256), and the
SDK's request signature. HMAC secret keys are sealed instead (the server must recompute
signatures), by the node's master key: `SecretBox` in node/secrets.py."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
    except ValueError:
        return False
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


API_KEY_PREFIX = "nr_live_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str, nbytes: int = 24) -> str:
    return f"{prefix}{secrets.token_urlsafe(nbytes)}"


def sdk_signature(secret: str, timestamp: str, api_key: str, body: bytes) -> str:
    """hex(HMAC-SHA256(secret_key, f"{timestamp}:{api_key}:{sha256_hex(body)}"))."""
    message = f"{timestamp}:{api_key}:{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
