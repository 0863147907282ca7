"""Sign-in of the registry (part of `RegistryStore`): single-use EIP-4361 nonces, bearer tokens
(stored hashed) and the accounts they create."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

from node.gateway.crypto import token_hash
from node.registry.store_schema import iso, new_key
from node.storage import Database


class AccountStore:
    db: Database

    # -- auth ----------------------------------------------------------------------------------

    async def new_nonce(self, ttl: float) -> tuple[str, float]:
        """An alphanumeric nonce (EIP-4361 wants at least 8 alphanumeric characters)."""
        nonce, expires = secrets.token_hex(16), time.time() + ttl
        await self.db.execute("INSERT INTO reg_nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires))
        return nonce, expires

    async def bind_nonce(self, nonce: str, address: str, message: str) -> None:
        """Remember the sign-in message the node composed for this nonce and address."""
        await self.db.execute("UPDATE reg_nonces SET address = ?, message = ? WHERE nonce = ?", (address, message, nonce))

    async def nonce_info(self, nonce: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_nonces WHERE nonce = ?", (nonce,))
        return dict(row) if row else None

    async def use_nonce(self, nonce: str) -> str:
        """'ok', 'unknown', 'used' or 'expired'; marks it used (single use, atomically)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT expires_at, used_at FROM reg_nonces WHERE nonce = ?", (nonce,)).fetchone()
            if row is None:
                return "unknown"
            if row[1] is not None:
                return "used"
            conn.execute("UPDATE reg_nonces SET used_at = ? WHERE nonce = ?", (now, nonce))
            return "expired" if row[0] < now else "ok"

        return await self.db.run_in_transaction(op)

    async def sign_in(self, address: str, ttl: float) -> tuple[str, float]:
        token, expires, now = secrets.token_urlsafe(32), time.time() + ttl, time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO reg_accounts (address, deployment_key, created_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (address) DO NOTHING", (address, new_key("DEPLOYMENT-KEY"), now))
            conn.execute("INSERT INTO reg_tokens (token_hash, address, expires_at) VALUES (?, ?, ?)",
                         (token_hash(token), address, expires))

        await self.db.run_in_transaction(op)
        return token, expires

    async def token_address(self, token: str) -> str | None:
        row = await self.db.fetchone("SELECT address FROM reg_tokens WHERE token_hash = ? AND expires_at > ?",
                                     (token_hash(token), time.time()))
        return row[0] if row else None

    async def account(self, address: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_accounts WHERE address = ?", (address,))
        if row is None:
            return None
        return {"address": row["address"], "deploymentKey": row["deployment_key"], "createdAt": iso(row["created_at"])}
