"""The audit log (part of `GatewayStore`): appended as a keyed hash chain per org (see
audit_chain.py), read back filtered the way the SDK's `runtime.audit.list()` asks, verified
link by link, and exported to JSON-lines files by jobs a Supervisor task runs."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from node.gateway.audit_chain import CONTENT, ChainWalk, row_hash
from node.gateway.store_rows import new_id
from node.storage import Database
from node.timefmt import iso_utc as _iso

PAGE = 2000  # rows per read while exporting: memory stays bounded on any chain
VERIFY_PAGE = 500  # rows hashed per step of a verify walk: about 20 ms of the event loop at a time

# What the SDK calls `event_type` and `decision`, derived from our action names (ADR-009's three
# governance categories; every other action is its own event type).
EVENT_TYPE_SQL = ("CASE WHEN action IN ('execution.allowed', 'execution.denied', 'execution.require_approval')"
                  " THEN 'authorization_decision' WHEN action IN ('approval.approved', 'approval.denied')"
                  " THEN 'approval_decision' WHEN action IN ('approval.consumed', 'approval.expired')"
                  " THEN 'execution_lifecycle' ELSE action END")
DECISION_SQL = ("CASE action WHEN 'execution.allowed' THEN 'allow' WHEN 'execution.denied' THEN 'deny'"
                " WHEN 'execution.require_approval' THEN 'require_approval' WHEN 'approval.approved'"
                " THEN 'approved' WHEN 'approval.denied' THEN 'denied' END")
OUTCOMES = {"execution.denied": "denied", "approval.denied": "denied", "approval.expired": "failure"}
SELECT = f"SELECT *, {EVENT_TYPE_SQL} AS event_type, {DECISION_SQL} AS decision FROM gw_audit"


def sdk_row(r: sqlite3.Row) -> dict[str, Any]:
    """A row as the SDK's `AuditEntry.from_wire` reads it, plus our own before/after."""
    after = json.loads(r["after"]) if r["after"] else None
    details = after if isinstance(after, dict) else {}
    actor_type, _, actor_id = r["actor"].partition(":")
    execution_id = details.get("execution_id") or (r["target_id"] if r["target_type"] == "execution" else None)
    return {"id": str(r["id"]), "timestamp": _iso(r["created_at"]), "action": r["action"],
            "event_type": r["event_type"], "actor": r["actor"], "actor_label": r["actor"],
            "actor_type": actor_type, "actor_id": actor_id or actor_type,
            "resource_type": r["target_type"], "resource_id": r["target_id"] or "",
            "outcome": OUTCOMES.get(r["action"], "success"), "decision": r["decision"],
            "policy_id": details.get("policy_id"), "execution_id": execution_id,
            "tool_name": details.get("tool"), "reason_code": details.get("reason"),
            "workflow_id": details.get("workflow_id"),
            "metadata": {"before": json.loads(r["before"]) if r["before"] else None, "after": after},
            "previous_event_hash": r["prev_hash"], "current_event_hash": r["hash"],
            # the dashboard's original names for the same row
            "target_type": r["target_type"], "target_id": r["target_id"], "after": after,
            "before": json.loads(r["before"]) if r["before"] else None, "created_at": _iso(r["created_at"])}


class AuditStore:
    db: Database
    _audit_key: bytes  # derived from the node's master key: see audit_chain.py

    # -- appending ---------------------------------------------------------------------------

    async def audit(self, org_id: str | None, actor: str, action: str, target_type: str, target_id: str | None,
                    before: Any = None, after: Any = None) -> None:
        row = {"org_id": org_id, "actor": actor, "action": action, "target_type": target_type,
               "target_id": target_id, "before": None if before is None else json.dumps(before, default=str),
               "after": None if after is None else json.dumps(after, default=str), "created_at": time.time()}

        def append(conn: sqlite3.Connection) -> None:
            # One write transaction: the org's last hash and the new row's id cannot move under us.
            last = conn.execute("SELECT hash FROM gw_audit WHERE org_id IS ? ORDER BY id DESC LIMIT 1",
                                (org_id,)).fetchone()
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'gw_audit'").fetchone()
            full = {**row, "id": (seq[0] if seq else 0) + 1}
            prev = last[0] if last else None
            conn.execute("INSERT INTO gw_audit (id, org_id, actor, action, target_type, target_id, before, after,"
                         " created_at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (*[full[name] for name in CONTENT], prev, row_hash(self._audit_key, prev, full)))

        await self.db.run_in_transaction(append)

    async def chain_unhashed(self) -> int:
        """Rows written before the chain existed get their hashes once, at start (the update
        trigger is lifted for that transaction only). Afterwards a row without a hash is a break."""
        key = self._audit_key

        def chain(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM gw_audit WHERE hash IS NULL LIMIT 1").fetchone() is None:
                return 0
            conn.execute("DROP TRIGGER gw_audit_no_update")
            prev: dict[Any, str | None] = {}
            done = 0
            for r in conn.execute(f"SELECT {', '.join(CONTENT)}, hash FROM gw_audit ORDER BY id").fetchall():
                row = dict(zip((*CONTENT, "hash"), r, strict=True))
                if row["hash"] is None:
                    digest = row_hash(key, prev.get(row["org_id"]), row)
                    conn.execute("UPDATE gw_audit SET prev_hash = ?, hash = ? WHERE id = ?",
                                 (prev.get(row["org_id"]), digest, row["id"]))
                    row["hash"] = digest
                    done += 1
                prev[row["org_id"]] = row["hash"]
            conn.execute("CREATE TRIGGER gw_audit_no_update BEFORE UPDATE ON gw_audit"
                         " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END")
            return done

        return await self.db.run_in_transaction(chain)

    # -- reading -----------------------------------------------------------------------------

    async def audit_query(self, org_id: str, where: list[tuple[str, list[Any]]], limit: int,
                          before_id: int | None) -> tuple[list[dict[str, Any]], int]:
        """Rows matching every (SQL condition, params) in `where`, newest first, and how many match."""
        conds = " AND ".join(f"({cond})" for cond, _ in where)
        params = [p for _, ps in where for p in ps]
        base = f"SELECT * FROM ({SELECT} WHERE org_id = ?)" + (f" WHERE {conds}" if conds else "")
        total = await self.db.fetchone(f"SELECT COUNT(*) FROM ({base})", (org_id, *params))
        page = base + (" AND" if conds else " WHERE") + " id < ?" if before_id is not None else base
        rows = await self.db.fetchall(page + " ORDER BY id DESC LIMIT ?",
                                      (org_id, *params, *([before_id] if before_id is not None else []), limit))
        assert total is not None  # an aggregate: always one row
        return [sdk_row(r) for r in rows], total[0]

    async def audit_verify(self, org_id: str, since: float | None) -> dict[str, Any]:
        walk = ChainWalk(self._audit_key)
        after_id = 0
        if since is not None:
            anchor = await self.db.fetchone("SELECT * FROM gw_audit WHERE org_id = ? AND created_at < ?"
                                            " ORDER BY id DESC LIMIT 1", (org_id, since))
            walk.anchor(anchor)
            after_id = anchor["id"] if anchor is not None else 0
        while True:
            rows = await self.db.fetchall("SELECT * FROM gw_audit WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?",
                                          (org_id, after_id, VERIFY_PAGE))
            walk.feed(rows)
            if len(rows) < VERIFY_PAGE:
                break
            after_id = rows[-1]["id"]
        return {**walk.result(), "timestamp": _iso(time.time())}

    # -- export jobs -------------------------------------------------------------------------

    async def create_export(self, org_id: str, scope: str | None, requested_by: str, since: float,
                            until: float) -> dict[str, Any]:
        job_id = new_id("exp")
        await self.db.execute("INSERT INTO gw_audit_exports (id, org_id, workflow_scope, requested_by, status,"
                              " since, until, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)",
                              (job_id, org_id, scope, requested_by, since, until, time.time()))
        written = await self.export_job(org_id, job_id)
        assert written is not None  # the row written just above
        return written

    async def open_exports(self, org_id: str) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM gw_audit_exports WHERE org_id = ?"
                                     " AND status IN ('pending', 'processing')", (org_id,))
        assert row is not None  # an aggregate: always one row
        return row[0]

    async def export_jobs(self, org_id: str, scope: str | None, everyone: bool, limit: int = 10) -> list[dict]:
        sql = "SELECT * FROM gw_audit_exports WHERE org_id = ?"
        params: list[Any] = [org_id]
        if not everyone:
            sql += " AND workflow_scope IS ?"
            params.append(scope)
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [_export_view(r) for r in rows]

    async def export_job(self, org_id: str, job_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_audit_exports WHERE org_id = ? AND id = ?", (org_id, job_id))
        return None if row is None else _export_view(row)

    async def claim_exports(self) -> list[dict[str, Any]]:
        """Jobs to run: pending ones, and any a stopped node left half done (they start over)."""
        rows = await self.db.fetchall("SELECT * FROM gw_audit_exports WHERE status IN ('pending', 'processing')"
                                      " ORDER BY created_at")
        for r in rows:
            await self.db.execute("UPDATE gw_audit_exports SET status = 'processing' WHERE id = ?", (r["id"],))
        return [_export_view(r) for r in rows]

    async def export_rows(self, org_id: str, scope: str | None, since: float, until: float, after_id: int):
        sql = (f"SELECT * FROM ({SELECT} WHERE org_id = ?) WHERE created_at >= ? AND created_at <= ?"
               " AND id > ?")
        params: list[Any] = [org_id, since, until, after_id]
        if scope is not None:
            sql += " AND json_extract(after, '$.workflow_id') = ?"
            params.append(scope)
        rows = await self.db.fetchall(sql + " ORDER BY id LIMIT ?", (*params, PAGE))
        return [(r["id"], sdk_row(r)) for r in rows]

    async def finish_export(self, job_id: str, path: str | None, count: int | None, error: str | None) -> None:
        await self.db.execute("UPDATE gw_audit_exports SET status = ?, file_path = ?, record_count = ?, error = ?,"
                              " completed_at = ? WHERE id = ?",
                              ("failed" if error else "completed", path, count, error, time.time(), job_id))


def _export_view(r: sqlite3.Row) -> dict[str, Any]:
    return {"id": r["id"], "job_id": r["id"], "org_id": r["org_id"], "workflow_scope": r["workflow_scope"],
            "status": r["status"], "since": r["since"], "until": r["until"], "record_count": r["record_count"],
            "file_path": r["file_path"], "error_message": r["error"], "created_at": _iso(r["created_at"]),
            "completed_at": _iso(r["completed_at"]), "requested_by": r["requested_by"]}
