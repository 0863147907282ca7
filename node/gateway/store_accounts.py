"""Accounts, sessions, orgs, members, invites and API keys of the gateway (part of `GatewayStore`)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from node.errors import Conflict, Forbidden, NotFound
from node.gateway import crypto
from node.gateway.store_rows import INVITE_TTL, SESSION_TTL, ApiKey, new_id
from node.secrets import SecretBox
from node.storage import Database
from node.timefmt import iso_utc as _iso


class AccountStore:
    db: Database
    _box: SecretBox  # seals API key secrets at rest
    _keys: dict[str, ApiKey]  # key hash -> key, cleared on any revoke/rotate/org delete

    # -- accounts -----------------------------------------------------------------------

    async def register(self, email: str, name: str, org_name: str, oauth: tuple[str, str] | None = None,
                       password_hash: str | None = None) -> dict[str, str]:
        """A user, their org and its first API key. The password arrives hashed: scrypt is CPU
        work for node/gateway/passwords.py's thread, never for the loop."""
        now = time.time()
        user_id, org_id = new_id("usr"), new_id("org")
        api_key, secret = crypto.new_token(crypto.API_KEY_PREFIX), crypto.new_token("nr_secret_", 32)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO gw_users (id, email, name, password_hash, oauth_provider, oauth_subject,"
                         " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (user_id, email.lower(), name, password_hash, oauth and oauth[0], oauth and oauth[1], now))
            conn.execute("INSERT INTO gw_orgs (id, name, created_at) VALUES (?, ?, ?)", (org_id, org_name, now))
            conn.execute("INSERT INTO gw_members (id, org_id, user_id, role, created_at) VALUES (?, ?, ?, 'owner', ?)",
                         (new_id("mem"), org_id, user_id, now))
            self._insert_key(conn, org_id, "default", api_key, secret, None, user_id, now)

        try:
            await self.db.run_in_transaction(op)
        except sqlite3.IntegrityError:
            raise Conflict("an account with this email already exists") from None
        return {"user_id": user_id, "org_id": org_id, "api_key": api_key, "secret_key": secret}

    async def user_by_email(self, email: str) -> sqlite3.Row | None:
        return await self.db.fetchone("SELECT * FROM gw_users WHERE email = ?", (email.lower(),))

    async def user_by_oauth(self, provider: str, subject: str) -> sqlite3.Row | None:
        return await self.db.fetchone("SELECT * FROM gw_users WHERE oauth_provider = ? AND oauth_subject = ?",
                                      (provider, subject))

    async def new_session(self, user_id: str) -> tuple[str, float]:
        token = crypto.new_token("sess_", 32)
        expires = time.time() + SESSION_TTL
        await self.db.execute("INSERT INTO gw_sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                              (crypto.token_hash(token), user_id, expires))
        return token, expires

    async def session_user(self, token: str) -> sqlite3.Row | None:
        return await self.db.fetchone(
            "SELECT u.* FROM gw_sessions s JOIN gw_users u ON u.id = s.user_id"
            " WHERE s.token_hash = ? AND s.expires_at > ?", (crypto.token_hash(token), time.time()))

    async def role(self, org_id: str, user_id: str) -> str | None:
        row = await self.db.fetchone("SELECT m.role FROM gw_members m JOIN gw_orgs o ON o.id = m.org_id"
                                     " WHERE m.org_id = ? AND m.user_id = ? AND o.deleted_at IS NULL",
                                     (org_id, user_id))
        return row[0] if row else None

    async def first_org(self, user_id: str) -> str | None:
        row = await self.db.fetchone("SELECT org_id FROM gw_members WHERE user_id = ? ORDER BY created_at LIMIT 1",
                                     (user_id,))
        return row[0] if row else None

    # -- orgs, members, invites ----------------------------------------------------------

    async def org(self, org_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_orgs WHERE id = ? AND deleted_at IS NULL", (org_id,))
        if row is None:
            return None
        return {"id": row["id"], "name": row["name"], "settings": json.loads(row["settings"]),
                "created_at": _iso(row["created_at"])}

    async def require_org(self, org_id: str) -> dict[str, Any]:
        org = await self.org(org_id)
        if org is None:
            raise NotFound("org not found")
        return org

    async def patch_org(self, org_id: str, name: str | None, settings: dict | None) -> None:
        if name is not None:
            await self.db.execute("UPDATE gw_orgs SET name = ? WHERE id = ?", (name, org_id))
        if settings is not None:
            await self.db.execute("UPDATE gw_orgs SET settings = ? WHERE id = ?", (json.dumps(settings), org_id))

    async def delete_org(self, org_id: str) -> None:
        await self.db.execute("UPDATE gw_orgs SET deleted_at = ? WHERE id = ?", (time.time(), org_id))
        await self.db.execute("UPDATE gw_api_keys SET revoked_at = ? WHERE org_id = ? AND revoked_at IS NULL",
                              (time.time(), org_id))
        self._keys.clear()

    async def members(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT m.id, m.role, m.created_at, u.id AS user_id, u.email, u.name"
                                      " FROM gw_members m JOIN gw_users u ON u.id = m.user_id WHERE m.org_id = ?"
                                      " ORDER BY m.created_at", (org_id,))
        return [{"id": r["id"], "user_id": r["user_id"], "email": r["email"], "name": r["name"], "role": r["role"],
                 "created_at": _iso(r["created_at"])} for r in rows]

    async def create_invite(self, org_id: str, email: str, role: str, invited_by: str) -> tuple[dict, str]:
        token = crypto.new_token("inv_", 24)
        invite_id, now = new_id("inv"), time.time()
        await self.db.execute(
            "INSERT INTO gw_invites (id, org_id, email, role, token_hash, status, invited_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (invite_id, org_id, email.lower(), role, crypto.token_hash(token), invited_by, now, now + INVITE_TTL))
        invite = await self.invite(invite_id)
        assert invite is not None  # the row written just above
        return invite, token

    async def invite(self, invite_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_invites WHERE id = ?", (invite_id,))
        return self._invite_view(row) if row else None

    async def org_invite(self, org_id: str, invite_id: str) -> dict[str, Any]:
        """Invite `invite_id` of `org_id` (NotFound for another org's)."""
        invite = await self.invite(invite_id)
        if invite is None or invite["org_id"] != org_id:
            raise NotFound("invite not found")
        return invite

    async def require_invite_by_token(self, token: str) -> dict[str, Any]:
        invite = await self.invite_by_token(token)
        if invite is None:
            raise NotFound("invite not found")
        return invite

    async def pending_invite(self, token: str) -> dict[str, Any]:
        """The invite of `token`, if it can still be accepted or declined."""
        invite = await self.require_invite_by_token(token)
        if invite["status"] != "pending":
            raise Conflict(f"invite is {invite['status']}")
        return invite

    async def invite_by_token(self, token: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_invites WHERE token_hash = ?", (crypto.token_hash(token),))
        return self._invite_view(row) if row else None

    @staticmethod
    def _invite_view(row: sqlite3.Row) -> dict[str, Any]:
        status = row["status"]
        if status == "pending" and row["expires_at"] < time.time():
            status = "expired"
        return {"id": row["id"], "org_id": row["org_id"], "email": row["email"], "role": row["role"],
                "status": status, "sent_count": row["sent_count"], "created_at": _iso(row["created_at"]),
                "expires_at": _iso(row["expires_at"])}

    async def set_invite_status(self, invite_id: str, status: str) -> None:
        await self.db.execute("UPDATE gw_invites SET status = ? WHERE id = ?", (status, invite_id))

    async def resend_invite(self, invite_id: str) -> str:
        token = crypto.new_token("inv_", 24)
        await self.db.execute("UPDATE gw_invites SET token_hash = ?, sent_count = sent_count + 1, expires_at = ?"
                              " WHERE id = ?", (crypto.token_hash(token), time.time() + INVITE_TTL, invite_id))
        return token

    async def accept_invite(self, invite: dict[str, Any], user_id: str) -> None:
        """Make `user_id` a member with the invite's role. An invite is for the email it was sent
        to (the token is a link anyone who saw it holds), and it is used up in the same write
        transaction that checks it is still pending, so concurrent accepts make one member
        (issue 22, item 14: four accounts accepting one admin invite at once became four admins)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            user = conn.execute("SELECT email FROM gw_users WHERE id = ?", (user_id,)).fetchone()
            row = conn.execute("SELECT email, status, expires_at FROM gw_invites WHERE id = ?",
                               (invite["id"],)).fetchone()
            if row is None:
                raise NotFound("invite not found")
            if user is None or user[0].lower() != row["email"].lower():
                raise Forbidden("This invite was sent to another email address; sign in as its recipient")
            status = "expired" if row["status"] == "pending" and row["expires_at"] < now else row["status"]
            if status != "pending":
                raise Conflict(f"invite is {status}")
            conn.execute("UPDATE gw_invites SET status = 'accepted' WHERE id = ?", (invite["id"],))
            conn.execute("INSERT INTO gw_members (id, org_id, user_id, role, created_at) VALUES (?, ?, ?, ?, ?)"
                         " ON CONFLICT (org_id, user_id) DO NOTHING",
                         (new_id("mem"), invite["org_id"], user_id, invite["role"], now))

        await self.db.run_in_transaction(op)

    async def decline_invite(self, invite_id: str) -> None:
        """Decline a pending invite (Conflict if it stopped being pending meanwhile)."""
        if not await self.db.execute("UPDATE gw_invites SET status = 'declined' WHERE id = ? AND status = 'pending'"
                                     " AND expires_at >= ?", (invite_id, time.time())):
            raise Conflict("invite is no longer pending")

    # -- API keys ------------------------------------------------------------------------

    def _insert_key(self, conn: sqlite3.Connection, org_id: str, name: str, api_key: str, secret: str,
                    workflow_id: str | None, created_by: str | None, now: float) -> str:
        key_id = new_id("key")
        conn.execute("INSERT INTO gw_api_keys (id, org_id, name, key_hash, key_prefix, secret_sealed, workflow_id,"
                     " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (key_id, org_id, name, crypto.token_hash(api_key), api_key[:12], self._box.seal(secret),
                      workflow_id, created_by, now))
        return key_id

    async def create_key(self, org_id: str, name: str, workflow_id: str | None, created_by: str) -> dict[str, Any]:
        api_key, secret = crypto.new_token(crypto.API_KEY_PREFIX), crypto.new_token("nr_secret_", 32)
        key_id = await self.db.run_in_transaction(
            lambda conn: self._insert_key(conn, org_id, name, api_key, secret, workflow_id, created_by, time.time()))
        return {"id": key_id, "name": name, "api_key": api_key, "secret_key": secret, "workflow_id": workflow_id}

    async def key(self, api_key: str) -> ApiKey | None:
        digest = crypto.token_hash(api_key)
        cached = self._keys.get(digest)
        if cached is not None:
            return cached
        row = await self.db.fetchone(
            "SELECT k.* FROM gw_api_keys k JOIN gw_orgs o ON o.id = k.org_id"
            " WHERE k.key_hash = ? AND k.revoked_at IS NULL AND o.deleted_at IS NULL", (digest,))
        if row is None:
            return None
        previous = row["prev_secret_sealed"]
        found = ApiKey(row["id"], row["org_id"], api_key, self._box.open(row["secret_sealed"]), row["workflow_id"],
                       row["key_version"], self._box.open(previous) if previous else None, row["rotated_at"])
        self._keys[digest] = found
        return found

    async def keys(self, org_id: str, workflow_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM gw_api_keys WHERE org_id = ?"
        params: list[Any] = [org_id]
        if workflow_id is not None:
            sql += " AND workflow_id = ?"
            params.append(workflow_id)
        rows = await self.db.fetchall(sql + " ORDER BY created_at", params)
        return [{"id": r["id"], "name": r["name"], "prefix": r["key_prefix"], "workflow_id": r["workflow_id"],
                 "created_at": _iso(r["created_at"]), "rotated_at": _iso(r["rotated_at"]),
                 "revoked": r["revoked_at"] is not None, "last_used_at": _iso(r["last_used_at"]),
                 "request_count": r["request_count"], "cost_usd": r["cost_usd"]} for r in rows]

    async def key_row(self, org_id: str, key_id: str) -> sqlite3.Row | None:
        return await self.db.fetchone("SELECT * FROM gw_api_keys WHERE org_id = ? AND id = ?", (org_id, key_id))

    async def require_key_row(self, org_id: str, key_id: str) -> sqlite3.Row:
        row = await self.key_row(org_id, key_id)
        if row is None:
            raise NotFound(f"api key {key_id!r} not found")
        return row

    async def revoke_key(self, key_id: str) -> None:
        await self.db.execute("UPDATE gw_api_keys SET revoked_at = ? WHERE id = ?", (time.time(), key_id))
        self._keys.clear()

    async def rotate_key(self, key_id: str) -> str:
        secret = crypto.new_token("nr_secret_", 32)
        await self.db.execute("UPDATE gw_api_keys SET prev_secret_sealed = secret_sealed, secret_sealed = ?,"
                              " rotated_at = ?, key_version = key_version + 1 WHERE id = ?",
                              (self._box.seal(secret), time.time(), key_id))
        self._keys.clear()
        return secret

    async def note_key_use(self, key_id: str, cost: float = 0.0) -> None:
        await self.db.execute("UPDATE gw_api_keys SET request_count = request_count + 1, cost_usd = cost_usd + ?,"
                              " last_used_at = ? WHERE id = ?", (cost, time.time(), key_id))
