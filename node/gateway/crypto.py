"""Secrets at rest: passwords (scrypt), tokens and API keys (SHA-256), HMAC secret keys
(AES-GCM under the node's master key, since the server must recompute signatures)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from Crypto.Cipher import AES

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


class SecretBox:
    """AES-256-GCM with a random 96-bit nonce per value; `nonce ‖ ciphertext ‖ tag`, base64."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("master key must be 32 bytes")
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """Load the master key, creating it (mode 0600) on first use."""
        if path.exists():
            return cls(bytes.fromhex(path.read_text().strip()))
        key = os.urandom(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex())
        return cls(key)

    def derive(self, label: str) -> bytes:
        """A key for one purpose (e.g. the audit chain's HMAC), so the master key itself is
        used for nothing but sealing."""
        return hmac.new(self._key, f"node-daemon/{label}".encode(), hashlib.sha256).digest()

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
        return base64.b64encode(nonce + ciphertext + tag).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=raw[:12])
        return cipher.decrypt_and_verify(raw[12:-16], raw[-16:]).decode()


def sdk_signature(secret: str, timestamp: str, api_key: str, body: bytes) -> str:
    """hex(HMAC-SHA256(secret_key, f"{timestamp}:{api_key}:{sha256_hex(body)}"))."""
    message = f"{timestamp}:{api_key}:{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
