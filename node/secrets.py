"""The node's master key and what it seals: secrets the node must read back (the gateway's API
secret keys, CRE workflow secrets, agent keys), AES-256-GCM under one 32-byte key kept in a
file beside the database (top-level `master_key_path`).

It lives here, not in a subsystem, because several use it: the gateway and CRE each hold the
same `SecretBox`, and a node running only one of them still needs the key. One-way digests of
passwords and tokens (the gateway's) stay in node/gateway/crypto.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from Crypto.Cipher import AES


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
