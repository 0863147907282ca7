"""Data access of the gateway. Budget operations (reserve, settle, track) run as one sync unit
inside a single SQLite write transaction, so concurrent reservations can never overspend."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from node.gateway import crypto
from node.gateway.schema import MIGRATIONS
from node.storage import Database
from node.timefmt import iso_utc as _iso

SESSION_TTL = 24 * 3600
INVITE_TTL = 7 * 24 * 3600


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class ApiKey:
    id: str
    org_id: str
    api_key: str
    secret: str
    workflow_id: str | None
    version: int = 1
    previous_secret: str | None = None
    rotated_at: float | None = None


@dataclass(frozen=True)
class Reservation:
    granted: bool
    reason: str
    reservation_id: str | None
    remaining_usd: float | None
    expires_at: float | None = None


def wf_key(org_id: str, workflow_id: str) -> str:
    """Workflow ids are per org: rows are keyed `org_id/workflow_id` ('/' is not allowed in ids),
    so two tenants can use the same id and neither can tell that the other does."""
    return f"{org_id}/{workflow_id}"


def public_id(key: str | None) -> str | None:
    return None if key is None else key.split("/", 1)[-1]


def workflow_view(row: sqlite3.Row | dict) -> dict[str, Any]:
    budget = row["budget_usd"]
    remaining = None if budget is None else max(0.0, budget - row["spent_usd"] - row["reserved_usd"])
    return {
        "id": public_id(row["id"]), "org_id": row["org_id"], "name": row["name"], "status": row["status"],
        "budget_usd": budget, "spent_usd": round(row["spent_usd"], 10), "reserved_usd": round(row["reserved_usd"], 10),
        "remaining_usd": None if remaining is None else round(remaining, 10),
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
    }


def policy_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "org_id": row["org_id"], "name": row["name"], "priority": row["priority"],
            "enabled": bool(row["enabled"]), "action": row["action"], "reason": row["reason"],
            "match": json.loads(row["match"]), "template_id": row["template_id"],
            "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"])}


class GatewayStore:
    def __init__(self, db: Database, box: crypto.SecretBox) -> None:
        self.db = db
        self._box = box
        self._keys: dict[str, ApiKey] = {}  # key hash -> key (HMAC check on every SDK call)

    async def start(self) -> None:
        await self.db.migrate(MIGRATIONS)

    # -- accounts -----------------------------------------------------------------------

    async def register(self, email: str, name: str, org_name: str, password: str | None = None,
                       oauth: tuple[str, str] | None = None, password_hash: str | None = None) -> dict[str, str]:
        now = time.time()
        user_id, org_id = new_id("usr"), new_id("org")
        if password and password_hash is None:
            password_hash = crypto.hash_password(password)
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
            raise ValueError("an account with this email already exists") from None
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

    async def member(self, org_id: str, member_id: str) -> sqlite3.Row | None:
        return await self.db.fetchone("SELECT * FROM gw_members WHERE org_id = ? AND id = ?", (org_id, member_id))

    async def set_member_role(self, member_id: str, role: str) -> None:
        await self.db.execute("UPDATE gw_members SET role = ? WHERE id = ?", (role, member_id))

    async def remove_member(self, member_id: str) -> None:
        await self.db.execute("DELETE FROM gw_members WHERE id = ?", (member_id,))

    async def count_owners(self, org_id: str) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM gw_members WHERE org_id = ? AND role = 'owner'", (org_id,))
        return row[0]

    async def create_invite(self, org_id: str, email: str, role: str, invited_by: str) -> tuple[dict, str]:
        token = crypto.new_token("inv_", 24)
        invite_id, now = new_id("inv"), time.time()
        await self.db.execute(
            "INSERT INTO gw_invites (id, org_id, email, role, token_hash, status, invited_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (invite_id, org_id, email.lower(), role, crypto.token_hash(token), invited_by, now, now + INVITE_TTL))
        return await self.invite(invite_id), token

    async def invite(self, invite_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_invites WHERE id = ?", (invite_id,))
        return self._invite_view(row) if row else None

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
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE gw_invites SET status = 'accepted' WHERE id = ?", (invite["id"],))
            conn.execute("INSERT INTO gw_members (id, org_id, user_id, role, created_at) VALUES (?, ?, ?, ?, ?)"
                         " ON CONFLICT (org_id, user_id) DO NOTHING",
                         (new_id("mem"), invite["org_id"], user_id, invite["role"], now))

        await self.db.run_in_transaction(op)

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

    # -- workflows and budgets -------------------------------------------------------------

    async def create_workflow(self, org_id: str, workflow_id: str | None, name: str,
                              budget: float | None) -> dict[str, Any]:
        workflow_id = workflow_id or new_id("wf")
        now = time.time()
        try:
            await self.db.execute("INSERT INTO gw_workflows (id, org_id, name, status, budget_usd, created_at,"
                                  " updated_at) VALUES (?, ?, ?, 'active', ?, ?, ?)",
                                  (wf_key(org_id, workflow_id), org_id, name, budget, now, now))
        except sqlite3.IntegrityError:
            raise ValueError(f"workflow {workflow_id!r} already exists") from None
        return await self.workflow(workflow_id, org_id)

    async def workflow(self, workflow_id: str, org_id: str | None) -> dict[str, Any] | None:
        """`workflow_id` of `org_id`; with `org_id` None, `workflow_id` is a row key (org/id)."""
        key = workflow_id if org_id is None else wf_key(org_id, workflow_id)
        row = await self.db.fetchone("SELECT * FROM gw_workflows WHERE id = ?", (key,))
        return None if row is None else workflow_view(row)

    async def workflow_orgs(self, workflow_id: str) -> list[str]:
        """The orgs that have a workflow called `workflow_id` (for the node's own bindings)."""
        rows = await self.db.fetchall("SELECT org_id FROM gw_workflows WHERE id = org_id || '/' || ?", (workflow_id,))
        return [r["org_id"] for r in rows]

    async def workflows(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_workflows WHERE org_id = ? ORDER BY created_at", (org_id,))
        return [workflow_view(r) for r in rows]

    async def patch_workflow(self, workflow_id: str, name: str | None, budget: float | None,
                             budget_set: bool) -> None:
        if name is not None:
            await self.db.execute("UPDATE gw_workflows SET name = ?, updated_at = ? WHERE id = ?",
                                  (name, time.time(), workflow_id))
        if budget_set:
            await self.db.execute("UPDATE gw_workflows SET budget_usd = ?, updated_at = ? WHERE id = ?",
                                  (budget, time.time(), workflow_id))

    async def set_status(self, workflow_id: str, status: str) -> None:
        await self.db.execute("UPDATE gw_workflows SET status = ?, updated_at = ? WHERE id = ?",
                              (status, time.time(), workflow_id))

    @staticmethod
    def _expire(conn: sqlite3.Connection, workflow_id: str, now: float) -> None:
        expired = conn.execute("SELECT COALESCE(SUM(amount_usd), 0) FROM gw_reservations"
                               " WHERE workflow_id = ? AND status = 'held' AND expires_at <= ?",
                               (workflow_id, now)).fetchone()[0]
        if expired:
            conn.execute("UPDATE gw_reservations SET status = 'expired' WHERE workflow_id = ? AND status = 'held'"
                         " AND expires_at <= ?", (workflow_id, now))
            conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                         (expired, workflow_id))

    async def reserve(self, workflow_id: str, amount: float, ttl: float, execution_id: str | None) -> Reservation:
        """Atomically hold `amount` of the workflow's budget (or refuse)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> Reservation:
            self._expire(conn, workflow_id, now)
            row = conn.execute("SELECT status, budget_usd, spent_usd, reserved_usd FROM gw_workflows WHERE id = ?",
                               (workflow_id,)).fetchone()
            if row is None:
                return Reservation(False, "unknown workflow", None, None)
            status, budget, spent, reserved = row
            if status != "active":
                return Reservation(False, f"workflow is {status}", None, None)
            remaining = None if budget is None else budget - spent - reserved
            if remaining is not None and amount > remaining + 1e-12:
                return Reservation(False, "budget exhausted", None, max(0.0, remaining))
            reservation_id = new_id("res")
            conn.execute("INSERT INTO gw_reservations (id, workflow_id, amount_usd, status, execution_id, created_at,"
                         " expires_at) VALUES (?, ?, ?, 'held', ?, ?, ?)",
                         (reservation_id, workflow_id, amount, execution_id, now, now + ttl))
            conn.execute("UPDATE gw_workflows SET reserved_usd = reserved_usd + ? WHERE id = ?", (amount, workflow_id))
            return Reservation(True, "reserved", reservation_id,
                               None if remaining is None else max(0.0, remaining - amount), now + ttl)

        return await self.db.run_in_transaction(op)

    async def track(self, org_id: str, event: dict[str, Any], api_key_id: str | None) -> dict[str, Any]:
        """Record a cost event; settle its reservation if it names one; create an unknown
        workflow in the key's org. Returns the workflow after the event."""
        now = time.time()
        event_id = new_id("evt")

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            workflow_id = wf_key(org_id, event["workflow_id"])
            row = conn.execute("SELECT org_id FROM gw_workflows WHERE id = ?", (workflow_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO gw_workflows (id, org_id, name, status, created_at, updated_at)"
                             " VALUES (?, ?, ?, 'active', ?, ?)", (workflow_id, org_id, event["workflow_id"], now, now))
            reservation_id = event.get("reservation_id")
            if reservation_id:
                held = conn.execute("SELECT amount_usd FROM gw_reservations WHERE id = ? AND workflow_id = ?"
                                    " AND status = 'held'", (reservation_id, workflow_id)).fetchone()
                if held is not None:
                    conn.execute("UPDATE gw_reservations SET status = 'settled' WHERE id = ?", (reservation_id,))
                    conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                                 (held[0], workflow_id))
            conn.execute("UPDATE gw_workflows SET spent_usd = spent_usd + ?, updated_at = ? WHERE id = ?",
                         (event["cost_usd"], now, workflow_id))
            conn.execute("INSERT INTO gw_events (id, org_id, workflow_id, model, cost_usd, input_tokens, output_tokens,"
                         " latency_ms, metadata, api_key_id, reservation_id, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (event_id, org_id, event["workflow_id"], event.get("model"), event["cost_usd"],
                          event.get("input_tokens"), event.get("output_tokens"), event.get("latency_ms"),
                          json.dumps(event.get("metadata")) if event.get("metadata") is not None else None,
                          api_key_id, reservation_id, now))
            if api_key_id:
                conn.execute("UPDATE gw_api_keys SET cost_usd = cost_usd + ? WHERE id = ?",
                             (event["cost_usd"], api_key_id))
            return workflow_view(conn.execute("SELECT * FROM gw_workflows WHERE id = ?", (workflow_id,)).fetchone())

        workflow = await self.db.run_in_transaction(op)
        return {"event_id": event_id, "workflow": workflow}

    async def release(self, reservation_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            held = conn.execute("SELECT workflow_id, amount_usd FROM gw_reservations WHERE id = ? AND status = 'held'",
                                (reservation_id,)).fetchone()
            if held is not None:
                conn.execute("UPDATE gw_reservations SET status = 'released' WHERE id = ?", (reservation_id,))
                conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                             (held[1], held[0]))

        await self.db.run_in_transaction(op)

    async def expire_all(self) -> None:
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            for (workflow_id,) in conn.execute("SELECT DISTINCT workflow_id FROM gw_reservations"
                                               " WHERE status = 'held' AND expires_at <= ?", (now,)).fetchall():
                self._expire(conn, workflow_id, now)

        await self.db.run_in_transaction(op)

    async def burn_rate(self, org_id: str, workflow_id: str, window: float = 3600) -> float:
        row = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0) FROM gw_events WHERE org_id = ?"
                                     " AND workflow_id = ? AND created_at > ?",
                                     (org_id, workflow_id, time.time() - window))
        return row[0] / window

    # -- executions ------------------------------------------------------------------------

    async def record_execution(self, org_id: str, kind: str, allowed: bool, reason: str, *,
                               workflow_id: str | None = None, policy_id: str | None = None,
                               model: str | None = None, tool: str | None = None, container: str | None = None,
                               cost: float | None = None, reservation_id: str | None = None,
                               api_key_id: str | None = None, job_id: str | None = None) -> str:
        execution_id = new_id("exe")
        await self.db.execute(
            "INSERT INTO gw_executions (id, org_id, workflow_id, kind, allowed, reason, policy_id, model, tool,"
            " container, estimated_cost_usd, reservation_id, api_key_id, job_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (execution_id, org_id, workflow_id, kind, int(allowed), reason, policy_id, model, tool, container, cost,
             reservation_id, api_key_id, job_id, time.time()))
        return execution_id

    async def executions(self, org_id: str, workflow_id: str | None, limit: int) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM gw_executions WHERE org_id = ?", [org_id]
        if workflow_id:
            sql += " AND workflow_id = ?"
            params.append(workflow_id)
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [self._execution_view(r) for r in rows]

    async def execution(self, org_id: str, execution_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_executions WHERE org_id = ? AND id = ?", (org_id, execution_id))
        return self._execution_view(row) if row else None

    @staticmethod
    def _execution_view(r: sqlite3.Row) -> dict[str, Any]:
        return {"id": r["id"], "workflow_id": r["workflow_id"], "kind": r["kind"], "allowed": bool(r["allowed"]),
                "reason": r["reason"], "policy_id": r["policy_id"], "model": r["model"], "tool": r["tool"],
                "container": r["container"], "estimated_cost_usd": r["estimated_cost_usd"],
                "reservation_id": r["reservation_id"], "api_key_id": r["api_key_id"], "job_id": r["job_id"],
                "created_at": _iso(r["created_at"])}

    async def allowed_count(self, org_id: str, workflow_id: str, seconds: float) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM gw_executions WHERE org_id = ? AND workflow_id = ?"
                                     " AND allowed = 1 AND created_at > ?",
                                     (org_id, workflow_id, time.time() - seconds))
        return row[0]

    def rate_counter(self, org_id: str):
        """The policies' rate counter for one org's workflows."""
        return lambda workflow_id, seconds: self.allowed_count(org_id, workflow_id, seconds)

    # -- policies --------------------------------------------------------------------------

    async def policies(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_policies WHERE org_id = ? ORDER BY priority, created_at, id",
                                      (org_id,))
        return [policy_view(r) for r in rows]

    async def policy(self, org_id: str, policy_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE org_id = ? AND id = ?", (org_id, policy_id))
        return policy_view(row) if row else None

    async def policy_any_org(self, policy_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE id = ?", (policy_id,))
        return policy_view(row) if row else None

    async def create_policy(self, org_id: str, body: dict[str, Any], template_id: str | None = None) -> dict:
        policy_id, now = new_id("pol"), time.time()
        await self.db.execute(
            "INSERT INTO gw_policies (id, org_id, name, priority, enabled, action, reason, match, template_id,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (policy_id, org_id, body["name"], body["priority"], int(body.get("enabled", True)), body["action"],
             body.get("reason"), json.dumps(body.get("match") or {}), template_id, now, now))
        return await self.policy(org_id, policy_id)

    async def update_policy(self, policy_id: str, changes: dict[str, Any]) -> None:
        columns = {"name": "name", "priority": "priority", "enabled": "enabled", "action": "action",
                   "reason": "reason", "match": "match"}
        sets, params = [], []
        for key, value in changes.items():
            sets.append(f"{columns[key]} = ?")
            params.append(json.dumps(value) if key == "match" else int(value) if key == "enabled" else value)
        if sets:
            await self.db.execute(f"UPDATE gw_policies SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                                  (*params, time.time(), policy_id))

    async def delete_policy(self, policy_id: str) -> None:
        await self.db.execute("DELETE FROM gw_policies WHERE id = ?", (policy_id,))

    async def template_policy(self, org_id: str, template_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE org_id = ? AND template_id = ?",
                                     (org_id, template_id))
        return policy_view(row) if row else None

    # -- audit -----------------------------------------------------------------------------

    async def audit(self, org_id: str | None, actor: str, action: str, target_type: str, target_id: str | None,
                    before: Any = None, after: Any = None) -> None:
        await self.db.execute(
            "INSERT INTO gw_audit (org_id, actor, action, target_type, target_id, before, after, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (org_id, actor, action, target_type, target_id,
             None if before is None else json.dumps(before, default=str),
             None if after is None else json.dumps(after, default=str), time.time()))

    async def audit_log(self, org_id: str, limit: int, before_id: int | None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM gw_audit WHERE org_id = ?", [org_id]
        if before_id is not None:
            sql += " AND id < ?"
            params.append(before_id)
        rows = await self.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [{"id": r["id"], "actor": r["actor"], "action": r["action"], "target_type": r["target_type"],
                 "target_id": r["target_id"], "before": r["before"] and json.loads(r["before"]),
                 "after": r["after"] and json.loads(r["after"]), "created_at": _iso(r["created_at"])} for r in rows]

    # -- alerts ----------------------------------------------------------------------------

    async def raise_alert(self, org_id: str, workflow_id: str, threshold: float, message: str) -> dict | None:
        alert_id = new_id("alr")
        changed = await self.db.execute(
            "INSERT INTO gw_alerts (id, org_id, workflow_id, threshold, message, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'active', ?) ON CONFLICT (workflow_id, threshold) DO NOTHING",
            (alert_id, org_id, wf_key(org_id, workflow_id), threshold, message, time.time()))
        if not changed:
            return None
        return {"id": alert_id, "workflow_id": workflow_id, "threshold": threshold, "message": message}

    async def alerts(self, org_id: str, include_dismissed: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM gw_alerts WHERE org_id = ?" + ("" if include_dismissed else " AND status = 'active'")
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC", (org_id,))
        return [{"id": r["id"], "workflow_id": public_id(r["workflow_id"]), "threshold": r["threshold"],
                 "message": r["message"],
                 "status": r["status"], "created_at": _iso(r["created_at"])} for r in rows]

    async def dismiss_alert(self, org_id: str, alert_id: str) -> bool:
        return bool(await self.db.execute("UPDATE gw_alerts SET status = 'dismissed', dismissed_at = ?"
                                          " WHERE org_id = ? AND id = ?", (time.time(), org_id, alert_id)))

    async def channels(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_alert_channels WHERE org_id = ? ORDER BY created_at", (org_id,))
        return [{"id": r["id"], "type": r["type"], "url": r["url"], "enabled": bool(r["enabled"]),
                 "created_at": _iso(r["created_at"])} for r in rows]

    async def add_channel(self, org_id: str, kind: str, url: str, enabled: bool) -> dict[str, Any]:
        channel_id = new_id("chn")
        await self.db.execute("INSERT INTO gw_alert_channels (id, org_id, type, url, enabled, created_at)"
                              " VALUES (?, ?, ?, ?, ?, ?)", (channel_id, org_id, kind, url, int(enabled), time.time()))
        return {"id": channel_id, "type": kind, "url": url, "enabled": enabled}

    async def notification_settings(self, org_id: str, user_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT settings FROM gw_notification_settings WHERE org_id = ? AND user_id = ?",
                                     (org_id, user_id))
        return json.loads(row[0]) if row else None

    async def org_notification_settings(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT settings FROM gw_notification_settings WHERE org_id = ?", (org_id,))
        return [json.loads(r[0]) for r in rows]

    async def set_notification_settings(self, org_id: str, user_id: str, settings: dict[str, Any]) -> None:
        await self.db.execute("INSERT INTO gw_notification_settings (org_id, user_id, settings, updated_at)"
                              " VALUES (?, ?, ?, ?) ON CONFLICT (org_id, user_id) DO UPDATE SET"
                              " settings = excluded.settings, updated_at = excluded.updated_at",
                              (org_id, user_id, json.dumps(settings), time.time()))

    # -- dashboard -------------------------------------------------------------------------

    async def dashboard(self, org_id: str) -> dict[str, Any]:
        day = time.time() - 86400
        wf = await self.db.fetchall("SELECT status, COUNT(*) FROM gw_workflows WHERE org_id = ? GROUP BY status",
                                    (org_id,))
        spend = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM gw_events WHERE org_id = ?",
                                       (org_id,))
        spend_day = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0) FROM gw_events WHERE org_id = ?"
                                           " AND created_at > ?", (org_id, day))
        execs = await self.db.fetchone("SELECT COUNT(*), COALESCE(SUM(allowed = 0), 0) FROM gw_executions"
                                       " WHERE org_id = ? AND created_at > ?", (org_id, day))
        alerts = await self.db.fetchone("SELECT COUNT(*) FROM gw_alerts WHERE org_id = ? AND status = 'active'",
                                        (org_id,))
        return {"workflows": {r[0]: r[1] for r in wf}, "spend_usd_total": spend[0], "events_total": spend[1],
                "spend_usd_24h": spend_day[0], "executions_24h": execs[0], "denied_24h": execs[1],
                "active_alerts": alerts[0]}

    # -- SDK execution ids and control-plane sequence numbers ---------------------------------

    async def reservation_by_execution(self, execution_id: str) -> dict[str, Any] | None:
        """The reservation `/gate` minted for an SDK execution id (its `reservation_id`)."""
        row = await self.db.fetchone("SELECT r.*, w.org_id FROM gw_reservations r JOIN gw_workflows w"
                                     " ON w.id = r.workflow_id WHERE r.execution_id = ?", (execution_id,))
        return None if row is None else {**dict(row), "workflow_id": public_id(row["workflow_id"])}

    async def control_seqs(self) -> dict[str, int]:
        return {r["org_id"]: r["seq"] for r in await self.db.fetchall("SELECT org_id, seq FROM gw_control_seq")}

    async def save_control_seq(self, org_id: str, seq: int) -> None:
        await self.db.execute("INSERT INTO gw_control_seq (org_id, seq) VALUES (?, ?)"
                              " ON CONFLICT (org_id) DO UPDATE SET seq = MAX(seq, excluded.seq)", (org_id, seq))
