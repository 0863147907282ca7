"""CRE tables: runtime records, decisions, replay nonces, the action queue, callbacks."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.canonical import stable_json
from node.errors import Conflict
from node.storage import Database, Migration
from node.storage.batch import GroupCommitter
from node.timefmt import iso_utc as _iso

MIGRATIONS = [
    Migration(
        "cre.0001",
        """
        CREATE TABLE cre_runtime_records (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow TEXT NOT NULL,
            kind TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            payload TEXT NOT NULL,
            payload_hash TEXT NOT NULL,
            source TEXT,
            created_at REAL NOT NULL,
            UNIQUE (workflow, kind, idempotency_key)
        );
        CREATE INDEX cre_records_read ON cre_runtime_records (kind, workflow, id);
        CREATE TABLE cre_runtime_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            decision TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status TEXT NOT NULL,
            action_id INTEGER,
            created_at REAL NOT NULL,
            UNIQUE (workflow, idempotency_key)
        );
        CREATE TABLE cre_runtime_replay_nonces (
            nonce TEXT PRIMARY KEY,
            seen_at REAL NOT NULL
        );
        CREATE INDEX cre_nonces_age ON cre_runtime_replay_nonces (seen_at);
        CREATE TABLE cre_actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            dedupe_key TEXT UNIQUE,
            decision_workflow TEXT,
            decision_key TEXT,
            vault_address TEXT,
            group_id TEXT,
            action_type TEXT NOT NULL,
            action TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'running', 'succeeded', 'failed')),
            lease_owner TEXT,
            lease_expires_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            job_id TEXT,
            result TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX cre_actions_status ON cre_actions (status, id);
        CREATE TABLE cre_callbacks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL,
            body TEXT NOT NULL,
            question_id TEXT,
            agent_id TEXT,
            tx_hash TEXT,
            received_at REAL NOT NULL
        );
        CREATE INDEX cre_callbacks_action ON cre_callbacks (action, id)
        """,
    ),
    # A nonce is kept until its request's timestamp + skew (when the timestamp stops being
    # accepted), not for a fixed time after it was seen. Rows from before have 0: see start().
    Migration(
        "cre.0002",
        """
        ALTER TABLE cre_runtime_replay_nonces ADD COLUMN expires_at REAL NOT NULL DEFAULT 0;
        CREATE INDEX cre_nonces_expiry ON cre_runtime_replay_nonces (expires_at)
        """,
    ),
]


def content_hash(value: Any) -> str:
    return hashlib.sha256(stable_json(value).encode()).hexdigest()


@dataclass(frozen=True)
class Stored:
    inserted: bool
    action_id: int | None = None


class CreStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._writes = GroupCommitter(db)
        self._clock = clock
        self._nonces: dict[str, float] = {}  # nonce -> until when it is kept (epoch seconds)

    async def start(self, window: float) -> None:
        await self._db.migrate(MIGRATIONS)
        # Rows written before cre.0002 carry no expiry: their timestamp was at most `window`
        # after seen_at, so seen_at + 2 * window is a safe bound.
        await self._db.execute("UPDATE cre_runtime_replay_nonces SET expires_at = seen_at + ? WHERE expires_at = 0",
                               (2 * window,))
        rows = await self._db.fetchall("SELECT nonce, expires_at FROM cre_runtime_replay_nonces WHERE expires_at >= ?",
                                       (self._clock(),))
        self._nonces = {r[0]: r[1] for r in rows}

    # -- replay nonces ----------------------------------------------------------------

    async def use_nonce(self, nonce: str, expires_at: float) -> bool:
        """Record a nonce kept until `expires_at` (its request's timestamp + skew); False if it
        is already held. The check and the claim happen in one step on the event loop (no await
        between them), so two concurrent requests with one nonce cannot both pass; the row is
        written with the next commit."""
        now = self._clock()
        held = self._nonces.get(nonce)
        if held is not None and now <= held:
            return False
        self._nonces[nonce] = expires_at
        await self._writes.submit(lambda conn: conn.execute(
            "INSERT INTO cre_runtime_replay_nonces (nonce, seen_at, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (nonce) DO UPDATE SET seen_at = excluded.seen_at, expires_at = excluded.expires_at",
            (nonce, now, expires_at)))
        return True

    async def prune_nonces(self, window: float = 0.0) -> int:
        """Forget nonces whose request timestamps are no longer accepted (`window` is unused:
        each nonce carries its own expiry)."""
        now = self._clock()
        self.forget_nonces(now)
        return await self._db.execute("DELETE FROM cre_runtime_replay_nonces WHERE expires_at < ?", (now,))

    def forget_nonces(self, now: float) -> None:
        """Drop the in-memory copies of nonces expired by `now` (the node's pruner deletes the rows
        at the same cutoff: `ExpiryRule.forget`)."""
        self._nonces = {n: t for n, t in self._nonces.items() if t >= now}

    # -- ingest -----------------------------------------------------------------------

    async def ingest(self, workflow: str, kind: str, key: str, payload: Any, source: str | None) -> bool:
        digest = content_hash(payload)
        row = (workflow, kind, key, json.dumps(payload), digest, source, time.time())

        def op(conn) -> str | None:
            cursor = conn.execute(
                "INSERT INTO cre_runtime_records (workflow, kind, idempotency_key, payload, payload_hash, source,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", row)
            if cursor.rowcount:
                return None
            found = conn.execute(
                "SELECT payload_hash FROM cre_runtime_records WHERE workflow = ? AND kind = ? AND idempotency_key = ?",
                (workflow, kind, key)).fetchone()
            return found[0] if found else digest

        existing = await self._writes.submit(op)
        if existing is None:
            return True
        if existing != digest:
            raise Conflict(f"idempotencyKey {key!r} was already stored with a different payload")
        return False

    async def records(self, kind: str | None, workflow: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if workflow:
            where.append("workflow = ?")
            params.append(workflow)
        sql = "SELECT * FROM cre_runtime_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._db.fetchall(sql, (*params, limit))
        return [
            {
                "id": r["id"],
                "workflow": r["workflow"],
                "kind": r["kind"],
                "idempotencyKey": r["idempotency_key"],
                "payload": json.loads(r["payload"]),
                "source": r["source"],
                "createdAt": _iso(r["created_at"]),
            }
            for r in rows
        ]

    # -- decisions and actions ----------------------------------------------------------

    async def decide(
        self, workflow: str, key: str, decision: Any, action: dict[str, Any] | None
    ) -> tuple[Stored, bool]:
        """Store a decision (and its action). Returns (stored, action_is_new)."""
        request_hash = content_hash({"decision": decision, "enqueueAction": action})
        now = time.time()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT request_hash, action_id FROM cre_runtime_decisions WHERE workflow = ? AND idempotency_key = ?",
                (workflow, key),
            )
            if row is not None:
                if row[0] != request_hash:
                    raise Conflict(f"idempotencyKey {key!r} was already stored with a different decision")
                return Stored(False, row[1]), False
            action_id, new_action = None, False
            if action is not None:
                action_id, new_action = await self._enqueue(tx, workflow, key, action, now)
            await tx.execute(
                "INSERT INTO cre_runtime_decisions (workflow, idempotency_key, decision, request_hash, status,"
                " action_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (workflow, key, json.dumps(decision), request_hash,
                 "action_enqueued" if action_id is not None else "stored", action_id, now),
            )
        return Stored(True, action_id), new_action

    async def _enqueue(self, tx, workflow: str, key: str, action: dict[str, Any], now: float) -> tuple[int, bool]:
        dedupe = action.get("dedupeKey")
        if dedupe:
            row = await tx.fetchone("SELECT id FROM cre_actions WHERE dedupe_key = ?", (dedupe,))
            if row is not None:
                return row[0], False
        await tx.execute(
            "INSERT INTO cre_actions (dedupe_key, decision_workflow, decision_key, vault_address, group_id,"
            " action_type, action, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (dedupe, workflow, key, action.get("vaultAddress"), action.get("groupId"), action["actionType"],
             json.dumps(action.get("action", {})), now, now),
        )
        row = await tx.fetchone("SELECT last_insert_rowid()")
        return row[0], True

    async def decision(self, workflow: str, key: str) -> dict[str, Any] | None:
        row = await self._db.fetchone(
            "SELECT * FROM cre_runtime_decisions WHERE workflow = ? AND idempotency_key = ?", (workflow, key))
        if row is None:
            return None
        return {"workflow": row["workflow"], "idempotencyKey": row["idempotency_key"],
                "decision": json.loads(row["decision"]), "status": row["status"], "actionId": row["action_id"],
                "createdAt": _iso(row["created_at"])}

    async def action(self, action_id: int) -> dict[str, Any] | None:
        row = await self._db.fetchone("SELECT * FROM cre_actions WHERE id = ?", (action_id,))
        return _action(row) if row else None

    async def actions(self, status: str | None, action_type: str | None, limit: int) -> list[dict[str, Any]]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if action_type:
            where.append("action_type = ?")
            params.append(action_type)
        sql = "SELECT * FROM cre_actions" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._db.fetchall(sql + " ORDER BY id LIMIT ?", (*params, limit))
        return [_action(r) for r in rows]

    async def claim(self, worker: str, limit: int, lease: float, types: list[str] | None,
                    exclude_types: list[str]) -> list[dict[str, Any]]:
        """Claim queued actions (or ones whose lease expired) for a worker, atomically."""
        now = time.time()
        where = "(status = 'queued' OR (status = 'claimed' AND lease_expires_at < ?))"
        params: list[Any] = [now]
        if types:
            where += f" AND action_type IN ({','.join('?' * len(types))})"
            params += types
        if exclude_types:
            where += f" AND action_type NOT IN ({','.join('?' * len(exclude_types))})"
            params += exclude_types
        async with self._db.transaction() as tx:
            rows = await self._db.fetchall(f"SELECT id FROM cre_actions WHERE {where} ORDER BY id LIMIT ?",
                                           (*params, limit))
            ids = [r[0] for r in rows]
            for action_id in ids:
                await tx.execute(
                    "UPDATE cre_actions SET status = 'claimed', lease_owner = ?, lease_expires_at = ?,"
                    " attempts = attempts + 1, updated_at = ? WHERE id = ?",
                    (worker, now + lease, now, action_id),
                )
        return [a for a in [await self.action(i) for i in ids] if a]

    async def ack(self, action_id: int, worker: str, ok: bool, result: Any, error: str | None) -> str:
        """Finish a claimed action. Returns 'ok', 'missing' or 'not-owner'."""
        async with self._db.transaction() as tx:
            row = await tx.fetchone("SELECT status, lease_owner FROM cre_actions WHERE id = ?", (action_id,))
            if row is None:
                return "missing"
            if row[0] != "claimed" or row[1] != worker:
                return "not-owner"
            await tx.execute(
                "UPDATE cre_actions SET status = ?, result = ?, error = ?, lease_expires_at = NULL, updated_at = ?"
                " WHERE id = ?",
                ("succeeded" if ok else "failed", json.dumps(result), error, time.time(), action_id),
            )
        return "ok"

    async def set_action_state(self, action_id: int, status: str, *, job_id: str | None = None,
                               result: Any = None, error: str | None = None) -> None:
        await self._db.execute(
            "UPDATE cre_actions SET status = ?, job_id = COALESCE(?, job_id), result = ?, error = ?,"
            " attempts = attempts + (? = 'running'), updated_at = ? WHERE id = ?",
            (status, job_id, None if result is None else json.dumps(result), error, status, time.time(), action_id),
        )

    async def actions_to_run(self, types: list[str]) -> list[dict[str, Any]]:
        """Queued (or interrupted 'running') actions of container-routed types, for recovery."""
        if not types:
            return []
        marks = ",".join("?" * len(types))
        rows = await self._db.fetchall(
            f"SELECT * FROM cre_actions WHERE status IN ('queued', 'running') AND action_type IN ({marks}) ORDER BY id",
            types,
        )
        return [_action(r) for r in rows]

    # -- callbacks ------------------------------------------------------------------------

    async def add_callback(self, action: str, body: dict[str, Any]) -> int:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO cre_callbacks (action, body, question_id, agent_id, tx_hash, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (action, json.dumps(body), body.get("questionId") or body.get("marketId"), body.get("agentId"),
                 body.get("txHash"), time.time()),
            )
            row = await tx.fetchone("SELECT last_insert_rowid()")
        assert row is not None  # last_insert_rowid() always answers one row
        return row[0]

    async def callbacks(self, action: str, filters: dict[str, str], limit: int) -> list[dict[str, Any]]:
        where, params = ["action = ?"], [action]
        for column, value in filters.items():
            where.append(f"{column} = ?")
            params.append(value)
        rows = await self._db.fetchall(
            f"SELECT * FROM cre_callbacks WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [{"id": r["id"], "action": r["action"], "body": json.loads(r["body"]),
                 "receivedAt": _iso(r["received_at"])} for r in rows]


def _action(row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "actionType": row["action_type"],
        "action": json.loads(row["action"]),
        "vaultAddress": row["vault_address"],
        "groupId": row["group_id"],
        "dedupeKey": row["dedupe_key"],
        "status": row["status"],
        "leaseOwner": row["lease_owner"],
        "leaseExpiresAt": row["lease_expires_at"],
        "attempts": row["attempts"],
        "jobId": row["job_id"],
        "result": None if row["result"] is None else json.loads(row["result"]),
        "error": row["error"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
    }
